#!/usr/bin/env python3
"""The comparison from a checkout: ``python benchmarks/run.py [--quick] ...``.

The implementation is ``asynframe.bench.runner`` (installed as the
``asynframe-bench`` command); this runs it with results in
``benchmarks/results/``.  The asynframe under test is the one Python imports:
this checkout's ``src/`` when it was built in place (``build_ext
--inplace``), else the installed one (``pip install ".[bench]"``), else the
checkout's sources without the compiled core.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def _built_in_place() -> bool:
    package = SRC / "asynframe"
    return any((package / ("_core_c" + suffix)).exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES)


if _built_in_place() or importlib.util.find_spec("asynframe") is None:
    sys.path.insert(0, str(SRC))

from asynframe.bench.runner import main  # noqa: E402  (after the path choice above)

if __name__ == "__main__":
    sys.exit(main(results_dir=HERE / "results"))
