"""PushQueue on both twins, over socketpairs with a small send buffer.

Everything runs on loopback/socketpair with non-blocking senders, so a
missing wake-up shows up as a failed assertion (or the timeout), never as a
hang on a blocking call.
"""

from __future__ import annotations

import array
import errno
import io
import itertools
import os
import socket
import sys
import tempfile
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import pattern

pytestmark = pytest.mark.timeout(60)

SNDBUF = 4096


def small_pair(sndbuf=SNDBUF):
    """A socketpair whose sender has a tiny send buffer; both non-blocking."""
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


@pytest.fixture
def pair():
    a, b = small_pair()
    yield a, b
    a.close()
    b.close()


def read_available(sock, into):
    """Read whatever the socket has now; returns False at EOF."""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        into += data


class ListProducer:
    """A producer handing out *chunks* one per more(), then b"" (or "")."""

    def __init__(self, chunks, empty=b""):
        self.chunks = list(chunks)
        self.empty = empty
        self.calls = 0

    def more(self):
        self.calls += 1
        if self.chunks:
            return self.chunks.pop(0)
        return self.empty


def drain(q, a, b, received, max_rounds=200000):
    """Alternate send() and reads until the queue is empty or at a close."""
    total = 0
    for _ in range(max_rounds):
        if not q or q.close_pending:
            break
        total += q.send(a)
        read_available(b, received)
    else:
        raise AssertionError("queue did not drain")
    read_available(b, received)
    return total


# -- validation and bookkeeping -------------------------------------------------------------


@pytest.mark.parametrize("bad", ["text", "", 123, None, [b"x"], object(), 1.5])
def test_push_rejects_non_bytes(core, bad):
    q = core.PushQueue()
    with pytest.raises(TypeError):
        q.push(bad)
    assert len(q) == 0 and q.buffered == 0


def test_push_str_rejected_even_with_encoding(core):
    q = core.PushQueue("latin-1")
    with pytest.raises(TypeError):
        q.push("text")


@pytest.mark.parametrize("empty", [b"", bytearray(), memoryview(b"")])
def test_empty_push_is_a_no_op(core, empty):
    q = core.PushQueue()
    q.push(empty)
    q.push_producer(empty)
    assert len(q) == 0 and not q
    assert q.buffered == 0
    assert q.stats == (0, 0)
    assert q.snapshot() == []


def test_push_copies_mutable_buffers(core, pair):
    a, b = pair
    q = core.PushQueue()
    data = bytearray(b"hello")
    q.push(data)
    q.push(memoryview(data)[1:3])
    data[:] = b"XXXXX"
    assert q.buffered == 7
    assert q.snapshot() == [b"hello", b"el"]
    received = bytearray()
    drain(q, a, b, received)
    assert received == b"helloel"


def _send_all(q, pair):
    a, b = pair
    received = bytearray()
    drain(q, a, b, received)
    return bytes(received)


def test_push_memoryview_over_bytes_is_not_copied(core, pair):
    base = pattern(200_000)  # bytes, far more than the send buffer: partial sends
    view = memoryview(base)[5:-5]
    q = core.PushQueue()
    q.push(view)
    queued = q.snapshot()[0]
    # the queue keeps a view of the caller's bytes object, not a copy of them
    assert type(queued) is memoryview and queued.obj is base
    assert q.buffered == len(base) - 10
    # releasing the caller's view (or the one snapshot() handed out) leaves
    # the queue's own view intact
    view.release()
    queued.release()
    a, b = pair
    received = bytearray()
    assert q.send(a) > 0
    read_available(b, received)
    head = q.snapshot()[0]  # the unsent rest of the head, still over *base*
    assert type(head) is memoryview and head.obj is base
    assert bytes(head) == base[5:-5][len(received) :]
    drain(q, a, b, received)
    assert received == base[5:-5]


def test_push_memoryview_over_bytes_allocates_no_copy(core):
    base = bytes(4 << 20)
    q = core.PushQueue()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        q.push(memoryview(base)[1:])
        q.push(memoryview(base).cast("I"))  # a non-byte format is sent as its bytes
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024  # a copy would be 8 MiB
    assert q.buffered == 2 * len(base) - 1
    assert all(item.obj is base for item in q.snapshot())


def test_push_memoryview_holds_a_reference_not_a_copy(core):
    base = pattern(1000)
    refs = sys.getrefcount(base)
    q = core.PushQueue()
    q.push(memoryview(base)[10:20])
    assert sys.getrefcount(base) > refs  # the queue's view keeps *base* alive
    q.clear()
    assert sys.getrefcount(base) == refs


@pytest.mark.parametrize(
    "make",
    [
        lambda data: memoryview(bytes(data)).cast("I"),
        lambda data: memoryview(bytes(data))[::2],  # not contiguous: copied
        lambda data: memoryview(bytes(data)).cast("B", (len(data) // 8, 8)),
    ],
)
def test_memoryviews_over_bytes_send_their_bytes(core, pair, make):
    view = make(pattern(40_000))
    q = core.PushQueue()
    q.push(view)
    assert q.buffered == view.nbytes
    assert _send_all(q, pair) == view.tobytes()


@pytest.mark.parametrize(
    "make",
    [
        bytearray,
        lambda data: memoryview(bytearray(data))[3:],
        lambda data: memoryview(array.array("B", data)),
    ],
)
def test_push_copies_mutable_buffers_before_a_partial_send(core, pair, make):
    data = pattern(100_000)
    buffer = make(data)
    expected = bytes(buffer)
    q = core.PushQueue()
    q.push(buffer)
    assert all(type(item) is bytes for item in q.snapshot())
    a, b = pair
    received = bytearray()
    assert q.send(a) > 0  # part of it is out, the rest still queued
    # the caller reuses its buffer: what was pushed is sent, as it was
    with memoryview(buffer.obj if isinstance(buffer, memoryview) else buffer).cast("B") as writable:
        writable[:] = bytes(len(writable))
    drain(q, a, b, received)
    assert received == expected


def test_next_chunk_of_a_memoryview_is_a_view_of_the_same_bytes(core):
    base = pattern(100)
    q = core.PushQueue()
    q.push(b"<")
    q.push(memoryview(base))
    q.push(b">")
    assert q.next_chunk(10) == b"<"
    q.consume(1)
    chunk = q.next_chunk(30)
    assert type(chunk) is memoryview and chunk.obj is base and chunk == base[:30]
    chunk.release()  # the caller's to release: the queue's view is another one
    q.consume(20)
    rest = q.next_chunk(1000)
    assert type(rest) is memoryview and rest.obj is base and rest == base[20:]
    q.consume(len(rest))
    assert q.next_chunk(10) == b">"


def test_memoryview_push_sends_what_asynchat_sends(core, pair, ref_asynchat):
    # asynchat keeps a pushed memoryview (and slices one larger than
    # ac_out_buffer_size) and sends from it: the peer sees its bytes.  (Only
    # byte-format views: asynchat resumes a partly sent view by its item
    # count, so a cast("I") view loses bytes there; the cores send all of them.)
    base = pattern(150_000)
    pushed = [
        memoryview(base)[7:],
        memoryview(bytearray(b"mutable")),
        bytearray(b"array"),
        memoryview(base)[:70_000],
        memoryview(b"tail"),
    ]

    class Chat(ref_asynchat.async_chat):
        def __init__(self, sock):
            ref_asynchat.async_chat.__init__(self, sock, map={})

    left, right = socket.socketpair()
    reference = bytearray()
    try:
        chat = Chat(left)
        for data in pushed:
            chat.push(data)
        while chat.producer_fifo:
            chat.initiate_send()
            reference += right.recv(1 << 20)
        left.shutdown(socket.SHUT_WR)
        right.setblocking(False)
        read_available(right, reference)
    finally:
        left.close()
        right.close()
    q = core.PushQueue()
    for data in pushed:
        q.push(data)
    assert _send_all(q, pair) == bytes(reference)


def test_push_producer_validation(core):
    q = core.PushQueue()
    with pytest.raises(TypeError):
        q.push_producer(None)
    with pytest.raises(TypeError):
        q.push_producer(object())
    with pytest.raises(TypeError):
        q.push_producer(42)
    with pytest.raises(TypeError):
        q.push_producer("text")  # no encoding
    assert len(q) == 0
    q = core.PushQueue("utf-8")
    q.push_producer("\u00e9t\u00e9")
    assert q.snapshot() == ["\u00e9t\u00e9".encode("utf-8")]
    assert q.buffered == 5
    assert q.encoding == "utf-8"


def test_buffered_and_len(core, pair):
    a, b = pair
    q = core.PushQueue()
    q.push(b"abc")
    q.push(bytearray(b"de"))
    producer = ListProducer([b"fgh", b"ij"])
    q.push_producer(producer)
    q.push_close()
    q.push(b"after")
    assert len(q) == 5 and q
    # producers count once pulled
    assert q.buffered == 3 + 2 + 5
    assert q.stats == (4, 0)
    received = bytearray()
    sent = drain(q, a, b, received)
    assert received == b"abcdefghij"
    assert sent == 10
    assert q.close_pending
    assert q.buffered == 5
    assert q.snapshot() == [None, b"after"]
    assert q.pop_close()
    assert not q.pop_close()
    drain(q, a, b, received)
    assert received == b"abcdefghijafter"
    assert q.buffered == 0 and len(q) == 0


def test_clear(core):
    q = core.PushQueue()
    q.push(b"abc")
    q.push_producer(ListProducer([b"x"]))
    q.push_close()
    q.clear()
    assert len(q) == 0 and q.buffered == 0 and not q.close_pending
    q.push(b"z")
    assert q.snapshot() == [b"z"]


def test_close_only(core, pair):
    a, b = pair
    q = core.PushQueue()
    q.push_close()
    assert q.close_pending
    assert q.send(a) == 0
    assert q.stats == (0, 0)  # no system call for nothing
    assert q.next_chunk(10) is None
    assert q.pop_close()
    assert not q and q.send(a) == 0


# -- random mixes drained through a tiny socket buffer ------------------------------------


payloads = st.one_of(
    st.binary(min_size=0, max_size=64),
    st.integers(1, 40000).map(pattern),
)

items = st.one_of(
    st.tuples(st.just("bytes"), payloads),
    st.tuples(st.just("bytearray"), payloads),
    st.tuples(st.just("memoryview"), payloads),
    st.tuples(st.just("producer"), st.lists(payloads, max_size=5)),
    st.tuples(st.just("str_producer"), st.lists(st.text(max_size=30), max_size=5)),
    st.tuples(st.just("empty_producer"), st.just([])),
    st.tuples(st.just("close"), st.none()),
)


def enqueue(q, kind, value):
    """Queue one item; returns the bytes it stands for (None for a close)."""
    if kind == "bytes":
        q.push(value)
    elif kind == "bytearray":
        q.push(bytearray(value))
    elif kind == "memoryview":
        q.push(memoryview(b"<" + value + b">")[1:-1])
    elif kind == "producer":
        q.push_producer(ListProducer(value))
        # like asynchat, the first empty chunk ends a producer
        return b"".join(itertools.takewhile(bool, value))
    elif kind == "str_producer":
        q.push_producer(ListProducer(value, empty=""))
        return "".join(itertools.takewhile(bool, value)).encode("utf-8")
    elif kind == "empty_producer":
        q.push_producer(ListProducer([]))
        return b""
    else:
        q.push_close()
        return None
    return bytes(value)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(mix=st.lists(items, max_size=30), read_size=st.sampled_from([1, 7, 512, 65536]))
def test_random_mix_arrives_in_order(core, mix, read_size):
    a, b = small_pair()
    try:
        q = core.PushQueue("utf-8")
        segments = [[]]  # the bytes between close sentinels
        for kind, value in mix:
            data = enqueue(q, kind, value)
            if data is None:
                segments.append([])
            else:
                segments[-1].append(data)
        expected = [b"".join(seg) for seg in segments]
        received = bytearray()
        total_sent = 0
        before_close = 0
        for index, segment in enumerate(expected):
            before_close += len(segment)
            # bounded, yet enough for a 1-byte reader to drain every byte
            for _ in range(2 * before_close + 1000):
                if not q or q.close_pending:
                    break
                # close_pending only once everything before it went out
                assert total_sent < before_close or not segment
                sent = q.send(a)
                assert sent >= 0
                total_sent += sent
                assert q.buffered >= 0
                try:
                    received += b.recv(read_size)
                except BlockingIOError:
                    pass
            read_available(b, received)
            assert total_sent == before_close
            assert bytes(received) == b"".join(expected[: index + 1])
            if index < len(expected) - 1:
                assert q.close_pending
                assert q.pop_close()
        assert not q
        assert q.buffered == 0
        assert bytes(received) == b"".join(expected)
    finally:
        a.close()
        b.close()


def test_buffered_tracks_sends_exactly(core, pair):
    a, b = pair
    q = core.PushQueue()
    pushed = 0
    for i in range(300):
        data = pattern(i * 37 % 1000 + 1, seed=i)
        q.push(data)
        pushed += len(data)
    received = bytearray()
    sent_total = 0
    while q:
        sent = q.send(a)
        sent_total += sent
        assert q.buffered == pushed - sent_total
        read_available(b, received)
    read_available(b, received)
    assert len(received) == pushed


def test_partial_sends_resume_at_offset(core, pair):
    a, b = pair
    q = core.PushQueue()
    big = pattern(1 << 20, seed=7)
    q.push(big)
    q.push(b"END")
    received = bytearray()
    sent_total = 0
    partial_seen = False
    while q:
        sent = q.send(a)
        sent_total += sent
        if 0 < sent_total < len(big):
            partial_seen = True
            head = q.snapshot()[0]
            assert head == big[sent_total:]
            chunk = q.next_chunk(16)
            assert bytes(chunk) == big[sent_total : sent_total + 16]
        read_available(b, received)
    read_available(b, received)
    assert partial_seen
    assert bytes(received) == big + b"END"


def test_more_than_iov_max_items(core):
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.setblocking(False)
        q = core.PushQueue()
        count = core.IOV_MAX * 3 + 17
        for i in range(count):
            q.push(b"%05d," % i)
        received = bytearray()
        while q:
            q.send(a)
            read_available(b, received)
        read_available(b, received)
        assert bytes(received) == b"".join(b"%05d," % i for i in range(count))
        pushes, sends = q.stats
        assert pushes == count
        # no sendmsg() is handed more than IOV_MAX buffers
        assert sends >= -(-count // core.IOV_MAX)
    finally:
        a.close()
        b.close()


def test_scatter_gather_few_sends(core):
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.setblocking(False)
        q = core.PushQueue()
        for i in range(20000):
            q.push(b"%04d\r\n" % (i % 10000))
        received = bytearray()
        while q:
            q.send(a)
            read_available(b, received)
        read_available(b, received)
        assert len(received) == 20000 * 6
        pushes, sends = q.stats
        assert pushes == 20000
        assert sends * 50 < pushes, q.stats
    finally:
        a.close()
        b.close()


def test_send_to_pipe_fd(core):
    rfd, wfd = os.pipe()
    try:
        os.set_blocking(wfd, False)
        os.set_blocking(rfd, False)
        q = core.PushQueue()
        expected = bytearray()
        for i in range(core.IOV_MAX + 50):
            data = pattern(100, seed=i)
            q.push(data)
            expected += data
        q.push_producer(ListProducer([b"tail"]))
        expected += b"tail"
        received = bytearray()
        while q:
            q.send(wfd)
            while True:
                try:
                    data = os.read(rfd, 65536)
                except BlockingIOError:
                    break
                received += data
        assert received == expected
    finally:
        os.close(rfd)
        os.close(wfd)


# -- producers -------------------------------------------------------------------------


def test_producers_are_pulled_lazily(core, pair):
    a, b = pair
    q = core.PushQueue()
    first = ListProducer([b"a" * 100, b"b" * 100])
    second = ListProducer([b"c"])
    q.push_producer(first)
    q.push_close()
    q.push_producer(second)
    assert first.calls == 0
    received = bytearray()
    drain(q, a, b, received)
    assert received == b"a" * 100 + b"b" * 100
    assert first.calls == 3  # two chunks and the b"" that ends it
    assert second.calls == 0  # behind the close sentinel
    assert q.close_pending


def test_str_producer_needs_encoding(core, pair):
    a, b = pair
    q = core.PushQueue()
    q.push_producer(ListProducer(["text"]))
    with pytest.raises(TypeError):
        q.send(a)
    q = core.PushQueue("latin-1")
    q.push_producer(ListProducer(["caf\u00e9", bytearray(b"!"), memoryview(b"?")]))
    received = bytearray()
    drain(q, a, b, received)
    assert received == b"caf\xe9!?"


def test_producer_returning_garbage(core, pair):
    a, b = pair
    q = core.PushQueue()
    q.push_producer(ListProducer([12345]))
    with pytest.raises(TypeError):
        q.send(a)


def test_empty_producers_are_dropped(core, pair):
    a, b = pair
    q = core.PushQueue("ascii")
    for empty in (b"", "", None, bytearray()):
        q.push_producer(ListProducer([], empty=empty))
    q.push_close()
    assert len(q) == 5
    assert q.send(a) == 0
    assert q.close_pending and len(q) == 1


def test_asynchat_simple_producer(core, pair, ref_asynchat):
    a, b = pair
    q = core.PushQueue()
    data = pattern(5000)
    q.push_producer(ref_asynchat.simple_producer(data, buffer_size=512))
    received = bytearray()
    drain(q, a, b, received)
    assert received == data


def test_producer_clearing_the_queue(core, pair):
    # a producer whose channel closes itself from more() (discard_buffers)
    a, b = pair
    q = core.PushQueue()

    class Closer:
        def more(self):
            q.clear()
            q.push(b"after-clear")
            return b"lost"

    q.push(b"abc")
    q.push_producer(Closer())
    q.push(b"def")
    received = bytearray()
    drain(q, a, b, received)
    assert received == b"after-clear"
    assert q.buffered == 0


def test_producer_reentering_send(core, pair):
    a, b = pair
    q = core.PushQueue()

    class Reenter:
        def more(self):
            q.send(a)
            return b"x"

    q.push_producer(Reenter())
    with pytest.raises(RuntimeError):
        q.send(a)
    with pytest.raises(RuntimeError):
        q.next_chunk(1)
    assert q.buffered == 0


def test_producer_pushing_more(core, pair):
    a, b = pair
    q = core.PushQueue()
    state = {"n": 0}

    class Pusher:
        def more(self):
            state["n"] += 1
            if state["n"] <= 3:
                q.push(b"<%d>" % state["n"])
                return b"(%d)" % state["n"]
            return b""

    q.push_producer(Pusher())
    received = bytearray()
    drain(q, a, b, received)
    assert received == b"(1)(2)(3)<1><2><3>"


# -- next_chunk / consume -------------------------------------------------------------------


def test_next_chunk_consume_generic_path(core, pair):
    a, b = pair
    q = core.PushQueue("ascii")
    q.push(b"hello ")
    q.push_producer(ListProducer([b"big ", "wide "]))
    q.push(bytearray(b"world"))
    q.push_close()
    out = bytearray()
    while True:
        chunk = q.next_chunk(3)
        if chunk is None:
            break
        # immutable bytes: a socket-like object may keep what it is given
        assert type(chunk) is bytes
        assert 0 < len(chunk) <= 3
        take = max(1, len(chunk) - 1)  # consume less than offered: resume mid-item
        out += chunk[:take]
        q.consume(take)
    assert out == b"hello big wide world"
    assert q.close_pending and q.buffered == 0


def test_next_chunk_is_never_changed_by_later_use_of_the_queue(core):
    q = core.PushQueue()
    whole = b"0123456789"
    q.push(whole)
    first = q.next_chunk(100)
    assert first is whole  # a whole item is handed over as it is, no copy
    q.consume(4)
    rest = q.next_chunk(3)
    assert rest == b"456" and type(rest) is bytes
    q.consume(3)
    q.push(b"abc")
    q.push(bytearray(b"def"))
    kept = [q.next_chunk(100)]
    q.consume(len(kept[0]))
    while True:
        chunk = q.next_chunk(100)
        if chunk is None:
            break
        kept.append(chunk)
        q.consume(len(chunk))
    assert kept == [b"789", b"abc", b"def"]
    assert first == whole and rest == b"456"


def test_consume_validation(core):
    q = core.PushQueue()
    q.push(b"abc")
    q.push_producer(ListProducer([b"xyz"]))
    q.push(b"def")
    with pytest.raises(ValueError):
        q.consume(-1)
    with pytest.raises(ValueError):
        q.consume(7)  # more than buffered
    with pytest.raises(ValueError):
        q.consume(5)  # past the producer: cannot have been sent
    assert q.snapshot()[0] == b"abc" and q.buffered == 6
    q.consume(2)
    assert bytes(q.next_chunk(10)) == b"c"
    q.consume(1)
    assert bytes(q.next_chunk(10)) == b"xyz"
    with pytest.raises(ValueError):
        q.consume(6)  # the producer is still queued behind its output
    q.consume(3)
    assert bytes(q.next_chunk(10)) == b"def"  # the exhausted producer went on the way
    q.push_close()
    q.push(b"ghi")
    with pytest.raises(ValueError):
        q.consume(q.buffered)  # past the close sentinel
    q.consume(3)
    assert q.close_pending
    assert q.next_chunk(10) is None


def test_consume_then_send(core, pair):
    a, b = pair
    q = core.PushQueue()
    q.push(b"0123456789")
    q.push(b"abc")
    q.consume(4)
    received = bytearray()
    drain(q, a, b, received)
    assert received == b"456789abc"


# -- errors ---------------------------------------------------------------------------


def _send_until_error(q, a, refill):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not q:
            refill()
        try:
            q.send(a)
        except OSError as exc:
            return exc
        time.sleep(0.001)
    raise AssertionError("send() never reported the closed peer")


def test_send_to_closed_socketpair_raises(core):
    a, b = small_pair()
    try:
        b.close()
        q = core.PushQueue()
        q.push(b"x" * 10000)
        exc = _send_until_error(q, a, lambda: q.push(b"y" * 1000))
        assert isinstance(exc, (BrokenPipeError, ConnectionResetError)), exc
        assert exc.errno in (errno.EPIPE, errno.ECONNRESET)
    finally:
        a.close()


def test_send_to_closed_tcp_peer_raises(core):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.create_connection(listener.getsockname(), timeout=5)
        b, _ = listener.accept()
    finally:
        listener.close()
    try:
        a.setblocking(False)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        b.close()
        q = core.PushQueue()
        q.push(b"x" * 1000)
        exc = _send_until_error(q, a, lambda: q.push(b"y" * 1000))
        assert isinstance(exc, (BrokenPipeError, ConnectionResetError)), exc
    finally:
        a.close()


def test_send_on_closed_socket(core):
    a, b = socket.socketpair()
    b.close()
    a.close()
    q = core.PushQueue()
    q.push(b"data")
    with pytest.raises(OSError):
        q.send(a)
    assert q.buffered == 4


def test_would_block_returns_zero(core, pair):
    a, b = pair
    q = core.PushQueue()
    q.push(pattern(1 << 20))
    while q.send(a):
        pass
    # the buffer is full: nothing more goes, nothing is lost
    assert q.send(a) == 0
    assert q.buffered > 0
    received = bytearray()
    drain(q, a, b, received)
    assert bytes(received) == pattern(1 << 20)


# -- the twins agree ------------------------------------------------------------------------

queue_ops = st.one_of(
    st.tuples(
        st.sampled_from(
            [
                "bytes",
                "bytearray",
                "memoryview",
                "producer",
                "str_producer",
                "empty_producer",
                "close",
                "file",
                "memfile",
            ]
        ),
        st.lists(st.binary(max_size=3000), max_size=3),
    ),
    st.tuples(st.sampled_from(["send", "send", "send", "pop_close", "clear", "read"]), st.none()),
    st.tuples(st.just("next_chunk"), st.tuples(st.integers(0, 5000), st.integers(0, 6000))),
    st.tuples(st.just("consume"), st.integers(-1, 9000)),
)


def run_queue_twin(core, ops):
    a, b = small_pair()
    log = []
    try:
        q = core.PushQueue("latin-1")
        received = bytearray()
        for op, arg in ops:
            try:
                if op in ("bytes", "bytearray", "memoryview"):
                    enqueue(q, op, b"".join(arg))
                    result = None
                elif op == "producer":
                    q.push_producer(ListProducer(arg))
                    result = None
                elif op == "str_producer":
                    q.push_producer(ListProducer([x.decode("latin-1") for x in arg], empty=""))
                    result = None
                elif op == "empty_producer":
                    q.push_producer(ListProducer([]))
                    result = None
                elif op in ("file", "memfile"):
                    # a file range: skips the first byte, stops one short of the end
                    content = b"".join(arg)
                    f = tempfile.TemporaryFile() if op == "file" else io.BytesIO()
                    f.write(content)
                    f.flush()
                    q.push_file(f, min(1, len(content)), max(0, len(content) - 2))
                    result = None
                elif op == "close":
                    q.push_close()
                    result = None
                elif op == "send":
                    result = q.send(a)
                elif op == "pop_close":
                    result = q.pop_close()
                elif op == "clear":
                    result = q.clear()
                elif op == "read":
                    result = read_available(b, received)
                elif op == "next_chunk":
                    chunk = q.next_chunk(max(arg[0], 1))
                    result = None if chunk is None else bytes(chunk)
                    if chunk is not None:
                        q.consume(min(arg[1], len(chunk)))
                else:
                    result = q.consume(arg)
            except (TypeError, ValueError, RuntimeError) as exc:
                result = type(exc).__name__
            log.append((op, result, q.snapshot(), q.buffered, len(q), q.close_pending, q.stats, q.sendfile_calls))
        read_available(b, received)
        log.append(bytes(received))
        q.clear()  # closes the files still queued
    finally:
        a.close()
        b.close()
    return log


def _comparable(log):
    # producers are different objects in each run: compare their class only
    out = []
    for entry in log:
        if isinstance(entry, tuple):
            entry = (
                entry[:2]
                + (
                    [
                        x
                        if x is None or isinstance(x, bytes)
                        else ("memoryview", bytes(x))
                        if isinstance(x, memoryview)
                        else type(x).__name__
                        for x in entry[2]
                    ],
                )
                + entry[3:]
            )
        out.append(entry)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=st.lists(queue_ops, max_size=40))
def test_queue_twins_agree(both_cores, ops):
    c_core, py_core = both_cores
    assert _comparable(run_queue_twin(c_core, ops)) == _comparable(run_queue_twin(py_core, ops))
