"""How the loop hands one readiness event to a channel.

The bottom of the loop layer: the readiness flags, which socket errors mean
"the peer is gone", which exceptions leave the loop, and asyncore's four
delivery functions (``read``, ``write``, ``readwrite`` and the urgent-data
one).  ``asyncore`` re-exports them under their stdlib names; the pure
dispatch (``_poller``), the compiled one (``_loop_c``), the timers and the
channel features import them from here, so nothing below the public API
imports the public API.
"""

from __future__ import annotations

import logging
import select
import socket
import sys
from errno import EBADF, ECONNABORTED, ECONNRESET, ENOTCONN, EPIPE, ESHUTDOWN
from typing import Any, Tuple, Type

# -- readiness flags --------------------------------------------------------------
# The poller's own flags are epoll's (the same numbers as poll's on Linux).
IN = getattr(select, "EPOLLIN", 1)
PRI = getattr(select, "EPOLLPRI", 2)
OUT = getattr(select, "EPOLLOUT", 4)
ERR = getattr(select, "EPOLLERR", 8)
HUP = getattr(select, "EPOLLHUP", 16)
# Not an epoll flag: in a TLS channel's interest it means "input is already
# decrypted and buffered in user space", delivered as a read event without
# waiting for the descriptor.
BUFFERED = 1 << 40

# The poll() flag values readwrite() tests; elsewhere than Linux they differ
# from the poller's and are translated by to_poll_flags().
POLLIN = getattr(select, "POLLIN", 1)
POLLPRI = getattr(select, "POLLPRI", 2)
POLLOUT = getattr(select, "POLLOUT", 4)
POLLERR = getattr(select, "POLLERR", 8)
POLLHUP = getattr(select, "POLLHUP", 16)
POLLNVAL = getattr(select, "POLLNVAL", 32)

_TO_POLL = ((IN, POLLIN), (OUT, POLLOUT), (PRI, POLLPRI), (ERR, POLLERR), (HUP, POLLHUP))


def to_poll_flags(flags: int) -> int:
    """The poller's *flags* as the poll() flags readwrite() expects."""
    result = 0
    for own, poll_flag in _TO_POLL:
        if flags & own:
            result |= poll_flag
    return result


# -- error rules ------------------------------------------------------------------
#: errno values that mean the connection is gone: the channel is closed
#: quietly (``handle_close``) instead of reported (``handle_error``).
DISCONNECTED = frozenset({ECONNRESET, ENOTCONN, ESHUTDOWN, ECONNABORTED, EPIPE, EBADF})


class ExitNow(Exception):
    """Raised by a handler to leave the loop; never swallowed by it."""

    # where applications import it from (and where pickle finds it)
    __module__ = "asynframe.asyncore"


#: Exceptions that leave the loop instead of going to ``handle_error``.
RERAISED: Tuple[Type[BaseException], ...] = (ExitNow, KeyboardInterrupt, SystemExit)


# -- delivery ---------------------------------------------------------------------
def read(obj: Any) -> None:
    """Deliver a read event to *obj*; errors go to its ``handle_error``."""
    try:
        obj.handle_read_event()
    except RERAISED:
        raise
    except BaseException:
        obj.handle_error()


def write(obj: Any) -> None:
    """Deliver a write event to *obj*; errors go to its ``handle_error``."""
    try:
        obj.handle_write_event()
    except RERAISED:
        raise
    except BaseException:
        obj.handle_error()


def exception(obj: Any) -> None:
    """Deliver an urgent-data event to *obj* (asyncore's ``_exception``)."""
    try:
        obj.handle_expt_event()
    except RERAISED:
        raise
    except BaseException:
        obj.handle_error()


def _closed_since(obj: Any, sock: Any) -> bool:
    # A dispatcher that had *sock* and closed it (or replaced it: clients
    # reconnecting in handle_close) in an earlier handler of this event.
    return sock is not None and (getattr(obj, "_fileno", 0) is None or getattr(obj, "socket", None) is not sock)


def _unread_data(sock: Any) -> bool:
    # A hang-up that comes with readable data (the peer's FIN after its last
    # bytes, on a socket we shut down for writing) is not acted on while
    # bytes remain: the read handler gets them at the next iterations and
    # closes on the end of file, as the select() path does.
    if not isinstance(sock, socket.socket):
        return False
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)))
    except (OSError, ValueError):
        return False


def readwrite(obj: Any, flags: int) -> None:
    """Deliver the events in poll() *flags* to *obj*, as asyncore.poll2 does.

    Unlike asyncore, once a handler closed the channel the remaining events
    of *flags* are dropped: asyncore would call ``handle_close`` a second
    time for a hang-up that comes with the end of file or the reset its
    read handler already closed on.  And a hang-up with bytes still unread
    waits for the read handler to reach the end of file, instead of closing
    with data lost.
    """
    sock = getattr(obj, "socket", None)
    try:
        if flags & POLLIN:
            obj.handle_read_event()
        if flags & POLLOUT and not _closed_since(obj, sock):
            obj.handle_write_event()
        if flags & POLLPRI and not _closed_since(obj, sock):
            obj.handle_expt_event()
        if flags & (POLLHUP | POLLERR | POLLNVAL) and not _closed_since(obj, sock):
            if not (
                flags & POLLIN and flags & POLLHUP == flags & (POLLHUP | POLLERR | POLLNVAL) and _unread_data(sock)
            ):
                obj.handle_close()
    except OSError as e:
        if e.errno not in DISCONNECTED:
            obj.handle_error()
        elif not _closed_since(obj, sock):
            obj.handle_close()
    except RERAISED:
        raise
    except BaseException:
        obj.handle_error()


def touch(channel: Any) -> None:
    """Tell the channel's poller that its interest may have changed."""
    poller = channel._af_poller
    if poller is not None:
        poller.touch(channel)


_logger = logging.getLogger("asynframe")


def report_callback_error(callback: Any) -> None:
    """Report a timer or ``call_soon_threadsafe`` callback that raised.

    Called inside the ``except`` block.  A bound method of a channel is that
    channel's code: its ``handle_error`` reports it and closes that channel
    only, as for its event handlers.  Any other callback has no channel to
    blame: it is logged and the loop goes on.
    """
    owner = getattr(callback, "__self__", None)
    # a class-level marker, read on the type: dispatcher's __getattr__
    # delegation must not make a socket-like owner look like a channel
    if owner is not None and getattr(type(owner), "_af_is_channel", False):
        owner.handle_error()
    else:
        _logger.error("exception in loop callback %r", callback, exc_info=True)


def compact_traceback() -> Tuple[Tuple[str, str, str], Any, Any, str]:
    """((file, function, line), type, value, info) of the exception being handled."""
    t, v, tb = sys.exc_info()
    tbinfo = []
    if not tb:
        raise AssertionError("traceback does not exist")
    while tb:
        tbinfo.append((tb.tb_frame.f_code.co_filename, tb.tb_frame.f_code.co_name, str(tb.tb_lineno)))
        tb = tb.tb_next
    del tb
    file, function, line = tbinfo[-1]
    info = " ".join(["[%s|%s|%s]" % x for x in tbinfo])
    return (file, function, line), t, v, info
