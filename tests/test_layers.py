"""The package's import graph points down only (docs/design.md, "Layers").

Every module of ``src/asynframe`` and ``ext/asynframe`` belongs to exactly
one layer; a module may import from its own layer or a lower one, never from
a higher one, and the graph has no cycle.  Imports inside functions count
too: a lazy upward import is still an upward dependency.  The sources are
read, not imported, so this checks the tree as written.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "asynframe"
EXT = ROOT / "ext" / "asynframe"

if not SRC.is_dir():  # the tests run from a copy of the sdist's tests/ in CI
    pytest.skip("needs the source tree", allow_module_level=True)

LAYERS = [
    (
        "framing core",
        {"_version", "_core_common", "_scanner_py", "_push_queue_py", "_core_py", "_core_c", "_core", "_versions"},
    ),
    ("loop", {"_events", "_timers", "_backends", "_poller", "_loop_c", "_file_wrapper", "_callback_shapes"}),
    (
        "channel features",
        {
            "_flow",
            "_tls",
            "_tls_state",
            "_tls_transport",
            "_tls_socket",
            "_tls_channel",
            "_frame_timeout",
            "_chat_common",
            "_channel_log",
            "_channel_timeouts",
            "_queued_send",
            "_delegation",
        },
    ),
    ("public API", {"asyncore", "asynchat"}),
    ("adapters and tools", {"aio", "diagnostics", "workers", "loops", "__init__", "__main__"}),
]
LAYER_OF = {module: index for index, (_, modules) in enumerate(LAYERS) for module in modules}


def _python_imports(text: str) -> set:
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                if module:
                    found.add(module.split(".")[0])
                else:  # from . import x, y
                    found.update(alias.name for alias in node.names)
            elif module == "asynframe":
                found.update(alias.name for alias in node.names)
            elif module.startswith("asynframe."):
                found.add(module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("asynframe."):
                    found.add(alias.name.split(".")[1])
    return found


_CYTHON_IMPORT = re.compile(
    r"^\s*(?:from\s+(?P<module>\.?[\w.]*)\s+c?import\s+(?P<names>[\w, ()]+)"
    r"|c?import\s+(?P<plain>[\w.]+))",
    re.M,
)


def _cython_imports(text: str) -> set:
    found = set()
    for match in _CYTHON_IMPORT.finditer(text):
        module = match.group("module")
        if module is None:
            if match.group("plain").startswith("asynframe."):
                found.add(match.group("plain").split(".")[1])
        elif module in (".", "asynframe"):
            found.update(name.strip() for name in match.group("names").strip("()").split(","))
        elif module.startswith("asynframe."):
            found.add(module.split(".")[1])
        elif module.startswith("."):
            found.add(module[1:].split(".")[0])
    return found


_CYTHON_INCLUDE = re.compile(r'^include\s+"([\w.]+)"', re.M)


def _with_includes(path: pathlib.Path) -> str:
    """The text of a Cython source with its ``include``d .pxi files: they are part of its module."""
    text = path.read_text()
    return text + "".join(_with_includes(path.parent / name) for name in _CYTHON_INCLUDE.findall(text))


def import_graph() -> dict:
    sources = {path.stem: _python_imports(path.read_text()) for path in SRC.glob("*.py")}
    for path in list(EXT.glob("*.pyx")) + list(EXT.glob("*.pxd")):
        sources.setdefault(path.stem, set()).update(_cython_imports(_with_includes(path)))
    return {module: {d for d in deps if d in sources and d != module} for module, deps in sources.items()}


def test_every_module_has_a_layer():
    unplaced = sorted(set(import_graph()) - set(LAYER_OF))
    assert not unplaced, f"modules in no layer (add them to LAYERS and docs/design.md): {unplaced}"


def test_imports_point_down_only():
    upward = [
        f"{module} ({LAYERS[LAYER_OF[module]][0]}) imports {dep} ({LAYERS[LAYER_OF[dep]][0]})"
        for module, deps in sorted(import_graph().items())
        for dep in sorted(deps)
        if module in LAYER_OF and dep in LAYER_OF and LAYER_OF[dep] > LAYER_OF[module]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph = import_graph()
    done: set = set()

    def visit(module, path):
        if module in path:
            cycle = path[path.index(module) :] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_parsers_see_every_import_form():
    # the parsers must find every import form the package uses, or the
    # tests above would pass on a tree they cannot read
    assert _python_imports("from . import asyncore, _tls\n") == {"asyncore", "_tls"}
    assert _python_imports("def f():\n    from .asynchat import x\n") == {"asynchat"}
    assert _python_imports("import asynframe.aio\nfrom asynframe import workers\n") == {"aio", "workers"}
    assert _cython_imports("from asynframe._core_c cimport FrameScanner\n") == {"_core_c"}
    assert _cython_imports("from asynframe import _events\n") == {"_events"}
    assert _CYTHON_INCLUDE.findall('# x\ninclude "_loop_classes.pxi"\n') == ["_loop_classes.pxi"]
    assert _CYTHON_INCLUDE.findall('include "_scanner_c.pxi"\n') == ["_scanner_c.pxi"]
