"""Revocation of the worker tokens of instances that ended.

A worker token is a bearer credential valid for WORKER_TOKEN_LIFETIME.  When
the provisioner terminates an instance, or sees one gone, the token's
identity (``<request-id>@<worker domain>``; both of a node's tokens carry it)
is revoked in the same cycle:

* ``$(SPOOL)/cloud_plugins/revoked-tokens.json`` keeps each revoked identity
  until the last token minted for it has expired (its instance's creation
  plus the lifetime, plus an hour for clock skew);
* ``$(SPOOL)/cloud_plugins/revoked-tokens.config``, rendered from it, defines
  ``CLOUD_PLUGINS_REVOKED_WORKER_TOKENS``, which the central manager's
  fragment includes and ORs into ``SEC_TOKEN_REVOCATION_EXPR``;
* the collector is reconfigured, since a daemon reads its configuration only
  then; a failed reconfig is retried every cycle until it succeeds.

Several provisioners on one host share the files (a lock guards the update).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Mapping, Optional

__all__ = ["Revocations", "render", "REVOKED_KNOB", "JSON_NAME", "CONFIG_NAME"]

log = logging.getLogger("condor_plugins.provisioning.provisioner")

REVOKED_KNOB = "CLOUD_PLUGINS_REVOKED_WORKER_TOKENS"
JSON_NAME = "revoked-tokens.json"
CONFIG_NAME = "revoked-tokens.config"
#: Kept this long past a token's expiry: clocks of the hosts may differ.
SKEW = 3600.0
#: Identities are ours (entry-hex@domain); anything else is never written
#: into a configuration file that every daemon of the host reads.
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9._-]*$")


def render(revoked: Mapping[str, float]) -> str:
    """The configuration fragment for these identities (sorted: stable)."""
    names = sorted(n for n in revoked if _SAFE.match(n))
    expr = ("member(sub, {%s})" % ", ".join(f'"{n}"' for n in names)) if names else "false"
    return ("# Written by condor_cloud_provisioner (condor_plugins/provisioning/revocation.py).\n"
            "# The worker tokens of instances that ended; do not edit.\n"
            f"{REVOKED_KNOB} = {expr}\n")


class Revocations:
    """The revoked identities, their files, and the collector reconfig."""

    def __init__(self, directory: Path, reconfigure: Callable[[], None]):
        self.dir = Path(directory)
        self._reconfigure = reconfigure
        #: The file changed and no reconfig has succeeded since.
        self.pending = False
        #: How many identities are revoked (as of the last update).
        self.count = len(self.load())

    @property
    def config_file(self) -> Path:
        return self.dir / CONFIG_NAME

    def revoke(self, request_ids: Mapping[str, float], domain: str, lifetime: float,
               now: Optional[float] = None) -> int:
        """Revoke ``{request id: when its instance was created}`` (tokens of
        ``<request id>@<domain>``, valid for ``lifetime`` seconds); returns how
        many identities are new.  Identities whose tokens have all expired are
        dropped (and ones already expired are not added)."""
        now = time.time() if now is None else now
        wanted = {f"{r}@{domain}": created + float(lifetime) + SKEW
                  for r, created in request_ids.items()}
        wanted = {n: until for n, until in wanted.items() if until > now and _SAFE.match(n)}
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / (JSON_NAME + ".lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            current = self.load()
            kept = {n: until for n, until in current.items() if until > now}
            new = [n for n in wanted if n not in kept]
            for n, until in wanted.items():
                kept[n] = max(until, kept.get(n, 0.0))
            if kept != current or not self.config_file.exists():
                self._write(self.dir / JSON_NAME, json.dumps(kept, indent=1, sort_keys=True))
                text = render(kept)
                if not self.config_file.exists() or self.config_file.read_text() != text:
                    self._write(self.config_file, text)
                    self.pending = True
            self.count = len(kept)
        if new:
            log.info("Revoked the worker tokens of %s (%d revoked in all)",
                     ", ".join(sorted(new)), len(kept))
        self.sync()
        return len(new)

    def load(self) -> Dict[str, float]:
        try:
            data = json.loads((self.dir / JSON_NAME).read_text())
            return {str(k): float(v) for k, v in data.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as err:
            # Nothing is lost: the instances' own records are gone, but an
            # unreadable list is rebuilt empty only after saying so.
            log.error("Revoked-token list %s unreadable (%s): starting a new one",
                      self.dir / JSON_NAME, err)
            return {}

    def sync(self) -> bool:
        """Reconfigure the collector if the file changed since the last
        successful reconfig; True when nothing is pending."""
        if not self.pending:
            return True
        try:
            self._reconfigure()
        except Exception as err:
            log.warning("Reconfiguring the collector to apply the revoked worker tokens "
                        "failed (retried every cycle): %s",
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
            return False
        self.pending = False
        return True

    @staticmethod
    def _write(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)   # no secret: identities only; read by every daemon
        os.replace(tmp, path)


def reconfigure_collector() -> None:
    """``condor_reconfig -collector``: the collector of this host, the one that
    reads our file.  (htcondor2 23.9 cannot send a command to a collector ad:
    it finds no daemon type for it.)"""
    res = subprocess.run(["condor_reconfig", "-collector"], capture_output=True, text=True,
                         timeout=60)
    if res.returncode != 0:
        lines = (res.stderr.strip() or res.stdout.strip() or "no output").splitlines()
        raise RuntimeError(f"condor_reconfig -collector failed: {lines[0][:200]}")


def identities_of(ids: Iterable[str], request_ids: Mapping[str, str]) -> set:
    """The request ids behind these cloud instance ids (and the ids themselves,
    for providers whose ids are the request ids)."""
    ids = set(ids)
    return ids | {r for r, i in request_ids.items() if i in ids}
