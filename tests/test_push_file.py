"""``async_chat.push_file``: zero-copy files between pushed bytes.

A file range goes out with ``os.sendfile`` on a plain socket, in order with
the bytes pushed before and after it, and ``close_when_done`` after it
closes once it is sent.  On a socket the channel cannot hand to the kernel
directly (a subclass of socket.socket, later TLS) the file is read
``ac_out_buffer_size`` bytes at a time.  The channel owns the file unless
``close=False``.  A queued file counts in ``get_write_buffer_size()``, so
write-buffer limits hold back a client that asks for files faster than it
reads them.

Both cores: the file is marked ``api_layer`` (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import time

import pytest

import asynframe
from asynframe import asynchat, asyncore

from support import HAS_SENDFILE, NO_EXTENSIONS, file_data, refuse_file_reads

HERE = os.path.abspath(__file__)

pytestmark = [pytest.mark.api_layer, pytest.mark.timeout(60)]

DATA = file_data()  # what the data_file fixture holds


class RecordingSocket(socket.socket):
    """Not a plain socket: the channel must send through its own send()."""

    sizes: list

    def send(self, data, *flags):
        self.sizes.append(len(data))
        return super().send(data, *flags)


class FileServer(asynchat.async_chat):
    """``GET offset count`` answers ``OK count\\r\\n`` and the file range."""

    def __init__(self, sock, m, file=None):
        asynchat.async_chat.__init__(self, sock, m)
        self.set_terminator(b"\n")
        self.file = file
        self.buf = []
        self.events = []

    def collect_incoming_data(self, data):
        self.buf.append(data)

    def found_terminator(self):
        words = b"".join(self.buf).split()
        self.buf = []
        if words[0] == b"QUIT":
            self.close_when_done()
            return
        offset, count = int(words[1]), int(words[2])
        self.push(b"OK %d\r\n" % count)
        self.push_file(self.file, offset, count, close=False)

    def pause_writing(self):
        self.events.append(("pause", self.get_write_buffer_size()))

    def resume_writing(self):
        self.events.append(("resume", self.get_write_buffer_size()))


class Pair:
    def __init__(self, cls=asynchat.async_chat, sock_class=socket.socket, *args):
        self.map = {}
        a, self.peer = socket.socketpair()
        if sock_class is not socket.socket:
            a = sock_class(a.family, a.type, a.proto, fileno=a.detach())
            a.sizes = []
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.peer.setblocking(False)
        self.chan = cls(a, self.map, *args)

    def read_until_eof(self, limit=4096, timeout=20):
        """A slow reader: *limit* bytes per loop iteration, until EOF."""
        got = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, "no EOF after %d bytes" % len(got)
            asyncore.loop(0.01, map=self.map, count=1)
            try:
                data = self.peer.recv(limit)
            except BlockingIOError:
                continue
            if not data:
                return bytes(got)
            got += data

    def read_exactly(self, n, timeout=20):
        got = bytearray()
        deadline = time.monotonic() + timeout
        while len(got) < n:
            assert time.monotonic() < deadline, "%d of %d bytes" % (len(got), n)
            asyncore.loop(0.01, map=self.map, count=1)
            try:
                got += self.peer.recv(1 << 16)
            except BlockingIOError:
                pass
        return bytes(got)

    def close(self):
        asyncore.close_all(self.map, ignore_all=True)
        self.peer.close()


@pytest.fixture
def pairs():
    made = []

    def make(*args):
        p = Pair(*args)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.mark.skipif(not HAS_SENDFILE, reason="no os.sendfile here")
def test_bytes_file_bytes_close_when_done_with_sendfile(pairs, data_file, monkeypatch):
    refuse_file_reads(monkeypatch)
    p = pairs()
    chan = p.chan
    chan.push(b"HEAD\r\n")
    chan.push_file(data_file, 1000, 1_900_000)
    chan.push(b"TAIL\r\n")
    chan.close_when_done()
    assert chan.get_write_buffer_size() > 1_800_000  # the file counts, unsent
    received = p.read_until_eof(limit=16384)
    expected = b"HEAD\r\n" + DATA[1000:1_901_000] + b"TAIL\r\n"
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert not chan.connected and chan._fileno is None  # closed after the tail
    assert chan._af_queue.sendfile_calls > 1
    assert data_file.closed  # the channel owned it


def test_fallback_on_a_socket_subclass(pairs, data_file):
    class Small(asynchat.async_chat):
        ac_out_buffer_size = 1000

    p = pairs(Small, RecordingSocket)
    chan = p.chan
    chan.push(b"<")
    chan.push_file(data_file, 5, 300_000, close=False)
    chan.push(b">")
    chan.close_when_done()
    received = p.read_until_eof()
    assert received == b"<" + DATA[5:300_005] + b">"
    assert chan._af_queue.sendfile_calls == 0
    sizes = chan.socket.sizes
    assert sizes and max(sizes) <= 1000  # read ac_out_buffer_size at a time
    assert not data_file.closed  # close=False: the caller keeps it


def test_file_object_without_descriptor(pairs):
    p = pairs()
    p.chan.push_file(io.BytesIO(DATA), 3, 100_000)
    p.chan.close_when_done()
    assert p.read_until_eof() == DATA[3:100_003]
    assert p.chan._af_queue.sendfile_calls == 0


def test_pipelined_requests_answered_in_order_under_limits(pairs, data_file):
    """Files pushed from found_terminator; the queued files count toward the limits."""
    p = pairs(FileServer, socket.socket, data_file)
    chan = p.chan
    chan.set_write_buffer_limits(64 * 1024, 16 * 1024)
    ranges = [(0, 700_000), (123, 1), (1_000_000, 1_000_000), (2_000_000, 97_152)]
    p.peer.sendall(b"".join(b"GET %d %d\n" % r for r in ranges) + b"QUIT\n")
    received = p.read_until_eof(limit=65536)
    expected = b"".join(b"OK %d\r\n" % c + DATA[o : o + c] for o, c in ranges)
    assert hashlib.sha256(received).digest() == hashlib.sha256(expected).digest()
    # paused while the replies were queued; a pause still on when the
    # channel closes is never lifted (nothing reads any more)
    kinds = [k for k, _ in chan.events]
    assert kinds[:1] == ["pause"]
    assert kinds == ["pause", "resume"] * (len(kinds) // 2) + ["pause"] * (len(kinds) % 2)
    assert not data_file.closed


def test_limits_pause_reads_while_a_big_file_is_unsent(pairs, data_file):
    p = pairs(FileServer, socket.socket, data_file)
    chan = p.chan
    chan.set_write_buffer_limits(100_000)
    p.peer.sendall(b"GET 0 2000000\n")
    asyncore.loop(0.01, map=p.map, count=2)
    assert chan.writing_paused and not chan.readable()
    assert chan.get_write_buffer_size() > 1_000_000
    # a second request waits in the kernel until the file has drained
    p.peer.sendall(b"GET 5 10\n")
    body = p.read_exactly(len(b"OK 2000000\r\n") + 2_000_000 + len(b"OK 10\r\n") + 10)
    assert body.endswith(b"OK 10\r\n" + DATA[5:15])
    assert [k for k, _ in chan.events] == ["pause", "resume"]


def test_owned_file_closed_with_the_channel(pairs, data_file):
    p = pairs()
    p.chan.push_file(data_file)  # far more than the socket takes
    kept = io.BytesIO(DATA)
    p.chan.push_file(kept, close=False)
    assert not data_file.closed
    p.chan.close()
    assert data_file.closed and not kept.closed


def test_owned_file_closed_by_discard_buffers(pairs, data_file):
    p = pairs()
    p.chan.push_file(data_file)
    p.chan.discard_buffers()
    assert data_file.closed and p.chan.get_write_buffer_size() == 0


def test_producer_fifo_round_trip_keeps_the_file(pairs, data_file):
    p = pairs()
    chan = p.chan
    chan.push(b"a" * 500_000)  # the file stays queued behind this
    chan.push_file(data_file, 0, 300_000)
    items = list(chan.producer_fifo)
    assert isinstance(items[-1], asynframe._core.FileProducer)
    chan.producer_fifo = items
    chan.close_when_done()
    received = p.read_until_eof(limit=65536)
    assert len(received) == 800_000 and received.endswith(DATA[:300_000])


def test_errors_raise_and_queue_nothing(pairs, tmp_path):
    p = pairs()
    path = tmp_path / "t.txt"
    path.write_text("hello")
    with open(path) as text:
        with pytest.raises(TypeError, match="binary mode"):
            p.chan.push_file(text)
        assert not text.closed
    with open(path, "rb") as binary:
        with pytest.raises(ValueError, match="offset must be >= 0"):
            p.chan.push_file(binary, -1)
        with pytest.raises(ValueError, match="count must be >= 0"):
            p.chan.push_file(binary, 0, -1)
        assert not binary.closed
    with pytest.raises(TypeError, match="binary file object"):
        p.chan.push_file(b"not a file")
    assert p.chan.get_write_buffer_size() == 0 and not p.chan.producer_fifo


# -- both cores ------------------------------------------------------------------------
def test_core_matches_environment():
    if NO_EXTENSIONS:
        assert not asynframe.USING_C_CORE
