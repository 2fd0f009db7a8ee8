"""Both cores accept and reject the same values in every public setter.

tests/setter_probe.py feeds invalid and extreme values (negative, zero,
past ``sys.maxsize``, floats, NaN, bools, str, bytes-likes, None, lists) to
``set_terminator``, ``terminator``, ``max_frame``, ``set_write_buffer_limits``,
``set_idle_timeout``, ``set_connect_timeout``, and to ``ac_in_buffer_size``/
``ac_out_buffer_size``, which asynchat reads at each read and send (so they
are checked there, on both loop paths).  The probe runs once per core in a
subprocess; the two reports must be identical, and no rejected call may
leave a trace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE = os.path.join(HERE, "setter_probe.py")

pytestmark = pytest.mark.timeout(180)

_reports = {}


def report(core):
    name = core.IMPLEMENTATION
    if name not in _reports:
        env = dict(os.environ)
        env.pop("ASYNFRAME_NO_EXTENSIONS", None)
        if name == "python":
            env["ASYNFRAME_NO_EXTENSIONS"] = "1"
        proc = subprocess.run([sys.executable, PROBE], env=env, capture_output=True, text=True, timeout=150)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _reports[name] = json.loads(proc.stdout)
    return _reports[name]


def test_a_rejected_call_changes_nothing(core):
    assert report(core)["changed_on_error"] == []


def test_counts_past_sys_maxsize_are_refused_and_framing_goes_on(core):
    setters = report(core)["setters"]
    for name in ("set_terminator", "terminator="):
        for value in (sys.maxsize + 1, 2**64, -1):
            result, state, frames = setters["%s(%r)" % (name, value)]
            assert result.startswith("ValueError: an int terminator"), result
            assert state["terminator"] == "b'X'"
            assert frames == ["one", "two"]
        result, state = setters["%s(%r)" % (name, sys.maxsize)]
        assert result == "ok" and state["terminator"] == repr(sys.maxsize)
        # an int subclass counts as the number
        assert setters["%s(True)" % name][1]["terminator"] == "1"
    for value in (sys.maxsize + 1, -(2**63) - 1, -1):
        result, state = setters["max_frame=(%r)" % value]
        assert result.startswith("ValueError: max_frame must be between 0 and sys.maxsize")
        assert state["max_frame"] == "100"
    assert setters["max_frame=(1.5)"][0] == "TypeError: max_frame must be an int, not float"


def test_buffer_sizes_are_checked_where_they_are_used(core):
    got = report(core)
    for section in ("buffers-select", "buffers-poll"):
        results = got[section]
        # a huge read size is clamped, not reserved: the frame arrives
        assert results["ac_in_buffer_size=%r" % 2**64][1] == ["ping"]
        assert results["ac_in_buffer_size=0"][2] == ["ValueError: size must be positive, not 0"]
        assert results["ac_out_buffer_size=%r" % 2**64][3] == "pong\n"
        assert results["ac_out_buffer_size=0"][0] == "ValueError: size must be at least 1, not 0"


def test_both_cores_give_the_same_report(both_cores):
    compiled, pure = both_cores
    assert report(compiled) == report(pure)
