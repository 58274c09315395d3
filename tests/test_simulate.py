"""condor_cloud simulate: exact numbers on a hand-computed trace, the trace
formats, --set rows, bad input, and the idle-timeout property."""

import json
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from condor_plugins.provisioning.simulate.command import UsageError, simulate
from condor_plugins.provisioning.simulate.trace import Job, Trace, read_trace

PARAM = {
    "CLOUD_PLUGINS_PROVIDERS": "sim1", "CLOUD_PLUGINS_PROVISIONER_NAME": "sim",
    "CLOUD_PLUGINS_CYCLE_INTERVAL": "10", "CLOUD_PLUGINS_BURST_DELAY": "0",
    "CLOUD_PLUGINS_SIM1_TYPE": "local", "CLOUD_PLUGINS_SIM1_CPUS": "1",
    "CLOUD_PLUGINS_SIM1_MEMORY": "2048", "CLOUD_PLUGINS_SIM1_IDLE_TIMEOUT": "60",
    "CLOUD_PLUGINS_SIM1_COST_PER_HOUR": "3.6", "NEGOTIATOR_INTERVAL": "10",
}
MODEL = ["sim1:boot=40,shutdown=0,retire=0"]

# Three cloud jobs, one entry of 1-core nodes, boot 40 s, cycle and
# negotiation every 10 s (the first cycle at the first arrival), IDLE_TIMEOUT 60 s:
#  t=0    jobs A (100 s) and B (200 s) arrive; the cycle creates 2 nodes
#  t=40   both join; the negotiation starts A and B (wait 40 s each)
#  t=140  A ends; the cycle at 130 saw the node busy last: drained at 190
#         (idle >= 60 s), terminated at 200 (drained, no job left)
#  t=240  B ends: drained at 290, terminated at 300
#  t=500  C (50 s) arrives: created at 500, joins 540, ends 590,
#         drained 640, terminated 650
# node-seconds 200 + 300 + 150 = 650; idle 3 x 50 s; cost 650 s x 3.6/h.
TINY = [
    {"ClusterId": 1, "ProcId": 0, "QDate": 1000, "JobCurrentStartDate": 1100,
     "CompletionDate": 1200, "RequestCpus": 1, "RequestMemory": 100, "CloudMode": "cloud"},
    {"ClusterId": 1, "ProcId": 1, "QDate": 1000, "JobCurrentStartDate": 1100,
     "CompletionDate": 1300, "RequestCpus": 1, "RequestMemory": 100, "CloudMode": "cloud"},
    {"ClusterId": 2, "ProcId": 0, "QDate": 1500, "JobCurrentStartDate": 1600,
     "CompletionDate": 1650, "RequestCpus": 1, "RequestMemory": 100, "CloudMode": "cloud"},
    {"ClusterId": 3, "ProcId": 0, "QDate": 1500, "JobStatus": 3},   # removed, never ran
]


def _policy(doc, k=0):
    return doc["settings"][k]["runs"][0]


def test_tiny_trace_exact_numbers(tmp_path):
    path = tmp_path / "history.json"
    path.write_text(json.dumps(TINY))
    trace = read_trace(path)
    assert len(trace.jobs) == 3 and trace.skipped == {"never ran": 1}
    doc = simulate(trace, PARAM, models=MODEL, cycle_offset=0)
    run = _policy(doc)
    assert run["node_seconds"] == 650.0
    assert run["vms_started"] == 3 and run["churn"] == 0
    assert run["cost"] == pytest.approx(0.65)
    assert run["idle_node_hours"] == pytest.approx(150 / 3600, abs=1e-4)
    assert run["booting_node_hours"] == pytest.approx(120 / 3600, abs=1e-4)
    assert run["wait_s"]["cloud"] == {"jobs": 3, "p50": 40.0, "p95": 40.0, "p99": 40.0}
    assert run["wait_s"]["site"]["jobs"] == 0
    assert run["last_retire_s"] == 650.0 and run["complete"]
    assert run["decisions"] == {"create": 3, "drain": 3, "terminate": 3, "failed": 0}
    assert run["cycles_skipped"] > 0    # the quiet minutes between the bursts
    fixed, naive = doc["settings"][0]["runs"][1:]
    assert fixed["run"] == "fixed 2" and fixed["node_seconds"] == 2 * 550.0
    assert naive["run"] == "naive 1,60s" and naive["vms_started"] > run["vms_started"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(5, 900), st.sampled_from([1, 2]),
                          st.sampled_from(["cloud", "any"])), min_size=1, max_size=20),
       st.integers(5, 200), st.integers(0, 9), st.sampled_from([0, 300]),
       st.sampled_from(["", ",fail=0.5", ",interrupt=5", ",fail=0.3,interrupt=2"]),
       st.integers(1, 3))
def test_cycle_skipping_changes_nothing(jobs, boot, offset, burst, faults, seed):
    """Skipping the cycles in which nothing can change gives the run of
    every cycle: the same totals, waits and decisions (baselines too)."""
    trace = Trace(sorted((Job(10_000 + t, r, c, 100, m) for t, r, c, m in jobs),
                         key=lambda j: j.submit))
    param = dict(PARAM, CLOUD_PLUGINS_SIM1_CPUS="2", CLOUD_PLUGINS_BURST_DELAY=str(burst),
                 CLOUD_PLUGINS_SIMULATE_SITE_CAPACITY="1x2/1000")
    runs = [simulate(trace, param, models=[f"sim1:boot={boot},retire=7{faults}"],
                     cycle_offset=offset, skip=skip, seed=seed)["settings"][0]["runs"]
            for skip in (True, False)]
    keep = ("node_seconds", "vms_started", "idle_node_hours", "last_retire_s", "wait_s",
            "decisions", "jobs", "cost", "holds", "interruptions", "create_failures")
    for fast, every in zip(*runs):
        assert {k: fast[k] for k in keep} == {k: every[k] for k in keep}
        assert fast["cycles"] + fast["cycles_skipped"] >= every["cycles"]


SWF = """; Version: 2.2
; UnixStartTime: 1600000000
; MaxProcs: 64
1 0 5 600 4 -1 -1 4 900 1048576 1 1 1 -1 1 -1 -1 -1
2 30 5 300 1 -1 -1 1 900 524288 1 1 1 -1 1 -1 -1 -1
3 60 5 0 1 -1 -1 1 900 -1 0 1 1 -1 1 -1 -1 -1
4 90 5 1200 1024 -1 -1 1024 900 -1 1 1 1 -1 1 -1 -1 -1
"""


def test_swf_trace(tmp_path):
    path = tmp_path / "small.swf"
    path.write_text(SWF)
    trace = read_trace(path)
    assert [(j.submit, j.runtime, j.cpus, j.memory_mb) for j in trace.jobs] == [
        (1600000000.0, 600.0, 4, 4096), (1600000030.0, 300.0, 1, 512),
        (1600000090.0, 1200.0, 1024, 0)]
    assert trace.skipped == {"never ran": 1}
    param = dict(PARAM, CLOUD_PLUGINS_SIM1_CPUS="4", CLOUD_PLUGINS_SIM1_MEMORY="8192")
    run = _policy(simulate(trace, param, models=MODEL, baselines=False))
    assert run["jobs"]["completed"] == 2 and run["jobs"]["on_cloud"] == 2
    assert run["jobs"]["left_out"] == {
        "no site node fits it, and no entry's node fits or matches it": 1}


def test_history_file_through_the_bindings(tmp_path):
    """The schedd's own history file: old ClassAd syntax, *** between ads,
    and Requirements matched against the entry's template ad."""
    ads = []
    for k, req in enumerate(["TARGET.IsCloudNode =?= true && TARGET.Cpus >= RequestCpus",
                             'TARGET.OpSys == "WINDOWS"']):
        ads.append(f"QDate = {1000 + k}\nJobCurrentStartDate = 1100\nCompletionDate = 1200\n"
                   f"RequestCpus = 1\nRequestMemory = 100\nCloudMode = \"cloud\"\n"
                   f"Requirements = {req}\n*** Offset = {k} ClusterId = {k} ProcId = 0\n")
    path = tmp_path / "history"
    path.write_text("".join(ads))
    trace = read_trace(path)
    assert len(trace.jobs) == 2 and trace.jobs[0].requirements.startswith("TARGET.IsCloudNode")
    run = _policy(simulate(trace, PARAM, models=MODEL, baselines=False))
    assert run["jobs"]["completed"] == 1
    assert run["jobs"]["left_out"] == {"mode cloud, no entry's node fits or matches it": 1}


def test_set_gives_one_row_per_value_and_names_a_typo(tmp_path):
    trace = Trace([Job(1000, 100, 1, 100, "cloud")])
    doc = simulate(trace, PARAM, sets=["IDLE_TIMEOUT=300,1200"], models=MODEL,
                   baselines=False)
    assert [s["label"] for s in doc["settings"]] == ["IDLE_TIMEOUT=300", "IDLE_TIMEOUT=1200"]
    assert doc["settings"][1]["knobs"]["CLOUD_PLUGINS_SIM1_IDLE_TIMEOUT"] == "1200"
    with pytest.raises(UsageError, match="did you mean IDLE_TIMEOUT"):
        simulate(trace, PARAM, sets=["IDLE_TIMOUT=300"], models=MODEL)
    with pytest.raises(UsageError, match="IDLE_TIMEOUT.*duration"):
        simulate(trace, PARAM, sets=["IDLE_TIMEOUT=soon"], models=MODEL)
    with pytest.raises(UsageError, match="unknown key 'boots'"):
        simulate(trace, PARAM, models=["sim1:boots=3"])
    with pytest.raises(UsageError, match="not a duration distribution"):
        simulate(trace, PARAM, models=["*:boot=lognormal:x"])
    with pytest.raises(UsageError, match="NODESxCPUS/MEMORY_MB"):
        simulate(trace, PARAM, site="lots")


jobs_strategy = st.lists(
    st.tuples(st.integers(0, 7200), st.integers(30, 3000), st.sampled_from([1, 2, 4])),
    min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs_strategy, st.integers(20, 300))
def test_a_larger_idle_timeout_never_has_fewer_idle_node_hours(jobs, boot):
    trace = Trace(sorted((Job(10_000 + t, r, c, 500, "cloud") for t, r, c in jobs),
                         key=lambda j: j.submit))
    param = dict(PARAM, CLOUD_PLUGINS_SIM1_CPUS="4", CLOUD_PLUGINS_SIM1_MEMORY="8192",
                 CLOUD_PLUGINS_CYCLE_INTERVAL="30", NEGOTIATOR_INTERVAL="30")
    doc = simulate(trace, param, sets=["IDLE_TIMEOUT=300,1200"],
                   models=[f"sim1:boot={boot}"], baselines=False)
    short, long_ = (_policy(doc, k) for k in (0, 1))
    assert short["complete"] and long_["complete"]
    assert long_["idle_node_hours"] >= short["idle_node_hours"]


def test_the_command_writes_table_json_and_figure(tmp_path):
    (tmp_path / "h.json").write_text(json.dumps(TINY))
    (tmp_path / "sim.conf").write_text("".join(f"{k} = {v}\n" for k, v in PARAM.items()))
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "simulate",
                          str(tmp_path / "h.json"), "--config", str(tmp_path / "sim.conf"),
                          "--model", MODEL[0], "--set", "IDLE_TIMEOUT=60,600", "--cycle-offset", "0",
                          "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("Simulated 3 jobs") and "1 never ran" in lines[0]
    rows = [line.split()[:2] for line in lines[2:8]]
    assert rows == [["IDLE_TIMEOUT=60", "policy"], ["IDLE_TIMEOUT=60", "fixed"],
                    ["IDLE_TIMEOUT=60", "naive"], ["IDLE_TIMEOUT=600", "policy"],
                    ["IDLE_TIMEOUT=600", "fixed"], ["IDLE_TIMEOUT=600", "naive"]]
    doc = json.loads((out / "simulate.json").read_text())
    assert doc["settings"][0]["runs"][0]["node_seconds"] == 650.0
    assert doc["settings"][1]["runs"][0]["idle_node_hours"] > \
        doc["settings"][0]["runs"][0]["idle_node_hours"]
    png = (out / "simulate.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 600 and height > 500     # two columns of three panels
    svg = (out / "simulate.svg").read_text()
    for label in ("idle jobs", "cloud nodes", "spend per hour", "IDLE_TIMEOUT=600"):
        assert label in svg
    shown = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "simulate",
                            str(tmp_path / "h.json"), "--config", str(tmp_path / "sim.conf"),
                            "--progress", "--json", "--no-figure", "--no-baselines",
                            "--out", str(tmp_path / "out2")], capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0 and "days/s)" in shown.stderr and "day " in shown.stderr
    assert json.loads(shown.stdout)["settings"][0]["runs"][0]["run"] == "policy"
    assert not (tmp_path / "out2" / "simulate.png").exists()
    bad = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "simulate",
                          str(tmp_path / "h.json"), "--config", str(tmp_path / "sim.conf"),
                          "--set", "MAX_INSTANCE=1,2"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "did you mean MAX_INSTANCES" in bad.stderr


def test_site_capacity_from_a_condor_status_snapshot(tmp_path):
    """Partitionable slots count whole, static slots as they are; dynamic
    slots and cloud nodes are not the site's own capacity."""
    from condor_plugins.provisioning.simulate.command import parse_site
    snap = tmp_path / "status.json"
    snap.write_text(json.dumps([
        {"Name": "slot1@wn1", "PartitionableSlot": True, "TotalSlotCpus": 16,
         "TotalSlotMemory": 64000, "Cpus": 2, "Memory": 8000},
        {"Name": "slot1_1@wn1", "DynamicSlot": True, "Cpus": 14, "Memory": 56000},
        {"Name": "slot1@wn2", "Cpus": 1, "Memory": 2000},
        {"Name": "slot1@vm1@ip", "PartitionableSlot": True, "IsCloudNode": True,
         "TotalSlotCpus": 8, "TotalSlotMemory": 32000}]))
    assert parse_site(str(snap)) == [(16, 64000), (1, 2000)]
    assert parse_site("2x8/16000+1x64/256000") == [(8, 16000), (8, 16000), (64, 256000)]


def test_request_memory_as_an_expression_is_evaluated(tmp_path):
    """HTCondor's default RequestMemory is an expression of MemoryUsage."""
    ad = {"QDate": 1000, "JobCurrentStartDate": 1100, "CompletionDate": 1200,
          "RequestCpus": 1, "MemoryUsage": 1500,
          "RequestMemory": "/Expr(ifthenelse(MemoryUsage =!= undefined,MemoryUsage,128))/"}
    path = tmp_path / "h.json"
    path.write_text(json.dumps([ad]))
    assert read_trace(path).jobs[0].memory_mb == 1500
