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

import importlib
import os
import sys
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
