"""Shared fixtures: the two framing cores and the reference asynchat.

``core`` runs a test once per twin: ``asynframe._core_c`` (id ``c``, marked
``c_core``) and ``asynframe._core_py`` (id ``python``).  The compiled twin is
skipped when it cannot be imported or when ``ASYNFRAME_NO_EXTENSIONS`` is set;
with ``ASYNFRAME_REQUIRE_EXTENSIONS=1`` a missing compiled core is a failure,
not a skip (``test_core_guard.py`` says so once, clearly).

``ref_asynchat`` is the behaviour the cores are held to: the stdlib
``asynchat`` up to 3.11, the ``pyasynchat`` backport (which installs a module
named ``asynchat``) from 3.12 on.
"""

from __future__ import annotations

import functools
import importlib
import os
import subprocess
import sys
import tempfile
import time
import warnings

import pytest


def env_flag(name: str) -> bool:
    """Same reading as ``asynframe._core``: set, non-empty and not ``0``."""
    return os.environ.get(name, "") not in ("", "0")


NO_EXTENSIONS = env_flag("ASYNFRAME_NO_EXTENSIONS")
REQUIRE_EXTENSIONS = env_flag("ASYNFRAME_REQUIRE_EXTENSIONS")


def pytest_configure(config):
    # Keep the per-test bounds meaningful as markers even without the plugin.
    if not config.pluginmanager.hasplugin("timeout"):
        config.addinivalue_line("markers", "timeout(seconds): per-test time bound (pytest-timeout)")


def _import_c_core():
    """The compiled core, or None with the reason it is not usable."""
    try:
        return importlib.import_module("asynframe._core_c"), None
    except ImportError as exc:  # not built in this install
        return None, "asynframe._core_c cannot be imported: %s" % (exc,)


@pytest.fixture(
    scope="session",
    params=[
        pytest.param("c", marks=pytest.mark.c_core, id="c"),
        pytest.param("python", id="python"),
    ],
)
def core(request):
    """The framing core module under test (compiled or pure twin)."""
    if request.param == "python":
        return importlib.import_module("asynframe._core_py")
    if NO_EXTENSIONS:
        pytest.skip("ASYNFRAME_NO_EXTENSIONS is set: the compiled core is not tested")
    module, reason = _import_c_core()
    if module is None:
        if REQUIRE_EXTENSIONS:
            pytest.fail("ASYNFRAME_REQUIRE_EXTENSIONS=1 but " + reason, pytrace=False)
        pytest.skip(reason)
    return module


@pytest.fixture(scope="session")
def both_cores():
    """(compiled, pure) for twin comparisons; skipped like the ``c`` param."""
    pure = importlib.import_module("asynframe._core_py")
    if NO_EXTENSIONS:
        pytest.skip("ASYNFRAME_NO_EXTENSIONS is set: the compiled core is not tested")
    module, reason = _import_c_core()
    if module is None:
        if REQUIRE_EXTENSIONS:
            pytest.fail("ASYNFRAME_REQUIRE_EXTENSIONS=1 but " + reason, pytrace=False)
        pytest.skip(reason)
    return module, pure


def load_reference_asynchat():
    """The real asynchat module (never asynframe's stand-in), or None."""
    # asynframe.install() may have put its own modules under these names;
    # the reference must be the original, so import it past them.
    saved = {}
    for name in ("asyncore", "asynchat"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__asynframe__", False):
            saved[name] = sys.modules.pop(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                module = importlib.import_module("asynchat")
            except ImportError:
                return None
        if getattr(module, "__asynframe__", False) or not hasattr(module, "async_chat"):
            return None
        return module
    finally:
        sys.modules.update(saved)


@pytest.fixture(scope="session")
def ref_asynchat():
    """The reference asynchat: stdlib on <= 3.11, the pyasynchat backport on 3.12+."""
    module = load_reference_asynchat()
    if module is None:
        if sys.version_info >= (3, 12):
            pytest.skip("reference asynchat unavailable: pip install pyasynchat")
        pytest.skip("reference asynchat unavailable")
    return module


# -- re-running a whole file on the pure core ---------------------------------
# The asyncore/asynchat/aio layers bind their core at import, so one process
# tests one core.  Files testing those layers end with a test that runs the
# whole file again under ASYNFRAME_NO_EXTENSIONS=1; this marker in the
# child's environment stops the recursion.
PURE_RERUN_ENV = "ASYNFRAME_PURE_RERUN"
IN_PURE_RERUN = os.environ.get(PURE_RERUN_ENV) == "1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rerun_file_with_pure_core(path: str, timeout: float) -> None:
    """Run the test file *path* again with the pure core; assert it passed."""
    import asynframe

    if IN_PURE_RERUN:
        pytest.skip("this is the pure-core re-run")
    if not asynframe.USING_C_CORE:
        pytest.skip("this process already runs the pure core")
    env = dict(os.environ, ASYNFRAME_NO_EXTENSIONS="1", **{PURE_RERUN_ENV: "1"})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", path, "-q", "-p", "no:cacheprovider", "-x"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    tail = (proc.stdout + proc.stderr)[-4000:]
    print(tail)
    assert proc.returncode == 0, "pure-core re-run failed:\n" + tail
    assert " passed" in tail and " failed" not in tail, tail


# -- loop helpers shared by the layer tests --------------------------------------
both_poll_modes = pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])


@pytest.fixture
def smap():
    """A private socket map, torn down at the end (channels closed, timers cancelled)."""
    from asynframe import asyncore

    m: dict = {}
    try:
        yield m
    finally:
        asyncore.close_all(m, ignore_all=True)


def run_until(cond, m, timeout=20.0, use_poll=False, step=0.05):
    """Iterate the loop on *m* until cond() holds; fail after *timeout* seconds."""
    from asynframe import asyncore

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("loop condition not reached in %.1fs" % timeout)
        asyncore.loop(step, use_poll, map=m, count=1)


# -- file data shared by the push_file tests -------------------------------------------
HAS_SENDFILE = hasattr(os, "sendfile")
FILE_DATA_SIZE = 2 << 20


def pattern(n, seed=0):
    """n bytes that do not repeat with a short period (offset errors show)."""
    out = bytearray()
    i = seed
    while len(out) < n:
        out += i.to_bytes(4, "little")
        i += 1
    return bytes(out[:n])


@functools.lru_cache(maxsize=1)
def file_data() -> bytes:
    """What ``data_file`` holds: ``pattern(FILE_DATA_SIZE)``."""
    # built on first use, once: most test runs never touch a file
    return pattern(FILE_DATA_SIZE)


@pytest.fixture
def data_file():
    """A temporary binary file holding ``file_data()``, closed at teardown."""
    f = tempfile.TemporaryFile()
    f.write(file_data())
    f.flush()
    yield f
    f.close()


def refuse_file_reads(monkeypatch):
    """Fail the test if a queued file is read instead of sent with sendfile()."""
    def refuse(*args):
        raise AssertionError("the file was read, not sent with sendfile()")
    monkeypatch.setattr(os, "pread", refuse)
