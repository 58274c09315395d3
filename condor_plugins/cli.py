"""condor_cloud: look at what the cloud provisioner owns.

    condor_cloud status [--json]
    condor_cloud userdata ENTRY [--instance-id ID] [--show-secrets]

Reads the provisioner's configuration (HTCondor knobs), its state file, every
provider entry's listing and the collector, and prints one row per instance:
provider entry, id, state, age, slots busy/idle, reason. Entries in backoff are
listed below the table. Nothing secret (tokens, credentials) is ever shown.

``userdata`` prints the cloud-init document a new instance of ENTRY would
boot with. Its token is a placeholder and secret files are redacted, unless
``--show-secrets`` is given: then a real worker token is minted (this needs
the pool signing key) and printed, so keep that output private.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def collect(param=None, now: float | None = None) -> dict:
    """The status as plain data (also the --json output)."""
    from .provisioning.provisioner import Provisioner
    now = time.time() if now is None else now
    prov = Provisioner(param)
    try:
        listings = prov.listings()  # first: nodes are matched to them
        nodes_ok, nodes = True, {}
        try:
            nodes, _ = prov.nodes()
        except Exception as err:  # shown, not fatal: the rest is still useful
            nodes_ok, nodes = False, {}
            collector_error = str(err).splitlines()[0] if str(err) else type(err).__name__
        rows = []
        seen = set()
        for iid, rec in sorted(prov.records.items(), key=lambda kv: (kv[1].entry, kv[1].created)):
            seen.add(iid)
            listing = listings.get(rec.entry)
            inst = listing.by_id().get(iid) if listing and listing.ok else None
            rows.append(_row(rec.entry, iid, str(rec.phase), now - rec.created, nodes.get(iid),
                             rec.reason or (inst.reason if inst else ""),
                             inst.state.name.lower() if inst else ("unknown" if not (listing and listing.ok) else "not listed")))
        for entry, listing in sorted(listings.items()):
            for inst in listing.instances:
                if inst.id in seen:
                    continue
                age = now - inst.launch_time if inst.launch_time else 0
                rows.append(_row(entry, inst.id, "unrecorded", age, nodes.get(inst.id),
                                 inst.reason or "listed by the provider, not yet adopted",
                                 inst.state.name.lower()))
        backoff = {entry: {"failures": b.failures, "until": b.until,
                           "remaining": max(0.0, b.until - now), "reason": b.reason}
                   for entry, b in sorted(prov.backoff.items()) if b.failures}
        status = {
            "provisioner": prov.cfg.name, "pool": prov.cfg.pool, "time": now,
            "entries": {e.name: {"type": e.type, "max_instances": e.max_instances,
                                 "listing_ok": listings[e.name].ok} for e in prov.cfg.entries},
            "collector_ok": nodes_ok, "instances": rows, "backoff": backoff,
        }
        if not nodes_ok:
            status["collector_error"] = collector_error
        return status
    finally:
        prov.close()


def _row(entry, iid, state, age, node, reason, provider_state) -> dict:
    return {"entry": entry, "id": iid, "state": state, "provider_state": provider_state,
            "age_s": round(age), "slots_busy": node.busy_slots if node else None,
            "cpus_idle": node.idle_cpus if node else None, "reason": reason}


def render(status: dict) -> str:
    head = ("ENTRY", "ID", "STATE", "PROVIDER", "AGE", "BUSY", "IDLE", "REASON")
    rows = [head]
    for r in status["instances"]:
        rows.append((r["entry"], r["id"], r["state"], r["provider_state"], _age(r["age_s"]),
                     "-" if r["slots_busy"] is None else str(r["slots_busy"]),
                     "-" if r["cpus_idle"] is None else str(r["cpus_idle"]), r["reason"]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head) - 1)]
    lines = [f"Provisioner {status['provisioner']} (pool {status['pool']}): "
             f"{len(status['instances'])} instance(s)"]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    for entry, b in status["backoff"].items():
        lines.append(f"Backoff {entry}: {b['failures']} failure(s), no new instance for "
                     f"{_age(b['remaining'])}: {b['reason']}")
    for entry, e in status["entries"].items():
        if not e["listing_ok"]:
            lines.append(f"WARNING: the listing of provider entry {entry} failed (state unknown)")
    if not status["collector_ok"]:
        lines.append(f"WARNING: the collector query failed: {status.get('collector_error', '')}")
    return "\n".join(lines)


PLACEHOLDER_TOKEN = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJwbGFjZWhvbGRlciJ9.cmVkYWN0ZWQ"


def user_data(entry_name: str, instance_id: str, show_secrets: bool, param=None) -> str:
    """The document of a new instance of ``entry_name`` (redacted unless asked)."""
    from .config import ConfigError
    from .node.contextualize import redact
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="condor_cloud", description="Inspect the cloud provisioner.")
    sub = ap.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="instances owned by this provisioner")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    ud = sub.add_parser("userdata", help="the cloud-init document of a new instance")
    ud.add_argument("entry", help="provider entry (a name in CLOUD_PLUGINS_PROVIDERS)")
    ud.add_argument("--instance-id", help="instance id to render (default: ENTRY-example)")
    ud.add_argument("--show-secrets", action="store_true",
                    help="mint and print a real worker token (needs the signing key)")
    args = ap.parse_args(argv)
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
        status = collect()
    except (ConfigError, ProviderNotFound, RuntimeError) as err:  # RuntimeError: no token
        print(f"condor_cloud: {err}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(status, sys.stdout, indent=1, sort_keys=True)
        print()
    else:
        print(render(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
