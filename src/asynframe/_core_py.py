"""Pure-Python twin of the framing core (``asynframe._core_c``).

Same classes, same methods, same observable behaviour as the Cython module;
used on PyPy, where no compiler was available, or when
``ASYNFRAME_NO_EXTENSIONS=1`` is set.  ``tests/`` runs every behaviour test
against both.

Two objects make up the core:

``FrameScanner``
    The input side.  Bytes go in (``feed`` or ``get_buffer``/``buffer_updated``)
    and come out as the callback sequence ``asynchat.async_chat.handle_read``
    would produce for the same bytes and the same terminators.

``PushQueue``
    The output side.  An ordered queue of byte strings, producers and the
    close sentinel, flushed with one scatter-gather ``sendmsg`` per call.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Deque, List, Optional, Tuple, Union, cast

from ._core_common import (
    DEFAULT_READ_SIZE,
    FILE_READ_SIZE,
    IOV_MAX,
    MODE_CALLBACKS,
    MODE_COLLECT,
    MODE_FRAMES,
    SEND_BUDGET,
    SENDFILE_MAX,  # noqa: F401  (part of the core's public names)
    check_chunk_size,
    check_count,
    check_file,
    check_mode,
    check_read_size,
    check_terminator,
    read_file_range,
    sendfile_once,
)
from ._core_common import HAS_SENDFILE as _HAS_SENDFILE

IMPLEMENTATION = "python"

_TerminatorType = Union[bytes, int, None]


def find_prefix_at_end(haystack: bytes, needle: bytes) -> int:
    """Length of the longest proper prefix of *needle* that ends *haystack*.

    ``find_prefix_at_end(b"qwerty\\r", b"\\r\\n") == 1``.  Same contract as
    ``asynchat.find_prefix_at_end``.
    """
    length = len(needle) - 1
    while length and not haystack.endswith(needle[:length]):
        length -= 1
    return length


class FrameScanner:
    """Split an incoming byte stream at the current terminator.

    The terminator is bytes (any length), an int (a byte count that counts
    down as data arrives, like asynchat's ``terminator`` attribute), or
    ``None``/``0``/``b""`` (no framing: everything is delivered).

    How data reaches the *target* object passed to ``feed``/``buffer_updated``
    depends on *mode*:

    ``MODE_CALLBACKS``
        ``target.collect_incoming_data(chunk)`` then ``target.found_terminator()``,
        call for call what asynchat makes.
    ``MODE_COLLECT``
        The scanner appends chunks to its own ``incoming`` list (what asynchat's
        ``_collect_incoming_data`` does) and calls ``target.found_terminator()``;
        ``get_data()`` joins and empties the list (asynchat's ``_get_data``).
    ``MODE_FRAMES``
        One call per frame: ``target.frame_received(frame)`` with the whole
        frame assembled, terminator excluded.  Without a terminator each chunk
        of stream data is handed over as it arrives.

    Changing the terminator or the mode inside a callback applies to the very
    next byte.  Bytes that might be the start of a split terminator are held
    back (``pending``) until the next read decides.  ``clear()`` inside a
    callback drops the rest of the data being scanned.
    """

    __slots__ = (
        "_mode", "_term", "_held", "_incoming", "_clears", "_stops", "_max_frame",
        "_partial", "_busy", "_recv_area", "_scan_data", "_scan_next", "_scan_clears", "_frames",
    )

    def __init__(self, mode: int = MODE_CALLBACKS) -> None:
        self._mode = check_mode(mode)
        # bytes, or the int count still to come (0 once reached), or None
        self._term: Any = None
        self._held = b""
        self._incoming: List[bytes] = []
        # Bumped by clear(); the scanning loop stops when a callback cleared.
        self._clears = 0
        # Bumped by stop(): the scanning loop returns after that callback.
        self._stops = 0
        self._max_frame = 0
        # bytes of the current frame delivered so far (for max_frame)
        self._partial = 0
        self._busy = False
        self._recv_area: Optional[bytearray] = None
        # while a scan calls back: the bytes scanned, the offset just past the
        # frame being delivered, and _clears at the start (frame_follows())
        self._scan_data: Optional[bytes] = None
        self._scan_next = 0
        self._scan_clears = 0
        self._frames = 0

    # -- configuration -----------------------------------------------------
    @property
    def mode(self) -> int:
        """MODE_CALLBACKS, MODE_COLLECT or MODE_FRAMES."""
        return self._mode

    @mode.setter
    def mode(self, mode: int) -> None:
        self._mode = check_mode(mode)

    def set_terminator(self, term: _TerminatorType, encoding: Optional[str] = None) -> None:
        """Set the terminator; *encoding* converts a str terminator to bytes."""
        self._term = check_terminator(term, encoding)

    @property
    def terminator(self) -> _TerminatorType:
        """The current terminator; an int counts down as its bytes arrive."""
        return cast(_TerminatorType, self._term)

    @terminator.setter
    def terminator(self, term: _TerminatorType) -> None:
        self._term = check_terminator(term, None)

    # -- state -------------------------------------------------------------
    @property
    def pending(self) -> bytes:
        """Bytes received and not yet delivered (a possible terminator prefix)."""
        return self._held

    @pending.setter
    def pending(self, data: bytes) -> None:
        # asynchat code assigns ac_in_buffer directly (b"" to discard input)
        if self._busy:
            raise RuntimeError("pending cannot be replaced from inside a scanner callback")
        self._held = bytes(data) if data else b""

    @property
    def incoming(self) -> List[bytes]:
        """Chunks of the current frame collected by the core (MODE_COLLECT/FRAMES)."""
        return self._incoming

    @incoming.setter
    def incoming(self, value: List[bytes]) -> None:
        if not isinstance(value, list):
            raise TypeError("incoming must be a list, not %s" % type(value).__name__)
        self._incoming = value

    def collect(self, data: bytes) -> None:
        """Append *data* to ``incoming`` (asynchat's ``_collect_incoming_data``)."""
        self._incoming.append(data)

    def get_data(self) -> bytes:
        """Join and empty ``incoming`` (asynchat's ``_get_data``)."""
        incoming = self._incoming
        if len(incoming) == 1 and incoming[0].__class__ is bytes:
            data = incoming[0]
        else:
            data = b"".join(incoming)
        del incoming[:]
        return data

    def stop(self) -> None:
        """From inside a callback: end the scan after it; the rest stays in ``pending``."""
        self._stops += 1

    @property
    def frame_count(self) -> int:
        """Frames delivered so far (each ``found_terminator``/``frame_received``)."""
        return self._frames

    @property
    def partial_size(self) -> int:
        """Bytes of the frame in progress: delivered as chunks, or held back."""
        return self._partial + len(self._held)

    def frame_follows(self) -> bool:
        """Whether a complete frame waits behind the one being delivered (see the C core)."""
        data = self._scan_data
        if data is None or self._clears != self._scan_clears:
            return False
        term = self._term
        if not term:
            return False
        if term.__class__ is bytes:
            return data.find(term, self._scan_next) >= 0
        return bool(len(data) - self._scan_next >= term)

    @property
    def max_frame(self) -> int:
        """Most bytes a frame may gather before its terminator; 0 means no limit.

        Past it the frame and the rest of the read are dropped and
        ``target.frame_too_large(size)`` is called.  A change made inside a
        callback applies to the very next byte.
        """
        return self._max_frame

    @max_frame.setter
    def max_frame(self, limit: int) -> None:
        self._max_frame = check_count("max_frame", limit)

    def clear(self) -> None:
        """Drop held-back bytes and collected chunks; scanning in progress stops."""
        self._partial = 0
        self._held = b""
        del self._incoming[:]
        self._clears += 1

    # -- input ---------------------------------------------------------------
    def feed(self, target: Any, data: Any) -> None:
        """Scan *data* (appended to anything held back), calling back *target*.

        An empty *data* re-scans what is held back, as any asynchat read does.
        """
        if self._busy:
            raise RuntimeError("FrameScanner.feed() called from inside one of its callbacks")
        if data.__class__ is not bytes:
            # bytes-like only, as the C core's buffer request: str, None, ints
            # and lists raise TypeError even when empty
            data = bytes(memoryview(data))
        if not data and not self._held:
            return
        if self._held:
            data = self._held + data
            self._held = b""
        self._busy = True
        try:
            self._scan(target, data)
        finally:
            self._busy = False

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable buffer to ``recv_into``; then report the count to ``buffer_updated``."""
        if self._busy:
            raise RuntimeError("get_buffer() called from inside a scanner callback")
        if sizehint is None or sizehint <= 0:
            sizehint = DEFAULT_READ_SIZE
        area = self._recv_area
        if area is None or len(area) < sizehint:
            area = self._recv_area = bytearray(sizehint)
        return memoryview(area)

    def buffer_updated(self, target: Any, nbytes: int) -> None:
        """Scan the first *nbytes* written into the area ``get_buffer()`` returned."""
        if self._busy:
            raise RuntimeError("FrameScanner.buffer_updated() called from inside one of its callbacks")
        area = self._recv_area
        size = 0 if area is None else len(area)
        if nbytes < 0 or nbytes > size:
            raise ValueError("nbytes %d outside the buffer of %d bytes" % (nbytes, size))
        if nbytes:
            self.feed(target, bytes(cast(bytearray, area)[:nbytes]))  # nbytes > 0: area is set
        else:
            # as in the C core (and asynchat on any read): what is held back
            # is scanned again, at the terminator in force now
            self.process(target)

    def fill(self, sock: Any, size: int = DEFAULT_READ_SIZE) -> int:
        """``recv`` up to *size* bytes from *sock* (socket or fd) into the buffer.

        The bytes join ``pending`` unscanned; ``process()`` scans them.
        Returns the byte count, 0 at end of file, -1 when the read would block.
        Other errors raise ``OSError``.
        """
        if self._busy:
            raise RuntimeError("FrameScanner.fill() called from inside one of its callbacks")
        size = check_read_size(size)
        try:
            if isinstance(sock, int):
                data = os.read(sock, size)
            else:
                data = sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return -1
        if data:
            self._held = self._held + data if self._held else data
        return len(data)

    def process(self, target: Any) -> None:
        """Scan the bytes in ``pending``, calling back *target*."""
        if self._busy:
            raise RuntimeError("FrameScanner.process() called from inside one of its callbacks")
        data = self._held
        if data:
            self._held = b""
            self._busy = True
            try:
                self._scan(target, data)
            finally:
                self._busy = False

    def receive(self, target: Any, sock: Any, size: int = DEFAULT_READ_SIZE) -> int:
        """``fill()`` then ``process()``: returns what ``fill()`` returned."""
        got = self.fill(sock, size)
        if got > 0:
            self.process(target)
        return got

    def _scan(self, target: Any, data: bytes) -> None:
        pos = 0
        end = len(data)
        clears = self._clears
        stops = self._stops
        self._scan_data = data
        self._scan_clears = clears
        try:
            while pos < end:
                mode = self._mode
                term = self._term
                # re-read after every callback: a max_frame change made in one
                # applies to the very next byte, as a terminator change does
                limit = self._max_frame
                if not term:
                    self._scan_next = end
                    if mode != MODE_FRAMES and limit and self._partial + end - pos > limit:
                        return self._overflow(target, self._partial + end - pos)
                    chunk = data[pos:] if pos else data
                    if mode == MODE_CALLBACKS:
                        self._partial += end - pos
                        target.collect_incoming_data(chunk)
                        pos = end
                    elif mode == MODE_COLLECT:
                        self._partial += end - pos
                        self._incoming.append(chunk)
                        pos = end
                    else:
                        pos = end
                        self._partial = 0
                        self._frames += 1
                        if self._incoming:
                            self._incoming.append(chunk)
                            chunk = self.get_data()
                        target.frame_received(chunk)
                elif term.__class__ is not bytes:
                    avail = end - pos
                    self._scan_next = pos + term if avail >= term else end
                    if avail < term:
                        if limit and self._partial + avail > limit:
                            return self._overflow(target, self._partial + avail)
                        chunk = data[pos:] if pos else data
                        self._partial += avail
                        if mode == MODE_CALLBACKS:
                            target.collect_incoming_data(chunk)
                        else:
                            self._incoming.append(chunk)
                        pos = end
                        self._term = term - avail
                    else:
                        if limit and self._partial + term > limit:
                            return self._overflow(target, self._partial + term)
                        chunk = data[pos:pos + term]
                        self._partial = 0
                        self._frames += 1
                        if mode == MODE_CALLBACKS:
                            target.collect_incoming_data(chunk)
                            pos += term
                            self._term = 0
                            target.found_terminator()
                        elif mode == MODE_COLLECT:
                            pos += term
                            self._incoming.append(chunk)
                            self._term = 0
                            target.found_terminator()
                        else:
                            pos += term
                            self._term = 0
                            if self._incoming:
                                self._incoming.append(chunk)
                                chunk = self.get_data()
                            target.frame_received(chunk)
                else:
                    tlen = len(term)
                    find = data.find
                    index = find(term, pos)
                    if index < 0:
                        self._scan_next = end
                        rest = data[pos:] if pos else data
                        keep = find_prefix_at_end(rest, term)
                        if limit and self._partial + len(rest) > limit:
                            return self._overflow(target, self._partial + len(rest))
                        if keep == len(rest):
                            self._held = rest
                            return
                        chunk = rest[:-keep] if keep else rest
                        self._partial += len(chunk)
                        if mode == MODE_CALLBACKS:
                            target.collect_incoming_data(chunk)
                        else:
                            self._incoming.append(chunk)
                        pos = end
                        if keep and self._clears == clears:
                            self._held = rest[-keep:]
                        return
                    # Several frames per read is the common case: stay in this
                    # loop while the callbacks leave terminator and mode alone.
                    while True:
                        limit = self._max_frame
                        if limit and self._partial + index - pos > limit:
                            return self._overflow(target, self._partial + index - pos)
                        self._partial = 0
                        self._frames += 1
                        self._scan_next = index + tlen
                        if mode == MODE_CALLBACKS:
                            if index > pos:
                                target.collect_incoming_data(data[pos:index])
                            pos = index + tlen
                            target.found_terminator()
                        elif mode == MODE_COLLECT:
                            if index > pos:
                                self._incoming.append(data[pos:index])
                            pos = index + tlen
                            target.found_terminator()
                        else:
                            frame = data[pos:index]
                            pos = index + tlen
                            if self._incoming:
                                self._incoming.append(frame)
                                frame = self.get_data()
                            target.frame_received(frame)
                        if (self._term is not term or self._mode != mode
                                or self._clears != clears or self._stops != stops):
                            break
                        index = find(term, pos)
                        if index < 0:
                            break
                if self._clears != clears:
                    return
                if self._stops != stops:
                    # stop(): the rest waits in pending for process()
                    if pos < end:
                        self._held = data[pos:]
                    return
        except BaseException:
            # asynchat keeps the unscanned rest in ac_in_buffer when a callback
            # raises; so do we, unless the callback cleared the buffers.
            if self._clears == clears and pos < end:
                self._held = data[pos:]
            raise
        finally:
            self._scan_data = None

    def _overflow(self, target: Any, size: int) -> None:
        # Drop the oversized frame and the rest of this read: memory stays
        # bounded by max_frame plus one read, whatever the peer sends.
        self._held = b""
        del self._incoming[:]
        self._partial = 0
        self._clears += 1
        target.frame_too_large(size)


_BYTES_LIKE = (bytes, bytearray, memoryview)


class FileProducer:
    """*count* bytes of a binary *file* from *offset*, queued by ``PushQueue.push_file``.

    In the queue it goes out with ``os.sendfile`` when the file has a
    descriptor of its own (``open(path, "rb")``), the platform has the call
    and ``send()`` is given the socket; otherwise it is read in pieces
    (``os.pread``, or ``seek()`` + ``read()`` for file objects without a
    descriptor) and sent like pushed bytes.  Its unsent bytes count in the
    queue's ``buffered``.  It ends after *count* bytes or at end of file,
    whichever comes first; *count* None means up to the end of the file as
    it is now.  With *close* true the file is closed when the range ends or
    is dropped from the queue.  It is also a producer: ``more()`` reads the
    next piece.
    """

    __slots__ = ("_file", "_offset", "_remaining", "_owns", "_fd", "_sendfile", "_closed")

    def __init__(self, file: Any, offset: int = 0, count: Optional[int] = None, close: bool = True) -> None:
        fd, offset, count = check_file(file, offset, count)
        self._file = file
        self._offset = offset
        self._remaining = count
        self._owns = bool(close)
        self._fd = fd
        self._sendfile = fd >= 0 and _HAS_SENDFILE
        self._closed = False

    def __repr__(self) -> str:
        return "<FileProducer %r offset=%d remaining=%d>" % (
            self._file, self._offset, self._remaining)

    @property
    def file(self) -> Any:
        """The file object."""
        return self._file

    @property
    def offset(self) -> int:
        """File offset of the next byte to send."""
        return self._offset

    @property
    def remaining(self) -> int:
        """Bytes still to send (0 once done or dropped)."""
        return self._remaining

    @property
    def owns_file(self) -> bool:
        """True if the file is closed when the range ends or is dropped."""
        return self._owns

    def more(self) -> bytes:
        """The next piece of at most ``FILE_READ_SIZE`` bytes; b"" at the end."""
        data = self._read(FILE_READ_SIZE)
        if not self._remaining:
            self._finish()
        return data

    def _read(self, size: int) -> bytes:
        # Absolute offsets: the file position is not used, so one open file
        # may be queued on several channels.
        size = min(size, self._remaining)
        if size <= 0:
            return b""
        data = read_file_range(self._file, self._fd, self._offset, size)
        if data:
            self._offset += len(data)
            self._remaining -= len(data)
        else:
            self._remaining = 0  # end of file before count: the file shrank
        return data

    def _finish(self) -> None:
        self._remaining = 0
        if self._owns and not self._closed:
            self._closed = True
            self._file.close()


class PushQueue:
    """Ordered output queue: byte strings, producers and the close sentinel.

    ``send(sock)`` hands as many queued bytes as it can to one scatter-gather
    ``sendmsg`` (at most ``IOV_MAX`` buffers, about ``SEND_BUDGET`` bytes),
    pulling producers (objects with ``more()``) only when their turn comes.
    A partially sent buffer is resumed from an offset, never copied.  The close
    sentinel (queued by ``push_close``) is reported by ``close_pending`` once
    everything queued before it has been sent.  A producer's ``more()`` may
    push or ``clear()`` (its output is dropped with the rest then), but
    ``send``/``next_chunk``/``consume`` from inside it raise RuntimeError.

    ``push_file`` queues a range of a file (a ``FileProducer``): when it
    reaches the head, ``send()`` hands it to one ``os.sendfile`` per call.

    ``buffered`` is the number of bytes queued as data (producers count once
    they have been pulled; a queued file counts its unsent bytes).
    *encoding*, when given, turns str data from producers into bytes, as
    asynchat's ``use_encoding`` does.
    """

    __slots__ = ("_items", "_offset", "_buffered", "encoding", "_pushes", "_sends",
                 "_sendfiles", "_pulling")

    def __init__(self, encoding: Optional[str] = None) -> None:
        # _items[0] is the head; _offset counts its bytes already sent
        self._items: Deque[Any] = deque()
        self._offset = 0
        self._buffered = 0
        self.encoding = encoding
        self._pushes = 0
        self._sends = 0
        self._sendfiles = 0
        # inside a producer's more(): no send/consume then
        self._pulling = False

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def buffered(self) -> int:
        """Bytes queued as data and not yet sent."""
        return self._buffered

    @property
    def stats(self) -> Tuple[int, int]:
        """(pushes, sendmsg calls) since creation: a debug counter for tests."""
        return (self._pushes, self._sends)

    @property
    def sendfile_calls(self) -> int:
        """``os.sendfile`` calls since creation: a debug counter for tests."""
        return self._sendfiles

    def push(self, data: Any) -> None:
        """Queue bytes-like *data*; empty data is ignored."""
        if data.__class__ is not bytes:
            if not isinstance(data, _BYTES_LIKE):
                raise TypeError("data argument must be byte-ish (%r)" % (type(data),))
            data = bytes(data)
        if data:
            self._items.append(data)
            self._buffered += len(data)
            self._pushes += 1

    def push_producer(self, producer: Any) -> None:
        """Queue a producer (anything with ``more()``) or bytes-like data."""
        if producer is None:
            raise TypeError("producer must not be None; use push_close()")
        if isinstance(producer, _BYTES_LIKE):
            self.push(producer)
        elif isinstance(producer, str):
            self.push(self._encode(producer))
        elif producer.__class__ is FileProducer:
            # a file range read back from snapshot(): queued as a file again
            self._push_file(producer)
        elif not hasattr(producer, "more"):
            raise TypeError(
                "producer must be bytes-like or have a more() method, not %s"
                % type(producer).__name__
            )
        else:
            self._items.append(producer)
            self._pushes += 1

    def push_file(self, file: Any, offset: int = 0, count: Optional[int] = None,
                  close: bool = True) -> None:
        """Queue *count* bytes of binary *file* from *offset* (see ``FileProducer``).

        An empty range queues nothing (and closes the file if *close*).
        """
        self._push_file(FileProducer(file, offset, count, close))

    def _push_file(self, entry: FileProducer) -> None:
        if entry._remaining:
            self._items.append(entry)
            self._buffered += entry._remaining
            self._pushes += 1
        else:
            entry._finish()

    def push_close(self) -> None:
        """Queue the close sentinel, reported once everything before it is sent."""
        self._items.append(None)

    def clear(self) -> None:
        """Drop everything queued (queued files owned by the queue are closed)."""
        # a new deque, so that a _pull() in progress sees the queue was cleared
        dropped = self._items
        self._items = deque()
        self._offset = 0
        self._buffered = 0
        for item in dropped:
            if item.__class__ is FileProducer:
                item._finish()

    def replace(self, items: Any) -> None:
        """Queue *items* (data, producers, None for the close sentinel) instead
        of what is queued: ``clear()`` then the pushes, except that a file
        range found in *items* is queued again as it is, not closed."""
        items = list(items)
        keep = {id(item) for item in items if item.__class__ is FileProducer}
        dropped = self._items
        self._items = deque()
        self._offset = 0
        self._buffered = 0
        try:
            for item in items:
                if item is None:
                    self.push_close()
                else:
                    self.push_producer(item)
        finally:
            for item in dropped:
                if item.__class__ is FileProducer and id(item) not in keep:
                    item._finish()

    @property
    def close_pending(self) -> bool:
        """True when the close sentinel is at the head of the queue."""
        items = self._items
        return bool(items) and items[0] is None

    def pop_close(self) -> bool:
        """Remove the close sentinel at the head; True if there was one."""
        items = self._items
        if items and items[0] is None:
            items.popleft()
            return True
        return False

    def snapshot(self) -> List[Any]:
        """A copy of the queued items (the unsent part of the head included)."""
        items = list(self._items)
        if items and self._offset and items[0].__class__ is bytes:
            items[0] = items[0][self._offset:]
        return items

    def _encode(self, text: str) -> bytes:
        if self.encoding is None:
            raise TypeError("str data needs an encoding (use_encoding); push bytes")
        return text.encode(self.encoding)

    def _pull_file(self, index: int, size: int) -> None:
        """Read the next *size* bytes of the file range at *index* in front of it."""
        items = self._items
        entry = items[index]
        before = entry._remaining
        self._pulling = True
        try:
            data = entry._read(size)
        finally:
            self._pulling = False
        if self._items is not items or index >= len(items) or items[index] is not entry:
            return  # cleared meanwhile (a file object's read() ran Python code)
        # the bytes read were counted already; a range cut short by end of
        # file takes what it will never send out of the count
        self._buffered -= before - entry._remaining - len(data)
        if data:
            items.insert(index, data)
            index += 1
        if not entry._remaining:
            del items[index]
            entry._finish()

    def _pull(self, index: int) -> None:
        """Replace the producer at *index* by its next output, or drop it."""
        items = self._items
        producer = items[index]
        if producer.__class__ is FileProducer:
            self._pull_file(index, FILE_READ_SIZE)
            return
        self._pulling = True
        try:
            data = producer.more()
        finally:
            self._pulling = False
        # more() may have pushed or cleared (a channel closing itself); only
        # act if the producer is still there, else its output goes too
        if self._items is not items or index >= len(items) or items[index] is not producer:
            return
        if data:
            if data.__class__ is not bytes:
                if isinstance(data, str):
                    data = self._encode(data)
                elif isinstance(data, _BYTES_LIKE):
                    data = bytes(data)
                else:
                    raise TypeError(
                        "producer.more() must return bytes, not %s" % type(data).__name__
                    )
            items.insert(index, data)
            self._buffered += len(data)
        else:
            del items[index]

    def _gather(self, budget: int) -> List[Any]:
        """Views of the bytes to send next, stopping at a sentinel, a file
        range that can go out with sendfile(), or the budget."""
        items = self._items
        views: List[Any] = []
        total = 0
        i = 0
        while i < len(items) and len(views) < IOV_MAX and total < budget:
            item = items[i]
            if item is None:
                break
            if item.__class__ is not bytes:
                if item.__class__ is FileProducer and item._sendfile:
                    break
                self._pull(i)
                if self._items is not items:
                    # more() cleared the queue: gather what is queued now
                    items = self._items
                    views = []
                    total = 0
                    i = 0
                continue
            view: Union[bytes, memoryview]
            if i == 0 and self._offset:
                view = memoryview(item)[self._offset:]
            else:
                view = item
            views.append(view)
            total += len(view)
            i += 1
        return views

    def _consume(self, nbytes: int) -> None:
        """Drop *nbytes* sent bytes from the head of the queue."""
        # Everything sent came from the bytes items at the head: _gather pulled
        # producers before them and stops at the sentinel.
        items = self._items
        self._buffered -= nbytes
        offset = self._offset + nbytes
        while offset:
            size = len(items[0])
            if offset < size:
                break
            offset -= size
            items.popleft()
        self._offset = offset

    def next_chunk(self, size: int) -> Optional[bytes]:
        """Up to *size* bytes from the head (bytes), for callers that send themselves.

        Returns None when nothing is ready (empty queue, or the sentinel is
        next).  Report what was sent with ``consume(n)``.
        """
        if self._pulling:
            raise RuntimeError("PushQueue.next_chunk() called from a producer's more()")
        size = check_chunk_size(size)
        while self._items:
            head = self._items[0]
            if head is None:
                return None
            if head.__class__ is bytes:
                # bytes, never a view (see the C core)
                offset = self._offset
                if offset == 0 and len(head) <= size:
                    return head
                return head[offset:offset + size]
            if head.__class__ is FileProducer:
                # the caller sends itself: read the file, *size* at a time
                self._pull_file(0, size)
            else:
                self._pull(0)
        return None

    def consume(self, nbytes: int) -> None:
        """Account for *nbytes* sent by the caller from ``next_chunk()``."""
        if self._pulling:
            raise RuntimeError("PushQueue.consume() called from a producer's more()")
        if nbytes < 0 or nbytes > self._buffered:
            raise ValueError("cannot consume %d of %d buffered bytes" % (nbytes, self._buffered))
        # Only bytes ahead of the first producer or close sentinel can have
        # been sent; _consume() walks bytes items only.
        ready = -self._offset
        for item in self._items:
            if ready >= nbytes:
                break
            if item.__class__ is not bytes:
                raise ValueError("cannot consume %d bytes: %d are ready before the next %s"
                                 % (nbytes, ready, _kind(item)))
            ready += len(item)
        self._consume(nbytes)

    def send(self, sock: Any) -> int:
        """One scatter-gather send of the queued bytes to *sock* (socket or fd).

        Returns the byte count the kernel took; 0 when it would block or
        nothing is ready.  Other socket errors propagate as ``OSError``.
        """
        if self._pulling:
            raise RuntimeError("PushQueue.send() called from a producer's more()")
        views = self._gather(SEND_BUDGET)
        if not views:
            items = self._items
            if items and items[0].__class__ is FileProducer:
                return self._send_file(sock, items[0])
            return 0
        self._sends += 1
        try:
            if isinstance(sock, int):
                sent = os.writev(sock, views)
            elif len(views) == 1:
                sent = sock.send(views[0])
            else:
                sent = sock.sendmsg(views)
        except (BlockingIOError, InterruptedError):
            return 0
        if sent:
            self._consume(sent)
        return sent

    def _send_file(self, sock: Any, entry: FileProducer) -> int:
        """One sendfile() of the file range at the head."""
        fd = sock if isinstance(sock, int) else sock.fileno()
        self._sendfiles += 1
        sent = sendfile_once(fd, entry._fd, entry._offset, entry._remaining)
        if sent == -1:
            return 0
        if sent == -2:
            # this pair of descriptors cannot: read the file instead
            entry._sendfile = False
            return self.send(sock)
        if sent:
            entry._offset += sent
            entry._remaining -= sent
            self._buffered -= sent
        else:
            # end of file before count: the file shrank since it was queued
            self._buffered -= entry._remaining
            entry._remaining = 0
        if not entry._remaining:
            self._items.popleft()
            entry._finish()
        return sent


def _kind(item: Any) -> str:
    if item is None:
        return "close"
    return "file" if item.__class__ is FileProducer else "producer"
