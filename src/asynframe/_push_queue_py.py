"""The output side of the pure-Python framing core: ``PushQueue``.

An ordered queue of byte strings, producers, file ranges and the close
sentinel, flushed with one scatter-gather ``sendmsg`` per call.
``asynframe._core_py`` exports it; its compiled twin is
``ext/asynframe/_push_queue_c.pxi``.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Deque, List, Optional, Tuple, Union

from ._core_common import (
    BYTES_LIKE,
    FILE_READ_SIZE,
    IOV_MAX,
    SEND_BUDGET,
    FileProducer,
    check_chunk_size,
    encode_text,
    producer_output,
    queue_file_read,
    queued_data,
    refill,
)


class PushQueue:
    """Ordered output queue: byte strings, producers and the close sentinel.

    Data items are ``bytes``, or memoryviews over ``bytes`` (queued without
    a copy; see ``push``).

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

    __slots__ = ("_items", "_offset", "_buffered", "encoding", "_pushes", "_sends", "_sendfiles", "_pulling")

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
        """Queue bytes-like *data*; empty data is ignored.

        ``bytes``, and a C-contiguous memoryview over ``bytes``, are queued and
        sent without a copy.  A ``bytearray``, or a view over anything mutable,
        is copied: changing it after the push does not change what is sent.
        """
        if data.__class__ is not bytes:
            if not isinstance(data, BYTES_LIKE):
                raise TypeError("data argument must be byte-ish (%r)" % (type(data),))
            data = queued_data(data)
        if data:
            self._items.append(data)
            self._buffered += len(data)
            self._pushes += 1

    def push_producer(self, producer: Any) -> None:
        """Queue a producer (anything with ``more()``) or bytes-like data."""
        if producer is None:
            raise TypeError("producer must not be None; use push_close()")
        if isinstance(producer, BYTES_LIKE):
            self.push(producer)
        elif isinstance(producer, str):
            self.push(encode_text(producer, self.encoding))
        elif producer.__class__ is FileProducer:
            # a file range read back from snapshot(): queued as a file again
            self._push_file(producer)
        elif not hasattr(producer, "more"):
            raise TypeError("producer must be bytes-like or have a more() method, not %s" % type(producer).__name__)
        else:
            self._items.append(producer)
            self._pushes += 1

    def push_file(self, file: Any, offset: int = 0, count: Optional[int] = None, close: bool = True) -> None:
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

    def _detach(self) -> Deque[Any]:
        """Empty the queue and return what it held."""
        # a new deque, so that a _pull() in progress sees the queue was cleared
        dropped = self._items
        self._items = deque()
        self._offset = 0
        self._buffered = 0
        return dropped

    def clear(self) -> None:
        """Drop everything queued (queued files owned by the queue are closed)."""
        for item in self._detach():
            if item.__class__ is FileProducer:
                item._finish()

    def replace(self, items: Any) -> None:
        """Queue *items* (data, producers, None for the close sentinel) instead
        of what is queued: ``clear()`` then the pushes, except that a file
        range found in *items* is queued again as it is, not closed."""
        items = list(items)  # before anything changes: iterating may raise
        refill(self, items, self._detach())

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
        """A copy of the queued items (the unsent part of the head included).

        A memoryview item is handed out as a new view of the same bytes, so
        the caller may release it without touching the queue's.
        """
        items = [item[:] if item.__class__ is memoryview else item for item in self._items]
        if items and self._offset and items[0].__class__ in (bytes, memoryview):
            items[0] = items[0][self._offset :]
        return items

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
        queue_file_read(items, index, entry, data)

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
                data = producer_output(data, self.encoding)
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
            if item.__class__ is not bytes and item.__class__ is not memoryview:
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
                view = memoryview(item)[self._offset :]
            else:
                view = item
            views.append(view)
            total += len(view)
            i += 1
        return views

    def _consume(self, nbytes: int) -> None:
        """Drop *nbytes* sent bytes from the head of the queue."""
        # Everything sent came from the data items at the head: _gather pulled
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

    def next_chunk(self, size: int) -> Optional[Union[bytes, memoryview]]:
        """Up to *size* bytes from the head, for callers that send themselves.

        ``bytes``, or a memoryview for data pushed as a memoryview over bytes;
        None when nothing is ready (empty queue, or the sentinel is next).
        Report what was sent with ``consume(n)``.
        """
        if self._pulling:
            raise RuntimeError("PushQueue.next_chunk() called from a producer's more()")
        size = check_chunk_size(size)
        while self._items:
            head = self._items[0]
            if head is None:
                return None
            if head.__class__ is bytes:
                # bytes stay bytes: the caller, a socket-like object, may
                # keep what it is given, and nothing changes it afterwards
                offset = self._offset
                if offset == 0 and len(head) <= size:
                    return head
                return head[offset : offset + size]
            if head.__class__ is memoryview:
                # a new view of the same bytes (as asynchat hands send() a
                # slice of a pushed memoryview): the caller may release it
                return head[self._offset : self._offset + size]
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
        # Only data ahead of the first producer or close sentinel can have
        # been sent; _consume() walks data items only.
        ready = -self._offset
        for item in self._items:
            if ready >= nbytes:
                break
            if item.__class__ is not bytes and item.__class__ is not memoryview:
                raise ValueError(
                    "cannot consume %d bytes: %d are ready before the next %s" % (nbytes, ready, _kind(item))
                )
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
        self._sendfiles += 1
        before = entry._remaining
        sent = entry._send(sock if isinstance(sock, int) else sock.fileno())
        if sent == -1:
            return 0
        if sent == -2:
            return self.send(sock)  # this pair of descriptors cannot: the file is read instead
        # (a file that shrank since it was queued ends with nothing sent)
        self._buffered -= before - entry._remaining
        if not entry._remaining:
            self._items.popleft()
            entry._finish()
        return sent


def _kind(item: Any) -> str:
    if item is None:
        return "close"
    return "file" if item.__class__ is FileProducer else "producer"
