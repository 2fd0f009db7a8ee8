"""Fault injection: misbehaving peers and interrupted waits close only their own connection.

One async_chat echo server (``ack:<line>`` per line, ``big N`` answers N
pattern bytes, ``shutwr`` shuts its own write side then pushes) runs in a
thread on a private map, on the select and the poll path.  Each test injects
one fault: an RST (SO_LINGER 0) mid-frame and mid-send, EPIPE on send,
ECONNRESET on recv, a peer reading one byte a second, a peer that
half-closes, and signals interrupting the loop's wait (EINTR).  Every time a
second client on the same loop keeps being answered, the faulty channel
closes without ``handle_error``, and every frame acknowledged before the
fault was received whole.

Both cores: the file is marked ``api_layer`` (tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time

import pytest

from asynframe import asynchat, asyncore

from support import both_poll_modes

HERE = os.path.abspath(__file__)
pytestmark = [pytest.mark.api_layer, pytest.mark.timeout(60)]

PATTERN = bytes(range(256)) * 4096  # 1 MiB


def pattern(n):
    whole, rest = divmod(n, len(PATTERN))
    return PATTERN * whole + PATTERN[:rest]


class Echo(asynchat.async_chat):
    def __init__(self, sock, m, server):
        super().__init__(sock, m)
        self.server = server
        self.set_terminator(b"\n")
        self.frames = []
        self.closes = 0
        self.errors = []

    collect_incoming_data = asynchat.async_chat._collect_incoming_data

    def found_terminator(self):
        line = self._get_data()
        self.frames.append(line)
        if line.startswith(b"big "):
            self.push(pattern(int(line[4:])))
        elif line == b"shutwr":
            self.socket.shutdown(socket.SHUT_WR)
            self.push(b"after shutdown\n")
        else:
            self.push(b"ack:" + line + b"\n")

    def handle_error(self):
        import sys

        self.errors.append(sys.exc_info()[1])
        super().handle_error()

    def handle_close(self):
        self.closes += 1
        self.close()


class Server(asyncore.dispatcher):
    def __init__(self, m):
        super().__init__(map=m)
        self.channels = []
        self.create_socket()
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(128)
        self.port = self.socket.getsockname()[1]

    def handle_accepted(self, sock, addr):
        self.channels.append(Echo(sock, self._map, self))


class LoopThread:
    """The server's loop in a thread, stopped and emptied at the end."""

    def __init__(self, use_poll):
        self.map = {}
        self.server = Server(self.map)
        self.use_poll = use_poll
        self.stop = threading.Event()
        self.failure = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        step = asyncore.poll2 if self.use_poll else asyncore.poll
        try:
            while not self.stop.is_set():
                step(0.01, self.map)
        except BaseException as exc:  # reported by close()
            self.failure = exc

    def close(self):
        self.stop.set()
        self.thread.join(10)
        asyncore.close_all(self.map, ignore_all=True)
        assert self.failure is None, "the loop itself failed: %r" % (self.failure,)

    def channel_for(self, client):
        """The server channel of *client* (waits until accepted)."""
        port = client.getsockname()[1]
        wait_for(lambda: any(c.addr and c.addr[1] == port for c in self.server.channels))
        return [c for c in self.server.channels if c.addr and c.addr[1] == port][0]


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.fixture(params=[False, True], ids=["select", "poll"])
def loop(request):
    lt = LoopThread(request.param)
    try:
        yield lt
    finally:
        lt.close()


def connect(lt):
    c = socket.create_connection(("127.0.0.1", lt.server.port), timeout=10)
    return c


def read_exactly(sock, n):
    out = bytearray()
    while len(out) < n:
        got = sock.recv(min(1 << 20, n - len(out)))
        if not got:
            break
        out += got
    return bytes(out)


def exchange(sock, text):
    sock.sendall(text + b"\n")
    want = b"ack:" + text + b"\n"
    assert read_exactly(sock, len(want)) == want


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def assert_closed_cleanly(chan):
    # handle_close counts before it calls close(), on the loop's thread: wait
    # until the channel is out of the map too, not just for the count
    wait_for(lambda: chan.closes >= 1 and chan._fileno is None)
    assert chan.errors == []


def test_reset_mid_frame(loop):
    other, bad = connect(loop), connect(loop)
    try:
        exchange(other, b"o1")
        exchange(bad, b"acked")
        chan = loop.channel_for(bad)
        bad.sendall(b"half a fra")
        wait_for(lambda: chan.ac_in_buffer or chan.incoming)
        reset(bad)
        assert_closed_cleanly(chan)
        assert chan.frames == [b"acked"]
        exchange(other, b"o2")
    finally:
        other.close()
        bad.close()


def test_reset_mid_send(loop):
    other, bad = connect(loop), connect(loop)
    try:
        bad.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        bad.sendall(b"big 20000000\n")
        assert read_exactly(bad, 100000) == pattern(100000)
        chan = loop.channel_for(bad)
        wait_for(lambda: chan._af_queue.buffered > 0)
        reset(bad)
        assert_closed_cleanly(chan)
        exchange(other, b"still here")
        # a full big answer still arrives whole on the healthy connection
        other.sendall(b"big 3000000\n")
        assert read_exactly(other, 3000000) == pattern(3000000)
    finally:
        other.close()
        bad.close()


def test_epipe_on_send(loop):
    other, bad = connect(loop), connect(loop)
    try:
        exchange(bad, b"first")
        chan = loop.channel_for(bad)
        # the server shuts its own write side, then pushes: send() fails with EPIPE
        bad.sendall(b"shutwr\n")
        assert_closed_cleanly(chan)
        assert chan.frames == [b"first", b"shutwr"]
        assert bad.recv(100) == b""
        exchange(other, b"fine")
    finally:
        other.close()
        bad.close()


def test_raw_socket_sees_the_faults():
    """The conditions the other tests create are the errnos they are named after."""
    ls = socket.create_server(("127.0.0.1", 0))
    try:
        c = socket.create_connection(ls.getsockname())
        s, _ = ls.accept()
        reset(c)
        time.sleep(0.05)
        with pytest.raises(ConnectionResetError):
            s.recv(10)
        s.close()
        c = socket.create_connection(ls.getsockname())
        s, _ = ls.accept()
        s.shutdown(socket.SHUT_WR)
        with pytest.raises(BrokenPipeError):
            s.send(b"x")
        s.close()
        c.close()
    finally:
        ls.close()


@both_poll_modes
def test_econnreset_on_recv(use_poll):
    """RST before any data: the channel's next read gets ECONNRESET and closes it."""
    m = {}
    server = Server(m)
    step = asyncore.poll2 if use_poll else asyncore.poll
    try:
        other, bad = (socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2))
        deadline = time.monotonic() + 10
        while len(server.channels) < 2:
            assert time.monotonic() < deadline
            step(0.01, m)
        port = bad.getsockname()[1]
        chan = [c for c in server.channels if c.addr[1] == port][0]
        reset(bad)
        time.sleep(0.05)
        step(0.5, m)
        assert chan.closes >= 1 and chan.errors == []
        other.sendall(b"ok\n")
        other.setblocking(False)
        got = b""
        while got != b"ack:ok\n":
            assert time.monotonic() < deadline
            step(0.01, m)
            try:
                got += other.recv(100)
            except BlockingIOError:
                pass
        other.close()
    finally:
        asyncore.close_all(m, ignore_all=True)


def test_slow_reader(loop):
    """A peer reading one byte a second stalls only itself, and loses nothing."""
    other, slow = connect(loop), connect(loop)
    try:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        size = 16 * 1024 * 1024
        slow.sendall(b"big %d\n" % size)
        received = bytearray()
        for second in range(3):
            received += slow.recv(1)
            # meanwhile the other connection is served promptly
            start = time.monotonic()
            for i in range(20):
                exchange(other, b"tick %d %d" % (second, i))
            assert time.monotonic() - start < 5
            time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))
        chan = loop.channel_for(slow)
        assert chan._af_queue.buffered > 0  # the server is still holding the rest
        received += read_exactly(slow, size - len(received))
        assert bytes(received) == pattern(size)
        assert chan.errors == [] and chan.closes == 0
    finally:
        other.close()
        slow.close()


def test_half_close(loop):
    other, half = connect(loop), connect(loop)
    try:
        exchange(half, b"h1")
        chan = loop.channel_for(half)
        half.sendall(b"h2\n")
        half.shutdown(socket.SHUT_WR)
        # the acknowledgement of the frame before the EOF still arrives
        assert read_exactly(half, 100) == b"ack:h2\n"
        assert_closed_cleanly(chan)
        assert chan.frames == [b"h1", b"h2"]
        exchange(other, b"after")
    finally:
        other.close()
        half.close()


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
@both_poll_modes
def test_signals_during_the_wait(use_poll):
    """A handler firing while the loop blocks (EINTR) does not disturb it."""
    m = {}
    server = Server(m)
    fired = []
    old = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    result = {}

    def client():
        time.sleep(0.4)  # the loop is blocked in its wait by now
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as c:
            for i in range(5):
                c.sendall(b"x%d\n" % i)
                result[i] = read_exactly(c, 7)
                time.sleep(0.05)

    t = threading.Thread(target=client)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
        t.start()
        deadline = time.monotonic() + 15
        while len(result) < 5:
            assert time.monotonic() < deadline
            asyncore.loop(timeout=2.0, use_poll=use_poll, map=m, count=1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
        t.join(10)
        asyncore.close_all(m, ignore_all=True)
    assert len(fired) > 10
    assert result == {i: b"ack:x%d\n" % i for i in range(5)}


@both_poll_modes
def test_descriptor_reused_within_one_iteration(use_poll):
    """Connect, exchange, close, repeat: a new channel often gets the number
    of one closed in the same iteration, and must still be served."""
    m = {}
    server = Server(m)
    step = asyncore.poll2 if use_poll else asyncore.poll
    try:
        for n in range(60):
            c = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            c.sendall(b"n%d\n" % n)
            c.setblocking(False)
            got = b""
            deadline = time.monotonic() + 5
            while not got.endswith(b"\n"):
                assert time.monotonic() < deadline, "connection %d was never served" % n
                step(0.01, m)
                try:
                    got += c.recv(100)
                except BlockingIOError:
                    pass
            assert got == b"ack:n%d\n" % n
            c.close()
    finally:
        asyncore.close_all(m, ignore_all=True)
