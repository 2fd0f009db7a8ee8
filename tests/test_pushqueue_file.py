"""PushQueue.push_file / FileProducer on both twins (the ``core`` fixture).

A file range sits in the queue between the bytes pushed before and after
it; at the head it goes out with ``os.sendfile`` (counted by
``sendfile_calls``), and where that cannot serve it is read and sent like
pushed bytes.  Its unsent bytes count in ``buffered``; an owned file is
closed when its range ends or is dropped.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import socket
import sys

import pytest

from support import HAS_SENDFILE, file_data, refuse_file_reads

pytestmark = pytest.mark.timeout(60)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sendfile rules")

DATA = file_data()  # what the data_file fixture holds


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def read_some(sock, into, limit=1 << 20):
    """A slow reader: at most *limit* bytes per call."""
    try:
        got = sock.recv(limit)
    except BlockingIOError:
        return
    into += got


def drain(q, a, b, received, read_limit=1 << 20, send=None):
    """send() and read until the queue is empty or at its close sentinel."""
    send = send or q.send
    for _ in range(200000):
        if not q or q.close_pending:
            break
        send(a)
        read_some(b, received, read_limit)
    else:
        raise AssertionError("queue did not drain")
    while True:
        before = len(received)
        read_some(b, received)
        if len(received) == before:
            return


@pytest.mark.skipif(not HAS_SENDFILE, reason="no os.sendfile here")
def test_bytes_file_bytes_close_in_order_with_sendfile(core, pair, data_file, monkeypatch):
    a, b = pair
    refuse_file_reads(monkeypatch)
    q = core.PushQueue()
    q.push(b"HEAD\r\n")
    q.push_file(data_file, 12345, 1_500_000)
    q.push(b"TAIL")
    q.push_close()
    expected = b"HEAD\r\n" + DATA[12345 : 12345 + 1_500_000] + b"TAIL"
    assert q.buffered == len(expected)
    received = bytearray()
    drain(q, a, b, received, read_limit=3000)  # a slow reader: many partial sends
    assert hashlib.sha256(received).digest() == hashlib.sha256(expected).digest()
    assert q.close_pending and q.pop_close() and not q
    assert q.buffered == 0
    assert q.sendfile_calls > 1
    assert q.stats[1] >= 2  # the bytes before and after went by sendmsg
    assert data_file.closed  # owned by default


def test_fallback_without_descriptor(core, pair):
    a, b = pair
    q = core.PushQueue()
    q.push(b"<")
    q.push_file(io.BytesIO(DATA), 7, 300_001)
    q.push(b">")
    received = bytearray()
    drain(q, a, b, received, read_limit=5000)
    assert bytes(received) == b"<" + DATA[7:300_008] + b">"
    assert q.sendfile_calls == 0 and q.buffered == 0


def test_fallback_next_chunk_consume(core, pair, data_file):
    """The path of a channel that sends itself (a socket subclass, TLS)."""
    a, b = pair
    q = core.PushQueue()
    q.push(b"A")
    q.push_file(data_file, 100, 200_000, close=False)
    q.push(b"Z")
    received = bytearray()

    def send(sock):
        chunk = q.next_chunk(4096)
        if chunk is not None:
            assert len(chunk) <= 4096
            try:
                q.consume(sock.send(chunk))
            except BlockingIOError:
                pass

    drain(q, a, b, received, read_limit=7000, send=send)
    assert bytes(received) == b"A" + DATA[100:200_100] + b"Z"
    assert q.sendfile_calls == 0 and q.buffered == 0
    assert not data_file.closed  # close=False: the caller keeps it


@linux_only
def test_sendfile_refused_falls_back_to_reads(core, data_file, tmp_path):
    # Linux refuses sendfile() to a descriptor opened with O_APPEND (EINVAL)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        q = core.PushQueue()
        q.push(b"[")
        q.push_file(data_file, 1, 100_000)
        q.push(b"]")
        while q:
            q.send(out)
        assert q.sendfile_calls == 1  # tried once, then read
    finally:
        os.close(out)
    assert (tmp_path / "out").read_bytes() == b"[" + DATA[1:100_001] + b"]"


def test_count_none_is_rest_of_file(core, pair, data_file):
    a, b = pair
    q = core.PushQueue()
    q.push_file(data_file, len(DATA) - 5000)
    assert q.buffered == 5000
    received = bytearray()
    drain(q, a, b, received)
    assert bytes(received) == DATA[-5000:]


def test_file_shorter_than_count(core, pair, data_file):
    a, b = pair
    q = core.PushQueue()
    q.push_file(data_file, len(DATA) - 1000, 50_000)
    q.push(b"after")
    assert q.buffered == 50_005
    received = bytearray()
    drain(q, a, b, received)
    assert bytes(received) == DATA[-1000:] + b"after"
    assert q.buffered == 0 and not q and data_file.closed


def test_file_shorter_than_count_fallback(core, pair):
    a, b = pair
    q = core.PushQueue()
    q.push_file(io.BytesIO(b"short"), 1, 100)
    q.push(b"!")
    assert q.buffered == 101
    received = bytearray()
    drain(q, a, b, received)
    assert bytes(received) == b"hort!" and q.buffered == 0


def test_empty_range_queues_nothing(core, data_file):
    q = core.PushQueue()
    q.push_file(data_file, len(DATA) + 10)  # past the end
    assert not q and q.buffered == 0 and q.stats == (0, 0)
    assert data_file.closed
    other = io.BytesIO(b"abc")
    q.push_file(other, 0, 0, close=False)
    assert not q and not other.closed


def test_ownership_and_clear(core, data_file):
    kept = io.BytesIO(DATA)
    q = core.PushQueue()
    q.push_file(data_file)
    q.push_file(kept, close=False)
    assert q.buffered == 2 * len(DATA)
    q.clear()
    assert data_file.closed and not kept.closed
    assert q.buffered == 0 and not q


def test_snapshot_round_trip(core, pair, data_file):
    a, b = pair
    q = core.PushQueue()
    q.push(b"x")
    q.push_file(data_file, 0, 1000)
    items = q.snapshot()
    assert items[0] == b"x" and isinstance(items[1], core.FileProducer)
    entry = items[1]
    assert (entry.file, entry.offset, entry.remaining, entry.owns_file) == (data_file, 0, 1000, True)
    q2 = core.PushQueue()
    for item in items:
        q2.push_producer(item)
    assert q2.buffered == 1001
    received = bytearray()
    drain(q2, a, b, received)
    assert bytes(received) == b"x" + DATA[:1000]
    assert entry.remaining == 0 and entry.offset == 1000


def test_consume_stops_at_a_file(core, data_file):
    q = core.PushQueue()
    q.push(b"abc")
    q.push_file(data_file, 0, 10)
    with pytest.raises(ValueError, match="ready before the next file"):
        q.consume(5)
    q.consume(3)
    assert q.buffered == 10


def test_file_producer_is_a_producer(core, data_file):
    entry = core.FileProducer(data_file, 10, core.FILE_READ_SIZE + 5)
    first = entry.more()
    assert first == DATA[10 : 10 + core.FILE_READ_SIZE]
    assert not data_file.closed and entry.remaining == 5
    assert entry.more() == DATA[10 + core.FILE_READ_SIZE : 15 + core.FILE_READ_SIZE]
    assert data_file.closed and entry.remaining == 0  # its last byte is read
    assert entry.more() == b""


def test_file_position_untouched(core, pair, data_file):
    a, b = pair
    data_file.seek(42)
    q = core.PushQueue()
    q.push_file(data_file, 0, 70_000, close=False)
    q.push_file(data_file, 0, 70_000, close=False)  # one open file, twice
    received = bytearray()
    drain(q, a, b, received)
    assert bytes(received) == DATA[:70_000] * 2
    assert data_file.tell() == 42


def test_gzip_file_is_read_not_sendfiled(core, pair, tmp_path):
    # GzipFile answers fileno() with the compressed file's descriptor:
    # sendfile() would send the compressed bytes
    path = tmp_path / "d.gz"
    with gzip.open(path, "wb") as g:
        g.write(DATA[:100_000])
    a, b = pair
    q = core.PushQueue()
    with gzip.open(path, "rb") as g:
        q.push_file(g, 10, 50_000, close=False)
        received = bytearray()
        drain(q, a, b, received)
    assert bytes(received) == DATA[10:50_010]
    assert q.sendfile_calls == 0


# -- errors -------------------------------------------------------------------------
def test_text_file_rejected(core, tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("text")
    q = core.PushQueue()
    with open(path) as f:
        with pytest.raises(TypeError, match="binary mode"):
            q.push_file(f)
        assert not f.closed
    with pytest.raises(TypeError, match="binary mode"):
        q.push_file(io.StringIO("text"))
    assert not q


@pytest.mark.parametrize("obj", [b"bytes", 3, None, object()])
def test_non_file_rejected(core, obj):
    with pytest.raises(TypeError, match="binary file object"):
        core.PushQueue().push_file(obj)


@pytest.mark.parametrize(
    "offset, count, exc, words",
    [
        (-1, None, ValueError, "offset must be >= 0"),
        (0, -5, ValueError, "count must be >= 0"),
        (1.5, None, TypeError, "offset must be an int"),
        ("0", None, TypeError, "offset must be an int"),
        (0, 2.0, TypeError, "count must be an int"),
        (True, None, TypeError, "offset must be an int"),
    ],
)
def test_bad_offset_or_count(core, data_file, offset, count, exc, words):
    q = core.PushQueue()
    with pytest.raises(exc, match=words):
        q.push_file(data_file, offset, count)
    assert not q and not data_file.closed


def test_unreadable_unseekable_closed_files(core, tmp_path):
    q = core.PushQueue()
    with open(tmp_path / "w", "wb") as w:
        with pytest.raises(ValueError, match="open for reading"):
            q.push_file(w)
    r, wfd = os.pipe()
    os.close(wfd)
    with os.fdopen(r, "rb") as pipe:
        with pytest.raises(ValueError, match="seekable"):
            q.push_file(pipe)
    closed = io.BytesIO(b"x")
    closed.close()
    with pytest.raises(ValueError):
        q.push_file(closed)
    assert not q


def test_file_closed_under_the_queue_raises(core, pair, data_file):
    a, b = pair
    q = core.PushQueue()
    q.push_file(io.BytesIO(DATA), 0, 10)
    q.snapshot()[0].file.close()
    with pytest.raises(ValueError):
        q.send(a)


def test_replace_keeps_requeued_files_open(core, pair, data_file):
    a, b = pair
    dropped = io.BytesIO(b"dropped")
    q = core.PushQueue()
    q.push(b"old")
    q.push_file(data_file, 0, 1000)
    q.push_file(dropped)
    items = q.snapshot()
    q.replace([b"new", items[1], None])
    assert dropped.closed and not data_file.closed
    assert q.buffered == 1003 and len(q) == 3
    received = bytearray()
    drain(q, a, b, received)
    assert bytes(received) == b"new" + DATA[:1000]
    assert q.close_pending and data_file.closed


def test_replace_with_a_bad_item_still_releases(core):
    dropped = io.BytesIO(b"dropped")
    q = core.PushQueue()
    q.push_file(dropped)
    with pytest.raises(TypeError):
        q.replace([b"ok", object()])
    assert dropped.closed and q.snapshot() == [b"ok"]
