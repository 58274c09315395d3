"""The scaling policy: a pure function from the observed state to actions.

``plan(state, cfg, now)`` reads no clock, does no I/O and draws no random
numbers; the same inputs give the same Plan.  Safety rules, in order:

* a node that runs a job is never drained or terminated, and neither is a
  joined node the collector does not show (it may run jobs), with two
  exceptions: an instance the cloud lists as STOPPED (it runs nothing), and a
  LOST node (absent from a healthy collector for LOST_TIMEOUT, and no schedd
  shows a job running there);
* a failed observation holds only the decisions that depend on it:

  ======================  =================================================
  failed observation      held (everything else goes on)
  ======================  =================================================
  a schedd (or all)       the lost-node rule (running jobs unknown); an idle
                          node waits 3x IDLE_TIMEOUT before its drain, as if
                          idle jobs fitted it.  Creates use the demand of
                          the schedds that answered (a lower bound).
  entry E's listing       every record of E is kept unchanged; no create
                          for E.  Other entries go on.
  the collector           drains, JOIN_TIMEOUT and lost-node terminations,
                          terminating drained or joined-ERROR nodes, and
                          every create (free capacity unknown).  STOPPED,
                          never-joined ERROR, REQUEST_TIMEOUT and
                          terminate retries go on.
  ======================  =================================================

* no record is dropped unless its own entry's listing was read;
* instances requested but not yet listed count toward the limits until
  REQUEST_TIMEOUT; listed instances with our tags that no record knows are
  adopted (restart safety);
* after a failure an entry backs off exponentially, then probes with one
  instance at a time until an instance joins (no booting into a black hole);
* the churn brake: a node that joined, never ran a job and is drained for
  idleness while jobs its entry's template matched (but the node does not,
  ``state.mismatch``) wait is a failure of its entry; that backoff ends when
  a node of the entry runs a job, not when one joins;
* an instance is a boot failure only if it never joined: not by our record,
  nor by the collector or a schedd's queue or history (``join_evidence``; a
  provisioner killed before it saved the join must not count a node that ran
  jobs).  If that evidence is unknown, the failure is not counted.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, Iterable, List, Mapping, Optional

from ..config import EntryConfig, ProvisionerConfig
from .scaleup import free_capacity, scale_up
from ..providers.base import Instance, InstanceState
from .packing import nodes_needed
from .state import (BOOTING_PHASES, Action, Backoff, Drain, Hold,
                    InstanceRecord, JobGroup, Launched, LaunchFailed, Listing, NodeInfo, ObservedState,
                    Outcome, Phase, Plan, Terminate, age)

__all__ = ["plan", "fold_launches", "backoff_delay", "evidence_wanted", "INTERRUPTED",
           "NODE_DRAINING"]


def fold_launches(records: Mapping[str, InstanceRecord], outcomes: Iterable[Outcome],
                  now: float) -> Dict[str, InstanceRecord]:
    """Records plus a REQUESTED record per launched instance not yet known.
    Idempotent: the shell may call it right after acting, to persist early."""
    out = dict(records)
    for outcome in outcomes:
        if isinstance(outcome, Launched):
            for inst in outcome.instances:
                if inst.id not in out:
                    out[inst.id] = InstanceRecord(inst.id, outcome.entry, Phase.REQUESTED,
                                                  since=now, created=now, reason="requested")
    return out


def backoff_delay(entry: EntryConfig, failures: int) -> float:
    """Pause after ``failures`` consecutive failures (>= 1), capped."""
    exponent = min(failures - 1, 64)  # 2**64 * anything exceeds any cap
    return min(float(entry.backoff_max), entry.backoff_initial * entry.backoff_factor ** exponent)


def evidence_wanted(records: Mapping[str, InstanceRecord],
                    listings: Mapping[str, Listing]) -> List[str]:
    """Records that would count as boot failures this cycle (never joined by
    our memory, and gone, stopped or in error in a listing that was read):
    the shell looks for evidence that they did join before ``plan``."""
    out = []
    for rid, rec in sorted(records.items()):
        listing = listings.get(rec.entry)
        if rec.joined is not None or rec.phase not in BOOTING_PHASES or not (listing and
                                                                            listing.ok):
            continue
        inst = listing.by_id().get(rid)
        if inst is None or inst.state in (InstanceState.TERMINATED, InstanceState.STOPPED,
                                          InstanceState.ERROR):
            out.append(rid)
    return out


def plan(state: ObservedState, cfg: ProvisionerConfig, now: float) -> Plan:
    """Decide one cycle.  See the module docstring for the rules."""
    return _Cycle(state, cfg, now).run()


#: A node that joined and idled while jobs its template matched (but it does
#: not) waited: a failure of its entry (the churn brake).
CHURN, CHURN_REASON = "churn", "started, but no job matched"

#: Reasons of a DRAINING phase the node itself chose (not our Drain action).
INTERRUPTED = "interrupted by the cloud"
NODE_DRAINING = "draining (not asked by us)"
#: The reason of a BOOTING phase while a batch queue holds the instance.
QUEUED = "queued"


class _Cycle:
    """The working state of one ``plan`` call (never outlives it)."""

    def __init__(self, state: ObservedState, cfg: ProvisionerConfig, now: float):
        self.state, self.cfg, self.now = state, cfg, now
        self.entries = {e.name: e for e in cfg.entries}
        self.failed = state.failed_sources(self.entries)
        grace_over = (state.collector_started is None
                      or now - state.collector_started >= cfg.collector_grace)
        self.absence_trusted = state.nodes_ok and grace_over
        self.listed = {name: listing.by_id() for name, listing in state.listings.items()
                       if listing.ok}
        self.actions: List[Action] = []
        self.records: Dict[str, InstanceRecord] = {}
        self.failures: Dict[str, List[str]] = {}
        self.joined_entries = set()
        self.busy_entries = set()
        self.allocation = None

    def run(self) -> Plan:
        if self.failed:
            self.actions.append(Hold("", f"observation failed ({', '.join(self.failed)}): "
                                         "holding the decisions that depend on it",
                                     "observation"))
        records = fold_launches(self.state.records, self.state.outcomes, self.now)
        for outcome in self.state.outcomes:
            if isinstance(outcome, LaunchFailed):
                self._failure(outcome.entry, f"create failed ({outcome.kind}): {outcome.message}")
        records.update(self._adopted(records))
        for rid in sorted(records):
            self._advance(records[rid])
        backoff = self._backoff()
        unlisted = [e.name for e in self.cfg.entries if e.name not in self.listed]
        if self.state.nodes_ok:
            # One allocation across entries (scaleup.py): each idle job is
            # provisioned for once, on the best entry that may start nodes.
            actions, self.allocation = scale_up(self.cfg, self.records, self._node,
                                                self.state.idle_jobs(), backoff, self.now,
                                                unlisted, self.state.unsized)
            self.actions += actions
            self._cancel_unneeded_queued()
        else:
            for entry in self.cfg.entries:
                self.actions.append(
                    Hold(entry.name, "no create: the provider listing failed", "listing")
                    if entry.name in unlisted else
                    Hold(entry.name, f"no create: size unknown: {self.state.unsized[entry.name]}",
                         "sizing") if entry.name in self.state.unsized else
                    Hold(entry.name, "no create: the collector query failed (free capacity "
                                     "unknown)", "collector"))
        return Plan(tuple(self.actions), dict(sorted(self.records.items())), backoff,
                    self.allocation)

    # ------------------------------------------------------------ helpers

    def _node(self, rid: str) -> Optional[NodeInfo]:
        return self.state.nodes.get(rid) if self.state.nodes_ok else None

    def _keep(self, rec: InstanceRecord, **changes) -> None:
        if changes.get("phase", rec.phase) != rec.phase:
            changes.setdefault("since", self.now)
        self.records[rec.id] = replace(rec, **changes)

    def _failure(self, entry: str, reason: str) -> None:
        self.failures.setdefault(entry, []).append(reason)

    def _joined_anyway(self, rec: InstanceRecord) -> str:
        """Why ``rec`` is not a boot failure, or "" if it is one."""
        if rec.joined is not None:
            return "it joined"
        seen = self.state.join_evidence.get(rec.id)
        if seen:
            return f"it had joined: {seen}"
        if not self.state.evidence_ok:
            return "whether it joined is unknown (a history query failed)"
        return ""

    def _destroy(self, rec: InstanceRecord, action: Action, phase: Phase, reason: str,
                 needs_collector: bool = True, guarded: bool = True) -> bool:
        """Emit a Drain/Terminate and move ``rec`` to ``phase``, unless a safety
        rule forbids it (then keep ``rec`` and say why).  The one way any
        destructive action is made.  ``guarded`` False: the instance runs no
        job whatever the collector says (STOPPED, LOST)."""
        node = self._node(rec.id)
        held = None
        if needs_collector and not self.state.nodes_ok:
            held = "the collector query failed"
        elif guarded and node is not None and node.busy_slots > 0:
            held = f"it runs {node.busy_slots} job(s)"
        elif guarded and node is None and rec.joined is not None and rec.phase not in (
                Phase.TERMINATING, Phase.FAILED):
            held = ("the collector query failed" if not self.state.nodes_ok else
                    "it joined but the collector does not show it (it may run jobs)")
        if held:
            verb = "drain" if isinstance(action, Drain) else "terminate"
            self.actions.append(Hold(rec.entry, f"not going to {verb} {rec.id} ({reason}): {held}",
                                     f"{verb} {rec.id}"))
            self._keep(rec)
            return False
        self.actions.append(action)
        self._keep(rec, phase=phase, reason=reason)
        return True

    def _terminate(self, rec: InstanceRecord, reason: str, failure: bool = False,
                   needs_collector: bool = True, **kind) -> None:
        phase = Phase.FAILED if failure else Phase.TERMINATING
        action = Terminate(rec.entry, rec.id, reason, failure, **kind)
        done = self._destroy(rec, action, phase, reason, needs_collector,
                             guarded=not kind)
        if done and failure:
            self._failure(rec.entry, f"{rec.id} {reason}")

    # ------------------------------------------------------------ observe

    def _adopted(self, records: Mapping[str, InstanceRecord]) -> Dict[str, InstanceRecord]:
        """Records for listed instances with our tags that no record knows."""
        out = {}
        live = (InstanceState.PENDING, InstanceState.RUNNING, InstanceState.ERROR)
        for name in self.entries:
            for rid, inst in sorted(self.listed.get(name, {}).items()):
                if rid not in records and inst.entry == name and inst.state in live:
                    launched = "" if inst.launch_time is None else \
                        f", launched {age(self.now - inst.launch_time)} ago"
                    out[rid] = InstanceRecord(rid, name, Phase.BOOTING, since=self.now,
                                              created=self.now,
                                              reason=f"adopted from the provider listing{launched}")
        return out

    def _advance(self, rec: InstanceRecord) -> None:
        entry = self.entries.get(rec.entry)
        listed = self.listed.get(rec.entry)
        if entry is None:
            self._unconfigured(rec)
            return
        if listed is None:  # the listing failed: unknown
            self._keep(rec)
            return
        if rec.phase is Phase.GONE:
            return  # reported once; its listing was read
        inst = listed.get(rec.id)
        live = inst is not None and inst.state in (InstanceState.PENDING, InstanceState.RUNNING)
        if live and rec.id in self.state.requests and rec.phase not in (Phase.TERMINATING,
                                                                        Phase.FAILED):
            self._requested(rec, *self.state.requests[rec.id])
        elif inst is None or inst.state is InstanceState.TERMINATED:
            self._vanished(rec, entry, inst is None)
        elif inst.state is InstanceState.STOPPED:
            self._stopped(rec, inst.reason or "stopped")
        elif inst.state is InstanceState.ERROR and rec.phase not in (Phase.FAILED,
                                                                     Phase.TERMINATING):
            self._terminate(rec, f"provider reports an error: {inst.reason or 'no reason given'}",
                            failure=not self._joined_anyway(rec),
                            needs_collector=rec.joined is not None)
        elif inst.state is InstanceState.STOPPING:
            if rec.phase not in (Phase.FAILED, Phase.TERMINATING):
                self._keep(rec, phase=Phase.TERMINATING, reason="stopping (not asked by us)")
            else:
                self._keep(rec)
        else:
            self._running(rec, entry)

    def _unconfigured(self, rec: InstanceRecord) -> None:
        """Its entry left the config: nothing can list or terminate it.  Said
        every cycle; a joined node is retired by pulling (it leaves when idle
        and powers itself off); the record is kept until the entry is back."""
        if rec.phase in (Phase.BOOTING, Phase.REQUESTED, Phase.IDLE, Phase.BUSY):
            rec = replace(rec, phase=Phase.DRAINING, since=self.now,
                          reason=f"entry {rec.entry} is no longer configured: retiring by pulling")
        self.actions.append(Hold("", f"{rec.id} belongs to entry {rec.entry}, which is not in "
                                     f"CLOUD_PLUGINS_PROVIDERS: kept ({rec.phase}); put the "
                                     "entry back to have it listed and terminated",
                                 f"unconfigured {rec.id}"))
        self._keep(rec)

    def _requested(self, rec: InstanceRecord, command: str, reason: str, force: bool) -> None:
        """An admin's ``condor_cloud retire|terminate`` (one cycle only)."""
        if command == "terminate":
            self._destroy(rec, Terminate(rec.entry, rec.id, reason), Phase.TERMINATING, reason,
                          needs_collector=not force, guarded=not force)
        elif rec.phase in BOOTING_PHASES:
            self._terminate(rec, reason)  # runs nothing yet
        elif rec.phase is not Phase.DRAINING:
            # Graceful even when busy: the node starts no new job and leaves
            # when its jobs are done (retire by pulling, node/control.py).
            self.actions.append(Drain(rec.entry, rec.id, reason))
            self._keep(rec, phase=Phase.DRAINING, reason=reason)
        else:
            self._keep(rec)

    def _stopped(self, rec: InstanceRecord, why: str) -> None:
        """Listed as STOPPED: it runs no job, so terminate at once (retried
        every cycle while it stays listed; a boot failure if it never joined)."""
        if rec.phase not in (Phase.FAILED, Phase.TERMINATING):
            self._terminate(rec, f"stopped by itself ({why}): it can run no job",
                            failure=not self._joined_anyway(rec), needs_collector=False,
                            stopped=True)
        elif rec.since < self.now:
            reason = f"still listed as stopped after terminate ({why}): retry"
            self._destroy(rec, Terminate(rec.entry, rec.id, reason, stopped=True), rec.phase,
                          reason, needs_collector=False, guarded=False)
        else:
            self._keep(rec)

    def _vanished(self, rec: InstanceRecord, entry: EntryConfig, unlisted: bool) -> None:
        if rec.phase is Phase.REQUESTED and unlisted:
            waited = self.now - rec.since
            if waited < entry.request_timeout:
                self._keep(rec)
            else:
                self._terminate(rec, f"not in the provider listing {age(waited)} after the "
                                     "request", failure=not self._joined_anyway(rec),
                                needs_collector=False)
        elif rec.phase in BOOTING_PHASES:
            anyway = self._joined_anyway(rec)
            if anyway:
                self._keep(rec, phase=Phase.GONE,
                           reason=f"gone before we saw it join; not a failure: {anyway}")
            else:
                self._keep(rec, phase=Phase.GONE, reason="terminated before it joined")
                self._failure(rec.entry, f"{rec.id} terminated before it joined")
        elif rec.phase in (Phase.TERMINATING, Phase.FAILED):
            self._keep(rec, phase=Phase.GONE, reason="terminated")
        else:
            self._keep(rec, phase=Phase.GONE,
                       reason=f"gone while {rec.phase} (shut itself down or was terminated "
                              "outside the provisioner)")

    def _running(self, rec: InstanceRecord, entry: EntryConfig) -> None:
        """The provider lists ``rec`` as pending or running."""
        node = self._node(rec.id)
        if rec.phase is Phase.REQUESTED:
            rec = replace(rec, phase=Phase.BOOTING, since=self.now, reason="booting")
        if rec.phase is Phase.BOOTING:
            self._booting(rec, entry, node, self.listed[rec.entry][rec.id])
        elif rec.phase in (Phase.IDLE, Phase.BUSY):
            self._joined(rec, entry, node)
        elif rec.phase is Phase.DRAINING:
            self._draining(rec, entry, node)
        elif rec.since < self.now:  # TERMINATING/FAILED and still listed as running
            reason = "still listed as running after terminate: retry"
            self._destroy(rec, Terminate(rec.entry, rec.id, reason), rec.phase, reason,
                          needs_collector=False)
        else:
            self._keep(rec)

    def _booting(self, rec: InstanceRecord, entry: EntryConfig, node: Optional[NodeInfo],
                 inst: Instance) -> None:
        queued = self.state.listings[rec.entry].queued
        started = rec.created
        if queued and inst.launch_time is not None:  # JOIN_TIMEOUT from its start
            started = max(started, inst.launch_time)
        if node is not None:
            self.joined_entries.add(rec.entry)
            self._update_joined(replace(rec, joined=self.now, reason="joined"), entry, node)
        elif queued and inst.state is InstanceState.PENDING:
            waited = self.now - rec.created
            why = f" ({inst.reason})" if inst.reason else ""
            if waited >= entry.pending_timeout:
                self._terminate(rec, f"still queued{why} after {age(waited)} (PENDING_TIMEOUT "
                                     f"{age(entry.pending_timeout)})", failure=True,
                                needs_collector=False)
            else:
                self._keep(rec, reason=f"{QUEUED}{why} for {age(waited)}")
        elif self.absence_trusted and self.now - started >= entry.join_timeout:
            self._terminate(rec, f"did not join the pool within {age(entry.join_timeout)}" + (
                " of its start" if started != rec.created else ""), failure=True)
        else:
            self._keep(rec, reason="booting" if rec.reason.startswith(QUEUED) else rec.reason)

    def _cancel_unneeded_queued(self) -> None:
        """Batch-queue entries: cancel the instances still waiting in the queue
        that the idle jobs no longer need (the newest first).  The need is what
        this entry's idle jobs ask after its joined and started nodes' free
        capacity.  Held while a schedd is unknown."""
        for entry in self.cfg.entries:
            listing = self.state.listings.get(entry.name)
            if listing is None or not listing.ok or not listing.queued:
                continue
            listed = self.listed[entry.name]
            mine = [r for r in self.records.values() if r.entry == entry.name]
            queued = [r for r in mine if r.phase is Phase.BOOTING and r.id in listed
                      and listed[r.id].state is InstanceState.PENDING]
            if not queued:
                continue
            if not self.state.demand_ok:   # (only called with the collector known)
                self.actions.append(Hold(entry.name, "not cancelling queued instances: the "
                                         "idle jobs are unknown", "queued"))
                continue
            usable = max(0, entry.memory_mb - entry.memory_reserve)
            # Not the queued ones, nor a create in flight (likely queued too).
            skip = [r.id for r in mine if r in queued or r.phase is Phase.REQUESTED]
            free = free_capacity(entry, mine, self._node, self.now, skip=skip)
            groups = [JobGroup(d.count, d.cpus, d.memory_mb, d.runtime)
                      for d in self.state.idle_jobs()
                      if entry.name in d.entries]
            need = nodes_needed(groups, entry.cpus, usable, free)
            for rec in sorted(queued, key=lambda r: (-r.created, r.id))[:max(0, len(queued) - need)]:
                self._terminate(rec, f"cancelled while queued: the idle jobs need {need} of "
                                     f"the {len(queued)} queued instance(s)")

    def _joined(self, rec: InstanceRecord, entry: EntryConfig, node: Optional[NodeInfo]) -> None:
        if node is None:
            self._missing(rec, entry)
        else:
            self._update_joined(rec, entry, node)

    def _missing(self, rec: InstanceRecord, entry: EntryConfig) -> None:
        """A joined node the collector does not show: keep it, note since when;
        LOST once absent for LOST_TIMEOUT with no job running there."""
        if not self.absence_trusted:
            self._keep(rec)
            return
        since = rec.missing_since if rec.missing_since is not None else self.now
        absent = f"not in the collector for {age(self.now - since)}"
        rec = replace(rec, missing_since=since)
        if self.now - since < entry.lost_timeout:
            self._keep(rec, reason=f"{rec.phase}, {absent}")
            return
        running = self.state.running.get(rec.startd, 0) if rec.startd else None
        if not self.state.demand_ok or running is None:
            why = ("a schedd query failed" if not self.state.demand_ok
                   else "its startd name is unknown")
            self.actions.append(Hold(rec.entry, f"not going to terminate {rec.id} (lost: "
                                     f"{absent}): {why}, so running jobs are unknown",
                                     f"lost {rec.id}"))
            self._keep(rec, reason=f"{rec.phase}, {absent}")
        elif running:
            self._keep(rec, reason=f"{rec.phase}, {absent}, but the schedds show {running} "
                                   "job(s) running there")
        else:
            self._terminate(rec, f"lost: {absent} (LOST_TIMEOUT {age(entry.lost_timeout)}) "
                                 "and no schedd shows a job running there", lost=True)

    def _update_joined(self, rec: InstanceRecord, entry: EntryConfig, node: NodeInfo) -> None:
        rec = replace(rec, missing_since=None, startd=node.startd or rec.startd)
        if node.interruption:
            # The cloud takes it back: the node vacates its jobs (requeued) and
            # retires. Not a failure of the entry, so no backoff.
            self._keep(rec, phase=Phase.DRAINING,
                       reason=f"{INTERRUPTED} ({node.interruption}): its jobs are "
                              "vacated and requeued")
            return
        if node.draining:
            self._keep(rec, phase=Phase.DRAINING, reason=NODE_DRAINING)
            return
        if node.busy_slots > 0:
            self.busy_entries.add(rec.entry)
            self._keep(rec, phase=Phase.BUSY, last_busy=self.now,
                       reason=f"running {node.busy_slots} job(s)")
            return
        marks = [t for t in (rec.joined, rec.last_busy, node.last_busy) if t is not None]
        idle = self.now - max(marks) if marks else 0.0
        fitting = self._fitting_jobs(entry, node)
        # Idle jobs that fit here are probably waiting for the negotiator: give
        # them a while (up to 3x IDLE_TIMEOUT) before draining, so a burst does
        # not churn nodes. Jobs that never match this node cannot keep it forever.
        if fitting and idle < 3 * entry.idle_timeout:
            why = (f"{fitting} idle job(s) fit here (waiting for the negotiator)"
                   if self.state.demand_ok else "demand is unknown (a schedd query failed): "
                   "waiting up to 3x IDLE_TIMEOUT")
            self._keep(rec, phase=Phase.IDLE, reason=f"idle for {age(idle)}, but {why}")
        elif idle >= entry.idle_timeout:
            reason = f"idle for {age(idle)} (IDLE_TIMEOUT {age(entry.idle_timeout)})"
            done = self._destroy(rec, Drain(rec.entry, rec.id, reason), Phase.DRAINING, reason)
            mismatch = self.state.mismatch.get(rec.entry)
            if done and mismatch and rec.last_busy is None and node.last_busy is None:
                # The churn brake: it was started for jobs that do not match it.
                self._failure(rec.entry, f"{rec.id} {CHURN_REASON}: {mismatch}")
        else:
            self._keep(rec, phase=Phase.IDLE, reason=f"idle for {age(idle)}")

    def _fitting_jobs(self, entry: EntryConfig, node: NodeInfo) -> int:
        """Idle jobs of ``entry``'s demand that fit in ``node``'s free resources,
        and end before it retires (a pilot); unknown demand: assume one does,
        so the node waits the longest."""
        if not self.state.demand_ok:
            return 1
        left = float("inf") if node.retire_time is None else node.retire_time - self.now
        return sum(g.count for g in self.state.demand.get(entry.name, ())
                   if g.cpus <= node.idle_cpus and g.memory_mb <= node.idle_memory_mb
                   and g.runtime <= left)

    def _draining(self, rec: InstanceRecord, entry: EntryConfig, node: Optional[NodeInfo]) -> None:
        if node is None:
            self._missing(rec, entry)
            return
        rec = replace(rec, missing_since=None, startd=node.startd or rec.startd)
        if node.busy_slots > 0:
            self._keep(rec, reason=f"draining, {node.busy_slots} job(s) left")
            return
        waited = self.now - rec.since
        if node.draining:
            self._terminate(rec, "drained, no job left")
        elif waited >= entry.drain_timeout:
            self._terminate(rec, f"no job, not reporting draining after {age(waited)}")
        else:
            self._keep(rec)

    # ------------------------------------------------------------ decide

    def _backoff(self) -> Dict[str, Backoff]:
        out = dict(self.state.backoff)
        for name in self.joined_entries | self.busy_entries:
            # A join ends a boot-failure backoff; only a job ends a churn one.
            if name in self.busy_entries or out.get(name, Backoff()).kind != CHURN:
                out.pop(name, None)
        for name, reasons in self.failures.items():
            entry = self.entries.get(name)
            if entry is None:
                continue
            failures = out.get(name, Backoff()).failures + 1
            more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
            churn = CHURN if any(CHURN_REASON in r for r in reasons) else ""
            out[name] = Backoff(failures, self.now + backoff_delay(entry, failures),
                                reasons[0] + more, churn)
        return dict(sorted(out.items()))
