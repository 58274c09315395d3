"""condor_cloud report: a hand-checked split of two VMs' cost between the
accounting groups whose jobs ran on them, with idle time on its own line."""

import json
import struct
import subprocess
import sys
import time

import pytest

from condor_plugins.provisioning.costreport import attribute

VMS = [{"id": "a", "entry": "ec2", "start": 0, "end": 3600, "cpus": 4, "price_per_hour": 0.4,
        "startd": "a@ip-1"},
       {"id": "b", "entry": "ec2", "start": 0, "end": 1800, "cpus": 4, "price_per_hour": 0.4,
        "startd": "b@ip-2"}]
JOBS = [
    # 2 of A's 4 cores for its hour: 2 core-hours = half of its 0.40.
    {"AcctGroup": "group_cms", "Owner": "alice", "RequestCpus": 2, "JobCurrentStartDate": 0,
     "CompletionDate": 3600, "LastRemoteHost": "slot1_1@a@ip-1", "JobStatus": 4},
    # 1 core of A for half an hour: 0.5 core-hours = 0.05.
    {"AcctGroup": "group_atlas", "Owner": "carol", "RequestCpus": 1, "JobCurrentStartDate": 0,
     "CompletionDate": 1800, "LastRemoteHost": "slot1_2@a@ip-1", "JobStatus": 4},
    # No AcctGroup: its Owner; all of B for 15 minutes: 1 core-hour = 0.10.
    {"Owner": "bob", "RequestCpus": 4, "JobCurrentStartDate": 0, "CompletionDate": 900,
     "LastRemoteHost": "slot1_1@b@ip-2", "JobStatus": 4},
    # On a site node: not the cloud's.
    {"AcctGroup": "group_cms", "Owner": "alice", "RequestCpus": 8, "JobCurrentStartDate": 0,
     "CompletionDate": 3600, "LastRemoteHost": "slot1_1@wn1.site", "JobStatus": 4},
]


def test_hand_checked_split_with_idle_on_its_own_line():
    rows = attribute(VMS, JOBS, "group", 0, 7200)
    assert [(r["key"], r["cost"], r["core_hours"], r["jobs"]) for r in rows] == [
        ("group_cms", 0.2, 2.0, 1), ("bob", 0.1, 1.0, 1), ("group_atlas", 0.05, 0.5, 1),
        # A: 0.40 - 0.25 = 0.15 and 1.5 core-hours; B: 0.20 - 0.10 = 0.10 and 1 core-hour.
        ("idle", 0.25, 2.5, 0)]
    assert sum(r["cost"] for r in rows) == pytest.approx(0.6)   # what the two VMs cost
    # By user, by entry; and a window that starts half-way.
    assert [r["key"] for r in attribute(VMS, JOBS, "user", 0, 7200)] == [
        "alice", "bob", "carol", "idle"]
    assert [(r["key"], r["cost"]) for r in attribute(VMS, JOBS, "entry", 0, 7200)] == [
        ("ec2", 0.35), ("ec2 (idle)", 0.25)]
    late = attribute(VMS, JOBS, "group", 1800, 7200)
    assert [(r["key"], r["cost"]) for r in late] == [("group_cms", 0.1), ("idle", 0.1)]


def test_the_command_reads_history_and_ledger_and_writes_the_figure(tmp_path):
    t0 = time.time() - 7200
    shift = lambda d, keys: {k: (v + t0 if k in keys else v) for k, v in d.items()}
    (tmp_path / "ledger.jsonl").write_text("".join(
        json.dumps(shift(v, ("start", "end"))) + "\n" for v in VMS))
    (tmp_path / "h.json").write_text(json.dumps(
        [shift(j, ("JobCurrentStartDate", "CompletionDate")) for j in JOBS]))
    fig = tmp_path / "cost.png"
    res = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "report", "--since", "1d",
                          "--history", str(tmp_path / "h.json"), "--ledger",
                          str(tmp_path / "ledger.jsonl"), "--json", "--figure", str(fig)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["total"] == pytest.approx(0.6) and doc["rows"][-1]["key"] == "idle"
    png = fig.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24])[0] > 300
    table = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "report", "--history",
                            str(tmp_path / "h.json"), "--ledger", str(tmp_path / "ledger.jsonl")],
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "group_cms" in table.stdout and "idle" in table.stdout
    bad = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "report", "--since",
                          "a week"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--since 'a week'" in bad.stderr
