"""Compare asynframe with stdlib asynchat, asyncio, uvloop and Twisted.

    asynframe-bench                     # full run (~10 minutes)
    asynframe-bench --quick             # under 2 minutes
    asynframe-bench --list              # servers and scenarios

(also ``python -m asynframe.bench``, and ``python benchmarks/run.py`` in a
checkout, which runs this same module).  Every (server, scenario) pair gets
a fresh server process (an echo server from ``asynframe/bench/servers/``)
bound to 127.0.0.1, and a fresh load generator process
(``asynframe/bench/loadgen.py``).  On a machine with two or more CPUs the
two are pinned to different CPUs.  After a warm-up the load generator
measures ``--repeats`` windows of ``--duration`` seconds; the runner samples
the server's CPU time and memory at the window edges.

Output: one progress line per pair, then tables (median (min-max) per cell,
ratio to asynframe-c, CPU use of the load generator and the server, peak
server RSS), a JSON file in the results directory (``latest.json`` is the newest:
``./asynframe-bench-results/``, or ``benchmarks/results/`` when run as
``benchmarks/run.py``) and, when matplotlib is importable, a PNG bar chart
next to it.  Servers whose library is not installed are skipped with a note
(``pip install "asynframe[bench]"`` installs them all).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
# the directory holding the asynframe package this runner belongs to: the
# servers import asynframe from there too, so they run the code under test
# (a wheel's site-packages, or a checkout's src/ built in place)
PACKAGE_PARENT = HERE.parent.parent
SERVERS_DIR = HERE / "servers"
LOADGEN = HERE / "loadgen.py"
DEFAULT_RESULTS_DIR = Path("asynframe-bench-results")
REFERENCE = "asynframe-c"
NOISE = 0.25  # CPUs' worth of foreign work above which a measurement is flagged

# ---------------------------------------------------------------------------
# what is measured

SERVERS: Dict[str, Dict[str, Any]] = {
    "asynframe-c": {
        "argv": ["asynchat_echo.py", "--impl", "asynframe"],
        "env": {"ASYNFRAME_NO_EXTENSIONS": None},
        "expect_core": "c",
        "about": "asynframe.asynchat/asyncore, compiled core",
    },
    "asynframe-py": {
        "argv": ["asynchat_echo.py", "--impl", "asynframe"],
        "env": {"ASYNFRAME_NO_EXTENSIONS": "1"},
        "expect_core": "python",
        "about": "asynframe.asynchat/asyncore, ASYNFRAME_NO_EXTENSIONS=1",
    },
    "stdlib-asynchat": {
        "argv": ["asynchat_echo.py", "--impl", "stdlib"],
        "about": "stdlib asynchat/asyncore (pyasynchat/pyasyncore on 3.12+), same code",
    },
    "asynframe-aio": {
        "argv": ["aio_echo.py"],
        "env": {"ASYNFRAME_NO_EXTENSIONS": None},
        "about": "the same async_chat code on asynframe.aio.ChatProtocol, asyncio loop",
    },
    "asynframe-uvloop": {
        "argv": ["aio_echo.py", "--uvloop"],
        "env": {"ASYNFRAME_NO_EXTENSIONS": None},
        "about": "the same async_chat code on asynframe.aio.ChatProtocol, uvloop",
    },
    "asyncio-protocol": {
        "argv": ["asyncio_protocol_echo.py"],
        "about": "asyncio.Protocol, hand-written line split",
    },
    "asyncio-streams": {
        "argv": ["asyncio_streams_echo.py"],
        "about": "asyncio.start_server + readuntil + drain",
    },
    "uvloop": {
        "argv": ["asyncio_protocol_echo.py", "--uvloop"],
        "about": "the asyncio-protocol server on uvloop",
    },
    "twisted": {
        "argv": ["twisted_echo.py"],
        "about": "twisted LineReceiver, default reactor",
    },
}

SCENARIOS: Dict[str, Dict[str, Any]] = {
    "pipelined": {
        "title": "pipelined 32 B lines",
        "mode": "window", "conns": 10, "depth": 100, "size": 32, "unit": "msg/s",
        "about": "10 connections, 100 lines in flight each, 32-byte lines",
    },
    "reqresp": {
        "title": "request/response 64 B",
        "mode": "window", "conns": 100, "depth": 1, "size": 64, "unit": "msg/s",
        "about": "100 connections, 1 request in flight each, 64-byte lines",
    },
    "large": {
        "title": "large 16 KiB messages",
        "mode": "window", "conns": 10, "depth": 4, "size": 16384, "unit": "MB/s",
        "about": "10 connections, 4 x 16 KiB lines in flight each; MB/s = 10^6 bytes echoed back per second",
    },
    "idle": {
        "title": "req/resp + idle conns",
        "mode": "idle", "conns": 10, "depth": 1, "size": 64, "unit": "msg/s",
        "about": "10 connections doing request/response (64 B) while N idle connections are open; "
                 "compared with the same 10 connections and no idle ones",
    },
    "accept": {
        "title": "connect+echo+close",
        "mode": "accept", "conns": 20, "size": 64, "unit": "conn/s",
        "about": "20 parallel cycles of connect, one 64-byte echo, close",
    },
}

FULL = {"duration": 3.0, "repeats": 3, "warmup": 1.0, "idle": 10000}
QUICK = {"duration": 1.0, "repeats": 1, "warmup": 0.3, "idle": 2000}

# ---------------------------------------------------------------------------
# child processes: every one is tracked and always killed

_children: List[subprocess.Popen] = []


def _spawn(argv: List[str], env: Dict[str, str], cwd: Path, stderr) -> subprocess.Popen:
    proc = subprocess.Popen(
        argv, cwd=str(cwd), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=stderr, start_new_session=True)  # no terminal Ctrl-C in children
    _children.append(proc)
    return proc


def _stop(proc: subprocess.Popen, grace: float = 2.0) -> None:
    try:
        if proc.poll() is None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()  # servers exit on stdin EOF
            except OSError:
                pass
            try:
                proc.wait(0.2)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:  # the child's own session: anything it forked dies with it
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    for f in (proc.stdin, proc.stdout):
        try:
            if f:
                f.close()
        except OSError:
            pass
    if proc in _children:
        _children.remove(proc)


def _stop_all() -> None:
    for proc in list(_children):
        _stop(proc, grace=0.5)


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class LineReader:
    """Read JSON lines from a child's stdout with timeouts."""

    def __init__(self, proc: subprocess.Popen):
        assert proc.stdout is not None, "started with stdout=PIPE"
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.fd, selectors.EVENT_READ)

    def read(self, timeout: float) -> Optional[Dict[str, Any]]:
        """Next JSON object; None at EOF; TimeoutError if none in *timeout* s."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sel.select(left):
                raise TimeoutError(f"no output for {timeout:.0f}s")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return {"event": "garbage", "line": line.decode("utf-8", "replace")}

    def close(self):
        self.sel.close()


# ---------------------------------------------------------------------------
# /proc probes (Linux); psutil as a fallback elsewhere

def _proc_status(pid: int) -> Dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
        return out
    except OSError:
        pass
    try:
        import psutil

        mi = psutil.Process(pid).memory_info()
        out["VmRSS"] = mi.rss
        out["VmHWM"] = getattr(mi, "peak_wset", None) or mi.rss
    except Exception:
        pass
    return out


def _cpu_ticks(pid: int) -> Optional[Tuple[int, int]]:
    """User and kernel clock ticks of *pid* so far (10 ms sampling)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def _cpu_seconds(pid: int) -> Optional[float]:
    """CPU time used by *pid* so far (ns resolution where schedstat exists)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except Exception:
        return None


def _system_busy_seconds() -> Optional[float]:
    """CPU seconds all tasks on the machine ran so far, plus hypervisor steal.

    From /proc/stat: user + nice + system + steal.  Interrupt and softirq
    time are left out: loopback TCP work shows up there and belongs to the
    processes being measured, not to anyone else.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        steal = fields[7] if len(fields) > 7 else 0
        return (fields[0] + fields[1] + fields[2] + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _background_load(seconds: float = 0.5) -> Optional[float]:
    """How many CPUs' worth of work other processes do right now."""
    a = _system_busy_seconds()
    time.sleep(seconds)
    b = _system_busy_seconds()
    if a is None or b is None:
        return None
    return (b - a) / seconds


def _wait_quiet(limit: float, progress) -> Optional[float]:
    """Wait up to *limit* s for other processes to calm down; last load seen."""
    deadline = time.monotonic() + limit
    load = _background_load(0.3)
    told = False
    while load is not None and load > NOISE and time.monotonic() < deadline:
        if not told:
            progress(f"waiting for other processes to go quiet ({load * 100:.0f}% cpu) ...")
            told = True
        load = _background_load(1.0)
    return load


def _pick_cpus() -> Optional[tuple]:
    """Two CPUs on different cores if possible: (server, load generator)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    if len(cpus) < 2:
        return None
    first = cpus[0]
    siblings = {first}
    try:
        text = Path(f"/sys/devices/system/cpu/cpu{first}/topology/thread_siblings_list").read_text()
        for part in text.strip().split(","):
            lo, _, hi = part.partition("-")
            siblings.update(range(int(lo), int(hi or lo) + 1))
    except (OSError, ValueError):
        pass
    others = [c for c in cpus if c not in siblings] or cpus[1:]
    return first, others[0]


def _pin(pid: int, cpu: Optional[int]) -> None:
    if cpu is None:
        return
    try:
        os.sched_setaffinity(pid, {cpu})
    except (AttributeError, OSError):
        pass


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            target = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    except (ValueError, OSError):
        return soft


def _ephemeral_ports() -> Optional[int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(hi) - int(lo) + 1
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------
# machine description

def _machine_info() -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "kernel": platform.release(),
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
    }
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["cpu_model"] = model or platform.processor() or "unknown"
    try:
        info["cpu_affinity"] = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    versions = {}
    try:
        from importlib import metadata

        for dist in ("asynframe", "uvloop", "twisted", "pyasyncore", "pyasynchat", "psutil", "matplotlib"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
    except ImportError:
        pass
    info["packages"] = versions
    try:
        import asynframe

        info["asynframe_core"] = asynframe.CORE_IMPLEMENTATION
    except Exception:
        pass
    return info


# ---------------------------------------------------------------------------
# one (server, scenario) measurement

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


def run_cell(server: str, scenario: str, opts: argparse.Namespace,
             cpus: Optional[tuple], progress) -> Dict[str, Any]:
    spec = SERVERS[server]
    sc = SCENARIOS[scenario]
    env = _server_env(spec)
    srv_err = tempfile.TemporaryFile()
    lg_err = tempfile.TemporaryFile()
    srv = lg = None
    readers: List[LineReader] = []
    try:
        srv = _spawn([sys.executable] + spec["argv"], env, SERVERS_DIR, srv_err)
        srv_out = LineReader(srv)
        readers.append(srv_out)
        try:
            hello = srv_out.read(60.0)
        except TimeoutError:
            raise CellError("server did not report its port within 60s: " + _tail(srv_err)) from None
        if hello is None:
            raise CellError(f"server exited (rc={srv.wait()}): " + _tail(srv_err))
        if "skip" in hello:
            return {"status": "skipped", "note": hello["skip"]}
        port = int(hello["port"])
        info = hello.get("info", {})
        expect = spec.get("expect_core")
        if expect and info.get("core") != expect:
            return {"status": "skipped", "server_info": info,
                    "note": f"asynframe reports the {info.get('core')!r} core here, not {expect!r}"}
        _pin(srv.pid, cpus[0] if cpus else None)

        conns = sc["conns"]
        if opts.connections:
            conns = max(1, min(conns, opts.connections))
        argv = [sys.executable, str(LOADGEN), "--port", str(port), "--mode", sc["mode"],
                "--conns", str(conns), "--depth", str(sc.get("depth", 1)),
                "--size", str(sc["size"]), "--warmup", str(opts.warmup),
                "--duration", str(opts.duration), "--repeats", str(opts.repeats)]
        if sc["mode"] == "idle":
            argv += ["--idle", str(opts.idle), "--setup-timeout", str(opts.setup_timeout)]
        lg = _spawn(argv, env, HERE, lg_err)
        _pin(lg.pid, cpus[1] if cpus else None)
        lg_out = LineReader(lg)
        readers.append(lg_out)

        marks: Dict[str, List[tuple]] = {}
        rss_marks: Dict[str, int] = {}
        result = None
        slack = 30.0
        timeout = opts.warmup + opts.duration + slack
        while True:
            try:
                ev = lg_out.read(timeout)
            except TimeoutError:
                raise CellError("load generator stalled: " + _tail(lg_err)) from None
            if ev is None:
                raise CellError(f"load generator exited (rc={lg.wait()}): " + _tail(lg_err)
                                + (" | server: " + _tail(srv_err) if srv.poll() is not None else ""))
            kind = ev.get("event")
            if kind == "mark":
                marks.setdefault(ev["phase"], []).append(
                    (time.perf_counter(), _cpu_seconds(srv.pid), _system_busy_seconds(),
                     _cpu_ticks(srv.pid)))
                timeout = opts.duration + slack
            elif kind == "idle_start":
                rss_marks["before_idle"] = _proc_status(srv.pid).get("VmRSS", 0)
                progress(f"opening {ev['count']} idle connections ...")
                timeout = opts.setup_timeout + slack
            elif kind == "idle_progress":
                progress(f"opening idle connections: {ev['done']}/{ev['count']}")
            elif kind == "idle_ready":
                rss_marks["with_idle"] = _proc_status(srv.pid).get("VmRSS", 0)
                timeout = opts.warmup + opts.duration + slack
            elif kind == "result":
                result = ev
                break
            elif kind == "error":
                raise CellError("load generator: " + ev.get("message", "?")
                                + (" | server: " + _tail(srv_err) if _tail(srv_err) else ""))
        status = _proc_status(srv.pid)
        if srv.poll() is not None:
            raise CellError("server died during the run: " + _tail(srv_err))
    except CellError as exc:
        return {"status": "failed", "note": str(exc)}
    finally:
        for reader in readers:
            reader.close()
        for proc in (lg, srv):
            if proc is not None:
                _stop(proc)
        srv_err.close()
        lg_err.close()

    def summarise(windows, phase):
        scale = sc["size"] / 1e6 if sc["unit"] == "MB/s" else 1.0
        values = [w["count"] * scale / w["wall"] for w in windows]
        lg_cpu = [w["cpu"] / w["wall"] for w in windows]
        lg_user = [w.get("cpu_user", 0.0) / w["wall"] for w in windows]
        pts = marks.get(phase, [])
        srv_cpu, srv_user, other = [], [], []
        for i, ((t0, c0, s0, u0), (t1, c1, s1, u1)) in enumerate(zip(pts, pts[1:])):
            dt = t1 - t0
            if c0 is None or c1 is None or dt <= 0:
                continue
            srv_cpu.append((c1 - c0) / dt)
            # the rest is the kernel: on loopback a send also runs the
            # receiver's TCP input, so it bounds every server alike
            # ticks are sampled, the total is exact: the ticks only give the
            # user share, so the user part can never exceed the total
            user_share = 0.0
            if u0 is not None and u1 is not None:
                user_ticks, kernel_ticks = u1[0] - u0[0], u1[1] - u0[1]
                if user_ticks + kernel_ticks > 0:
                    user_share = user_ticks / (user_ticks + kernel_ticks)
            srv_user.append(srv_cpu[-1] * user_share)
            if s0 is not None and s1 is not None and i < len(lg_cpu):
                # everything else the machine did, minus server and load generator
                other.append(max(0.0, (s1 - s0 - (c1 - c0)) / dt - lg_cpu[i]))
        # the server's CPU time per message (per connection for accept):
        # where the kernel bounds every server's throughput, this is what
        # still tells them apart
        per_msg = []  # (total, user) µs per message, one pair per window
        for i, w in enumerate(windows[:len(srv_cpu)]):
            if w["count"]:
                per_msg.append((srv_cpu[i] * w["wall"] / w["count"] * 1e6,
                                srv_user[i] * w["wall"] / w["count"] * 1e6))
        # the median window by total, with its own user part (two separate
        # medians could come from different windows: user above total)
        median_window = sorted(per_msg)[(len(per_msg) - 1) // 2] if per_msg else (None, None)
        return {
            "values": values,
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "loadgen_cpu": lg_cpu,
            "loadgen_user_cpu": lg_user,
            "server_cpu": srv_cpu,
            "server_user_cpu": srv_user,
            "server_us_per_msg": median_window[0],
            "server_user_us_per_msg": median_window[1],
            "other_cpu": other,
        }

    cell: Dict[str, Any] = {"status": "ok", "server_info": info, "conns": conns}
    cell.update(summarise(result["windows"], "main"))
    cell["peak_rss"] = status.get("VmHWM") or status.get("VmRSS")
    if result.get("errors"):
        cell["connection_errors"] = result["errors"]
    if sc["mode"] == "idle":
        base = cell
        with_idle = summarise(result["idle_windows"], "idle")
        cell = dict(base)
        cell.update(with_idle)
        cell["baseline"] = {k: base[k] for k in ("values", "median", "min", "max", "loadgen_cpu",
                                                 "loadgen_user_cpu", "server_cpu", "server_user_cpu",
                                                 "other_cpu")}
        cell["idle_count"] = result["idle_count"]
        cell["idle_setup_seconds"] = result["idle_setup_seconds"]
        cell["idle_ratio"] = with_idle["median"] / base["median"] if base["median"] else None
        before, after = rss_marks.get("before_idle"), rss_marks.get("with_idle")
        cell["rss_before_idle"], cell["rss_with_idle"] = before, after
        if before and after and result["idle_count"]:
            cell["rss_per_idle_conn"] = (after - before) / result["idle_count"]
    return cell


# ---------------------------------------------------------------------------
# presentation

def fmt_num(v: Optional[float]) -> str:
    if v is None:
        return "-"
    a = abs(v)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= scale * 0.9995:
            v, a = v / scale, a / scale
            break
    else:
        suffix = ""
    if a >= 100:
        s = f"{v:.0f}"
    elif a >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return s + suffix


def fmt_cell(cell: Optional[Dict[str, Any]]) -> str:
    if not cell:
        return "-"
    if cell["status"] != "ok":
        return cell["status"]
    if cell["min"] == cell["max"]:
        return fmt_num(cell["median"])
    return f"{fmt_num(cell['median'])} ({fmt_num(cell['min'])}-{fmt_num(cell['max'])})"


def _table(header: List[str], rows: List[List[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(r):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append(line(r) if r else "")
    return "\n".join(out)


def reference_server(doc: Dict[str, Any]) -> Optional[str]:
    servers = doc["servers_run"]
    ok = [s for s in servers if any(doc["results"].get(sc, {}).get(s, {}).get("status") == "ok"
                                    for sc in doc["scenarios_run"])]
    if REFERENCE in ok:
        return REFERENCE
    return ok[0] if ok else None


def _busiest_server_window(cell: Dict[str, Any]) -> Tuple[Optional[float], Optional[float]]:
    """The server's CPU share and its user-space part in its busiest window."""
    totals = cell.get("server_cpu") or []
    if not totals:
        return None, None
    i = totals.index(max(totals))
    users = cell.get("server_user_cpu") or []
    return totals[i], (users[i] if i < len(users) else None)


def render_tables(doc: Dict[str, Any]) -> str:
    servers = [s for s in doc["servers_run"]
               if any(doc["results"].get(sc, {}).get(s, {}).get("status") != "skipped"
                      for sc in doc["scenarios_run"])]
    ref = doc.get("reference")
    res = doc["results"]
    parts = []
    rows = []
    for sc in doc["scenarios_run"]:
        spec = SCENARIOS[sc]
        label = f"{sc} ({spec['unit']})"
        if sc == "idle":
            label = f"idle ({spec['unit']}, +{doc['config']['idle']} idle)"
        rows.append([label] + [fmt_cell(res[sc].get(s)) for s in servers])
        refcell = res[sc].get(ref) if ref else None
        if refcell and refcell.get("status") == "ok" and refcell["median"]:
            ratios = []
            for s in servers:
                c = res[sc].get(s)
                ratios.append(f"{c['median'] / refcell['median']:.2f}x" if c and c.get("status") == "ok" else "-")
            rows.append([f"  vs {ref}"] + ratios)
        if sc == "idle":
            rows.append(["  no idle conns"] + [fmt_cell(dict(res[sc][s]["baseline"], status="ok"))
                                               if res[sc].get(s, {}).get("status") == "ok" else "-"
                                               for s in servers])
            rows.append(["  with/without idle"] + [
                f"{res[sc][s]['idle_ratio']:.2f}" if res[sc].get(s, {}).get("idle_ratio") else "-"
                for s in servers])
            rows.append(["  RSS per idle conn"] + [
                f"{res[sc][s]['rss_per_idle_conn'] / 1024:.1f} KiB"
                if res[sc].get(s, {}).get("rss_per_idle_conn") is not None else "-"
                for s in servers])
    parts.append("Throughput: median (min-max) over %d x %gs windows%s"
                 % (doc["config"]["repeats"], doc["config"]["duration"],
                    f"; ratio = median / median of {ref}" if ref else ""))
    parts.append(_table(["scenario"] + servers, rows))

    rows = []
    for sc in doc["scenarios_run"]:
        row = [sc]
        for s in servers:
            c = res[sc].get(s)
            if c and c.get("status") == "ok":
                i = c["loadgen_cpu"].index(max(c["loadgen_cpu"]))
                lg = c["loadgen_cpu"][i] * 100
                user = c["loadgen_user_cpu"][i] * 100
                total, srv_user = _busiest_server_window(c)
                server = "?" if total is None else f"{total * 100:.0f}%"
                if srv_user is not None:
                    server += f" ({srv_user * 100:.0f}%)"
                row.append(f"{lg:.0f}% ({user:.0f}%) / " + server)
            else:
                row.append("-")
        rows.append(row)
    parts.append("\nCPU use, % of one CPU (busiest window), user-space part in parentheses:"
                 " load generator / server")
    parts.append(_table(["scenario"] + servers, rows))

    rows = []
    for sc in doc["scenarios_run"]:
        row = [sc]
        for s in servers:
            c = res[sc].get(s)
            if c and c.get("status") == "ok" and c.get("server_us_per_msg") is not None:
                row.append(f"{c['server_us_per_msg']:.2f} ({c['server_user_us_per_msg']:.2f})")
            else:
                row.append("-")
        rows.append(row)
    parts.append("\nCPU µs/msg: server CPU time per message (per connection for accept),"
                 " in the median window, user-space part in parentheses")
    parts.append(_table(["scenario"] + servers, rows))

    rows = []
    for sc in doc["scenarios_run"]:
        row = [sc]
        for s in servers:
            c = res[sc].get(s)
            row.append(f"{c['peak_rss'] / 2**20:.1f}" if c and c.get("status") == "ok" and c.get("peak_rss") else "-")
        rows.append(row)
    parts.append("\nPeak server RSS (MiB)")
    parts.append(_table(["scenario"] + servers, rows))

    notes = []
    for s in doc["servers_run"]:
        for sc in doc["scenarios_run"]:
            c = res[sc].get(s)
            if c and c["status"] == "skipped":
                notes.append(f"{s}: skipped: {c.get('note', '')}")
                break  # one note per skipped server is enough
            if c and c["status"] != "ok":
                notes.append(f"{s} / {sc}: {c['status']}: {c.get('note', '')}")
    busy = []
    for sc in doc["scenarios_run"]:
        for s in servers:
            c = res[sc].get(s)
            if c and c.get("status") == "ok":
                if max(c["loadgen_cpu"]) > 0.9:
                    busy.append(f"{s}/{sc}")
    if busy:
        notes.append("load generator above 90% CPU (may understate the server): " + ", ".join(busy))
    measured, noisy = 0, []
    for sc in doc["scenarios_run"]:
        for s in servers:
            c = res[sc].get(s)
            if c and c.get("status") == "ok" and c.get("other_cpu"):
                measured += 1
                if max(c["other_cpu"]) > NOISE:
                    noisy.append(max(c["other_cpu"]))
    if noisy:
        notes.append(f"other processes used more than {NOISE * 100:.0f}% of a CPU during {len(noisy)} of "
                     f"{measured} measurements (up to {max(noisy) * 100:.0f}%): those numbers are noisy "
                     f"(a quieter machine, or --wait-quiet 60, helps)")
    bg = doc["machine"].get("background_cpu_load")
    if bg is not None and bg > NOISE:
        notes.append(f"before the run, other processes were using {bg * 100:.0f}% of a CPU")
    if notes:
        parts.append("\nNotes:")
        parts.extend("  - " + n for n in notes)
    parts.append("\nScenarios:")
    width = max(len(sc) for sc in doc["scenarios_run"])
    for sc in doc["scenarios_run"]:
        parts.append(f"  {sc:<{width}}  {SCENARIOS[sc]['about']}")
    config = doc["config"]
    if config.get("quick"):
        parts.append(f"  --quick: {config['repeats']} x {config['duration']:g} s window per pair and "
                     f"{config['idle']} idle connections (the full run: "
                     f"{FULL['repeats']} x {FULL['duration']:g} s, {FULL['idle']} idle): a smoke test")
    else:
        parts.append(f"  each pair: {config['repeats']} x {config['duration']:g} s windows; --quick runs "
                     f"{QUICK['repeats']} x {QUICK['duration']:g} s and {QUICK['idle']} idle connections")
    return "\n".join(parts)


def write_chart(doc: Dict[str, Any], path: Path) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # not installed, or broken
        return f"no chart: matplotlib unavailable ({type(exc).__name__})"
    ref = doc.get("reference")
    if not ref:
        return "no chart: no reference server"
    res = doc["results"]
    scenarios = [sc for sc in doc["scenarios_run"]
                 if res[sc].get(ref, {}).get("status") == "ok"]
    servers = [s for s in doc["servers_run"]
               if any(res[sc].get(s, {}).get("status") == "ok" for sc in scenarios)]
    if not scenarios or not servers:
        return "no chart: nothing to plot"
    fig, ax = plt.subplots(figsize=(max(8, 1.7 * len(scenarios) + 3.5), 4.8))
    width = 0.8 / len(servers)
    for i, s in enumerate(servers):
        xs, ys, lo, hi = [], [], [], []
        for j, sc in enumerate(scenarios):
            c = res[sc].get(s)
            if c and c.get("status") == "ok":
                base = res[sc][ref]["median"]
                xs.append(j + (i - (len(servers) - 1) / 2) * width)
                ys.append(c["median"] / base)
                lo.append(ys[-1] - c["min"] / base)
                hi.append(c["max"] / base - ys[-1])
        ax.bar(xs, ys, width, label=s, yerr=[lo, hi], capsize=2,
               error_kw={"elinewidth": 0.8, "alpha": 0.7})
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels([f"{sc}\n({SCENARIOS[sc]['unit']})" for sc in scenarios])
    ax.set_ylabel(f"throughput relative to {ref} (median; bars: min-max)")
    m = doc["machine"]
    ax.set_title(f"echo servers on 127.0.0.1 - {m['cpu_model']}, Python {m['python']}, {m['date'][:10]}",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
    return None


# ---------------------------------------------------------------------------

def parse_args(argv: Optional[List[str]] = None,
               results_dir: Path = DEFAULT_RESULTS_DIR) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Echo-server benchmark: asynframe vs stdlib asynchat, asyncio, uvloop, twisted.")
    ap.add_argument("--quick", action="store_true",
                    help="short run (1 repeat of 1 s, %d idle connections), under 2 minutes" % QUICK["idle"])
    ap.add_argument("--servers", help="comma-separated subset of: " + ",".join(SERVERS))
    ap.add_argument("--scenarios", help="comma-separated subset of: " + ",".join(SCENARIOS))
    ap.add_argument("--repeats", type=int, help="measured windows per pair (default 3, quick 1)")
    ap.add_argument("--duration", type=float, help="seconds per window (default 3, quick 1)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds before measuring (default 1, quick 0.3)")
    ap.add_argument("--idle", type=int, help="idle connections in the idle scenario (default 10000, quick 2000)")
    ap.add_argument("--json", metavar="PATH",
                    help="write the JSON here (default: <results directory>/<time>.json)")
    ap.add_argument("--results-dir", metavar="DIR", type=Path, default=results_dir,
                    help="where the JSON, latest.json and the chart go (default: %(default)s)")
    ap.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and load generator to CPUs")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each measurement wait up to S seconds while other processes "
                         "use more than %d%%%% of a CPU (for shared machines)" % (NOISE * 100))
    ap.add_argument("--list", action="store_true", help="list servers and scenarios, then exit")
    # hidden knobs for the test-suite
    ap.add_argument("--connections", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--setup-timeout", type=float, default=300.0, help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    base = QUICK if opts.quick else FULL
    for key, value in base.items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    opts.server_list = _pick(opts.servers, SERVERS, "server", ap)
    opts.scenario_list = _pick(opts.scenarios, SCENARIOS, "scenario", ap)
    if opts.repeats < 1 or opts.duration <= 0 or opts.warmup < 0 or opts.idle < 0:
        ap.error("--repeats must be >= 1, --duration > 0, --warmup and --idle >= 0")
    return opts


def _pick(text, known, what, ap):
    if not text:
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        ap.error(f"unknown {what}(s): {', '.join(bad)}; choose from {', '.join(known)}")
    return [n for n in known if n in names]  # keep the canonical order


def main(argv: Optional[List[str]] = None, results_dir: Path = DEFAULT_RESULTS_DIR) -> int:
    """Run the comparison; *argv* as on the command line (default sys.argv[1:]).

    *results_dir* is the default of ``--results-dir``: ``benchmarks/run.py``
    in a checkout passes ``benchmarks/results``.
    """
    opts = parse_args(argv, results_dir)
    if opts.list:
        print("servers:")
        for name, spec in SERVERS.items():
            print(f"  {name:<18} {spec['about']}")
        print("scenarios:")
        for name, spec in SCENARIOS.items():
            print(f"  {name:<18} {spec['about']} -> {spec['unit']}")
        return 0

    signal.signal(signal.SIGTERM, _on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _on_signal)

    nofile = _raise_nofile()
    notes = []
    if "idle" in opts.scenario_list:
        # server and load generator each hold idle + active + a few spare fds
        room = nofile - SCENARIOS["idle"]["conns"] - 64
        ports = _ephemeral_ports()
        if ports:
            room = min(room, ports - 2000)
        if opts.idle > room:
            notes.append(f"idle connections reduced from {opts.idle} to {room} "
                         f"(RLIMIT_NOFILE {nofile}, ephemeral ports {ports})")
            opts.idle = max(0, room)
    cpus = None if opts.no_pin else _pick_cpus()

    machine = _machine_info()
    background = _background_load()
    machine["background_cpu_load"] = background
    machine["rlimit_nofile"] = nofile
    machine["pinning"] = {"server_cpu": cpus[0], "loadgen_cpu": cpus[1]} if cpus else None
    doc: Dict[str, Any] = {
        "schema": 1,
        "machine": machine,
        "config": {
            "quick": opts.quick, "duration": opts.duration, "repeats": opts.repeats,
            "warmup": opts.warmup, "idle": opts.idle, "connections_cap": opts.connections,
            "wait_quiet": opts.wait_quiet, "pinned": bool(cpus),
        },
        "servers": {name: {"about": SERVERS[name]["about"]} for name in opts.server_list},
        "scenarios": {name: dict(SCENARIOS[name]) for name in opts.scenario_list},
        "servers_run": opts.server_list,
        "scenarios_run": opts.scenario_list,
        "results": {sc: {} for sc in opts.scenario_list},
        "notes": notes,
    }

    print(f"asynframe benchmarks: {machine['cpu_model']} x{machine['cpu_count']}, "
          f"Python {machine['python']}, RLIMIT_NOFILE {nofile}"
          + (f", server on CPU {cpus[0]}, load generator on CPU {cpus[1]}" if cpus else ""))
    if background is not None and background > NOISE:
        print(f"warning: other processes are using {background * 100:.0f}% of a CPU; "
              f"numbers will be noisy")
    for n in notes:
        print("note:", n)

    skipped: Dict[str, str] = {}
    cells = len(opts.server_list) * len(opts.scenario_list)
    index = 0
    started = time.monotonic()
    try:
        for sc in opts.scenario_list:
            unit = SCENARIOS[sc]["unit"]
            for server in opts.server_list:
                index += 1
                elapsed = time.monotonic() - started
                # remaining: the mean cell so far times the cells still to run
                left = "?" if index == 1 else "%.0fs" % (elapsed / (index - 1) * (cells - index + 1))
                head = f"[{index:2d}/{cells} {elapsed:.0f}s, {left} left] {sc:<9} {server:<17}"
                if server in skipped:
                    doc["results"][sc][server] = {"status": "skipped", "note": skipped[server]}
                    print(f"{head} skipped")
                    continue

                def progress(msg, _head=head):
                    print(f"{_head} {msg}", flush=True)

                if opts.wait_quiet > 0:
                    _wait_quiet(opts.wait_quiet, progress)
                cell = run_cell(server, sc, opts, cpus, progress)
                doc["results"][sc][server] = cell
                if cell.get("server_info"):
                    doc["servers"][server].setdefault("info", cell["server_info"])
                if cell["status"] == "skipped":
                    skipped[server] = cell["note"]
                    print(f"{head} skipped: {cell['note']}", flush=True)
                    continue
                if cell["status"] != "ok":
                    print(f"{head} FAILED: {cell['note']}", flush=True)
                    continue
                line = f"{head} {fmt_cell(cell):>22} {unit:<6}"
                i = cell["loadgen_cpu"].index(max(cell["loadgen_cpu"]))
                line += (f"  loadgen cpu {cell['loadgen_cpu'][i] * 100:3.0f}%"
                         f" (user {cell['loadgen_user_cpu'][i] * 100:2.0f}%)")
                server_cpu, srv_user = _busiest_server_window(cell)
                if server_cpu is not None:
                    line += f"  server cpu {server_cpu * 100:3.0f}%"
                    if srv_user is not None:
                        line += f" (user {srv_user * 100:2.0f}%)"
                if cell.get("peak_rss"):
                    line += f"  peak rss {cell['peak_rss'] / 2**20:.1f} MiB"
                if cell.get("other_cpu") and max(cell["other_cpu"]) > NOISE:
                    line += f"  [noisy: other processes {max(cell['other_cpu']) * 100:.0f}% cpu]"
                if sc == "idle":
                    line += (f"  | no idle: {fmt_num(cell['baseline']['median'])}"
                             f", ratio {cell['idle_ratio']:.2f}"
                             f", {cell['idle_count']} idle opened in {cell['idle_setup_seconds']:.1f}s")
                    if cell.get("rss_per_idle_conn") is not None:
                        line += f", {cell['rss_per_idle_conn'] / 1024:.1f} KiB/idle conn"
                print(line, flush=True)
    except KeyboardInterrupt:
        _stop_all()
        print("\ninterrupted; all benchmark processes stopped", file=sys.stderr)
        return 130
    finally:
        _stop_all()

    doc["skipped"] = skipped
    doc["elapsed_seconds"] = round(time.monotonic() - started, 1)
    doc["reference"] = reference_server(doc)
    table = render_tables(doc)
    doc["table"] = table
    print()
    print(table)
    print(f"\n(total {doc['elapsed_seconds']:.0f}s)")

    if opts.json:
        json_path = Path(opts.json)
        latest = None
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        json_path = opts.results_dir / f"{stamp}.json"
        latest = opts.results_dir / "latest.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    if not opts.no_chart:
        chart = json_path.with_suffix(".png")
        problem = write_chart(doc, chart)
        if problem:
            print(problem)
        else:
            doc["chart"] = str(chart)
            if latest is not None:
                shutil.copyfile(chart, latest.with_suffix(".png"))
            print(f"chart: {chart}")
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    if latest is not None:
        shutil.copyfile(json_path, latest)
    print(f"results: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
