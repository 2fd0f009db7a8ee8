"""Shared fixtures: the two framing cores and the reference asynchat.

``core`` runs a test once per twin: ``asynframe._core_c`` (id ``c``, marked
``c_core``) and ``asynframe._core_py`` (id ``python``).  The compiled twin is
skipped when it cannot be imported or when ``ASYNFRAME_NO_EXTENSIONS`` is set;
with ``ASYNFRAME_REQUIRE_EXTENSIONS=1`` a missing compiled core is a failure,
not a skip (``test_core_guard.py`` says so once, clearly).

``ref_asynchat`` is the behaviour the cores are held to: the stdlib
``asynchat`` up to 3.11, the ``pyasynchat`` backport (which installs a module
named ``asynchat``) from 3.12 on.

Both cores for the layers above the core: the asyncore/asynchat/aio layers
bind their core when they are imported, so one process tests one core.  Test
files of those layers are marked ``api_layer``; when a session ran on the
compiled core and passed, the tests it selected from those files run once
more, in one child pytest with ``ASYNFRAME_NO_EXTENSIONS=1``, whose output
goes straight to the terminal and whose failure fails the session.
``ASYNFRAME_PURE_RERUN=0`` turns that off (CI sets it where a whole
pure-core pass follows anyway).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile

import pytest

from support import (
    NO_EXTENSIONS,
    PURE_RERUN_ENV,
    REQUIRE_EXTENSIONS,
    file_data,
    import_c_core,
    load_reference_asynchat,
)

# a bound for the child run, far above its usual 3-4 minutes
PURE_RERUN_TIMEOUT = 1800


def pytest_configure(config):
    # Keep the per-test bounds meaningful as markers even without the plugin.
    if not config.pluginmanager.hasplugin("timeout"):
        config.addinivalue_line("markers", "timeout(seconds): per-test time bound (pytest-timeout)")
    config.addinivalue_line(
        "markers", "api_layer: tests the asyncore/asynchat/aio layers; re-run on the pure core")


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: the tests that will run
def pytest_collection_modifyitems(session, config, items):
    session.config._af_api_layer_ids = [
        item.nodeid for item in items if item.get_closest_marker("api_layer") is not None
    ]


def _pure_rerun_wanted(session) -> bool:
    if os.environ.get(PURE_RERUN_ENV, "") != "" or NO_EXTENSIONS:
        return False  # the child itself, turned off, or already pure
    if session.config.option.collectonly or session.testsfailed:
        return False
    try:
        import asynframe
    except ImportError:
        return False
    return bool(asynframe.USING_C_CORE and getattr(session.config, "_af_api_layer_ids", None))


def pytest_sessionfinish(session, exitstatus):
    if exitstatus != 0 or not _pure_rerun_wanted(session):
        return
    ids = session.config._af_api_layer_ids
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "the %d api_layer tests again, pure core forced" % len(ids))
    env = dict(os.environ, ASYNFRAME_NO_EXTENSIONS="1", **{PURE_RERUN_ENV: "1"})
    env.pop("ASYNFRAME_REQUIRE_EXTENSIONS", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ids]
    try:
        child = subprocess.run(command, cwd=str(session.config.rootpath), env=env,
                               timeout=PURE_RERUN_TIMEOUT)
        failed = child.returncode != 0
    except subprocess.TimeoutExpired:
        failed = True
    if failed:
        if reporter is not None:
            reporter.write_sep("=", "pure-core re-run FAILED (its report is above)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
    module, reason = import_c_core()
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
    module, reason = import_c_core()
    if module is None:
        if REQUIRE_EXTENSIONS:
            pytest.fail("ASYNFRAME_REQUIRE_EXTENSIONS=1 but " + reason, pytrace=False)
        pytest.skip(reason)
    return module, pure


@pytest.fixture(scope="session")
def ref_asynchat():
    """The reference asynchat: stdlib on <= 3.11, the pyasynchat backport on 3.12+."""
    module = load_reference_asynchat()
    if module is None:
        if sys.version_info >= (3, 12):
            pytest.skip("reference asynchat unavailable: pip install pyasynchat")
        pytest.skip("reference asynchat unavailable")
    return module


@pytest.fixture
def smap():
    """A private socket map, torn down at the end (channels closed, timers cancelled)."""
    from asynframe import asyncore

    m: dict = {}
    try:
        yield m
    finally:
        asyncore.close_all(m, ignore_all=True)


@pytest.fixture
def data_file():
    """A temporary binary file holding ``file_data()``, closed at teardown."""
    f = tempfile.TemporaryFile()
    f.write(file_data())
    f.flush()
    yield f
    f.close()


@pytest.fixture
def fast_switching():
    """With a GIL: threads switch every microsecond, so they interleave between
    (not inside) calls as densely as they can; restored at teardown."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)
