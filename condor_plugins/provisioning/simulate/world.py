"""The simulated world of ``condor_cloud simulate``: a clock, a queue, the
site's static nodes, one simulated cloud per entry, and a negotiator.

Event-driven: job arrivals, job ends, joins, interruptions and the clouds'
deletions are events; a negotiation happens on NEGOTIATOR_INTERVAL ticks,
and only when something changed since the last one (a job arrived, capacity
was freed, a node joined).  The provisioner (a controller, controllers.py)
acts through ``create``, ``drain`` and ``terminate``, and sees the world as
the real one shows it: provider listings, the collector's node view and the
idle jobs by shape.

The negotiator places idle jobs first come, first served, per shape, on the
first node with room (site nodes before cloud nodes for mode ``any``); a job
that ends hands its slot to the next idle job of its shape at once (claim
reuse).  Cloud nodes boot for a sampled time, then join; a create may fail;
a spot interruption vacates the node's jobs (requeued) and the cloud takes
the node after its notice.  Billing runs from the create to the deletion.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from bisect import bisect_right
from collections import deque
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ...providers.base import Instance, InstanceState
from ..state import NodeInfo
from .cloud import CloudModel, CreateFailed, Dist
from .trace import Trace

__all__ = ["Dist", "CloudModel", "Node", "World", "CreateFailed", "PHASES", "INF"]

INF = float("inf")
#: Accounting phases of a cloud node.
PHASES = ("booting", "idle", "busy", "draining", "stopping")
BOOTING, IDLE, BUSY, DRAINING, STOPPING = range(5)
_DONE, _JOIN, _GONE, _INTERRUPT, _RETIRE = range(5)


class Node:
    __slots__ = ("id", "entry", "cpus", "memory", "free_cpus", "free_memory", "running",
                 "created", "joined", "phase", "since", "acc", "draining", "interruption",
                 "ran", "price", "site", "gone", "inst", "info", "idle_since")

    def __init__(self, nid: str, entry: str, cpus: int, memory: int, now: float,
                 price: float = 0.0, site: bool = False):
        self.id, self.entry, self.cpus, self.memory = nid, entry, cpus, memory
        self.free_cpus, self.free_memory, self.running = cpus, memory, set()
        self.created, self.joined, self.gone = now, None, None
        self.phase, self.since, self.acc = BOOTING, now, [0.0] * len(PHASES)
        self.draining, self.interruption, self.ran = False, "", 0
        self.price, self.site, self.inst, self.info = price, site, None, None
        self.idle_since = now


class _Class:
    """Idle jobs of one shape and mode, first come first served."""
    __slots__ = ("cpus", "memory", "mode", "entries", "site_ok", "jobs", "times", "head",
                 "front")

    def __init__(self, cpus: int, memory: int, mode: str, entries: Tuple[str, ...],
                 site_ok: bool):
        self.cpus, self.memory, self.mode, self.entries = cpus, memory, mode, entries
        self.site_ok, self.jobs, self.times, self.head = site_ok, [], [], 0
        self.front = deque()  # requeued (vacated) jobs go first

    def waiting(self) -> int:
        return len(self.jobs) - self.head + len(self.front)

    def pop(self) -> int:
        if self.front:
            return self.front.popleft()
        self.head += 1
        return self.jobs[self.head - 1]


class World:
    def __init__(self, trace: Trace, entries: Sequence, models: Mapping[str, CloudModel],
                 site: Sequence[Tuple[int, int]], classes, seed: int = 1,
                 negotiator_interval: float = 60.0, burst_delay: float = 0.0):
        """``entries``: EntryConfigs; ``site``: (cpus, memory) per site node;
        ``classes``: per job, (cpus, memory, mode, cloud entries, site ok) or
        a reason string (left out), from match.py."""
        self.jobs, self.t0 = trace.jobs, trace.start
        self.entries = {e.name: e for e in entries}
        self.models = {e.name: models.get(e.name, CloudModel()) for e in entries}
        self.rng = {e.name: random.Random(f"{seed}:{e.name}") for e in entries}
        self.neg_interval, self.burst_delay = float(negotiator_interval), float(burst_delay)
        n = len(self.jobs)
        self.first_start: List[Optional[float]] = [None] * n
        self.on_cloud = bytearray(n)
        self.token = [0] * n
        self.excluded: Dict[str, int] = {}
        self.classes: List[_Class] = []
        self.job_class: List[int] = [-1] * n
        index: Dict[tuple, int] = {}
        for i, key in enumerate(classes):
            if isinstance(key, str):
                self.excluded[key] = self.excluded.get(key, 0) + 1
                continue
            if key not in index:
                index[key] = len(self.classes)
                self.classes.append(_Class(*key))
            self.job_class[i] = index[key]
        self.expected = n - sum(self.excluded.values())
        self.heap: list = []
        self.seq = itertools.count()
        self.next_job, self.done, self.running_jobs = 0, 0, 0
        self.nodes: Dict[str, Node] = {}
        self.site = [Node(f"site-{k}", "", c, m, self.t0, site=True) for k, (c, m) in
                     enumerate(site)]
        self.free_site = {s.id: s for s in self.site}
        self.free_cloud: Dict[str, Node] = {}
        self.counts = [0] * len(PHASES)
        self.spend_rate = 0.0
        self.created = itertools.count(1)
        self.vms_started = self.churn = self.interruptions = self.create_failures = 0
        self.acc = [0.0] * len(PHASES)
        self.cost = 0.0
        self.last_gone: Optional[float] = None
        self.neg_dirty, self.neg_at, self.last_neg = False, INF, -INF
        self.dirty = True   # something changed since the last provisioner cycle
        self.now = self.t0

    # ------------------------------------------------------------ clock
    def next_event(self) -> float:
        """When the world changes next by itself (INF: never)."""
        ta = self.jobs[self.next_job].submit if self.next_job < len(self.jobs) else INF
        te = self.heap[0][0] if self.heap else INF
        tn = self.neg_at if self.neg_dirty else INF
        return min(ta, te, tn, self.next_eligible(self.now))

    def next_eligible(self, after: float) -> float:
        """The first time after ``after`` at which a waiting mode-any job
        passes BURST_DELAY (INF: none)."""
        out = INF
        for c in self.classes:
            if c.mode == "any" and c.entries and c.head < len(c.times):
                k = bisect_right(c.times, after - self.burst_delay, c.head)
                if k < len(c.times):
                    out = min(out, c.times[k] + self.burst_delay)
        return out

    def advance(self, until: float) -> None:
        """Process everything that happens up to ``until`` (inclusive), in order."""
        jobs, heap, n = self.jobs, self.heap, len(self.jobs)
        while True:
            ta = jobs[self.next_job].submit if self.next_job < n else INF
            te = heap[0][0] if heap else INF
            tn = self.neg_at if self.neg_dirty else INF
            t = min(ta, te, tn)
            if t > until:
                break
            self.now = t
            if ta <= te and ta <= tn:
                self._arrive(self.next_job, t)
                self.next_job += 1
            elif te <= tn:
                _, _, kind, obj, tok = heapq.heappop(heap)
                (self._job_done, self._join, self._gone, self._interrupt,
                 self._retire)[kind](obj, tok, t)
            else:
                self._negotiate(t)
        self.now = until

    def _push(self, t: float, kind: int, obj, tok=0) -> None:
        heapq.heappush(self.heap, (t, next(self.seq), kind, obj, tok))

    def _wake_negotiator(self, t: float) -> None:
        if not self.neg_dirty:
            self.neg_dirty = True
            k = math.ceil((t - self.t0) / self.neg_interval - 1e-9)
            self.neg_at = max(self.t0 + k * self.neg_interval, self.last_neg + self.neg_interval)

    # ------------------------------------------------------------ jobs
    def _arrive(self, i: int, t: float) -> None:
        c = self.job_class[i]
        if c < 0:
            return
        cls = self.classes[c]
        cls.jobs.append(i)
        cls.times.append(t)
        self.dirty = True
        self._wake_negotiator(t)

    def _start(self, i: int, cls: _Class, node: Node, t: float) -> None:
        if self.first_start[i] is None:
            self.first_start[i] = t
        self.on_cloud[i] = not node.site
        node.free_cpus -= cls.cpus
        node.free_memory -= cls.memory
        if not node.running and not node.site:
            self._phase(node, BUSY, t)
        node.running.add(i)
        node.ran += 1
        node.info = None
        self.running_jobs += 1
        self.dirty = True
        if node.free_cpus <= 0:
            (self.free_site if node.site else self.free_cloud).pop(node.id, None)
        self._push(t + self.jobs[i].runtime, _DONE, (i, node), self.token[i])

    def _job_done(self, obj, tok: int, t: float) -> None:
        i, node = obj
        if tok != self.token[i] or i not in node.running:
            return  # vacated earlier
        cls = self.classes[self.job_class[i]]
        node.running.discard(i)
        node.free_cpus += cls.cpus
        node.free_memory += cls.memory
        node.info = None
        self.running_jobs -= 1
        self.done += 1
        self.dirty = True
        if not self._accepting(node):
            if not node.running and node.phase == BUSY:
                self._phase(node, IDLE, t)
            return
        if cls.waiting():  # claim reuse: the next job of this shape takes the slot
            self._start(cls.pop(), cls, node, t)
            return
        if not node.running and not node.site:
            self._phase(node, IDLE, t)
            node.idle_since = t
        (self.free_site if node.site else self.free_cloud)[node.id] = node
        self._wake_negotiator(t)

    @staticmethod
    def _accepting(node: Node) -> bool:
        return node.site or (node.joined is not None and not node.draining
                             and node.phase != STOPPING)

    def _negotiate(self, t: float) -> None:
        # Changes what the provisioner sees even when it places nothing: the
        # jobs it did not match now count as demand (mode any).
        self.neg_dirty, self.last_neg, self.neg_at, self.dirty = False, t, INF, True
        for cls in self.classes:
            if not cls.waiting():
                continue
            pools = []
            if cls.site_ok:
                pools.append(self.free_site)
            if cls.entries:
                pools.append(self.free_cloud)
            for pool in pools:
                for node in list(pool.values()):
                    if node.entry and node.entry not in cls.entries:
                        continue
                    while (cls.waiting() and node.free_cpus >= cls.cpus
                           and node.free_memory >= cls.memory):
                        self._start(cls.pop(), cls, node, t)
                    if not cls.waiting():
                        break
                if not cls.waiting():
                    break

    # ------------------------------------------------------------ demand
    def idle_demand(self, now: float) -> List[Tuple[_Class, int]]:
        """Idle jobs a cloud node could serve, per class: mode cloud at once,
        mode any after BURST_DELAY and a negotiation that found no match."""
        out = []
        cut = min(now - self.burst_delay, self.last_neg)
        for cls in self.classes:
            if not cls.entries or not cls.waiting():
                continue
            if cls.mode == "cloud":
                count = cls.waiting()
            else:
                count = len(cls.front) + bisect_right(cls.times, cut, cls.head) - cls.head
            if count > 0:
                out.append((cls, count))
        return out

    def idle_jobs(self) -> int:
        return sum(c.waiting() for c in self.classes)

    # ------------------------------------------------------------ cloud
    def create(self, entry: str, t: float) -> Node:
        e, model, rng = self.entries[entry], self.models[entry], self.rng[entry]
        if model.fail and rng.random() < model.fail:
            self.create_failures += 1
            raise CreateFailed(f"simulated capacity error of entry {entry}")
        price = e.cost_per_hour if model.price is None else model.price
        node = Node(f"{entry}-{next(self.created):06d}", entry, e.cpus,
                    max(0, e.memory_mb - e.memory_reserve), t, price)
        self.nodes[node.id] = node
        self.counts[BOOTING] += 1
        self.spend_rate += price
        self.vms_started += 1
        self.dirty = True
        self._push(t + model.boot.sample(rng), _JOIN, node)
        return node

    def _join(self, node: Node, _tok, t: float) -> None:
        if node.phase == STOPPING or node.gone is not None:
            return
        node.joined, node.inst, node.info, node.idle_since = t, None, None, t
        self._phase(node, DRAINING if node.draining else IDLE, t)
        self.dirty = True
        if not node.draining:
            self.free_cloud[node.id] = node
            self._wake_negotiator(t)
        rate = self.models[node.entry].interrupt
        if rate > 0:
            self._push(t + self.rng[node.entry].expovariate(rate / 3600.0), _INTERRUPT, node)

    def drain(self, nid: str, t: float) -> None:
        """Asked to retire: the node takes no new job once it has seen the
        request (``CloudModel.retire`` later: it pulls it), then drains."""
        node = self.nodes.get(nid)
        if node is None or node.draining:
            return
        delay = self.models[node.entry].retire
        if delay > 0:
            self._push(t + delay, _RETIRE, node)
        else:
            self._retire(node, 0, t)

    def _retire(self, node: Node, _tok, t: float) -> None:
        if node.gone is not None or node.draining or node.phase == STOPPING:
            return
        nid = node.id
        node.draining, node.info = True, None
        self.free_cloud.pop(nid, None)
        if node.joined is not None and node.phase in (IDLE, BUSY):
            self._phase(node, DRAINING, t)
        self.dirty = True

    def terminate(self, nid: str, t: float) -> None:
        node = self.nodes.get(nid)
        if node is None or node.phase == STOPPING:
            return
        self._vacate(node, t)
        self.free_cloud.pop(nid, None)
        self._phase(node, STOPPING, t)
        node.inst = node.info = None
        self.dirty = True
        self._push(t + self.models[node.entry].shutdown, _GONE, node)

    def _vacate(self, node: Node, t: float) -> None:
        """The node's jobs go back to the queue (first in line)."""
        for i in sorted(node.running):
            self.token[i] += 1
            cls = self.classes[self.job_class[i]]
            node.free_cpus += cls.cpus
            node.free_memory += cls.memory
            cls.front.append(i)
            self.running_jobs -= 1
        if node.running:
            node.running.clear()
            self._wake_negotiator(t)

    def _interrupt(self, node: Node, _tok, t: float) -> None:
        if node.gone is not None or node.phase == STOPPING:
            return
        self.interruptions += 1
        node.interruption, node.draining, node.info = "spot interruption notice", True, None
        self._vacate(node, t)
        self.free_cloud.pop(node.id, None)
        self._phase(node, DRAINING, t)
        self.dirty = True
        self._push(t + self.models[node.entry].notice, _GONE, node)

    def _gone(self, node: Node, _tok, t: float) -> None:
        if node.gone is not None:
            return
        self._vacate(node, t)
        self._phase(node, node.phase, t)  # closes the open phase's time
        self.counts[node.phase] -= 1
        node.gone = t
        self.spend_rate -= node.price
        self.cost += (t - node.created) / 3600.0 * node.price
        for k, v in enumerate(node.acc):
            self.acc[k] += v
        self.churn += node.ran == 0
        self.last_gone = t
        self.free_cloud.pop(node.id, None)
        del self.nodes[node.id]
        self.dirty = True

    def _phase(self, node: Node, phase: int, t: float) -> None:
        if node.site:
            return
        node.acc[node.phase] += t - node.since
        self.counts[node.phase] -= 1
        self.counts[phase] += 1
        node.phase, node.since = phase, t

    # ------------------------------------------------------------ views
    def instance(self, node: Node) -> Instance:
        """The node as its cloud lists it."""
        if node.inst is None:
            state = (InstanceState.STOPPING if node.phase == STOPPING else
                     InstanceState.RUNNING if node.joined is not None else
                     InstanceState.PENDING)
            node.inst = Instance(node.id, node.entry, state, node.created)
        return node.inst

    def listing(self, entry: str) -> Tuple[Instance, ...]:
        return tuple(self.instance(n) for n in self.nodes.values() if n.entry == entry)

    def node_infos(self) -> Dict[str, NodeInfo]:
        """The collector's view: joined nodes not being deleted."""
        out = {}
        for node in self.nodes.values():
            if node.joined is None or node.phase == STOPPING:
                continue
            if node.info is None:
                node.info = NodeInfo(node.id, len(node.running), node.free_cpus,
                                     node.free_memory, node.draining, startd=node.id,
                                     interruption=node.interruption)
            out[node.id] = node.info
        return out

    def finished(self) -> bool:
        return (self.next_job >= len(self.jobs) and self.done >= self.expected
                and not self.nodes)
