"""The Slurm test bed itself (dev/slurmhost): real slurmctld, slurmd and
munged, nodes that share no network, host name, /tmp or Unix identity with
the tests, an ssh login node, and a clean stop."""

import socket
import subprocess
import threading
import time

import pytest

from condor_plugins.localpool import wait_for
from slurm_bed import SlurmBed, require_slurmhost

pytestmark = pytest.mark.integration

JOB = """#!/bin/bash
echo "uid=$(id -u) host=$(hostname) end=${SLURM_JOB_END_TIME:-none}"
echo "tmp=$(ls -A /tmp | tr '\\n' ' ')"
exec 3<>/dev/tcp/198.18.0.1/$1 && echo "reached" >&3 && echo "reached 198.18.0.1"
"""


@pytest.fixture(scope="module")
def bed():
    require_slurmhost()
    b = SlurmBed().start()
    yield b
    b.stop()
    leftover = subprocess.run(["pgrep", "-f", str(b.dir)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", f"processes left behind: {leftover.stdout}"


def listener():
    """A TCP listener on the central manager's address; what it receives."""
    srv = socket.socket()
    srv.bind(("198.18.0.1", 0))
    srv.listen(4)
    got = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            got.append(conn.recv(100).decode())
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return srv, got


def output(bed, path):
    return wait_for(lambda: path.exists() and "reached" in path.read_text() and path.read_text(),
                    60, what=f"job output {path}")


def test_starts_in_under_30_s_with_two_idle_nodes(bed):
    print(f"bed started in {bed.started_in:.1f} s")
    assert bed.started_in < 30
    out = bed.local("sinfo", "--noheader", "--format=%n %T").stdout.split()
    assert sorted(out[0::2]) == ["node1", "node2"] and set(out[1::2]) == {"idle"}


def test_jobs_run_as_their_submitter_on_a_node_of_their_own(bed, tmp_path):
    srv, got = listener()
    port = srv.getsockname()[1]
    (bed.dir / "job.sh").write_text(JOB)
    (bed.dir / "job.sh").chmod(0o755)
    marker = tmp_path / "test-user-tmp-marker"
    marker.write_text("x")
    bed.local("sbatch", "--parsable", f"--output={bed.dir}/local-%j.out", "--time=1",
              "--mem=50", str(bed.dir / "job.sh"), str(port))
    remote = bed.remote(f"sbatch --parsable --output=$HOME/remote-%j.out --time=1 --mem=50 "
                        f"{bed.dir}/job.sh {port} && id -u")
    job, uid = remote.stdout.split()
    assert uid == "4343"
    local = output(bed, next(iter(wait_for(lambda: list(bed.dir.glob("local-*.out")), 60,
                                           what="local job output"))))
    assert "uid=4242" in local and "host=node" in local and "reached 198.18.0.1" in local
    assert "test-user-tmp-marker" not in local and "pytest" not in local  # its own /tmp
    assert "end=none" not in local       # Slurm tells the job when its walltime ends
    text = wait_for(lambda: "reached" in (r := bed.remote(f"cat $HOME/remote-{job}.out",
                                                          check=False)).stdout and r.stdout,
                    60, what="remote job output")
    assert "uid=4343" in text and "host=node" in text
    wait_for(lambda: len(got) >= 2, 10, what="both jobs reaching 198.18.0.1")
    srv.close()


def test_a_down_partition_keeps_jobs_pending_until_up(bed):
    bed.partition("short", "down")
    try:
        job = bed.local("sbatch", "--parsable", "--partition=short", "--time=1",
                        "--output=/dev/null", "--wrap=true").stdout.strip()
        time.sleep(4)
        state, reason, _ = bed.jobs()[job]
        assert (state, reason) == ("PENDING", "PartitionDown")
    finally:
        bed.partition("short", "up")
    wait_for(lambda: bed.jobs()[job][0] == "COMPLETED", 60, what="the job to run once up")


def test_scancel_ends_a_running_job(bed):
    job = bed.local("sbatch", "--parsable", "--time=1", "--output=/dev/null",
                    "--wrap=sleep 600").stdout.strip()
    wait_for(lambda: bed.jobs()[job][0] == "RUNNING", 30, what="the job running")
    bed.local("scancel", job)
    wait_for(lambda: bed.jobs()[job][0] == "CANCELLED", 30, what="the job cancelled")
