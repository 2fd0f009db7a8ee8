"""The end-to-end comparison: asynframe against stdlib asynchat, asyncio, uvloop and Twisted.

Run it with the ``asynframe-bench`` command (``--quick`` for a short run,
``--help`` for the options), ``python -m asynframe.bench``, or
``benchmarks/run.py`` in a checkout; all three run ``runner.main``.  The
peers come with ``pip install "asynframe[bench]"``; a peer that is not
installed is skipped with a note.  ``servers/`` holds the echo servers and
``loadgen.py`` the load generator, each run as its own process.

The runner's parts: ``runner`` (the command line), ``scenarios`` (what is
measured), ``cell`` (one server/scenario measurement), ``processes`` (the
child processes), ``probes`` (CPU, memory and machine facts), ``report``
(progress lines and tables) and ``chart`` (the PNG).
"""
