"""Echo servers for the comparison, one per peer.

Each file is a script run in its own process by ``asynframe.bench.runner``
(with this directory as its working directory, so ``_lifecycle`` is
importable); nothing here is imported as part of the package.
"""
