"""What the provisioner reads from the pool: the schedds' idle jobs by shape
and running jobs by node, the template machine ad each entry's jobs are
matched against, and the evidence that an instance joined (collector,
schedd queues and histories).  Functions of HTCondor handles; no state."""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Set

from ..config import EntryConfig, ProvisionerConfig

__all__ = ["GROUP_BY", "UNCLUSTERED_ONE_BY_ONE", "NOT_ON_NODES", "SLOT_ATTRS", "template_ad",
           "startd_name", "running_hosts", "idle_shapes", "join_evidence"]

#: Job attributes the schedd groups idle jobs by (it adds what they reference).
GROUP_BY = ["JobStatus", "JobUniverse", "RequestCpus", "RequestMemory", "RequestDisk",
            "Requirements"]
#: Idle jobs outside any autocluster read one by one up to this many; more
#: and the schedd groups all jobs by their full shape instead.
UNCLUSTERED_ONE_BY_ONE = 2000
#: Universes a cloud node never runs (scheduler, local).
NOT_ON_NODES = (7, 12)
SLOT_ATTRS = ["Name", "MyAddress", "CloudInstanceID", "CloudRequestID", "CloudProviderEntry",
              "State", "Activity", "Cpus", "Memory", "PartitionableSlot", "DynamicSlot", "Draining",
              # CloudRetiring (node control by pulling) and what it references
              "CloudRetiring", "CloudRetireRequested", "CloudLeaseExpired", "DaemonStartTime",
              "CloudInterruption"]
#: How many jobs that ran on an instance the evidence of its join counts, at most.
EVIDENCE_JOBS = 10


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def template_ad(entry: EntryConfig, cfg: ProvisionerConfig, param: Mapping[str, str]):
    """The machine ad a new instance of ``entry`` would advertise (for matching)."""
    import classad2
    from ..node.contextualize import entry_interruptible
    s = entry.settings
    ad = classad2.ClassAd({
        "MyType": "Machine", "IsCloudNode": True, "Cpus": entry.cpus, "TotalCpus": entry.cpus,
        "Memory": entry.memory_mb, "TotalMemory": entry.memory_mb,
        "Disk": entry.disk_mb * 1024, "TotalDisk": entry.disk_mb * 1024,
        "Arch": param.get("ARCH") or "X86_64", "OpSys": param.get("OPSYS") or "LINUX",
        "HasFileTransfer": True, "CloudProvider": entry.type, "CloudPlatform": entry.type,
        "CloudVMType": entry.instance_type or "unknown", "CloudImage": entry.image or "unknown",
        "CloudRegion": s.get("REGION", "unknown"), "CloudZone": s.get("ZONE", "unknown"),
        "CloudInterruptible": entry_interruptible(entry, param), "CloudProvisioner": cfg.name,
        "CloudProviderEntry": entry.name})
    ad["Requirements"] = classad2.ExprTree("true")
    return ad


def startd_name(slot_name) -> str:
    """The startd's name in a slot's Name or a job's RemoteHost (after the
    slot's "@"): how running jobs and nodes are matched."""
    return str(slot_name or "").partition("@")[2]


def running_hosts(schedd) -> Dict[str, int]:
    """Running jobs per startd name (``RemoteHost`` after the slot's ``@``)."""
    out: Dict[str, int] = {}
    for job in schedd.query("JobStatus == 2", ["RemoteHost"]):
        host = startd_name(job.get("RemoteHost"))
        if host:
            out[host] = out.get(host, 0) + 1
    return out


def idle_shapes(schedd):
    """(ad with the job's matching attributes, idle job count) pairs."""
    import htcondor2
    # The constraint must stay True (HTCondor 23.9's schedd returns no
    # group for any other), so JobStatus is a key.
    counts = schedd.query("true", ["JobStatus", "JobUniverse", "AutoClusterId"],
                          opts=htcondor2.QueryOpt.GroupBy)
    # An autocluster carries only the attributes significant to this pool's
    # matchmaking: one without the shape or Requirements cannot be used.
    clusters = {c.get("AutoClusterId"): c for c in
                schedd.query("true", [], opts=htcondor2.QueryOpt.AutoCluster)
                if all(k in c for k in ("RequestCpus", "RequestMemory", "Requirements"))}
    out, unclustered = [], 0
    for row in counts:
        if row.get("JobStatus") != 1 or row.get("JobUniverse") in NOT_ON_NODES:
            continue
        count = _int(row.get("JobCount"), 0)
        cluster = clusters.get(row.get("AutoClusterId"))
        if cluster is None:
            unclustered += count
        else:
            out.append((cluster, count))
    if unclustered == 0:
        return out
    if unclustered > UNCLUSTERED_ONE_BY_ONE:
        rows = schedd.query("true", GROUP_BY, opts=htcondor2.QueryOpt.GroupBy)
        return [(r, _int(r.get("JobCount"), 0)) for r in rows
                if r.get("JobStatus") == 1 and r.get("JobUniverse") not in NOT_ON_NODES]
    known = ", ".join(str(int(i)) for i in clusters if isinstance(i, int))
    constraint = "JobStatus == 1 && (AutoClusterId is undefined" + (
        f" || !member(AutoClusterId, {{{known}}}))" if known else ")")
    for job in schedd.query(constraint, limit=UNCLUSTERED_ONE_BY_ONE + 1):
        if job.get("JobUniverse") not in NOT_ON_NODES:
            out.append((job, 1))
    return out


def _id_list(ids: Iterable[str]) -> str:
    import classad2
    return "{" + ", ".join(classad2.quote(i) for i in sorted(ids)) + "}"


def join_evidence(collector, schedds, names: Mapping[str, Set[str]],
                  since: float) -> Dict[str, str]:
    """Instance id -> how we know it joined the pool, for instances our
    record says never did.  ``names``: each instance's ids (its cloud id and
    the request id its node advertises as ``CloudRequestID``).  Looked up in
    the collector's ads, then in every schedd's queue and history of jobs
    that ran there (``MachineAttrCloudRequestID0``: the submit fragment adds
    CloudRequestID to SYSTEM_JOB_MACHINE_ATTRS); the history is scanned back
    to ``since`` (completions before the oldest instance was created).
    Raises if any query fails: the evidence is then unknown."""
    import classad2
    import htcondor2
    owner = {n: iid for iid, ids in names.items() for n in ids}
    members = _id_list(owner)
    found: Dict[str, str] = {}
    for ad_type, what in ((htcondor2.AdType.Startd, "startd"),
                          (htcondor2.AdType.Master, "master")):
        for ad in collector.query(ad_type, f"member(CloudRequestID, {members}) || "
                                           f"member(CloudInstanceID, {members})",
                                  ["CloudRequestID", "CloudInstanceID"]):
            iid = owner.get(ad.get("CloudRequestID")) or owner.get(ad.get("CloudInstanceID"))
            if iid:
                found.setdefault(iid, f"its {what} ad is in the collector")
    jobs: Dict[str, int] = {}
    attr = "MachineAttrCloudRequestID0"
    for ad in schedds:
        schedd = htcondor2.Schedd(ad)
        rest = {n for n, iid in owner.items() if iid not in found}
        if not rest:
            break
        constraint = f"member({attr}, {_id_list(rest)})"
        rows = list(schedd.query(constraint, [attr], limit=EVIDENCE_JOBS))
        rows += schedd.history(constraint, [attr], match=EVIDENCE_JOBS,
                               since=classad2.ExprTree(
                                   f"CompletionDate > 0 && CompletionDate < {int(since)}"))
        for row in rows:
            iid = owner.get(row.get(attr))
            if iid:
                jobs[iid] = jobs.get(iid, 0) + 1
    for iid, n in jobs.items():
        more = "at least " if n >= EVIDENCE_JOBS else ""
        found.setdefault(iid, f"{more}{n} job(s) ran there (schedd queue or history)")
    return found
