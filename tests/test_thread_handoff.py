"""Calls from other threads are handed to the loop's thread.

``push``, ``push_with_producer``, ``push_file``, ``close_when_done`` and
``close`` on a channel whose map is being polled by another thread queue
the call for that thread (``call_soon_threadsafe``), which is woken at once:
the loop here waits with a 30 s timeout, so anything slower than a wakeup
would show.  Arguments are checked in the caller, which gets the error.
When no loop runs, the calls act directly, as in asyncore.
"""

from __future__ import annotations

import io
import socket
import threading
import time

import pytest

from asynframe import asynchat, asyncore

pytestmark = [pytest.mark.api_layer, pytest.mark.timeout(60)]

DEADLINE = 10.0


class Server(asynchat.async_chat):
    """Sends what other threads push; records the thread that unregisters it."""

    def __init__(self, sock, m):
        super().__init__(sock, m)
        self.set_terminator(b"\n")
        self.removed_in = []

    def frame_received(self, frame):
        pass

    def del_channel(self, map=None):
        self.removed_in.append(threading.get_ident())
        super().del_channel(map)


class PythonPushServer(Server):
    """The same with a push of its own (the Python path, not the compiled one)."""

    def push(self, data):
        super().push(data)


class Listener(asyncore.dispatcher):
    def __init__(self, m, factory):
        super().__init__(map=m)
        self.factory = factory
        self.accepted = []
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(4)
        self.port = self.socket.getsockname()[1]

    def handle_accepted(self, sock, addr):
        self.accepted.append(self.factory(sock, self._map))


class LoopThread:
    """asyncore.loop(timeout=30) on *m* in a thread, with a client connected."""

    def __init__(self, factory):
        self.map = {}
        self.listener = Listener(self.map, factory)
        self.errors = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.client = socket.create_connection(("127.0.0.1", self.listener.port), timeout=DEADLINE)
        self.thread.start()
        deadline = time.monotonic() + DEADLINE
        while not self.listener.accepted:
            assert time.monotonic() < deadline, "not accepted"
            time.sleep(0.01)
        self.channel = self.listener.accepted[0]
        # the loop now sleeps in its 30 s wait
        time.sleep(0.05)

    def _run(self):
        try:
            asyncore.loop(timeout=30.0, map=self.map)
        except BaseException as exc:
            self.errors.append(exc)

    def read_until_eof(self):
        got = bytearray()
        while True:
            data = self.client.recv(65536)
            if not data:
                return bytes(got)
            got += data

    def stop(self):
        self.listener.close()  # from this thread: handed over too
        self.client.close()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "the loop did not end"
        assert not self.errors, self.errors
        asyncore.close_all(self.map)


@pytest.mark.parametrize("factory", [Server, PythonPushServer], ids=["compiled-push", "python-push"])
def test_pushes_from_threads_arrive_in_order_and_close_when_done_ends_it(factory):
    loop = LoopThread(factory)
    try:
        chunks = [b"%05d|" % i for i in range(3000)]
        buffer = bytearray(b"mutable ")

        def worker():
            for chunk in chunks:
                loop.channel.push(chunk)
            loop.channel.push(buffer)
            buffer[:] = b"CHANGED "  # the push took a copy
            loop.channel.push_with_producer(asynchat.simple_producer(b"produced ", 4))
            loop.channel.push_file(io.BytesIO(b"0123456789"), 2, 5, close=False)
            loop.channel.close_when_done()

        start = time.monotonic()
        t = threading.Thread(target=worker)
        t.start()
        t.join(DEADLINE)
        got = loop.read_until_eof()
        elapsed = time.monotonic() - start
        assert got == b"".join(chunks) + b"mutable produced 23456"
        # woken, not waiting for the loop's 30 s timeout
        assert elapsed < DEADLINE
        loop_ident = loop.thread.ident
        assert loop.channel.removed_in == [loop_ident]
    finally:
        loop.stop()


def test_close_from_another_thread_runs_on_the_loop_thread():
    loop = LoopThread(Server)
    try:
        loop.channel.close()  # this (the main) thread is not the loop's
        assert loop.read_until_eof() == b""
        assert loop.channel.removed_in == [loop.thread.ident]
    finally:
        loop.stop()


def test_bad_arguments_fail_in_the_calling_thread_and_change_nothing():
    loop = LoopThread(Server)
    try:
        queue = loop.channel._af_queue
        with pytest.raises(TypeError, match="byte-ish"):
            loop.channel.push("text")
        with pytest.raises(TypeError, match="binary mode"):
            loop.channel.push_file(io.StringIO("text"))
        with pytest.raises(ValueError, match="offset"):
            loop.channel.push_file(io.BytesIO(b"x"), -1)
        loop.channel.push(b"still fine")
        loop.channel.close_when_done()
        assert loop.read_until_eof() == b"still fine"
        assert not queue
    finally:
        loop.stop()


def test_without_a_running_loop_calls_act_directly():
    m = {}
    listener = Listener(m, Server)
    client = socket.create_connection(("127.0.0.1", listener.port), timeout=DEADLINE)
    try:
        asyncore.loop(timeout=0.05, map=m, count=5)  # accepts; then no loop runs
        channel = listener.accepted[0]

        def worker():
            channel.push(b"direct")
            channel.close()

        t = threading.Thread(target=worker)
        t.start()
        t.join(DEADLINE)
        # done in the worker itself: sent and closed before it returned
        assert channel.removed_in == [t.ident]
        assert client.recv(100) == b"direct"
    finally:
        client.close()
        asyncore.close_all(m)
