"""Presentation: number formats, the per-cell progress line and the result tables."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from .scenarios import FULL, NOISE, QUICK, REFERENCE, SCENARIOS


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
    if not cell or cell["status"] == "not run":
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
    ok = [
        s
        for s in servers
        if any(doc["results"].get(sc, {}).get(s, {}).get("status") == "ok" for sc in doc["scenarios_run"])
    ]
    if REFERENCE in ok:
        return REFERENCE
    return ok[0] if ok else None


def busiest_server_window(cell: Dict[str, Any]) -> Tuple[Optional[float], Optional[float]]:
    """The server's CPU share and its user-space part in its busiest window."""
    totals = cell.get("server_cpu") or []
    if not totals:
        return None, None
    i = totals.index(max(totals))
    users = cell.get("server_user_cpu") or []
    return totals[i], (users[i] if i < len(users) else None)


def _ok(cell: Optional[Dict[str, Any]]) -> bool:
    return cell is not None and cell.get("status") == "ok"


# ---------------------------------------------------------------------------
# the progress line printed after each (server, scenario) pair


def _idle_summary(cell: Dict[str, Any]) -> str:
    text = (
        f"  | no idle: {fmt_num(cell['baseline']['median'])}"
        f", ratio {cell['idle_ratio']:.2f}"
        f", {cell['idle_count']} idle opened in {cell['idle_setup_seconds']:.1f}s"
    )
    if cell.get("rss_per_idle_conn") is not None:
        text += f", {cell['rss_per_idle_conn'] / 1024:.1f} KiB/idle conn"
    return text


def cell_line(head: str, scenario: str, cell: Dict[str, Any]) -> str:
    """*head* followed by the outcome of one measured pair."""
    if cell["status"] == "skipped":
        return f"{head} skipped: {cell['note']}"
    if cell["status"] != "ok":
        return f"{head} FAILED: {cell['note']}"
    line = f"{head} {fmt_cell(cell):>22} {SCENARIOS[scenario]['unit']:<6}"
    i = cell["loadgen_cpu"].index(max(cell["loadgen_cpu"]))
    line += f"  loadgen cpu {cell['loadgen_cpu'][i] * 100:3.0f}% (user {cell['loadgen_user_cpu'][i] * 100:2.0f}%)"
    server_cpu, srv_user = busiest_server_window(cell)
    if server_cpu is not None:
        line += f"  server cpu {server_cpu * 100:3.0f}%"
        if srv_user is not None:
            line += f" (user {srv_user * 100:2.0f}%)"
    if cell.get("peak_rss"):
        line += f"  peak rss {cell['peak_rss'] / 2**20:.1f} MiB"
    if cell.get("other_cpu") and max(cell["other_cpu"]) > NOISE:
        line += f"  [noisy: other processes {max(cell['other_cpu']) * 100:.0f}% cpu]"
    if scenario == "idle":
        line += _idle_summary(cell)
    return line


# ---------------------------------------------------------------------------
# the tables


def _idle_rows(cells: Dict[str, Any], servers: List[str]) -> List[List[str]]:
    """The idle scenario's extra rows: without idle connections, the ratio, RSS per connection."""
    return [
        ["  no idle conns"]
        + [
            fmt_cell(dict(cells[s]["baseline"], status="ok")) if cells.get(s, {}).get("status") == "ok" else "-"
            for s in servers
        ],
        ["  with/without idle"]
        + [f"{cells[s]['idle_ratio']:.2f}" if cells.get(s, {}).get("idle_ratio") else "-" for s in servers],
        ["  RSS per idle conn"]
        + [
            f"{cells[s]['rss_per_idle_conn'] / 1024:.1f} KiB"
            if cells.get(s, {}).get("rss_per_idle_conn") is not None
            else "-"
            for s in servers
        ],
    ]


def _throughput_table(doc: Dict[str, Any], servers: List[str]) -> List[str]:
    ref = doc.get("reference")
    res = doc["results"]
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
                ratios.append(f"{c['median'] / refcell['median']:.2f}x" if _ok(c) else "-")
            rows.append([f"  vs {ref}"] + ratios)
        if sc == "idle":
            rows.extend(_idle_rows(res[sc], servers))
    title = "Throughput: median (min-max) over %d x %gs windows%s" % (
        doc["config"]["repeats"],
        doc["config"]["duration"],
        f"; ratio = median / median of {ref}" if ref else "",
    )
    return [title, _table(["scenario"] + servers, rows)]


def _cpu_use(c: Dict[str, Any]) -> str:
    """'load generator (user) / server (user)' in % of one CPU, busiest windows."""
    i = c["loadgen_cpu"].index(max(c["loadgen_cpu"]))
    lg = c["loadgen_cpu"][i] * 100
    user = c["loadgen_user_cpu"][i] * 100
    total, srv_user = busiest_server_window(c)
    server = "?" if total is None else f"{total * 100:.0f}%"
    if srv_user is not None:
        server += f" ({srv_user * 100:.0f}%)"
    return f"{lg:.0f}% ({user:.0f}%) / " + server


def _cost(c: Dict[str, Any]) -> str:
    if c.get("server_us_per_msg") is None:
        return "-"
    return f"{c['server_us_per_msg']:.2f} ({c['server_user_us_per_msg']:.2f})"


def _peak_rss(c: Dict[str, Any]) -> str:
    return f"{c['peak_rss'] / 2**20:.1f}" if c.get("peak_rss") else "-"


def _per_cell_table(doc: Dict[str, Any], servers: List[str], title: str, show) -> List[str]:
    """One row per scenario, one column per server: *show(cell)* for measured cells, else '-'."""
    res = doc["results"]
    rows = []
    for sc in doc["scenarios_run"]:
        row = [sc]
        for s in servers:
            c = res[sc].get(s)
            row.append(show(c) if _ok(c) else "-")
        rows.append(row)
    return [title, _table(["scenario"] + servers, rows)]


def _problem_notes(doc: Dict[str, Any]) -> List[str]:
    """Skipped servers (once each) and failed pairs."""
    res = doc["results"]
    notes = []
    for s in doc["servers_run"]:
        for sc in doc["scenarios_run"]:
            c = res[sc].get(s)
            if c and c["status"] == "skipped":
                notes.append(f"{s}: skipped: {c.get('note', '')}")
                break  # one note per skipped server is enough
            if c and c["status"] not in ("ok", "not run"):
                notes.append(f"{s} / {sc}: {c['status']}: {c.get('note', '')}")
    return notes


def _load_notes(doc: Dict[str, Any], servers: List[str]) -> List[str]:
    """Where the load generator or other processes may have distorted the numbers."""
    res = doc["results"]
    notes = []
    measured = [res[sc][s] for sc in doc["scenarios_run"] for s in servers if _ok(res[sc].get(s))]
    busy = [
        f"{s}/{sc}"
        for sc in doc["scenarios_run"]
        for s in servers
        if _ok(res[sc].get(s)) and max(res[sc][s]["loadgen_cpu"]) > 0.9
    ]
    if busy:
        notes.append("load generator above 90% CPU (may understate the server): " + ", ".join(busy))
    sampled = [c for c in measured if c.get("other_cpu")]
    noisy = [max(c["other_cpu"]) for c in sampled if max(c["other_cpu"]) > NOISE]
    if noisy:
        notes.append(
            f"other processes used more than {NOISE * 100:.0f}% of a CPU during {len(noisy)} of "
            f"{len(sampled)} measurements (up to {max(noisy) * 100:.0f}%): those numbers are noisy "
            f"(a quieter machine, or --wait-quiet 60, helps)"
        )
    bg = doc["machine"].get("background_cpu_load")
    if bg is not None and bg > NOISE:
        notes.append(f"before the run, other processes were using {bg * 100:.0f}% of a CPU")
    return notes


def _legend(doc: Dict[str, Any]) -> List[str]:
    """What each scenario does, and how long each pair was measured."""
    parts = ["\nScenarios:"]
    width = max(len(sc) for sc in doc["scenarios_run"])
    for sc in doc["scenarios_run"]:
        parts.append(f"  {sc:<{width}}  {SCENARIOS[sc]['about']}")
    config = doc["config"]
    if config.get("quick"):
        parts.append(
            f"  --quick: {config['repeats']} x {config['duration']:g} s window per pair and "
            f"{config['idle']} idle connections (the full run: "
            f"{FULL['repeats']} x {FULL['duration']:g} s, {FULL['idle']} idle): a smoke test"
        )
    else:
        parts.append(
            f"  each pair: {config['repeats']} x {config['duration']:g} s windows; --quick runs "
            f"{QUICK['repeats']} x {QUICK['duration']:g} s and {QUICK['idle']} idle connections"
        )
    return parts


def _rotation_table(rotation: Dict[str, Any]) -> List[str]:
    """The servers measured in turns (bench.rotation): one row per server."""
    title = (
        f"\nRequest/response, servers in turns ({rotation['cycles']} rounds of one "
        f"{rotation['window']:g} s window each, all on the server CPU): server CPU µs/msg"
    )
    if rotation.get("status") != "ok":
        return [title, f"  {rotation.get('status')}: {rotation.get('note', '')}"]
    ref = rotation.get("reference")
    header = ["server", "msg/s", "CPU µs/msg", "user µs/msg"]
    if ref:
        header += [f"user vs {ref}", "median of rounds"]
    rows = []
    for name, cell in rotation["servers"].items():
        if cell.get("status") != "ok":
            rows.append([name, cell.get("status", "?")] + [""] * (len(header) - 2))
            continue
        row = [
            name,
            fmt_num(cell["msg_per_s"]),
            f"{cell['server_us_per_msg']:.2f}",
            f"{cell['server_user_us_per_msg']:.2f}",
        ]
        if ref:
            median = cell.get("user_ratio_rounds_median")
            row += [f"{cell['user_ratio']:.2f}x", "-" if median is None else f"{median:.2f}x"]
        rows.append(row)
    return [title, _table(header, rows)]


def render_tables(doc: Dict[str, Any]) -> str:
    servers = [
        s
        for s in doc["servers_run"]
        if any(doc["results"].get(sc, {}).get(s, {}).get("status") != "skipped" for sc in doc["scenarios_run"])
    ]
    parts = _throughput_table(doc, servers)
    parts += _per_cell_table(
        doc,
        servers,
        "\nCPU use, % of one CPU (busiest window), user-space part in parentheses: load generator / server",
        _cpu_use,
    )
    parts += _per_cell_table(
        doc,
        servers,
        "\nCPU µs/msg: server CPU time per message (per connection for "
        "accept), in the median window, user-space part in parentheses",
        _cost,
    )
    parts += _per_cell_table(doc, servers, "\nPeak server RSS (MiB)", _peak_rss)
    if doc.get("rotation"):
        parts += _rotation_table(doc["rotation"])
    notes = _problem_notes(doc) + _load_notes(doc, servers)
    if notes:
        parts.append("\nNotes:")
        parts.extend("  - " + n for n in notes)
    parts += _legend(doc)
    return "\n".join(parts)
