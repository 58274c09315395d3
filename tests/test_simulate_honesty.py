"""Simulation against reality: a real burst on the local provider (the
``make demo`` world: real collector, negotiator, schedd, provisioner daemon
and execute nodes), then its ``condor_history -json`` replayed by
``condor_cloud simulate`` with the same knobs and the measured boot and
shutdown times.

Tolerance, fixed before the comparison: VMs started exactly; node-seconds
and the time the last node was deleted within 15%; the median job wait
within 5 s or 25%, whichever is larger.  The measured errors are printed
(``pytest -s``) and quoted in docs/simulate.md.
"""

import json
import statistics
import subprocess
import sys

import pytest

from tests.realburst import run_real_burst

pytestmark = pytest.mark.integration


def test_simulated_totals_match_a_real_burst(tmp_path):
    real = run_real_burst(tmp_path / "real")
    assert real["jobs_completed"] == 8 and real["leftover_processes"] == []
    first = min(a["QDate"] for a in real["history"])
    real_last = max(i["gone"] for i in real["instances"]) - first

    conf = tmp_path / "sim.conf"
    conf.write_text("".join(f"{k} = {v}\n" for k, v in sorted(real["knobs"].items())))
    boot = "/".join(f"{b:.2f}" for b in real["boot_seconds"])
    shutdown = statistics.mean(real["shutdown_seconds"])
    # The local provider's nodes take the provisioner's direct drain: the
    # next cycle sees them drained (retire 0).
    model = f"*:boot=choice:{boot},shutdown={shutdown:.2f},retire=0"
    out = tmp_path / "sim"
    res = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "simulate",
                          real["history_file"], "--config", str(conf), "--model", model,
                          "--out", str(out), "--no-baselines"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    sim = json.loads((out / "simulate.json").read_text())["settings"][0]["runs"][0]

    pairs = {"vms_started": (real["vms_started"], sim["vms_started"]),
             "node_seconds": (real["node_seconds"], sim["node_seconds"]),
             "median_wait": (real["median_wait"], sim["wait_s"]["all"]["p50"]),
             "last_retire": (real_last, sim["last_retire_s"])}
    print("\nreal vs simulated:", {k: (round(r, 2), round(s, 2), f"{100 * (s - r) / r:+.1f}%")
                                   for k, (r, s) in pairs.items()})
    assert sim["jobs"]["completed"] == 8 and sim["jobs"]["on_cloud"] == 8
    assert sim["vms_started"] == real["vms_started"]
    for key in ("node_seconds", "last_retire"):
        r, s = pairs[key]
        assert abs(s - r) <= 0.15 * r, (key, r, s)
    r, s = pairs["median_wait"]
    assert abs(s - r) <= max(5.0, 0.25 * r), ("median_wait", r, s)
