"""Compare asynframe with stdlib asynchat, asyncio, uvloop and Twisted.

    asynframe-bench                     # full run (~13 minutes)
    asynframe-bench --quick             # under 2 minutes
    asynframe-bench --list              # servers and scenarios

(also ``python -m asynframe.bench``, and ``python benchmarks/run.py`` in a
checkout, which runs this same module).  Every (server, scenario) pair gets
a fresh server process (an echo server from ``asynframe/bench/servers/``)
bound to 127.0.0.1, and a fresh load generator process
(``asynframe/bench/loadgen.py``).  On a machine with two or more CPUs the
two are pinned to different CPUs.  After a warm-up the load generator
measures ``--repeats`` windows of ``--duration`` seconds; the runner samples
the server's CPU time and memory at the window edges.  With ``reqresp``,
the request/response servers are then measured once more in turns
(``asynframe.bench.rotation``), for a CPU-per-message comparison that the
machine's slow changes affect alike.

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
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .cell import CellError, run_cell
from .chart import write_chart
from .probes import background_load, ephemeral_ports, machine_info, pick_cpus, raise_nofile, wait_quiet
from .processes import LineReader, stop_all
from .report import cell_line, fmt_cell, fmt_num, reference_server, render_tables
from .rotation import ROTATION, rotation_servers, run_rotation
from .scenarios import (
    DEFAULT_RESULTS_DIR,
    FULL,
    HERE,
    LOADGEN,
    NOISE,
    PACKAGE_PARENT,
    QUICK,
    REFERENCE,
    SCENARIOS,
    SERVERS,
    SERVERS_DIR,
)

# the names this module offered before the benchmark was split into modules
__all__ = [
    "CellError",
    "DEFAULT_RESULTS_DIR",
    "FULL",
    "HERE",
    "LOADGEN",
    "LineReader",
    "NOISE",
    "PACKAGE_PARENT",
    "QUICK",
    "REFERENCE",
    "SCENARIOS",
    "SERVERS",
    "SERVERS_DIR",
    "fmt_cell",
    "fmt_num",
    "main",
    "parse_args",
    "reference_server",
    "render_tables",
    "run_cell",
    "write_chart",
]


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# ---------------------------------------------------------------------------
# options


def parse_args(argv: Optional[List[str]] = None, results_dir: Path = DEFAULT_RESULTS_DIR) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Echo-server benchmark: asynframe vs stdlib asynchat, asyncio, uvloop, twisted."
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="short run (1 repeat of 1 s, %d idle connections), under 2 minutes" % QUICK["idle"],
    )
    ap.add_argument("--servers", help="comma-separated subset of: " + ",".join(SERVERS))
    ap.add_argument("--scenarios", help="comma-separated subset of: " + ",".join(SCENARIOS))
    ap.add_argument("--repeats", type=int, help="measured windows per pair (default 3, quick 1)")
    ap.add_argument("--duration", type=float, help="seconds per window (default 3, quick 1)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds before measuring (default 1, quick 0.3)")
    ap.add_argument("--idle", type=int, help="idle connections in the idle scenario (default 10000, quick 2000)")
    ap.add_argument("--json", metavar="PATH", help="write the JSON here (default: <results directory>/<time>.json)")
    ap.add_argument(
        "--results-dir",
        metavar="DIR",
        type=Path,
        default=results_dir,
        help="where the JSON, latest.json and the chart go (default: %(default)s)",
    )
    ap.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and load generator to CPUs")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each measurement wait up to S seconds while other processes "
        "use more than %d%%%% of a CPU (for shared machines)" % (NOISE * 100),
    )
    ap.add_argument(
        "--rotation-cycles",
        type=int,
        metavar="N",
        help="with reqresp: rounds in which %s (those selected) are measured in turns, "
        "one window each, for the CPU per message; 0: none (default %d, quick %d)"
        % (", ".join(ROTATION), FULL["rotation_cycles"], QUICK["rotation_cycles"]),
    )
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
    if opts.repeats < 1 or opts.duration <= 0 or opts.warmup < 0 or opts.idle < 0 or opts.rotation_cycles < 0:
        ap.error("--repeats must be >= 1, --duration > 0, --warmup, --idle and --rotation-cycles >= 0")
    return opts


def _pick(text, known, what, ap):
    if not text:
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        ap.error(f"unknown {what}(s): {', '.join(bad)}; choose from {', '.join(known)}")
    return [n for n in known if n in names]  # keep the canonical order


def _print_list() -> None:
    print("servers:")
    for name, spec in SERVERS.items():
        print(f"  {name:<18} {spec['about']}")
    print("scenarios:")
    for name, spec in SCENARIOS.items():
        print(f"  {name:<18} {spec['about']} -> {spec['unit']}")


# ---------------------------------------------------------------------------
# preparing the run


def _fit_idle_connections(opts: argparse.Namespace, nofile: int) -> List[str]:
    """Lower ``opts.idle`` to what the fd limit and the ephemeral ports allow; notes on why."""
    notes = []
    if "idle" in opts.scenario_list:
        # server and load generator each hold idle + active + a few spare fds
        room = nofile - SCENARIOS["idle"]["conns"] - 64
        ports = ephemeral_ports()
        if ports:
            room = min(room, ports - 2000)
        if opts.idle > room:
            notes.append(
                f"idle connections reduced from {opts.idle} to {room} (RLIMIT_NOFILE {nofile}, ephemeral ports {ports})"
            )
            opts.idle = max(0, room)
    return notes


def _new_document(opts: argparse.Namespace, nofile: int, cpus: Optional[tuple], notes: List[str]) -> Dict[str, Any]:
    """The JSON document, before any pair is measured."""
    machine = machine_info()
    machine["background_cpu_load"] = background_load()
    machine["rlimit_nofile"] = nofile
    machine["pinning"] = {"server_cpu": cpus[0], "loadgen_cpu": cpus[1]} if cpus else None
    return {
        "schema": 1,
        "machine": machine,
        "config": {
            "quick": opts.quick,
            "duration": opts.duration,
            "repeats": opts.repeats,
            "warmup": opts.warmup,
            "idle": opts.idle,
            "connections_cap": opts.connections,
            "wait_quiet": opts.wait_quiet,
            "rotation_cycles": opts.rotation_cycles,
            "pinned": bool(cpus),
        },
        "servers": {name: {"about": SERVERS[name]["about"]} for name in opts.server_list},
        "scenarios": {name: dict(SCENARIOS[name]) for name in opts.scenario_list},
        "servers_run": opts.server_list,
        "scenarios_run": opts.scenario_list,
        "results": {sc: {} for sc in opts.scenario_list},
        "notes": notes,
    }


def _print_header(doc: Dict[str, Any], cpus: Optional[tuple]) -> None:
    machine = doc["machine"]
    print(
        f"asynframe benchmarks: {machine['cpu_model']} x{machine['cpu_count']}, "
        f"Python {machine['python']}, RLIMIT_NOFILE {machine['rlimit_nofile']}"
        + (f", server on CPU {cpus[0]}, load generator on CPU {cpus[1]}" if cpus else "")
    )
    background = machine["background_cpu_load"]
    if background is not None and background > NOISE:
        print(f"warning: other processes are using {background * 100:.0f}% of a CPU; numbers will be noisy")
    for n in doc["notes"]:
        print("note:", n)


# ---------------------------------------------------------------------------
# measuring every pair


def _progress_head(index: int, cells: int, started: float, scenario: str, server: str) -> str:
    """'[index/cells elapsed, remaining left] scenario server', the start of a progress line."""
    elapsed = time.monotonic() - started
    # remaining: the mean cell so far times the cells still to run
    left = "?" if index == 1 else "%.0fs" % (elapsed / (index - 1) * (cells - index + 1))
    return f"[{index:2d}/{cells} {elapsed:.0f}s, {left} left] {scenario:<9} {server:<17}"


def _measure(server: str, scenario: str, opts: argparse.Namespace, cpus: Optional[tuple], head: str) -> Dict[str, Any]:
    def progress(msg):
        print(f"{head} {msg}", flush=True)

    if opts.wait_quiet > 0:
        wait_quiet(opts.wait_quiet, progress)
    return run_cell(server, scenario, opts, cpus, progress)


def _run_pairs(doc: Dict[str, Any], opts: argparse.Namespace, cpus: Optional[tuple], started: float) -> Dict[str, str]:
    """Measure every (scenario, server) pair into ``doc["results"]``; the skipped servers' reasons."""
    skipped: Dict[str, str] = {}
    pairs = []
    for sc in opts.scenario_list:
        for server in opts.server_list:
            only = SERVERS[server].get("only")
            if only is not None and sc not in only:
                # a variant, measured only where it differs from its base server
                doc["results"][sc][server] = {"status": "not run", "note": "measured in " + ", ".join(only)}
            else:
                pairs.append((sc, server))
    for index, (sc, server) in enumerate(pairs, 1):
        head = _progress_head(index, len(pairs), started, sc, server)
        if server in skipped:
            # a server that cannot run here is not started again
            doc["results"][sc][server] = {"status": "skipped", "note": skipped[server]}
            print(f"{head} skipped")
            continue
        cell = _measure(server, sc, opts, cpus, head)
        doc["results"][sc][server] = cell
        if cell.get("server_info"):
            doc["servers"][server].setdefault("info", cell["server_info"])
        if cell["status"] == "skipped":
            skipped[server] = cell["note"]
        print(cell_line(head, sc, cell), flush=True)
    return skipped


def _run_rotation(doc: Dict[str, Any], opts: argparse.Namespace, cpus: Optional[tuple]) -> None:
    """With reqresp: the CPU per message of its servers measured in turns (bench.rotation)."""
    servers = rotation_servers(opts.server_list)
    if "reqresp" not in opts.scenario_list or opts.rotation_cycles == 0 or len(servers) < 2:
        return
    head = f"[rotation] reqresp   {' '.join(servers)}"

    def progress(msg):
        print(f"{head}: {msg}", flush=True)

    if opts.wait_quiet > 0:
        wait_quiet(opts.wait_quiet, progress)
    doc["rotation"] = run_rotation(servers, opts, cpus, progress)
    progress(doc["rotation"]["status"])


# ---------------------------------------------------------------------------
# results


def _save(doc: Dict[str, Any], opts: argparse.Namespace) -> None:
    """Write the JSON and the chart; without --json also latest.json and latest.png."""
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


def main(argv: Optional[List[str]] = None, results_dir: Path = DEFAULT_RESULTS_DIR) -> int:
    """Run the comparison; *argv* as on the command line (default sys.argv[1:]).

    *results_dir* is the default of ``--results-dir``: ``benchmarks/run.py``
    in a checkout passes ``benchmarks/results``.
    """
    opts = parse_args(argv, results_dir)
    if opts.list:
        _print_list()
        return 0

    signal.signal(signal.SIGTERM, _on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _on_signal)

    nofile = raise_nofile()
    notes = _fit_idle_connections(opts, nofile)
    cpus = None if opts.no_pin else pick_cpus()
    doc = _new_document(opts, nofile, cpus, notes)
    _print_header(doc, cpus)

    started = time.monotonic()
    try:
        skipped = _run_pairs(doc, opts, cpus, started)
        _run_rotation(doc, opts, cpus)
    except KeyboardInterrupt:
        stop_all()
        print("\ninterrupted; all benchmark processes stopped", file=sys.stderr)
        return 130
    finally:
        stop_all()

    doc["skipped"] = skipped
    doc["elapsed_seconds"] = round(time.monotonic() - started, 1)
    doc["reference"] = reference_server(doc)
    table = render_tables(doc)
    doc["table"] = table
    print()
    print(table)
    print(f"\n(total {doc['elapsed_seconds']:.0f}s)")
    _save(doc, opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
