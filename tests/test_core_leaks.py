"""A million frames through each core: no reference or memory growth.

Marked ``slow`` for selection (``-m "not slow"`` skips it) but part of the
default run; each case stays well under 20 s on either core.
"""

from __future__ import annotations

import gc
import os
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

FRAMES = 1_000_000
WARMUP = 200_000
CHUNK = 65521  # a prime: frames and terminators split across reads
RSS_SLACK = 4 << 20

FRAME = b"abcdef\r\n"
TERM = b"\r\n"


def rss():
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return psutil.Process().memory_info().rss
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def windows():
    """The stream is periodic, so 8 pre-cut chunks cover every read offset."""
    blob = FRAME * (CHUNK // len(FRAME) + 2)
    return [blob[r : r + CHUNK] for r in range(len(FRAME))]


class Counter:
    def __init__(self, scanner):
        self.scanner = scanner
        self.frames = 0
        self.bytes = 0

    def found_terminator(self):
        self.frames += 1
        self.bytes += len(self.scanner.get_data())

    def frame_received(self, frame):
        self.frames += 1
        self.bytes += len(frame)


def snapshot(objects):
    gc.collect()
    return [sys.getrefcount(o) for o in objects]


def run(scanner, target, feed, chunks, until, pos):
    while target.frames < until:
        feed(chunks[pos % len(FRAME)], pos)
        pos += CHUNK
    return pos


@pytest.mark.parametrize("path", ["collect", "frames", "buffer"])
def test_million_frames_flat(core, path):
    mode = core.MODE_COLLECT if path == "collect" else core.MODE_FRAMES
    scanner = core.FrameScanner(mode)
    scanner.set_terminator(TERM)
    target = Counter(scanner)
    chunks = windows()

    if path == "buffer":
        views = []

        def feed(chunk, pos):
            buf = scanner.get_buffer(len(chunk))
            buf[: len(chunk)] = chunk
            views.append(buf)  # the last view is kept alive into the next read
            del views[:-1]
            scanner.buffer_updated(target, len(chunk))
    else:

        def feed(chunk, pos):
            scanner.feed(target, chunk)

    watched = [target, scanner, Counter.found_terminator, Counter.frame_received, chunks[0], TERM]
    pos = run(scanner, target, feed, chunks, WARMUP, 0)
    refs_before = snapshot(watched)
    rss_before = rss()

    pos = run(scanner, target, feed, chunks, FRAMES, pos)

    refs_after = snapshot(watched)
    rss_after = rss()
    assert target.frames >= FRAMES
    assert target.bytes == target.frames * (len(FRAME) - len(TERM))
    assert len(scanner.pending) < len(TERM)
    assert refs_after == refs_before
    if rss_before is not None:
        assert rss_after - rss_before < RSS_SLACK, (rss_before, rss_after)


def test_many_pushes_flat(core):
    import socket

    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.setblocking(False)
        q = core.PushQueue()
        item = b"x" * 10

        class Producer:
            def __init__(self):
                self.left = 3

            def more(self):
                self.left -= 1
                return item if self.left >= 0 else b""

        producer_type_refs = sys.getrefcount(Producer)

        def cycle(n):
            for i in range(n):
                q.push(item)
                if i % 100 == 0:
                    q.push_producer(Producer())
                    q.push_close()
                if i % 1000 == 999:
                    while q:
                        if q.close_pending:
                            q.pop_close()
                        else:
                            q.send(a)
                        try:
                            while b.recv(1 << 20):
                                pass
                        except BlockingIOError:
                            pass

        cycle(50_000)
        refs_before = snapshot([item, q])
        rss_before = rss()
        cycle(300_000)
        assert not q and q.buffered == 0
        assert snapshot([item, q]) == refs_before
        assert sys.getrefcount(Producer) == producer_type_refs
        if rss_before is not None:
            assert rss() - rss_before < RSS_SLACK
    finally:
        a.close()
        b.close()


ZEROS = bytes(1_000_000)


def test_stale_buffer_views_are_freed(core):
    # get_buffer() views kept alive while the receive area has to grow: the
    # old areas must stay valid while viewed and be freed afterwards
    class Sink:
        def collect_incoming_data(self, data):
            pass

        def found_terminator(self):
            pass

    def cycle(release_order):
        scanner = core.FrameScanner()
        scanner.set_terminator(b"<end>")
        sink = Sink()
        views = []
        for size in (100, 100_000, 300_000, 1_000_000):
            view = scanner.get_buffer(size)
            assert len(view) >= size
            view[:size] = ZEROS[:size]  # touch the pages: a leaked area counts in RSS
            view[:3] = b"<en"
            views.append(view)
            scanner.buffer_updated(sink, 3)  # held back: the next area starts after it
            scanner.feed(sink, b"d>")
        for view in views:
            view[:1] = b"!"  # still writable memory
        for index in release_order:
            views[index].release()
        del views, scanner

    orders = [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2)]
    for i in range(30):
        cycle(orders[i % 3])
    gc.collect()
    rss_before = rss()
    for i in range(300):
        cycle(orders[i % 3])
    gc.collect()
    if rss_before is not None:
        # ~1.4 MB of areas per cycle: a leak would be hundreds of MB
        assert rss() - rss_before < 4 * RSS_SLACK


def test_forget_buffer_gives_the_lent_area_up(core):
    # At EOF or a reset, asyncio and uvloop release the get_buffer() view
    # without calling buffer_updated(); aio.ChatProtocol then calls
    # forget_buffer(), and a burst of closing connections must not each keep
    # a 64 KiB receive area until their protocols are collected.
    class Sink:
        def __init__(self):
            self.frames = []

        def collect_incoming_data(self, data):
            self.frames.append(data)

        def found_terminator(self):
            self.frames.append(None)

    scanners = [core.FrameScanner() for _ in range(700)]
    filler = bytes(1 << 17)

    def lend_and_forget(scanner, release_first):
        view = scanner.get_buffer(-1)
        view[:] = filler[: len(view)]  # touch the pages: a kept area counts in RSS
        if release_first:  # uvloop releases the view before eof_received()
            view.release()
            scanner.forget_buffer()
        else:  # a view still alive: the area goes with it
            scanner.forget_buffer()
            view.release()

    for i, scanner in enumerate(scanners[:100]):
        lend_and_forget(scanner, i % 2)
    gc.collect()
    rss_before = rss()
    for i, scanner in enumerate(scanners[100:]):
        lend_and_forget(scanner, i % 2)
    if rss_before is not None:
        # 600 areas of 64 KiB kept would be 39 MB
        assert rss() - rss_before < 2 * RSS_SLACK

    # no bytes may be reported for a forgotten lend; a new lend works
    sink = Sink()
    scanner = scanners[-1]
    scanner.set_terminator(b"\n")
    with pytest.raises(ValueError, match="outside the buffer of 0 bytes"):
        scanner.buffer_updated(sink, 1)
    scanner.buffer_updated(sink, 0)
    view = scanner.get_buffer(-1)
    view[:6] = b"hello\n"
    scanner.buffer_updated(sink, 6)
    del view
    assert sink.frames == [b"hello", None]

    # bytes held back (a terminator's first byte) survive it
    scanner = scanners[-2]
    scanner.set_terminator(b"\r\n")
    view = scanner.get_buffer(-1)
    view[:5] = b"part\r"
    scanner.buffer_updated(sink, 5)
    view.release()
    scanner.get_buffer(-1).release()
    scanner.forget_buffer()
    assert scanner.pending == b"\r"
    scanner.feed(sink, b"\n")
    assert sink.frames[-2:] == [b"part", None]
