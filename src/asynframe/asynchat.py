"""Drop-in replacement for the stdlib ``asynchat`` module (removed in 3.12).

``async_chat`` keeps asynchat's API and hooks (``set_terminator``,
``collect_incoming_data``, ``found_terminator``, ``push``,
``push_with_producer``, ``close_when_done``, ...) with the framing done by
asynframe's core:

* input is split by ``FrameScanner``: no re-slicing of the whole input
  buffer per frame, and a subclass that uses the stock
  ``_collect_incoming_data``/``_get_data`` pair has its chunks collected in
  C without a Python call per chunk;
* output goes through ``PushQueue``.  ``push()`` sends at once, as
  asynchat's does, with one exception nobody can observe: while the read
  being delivered already holds another complete frame after the current
  one (the peer pipelines, so it is not waiting for this reply), the reply
  is held and leaves with the next one, in one scatter-gather send.  Held
  replies go out before anything the peer or the socket could tell apart:
  the last frame's push, the end of the read, ``close()``, ``del_channel()``,
  ``send()``, ``start_tls()``, or replacing ``self.socket``
  (docs/design.md, "When replies are sent").

Opt-in hardening: ``set_write_buffer_limits`` pauses reading while too much
output waits (see ``asynframe._flow``), and ``push_file`` queues a file range
sent with ``os.sendfile``.

A subclass may define ``frame_received(self, frame)`` instead of
``collect_incoming_data``/``found_terminator``: it is then called once per
frame with the whole frame, terminator excluded.

Internals that legacy code reads keep their stdlib meaning: ``terminator``
(an int counts down), ``ac_in_buffer`` (bytes received and not yet
delivered), ``incoming`` (the list ``_collect_incoming_data`` appends to).
``producer_fifo`` is a snapshot copy of the output queue; assigning it
replaces the queue, but mutating the returned deque does nothing.

``drain_on_eof = True`` (opt-in) keeps a channel open after the peer's end
of file until its queued output is sent (docs/hardening.md).
"""

from __future__ import annotations

import socket
from collections import deque
from functools import partial as _partial
from typing import Any, Deque, Dict, List, Optional

from . import _poller, asyncore
from ._chat_common import delivery_mode, take_class_default
from ._core import MODE_CALLBACKS, FrameScanner, PushQueue
from ._core import find_prefix_at_end as find_prefix_at_end
from ._core_common import check_file as _check_file
from ._core_common import queued_data as _queued_data
from ._events import DISCONNECTED as _DISCONNECTED
from ._events import IN as _IN
from ._events import OUT as _OUT
from ._events import touch as _touch
from ._flow import WriteFlowControl
from ._frame_timeout import FrameTimeout
from ._timers import monotonic as _monotonic

__asynframe__ = True
__all__ = ["async_chat", "simple_producer", "find_prefix_at_end"]

_PLAIN_SOCKET = socket.socket
# the compiled loop (asynframe._loop_c) where it serves, else None
_compiled_loop = _poller.compiled_loop()


class async_chat(FrameTimeout, WriteFlowControl, asyncore.dispatcher):
    """A dispatcher that frames its input and queues its output.

    Subclass it and define ``collect_incoming_data(data)`` and
    ``found_terminator()`` (or ``collect_incoming_data =
    _collect_incoming_data`` and read the frame with ``_get_data()``, or
    define ``frame_received(frame)``).
    """

    ac_in_buffer_size = 65536
    ac_out_buffer_size = 65536

    # str data needs an explicit opt-in, as in asynchat
    use_encoding = 0
    encoding = "latin-1"

    #: Define in a subclass to get whole frames in one call (see module doc).
    frame_received: Any = None

    #: Hold replies to pipelined frames for one send (see the module doc).
    #: Set False for asynchat's exact timing where a handler writes to
    #: ``self.socket`` directly, or blocks until the peer reacts to its
    #: reply, while the peer may have pipelined further requests.
    hold_pipelined_replies = True
    # which methods protocol tracing wraps (_channel_log.trace_channel)
    _af_trace_kind = "chat"

    # set by _af_setup() before any use
    _af_scanner: FrameScanner = None  # type: ignore[assignment]
    _af_queue: Any = None
    # set by push_file(close=True): close() must close the queued files
    _af_owns_files = False

    #: Set True on an instance (or a subclass) to keep its events off the
    #: loop's compiled fast path: every event then goes through the Python
    #: handle_*_event/handle_read/initiate_send methods, as in asyncore.
    #: Features that wrap those steps (TLS, tracing, idle timeouts,
    #: backpressure) set it; channels that override any of those methods
    #: take the Python path anyway.  See docs/performance.md.
    _af_generic_path = False

    # asynchat has no default terminator, and legacy subclasses give one as a
    # class attribute (``terminator = b"\r\n"``); left on the class it would
    # hide the property below, so it is moved here: every instance starts with it.
    _af_default_terminator: Any = None

    _af_default_max_frame = 0
    _af_default_drain_on_eof = False
    # the peer's end of file was read while output was still queued
    # (drain_on_eof): reading stops, the channel closes once the queue empties
    _af_eof = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found, term = take_class_default(cls, async_chat, "terminator")
        if found:
            cls._af_default_terminator = term
        # ``max_frame = N`` on a subclass: same treatment as ``terminator``
        found, limit = take_class_default(cls, async_chat, "max_frame")
        if found:
            cls._af_default_max_frame = limit
        found, drain = take_class_default(cls, async_chat, "drain_on_eof")
        if found:
            cls._af_default_drain_on_eof = bool(drain)

    def __init__(self, sock: Optional[socket.socket] = None, map: Optional[Dict[Any, Any]] = None) -> None:
        self._af_setup()
        asyncore.dispatcher.__init__(self, sock, map)

    def _af_setup(self) -> FrameScanner:
        # Legacy subclasses call set_terminator() before async_chat.__init__,
        # so the core objects come to life at whichever happens first.
        scanner: Optional[FrameScanner] = self._af_scanner
        if scanner is None:
            cls = type(self)
            scanner = self._af_scanner = FrameScanner(_delivery_mode(cls))
            self._af_queue = PushQueue()
            if cls._af_default_terminator is not None:
                scanner.set_terminator(cls._af_default_terminator, self.encoding if self.use_encoding else None)
            if cls._af_default_max_frame:
                scanner.max_frame = cls._af_default_max_frame
            if cls._af_default_drain_on_eof:
                self._af_drain_on_eof = True
                self._af_refresh_generic_path()
            if cls._get_data is async_chat._get_data and _compiled_loop is None:
                # found_terminator() calls this once per frame: binding the
                # core's method saves a Python frame on every call (the
                # compiled loop's _get_data needs no binding)
                self._get_data = scanner.get_data  # type: ignore[method-assign]  # per-instance fast path
            if scanner.mode == MODE_CALLBACKS and cls._collect_incoming_data is async_chat._collect_incoming_data:
                # the same for a collect_incoming_data() that calls this once
                # per chunk (in the other modes the core collects by itself)
                self._collect_incoming_data = scanner.collect  # type: ignore[method-assign]
        return scanner

    # -- asynchat's attributes, kept by the core -----------------------------
    @property
    def terminator(self) -> Any:
        return self._af_setup().terminator

    @terminator.setter
    def terminator(self, term: Any) -> None:
        self._af_setup().set_terminator(term, self.encoding if self.use_encoding else None)

    @property
    def max_frame(self) -> int:
        """Most bytes a frame may gather before its terminator (0: no limit, the default).

        Past it ``frame_too_large(size)`` is called; the frame is dropped, so
        memory stays bounded by the limit plus one read, whatever the peer sends.
        """
        return self._af_setup().max_frame

    @max_frame.setter
    def max_frame(self, limit: int) -> None:
        self._af_setup().max_frame = limit

    def frame_too_large(self, size: int) -> None:
        """The peer sent more than ``max_frame`` bytes without a terminator.

        The default logs the reason and closes this channel only.
        """
        self.log_info(
            "closing %r: %d bytes without terminator exceed max_frame=%d" % (self, size, self.max_frame),
            "error",
        )
        self.handle_close()

    _af_drain_on_eof = False

    @property
    def drain_on_eof(self) -> bool:
        """Flush queued output before closing on the peer's end of file (default False).

        asynchat closes at once when the peer shuts down its sending side,
        dropping what is still queued.  With this set, the end of file with
        output queued stops reading and keeps the channel open until the
        queue is empty (pushes made meanwhile included), then calls
        ``handle_close``; with nothing queued it closes at once, as asynchat.
        A peer that never reads keeps the channel open: pair it with
        ``set_idle_timeout``.
        """
        self._af_setup()
        return self._af_drain_on_eof

    @drain_on_eof.setter
    def drain_on_eof(self, flag: bool) -> None:
        self._af_setup()
        self._af_drain_on_eof = bool(flag)
        self._af_refresh_generic_path()

    # -- frame timeout (asynframe._frame_timeout; its timer is dispatcher's
    # _af_call_later, on this channel's map) ---------------------------------
    def set_frame_timeout(self, seconds: Optional[float]) -> None:
        self._af_setup()
        FrameTimeout.set_frame_timeout(self, seconds)
        # checked after every read by the Python handle_read
        self._af_refresh_generic_path()

    set_frame_timeout.__doc__ = FrameTimeout.set_frame_timeout.__doc__

    def handle_frame_timeout(self) -> None:
        """A frame stayed incomplete past the frame timeout; the default logs and closes."""
        self.log_info(self._af_frame_timeout_message(), "error")
        self.handle_close()

    def _af_refresh_generic_path(self) -> None:
        asyncore.dispatcher._af_refresh_generic_path(self)
        if self._af_frame_timeout is not None:
            self._af_generic_path = True
        # an end of file already read keeps its rules (write-only interest,
        # close once drained) even if drain_on_eof is switched off meanwhile;
        # the compiled loop knows neither
        if self._af_drain_on_eof or self._af_eof:
            self._af_generic_path = True

    def _af_peer_eof(self) -> None:
        if self._af_drain_on_eof and self._af_queue and self.connected:
            self._af_eof = True
            _touch(self)  # interest becomes write-only
            self.initiate_send()
        else:
            self.handle_close()

    @property
    def ac_in_buffer(self) -> bytes:
        return self._af_setup().pending

    @ac_in_buffer.setter
    def ac_in_buffer(self, data: bytes) -> None:
        self._af_setup().pending = data

    @property
    def incoming(self) -> List[bytes]:
        return self._af_setup().incoming

    @incoming.setter
    def incoming(self, value: List[bytes]) -> None:
        self._af_setup().incoming = value

    @property
    def producer_fifo(self) -> Deque[Any]:
        self._af_setup()
        return deque(self._af_queue.snapshot())

    @producer_fifo.setter
    def producer_fifo(self, items: Any) -> None:
        self._af_setup()
        self._af_queue.replace(items)
        _touch(self)
        if self._af_limited:
            self._af_flow()

    # -- input ---------------------------------------------------------------
    def collect_incoming_data(self, data: bytes) -> None:
        raise NotImplementedError("must be implemented in subclass")

    def _collect_incoming_data(self, data: bytes) -> None:
        self._af_scanner.incoming.append(data)

    def _get_data(self) -> bytes:
        return self._af_scanner.get_data()

    # With the compiled loop, _get_data is its compiled twin, as push is
    # (below): in the channel's own read it finds the scanner without a
    # lookup.  Without it, _af_setup binds the scanner's get_data to each
    # instance, which saves the Python frame too.
    _af_python_get_data = _get_data
    if _compiled_loop is not None:
        _get_data = _compiled_loop.compiled_method(_get_data)

    def found_terminator(self) -> None:
        raise NotImplementedError("must be implemented in subclass")

    def set_terminator(self, term: Any) -> None:
        """Set the input delimiter: bytes of any length, an int byte count, or None."""
        self._af_setup().set_terminator(term, self.encoding if self.use_encoding else None)

    def get_terminator(self) -> Any:
        return self._af_setup().terminator

    def handle_read(self) -> None:
        if self._af_eof:
            return  # an event from before reading stopped
        scanner = self._af_scanner
        sock = self.socket
        if type(sock) is _PLAIN_SOCKET and type(self).recv is asyncore.dispatcher.recv:
            # stock recv() on a plain socket: read straight into the core's buffer
            try:
                got = scanner.fill(sock, self.ac_in_buffer_size)
            except OSError as why:
                self._af_socket_error(why)
                return
            if got <= 0:
                if got == 0:
                    self._af_peer_eof()
                return
            if self._af_idle_timeout is not None:
                self._af_last_activity = _monotonic()
            data = None
        else:
            try:
                data = self.recv(self.ac_in_buffer_size)
            except BlockingIOError:
                return
            except OSError:
                self.handle_error()
                return
            if isinstance(data, str) and self.use_encoding:
                data = data.encode(self.encoding)
            if not data:
                return
        self._af_deliver(scanner, sock, data)

    def _af_deliver(self, scanner: FrameScanner, sock: Any, data: Optional[bytes]) -> None:
        # the frames of one read (data None: the bytes the core holds)
        timed = self._af_frame_timeout is not None
        frames_before = scanner.frame_count if timed else 0
        cls = type(self)
        # replies to pipelined frames may be held for one send only where
        # nobody sees the difference: a plain socket written by the core
        coalesce = (
            type(sock) is _PLAIN_SOCKET
            and cls.send is asyncore.dispatcher.send
            and cls.initiate_send is async_chat.initiate_send
        )
        self._af_dispatching = coalesce
        self._af_scanning = True
        try:
            if data is None:
                scanner.process(self)
            else:
                scanner.feed(self, data)
        except Exception:
            # held replies to the frames before the failing one go out before
            # handle_error closes the channel, as asynchat's immediate push did.
            # Not for KeyboardInterrupt/SystemExit: raised by a signal handler,
            # they may fall between a send and its accounting in the pure
            # core, and the queue would send those bytes twice.
            if self._af_dispatching:
                self._af_release()
            raise
        finally:
            self._af_dispatching = False
            self._af_scanning = False
        if coalesce and self._af_queue:
            self.initiate_send()
        if timed and self._af_frame_timeout is not None and self.connected:
            self._af_frame_check(frames_before)

    # -- write-buffer limits and the input (asynframe._flow) ------------------
    # True while a read's frames are being delivered
    _af_scanning = False

    def _af_stop_delivery(self) -> None:
        # the high mark was crossed by a reply to one frame of a read: the
        # frames after it stay in the input buffer until writing resumes
        if self._af_scanning:
            self._af_scanner.stop()

    def _af_resume_delivery(self) -> None:
        scanner = self._af_scanner
        if scanner is not None and scanner.pending:
            # from the loop, not from inside the send that drained the queue
            self._af_call_later(0, self._af_deliver_kept)

    def _af_deliver_kept(self) -> None:
        if self.connected and not self._af_writing_paused and not self._af_eof:
            self._af_deliver(self._af_scanner, self.socket, None)

    def _af_holds_reply(self) -> bool:
        # push/push_file/push_with_producer: inside a coalescing read, with
        # another complete frame already buffered (the peer pipelines)
        if not (self._af_dispatching and self.hold_pipelined_replies and self._af_scanner.frame_follows()):
            return False
        if self._af_limited:
            self._af_flow()  # held replies count toward the high mark too
        return True

    def _af_release(self) -> None:
        # Something the peer or the socket object can observe comes next
        # (close, a socket swap, send(), start_tls, an error): the replies
        # held for pipelined frames go to the socket first, and the rest of
        # this read's pushes send at once.  Data only: a close_when_done()
        # sentinel keeps waiting for the write event, as in asynchat.
        self._af_dispatching = False
        queue = self._af_queue
        if queue and self.connected and not queue.close_pending:
            sock = self.socket
            if type(sock) is not _PLAIN_SOCKET:
                self.initiate_send()
            else:
                self._af_send_plain(sock)

    def _af_send_plain(self, sock: socket.socket) -> bool:
        # One scatter-gather send of the queue by the core; False when the
        # socket failed (the channel is closed or the error reported).
        try:
            sent = self._af_queue.send(sock)
        except OSError as why:
            self._af_socket_error(why)
            return False
        if sent and self._af_idle_timeout is not None:
            self._af_last_activity = _monotonic()
        return True

    def _af_socket_error(self, why: OSError) -> None:
        # The core's own recv/send on a plain socket: a disconnect closes the
        # channel, as dispatcher.recv/send do; anything else is reported, as
        # asynchat reports an OSError from recv/send.
        if why.errno in _DISCONNECTED:
            self.handle_close()
        else:
            self.handle_error()

    # -- output --------------------------------------------------------------
    def handle_write(self) -> None:
        self.initiate_send()

    def handle_close(self) -> None:
        self.close()

    def push(self, data: Any) -> None:
        """Queue *data* (bytes, bytearray or memoryview) for sending.

        From a thread other than the one running the channel's loop, the
        data (copied unless it is bytes or a view over bytes: the caller may
        reuse its buffer) is handed to the loop, which is woken and pushes
        it; see docs/hardening.md, "Which calls are thread-safe".
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data argument must be byte-ish (%r)" % (type(data),))
        # (inside the channel's own read the caller is the loop's thread)
        if not self._af_dispatching and _poller.off_loop_thread(self):
            _poller.call_soon_threadsafe(self._map, self.push, (_queued_data(data),))
            return
        self._af_queue.push(data)
        if self._af_holds_reply():
            return  # held: the peer pipelines (see the module doc)
        self.initiate_send()

    # With the compiled loop, push is its compiled twin: the same rule without
    # a Python frame per reply.  The Python method above is the specification
    # (tests/test_chat_push_equivalence.py runs both through every branch).
    _af_python_push = push
    if _compiled_loop is not None:
        push = _compiled_loop.compiled_method(push)

    def push_file(self, file: Any, offset: int = 0, count: Optional[int] = None, *, close: bool = True) -> None:
        """Queue *count* bytes of binary *file* from *offset* (None: to its end).

        Sent in order with what is pushed before and after, with
        ``os.sendfile`` where the platform has it and the file has a
        descriptor (``open(path, "rb")``), else read ``ac_out_buffer_size``
        bytes at a time.  The file position is neither used nor changed.
        With *close* (the default) the channel owns the file: it is closed
        once its range is sent or dropped (``discard_buffers``, ``close``).
        The unsent bytes count in ``get_write_buffer_size()``.  TypeError
        for a text or non-file object, ValueError for a negative offset or
        count, an unreadable or unseekable file; the file is left open then.
        """
        if _poller.off_loop_thread(self):
            _check_file(file, offset, count)  # bad arguments fail here, in the caller
            _poller.call_soon_threadsafe(self._map, _partial(self.push_file, file, offset, count, close=close), ())
            return
        self._af_queue.push_file(file, offset, count, close)
        if close:
            self._af_owns_files = True
        if self._af_holds_reply():
            return
        self.initiate_send()

    def push_with_producer(self, producer: Any) -> None:
        """Queue a producer: an object whose ``more()`` returns data, b"" at the end."""
        if _poller.off_loop_thread(self):
            _poller.call_soon_threadsafe(self._map, self.push_with_producer, (producer,))
            return
        queue = self._af_queue
        queue.encoding = self.encoding if self.use_encoding else None
        queue.push_producer(producer)
        if self._af_holds_reply():
            return
        self.initiate_send()

    def readable(self) -> bool:
        "predicate for inclusion in the readable for select()"
        # always True unless write-buffer limits paused reading
        return not self._af_writing_paused

    def writable(self) -> bool:
        "predicate for inclusion in the writable for select()"
        return bool(self._af_queue) or not self.connected

    def close_when_done(self) -> None:
        """Close the channel once everything queued so far has been sent."""
        if _poller.off_loop_thread(self):
            _poller.call_soon_threadsafe(self._map, self.close_when_done, ())
            return
        self._af_queue.push_close()
        _touch(self)

    def initiate_send(self) -> None:
        """Send what the socket takes now (one send), or act on the close sentinel."""
        queue = self._af_queue
        while queue and self.connected:
            if queue.close_pending:
                if self._af_tls is not None and not self._af_tls.ready_to_close(self):
                    break  # ciphertext or close_notify still waits for the kernel
                queue.pop_close()
                self.handle_close()
                return
            sock = self.socket
            if type(sock) is _PLAIN_SOCKET and type(self).send is asyncore.dispatcher.send:
                if not self._af_send_plain(sock):
                    return
            else:
                chunk = queue.next_chunk(self.ac_out_buffer_size)
                if chunk is not None:
                    try:
                        sent = self.send(chunk)
                    except OSError:
                        self.handle_error()
                        return
                    if sent:
                        queue.consume(sent)
            # one send per call, as asynchat; but a close sentinel that the
            # send uncovered is honoured now rather than one wakeup later
            if not queue.close_pending:
                break
        if self._af_eof and not queue and self.connected:
            # drain_on_eof: all sent after the peer's end of file
            self.handle_close()
            return
        _touch(self)
        if self._af_limited:
            self._af_flow()

    def discard_buffers(self) -> None:
        """Drop all input not yet delivered and all queued output."""
        self._af_scanner.clear()
        self._af_queue.clear()
        if self._af_limited:
            self._af_flow()

    def close(self) -> None:
        """Close the socket (``dispatcher.close``) and the files ``push_file`` owns."""
        if _poller.off_loop_thread(self):
            _poller.call_soon_threadsafe(self._map, self.close, ())
            return
        # a channel reused after close (reconnecting clients) reads again
        self._af_eof = False
        if self._af_frame_timer is not None:
            self._af_cancel_frame_timer()
        asyncore.dispatcher.close(self)
        if self._af_owns_files:
            # nothing queued can go out any more: release push_file's files
            self._af_queue.clear()


def _delivery_mode(cls: type) -> int:
    return delivery_mode(cls, async_chat._collect_incoming_data)


def _chat_interest(obj: Any) -> int:
    if obj.accepting:
        return _IN
    if obj._af_eof:
        return _OUT
    # no read interest while write-paused: the peer is held back by TCP
    mask = 0 if obj._af_writing_paused else _IN
    if obj._af_queue or not obj.connected:
        return mask | _OUT
    return mask


_poller.STOCK_INTEREST[(async_chat.readable, async_chat.writable)] = _chat_interest
_poller.enable_fast_path(async_chat)


class simple_producer:
    """Produce *data* in pieces of at most *buffer_size* bytes."""

    def __init__(self, data: bytes, buffer_size: int = 512) -> None:
        self.data = data
        self.buffer_size = buffer_size

    def more(self) -> bytes:
        if len(self.data) > self.buffer_size:
            result = self.data[: self.buffer_size]
            self.data = self.data[self.buffer_size :]
            return result
        result = self.data
        self.data = b""
        return result
