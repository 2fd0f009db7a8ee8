"""The input side of the pure-Python framing core: ``FrameScanner``.

Bytes go in (``feed`` or ``get_buffer``/``buffer_updated``) and come out as
the callback sequence ``asynchat.async_chat.handle_read`` would produce for
the same bytes and the same terminators.  ``asynframe._core_py`` exports it;
its compiled twin is ``ext/asynframe/_scanner_c.pxi``.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Union, cast

from ._core_common import (
    DEFAULT_READ_SIZE,
    MODE_CALLBACKS,
    MODE_COLLECT,
    MODE_FRAMES,
    check_count,
    check_mode,
    check_read_size,
    check_terminator,
)

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
        "_mode",
        "_term",
        "_held",
        "_incoming",
        "_clears",
        "_stops",
        "_max_frame",
        "_partial",
        "_busy",
        "_recv_area",
        "_scan_data",
        "_scan_next",
        "_scan_clears",
        "_frames",
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

    def forget_buffer(self) -> None:
        """The transport will report no bytes for the last ``get_buffer()``.

        At EOF or a reset asyncio and uvloop let go of the lent area without
        calling ``buffer_updated()``.  The area is given up (the compiled core
        frees it once no view of it is alive; bytes held back stay), so a
        burst of closing connections does not keep one receive area each
        until their protocols are collected.  ``buffer_updated()`` then
        accepts no bytes until the next ``get_buffer()``.  Does nothing
        inside a scanner callback, where the area is in use.
        """
        if self._busy:
            return
        self._recv_area = None

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
                        chunk = data[pos : pos + term]
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
                        if (
                            self._term is not term
                            or self._mode != mode
                            or self._clears != clears
                            or self._stops != stops
                        ):
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
