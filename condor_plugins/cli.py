"""condor_cloud: look at what the cloud provisioner owns.

    condor_cloud status [--json] [--entry E] [--constraint EXPR] [--watch [S]]
    condor_cloud plan [--json]
    condor_cloud retire ID... | terminate ID... [--force] | disable E | enable E
    condor_cloud userdata ENTRY [--instance-id ID] [--show-secrets]
    condor_cloud config                 (a pip install: the config that enables it)
    condor_cloud try [--dir D] [--nodes N] [--cpus C] | try --stop [--dir D]
    condor_cloud simulate HISTORY [--set KNOB=V1,V2] [--model E:K=V] [--site S] [--out DIR]
    condor_cloud report [--since 7d] [--by group|user|entry] [--json] [--figure F]

``status`` reads the provisioner's configuration (HTCondor knobs), its state
file, every provider entry's listing, the collector and the provisioner's own
ad, and prints one row per instance (entry, id, state, age, busy slots, idle
cores, reason), then whether the daemon runs and when it last cycled, the
entries in backoff or disabled, the last cycle's holds and the idle jobs no
entry can run.  It never writes anything.  Nothing secret is ever shown.

The levers are commands to the running provisioner (provisioning/commands.py),
taken at its next cycle and audited in its log.

``userdata`` prints the cloud-init document a new instance of ENTRY would
boot with. Its token is a placeholder and secret files are redacted, unless
``--show-secrets`` is given: then a real worker token is minted (this needs
the pool signing key) and printed, so keep that output private.

``simulate`` replays a job history (condor_history -json, a history file or
an SWF trace) through the provisioner's own policy in a simulated world and
prints cost, idle node-hours and job waits per setting, with two baselines;
see docs/simulate.md.

``report`` splits what the cloud instances cost among the accounting groups
(users, entries) whose jobs ran on them, by claimed core-seconds, with unused
instance time on its own line (idle); read from the schedds' history.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


#: Version of the ``status --json`` document (2: ISO 8601 times, daemon,
#: holds, unmatched jobs, disabled entries).
SCHEMA_VERSION = 2


def _iso(t) -> str | None:
    import datetime
    if not isinstance(t, (int, float)) or t <= 0:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")


def _daemon(prov, now: float) -> dict:
    """The running provisioner as its own collector ad shows it."""
    import classad2
    import htcondor2
    from .provisioning.oneactor import CLAIM_TYPE
    from .provisioning.provisioner import AD_TYPE
    claims = [{"machine": c.get("Machine"), "pid": c.get("CloudClaimPid"),
               "since": _iso(c.get("CloudClaimSince")), "acting": c.get("CloudClaimActing") is True,
               "why": str(c.get("CloudClaimWhy") or "")}
              for c in prov._collector().query(
                  htcondor2.AdType.Any, f"MyType == {classad2.quote(CLAIM_TYPE)} && "
                  f"CloudProvisionerName == {classad2.quote(prov.cfg.name)}",
                  ["Machine", "CloudClaimPid", "CloudClaimSince", "CloudClaimActing",
                   "CloudClaimWhy"])]
    ads = prov._collector().query(
        htcondor2.AdType.Any, f"MyType == {classad2.quote(AD_TYPE)} && "
        f"Name == {classad2.quote(prov.cfg.name)}",
        ["LastCycleTime", "DaemonStartTime", "CycleInterval", "CloudHolds",
         "CloudUnmatchedJobs", "CloudLeftOutJobs", "Machine", "CloudRevocationPending"])
    if not ads:
        return {"alive": False, "why": "no provisioner ad in the collector (not running, "
                "standing by, or not for 3 cycles)", "holds": [], "unmatched_jobs": [],
                "left_out_jobs": [], "claims": claims}
    ad = ads[0]
    last = ad.get("LastCycleTime") or 0
    interval = ad.get("CycleInterval") or prov.cfg.cycle_interval
    alive = bool(last) and now - last <= 3 * interval + 10
    return {"alive": alive, "machine": ad.get("Machine"), "last_cycle": _iso(last),
            "seconds_since_cycle": round(now - last) if last else None,
            "started": _iso(ad.get("DaemonStartTime")), "cycle_interval": interval,
            "why": "" if alive else "its last cycle is older than 3 cycle intervals",
            "holds": [str(h) for h in (ad.get("CloudHolds") or [])],
            "unmatched_jobs": [str(u) for u in (ad.get("CloudUnmatchedJobs") or [])],
            "left_out_jobs": [str(u) for u in (ad.get("CloudLeftOutJobs") or [])],
            "revocation_pending": ad.get("CloudRevocationPending") is True,
            "claims": claims}


def collect(param=None, now: float | None = None) -> dict:
    """The status as plain data (also the --json output).  Reads only."""
    from .providers.base import InstanceState
    from .provisioning.provisioner import Provisioner, load_disabled
    from .provisioning.scaleup import spend_per_hour
    now = time.time() if now is None else now
    prov = Provisioner(param)
    prov.housekeeping = False  # status only looks: it never changes anything
    errors = []
    try:
        listings = prov.listings()  # first: nodes are matched to them
        prov.resize()  # the entries' sizes, from their instance types (reads only)
        errors += [f"the listing of provider entry {e} failed"
                   for e, listing in sorted(listings.items()) if not listing.ok]
        nodes_ok, nodes = True, {}
        try:
            nodes, _ = prov.nodes()
        except Exception as err:  # shown, not fatal: the rest is still useful
            nodes_ok, nodes = False, {}
            errors.append("the collector query failed: " + (str(err).splitlines()[0]
                                                             if str(err) else type(err).__name__))
        try:
            daemon = _daemon(prov, now)
        except Exception as err:
            daemon = {"alive": None, "why": f"unknown: {str(err).splitlines()[0] if str(err) else err!r}",
                      "holds": [], "unmatched_jobs": [], "left_out_jobs": []}
        rows = []
        seen = set()
        for iid, rec in sorted(prov.records.items(), key=lambda kv: (kv[1].entry, kv[1].created)):
            seen.add(iid)
            listing = listings.get(rec.entry)
            inst = listing.by_id().get(iid) if listing and listing.ok else None
            if rec.entry not in listings:
                provider_state = "unconfigured"
            elif not listing.ok:
                provider_state = "unknown"
            else:
                provider_state = inst.state.name.lower() if inst else "not listed"
            node = nodes.get(iid) if _may_run(inst) else None
            state, reason = live_view(str(rec.phase), rec.reason or (inst.reason if inst
                                                                     else ""), node)
            rows.append(_row(rec.entry, iid, state, now - rec.created, node, reason,
                             provider_state))
        for entry, listing in sorted(listings.items()):
            for inst in listing.instances:
                # Terminated ones the provisioner forgot cost nothing: not shown
                # (some clouds list them for an hour; their ads are stale).
                if inst.id in seen or inst.state is InstanceState.TERMINATED:
                    continue
                age = now - inst.launch_time if inst.launch_time else 0
                rows.append(_row(entry, inst.id, "unrecorded", age,
                                 nodes.get(inst.id) if _may_run(inst) else None,
                                 inst.reason or "listed by the provider, not yet adopted",
                                 inst.state.name.lower()))
        backoff = {entry: {"failures": b.failures, "until": _iso(b.until),
                           "remaining_s": round(max(0.0, b.until - now)), "reason": b.reason}
                   for entry, b in sorted(prov.backoff.items()) if b.failures}
        disabled = sorted(load_disabled(prov.state_file))
        spend = spend_per_hour(prov.records.values(), prov.cfg)
        status = {
            "schema_version": SCHEMA_VERSION,
            "provisioner": prov.cfg.name, "pool": prov.cfg.pool, "time": _iso(now),
            "entries": {e.name: {"type": e.type, "max_instances": e.max_instances,
                                 "listing_ok": listings[e.name].ok,
                                 "enabled": e.enabled and e.name not in disabled,
                                 "priority": e.priority, "cost_per_hour": e.cost_per_hour,
                                 "spend_per_hour": spend[e.name], "cpus": e.cpus,
                                 "memory_mb": e.memory_mb - e.memory_reserve,
                                 "disk_mb": e.disk_mb,
                                 "size_unknown": prov.sizes.unsized.get(e.name)}
                        for e in prov.cfg.entries},
            "spend_per_hour": round(sum(spend.values()), 6),
            "budget_per_hour": prov.cfg.budget_per_hour,
            "collector_ok": nodes_ok, "instances": rows, "backoff": backoff,
            "daemon": {k: v for k, v in daemon.items()
                       if k not in ("holds", "unmatched_jobs", "left_out_jobs")},
            "holds": daemon["holds"], "unmatched_jobs": daemon["unmatched_jobs"],
            "left_out_jobs": daemon["left_out_jobs"],
            "disabled_entries": disabled, "errors": errors,
            # Worker tokens of ended instances the collector refuses (revocation.py).
            "revoked_worker_tokens": prov.revocations.count,
        }
        return status
    finally:
        prov.close()


def _may_run(inst) -> bool:
    """Only a pending or running instance's collector ads are its own live
    counts (a stopped or terminated VM's ads are stale until they expire)."""
    from .providers.base import InstanceState
    return inst is not None and inst.state in (InstanceState.PENDING, InstanceState.RUNNING)


def live_view(state: str, reason: str, node) -> tuple:
    """STATE and REASON of a joined node as the collector shows it now, so
    they agree with BUSY (the record is as of the provisioner's last cycle)."""
    if node is None or state not in ("idle", "busy"):
        return state, reason
    if node.busy_slots:
        return "busy", f"running {node.busy_slots} job(s)"
    if state == "busy":
        return "idle", "no job now (it ran one at the last cycle)"
    return state, reason


def _row(entry, iid, state, age, node, reason, provider_state) -> dict:
    return {"entry": entry, "id": iid, "state": state, "provider_state": provider_state,
            "age_s": round(age), "slots_busy": node.busy_slots if node else None,
            "cpus_idle": node.idle_cpus if node else None, "reason": reason}


def select(status: dict, entries=(), constraint: str | None = None) -> dict:
    """Only the rows of ``entries`` (if any) for which the ClassAd expression
    ``constraint`` is true; the row's attributes are Entry, Id, State,
    ProviderState, AgeSeconds, SlotsBusy, CpusIdle and Reason."""
    import classad2
    rows = [r for r in status["instances"] if not entries or r["entry"] in entries]
    if constraint:
        expr = classad2.ExprTree(constraint)
        keep = []
        for r in rows:
            ad = classad2.ClassAd({"Entry": r["entry"], "Id": r["id"], "State": r["state"],
                                   "ProviderState": r["provider_state"], "AgeSeconds": r["age_s"],
                                   "Reason": r["reason"]})
            for attr, key in (("SlotsBusy", "slots_busy"), ("CpusIdle", "cpus_idle")):
                if r[key] is not None:
                    ad[attr] = r[key]
            if expr.eval(ad) is True:
                keep.append(r)
        rows = keep
    return dict(status, instances=rows)


def render(status: dict) -> str:
    head = ("ENTRY", "ID", "STATE", "PROVIDER", "AGE", "BUSY", "IDLECPUS", "REASON")
    rows = [head]
    for r in status["instances"]:
        rows.append((r["entry"], r["id"], r["state"], r["provider_state"], _age(r["age_s"]),
                     "-" if r["slots_busy"] is None else str(r["slots_busy"]),
                     "-" if r["cpus_idle"] is None else str(r["cpus_idle"]), r["reason"]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head) - 1)]
    d = status["daemon"]
    if d.get("alive"):
        alive = f"running on {d.get('machine')}, last cycle {d['seconds_since_cycle']}s ago"
    elif d.get("alive") is None:
        alive = f"daemon state {d.get('why')}"
    else:
        alive = f"NOT RUNNING: {d.get('why')}"
    lines = [f"Provisioner {status['provisioner']} (pool {status['pool']}): "
             f"{len(status['instances'])} instance(s); {alive}"]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    for c in d.get("claims") or []:   # other provisioners of this name (oneactor.py)
        if not c["acting"]:
            lines.append(f"Not acting: {c['machine']} (pid {c['pid']}): {c['why']}")
    if status.get("spend_per_hour") or status.get("budget_per_hour") is not None:
        budget = status.get("budget_per_hour")
        lines.append(f"Spend {status['spend_per_hour']:g}/h" + (
            f" of a budget of {budget:g}/h" if budget is not None else "") + " (" + ", ".join(
            f"{e} {v['spend_per_hour']:g}/h" for e, v in status["entries"].items()) + ")")
    for entry, b in status["backoff"].items():
        if b["remaining_s"] > 0:
            lines.append(f"Backoff {entry}: {b['failures']} failure(s), no new instance for "
                         f"{_age(b['remaining_s'])}: {b['reason']}")
        else:
            lines.append(f"Probing {entry}: after {b['failures']} failure(s), one instance at a "
                         f"time until one joins: {b['reason']}")
    for entry in status["disabled_entries"]:
        lines.append(f"Disabled {entry}: no new instance (condor_cloud enable {entry})")
    if d.get("revocation_pending"):
        lines.append("Revocation pending: the collector has not yet applied the revoked "
                     "worker tokens (see the provisioner's log)")
    for hold in status["holds"]:
        lines.append(f"Hold {hold}")
    for jobs in status["unmatched_jobs"]:
        lines.append(f"Unmatched {jobs}")
    for jobs in status.get("left_out_jobs", ()):
        lines.append(f"Left out {jobs}")
    for err in status["errors"]:
        lines.append(f"WARNING: {err} (state unknown)")
    return "\n".join(lines)


PLACEHOLDER_TOKEN = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJwbGFjZWhvbGRlciJ9.cmVkYWN0ZWQ"


def user_data(entry_name: str, instance_id: str, show_secrets: bool, param=None) -> str:
    """The document of a new instance of ``entry_name`` (redacted unless asked)."""
    from .config import ConfigError
    from .node.cloudconfig import redact
    from .provisioning.provisioner import Provisioner
    prov = Provisioner(param)
    try:
        entry = prov.cfg.entry(entry_name)
        if entry is None:
            names = ", ".join(e.name for e in prov.cfg.entries) or "none"
            raise ConfigError(f"no provider entry {entry_name!r} in CLOUD_PLUGINS_PROVIDERS "
                              f"(configured: {names})")
        if show_secrets:
            return prov.user_data(entry, instance_id)
        return redact(prov.user_data(entry, instance_id, token=PLACEHOLDER_TOKEN))
    finally:
        prov.close()


EPILOG = """\
status columns: STATE is the provisioner's phase of the instance (requested,
booting, idle, busy, draining, terminating, failed, gone), or "unrecorded": the
provider lists an instance with this provisioner's tags that its state file
does not know yet (it is adopted at the next cycle). PROVIDER is what the
cloud says (pending, running, stopping, stopped, terminated, error), "not
listed" (recorded, but the listing does not show it), "unknown" (the listing
failed) or "unconfigured" (its entry is no longer in CLOUD_PLUGINS_PROVIDERS).
BUSY is claimed slots and IDLECPUS unclaimed cores, as the collector shows them
now; STATE and REASON agree with them (else they are as of the last cycle).
Terminated instances the provisioner no longer records are not shown.

plan: the next cycle of the provisioner as a dry run against the live queue,
collector and clouds, from the state the provisioner saved: the instances it
would create on which entry and why, at what spend per hour, what it would
drain or terminate, its holds, and the idle jobs it would leave out. It takes
no command, writes no file and makes no cloud call that changes anything.

exit status: 0 success; 1 (status, plan) a query failed, so part of the output is
unknown (WARNING lines say which), or (retire, terminate, disable, enable)
the provisioner did not take the command within --wait seconds (it is
withdrawn), or (config, try) it cannot be done here (the message says why);
2 configuration or usage error, or an unknown entry or instance.
"""


def _setup(args) -> int:
    """``config`` and ``try``: 0 done, 1 not possible here (the message says why)."""
    from . import trypool
    from .installed import pip_config
    from .localpool import InstanceError
    try:
        if args.command == "config":
            sys.stdout.write(pip_config())
        else:
            directory = args.dir or trypool.default_dir()
            sys.stdout.write(trypool.stop(directory) if args.stop else
                             trypool.start(directory, max(1, args.nodes), max(1, args.cpus)))
    except (RuntimeError, InstanceError, OSError) as err:
        print(f"condor_cloud {args.command}: {err}", file=sys.stderr)
        return 1
    return 0


def _lever(args, param=None) -> int:
    """Send retire/terminate/disable/enable to the running provisioner."""
    from .provisioning import commands
    from .provisioning.provisioner import Provisioner
    prov = Provisioner(param)
    try:
        targets = args.targets
        if commands.COMMANDS[args.command] == "entry":
            unknown = [t for t in targets if prov.cfg.entry(t) is None]
            where = "CLOUD_PLUGINS_PROVIDERS"
        else:
            unknown = [t for t in targets if t not in prov.records]
            where = "the provisioner's records (condor_cloud status)"
        if unknown:
            print(f"condor_cloud: {', '.join(unknown)}: not in {where}", file=sys.stderr)
            return 2
        wait = args.wait if args.wait is not None else 3 * prov.cfg.cycle_interval + 5
        directory = prov.command_dir
    finally:
        prov.close()
    path = commands.send(directory, args.command, targets, getattr(args, "force", False))
    deadline = time.monotonic() + wait
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if path.exists():
        try:
            path.unlink()
        except FileNotFoundError:
            pass  # taken just now
        else:
            print(f"condor_cloud: the provisioner did not take the command within {wait:.0f}s "
                  "(is it running?); withdrawn", file=sys.stderr)
            return 1
    print(f"{args.command} {' '.join(targets)}: taken by the provisioner (see its log)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """condor_cloud's arguments (also its man page: condor_plugins.manpages)."""
    from . import __version__
    ap = argparse.ArgumentParser(prog="condor_cloud", description="Inspect and steer the cloud "
                                 "provisioner.", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="instances owned by this provisioner, and why no VM")
    st.add_argument("--json", action="store_true", help="machine-readable output "
                    f"(schema_version {SCHEMA_VERSION}, ISO 8601 times)")
    st.add_argument("--entry", action="append", default=[], metavar="ENTRY",
                    help="only instances of ENTRY (repeatable)")
    st.add_argument("--constraint", metavar="EXPR", help="only instances for which the ClassAd "
                    "expression is true (attributes Entry, Id, State, ProviderState, "
                    "AgeSeconds, SlotsBusy, CpusIdle, Reason)")
    st.add_argument("--watch", nargs="?", type=float, const=5.0, metavar="SECONDS",
                    help="print again every SECONDS (default 5) until interrupted")
    pl = sub.add_parser("plan", help="what the next cycle would do and why (a dry run: "
                        "changes nothing)")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    for name, what, text in (("retire", "ID", "drain instances gracefully, then terminate them"),
                             ("terminate", "ID", "terminate idle instances now"),
                             ("disable", "ENTRY", "no new instance for ENTRY (kept ones stay)"),
                             ("enable", "ENTRY", "allow new instances for ENTRY again")):
        lever = sub.add_parser(name, help=text + " (a command to the running provisioner)")
        lever.add_argument("targets", nargs="+", metavar=what,
                           help="an instance id (condor_cloud status)" if what == "ID" else
                           "a provider entry (a name in CLOUD_PLUGINS_PROVIDERS)")
        lever.add_argument("--wait", type=float, metavar="SECONDS",
                           help="how long to wait for the provisioner (default 3 cycles)")
        if name == "terminate":
            lever.add_argument("--force", action="store_true",
                               help="even if it runs jobs (they are requeued), or the "
                                    "collector cannot be read")
    ud = sub.add_parser("userdata", help="the cloud-init document of a new instance")
    ud.add_argument("entry", help="provider entry (a name in CLOUD_PLUGINS_PROVIDERS)")
    ud.add_argument("--instance-id", help="instance id to render (default: ENTRY-example)")
    ud.add_argument("--show-secrets", action="store_true",
                    help="mint and print a real worker token (needs the signing key)")
    sub.add_parser("config", help="print the HTCondor config file that enables this "
                   "installation without the RPM (pip, a virtual environment)")
    tr = sub.add_parser("try", help="start (or --stop) a personal pool with condor_plugins "
                        "enabled and local-provider nodes, to try things on")
    tr.add_argument("--dir", type=Path, metavar="DIR",
                    help="where it runs (default /tmp/condor-cloud-try-UID)")
    tr.add_argument("--nodes", type=int, default=2, help="at most this many nodes (default 2)")
    tr.add_argument("--cpus", type=int, default=1, help="cores per node (default 1)")
    tr.add_argument("--stop", action="store_true", help="stop the pool and its nodes")
    from .provisioning.simulate.command import add_parser as add_simulate
    from .provisioning.costreport import add_parser as add_report
    add_simulate(sub)
    add_report(sub)
    ap.man_description = __doc__.split("\n", 1)[1]
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .config import ConfigError
    from .providers import ProviderNotFound
    try:
        if args.command == "userdata":
            if args.show_secrets:
                print("condor_cloud: the output holds a live worker token; keep it private",
                      file=sys.stderr)
            sys.stdout.write(user_data(args.entry, args.instance_id or
                                       f"{args.entry.lower()}-example", args.show_secrets))
            return 0
        if args.command in ("config", "try"):
            return _setup(args)
        if args.command == "report":
            from .provisioning.costreport import main as report_main
            return report_main(args)
        if args.command == "simulate":
            from .provisioning.simulate.command import main as simulate_main
            return simulate_main(args)
        if args.command == "plan":
            from .provisioning.dryrun import collect_plan, render_plan
            result = collect_plan()
            if args.json:
                json.dump(result, sys.stdout, indent=1, sort_keys=True)
                print()
            else:
                print(render_plan(result))
            return 1 if result["errors"] else 0
        if args.command != "status":
            return _lever(args)
        while True:
            status = select(collect(), args.entry, args.constraint)
            if args.json:
                json.dump(status, sys.stdout, indent=1, sort_keys=True)
                print()
            else:
                print(render(status))
            if not args.watch:
                return 1 if status["errors"] else 0
            sys.stdout.flush()
            time.sleep(args.watch)
            print()
    except (ConfigError, ProviderNotFound, RuntimeError, ValueError) as err:
        # RuntimeError: no token; ValueError: a bad --constraint
        print(f"condor_cloud: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
