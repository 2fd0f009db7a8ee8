"""The compiled core's objects under concurrent use from several threads.

On free-threaded CPython (3.14t+) the extension must not turn the GIL back
on, and each method of a shared ``PushQueue``/``FrameScanner`` runs under the
object's critical section, so concurrent calls lose no update and never
touch a buffer another thread is moving (docs/design.md, "Free-threaded
CPython").  With a GIL the same tests run with a tiny switch interval, which
interleaves the threads between (not inside) the calls.

The pure twin takes no locks (one thread per connection is its rule), so
these tests are for the compiled core only.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import threading

import pytest

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fast_switching")]

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
THREADS = 4


@pytest.fixture
def compiled(both_cores):
    return both_cores[0]


def run_threads(target, count=THREADS):
    barrier = threading.Barrier(count)
    errors = []

    def body(index):
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    assert not errors, errors


@pytest.mark.skipif(not FREE_THREADED, reason="needs a free-threaded CPython")
def test_import_keeps_the_gil_disabled():
    code = "import sys, asynframe._core_c, asynframe; print(sys._is_gil_enabled())"
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHON_GIL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", "importing the compiled core enabled the GIL:\n" + out.stderr


def test_concurrent_pushes_are_all_queued(compiled):
    queue = compiled.PushQueue()
    per_thread = 3000

    def pusher(index):
        data = bytes([65 + index]) * (index + 1)
        for i in range(per_thread):
            queue.push(data)
            if i % 100 == 0:
                len(queue), queue.snapshot(), queue.buffered

    run_threads(pusher)
    expected = sum((i + 1) * per_thread for i in range(THREADS))
    assert len(queue) == THREADS * per_thread
    assert queue.buffered == expected
    drained = 0
    while True:
        chunk = queue.next_chunk(1 << 16)
        if chunk is None:
            break
        drained += len(chunk)
        queue.consume(len(chunk))
    assert drained == expected and queue.buffered == 0 and not queue


def test_concurrent_push_and_drain_lose_no_byte(compiled):
    queue = compiled.PushQueue()
    per_thread = 2000
    pushers_left = [THREADS - 1]
    lock = threading.Lock()
    drained = []

    def worker(index):
        if index == 0:  # one thread drains, as a loop flushing the queue
            total = 0
            while True:
                with lock:
                    finished = pushers_left[0] == 0
                chunk = queue.next_chunk(4096)
                if chunk is None:
                    if finished:
                        break
                    continue
                queue.consume(len(chunk))
                total += len(chunk)
            drained.append(total)
        else:
            for _ in range(per_thread):
                queue.push(b"y" * 7)
            with lock:
                pushers_left[0] -= 1

    run_threads(worker)
    assert drained == [(THREADS - 1) * per_thread * 7]
    assert queue.buffered == 0 and not queue


def test_readers_alongside_a_feeder(compiled):
    scanner = compiled.FrameScanner(compiled.MODE_FRAMES)
    scanner.set_terminator(b"\r\n")
    frames = []
    stop = threading.Event()

    class Target:
        def frame_received(self, frame):
            frames.append(frame)

    target = Target()
    data = b"abc\r\nde" + b"f\r\n"

    def worker(index):
        if index == 0:
            try:
                for _ in range(5000):
                    scanner.feed(target, data)
            finally:
                stop.set()
        else:
            while not stop.is_set():
                scanner.pending, scanner.terminator, scanner.incoming, scanner.max_frame

    run_threads(worker)
    assert frames == [b"abc", b"def"] * 5000
    assert scanner.pending == b""
