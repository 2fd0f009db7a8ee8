"""Drop-in replacement for the stdlib ``asyncore`` module (removed in 3.12).

The public surface and behaviour are those of Python 3.11's asyncore:
``dispatcher`` and its ``handle_*`` events, ``dispatcher_with_send``,
``file_wrapper``/``file_dispatcher``, ``loop``, ``poll``, ``poll2``,
``poll3``, ``read``, ``write``, ``readwrite``, ``close_all``,
``compact_traceback``, ``ExitNow`` and ``socket_map``.

What differs is underneath: ``loop``/``poll``/``poll2`` run on persistent
epoll (``selectors`` elsewhere) registrations kept by ``asynframe._poller``,
so there is no 1,024-descriptor limit and an idle channel costs nothing per
iteration.  ``use_poll`` only selects how hang-ups are reported (poll2's
``handle_close`` or select's readable/writable), as it did in asyncore.
``dispatcher_with_send`` buffers in a push queue instead of re-concatenating
``out_buffer + data``.

Additions (see docs/hardening.md): ``call_later`` and
``call_soon_threadsafe`` on the loop of a map, per-channel
``set_idle_timeout``/``set_connect_timeout``, and ``handle_close`` called
once per channel on the poll2 path too.
"""

from __future__ import annotations

import os
import select  # noqa: F401  (asyncore's namespace: code written for it reads asyncore.select)
import socket
import sys
import time  # noqa: F401  (asyncore's namespace, as above)
import warnings  # noqa: F401  (asyncore's namespace, as above)
from errno import (  # the errno names asyncore's namespace offers, used here or not
    EAGAIN,
    EALREADY,
    EBADF,
    ECONNABORTED,
    ECONNRESET,  # noqa: F401
    EINPROGRESS,
    EINVAL,
    EISCONN,
    EMFILE,
    ENFILE,
    ENOBUFS,
    ENOMEM,
    ENOTCONN,
    EPIPE,  # noqa: F401
    ESHUTDOWN,  # noqa: F401
    EWOULDBLOCK,
    errorcode,
)
from typing import Any, Callable, Dict, Optional, Tuple

from . import _channel_log as _diag
from . import _poller
from ._channel_timeouts import ACCEPT_BACKOFF_FIRST as ACCEPT_BACKOFF_FIRST
from ._channel_timeouts import ACCEPT_BACKOFF_MAX as ACCEPT_BACKOFF_MAX
from ._channel_timeouts import ChannelTimers
from ._channel_timeouts import strerror as _strerror
from ._chat_common import SocketSlot
from ._core import PushQueue
from ._delegation import SocketDelegation as SocketDelegation
from ._events import DISCONNECTED as _DISCONNECTED
from ._events import RERAISED as _reraised_exceptions
from ._events import ExitNow as ExitNow
from ._events import compact_traceback as compact_traceback
from ._events import exception as _exception  # noqa: F401  (asyncore's name; test_asyncore calls it)
from ._events import read as read
from ._events import readwrite as readwrite
from ._events import touch as _touch
from ._events import write as write
from ._flow import WriteFlowControl
from ._queued_send import QueuedSend, queued_send_interest
from ._timers import TimerHandle as TimerHandle
from ._timers import monotonic as _monotonic
from ._tls_channel import TLSChannel

__asynframe__ = True

socket_map: Dict[Any, Any] = {}
_OWN_MODULES = frozenset({"asynframe.asyncore", "asynframe.asynchat"})


def call_later(
    delay: float, callback: Callable[..., Any], *args: Any, map: Optional[Dict[Any, Any]] = None
) -> TimerHandle:
    """Call ``callback(*args)`` from the loop of *map* in *delay* seconds.

    Returns a handle: ``handle.cancel()`` stops it, ``handle.when`` is the
    deadline on the ``time.monotonic()`` clock.  Callbacks due at the same
    time run in the order they were scheduled, after the socket events of
    the wakeup.  Call it from the loop's thread (or before the loop runs);
    from other threads use ``call_soon_threadsafe``.

    Timers run while ``loop()`` (or ``poll``/``poll2``) runs on *map*, and
    ``loop()`` still returns when the map has no channels left, timers or
    not.  A callback that raises is reported (through the channel's
    ``handle_error`` if it is a bound method of a dispatcher, which closes
    that channel; through the ``asynframe`` logger otherwise) and the loop
    goes on.  ``close_all(map)`` cancels the map's timers.
    """
    if map is None:
        map = socket_map
    return _poller.call_later(map, delay, callback, args)


def call_soon_threadsafe(callback: Callable[..., Any], *args: Any, map: Optional[Dict[Any, Any]] = None) -> None:
    """Have the loop of *map* call ``callback(*args)`` at its next iteration.

    Safe from any thread: a loop blocked waiting for sockets is woken at
    once through a wakeup descriptor, created on first use and never put in
    the map.  Calls run in the order they were made; errors are reported as
    for ``call_later``.  Calls not run yet when ``close_all(map)`` is called
    are dropped.
    """
    if map is None:
        map = socket_map
    _poller.call_soon_threadsafe(map, callback, args)


def poll(timeout: Optional[float] = 0.0, map: Optional[Dict[Any, Any]] = None) -> None:
    """One iteration with select() semantics: wait up to *timeout* seconds."""
    if map is None:
        map = socket_map
    if map:
        _poller.poller_for(map).poll_once(timeout, False)  # type: ignore[union-attr]


def poll2(timeout: Optional[float] = 0.0, map: Optional[Dict[Any, Any]] = None) -> None:
    """One iteration with poll() semantics (hang-ups call ``handle_close``)."""
    if map is None:
        map = socket_map
    if map:
        _poller.poller_for(map).poll_once(timeout, True)  # type: ignore[union-attr]


poll3 = poll2


def loop(
    timeout: Optional[float] = 30.0,
    use_poll: bool = False,
    map: Optional[Dict[Any, Any]] = None,
    count: Optional[int] = None,
) -> None:
    """Serve the channels in *map* until it is empty, or for *count* iterations."""
    if map is None:
        map = socket_map
    poller = _poller.poller_for(map)
    assert poller is not None
    try:
        if count is None:
            while map:
                poller.poll_once(timeout, use_poll)
        else:
            while map and count > 0:
                poller.poll_once(timeout, use_poll)
                count = count - 1
    finally:
        # no loop runs any more: calls from other threads act directly again
        poller.loop_thread = None
        _poller.release(map, keep=socket_map)


# accept() failures that mean "no descriptor or memory now": pause, retry
_ACCEPT_EXHAUSTED = frozenset({EMFILE, ENFILE, ENOBUFS, ENOMEM})

_AF_INET = socket.AF_INET
_SOCK_STREAM = socket.SOCK_STREAM


class dispatcher(ChannelTimers, TLSChannel):
    """A thin wrapper around a non-blocking socket, driven by ``loop()``."""

    socket: Any = SocketSlot()
    # async_chat: True while a read's frames are delivered, when replies to
    # pipelined frames may be held; _af_release() sends them
    _af_dispatching: Any = False

    debug = False
    # what the loop's error reporting recognises as a channel (_events)
    _af_is_channel = True
    # which methods protocol tracing wraps (_channel_log.trace_channel)
    _af_trace_kind = "plain"
    connected = False
    accepting = False
    connecting = False
    closing = False
    addr: Any = None
    ignore_log_types = frozenset({"warning"})
    # the MapPoller this channel is registered with, if any
    _af_poller: Any = None
    _fileno: Any = None
    # The loop's compiled fast path serves stock async_chat channels without
    # calling handle_read/handle_write; features hooked there (timeouts,
    # write-buffer limits, tracing, TLS) set it True on the instance.
    _af_generic_path = False
    # the TLS layer (asynframe._tls.TLSSocket) once start_tls() was called
    _af_tls: Any = None
    # write-buffer limits are set (WriteFlowControl, on the sending subclasses)
    _af_limited = False
    #: True/False: this class logs through ``logging`` or not; None: follow
    #: ``asynframe.use_logging()`` (see asynframe.diagnostics)
    use_logging: Optional[bool] = None

    def __init__(self, sock: Optional[socket.socket] = None, map: Optional[Dict[Any, Any]] = None) -> None:
        if map is None:
            self._map = socket_map
        else:
            self._map = map

        self._fileno = None

        if sock:
            # a socket from a blocking source must not block the loop
            sock.setblocking(False)
            self.set_socket(sock, map)
            self.connected = True
            try:
                self.addr = sock.getpeername()
            except OSError as err:
                if err.errno in (ENOTCONN, EINVAL):
                    # an unconnected socket is allowed
                    self.connected = False
                else:
                    # broken in an unknown way: keep it out of the loop
                    self.del_channel(map)
                    raise
        else:
            # Any: a socket, a file_wrapper or a socket-like stand-in (tests,
            # legacy code); None until create_socket()/set_socket()
            self.socket = None

    def __repr__(self) -> str:
        module = self.__class__.__module__
        if module in _OWN_MODULES:
            # drop-in: the classes print as the stdlib's did
            module = module[len("asynframe.") :]
        status = [module + "." + self.__class__.__qualname__]
        if self.accepting and self.addr:
            status.append("listening")
        elif self.connected:
            status.append("connected")
        if self.addr is not None:
            try:
                status.append("%s:%d" % self.addr)
            except TypeError:
                status.append(repr(self.addr))
        return "<%s at %#x>" % (" ".join(status), id(self))

    def add_channel(self, map: Optional[Dict[Any, Any]] = None) -> None:
        if map is None:
            map = self._map
        map[self._fileno] = self
        poller = _poller.poller_for(map, create=False)
        if poller is not None:
            poller.added(self._fileno, self)

    def del_channel(self, map: Optional[Dict[Any, Any]] = None) -> None:
        if self._af_dispatching:
            self._af_release()
        fd = self._fileno
        if map is None:
            map = self._map
        if fd in map:
            if map[fd] is self:
                poller = _poller.poller_for(map, create=False)
                if poller is not None:
                    poller.removed(fd, self)
            del map[fd]
        self._fileno = None

    # (the defaults are the module's: ``socket`` in this class body is the slot)
    def create_socket(self, family: int = _AF_INET, type: int = _SOCK_STREAM) -> None:
        self.family_and_type = family, type
        sock = socket.socket(family, type)
        sock.setblocking(False)
        self.set_socket(sock)

    def set_socket(self, sock: Any, map: Optional[Dict[Any, Any]] = None) -> None:
        self.socket = sock
        self._fileno = sock.fileno()
        self.add_channel(map)
        if _diag.state.trace:
            _diag.trace_channel(self, True)

    def set_trace(self, enabled: bool = True) -> None:
        """Log this channel's frames and sends at DEBUG on ``asynframe.trace``."""
        _diag.trace_channel(self, enabled)

    def set_reuse_addr(self) -> None:
        # a restarted server should get its port back at once
        try:
            self.socket.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_REUSEADDR,
                self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) | 1,
            )
        except OSError:
            pass

    # -- predicates: what the loop waits for ---------------------------------
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    # -- socket methods --------------------------------------------------------
    def listen(self, num: int) -> Any:
        self.accepting = True
        _touch(self)
        if os.name == "nt" and num > 5:
            num = 5
        return self.socket.listen(num)

    def bind(self, addr: Any) -> Any:
        self.addr = addr
        return self.socket.bind(addr)

    def connect(self, address: Any) -> None:
        self.connected = False
        self.connecting = True
        _touch(self)
        err = self.socket.connect_ex(address)
        if err in (EINPROGRESS, EALREADY, EWOULDBLOCK) or err == EINVAL and os.name == "nt":
            self.addr = address
            if self._af_connect_timeout is not None:
                self._af_arm_connect_timer()
            return
        if err in (0, EISCONN):
            self.addr = address
            self.handle_connect_event()
        else:
            raise OSError(err, errorcode[err])

    def accept(self) -> Optional[Tuple[socket.socket, Any]]:
        # None when there was nothing to accept after all
        try:
            conn, addr = self.socket.accept()
        except TypeError:
            return None
        except OSError as why:
            if why.errno in (EWOULDBLOCK, ECONNABORTED, EAGAIN):
                return None
            if why.errno in _ACCEPT_EXHAUSTED:
                self._af_pause_accepting(why)
                return None
            raise
        if self._af_accept_backoff:
            self._af_accepted()
        return conn, addr

    def send(self, data: Any) -> int:
        if self._af_dispatching:
            self._af_release()  # held replies go first
        if self._af_tls is not None:
            sent_tls: int = self._af_tls.channel_send(self, data)
            if sent_tls and self._af_idle_timeout is not None:
                self._af_last_activity = _monotonic()
            return sent_tls
        try:
            sent: int = self.socket.send(data)
            if sent and self._af_idle_timeout is not None:
                self._af_last_activity = _monotonic()
            return sent
        except OSError as why:
            if why.errno == EWOULDBLOCK:
                return 0
            if why.errno in _DISCONNECTED:
                self.handle_close()
                return 0
            raise

    def recv(self, buffer_size: int) -> bytes:
        if self._af_tls is not None:
            got: bytes = self._af_tls.channel_recv(self, buffer_size)
            if got and self._af_idle_timeout is not None:
                self._af_last_activity = _monotonic()
            return got
        try:
            data: bytes = self.socket.recv(buffer_size)
        except OSError as why:
            # winsock sometimes raises ENOTCONN
            if why.errno in _DISCONNECTED:
                self.handle_close()
                return b""
            raise
        if not data:
            # a readable socket that reads nothing: the peer closed
            self._af_peer_eof()
            return b""
        if self._af_idle_timeout is not None:
            self._af_last_activity = _monotonic()
        return data

    def _af_peer_eof(self) -> None:
        # The peer shut down its sending side (async_chat may first flush).
        self.handle_close()

    def _af_release(self) -> None:
        """Send what async_chat holds back before an observable step (asynchat.py)."""
        self._af_dispatching = False

    def close(self) -> None:
        if _poller.off_loop_thread(self):
            # another thread runs this channel's loop: it closes the channel
            _poller.call_soon_threadsafe(self._map, self.close, ())
            return
        if self._af_dispatching:
            self._af_release()
        self.connected = False
        self.accepting = False
        self.connecting = False
        if self._af_idle_timer is not None or self._af_connect_timer is not None or self._af_accept_timer is not None:
            self._af_cancel_timers()
        self.del_channel()
        if self.socket is not None:
            try:
                self.socket.close()
            except OSError as why:
                if why.errno not in (ENOTCONN, EBADF):
                    raise

    # -- logging: override for something better ------------------------------
    def log(self, message: Any) -> None:
        if _diag.wants_logging(self):
            _diag.log(self, message)
            return
        sys.stderr.write("log: %s\n" % str(message))

    def log_info(self, message: Any, type: str = "info") -> None:
        if type not in self.ignore_log_types:
            if _diag.wants_logging(self):
                _diag.log_info(self, message, type)
                return
            print("%s: %s" % (type, message))

    # -- event plumbing ------------------------------------------------------
    def handle_read_event(self) -> None:
        if self._af_tls is not None:
            self._af_tls.read_event(self)
            return
        if self.accepting:
            # a listening socket is readable when a connection waits
            self.handle_accept()
        elif not self.connected:
            if self.connecting:
                self.handle_connect_event()
            self.handle_read()
        else:
            self.handle_read()

    def handle_connect_event(self) -> None:
        err = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err != 0:
            raise OSError(err, _strerror(err))
        self.handle_connect()
        self.connected = True
        self.connecting = False
        self._af_connect_done()
        _touch(self)

    def handle_write_event(self) -> None:
        if self._af_tls is not None:
            self._af_tls.write_event(self)
            return
        if self.accepting:
            # listeners get no write events; pretend it did not happen
            return
        if not self.connected:
            if self.connecting:
                self.handle_connect_event()
        self.handle_write()

    def handle_expt_event(self) -> None:
        # urgent data, or an error condition reported as exceptional
        err = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err != 0:
            self.handle_close()
        else:
            self.handle_expt()

    def handle_error(self) -> None:
        if _diag.wants_logging(self):
            _diag.report_error(self)
            self.handle_close()
            return
        nil, t, v, tbinfo = compact_traceback()
        try:
            self_repr = repr(self)
        except BaseException:
            self_repr = "<__repr__(self) failed for object at %0x>" % id(self)
        self.log_info(
            "uncaptured python exception, closing channel %s (%s:%s %s)" % (self_repr, t, v, tbinfo),
            "error",
        )
        self.handle_close()

    def handle_expt(self) -> None:
        self.log_info("unhandled incoming priority event", "warning")

    def handle_read(self) -> None:
        self.log_info("unhandled read event", "warning")

    def handle_write(self) -> None:
        self.log_info("unhandled write event", "warning")

    def handle_connect(self) -> None:
        self.log_info("unhandled connect event", "warning")

    def handle_accept(self) -> None:
        pair = self.accept()
        if pair is not None:
            self.handle_accepted(*pair)

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        sock.close()
        self.log_info("unhandled accepted event", "warning")

    def handle_close(self) -> None:
        self.log_info("unhandled close event", "warning")
        self.close()

    def _af_refresh_generic_path(self) -> None:
        # features whose per-event work lives in the Python handlers keep the
        # channel off the compiled loop's shortcut for stock channels
        self._af_generic_path = bool(
            self._af_idle_timeout is not None
            or self._af_limited
            or self._af_tls is not None
            or "_af_trace_wrappers" in self.__dict__
        )


def delegate_socket_attributes(enabled: bool = True) -> None:
    """Switch Python 2-style socket delegation on or off for every dispatcher.

    With it on, ``dispatcher`` (and so every subclass) behaves as if it had
    ``SocketDelegation`` among its bases.  ``ASYNFRAME_SOCKET_DELEGATION=1``
    in the environment switches it on at import.
    """
    if not isinstance(enabled, bool):
        raise TypeError("enabled must be a bool, not %s" % type(enabled).__name__)
    if enabled:
        # assigning the dunder on the class updates its type slot (and its
        # subclasses'), which an instance attribute would not
        dispatcher.__getattr__ = SocketDelegation.__getattr__  # type: ignore[attr-defined]
    elif "__getattr__" in dispatcher.__dict__:
        del dispatcher.__getattr__  # type: ignore[attr-defined]


def socket_delegation_enabled() -> bool:
    """True when ``delegate_socket_attributes(True)`` is in effect."""
    return "__getattr__" in dispatcher.__dict__


if os.environ.get("ASYNFRAME_SOCKET_DELEGATION", "") not in ("", "0"):
    delegate_socket_attributes(True)


# [misc]: as in asyncore, its send() queues and returns None, unlike dispatcher.send
class dispatcher_with_send(QueuedSend, dispatcher):  # type: ignore[misc]
    """A dispatcher whose ``send`` buffers what the socket does not take yet.

    ``out_buffer`` reads as the unsent bytes (as in asyncore), but they are
    kept in a push queue: appending is O(1) instead of asyncore's
    ``out_buffer + data`` copy (asynframe._queued_send).
    ``set_write_buffer_limits`` (see ``asynframe._flow``) bounds that buffer
    by pausing reads.
    """

    # the unbuffered send, called by name as asyncore did
    _af_raw_send = dispatcher.send

    def __init__(self, sock: Optional[socket.socket] = None, map: Optional[Dict[Any, Any]] = None) -> None:
        self._af_queue = PushQueue()
        dispatcher.__init__(self, sock, map)


def close_all(map: Optional[Dict[Any, Any]] = None, ignore_all: bool = False) -> None:
    """Close every channel in *map* and empty it; cancel the map's timers
    and drop its cross-thread calls not yet run."""
    if map is None:
        map = socket_map
    for x in list(map.values()):
        try:
            x.close()
        except OSError as err:
            if err.errno == EBADF:
                pass
            elif not ignore_all:
                raise
        except _reraised_exceptions:
            raise
        except BaseException:
            if not ignore_all:
                raise
    map.clear()
    poller = _poller.poller_for(map, create=False)
    if poller is not None:
        poller.expected_len = -1
        # the map is torn down: its timers and wakeup descriptor go too
        poller.reset_timers()
    _poller.release(map, keep=socket_map)


# Interest of the stock predicates, so the poller need not call them.
def _dispatcher_interest(obj: Any) -> int:
    return _poller.IN if obj.accepting else _poller.IN | _poller.OUT


_poller.STOCK_EXPT.add((dispatcher.handle_expt, dispatcher.handle_expt_event))
_poller.STOCK_INTEREST[(dispatcher.readable, dispatcher.writable)] = _dispatcher_interest
_poller.STOCK_INTEREST[(WriteFlowControl.readable, QueuedSend.writable)] = queued_send_interest


if os.name == "posix":
    from ._file_wrapper import file_wrapper as file_wrapper

    class file_dispatcher(dispatcher):
        """A dispatcher over a file descriptor (pipes, terminals)."""

        def __init__(self, fd: Any, map: Optional[Dict[Any, Any]] = None) -> None:
            dispatcher.__init__(self, None, map)
            self.connected = True
            try:
                fd = fd.fileno()
            except AttributeError:
                pass
            self.set_file(fd)
            os.set_blocking(fd, False)

        def set_file(self, fd: int) -> None:
            self.socket = file_wrapper(fd)
            self._fileno = self.socket.fileno()
            self.add_channel()
