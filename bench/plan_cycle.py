#!/usr/bin/env python3
"""One provisioner cycle (observe + plan) against a real schedd full of idle jobs.

A personal pool gets 20,000 and then 100,000 idle cloud-mode jobs in 50
shapes, and 1,000 simulated cloud instances spread over 10 entries (each
with its own node size, priority and cost): provider listings of 1,000
instances and 1,000 startd ads (advertised to the real collector with
condor_advertise). Timed separately (median of --reps): the provisioner's
real observe() (grouped schedd query, collector query, listings, joined
nodes' slot ads), the cross-entry allocation (scaleup.scale_up: offers and
allocation.allocate) and the whole pure plan() (which includes it).
Goal (issue 15): observe + plan <= 1 s at 100,000 jobs, allocation <= 50 ms.

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

ENTRIES = [f"sim{i}" for i in range(10)]
#: 50 shapes: 5 core counts x 10 memory sizes.
SHAPES = [(c, m) for c in (1, 2, 4, 8, 16) for m in range(1000, 11000, 1000)]
NODES = 1000
#: (cpus, memory MB, priority, cost per hour) of each entry's nodes.
SIZES = [(8, 16000, 0, 0.40), (16, 32000, 0, 0.80), (8, 32000, 1, 0.30), (4, 8000, 0, 0.20),
         (16, 64000, 2, 1.00), (32, 64000, 1, 1.50), (8, 16000, 0, 0.35), (4, 16000, 1, 0.25),
         (16, 32000, 0, 0.70), (32, 128000, 2, 2.00)]
PROVISIONER = "bench"


class SimulatedProvider(Provider):
    """1,000 running instances, in memory."""

    def __init__(self, entry, settings, ids=()):
        super().__init__(entry, settings)
        now = time.time() - 3600
        self.instances = [Instance(i, entry, InstanceState.RUNNING, launch_time=now) for i in ids]

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
            f'CloudProviderEntry = "{ENTRIES[i % len(ENTRIES)]}"',
            'State = "Claimed"' if i % 2 else 'State = "Unclaimed"',
            'Activity = "Busy"' if i % 2 else 'Activity = "Idle"', "Cpus = 8", "Memory = 16000",
            "Disk = 100000000", 'Arch = "X86_64"', 'OpSys = "LINUX"', "START = true",
            "HasFileTransfer = true", "TotalSlotCpus = 8", "TotalSlotMemory = 16000",
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
    from condor_plugins.provisioning.scaleup import scale_up
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
            "CLOUD_PLUGINS_PROVIDERS": " ".join(ENTRIES),
            "CLOUD_PLUGINS_PROVISIONER_NAME": PROVISIONER, "CLOUD_PLUGINS_POOL_NAME": "bench",
            "CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN": "cloud-worker.bench",
            "CLOUD_PLUGINS_MAX_INSTANCES": "3000", "CLOUD_PLUGINS_BUDGET_PER_HOUR": "1500",
        }
        for name, (cpus, memory, priority, cost) in zip(ENTRIES, SIZES):
            e = f"CLOUD_PLUGINS_{name.upper()}_"
            param.update({e + "TYPE": "local", e + "CPUS": str(cpus), e + "MEMORY": str(memory),
                          e + "PRIORITY": str(priority), e + "COST_PER_HOUR": str(cost),
                          e + "MAX_INSTANCES": "300", e + "MAX_BOOTING": "50"})
        providers = {name: SimulatedProvider(name, {}, [f"sim-{i:04d}" for i in range(NODES)
                                                        if i % len(ENTRIES) == k])
                     for k, name in enumerate(ENTRIES)}
        prov = Provisioner(param, providers=providers, state_file=base / "state.json")
        submitted = 0
        import htcondor2
        schedd = pool.schedd()

        def unclustered():
            rows = schedd.query("true", ["JobStatus", "AutoClusterId"], opts=htcondor2.QueryOpt.GroupBy)
            return sum(r.get("JobCount", 0) for r in rows if r.get("AutoClusterId") is None)

        def measure(label):
            obs_t, alloc_t, plan_t = [], [], []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                state = prov.observe()
                t1 = time.perf_counter()
                now = time.time()
                result = plan(state, prov.cfg, now)
                t2 = time.perf_counter()
                # The allocation alone, on the records and backoff the plan made.
                scale_up(prov.cfg, result.records, lambda i: state.nodes.get(i),
                         state.idle_jobs(), result.backoff, now)
                t3 = time.perf_counter()
                obs_t.append(t1 - t0)
                plan_t.append(t2 - t1)
                alloc_t.append(t3 - t2)
                prov.records = dict(result.records)  # as the daemon: joined from now on
            if not (state.demand_ok and state.nodes_ok):
                raise SystemExit(f"an observation failed: demand_ok={state.demand_ok} nodes_ok={state.nodes_ok}")
            demand = sum(g.count for g in state.idle_jobs())
            creates = sum(getattr(a, "count", 0) for a in result.actions)
            o, a, p = (statistics.median(x) for x in (obs_t, alloc_t, plan_t))
            print(f"{submitted:>7} idle jobs, {label:<34}, {len(state.nodes)} simulated nodes, "
                  f"{len(ENTRIES)} entries: observe {o * 1000:.0f} ms, allocation {a * 1000:.1f} ms, "
                  f"plan {p * 1000:.1f} ms, cycle {(o + p) * 1000:.0f} ms (median of {args.reps}); "
                  f"demand seen {demand} in {len(state.idle_jobs())} groups, creates {creates}, "
                  f"actions {len(result.actions)}", flush=True)

        for total in sorted(args.jobs):
            submit(pool, total - submitted, base)
            submitted = total
            measure("just submitted (no autoclusters)")
            deadline = time.time() + 180
            while unclustered() and time.time() < deadline:
                time.sleep(2)
            measure("after negotiation (autoclustered)")
        print("goal: cycle <= 1000 ms at 100,000 jobs, allocation <= 50 ms")
    finally:
        pool.stop()
        import shutil
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
