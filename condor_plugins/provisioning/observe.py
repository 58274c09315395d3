"""What the provisioner reads from the pool: the schedds' idle jobs by shape
and running jobs by node, the template machine ad each entry's jobs are
matched against, and the evidence that an instance joined (collector,
schedd queues and histories).  Functions of HTCondor handles; no state."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Dict, Iterable, Mapping, Optional, Set, Tuple

from ..config import EntryConfig, ProvisionerConfig
from ..providers.base import TAG_ENTRY, TAG_REQUEST, ProviderError, owner_tags
from .demand import group_jobs, site_twin, whole_node
from .idlejobs import (GROUP_BY, NOT_NEGOTIATED, NOT_ON_NODES, UNCLUSTERED_ONE_BY_ONE,
                       WAITING, idle_shapes, per_entry)
from .explain import first_failure, never_cloud, unmatched_key
from .policy import evidence_wanted
from .state import JobGroup, Listing, NodeInfo, ObservedState, as_int

log = logging.getLogger("condor_plugins.provisioning.provisioner")

__all__ = ["Observing", "GROUP_BY", "UNCLUSTERED_ONE_BY_ONE", "NOT_ON_NODES", "SLOT_ATTRS",
           "template_ad", "startd_name", "running_hosts", "idle_shapes", "join_evidence",
           "per_entry", "WAITING", "NOT_NEGOTIATED"]

SLOT_ATTRS = ["Name", "MyAddress", "CloudInstanceID", "CloudRequestID", "CloudProviderEntry",
              "State", "Activity", "Cpus", "Memory", "PartitionableSlot", "DynamicSlot", "Draining",
              # CloudRetiring (node control by pulling) and what it references
              "CloudRetiring", "CloudRetireRequested", "CloudLeaseExpired", "DaemonStartTime",
              "CloudInterruption", "CloudPilotRetireTime"]
#: How many jobs that ran on an instance the evidence of its join counts, at most.
EVIDENCE_JOBS = 10


def template_ad(entry: EntryConfig, cfg: ProvisionerConfig, param: Mapping[str, str]):
    """The machine ad a new instance of ``entry`` would advertise (for matching)."""
    import classad2
    from ..node.context_config import entry_interruptible
    s = entry.settings
    ad = classad2.ClassAd({
        "MyType": "Machine", "IsCloudNode": True, "Cpus": entry.cpus, "TotalCpus": entry.cpus,
        "Memory": max(0, entry.memory_mb - entry.memory_reserve),
        "TotalMemory": max(0, entry.memory_mb - entry.memory_reserve),
        "Disk": entry.disk_mb * 1024, "TotalDisk": entry.disk_mb * 1024,
        # What the entry's image advertises (knobs), not this host's values.
        "Arch": entry.arch, "OpSys": entry.opsys, "OpSysAndVer": entry.opsysandver,
        "OpSysMajorVer": entry.opsysmajorver, "HasSingularity": entry.has_apptainer,
        "HAS_SINGULARITY": entry.has_apptainer,
        "HasFileTransfer": True, "CloudProvider": entry.type, "CloudPlatform": entry.type,
        "CloudVMType": entry.instance_type or "unknown", "CloudImage": entry.image or "unknown",
        "CloudRegion": s.get("REGION", "unknown"), "CloudZone": s.get("ZONE", "unknown"),
        "CloudInterruptible": entry_interruptible(entry, param), "CloudProvisioner": cfg.name,
        "CloudProviderEntry": entry.name})
    ad["Requirements"] = classad2.ExprTree("true")
    try:
        from ..providers import ProviderNotFound, provider_class
        extra = provider_class(entry.type, entry.name).template_attrs(entry.settings)
    except ProviderNotFound:
        extra = {}
    for name, expr in extra.items():
        ad[name] = classad2.ExprTree(expr)
    return ad


def startd_name(slot_name) -> str:
    """The startd's name in a slot's Name or a job's RemoteHost (after the
    slot's "@"): how running jobs and nodes are matched."""
    return str(slot_name or "").partition("@")[2]


def running_hosts(schedd, groups: Optional[Dict[str, Dict[str, int]]] = None
                  ) -> Dict[str, int]:
    """Running jobs per startd name (``RemoteHost`` after the slot's ``@``);
    and, into ``groups``, their cores per accounting group (``AcctGroup``,
    else ``Owner``) per startd name (the cost per group, metrics.py)."""
    out: Dict[str, int] = {}
    for job in schedd.query("JobStatus == 2", ["RemoteHost", "AcctGroup", "Owner",
                                               "RequestCpus"]):
        host = startd_name(job.get("RemoteHost"))
        if host:
            out[host] = out.get(host, 0) + 1
            if groups is not None:
                group = str(job.get("AcctGroup") or job.get("Owner") or "?")
                cores = groups.setdefault(host, {})
                cores[group] = cores.get(group, 0) + as_int(job.get("RequestCpus"), 1)
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


class Observing:
    """The Provisioner's reads (mixed in): the schedds, the collector and the
    providers' listings, into one ObservedState.  A source that fails is
    marked not-ok, never raised."""

    def _collector(self):
        import htcondor2
        return htcondor2.Collector(self.collector_host) if self.collector_host \
            else htcondor2.Collector()

    def _observe(self, what: str, fn, default):
        try:
            return True, fn()
        except Exception as err:  # any failure: this source is unknown this cycle
            log.warning("Observation of the %s failed: %s", what, str(err).splitlines()[0]
                        if str(err) else type(err).__name__)
            return False, default

    def schedds(self):
        """Demand per entry from every schedd that answers, running jobs per
        startd name, and the names of the schedds that failed.

        Idle jobs are grouped by shape and each shape is matched once against
        the entry's template machine ad.  Fast path: count idle jobs per
        autocluster (a cheap grouped query on integers) and take each
        autocluster's significant attributes from the schedd's autocluster
        table; jobs not yet in an autocluster (submitted since the last
        negotiation) are read one by one if they are few, else everything is
        grouped on the full job shape (slower at 100k jobs)."""
        import htcondor2
        schedds = self._collector().locateAll(htcondor2.DaemonType.Schedd)
        if not schedds:
            raise RuntimeError("no schedd in the collector")
        running: Dict[str, int] = {}
        groups: Dict[str, Dict[str, int]] = {}
        failed = []
        counted, left_out = [], {}
        templates = list(self.templates.values())
        twins = [site_twin(t) for t in templates]
        for ad in schedds:
            name = ad.get("Name") or "?"
            try:
                schedd = htcondor2.Schedd(ad)
                rows = idle_shapes(schedd, templates, twins, self.cfg.burst_delay)
                hosts = running_hosts(schedd, groups)
            except Exception as err:  # this schedd is unknown; the others count
                failed.append(name)
                # Once while it fails (then at debug level), and again when it recovers.
                log.log(logging.DEBUG if name in self._failed_schedds else logging.WARNING,
                        "Query of schedd %s failed: %s", name,
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
                continue
            for host, n in hosts.items():
                running[host] = running.get(host, 0) + n
            for row, count, why in rows:
                if why:
                    key = (unmatched_key(row), why)
                    left_out[key] = left_out.get(key, 0) + count
                elif count:
                    counted.append((row, count))
        for name in sorted(self._failed_schedds - set(failed)):
            log.info("Query of schedd %s works again", name)
        self._failed_schedds = set(failed)
        self.running_groups = groups
        #: Idle jobs left out of demand by reason category (metrics.py).
        self.left_out_counts = {}
        for (_shape, why), n in left_out.items():
            key = ("held back" if why.startswith("held back") else
                   "not negotiated" if why == NOT_NEGOTIATED else
                   "burst delay" if why == WAITING else "other")
            self.left_out_counts[key] = self.left_out_counts.get(key, 0) + n
        if not failed:  # else unknown: keep what was said
            self.left_out.update({("", f"{shape}; {why}"): f"{n} idle job(s) ({shape}): {why}"
                                  for (shape, why), n in sorted(left_out.items())})
        return counted, running, failed

    def group(self, rows, real: Optional[Mapping[str, object]] = None):
        """The counted idle jobs as Demand groups (demand.py), matched against
        each entry's joined node where there is one; says which jobs no entry
        matches, and which a template matched but its joined node does not."""
        jobs, mismatch, unmatched_rows = group_jobs(rows, self.templates, real or {})
        unmatched: Dict[Tuple[str, str], int] = {}
        for row, count in unmatched_rows:
            self._unmatched(row, count, unmatched)
        if not self._failed_schedds:
            self.unmatched.update(
                {**{("", f"{shape}; {why}"): f"{n} idle job(s) ({shape}): {why}"
                    for (shape, why), n in sorted(unmatched.items())},
                 **{(entry, "node mismatch"): f"its template matched, its joined node does "
                                              f"not: {why}" for entry, why in mismatch.items()}})
        return jobs, mismatch

    def _unmatched(self, job, count: int, out: Dict[Tuple[str, str], int]) -> None:
        """Count idle jobs no entry's template matches, by shape and by the
        first clause that fails on each entry (jobs kept off cloud nodes on
        purpose are not counted)."""
        why = {entry: first_failure(job, template) for entry, template in self.templates.items()}
        if never_cloud(why.values()):
            return
        key = (unmatched_key(job), "; ".join(f"{e} needs {c}" for e, c in why.items()))
        out[key] = out.get(key, 0) + count

    def demand(self) -> Dict[str, Tuple[JobGroup, ...]]:
        """Idle jobs per entry (all schedds; raises if any failed)."""
        rows, _, failed = self.schedds()
        if failed:
            raise RuntimeError(f"schedd(s) {', '.join(failed)} failed")
        return per_entry(self.group(rows)[0], self.templates)

    def nodes(self) -> Tuple[Dict[str, NodeInfo], Optional[float]]:
        """The collector's view of our instances, and when the collector started."""
        import classad2
        import htcondor2
        coll = self._collector()
        constraint = f"CloudProvisioner == {classad2.quote(self.cfg.name)}"
        ads = coll.query(htcondor2.AdType.Startd, constraint, SLOT_ATTRS)
        started = [c.get("DaemonStartTime") for c in
                   coll.query(htcondor2.AdType.Collector, "true", ["DaemonStartTime"])]
        info: Dict[str, dict] = {}
        slot_ads = {}
        for ad in ads:
            iid = self._instance_of(ad)
            if iid is None:
                continue
            n = info.setdefault(iid, {"busy": 0, "cpus": 0, "memory": 0, "draining": False,
                                      "startd": startd_name(ad.get("Name")),
                                      "interruption": ""})
            if "CloudPilotRetireTime" in ad and n.get("retire") is None:
                retire = ad.eval("CloudPilotRetireTime")
                if isinstance(retire, (int, float)) and not isinstance(retire, bool):
                    n["retire"] = float(retire)
            if isinstance(ad.get("CloudInterruption"), str):
                n["interruption"] = ad["CloudInterruption"][:120] or "notice"
            if (ad.get("Draining") is True or ad.get("State") == "Drained"
                    or ("CloudRetiring" in ad and ad.eval("CloudRetiring") is True)):
                n["draining"] = True
            if ad.get("State") == "Claimed":
                n["busy"] += 1
            elif not ad.get("DynamicSlot"):
                n["cpus"] += as_int(ad.get("Cpus"), 0)
                n["memory"] += as_int(ad.get("Memory"), 0)
            if ad.get("PartitionableSlot") or iid not in slot_ads:
                slot_ads[iid] = ad
        self._slot_ads = slot_ads
        nodes = {iid: NodeInfo(iid, n["busy"], n["cpus"], n["memory"], n["draining"],
                               startd=n["startd"], interruption=n["interruption"],
                               retire_time=n.get("retire"))
                 for iid, n in info.items()}
        known = [t for t in started if isinstance(t, int)]
        return nodes, (float(min(known)) if known else None)

    def _instance_of(self, ad) -> Optional[str]:
        """The cloud id of the instance behind a slot ad.  Matched on
        ``CloudRequestID``, the id the provisioner chose and tagged, through the
        listings; the id the VM learned (``CloudInstanceID``) is only a fallback,
        since on EC2-compatible clouds it may be the cloud's internal UUID."""
        request = ad.get("CloudRequestID")
        if isinstance(request, str) and request in self._request_ids:
            return self._request_ids[request]
        if isinstance(request, str) and request in self.records:
            return request  # providers whose ids are the request ids (local)
        iid = ad.get("CloudInstanceID")
        if not isinstance(iid, str):
            return request if isinstance(request, str) else None
        # A node that could not learn its cloud id advertises the request id.
        return self._request_ids.get(iid, iid)

    def listing(self, entry: str) -> Listing:
        tags = dict(owner_tags(self.cfg.pool, self.cfg.name), **{TAG_ENTRY: entry})
        try:
            provider = self.providers[entry]
            listing = Listing(True, tuple(provider.list(tags)), bool(provider.queued))
        except ProviderError as err:
            log.warning("Listing of provider entry %s failed (%s): %s", entry, err.kind,
                        err.message)
            return Listing(False)
        except Exception as err:
            log.exception("Listing of provider entry %s failed: %s", entry, err)
            return Listing(False)
        if self.housekeeping:
            try:
                self.providers[entry].housekeeping(tags)
            except Exception as err:  # tidiness only: the listing stands
                log.warning("Housekeeping of provider entry %s failed: %s", entry, err)
        return listing

    def listings(self) -> Dict[str, Listing]:
        """Every entry's listing; also learns which cloud id each request got
        (nodes that could not learn their cloud id advertise the request id).
        Kept for instances still recorded or listed: a failed listing forgets none."""
        listings = {e.name: self.listing(e.name) for e in self.cfg.entries}
        listed = {i.id: i for listing in listings.values() for i in listing.instances}
        self._request_ids = {req: iid for req, iid in self._request_ids.items()
                             if iid in listed or iid in self.records}
        self._request_ids.update((i.tags[TAG_REQUEST], iid) for iid, i in listed.items()
                                 if TAG_REQUEST in i.tags)
        return listings

    def resize(self) -> None:
        """The entries sized from their instance types (sizing.py), and their
        template ads rebuilt when a size changed."""
        entries = self.sizes.apply(self.knobs.entries, self.providers)
        if entries != self.cfg.entries:
            self.cfg = replace(self.knobs, entries=entries)
            self.templates = {e.name: template_ad(e, self.cfg, self.param) for e in entries}

    def observe(self) -> ObservedState:
        self.resize()
        reached, (rows, running, failed) = self._observe("schedd(s)", self.schedds,
                                                         ([], {}, ["all"]))
        listings = self.listings()
        nodes_ok, (nodes, started) = self._observe("collector", self.nodes, ({}, None))
        _, real = self._observe("joined nodes' slot ads", self.real_slot_ads, {})
        jobs, mismatch = self.group(rows, real)
        evidence_ok, evidence = self._observe("join evidence (collector, schedd history)",
                                              lambda: self.join_evidence(listings), {})
        return ObservedState(records=dict(self.records), backoff=dict(self.backoff),
                             demand=per_entry(jobs, self.templates), jobs=jobs,
                             demand_ok=reached and not failed,
                             running=running, listings=listings,
                             nodes=nodes, nodes_ok=nodes_ok, collector_started=started,
                             outcomes=tuple(self.failures), requests=dict(self.requests),
                             join_evidence=evidence, evidence_ok=evidence_ok,
                             mismatch=mismatch, unsized=dict(self.sizes.unsized))

    def real_slot_ads(self) -> Dict[str, object]:
        """Entry -> the whole-node slot ad of one of its joined nodes (the
        oldest; one that just joined counts at once, so the cycle that sees its
        join plans with it), to match its jobs against what its VMs really are."""
        import classad2
        import htcondor2
        out = {}
        joined = sorted((rec.joined if rec.joined is not None else float("inf"), iid, rec.entry)
                        for iid, rec in self.records.items() if iid in self._slot_ads)
        for _, iid, entry in joined:
            if entry in out or entry not in self.templates:
                continue
            name = self._slot_ads[iid].get("Name")
            ads = self._collector().query(htcondor2.AdType.Startd,
                                          f"Name == {classad2.quote(str(name))}")
            if ads:
                out[entry] = whole_node(ads[0])
        return out

    def join_evidence(self, listings: Mapping[str, Listing]) -> Dict[str, str]:
        """For the records that would count as boot failures: whether the pool
        saw them join after all (a provisioner killed before it saved the join)."""
        import htcondor2
        wanted = evidence_wanted(self.records, listings)
        if not wanted:
            return {}
        names = {iid: {iid} | {r for r, i in self._request_ids.items() if i == iid}
                 for iid in wanted}
        coll = self._collector()
        since = min(self.records[iid].created for iid in wanted)
        return join_evidence(coll, coll.locateAll(htcondor2.DaemonType.Schedd), names, since)
