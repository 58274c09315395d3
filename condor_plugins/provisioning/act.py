"""The Provisioner's writes (mixed in): create, drain and terminate
instances, mint their tokens, withdraw their ads, and advertise the
provisioner's own ad (holds, retire requests, counts).  Each action is logged
with its reason; a failed one is recorded in ``incomplete``, never raised."""

from __future__ import annotations

import logging
import secrets
import subprocess
import time
from typing import List, Mapping, Optional

from ..config import EntryConfig
from ..providers.base import ProviderError, instance_tags
from .policy import fold_launches
from .revocation import identities_of
from .scaleup import spend_per_hour
from .state import (Create, Drain, Hold, InstanceRecord, Launched, LaunchFailed, Phase, Plan,
                    Terminate)
from .statefile import save_state

__all__ = ["Acting", "WORKER_AUTHZ", "AD_TYPE", "DRAIN_CHECK"]

log = logging.getLogger("condor_plugins.provisioning.provisioner")

WORKER_AUTHZ = ("ADVERTISE_STARTD", "ADVERTISE_MASTER", "READ")
#: MyType of the provisioner's own ad in the collector.
AD_TYPE = "CloudProvisioner"
#: Evaluated by the startd in every slot ad: no drain if any slot is claimed.
DRAIN_CHECK = 'State =!= "Claimed"'


class Acting:
    """Mixed into the Provisioner: every action on instances and the collector."""

    def save(self) -> None:
        save_state(self.state_file, self.records, self.backoff, self.failures)

    def mint_token(self, instance_id: str, authz_list=WORKER_AUTHZ) -> str:
        """An IDTOKEN for one worker, signed with the pool key; never logged."""
        args = ["condor_token_create", "-identity", f"{instance_id}@{self.token_domain}",
                "-key", "POOL", "-lifetime", str(int(self.cfg.worker_token_lifetime))]
        for authz in authz_list:
            args += ["-authz", authz]
        res = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if res.returncode != 0 or not res.stdout.strip():
            first = (res.stderr.strip().splitlines() or ["no output"])[0]
            raise RuntimeError(f"condor_token_create failed for {instance_id}: {first[:200]}")
        return res.stdout.strip()

    def user_data(self, entry: EntryConfig, instance_id: str,
                  token: Optional[str] = None) -> str:
        """The instance's cloud-init document (worker fragment, per-instance
        knobs, CVMFS, SITECONF and its token): the same for every provider.
        ``token``: use this one instead of minting the instance's own."""
        from ..node.context_config import context_from_config
        from ..node.contextualize import render_user_data
        # The worker token (root's, for the daemons) and a READ-only one for
        # the node-control script, which runs as the condor user.
        ctx = context_from_config(entry, self.param, instance_id,
                                  token or self.mint_token(instance_id), provisioner=self.cfg.name,
                                  control_token=self.mint_token(instance_id, ("READ",)))
        return render_user_data(ctx)

    def create(self, action: Create, now: float) -> None:
        entry = self.cfg.entry(action.entry)
        provider = self.providers[action.entry]
        for _ in range(action.count):
            iid = f"{entry.name.lower()}-{secrets.token_hex(4)}"
            tags = instance_tags(self.cfg.pool, self.cfg.name, entry.name, iid)
            try:
                user_data = self.user_data(entry, iid)
                started = provider.create(entry.spec(), 1, tags, user_data, iid)
            except ProviderError as err:
                self.failures.append(LaunchFailed(entry.name, err.kind, err.message))
                self.incomplete.append(f"a create for entry {entry.name} failed")
            except Exception as err:
                self.incomplete.append(f"a create for entry {entry.name} failed")
                log.exception("Create for entry %s failed", entry.name)
                self.failures.append(LaunchFailed(entry.name, "error", str(err)[:200]))
            else:
                outcome = Launched(entry.name, tuple(started))
                self.records = fold_launches(self.records, [outcome], now)
                self.save()  # right away: a crash now must not forget the instance
                log.info("Created %s (entry %s): %s",
                         ", ".join(i.id for i in started) or "nothing", entry.name,
                         action.reason)
                continue
            failed = self.failures[-1]
            log.error("Create for entry %s failed (%s): %s", entry.name, failed.kind,
                      failed.message)
            self.save()
            break

    def drain(self, action: Drain, before: Optional[InstanceRecord], now: float) -> None:
        """Graceful drain, which the startd itself refuses if any slot is claimed:
        the collector's view may be older than a job that just started there."""
        import htcondor2
        ad = self._slot_ads.get(action.instance_id)
        try:
            if ad is None:
                raise RuntimeError("no startd ad")
            htcondor2.Startd(ad).drainJobs(htcondor2.DrainType.Graceful,
                                           check_expr=DRAIN_CHECK,
                                           reason=f"condor_cloud_provisioner: {action.reason}")
        except Exception as err:
            # Real VMs refuse it (they cannot verify us): the node retires by
            # pulling our ad's CloudRetireRequests instead (node/control.py).
            log.info("Retiring %s (entry %s) by pulling: %s; the startd refused a direct "
                     "drain or could not be reached (%s)", action.instance_id, action.entry,
                     action.reason,
                     str(err).splitlines()[0] if str(err) else type(err).__name__)
            return
        log.info("Draining %s (entry %s): %s", action.instance_id, action.entry,
                 action.reason)

    def terminate(self, action: Terminate) -> None:
        self.providers[action.entry].terminate([action.instance_id])
        kind = (" as a failure" if action.failure else " as lost" if action.lost
                else " (stopped)" if action.stopped else "")
        if action.lost:
            self.lost += 1
        log.info("Terminated %s (entry %s)%s: %s", action.instance_id, action.entry, kind,
                 action.reason)
        self.ended.add(action.instance_id)
        self.withdraw_node_ads(action.instance_id)

    def revoke_ended(self, before: Mapping[str, InstanceRecord], now: float) -> None:
        """Revoke the worker tokens of the instances terminated in this cycle,
        and of those that went away by themselves (revocation.py): each
        instance once, in the cycle it leaves for GONE (or is dropped)."""
        was_gone = {iid for iid, old in before.items() if old.phase is Phase.GONE}
        self.ended |= {iid for iid, rec in self.records.items()
                       if rec.phase is Phase.GONE and iid not in was_gone}
        self.ended |= set(before) - set(self.records) - was_gone
        if self.ended:
            created = {iid: rec.created for iid, rec in {**before, **self.records}.items()}
            ids = {req: created.get(self._request_ids.get(req, req), now)
                   for req in identities_of(self.ended, self._request_ids)}
            try:   # writes the list and reconfigures the collector
                self.revocations.revoke(ids, self.token_domain,
                                        self.cfg.worker_token_lifetime, now)
            except OSError as err:   # kept in ``ended``: tried again next cycle
                self.incomplete.append("revoking worker tokens failed")
                log.error("Revoking the worker tokens of %s failed: %s",
                          ", ".join(sorted(self.ended)), err)
                return
            self.ended = set()
        else:
            self.revocations.sync()   # an earlier cycle's failed reconfig
        if self.revocations.pending:
            self.incomplete.append("the collector reconfig for revoked tokens failed")

    def withdraw_node_ads(self, instance_id: str) -> None:
        """A VM stopped, lost or killed mid-job never withdrew its ads: left in
        the collector until CLASSAD_LIFETIME (15 min), they attract matches
        that fail, and jobs wait while a new node idles."""
        import classad2
        ids = {instance_id} | {r for r, i in self._request_ids.items() if i == instance_id}
        match = " || ".join(f"CloudRequestID == {classad2.quote(i)} || "
                            f"CloudInstanceID == {classad2.quote(i)}" for i in sorted(ids))
        for target, command in (("Machine", "INVALIDATE_STARTD_ADS"),
                                ("DaemonMaster", "INVALIDATE_MASTER_ADS")):
            query = classad2.ClassAd({"MyType": "Query", "TargetType": target})
            query["Requirements"] = classad2.ExprTree(f"IsCloudNode is True && ({match})")
            try:
                self._collector().advertise([query], command)
            except Exception as err:  # the ads then expire by themselves
                log.debug("Withdrawing the ads of %s failed: %s", instance_id, err)

    def act(self, plan: Plan, now: float, before: Mapping[str, InstanceRecord]) -> None:
        holds = {}
        for action in plan.actions:
            try:
                if isinstance(action, Create):
                    self.create(action, now)
                elif isinstance(action, Drain):
                    self.drain(action, before.get(action.instance_id), now)
                elif isinstance(action, Terminate):
                    self.terminate(action)
                elif isinstance(action, Hold):
                    # Said once while it holds, and when it clears.
                    holds[(action.entry, action.key or action.reason)] = action.reason
            except ProviderError as err:
                self.incomplete.append(f"{type(action).__name__} failed")
                log.error("%s failed (%s): %s", type(action).__name__, err.kind, err.message)
            except Exception:
                self.incomplete.append(f"{type(action).__name__} failed")
                log.exception("%s failed", action)
        self.holds.update(holds)


    # ------------------------------------------------------------ advertise
    def ad(self):
        """The provisioner's own ClassAd (``condor_status -any``): counts per phase."""
        import classad2
        phases = {p: 0 for p in Phase}
        for rec in self.records.values():
            phases[rec.phase] += 1
        ad = classad2.ClassAd({
            "MyType": AD_TYPE, "Name": self.cfg.name, "CloudPool": self.cfg.pool,
            "Machine": self.param.get("FULL_HOSTNAME") or "",
            "CloudEntries": ", ".join(e.name for e in self.cfg.entries),
            "NumInstances": sum(n for p, n in phases.items() if p is not Phase.GONE),
            "CyclesTotal": self.cycles, "CyclesFailed": self.failed_cycles,
            "InstancesLost": self.lost, "InstancesInterrupted": len(self.interrupted),
            # Node control by pulling (condor_plugins.node.control): the request
            # ids of the nodes to retire; LastCycleTime is the nodes' lease.
            "CloudRetireRequests": " ".join(self.retire_requests()),
            "LastCycleTime": int(self.last_cycle), "DaemonStartTime": int(self.started),
            "CycleInterval": self.cfg.cycle_interval,
            # A provisioner that stopped reporting disappears from the collector.
            "ClassAdLifetime": max(60, 3 * self.cfg.cycle_interval),
            "BackoffEntries": ", ".join(f"{n} ({b.failures} failure(s): {b.reason})"[:300]
                                        for n, b in self.backoff.items()
                                        if b.until > time.time()),
            # Why no VM: the last cycle's holds and the idle jobs no entry can run.
            "CloudHolds": self.holds.shown(), "CloudUnmatchedJobs": self.unmatched.shown(),
            "CloudLeftOutJobs": self.left_out.shown(),
            "CloudDisabledEntries": ", ".join(sorted(self.disabled)),
            # Worker tokens of ended instances the collector refuses (revocation.py).
            "CloudRevokedWorkerTokens": self.revocations.count,
            "CloudRevocationPending": self.revocations.pending or bool(self.ended)})
        # The spend rate (COST_PER_HOUR of every instance not gone), in total and per entry.
        spend = spend_per_hour(self.records.values(), self.cfg)
        ad["CloudSpendPerHour"] = round(sum(spend.values()), 6)
        ad["CloudSpendPerHourByEntry"] = ", ".join(f"{e} {v:g}" for e, v in spend.items())
        if self.cfg.budget_per_hour is not None:
            ad["CloudBudgetPerHour"] = self.cfg.budget_per_hour
        for phase, n in phases.items():
            if phase is not Phase.GONE:
                ad[f"Num{phase.value.capitalize()}"] = n
        if getattr(self, "metrics", None) is not None:  # totals since start (metrics.py)
            for attr, value in self.metrics.totals.items():
                ad[attr] = round(value, 6) if isinstance(value, float) else int(value)
        return ad

    def retire_requests(self) -> List[str]:
        """Request ids of the instances being retired (phase DRAINING)."""
        draining = {iid for iid, rec in self.records.items() if rec.phase is Phase.DRAINING}
        out = {req for req, iid in self._request_ids.items() if iid in draining}
        mapped = set(self._request_ids.values())
        out |= {iid for iid in draining if iid not in mapped}
        return sorted(out)

    def advertise(self) -> None:
        try:
            self._collector().advertise([self.ad()], "UPDATE_AD_GENERIC")
        except Exception as err:  # visibility only: never fails a cycle
            log.debug("Advertising to the collector failed: %s", err)

    def invalidate(self) -> None:
        import classad2
        query = classad2.ClassAd({"MyType": "Query", "TargetType": AD_TYPE,
                                  "Name": self.cfg.name})
        query["Requirements"] = classad2.ExprTree(
            f"TARGET.Name == {classad2.quote(self.cfg.name)}")
        try:
            self._collector().advertise([query], "INVALIDATE_ADS_GENERIC")
        except Exception as err:
            log.debug("Withdrawing our ad from the collector failed: %s", err)
