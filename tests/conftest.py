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
files of those layers are marked ``api_layer``, and the README's test command
runs them a second time, as a second pytest command with
``ASYNFRAME_NO_EXTENSIONS=1 ... -m api_layer`` (CI runs the whole suite pure
instead where it has the time).
"""

from __future__ import annotations

import importlib
import sys
import tempfile

import pytest

from support import (
    NO_EXTENSIONS,
    REQUIRE_EXTENSIONS,
    file_data,
    import_c_core,
    load_reference_asynchat,
)


def pytest_configure(config):
    # Keep the per-test bounds meaningful as markers even without the plugin.
    if not config.pluginmanager.hasplugin("timeout"):
        config.addinivalue_line("markers", "timeout(seconds): per-test time bound (pytest-timeout)")
    config.addinivalue_line(
        "markers", "api_layer: tests the asyncore/asynchat/aio layers; run again with the pure core forced"
    )


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
