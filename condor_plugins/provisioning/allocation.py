"""One allocation per cycle, across entries (issue 15): a pure function.

``allocate(demand, offers, limits)`` decides which entry starts how many new
nodes for the idle job groups.  It reads no clock and does no I/O; the same
inputs, in any order, give the same Allocation.  Rules, in order:

* capacity that exists is used first, and counted once: the free cores and
  memory of every entry's joined and booting nodes (and of the nodes this
  allocation opens) take jobs before any new node is opened; a joined pilot
  only the jobs that end before it retires;
* each job is provisioned for at most once, on the best entry whose template
  matched it: lowest ``priority`` first, then the lowest cost per job-hour
  (the entry's cost per hour over the jobs of that shape one node takes),
  then the entry's name;
* an entry that may not start nodes (``blocked``: disabled, backing off, at
  its limits, its listing failed) or runs out of ``room`` passes the rest of
  the demand on to the next entry (spill-over);
* the global limits (instances, cores, spend per hour) are never exceeded.

Every entry that saw demand but got fewer nodes than it wanted, and every
group left with unserved jobs, carries a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from .packing import Capacity, bins_of, fill, open_nodes, per_node
from .state import Demand

__all__ = ["Demand", "Offer", "Limits", "Grant", "Allocation", "allocate"]


@dataclass(frozen=True)
class Offer:
    """One entry as the allocation sees it."""
    name: str
    cpus: int                          # of one new node
    memory_mb: int
    priority: int = 0                  # lower wins
    cost_per_hour: float = 0.0         # of one node
    free: Tuple[Capacity, ...] = ()    # free capacity of its joined and booting nodes
    room: int = 0                      # new nodes it may start now
    blocked: str = ""                  # why it may start none (then room is ignored)


@dataclass(frozen=True)
class Limits:
    """What is left under the global caps (None: no cap)."""
    instances: Optional[int] = None
    cores: Optional[int] = None
    spend_per_hour: Optional[float] = None


@dataclass(frozen=True)
class Grant:
    entry: str
    nodes: int                 # new nodes to start
    jobs: int                  # jobs these new nodes are for
    spend_per_hour: float


@dataclass(frozen=True)
class Allocation:
    grants: Tuple[Grant, ...]                       # by entry name, nodes > 0 only
    wanted: Mapping[str, int] = field(default_factory=dict)    # nodes each entry was asked for
    limited: Mapping[str, str] = field(default_factory=dict)   # entry -> why it got fewer
    unserved: Tuple[Tuple[Demand, int, str], ...] = ()         # group, jobs left, why
    asked: Mapping[str, int] = field(default_factory=dict)     # jobs that wanted its nodes
    spilled: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)  # from which entries

    def nodes(self, entry: str) -> int:
        return next((g.nodes for g in self.grants if g.entry == entry), 0)


def _rank(offer: Offer, job: Capacity) -> Tuple[int, float, str]:
    return (offer.priority, offer.cost_per_hour / per_node((offer.cpus, offer.memory_mb), job),
            offer.name)


class _Budget:
    """The global caps, spent as nodes are opened."""

    def __init__(self, limits: Limits):
        self.instances, self.cores, self.spend = (limits.instances, limits.cores,
                                                  limits.spend_per_hour)

    def most(self, offer: Offer) -> Tuple[int, str]:
        """How many nodes of ``offer`` the caps still allow, and the cap that binds."""
        caps = [(10 ** 9, "")]
        if self.instances is not None:
            caps.append((max(0, self.instances), "CLOUD_PLUGINS_MAX_INSTANCES"))
        if self.cores is not None:
            caps.append((max(0, self.cores) // max(1, offer.cpus), "CLOUD_PLUGINS_MAX_CORES"))
        if self.spend is not None and offer.cost_per_hour > 0:
            caps.append((int(max(0.0, self.spend) / offer.cost_per_hour + 1e-9),
                         "CLOUD_PLUGINS_BUDGET_PER_HOUR"))
        return min(caps, key=lambda c: c[0])

    def take(self, offer: Offer, nodes: int) -> None:
        if self.instances is not None:
            self.instances -= nodes
        if self.cores is not None:
            self.cores -= nodes * offer.cpus
        if self.spend is not None:
            self.spend -= nodes * offer.cost_per_hour


def allocate(demand: Iterable[Demand], offers: Iterable[Offer],
             limits: Limits = Limits()) -> Allocation:
    """Decide the new nodes of one cycle.  See the module docstring."""
    by_name = {o.name: o for o in sorted(offers, key=lambda o: o.name)}
    groups = sorted((g for g in demand if g.count > 0),
                    key=lambda g: (-max(1, g.cpus), -max(0, g.memory_mb), -max(0, g.runtime),
                                   tuple(sorted(g.entries)), -g.count))
    bins = {name: bins_of(o.free) for name, o in by_name.items()}
    room = {name: (0 if o.blocked else max(0, o.room)) for name, o in by_name.items()}
    budget = _Budget(limits)
    nodes: Dict[str, int] = {}
    jobs: Dict[str, int] = {}
    wanted: Dict[str, int] = {}
    limited: Dict[str, str] = {}
    unserved: List[Tuple[Demand, int, str]] = []
    asked: Dict[str, int] = {}
    spilled: Dict[str, set] = {}
    for group in groups:
        job = (max(1, group.cpus), max(0, group.memory_mb), max(0, group.runtime))
        eligible = sorted((by_name[e] for e in set(group.entries) if e in by_name
                           and per_node((by_name[e].cpus, by_name[e].memory_mb), job) > 0),
                          key=lambda o: _rank(o, job))
        if not eligible:
            unserved.append((group, group.count, "larger than a node of every matching entry"
                             if any(e in by_name for e in group.entries) else
                             "no configured entry matches"))
            continue
        left = group.count
        for offer in eligible:   # what exists, and what this cycle already opened
            left = fill(bins[offer.name], job, left)
        why, passed = "", []
        for offer in eligible:   # then new nodes, best entry first
            if left == 0:
                break
            node = (offer.cpus, offer.memory_mb)
            need = -(-left // per_node(node, job))
            wanted[offer.name] = wanted.get(offer.name, 0) + need
            asked[offer.name] = asked.get(offer.name, 0) + left
            if passed:
                spilled.setdefault(offer.name, set()).update(passed)
            cap, cap_why = budget.most(offer)
            most = min(room[offer.name], cap)
            if offer.blocked or most < need:
                why = offer.blocked or (cap_why if cap < room[offer.name] else
                                        "its own limits (MAX_INSTANCES, MAX_BOOTING or probe)")
                limited.setdefault(offer.name, why)
            opened, rest = open_nodes(bins[offer.name], node, job, left, most)
            if opened:
                nodes[offer.name] = nodes.get(offer.name, 0) + opened
                jobs[offer.name] = jobs.get(offer.name, 0) + left - rest
                room[offer.name] -= opened
                budget.take(offer, opened)
            if rest:
                passed.append(offer.name)
            left = rest
        if left:
            unserved.append((group, left, f"every matching entry is limited (last: {why})"))
    grants = tuple(Grant(name, n, jobs[name], round(n * by_name[name].cost_per_hour, 6))
                   for name, n in sorted(nodes.items()) if n > 0)
    return Allocation(grants, dict(sorted(wanted.items())), dict(sorted(limited.items())),
                      tuple(unserved), dict(sorted(asked.items())),
                      {k: tuple(sorted(v)) for k, v in sorted(spilled.items())})
