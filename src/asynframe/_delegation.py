"""Python 2-style attribute delegation from a dispatcher to its socket.

Python 2's asyncore let ``chan.getsockname()`` reach the socket; Python 3.6
to 3.11 did not, and asynframe does not by default.  ``SocketDelegation`` is
the opt-in (asyncore re-exports it, and ``delegate_socket_attributes`` puts
its ``__getattr__`` on every dispatcher).
"""

from __future__ import annotations

from typing import Any


class SocketDelegation:
    """Mixin: unknown attributes of a dispatcher are looked up on its socket.

    Python 2's asyncore did this (``chan.getsockname()``,
    ``chan.setsockopt(...)``); Python 3.6 to 3.11 did not, and neither does
    asynframe by default.  Put this class before ``dispatcher`` in the bases
    of a legacy class that needs it, or switch it on for every dispatcher
    with ``delegate_socket_attributes(True)``.  It has a price: CPython does
    not specialise attribute access on a class with ``__getattr__``, so every
    ``self.push``/``self.x`` in such a class costs more.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        # never for the names the dispatcher itself may not have yet: a
        # half-initialised channel must not recurse into its own socket
        if name.startswith("__") or name in ("socket", "_map", "_fileno"):
            raise AttributeError(name)
        sock = self.__dict__.get("socket")
        if sock is None:
            raise AttributeError("%s object has no attribute %r" % (type(self).__name__, name))
        try:
            return getattr(sock, name)
        except AttributeError:
            raise AttributeError("%s object has no attribute %r" % (type(self).__name__, name)) from None
