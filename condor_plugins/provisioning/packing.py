"""How many new nodes a set of idle jobs needs, packing several jobs onto one
multi-core node (partitionable slots).  First fit decreasing over job groups,
with nodes of equal free capacity merged, so the cost grows with the number
of job shapes, not with the number of jobs.

A capacity may carry a third number, the seconds its node still takes jobs
for (a pilot before its walltime), and a job shape a third, the seconds it
runs: such a job fits only a node with that much time left.  Without them
there is no limit."""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

from .state import JobGroup

__all__ = ["nodes_needed", "bins_of", "per_node", "fill", "open_nodes"]

#: Free (cpus, memory MB) of one node, optionally (cpus, memory MB, seconds
#: left); a job shape: (cpus, memory MB), optionally with its runtime.
Capacity = Tuple[int, ...]


def _fits(cap: Capacity, job: Capacity) -> int:
    """How many jobs of shape ``job`` fit in ``cap``."""
    if len(cap) > 2 and len(job) > 2 and job[2] > cap[2]:
        return 0   # the node retires before the job would end
    by_memory = cap[1] // job[1] if job[1] > 0 else cap[0]
    return max(0, min(cap[0] // job[0], by_memory))


def _after(cap: Capacity, job: Capacity, n: int) -> Capacity:
    return (cap[0] - n * job[0], cap[1] - n * job[1]) + tuple(cap[2:])


def nodes_needed(groups: Iterable[JobGroup], cpus: int, memory_mb: int,
                 free: Sequence[Capacity] = (), limit: Optional[int] = None) -> int:
    """New nodes of ``cpus``/``memory_mb`` needed for ``groups`` once the free
    capacity ``free`` of existing or booting nodes is used.  Jobs larger than
    a node are ignored.  Stops counting at ``limit``."""
    node: Capacity = (cpus, memory_mb)
    bins = bins_of(free)
    new = 0
    shapes = sorted(((max(1, g.cpus), max(0, g.memory_mb), max(0, g.runtime), g.count)
                     for g in groups if g.count > 0), reverse=True)
    for job_cpus, job_memory, runtime, count in shapes:
        job = (job_cpus, job_memory, runtime)
        if _fits(node, job) == 0:
            continue
        opened, _ = open_nodes(bins, node, job, fill(bins, job, count))
        new += opened
        if limit is not None and new >= limit:
            return limit
    return new


def bins_of(free: Iterable[Capacity]) -> Dict[Capacity, int]:
    """Free capacities as bins (capacity -> number of nodes with it)."""
    bins: Dict[Capacity, int] = {}
    for cap in free:
        _add(bins, cap, 1)
    return bins


def per_node(node: Capacity, job: Capacity) -> int:
    """How many jobs of shape ``job`` an empty ``node`` takes."""
    return _fits(node, (max(1, job[0]), max(0, job[1])) + tuple(job[2:]))


def fill(bins: Dict[Capacity, int], job: Capacity, count: int) -> int:
    """Place up to ``count`` jobs of shape ``job`` into ``bins`` (first fit,
    nodes that retire at a set time first, so the others stay for longer
    jobs, then largest first; deterministic); returns how many are left."""
    for cap in sorted(bins, key=lambda c: (len(c) > 2, c), reverse=True):
        k = _fits(cap, job)
        if count == 0 or k == 0:
            continue
        n = bins.pop(cap)
        whole = min(n, count // k)
        count -= whole * k
        _add(bins, _after(cap, job, k), whole)
        partial = 1 if whole < n and count > 0 else 0
        if partial:
            _add(bins, _after(cap, job, count), 1)
            count = 0
        _add(bins, cap, n - whole - partial)
    return count


def open_nodes(bins: Dict[Capacity, int], node: Capacity, job: Capacity, count: int,
               most: Optional[int] = None) -> Tuple[int, int]:
    """Open new ``node``s for ``count`` jobs of shape ``job`` (at most ``most``
    of them), their leftovers added to ``bins``: (nodes opened, jobs left)."""
    k = _fits(node, job)
    if k == 0 or count <= 0:
        return 0, max(0, count)
    nodes = -(-count // k)
    if most is not None:
        nodes = max(0, min(nodes, most))
    served = min(count, nodes * k)
    full, rest = divmod(served, k)
    _add(bins, _after(node, job, k), full)
    if rest:
        _add(bins, _after(node, job, rest), 1)
    return nodes, count - served


def _add(bins: Dict[Capacity, int], cap: Capacity, n: int) -> None:
    if n > 0 and cap[0] > 0:
        bins[cap] = bins.get(cap, 0) + n
