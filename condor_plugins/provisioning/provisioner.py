"""condor_cloud_provisioner: the imperative shell around ``policy.plan``.

Each cycle observes (demand from the schedds, supply from the providers and the
collector), plans with the pure policy, and acts (create, drain, terminate),
logging every action with its reason.  An observation that fails is marked
not-ok (the policy then holds what depends on it); a cycle never raises.  What the
provisioner remembers is a JSON state file (``$(SPOOL)/cloud_plugins/
provisioner-state.json``), written atomically after every create, so a restart
(even after SIGKILL) neither double-provisions nor orphans: anything missing
from it is rebuilt from the provider's tags and the collector.

The reads are in observe.py (``Observing``), the writes in act.py (``Acting``),
the decisions in policy.py; this class holds the config, the remembered
state, the admins' commands and the cycle.

Run under condor_master (``DAEMON_LIST``), systemd, or by hand (daemon.py:
signals, logs, exit codes); ``--once`` runs one cycle.  Logs go to stderr, or to
``$(CLOUD_PROVISIONER_LOG)`` (default ``$(LOG)/CloudProvisionerLog``) under the master.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from .. import config as config_mod
from ..config import ProvisionerConfig
from . import commands as commands_mod
from .act import AD_TYPE, Acting
from .explain import Reasons
from .observe import Observing, template_ad
from .revocation import Revocations, reconfigure_collector
from .sizing import Sizes
from .policy import INTERRUPTED, NODE_DRAINING, plan as plan_cycle
from ..providers import provider_class
from ..providers.base import Provider
from .state import InstanceRecord, Phase, Plan
from .statefile import STATE_VERSION, load_disabled, load_state, save_disabled, save_state

# Also re-exported from here: the state file and the ad type.
__all__ = ["Provisioner", "main", "template_ad", "STATE_VERSION", "AD_TYPE", "load_state",
           "save_state", "load_disabled"]

log = logging.getLogger("condor_plugins.provisioning.provisioner")


def _our_action(rec: InstanceRecord) -> bool:
    """A phase our own Drain/Terminate put it in (logged when done)."""
    return (rec.phase in (Phase.TERMINATING, Phase.FAILED) or rec.phase is Phase.DRAINING
            and not rec.reason.startswith((INTERRUPTED, NODE_DRAINING)))


# ------------------------------------------------------------------ provisioner

class Provisioner(Observing, Acting):
    """One provisioner: its config, providers and remembered state."""

    def __init__(self, param: Optional[Mapping[str, str]] = None,
                 providers: Optional[Mapping[str, Provider]] = None,
                 state_file: Optional[Path] = None):
        if param is None:
            import htcondor2
            param = htcondor2.param
        self.providers: Dict[str, Provider] = {}
        self.sizes = Sizes()  # the entries' instance types, described by the clouds
        self._configure(param, providers)
        spool = param.get("SPOOL") or "."
        self.state_file = Path(state_file or Path(spool) / "cloud_plugins"
                               / "provisioner-state.json")
        self.records, self.backoff, self.failures = load_state(self.state_file)
        self.command_dir = commands_mod.command_dir(param)
        self.disabled = load_disabled(self.state_file)  # by condor_cloud disable
        #: Worker tokens of ended instances (revocation.py), and the instances
        #: ended whose tokens are not revoked yet.
        self.revocations = Revocations(self.state_file.parent,
                                       reconfigure_collector)
        self.ended: set = set()
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
        self.left_out = Reasons(log, "Idle jobs left out of demand", "No longer left out")
        self.started = time.time()
        self.last_cycle = 0.0
        #: One acting provisioner per name across hosts (oneactor.py); the
        #: daemon sets it, a bare Provisioner (tests, --once) acts always.
        self.claims = None
        #: False for ``condor_cloud status``: it only looks.
        self.housekeeping = True
        #: Metrics (metrics.py): totals in our ad; the daemon serves them to
        #: Prometheus when CLOUD_PLUGINS_METRICS_PORT is set.
        self.metrics = None
        try:
            from .metrics import Metrics
            self.metrics = Metrics()
        except ImportError:  # prometheus_client missing: no metrics, no totals
            log.warning("No metrics: the Python module prometheus_client is not installed")

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
        self.param, self.cfg, self.knobs, self.token_domain = param, cfg, cfg, token_domain
        self.sizes.reset()  # described again in the next observation
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

    # ------------------------------------------------------------ cycle
    def cycle(self) -> bool:
        """Observe, plan, act.  Never raises; returns False if the cycle failed.
        ``incomplete`` then says what failed in it (an observation, a create,
        a terminate): ``--once`` exits 1 if anything did."""
        self.cycles += 1
        self.incomplete = []
        if self.claims is not None and not self.claims.decide(
                self._collector(), max(60, 3 * self.cfg.cycle_interval)):
            return True   # standing by: no action, no provisioner ad, commands kept
        marks, state, plan, before, now = [time.monotonic()], None, None, self.records, time.time()
        try:
            self.take_commands()
            state = self.observe()
            marks.append(time.monotonic())
            if not state.demand_ok:
                self.incomplete.append("a schedd query failed")
            if not state.nodes_ok:
                self.incomplete.append("the collector query failed")
            self.incomplete += [f"the listing of entry {name} failed"
                                for name, listing in state.listings.items() if not listing.ok]
            plan = plan_cycle(state, self.effective_cfg(), now)
            marks.append(time.monotonic())
            self.last_plan = plan
            before = self.records
            self.records, self.backoff = dict(plan.records), dict(plan.backoff)
            self.failures = []  # consumed by this plan
            self._log_changes(before, self.records)
            self._ledger(before, self.records, now)
            self.interrupted |= {iid for iid, rec in self.records.items()
                                 if rec.reason.startswith(INTERRUPTED)}
            self.save()
            self.act(plan, now, before)
            self.save()
            self.revoke_ended(before, now)
            marks.append(time.monotonic())
            self.last_cycle = now
            return True
        except Exception:
            self.failed_cycles += 1
            log.exception("Cycle %d failed (%d failed so far)", self.cycles, self.failed_cycles)
            return False
        finally:
            # Metrics first: the ad carries this cycle's totals, not the last one's.
            self._update_metrics(plan, state, before, now, marks)
            self.advertise()

    def _update_metrics(self, plan, state, before, now: float, marks: List[float]) -> None:
        """The cycle's metrics (metrics.py), if enabled; never fails a cycle."""
        if self.metrics is None:
            return
        try:
            phases = dict(zip(("observe", "plan", "act"),
                              (b - a for a, b in zip(marks, marks[1:]))))
            self.metrics.update(self, plan, state, before, now, phases,
                                ok=len(marks) == 4)
        except Exception:
            log.exception("Updating the metrics failed (the cycle is not affected)")

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

    def _ledger(self, before: Mapping[str, InstanceRecord],
                after: Mapping[str, InstanceRecord], now: float) -> None:
        """One line per instance seen gone in this cycle, in
        ``instances.jsonl`` next to the state file (condor_cloud report)."""
        from .costreport import ledger_line
        lines = []
        for iid, rec in after.items():
            old = before.get(iid)
            entry = self.cfg.entry(rec.entry)
            if rec.phase is Phase.GONE and old is not None and old.phase is not Phase.GONE \
                    and entry is not None:
                lines.append(ledger_line(rec, entry.cpus, entry.cost_per_hour, now) + "\n")
        if not lines:
            return
        try:
            with open(self.state_file.with_name("instances.jsonl"), "a") as ledger:
                ledger.writelines(lines)
        except OSError as err:
            log.error("Writing the instances' ledger failed: %s", err)

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
