#!/usr/bin/env python3
"""One provisioner cycle (observe + plan) against a real schedd full of idle jobs.

A personal pool gets 20,000 and then 100,000 idle cloud-mode jobs of several
shapes, and 1,000 simulated cloud instances: a provider listing of 1,000
instances and 1,000 startd ads (advertised to the real collector with
condor_advertise). The provisioner's real observe() (grouped schedd query,
collector query, provider listing) and the pure plan() are timed.
Goal: observe + plan <= 1 s at 100,000 jobs.

    make bench      # or: dev/sandbox run -- python3 bench/plan_cycle.py
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from condor_plugins.localpool import PersonalPool  # noqa: E402
from condor_plugins.providers.base import Instance, InstanceState, Provider  # noqa: E402

ENTRY = "sim"
SHAPES = [(1, 2000), (1, 4000), (2, 4000), (4, 8000), (8, 16000)]
NODES = 1000
PROVISIONER = "bench"


class SimulatedProvider(Provider):
    """1,000 running instances, in memory."""

    def __init__(self, entry, settings, count=NODES):
        super().__init__(entry, settings)
        now = time.time() - 3600
        self.instances = [Instance(f"sim-{i:04d}", entry, InstanceState.RUNNING, launch_time=now)
                          for i in range(count)]

    def create(self, spec, count, tags, user_data, request_token):
        return []

    def list(self, owner_tags):
        return list(self.instances)

    def terminate(self, ids):
        pass


def advertise_nodes(pool, count):
    ads = []
    for i in range(count):
        ads.append("\n".join([
            f'Name = "slot1@sim-{i:04d}@bench"', 'MyType = "Machine"', 'TargetType = "Job"',
            f'Machine = "sim-{i:04d}"', 'MyAddress = "<127.0.0.1:1>"', "IsCloudNode = True",
            f'CloudInstanceID = "sim-{i:04d}"', f'CloudProvisioner = "{PROVISIONER}"',
            f'CloudProviderEntry = "{ENTRY}"', 'State = "Claimed"' if i % 2 else 'State = "Unclaimed"',
            'Activity = "Busy"' if i % 2 else 'Activity = "Idle"', "Cpus = 8", "Memory = 16000",
            "Disk = 100000000", 'Arch = "X86_64"', 'OpSys = "LINUX"', "START = true",
            # as a real slot: the negotiator then makes the request attributes significant
            "Requirements = START && (TARGET.RequestCpus <= Cpus) && (TARGET.RequestMemory <= Memory)"
            " && (TARGET.RequestDisk <= Disk)",
            "PartitionableSlot = False", "UpdateSequenceNumber = 1", "DaemonStartTime = 1"]))
    f = pool.workdir / "sim-ads"
    f.write_text("\n\n".join(ads) + "\n")
    pool.run("condor_advertise", "-multiple", "UPDATE_STARTD_AD", str(f), timeout=120)


def submit(pool, total, base):
    per_shape = total // len(SHAPES)
    for cpus, mem in SHAPES:
        left = per_shape
        while left > 0:
            n = min(left, 20000)
            sub = base / f"s-{cpus}-{mem}.sub"
            sub.write_text(f"executable = /bin/true\nrequest_cpus = {cpus}\nrequest_memory = {mem}\n"
                           f'+CloudMode = "cloud"\nrequirements = TARGET.IsCloudNode =?= True\n'
                           f"queue {n}\n")
            pool.run("condor_submit", str(sub), timeout=600)
            left -= n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, nargs="+", default=[20000, 100000])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    from condor_plugins.provisioning.policy import plan
    from condor_plugins.provisioning.provisioner import Provisioner

    base = Path(tempfile.mkdtemp(prefix="cp-bench-", dir="/tmp"))
    pool = PersonalPool(base / "pool", name="bench", extra_config=(
        "MAX_JOBS_PER_SUBMISSION = 1000000\nMAX_JOBS_PER_OWNER = 1000000\n"
        "MAX_JOBS_SUBMITTED = 1000000\nNEGOTIATOR_INTERVAL = 10\n"
        "CLASSAD_LIFETIME = 3600\n"))
    pool.start()
    try:
        advertise_nodes(pool, NODES)
        param = {
            "COLLECTOR_HOST": pool.collector_address, "SPOOL": str(base),
            "CLOUD_PLUGINS_PROVIDERS": ENTRY, "CLOUD_PLUGINS_PROVISIONER_NAME": PROVISIONER,
            "CLOUD_PLUGINS_POOL_NAME": "bench", f"CLOUD_PLUGINS_{ENTRY.upper()}_TYPE": "local",
            f"CLOUD_PLUGINS_{ENTRY.upper()}_CPUS": "8", f"CLOUD_PLUGINS_{ENTRY.upper()}_MEMORY": "16000",
            f"CLOUD_PLUGINS_{ENTRY.upper()}_MAX_INSTANCES": "2000",
            "CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN": "cloud-worker.bench",
        }
        prov = Provisioner(param, providers={ENTRY: SimulatedProvider(ENTRY, {})},
                           state_file=base / "state.json")
        submitted = 0
        import htcondor2
        schedd = pool.schedd()

        def unclustered():
            rows = schedd.query("true", ["JobStatus", "AutoClusterId"], opts=htcondor2.QueryOpt.GroupBy)
            return sum(r.get("JobCount", 0) for r in rows if r.get("AutoClusterId") is None)

        def measure(label):
            obs_t, plan_t = [], []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                state = prov.observe()
                t1 = time.perf_counter()
                result = plan(state, prov.cfg, time.time())
                t2 = time.perf_counter()
                obs_t.append(t1 - t0)
                plan_t.append(t2 - t1)
            if not (state.demand_ok and state.nodes_ok):
                raise SystemExit(f"an observation failed: demand_ok={state.demand_ok} nodes_ok={state.nodes_ok}")
            demand = sum(g.count for g in state.demand.get(ENTRY, ()))
            o, p = statistics.median(obs_t), statistics.median(plan_t)
            print(f"{submitted:>7} idle jobs, {label:<34}, {len(state.nodes)} simulated nodes: "
                  f"observe {o * 1000:.0f} ms, plan {p * 1000:.1f} ms, cycle {(o + p) * 1000:.0f} ms "
                  f"(median of {args.reps}); demand seen {demand}, actions {len(result.actions)}",
                  flush=True)

        for total in sorted(args.jobs):
            submit(pool, total - submitted, base)
            submitted = total
            measure("just submitted (no autoclusters)")
            deadline = time.time() + 180
            while unclustered() and time.time() < deadline:
                time.sleep(2)
            measure("after negotiation (autoclustered)")
        print("goal: cycle <= 1000 ms at 100,000 jobs")
    finally:
        pool.stop()
        import shutil
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
