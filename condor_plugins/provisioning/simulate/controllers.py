"""Who starts and stops the simulated nodes, and the run loop.

* ``PolicyController``: the provisioner's own pure code, unchanged:
  ``policy.plan`` (with the cross-entry allocation) on an ObservedState built
  from the world, each CYCLE_INTERVAL; its Create, Drain and Terminate act
  on the world as act.py acts on clouds.
* ``FixedFleet``: N nodes from the start to the last job's end (baseline).
* ``NaiveAutoscaler``: one node per K idle jobs each cycle, whatever is
  booting, terminated after T idle (elastiq-style baseline).

``run`` skips provisioner cycles in which nothing can change: no world event
since the last cycle, no action in it, and no policy timer due (IDLE_TIMEOUT,
JOIN_TIMEOUT, DRAIN_TIMEOUT, a backoff's end, BURST_DELAY).  Before a jump it
runs the last cycle ahead of the next event, so the records it keeps (a
busy node's last busy time) are those of the cycle-by-cycle run.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

from ...config import ProvisionerConfig
from ..idlejobs import per_entry
from ..policy import fold_launches, plan
from ..state import (Create, Demand, Drain, Hold, Launched, LaunchFailed, Listing,
                     ObservedState, Phase, Terminate)
from .world import INF, IDLE, CreateFailed, World

__all__ = ["PolicyController", "FixedFleet", "NaiveAutoscaler", "run", "Series"]


class PolicyController:
    name = "policy"

    def __init__(self, cfg: ProvisionerConfig):
        self.cfg = cfg
        self.records: Dict = {}
        self.backoff: Dict = {}
        self.failures: List = []
        self.acted = True
        self.holds: Dict[str, int] = {}      # hold key -> cycles it held
        self.last_holds: List[str] = []
        self.decisions = {"create": 0, "drain": 0, "terminate": 0, "failed": 0}

    def cycle(self, world: World, now: float) -> None:
        groups = world.idle_demand(now)
        jobs = tuple(Demand(n, c.cpus, c.memory, c.entries) for c, n in groups)
        names = [e.name for e in self.cfg.entries]
        nodes = world.node_infos()
        state = ObservedState(
            records=self.records, backoff=self.backoff, demand=per_entry(jobs, names),
            jobs=jobs, running={i: len(world.nodes[i].running) for i in nodes},
            listings={n: Listing(True, world.listing(n)) for n in names}, nodes=nodes,
            outcomes=tuple(self.failures))
        result = plan(state, self.cfg, now)
        # A cycle that only moved a record or a backoff is not a resting
        # point: the next plan may decide otherwise (plan is not idempotent).
        self.acted = (dict(result.backoff) != self.backoff or set(result.records) !=
                      set(self.records) or any(r.phase is not self.records[i].phase
                                               for i, r in result.records.items()))
        self.records, self.backoff, self.failures = dict(result.records), dict(result.backoff), []
        self.last_holds = []
        for action in result.actions:
            if isinstance(action, Hold):
                key = (action.key or "other").split(" ", 1)[0]
                self.last_holds.append(key)
                self.holds[key] = self.holds.get(key, 0) + 1
            elif isinstance(action, Create):
                self.acted = True
                for _ in range(action.count):
                    try:
                        node = world.create(action.entry, now)
                    except CreateFailed as err:
                        self.failures.append(LaunchFailed(action.entry, "capacity", str(err)))
                        self.decisions["failed"] += 1
                        self.acted = True   # the next plan sees the failure
                        break
                    self.decisions["create"] += 1
                    launched = Launched(action.entry, (world.instance(node),))
                    self.records = fold_launches(self.records, [launched], now)
            elif isinstance(action, (Drain, Terminate)):
                self.acted = True
                kind = "drain" if isinstance(action, Drain) else "terminate"
                self.decisions[kind] += 1
                getattr(world, kind)(action.instance_id, now)

    def skipped(self, cycles: int) -> None:
        """``cycles`` skipped: they held what the last one held."""
        for key in self.last_holds:
            self.holds[key] += cycles

    def next_timer(self, world: World, after: float) -> float:
        """The first time after ``after`` at which a timer of the policy may
        change a decision (INF: none)."""
        times = []
        by = {e.name: e for e in self.cfg.entries}
        for rec in self.records.values():
            e = by.get(rec.entry)
            if e is None or rec.phase is Phase.GONE:
                return after  # dropped (or reported) next cycle: due now
            if rec.phase is Phase.REQUESTED:
                times.append(rec.since + e.request_timeout)
            elif rec.phase is Phase.BOOTING:
                times.append(rec.created + e.join_timeout)
            elif rec.phase is Phase.IDLE:
                mark = max(t for t in (rec.joined, rec.last_busy, rec.since) if t is not None)
                times += [mark + e.idle_timeout, mark + 3 * e.idle_timeout]
            elif rec.phase is Phase.DRAINING:
                times.append(rec.since + e.drain_timeout)
        times += [b.until for b in self.backoff.values()]
        return min((t for t in times if t > after), default=INF)


def _ordered(cfg: ProvisionerConfig) -> list:
    """Entries as the allocation prefers them: priority, then cost per core."""
    return sorted((e for e in cfg.entries if e.enabled),
                  key=lambda e: (e.priority, e.cost_per_hour / max(1, e.cpus), e.name))


def _room(world: World, entry) -> int:
    return entry.max_instances - sum(1 for n in world.nodes.values() if n.entry == entry.name)


class NaiveAutoscaler:
    """Each cycle: one node per ``per`` idle jobs a cloud node could serve (no
    matter what is booting), on the first entry (by priority and cost) that
    matches them, spilling to the next one at its MAX_INSTANCES; terminate a
    node idle for ``idle`` seconds (no drain)."""
    name = "naive"

    def __init__(self, cfg: ProvisionerConfig, per: int, idle: float):
        self.cfg, self.per, self.idle, self.acted = cfg, max(1, per), idle, True
        self.order = _ordered(cfg)

    def cycle(self, world: World, now: float) -> None:
        self.acted = False
        for node in list(world.nodes.values()):
            if node.phase == IDLE and now - node.idle_since >= self.idle:
                world.terminate(node.id, now)
                self.acted = True
        room = {e.name: _room(world, e) for e in self.order}
        cap = INF if self.cfg.max_instances is None else self.cfg.max_instances - len(world.nodes)
        for cls, count in world.idle_demand(now):
            for entry in self.order:  # the first matching entry, spilling to the next
                if count <= 0 or cap <= 0:
                    break
                if entry.name not in cls.entries or room[entry.name] <= 0:
                    continue
                for _ in range(int(min(math.ceil(count / self.per), room[entry.name], cap))):
                    try:
                        world.create(entry.name, now)
                    except CreateFailed:
                        room[entry.name] = 0
                        self.acted = True   # tried: the next cycle tries again
                        break
                    self.acted = True
                    room[entry.name] -= 1
                    cap -= 1
                    count -= self.per

    def next_timer(self, world: World, after: float) -> float:
        return min((n.idle_since + self.idle for n in world.nodes.values()
                    if n.phase == IDLE and n.idle_since + self.idle > after), default=INF)


class FixedFleet:
    """``size`` nodes from the start, on the entries in order of priority and
    cost within their MAX_INSTANCES; a node the cloud takes is replaced; all
    are terminated after the last job."""
    name = "fixed"

    def __init__(self, cfg: ProvisionerConfig, size: int):
        self.order, self.size, self.acted = _ordered(cfg), size, True

    def cycle(self, world: World, now: float) -> None:
        self.acted = False
        if world.next_job >= len(world.jobs) and world.done >= world.expected:
            for nid in list(world.nodes):
                world.terminate(nid, now)
            return
        missing = self.size - len(world.nodes)
        for entry in self.order:
            for _ in range(max(0, min(missing, _room(world, entry)))):
                try:
                    world.create(entry.name, now)
                except CreateFailed:
                    self.acted = True   # tried: the next cycle tries again
                    break
                self.acted, missing = True, missing - 1

    def next_timer(self, world: World, after: float) -> float:
        return INF


class Series:
    """What the figure shows, one row per provisioner cycle run."""

    def __init__(self):
        self.t: List[float] = []
        self.idle_jobs: List[int] = []
        self.phases: List[tuple] = []
        self.spend: List[float] = []

    def sample(self, world: World, now: float) -> None:
        self.t.append(now - world.t0)
        self.idle_jobs.append(world.idle_jobs())
        self.phases.append(tuple(world.counts))
        self.spend.append(world.spend_rate)


def run(world: World, controller, cycle: float, horizon: float = 30 * 86400,
        progress: Optional[Callable[[float], None]] = None, offset: float = 0.0,
        skip: bool = True) -> dict:
    """Drive ``world`` with ``controller`` every ``cycle`` seconds, the first
    cycle ``offset`` seconds after the first arrival, until every job ended
    and every cloud node is gone (or ``horizon`` after the last arrival).
    Returns run statistics (cycles run and skipped).  ``skip`` False runs
    every cycle (the reference the skipping is tested against)."""
    series = Series()
    base = t = world.t0 + offset
    end = (world.jobs[-1].submit if world.jobs else t) + horizon
    ran = skipped = 0
    next_report = t
    while True:
        world.advance(t)
        if world.finished() or t > end:
            break
        # Run it if anything changed or a timer fell since the last tick, or
        # if it is the last cycle before a change (a busy node's last busy
        # time is then the one a cycle-by-cycle run keeps).
        due = min(controller.next_timer(world, t - cycle), world.next_eligible(t - cycle)) <= t
        wake = min(world.next_event(), controller.next_timer(world, t))
        if not skip or ran == 0 or world.dirty or controller.acted or due or wake <= t + cycle:
            world.dirty = False
            controller.cycle(world, t)
            series.sample(world, t)
            ran += 1
        else:
            skipped += 1
            getattr(controller, "skipped", lambda n: None)(1)
        step = t + cycle
        if skip and not world.dirty and not controller.acted:
            wake = min(world.next_event(), controller.next_timer(world, t))
            if wake == INF and not world.nodes and world.next_job >= len(world.jobs):
                break  # nothing will ever change again (jobs no node can run)
            last_before = base + (math.ceil((wake - base) / cycle) - 1) * cycle
            # ... but never past the horizon's first cycle.
            last_before = min(last_before, base + (math.floor((end - base) / cycle) + 1) * cycle)
            if last_before > step:  # skip to the last cycle before the change
                jumped = int(round((last_before - step) / cycle))
                skipped += jumped
                getattr(controller, "skipped", lambda n: None)(jumped)
                step = last_before
        t = step
        if progress is not None and t >= next_report:
            progress(t)
            next_report = t + 86400
    series.sample(world, world.now)
    return {"series": series, "cycles": ran, "skipped": skipped, "end": world.now,
            "complete": world.finished()}
