"""The benchmark runner (asynframe.bench: benchmarks/run.py, asynframe-bench) works end to end.

A tiny run (two scenarios, 0.3 s windows, a few connections) must produce a
well-formed JSON document and table in which every installed server was
measured, and must leave no server or load-generator process behind - also
when it is interrupted.  Nothing here asserts on speed.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the benchmark harness targets Linux (epoll, /proc)"
)

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "benchmarks" / "run.py"
SCENARIOS = ["pipelined", "reqresp"]
ALL_SERVERS = [
    "asynframe-c",
    "asynframe-c-stock",
    "asynframe-c-frames",
    "asynframe-py",
    "stdlib-asynchat",
    "asynframe-aio",
    "asynframe-uvloop",
    "asyncio-protocol",
    "asyncio-streams",
    "uvloop",
    "twisted",
]

# measured in reqresp only ("only" in scenarios.SERVERS)
VARIANTS = ["asynframe-c-stock", "asynframe-c-frames"]

# Run in a clean interpreter: which peers can the benchmark servers import?
_PROBE = r"""
import importlib, importlib.util, json, os, warnings
warnings.simplefilter("ignore")
def can(name):
    try:
        importlib.import_module(name)
        return True
    except Exception:
        return False
have = {"asyncio-protocol": True, "asyncio-streams": True}
have["asynframe-py"] = can("asynframe.asynchat") and can("asynframe.asyncore")
have["asynframe-c"] = have["asynframe-py"] and can("asynframe._core_c")
have["asynframe-c-stock"] = have["asynframe-c-frames"] = have["asynframe-c"]
stdlib = can("asynchat") and can("asyncore")
if stdlib:
    import asynchat
    stdlib = not getattr(asynchat, "__asynframe__", False)
have["stdlib-asynchat"] = stdlib
have["uvloop"] = can("uvloop")
have["asynframe-aio"] = have["asynframe-py"] and can("asynframe.aio")
have["asynframe-uvloop"] = have["asynframe-aio"] and have["uvloop"]
have["twisted"] = can("twisted.internet.reactor") and can("twisted.protocols.basic")
print(json.dumps(have))
"""


def _installed():
    env = dict(os.environ)
    env.pop("ASYNFRAME_NO_EXTENSIONS", None)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    return json.loads(out.stdout)


def _children_of(pid):
    """PIDs whose parent is *pid* (from /proc)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            kids.append(int(entry))
    return kids


def _alive_benchmark_process(pid):
    """True if *pid* still runs one of our servers or the load generator."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state == "Z":
        return False
    return b"_echo.py" in cmd or b"loadgen.py" in cmd


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "result.json"
    cmd = [
        sys.executable,
        str(RUN),
        "--quick",
        "--scenarios",
        ",".join(SCENARIOS),
        "--duration",
        "0.3",
        "--repeats",
        "1",
        "--warmup",
        "0.1",
        "--connections",
        "4",
        "--json",
        str(out),
        "--no-chart",
    ]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=str(REPO))
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"doc": json.loads(out.read_text()), "stdout": proc.stdout, "elapsed": elapsed}


@pytest.mark.timeout(150)
def test_json_is_well_formed(tiny_run):
    doc = tiny_run["doc"]
    assert doc["schema"] == 1
    machine = doc["machine"]
    for key in ("cpu_model", "python", "date", "cpu_count", "rlimit_nofile"):
        assert machine.get(key), key
    assert doc["scenarios_run"] == SCENARIOS
    assert doc["servers_run"] == ALL_SERVERS
    assert doc["config"]["repeats"] == 1
    assert set(doc["results"]) == set(SCENARIOS)
    for sc in SCENARIOS:
        assert doc["scenarios"][sc]["unit"] == "msg/s"
        assert set(doc["results"][sc]) == set(ALL_SERVERS)
        for cell in doc["results"][sc].values():
            if cell.get("status") != "ok":
                continue
            # the server's user-mode share is part of its CPU time (/proc/PID/stat
            # counts in clock ticks, hence the slack)
            assert len(cell["server_user_cpu"]) == len(cell["server_cpu"])
            for user, total in zip(cell["server_user_cpu"], cell["server_cpu"]):
                assert 0.0 <= user <= total + 0.05


@pytest.mark.timeout(150)
def test_every_installed_server_was_measured(tiny_run):
    doc = tiny_run["doc"]
    have = _installed()
    for server in ALL_SERVERS:
        for sc in SCENARIOS:
            cell = doc["results"][sc][server]
            if server in VARIANTS and sc != "reqresp":
                assert cell["status"] == "not run", (server, sc, cell)
                continue
            if not have[server]:
                assert cell["status"] == "skipped", (server, sc, cell)
                assert cell["note"]
                continue
            assert cell["status"] == "ok", (server, sc, cell.get("note"))
            assert len(cell["values"]) == 1
            assert cell["min"] <= cell["median"] <= cell["max"]
            assert cell["median"] > 0
            assert len(cell["loadgen_cpu"]) == 1 and cell["loadgen_cpu"][0] >= 0
            assert cell["peak_rss"] > 0
            assert cell["conns"] <= 4
    if have["asynframe-c"]:
        assert doc["reference"] == "asynframe-c"
        assert doc["servers"]["asynframe-c"]["info"]["core"] == "c"
        # the code under test: this checkout's src/ when it is built for this
        # interpreter (not some other installed copy), else the installed
        # package these tests import (run.py's built_checkout_src rule)
        built = [
            s for s in importlib.machinery.EXTENSION_SUFFIXES if (REPO / "src" / "asynframe" / ("_core_c" + s)).exists()
        ]
        if built:
            expected = str(REPO / "src")
        else:
            import asynframe

            expected = os.path.dirname(os.path.dirname(os.path.realpath(asynframe.__file__)))
        assert os.path.realpath(doc["servers"]["asynframe-c"]["info"]["asynchat"]).startswith(expected)
    if have["asynframe-py"]:
        assert doc["servers"]["asynframe-py"]["info"]["core"] == "python"


@pytest.mark.timeout(150)
def test_table_and_progress(tiny_run):
    doc, stdout = tiny_run["doc"], tiny_run["stdout"]
    table = doc["table"]
    assert table in stdout
    header = table.splitlines()[1]
    have = _installed()
    for server in ALL_SERVERS:
        if have[server]:
            assert server in header, server
    for sc in SCENARIOS:
        assert any(line.startswith(sc) for line in table.splitlines()), sc
    if doc["reference"]:
        assert f"vs {doc['reference']}" in table
    # CPU per message, total and user-space, for every measured cell
    assert "CPU µs/msg" in table
    # a legend naming every scenario the way the JSON and the table do
    legend = table.split("\nScenarios:\n", 1)[1]
    for sc in SCENARIOS:
        assert "  %s " % sc in legend, sc
    for sc in SCENARIOS:
        for server, cell in doc["results"][sc].items():
            if cell.get("status") == "ok":
                assert cell["server_us_per_msg"] > 0, (sc, server)
                assert 0 <= cell["server_user_us_per_msg"] <= cell["server_us_per_msg"], (sc, server)
    # one progress line per (server, scenario)
    # (the rotation that follows has lines of its own)
    progress = [line for line in stdout.splitlines() if line.startswith("[") and not line.startswith("[rotation]")]
    # (the two asynframe-c variants run in reqresp only)
    cells = len(SCENARIOS) * len(ALL_SERVERS) - len(VARIANTS) * (len(SCENARIOS) - 1)
    assert len(progress) == cells
    # the counter runs 1..cells over the same total, with elapsed and remaining time
    counters = [re.match(r"\[ *(\d+)/(\d+) \d+s, (\?|\d+s) left\]", line) for line in progress]
    assert all(counters), progress
    assert [(int(m.group(1)), int(m.group(2))) for m in counters] == [(i, cells) for i in range(1, cells + 1)]


@pytest.mark.timeout(150)
def test_no_processes_left_behind(tiny_run):
    doc = tiny_run["doc"]
    pids = [info["info"]["pid"] for info in doc["servers"].values() if "info" in info]
    assert pids
    assert not [p for p in pids if _alive_benchmark_process(p)]


@pytest.mark.timeout(60)
def test_interrupt_kills_children(tmp_path):
    cmd = [
        sys.executable,
        str(RUN),
        "--scenarios",
        "reqresp",
        "--servers",
        "asyncio-protocol",
        "--duration",
        "20",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--connections",
        "2",
        "--json",
        str(tmp_path / "x.json"),
        "--no-chart",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(REPO))
    try:
        kids = []
        deadline = time.monotonic() + 20
        # wait until both the server and the load generator are running
        while time.monotonic() < deadline:
            kids = [k for k in _children_of(proc.pid) if _alive_benchmark_process(k)]
            if len(kids) >= 2:
                break
            time.sleep(0.05)
        assert len(kids) >= 2, "runner did not start server and load generator"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    time.sleep(0.2)
    assert not [k for k in kids if _alive_benchmark_process(k)]
    assert not (tmp_path / "x.json").exists()


@pytest.mark.timeout(60)
def test_the_command_the_module_and_the_script_are_one_runner():
    # asynframe-bench (the wheel's console script), python -m asynframe.bench
    # and benchmarks/run.py all run asynframe.bench.runner.main
    from importlib.metadata import entry_points

    scripts = (
        entry_points(group="console_scripts")
        if sys.version_info >= (3, 10)
        else entry_points().get("console_scripts", [])
    )
    bench = [ep for ep in scripts if ep.name == "asynframe-bench"]
    assert [ep.value for ep in bench] == ["asynframe.bench.runner:main"]
    listings = [
        subprocess.run(argv + ["--list"], capture_output=True, text=True, timeout=30, cwd=str(REPO))
        for argv in ([sys.executable, "-m", "asynframe.bench"], [sys.executable, str(RUN)])
    ]
    assert all(out.returncode == 0 for out in listings), [out.stderr for out in listings]
    assert listings[0].stdout == listings[1].stdout
    for server in ALL_SERVERS:
        assert "  %s " % server in listings[0].stdout


@pytest.mark.timeout(150)
def test_rotation_measures_its_servers_in_turns(tiny_run):
    # with reqresp, the servers of bench.rotation.ROTATION that run here are
    # also measured in turns: each gets one window per round, and its CPU
    # per message is summed over them
    doc, stdout = tiny_run["doc"], tiny_run["stdout"]
    from asynframe.bench.rotation import ROTATION, ROTATION_REFERENCE

    have = _installed()
    runnable = [s for s in ROTATION if have[s]]
    rotation = doc.get("rotation")
    if len(runnable) < 2:
        assert rotation is None or rotation["status"] == "skipped"
        return
    assert rotation["status"] == "ok", rotation.get("note")
    assert rotation["scenario"] == "reqresp"
    assert rotation["cycles"] == doc["config"]["rotation_cycles"] >= 1
    assert rotation["conns"] <= 4
    assert list(rotation["servers"]) == [s for s in ROTATION if s in rotation["servers"]]
    for server in ROTATION:
        cell = rotation["servers"][server]
        if not have[server]:
            assert cell["status"] == "skipped", (server, cell)
            continue
        assert cell["status"] == "ok", (server, cell)
        assert cell["messages"] > 0 and cell["msg_per_s"] > 0
        assert 0 <= cell["server_user_us_per_msg"] <= cell["server_us_per_msg"]
        # one window per round, each in its own round
        assert [cycle for cycle, _ in cell["window_user_us_per_msg"]] == list(range(rotation["cycles"]))
    if have[ROTATION_REFERENCE]:
        assert rotation["reference"] == ROTATION_REFERENCE
        assert rotation["servers"][ROTATION_REFERENCE]["user_ratio"] == 1.0
    assert "servers in turns" in doc["table"]
    assert "[rotation] reqresp" in stdout


def test_rotation_alternates_the_order():
    # the load generator's rounds: forwards, then backwards, each window
    # bracketed by a mark the runner answers before anything else happens
    from asynframe.bench import loadgen

    class Driver:
        def __init__(self, name, log):
            self.name, self.log, self.done = name, log, 0

        def run_until(self, deadline):
            self.log.append(self.name)
            self.done += 1

        def count(self):
            return self.done

    log = []
    marks = []
    drivers = [Driver(n, log) for n in "abc"]
    saved_emit, saved_stdin = loadgen.emit, loadgen.sys.stdin
    loadgen.emit = lambda **fields: marks.append((fields["server"], fields["edge"]))
    loadgen.sys.stdin = __import__("io").StringIO("\n" * 18)
    try:
        windows = loadgen.rotate(drivers, 0.0, 0.0, 3)
    finally:
        loadgen.emit, loadgen.sys.stdin = saved_emit, saved_stdin
    # the warm-up of each, then three rounds
    assert log == list("abc") + list("abc") + list("cba") + list("abc")
    assert [w["server"] for w in windows] == [0, 1, 2, 2, 1, 0, 0, 1, 2]
    assert [w["cycle"] for w in windows] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert marks == [(w["server"], edge) for w in windows for edge in ("start", "end")]
    # a runner that went away ends the run
    loadgen.emit = lambda **fields: None
    loadgen.sys.stdin = __import__("io").StringIO("")
    try:
        with pytest.raises(loadgen.LoadError):
            loadgen.rotate(drivers, 0.0, 0.0, 1)
    finally:
        loadgen.emit, loadgen.sys.stdin = saved_emit, saved_stdin


def test_rotation_table_says_why_it_has_no_figures():
    from asynframe.bench.report import _rotation_table

    lines = _rotation_table({"cycles": 8, "window": 3.0, "status": "failed", "note": "uvloop died during the run"})
    assert "servers in turns" in lines[0]
    assert lines[1].strip() == "failed: uvloop died during the run"
    ok = {
        "cycles": 1,
        "window": 1.0,
        "status": "ok",
        "reference": None,
        "servers": {
            "asynframe-c": {
                "status": "ok",
                "msg_per_s": 150000.0,
                "server_us_per_msg": 6.0,
                "server_user_us_per_msg": 1.25,
            },
            "uvloop": {"status": "skipped", "note": "uvloop is not installed"},
        },
    }
    table = "\n".join(_rotation_table(ok))
    # without the reference server there are no ratio columns
    assert "vs uvloop" not in table
    assert "asynframe-c" in table and "150k" in table and "1.25" in table
    assert "uvloop" in table and "skipped" in table


_NO_UVLOOP = """
import sys


class NoUvloop:
    def find_spec(self, name, path=None, target=None):
        if name == "uvloop" or name.startswith("uvloop."):
            raise ImportError("no uvloop in this test")
        return None


sys.meta_path.insert(0, NoUvloop())
"""


@pytest.mark.timeout(120)
def test_rotation_without_its_reference(tmp_path):
    # a server that cannot run here keeps its place, and without uvloop
    # there are no ratios (an uvloop that fails to import stands in for one
    # that is not installed)
    # (a finder installed at start-up: the servers' PYTHONPATH puts the
    # package's own directory first, which may be a site-packages with uvloop)
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "sitecustomize.py").write_text(_NO_UVLOOP)
    out = tmp_path / "result.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stub), env.get("PYTHONPATH")]))
    probe = subprocess.run([sys.executable, "-c", "import uvloop"], capture_output=True, env=env, timeout=60)
    if probe.returncode == 0:
        pytest.skip("another sitecustomize module comes first on this interpreter's path")
    cmd = [sys.executable, str(RUN), "--scenarios", "reqresp", "--servers", "uvloop,asyncio-protocol,asynframe-c"]
    cmd += ["--duration", "0.2", "--repeats", "1", "--warmup", "0.1", "--connections", "2"]
    cmd += ["--rotation-cycles", "2", "--json", str(out), "--no-chart"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=100, cwd=str(REPO), env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rotation = json.loads(out.read_text())["rotation"]
    have = _installed()
    if not have["asynframe-c"]:
        assert rotation["status"] == "skipped"
        return
    assert rotation["status"] == "ok", rotation.get("note")
    assert list(rotation["servers"]) == ["asynframe-c", "uvloop", "asyncio-protocol"]
    assert rotation["servers"]["uvloop"]["status"] == "skipped"
    assert rotation["reference"] is None
    for server in ("asynframe-c", "asyncio-protocol"):
        assert rotation["servers"][server]["messages"] > 0
        assert "user_ratio" not in rotation["servers"][server]
