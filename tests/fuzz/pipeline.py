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


def run_pipeline(core: Any, mode: int, term: Any, seq: List[Tuple[Any, Any, Any]]) -> List[Any]:
    """Run *seq* (see OPS_HELP) on *core*; assert the invariants; return the log."""
    scanner = core.FrameScanner(mode)
    scanner.set_terminator(term)
    queue = core.PushQueue()
    model = Model()
    log: List[Any] = []
    target = Target(core, mode, scanner, queue, model, log)
    a, b = _small_pair()
    received = bytearray()
    stream = bytearray()
    fixed = isinstance(term, bytes) and all(op[0] not in ("term", "max_frame", "stop_after") for op in seq)
    try:
        for op, arg, data in seq:
            result: Any = None
            target.stopped = False
            too_large_before = model.too_large
            if op == "feed":
                model.fed += len(data)
                stream += data
                if arg == "buffer" and data:
                    buf = scanner.get_buffer(len(data))
                    buf[: len(data)] = data
                    del buf
                    scanner.buffer_updated(target, len(data))
                elif arg == "bytearray":
                    scanner.feed(target, bytearray(data))
                elif arg == "memoryview":
                    scanner.feed(target, memoryview(b"!" + data + b"!")[1:-1])
                else:
                    scanner.feed(target, data)
            elif op == "term":
                scanner.set_terminator(arg)
            elif op == "max_frame":
                scanner.max_frame = arg
            elif op == "stop_after":
                target.stop_after = arg
            elif op == "process":
                scanner.process(target)
            elif op == "send":
                result = queue.send(a)
                model.sent += result
            elif op == "close":
                queue.push_close()
                model.expected.append(b"")
            elif op == "pop_close":
                result = queue.pop_close()
            elif op == "read":
                result = _read(b, arg, received)
            elif op == "push":
                queue.push(arg)
                model.pushed += len(arg)
                model.expected.append(arg)
            elif op == "producer":
                queue.push_producer(Producer(arg, model))
                model.expected.append(b"".join(arg))
            elif op == "partial":
                chunk = queue.next_chunk(arg)
                if chunk is not None and len(chunk):
                    try:
                        result = a.send(chunk[: max(1, len(chunk) // 2)])
                    except BlockingIOError:
                        result = 0
                    queue.consume(result)
                    model.sent += result
                    del chunk
            else:
                raise ValueError("unknown op %r" % (op,))

            # -- invariants ------------------------------------------------------
            held = _held(core, scanner, target)
            unexplained = model.fed - model.delivered - model.consumed - held
            # bytes only ever vanish when max_frame dropped a frame
            if model.too_large == too_large_before:
                assert unexplained == model.dropped, (op, unexplained, model.dropped)
            else:
                assert unexplained >= model.dropped, (op, unexplained, model.dropped)
                model.dropped = unexplained
            limit = scanner.max_frame
            if op == "feed" and data and limit and not target.stopped:
                partial = held + (sum(len(c) for c in target.cur) if mode == 0 else 0)
                assert partial <= limit + len(data), (partial, limit, len(data))
            assert queue.buffered == model.pushed + model.pulled - model.sent, (
                queue.buffered,
                model.pushed,
                model.pulled,
                model.sent,
            )
            assert bytes(received) == b"".join(model.expected)[: len(received)]
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
            parts = bytes(stream).split(term)
            assert model.frames == parts[:-1]
            rest = b"".join(target.cur) + b"".join(scanner.incoming) + scanner.pending
            assert rest == parts[-1]

        # drain: everything queued reaches the peer, in order, exactly once
        for _ in range(100000):
            if not queue:
                break
            if queue.close_pending:
                queue.pop_close()
                continue
            model.sent += queue.send(a)
            _read(b, 1 << 20, received)
        else:
            raise AssertionError("the queue never drained")
        while _read(b, 1 << 20, received):
            pass
        assert bytes(received) == b"".join(model.expected)
        assert queue.buffered == 0
        log.append(("received", bytes(received)))
    finally:
        a.close()
        b.close()
    return log
