"""The provisioner's memory: a JSON state file, written atomically.

``$(SPOOL)/cloud_plugins/provisioner-state.json`` holds the instance records,
the backoff per entry and the create failures not yet planned; next to it,
``disabled-entries.json`` lists the entries ``condor_cloud disable`` turned off.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import List, Mapping

from .state import Backoff, InstanceRecord, LaunchFailed, Phase

log = logging.getLogger("condor_plugins.provisioning.provisioner")

STATE_VERSION = 1


def _record_from(d: Mapping) -> InstanceRecord:
    d = dict(d)
    d["phase"] = Phase(d["phase"])
    return InstanceRecord(**d)


def save_state(path: Path, records: Mapping[str, InstanceRecord],
               backoff: Mapping[str, Backoff], failures: List[LaunchFailed]) -> None:
    """Write the state atomically (temp file, fsync, rename)."""
    data = {"version": STATE_VERSION, "saved": time.time(),
            "records": {k: dict(asdict(r), phase=r.phase.value) for k, r in records.items()},
            "backoff": {k: asdict(b) for k, b in backoff.items()},
            "failures": [asdict(f) for f in failures]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(path: Path):
    """(records, backoff, failures); empty if missing or unreadable (the
    policy then rebuilds the records from the provider listings)."""
    try:
        data = json.loads(path.read_text())
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"version {data.get('version')!r}")
        records = {k: _record_from(v) for k, v in data.get("records", {}).items()}
        backoff = {k: Backoff(**v) for k, v in data.get("backoff", {}).items()}
        failures = [LaunchFailed(**v) for v in data.get("failures", [])]
        return records, backoff, failures
    except FileNotFoundError:
        return {}, {}, []
    except (OSError, ValueError, TypeError, KeyError) as err:
        log.error("State file %s unreadable (%s): rebuilding from the provider listings",
                  path, err)
        return {}, {}, []


def disabled_file(state_file: Path) -> Path:
    return state_file.with_name("disabled-entries.json")


def load_disabled(state_file: Path) -> set:
    try:
        return set(json.loads(disabled_file(state_file).read_text()))
    except (OSError, ValueError, TypeError):
        return set()




def save_disabled(state_file: Path, disabled) -> None:
    path = disabled_file(state_file)
    if disabled or path.exists():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(sorted(disabled)))
        os.replace(tmp, path)
