"""The framing core for asyncio and uvloop: asynchat's interface on a transport.

``ChatProtocol`` is an ``asyncio.BufferedProtocol``: the transport receives
straight into the core's buffer (``get_buffer``/``buffer_updated``, no extra
copy) and the core splits it the way ``async_chat`` does.  Subclass it like
an ``async_chat``::

    class Echo(ChatProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self.set_terminator(b"\\r\\n")

        def frame_received(self, line):
            self.push(line + b"\\r\\n")

    server = await loop.create_server(Echo, "127.0.0.1", 8025)

The three delivery styles of ``async_chat`` work unchanged:
``collect_incoming_data``/``found_terminator``; ``collect_incoming_data =
ChatProtocol._collect_incoming_data`` with ``_get_data()`` (the chunks are
collected by the core, no Python call per chunk); or ``frame_received(frame)``,
one call per frame.  ``set_terminator`` takes bytes of any length, an int byte
count (counting down, as asynchat's) or None, and a change made inside a
callback applies to the very next byte.  ``terminator = b"\\r\\n"`` and
``max_frame = N`` may be given as class attributes.  Subclasses that define
``__init__``, ``connection_made`` or ``connection_lost`` must call the base
class' method.

It works on any event loop that supports buffered protocols (asyncio's own
selector and proactor loops, uvloop), on the server side
(``loop.create_server``) and the client side (``loop.create_connection``),
over plain and TLS transports.

Output: ``push`` hands data to the transport at once, except inside a receive
callback, where pushes are collected and handed over in one ``write`` (or
``writelines``) when the read has been scanned.  ``push_with_producer``
queues a producer, pulled only while the transport accepts more (see below);
anything pushed after it waits its turn.  ``close_when_done`` closes once
everything queued before it has been handed to the transport, which sends it
all before closing the socket.  ``close`` closes now: what was pushed has been
handed to the transport and is still sent, producers not yet drained are
dropped.  After end of file from the peer, output still queued is finished,
then the connection closes (on TLS, which has no half-close, it is dropped,
as asynchat drops it).

``framed_reader`` is the stream-side counterpart: ``async for frame in
framed_reader(stream_reader, b"\\r\\n")``, for code built on
``asyncio.open_connection``/``asyncio.start_server``.

Limits: ``max_frame`` bounds the bytes a frame may accumulate before its
terminator (``frame_too_large(size)`` is called, which closes the connection
by default; ``framed_reader`` raises ``FrameTooLarge``).  Output flow control
follows the transport's write buffer limits (``set_write_buffer_limits``):
between ``pause_writing`` and ``resume_writing`` producers are not pulled,
and with ``pause_reading_while_writing_paused`` (the default) the peer is not
read either, so a peer that sends requests but does not read the answers
cannot grow memory without bound.  Plain ``push`` calls are not held back:
like ``transport.write`` they always buffer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Deque, List, Optional, Union, cast

from ._chat_common import delivery_mode, take_class_default
from ._core import MODE_CALLBACKS as MODE_CALLBACKS
from ._core import MODE_COLLECT as MODE_COLLECT
from ._core import MODE_FRAMES, FrameScanner
from ._core_common import queued_data
from ._frame_timeout import FrameTimeout

__all__ = ["ChatProtocol", "FrameTooLarge", "framed_reader", "FramedReader"]

logger = logging.getLogger("asynframe.aio")

_BYTES_LIKE = (bytes, bytearray, memoryview)


class FrameTooLarge(ValueError):
    """A frame grew past ``max_frame`` bytes without its terminator."""


class ChatProtocol(FrameTimeout, asyncio.BufferedProtocol):
    """asynchat-style framing over an asyncio transport (see the module doc)."""

    #: size of the receive buffer offered to the transport
    ac_in_buffer_size = 65536
    #: str data from producers (and str terminators) need an explicit opt-in
    use_encoding = 0
    encoding = "latin-1"
    #: stop reading from the peer while the transport has paused writing
    pause_reading_while_writing_paused = True
    #: define ``frame_received(self, frame)`` in a subclass for one call per frame
    frame_received: Any = None

    transport: Optional[asyncio.Transport] = None

    # A class attribute ``terminator = b"\r\n"`` (or ``max_frame = N``) on a
    # subclass would hide the properties below; __init_subclass__ moves it
    # here and every instance starts with it, as with async_chat.
    _default_terminator: Any = None
    _default_max_frame = 0

    # Set up by _setup(); None on the class so that a subclass __init__
    # that forgot super().__init__() is caught up by connection_made().
    _scanner: Any = None
    # Per-connection state with its resting value on the class: an idle
    # connection's instance dict holds only what differs (issue: a 100k-
    # connection server pays every byte here 100k times).
    # pushes made while a read is scanned, written in one call afterwards
    _coalesced: Any = ()
    # producers, bytes queued behind them, and None (the close sentinel);
    # a deque once something waits
    _waiting: Any = ()
    _dispatching = False
    _pumping = False
    _resuming = False
    _writing_paused = False
    # reading was paused by pause_writing (not by the application)
    _reading_paused = False
    _closing = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found, term = take_class_default(cls, ChatProtocol, "terminator")
        if found:
            cls._default_terminator = term
        found, limit = take_class_default(cls, ChatProtocol, "max_frame")
        if found:
            cls._default_max_frame = limit

    def __init__(self) -> None:
        self._setup()

    def _setup(self) -> FrameScanner:
        existing: Optional[FrameScanner] = self._scanner
        if existing is not None:
            return existing
        cls = type(self)
        scanner = self._scanner = FrameScanner(_protocol_mode(cls))
        if cls._default_terminator is not None:
            scanner.set_terminator(cls._default_terminator, self.encoding if self.use_encoding else None)
        if cls._default_max_frame:
            scanner.max_frame = cls._default_max_frame
        if cls._get_data is ChatProtocol._get_data:
            # found_terminator() calls this once per frame: binding the core's
            # method saves a Python frame on every call
            self._get_data = scanner.get_data  # type: ignore[method-assign]
        return scanner

    def _drop_waiting(self) -> None:
        # emptied in place: a producer's more() running in _pump() holds it
        waiting = self._waiting
        if waiting:
            waiting.clear()

    def _wait(self, item: Any) -> None:
        # queue *item* behind the producers (the deque is made on first use)
        waiting = self._waiting
        if waiting.__class__ is not deque:
            waiting = self._waiting = deque()
        waiting.append(item)

    # -- asyncio protocol --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._setup()
        self.transport = cast(asyncio.Transport, transport)
        if self._waiting:
            # pushed before the connection existed
            self._pump()

    def get_buffer(self, sizehint: int) -> Any:
        # asyncio asks with -1, uvloop with its own suggestion: the core's
        # buffer is at least ac_in_buffer_size (a memoryview, or the C core's
        # buffer object) and the transport receives straight into it.
        return self._scanner.get_buffer(max(sizehint, self.ac_in_buffer_size))

    def buffer_updated(self, nbytes: int) -> None:
        timed = self._af_frame_timeout is not None
        frames_before = self._scanner.frame_count if timed else 0
        self._dispatching = True
        try:
            self._scanner.buffer_updated(self, nbytes)
        finally:
            self._dispatching = False
        if timed and self._af_frame_timeout is not None and not self._closing:
            self._af_frame_check(frames_before)
        # A callback may have pushed (coalesced), or queued a producer or
        # close_when_done() without any push: both need a pump.
        if self._coalesced or self._waiting:
            self._pump()

    def eof_received(self) -> Optional[bool]:
        """The peer sent EOF: finish what is queued, then close.

        Returning None lets the transport close once its write buffer is
        flushed; output still queued here (producers) needs the write side
        kept open, which only half-closable transports allow.
        """
        # the transport lent a receive area for this read and got EOF
        if self._scanner is not None:
            self._scanner.forget_buffer()
        waiting = self._waiting
        if not waiting or self._closing:
            return None
        transport = self.transport
        try:
            half_close = transport is not None and transport.can_write_eof()
        except (AttributeError, NotImplementedError):
            half_close = False
        if not half_close:
            # TLS: returning True would only log a warning, the transport
            # closes anyway.  What was not handed over is dropped.
            waiting.clear()
            return None
        if waiting[-1] is not None:
            waiting.append(None)
        return True

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._closing = True
        # a reset ends the last read with no buffer_updated() either
        if self._scanner is not None:
            self._scanner.forget_buffer()
        if self._af_frame_timer is not None:
            self._af_cancel_frame_timer()
        self._drop_waiting()
        self._coalesced = ()

    def pause_writing(self) -> None:
        self._writing_paused = True
        if not self.pause_reading_while_writing_paused or self._closing:
            return
        transport = self.transport
        try:
            # only pause what is running, so that resume_writing() does not
            # restart reading the application paused itself
            if transport is not None and transport.is_reading():
                transport.pause_reading()
                self._reading_paused = True
        except (AttributeError, NotImplementedError, RuntimeError):
            pass

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._reading_paused:
            self._reading_paused = False
            transport = self.transport
            try:
                if transport is not None and not self._closing:
                    transport.resume_reading()
            except (AttributeError, NotImplementedError, RuntimeError):
                pass
        self._resuming = True
        try:
            self._pump()
        finally:
            self._resuming = False

    # -- asynchat's interface ----------------------------------------------------
    def set_terminator(self, term: Any) -> None:
        """Bytes of any length, an int byte count, or None."""
        self._setup().set_terminator(term, self.encoding if self.use_encoding else None)

    def get_terminator(self) -> Any:
        return self._setup().terminator

    @property
    def terminator(self) -> Any:
        """The current terminator; an int counts down as its bytes arrive."""
        return self._setup().terminator

    @terminator.setter
    def terminator(self, term: Any) -> None:
        self.set_terminator(term)

    @property
    def max_frame(self) -> int:
        """Most bytes a frame may gather before its terminator (0: no limit, the default)."""
        return int(self._setup().max_frame)

    @max_frame.setter
    def max_frame(self, limit: int) -> None:
        self._setup().max_frame = limit

    @property
    def incoming(self) -> List[bytes]:
        """The chunks ``_collect_incoming_data`` collected for the current frame."""
        return self._setup().incoming

    @property
    def ac_in_buffer(self) -> bytes:
        """Bytes received and not yet delivered (a possible terminator prefix)."""
        return bytes(self._setup().pending)

    @ac_in_buffer.setter
    def ac_in_buffer(self, data: bytes) -> None:
        self._setup().pending = data

    def collect_incoming_data(self, data: bytes) -> None:
        raise NotImplementedError("must be implemented in subclass")

    def _collect_incoming_data(self, data: bytes) -> None:
        self._scanner.incoming.append(data)

    def _get_data(self) -> bytes:
        return cast(bytes, self._scanner.get_data())

    def found_terminator(self) -> None:
        raise NotImplementedError("must be implemented in subclass")

    # -- frame timeout (asynframe._frame_timeout) ------------------------------
    @property
    def _af_scanner(self) -> FrameScanner:
        return self._setup()

    def _af_call_later(self, delay: float, callback: Any) -> Any:
        return asyncio.get_running_loop().call_later(delay, callback)

    def set_frame_timeout(self, seconds: Optional[float]) -> None:
        FrameTimeout.set_frame_timeout(self, seconds)

    set_frame_timeout.__doc__ = FrameTimeout.set_frame_timeout.__doc__

    def handle_frame_timeout(self) -> None:
        """A frame stayed incomplete past the frame timeout; the default logs and closes."""
        logger.warning(self._af_frame_timeout_message())
        self.close()

    def frame_too_large(self, size: int) -> None:
        """A frame passed ``max_frame``; the default logs and closes the connection."""
        logger.warning(
            "closing %r: %d bytes without terminator exceed max_frame=%d",
            self,
            size,
            self.max_frame,
        )
        self.close()

    def push(self, data: Any) -> None:
        """Send *data*; inside a receive callback, sends are coalesced."""
        if not isinstance(data, _BYTES_LIKE):
            raise TypeError("data argument must be byte-ish (%r)" % (type(data),))
        if data.__class__ is not bytes:
            # a view over bytes is kept as it is (nothing can change it); the
            # caller may reuse anything else once push() returns: a copy
            data = queued_data(data)
        if not data or self._closing:
            return
        if self._waiting or self.transport is None:
            # behind a producer (or before the connection): wait in line
            self._wait(data)
        elif self._dispatching:
            coalesced = self._coalesced
            if coalesced:
                coalesced.append(data)
            else:
                self._coalesced = [data]
        else:
            self.transport.write(data)

    def push_with_producer(self, producer: Any) -> None:
        """Queue a producer (``more()`` returns data, b"" when done)."""
        if isinstance(producer, _BYTES_LIKE):
            self.push(producer)
            return
        if not hasattr(producer, "more"):
            raise TypeError("producer must have a more() method, not %s" % type(producer).__name__)
        if self._closing:
            return
        self._wait(producer)
        if not self._dispatching:
            self._pump()

    def close_when_done(self) -> None:
        """Close once everything queued so far has been handed to the transport."""
        if self._closing:
            return
        self._wait(None)
        if not self._dispatching:
            self._pump()

    def initiate_send(self) -> None:
        """Hand queued output to the transport now, as far as flow control allows."""
        self._pump()

    def discard_buffers(self) -> None:
        """Drop input not yet delivered and output not yet handed to the transport."""
        self._scanner.clear()
        self._coalesced = ()
        self._drop_waiting()

    def close(self) -> None:
        """Close the transport: what was pushed is still sent, producers are dropped.

        Called from a receive callback, no callback follows for the rest of
        the read (a closed asyncio transport delivers no more data either).
        """
        if self._closing:
            return
        self._closing = True
        if self._af_frame_timer is not None:
            self._af_cancel_frame_timer()
        if self._dispatching:
            self._scanner.stop()
        transport = self.transport
        coalesced, self._coalesced = self._coalesced, ()
        self._drop_waiting()
        if transport is not None:
            if coalesced:
                # pushed during this read: outside a callback they would be in
                # the transport already, which flushes them before closing
                transport.writelines(coalesced)
            if self._resuming:
                # asyncio's selector transport calls connection_lost() twice
                # (the second time failing) when close() runs inside
                # resume_writing() once its buffer is empty: close from the
                # next loop iteration; nothing more is written meanwhile
                try:
                    asyncio.get_running_loop().call_soon(transport.close)
                    return
                except RuntimeError:  # no loop running: not asyncio's transport
                    pass
            transport.close()

    # -- output plumbing -----------------------------------------------------------
    def _pump(self) -> None:
        """Write coalesced pushes, then drain the queue while writing is not paused."""
        transport = self.transport
        if transport is None or self._closing or self._pumping:
            # a push_with_producer()/close_when_done() from a producer's more(),
            # or resume_writing() during a write: the running pump goes on
            return
        self._pumping = True
        try:
            coalesced = self._coalesced
            if coalesced:
                self._coalesced = ()
                if len(coalesced) == 1:
                    transport.write(coalesced[0])
                else:
                    transport.writelines(coalesced)
            waiting = self._waiting
            while waiting and not self._closing:
                head = waiting[0]
                if head is None:
                    # everything before the sentinel is in the transport, which
                    # sends it before closing: no need to wait for resume_writing
                    self.close()
                    return
                if self._writing_paused:
                    return
                if head.__class__ is bytes or head.__class__ is memoryview:
                    waiting.popleft()
                    transport.write(head)
                    continue
                data = head.more()
                if self._closing or not waiting or waiting[0] is not head:
                    # more() closed the connection or discarded the buffers:
                    # its output goes with the rest
                    continue
                if not data:
                    waiting.popleft()
                    continue
                if data.__class__ is not bytes:
                    data = self._producer_bytes(data)
                transport.write(data)
        finally:
            self._pumping = False

    def _producer_bytes(self, data: Any) -> Union[bytes, memoryview]:
        if isinstance(data, str):
            if not self.use_encoding:
                raise TypeError("producer returned str; set use_encoding or return bytes")
            return data.encode(self.encoding)
        if isinstance(data, _BYTES_LIKE):
            # a producer may refill its buffer on the next more()
            return queued_data(data)
        raise TypeError("producer.more() must return bytes, not %s" % type(data).__name__)


def _protocol_mode(cls: type) -> int:
    return delivery_mode(cls, ChatProtocol._collect_incoming_data)


class FramedReader:
    """Frames from an ``asyncio.StreamReader``, one at a time.

    ``set_terminator`` between frames applies to the very next byte: the core
    stops after each frame and keeps the rest of the read for later.  As with
    asynchat, an int terminator counts down to 0, and 0 (like None) means no
    framing: each read is then returned as it comes.  Set the next terminator
    after an int frame.

    ``read_frame()`` raises ``FrameTooLarge`` when a frame passes
    ``max_frame`` bytes (0: no limit) and ``asyncio.IncompleteReadError`` at
    end of stream (``partial`` holds an unterminated rest).  Iteration ends
    at a clean end of stream and raises ``IncompleteReadError`` if it ends
    inside a frame.  The error of an oversized frame is final: the reader
    has dropped the data, so later calls raise it again.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        terminator: Any = b"\r\n",
        *,
        max_frame: int = 1 << 20,
        read_size: int = 65536,
    ) -> None:
        if max_frame < 0:
            raise ValueError("max_frame must be >= 0")
        if read_size <= 0:
            raise ValueError("read_size must be positive")
        self._reader = reader
        self._scanner = FrameScanner(MODE_FRAMES)
        self._scanner.set_terminator(terminator)
        self._scanner.max_frame = max_frame
        self._read_size = read_size
        self._frames: Deque[bytes] = deque()
        self._too_large: Optional[int] = None

    def set_terminator(self, term: Any) -> None:
        """Bytes of any length, an int byte count, or None; for the next frame."""
        self._scanner.set_terminator(term)

    def get_terminator(self) -> Any:
        return self._scanner.terminator

    @property
    def terminator(self) -> Any:
        return self._scanner.terminator

    @property
    def max_frame(self) -> int:
        return int(self._scanner.max_frame)

    # scanner callbacks
    def frame_received(self, frame: bytes) -> None:
        self._frames.append(frame)
        # one frame per scan: a terminator set before the next read_frame()
        # must see the rest of this read
        self._scanner.stop()

    def frame_too_large(self, size: int) -> None:
        self._too_large = size

    def _check_too_large(self) -> None:
        if self._too_large is not None:
            raise FrameTooLarge(
                "frame exceeds max_frame=%d (%d bytes without terminator)" % (self._scanner.max_frame, self._too_large)
            )

    async def read_frame(self) -> bytes:
        """The next frame; ``asyncio.IncompleteReadError`` at end of stream."""
        scanner = self._scanner
        frames = self._frames
        self._check_too_large()
        if not frames and scanner.pending:
            # the rest of an earlier read, under the terminator in force now
            scanner.process(self)
            self._check_too_large()
        while not frames:
            data = await self._reader.read(self._read_size)
            if not data:
                partial = b"".join(scanner.incoming) + bytes(scanner.pending)
                raise asyncio.IncompleteReadError(partial, None)
            scanner.feed(self, data)
            self._check_too_large()
        return frames.popleft()

    def __aiter__(self) -> "FramedReader":
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.read_frame()
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            raise StopAsyncIteration from None


def framed_reader(
    reader: asyncio.StreamReader,
    terminator: Any = b"\r\n",
    *,
    max_frame: int = 1 << 20,
    read_size: int = 65536,
) -> FramedReader:
    """``async for frame in framed_reader(reader, b"\\r\\n")``: see ``FramedReader``."""
    return FramedReader(reader, terminator, max_frame=max_frame, read_size=read_size)
