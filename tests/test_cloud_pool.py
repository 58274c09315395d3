"""A separate cloud pool (issue 6): the site schedd's condor_job_router turns
cloud jobs into Condor-C jobs to the cloud pool's schedd, whose provisioner
starts the nodes.  Two real pools, a real job router, real Condor-C.

Both ways of routing run the same tests: ``native`` (a route in the ClassAd
transform language) and ``hook`` (the Python JobRouter hooks).
"""

from __future__ import annotations

import os
import signal
import time

import htcondor2
import pytest

from condor_plugins.localpool import shipped_config_dir, wait_for
from conftest import worker_token
from provtools import Prov, hook_dir

pytestmark = pytest.mark.integration

FAST_GRID = """
JOB_ROUTER_POLLING_PERIOD = 2
JOB_ROUTER_DEFAULT_MAX_IDLE_JOBS_PER_ROUTE = 50
CONDOR_JOB_POLL_INTERVAL = 3
GRIDMANAGER_JOB_PROBE_INTERVAL = 3
C_GAHP_CONTACT_SCHEDD_DELAY = 1
GRIDMANAGER_CONTACT_SCHEDD_DELAY = 1
GRIDMANAGER_JOB_PROBE_RATE = 20
GRIDMANAGER_MAX_PENDING_REQUESTS = 50
JOB_ROUTER_DEBUG = D_FULLDEBUG
"""


class Topology:
    """Site pool (schedd + job router + one plain node) and cloud pool."""

    def __init__(self, condor, mode, site_extra="", plain_node=True):
        self.condor = condor
        self.cloud = condor.site_pool("cloud", extra_config=(
            "CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS = True\n"))
        cloud_schedd = self.cloud.collector().locate(htcondor2.DaemonType.Schedd)["Name"]
        self.site = condor.site_pool(
            "site", include_extra=[shipped_config_dir() / "40-cloud-route.conf"],
            extra_config=(
                "CLOUD_PLUGINS_SUBMIT_TRANSFORM = True\n"
                "CLOUD_PLUGINS_ROUTE_TO_CLOUD_POOL = True\n"
                f"CLOUD_PLUGINS_CLOUD_POOL_COLLECTOR = {self.cloud.collector_address}\n"
                f"CLOUD_PLUGINS_CLOUD_POOL_SCHEDD = {cloud_schedd}\n"
                f"CLOUD_PLUGINS_ROUTE_WITH = {mode}\n"
                f"CLOUD_PLUGINS_HOOK_DIR = {hook_dir(condor.base)}\n" + FAST_GRID + site_extra))
        if plain_node:
            self.plain = condor.node(self.site, "plain", cpus=1)
        wait_for(self.router_pid, 60, what="condor_job_router running")

    def router_pid(self):
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
                env = open(f"/proc/{pid}/environ", "rb").read()
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"condor_job_router") and \
                    f"CONDOR_CONFIG={self.site.config_path}".encode() in env:
                return int(pid)
        return None

    def cloud_node(self, name="cnode"):
        return self.condor.node(self.cloud, name, cloud=True, token=worker_token(self.cloud, name))

    def router_log(self):
        path = self.site.workdir / "log" / "JobRouterLog"
        return path.read_text(errors="replace") if path.exists() else ""


def submit(pool, tmp_path, mode, seconds=1, exit_code=0, count=1, **extra):
    tmp_path.chmod(0o777)
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/sh\necho \"ran on $(hostname) as $$\"\nsleep {seconds}\n"
                      f"exit {exit_code}\n")
    script.chmod(0o755)
    desc = {"executable": str(script), "output": str(tmp_path / "out.$(Process)"),
            "error": str(tmp_path / "err.$(Process)"), "log": str(tmp_path / "job.log"),
            "should_transfer_files": "YES", "when_to_transfer_output": "ON_EXIT",
            "request_cpus": "1", "request_memory": "64", "request_disk": "1000",
            "MY.CloudMode": f'"{mode}"', **extra}
    return pool.schedd().submit(htcondor2.Submit(desc), count=count).cluster()


def source_jobs(pool, cluster, attrs=("JobStatus", "ExitCode", "RoutedToJobId", "LastRemoteHost",
                                      "CloudGridJobId", "ProcId")):
    done = list(pool.schedd().history(f"ClusterId == {cluster}", list(attrs)))
    queued = list(pool.schedd().query(f"ClusterId == {cluster}", list(attrs)))
    return done, queued


def routed_copies(pool, cluster):
    """Routed copies (grid universe) of the source jobs of ``cluster``, queue and history."""
    constraint = f'RoutedFromJobId =?= "{cluster}.0"'
    attrs = ["ClusterId", "JobStatus", "GridJobId", "GridResource", "Remote_Requirements",
             "CloudRoutedBy"]
    return (list(pool.schedd().query(constraint, attrs)) +
            list(pool.schedd().history(constraint, attrs)))


def cloud_jobs(cloud):
    attrs = ["ClusterId", "JobStatus", "Requirements", "LastRemoteHost", "RoutedFromJobId",
             "GlobalJobId"]
    return list(cloud.schedd().query("true", attrs)) + list(cloud.schedd().history("true", attrs))


@pytest.mark.parametrize("mode", ["native", "hook"])
def test_cloud_job_runs_on_a_provisioned_node_and_local_job_never_routes(condor, tmp_path, mode):
    topo = Topology(condor, mode)
    prov = Prov(topo.cloud, condor.base, f"cp{mode[0]}{os.urandom(2).hex()}",
                knobs={"IDLE_TIMEOUT": 30, "MAX_INSTANCES": 1})
    proc = prov.start()
    try:
        (tmp_path / "c").mkdir()
        (tmp_path / "l").mkdir()
        cloud_cluster = submit(topo.site, tmp_path / "c", "cloud", seconds=2, exit_code=3)
        local_cluster = submit(topo.site, tmp_path / "l", "local", seconds=2)

        def finished(cluster):
            done, _ = source_jobs(topo.site, cluster)
            return done if done and done[0].get("JobStatus") == 4 else None
        try:
            [src] = wait_for(lambda: finished(cloud_cluster), 180, interval=1,
                             what="the cloud job completed at the site")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{topo.router_log()[-4000:]}\n{prov.log_text()[-3000:]}")
        # Exit code and output came back to the site.
        assert src["ExitCode"] == 3 and src.get("RoutedToJobId")
        assert "ran on" in (tmp_path / "c" / "out.0").read_text()
        # It ran in the cloud pool, on a node the provisioner started.
        [remote] = [j for j in cloud_jobs(topo.cloud) if j.get("JobStatus") == 4]
        assert remote["LastRemoteHost"].split("@")[1].startswith("local1-")
        assert "IsCloudNode" in str(remote["Requirements"])
        [copy] = routed_copies(topo.site, cloud_cluster)
        assert copy["GridResource"].startswith("condor ") and copy["GridJobId"]
        assert copy["CloudRoutedBy"] == {"native": "route", "hook": "hook"}[mode]
        if mode == "hook":  # the finalize hook copied where it ran back
            assert src.get("CloudGridJobId") == copy["GridJobId"], topo.router_log()[-3000:]
        # The local-mode job ran at the site and was never routed.
        [loc] = wait_for(lambda: finished(local_cluster), 60, what="the local job done")
        assert loc.get("RoutedToJobId") is None and "plain" in loc["LastRemoteHost"]
        assert not routed_copies(topo.site, local_cluster)
    finally:
        prov.stop(proc)
        prov.cleanup()


def test_the_native_route_never_takes_a_local_job_even_under_a_wide_site_constraint(
        condor, tmp_path):
    """Issue 16: a site that widens JOB_ROUTER_SOURCE_JOB_CONSTRAINT (here: every
    job) still never routes a local-mode job: the route carries its own
    REQUIREMENTS.  The local job can run nowhere, so it waits in the queue
    while the router polls every 2 s and routes the cloud job."""
    topo = Topology(condor, "native", plain_node=False,
                    site_extra="JOB_ROUTER_SOURCE_JOB_CONSTRAINT = True\n")
    for d in "cl":
        (tmp_path / d).mkdir()
    local = submit(topo.site, tmp_path / "l", "local", requirements='Machine == "nowhere"')
    cloud = submit(topo.site, tmp_path / "c", "cloud")
    try:
        wait_for(lambda: routed_copies(topo.site, cloud), 60, interval=1,
                 what="the cloud job routed")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{topo.router_log()[-3000:]}")
    time.sleep(6)   # three more router polls
    assert not routed_copies(topo.site, local), topo.router_log()[-3000:]


def test_any_mode_job_bursts_only_after_the_delay_when_the_site_is_full(condor, tmp_path):
    topo = Topology(condor, "native", site_extra=(
        "CLOUD_PLUGINS_ROUTE_TRANSPARENT = True\nCLOUD_PLUGINS_ROUTE_BURST_DELAY = 15\n"))
    topo.cloud_node()
    for d in "ab":
        (tmp_path / d).mkdir()
    # A: the site's only slot is free, so it runs there and is never routed.
    first = submit(topo.site, tmp_path / "a", "any", seconds=60)
    wait_for(lambda: [j for j in topo.site.schedd().query(f"ClusterId == {first}", ["JobStatus"])
                      if j["JobStatus"] == 2], 60, what="job A running at the site")
    # B: the site is full now; it waits out the burst delay, then routes.
    second = submit(topo.site, tmp_path / "b", "any", seconds=1)
    submitted = time.time()
    routed = wait_for(lambda: routed_copies(topo.site, second), 90, interval=0.5,
                      what="job B routed")
    assert time.time() - submitted >= 15 - 1, "routed before the burst delay"
    [src] = topo.site.schedd().query(f"ClusterId == {second}",
                                     ["LastRejMatchTime", "EnteredCurrentStatus"])
    assert src.get("LastRejMatchTime") is not None  # the site had no slot for it
    assert routed[0]["GridResource"].startswith("condor ")
    wait_for(lambda: source_jobs(topo.site, second)[0], 120, what="job B done")
    [b] = source_jobs(topo.site, second)[0]
    assert b["ExitCode"] == 0 and b.get("RoutedToJobId")
    assert not routed_copies(topo.site, first)


def test_hook_route_refuses_garbage_survives_a_router_restart_and_honours_rm(condor, tmp_path):
    topo = Topology(condor, "hook", plain_node=False)
    topo.cloud_node()
    schedd = topo.site.schedd()
    for d in ("bad", "restart", "rm"):
        (tmp_path / d).mkdir()

    # A malformed job ad: the hook refuses it, the job stays idle at the site.
    bad = submit(topo.site, tmp_path / "bad", "cloud", hold="True")
    schedd.edit(f"ClusterId == {bad}", "RequestCpus", '"two"')
    schedd.act(htcondor2.JobAction.Release, f"ClusterId == {bad}")
    wait_for(lambda: "RequestCpus = \"two\" is not a number" in topo.router_log(), 60,
             what="the hook's refusal in JobRouterLog")
    [job] = schedd.query(f"ClusterId == {bad}", ["JobStatus"])
    assert job["JobStatus"] == 1 and not routed_copies(topo.site, bad)
    line = [ln for ln in topo.router_log().splitlines() if "is not a number" in ln][0]
    assert "condor_plugins translate hook" in line and "Traceback" not in topo.router_log()
    schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {bad}")

    # Restarting the router mid-flight: no duplicate routed or remote job.
    job = submit(topo.site, tmp_path / "restart", "cloud", seconds=20,
                 **{"MY.TestTag": '"restart"'})
    wait_for(lambda: [c for c in routed_copies(topo.site, job) if c.get("GridJobId")], 60,
             what="the job routed and submitted to the cloud pool")
    old = topo.router_pid()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: topo.router_pid() not in (None, old), 90, what="the router restarted")
    done = wait_for(lambda: source_jobs(topo.site, job)[0], 150, what="the job completed")
    assert done[0]["JobStatus"] == 4 and done[0]["ExitCode"] == 0
    assert len(routed_copies(topo.site, job)) == 1
    tagged = list(topo.cloud.schedd().query('TestTag =?= "restart"', ["ClusterId"])) + list(
        topo.cloud.schedd().history('TestTag =?= "restart"', ["ClusterId"]))
    assert len(tagged) == 1, tagged

    # condor_rm of the routed source job removes the remote job.
    job = submit(topo.site, tmp_path / "rm", "cloud", seconds=600, **{"MY.TestTag": '"rm"'})
    wait_for(lambda: list(topo.cloud.schedd().query('TestTag =?= "rm" && JobStatus == 2',
                                                    ["ClusterId"])), 90,
             what="the remote job running in the cloud pool")
    schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {job}")
    wait_for(lambda: not list(topo.cloud.schedd().query('TestTag =?= "rm"', ["ClusterId"])), 90,
             what="the remote job removed")
    [gone] = topo.cloud.schedd().history('TestTag =?= "rm"', ["JobStatus"])
    assert gone["JobStatus"] == 3
