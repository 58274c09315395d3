"""Plain data of one provisioner cycle: what was observed, what is remembered
per instance, and the actions the policy returns.  No behaviour, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ..providers.base import Instance

__all__ = [
    "Phase", "ACTIVE_PHASES", "BOOTING_PHASES", "JOINED_PHASES", "InstanceRecord", "Backoff",
    "JobGroup", "Demand", "NodeInfo", "Listing", "Launched", "LaunchFailed", "Outcome",
    "ObservedState", "Create", "Drain", "Terminate", "Hold", "Action", "Plan",
]


class Phase(str, enum.Enum):
    """The provisioner's view of one instance; changed only by observations.

    REQUESTED -> BOOTING -> IDLE <-> BUSY -> DRAINING -> TERMINATING -> GONE,
    and FAILED (being terminated as a failure) -> GONE."""
    REQUESTED = "requested"      # created, not yet in the provider's listing
    BOOTING = "booting"          # listed, not yet in the collector
    IDLE = "idle"                # joined, no job
    BUSY = "busy"                # joined, runs at least one job
    DRAINING = "draining"        # drain sent; waits for its jobs to finish
    TERMINATING = "terminating"  # terminate sent (or stopping on its own)
    FAILED = "failed"            # never joined or errored; terminate sent
    GONE = "gone"                # no longer listed; reported once, then dropped

    def __str__(self) -> str:
        return self.value


BOOTING_PHASES = frozenset({Phase.REQUESTED, Phase.BOOTING})
JOINED_PHASES = frozenset({Phase.IDLE, Phase.BUSY, Phase.DRAINING})
ACTIVE_PHASES = frozenset(Phase) - {Phase.GONE}


def as_int(value, default: int) -> int:
    """``value`` as an int (ad attributes may be missing or of any type)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def age(seconds: float) -> str:
    """A duration for messages: ``42s``."""
    return f"{seconds:.0f}s"


@dataclass(frozen=True)
class InstanceRecord:
    """What the provisioner remembers about one instance between cycles."""
    id: str
    entry: str
    phase: Phase
    since: float                          # when it entered ``phase``
    created: float                        # requested (or first seen, if adopted)
    joined: Optional[float] = None        # first seen in the collector
    last_busy: Optional[float] = None     # last cycle it was seen running a job
    missing_since: Optional[float] = None  # joined node absent from the collector
    reason: str = ""                      # why it is in ``phase``
    startd: str = ""                      # the node's startd name (job RemoteHost after @)


@dataclass(frozen=True)
class Backoff:
    """Consecutive failures of one entry; no new instance before ``until``."""
    failures: int = 0
    until: float = 0.0
    reason: str = ""
    #: "churn": nodes joined but no job matched them; a join does not end it,
    #: a node of the entry running a job does.
    kind: str = ""


@dataclass(frozen=True)
class JobGroup:
    """``count`` idle jobs, each asking for ``cpus`` and ``memory_mb``, and
    running ``runtime`` seconds (0: not known, no limit)."""
    count: int
    cpus: int = 1
    memory_mb: int = 0
    runtime: int = 0


@dataclass(frozen=True)
class Demand:
    """``count`` idle jobs of one shape, and the entries whose template (or
    joined node) matched them: each is provisioned for on one entry at most."""
    count: int
    cpus: int
    memory_mb: int
    entries: Tuple[str, ...]
    runtime: int = 0   # seconds a node needs to be left to take them (0: any)


@dataclass(frozen=True)
class NodeInfo:
    """The collector's view of one instance's startd."""
    instance_id: str
    busy_slots: int = 0                  # claimed slots (jobs)
    idle_cpus: int = 0                   # unclaimed cores
    idle_memory_mb: int = 0
    draining: bool = False
    last_busy: Optional[float] = None    # last claim activity the node reports
    startd: str = ""                     # startd name: slot Name after the "@"
    interruption: str = ""               # the cloud's preemption notice (spot), if any
    retire_time: Optional[float] = None  # a pilot: it starts no job that ends later


@dataclass(frozen=True)
class Listing:
    """One entry's provider listing; ``ok`` False means the call failed.
    ``queued``: the provider is a batch queue (Slurm): a PENDING instance
    waits in its queue, under PENDING_TIMEOUT, not booting under JOIN_TIMEOUT."""
    ok: bool
    instances: Tuple[Instance, ...] = ()
    queued: bool = False

    def by_id(self) -> Dict[str, Instance]:
        return {i.id: i for i in self.instances}


@dataclass(frozen=True)
class Launched:
    """Outcome of a Create in the previous act phase: instances started."""
    entry: str
    instances: Tuple[Instance, ...]


@dataclass(frozen=True)
class LaunchFailed:
    """Outcome of a Create that raised a ProviderError of ``kind``."""
    entry: str
    kind: str
    message: str


Outcome = Union[Launched, LaunchFailed]


@dataclass(frozen=True)
class ObservedState:
    """Everything ``plan`` sees.  A source whose ``*_ok`` is False (or an
    entry without a listing) failed this cycle: its data is unknown."""
    records: Mapping[str, InstanceRecord] = field(default_factory=dict)
    backoff: Mapping[str, Backoff] = field(default_factory=dict)
    #: Idle jobs per entry from the schedds that answered (a lower bound when
    #: ``demand_ok`` is False); ``running``: running jobs per startd name.
    demand: Mapping[str, Tuple[JobGroup, ...]] = field(default_factory=dict)
    demand_ok: bool = True               # every schedd answered
    #: The same idle jobs, each group once with every entry that matched it
    #: (what the cross-entry allocation reads).  None: derived from
    #: ``demand``, each entry's groups on their own (as if no job matched two).
    jobs: Optional[Tuple[Demand, ...]] = None
    running: Mapping[str, int] = field(default_factory=dict)
    listings: Mapping[str, Listing] = field(default_factory=dict)
    nodes: Mapping[str, NodeInfo] = field(default_factory=dict)
    nodes_ok: bool = True
    collector_started: Optional[float] = None
    outcomes: Tuple[Outcome, ...] = ()
    #: Admin commands of this cycle (``condor_cloud retire|terminate``):
    #: instance id -> (command, reason, force).
    requests: Mapping[str, Tuple[str, str, bool]] = field(default_factory=dict)
    #: For records that never joined by our memory but are gone or stopped
    #: (``policy.evidence_wanted``): instance id -> how the collector or a
    #: schedd's queue or history shows that it did join.  ``evidence_ok``
    #: False: a query for it failed, so whether it joined is unknown.
    join_evidence: Mapping[str, str] = field(default_factory=dict)
    evidence_ok: bool = True
    #: Entry -> idle jobs its template matched but its joined node does not,
    #: and the attributes that fail (the churn brake's evidence).
    mismatch: Mapping[str, str] = field(default_factory=dict)
    #: Entry -> why its size is unknown (a size left auto whose instance type
    #: the cloud did not describe): it starts no instance (sizing.py).
    unsized: Mapping[str, str] = field(default_factory=dict)

    def idle_jobs(self) -> Tuple[Demand, ...]:
        if self.jobs is not None:
            return self.jobs
        return tuple(Demand(g.count, g.cpus, g.memory_mb, (entry,), g.runtime)
                     for entry, groups in sorted(self.demand.items()) for g in groups)

    def failed_sources(self, entries: Iterable[str]) -> List[str]:
        """Names of the observations that failed, for messages."""
        failed = [] if self.demand_ok else ["schedd"]
        if not self.nodes_ok:
            failed.append("collector")
        for name in entries:
            listing = self.listings.get(name)
            if listing is None or not listing.ok:
                failed.append(f"provider entry {name}")
        return failed


# ------------------------------------------------------------------ actions

@dataclass(frozen=True)
class Create:
    entry: str
    count: int
    reason: str


@dataclass(frozen=True)
class Drain:
    entry: str
    instance_id: str
    reason: str


@dataclass(frozen=True)
class Terminate:
    entry: str
    instance_id: str
    reason: str
    failure: bool = False   # counted as a boot failure
    lost: bool = False      # a lost node (counted, not a boot failure)
    stopped: bool = False   # stopped by itself: no guard, and no drain first


@dataclass(frozen=True)
class Hold:
    """Nothing to do, and why (held back, capped, backing off...).  ``key``
    names the hold across cycles (the reason's numbers change): the log says
    it once while it holds, and again when it clears."""
    entry: str
    reason: str
    key: str = ""


Action = Union[Create, Drain, Terminate, Hold]


@dataclass(frozen=True)
class Plan:
    """The result of one cycle: actions, plus the state to keep for the next."""
    actions: Tuple[Action, ...]
    records: Mapping[str, InstanceRecord]
    backoff: Mapping[str, Backoff]
    #: The cycle's cross-entry allocation (allocation.Allocation), or None
    #: when no create could be decided (the collector query failed).
    allocation: Optional[object] = None
