"""Admin levers: commands to the running provisioner, through a directory.

``condor_cloud retire|terminate|disable|enable`` writes one JSON file into
``$(SPOOL)/cloud_plugins/commands/`` (mode 0700, so only the provisioner's
own user, root or condor, may command it); the provisioner takes every file
at the start of its next cycle, logs who asked for what and what it did, and
deletes the file.  No config edit, no reconfig, no inbound connection.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import List, Mapping

__all__ = ["COMMANDS", "command_dir", "send", "take", "pending"]

log = logging.getLogger("condor_plugins.provisioning.commands")

#: command -> what its targets are
COMMANDS = {"retire": "instance", "terminate": "instance", "disable": "entry",
            "enable": "entry"}


def command_dir(param: Mapping[str, str]) -> Path:
    return Path(param.get("SPOOL") or ".") / "cloud_plugins" / "commands"


def send(directory: Path, command: str, targets: List[str], force: bool = False) -> Path:
    """Queue ``command`` for the provisioner; returns the file written."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    body = {"command": command, "targets": list(targets), "force": bool(force), "user": user,
            "time": time.time()}
    name = f"{time.time():.6f}-{secrets.token_hex(3)}.json"
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(body, f)
    path = directory / name
    os.replace(tmp, path)
    return path


def pending(directory: Path) -> List[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.suffix == ".json"
                      and not p.name.startswith("."))
    except OSError:
        return []


def take(directory: Path) -> List[dict]:
    """Every queued command, oldest first; each file is removed once read.
    A malformed one is logged and removed (it would fail every cycle)."""
    out = []
    for path in pending(directory):
        try:
            body = json.loads(path.read_text())
            if body.get("command") not in COMMANDS or not isinstance(body.get("targets"), list):
                raise ValueError("not a condor_cloud command")
            out.append(body)
        except (OSError, ValueError, AttributeError) as err:
            log.error("Ignoring the command file %s: %s", path.name, err)
        try:
            path.unlink()
        except OSError as err:
            log.error("Cannot remove the command file %s: %s", path.name, err.strerror)
    return out
