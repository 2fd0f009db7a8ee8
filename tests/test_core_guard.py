"""Which core is active, and whether that is what the environment asked for.

A CI job that sets ``ASYNFRAME_REQUIRE_EXTENSIONS=1`` must not go green on the
pure twin because the extension silently failed to build or import.
"""

from __future__ import annotations

import importlib
import os

import pytest

import asynframe
from asynframe import _core

from support import NO_EXTENSIONS, REQUIRE_EXTENSIONS


def test_flag_matches_implementation():
    assert asynframe.CORE_IMPLEMENTATION in ("c", "python")
    assert asynframe.USING_C_CORE == (asynframe.CORE_IMPLEMENTATION == "c")
    assert _core.IMPLEMENTATION == asynframe.CORE_IMPLEMENTATION
    assert _core.FrameScanner.__module__.endswith(
        "._core_c" if asynframe.USING_C_CORE else "._scanner_py"  # the pure scanner's own module
    )


def test_flag_agrees_with_no_extensions():
    if NO_EXTENSIONS:
        assert not asynframe.USING_C_CORE, "ASYNFRAME_NO_EXTENSIONS is set but the C core is active"
        assert _core.NO_EXTENSIONS
    else:
        assert not _core.NO_EXTENSIONS
        try:
            importlib.import_module("asynframe._core_c")
        except ImportError:
            assert not asynframe.USING_C_CORE
        else:
            assert asynframe.USING_C_CORE, "the C core imports but the pure twin was selected"


@pytest.mark.skipif(not REQUIRE_EXTENSIONS, reason="ASYNFRAME_REQUIRE_EXTENSIONS is not set")
def test_required_extension_is_active():
    assert not NO_EXTENSIONS, "ASYNFRAME_REQUIRE_EXTENSIONS=1 contradicts ASYNFRAME_NO_EXTENSIONS=1"
    try:
        importlib.import_module("asynframe._core_c")
    except ImportError as exc:
        pytest.fail("ASYNFRAME_REQUIRE_EXTENSIONS=1 but asynframe._core_c cannot be imported: %s" % exc)
    assert asynframe.USING_C_CORE, "ASYNFRAME_REQUIRE_EXTENSIONS=1 but the pure core is active"


@pytest.mark.skipif(
    not os.environ.get("ASYNFRAME_EXPECT_INSTALLED_IN"), reason="ASYNFRAME_EXPECT_INSTALLED_IN is not set"
)
def test_imported_from_the_expected_install():
    # .ci/run sets it to the wheel venv's site-packages: a run that silently
    # picked up a source checkout instead would otherwise pass.
    where = os.path.realpath(os.environ["ASYNFRAME_EXPECT_INSTALLED_IN"])
    modules = [asynframe, _core] + ([importlib.import_module("asynframe._core_c")] if asynframe.USING_C_CORE else [])
    for module in modules:
        path = os.path.realpath(module.__file__)
        assert path.startswith(where + os.sep), "%s imported from %s, not from %s" % (module.__name__, path, where)
