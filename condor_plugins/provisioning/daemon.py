"""condor_cloud_provisioner as a daemon: HTCondor-style logs, signals
(TERM/INT/QUIT stop after the cycle, HUP re-reads the knobs) and exit codes."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
from typing import List, Mapping, Optional

from .. import config as config_mod
from ..providers import ProviderNotFound
from .state import as_int

log = logging.getLogger("condor_plugins.provisioning.provisioner")


class _CondorFormatter(logging.Formatter):
    """HTCondor daemon log style: ``MM/DD/YY HH:MM:SS message``."""

    def __init__(self):
        super().__init__("%(asctime)s %(message)s", "%m/%d/%y %H:%M:%S")


class _CondorLogHandler(logging.handlers.RotatingFileHandler):
    """HTCondor's rotation: one old log is ``<log>.old``; with
    ``MAX_NUM_<SUBSYS>_LOG`` > 1, old logs get a timestamp and the oldest go."""

    def doRollover(self) -> None:
        if self.stream:
            self.stream.close()
            self.stream = None
        base = self.baseFilename
        if self.backupCount <= 1:
            os.replace(base, base + ".old")
        else:
            dest = stamp = base + time.strftime(".%Y%m%dT%H%M%S")
            n = 0
            while os.path.exists(dest):  # several rotations within a second
                n += 1
                dest = f"{stamp}.{n:03d}"
            os.replace(base, dest)
            folder, name = os.path.split(base)
            old = sorted(f for f in os.listdir(folder or ".")
                         if f.startswith(name + ".") and f[len(name) + 1:][:1].isdigit())
            for stale in old[:max(0, len(old) - self.backupCount)]:
                os.unlink(os.path.join(folder, stale))
        self.stream = self._open()


def setup_logging(param: Mapping[str, str], debug: bool = False) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if os.environ.get("CONDOR_INHERIT"):  # started by condor_master
        path = param.get("CLOUD_PROVISIONER_LOG") or os.path.join(
            param.get("LOG") or ".", "CloudProvisionerLog")
        size = as_int(param.get("MAX_CLOUD_PROVISIONER_LOG") or param.get("MAX_DEFAULT_LOG"),
                    10 * 1024 * 1024)
        keep = as_int(param.get("MAX_NUM_CLOUD_PROVISIONER_LOG")
                    or param.get("MAX_NUM_DEFAULT_LOG"), 1)
        handler = _CondorLogHandler(path, maxBytes=max(size, 0), backupCount=max(keep, 1))
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_CondorFormatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


MAN_DESCRIPTION = """\
Every CLOUD_PLUGINS_CYCLE_INTERVAL seconds it observes the idle jobs of every
schedd, the instances of every provider entry (CLOUD_PLUGINS_PROVIDERS) and
the collector; plans with a pure policy; and acts: creates instances for idle
jobs that fit an entry, within MAX_INSTANCES and the backoff, drains and
terminates idle ones, and terminates stopped, failed or lost ones. Every
decision is logged with its reason, and shown by condor_cloud status and in
its own ad (MyType "CloudProvisioner").

It runs under condor_master (CLOUD_PLUGINS_RUN_PROVISIONER = True; it logs to
$(CLOUD_PROVISIONER_LOG)) or systemd (condor-cloud-provisioner.service). SIGHUP
(condor_reconfig) re-reads the knobs in place, or refuses a bad config and
keeps the running one; SIGTERM, SIGINT or SIGQUIT stop it after the cycle. A
restart or crash never stops a node or a job: what it remembers is in
$(SPOOL)/cloud_plugins/provisioner-state.json, written after every create.
"""


def build_parser() -> argparse.ArgumentParser:
    """The daemon's arguments (also its man page: condor_plugins.manpages)."""
    from .. import __version__
    parser = argparse.ArgumentParser(
        prog="condor_cloud_provisioner",
        description="Start cloud worker nodes for idle jobs and retire them when idle.",
        epilog="exit status: 0 stopped by a signal, or (--once) every observation and "
               "action of the cycle succeeded; 1 (--once) the cycle was incomplete: a "
               "schedd, collector or cloud query, a create or a terminate failed (the log "
               "says which); 2 configuration error; 3 another provisioner holds the state "
               "file's lock.")
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    parser.add_argument("--debug", action="store_true", help="verbose logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.man_description = MAN_DESCRIPTION
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # Handlers first: a condor_reconfig while we start must not kill us.
    stop, wake, reconfig = threading.Event(), threading.Event(), threading.Event()
    stopped_by = []

    def _stop(signum, _frame):
        stopped_by.append(signal.Signals(signum).name)
        stop.set()
        wake.set()

    def _reconfig(_signum, _frame):  # condor_reconfig: never exit for it
        reconfig.set()
        wake.set()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, _stop)
    signal.signal(signal.SIGHUP, _reconfig)
    import htcondor2
    setup_logging(htcondor2.param, args.debug)
    try:
        from .provisioner import Provisioner
        prov = Provisioner()
    except (config_mod.ConfigError, ProviderNotFound) as err:
        log.error("Configuration error: %s", err)
        return 2
    except Exception:
        log.exception("Cannot start")
        return 2
    if not prov.cfg.entries:
        log.error("CLOUD_PLUGINS_PROVIDERS is empty: nothing to provision")
        return 2
    if not prov.lock():
        log.error("Another provisioner is running on %s: not starting", prov.state_file)
        return 3
    from . import metrics as metrics_mod
    try:
        if prov.metrics is not None:
            metrics_mod.serve(prov.metrics, htcondor2.param)
    except config_mod.ConfigError as err:
        log.error("Configuration error: %s", err)
        return 2
    except OSError as err:  # the port is taken: provision anyway, without metrics
        log.error("Metrics endpoint not started (%s): running without it", err)
    log.info("condor_cloud_provisioner %s: entries %s, cycle every %ds, state %s",
             prov.cfg.name, ", ".join(e.name for e in prov.cfg.entries),
             prov.cfg.cycle_interval, prov.state_file)
    if args.once:   # one cycle, for tests and debugging: claims are not checked
        ok = prov.cycle()
        prov.close()
        if not ok or prov.incomplete:
            log.error("The cycle was incomplete: %s", "; ".join(prov.incomplete)
                      or "it failed (see above)")
            return 1
        return 0
    from .oneactor import Claims
    prov.claims = Claims(prov.cfg.name, htcondor2.param.get("FULL_HOSTNAME") or "?",
                         prov.state_file)
    while not stop.is_set():
        if reconfig.is_set():
            reconfig.clear()
            log.info("Got signal SIGHUP: re-reading the configuration")
            htcondor2.reload_config()
            prov.reconfigure(htcondor2.param)
        started = time.monotonic()
        wake.clear()
        prov.cycle()
        if not (stop.is_set() or reconfig.is_set()):
            wake.wait(max(0.0, prov.cfg.cycle_interval - (time.monotonic() - started)))
    log.info("Got signal %s: exiting", stopped_by[0] if stopped_by else "?")
    if prov.claims.acting:
        prov.invalidate()
    prov.claims.withdraw(prov._collector())
    prov.close()
    log.info("Stopped after %d cycles (%d failed)", prov.cycles, prov.failed_cycles)
    return 0


