"""The soak run (benchmarks/soak.py): not part of the quick run.

    ASYNFRAME_SOAK=1 python3 -m pytest tests/test_soak.py -m soak -q

runs it at full scale (100,000 cycles; 1,000 connections for 60 s) and
asserts its verdict: RSS growth after warm-up < 5 %, descriptors back to
where they started, zero errors.  ``ASYNFRAME_SOAK_SCALE=0.02`` scales the
cycles, connections and duration down (a smoke run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support import env_flag

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALE = float(os.environ.get("ASYNFRAME_SOAK_SCALE", "1"))

pytestmark = [
    pytest.mark.soak,
    pytest.mark.skipif(not env_flag("ASYNFRAME_SOAK"), reason="set ASYNFRAME_SOAK=1 to soak"),
    pytest.mark.timeout(int(900 * max(SCALE, 0.05))),
]


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_soak(tmp_path, use_poll):
    out = tmp_path / "soak.json"
    cmd = [
        sys.executable,
        os.path.join(ROOT, "benchmarks", "soak.py"),
        "--cycles",
        str(max(100, int(100000 * SCALE))),
        "--concurrent",
        str(max(10, int(1000 * SCALE))),
        "--duration",
        str(max(2.0, 60 * SCALE)),
        "--json",
        str(out),
    ]
    if use_poll:
        cmd.append("--use-poll")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=int(850 * max(SCALE, 0.05)))
    result = json.loads(out.read_text())
    assert result["errors"] == 0, result
    assert result["fds_after"] <= result["fds_before"], result
    for key in ("cycles_rss_growth_pct", "concurrent_rss_growth_pct"):
        assert result[key] is not None and result[key] < 5.0, result
    assert result["ok"] and proc.returncode == 0, proc.stderr[-2000:]
