"""``condor_cloud report``: what each accounting group's jobs cost on the cloud.

Each VM's cost (its entry's COST_PER_HOUR over its life, request to gone) is
split by core-seconds: the jobs that ran on it get the share of its cost
their claimed core-seconds (RequestCpus x run time) are of the VM's
core-seconds (CPUS x life); what no job claimed is its own line, ``idle``.
Jobs are grouped by ``AcctGroup`` (else ``Owner``), by user, or by entry.

The VMs come from the provisioner's ledger (``$(SPOOL)/cloud_plugins/
instances.jsonl``, one line per instance when it is gone) and its state file
(the live ones); the jobs from the schedds' history and queues, or from
``condor_history -json`` files.  Only what falls in ``--since`` is counted.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional

__all__ = ["attribute", "ledger_line", "add_parser", "main", "IDLE"]

IDLE = "idle"


def ledger_line(rec, cpus: int, price: float, now: float) -> str:
    """One JSON line of the ledger for an instance that is gone."""
    return json.dumps({"id": rec.id, "entry": rec.entry, "start": rec.created,
                       "end": rec.since if str(rec.phase) == "gone" else now,
                       "cpus": cpus, "price_per_hour": price, "startd": rec.startd},
                      sort_keys=True)


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _startd(host) -> str:
    return str(host or "").partition("@")[2]


def attribute(vms: Iterable[Mapping], jobs: Iterable[Mapping], by: str = "group",
              since: float = 0.0, until: Optional[float] = None) -> List[dict]:
    """Rows {key, cost, core_hours, jobs} by cost, the ``idle`` line last
    (per entry with ``by="entry"``).  A job's cost: its core-seconds on a VM
    in the window x the VM's price per core-second."""
    until = time.time() if until is None else until
    vms = list(vms)
    by_startd = {v["startd"]: v for v in vms if v.get("startd")}
    used = {v["id"]: [0.0, 0.0] for v in vms}       # cost, core-hours claimed
    rows: Dict[str, dict] = {}

    def row(key: str) -> dict:
        return rows.setdefault(key, {"key": key, "cost": 0.0, "core_hours": 0.0, "jobs": 0})
    for job in jobs:
        # A running job is where it runs now (after a vacate, LastRemoteHost
        # is the node it left).
        host = (job.get("RemoteHost") or job.get("LastRemoteHost")) if job.get("JobStatus") == 2 \
            else (job.get("LastRemoteHost") or job.get("RemoteHost"))
        vm = by_startd.get(_startd(host))
        start = job.get("JobCurrentStartDate")
        if vm is None or not isinstance(start, (int, float)):
            continue
        end = until if job.get("JobStatus") == 2 else (
            job.get("CompletionDate") or job.get("EnteredCurrentStatus") or until)
        seconds = _overlap(start, end, max(since, vm["start"]), min(until, vm["end"]))
        if seconds <= 0:
            continue
        cpus = min(max(1, int(job.get("RequestCpus") or 1)), max(1, vm["cpus"]))
        core_h = seconds * cpus / 3600.0
        cost = vm["price_per_hour"] * core_h / max(1, vm["cpus"])
        key = (job.get("AcctGroup") or job.get("Owner") or "?") if by == "group" else \
            (job.get("Owner") or "?") if by == "user" else vm["entry"]
        r = row(key)
        r["cost"] += cost
        r["core_hours"] += core_h
        r["jobs"] += 1
        used[vm["id"]][0] += cost
        used[vm["id"]][1] += core_h
    idle: Dict[str, dict] = {}
    for vm in vms:
        seconds = _overlap(vm["start"], vm["end"], since, until)
        if seconds <= 0:
            continue
        key = f"{vm['entry']} ({IDLE})" if by == "entry" else IDLE
        r = idle.setdefault(key, {"key": key, "cost": 0.0, "core_hours": 0.0, "jobs": 0})
        r["cost"] += max(0.0, vm["price_per_hour"] * seconds / 3600.0 - used[vm["id"]][0])
        r["core_hours"] += max(0.0, seconds * vm["cpus"] / 3600.0 - used[vm["id"]][1])
    out = sorted(rows.values(), key=lambda r: (-r["cost"], r["key"]))
    out += [idle[k] for k in sorted(idle)] or [{"key": IDLE, "cost": 0.0, "core_hours": 0.0,
                                                 "jobs": 0}]
    for r in out:
        r["cost"], r["core_hours"] = round(r["cost"], 6), round(r["core_hours"], 6)
    return out


# ------------------------------------------------------------------ the command

def _duration(text: str) -> float:
    from ..config import _parse_duration
    return float(_parse_duration(text))


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="what each accounting group's jobs cost on the cloud "
                                      "(from the schedds' history)")
    p.add_argument("--since", default="7d", help="the window: a duration back from now "
                   "(seconds, or with s, m, h, d; default 7d)")
    p.add_argument("--by", choices=("group", "user", "entry"), default="group",
                   help="group: AcctGroup, else Owner (default); user: Owner; entry")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--figure", metavar="FILE", help="also write a bar chart (PNG)")
    p.add_argument("--history", action="append", default=[], metavar="FILE",
                   help="condor_history -json output to read instead of the schedds")
    p.add_argument("--ledger", metavar="FILE", help="the instances' ledger (default "
                   "$(SPOOL)/cloud_plugins/instances.jsonl, plus the live instances)")


def _vms(param, ledger: Optional[str], now: float, notes: List[str]) -> List[dict]:
    from .. import config as config_mod
    spool = Path(param.get("SPOOL") or ".") / "cloud_plugins"
    path = Path(ledger) if ledger else spool / "instances.jsonl"
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
    if not ledger and (spool / "provisioner-state.json").exists():
        cfg = config_mod.load(param)
        entries = {e.name: e for e in cfg.entries}
        state = json.loads((spool / "provisioner-state.json").read_text())
        # CPUS left auto: the size the cloud described, from the ledger's
        # lines of the same entry (the provisioner wrote them sized).
        sized = {v["entry"]: v["cpus"] for v in out}
        for iid, r in state.get("records", {}).items():
            e = entries.get(r.get("entry"))
            if e is None or r.get("phase") == "gone":
                continue
            cpus = sized.get(e.name, e.cpus) if "cpus" in e.auto else e.cpus
            if "cpus" in e.auto and e.name not in sized:
                notes.append(f"entry {e.name}: CPUS is auto and no ended instance says its "
                             f"size: live instances counted with {cpus} cores (set "
                             f"CLOUD_PLUGINS_{e.name.upper()}_CPUS)")
            out.append({"id": iid, "entry": e.name, "start": r["created"], "end": now,
                        "cpus": cpus, "price_per_hour": e.cost_per_hour,
                        "startd": r.get("startd") or ""})
    return out


PROJECTION = ["Owner", "AcctGroup", "RequestCpus", "JobCurrentStartDate", "CompletionDate",
              "EnteredCurrentStatus", "LastRemoteHost", "RemoteHost", "JobStatus"]


def _jobs(files: List[str], since: float, errors: List[str]) -> List[dict]:
    if files:
        return [a for f in files for a in json.loads(Path(f).read_text() or "[]")]
    import htcondor2
    out = []
    try:
        schedds = htcondor2.Collector().locateAll(htcondor2.DaemonType.Schedd)
    except Exception as err:
        errors.append(f"the collector query failed: {err}")
        return out
    for ad in schedds:
        try:
            schedd = htcondor2.Schedd(ad)
            # CompletionDate is 0 for a removed job: its end is EnteredCurrentStatus.
            rows = list(schedd.history(
                f"JobCurrentStartDate =!= undefined && ifThenElse(CompletionDate > 0, "
                f"CompletionDate, EnteredCurrentStatus) >= {int(since)}", PROJECTION))
            rows += list(schedd.query("JobStatus == 2", PROJECTION))
        except Exception as err:  # unknown, not zero: said, and the exit code is 1
            errors.append(f"schedd {ad.get('Name')}: {err}")
            continue
        out += [{k: a.get(k) for k in PROJECTION} for a in rows]
    return out


def render(doc: dict) -> str:
    total = doc["total"] or 1.0
    lines = [f"Cloud cost by {doc['by']} from {time.strftime('%Y-%m-%d %H:%M', time.localtime(doc['since']))}"
             f" to {time.strftime('%Y-%m-%d %H:%M', time.localtime(doc['until']))}"
             f" ({doc['vms']} instance(s))",
             f"{doc['by'].upper():<24} {'COST':>12} {'SHARE':>6} {'CORE-H':>10} {'JOBS':>6}"]
    for r in doc["rows"]:
        lines.append(f"{r['key'][:24]:<24} {r['cost']:>12.2f} {100 * r['cost'] / total:>5.1f}% "
                     f"{r['core_hours']:>10.1f} {r['jobs']:>6}")
    lines.append(f"{'TOTAL':<24} {doc['total']:>12.2f}")
    lines += [f"NOTE: {n}" for n in doc.get("notes", ())]
    lines += [f"WARNING: {e}" for e in doc["errors"]]
    return "\n".join(lines)


def figure(doc: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = doc["rows"]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(rows) + 1.5))
    ax.barh([r["key"] for r in rows][::-1], [r["cost"] for r in rows][::-1],
            color=["#999999" if IDLE in r["key"] else "#337ab7" for r in rows][::-1])
    ax.set_xlabel("cost")
    ax.set_title(f"Cloud cost by {doc['by']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(args, param=None) -> int:
    """0 the report is complete; 1 a schedd or the collector could not be read
    (the rows are then a lower bound); 2 bad input."""
    if param is None:
        import htcondor2
        param = htcondor2.param
    try:
        window = _duration(args.since)
    except ValueError as err:
        print(f"condor_cloud report: --since {args.since!r}: {err}", file=sys.stderr)
        return 2
    now = time.time()
    errors: List[str] = []
    notes: List[str] = []
    try:
        vms = _vms(param, args.ledger, now, notes)
        jobs = _jobs(args.history, now - window, errors)
    except (OSError, ValueError) as err:
        print(f"condor_cloud report: {err}", file=sys.stderr)
        return 2
    rows = attribute(vms, jobs, args.by, now - window, now)
    doc = {"by": args.by, "since": now - window, "until": now, "vms": len(vms), "rows": rows,
           "total": round(sum(r["cost"] for r in rows), 6), "errors": errors,
           "notes": sorted(set(notes))}
    if args.figure:
        figure(doc, Path(args.figure))
    print(json.dumps(doc, indent=1, sort_keys=True) if args.json else render(doc))
    return 1 if errors else 0
