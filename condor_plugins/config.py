"""Provisioner configuration: HTCondor knobs with the ``CLOUD_PLUGINS_`` prefix.

``KNOBS`` is the single source of truth (defaults, types, docs); ``load(param)``
reads it from any mapping of knob name to text (``htcondor2.param`` in
production, a dict in tests) and ``knobs_markdown()`` renders it for the docs.

Named entries: ``CLOUD_PLUGINS_PROVIDERS = local1, ec2east``.  A knob of scope
``entry`` is read as ``CLOUD_PLUGINS_<ENTRY>_<KNOB>`` and falls back to the
global ``CLOUD_PLUGINS_<KNOB>``, then to the default; scope ``entry-only`` has
no global fallback (cloud-specific values such as the image).  Every other
``CLOUD_PLUGINS_<ENTRY>_<NAME>`` knob is passed to the provider as a setting.
An empty value counts as unset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Mapping, Optional, Tuple

from .providers.base import InstanceSpec

__all__ = ["PREFIX", "Knob", "KNOBS", "ConfigError", "EntryConfig", "ProvisionerConfig",
           "load", "knobs_markdown", "unknown_knobs"]

PREFIX = "CLOUD_PLUGINS_"
GLOBAL, ENTRY, ENTRY_ONLY = "global", "entry", "entry-only"


class ConfigError(ValueError):
    """A knob has a bad value; the message names the knob and the value."""


@dataclass(frozen=True)
class Knob:
    name: str                 # without the prefix (and without the entry)
    default: Optional[str]    # as written in a config file; None: required
    type: str                 # a key of PARSERS
    doc: str
    scope: str = GLOBAL
    minimum: Optional[float] = None


KNOBS: Tuple[Knob, ...] = (
    Knob("PROVIDERS", "", "list", "Names of the provider entries, comma or space separated. "
         "Names are letters and digits."),
    Knob("PROVISIONER_NAME", "", "str", "Name of this provisioner, in the tags of every "
         "instance it owns. Empty: the value of FULL_HOSTNAME. Never change it while "
         "instances run."),
    Knob("POOL_NAME", "", "str", "Pool name in the instance tags. Empty: the value of "
         "COLLECTOR_HOST."),
    Knob("CYCLE_INTERVAL", "60", "duration", "Time between two observe-plan-act cycles.",
         minimum=1),
    Knob("COLLECTOR_GRACE", "600", "duration", "After a collector (re)start, absence of a "
         "node's ad is not trusted for this long (no join timeout kills).", minimum=0),
    Knob("WORKER_TOKEN_LIFETIME", "7d", "duration", "Lifetime of each worker's IDTOKEN "
         "(condor_token_create -lifetime). A node older than this can no longer advertise "
         "itself; keep it above the longest job plus IDLE_TIMEOUT.", minimum=300),
    Knob("BURST_DELAY", "600", "duration", "A transparent (mode any) idle job counts as "
         "demand for cloud nodes only once it has been idle this long and the negotiator "
         "found no match for it (LastRejMatchReason). Cloud-mode jobs count at once; "
         "local-mode jobs never.", minimum=0),
    Knob("METRICS_PORT", "", "str", "TCP port of the provisioner's Prometheus metrics "
         "endpoint (http://METRICS_ADDRESS:PORT/metrics). Empty or 0: no endpoint. Read at "
         "start: a change needs a restart of the daemon."),
    Knob("METRICS_ADDRESS", "127.0.0.1", "str", "Address the metrics endpoint binds to "
         "(0.0.0.0: every interface). It shows no secret, but restrict who may reach it."),
    Knob("SIMULATE_SITE_CAPACITY", "", "str", "The site's own static nodes, for condor_cloud "
         "simulate only: NODESxCPUS/MEMORY_MB, several joined by + (e.g. "
         "200x8/16000+10x64/256000). Empty: no site node (every job needs a cloud node). "
         "The option --site overrides it."),
    Knob("TYPE", None, "str", "Provider type of the entry (entry point name: local, ec2, "
         "openstack...).", ENTRY_ONLY),
    Knob("IMAGE", "", "str", "Image of the entry's instances.", ENTRY_ONLY),
    Knob("INSTANCE_TYPE", "", "str", "Cloud instance type (flavour) of the entry.",
         ENTRY_ONLY),
    Knob("ENABLED", "true", "bool", "False: start no new instance for this entry; "
         "existing ones still retire normally.", ENTRY),
    Knob("MAX_INSTANCES", "10", "int", "Most instances of an entry that may exist at once "
         "(any state but gone). Set without an entry (CLOUD_PLUGINS_MAX_INSTANCES), it is "
         "also the cap over all entries together; unset, there is no such cap.", ENTRY, 0),
    Knob("MAX_CORES", "", "limit", "Most cores over all entries' instances together "
         "(any state but gone). Empty: no cap."),
    Knob("BUDGET_PER_HOUR", "", "rate", "Most spend per hour over all entries: the sum of "
         "COST_PER_HOUR of every instance (any state but gone). No create exceeds it. "
         "Empty: no budget.", minimum=0),
    Knob("PRIORITY", "0", "int", "Order in which entries get idle jobs: lower first; "
         "among equal priorities, the lowest cost per job-hour first (COST_PER_HOUR over "
         "the jobs one instance takes). Jobs spill to the next entry when one is at its "
         "limits, disabled or backing off.", ENTRY),
    Knob("COST_PER_HOUR", "0", "float", "What one instance of the entry costs per hour, in "
         "the site's currency (counted against BUDGET_PER_HOUR, shown by condor_cloud "
         "status).", ENTRY, 0),
    Knob("MAX_BOOTING", "4", "int", "Most instances of an entry requested or booting at "
         "once.", ENTRY, 0),
    Knob("CPUS", "auto", "size", "Cores of one instance. auto: the instance type's, as the "
         "cloud describes it (EC2 DescribeInstanceTypes, the Nova flavor); 4 where the "
         "provider describes none (local). A number above the type's is capped to it "
         "(with a warning).", ENTRY, 1),
    Knob("MEMORY", "auto", "size", "Memory of one instance, MB. auto: the instance type's "
         "(as for CPUS); 8192 where the provider describes none. A number above the type's is "
         "capped to it.", ENTRY, 1),
    Knob("DISK", "auto", "size", "Disk of one instance, MB. auto: the EC2 image's root "
         "volume, or the Nova flavor's disk; 20000 where the provider describes none. EC2 "
         "applies a larger number as the root volume's size; on OpenStack a number above "
         "the flavor's disk is capped to it.", ENTRY, 0),
    Knob("MEMORY_RESERVE", "0", "int", "MB of MEMORY the node's own system uses: the "
         "template ad's Memory is MEMORY less this (a '16 GB' VM reports less to HTCondor).",
         ENTRY, 0),
    Knob("OPSYS", "LINUX", "str", "OpSys of the template ad jobs are matched against "
         "(what the entry's image advertises).", ENTRY),
    Knob("OPSYSANDVER", "AlmaLinux9", "str", "OpSysAndVer of the template ad (the "
         "documented image is EL9; Rocky Linux 9 advertises Rocky9).", ENTRY),
    Knob("OPSYSMAJORVER", "9", "int", "OpSysMajorVer of the template ad.", ENTRY, 0),
    Knob("ARCH", "X86_64", "str", "Arch of the template ad (aarch64 images: aarch64).",
         ENTRY),
    Knob("HAS_APPTAINER", "true", "bool", "Whether the image runs containers with "
         "Apptainer: HasSingularity and HAS_SINGULARITY of the template ad.", ENTRY),
    Knob("IDLE_TIMEOUT", "600", "duration", "A joined node without jobs for this long is "
         "drained, then terminated.", ENTRY, 0),
    Knob("JOIN_TIMEOUT", "900", "duration", "An instance not in the collector this long "
         "after its request is terminated and counted as a failure.", ENTRY, 1),
    Knob("PENDING_TIMEOUT", "1d", "duration", "Batch-queue providers (slurm) only: how "
         "long an instance may wait in the queue before it counts as a failure and is "
         "cancelled. A queued instance counts as booting capacity; JOIN_TIMEOUT counts "
         "from when it starts running. Cloud instances that are pending are booting, "
         "under JOIN_TIMEOUT.", ENTRY, 1),
    Knob("DRAIN_TIMEOUT", "600", "duration", "A draining node that still has no job but "
         "does not report draining is terminated after this long.", ENTRY, 0),
    Knob("LOST_TIMEOUT", "3000", "duration", "A joined node absent from the collector for "
         "this long, on which no schedd shows a running job, is lost: it is terminated and "
         "counted (InstancesLost). The default is HTCondor's job lease (2400 s) plus a "
         "grace.", ENTRY, 60),
    Knob("REQUEST_TIMEOUT", "300", "duration", "A created instance missing from the "
         "provider's listing for this long is terminated and counted as a failure.",
         ENTRY, 1),
    Knob("BACKOFF_INITIAL", "120", "duration", "Pause of an entry after its first failure "
         "(boot failure, capacity, quota, auth or transient error).", ENTRY, 0),
    Knob("BACKOFF_FACTOR", "2", "float", "Growth of the pause per consecutive failure.",
         ENTRY, 1),
    Knob("BACKOFF_MAX", "3600", "duration", "Longest pause of an entry.", ENTRY, 0),
)

_BY_NAME = {k.name: k for k in KNOBS}

# First words of CLOUD_PLUGINS_ knobs of other components (site, worker); an
# entry may not be named like one, or its settings would capture their knobs.
_OTHER_COMPONENTS = {"DEFAULT", "ADMIT", "WORKER", "SUBMIT", "FROM", "TRANSFORMS",
                     "CENTRAL", "PROVIDER", "PLATFORM", "INSTANCE", "IMAGE", "REGION",
                     "ZONE", "INTERRUPTIBLE", "POWEROFF", "CCB", "NODE"}
RESERVED_ENTRY_NAMES = frozenset({k.name.split("_")[0] for k in KNOBS} | _OTHER_COMPONENTS)
_ENTRY_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")


# ------------------------------------------------------------------ parsers

def _parse_int(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError("expected an integer")
    return int(text)


def _parse_float(text: str) -> float:
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", text):
        raise ValueError("expected a number")
    return float(text)


_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _parse_bool(text: str) -> bool:
    try:
        return _BOOLS[text.lower()]
    except KeyError:
        raise ValueError("expected true or false") from None


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_duration(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([smhd]?)", text.lower())
    if not m:
        raise ValueError("expected a duration: seconds, or a number with s, m, h or d")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _parse_limit(text: str) -> Optional[int]:
    return None if text.lower() in ("", "none", "unlimited") else _parse_int(text)


def _parse_rate(text: str) -> Optional[float]:
    return None if text.lower() in ("", "none", "unlimited") else _parse_float(text)


def _parse_size(text: str) -> Optional[int]:
    return None if text.lower() == "auto" else _parse_int(text)


def _parse_list(text: str) -> Tuple[str, ...]:
    return tuple(w for w in re.split(r"[\s,]+", text) if w)


PARSERS: Dict[str, Callable[[str], object]] = {
    "int": _parse_int, "float": _parse_float, "bool": _parse_bool,
    "duration": _parse_duration, "list": _parse_list, "str": str,
    "limit": _parse_limit, "rate": _parse_rate, "size": _parse_size,
}

#: What an ``auto`` CPUS, MEMORY and DISK are where the provider describes no
#: instance type (local); providers that do describe them: provisioning/sizing.py.
UNDESCRIBED = {"cpus": 4, "memory_mb": 8192, "disk_mb": 20000}


# ------------------------------------------------------------------ config

@dataclass(frozen=True)
class EntryConfig:
    """One named provider entry, with every knob resolved."""
    name: str
    type: str
    image: str
    instance_type: str
    enabled: bool
    max_instances: int
    max_booting: int
    priority: int
    cost_per_hour: float
    cpus: int
    memory_mb: int
    disk_mb: int
    memory_reserve: int
    opsys: str
    opsysandver: str
    opsysmajorver: int
    arch: str
    has_apptainer: bool
    idle_timeout: int
    join_timeout: int
    drain_timeout: int
    lost_timeout: int
    request_timeout: int
    backoff_initial: int
    backoff_factor: float
    backoff_max: int
    pending_timeout: int = 86400
    settings: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: The size fields (cpus, memory_mb, disk_mb) left ``auto``: from the
    #: instance type once the provider describes it, else UNDESCRIBED.
    auto: FrozenSet[str] = frozenset()

    def spec(self) -> InstanceSpec:
        """The InstanceSpec the provider gets for this entry."""
        return InstanceSpec(self.name, self.instance_type, self.image, self.cpus,
                            self.memory_mb, self.disk_mb, dict(self.settings))


@dataclass(frozen=True)
class ProvisionerConfig:
    name: str
    pool: str
    cycle_interval: int
    collector_grace: int
    entries: Tuple[EntryConfig, ...]
    worker_token_lifetime: int = 7 * 86400
    #: Caps over all entries together (None: no cap).
    max_instances: Optional[int] = None
    burst_delay: int = 600
    max_cores: Optional[int] = None
    budget_per_hour: Optional[float] = None

    def entry(self, name: str) -> Optional[EntryConfig]:
        return next((e for e in self.entries if e.name == name), None)


_ENTRY_FIELDS = {"MEMORY": "memory_mb", "DISK": "disk_mb"}


def _raw(param: Mapping[str, str], name: str) -> Optional[str]:
    value = param.get(name)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _value(param: Mapping[str, str], knob: Knob, entry: Optional[str] = None):
    """Parse ``knob`` (for ``entry``, with fallback); errors name the knob read."""
    names = []
    if entry is not None:
        names.append(f"{PREFIX}{entry.upper()}_{knob.name}")
    if entry is None or knob.scope == ENTRY:
        names.append(PREFIX + knob.name)
    for name in names:
        text = _raw(param, name)
        if text is not None:
            return _parse(knob, name, text)
    if knob.default is None:
        raise ConfigError(f"{names[0]} is not set (required)")
    return _parse(knob, f"default of {names[-1]}", knob.default)


def _parse(knob: Knob, name: str, text: str):
    try:
        value = PARSERS[knob.type](text)
    except ValueError as err:
        raise ConfigError(f"{name} = {text!r}: {err}") from None
    if knob.minimum is not None and value is not None and value < knob.minimum:
        raise ConfigError(f"{name} = {text!r}: must be at least {knob.minimum:g}")
    return value


def _settings(param: Mapping[str, str], entry: str) -> Dict[str, str]:
    """Unknown CLOUD_PLUGINS_<ENTRY>_* knobs: the provider's own settings."""
    prefix = f"{PREFIX}{entry.upper()}_"
    out = {}
    for key in param:  # iterate only: htcondor2's param has no working len()
        upper = key.upper()
        if upper.startswith(prefix) and upper[len(prefix):] not in _BY_NAME:
            text = _raw(param, key)
            if text is not None:
                out[upper[len(prefix):]] = text
    return dict(sorted(out.items()))


def _entry(param: Mapping[str, str], name: str) -> EntryConfig:
    values = {}
    for knob in KNOBS:
        if knob.scope != GLOBAL:
            attr = _ENTRY_FIELDS.get(knob.name, knob.name.lower())
            values[attr] = _value(param, knob, name)
    auto = frozenset(k for k, v in UNDESCRIBED.items() if values[k] is None)
    values.update((k, UNDESCRIBED[k]) for k in auto)
    return EntryConfig(name=name, settings=_settings(param, name), auto=auto, **values)


def _entry_names(param: Mapping[str, str]) -> Tuple[str, ...]:
    names = _value(param, _BY_NAME["PROVIDERS"])
    seen = set()
    for name in names:
        if not _ENTRY_RE.match(name):
            raise ConfigError(f"{PREFIX}PROVIDERS: entry name {name!r} must be letters "
                              "and digits, starting with a letter")
        if name.upper() in RESERVED_ENTRY_NAMES:
            raise ConfigError(f"{PREFIX}PROVIDERS: entry name {name!r} is reserved "
                              f"(it would clash with other {PREFIX}{name.upper()}_* knobs)")
        if name.upper() in seen:
            raise ConfigError(f"{PREFIX}PROVIDERS: entry {name!r} is listed twice")
        seen.add(name.upper())
    return names


def load(param: Mapping[str, str]) -> ProvisionerConfig:
    """Read and check the provisioner's knobs; raises ConfigError."""
    entries = tuple(_entry(param, n) for n in _entry_names(param))
    name = _value(param, _BY_NAME["PROVISIONER_NAME"]) or _raw(param, "FULL_HOSTNAME") or ""
    pool = _value(param, _BY_NAME["POOL_NAME"]) or _raw(param, "COLLECTOR_HOST") or ""
    if entries and not name:
        raise ConfigError(f"{PREFIX}PROVISIONER_NAME is empty and FULL_HOSTNAME is not set")
    return ProvisionerConfig(
        name=name, pool=pool,
        cycle_interval=_value(param, _BY_NAME["CYCLE_INTERVAL"]),
        collector_grace=_value(param, _BY_NAME["COLLECTOR_GRACE"]),
        entries=entries,
        worker_token_lifetime=_value(param, _BY_NAME["WORKER_TOKEN_LIFETIME"]),
        max_instances=_global_max_instances(param),
        burst_delay=_value(param, _BY_NAME["BURST_DELAY"]),
        max_cores=_value(param, _BY_NAME["MAX_CORES"]),
        budget_per_hour=_value(param, _BY_NAME["BUDGET_PER_HOUR"]))


def _global_max_instances(param: Mapping[str, str]) -> Optional[int]:
    """CLOUD_PLUGINS_MAX_INSTANCES, when set, also caps all entries together."""
    name = PREFIX + "MAX_INSTANCES"
    text = _raw(param, name)
    return None if text is None else _parse(_BY_NAME["MAX_INSTANCES"], name, text)


# ------------------------------------------------------------------ typos

#: CLOUD_PLUGINS_* knobs and helper macros the shipped config.d fragments
#: define (site, central manager, submit side, routes, worker); a test keeps
#: this in step with the fragments.
FRAGMENT_KNOBS = frozenset("""
ADMIT_CLOUD_WORKERS CCB_ADDRESS CENTRAL_MANAGER CE_ROUTES CE_ROUTES_ON CE_ROUTES_ON_EXPR
CE_ROUTE_NAMES_1 CLOUD_POOL_COLLECTOR CLOUD_POOL_SCHEDD CONTROL_PERIOD CONTROL_TOKEN_DIR
DEFAULT_MODE FROM_WORKER HOOK_DIR IDLE_SHUTDOWN IMAGE INSTANCE_ID INSTANCE_TYPE INTERRUPTED
INTERRUPTIBLE LEASE MAX_LIFETIME MAX_RETIRE_TIME NODE_ATTRS NODE_CONTROL PLATFORM
POWEROFF_SCRIPT PROVIDER PROVIDER_ENTRY PROVISIONER PROVISIONER_DAEMON_0 PROVISIONER_DAEMON_1
PROVISIONER_ON PROVISIONER_ON_EXPR REGION REQUEST_ID RETIRING ROUTE_BURST_DELAY
ROUTE_CONSTRAINT_1 ROUTE_DAEMON_1 ROUTE_KEYWORD_1_ ROUTE_MAX_IDLE_JOBS ROUTE_MAX_JOBS
ROUTE_NAMES_1_ ROUTE_ON ROUTE_ON_EXPR ROUTE_REQUIREMENTS ROUTE_SELECT ROUTE_TO_CLOUD_POOL
ROUTE_TRANSPARENT ROUTE_WITH RUN_PROVISIONER SHUTDOWN_GRACE SUBMIT_ON SUBMIT_ON_EXPR
SUBMIT_REQUIREMENTS_0 SUBMIT_REQUIREMENTS_1 SUBMIT_TRANSFORM TRANSFORMS_0 TRANSFORMS_1
SCHEDD_DENY_WORKER_READ SCHEDD_DENY_WORKER_READ_ON SCHEDD_DENY_WORKER_READ_EXPR SCHEDD_DENY_READ
SCHEDD_DENY_READ_0 SCHEDD_DENY_READ_1
FITS_LEASE JOB_RUNTIME PILOT_DEFAULT_RUNTIME PILOT_END PILOT_MARGIN SLURM_JOB_ID
LITERAL_NODE REVOKED_WORKER_TOKENS WORKER_AD WORKER_AD_TYPES WORKER_IDENTITIES WORKER_NAME_PARTS WORKER_REQUEST WORKER_TOKEN_DOMAIN ZONE
""".split())


def _known_suffixes() -> Tuple[set, set]:
    """(global names, per-entry names) without the prefix."""
    from .node.context_knobs import KNOBS as CONTEXT_KNOBS
    glob = {k.name for k in KNOBS if k.scope != ENTRY_ONLY} | set(FRAGMENT_KNOBS)
    glob |= {k.name for k in CONTEXT_KNOBS if getattr(k, "global_fallback", True)}
    per_entry = {k.name for k in KNOBS if k.scope != GLOBAL} | {k.name for k in CONTEXT_KNOBS}
    return glob, per_entry


def _provider_settings(param: Mapping[str, str], entry: str) -> FrozenSet[str]:
    """The settings the entry's provider class declares (``SETTINGS``); empty
    when it declares none or cannot be loaded (then nothing is flagged)."""
    from .providers import ProviderNotFound, provider_class
    try:
        cls = provider_class(str(_raw(param, f"{PREFIX}{entry}_TYPE") or ""), entry.lower())
    except ProviderNotFound:
        return frozenset()
    return frozenset(getattr(cls, "SETTINGS", ()))


def unknown_knobs(param: Mapping[str, str]) -> list:
    """One warning per CLOUD_PLUGINS_* knob that nothing reads, naming the
    closest known knob: a misspelled name, an entry missing from
    CLOUD_PLUGINS_PROVIDERS.  A provider's own settings
    (CLOUD_PLUGINS_<ENTRY>_<SETTING>) are only flagged when they are one
    typo away from a provisioner knob (MAX_INSTANCE for MAX_INSTANCES)."""
    import difflib
    glob, per_entry = _known_suffixes()
    try:
        entries = [e.upper() for e in _entry_names(param)]
    except ConfigError:
        entries = []
    known = {PREFIX + g for g in glob} | {f"{PREFIX}{e}_{k}" for e in entries for k in per_entry}
    warnings = []
    for key in sorted({str(k).upper() for k in param}):
        if not key.startswith(PREFIX) or key in known or key in ("CLOUD_PLUGINS_",):
            continue
        rest = key[len(PREFIX):]
        entry = next((e for e in entries if rest.startswith(e + "_")), None)
        if entry is not None:
            setting = rest[len(entry) + 1:]
            own = _provider_settings(param, entry)
            if setting in own:
                continue
            close = difflib.get_close_matches(setting, sorted(per_entry), 1, 0.85)
            if own and not close:  # the provider names its settings: anything else is a typo
                close = difflib.get_close_matches(setting, sorted(own | per_entry), 1, 0.6)
                warnings.append(f"{key} is not a setting of provider entry {entry.lower()} "
                                f"({_raw(param, f'{PREFIX}{entry}_TYPE')}) nor a knob" +
                                (f": did you mean {PREFIX}{entry}_{close[0]}?" if close else ""))
            elif close and not setting.startswith("WORKER_"):
                warnings.append(f"{key} is not a knob (a setting of provider entry "
                                f"{entry.lower()}): did you mean {PREFIX}{entry}_{close[0]}?")
            continue
        word = rest.split("_", 1)[0]
        if rest.endswith("_TYPE") and word not in entries:
            warnings.append(f"{key} configures an entry {word.lower()} that is not in "
                            f"{PREFIX}PROVIDERS ({', '.join(e.lower() for e in entries) or 'empty'}):"
                            " it is ignored")
            continue
        close = difflib.get_close_matches(rest, sorted(k[len(PREFIX):] for k in known), 1, 0.8)
        warnings.append(f"{key} is not a condor_plugins knob" +
                        (f": did you mean {PREFIX}{close[0]}?" if close else " (nothing reads it)"))
    return warnings


# ------------------------------------------------------------------ docs

def knobs_markdown() -> str:
    """The knob table as Markdown (docs/knobs-provisioner.md)."""
    lines = [
        "# Provisioner knobs",
        "",
        "Generated from `condor_plugins/config.py` (`python3 -m condor_plugins.config`);",
        "do not edit by hand. `<ENTRY>` is a name from `CLOUD_PLUGINS_PROVIDERS`.",
        "Scope *entry*: `CLOUD_PLUGINS_<ENTRY>_<KNOB>`, else `CLOUD_PLUGINS_<KNOB>`, else",
        "the default. Scope *entry-only*: no global fallback. Any other",
        "`CLOUD_PLUGINS_<ENTRY>_<NAME>` is a setting of the entry's provider.",
        "Durations are seconds, or a number with `s`, `m`, `h` or `d`. Types *limit*",
        "(an integer) and *rate* (a number) may be empty, `none` or `unlimited`: no cap.",
        "Type *size* is a number or `auto`.",
        "An empty value counts as unset.",
        "",
        "| Knob | Scope | Type | Default | Description |",
        "|---|---|---|---|---|",
    ]
    for k in KNOBS:
        entry = {GLOBAL: "", ENTRY: "[<ENTRY>_]", ENTRY_ONLY: "<ENTRY>_"}[k.scope]
        name = f"{PREFIX}{entry}{k.name}"
        default = "*(required)*" if k.default is None else (f"`{k.default}`" if k.default
                                                           else "*(empty)*")
        lines.append(f"| `{name}` | {k.scope} | {k.type} | {default} | {k.doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(knobs_markdown(), end="")
