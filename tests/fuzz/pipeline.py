"""One fuzz run of the framing core as a server uses it, with its invariants.

Shared by ``tests/test_fuzz_core.py`` (hypothesis, bounded, in the test
suite) and ``tests/fuzz/fuzz_core.py`` (atheris, open-ended).  The model
that checks the core here is independent of both twins: byte counts,
``bytes.split`` and the concatenation of what was queued.
"""

from __future__ import annotations

import socket
from typing import Any, List, Tuple

OPS_HELP = {
    "feed": "(kind, data): feed data as bytes/bytearray/memoryview or through get_buffer()",
    "term": "(terminator): set_terminator between reads (bytes, int or None)",
    "max_frame": "(limit): set max_frame (0: no limit)",
    "stop_after": "(n): the callback of the n-th next frame calls stop()",
    "process": "(): scan what stop() left pending",
    "send": "(): one PushQueue.send() to the small socketpair",
    "close": "(): push_close()",
    "pop_close": "(): pop_close()",
    "read": "(n): the peer reads up to n bytes",
    "push": "(data): push() bytes directly",
    "producer": "(chunks): push_producer() of a producer returning chunks",
    "partial": "(n): next_chunk(n), send half of it, consume() what went",
}


class Producer:
    """Hands out *chunks*, then b""; counts what was pulled."""

    def __init__(self, chunks: List[bytes], model: "Model") -> None:
        self.chunks = [c for c in chunks if c]
        self.model = model

    def more(self) -> bytes:
        if not self.chunks:
            return b""
        data = self.chunks.pop(0)
        self.model.pulled += len(data)
        return data


class Model:
    def __init__(self) -> None:
        self.fed = 0
        self.delivered = 0
        self.consumed = 0
        self.dropped = 0
        self.frames: List[bytes] = []
        self.too_large = 0
        # the queue side
        self.expected: List[bytes] = []
        self.pushed = 0
        self.pulled = 0
        self.sent = 0


class Target:
    def __init__(self, core: Any, mode: int, scanner: Any, queue: Any, model: Model, log: List[Any]) -> None:
        self.core = core
        self.mode = mode
        self.scanner = scanner
        self.queue = queue
        self.model = model
        self.log = log
        self.cur: List[bytes] = []
        self.stop_after = -1
        self.stopped = False

    def collect_incoming_data(self, data: Any) -> None:
        data = bytes(data)
        self.log.append(("data", data))
        self.cur.append(data)
        self.model.delivered += len(data)

    def found_terminator(self) -> None:
        if self.mode == self.core.MODE_COLLECT:
            frame = self.scanner.get_data()
            self.model.delivered += len(frame)
        else:
            frame = b"".join(self.cur)
            self.cur = []
        self._frame(frame)

    def frame_received(self, frame: Any) -> None:
        frame = bytes(frame)
        self.model.delivered += len(frame)
        self._frame(frame)

    def frame_too_large(self, size: int) -> None:
        self.log.append(("too_large", size))
        self.model.too_large += 1
        self.cur = []

    def _frame(self, frame: bytes) -> None:
        term = self.scanner.terminator
        if isinstance(term, bytes):
            self.model.consumed += len(term)
        self.log.append(("frame", frame, term))
        self.model.frames.append(frame)
        reply = frame + b"|"
        self.queue.push(reply)
        self.model.pushed += len(reply)
        self.model.expected.append(reply)
        if self.stop_after == 0:
            self.scanner.stop()
            self.stopped = True
        self.stop_after -= 1


def _held(core: Any, scanner: Any, target: Target) -> int:
    held = len(scanner.pending) + sum(len(x) for x in scanner.incoming)
    return held


def _small_pair() -> Tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
    return a, b


def _read(b: socket.socket, n: int, received: bytearray) -> int:
    got = 0
    while got < n:
        try:
            data = b.recv(min(65536, n - got))
        except BlockingIOError:
            break
        if not data:
            break
        received += data
        got += len(data)
    return got


class _Run:
    """One pipeline run: the core's objects, the model of what must happen, the socket pair."""

    def __init__(self, core: Any, mode: int, term: Any) -> None:
        self.core = core
        self.mode = mode
        self.scanner = core.FrameScanner(mode)
        self.scanner.set_terminator(term)
        self.queue = core.PushQueue()
        self.model = Model()
        self.log: List[Any] = []
        self.target = Target(core, mode, self.scanner, self.queue, self.model, self.log)
        self.a, self.b = _small_pair()
        self.received = bytearray()
        self.stream = bytearray()

    def feed(self, how: Any, data: bytes) -> None:
        scanner, target = self.scanner, self.target
        self.model.fed += len(data)
        self.stream += data
        if how == "buffer" and data:
            buf = scanner.get_buffer(len(data))
            buf[: len(data)] = data
            del buf
            scanner.buffer_updated(target, len(data))
        elif how == "bytearray":
            scanner.feed(target, bytearray(data))
        elif how == "memoryview":
            scanner.feed(target, memoryview(b"!" + data + b"!")[1:-1])
        else:
            scanner.feed(target, data)

    def partial_send(self, size: int) -> Any:
        chunk = self.queue.next_chunk(size)
        if chunk is None or not len(chunk):
            return None
        try:
            result = self.a.send(chunk[: max(1, len(chunk) // 2)])
        except BlockingIOError:
            result = 0
        self.queue.consume(result)
        self.model.sent += result
        return result

    def apply(self, op: str, arg: Any, data: Any) -> Any:
        scanner, queue, model = self.scanner, self.queue, self.model
        if op == "feed":
            self.feed(arg, data)
        elif op == "term":
            scanner.set_terminator(arg)
        elif op == "max_frame":
            scanner.max_frame = arg
        elif op == "stop_after":
            self.target.stop_after = arg
        elif op == "process":
            scanner.process(self.target)
        elif op == "send":
            sent = queue.send(self.a)
            model.sent += sent
            return sent
        elif op == "close":
            queue.push_close()
            model.expected.append(b"")
        elif op == "pop_close":
            return queue.pop_close()
        elif op == "read":
            return _read(self.b, arg, self.received)
        elif op == "push":
            queue.push(arg)
            model.pushed += len(arg)
            model.expected.append(arg)
        elif op == "producer":
            queue.push_producer(Producer(arg, model))
            model.expected.append(b"".join(arg))
        elif op == "partial":
            return self.partial_send(arg)
        else:
            raise ValueError("unknown op %r" % (op,))
        return None

    def check(self, op: str, data: Any, too_large_before: int) -> None:
        scanner, queue, model = self.scanner, self.queue, self.model
        held = _held(self.core, scanner, self.target)
        unexplained = model.fed - model.delivered - model.consumed - held
        # bytes only ever vanish when max_frame dropped a frame
        if model.too_large == too_large_before:
            assert unexplained == model.dropped, (op, unexplained, model.dropped)
        else:
            assert unexplained >= model.dropped, (op, unexplained, model.dropped)
            model.dropped = unexplained
        limit = scanner.max_frame
        if op == "feed" and data and limit and not self.target.stopped:
            partial = held + (sum(len(c) for c in self.target.cur) if self.mode == 0 else 0)
            assert partial <= limit + len(data), (partial, limit, len(data))
        assert queue.buffered == model.pushed + model.pulled - model.sent, (
            queue.buffered,
            model.pushed,
            model.pulled,
            model.sent,
        )
        assert bytes(self.received) == b"".join(model.expected)[: len(self.received)]

    def drain(self) -> None:
        # everything queued reaches the peer, in order, exactly once
        queue = self.queue
        for _ in range(100000):
            if not queue:
                break
            if queue.close_pending:
                queue.pop_close()
                continue
            self.model.sent += queue.send(self.a)
            _read(self.b, 1 << 20, self.received)
        else:
            raise AssertionError("the queue never drained")
        while _read(self.b, 1 << 20, self.received):
            pass
        assert bytes(self.received) == b"".join(self.model.expected)
        assert queue.buffered == 0


def run_pipeline(core: Any, mode: int, term: Any, seq: List[Tuple[Any, Any, Any]]) -> List[Any]:
    """Run *seq* (see OPS_HELP) on *core*; assert the invariants; return the log."""
    run = _Run(core, mode, term)
    scanner, queue, log = run.scanner, run.queue, run.log
    fixed = isinstance(term, bytes) and all(op[0] not in ("term", "max_frame", "stop_after") for op in seq)
    try:
        for op, arg, data in seq:
            run.target.stopped = False
            too_large_before = run.model.too_large
            result = run.apply(op, arg, data)
            run.check(op, data, too_large_before)
            log.append(
                (
                    op,
                    result,
                    scanner.pending,
                    list(scanner.incoming),
                    scanner.terminator,
                    queue.buffered,
                    len(queue),
                    queue.close_pending,
                )
            )
        if fixed:
            parts = bytes(run.stream).split(term)
            assert run.model.frames == parts[:-1]
            rest = b"".join(run.target.cur) + b"".join(scanner.incoming) + scanner.pending
            assert rest == parts[-1]
        run.drain()
        log.append(("received", bytes(run.received)))
    finally:
        run.a.close()
        run.b.close()
    return log
