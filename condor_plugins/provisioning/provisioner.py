"""condor_cloud_provisioner: the imperative shell around ``policy.plan``.

Each cycle observes (demand from the schedds, supply from the providers and the
collector), plans with the pure policy, and acts (create, drain, terminate),
logging every action with its reason.  An observation that fails is marked
not-ok (the policy then holds what depends on it); a cycle never raises.  What the
provisioner remembers is a JSON state file (``$(SPOOL)/cloud_plugins/
provisioner-state.json``), written atomically after every create, so a restart
(even after SIGKILL) neither double-provisions nor orphans: anything missing
from it is rebuilt from the provider's tags and the collector.

Run under condor_master (``DAEMON_LIST``), systemd, or by hand (daemon.py:
signals, logs, exit codes); ``--once`` runs one cycle.  Logs go to stderr, or to
``$(CLOUD_PROVISIONER_LOG)`` (default ``$(LOG)/CloudProvisionerLog``) under the master.
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from .. import config as config_mod
from ..config import EntryConfig, ProvisionerConfig
from . import commands as commands_mod
from .explain import Reasons, first_failure, never_cloud, unmatched_key
from .policy import (INTERRUPTED, NODE_DRAINING, evidence_wanted, fold_launches,
                     plan as plan_cycle)
from ..providers import provider_class
from ..providers.base import (TAG_ENTRY, TAG_REQUEST, Provider, ProviderError, instance_tags,
                             owner_tags)
from .observe import (SLOT_ATTRS, idle_shapes, join_evidence, running_hosts,  # noqa: F401
                      startd_name, template_ad)
from .state import (Create, Drain, Hold, InstanceRecord, JobGroup, Launched,
                    LaunchFailed, Listing, NodeInfo, ObservedState, Phase, Plan, Terminate)

__all__ = ["Provisioner", "main", "template_ad", "STATE_VERSION"]

log = logging.getLogger("condor_plugins.provisioning.provisioner")

WORKER_AUTHZ = ("ADVERTISE_STARTD", "ADVERTISE_MASTER", "READ")
#: MyType of the provisioner's own ad in the collector.
AD_TYPE = "CloudProvisioner"
#: Evaluated by the startd in every slot ad: no drain if any slot is claimed.
DRAIN_CHECK = 'State =!= "Claimed"'


def _our_action(rec: InstanceRecord) -> bool:
    """A phase our own Drain/Terminate put it in (logged when done)."""
    return (rec.phase in (Phase.TERMINATING, Phase.FAILED) or rec.phase is Phase.DRAINING
            and not rec.reason.startswith((INTERRUPTED, NODE_DRAINING)))


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


from .statefile import (STATE_VERSION, load_disabled, load_state,  # noqa: F401
                        save_disabled, save_state)


# ------------------------------------------------------------------ provisioner

class Provisioner:
    """One provisioner: its config, providers and remembered state."""

    def __init__(self, param: Optional[Mapping[str, str]] = None,
                 providers: Optional[Mapping[str, Provider]] = None,
                 state_file: Optional[Path] = None):
        if param is None:
            import htcondor2
            param = htcondor2.param
        self.providers: Dict[str, Provider] = {}
        self._configure(param, providers)
        spool = param.get("SPOOL") or "."
        self.state_file = Path(state_file or Path(spool) / "cloud_plugins"
                               / "provisioner-state.json")
        self.records, self.backoff, self.failures = load_state(self.state_file)
        self.command_dir = commands_mod.command_dir(param)
        self.disabled = load_disabled(self.state_file)  # by condor_cloud disable
        self.requests: Dict[str, Tuple[str, str, bool]] = {}  # this cycle's retire/terminate
        self.cycles = 0
        self.failed_cycles = 0
        self.incomplete: List[str] = []  # what failed in the last cycle
        self.lost = 0  # lost nodes terminated by this process
        self.interrupted: set = set()  # instances the cloud interrupted (spot notices)
        self._failed_schedds: set = set()
        self.last_plan: Optional[Plan] = None
        self._slot_ads: Dict[str, object] = {}
        self._request_ids: Dict[str, str] = {}  # request id -> cloud instance id
        self.holds = Reasons(log, "Hold", "Hold cleared")
        self.unmatched = Reasons(log, "Idle jobs no entry can run", "No longer unmatched")
        self.started = time.time()
        self.last_cycle = 0.0
        #: False for ``condor_cloud status``: it only looks.
        self.housekeeping = True

    def _configure(self, param: Mapping[str, str],
                   providers: Optional[Mapping[str, Provider]] = None) -> None:
        """Read the knobs; raises (ConfigError, ProviderNotFound, ...) before
        changing anything. A provider whose entry kept its type and settings
        is kept, with its connections."""
        cfg = config_mod.load(param)
        for warning in config_mod.unknown_knobs(param):
            log.warning("Configuration: %s", warning)
        token_domain = param.get("CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN") or ""
        if cfg.entries and not token_domain:
            raise config_mod.ConfigError("CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN is not set (the "
                                         "identity domain of the worker tokens)")
        if providers is None:
            old = {e.name: e for e in self.cfg.entries} if hasattr(self, "cfg") else {}
            providers = {}
            for e in cfg.entries:
                kept = old.get(e.name)
                if (kept is not None and e.name in self.providers and kept.type == e.type
                        and kept.settings == e.settings):
                    providers[e.name] = self.providers[e.name]
                else:
                    providers[e.name] = provider_class(e.type, e.name)(e.name, e.settings)
        templates = {e.name: template_ad(e, cfg, param) for e in cfg.entries}
        dropped = [p for name, p in self.providers.items() if providers.get(name) is not p]
        self.param, self.cfg, self.token_domain = param, cfg, token_domain
        self.collector_host = param.get("COLLECTOR_HOST") or ""
        self.providers, self.templates = dict(providers), templates
        for provider in dropped:
            try:
                provider.close()
            except Exception:
                log.exception("Closing provider entry %s failed", provider.entry)

    def reconfigure(self, param: Mapping[str, str]) -> bool:
        """SIGHUP (condor_reconfig): the new knobs from the next cycle on, or,
        if they are bad, one log line and the running configuration kept."""
        try:
            self._configure(param)
        except Exception as err:
            log.error("Reconfig refused, keeping the running configuration: %s",
                      str(err).splitlines()[0] if str(err) else type(err).__name__)
            return False
        log.info("Reconfigured: entries %s, cycle every %ds",
                 ", ".join(e.name for e in self.cfg.entries) or "none",
                 self.cfg.cycle_interval)
        return True

    # ------------------------------------------------------------ observe
    def _collector(self):
        import htcondor2
        return htcondor2.Collector(self.collector_host) if self.collector_host \
            else htcondor2.Collector()

    def _observe(self, what: str, fn, default):
        try:
            return True, fn()
        except Exception as err:  # any failure: this source is unknown this cycle
            log.warning("Observation of the %s failed: %s", what, str(err).splitlines()[0]
                        if str(err) else type(err).__name__)
            return False, default

    def schedds(self):
        """Demand per entry from every schedd that answers, running jobs per
        startd name, and the names of the schedds that failed.

        Idle jobs are grouped by shape and each shape is matched once against
        the entry's template machine ad.  Fast path: count idle jobs per
        autocluster (a cheap grouped query on integers) and take each
        autocluster's significant attributes from the schedd's autocluster
        table; jobs not yet in an autocluster (submitted since the last
        negotiation) are read one by one if they are few, else everything is
        grouped on the full job shape (slower at 100k jobs)."""
        import htcondor2
        schedds = self._collector().locateAll(htcondor2.DaemonType.Schedd)
        if not schedds:
            raise RuntimeError("no schedd in the collector")
        shapes: Dict[str, Dict[Tuple[int, int], int]] = {e: {} for e in self.templates}
        running: Dict[str, int] = {}
        failed = []
        unmatched: Dict[Tuple[str, str], int] = {}
        for ad in schedds:
            name = ad.get("Name") or "?"
            try:
                schedd = htcondor2.Schedd(ad)
                rows = idle_shapes(schedd)
                hosts = running_hosts(schedd)
            except Exception as err:  # this schedd is unknown; the others count
                failed.append(name)
                # Once while it fails (then at debug level), and again when it recovers.
                log.log(logging.DEBUG if name in self._failed_schedds else logging.WARNING,
                        "Query of schedd %s failed: %s", name,
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
                continue
            for host, n in hosts.items():
                running[host] = running.get(host, 0) + n
            for row, count in rows:
                shape = (max(1, _int(row.eval("RequestCpus"), 1)),
                         max(0, _int(row.eval("RequestMemory"), 0)))
                matched = False
                for entry, template in self.templates.items():
                    if count and template.matches(row):
                        matched = True
                        shapes[entry][shape] = shapes[entry].get(shape, 0) + count
                if count and not matched:
                    self._unmatched(row, count, unmatched)
        demand = {entry: tuple(JobGroup(n, c, m) for (c, m), n in sorted(by.items()))
                  for entry, by in shapes.items()}
        for name in sorted(self._failed_schedds - set(failed)):
            log.info("Query of schedd %s works again", name)
        self._failed_schedds = set(failed)
        if not failed:  # else unknown: keep what was said
            self.unmatched.update({("", f"{shape}; {why}"): f"{n} idle job(s) ({shape}): {why}"
                                   for (shape, why), n in sorted(unmatched.items())})
        return demand, running, failed

    def _unmatched(self, job, count: int, out: Dict[Tuple[str, str], int]) -> None:
        """Count idle jobs no entry's template matches, by shape and by the
        first clause that fails on each entry (jobs kept off cloud nodes on
        purpose are not counted)."""
        why = {entry: first_failure(job, template) for entry, template in self.templates.items()}
        if never_cloud(why.values()):
            return
        key = (unmatched_key(job), "; ".join(f"{e} needs {c}" for e, c in why.items()))
        out[key] = out.get(key, 0) + count

    def demand(self) -> Dict[str, Tuple[JobGroup, ...]]:
        """Idle jobs per entry (all schedds; raises if any failed)."""
        demand, _, failed = self.schedds()
        if failed:
            raise RuntimeError(f"schedd(s) {', '.join(failed)} failed")
        return demand

    def nodes(self) -> Tuple[Dict[str, NodeInfo], Optional[float]]:
        """The collector's view of our instances, and when the collector started."""
        import classad2
        import htcondor2
        coll = self._collector()
        constraint = f"CloudProvisioner == {classad2.quote(self.cfg.name)}"
        ads = coll.query(htcondor2.AdType.Startd, constraint, SLOT_ATTRS)
        started = [c.get("DaemonStartTime") for c in
                   coll.query(htcondor2.AdType.Collector, "true", ["DaemonStartTime"])]
        info: Dict[str, dict] = {}
        slot_ads = {}
        for ad in ads:
            iid = self._instance_of(ad)
            if iid is None:
                continue
            n = info.setdefault(iid, {"busy": 0, "cpus": 0, "memory": 0, "draining": False,
                                      "startd": startd_name(ad.get("Name")),
                                      "interruption": ""})
            if isinstance(ad.get("CloudInterruption"), str):
                n["interruption"] = ad["CloudInterruption"][:120] or "notice"
            if (ad.get("Draining") is True or ad.get("State") == "Drained"
                    or ad.eval("CloudRetiring") is True):
                n["draining"] = True
            if ad.get("State") == "Claimed":
                n["busy"] += 1
            elif not ad.get("DynamicSlot"):
                n["cpus"] += _int(ad.get("Cpus"), 0)
                n["memory"] += _int(ad.get("Memory"), 0)
            if ad.get("PartitionableSlot") or iid not in slot_ads:
                slot_ads[iid] = ad
        self._slot_ads = slot_ads
        nodes = {iid: NodeInfo(iid, n["busy"], n["cpus"], n["memory"], n["draining"],
                               startd=n["startd"], interruption=n["interruption"])
                 for iid, n in info.items()}
        known = [t for t in started if isinstance(t, int)]
        return nodes, (float(min(known)) if known else None)

    def _instance_of(self, ad) -> Optional[str]:
        """The cloud id of the instance behind a slot ad.  Matched on
        ``CloudRequestID``, the id the provisioner chose and tagged, through the
        listings; the id the VM learned (``CloudInstanceID``) is only a fallback,
        since on EC2-compatible clouds it may be the cloud's internal UUID."""
        request = ad.get("CloudRequestID")
        if isinstance(request, str) and request in self._request_ids:
            return self._request_ids[request]
        if isinstance(request, str) and request in self.records:
            return request  # providers whose ids are the request ids (local)
        iid = ad.get("CloudInstanceID")
        if not isinstance(iid, str):
            return request if isinstance(request, str) else None
        # A node that could not learn its cloud id advertises the request id.
        return self._request_ids.get(iid, iid)

    def listing(self, entry: str) -> Listing:
        tags = dict(owner_tags(self.cfg.pool, self.cfg.name), **{TAG_ENTRY: entry})
        try:
            listing = Listing(True, tuple(self.providers[entry].list(tags)))
        except ProviderError as err:
            log.warning("Listing of provider entry %s failed (%s): %s", entry, err.kind,
                        err.message)
            return Listing(False)
        except Exception as err:
            log.exception("Listing of provider entry %s failed: %s", entry, err)
            return Listing(False)
        if self.housekeeping:
            try:
                self.providers[entry].housekeeping(tags)
            except Exception as err:  # tidiness only: the listing stands
                log.warning("Housekeeping of provider entry %s failed: %s", entry, err)
        return listing

    def listings(self) -> Dict[str, Listing]:
        """Every entry's listing; also learns which cloud id each request got
        (nodes that could not learn their cloud id advertise the request id).
        Kept for instances still recorded or listed: a failed listing forgets none."""
        listings = {e.name: self.listing(e.name) for e in self.cfg.entries}
        listed = {i.id: i for listing in listings.values() for i in listing.instances}
        self._request_ids = {req: iid for req, iid in self._request_ids.items()
                             if iid in listed or iid in self.records}
        self._request_ids.update((i.tags[TAG_REQUEST], iid) for iid, i in listed.items()
                                 if TAG_REQUEST in i.tags)
        return listings

    def observe(self) -> ObservedState:
        reached, (demand, running, failed) = self._observe("schedd(s)", self.schedds,
                                                           ({}, {}, ["all"]))
        listings = self.listings()
        nodes_ok, (nodes, started) = self._observe("collector", self.nodes, ({}, None))
        evidence_ok, evidence = self._observe("join evidence (collector, schedd history)",
                                              lambda: self.join_evidence(listings), {})
        return ObservedState(records=dict(self.records), backoff=dict(self.backoff),
                             demand=demand, demand_ok=reached and not failed,
                             running=running, listings=listings,
                             nodes=nodes, nodes_ok=nodes_ok, collector_started=started,
                             outcomes=tuple(self.failures), requests=dict(self.requests),
                             join_evidence=evidence, evidence_ok=evidence_ok)

    def join_evidence(self, listings: Mapping[str, Listing]) -> Dict[str, str]:
        """For the records that would count as boot failures: whether the pool
        saw them join after all (a provisioner killed before it saved the join)."""
        import htcondor2
        wanted = evidence_wanted(self.records, listings)
        if not wanted:
            return {}
        names = {iid: {iid} | {r for r, i in self._request_ids.items() if i == iid}
                 for iid in wanted}
        coll = self._collector()
        since = min(self.records[iid].created for iid in wanted)
        return join_evidence(coll, coll.locateAll(htcondor2.DaemonType.Schedd), names, since)

    # ------------------------------------------------------------ levers
    def take_commands(self) -> None:
        """Apply the admins' ``condor_cloud`` commands (audited in the log)."""
        self.requests = {}
        disabled = set(self.disabled)
        for cmd in commands_mod.take(self.command_dir):
            what, user, force = cmd["command"], str(cmd.get("user") or "?"), bool(cmd.get("force"))
            for target in (str(t) for t in cmd["targets"]):
                said = f"Command from {user}: {what}{' --force' if force else ''} {target}"
                if commands_mod.COMMANDS[what] == "entry":
                    if self.cfg.entry(target) is None:
                        log.warning("%s refused: no entry %s in CLOUD_PLUGINS_PROVIDERS", said,
                                    target)
                        continue
                    (self.disabled.add if what == "disable" else self.disabled.discard)(target)
                    log.info("%s: %s", said, "no new instance until enabled (instances kept)"
                             if what == "disable" else "may create instances again")
                elif target not in self.records:
                    log.warning("%s refused: no such instance in the provisioner's records",
                                said)
                else:
                    self.requests[target] = (what, f"{what} asked by {user} (condor_cloud)",
                                             force)
                    log.info("%s: accepted", said)
        if self.disabled != disabled:  # written only when a command changed it
            save_disabled(self.state_file, self.disabled)

    def effective_cfg(self) -> ProvisionerConfig:
        """The knobs, with the entries ``condor_cloud disable`` turned off."""
        if not self.disabled:
            return self.cfg
        return replace(self.cfg, entries=tuple(
            replace(e, enabled=False) if e.name in self.disabled else e
            for e in self.cfg.entries))

    # ------------------------------------------------------------ act
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
        from ..node.contextualize import context_from_config, render_user_data
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
        self.withdraw_node_ads(action.instance_id)

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

    # ------------------------------------------------------------ cycle
    def cycle(self) -> bool:
        """Observe, plan, act.  Never raises; returns False if the cycle failed.
        ``incomplete`` then says what failed in it (an observation, a create,
        a terminate): ``--once`` exits 1 if anything did."""
        self.cycles += 1
        self.incomplete = []
        try:
            now = time.time()
            self.take_commands()
            state = self.observe()
            if not state.demand_ok:
                self.incomplete.append("a schedd query failed")
            if not state.nodes_ok:
                self.incomplete.append("the collector query failed")
            self.incomplete += [f"the listing of entry {name} failed"
                                for name, listing in state.listings.items() if not listing.ok]
            plan = plan_cycle(state, self.effective_cfg(), now)
            self.last_plan = plan
            before = self.records
            self.records, self.backoff = dict(plan.records), dict(plan.backoff)
            self.failures = []  # consumed by this plan
            self._log_changes(before, self.records)
            self.interrupted |= {iid for iid, rec in self.records.items()
                                 if rec.reason.startswith(INTERRUPTED)}
            self.save()
            self.act(plan, now, before)
            self.save()
            self.last_cycle = now
            return True
        except Exception:
            self.failed_cycles += 1
            log.exception("Cycle %d failed (%d failed so far)", self.cycles, self.failed_cycles)
            return False
        finally:
            self.advertise()

    def _log_changes(self, before: Mapping[str, InstanceRecord],
                     after: Mapping[str, InstanceRecord]) -> None:
        """One line per instance whose phase changed (not for our own actions,
        which are logged when done)."""
        for iid, rec in after.items():
            old = before.get(iid)
            if old is None and rec.phase is not Phase.REQUESTED:
                log.info("%s (entry %s): %s, %s", iid, rec.entry, rec.phase, rec.reason)
            elif old is not None and old.phase is not rec.phase and not _our_action(rec):
                log.info("%s (entry %s): %s -> %s, %s", iid, rec.entry, old.phase, rec.phase,
                         rec.reason)
            elif old is not None and (old.missing_since is None) != (rec.missing_since is None):
                log.info("%s (entry %s): %s", iid, rec.entry, rec.reason if rec.missing_since
                         is not None else f"{rec.phase}, back in the collector")
        for iid in set(before) - set(after):
            log.info("%s (entry %s): forgotten (%s)", iid, before[iid].entry,
                     before[iid].reason)

    def lock(self) -> bool:
        """Hold an exclusive lock next to the state file for the life of this
        process, so two provisioners never act on one state (the kernel
        releases it when the process dies, even by SIGKILL)."""
        import fcntl
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.state_file.with_name(self.state_file.name + ".lock"), "a")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            return False
        return True

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
            "CloudDisabledEntries": ", ".join(sorted(self.disabled))})
        for phase, n in phases.items():
            if phase is not Phase.GONE:
                ad[f"Num{phase.value.capitalize()}"] = n
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

    def close(self) -> None:
        for provider in self.providers.values():
            try:
                provider.close()
            except Exception:
                log.exception("Closing provider entry %s failed", provider.entry)


def main(argv: Optional[List[str]] = None) -> int:
    """The daemon (provisioning/daemon.py)."""
    from .daemon import main as daemon_main
    return daemon_main(argv)


def setup_logging(param: Mapping[str, str], debug: bool = False) -> None:
    from .daemon import setup_logging as daemon_setup_logging
    daemon_setup_logging(param, debug)


if __name__ == "__main__":
    sys.exit(main())
