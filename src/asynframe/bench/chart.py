"""The PNG bar chart: each server's throughput relative to the reference, per scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .scenarios import SCENARIOS


def _plotted(doc: Dict[str, Any], ref: str) -> Tuple[List[str], List[str]]:
    """The scenarios the reference was measured in, and the servers measured in any of them."""
    res = doc["results"]
    scenarios = [sc for sc in doc["scenarios_run"] if res[sc].get(ref, {}).get("status") == "ok"]
    servers = [s for s in doc["servers_run"] if any(res[sc].get(s, {}).get("status") == "ok" for sc in scenarios)]
    return scenarios, servers


def _draw_bars(ax, doc: Dict[str, Any], ref: str, scenarios: List[str], servers: List[str]) -> None:
    """One bar group per scenario, one bar per server: median / reference median, min-max whiskers."""
    res = doc["results"]
    width = 0.8 / len(servers)
    # one colour per server: the default cycle has ten, and the runner has more servers
    colours = _colours(len(servers))
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
        ax.bar(
            xs,
            ys,
            width,
            label=s,
            color=colours[i],
            yerr=[lo, hi],
            capsize=2,
            error_kw={"elinewidth": 0.8, "alpha": 0.7},
        )


def _colours(count: int) -> List[Any]:
    """*count* distinct colours: matplotlib's ten-colour cycle, then tab20's lighter shades."""
    from matplotlib import colormaps

    # (a qualitative map called with an int gives its colour of that index)
    base = [colormaps["tab10"](i) for i in range(10)]
    lighter = [colormaps["tab20"](i) for i in range(1, 20, 2)]
    return (base + lighter)[:count] if count <= 20 else [colormaps["hsv"](i / count) for i in range(count)]


def write_chart(doc: Dict[str, Any], path: Path) -> Optional[str]:
    """Draw the chart into *path*; the reason when there is none, else None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # not installed, or broken
        return f"no chart: matplotlib unavailable ({type(exc).__name__})"
    ref = doc.get("reference")
    if not ref:
        return "no chart: no reference server"
    scenarios, servers = _plotted(doc, ref)
    if not scenarios or not servers:
        return "no chart: nothing to plot"
    fig, ax = plt.subplots(figsize=(max(8, 1.7 * len(scenarios) + 3.5), 4.8))
    _draw_bars(ax, doc, ref, scenarios, servers)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels([f"{sc}\n({SCENARIOS[sc]['unit']})" for sc in scenarios])
    ax.set_ylabel(f"throughput relative to {ref} (median; bars: min-max)")
    m = doc["machine"]
    ax.set_title(f"echo servers on 127.0.0.1 - {m['cpu_model']}, Python {m['python']}, {m['date'][:10]}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
    return None
