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

It works on any event loop that supports buffered protocols (asyncio's own
selector and proactor loops, uvloop) and over TLS transports.

``framed_reader`` is the client-side convenience: ``async for frame in
framed_reader(stream_reader, b"\\r\\n")``.

Limits: ``max_frame`` bounds the bytes a frame may accumulate before its
terminator (``frame_too_large`` is called, and closes the connection by
default).  Output flow control follows the transport's write buffer limits:
while the transport has paused writing, producers are not pulled, and with
``pause_reading_while_writing_paused`` (the default) the peer is not read
either, so a slow reader cannot grow memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Deque, List, Optional

from ._core import MODE_CALLBACKS, MODE_COLLECT, MODE_FRAMES, FrameScanner

__all__ = ["ChatProtocol", "FrameTooLarge", "framed_reader", "FramedReader"]

logger = logging.getLogger("asynframe.aio")

_BYTES_LIKE = (bytes, bytearray, memoryview)


class FrameTooLarge(ValueError):
    """A frame grew past ``max_frame`` bytes without its terminator."""


class ChatProtocol(asyncio.BufferedProtocol):
    """asynchat-style framing over an asyncio transport (see the module doc)."""

    #: size hint for the receive buffer
    ac_in_buffer_size = 65536
    use_encoding = 0
    encoding = "latin-1"
    #: most bytes a frame may accumulate before its terminator; 0: no limit
    max_frame = 0
    #: stop reading from the peer while the transport has paused writing
    pause_reading_while_writing_paused = True
    #: define ``frame_received(self, frame)`` in a subclass for one call per frame
    frame_received: Any = None

    transport: Optional[asyncio.BaseTransport] = None

    def __init__(self) -> None:
        self._scanner = FrameScanner(_protocol_mode(type(self)))
        if self.max_frame:
            self._scanner.max_frame = self.max_frame
        if type(self)._get_data is ChatProtocol._get_data:
            self._get_data = self._scanner.get_data  # type: ignore[method-assign]
        self._coalesced: List[bytes] = []
        self._dispatching = False
        # producers, bytes queued behind them, and the close sentinel
        self._waiting: Deque[Any] = deque()
        self._writing_paused = False
        self._closing = False

    # -- asyncio protocol ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._scanner.get_buffer(max(sizehint, self.ac_in_buffer_size))

    def buffer_updated(self, nbytes: int) -> None:
        self._dispatching = True
        try:
            self._scanner.buffer_updated(self, nbytes)
        finally:
            self._dispatching = False
        if self._coalesced:
            self._flush()

    def eof_received(self) -> Optional[bool]:
        # keep the write side open while close_when_done() output is pending
        return True if self._waiting else None

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._waiting.clear()
        self._coalesced.clear()

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.pause_reading_while_writing_paused and self.transport is not None:
            try:
                self.transport.pause_reading()  # type: ignore[attr-defined]
            except (AttributeError, RuntimeError):
                pass

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.pause_reading_while_writing_paused and self.transport is not None:
            try:
                self.transport.resume_reading()  # type: ignore[attr-defined]
            except (AttributeError, RuntimeError):
                pass
        self._pump()

    # -- asynchat's interface ----------------------------------------------------
    def set_terminator(self, term: Any) -> None:
        """Bytes of any length, an int byte count, or None."""
        self._scanner.set_terminator(term, self.encoding if self.use_encoding else None)

    def get_terminator(self) -> Any:
        return self._scanner.terminator

    @property
    def terminator(self) -> Any:
        return self._scanner.terminator

    @property
    def incoming(self) -> List[bytes]:
        return self._scanner.incoming

    def collect_incoming_data(self, data: bytes) -> None:
        raise NotImplementedError("must be implemented in subclass")

    def _collect_incoming_data(self, data: bytes) -> None:
        self._scanner.incoming.append(data)

    def _get_data(self) -> bytes:
        return self._scanner.get_data()

    def found_terminator(self) -> None:
        raise NotImplementedError("must be implemented in subclass")

    def frame_too_large(self, size: int) -> None:
        """A frame passed ``max_frame``; the default logs and closes the connection."""
        logger.warning(
            "closing %r: frame of more than %d bytes without terminator (%d buffered)",
            self, self.max_frame, size,
        )
        self.close()

    def push(self, data: Any) -> None:
        """Queue *data* for sending; inside a receive callback, sends are coalesced."""
        if not isinstance(data, _BYTES_LIKE):
            raise TypeError("data argument must be byte-ish (%r)" % (type(data),))
        if not data or self._closing:
            return
        if self._waiting:
            self._waiting.append(bytes(data))
        elif self._dispatching:
            self._coalesced.append(data)
        else:
            self.transport.write(data)  # type: ignore[union-attr]

    def push_with_producer(self, producer: Any) -> None:
        """Queue a producer (``more()`` returns data, b"" when done)."""
        if isinstance(producer, _BYTES_LIKE):
            self.push(producer)
            return
        if not hasattr(producer, "more"):
            raise TypeError("producer must have a more() method, not %s" % type(producer).__name__)
        self._waiting.append(producer)
        if not self._dispatching:
            self._pump()

    def close_when_done(self) -> None:
        """Close once everything queued so far has been handed to the transport."""
        self._waiting.append(None)
        if not self._dispatching:
            self._pump()

    def discard_buffers(self) -> None:
        self._scanner.clear()
        self._coalesced.clear()
        self._waiting.clear()

    def close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    # -- output plumbing -------------------------------------------------------------
    def _flush(self) -> None:
        coalesced = self._coalesced
        if len(coalesced) == 1:
            self.transport.write(coalesced[0])  # type: ignore[union-attr]
        else:
            self.transport.writelines(coalesced)  # type: ignore[union-attr]
        self._coalesced = []
        if self._waiting:
            self._pump()

    def _pump(self) -> None:
        waiting = self._waiting
        transport = self.transport
        if transport is None:
            return
        if self._coalesced:
            coalesced, self._coalesced = self._coalesced, []
            transport.writelines(coalesced)  # type: ignore[attr-defined]
        while waiting and not self._writing_paused:
            head = waiting[0]
            if head is None:
                waiting.clear()
                self.close()
                return
            if isinstance(head, bytes):
                waiting.popleft()
                transport.write(head)  # type: ignore[attr-defined]
                continue
            data = head.more()
            if not data:
                waiting.popleft()
                continue
            if isinstance(data, str):
                if not self.use_encoding:
                    raise TypeError("producer returned str; set use_encoding or return bytes")
                data = data.encode(self.encoding)
            transport.write(data)  # type: ignore[attr-defined]


def _protocol_mode(cls: type) -> int:
    if getattr(cls, "frame_received", None) is not None:
        return MODE_FRAMES
    if getattr(cls, "collect_incoming_data", None) is ChatProtocol._collect_incoming_data:
        return MODE_COLLECT
    return MODE_CALLBACKS


class FramedReader:
    """Frames from an ``asyncio.StreamReader``, one at a time.

    ``set_terminator`` between frames applies to the very next byte: the core
    stops after each frame and keeps the rest of the read for later.
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
        self._scanner.set_terminator(term)

    @property
    def terminator(self) -> Any:
        return self._scanner.terminator

    # scanner callbacks
    def frame_received(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._scanner.stop()

    def frame_too_large(self, size: int) -> None:
        self._too_large = size

    async def read_frame(self) -> bytes:
        """The next frame; ``asyncio.IncompleteReadError`` at end of stream."""
        scanner = self._scanner
        frames = self._frames
        while not frames:
            if scanner.pending:
                scanner.process(self)
                if frames:
                    break
            if self._too_large is not None:
                raise FrameTooLarge("frame exceeds max_frame (%d bytes buffered)" % self._too_large)
            data = await self._reader.read(self._read_size)
            if not data:
                partial = b"".join(scanner.incoming) + scanner.pending
                raise asyncio.IncompleteReadError(partial, None)
            scanner.feed(self, data)
            if self._too_large is not None:
                raise FrameTooLarge("frame exceeds max_frame (%d bytes buffered)" % self._too_large)
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
    reader: asyncio.StreamReader, terminator: Any = b"\r\n", *, max_frame: int = 1 << 20
) -> FramedReader:
    """``async for frame in framed_reader(reader, b"\\r\\n")``: see ``FramedReader``."""
    return FramedReader(reader, terminator, max_frame=max_frame)

