"""Write-buffer flow control: ``set_write_buffer_limits`` and its hooks.

A client that pipelines requests and never reads must not grow the server's
queue past the high mark plus the replies to one read; the server stops
reading (its poller registration loses read interest), TCP holds the client
back, and everything arrives intact once the client reads.  Other
connections are served meanwhile.  Without limits nothing changes (stock
asynchat semantics; CPython's suites check that in test_cpython_suites.py).

Both cores: the file is marked ``api_layer``, so the second pytest command of
the README runs it again with the pure core forced (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time

import pytest

import asynframe
from asynframe import _poller, asynchat, asyncore

from support import NO_EXTENSIONS

HERE = os.path.abspath(__file__)

pytestmark = [pytest.mark.api_layer, pytest.mark.timeout(60)]

HIGH = 64 * 1024
LOW = 16 * 1024
REQUEST_LEN = 100  # bytes per request, terminator included
REPLY_LEN = 1000  # bytes per reply
READ_SIZE = 4096  # the server's ac_in_buffer_size
SMALL_BUF = 32 * 1024  # socket buffers: TCP pushes back early


def request(i):
    head = b"REQ %08d " % i
    return head + b"r" * (REQUEST_LEN - len(head) - 1) + b"\n"


def reply(i):
    # differs per request, so a lost, repeated or reordered reply shows in the digest
    unit = hashlib.sha256(b"%d" % i).hexdigest().encode()
    return (unit * (REPLY_LEN // len(unit) + 1))[:REPLY_LEN]


class Server(asyncore.dispatcher):
    def __init__(self, m, handler, limits=True):
        asyncore.dispatcher.__init__(self, map=m)
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(16)
        self.port = self.socket.getsockname()[1]
        self.map = m
        self.handler = handler
        self.limits = limits
        self.channels = []

    def handle_accepted(self, sock, addr):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
        chan = self.handler(sock, self.map)
        if self.limits:
            chan.set_write_buffer_limits(HIGH, LOW)
        self.channels.append(chan)


class Replier(asynchat.async_chat):
    """One reply per request line; records the flow-control hooks."""

    ac_in_buffer_size = READ_SIZE

    def __init__(self, sock, m):
        asynchat.async_chat.__init__(self, sock, m)
        self.set_terminator(b"\n")
        self.buf = []
        self.events = []
        self.served = 0
        self.peak = 0

    def collect_incoming_data(self, data):
        self.buf.append(data)

    def found_terminator(self):
        line = b"".join(self.buf)
        self.buf = []
        i = int(line.split()[1])
        self.push(reply(i))
        self.served += 1
        self.peak = max(self.peak, self.get_write_buffer_size())

    def pause_writing(self):
        assert not self.readable()
        self.events.append(("pause", self.get_write_buffer_size()))

    def resume_writing(self):
        assert self.readable()
        self.events.append(("resume", self.get_write_buffer_size()))


class EchoTimes(asyncore.dispatcher_with_send):
    """dispatcher_with_send: each read answered with ten times its bytes."""

    def __init__(self, sock, m):
        asyncore.dispatcher_with_send.__init__(self, sock, m)
        self.events = []
        self.peak = 0

    def handle_read(self):
        data = self.recv(READ_SIZE)
        if data:
            self.send(data * 10)
            self.peak = max(self.peak, self.get_write_buffer_size())

    def pause_writing(self):
        self.events.append(("pause", self.get_write_buffer_size()))

    def resume_writing(self):
        self.events.append(("resume", self.get_write_buffer_size()))


@pytest.fixture
def env():
    """A socket map, the sockets a test opened, and cleanup of both."""
    m = {}
    socks = []
    yield m, socks
    asyncore.close_all(m, ignore_all=True)
    for s in socks:
        s.close()


def connect(port, socks):
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
    c.connect(("127.0.0.1", port))
    c.setblocking(False)
    socks.append(c)
    return c


def spin(m, rounds=1):
    for _ in range(rounds):
        asyncore.loop(0.01, map=m, count=1)


def send_some(sock, data):
    """Non-blocking send; bytes taken (0 when TCP pushes back)."""
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0


def recv_all(sock, into):
    while True:
        try:
            got = sock.recv(1 << 16)
        except BlockingIOError:
            return
        if not got:
            return
        into += got


def read_interest(m, chan):
    poller = _poller.poller_for(m, create=False)
    entry = poller.known.get(chan._fileno)
    return bool(entry and entry[1] & _poller.IN)


def assert_served_alongside(m, server, socks, count=20):
    """A second connection gets its replies while the first is held back."""
    other = connect(server.port, socks)
    got = bytearray()
    for i in range(count):
        other.sendall(request(10_000 + i))
        want = (i + 1) * REPLY_LEN
        t = time.monotonic() + 5
        while len(got) < want:
            assert time.monotonic() < t, "the second connection was not served"
            spin(m)
            recv_all(other, got)
    assert bytes(got) == b"".join(reply(10_000 + i) for i in range(count))


def test_flooding_client_that_never_reads_is_held_back(env):
    m, socks = env
    server = Server(m, Replier)
    client = connect(server.port, socks)
    while not server.channels:
        spin(m)
    chan = server.channels[0]
    assert chan.get_write_buffer_limits() == (LOW, HIGH)

    total = 6000  # 600 KB of requests, 6 MB of replies: far past every buffer
    stream = b"".join(request(i) for i in range(total))
    sent = 0
    stalled = 0
    deadline = time.monotonic() + 20
    # flood without reading until TCP stops taking requests for a while
    while stalled < 30:
        assert time.monotonic() < deadline, "the client was never held back"
        n = send_some(client, stream[sent : sent + 65536])
        sent += n
        stalled = 0 if n else stalled + 1
        spin(m)
        assert chan.get_write_buffer_size() <= chan.peak
    assert sent < len(stream), "TCP never pushed back: the server kept reading"

    # bounded: the high mark plus the replies to one read of requests
    one_read = (READ_SIZE // REQUEST_LEN + 1) * REPLY_LEN
    assert HIGH < chan.peak <= HIGH + one_read
    assert chan.writing_paused and not chan.readable()
    assert not read_interest(m, chan), "the poller still waits for reads"
    assert chan.events == [("pause", chan.events[0][1])]
    assert chan.events[0][1] > HIGH
    served_while_paused = chan.served

    # another connection is served meanwhile
    assert_served_alongside(m, server, socks)
    assert chan.served == served_while_paused  # the flooder stayed paused

    # the client starts reading: everything arrives, in order, intact
    received = bytearray()
    expected_len = total * REPLY_LEN
    deadline = time.monotonic() + 30
    while len(received) < expected_len:
        assert time.monotonic() < deadline, "%d of %d bytes" % (len(received), expected_len)
        if sent < len(stream):
            sent += send_some(client, stream[sent : sent + 65536])
        spin(m)
        recv_all(client, received)
        assert chan.get_write_buffer_size() <= HIGH + one_read
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(b"".join(reply(i) for i in range(total))).hexdigest()
    assert chan.served == total
    assert not chan.writing_paused and chan.readable()
    spin(m)
    assert read_interest(m, chan)
    assert chan.peak <= HIGH + one_read

    # one call per crossing: strictly alternating, each at its mark
    kinds = [kind for kind, _ in chan.events]
    assert kinds == ["pause", "resume"] * (len(kinds) // 2), kinds
    assert len(kinds) >= 2
    for kind, size in chan.events:
        assert size > HIGH if kind == "pause" else size <= LOW


def test_dispatcher_with_send_is_held_back_too(env):
    m, socks = env
    server = Server(m, EchoTimes)
    client = connect(server.port, socks)
    while not server.channels:
        spin(m)
    chan = server.channels[0]
    payload = os.urandom(1 << 19)
    sent = stalled = 0
    deadline = time.monotonic() + 20
    while stalled < 30:
        assert time.monotonic() < deadline
        n = send_some(client, payload[sent : sent + 65536])
        sent += n
        stalled = 0 if n else stalled + 1
        spin(m)
    assert sent < len(payload)
    assert HIGH < chan.peak <= HIGH + 10 * READ_SIZE
    assert chan.writing_paused and not read_interest(m, chan)
    assert [k for k, _ in chan.events] == ["pause"]

    received = bytearray()
    deadline = time.monotonic() + 30
    while len(received) < 10 * len(payload):
        assert time.monotonic() < deadline
        if sent < len(payload):
            sent += send_some(client, payload[sent : sent + 65536])
        spin(m)
        recv_all(client, received)
    # each read came back ten times over: walk the reads, in order
    assert len(received) == 10 * len(payload)
    p = q = 0
    while p < len(received):
        k = received.find(payload[q : q + 32], p + 1) - p if len(payload) - q > 32 else len(payload) - q
        assert 0 < k <= READ_SIZE
        assert received[p : p + 10 * k] == payload[q : q + k] * 10, (p, q, k)
        p += 10 * k
        q += k
    assert q == len(payload)
    assert not chan.writing_paused and read_interest(m, chan)
    kinds = [k for k, _ in chan.events]
    assert kinds == ["pause", "resume"] * (len(kinds) // 2)


class Pair:
    """A Replier on one end of a socketpair; the test plays the peer."""

    def __init__(self, cls=Replier):
        self.map = {}
        a, self.peer = socket.socketpair()
        self.peer.setblocking(False)
        self.chan = cls(a, self.map)

    def close(self):
        asyncore.close_all(self.map, ignore_all=True)
        self.peer.close()


@pytest.fixture
def pair():
    p = Pair()
    yield p
    p.close()


def test_pushes_outside_handlers_cross_once(pair):
    chan, peer = pair.chan, pair.peer
    chan.set_write_buffer_limits(high=10_000)
    assert chan.get_write_buffer_limits() == (2_500, 10_000)
    # fill the socketpair's buffer so that pushes stay queued
    blob = b"x" * 4096
    while True:
        chan.push(blob)
        if chan.get_write_buffer_size() > 0:
            break
    for _ in range(10):
        chan.push(blob)
    assert chan.writing_paused
    assert [k for k, _ in chan.events] == ["pause"]
    spin(pair.map)
    assert not read_interest(pair.map, chan)
    # the peer reads: the queue drains, reading resumes once
    deadline = time.monotonic() + 10
    sink = bytearray()
    while chan.get_write_buffer_size():
        assert time.monotonic() < deadline
        recv_all(peer, sink)
        spin(pair.map)
    assert [k for k, _ in chan.events] == ["pause", "resume"]
    spin(pair.map)  # registrations are brought up to date before each wait
    assert read_interest(pair.map, chan)


def test_limits_set_while_above_and_removed_while_paused(pair):
    chan = pair.chan
    chan.push(b"y" * (1 << 20))  # far more than a socketpair takes at once
    assert chan.get_write_buffer_size() > 1000
    assert chan.events == []
    chan.set_write_buffer_limits(1000, 500)
    assert chan.writing_paused and chan.events == [("pause", chan.get_write_buffer_size())]
    chan.set_write_buffer_limits()  # no limits: stdlib behaviour, reading resumes
    assert chan.get_write_buffer_limits() is None
    assert not chan.writing_paused and chan.readable()
    assert [k for k, _ in chan.events] == ["pause", "resume"]
    spin(pair.map)
    assert read_interest(pair.map, chan)
    chan.push(b"z" * (1 << 20))
    assert [k for k, _ in chan.events] == ["pause", "resume"]


def test_discard_buffers_resumes(pair):
    chan = pair.chan
    chan.set_write_buffer_limits(1000)
    chan.push(b"y" * (1 << 20))
    assert chan.writing_paused
    chan.discard_buffers()
    assert chan.get_write_buffer_size() == 0
    assert not chan.writing_paused
    assert [k for k, _ in chan.events] == ["pause", "resume"]


def test_zero_high_mark_pauses_on_any_unsent_byte(pair):
    chan = pair.chan
    chan.set_write_buffer_limits(0)
    assert chan.get_write_buffer_limits() == (0, 0)
    chan.push(b"small")  # the socket takes it at once: no crossing
    assert chan.events == [] and chan.get_write_buffer_size() == 0
    chan.push(b"y" * (1 << 20))
    assert chan.writing_paused


def test_lazy_producer_counts_what_it_produced(pair):
    chan = pair.chan
    chan.set_write_buffer_limits(1 << 30)  # never crossed: just measure

    class Counting:
        def __init__(self):
            self.calls = 0

        def more(self):
            self.calls += 1
            return b"p" * 1000 if self.calls <= 5000 else b""

    producer = Counting()
    chan.push_with_producer(producer)
    # what was pulled and not sent, never the producer's 5 MB still to come
    pulled = producer.calls * 1000
    assert chan.get_write_buffer_size() <= pulled < 5_000_000


def test_no_limits_is_stock_behaviour(pair):
    chan = pair.chan
    assert chan.get_write_buffer_limits() is None
    assert chan.readable() and not chan.writing_paused
    assert "_af_generic_path" not in vars(chan) and chan._af_generic_path is False
    chan.push(b"y" * (4 << 20))
    assert chan.events == [] and chan.readable()
    spin(pair.map)
    assert read_interest(pair.map, chan)


def test_limits_take_the_generic_path(pair):
    chan = pair.chan
    chan.set_write_buffer_limits(1 << 16)
    assert vars(chan)["_af_generic_path"] is True


def test_overridden_readable_still_sees_the_pause(pair):
    class Picky(Replier):
        def readable(self):
            return asynchat.async_chat.readable(self) and True

    p = Pair(Picky)
    try:
        p.chan.set_write_buffer_limits(100)
        p.chan.push(b"y" * (1 << 20))
        assert not p.chan.readable()
        spin(p.map)
        assert not read_interest(p.map, p.chan)
    finally:
        p.close()


class BigReplier(Replier):
    """Each small request is answered with 100 KB: an amplifying protocol."""

    def found_terminator(self):
        line = b"".join(self.buf)
        self.buf = []
        i = int(line.split()[1])
        self.push(reply(i) * 100)
        self.served += 1
        self.peak = max(self.peak, self.get_write_buffer_size())


def test_frames_already_read_wait_while_paused(env):
    # 30 requests in one packet ask for 3 MB: once the replies cross the high
    # mark, the requests after that one stay unread in the input buffer
    # (writing paused stops delivery, not only reading) until it drains
    m, socks = env
    server = Server(m, BigReplier)
    client = connect(server.port, socks)
    while not server.channels:
        spin(m)
    chan = server.channels[0]
    count = 30
    client.sendall(b"".join(request(i) for i in range(count)))
    for _ in range(20):
        spin(m)
    assert chan.writing_paused
    # what the kernel's buffers took let a few more through, not all 30
    assert chan.served < 10 and chan.peak <= HIGH + 100 * REPLY_LEN
    assert chan._af_scanner.pending  # the other requests, kept back
    received = bytearray()
    expected = b"".join(reply(i) * 100 for i in range(count))
    deadline = time.monotonic() + 30
    while len(received) < len(expected):
        assert time.monotonic() < deadline, "%d of %d bytes" % (len(received), len(expected))
        spin(m)
        recv_all(client, received)
        assert chan.get_write_buffer_size() <= HIGH + 100 * REPLY_LEN
    assert bytes(received) == expected
    assert chan.served == count and chan.peak <= HIGH + 100 * REPLY_LEN


@pytest.mark.parametrize(
    "args, exc, words",
    [
        (("64k",), TypeError, "high must be an int"),
        ((1.5,), TypeError, "high must be an int"),
        ((True,), TypeError, "high must be an int"),
        ((None, "1"), TypeError, "low must be an int"),
        ((-1,), ValueError, "high must be >= 0"),
        ((100, -1), ValueError, "low must be >= 0"),
        ((None, -4), ValueError, "low must be >= 0"),
        ((100, 200), ValueError, "low (200) must not be above high (100)"),
    ],
)
def test_validation(pair, args, exc, words):
    chan = pair.chan
    with pytest.raises(exc) as info:
        chan.set_write_buffer_limits(*args)
    assert words in str(info.value)
    assert chan.get_write_buffer_limits() is None  # nothing changed


def test_limits_set_before_init():
    class Early(asynchat.async_chat):
        def __init__(self, sock, m):
            self.set_write_buffer_limits(1000)  # legacy order: before __init__
            asynchat.async_chat.__init__(self, sock, m)

    a, b = socket.socketpair()
    m = {}
    try:
        chan = Early(a, m)
        assert chan.get_write_buffer_limits() == (250, 1000)
        chan.push(b"y" * (1 << 20))
        assert chan.writing_paused
    finally:
        asyncore.close_all(m, ignore_all=True)
        b.close()


def test_derived_marks(pair):
    chan = pair.chan
    chan.set_write_buffer_limits(low=1000)
    assert chan.get_write_buffer_limits() == (1000, 4000)
    chan.set_write_buffer_limits(high=1001)
    assert chan.get_write_buffer_limits() == (250, 1001)
    chan.set_write_buffer_limits(high=7, low=7)
    assert chan.get_write_buffer_limits() == (7, 7)


# -- both cores ------------------------------------------------------------------------
def test_core_matches_environment():
    if NO_EXTENSIONS:
        assert not asynframe.USING_C_CORE
