"""How many new nodes a set of idle jobs needs, packing several jobs onto one
multi-core node (partitionable slots).  First fit decreasing over job groups,
so the cost grows with the number of groups, not of jobs."""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

from .state import JobGroup

__all__ = ["nodes_needed"]


def _fits(cpus: int, memory: int, job_cpus: int, job_memory: int) -> int:
    by_memory = memory // job_memory if job_memory > 0 else cpus
    return max(0, min(cpus // job_cpus, by_memory))


def nodes_needed(groups: Iterable[JobGroup], cpus: int, memory_mb: int,
                 free: Sequence[Tuple[int, int]] = (), limit: Optional[int] = None) -> int:
    """New nodes of ``cpus``/``memory_mb`` needed for ``groups`` once the free
    capacity ``free`` (cpus, memory) of existing or booting nodes is used.
    Jobs larger than a node are ignored.  Stops counting at ``limit``."""
    bins: List[List[int]] = [[c, m] for c, m in free if c > 0]
    new = 0
    shapes = sorted(((max(1, g.cpus), max(0, g.memory_mb), g.count) for g in groups
                     if g.count > 0), reverse=True)
    for job_cpus, job_memory, count in shapes:
        per_node = _fits(cpus, memory_mb, job_cpus, job_memory)
        if per_node == 0:
            continue
        for b in bins:
            if count == 0:
                break
            take = min(count, _fits(b[0], b[1], job_cpus, job_memory))
            b[0] -= take * job_cpus
            b[1] -= take * job_memory
            count -= take
        bins = [b for b in bins if b[0] > 0]
        full, rest = divmod(count, per_node)
        new += full + (1 if rest else 0)
        if rest:
            bins.append([cpus - rest * job_cpus, memory_mb - rest * job_memory])
        if limit is not None and new >= limit:
            return limit
    return new
