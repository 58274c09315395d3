"""Scale-up of one cycle: the entries as offers, one allocation across them,
and the Create and Hold actions with their reasons.  Pure, like the policy
that calls it (``policy._Cycle``) and the simulator and ``condor_cloud plan``
that reuse it.

An entry may start no node while it is disabled, backing off, waiting for its
probe instance, at MAX_INSTANCES or MAX_BOOTING, its listing failed or its
instance type could not be described (sizing.py); the
jobs it would have taken spill to the next entry that matched them.  The
global caps (CLOUD_PLUGINS_MAX_INSTANCES, MAX_CORES, BUDGET_PER_HOUR) count
every instance not gone, of every entry, booting or running.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..config import EntryConfig, ProvisionerConfig
from .allocation import Allocation, Limits, Offer, allocate
from .state import (ACTIVE_PHASES, BOOTING_PHASES, Action, Backoff, Create, Demand, Hold,
                    InstanceRecord, NodeInfo, Phase, age)

__all__ = ["scale_up", "spend_per_hour", "global_limits"]


def spend_per_hour(records: Iterable[InstanceRecord],
                   cfg: ProvisionerConfig) -> Dict[str, float]:
    """The spend rate of every entry's instances that are not gone (booting,
    running, draining or being terminated: all still billed)."""
    cost = {e.name: e.cost_per_hour for e in cfg.entries}
    out = {e.name: 0.0 for e in cfg.entries}
    for rec in records:
        if rec.phase in ACTIVE_PHASES and rec.entry in cost:
            out[rec.entry] += cost[rec.entry]
    return {k: round(v, 6) for k, v in out.items()}


def global_limits(records: Sequence[InstanceRecord], cfg: ProvisionerConfig) -> Limits:
    """What the global caps leave for new instances.  Instances of an entry no
    longer configured count as instances, with no cores or cost known."""
    active = [r for r in records if r.phase in ACTIVE_PHASES]
    cpus = {e.name: e.cpus for e in cfg.entries}
    return Limits(
        None if cfg.max_instances is None else cfg.max_instances - len(active),
        None if cfg.max_cores is None else cfg.max_cores - sum(cpus.get(r.entry, 0)
                                                                for r in active),
        None if cfg.budget_per_hour is None else
        cfg.budget_per_hour - sum(spend_per_hour(active, cfg).values()))


def _blocked(entry: EntryConfig, backoff: Optional[Backoff], booting: int, room: int,
             exist: int, now: float) -> Tuple[str, str, int, str]:
    """(why the entry may start nothing, hold key, room, note on a create)."""
    if not entry.enabled:
        return "entry disabled", "disabled", 0, ""
    if backoff is not None and now < backoff.until:
        return (f"backing off for {age(backoff.until - now)} after {backoff.failures} "
                f"failure(s): {backoff.reason}", "backoff", 0, "")
    note = ""
    if backoff is not None and backoff.failures > 0:
        if booting:
            return "waiting for the probe instance to join", "probe", 0, ""
        room, note = min(room, 1), "; probing with one instance after failures"
    if room <= 0:
        limit = "MAX_INSTANCES" if exist >= entry.max_instances else "MAX_BOOTING"
        return f"at {limit}", limit, 0, ""
    return "", "", room, note


def free_capacity(entry: EntryConfig, records: Iterable[InstanceRecord],
                  node_of: Callable[[str], Optional[NodeInfo]], now: float,
                  skip: Iterable[str] = ()) -> List[Tuple[int, ...]]:
    """(cpus, memory MB) free on an entry's instances: a booting one counts
    whole, a joined one as the collector shows it (nothing if unknown), with
    the seconds it still takes jobs for if it retires at a set time (a pilot's
    walltime).  ``skip``: instance ids left out."""
    skip = set(skip)
    usable = max(0, entry.memory_mb - entry.memory_reserve)
    free = []
    for r in records:
        if r.entry != entry.name or r.id in skip:
            continue
        if r.phase in BOOTING_PHASES:
            free.append((entry.cpus, usable))
        elif r.phase in (Phase.IDLE, Phase.BUSY) and (node := node_of(r.id)) is not None:
            if node.retire_time is None:
                free.append((node.idle_cpus, node.idle_memory_mb))
            elif node.retire_time > now:   # past it, it takes no job at all
                free.append((node.idle_cpus, node.idle_memory_mb,
                             int(node.retire_time - now)))
    return free


def scale_up(cfg: ProvisionerConfig, records: Mapping[str, InstanceRecord],
             node_of: Callable[[str], Optional[NodeInfo]], jobs: Iterable[Demand],
             backoff: Mapping[str, Backoff], now: float,
             unlisted: Iterable[str] = (),
             unsized: Mapping[str, str] = {}) -> Tuple[List[Action], Allocation]:
    """The creates (and holds) of one cycle.  ``records``: this cycle's
    records; ``node_of``: an instance's collector view (None if unknown);
    ``unlisted``: entries whose listing failed (no create, capacity kept);
    ``unsized``: entries whose size is unknown, and why (no create)."""
    unlisted = set(unlisted)
    jobs = list(jobs)
    actions: List[Action] = []
    offers, shown = [], {}
    for entry in cfg.entries:
        mine = [r for r in records.values() if r.entry == entry.name and r.phase in ACTIVE_PHASES]
        booting = sum(1 for r in mine if r.phase in BOOTING_PHASES)
        usable = max(0, entry.memory_mb - entry.memory_reserve)
        free = free_capacity(entry, mine, node_of, now)
        room = min(entry.max_instances - len(mine), entry.max_booting - booting)
        own = ("MAX_INSTANCES" if entry.max_instances - len(mine) <= entry.max_booting - booting
               else "MAX_BOOTING")
        if entry.name in unlisted:
            why, key, room, note = "the provider listing failed", "listing", 0, ""
            actions.append(Hold(entry.name, "no create: the provider listing failed", key))
        elif entry.name in unsized:
            why, key, room, note = f"size unknown: {unsized[entry.name]}", "sizing", 0, ""
            actions.append(Hold(entry.name, f"no create: {why}", key))
        else:
            why, key, room, note = _blocked(entry, backoff.get(entry.name), booting, room,
                                            len(mine), now)
            own = "probe" if note else own
        longest = max((d.runtime for d in jobs if entry.name in d.entries), default=0)
        retiring = sum(1 for cap in free if len(cap) > 2 and cap[0] > 0 and cap[2] < longest)
        if retiring:   # why a new pilot while one is idle
            note += (f"; {retiring} joined node(s) retire before the longest of these "
                     f"jobs ({longest}s) would end")
        shown[entry.name] = (why, key, note, len(mine), booting, own)
        offers.append(Offer(entry.name, entry.cpus, usable, entry.priority,
                            entry.cost_per_hour, tuple(free), room, why))
    alloc = allocate(jobs, offers, global_limits(list(records.values()), cfg))
    for entry in cfg.entries:
        wanted = alloc.wanted.get(entry.name, 0)
        why, key, note, exist, booting, own = shown[entry.name]
        if wanted == 0 or key in ("listing", "sizing"):
            continue
        msg = (f"{alloc.asked.get(entry.name, 0)} idle job(s) need {wanted} more node(s) of "
               f"{entry.cpus} cpus/{max(0, entry.memory_mb - entry.memory_reserve)} MB "
               f"({exist} exist, {booting} booting)")
        nodes = alloc.nodes(entry.name)
        limited = alloc.limited.get(entry.name, "")
        if why:
            actions.append(Hold(entry.name, f"{msg}; {why}", key))
            continue
        if nodes:
            spill = alloc.spilled.get(entry.name)
            cost = (f"; {entry.cost_per_hour:g}/h each, priority {entry.priority}"
                    if entry.cost_per_hour or entry.priority else "")
            actions.append(Create(entry.name, nodes, msg + note + cost + (
                f"; spilled over from {', '.join(spill)}" if spill else "")))
        if limited:  # fewer than wanted: the cap that binds, else its own limit
            cap = limited if limited.startswith("CLOUD_PLUGINS_") else own
            actions.append(Hold(entry.name, f"{msg}; {nodes} within {cap}" if nodes else
                                f"{msg}; at {cap}", cap))
    return actions, alloc
