"""Job traces for ``condor_cloud simulate``: what each job asked for and how
long it ran, read from HTCondor's history or a Standard Workload Format file.

* ``condor_history -json`` output (a JSON array, or one ad per line), or a
  schedd's history file (``$(SPOOL)/history``: ads separated by ``***``
  lines), parsed with classad2.  Used per job: ``QDate`` (arrival),
  ``CompletionDate - JobCurrentStartDate`` (the run that completed; else
  ``RemoteWallClockTime``), ``RequestCpus``, ``RequestMemory``, ``CloudMode``
  and, for matching the entries' template ads, ``Requirements``.
* SWF (the Parallel Workloads Archive): submit time, run time, processors and
  memory per processor; ``UnixStartTime`` of the header gives the epoch.

A job that never ran (no run time) is left out and counted in ``skipped``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

__all__ = ["Job", "Trace", "read_trace", "read_history", "read_swf", "synthetic", "MODES"]

MODES = ("cloud", "any", "local")


class Job:
    """One job of a trace (static; a run keeps its own state per job)."""
    __slots__ = ("submit", "runtime", "cpus", "memory_mb", "mode", "requirements", "ad")

    def __init__(self, submit: float, runtime: float, cpus: int = 1, memory_mb: int = 0,
                 mode: str = "", requirements: str = "", ad=None):
        self.submit, self.runtime = float(submit), max(0.0, float(runtime))
        self.cpus, self.memory_mb = max(1, int(cpus)), max(0, int(memory_mb))
        self.mode, self.requirements, self.ad = mode, requirements, ad


@dataclass
class Trace:
    jobs: List[Job]                          # sorted by submit time
    source: str = ""
    skipped: Dict[str, int] = field(default_factory=dict)   # why -> jobs left out
    real: Dict[str, float] = field(default_factory=dict)    # what really happened, if known

    @property
    def start(self) -> float:
        return self.jobs[0].submit if self.jobs else 0.0


def _num(ad, key: str, default=None):
    value = ad.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return value


def _requirements(ad) -> str:
    req = ad.get("Requirements")
    if req is None:
        return ""
    req = str(req)
    if req.startswith("/Expr(") and req.endswith(")/"):  # condor_history -json
        req = req[6:-2]
    return req


def job_from_ad(ad, default_mode: str = "") -> Tuple[Optional[Job], str]:
    """A Job from one history ad (a dict from JSON, or a ClassAd), or None
    and why it is left out.  ``Job.ad`` is left for the caller to share."""
    qdate = _num(ad, "QDate")
    if qdate is None:
        return None, "no QDate"
    start, end = _num(ad, "JobCurrentStartDate"), _num(ad, "CompletionDate")
    if start and end and end >= start:
        runtime = end - start
    else:
        runtime = _num(ad, "RemoteWallClockTime", 0) or 0
        if not runtime:
            return None, "never ran"
    mode = ad.get("CloudMode")
    mode = mode.lower() if isinstance(mode, str) and mode.lower() in MODES else default_mode
    cpus, memory = _num(ad, "RequestCpus"), _num(ad, "RequestMemory")
    if cpus is None or memory is None:  # expressions (the default RequestMemory is one)
        full = _as_classad(ad)
        cpus = _evaluated(full, "RequestCpus", 1) if cpus is None else cpus
        memory = _evaluated(full, "RequestMemory", 0) if memory is None else memory
    return Job(qdate, runtime, cpus or 1, memory or 0, mode, _requirements(ad)), ""


def _evaluated(ad, attr: str, default: int) -> int:
    try:
        value = ad.eval(attr)
    except Exception:  # undefined, or not an expression the bindings evaluate
        return default
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else default


def _history_ads(text: str) -> Iterable:
    """Ads of ``condor_history -json`` (array or lines: dicts) or of a
    history file (ClassAds)."""
    import classad2
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from json.loads(stripped)
    elif stripped.startswith("{"):
        for line in stripped.splitlines():
            if line.strip():
                yield json.loads(line)
    else:  # the schedd's history file: old ClassAd syntax, "***" between ads
        block: List[str] = []
        for line in text.splitlines() + ["***"]:
            if line.startswith("***"):
                if any(s.strip() for s in block):
                    yield classad2.parseOne("\n".join(block), classad2.ParserType.Old)
                block = []
            else:
                block.append(line)


def _as_classad(ad):
    """A ClassAd of a JSON ad, its ``/Expr(...)/`` strings as expressions."""
    import classad2
    if not isinstance(ad, dict):
        return ad
    out = classad2.ClassAd()
    for key, value in ad.items():
        if isinstance(value, str) and value.startswith("/Expr(") and value.endswith(")/"):
            try:
                out[key] = classad2.ExprTree(value[6:-2])
                continue
            except Exception:  # not an expression the bindings parse: kept as text
                pass
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
    return out


def read_history(path: Path, default_mode: str = "any") -> Trace:
    """Jobs of a history; the jobs of one shape, mode and Requirements share
    one ad (the first), which is all the matching needs."""
    jobs, skipped, waits, shared = [], {}, [], {}
    for ad in _history_ads(Path(path).read_text()):
        job, why = job_from_ad(ad, default_mode)
        if job is None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        if job.requirements:
            key = (job.cpus, job.memory_mb, job.mode, job.requirements)
            if key not in shared:
                shared[key] = _as_classad(ad)
            job.ad = shared[key]
        jobs.append(job)
        first = _num(ad, "JobStartDate")
        if first:
            waits.append(first - job.submit)
    jobs.sort(key=lambda j: j.submit)
    real = {"median_wait": _median(waits)} if waits else {}
    return Trace(jobs, str(path), skipped, real)


def read_swf(path: Path, default_mode: str = "any") -> Trace:
    """Standard Workload Format: 18 fields a line, ``;`` comments (header)."""
    jobs, skipped, epoch = [], {}, 0.0
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith(";"):
            key, _, value = line[1:].partition(":")
            if key.strip() == "UnixStartTime":
                epoch = float(value.split()[0])
            continue
        fields = line.split()
        if len(fields) < 10:
            if fields:
                skipped["malformed line"] = skipped.get("malformed line", 0) + 1
            continue
        submit, runtime = float(fields[1]), float(fields[3])
        procs = int(float(fields[7])) if float(fields[7]) > 0 else int(float(fields[4]))
        mem_kb = float(fields[9]) if float(fields[9]) > 0 else float(fields[6])
        if runtime <= 0 or procs <= 0:
            skipped["never ran"] = skipped.get("never ran", 0) + 1
            continue
        memory = math.ceil(max(0.0, mem_kb) * procs / 1024)
        jobs.append(Job(epoch + submit, runtime, procs, memory, default_mode))
    jobs.sort(key=lambda j: j.submit)
    return Trace(jobs, str(path), skipped)


def read_trace(path: Path, default_mode: str = "any") -> Trace:
    """SWF (by its suffix, or a first line that is a ``;`` comment), else
    HTCondor history."""
    path = Path(path)
    with open(path, errors="replace") as f:
        head = f.read(256).lstrip()
    if path.suffix.lower() == ".swf" or head.startswith(";"):
        return read_swf(path, default_mode)
    return read_history(path, default_mode)


def _median(values: List[float]) -> float:
    values = sorted(values)
    n = len(values)
    return (values[(n - 1) // 2] + values[n // 2]) / 2


def synthetic(days: float, jobs_per_day: int, seed: int = 1, start: float = 1.7e9,
              mode: str = "any", median_runtime: float = 1200.0, bursts: int = 3,
              shapes=((1, 2000, 0.85), (4, 8000, 0.1), (8, 16000, 0.05))) -> Trace:
    """A bursty trace: a diurnal base load plus ``bursts`` campaigns a day,
    lognormal run times; for benchmarks and property tests."""
    rng = random.Random(seed)
    total = int(days * jobs_per_day)
    weights = [s[2] for s in shapes]
    jobs = []
    burst_starts = [rng.uniform(0, days * 86400) for _ in range(int(bursts * days))]
    for i in range(total):
        if burst_starts and rng.random() < 0.5:  # half of the jobs come in campaigns
            t = rng.choice(burst_starts) + rng.expovariate(1 / 1800.0)
        else:
            t = rng.uniform(0, days * 86400)
        cpus, mem, _ = rng.choices(shapes, weights)[0]
        runtime = min(48 * 3600.0, rng.lognormvariate(math.log(median_runtime), 0.8))
        jobs.append(Job(start + min(t, days * 86400), runtime, cpus, mem, mode))
    jobs.sort(key=lambda j: j.submit)
    return Trace(jobs, f"synthetic({days:g} days, {jobs_per_day}/day, seed {seed})")


def history_json(trace: Trace) -> list:
    """The trace as ``condor_history -json`` ads (run time as RemoteWallClockTime)."""
    return [{"ClusterId": k + 1, "ProcId": 0, "QDate": int(j.submit),
             "RemoteWallClockTime": round(j.runtime), "RequestCpus": j.cpus,
             "RequestMemory": j.memory_mb, "JobStatus": 4,
             **({"CloudMode": j.mode} if j.mode else {})} for k, j in enumerate(trace.jobs)]


def main(argv=None) -> int:
    """``python3 -m condor_plugins.provisioning.simulate.trace``: write a
    synthetic bursty trace as condor_history -json, to try simulate on."""
    import argparse
    import sys
    ap = argparse.ArgumentParser(description=main.__doc__.split(":")[1].strip())
    ap.add_argument("--days", type=float, default=3)
    ap.add_argument("--jobs-per-day", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mode", choices=MODES, default="any")
    args = ap.parse_args(argv)
    trace = synthetic(args.days, args.jobs_per_day, args.seed, mode=args.mode)
    json.dump(history_json(trace), sys.stdout, indent=0)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
