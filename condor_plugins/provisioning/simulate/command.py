"""``condor_cloud simulate HISTORY``: replay a job history through the
provisioner's own policy in a simulated world, with baselines, and print
what it would have cost and how long jobs would have waited.

Exit codes: 0 the simulation ran (a run that hit its horizon says so in the
table and the JSON); 2 bad input (a knob, a --set, a --model, the trace).
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from ... import config as config_mod
from ...config import ConfigError, ENTRY, KNOBS, PREFIX
from .controllers import FixedFleet, NaiveAutoscaler, PolicyController, run
from .match import classify
from .report import SCHEMA_VERSION, progress_bar, render_table, summarize, write_figure
from .trace import MODES, Trace, read_trace
from .world import CloudModel, Dist, World

__all__ = ["add_parser", "main", "simulate", "parse_site", "parse_models", "expand_sets"]


class UsageError(ValueError):
    """Bad input; the message says which."""


def add_parser(sub) -> None:
    p = sub.add_parser("simulate", help="replay a job history through the same policy: cost "
                                        "and wait, before spending money")
    p.add_argument("history", help="condor_history -json output, a schedd history file, or "
                                   "an SWF trace (.swf)")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=V1,V2,...",
                   help="try these values of a knob (repeat: every combination)")
    p.add_argument("--config", help="an HTCondor config file to read the knobs from "
                                    "(default: this host's configuration)")
    p.add_argument("--out", default="condor_cloud-simulate", help="directory for "
                   "simulate.json, simulate.png and simulate.svg")
    p.add_argument("--model", action="append", default=[], metavar="ENTRY:KEY=V,...",
                   help="an entry's simulated cloud (ENTRY * for all): boot=DIST, fail=P, "
                        "interrupt=PER_NODE_HOUR, retire=S, shutdown=S, notice=S, "
                        "price=PER_HOUR")
    p.add_argument("--site", help="the site's own nodes: NxCPUS/MEMORY_MB[+...] or a "
                                  "condor_status -json file (default: "
                                  "CLOUD_PLUGINS_SIMULATE_SITE_CAPACITY)")
    p.add_argument("--negotiator-interval", type=float, help="seconds (default: "
                   "NEGOTIATOR_INTERVAL, else 60)")
    p.add_argument("--cycle-offset", type=float, metavar="SECONDS",
                   help="the provisioner's first cycle after the first arrival (default: half "
                        "of CLOUD_PLUGINS_CYCLE_INTERVAL, the expected wait of a burst)")
    p.add_argument("--default-mode", choices=MODES, default="any",
                   help="mode of jobs without CloudMode (default any)")
    p.add_argument("--fixed", type=int, help="baseline fleet size (default: the policy's "
                                             "peak node count)")
    p.add_argument("--naive", metavar="K,T", help="baseline autoscaler: one node per K idle "
                   "jobs, terminated after T seconds idle (default: the entry's CPUS and "
                   "IDLE_TIMEOUT)")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--no-figure", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the JSON summary, not the table")
    p.add_argument("--progress", action="store_true", default=None,
                   help="a progress bar on stderr (default: when stderr is a terminal)")


# ------------------------------------------------------------------ inputs

def load_param(path: Optional[str]) -> Dict[str, str]:
    import htcondor2
    if path:
        os.environ["CONDOR_CONFIG"] = str(Path(path).resolve())
        htcondor2.reload_config()
    return {k: str(htcondor2.param[k]) for k in htcondor2.param}


def expand_sets(sets: List[str], entries: List[str]) -> List[Tuple[str, Dict[str, str]]]:
    """``KNOB=V1,V2`` options as (label, knob overlay) per combination.  A
    per-entry knob without an entry applies to every entry."""
    axes = []
    known = {k.name: k for k in KNOBS}
    for item in sets:
        name, eq, values = item.partition("=")
        name = name.strip().upper()
        short = name[len(PREFIX):] if name.startswith(PREFIX) else name
        if not eq or not values.strip():
            raise UsageError(f"--set {item!r}: expected KNOB=V1,V2,...")
        entry = next((e for e in entries if short.startswith(e.upper() + "_")), None)
        ok = (short in known or short == "NEGOTIATOR_INTERVAL"
              or (entry is not None and short[len(entry) + 1:] in known))
        if not ok:
            close = difflib.get_close_matches(short, list(known) + ["NEGOTIATOR_INTERVAL"], 1,
                                              0.7)
            raise UsageError(f"--set {name}: not a provisioner knob" +
                             (f"; did you mean {close[0]}?" if close else ""))
        keys = [short] if short == "NEGOTIATOR_INTERVAL" else [PREFIX + short]
        if short in known and known[short].scope == ENTRY:
            keys += [f"{PREFIX}{e.upper()}_{short}" for e in entries]
        axes.append([(f"{short}={v.strip()}", {k: v.strip() for k in keys})
                     for v in values.split(",") if v.strip()])
    out = []
    for combo in itertools.product(*axes) if axes else [()]:
        overlay: Dict[str, str] = {}
        for _, o in combo:
            overlay.update(o)
        out.append((" ".join(label for label, _ in combo) or "as configured", overlay))
    return out


def parse_site(spec: Optional[str]) -> List[Tuple[int, int]]:
    """``200x8/16000+10x64/256000``, or a condor_status -json snapshot."""
    if not spec:
        return []
    if Path(spec).is_file():
        nodes = []
        try:
            ads = json.loads(Path(spec).read_text())
        except ValueError as err:
            raise UsageError(f"site capacity {spec}: not condor_status -json output "
                             f"({err})") from None
        for ad in ads if isinstance(ads, list) else ():
            if ad.get("IsCloudNode") is True or ad.get("DynamicSlot") is True:
                continue
            part = ad.get("PartitionableSlot") is True
            cpus = ad.get("TotalSlotCpus" if part else "Cpus")
            mem = ad.get("TotalSlotMemory" if part else "Memory")
            if isinstance(cpus, int) and isinstance(mem, int) and cpus > 0:
                nodes.append((cpus, mem))
        return nodes
    nodes = []
    for part in spec.split("+"):
        try:
            count, _, shape = part.strip().lower().partition("x")
            cpus, _, mem = shape.partition("/")
            nodes += [(int(cpus), int(mem))] * int(count)
        except ValueError:
            raise UsageError(f"site capacity {spec!r}: expected NODESxCPUS/MEMORY_MB, e.g. "
                             "200x8/16000 (several joined by +), or a condor_status -json "
                             "file") from None
    return nodes


def parse_models(items: List[str], entries: List[str]) -> Dict[str, CloudModel]:
    models = {e: CloudModel() for e in entries}
    for item in items:
        who, sep, spec = item.partition(":")
        targets = entries if who == "*" else [who]
        if not sep or (who != "*" and who not in entries):
            raise UsageError(f"--model {item!r}: expected ENTRY:KEY=V,... with ENTRY one of "
                             f"{', '.join(entries) or '(no entry)'} or *")
        for pair in spec.split(","):
            key, _, value = pair.partition("=")
            key = key.strip()
            try:
                for t in targets:
                    m = models[t]
                    if key == "boot":
                        m.boot = Dist(value)
                    elif key in ("fail", "interrupt", "shutdown", "notice", "price", "retire"):
                        setattr(m, key, float(value))
                    else:
                        raise UsageError(f"--model {item!r}: unknown key {key!r} (boot, fail, "
                                         "interrupt, retire, shutdown, notice, price)")
            except ValueError as err:
                raise UsageError(f"--model {item!r}: {err}") from None
    return models


# ------------------------------------------------------------------ runs

def simulate(trace: Trace, param: Mapping[str, str], sets: List[str] = (),
             models: List[str] = (), site: Optional[str] = None,
             negotiator_interval: Optional[float] = None, default_mode: str = "any",
             baselines: bool = True, fixed: Optional[int] = None, naive: Optional[str] = None,
             seed: int = 1, progress=None, cycle_offset: Optional[float] = None,
             skip: bool = True) -> dict:
    """Every setting's policy run and baselines, as the JSON document (the
    series for the figure are kept under ``_series``).  ``skip`` False runs
    every provisioner cycle (no event-driven skipping)."""
    base = config_mod.load(param)
    names = [e.name for e in base.entries]
    if not names:
        raise UsageError("CLOUD_PLUGINS_PROVIDERS names no entry: nothing to simulate")
    site_nodes = parse_site(site or param.get(PREFIX + "SIMULATE_SITE_CAPACITY") or "")
    cloud_models = parse_models(list(models), names)
    out = {"schema_version": SCHEMA_VERSION, "trace": trace.source, "jobs": len(trace.jobs),
           "skipped_jobs": trace.skipped, "real": trace.real,
           "site_nodes": len(site_nodes), "site_cores": sum(c for c, _ in site_nodes),
           "models": {n: {"boot": m.boot.spec, "fail": m.fail, "interrupt": m.interrupt,
                          "retire": m.retire, "shutdown": m.shutdown, "notice": m.notice,
                          "price": m.price}
                      for n, m in cloud_models.items()},
           "settings": [], "_series": []}
    for label, overlay in expand_sets(list(sets), names):
        p = dict(param)
        p.update(overlay)
        try:
            cfg = config_mod.load(p)
        except ConfigError as err:
            raise UsageError(f"{label}: {err}") from None
        neg = negotiator_interval or float(p.get("NEGOTIATOR_INTERVAL") or 60)
        templates = _templates(trace, cfg, p)
        classes = classify(trace.jobs, cfg.entries, site_nodes, templates, default_mode)

        def world():
            return World(trace, cfg.entries, cloud_models, site_nodes, classes, seed, neg,
                         cfg.burst_delay)
        offset = cfg.cycle_interval / 2 if cycle_offset is None else cycle_offset
        began = time.monotonic()
        row = _one(world(), PolicyController(cfg), cfg, label, progress, offset, skip)
        rows = [row]
        row["wall_s"] = round(time.monotonic() - began, 2)
        series = {"label": label, "series": row.pop("_series"), "baselines": {}}
        if baselines:
            size = fixed if fixed is not None else max(1, row["peak_nodes"])
            per, idle = _naive(naive, cfg)
            for ctl in (FixedFleet(cfg, size), NaiveAutoscaler(cfg, per, idle)):
                b = _one(world(), ctl, cfg, label, progress, offset, skip)
                b["run"] = (f"fixed {size}" if ctl.name == "fixed" else
                            f"naive {per},{idle:g}s")
                series["baselines"][b["run"]] = b.pop("_series")
                rows.append(b)
        out["settings"].append({"label": label, "knobs": overlay, "cycle_offset_s": offset,
                                "runs": rows})
        out["_series"].append(series)
    return out


def _one(world: World, controller, cfg, label: str, progress, offset: float,
         skip: bool = True) -> dict:
    tell = None if progress is None else (lambda t: progress(t - world.t0,
                                                             f"{label}: {controller.name}"))
    result = run(world, controller, cfg.cycle_interval, progress=tell, offset=offset,
                 skip=skip)
    row = summarize(world, result, controller, label)
    row["_series"] = result["series"]
    return row


def _naive(spec: Optional[str], cfg) -> Tuple[int, float]:
    if not spec:
        return cfg.entries[0].cpus, float(cfg.entries[0].idle_timeout)
    try:
        k, t = spec.split(",")
        return int(k), float(t)
    except ValueError:
        raise UsageError(f"--naive {spec!r}: expected K,T (jobs per node, idle seconds)") from None


def _templates(trace: Trace, cfg, param) -> Dict[str, object]:
    if not any(j.ad is not None for j in trace.jobs):
        return {}
    from ..observe import template_ad
    return {e.name: template_ad(e, cfg, param) for e in cfg.entries}


def main(args) -> int:
    """The ``condor_cloud simulate`` subcommand."""
    try:
        param = load_param(args.config)
        for warning in config_mod.unknown_knobs(param):
            print(f"WARNING: {warning}", file=sys.stderr)
        trace = read_trace(Path(args.history), args.default_mode)
    except (OSError, ValueError, SyntaxError) as err:
        print(f"condor_cloud simulate: {err}", file=sys.stderr)
        return 2
    if not trace.jobs:
        print(f"condor_cloud simulate: no job with a run time in {args.history} "
              f"(left out: {trace.skipped or 'none'})", file=sys.stderr)
        return 2
    show = sys.stderr.isatty() if args.progress is None else args.progress
    days = (trace.jobs[-1].submit - trace.start) / 86400 + 1
    bar = progress_bar(days, sys.stderr) if show else None
    try:
        doc = simulate(trace, param, args.set, args.model, args.site, args.negotiator_interval,
                       args.default_mode, not args.no_baselines, args.fixed, args.naive,
                       args.seed, bar, args.cycle_offset)
    except (UsageError, ConfigError) as err:
        print(f"condor_cloud simulate: {err}", file=sys.stderr)
        return 2
    if bar:
        sys.stderr.write("\n")
    series = doc.pop("_series")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulate.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    files = [out / "simulate.json"]
    if not args.no_figure:
        try:
            files += write_figure(series, out / "simulate",
                                  f"{trace.source}: {len(trace.jobs)} jobs")
        except ImportError:
            print("condor_cloud simulate: no figure: matplotlib is not installed "
                  "(python3-matplotlib)", file=sys.stderr)
    rows = [r for s in doc["settings"] for r in s["runs"]]
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True))
    else:
        print(f"Simulated {len(trace.jobs)} jobs from {trace.source}"
              + (f" ({sum(trace.skipped.values())} left out: "
                 f"{', '.join(f'{n} {w}' for w, n in trace.skipped.items())})"
                 if trace.skipped else "")
              + f"; site: {doc['site_nodes']} nodes, {doc['site_cores']} cores")
        print(render_table(rows))
        print("Wrote " + ", ".join(str(f) for f in files))
    return 0
