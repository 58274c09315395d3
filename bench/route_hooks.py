#!/usr/bin/env python3
"""Routing to a separate cloud pool: the Python hook route against the native route.

1. Translate-hook latency: the hook launcher the RPM installs (python3 -s) run
   as the job router runs it (stdin in, stdout out), median of REPS runs, for
   a cloud-mode job (clause already in) and an any-mode job (merged).
2. Jobs routed per minute: N cloud-mode jobs submitted at once to a site
   schedd whose condor_job_router routes them over Condor-C to a second pool;
   the time until every source job has its routed copy, hook route then
   native route, in one run (ratios only: these machines are noisy).

    make bench            # or: dev/sandbox run -- python3 bench/route_hooks.py [--jobs N]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "packaging" / "rpm"))
from condor_plugins.localpool import PersonalPool, shipped_config_dir  # noqa: E402

ROUTE = '[ Name = "CloudPoolHook"; TargetUniverse = 9; GridResource = "condor s@h 127.0.0.1:9" ]'
JOB = """ClusterId = 12
ProcId = 3
Owner = "alice"
JobUniverse = 5
Cmd = "/bin/hostname"
RequestCpus = 1
RequestMemory = 2048
Requirements = {req}
CloudMode = "{mode}"
{extra}"""
SITE = """
CLOUD_PLUGINS_SUBMIT_TRANSFORM = True
CLOUD_PLUGINS_ROUTE_TO_CLOUD_POOL = True
CLOUD_PLUGINS_CLOUD_POOL_COLLECTOR = {collector}
CLOUD_PLUGINS_CLOUD_POOL_SCHEDD = {schedd}
CLOUD_PLUGINS_ROUTE_WITH = {mode}
CLOUD_PLUGINS_HOOK_DIR = {hooks}
CLOUD_PLUGINS_ROUTE_MAX_JOBS = 10000
CLOUD_PLUGINS_ROUTE_MAX_IDLE_JOBS = 10000
JOB_ROUTER_POLLING_PERIOD = 2
MAX_JOBS_SUBMITTED = 100000
"""


def hook_latency(hooks: Path, reps: int) -> dict:
    out = {}
    cases = {
        "cloud": JOB.format(req='(TARGET.IsCloudNode =?= True) && (TARGET.Memory >= 2048)',
                            mode="cloud", extra='CloudModeApplied = "cloud"\n'),
        "any": JOB.format(req='(TARGET.Memory >= 2048) && (TARGET.Arch == "X86_64")',
                          mode="any", extra=""),
    }
    for name, job in cases.items():
        times = []
        stdin = ROUTE + "\n------\n" + job
        for _ in range(reps):
            t0 = time.perf_counter()
            res = subprocess.run([str(hooks / "condor_cloud_route_translate")], input=stdin,
                                 capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if res.returncode:
                raise SystemExit(f"translate hook failed: {res.stderr.strip()}")
        out[name] = statistics.median(times) * 1000
    t0 = time.perf_counter()
    for _ in range(reps):
        subprocess.run([sys.executable, "-s", "-c", "pass"])
    out["python_startup"] = (time.perf_counter() - t0) / reps * 1000
    return out


def routing_rate(base: Path, hooks: Path, mode: str, jobs: int) -> float:
    cloud = PersonalPool(base / f"cloud-{mode}", name=f"cloud{mode}")
    cloud.start()
    site = None
    try:
        import htcondor2
        schedd = cloud.collector().locate(htcondor2.DaemonType.Schedd)["Name"]
        d = shipped_config_dir()
        site = PersonalPool(base / f"site-{mode}", name=f"site{mode}", include=[
            d / "10-cloud-plugins-defaults.conf", d / "20-cloud-submit.conf",
            d / "40-cloud-route.conf"], extra_config=SITE.format(
                collector=cloud.collector_address, schedd=schedd, mode=mode, hooks=hooks))
        site.start()
        time.sleep(5)  # the job router's first poll
        sub = htcondor2.Submit({"executable": "/bin/true", "request_memory": "64",
                                "should_transfer_files": "YES", "MY.CloudMode": '"cloud"'})
        t0 = time.monotonic()
        cluster = site.schedd().submit(sub, count=jobs).cluster()
        while True:
            routed = site.schedd().query(
                f"ClusterId == {cluster} && RoutedToJobId =!= undefined", ["ProcId"])
            if len(routed) >= jobs:
                return jobs / (time.monotonic() - t0) * 60
            if time.monotonic() - t0 > 600:
                raise SystemExit(f"{mode}: only {len(routed)} of {jobs} routed in 600 s")
            time.sleep(0.5)
    finally:
        if site is not None:
            site.stop()
        cloud.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import pyinstall
    base = Path(tempfile.mkdtemp(prefix="cp-rb-", dir="/tmp"))
    hooks = base / "hooks"
    for hook in ("translate", "update", "finalize", "cleanup"):
        pyinstall.write_launcher(f"condor_cloud_route_{hook}", hooks / f"condor_cloud_route_{hook}")
    latency = hook_latency(hooks, args.reps)
    rates = {mode: routing_rate(base, hooks, mode, args.jobs) for mode in ("hook", "native")}
    result = {"translate_ms_median": latency, "jobs_routed_per_minute": rates,
              "hook_vs_native_rate": rates["hook"] / rates["native"], "jobs": args.jobs}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"translate hook, median of {args.reps}: cloud-mode job {latency['cloud']:.1f} ms, "
              f"any-mode job (merge) {latency['any']:.1f} ms "
              f"(python3 -s start-up alone {latency['python_startup']:.1f} ms)")
        print(f"{args.jobs} jobs routed per minute: hook {rates['hook']:.0f}, "
              f"native {rates['native']:.0f} (hook/native {result['hook_vs_native_rate']:.2f})")


if __name__ == "__main__":
    main()
