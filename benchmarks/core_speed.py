"""Parse-only speed of the framing core: frames/s and MB/s, no sockets.

Drives asynchat-style ``handle_read`` with pre-built input (64 KiB reads of
"\\r\\n"-terminated lines) for:

* ``reference``: the stdlib ``asynchat`` (3.11) or the ``pyasynchat`` backport;
* ``chat-c`` / ``chat-py``: ``asynframe.asynchat.async_chat``, same subclass
  code, on the compiled core and on the pure twin;
* ``frames-c`` / ``frames-py``: the scanner's one-callback mode
  (``frame_received``), the lowest per-frame cost the core offers.

Every variant runs in this one process, repeated; medians are reported with
the min-max spread and the ratio to the reference.  ``--json`` writes the
results machine-readable.

    python benchmarks/core_speed.py [--sizes 16,64,1024] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional

READ_SIZE = 65536


def make_reads(line_size: int, total: int) -> List[bytes]:
    line = b"x" * (line_size - 2) + b"\r\n"
    stream = line * (total // line_size)
    return [stream[i : i + READ_SIZE] for i in range(0, len(stream), READ_SIZE)]


def load_reference() -> Optional[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import asynchat  # stdlib <= 3.11, or the pyasynchat backport
        except ImportError:
            return None
    if getattr(asynchat, "__asynframe__", False):
        return None
    return asynchat


def chat_runner(asynchat_module: Any, scanner_factory: Optional[Callable[[], Any]] = None):
    """A handle_read driver for an async_chat class written the usual way."""

    class LineCounter(asynchat_module.async_chat):
        collect_incoming_data = asynchat_module.async_chat._collect_incoming_data

        def __init__(self) -> None:
            asynchat_module.async_chat.__init__(self)
            self.set_terminator(b"\r\n")
            self.frames = 0
            self.reads: List[bytes] = []

        def recv(self, size: int) -> bytes:
            return self.reads.pop()

        def found_terminator(self) -> None:
            self._get_data()
            self.frames += 1

    def run(reads: List[bytes]) -> int:
        chan = LineCounter()
        if scanner_factory is not None:
            chan._af_scanner = scanner = scanner_factory()
            chan._get_data = scanner.get_data
            chan.set_terminator(b"\r\n")
        chan.reads = list(reversed(reads))
        handle_read = chan.handle_read
        for _ in range(len(reads)):
            handle_read()
        return chan.frames

    return run


def frames_runner(core: Any):
    class Target:
        __slots__ = ("frames",)

        def __init__(self) -> None:
            self.frames = 0

        def frame_received(self, frame: bytes) -> None:
            self.frames += 1

    def run(reads: List[bytes]) -> int:
        scanner = core.FrameScanner(core.MODE_FRAMES)
        scanner.set_terminator(b"\r\n")
        target = Target()
        feed = scanner.feed
        for data in reads:
            feed(target, data)
        return target.frames

    return run


def variants() -> Dict[str, Callable[[List[bytes]], int]]:
    from asynframe import _core_py
    from asynframe import asynchat as af_asynchat

    found: Dict[str, Callable[[List[bytes]], int]] = {}
    reference = load_reference()
    if reference is not None:
        found["reference"] = chat_runner(reference)
    try:
        from asynframe import _core_c
    except ImportError:
        _core_c = None
    if _core_c is not None:
        found["chat-c"] = chat_runner(af_asynchat, lambda: _core_c.FrameScanner(_core_c.MODE_COLLECT))
        found["frames-c"] = frames_runner(_core_c)
    found["chat-py"] = chat_runner(af_asynchat, lambda: _core_py.FrameScanner(_core_py.MODE_COLLECT))
    found["frames-py"] = frames_runner(_core_py)
    return found


def measure(run: Callable[[List[bytes]], int], reads: List[bytes], repeats: int) -> List[float]:
    expected = run(reads)  # warm-up and a count to check against
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        frames = run(reads)
        elapsed = time.perf_counter() - start
        if frames != expected:
            raise AssertionError("frame count changed between runs")
        rates.append(frames / elapsed)
    return rates


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="16,64,1024", help="line sizes in bytes, comma-separated")
    parser.add_argument("--total", type=int, default=8 << 20, help="input bytes per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)

    found = variants()
    results: Dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "sizes": {},
    }
    header = "%-6s %-10s %14s %16s %10s %9s" % ("line", "variant", "frames/s", "spread", "MB/s", "vs ref")
    print(header)
    print("-" * len(header))
    for size in [int(s) for s in args.sizes.split(",")]:
        reads = make_reads(size, args.total)
        per_size: Dict[str, Any] = {}
        for name, run in found.items():
            rates = measure(run, reads, args.repeats)
            per_size[name] = {
                "median": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
                "mb_per_s": statistics.median(rates) * size / 1e6,
            }
        ref = per_size.get("reference", {}).get("median")
        for name, row in per_size.items():
            row["ratio_to_reference"] = row["median"] / ref if ref else None
            print(
                "%-6d %-10s %14s %16s %10.0f %9s"
                % (
                    size,
                    name,
                    "{:,.0f}".format(row["median"]),
                    "{:,.0f}-{:,.0f}".format(row["min"], row["max"]),
                    row["mb_per_s"],
                    "%.1fx" % row["ratio_to_reference"] if ref else "-",
                )
            )
        results["sizes"][str(size)] = per_size
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
