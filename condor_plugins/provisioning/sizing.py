"""Entry sizes from the cloud's own description of the instance type.

The template ad that idle jobs are matched against, the packing and the
global core cap all use an entry's CPUS, MEMORY and DISK.  Left ``auto`` (the
default), they come from the provider's ``describe`` (EC2's instance type and
image, the Nova flavor); a number set above what the type has is capped to it,
since the node will report no more.  EC2 applies a larger DISK as the root
volume's size, so there DISK is never capped, only raised to the image's root.

``resize`` is pure; ``Sizes`` is the I/O edge: one description per entry and
instance type, kept until the next reconfig, retried every cycle while it
fails.  An entry that depends on a failed description (a size left auto) is
``unsized``: it starts no instance, and its jobs spill to other entries.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Dict, List, Mapping, Optional, Tuple

from ..config import EntryConfig
from ..providers.base import InstanceType, Provider, ProviderError

__all__ = ["resize", "Sizes"]

log = logging.getLogger(__name__)

_FIELDS = (("cpus", "CPUS", "cores"), ("memory_mb", "MEMORY", "MB"), ("disk_mb", "DISK", "MB"))


def resize(entry: EntryConfig, described: Optional[InstanceType]) -> Tuple[EntryConfig, List[str]]:
    """``entry`` with the sizes ``described`` gives it, and warnings (naming
    the knob) for numbers that could not be used as set."""
    if described is None:
        return entry, []
    new, notes = {}, []
    for attr, knob, unit in _FIELDS:
        has, value = getattr(described, attr), getattr(entry, attr)
        name = f"CLOUD_PLUGINS_{entry.name.upper()}_{knob}"
        if not has:   # the cloud does not say: the knob (or its default) stands
            continue
        if attr in entry.auto:
            new[attr] = has
        elif attr == "disk_mb" and described.disk_grows:
            if value < has:
                new[attr] = has
                notes.append(f"{name} = {value} is below the image's root volume of {has} MB: "
                             f"the instances get {has} MB")
        elif value > has:
            new[attr] = has
            notes.append(f"{name} = {value} exceeds the {has} {unit} of instance type "
                         f"{described.name}: the template ad uses {has}")
    return (replace(entry, **new) if new else entry), notes


class Sizes:
    """Each entry's instance type as its provider describes it (cached)."""

    def __init__(self) -> None:
        self._known: Dict[Tuple, Optional[InstanceType]] = {}
        self._failed: Dict[str, str] = {}   # entry -> its last description failure
        self.unsized: Dict[str, str] = {}   # entry -> why it may start nothing yet
        self.notes: Dict[str, List[str]] = {}

    def reset(self) -> None:
        """After a reconfig: describe every entry again."""
        self._known.clear()

    def apply(self, entries, providers: Mapping[str, Provider]) -> Tuple[EntryConfig, ...]:
        """``entries`` sized from their providers' descriptions; describes the
        ones not known yet (a failure makes an entry with an auto size unsized)."""
        out, failed, unsized = [], {}, {}
        for entry in entries:
            key = (entry.name, entry.type, entry.instance_type, entry.image)
            if key not in self._known and entry.name in providers:
                try:
                    describe = getattr(providers[entry.name], "describe", None)   # optional
                    self._known[key] = found = describe(entry.spec()) if describe else None
                except ProviderError as err:
                    failed[entry.name] = why = (
                        f"instance type {entry.instance_type or '(unset)'} not described "
                        f"({err.kind}): {err.message}")
                    if self._failed.get(entry.name) != why:   # once while it fails
                        log.warning("Entry %s: %s", entry.name, why)
                    if entry.auto:
                        unsized[entry.name] = f"{why}; {', '.join(_knobs(entry))} left auto"
                    out.append(entry)
                    continue
                if entry.name in self._failed:
                    log.info("Entry %s: instance type described again", entry.name)
                if found is not None:
                    log.info("Entry %s: instance type %s has %d cores, %d MB memory%s (from "
                             "the cloud)", entry.name, found.name, found.cpus, found.memory_mb,
                             f", {found.disk_mb} MB disk" if found.disk_mb else "")
            sized, notes = resize(entry, self._known.get(key))
            if notes != self.notes.get(entry.name):
                for note in notes:
                    log.warning("Configuration: %s", note)
            self.notes[entry.name] = notes
            out.append(sized)
        self._failed, self.unsized = failed, unsized
        return tuple(out)


def _knobs(entry: EntryConfig) -> List[str]:
    return [f"CLOUD_PLUGINS_{entry.name.upper()}_{knob}" for attr, knob, _ in _FIELDS
            if attr in entry.auto]
