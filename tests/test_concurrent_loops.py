"""Several event loops in several threads, each with its own socket map.

docs/design.md promises that loops in different threads share nothing and
take no locks: every piece of per-event state lives on the loop's own
objects.  Each thread here runs ``asyncore.loop(map=own_map)`` serving
async_chat line echo to clients that pipeline random lines in random-sized
writes; every client must read back exactly what it sent.  The three
delivery modes (legacy callbacks, the stock ``_collect_incoming_data`` /
``_get_data`` pair, ``frame_received``) and both pollers are covered, since
each takes its own route through the compiled loop.

With a GIL the threads interleave between bytecodes (tiny switch interval);
on free-threaded CPython with ``PYTHON_GIL=0`` they really run at once, which
is the case that crashed when the compiled loop kept its state in module
globals (within a second of round trips; the pipelined part alone did not
show it).  .ci/run runs this file on a free-threaded build.
"""

from __future__ import annotations

import random
import socket
import sys
import sysconfig
import threading
import time

import pytest

from asynframe import asynchat, asyncore

pytestmark = [pytest.mark.api_layer, pytest.mark.timeout(180), pytest.mark.usefixtures("fast_switching")]

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
LOOPS = 4
CLIENTS_PER_LOOP = 2
LINES_PER_CLIENT = 400
ROUND_TRIPS = 1500
DEADLINE = 60.0


class CallbackEcho(asynchat.async_chat):
    """asynchat's two callbacks, written by hand as legacy servers do."""

    def __init__(self, sock, map):
        super().__init__(sock, map=map)
        self.set_terminator(b"\n")
        self.buffer = []

    def collect_incoming_data(self, data):
        self.buffer.append(data)

    def found_terminator(self):
        line = b"".join(self.buffer)
        self.buffer = []
        self.push(line + b"\n")


class StockPairEcho(asynchat.async_chat):
    """The stdlib helper pair: the core collects, found_terminator takes."""

    def __init__(self, sock, map):
        super().__init__(sock, map=map)
        self.set_terminator(b"\n")

    collect_incoming_data = asynchat.async_chat._collect_incoming_data

    def found_terminator(self):
        self.push(self._get_data() + b"\n")


class FrameEcho(asynchat.async_chat):
    """One call per frame."""

    def __init__(self, sock, map):
        super().__init__(sock, map=map)
        self.set_terminator(b"\n")

    def frame_received(self, frame):
        self.push(frame + b"\n")


class Listener(asyncore.dispatcher):
    def __init__(self, handler, map):
        super().__init__(map=map)
        self.handler = handler
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(64)
        self.port = self.socket.getsockname()[1]

    def handle_accepted(self, sock, addr):
        self.handler(sock, self._map)


def serve(map, stop, use_poll, errors):
    try:
        while map and not stop.is_set():
            asyncore.loop(timeout=0.02, use_poll=use_poll, map=map, count=10)
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)
    finally:
        asyncore.close_all(map)


def random_lines(seed):
    rng = random.Random(seed)
    lines = []
    for _ in range(LINES_PER_CLIENT):
        size = rng.choice((0, 1, 7, 40, 300, 2000))
        lines.append(bytes(rng.randrange(256) for _ in range(size)).replace(b"\n", b"x") + b"\n")
    return lines


def client(port, seed, results, errors):
    """Request/response first, then pipelined lines in random-sized writes.

    The round trips keep every loop thread in and out of dispatch thousands
    of times a second (the pattern that crashed when loops shared state);
    the pipelined part checks the bytes.
    """
    try:
        rng = random.Random(seed)
        payload = b"".join(random_lines(seed))
        received = bytearray()
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
            replies = sock.makefile("rb")
            for n in range(ROUND_TRIPS):
                request = b"%d ping %d\n" % (seed, n)
                sock.sendall(request)
                reply = replies.readline()
                if reply != request:
                    raise AssertionError(f"client {seed}: round trip {n} got {reply!r}")
            replies.close()
            sock.setblocking(False)
            sent = 0
            deadline = time.monotonic() + DEADLINE
            while len(received) < len(payload):
                if time.monotonic() > deadline:
                    raise AssertionError(f"client {seed}: {len(received)} of {len(payload)} bytes back by the deadline")
                if sent < len(payload):
                    chunk = payload[sent : sent + rng.randrange(1, 9000)]
                    try:
                        sent += sock.send(chunk)
                    except BlockingIOError:
                        pass
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    if sent >= len(payload):
                        time.sleep(0.001)
                    continue
                if not data:
                    raise AssertionError(f"client {seed}: server closed early")
                received += data
        results[seed] = (payload, bytes(received))
    except BaseException as exc:
        errors.append(exc)


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
@pytest.mark.parametrize("handler", [CallbackEcho, StockPairEcho, FrameEcho], ids=["callbacks", "stock-pair", "frames"])
def test_loops_in_threads_echo_byte_for_byte(handler, use_poll):
    stop = threading.Event()
    errors: list = []
    maps = [{} for _ in range(LOOPS)]
    listeners = [Listener(handler, m) for m in maps]
    loop_threads = [threading.Thread(target=serve, args=(m, stop, use_poll, errors), daemon=True) for m in maps]
    results: dict = {}
    client_threads = [
        threading.Thread(target=client, args=(listener.port, loop * 100 + i, results, errors), daemon=True)
        for loop, listener in enumerate(listeners)
        for i in range(CLIENTS_PER_LOOP)
    ]
    try:
        for t in loop_threads + client_threads:
            t.start()
        for t in client_threads:
            t.join(DEADLINE + 10)
        assert not any(t.is_alive() for t in client_threads), "a client is stuck"
    finally:
        stop.set()
        for t in loop_threads:
            t.join(10)
    assert not any(t.is_alive() for t in loop_threads), "a loop did not stop"
    assert not errors, errors
    assert len(results) == LOOPS * CLIENTS_PER_LOOP
    for seed, (sent, received) in sorted(results.items()):
        assert received == sent, f"client {seed}: echo differs from what it sent"
    assert all(not m for m in maps), "close_all left channels in a map"


@pytest.mark.skipif(not FREE_THREADED, reason="needs a free-threaded CPython")
def test_the_gil_stays_off_while_loops_run():
    # the GIL can be re-enabled at run time by an extension that is not
    # declared free-threading compatible; after the loops ran it is still off
    # unless the user asked for it
    import os

    if os.environ.get("PYTHON_GIL") == "1":
        pytest.skip("GIL forced on by PYTHON_GIL=1")
    assert not sys._is_gil_enabled()
