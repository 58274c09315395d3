#!/usr/bin/env python3
"""The collector's cost of 1,000 nodes pulling the provisioner's ad.

Every cloud node runs condor_cloud_node_control (condor_plugins.node.control)
once per CLOUD_PLUGINS_CONTROL_PERIOD (default 60 s): one query of the
provisioner's ad.  A personal pool's real collector gets the provisioner's ad
(with 100 retire requests) and 1,000 startd ads; then simulated pollers send
the script's exact query, 1,000 of them (one control period's worth for 1,000
nodes), from a few threads at once.  Reported, from one run: the collector's
CPU seconds per 1,000 polls (from /proc), as a share of one core over the
default 60 s period, the query latency, and for scale the same collector's CPU
for 1,000 startd ad updates (which the nodes send anyway).

    make bench      # or: dev/sandbox run -- python3 bench/node_polling.py
"""

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from condor_plugins.localpool import PersonalPool  # noqa: E402

NODES = 1000
THREADS = 8
PERIOD = 60
PROVISIONER = "bench-prov"


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def collector_pid(pool) -> int:
    out = subprocess.run(["pgrep", "-f", "condor_collector"], capture_output=True, text=True)
    for pid in out.stdout.split():
        try:
            if str(pool.workdir).encode() in open(f"/proc/{pid}/environ", "rb").read():
                return int(pid)
        except OSError:
            continue
    raise RuntimeError("no collector of this pool")


def startd_ads(count: int) -> str:
    return "\n".join(
        f'MyType = "Machine"\nName = "slot1@sim-{i:04d}"\nMachine = "sim-{i:04d}"\n'
        f'MyAddress = "<127.0.0.1:1>"\nState = "Unclaimed"\nActivity = "Idle"\n'
        f'IsCloudNode = true\nCloudRequestID = "sim-{i:04d}"\nCloudProvisioner = "{PROVISIONER}"\n'
        f'ClassAdLifetime = 3600\n' for i in range(count))


def main() -> int:
    import htcondor2
    base = Path(tempfile.mkdtemp(prefix="bnp-", dir="/tmp"))
    pool = PersonalPool(base / "pool", name="bench")
    pool.start(timeout=120)
    try:
        retire = " ".join(f"sim-{i:04d}" for i in range(100))
        ad = base / "prov.ad"
        ad.write_text(f'MyType = "CloudProvisioner"\nName = "{PROVISIONER}"\n'
                      f'LastCycleTime = {int(time.time())}\nCloudRetireRequests = "{retire}"\n'
                      'ClassAdLifetime = 3600\n')
        pool.run("condor_advertise", "UPDATE_AD_GENERIC", str(ad))
        ads = base / "startds.ad"
        ads.write_text(startd_ads(NODES))
        pid = collector_pid(pool)
        c0 = cpu_seconds(pid)
        t0 = time.monotonic()
        pool.run("condor_advertise", "-multiple", "UPDATE_STARTD_AD", str(ads), timeout=300)
        updates_cpu, updates_wall = cpu_seconds(pid) - c0, time.monotonic() - t0
        coll = pool.collector()
        time.sleep(1)
        startds = len(coll.query(htcondor2.AdType.Startd, "true", ["Name"]))
        constraint = f'MyType == "CloudProvisioner" && Name == "{PROVISIONER}"'
        assert coll.query(htcondor2.AdType.Any, constraint, ["CloudRetireRequests"])
        latencies, lock = [], threading.Lock()

        def poller(n):
            for _ in range(n):
                s = time.monotonic()
                rows = coll.query(htcondor2.AdType.Any, constraint,
                                  ["LastCycleTime", "CloudRetireRequests"])
                assert rows
                with lock:
                    latencies.append(time.monotonic() - s)
        threads = [threading.Thread(target=poller, args=(NODES // THREADS,))
                   for _ in range(THREADS)]
        c0, t0 = cpu_seconds(pid), time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cpu, wall = cpu_seconds(pid) - c0, time.monotonic() - t0
        lat = sorted(latencies)
        print(f"{len(lat)} polls of the provisioner's ad by {THREADS} threads in {wall:.2f} s "
              f"({len(lat) / wall:.0f}/s)")
        print(f"collector CPU for 1,000 polls: {cpu:.2f} s = {100 * cpu / PERIOD:.2f}% of one "
              f"core at one poll per node per {PERIOD} s")
        print(f"query latency: median {1000 * statistics.median(lat):.1f} ms, "
              f"p95 {1000 * lat[int(0.95 * len(lat))]:.1f} ms")
        print(f"for scale, {startds} startd ad updates: collector CPU {updates_cpu:.2f} s "
              f"({updates_wall:.1f} s wall); polls/updates CPU ratio "
              f"{cpu / updates_cpu if updates_cpu else float('inf'):.2f}")
    finally:
        pool.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
