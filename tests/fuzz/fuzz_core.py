"""atheris fuzz target: the framing core's scanner and push queue, both twins.

Not part of the test suite (atheris is an optional dependency).  Run:

    python3 -m pip install atheris
    PYTHONPATH=src python3 tests/fuzz/fuzz_core.py -max_total_time=600

The input bytes are decoded into an operation sequence for
``pipeline.run_pipeline`` (see OPS_HELP there), run on the compiled and the
pure core; any invariant failure or disagreement between them is a crash.
Under AddressSanitizer see docs/development.md for the LD_PRELOAD line.
"""

from __future__ import annotations

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pipeline import run_pipeline  # noqa: E402

pure = importlib.import_module("asynframe._core_py")
try:
    compiled = importlib.import_module("asynframe._core_c")
except ImportError:
    compiled = None

FEED_KINDS = ["bytes", "bytearray", "memoryview", "buffer"]
SIMPLE = ["process", "send", "close", "pop_close"]


def decode(fdp):
    """An operation sequence from atheris' FuzzedDataProvider."""
    mode = fdp.ConsumeIntInRange(0, 2)
    term = _term(fdp)
    seq = []
    for _ in range(fdp.ConsumeIntInRange(0, 40)):
        kind = fdp.ConsumeIntInRange(0, 8)
        if kind == 0:
            seq.append(
                ("feed", FEED_KINDS[fdp.ConsumeIntInRange(0, 3)], fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)))
            )
        elif kind == 1:
            seq.append(("term", _term(fdp), None))
        elif kind == 2:
            seq.append(("max_frame", fdp.ConsumeIntInRange(0, 100), None))
        elif kind == 3:
            seq.append(("stop_after", fdp.ConsumeIntInRange(0, 3), None))
        elif kind == 4:
            seq.append((SIMPLE[fdp.ConsumeIntInRange(0, 3)], None, None))
        elif kind == 5:
            seq.append(("read", fdp.ConsumeIntInRange(1, 70000), None))
        elif kind == 6:
            seq.append(("push", fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 5000)), None))
        elif kind == 7:
            seq.append(
                (
                    "producer",
                    [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 3000)) for _ in range(fdp.ConsumeIntInRange(0, 4))],
                    None,
                )
            )
        else:
            seq.append(("partial", fdp.ConsumeIntInRange(1, 9000), None))
    return mode, term, seq


def _term(fdp):
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeIntInRange(1, 40)
    return bytes(b"ab\r\n"[fdp.ConsumeIntInRange(0, 3)] for _ in range(fdp.ConsumeIntInRange(1, 3)))


def test_one_input(data):
    import atheris

    mode, term, seq = decode(atheris.FuzzedDataProvider(data))
    log = run_pipeline(pure, mode, term, seq)
    if compiled is not None:
        assert run_pipeline(compiled, mode, term, seq) == log


def main():
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
