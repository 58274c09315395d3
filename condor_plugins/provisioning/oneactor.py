"""One provisioner acts per name, across hosts (issue 16).

The lock next to the state file keeps two processes of one host off one
state; it cannot see an HA central-manager pair or a restored backup that
runs with the same ``PROVISIONER_NAME`` elsewhere.  So every provisioner also
advertises a claim ad (``MyType = "CloudProvisionerClaim"``, one per state
file and host, expiring after ``ClassAdLifetime``) and acts only while its
claim is the senior live one: the oldest ``CloudClaimSince`` (kept in a file
beside the state, so a restart keeps its seniority), then the claim's name.
The others stand by, say so in their log and claim ad, and take over when the
senior claim expires.  A new claim acts only once the collector has shown it
twice (so two provisioners started together see each other first); while the
collector cannot be asked, the last decision stands.  Workers may not send
claim ads (20-cloud-central-manager.conf).

``senior`` is pure; ``Claims`` does the collector I/O.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

__all__ = ["CLAIM_TYPE", "senior", "Claims"]

log = logging.getLogger(__name__)

CLAIM_TYPE = "CloudProvisionerClaim"
Claim = Tuple[float, str]   # (since, claim name)


def senior(claims: Sequence[Claim]) -> Optional[str]:
    """The claim that acts: the oldest, then the lowest name."""
    return min(claims)[1] if claims else None


class Claims:
    """This process's claim, and whether it may act (``decide`` each cycle)."""

    def __init__(self, name: str, machine: str, state_file: Path, now: Optional[float] = None):
        self.name, self.machine = name, machine
        self.claim = f"{name}@{machine}:{state_file}"
        self.since = _since(state_file.with_name("provisioner-claim.json"),
                            time.time() if now is None else now)
        self.seen = 0            # cycles in which the collector showed our claim
        self.acting = False
        self.why = "not yet seen its own claim in the collector"

    def ad(self, lifetime: int):
        import classad2
        return classad2.ClassAd({
            "MyType": CLAIM_TYPE, "Name": self.claim, "CloudProvisionerName": self.name,
            "Machine": self.machine, "CloudClaimSince": int(self.since),
            "CloudClaimPid": os.getpid(), "CloudClaimActing": self.acting,
            "CloudClaimWhy": self.why, "ClassAdLifetime": int(lifetime)})

    def decide(self, collector, lifetime: int) -> bool:
        """Advertise our claim, read the live ones, and decide; logs changes."""
        import classad2
        import htcondor2
        try:
            collector.advertise([self.ad(lifetime)], "UPDATE_AD_GENERIC")
            ads = collector.query(
                htcondor2.AdType.Any, f"MyType == {classad2.quote(CLAIM_TYPE)} && "
                f"CloudProvisionerName == {classad2.quote(self.name)}",
                ["Name", "Machine", "CloudClaimSince", "CloudClaimPid"])
        except Exception as err:   # unknown: the last decision stands
            log.debug("Reading the provisioner claims failed: %s", err)
            return self.acting
        claims = {str(a.get("Name")): a for a in ads if isinstance(a.get("CloudClaimSince"), int)}
        self.seen = self.seen + 1 if self.claim in claims else 0
        top = senior([(float(a["CloudClaimSince"]), n) for n, a in claims.items()])
        if self.seen < 2:
            acting, why = False, "waiting to see its own claim in the collector twice"
        elif top == self.claim:
            acting, why = True, ""
        else:
            other = claims[top]
            acting, why = False, (
                f"standing by: provisioner {self.name} is acting on {other.get('Machine')} "
                f"(pid {other.get('CloudClaimPid')}, claim since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(other['CloudClaimSince']))}"
                " UTC)")
        self._log(acting, why)
        self.acting, self.why = acting, why
        return acting

    def _log(self, acting: bool, why: str) -> None:
        if acting and not self.acting:
            log.info("Acting as provisioner %s (the senior claim)", self.name)
        elif not acting and why != self.why and why.startswith("standing by"):
            log.warning("Not acting: %s; takes over when that claim expires", why)
        elif not acting and self.acting:
            log.warning("Not acting any more: %s", why)

    def withdraw(self, collector) -> None:
        import classad2
        query = classad2.ClassAd({"MyType": "Query", "TargetType": CLAIM_TYPE,
                                  "Name": self.claim})
        query["Requirements"] = classad2.ExprTree(f"TARGET.Name == {classad2.quote(self.claim)}")
        try:
            collector.advertise([query], "INVALIDATE_ADS_GENERIC")
        except Exception as err:
            log.debug("Withdrawing our claim failed: %s", err)


def _since(path: Path, now: float) -> float:
    """When this state's claim began (written once; a restart keeps it)."""
    try:
        return float(json.loads(path.read_text())["since"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"since": now}))
        os.replace(tmp, path)
    except OSError as err:
        log.warning("Cannot keep the claim's start in %s: %s", path, err)
    return now


