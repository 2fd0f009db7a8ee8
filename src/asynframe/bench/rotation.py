"""Request/response CPU per message, with the servers measured in turns.

Measured one after another, as ``run_cell`` does, two servers' user-space
CPU per message differ by what the machine did during each one's minute
as much as by their code: on a shared two-core VM one server's figure moved
by 10-40 % from run to run, more than the difference being measured.

Here the selected servers run side by side, all pinned to the server CPU,
and one load generator (``loadgen.py --mode rotate``) drives each in turn
for one window, for several rounds, reversing the order every other round.
Slow changes of the machine then fall on every server alike.  A server's
figures are summed over all its windows; the ratio to the reference server
is also given per round (the median of the rounds' ratios), which pairs
windows that lie seconds apart.

The user-space part comes from the kernel's clock ticks (``/proc/PID/stat``),
the total from the exact ``schedstat`` time, as in ``cell``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from typing import Any, Dict, List, Optional

from .cell import (
    SLACK,
    CellError,
    _connections,
    _server_env,
    _skip_reason,
    _tail,
    _user_share,
    loadgen_argv,
    start_server,
)
from .probes import cpu_seconds, cpu_ticks, pin
from .processes import LineReader, spawn, stop
from .scenarios import HERE, SCENARIOS, SERVERS

# the servers measured in turns, when selected: asynframe's three callback
# styles on its own loop and the two hand-written asyncio protocols
ROTATION = ("asynframe-c", "asynframe-c-stock", "asynframe-c-frames", "uvloop", "asyncio-protocol")
ROTATION_REFERENCE = "uvloop"
SCENARIO = "reqresp"


def rotation_servers(server_list: List[str]) -> List[str]:
    """The selected servers that take part, in ROTATION's order."""
    return [s for s in ROTATION if s in server_list]


def _start_servers(names: List[str], cpus: Optional[tuple], started: list, readers: list, errors: list):
    """Start each server; (name, process, port, info) of those that run, and the skipped ones' cells."""
    live = []
    skipped: Dict[str, Dict[str, Any]] = {}
    for name in names:
        spec = SERVERS[name]
        err = tempfile.TemporaryFile()
        errors.append(err)
        srv, hello = start_server(spec, _server_env(spec), err, started, readers)
        reason = _skip_reason(hello, spec)
        if reason is not None:
            skipped[name] = reason
            continue
        pin(srv.pid, cpus[0] if cpus else None)
        live.append((name, srv, int(hello["port"]), hello.get("info", {})))
    return live, skipped


def _drive(live, opts: argparse.Namespace, cpus: Optional[tuple], started: list, readers: list, errors: list):
    """Run the load generator; its windows and, per server, the samples at each window edge."""
    sc = SCENARIOS[SCENARIO]
    conns = _connections(sc, opts)
    ports = ",".join(str(port) for _, _, port, _ in live)
    argv = loadgen_argv(["--ports", ports], "rotate", sc, conns, opts) + ["--cycles", str(opts.rotation_cycles)]
    err = tempfile.TemporaryFile()
    errors.append(err)
    lg = spawn(argv, _server_env({}), HERE, err)
    started.append(lg)
    pin(lg.pid, cpus[1] if cpus else None)
    out = LineReader(lg)
    readers.append(out)
    samples: List[List[tuple]] = [[] for _ in live]
    # connecting and the warm-up of every server come before the first mark
    timeout = len(live) * opts.warmup + opts.duration + SLACK
    while True:
        try:
            ev = out.read(timeout)
        except TimeoutError:
            raise CellError("load generator stalled: " + _tail(err)) from None
        if ev is None:
            raise CellError(f"load generator exited (rc={lg.wait()}): " + _tail(err))
        kind = ev.get("event")
        if kind == "mark":
            pid = live[ev["server"]][1].pid
            samples[ev["server"]].append((cpu_seconds(pid), cpu_ticks(pid)))
            assert lg.stdin is not None
            lg.stdin.write(b"\n")
            lg.stdin.flush()
            timeout = opts.duration + SLACK
        elif kind == "result":
            return ev["windows"], samples, conns
        elif kind == "error":
            raise CellError("load generator: " + ev.get("message", "?"))


def _server_figures(windows: List[Dict[str, Any]], samples: List[tuple]) -> Dict[str, Any]:
    """One server's sums over its windows, and its user-space µs/msg per window."""
    messages = wall = cpu = 0.0
    user_ticks = kernel_ticks = 0
    per_window = []
    # samples: a (start, end) pair per window, in the windows' order
    for w, (start, end) in zip(windows, zip(samples[::2], samples[1::2])):
        (c0, t0), (c1, t1) = start, end
        if c0 is None or c1 is None or t0 is None or t1 is None or not w["count"]:
            continue
        user, kernel = t1[0] - t0[0], t1[1] - t0[1]
        messages += w["count"]
        wall += w["wall"]
        cpu += c1 - c0
        user_ticks += user
        kernel_ticks += kernel
        per_window.append((w["cycle"], (c1 - c0) * _user_share(t0, t1) / w["count"] * 1e6))
    if not messages:
        return {"status": "failed", "note": "no message was measured"}
    # the same share of all the windows' ticks together
    share = _user_share((0, 0), (user_ticks, kernel_ticks))
    return {
        "status": "ok",
        "messages": int(messages),
        "msg_per_s": messages / wall,
        "server_us_per_msg": cpu / messages * 1e6,
        "server_user_us_per_msg": cpu * share / messages * 1e6,
        "user_ticks": user_ticks,
        "kernel_ticks": kernel_ticks,
        "window_user_us_per_msg": per_window,
    }


def _add_ratios(cells: Dict[str, Dict[str, Any]], reference: str) -> None:
    """Each server's user µs/msg over the reference's: of the sums, and the median of the rounds."""
    ref = cells[reference]
    ref_rounds = dict(ref["window_user_us_per_msg"])
    for cell in cells.values():
        if cell.get("status") != "ok":
            continue
        cell["user_ratio"] = cell["server_user_us_per_msg"] / ref["server_user_us_per_msg"]
        rounds = [value / ref_rounds[cycle] for cycle, value in cell["window_user_us_per_msg"] if ref_rounds.get(cycle)]
        cell["user_ratio_rounds_median"] = statistics.median(rounds) if rounds else None


def run_rotation(servers: List[str], opts: argparse.Namespace, cpus: Optional[tuple], progress) -> Dict[str, Any]:
    """Measure *servers* in turns on the reqresp load; the document's ``rotation`` entry."""
    doc: Dict[str, Any] = {
        "scenario": SCENARIO,
        "cycles": opts.rotation_cycles,
        "window": opts.duration,
        "servers": {},
        "reference": None,
    }
    started: list = []
    readers: list = []
    errors: list = []
    try:
        live, skipped = _start_servers(servers, cpus, started, readers, errors)
        doc["servers"].update(skipped)
        if len(live) < 2:
            doc["status"] = "skipped"
            doc["note"] = "fewer than two of its servers can run here"
            return doc
        progress(f"{len(live)} servers, {opts.rotation_cycles} rounds of {opts.duration:g} s windows ...")
        windows, samples, conns = _drive(live, opts, cpus, started, readers, errors)
        for name, srv, _, _ in live:
            if srv.poll() is not None:
                raise CellError(f"{name} died during the run")
    except CellError as exc:
        doc["status"] = "failed"
        doc["note"] = str(exc)
        return doc
    finally:
        for reader in readers:
            reader.close()
        for proc in reversed(started):  # the load generator first
            stop(proc)
        for err in errors:
            err.close()
    doc["status"] = "ok"
    doc["conns"] = conns
    cells = dict(skipped)
    for index, (name, _, _, info) in enumerate(live):
        mine = [w for w in windows if w["server"] == index]
        cells[name] = _server_figures(mine, samples[index])
        cells[name]["server_info"] = info
    # in the order of ROTATION, the skipped ones included
    doc["servers"] = {name: cells[name] for name in servers}
    if doc["servers"].get(ROTATION_REFERENCE, {}).get("status") == "ok":
        doc["reference"] = ROTATION_REFERENCE
        _add_ratios(doc["servers"], ROTATION_REFERENCE)
    return doc
