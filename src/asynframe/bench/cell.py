"""One (server, scenario) measurement: a fresh server, a fresh load generator, one result cell.

``run_cell`` starts the echo server, then the load generator against its
port, and samples the server's CPU time and memory at every window edge
the load generator reports.  The windows and those samples become the
cell: throughput, CPU use of both processes, the server's CPU time per
message, and what other processes did meanwhile.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import IO, Any, Dict, List, Optional, Tuple

from .probes import cpu_seconds, cpu_ticks, pin, proc_status, system_busy_seconds
from .processes import LineReader, spawn, stop
from .scenarios import HERE, LOADGEN, PACKAGE_PARENT, SCENARIOS, SERVERS, SERVERS_DIR

# seconds the load generator may stay silent beyond what it was asked to do
SLACK = 30.0
# the per-window figures an idle cell keeps from its run without idle connections
BASELINE_KEYS = (
    "values",
    "median",
    "min",
    "max",
    "loadgen_cpu",
    "loadgen_user_cpu",
    "server_cpu",
    "server_user_cpu",
    "other_cpu",
)


class CellError(Exception):
    pass


def _server_env(spec: Dict[str, Any]) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # the servers import the asynframe this runner belongs to, ahead of any
    # other copy (an editable install of another checkout would otherwise win)
    src = str(PACKAGE_PARENT)
    env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
    for key, value in spec.get("env", {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _tail(f) -> str:
    try:
        f.flush()
        f.seek(0)
        text = f.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
    return text.strip()[-1500:]


class _Samples:
    """What the runner records about the server while the load generator runs."""

    def __init__(self) -> None:
        # phase -> one (wall time, server CPU s, machine busy s, server ticks) per window edge
        self.marks: Dict[str, List[tuple]] = {}
        self.rss: Dict[str, int] = {}

    def mark(self, phase: str, pid: int) -> None:
        self.marks.setdefault(phase, []).append(
            (time.perf_counter(), cpu_seconds(pid), system_busy_seconds(), cpu_ticks(pid))
        )

    def note_rss(self, when: str, pid: int) -> None:
        self.rss[when] = proc_status(pid).get("VmRSS", 0)


def _read_hello(srv: subprocess.Popen, srv_out: LineReader, srv_err: IO[bytes]) -> Dict[str, Any]:
    """The server's first line: its port and what it runs, or why it skips."""
    try:
        hello = srv_out.read(60.0)
    except TimeoutError:
        raise CellError("server did not report its port within 60s: " + _tail(srv_err)) from None
    if hello is None:
        raise CellError(f"server exited (rc={srv.wait()}): " + _tail(srv_err))
    return hello


def start_server(
    spec: Dict[str, Any],
    env: Dict[str, str],
    err: IO[bytes],
    started: List[subprocess.Popen],
    readers: List[LineReader],
) -> Tuple[subprocess.Popen, Dict[str, Any]]:
    """Start the server *spec* names (tracked in *started* and *readers*); it and its first line."""
    srv = spawn([sys.executable] + spec["argv"], env, SERVERS_DIR, err)
    started.append(srv)
    out = LineReader(srv)
    readers.append(out)
    return srv, _read_hello(srv, out, err)


def _skip_reason(hello: Dict[str, Any], spec: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """A skipped cell when the server cannot run here, or runs another core than it should."""
    if "skip" in hello:
        return {"status": "skipped", "note": hello["skip"]}
    info = hello.get("info", {})
    expect = spec.get("expect_core")
    if expect and info.get("core") != expect:
        return {
            "status": "skipped",
            "server_info": info,
            "note": f"asynframe reports the {info.get('core')!r} core here, not {expect!r}",
        }
    return None


def _connections(sc: Dict[str, Any], opts: argparse.Namespace) -> int:
    conns = sc["conns"]
    if opts.connections:
        conns = max(1, min(conns, opts.connections))
    return conns


def loadgen_argv(target: List[str], mode: str, sc: Dict[str, Any], conns: int, opts: argparse.Namespace) -> List[str]:
    """The load generator's command line for *sc*; *target*: ``--port N`` or ``--ports A,B``."""
    return [
        sys.executable,
        str(LOADGEN),
        *target,
        "--mode",
        mode,
        "--conns",
        str(conns),
        "--depth",
        str(sc.get("depth", 1)),
        "--size",
        str(sc["size"]),
        "--warmup",
        str(opts.warmup),
        "--duration",
        str(opts.duration),
    ]


def _loadgen_argv(port: int, sc: Dict[str, Any], conns: int, opts: argparse.Namespace) -> List[str]:
    argv = loadgen_argv(["--port", str(port)], sc["mode"], sc, conns, opts) + ["--repeats", str(opts.repeats)]
    if sc["mode"] == "idle":
        argv += ["--idle", str(opts.idle), "--setup-timeout", str(opts.setup_timeout)]
    return argv


def _follow_loadgen(
    lg: subprocess.Popen,
    lg_out: LineReader,
    lg_err: IO[bytes],
    srv: subprocess.Popen,
    srv_err: IO[bytes],
    opts: argparse.Namespace,
    samples: _Samples,
    progress,
) -> Dict[str, Any]:
    """Sample the server at each event of the load generator until its result line."""
    timeout = opts.warmup + opts.duration + SLACK
    while True:
        try:
            ev = lg_out.read(timeout)
        except TimeoutError:
            raise CellError("load generator stalled: " + _tail(lg_err)) from None
        if ev is None:
            raise CellError(
                f"load generator exited (rc={lg.wait()}): "
                + _tail(lg_err)
                + (" | server: " + _tail(srv_err) if srv.poll() is not None else "")
            )
        kind = ev.get("event")
        if kind == "mark":
            samples.mark(ev["phase"], srv.pid)
            timeout = opts.duration + SLACK
        elif kind == "idle_start":
            samples.note_rss("before_idle", srv.pid)
            progress(f"opening {ev['count']} idle connections ...")
            timeout = opts.setup_timeout + SLACK
        elif kind == "idle_progress":
            progress(f"opening idle connections: {ev['done']}/{ev['count']}")
        elif kind == "idle_ready":
            samples.note_rss("with_idle", srv.pid)
            timeout = opts.warmup + opts.duration + SLACK
        elif kind == "result":
            return ev
        elif kind == "error":
            raise CellError(
                "load generator: " + ev.get("message", "?") + (" | server: " + _tail(srv_err) if _tail(srv_err) else "")
            )


def run_cell(server: str, scenario: str, opts: argparse.Namespace, cpus: Optional[tuple], progress) -> Dict[str, Any]:
    spec = SERVERS[server]
    sc = SCENARIOS[scenario]
    env = _server_env(spec)
    srv_err = tempfile.TemporaryFile()
    lg_err = tempfile.TemporaryFile()
    started: List[subprocess.Popen] = []
    readers: List[LineReader] = []
    samples = _Samples()
    try:
        srv, hello = start_server(spec, env, srv_err, started, readers)
        skipped = _skip_reason(hello, spec)
        if skipped is not None:
            return skipped
        info = hello.get("info", {})
        pin(srv.pid, cpus[0] if cpus else None)

        conns = _connections(sc, opts)
        lg = spawn(_loadgen_argv(int(hello["port"]), sc, conns, opts), env, HERE, lg_err)
        started.append(lg)
        pin(lg.pid, cpus[1] if cpus else None)
        lg_out = LineReader(lg)
        readers.append(lg_out)
        result = _follow_loadgen(lg, lg_out, lg_err, srv, srv_err, opts, samples, progress)
        status = proc_status(srv.pid)
        if srv.poll() is not None:
            raise CellError("server died during the run: " + _tail(srv_err))
    except CellError as exc:
        return {"status": "failed", "note": str(exc)}
    finally:
        for reader in readers:
            reader.close()
        for proc in reversed(started):  # the load generator first, then its server
            stop(proc)
        srv_err.close()
        lg_err.close()
    return _make_cell(sc, result, samples, status, info, conns)


# ---------------------------------------------------------------------------
# from windows and samples to a cell


def _user_share(u0: Optional[Tuple[int, int]], u1: Optional[Tuple[int, int]]) -> float:
    """The user-space fraction of the server's CPU time between two tick samples."""
    # ticks are sampled, the total is exact: the ticks only give the
    # user share, so the user part can never exceed the total
    if u0 is None or u1 is None:
        return 0.0
    user_ticks, kernel_ticks = u1[0] - u0[0], u1[1] - u0[1]
    if user_ticks + kernel_ticks > 0:
        return user_ticks / (user_ticks + kernel_ticks)
    return 0.0


def _server_cpu(points: List[tuple], lg_cpu: List[float]) -> Tuple[List[float], List[float], List[float]]:
    """Per window: the server's CPU share, its user-space part, and everyone else's CPU."""
    srv_cpu: List[float] = []
    srv_user: List[float] = []
    other: List[float] = []
    for i, ((t0, c0, s0, u0), (t1, c1, s1, u1)) in enumerate(zip(points, points[1:])):
        dt = t1 - t0
        if c0 is None or c1 is None or dt <= 0:
            continue
        srv_cpu.append((c1 - c0) / dt)
        # the rest is the kernel: on loopback a send also runs the
        # receiver's TCP input, so it bounds every server alike
        srv_user.append(srv_cpu[-1] * _user_share(u0, u1))
        if s0 is not None and s1 is not None and i < len(lg_cpu):
            # everything else the machine did, minus server and load generator
            other.append(max(0.0, (s1 - s0 - (c1 - c0)) / dt - lg_cpu[i]))
    return srv_cpu, srv_user, other


def _median_cost(
    windows: List[Dict[str, Any]], srv_cpu: List[float], srv_user: List[float]
) -> Tuple[Optional[float], Optional[float]]:
    """The server's CPU µs per message (per connection for accept), total and user, median window."""
    # where the kernel bounds every server's throughput, this is what
    # still tells them apart
    per_msg = []  # (total, user) µs per message, one pair per window
    for i, w in enumerate(windows[: len(srv_cpu)]):
        if w["count"]:
            per_msg.append((srv_cpu[i] * w["wall"] / w["count"] * 1e6, srv_user[i] * w["wall"] / w["count"] * 1e6))
    # the median window by total, with its own user part (two separate
    # medians could come from different windows: user above total)
    return sorted(per_msg)[(len(per_msg) - 1) // 2] if per_msg else (None, None)


def _summarise(sc: Dict[str, Any], windows: List[Dict[str, Any]], points: List[tuple]) -> Dict[str, Any]:
    scale = sc["size"] / 1e6 if sc["unit"] == "MB/s" else 1.0
    values = [w["count"] * scale / w["wall"] for w in windows]
    lg_cpu = [w["cpu"] / w["wall"] for w in windows]
    lg_user = [w.get("cpu_user", 0.0) / w["wall"] for w in windows]
    srv_cpu, srv_user, other = _server_cpu(points, lg_cpu)
    us_per_msg, user_us_per_msg = _median_cost(windows, srv_cpu, srv_user)
    return {
        "values": values,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "loadgen_cpu": lg_cpu,
        "loadgen_user_cpu": lg_user,
        "server_cpu": srv_cpu,
        "server_user_cpu": srv_user,
        "server_us_per_msg": us_per_msg,
        "server_user_us_per_msg": user_us_per_msg,
        "other_cpu": other,
    }


def _with_idle(base: Dict[str, Any], sc: Dict[str, Any], result: Dict[str, Any], samples: _Samples) -> Dict[str, Any]:
    """The idle scenario's cell: the run with idle connections, and *base* without them."""
    with_idle = _summarise(sc, result["idle_windows"], samples.marks.get("idle", []))
    cell = dict(base)
    cell.update(with_idle)
    cell["baseline"] = {k: base[k] for k in BASELINE_KEYS}
    cell["idle_count"] = result["idle_count"]
    cell["idle_setup_seconds"] = result["idle_setup_seconds"]
    cell["idle_ratio"] = with_idle["median"] / base["median"] if base["median"] else None
    before, after = samples.rss.get("before_idle"), samples.rss.get("with_idle")
    cell["rss_before_idle"], cell["rss_with_idle"] = before, after
    if before and after and result["idle_count"]:
        cell["rss_per_idle_conn"] = (after - before) / result["idle_count"]
    return cell


def _make_cell(
    sc: Dict[str, Any],
    result: Dict[str, Any],
    samples: _Samples,
    status: Dict[str, int],
    info: Dict[str, Any],
    conns: int,
) -> Dict[str, Any]:
    cell: Dict[str, Any] = {"status": "ok", "server_info": info, "conns": conns}
    cell.update(_summarise(sc, result["windows"], samples.marks.get("main", [])))
    cell["peak_rss"] = status.get("VmHWM") or status.get("VmRSS")
    if result.get("errors"):
        cell["connection_errors"] = result["errors"]
    if sc["mode"] == "idle":
        cell = _with_idle(cell, sc, result, samples)
    return cell
