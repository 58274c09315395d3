"""The Slurm test bed itself (dev/slurmhost, tests/slurm_bed.py): real
slurmctld, slurmd and munged; nodes that share no network, host name, /tmp
or pid namespace with the tests; an ssh login node for ``hpcpilot`` only;
Slurm's own partition states and scancel; a clean stop.  A job over its time
limit (Slurm's SIGTERM to every process, then SIGKILL) is
tests/test_slurm_e2e.py's pilot killed at its walltime."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from condor_plugins.localpool import wait_for
from slurm_bed import SlurmBed, require_slurmhost

pytestmark = pytest.mark.integration

#: Who, where and with what a job runs; then it reaches the test on 198.18.0.1.
WHOAMI = """#!/bin/bash
echo "uid=$(id -u)"
echo "host=$(hostname)"
echo "end=${SLURM_JOB_END_TIME:-none}"
echo "tmp=$(ls -A /tmp | tr '\\n' ' ')"
touch "/tmp/$2"
for ns in net uts mnt pid; do echo "ns_$ns=$(readlink /proc/self/ns/$ns)"; done
echo "addr=$(ip -o -4 addr show dev eth0 | awk '{print $4}')"
exec 3<>/dev/tcp/198.18.0.1/$1 && echo "job $SLURM_JOB_ID" >&3 && echo "reached=198.18.0.1"
"""


@pytest.fixture(scope="module")
def bed():
    require_slurmhost()
    b = SlurmBed(nodes=2, cpus=2, memory=2048).start()
    b.first_status = b.status()
    (b.dir / "out").mkdir(mode=0o1777)
    (b.dir / "out").chmod(0o1777)        # jobs of both users write their output here
    yield b
    b.stop()
    assert b.processes() == {}, "processes left behind"


def listener():
    """A TCP listener on the central manager's address: [(peer address, text)]."""
    srv = socket.socket()
    srv.bind(("198.18.0.1", 0))
    srv.listen(8)
    got = []

    def serve():
        while True:
            try:
                conn, peer = srv.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                got.append((peer[0], conn.recv(100).decode()))
    threading.Thread(target=serve, daemon=True).start()
    return srv, got


def running(pid):
    """Alive (a zombie is not: nobody reaps the bed's orphans in the sandbox)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def fields(text):
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_starts_in_under_30_s_with_two_idle_nodes(bed):
    print(f"bed started in {bed.started_in:.2f} s "
          f"(dev/slurmhost's own count: {bed.info['started_in']} s)")
    assert bed.started_in < 30
    assert bed.first_status == {"running": True, "nodes": {"node1": "idle", "node2": "idle"},
                                "partitions": {"batch": "up", "short": "up"}}
    assert bed.nodes == ["node1", "node2"]
    assert all(a.startswith("198.19.") for a in bed.addresses.values())
    out = bed.local("sinfo", "--noheader", "--format=%P %a %l %D").stdout.split("\n")
    assert "batch* up 1:00:00 2" in out and "short up 10:00 2" in out


def test_jobs_run_as_their_submitter_on_a_node_of_their_own(bed, tmp_path):
    srv, got = listener()
    port = srv.getsockname()[1]
    script = bed.dir / "whoami.sh"
    script.write_text(WHOAMI)
    script.chmod(0o755)
    (tmp_path / "the-test-users-tmp").write_text("x")
    out = bed.dir / "out"
    local = bed.sbatch("--time=2", "--mem=50", f"--output={out}/%j.out", str(script),
                       str(port), "left-by-local")
    remote = bed.sbatch("--time=2", "--mem=50", f"--output={out}/%j.out", str(script),
                        str(port), "left-by-remote", remote=True)
    try:
        for job in (local, remote):
            bed.wait_job(job, "COMPLETED", timeout=30)
        wait_for(lambda: len(got) >= 2, 10, what="both jobs reaching 198.18.0.1")
    finally:
        srv.close()
    mine = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("net", "uts", "mnt", "pid")}
    for job, uid, user in ((local, "4242", "cptest"), (remote, "4343", "hpcpilot")):
        text = (out / f"{job}.out").read_text()
        facts = fields(text)
        print(f"job {job}: {facts}")
        assert facts["uid"] == uid and bed.job(job).get("UserId", "").startswith(user), text
        assert facts["host"] in bed.nodes and facts["host"] != socket.gethostname()
        assert facts["addr"] == bed.addresses[facts["host"]] + "/32"
        assert facts["reached"] == "198.18.0.1"
        assert facts["end"] != "none"                     # SLURM_JOB_END_TIME
        assert "pytest-of" not in facts["tmp"]            # not the test user's /tmp
        for ns, link in mine.items():
            assert facts[f"ns_{ns}"] != link, f"the job shares the test's {ns} namespace"
    assert not Path("/tmp/left-by-local").exists() and not Path("/tmp/left-by-remote").exists()
    # The connections came from the nodes' own addresses.
    assert {peer for peer, _ in got} <= set(bed.addresses.values())
    assert sorted(text.split()[1] for _, text in got) == sorted([local, remote])


def test_the_login_node_admits_hpcpilot_with_the_bed_key_only(bed, tmp_path):
    res = bed.remote("id -un; hostname; echo $SLURM_CONF")
    user, host, conf = res.stdout.split()
    assert (user, host) == ("hpcpilot", "login") and conf.endswith("/slurm.conf")
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    for key, who in ((bed.key, "root"), (bed.key, "cptest"), (other, "hpcpilot")):
        res = subprocess.run(bed.ssh_command(key=key, user=who) + ["id"], capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 255 and "Permission denied (publickey)" in res.stderr, \
            (who, res.stderr)


def test_a_down_partition_keeps_jobs_pending_until_up(bed):
    bed.partition("short", "down")
    try:
        assert bed.status()["partitions"]["short"] == "down"
        job = bed.sbatch("--partition=short", "--time=1", "--mem=50", "--output=/dev/null",
                         wrap="true")
        wait_for(lambda: bed.job(job).get("Reason") == "PartitionDown", 10,
                 what="the job pending for its partition")
        time.sleep(3)     # several scheduling cycles (2 s)
        info = bed.job(job)
        assert (info["JobState"], info["Reason"]) == ("PENDING", "PartitionDown")
    finally:
        bed.partition("short", "up")
    bed.wait_job(job, "COMPLETED", timeout=20)


def test_scancel_ends_a_running_job_and_its_processes(bed):
    job = bed.sbatch("--time=5", "--mem=50", "--output=/dev/null", wrap="sleep 601")
    bed.wait_job(job, "RUNNING", timeout=20)
    wait_for(lambda: "sleep 601" in bed.processes().values(), 10, what="the job's process")
    bed.local("scancel", job)
    bed.wait_job(job, "CANCELLED", timeout=20)
    wait_for(lambda: "sleep 601" not in bed.processes().values(), 15,
             what="the job's process gone")


def test_stop_leaves_no_process_of_the_bed(tmp_path):
    require_slurmhost()
    b = SlurmBed(nodes=1).start()
    ssh = None
    try:
        job = b.sbatch("--time=5", "--mem=50", "--output=/dev/null", wrap="sleep 602")
        b.wait_job(job, "RUNNING", timeout=20)
        ssh = subprocess.Popen(b.ssh_command() + ["sleep 603"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        names = ("munged", "slurmctld", "slurmd", "sshd", "slurmstepd", "sleep 602", "sleep 603")
        procs = wait_for(lambda: (p := b.processes()) and all(
            any(n in cmd for cmd in p.values()) for n in names) and p, 15,
            what=f"the bed's processes: {names}")
    finally:
        b.stop()
        if ssh:
            ssh.wait(20)
    alive = [f"{pid} {cmd}" for pid, cmd in procs.items() if running(pid)]
    assert not alive, f"left behind: {alive}"
    assert b.processes() == {}
    state = b.info["state"]
    named = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if state.encode() in Path(f"/proc/{entry}/cmdline").read_bytes() and running(entry):
                named.append(entry)
        except OSError:
            pass
    assert not named, f"processes of {state}: {named}"
    assert b.status()["running"] is False
    b.stop()                                   # idempotent
    assert "Running as primary controller" in b.log("slurmctld.log")   # the logs stay
    print(f"stopped; {len(procs)} processes gone")
