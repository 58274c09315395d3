"""What a simulation run shows: totals, waits, the table, the JSON summary
and the figure (idle jobs, nodes by phase, spend rate over time)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .world import BOOTING, BUSY, DRAINING, IDLE, PHASES, STOPPING, World

__all__ = ["summarize", "percentile", "render_table", "write_figure", "SCHEMA_VERSION"]

#: Version of the ``simulate.json`` document.
SCHEMA_VERSION = 1


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The q-th percentile (0-100), linear between closest ranks."""
    if not values:
        return None
    values = sorted(values)
    pos = (len(values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def _waits(values: List[float]) -> dict:
    return {"jobs": len(values), "p50": _r(percentile(values, 50)),
            "p95": _r(percentile(values, 95)), "p99": _r(percentile(values, 99))}


def _r(x: Optional[float], nd: int = 1) -> Optional[float]:
    return None if x is None else round(x, nd)


def summarize(world: World, result: dict, controller, label: str) -> dict:
    """One run as plain data (a row of the table, an item of the JSON)."""
    acc = list(world.acc)
    for node in world.nodes.values():  # alive at the horizon: counted until then
        acc = [a + v for a, v in zip(acc, node.acc)]
        acc[node.phase] += world.now - node.since
    total = sum(acc)
    waits = {"cloud": [], "site": []}
    for i, job in enumerate(world.jobs):
        start = world.first_start[i]
        if start is not None:
            waits["cloud" if world.on_cloud[i] else "site"].append(start - job.submit)
    phases = result["series"].phases
    return {
        "run": controller.name, "label": label,
        "cost": round(world.cost + sum((world.now - n.created) / 3600 * n.price
                                       for n in world.nodes.values()), 4),
        "node_hours": round(total / 3600, 4),
        "busy_node_hours": round(acc[BUSY] / 3600, 4),
        "idle_node_hours": round(acc[IDLE] / 3600, 4),
        "booting_node_hours": round(acc[BOOTING] / 3600, 4),
        "retiring_node_hours": round((acc[DRAINING] + acc[STOPPING]) / 3600, 4),
        "idle_share": round(acc[IDLE] / total, 4) if total else 0.0,
        "node_seconds": round(total, 1),
        "vms_started": world.vms_started, "churn": world.churn,
        "interruptions": world.interruptions, "create_failures": world.create_failures,
        "peak_nodes": max((sum(p) for p in phases), default=0),
        "jobs": {"total": len(world.jobs), "completed": world.done,
                 "on_cloud": len(waits["cloud"]), "on_site": len(waits["site"]),
                 "left_out": dict(sorted(world.excluded.items()))},
        "wait_s": {"all": _waits(waits["cloud"] + waits["site"]),
                   "cloud": _waits(waits["cloud"]), "site": _waits(waits["site"])},
        "last_retire_s": _r(None if world.last_gone is None else world.last_gone - world.t0),
        "end_s": _r(result["end"] - world.t0), "complete": result["complete"],
        "cycles": result["cycles"], "cycles_skipped": result["skipped"],
        "holds": dict(sorted(getattr(controller, "holds", {}).items())),
        "decisions": dict(getattr(controller, "decisions", {})),
    }


def _fmt(x, unit="") -> str:
    if x is None:
        return "-"
    if unit == "s":
        return f"{x:.0f}s" if x < 600 else f"{x / 60:.0f}m" if x < 36000 else f"{x / 3600:.1f}h"
    return f"{x:g}" if isinstance(x, int) else f"{x:.2f}"


def render_table(rows: List[dict]) -> str:
    """One line per (setting, run)."""
    head = ("SETTING", "RUN", "COST", "NODE-H", "IDLE%", "VMS", "CHURN", "CLOUD WAIT p50/p95/p99",
            "SITE WAIT p50/p95", "LAST RETIRE")
    lines = [head]
    for r in rows:
        c, s = r["wait_s"]["cloud"], r["wait_s"]["site"]
        lines.append((
            r["label"], r["run"], _fmt(r["cost"]), f"{r['node_hours']:.1f}",
            f"{100 * r['idle_share']:.1f}", str(r["vms_started"]), str(r["churn"]),
            "/".join(_fmt(c[k], "s") for k in ("p50", "p95", "p99")),
            "/".join(_fmt(s[k], "s") for k in ("p50", "p95")),
            _fmt(r["last_retire_s"], "s") + ("" if r["complete"] else " (horizon)")))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip()
                     for line in lines)


def _thin(n: int, most: int = 1200) -> range:
    return range(0, n, max(1, n // most))


def write_figure(runs: List[dict], out: Path, title: str = "") -> List[Path]:
    """PNG and SVG: one column per setting (its policy run), rows: idle jobs,
    nodes by phase (the baselines' node counts dashed), spend per hour."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: small, searchable
    cols = len(runs)
    fig, axes = plt.subplots(3, cols, figsize=(4.2 * cols + 1, 7.5), sharex="col", sharey="row",
                             squeeze=False)
    colors = {"booting": "#f0ad4e", "idle": "#d9534f", "busy": "#5cb85c",
              "draining": "#5bc0de", "stopping": "#999999"}
    for k, run in enumerate(runs):
        s = run["series"]
        idx = _thin(len(s.t))
        span = s.t[-1] if s.t else 0
        scale, unit = (86400, "days") if span > 3 * 86400 else (3600, "hours") \
            if span > 3 * 3600 else (60, "minutes") if span > 600 else (1, "seconds")
        t = [s.t[i] / scale for i in idx]
        ax = axes[0][k]
        ax.step(t, [s.idle_jobs[i] for i in idx], where="post", color="#337ab7")
        ax.set_title(run["label"], fontsize=9)
        ax.set_ylabel("idle jobs" if k == 0 else "")
        ax = axes[1][k]
        ax.stackplot(t, *[[s.phases[i][p] for i in idx] for p in range(len(PHASES))],
                     labels=PHASES, colors=[colors[p] for p in PHASES], step="post",
                     rasterized=True)  # a small SVG even for a month
        for name, other in run.get("baselines", {}).items():
            o = other
            oi = _thin(len(o.t))
            ax.step([o.t[i] / scale for i in oi], [sum(o.phases[i]) for i in oi], where="post",
                    linestyle="--", linewidth=0.8, label=f"{name} (nodes)")
        ax.set_ylabel("cloud nodes" if k == 0 else "")
        if k == cols - 1:
            ax.legend(fontsize=7, loc="upper right")
        ax = axes[2][k]
        ax.step(t, [s.spend[i] for i in idx], where="post", color="#8a6d3b")
        ax.set_ylabel("spend per hour" if k == 0 else "")
        ax.set_xlabel(unit)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=90 if p.suffix == ".png" else None)
    plt.close(fig)
    return paths


def progress_bar(total_days: float, stream) -> "callable":
    """A one-line progress bar of simulated days (for long replays)."""
    import time
    began = time.monotonic()

    def show(t_rel: float, label: str = "") -> None:
        done = min(1.0, t_rel / total_days / 86400) if total_days else 1.0
        rate = t_rel / 86400 / max(1e-6, time.monotonic() - began)
        bar = "#" * int(30 * done)
        stream.write(f"\r{label:<24.24} [{bar:<30}] day {t_rel / 86400:6.1f}/"
                     f"{total_days:.1f} ({rate:.1f} days/s)")
        stream.flush()
    return show
