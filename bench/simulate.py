#!/usr/bin/env python3
"""condor_cloud simulate on a month: 30 days of 100,000 jobs a day.

A synthetic bursty trace (trace.synthetic: a base load plus 3 campaigns a
day, lognormal run times with a 20-minute median, 85% 1-core, 10% 4-core,
5% 8-core jobs, mode any) replayed against a site of 150 12-core nodes and
two entries: an OpenStack entry (8 cores, 50 nodes, cheap, priority 0) and
an EC2 spot entry (16 cores, 200 nodes, interrupted 0.02 times per
node-hour).  BURST_DELAY 600 s, IDLE_TIMEOUT 600 s, cycle and negotiation
every 60 s.  Timed: reading nothing (the trace is generated, timed apart),
the policy run alone, and the whole command (policy plus the two baselines).
Goal (issue 17): the replay of 30 days in <= 5 minutes on this machine.

    make bench      # or: dev/sandbox run -- python3 bench/simulate.py [--days 30]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from condor_plugins.provisioning.simulate.command import simulate  # noqa: E402
from condor_plugins.provisioning.simulate.trace import synthetic  # noqa: E402

PARAM = {
    "CLOUD_PLUGINS_PROVIDERS": "openstack ec2", "CLOUD_PLUGINS_PROVISIONER_NAME": "bench",
    "CLOUD_PLUGINS_CYCLE_INTERVAL": "60", "CLOUD_PLUGINS_BURST_DELAY": "600",
    "CLOUD_PLUGINS_IDLE_TIMEOUT": "600", "NEGOTIATOR_INTERVAL": "60",
    "CLOUD_PLUGINS_SIMULATE_SITE_CAPACITY": "150x12/48000",
    "CLOUD_PLUGINS_OPENSTACK_TYPE": "openstack", "CLOUD_PLUGINS_OPENSTACK_CPUS": "8",
    "CLOUD_PLUGINS_OPENSTACK_MEMORY": "32000", "CLOUD_PLUGINS_OPENSTACK_MAX_INSTANCES": "50",
    "CLOUD_PLUGINS_OPENSTACK_COST_PER_HOUR": "0.10",
    "CLOUD_PLUGINS_EC2_TYPE": "ec2", "CLOUD_PLUGINS_EC2_CPUS": "16",
    "CLOUD_PLUGINS_EC2_MEMORY": "64000", "CLOUD_PLUGINS_EC2_MAX_INSTANCES": "200",
    "CLOUD_PLUGINS_EC2_MAX_BOOTING": "20", "CLOUD_PLUGINS_EC2_COST_PER_HOUR": "0.68",
}
MODELS = ["openstack:boot=lognormal:150:0.3", "ec2:boot=lognormal:90:0.3,interrupt=0.02,fail=0.01"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--jobs-per-day", type=int, default=100_000)
    ap.add_argument("--baselines", action="store_true", help="also time the two baselines")
    args = ap.parse_args()
    t = time.monotonic()
    trace = synthetic(args.days, args.jobs_per_day, seed=7)
    made = time.monotonic() - t
    t = time.monotonic()
    doc = simulate(trace, PARAM, models=MODELS, baselines=args.baselines)
    took = time.monotonic() - t
    print(f"trace: {len(trace.jobs):,} jobs over {args.days:g} days (generated in {made:.1f} s)")
    for r in doc["settings"][0]["runs"]:
        w = r["wait_s"]
        print(f"  {r['run']:<16} cost {r['cost']:>10,.0f}  node-h {r['node_hours']:>9,.0f}  "
              f"idle {100 * r['idle_share']:4.1f}%  VMs {r['vms_started']:>6,}  "
              f"churn {r['churn']:>5,}  interrupted {r['interruptions']:>4}  wait p50/p95 "
              f"cloud {w['cloud']['p50']}/{w['cloud']['p95']} s, site {w['site']['p50']}/"
              f"{w['site']['p95']} s  cycles run {r['cycles']:,}, skipped "
              f"{r['cycles_skipped']:,}")
    policy = doc["settings"][0]["runs"][0]
    print(f"policy run: {policy['wall_s']:.1f} s = {args.days / policy['wall_s']:.2f} simulated "
          f"days per wall second; whole command {took:.1f} s "
          f"(goal: 30 days in <= 300 s) -> {'MET' if policy['wall_s'] <= 300 * args.days / 30 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
