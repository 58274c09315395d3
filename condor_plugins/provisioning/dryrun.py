"""``condor_cloud plan``: the provisioner's next cycle as a dry run.

It observes exactly as the daemon does (the schedds, every entry's listing,
the collector, the join evidence) and runs the same pure policy on the state
the daemon saved, then prints what the cycle would do and why: the creates
per entry at what spend rate, the drains and terminations, the holds, and
the idle jobs left out of demand.  It has no side effect: it takes no admin
command, runs no provider housekeeping, writes no state file, advertises
nothing, and calls no cloud API that changes anything (only listings).
"""

from __future__ import annotations

import time
from typing import Optional

from .scaleup import spend_per_hour
from .state import Create, Drain, Hold, Terminate

__all__ = ["collect_plan", "render_plan", "PLAN_SCHEMA_VERSION"]

#: Version of the ``plan --json`` document.
PLAN_SCHEMA_VERSION = 1


def collect_plan(param=None, now: Optional[float] = None) -> dict:
    """The next cycle's decisions as plain data (also the --json output)."""
    from .policy import plan as plan_cycle
    from .provisioner import Provisioner
    now = time.time() if now is None else now
    prov = Provisioner(param)
    prov.housekeeping = False
    try:
        state = prov.observe()
        cfg = prov.effective_cfg()
        plan = plan_cycle(state, cfg, now)
    finally:
        prov.close()
    errors = [f"the {what} failed: decisions that depend on it are held"
              for what in state.failed_sources(e.name for e in cfg.entries)]
    cost = {e.name: e.cost_per_hour for e in cfg.entries}
    creates = [{"entry": a.entry, "count": a.count,
                "spend_per_hour": round(a.count * cost.get(a.entry, 0.0), 6),
                "reason": a.reason} for a in plan.actions if isinstance(a, Create)]
    retires = [{"action": "drain" if isinstance(a, Drain) else "terminate", "entry": a.entry,
                "instance": a.instance_id, "reason": a.reason}
               for a in plan.actions if isinstance(a, (Drain, Terminate))]
    holds = [{"entry": a.entry, "reason": a.reason} for a in plan.actions
             if isinstance(a, Hold)]
    left_out = []
    if plan.allocation is not None:
        left_out = [{"jobs": n, "cpus": g.cpus, "memory_mb": g.memory_mb,
                     "entries": list(g.entries), "reason": why}
                    for g, n, why in plan.allocation.unserved]
    now_spend = spend_per_hour(plan.records.values(), cfg)
    added = sum(c["spend_per_hour"] for c in creates)
    return {
        "schema_version": PLAN_SCHEMA_VERSION, "provisioner": cfg.name, "pool": cfg.pool,
        "dry_run": True, "creates": creates, "retires": retires, "holds": holds,
        "left_out": left_out, "unmatched_jobs": prov.unmatched.shown(),
        "left_out_jobs": prov.left_out.shown(),
        "spend_per_hour": {"now": round(sum(now_spend.values()), 6),
                           "after": round(sum(now_spend.values()) + added, 6),
                           "by_entry": now_spend, "budget": cfg.budget_per_hour},
        "errors": errors,
    }


def render_plan(plan: dict) -> str:
    """The table of ``condor_cloud plan``."""
    rows = [("ACTION", "ENTRY", "WHAT", "$/H", "REASON")]
    for c in plan["creates"]:
        rows.append(("create", c["entry"], f"{c['count']} instance(s)",
                     f"{c['spend_per_hour']:g}", c["reason"]))
    for r in plan["retires"]:
        rows.append((r["action"], r["entry"], r["instance"], "-", r["reason"]))
    for h in plan["holds"]:
        rows.append(("hold", h["entry"] or "-", "-", "-", h["reason"]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    spend = plan["spend_per_hour"]
    budget = "" if spend["budget"] is None else f" (budget {spend['budget']:g}/h)"
    lines = [f"Plan of provisioner {plan['provisioner']} (pool {plan['pool']}), a dry run: "
             f"nothing was changed. Spend {spend['now']:g}/h now, {spend['after']:g}/h after"
             f"{budget}"]
    if len(rows) == 1:
        lines.append("Nothing to do.")
    else:
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + row[-1]
                  for row in rows]
    for out in plan["left_out"]:
        lines.append(f"Left out: {out['jobs']} idle job(s) of {out['cpus']} cpus/"
                     f"{out['memory_mb']} MB: {out['reason']}")
    lines += [f"Unmatched {u}" for u in plan["unmatched_jobs"]]
    lines += [f"Left out {u}" for u in plan["left_out_jobs"]]
    lines += [f"WARNING: {e}" for e in plan["errors"]]
    return "\n".join(lines)
