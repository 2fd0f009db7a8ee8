"""Microbenchmarks with pytest-benchmark: ``pytest benchmarks/ --benchmark-only``.

Framing: the compiled core, the pure twin and the reference asynchat on
several line sizes and on length-prefixed (int terminator) frames.
Output: push-queue throughput for many small pushes, few large pushes and
producers, flushed into a socketpair drained by the benchmark itself.
Group names put the peers of one case side by side in the report.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Dict, List

import pytest
from core_speed import chat_runner, frames_runner, load_reference, make_reads

pytest.importorskip("pytest_benchmark")

from asynframe import _core_py  # noqa: E402
from asynframe import asynchat as af_asynchat  # noqa: E402

try:
    from asynframe import _core_c
except ImportError:  # pragma: no cover - pure-only install
    _core_c = None

CORES: Dict[str, Any] = {"py": _core_py}
if _core_c is not None:
    CORES["c"] = _core_c

TOTAL = 1 << 20


def _framing_variants() -> Dict[str, Any]:
    found: Dict[str, Any] = {}
    reference = load_reference()
    if reference is not None:
        found["reference"] = chat_runner(reference)
    for name, core in CORES.items():
        found["chat-" + name] = chat_runner(af_asynchat, lambda core=core: core.FrameScanner(core.MODE_COLLECT))
        found["frames-" + name] = frames_runner(core)
    return found


VARIANTS = _framing_variants()


@pytest.mark.parametrize("size", [16, 64, 1024])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lines(benchmark: Any, variant: str, size: int) -> None:
    benchmark.group = "lines-%d" % size
    reads = make_reads(size, TOTAL)
    frames = benchmark(VARIANTS[variant], reads)
    assert frames == TOTAL // size


def _length_prefixed(count: int, size: int) -> List[bytes]:
    body = b"y" * size
    stream = (struct.pack("!I", size) + body) * count
    return [stream[i : i + 65536] for i in range(0, len(stream), 65536)]


class _LengthPrefixed:
    """Header (int terminator 4), then body (int terminator from the header)."""

    def __init__(self, scanner: Any) -> None:
        self.scanner = scanner
        self.frames = 0
        self.in_header = True
        scanner.set_terminator(4)

    def frame_received(self, frame: bytes) -> None:
        if self.in_header:
            self.scanner.set_terminator(struct.unpack("!I", frame)[0])
        else:
            self.frames += 1
            self.scanner.set_terminator(4)
        self.in_header = not self.in_header


def _reference_length_prefixed(reference: Any):
    class Chat(reference.async_chat):
        collect_incoming_data = reference.async_chat._collect_incoming_data

        def __init__(self) -> None:
            reference.async_chat.__init__(self)
            self.set_terminator(4)
            self.in_header = True
            self.frames = 0
            self.reads: List[bytes] = []

        def recv(self, size: int) -> bytes:
            return self.reads.pop()

        def found_terminator(self) -> None:
            frame = self._get_data()
            if self.in_header:
                self.set_terminator(struct.unpack("!I", frame)[0])
            else:
                self.frames += 1
                self.set_terminator(4)
            self.in_header = not self.in_header

    def run(reads: List[bytes]) -> int:
        chan = Chat()
        chan.reads = list(reversed(reads))
        for _ in range(len(reads)):
            chan.handle_read()
        return chan.frames

    return run


def _int_variants() -> Dict[str, Any]:
    found: Dict[str, Any] = {}
    reference = load_reference()
    if reference is not None:
        found["reference"] = _reference_length_prefixed(reference)
    for name, core in CORES.items():

        def run(reads: List[bytes], core: Any = core) -> int:
            target = _LengthPrefixed(core.FrameScanner(core.MODE_FRAMES))
            for data in reads:
                target.scanner.feed(target, data)
            return target.frames

        found["frames-" + name] = run
    return found


INT_VARIANTS = _int_variants()


@pytest.mark.parametrize("size", [32, 4096])
@pytest.mark.parametrize("variant", sorted(INT_VARIANTS))
def test_length_prefixed(benchmark: Any, variant: str, size: int) -> None:
    benchmark.group = "length-prefixed-%d" % size
    count = TOTAL // (size + 4)
    reads = _length_prefixed(count, size)
    assert benchmark(INT_VARIANTS[variant], reads) == count


class _Producer:
    def __init__(self, chunk: bytes, count: int) -> None:
        self.chunk = chunk
        self.left = count

    def more(self) -> bytes:
        if self.left:
            self.left -= 1
            return self.chunk
        return b""


def _drain_through(queue: Any, total: int) -> int:
    sender, receiver = socket.socketpair()
    try:
        sender.setblocking(False)
        received = 0
        while received < total:
            queue.send(sender)
            while True:
                try:
                    got = receiver.recv_into(_SINK, len(_SINK), socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                received += got
                if got < len(_SINK):
                    break
        return received
    finally:
        sender.close()
        receiver.close()


_SINK = bytearray(1 << 20)
SHAPES = {
    "small-pushes": (b"z" * 32, 20000),
    "large-pushes": (b"z" * (256 << 10), 16),
}


@pytest.mark.parametrize("shape", sorted(SHAPES) + ["producers"])
@pytest.mark.parametrize("core_name", sorted(CORES))
def test_push_queue(benchmark: Any, core_name: str, shape: str) -> None:
    core = CORES[core_name]
    benchmark.group = "push-" + shape

    def run() -> int:
        queue = core.PushQueue()
        if shape == "producers":
            for _ in range(64):
                queue.push_producer(_Producer(b"p" * 1024, 64))
            total = 64 * 64 * 1024
        else:
            chunk, count = SHAPES[shape]
            for _ in range(count):
                queue.push(chunk)
            total = len(chunk) * count
        return _drain_through(queue, total)

    assert benchmark(run) > 0
