"""The cloud provider interface: a handful of methods and typed errors.

A provider is one small module with one ``Provider`` subclass, registered in
the ``condor_plugins.providers`` entry point group under its type name
(``local``, ``ec2``, ``openstack``...).  The provisioner builds one provider
object per configured entry: ``cls(entry, settings)``.

Contract (modelled on the Kubernetes cluster-autoscaler's cloudprovider):

* ``create`` starts ``count`` instances of ``spec``, each carrying ``tags`` and
  ``user_data``; ``request_token`` makes a retried request idempotent where the
  cloud supports it (EC2 ClientToken).  It returns the instances it started,
  possibly fewer than asked for.
* ``list`` returns every instance carrying all ``owner_tags`` (and only
  those), in any state, including ones this process did not start.
* ``terminate`` is idempotent: ids that are already gone are not an error.
* Every method raises only ``ProviderError`` subclasses for cloud failures;
  messages are short and never contain credentials or user data.
"""

from __future__ import annotations

import abc
import enum
import re
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "InstanceState", "InstanceSpec", "InstanceType", "Instance", "Provider",
    "ProviderError", "CapacityError", "QuotaError", "AuthError", "TransientError",
    "TAG_POOL", "TAG_PROVISIONER", "TAG_ENTRY", "TAG_REQUEST",
    "owner_tags", "instance_tags", "scrub",
]

_KEEP = re.compile(r"\b[0-9a-f]{8}(?:-?[0-9a-f]{4}){3}-?[0-9a-f]{12}\b"   # ids (UUIDs)
                   r"|(?<![\w/+=.-])(?:/[\w.-]{1,31}){2,}", re.I)           # absolute paths
_OPAQUE = re.compile(r"[A-Za-z0-9/+=_-]{32,}|eyJ[\w.-]{16,}")  # tokens, keys, base64, JWTs


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """For a message: one short line without ``secrets`` or long opaque strings
    (tokens, keys, base64), with ids (UUIDs) and file paths kept readable."""
    for secret in (s for s in secrets if s and len(s) >= 6):
        text = text.replace(secret, "[redacted]")
    ids: List[str] = []
    text = _KEEP.sub(lambda m: ids.append(m.group()) or f"\0{len(ids) - 1}\0", " ".join(text.split()))
    text = re.sub(r"\0(\d+)\0", lambda m: ids[int(m.group(1))], _OPAQUE.sub("[redacted]", text))
    return text if len(text) <= 200 else text[:197] + "..."

#: Tag keys every instance carries.  Providers whose clouds restrict key
#: characters (GCE labels: no '/') map them, but must map them back in ``list``.
TAG_POOL = "condor-plugins/pool"
TAG_PROVISIONER = "condor-plugins/provisioner"
TAG_ENTRY = "condor-plugins/entry"
TAG_REQUEST = "condor-plugins/request"


def owner_tags(pool: str, provisioner: str) -> Dict[str, str]:
    """The tags that identify the instances one provisioner owns."""
    return {TAG_POOL: pool, TAG_PROVISIONER: provisioner}


def instance_tags(pool: str, provisioner: str, entry: str, request_token: str) -> Dict[str, str]:
    """All tags of a new instance of ``entry`` started by ``request_token``."""
    tags = owner_tags(pool, provisioner)
    tags.update({TAG_ENTRY: entry, TAG_REQUEST: request_token})
    return tags


class InstanceState(str, enum.Enum):
    """What the cloud says about an instance (not what HTCondor says)."""
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"        # being terminated
    STOPPED = "stopped"          # shut off, stopped or suspended: runs no job, may still bill
    TERMINATED = "terminated"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class InstanceSpec:
    """What to start for one provider entry."""
    entry: str
    instance_type: str
    image: str
    cpus: int
    memory_mb: int
    disk_mb: int
    #: Provider-specific settings (``CLOUD_PLUGINS_<ENTRY>_<NAME>`` knobs the
    #: core does not know), keys upper-case.
    settings: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class InstanceType:
    """What one instance of a type really has, as the cloud describes it (0: not said)."""
    name: str
    cpus: int
    memory_mb: int
    disk_mb: int = 0
    #: True: a DISK above ``disk_mb`` is applied at create (EC2's root volume
    #: size); False: ``disk_mb`` is all an instance has (a Nova flavor's disk).
    disk_grows: bool = False


@dataclass(frozen=True)
class Instance:
    """One instance as the provider lists it."""
    id: str
    entry: str
    state: InstanceState
    launch_time: Optional[float] = None   # epoch seconds, if the cloud says
    tags: Mapping[str, str] = field(default_factory=dict, hash=False)
    address: str = ""                     # host name or IP, for display
    reason: str = ""                      # provider's state reason, if any


class ProviderError(Exception):
    """A cloud call failed.  ``kind`` names the failure for backoff and logs."""
    kind: ClassVar[str] = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class CapacityError(ProviderError):
    """The cloud has no capacity for this spec right now."""
    kind = "capacity"


class QuotaError(ProviderError):
    """The account's quota or limit would be exceeded."""
    kind = "quota"


class AuthError(ProviderError):
    """Credentials are missing, expired or not allowed to do this."""
    kind = "auth"


class TransientError(ProviderError):
    """A failure worth retrying later (timeouts, throttling, 5xx)."""
    kind = "transient"


class Provider(abc.ABC):
    """Base class of every provider; one object per configured entry."""

    #: The entry point name, e.g. "local" (for messages).
    type_name: ClassVar[str] = ""
    #: True for a batch queue (slurm): a PENDING instance waits in the queue
    #: (PENDING_TIMEOUT), and JOIN_TIMEOUT counts from its ``launch_time``,
    #: which is when it started running.
    queued: ClassVar[bool] = False
    #: The provider's own setting names (CLOUD_PLUGINS_<ENTRY>_<NAME>); when
    #: given, any other unknown setting of its entries is reported as a typo.
    SETTINGS: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, entry: str, settings: Mapping[str, str]):
        self.entry = entry
        self.settings = dict(settings)

    def knob(self, name: str) -> str:
        """The HTCondor knob of setting ``name`` (for messages)."""
        return f"CLOUD_PLUGINS_{self.entry.upper()}_{name}"

    def setting(self, name: str, kind: str, default: str):
        """Setting ``name`` parsed as ``kind`` (config.PARSERS); a bad value is a
        ConfigError naming the knob."""
        from ..config import PARSERS, ConfigError
        value = str(self.settings.get(name) or "").strip() or default
        try:
            return PARSERS[kind](value)
        except ValueError as err:
            raise ConfigError(f"{self.knob(name)} = {value!r}: {err}") from None

    @abc.abstractmethod
    def create(self, spec: InstanceSpec, count: int, tags: Mapping[str, str],
               user_data: str, request_token: str) -> List[Instance]:
        """Start up to ``count`` instances of ``spec``; return those started."""

    @abc.abstractmethod
    def list(self, owner_tags: Mapping[str, str]) -> List[Instance]:
        """Every instance (any state) that carries all ``owner_tags``.  Reads
        only: ``condor_cloud status`` calls it too."""

    @classmethod
    def template_attrs(cls, settings: Mapping[str, str]) -> Dict[str, str]:
        """Attributes (name -> ClassAd expression) the entry's template ad adds:
        what its nodes will advertise that idle jobs are matched against.  A
        ``Requirements`` here is the node's side of the match (a pilot takes only
        jobs that fit its walltime).  The default adds nothing."""
        return {}

    def describe(self, spec: InstanceSpec) -> Optional[InstanceType]:
        """What an instance of ``spec`` has (its instance type and image), read
        from the cloud; None: the provider cannot tell, the knobs are the size
        (the default).  Reads only; a failure raises ProviderError."""
        return None

    def housekeeping(self, owner_tags: Mapping[str, str]) -> None:
        """Called by the provisioner after each successful listing (never by
        ``condor_cloud status``): drop what the provider keeps of long-gone
        instances.  The default does nothing."""

    @abc.abstractmethod
    def terminate(self, ids: Sequence[str]) -> None:
        """Terminate ``ids``; ids that no longer exist are ignored."""

    def close(self) -> None:
        """Release connections; the default does nothing."""
