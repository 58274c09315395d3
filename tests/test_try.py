"""`condor_cloud try` (issue 13): a personal pool with the fragments enabled,
that a new admin can submit to, and that `--stop` takes down with its nodes."""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import htcondor2
import pytest

from condor_plugins.localpool import processes_using, wait_for

pytestmark = pytest.mark.integration


def cloud(*args, env=None):
    return subprocess.run([sys.executable, "-m", "condor_plugins.cli", *args],
                          capture_output=True, text=True, timeout=300, env=env)


def test_try_starts_a_pool_that_runs_a_cloud_job_and_stops_with_its_nodes(condor_base, tmp_path):
    d = Path(tempfile.mkdtemp(prefix="try", dir=condor_base))
    env = {k: v for k, v in os.environ.items()
           if k != "CONDOR_CONFIG" and not k.startswith("_CONDOR_")}
    started = cloud("try", "--dir", str(d), "--nodes", "1", env=env)
    try:
        assert started.returncode == 0, started.stderr
        out = started.stdout
        config = re.search(r"export CONDOR_CONFIG=(\S+)", out).group(1)
        assert f"condor_cloud try --stop --dir {d}" in out
        # A second start in the same directory is refused while it runs.
        again = cloud("try", "--dir", str(d), env=env)
        assert again.returncode == 1 and "already running" in again.stderr
        # Used as the output says.
        env_pool = dict(env, CONDOR_CONFIG=config)
        (tmp_path / "hello.sub").write_text("executable = /bin/hostname\nqueue\n")
        tmp_path.chmod(0o777)
        sub = subprocess.run([sys.executable, "-m", "condor_plugins.steering.submit_wrapper",
                              "--mode", "cloud", "hello.sub"], cwd=tmp_path, env=env_pool,
                             capture_output=True, text=True, timeout=60)
        assert sub.returncode == 0, sub.stderr
        cluster = int(re.search(r"submitted to cluster (\d+)", sub.stdout).group(1))
        os.environ["CONDOR_CONFIG"], old = config, os.environ.get("CONDOR_CONFIG")
        try:
            htcondor2.reload_config()
            [job] = wait_for(lambda: list(htcondor2.Schedd().history(
                f"ClusterId == {cluster} && JobStatus == 4", ["LastRemoteHost"])), 150,
                what="the cloud job ran")
        finally:
            if old is None:
                os.environ.pop("CONDOR_CONFIG")
            else:
                os.environ["CONDOR_CONFIG"] = old
            htcondor2.reload_config()
        assert "@try1-" in job["LastRemoteHost"]
        status = cloud("status", "--json", env=env_pool)
        assert status.returncode == 0, status.stderr
    finally:
        stopped = cloud("try", "--stop", "--dir", str(d), env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert "Stopped the pool" in stopped.stdout
    assert not processes_using(str(d)), "processes left behind"
    assert not list((d / "nodes").glob("*")), "nodes left behind"
