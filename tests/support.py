"""Helpers the test modules import (conftest.py holds only fixtures and hooks).

Plain functions and constants live here so that a test module imports them
by name (``from support import run_until``) instead of importing conftest,
which pytest loads on its own and may load under another name.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import time
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env_flag(name: str) -> bool:
    """Same reading as ``asynframe._core``: set, non-empty and not ``0``."""
    return os.environ.get(name, "") not in ("", "0")


NO_EXTENSIONS = env_flag("ASYNFRAME_NO_EXTENSIONS")
REQUIRE_EXTENSIONS = env_flag("ASYNFRAME_REQUIRE_EXTENSIONS")


# The asyncore/asynchat/aio layers bind their core at import, so one process
# tests one core.  Test files of those layers carry the ``api_layer`` marker;
# the README's test command runs them again with the pure core forced.


def import_c_core():
    """The compiled core, or None with the reason it is not usable."""
    try:
        return importlib.import_module("asynframe._core_c"), None
    except ImportError as exc:  # not built in this install
        return None, "asynframe._core_c cannot be imported: %s" % (exc,)


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


# -- loop helpers shared by the layer tests --------------------------------------
both_poll_modes = pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])


def run_until(cond, m, timeout=20.0, use_poll=False, step=0.05):
    """Iterate the loop on *m* until cond() holds; fail after *timeout* seconds."""
    from asynframe import asyncore

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("loop condition not reached in %.1fs" % timeout)
        asyncore.loop(step, use_poll, map=m, count=1)


# -- file data shared by the push_file tests -------------------------------------
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


def refuse_file_reads(monkeypatch):
    """Fail the test if a queued file is read instead of sent with sendfile()."""

    def refuse(*args):
        raise AssertionError("the file was read, not sent with sendfile()")

    monkeypatch.setattr(os, "pread", refuse)
