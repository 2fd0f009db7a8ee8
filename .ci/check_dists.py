"""Check what the sdist and the wheels carry (run by .ci/run).

    python check_dists.py sdist   ROOT dist/asynframe-X.tar.gz
    python check_dists.py wheel   dist/asynframe-X-cp311-cp311-manylinux_*.whl
    python check_dists.py pure    dist/asynframe-X-py3-none-any.whl

The sdist must hold everything a build and the test suite need (the wheels
are built from it, and their tests run from its tests/); a wheel must hold
the package with its typing files and no sources of the extension.  Exits
non-zero with the list of problems.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import tarfile
import zipfile
from typing import Iterable, List

# Files a build from the sdist needs, besides the package's .py files.
SDIST_BUILD_FILES = [
    "PKG-INFO",
    "pyproject.toml",
    "setup.py",
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    "src/asynframe/py.typed",
    "src/asynframe/_core_c.pyi",
]
# Trees of the checkout that must be in the sdist file for file (ext/: the
# Cython sources, .pxi includes too; the generated .c is not in the checkout's
# list because checkout_files skips it).
SDIST_TREES = ["src/asynframe", "ext/asynframe", "tests", "examples", "benchmarks", "docs"]
# Never in a distribution: build output and caches.
NEVER = ["*.pyc", "*/__pycache__/*", "*.so", "*.pyd", "*.o", "ext/*.c", "ext/*.html"]
EXTENSION_SOURCES = ["*.pyx", "*.pxd", "*.pxi", "*.c", "*.h", "*.cpp"]


def matching(names: Iterable[str], patterns: Iterable[str]) -> List[str]:
    pats = list(patterns)
    return sorted(n for n in names if any(fnmatch.fnmatch(n, p) for p in pats))


def checkout_files(root: str, tree: str) -> List[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, tree)):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "results", ".hypothesis")]
        for name in filenames:
            if name.endswith((".pyc", ".so", ".pyd")) or (tree.startswith("ext") and name.endswith((".c", ".html"))):
                continue
            found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return found


def check_sdist(root: str, path: str) -> List[str]:
    with tarfile.open(path) as tar:
        members = [m.name for m in tar.getmembers() if m.isfile()]
    top = members[0].split("/", 1)[0]
    names = {m.split("/", 1)[1] for m in members if "/" in m}
    problems = ["missing " + f for f in SDIST_BUILD_FILES if f not in names]
    for tree in SDIST_TREES:
        wanted = checkout_files(root, tree)
        if not wanted:
            problems.append("the checkout has no %s/ to compare with" % tree)
        problems += ["missing " + f for f in wanted if f not in names]
    problems += ["build output in the sdist: " + f for f in matching(names, NEVER)]
    if not top.startswith("asynframe-"):
        problems.append("unexpected top directory %r" % top)
    return problems


def wheel_names(path: str) -> List[str]:
    with zipfile.ZipFile(path) as whl:
        return whl.namelist()


def check_common(names: List[str]) -> List[str]:
    problems = []
    for wanted in [
        "asynframe/__init__.py",
        "asynframe/_core_py.py",
        "asynframe/py.typed",
        "asynframe/_core_c.pyi",
        "asynframe/bench/runner.py",
        "asynframe/bench/scenarios.py",
        "asynframe/bench/cell.py",
        "asynframe/bench/processes.py",
        "asynframe/bench/probes.py",
        "asynframe/bench/report.py",
        "asynframe/bench/chart.py",
        "asynframe/bench/loadgen.py",
        "asynframe/bench/servers/asynchat_echo.py",
        "asynframe/bench/servers/_lifecycle.py",
    ]:
        if wanted not in names:
            problems.append("missing " + wanted)
    problems += ["extension source in the wheel: " + f for f in matching(names, EXTENSION_SOURCES)]
    problems += ["not part of the package: " + f for f in names if not f.startswith(("asynframe/", "asynframe-"))]
    problems += ["cache in the wheel: " + f for f in matching(names, ["*.pyc", "*/__pycache__/*"])]
    if not any(f.endswith(".dist-info/entry_points.txt") for f in names):
        problems.append("no entry_points.txt: the asynframe-bench command is missing")
    return problems


def check_wheel(path: str) -> List[str]:
    names = wheel_names(path)
    problems = check_common(names)
    if "manylinux" not in os.path.basename(path):
        problems.append("not a repaired manylinux wheel: " + os.path.basename(path))
    if len(matching(names, ["asynframe/_core_c.*.so", "asynframe/_core_c.*.pyd"])) != 1:
        problems.append("expected exactly one compiled asynframe/_core_c extension")
    return problems


def check_pure(path: str) -> List[str]:
    names = wheel_names(path)
    problems = check_common(names)
    if not os.path.basename(path).endswith("-py3-none-any.whl"):
        problems.append("not a py3-none-any wheel: " + os.path.basename(path))
    problems += ["compiled code in the pure wheel: " + f for f in matching(names, ["*.so", "*.pyd"])]
    return problems


def main(argv: List[str]) -> int:
    kind, args = argv[1], argv[2:]
    if kind == "sdist":
        problems = check_sdist(*args)
    elif kind == "wheel":
        problems = check_wheel(*args)
    elif kind == "pure":
        problems = check_pure(*args)
    else:
        raise SystemExit("unknown check %r" % kind)
    for problem in problems:
        print("%s %s: %s" % (kind, os.path.basename(args[-1]), problem), file=sys.stderr)
    if not problems:
        print("%s %s: ok" % (kind, os.path.basename(args[-1])))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
