"""Job steering on a real pool with one plain and one cloud node (issue 2, acceptance 2).

Where each job ran is read back from the schedd's job history (LastRemoteHost),
not from our own code.
"""

import sys
import textwrap

import htcondor2
import pytest

from condor_plugins.localpool import wait_for
from conftest import worker_token

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def site(condor_module):
    pool = condor_module.site_pool("steer", extra_config=(
        "CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS = True\n"
        "CLOUD_PLUGINS_SUBMIT_TRANSFORM = True\n"))
    plain = condor_module.node(pool, "plain", cpus=2)
    cloud = condor_module.node(pool, "cloud", cpus=2, cloud=True, token=worker_token(pool, "cloud"))
    return pool, plain, cloud


def wrapper(pool, *args, submit_text, cwd):
    sub = cwd / "job.sub"
    sub.write_text(textwrap.dedent(submit_text))
    res = pool.run(sys.executable, "-m", "condor_plugins.steering.submit_wrapper", *args, str(sub),
                   check=False, env={"PYTHONPATH": ":".join(sys.path)})
    assert res.returncode == 0, res.stderr
    return int(res.stdout.strip().rsplit("cluster", 1)[1].strip(" ."))


def finished_hosts(pool, cluster, count, timeout=90):
    """Wait until ``count`` procs of ``cluster`` completed; return their LastRemoteHost."""
    schedd = pool.schedd()

    def done():
        ads = list(schedd.history(f"ClusterId == {cluster} && JobStatus == 4",
                                  ["ProcId", "LastRemoteHost", "ExitCode"]))
        return ads if len(ads) >= count else None
    try:
        ads = wait_for(done, timeout, what=f"{count} jobs of cluster {cluster} in the history")
    except TimeoutError as exc:
        diag = pool.run("condor_q", "-better-analyze", str(cluster), check=False).stdout[-3000:]
        held = pool.run("condor_q", str(cluster), "-af", "JobStatus", "HoldReason", check=False).stdout
        raise TimeoutError(f"{exc}\n{held}\n{diag}") from None
    assert all(a.get("ExitCode") == 0 for a in ads)
    return [a["LastRemoteHost"] for a in ads]


def node_of(host):
    # slot1_1@cloud@vm -> cloud
    return host.split("@")[1]


JOB = """\
    executable = /bin/sh
    arguments = "-c 'echo ran'"
    output = out.$(Process)
    error = err.$(Process)
    log = job.log
    should_transfer_files = IF_NEEDED
    request_memory = 64
    {extra}
    queue {n}
"""


@pytest.mark.parametrize("mode,expect", [("cloud", {"cloud"}), ("local", {"plain"})])
def test_mode_steers_jobs(site, tmp_path, mode, expect):
    pool, _, _ = site
    tmp_path.chmod(0o777)
    cluster = wrapper(pool, "--mode", mode, submit_text=JOB.format(extra="", n=4), cwd=tmp_path)
    hosts = finished_hosts(pool, cluster, 4)
    assert {node_of(h) for h in hosts} == expect


def test_any_mode_runs_on_either(site, tmp_path):
    pool, _, _ = site
    cluster = wrapper(pool, "--mode", "any", submit_text=JOB.format(extra="", n=6), cwd=tmp_path)
    hosts = finished_hosts(pool, cluster, 6)
    assert {node_of(h) for h in hosts} <= {"plain", "cloud"}
    ad = pool.schedd().history(f"ClusterId == {cluster}", ["Requirements", "CloudMode"], match=1)
    ad = list(ad)[0]
    assert ad["CloudMode"] == "any" and "IsCloudNode" not in str(ad["Requirements"])


def test_cloud_job_the_cloud_node_cannot_run_stays_idle(site, tmp_path):
    """The user's requirement (not on a 'local' cloud) is kept: the job never runs,
    although the plain node could run it."""
    pool, _, _ = site
    extra = 'requirements = (TARGET.CloudProvider =!= "local")'
    cluster = wrapper(pool, "--mode", "cloud", submit_text=JOB.format(extra=extra, n=1), cwd=tmp_path)
    # A job the plain node can run, submitted after it, completes meanwhile.
    control = wrapper(pool, "--mode", "local", submit_text=JOB.format(extra=extra, n=1), cwd=tmp_path)
    assert {node_of(h) for h in finished_hosts(pool, control, 1)} == {"plain"}
    ad = pool.schedd().query(f"ClusterId == {cluster}", ["JobStatus", "NumJobStarts", "Requirements"])[0]
    assert ad["JobStatus"] == 1 and ad.get("NumJobStarts", 0) == 0
    assert "CloudProvider" in str(ad["Requirements"]) and "IsCloudNode" in str(ad["Requirements"])
    pool.schedd().act(htcondor2.JobAction.Remove, f"ClusterId == {cluster}")


@pytest.mark.parametrize("mode,expect", [("cloud", {"cloud"}), ("local", {"plain"})])
def test_schedd_transform_steers_jobs_from_the_bindings(site, tmp_path, mode, expect):
    """A job submitted with the Python bindings carrying only CloudMode is steered
    by the shipped schedd transform."""
    pool, _, _ = site
    tmp_path.chmod(0o777)
    sub = htcondor2.Submit({
        "executable": "/bin/true", "log": str(tmp_path / "job.log"), "request_memory": "64",
        "should_transfer_files": "IF_NEEDED", "MY.CloudMode": f'"{mode}"'})
    cluster = pool.schedd().submit(sub, count=3).cluster()
    assert {node_of(h) for h in finished_hosts(pool, cluster, 3)} == expect
    ad = list(pool.schedd().history(f"ClusterId == {cluster}", ["CloudModeApplied", "Requirements"], match=1))[0]
    assert ad["CloudModeApplied"] == mode
    assert str(ad["Requirements"]).count("IsCloudNode") == 1


@pytest.mark.parametrize("universe", ["java", "parallel"])
def test_schedd_transform_steers_java_and_parallel_jobs(site, universe):
    """Issue 16: every universe that lands on a startd gets the mode's clause."""
    pool, _, _ = site
    desc = {"universe": universe, "executable": "/bin/true", "MY.CloudMode": '"local"',
            "hold": "true"}
    if universe == "parallel":
        desc["machine_count"] = "1"
    else:
        desc["arguments"] = "Main"
    cluster = pool.schedd().submit(htcondor2.Submit(desc)).cluster()
    [ad] = pool.schedd().query(f"ClusterId == {cluster}", ["CloudModeApplied", "Requirements"])
    pool.schedd().act(htcondor2.JobAction.Remove, f"ClusterId == {cluster}")
    assert ad["CloudModeApplied"] == "local"
    assert "IsCloudNode =!= true" in str(ad["Requirements"]).replace("isnt", "=!="), ad


def test_unknown_mode_is_refused_at_submit(site):
    pool, _, _ = site
    sub = htcondor2.Submit({"executable": "/bin/true", "MY.CloudMode": '"clouds"'})
    with pytest.raises(Exception, match="CloudMode must be"):
        pool.schedd().submit(sub)


def test_wrapper_plus_transform_adds_the_clause_once(site, tmp_path):
    pool, _, _ = site
    cluster = wrapper(pool, "--mode", "cloud", submit_text=JOB.format(extra="", n=1), cwd=tmp_path)
    ad = pool.schedd().query(f"ClusterId == {cluster}", ["Requirements"])
    ad = ad[0] if ad else list(pool.schedd().history(f"ClusterId == {cluster}", ["Requirements"], match=1))[0]
    assert str(ad["Requirements"]).count("IsCloudNode") == 1
