"""Buffered sending for ``dispatcher_with_send``: a push queue, not a bytes buffer.

asyncore's ``dispatcher_with_send`` kept ``out_buffer`` as one ``bytes`` and
appended with ``out_buffer + data``, a copy of everything still unsent on
every ``send()``.  Here the unsent data sits in the framing core's
``PushQueue``: appending is O(1), and a plain socket takes everything queued
in one scatter-gather send.  ``out_buffer`` still reads (and can be assigned)
as the unsent bytes.

The host class provides ``_af_raw_send``, the dispatcher's unbuffered
``send`` (asyncore called ``dispatcher.send(self, ...)`` by name, so an
override further down the MRO is never used for it), and the dispatcher's
``socket``, ``connected``, ``accepting``, ``handle_close`` and idle clock.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Optional

from . import _poller
from ._events import DISCONNECTED, touch
from ._flow import WriteFlowControl
from ._timers import monotonic

# the most one send of a non-socket (TLS layer, file_wrapper) is offered
NON_SOCKET_CHUNK = 65536


class QueuedSend(WriteFlowControl):
    """Mixin: ``send()`` queues, ``handle_write()`` drains, ``out_buffer`` shows the rest."""

    _af_trace_kind = "queued"
    socket: Any
    connected: bool
    accepting: bool
    debug: bool
    _af_idle_timeout: Optional[float]
    _af_last_activity: float

    if TYPE_CHECKING:
        # provided by the dispatcher
        def _af_raw_send(self, data: Any) -> int: ...
        def handle_close(self) -> None: ...
        def log_info(self, message: Any, type: str = "info") -> None: ...

    @property
    def out_buffer(self) -> bytes:
        return b"".join(self._af_queue.snapshot())

    @out_buffer.setter
    def out_buffer(self, data: bytes) -> None:
        self._af_queue.clear()
        self._af_queue.push(data)
        # asyncore's writable() sees the new buffer at the next iteration
        touch(self)
        if self._af_limited:
            self._af_flow()

    def initiate_send(self) -> None:
        queue = self._af_queue
        sock = self.socket
        if type(sock) is socket.socket:
            # plain socket: everything queued in one scatter-gather send, with
            # dispatcher.send's error handling
            try:
                sent = queue.send(sock)
            except OSError as why:
                if why.errno in DISCONNECTED:
                    self.handle_close()
                else:
                    raise
                return
            if sent and self._af_idle_timeout is not None:
                self._af_last_activity = monotonic()
            return
        chunk = queue.next_chunk(NON_SOCKET_CHUNK)
        if chunk is not None:
            queue.consume(self._af_raw_send(chunk))

    def handle_write(self) -> None:
        self.initiate_send()
        if self._af_limited:
            self._af_flow()

    def writable(self) -> bool:
        return (not self.connected) or bool(self._af_queue)

    def send(self, data: Any) -> None:
        if self.debug:
            self.log_info("sending %s" % repr(data))
        self._af_queue.push(data)
        # every call tries the socket, as asyncore's does: what is still
        # queued may fit by now, and goes out with this in one send
        self.initiate_send()
        touch(self)
        if self._af_limited:
            self._af_flow()


def queued_send_interest(obj: Any) -> int:
    """The loop's interest for the stock predicates of a ``QueuedSend`` channel."""
    if obj.accepting:
        return _poller.IN
    # no read interest while write-paused: the peer is held back by TCP
    mask = 0 if obj._af_writing_paused else _poller.IN
    if not obj.connected or obj._af_queue:
        return mask | _poller.OUT
    return mask
