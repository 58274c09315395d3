"""Prometheus metrics of the provisioner (``CLOUD_PLUGINS_METRICS_PORT``; off
by default), modelled on the Kubernetes cluster-autoscaler's set, prefix
``condor_cloud_``.  Labels are low-cardinality: entry, phase, kind, reason
category; never an instance id.  Updated once per cycle from what the cycle
observed, planned and did; a failure here is logged and never stops a cycle.

The cumulative cost is exact to the provisioner's records: each instance is
billed from its request (or this daemon's start, if later) to the cycle that
saw it gone, at its entry's COST_PER_HOUR.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, Mapping, Optional

from .state import Create, Drain, Phase, Terminate

__all__ = ["Metrics", "serve", "termination_reason", "TOTALS"]

#: The same totals in the provisioner's collector ad (condor_gangliad,
#: condor_adstash): attribute -> what it counts, since the daemon started.
TOTALS = {
    "CloudCreatesTotal": "instances created",
    "CloudCreateFailuresTotal": "failed creates",
    "CloudDrainsTotal": "instances asked to retire",
    "CloudTerminationsTotal": "terminations",
    "CloudInstancesAdoptedTotal": "orphans adopted from the listings",
    "CloudCostTotal": "cumulative cost (COST_PER_HOUR x instance-hours)",
}

log = logging.getLogger("condor_plugins.provisioning.provisioner")

#: Cycle phases timed by the histogram.
CYCLE_PHASES = ("observe", "plan", "act")


def termination_reason(action: Terminate) -> str:
    """A low-cardinality category of a terminate's reason."""
    if action.lost:
        return "lost"
    if action.stopped:
        return "stopped"
    if action.failure:
        return "failure"
    text = action.reason
    if text.startswith(("drained", "no job")):
        return "idle"
    if "asked by" in text:
        return "admin"
    if "error" in text:
        return "error"
    return "other"


class Metrics:
    """The metric families, in a registry of their own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        r = self.registry = CollectorRegistry()
        p = "condor_cloud_"
        self.instances = Gauge(p + "instances", "Instances by entry and phase (not gone).",
                               ["entry", "phase"], registry=r)
        self.idle_jobs = Gauge(p + "idle_jobs", "Idle jobs counted as demand, by entry "
                               "(a job matching two entries counts for both).", ["entry"],
                               registry=r)
        self.unserved = Gauge(p + "unserved_jobs", "Idle jobs in demand that got no node "
                              "this cycle, by reason.", ["reason"], registry=r)
        self.left_out = Gauge(p + "left_out_jobs", "Idle jobs left out of demand, by reason: "
                              "held back (priority, quota, limit), burst delay, not "
                              "negotiated (mode any).", ["reason"], registry=r)
        self.holds = Gauge(p + "holds", "1 while a hold (why no instance) stands, by entry "
                           "and hold key.", ["entry", "reason"], registry=r)
        self.creates = Counter(p + "creates", "Instances created.", ["entry"], registry=r)
        self.create_failures = Counter(p + "create_failures", "Failed creates, by kind "
                                       "(capacity, quota, auth, transient, error).",
                                       ["entry", "kind"], registry=r)
        self.drains = Counter(p + "drains", "Instances asked to retire.", ["entry"],
                              registry=r)
        self.terminations = Counter(p + "terminations", "Terminations, by reason category.",
                                    ["entry", "reason"], registry=r)
        self.lost = Counter(p + "instances_lost", "Instances terminated as lost.", ["entry"],
                            registry=r)
        self.interrupted = Counter(p + "instances_interrupted", "Instances the cloud "
                                   "interrupted (spot notices).", ["entry"], registry=r)
        self.adopted = Counter(p + "instances_adopted", "Listed instances with our tags that "
                               "no record knew (orphans adopted).", ["entry"], registry=r)
        self.backoff = Gauge(p + "entry_backoff", "1 while the entry backs off after "
                             "failures.", ["entry"], registry=r)
        self.backoff_failures = Gauge(p + "entry_backoff_failures", "Consecutive failures "
                                      "of the entry.", ["entry"], registry=r)
        self.cycle = Histogram(p + "cycle_duration_seconds", "Duration of a cycle's phases.",
                               ["phase"], registry=r,
                               buckets=(.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
        self.cycles_failed = Counter(p + "cycles_failed", "Cycles that raised.", registry=r)
        self.last_success = Gauge(p + "last_successful_cycle_timestamp_seconds", "When the "
                                  "last cycle that completed started.", registry=r)
        self.token_expiry = Gauge(p + "worker_token_expiry_timestamp_seconds", "When the "
                                  "oldest live instance's worker token expires (NaN: none alive).",
                                  registry=r)
        self.spend = Gauge(p + "spend_per_hour", "Spend rate: COST_PER_HOUR of every "
                           "instance not gone.", ["entry"], registry=r)
        self.cost = Counter(p + "cost", "Cumulative cost (COST_PER_HOUR x instance-hours, "
                            "request to gone) since the daemon started.", ["entry"], registry=r)
        self.group_cost = Counter(p + "group_cost", "Cost of the cloud instances by the "
                                  "accounting group (AcctGroup, else Owner) of the jobs "
                                  "running there, by their share of the instance's cores; "
                                  "what no job uses is group \"(idle)\".", ["group"],
                                  registry=r)
        self._rates: Dict[str, float] = {}    # group -> cost per second, last cycle
        self._rated_at: Optional[float] = None
        self.totals: Dict[str, float] = {k: 0 for k in TOTALS}
        self.started = time.time()
        self._billed: Dict[str, float] = {}   # instance id -> cost already counted
        self._seen: set = set()
        self._interrupted: set = set()

    # ------------------------------------------------------------ update
    def update(self, prov, plan, state, before: Mapping, now: float,
               durations: Mapping[str, float], ok: bool) -> None:
        """After a cycle: ``prov`` the Provisioner, ``plan`` its Plan (or None
        if the cycle failed), ``before`` the records at its start."""
        for phase, seconds in durations.items():
            self.cycle.labels(phase).observe(seconds)
        if not ok:
            self.cycles_failed.inc()
            return
        self.last_success.set(now)
        cfg = prov.cfg
        names = [e.name for e in cfg.entries]
        self._gauges(prov, state, plan, names)
        self._actions(prov, plan, before, now)
        self._money(prov, now)

    def _gauges(self, prov, state, plan, names) -> None:
        counts = {(n, p.value): 0 for n in names for p in Phase if p is not Phase.GONE}
        for rec in prov.records.values():
            if rec.phase is not Phase.GONE:
                counts[(rec.entry, rec.phase.value)] = counts.get((rec.entry, rec.phase.value),
                                                                  0) + 1
        for (entry, phase), n in counts.items():
            self.instances.labels(entry, phase).set(n)
        demand = state.demand if state is not None else {}
        for name in names:
            self.idle_jobs.labels(name).set(sum(g.count for g in demand.get(name, ())))
        self.unserved.clear()
        if plan is not None and plan.allocation is not None:
            for _group, left, why in plan.allocation.unserved:
                category = ("limited" if why.startswith("every matching") else
                            "too large" if why.startswith("larger") else "no entry")
                self.unserved.labels(category).inc(left)
        self.left_out.clear()
        for reason, n in (getattr(prov, "left_out_counts", None) or {}).items():
            self.left_out.labels(reason).set(n)
        self.holds.clear()
        for entry, key in prov.holds.current:
            # The key's first word: "drain i-0abc" names an instance.
            self.holds.labels(entry or "-", (key or "other").split(" ", 1)[0]).set(1)
        for name in names:
            b = prov.backoff.get(name)
            self.backoff.labels(name).set(1 if b is not None and b.until > time.time() else 0)
            self.backoff_failures.labels(name).set(b.failures if b is not None else 0)
        live = [r.created for r in prov.records.values() if r.phase is not Phase.GONE]
        # NaN with no instance alive: no token to expire (not the last one's time).
        self.token_expiry.set(min(live) + prov.cfg.worker_token_lifetime if live
                              else float("nan"))

    def _actions(self, prov, plan, before: Mapping, now: float) -> None:
        for iid, rec in prov.records.items():
            if iid in before or iid in self._seen:
                continue
            self._seen.add(iid)
            if rec.reason == "requested":
                self.creates.labels(rec.entry).inc()
                self.totals["CloudCreatesTotal"] += 1
            elif rec.reason.startswith("adopted"):
                self.adopted.labels(rec.entry).inc()
                self.totals["CloudInstancesAdoptedTotal"] += 1
        for failed in getattr(prov, "failures", ()):
            self.create_failures.labels(failed.entry, failed.kind).inc()
            self.totals["CloudCreateFailuresTotal"] += 1
        for action in plan.actions:
            if isinstance(action, Drain):
                self.drains.labels(action.entry).inc()
                self.totals["CloudDrainsTotal"] += 1
            elif isinstance(action, Terminate):
                self.terminations.labels(action.entry, termination_reason(action)).inc()
                self.totals["CloudTerminationsTotal"] += 1
                if action.lost:
                    self.lost.labels(action.entry).inc()
        for iid in set(prov.interrupted) - self._interrupted:
            rec = prov.records.get(iid)
            self.interrupted.labels(rec.entry if rec else "-").inc()
        self._interrupted = set(prov.interrupted)
        self._seen &= set(prov.records)

    def _money(self, prov, now: float) -> None:
        price = {e.name: e.cost_per_hour for e in prov.cfg.entries}
        spend = {name: 0.0 for name in price}
        for iid, rec in prov.records.items():
            if rec.entry not in price:
                continue
            if rec.phase is not Phase.GONE:
                spend[rec.entry] += price[rec.entry]
            # Since this daemon started: a restart does not bill a life again.
            end = rec.since if rec.phase is Phase.GONE else now
            owed = max(0.0, end - max(rec.created, self.started)) / 3600.0 * price[rec.entry]
            paid = self._billed.get(iid, 0.0)
            if owed > paid:
                self.cost.labels(rec.entry).inc(owed - paid)
                self.totals["CloudCostTotal"] += owed - paid
                self._billed[iid] = owed
        for name, rate in spend.items():
            self.spend.labels(name).set(round(rate, 6))
            self.cost.labels(name)  # every entry has a series, from 0
        self._billed = {k: v for k, v in self._billed.items() if k in prov.records}
        self._groups(prov, price, now)

    def _groups(self, prov, price: Mapping[str, float], now: float) -> None:
        """Accrue the last cycle's cost rates per group, then set this cycle's:
        each live instance's price shared by its running jobs' cores."""
        if self._rated_at is not None and now > self._rated_at:
            for group, rate in self._rates.items():
                if rate > 0:
                    self.group_cost.labels(group).inc(rate * (now - self._rated_at))
        cpus = {e.name: max(1, e.cpus) for e in prov.cfg.entries}
        running = getattr(prov, "running_groups", None) or {}
        rates: Dict[str, float] = {}
        for rec in prov.records.values():
            if rec.phase is Phase.GONE or rec.entry not in price:
                continue
            per_core = price[rec.entry] / 3600.0 / cpus[rec.entry]
            used = 0
            for group, cores in running.get(rec.startd, {}).items() if rec.startd else ():
                cores = min(cores, cpus[rec.entry] - used)
                if cores > 0:
                    rates[group] = rates.get(group, 0.0) + per_core * cores
                    used += cores
            rates["(idle)"] = rates.get("(idle)", 0.0) + per_core * (cpus[rec.entry] - used)
        self._rates, self._rated_at = rates, now


def serve(metrics: Metrics, param: Mapping[str, str]) -> bool:
    """Serve ``metrics`` over HTTP if CLOUD_PLUGINS_METRICS_PORT is set;
    raises ConfigError for a bad port, OSError if it cannot bind."""
    from ..config import ConfigError
    port = (param.get("CLOUD_PLUGINS_METRICS_PORT") or "").strip()
    if not port or port == "0":
        return False
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"CLOUD_PLUGINS_METRICS_PORT = {port!r}: expected a TCP port "
                          "(1-65535), or empty for no metrics")
    address = (param.get("CLOUD_PLUGINS_METRICS_ADDRESS") or "127.0.0.1").strip()
    from prometheus_client import start_http_server
    start_http_server(int(port), address, registry=metrics.registry)
    log.info("Metrics on http://%s:%s/metrics", address, port)
    return True
