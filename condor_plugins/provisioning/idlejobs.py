"""Reading the schedds' idle jobs: by autocluster (a cheap grouped query),
one by one when few are not yet clustered, else grouped by full shape; with
why each group is left out of demand (demand.py: held back by the
negotiator, or mode any still waiting for the site)."""

from __future__ import annotations

import time
from typing import Dict, Iterable, List, Optional, Tuple

from .demand import held_back, transparent
from .state import Demand, JobGroup, as_int

__all__ = ["GROUP_BY", "UNCLUSTERED_ONE_BY_ONE", "NOT_ON_NODES", "WAITING", "NOT_NEGOTIATED",
           "idle_shapes", "per_entry"]

#: Job attributes the schedd groups idle jobs by (it adds what they reference).
GROUP_BY = ["JobStatus", "JobUniverse", "RequestCpus", "RequestMemory", "RequestDisk",
            "Requirements"]
#: Idle jobs outside any autocluster read one by one up to this many; more
#: and the schedd groups all jobs by their full shape instead.
UNCLUSTERED_ONE_BY_ONE = 2000
#: Universes a cloud node never runs (scheduler, local).
NOT_ON_NODES = (7, 12)


#: Why idle jobs are left out of demand (observe's wording, also in status).
WAITING = ("mode any: the site may still run them (idle less than CLOUD_PLUGINS_BURST_DELAY, "
           "or not rejected by the negotiator for lack of a match)")
NOT_NEGOTIATED = "mode any: not negotiated yet (the site may run them)"


def idle_shapes(schedd, templates=(), twins=(), burst_delay: float = 0,
                now: Optional[float] = None) -> List[Tuple[object, int, str]]:
    """(ad with the job's matching attributes, idle job count, why left out of
    demand or "") triples.  ``templates`` and ``twins``: the entries' template
    ads and their site twins, to tell transparent (mode any) jobs (demand.py)."""
    import htcondor2
    # The constraint must stay True (HTCondor 23.9's schedd returns no
    # group for any other), so JobStatus is a key.
    counts = schedd.query("true", ["JobStatus", "JobUniverse", "AutoClusterId",
                                   "LastRejMatchReason"], opts=htcondor2.QueryOpt.GroupBy)
    # An autocluster carries only the attributes significant to this pool's
    # matchmaking: one without the shape or Requirements cannot be used.
    clusters = {c.get("AutoClusterId"): c for c in
                schedd.query("true", [], opts=htcondor2.QueryOpt.AutoCluster)
                if all(k in c for k in ("RequestCpus", "RequestMemory", "Requirements"))}
    idle: Dict[int, int] = {}
    rejected: Dict[int, Dict[str, int]] = {}
    unclustered = 0
    for row in counts:
        if row.get("JobStatus") != 1 or row.get("JobUniverse") in NOT_ON_NODES:
            continue
        count, cid = as_int(row.get("JobCount"), 0), row.get("AutoClusterId")
        if cid not in clusters:
            unclustered += count
            continue
        idle[cid] = idle.get(cid, 0) + count
        reason = row.get("LastRejMatchReason")
        if isinstance(reason, str) and reason:
            seen = rejected.setdefault(cid, {})
            seen[reason] = seen.get(reason, 0) + count
    out, waiting = [], []
    for cid, count in sorted(idle.items()):
        reasons = rejected.get(cid, {})
        reason = max(sorted(reasons), key=reasons.get) if reasons else None
        if held_back(reason):
            out.append((clusters[cid], count, f"held back by the negotiator ({reason})"))
        elif twins and transparent(clusters[cid], templates, twins):
            waiting.append((cid, count, reason is not None))
        else:
            out.append((clusters[cid], count, ""))
    if waiting:  # mode any: only what waited BURST_DELAY and found no match counts
        cut = int((time.time() if now is None else now) - burst_delay)
        ids = ", ".join(str(int(cid)) for cid, _, _ in waiting)
        old: Dict[int, int] = {}
        for job in schedd.query(f"JobStatus == 1 && member(AutoClusterId, {{{ids}}}) && "
                                f"EnteredCurrentStatus <= {cut}", ["AutoClusterId"]):
            old[job.get("AutoClusterId")] = old.get(job.get("AutoClusterId"), 0) + 1
        for cid, count, was_rejected in waiting:
            n = min(count, old.get(cid, 0)) if was_rejected else 0
            out += [(clusters[cid], k, why) for k, why in ((n, ""), (count - n, WAITING)) if k]
    if unclustered == 0:
        return out

    def fresh(job, count):
        left = NOT_NEGOTIATED if twins and transparent(job, templates, twins) else ""
        return job, count, left

    if unclustered > UNCLUSTERED_ONE_BY_ONE:
        # Grouped by full shape (and autocluster, so that the clustered jobs
        # already counted above are not counted twice).
        rows = schedd.query("true", GROUP_BY + ["AutoClusterId"],
                            opts=htcondor2.QueryOpt.GroupBy)
        return out + [fresh(r, as_int(r.get("JobCount"), 0)) for r in rows
                      if r.get("JobStatus") == 1 and r.get("JobUniverse") not in NOT_ON_NODES
                      and r.get("AutoClusterId") not in clusters]
    known = ", ".join(str(int(i)) for i in clusters if isinstance(i, int))
    constraint = "JobStatus == 1 && (AutoClusterId is undefined" + (
        f" || !member(AutoClusterId, {{{known}}}))" if known else ")")
    for job in schedd.query(constraint, limit=UNCLUSTERED_ONE_BY_ONE + 1):
        if job.get("JobUniverse") not in NOT_ON_NODES:
            out.append(fresh(job, 1))
    return out


def per_entry(jobs: Iterable[Demand], entries: Iterable[str]) -> Dict[str, Tuple[JobGroup, ...]]:
    """Every idle job group each entry matched (a job may count for several:
    what a node of that entry could run, not what it will be started for)."""
    by: Dict[str, Dict[Tuple[int, int, int], int]] = {e: {} for e in entries}
    for g in jobs:
        for e in g.entries:
            shape = (g.cpus, g.memory_mb, g.runtime)
            by.setdefault(e, {})[shape] = by.get(e, {}).get(shape, 0) + g.count
    return {e: tuple(JobGroup(n, c, m, r) for (c, m, r), n in sorted(shapes.items()))
            for e, shapes in by.items()}
