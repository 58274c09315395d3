"""End to end on a real Slurm (issue 19): provisioner -> ssh to the login node
(key only) -> sbatch -> a pilot job on a slurmd node of its own namespaces, as
the allocation's user ``hpcpilot`` -> a user-space HTCondor that joins the
site pool with its own IDTOKEN -> jobs run there -> the pilot retires by
pulling and its Slurm job completes.  The bed is tests/slurm_bed.py."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import htcondor2
import pytest

from condor_plugins.localpool import wait_for
from provtools import VM_ADDRESS, ProvMaker, cmdlines, site_pool, vm_timing
from slurm_bed import slurm_bed  # noqa: F401  (the module's fixture)

pytestmark = pytest.mark.integration

ENTRY = "hpc"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")
#: The job: who and where it ran, then a sleep that is long on its first
#: start only (NumJobStarts, or NumShadowStarts after a start the schedd did
#: not hear of, in its own job ad).
JOB = """#!/bin/bash
get() { sed -n "s/^$1 = //p" "$_CONDOR_JOB_AD"; }
starts=$(get NumJobStarts); shadows=$(get NumShadowStarts)
[ "${shadows:-0}" -gt "${starts:-0}" ] && starts=$shadows
echo "uid=$(id -u) host=$(hostname) starts=$starts"
if [ "${starts:-0}" -le 1 ]; then sleep "$1"; else sleep "$2"; fi
"""


@pytest.fixture
def site(condor, request, slurm_bed, tmp_path):  # noqa: F811
    """The site's central manager on the nodes' network, and provisioners with
    a slurm entry reaching the bed over ssh."""
    pool = site_pool(condor, "slurm", address=VM_ADDRESS)
    out = slurm_bed.dir / f"pilots-{request.node.name[5:25]}"
    out.mkdir(mode=0o1777)
    out.chmod(0o1777)   # the pilots (user hpcpilot) write their own lines here
    make = ProvMaker(pool, condor.base, request.node.name, ENTRY, {
        "TYPE": "slurm", **slurm_bed.provider_settings("ssh"), "CPUS": 1, "MEMORY": 512,
        "DISK": 1000, "WALLTIME": "10m", "PILOT_MARGIN": 30, "DEFAULT_RUNTIME": 60,
        "CONTROL_PERIOD": 1, "SHUTDOWN_GRACE": 5, "JOIN_TIMEOUT": 120, "COMMAND_TIMEOUT": 30,
        "USER_DATA_TEMPLATE_DIR": vm_timing(tmp_path), "OUTPUT": f"{out}/%j.out", "PILOT_DIR": str(out)})
    def made(**knobs):   # without the local provider's settings (they would be typos)
        prov = make(**knobs)
        for name in ("STATE_DIR", "WORKER_IDLE_SHUTDOWN"):
            prov.knobs.pop(f"CLOUD_PLUGINS_{ENTRY.upper()}_{name}", None)
        prov.configure()
        return prov
    yield pool, made
    for prov in make.made:
        for proc in prov.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    slurm_bed.remote("scancel --user=hpcpilot", check=False)
    wait_for(lambda: not slurm_bed.live_jobs(), 60, what="the bed's queue empty")


def submit(pool, tmp_path, count, first, later=5, **attrs):
    tmp_path.chmod(0o777)
    script = tmp_path / "job.sh"
    script.write_text(JOB)
    script.chmod(0o755)
    desc = {"executable": str(script), "arguments": f"{first} {later}", "request_cpus": "1",
            "request_memory": "64", "request_disk": "1000", "should_transfer_files": "YES",
            "output": str(tmp_path / "out.$(ProcId)"), "error": str(tmp_path / "err.$(ProcId)"),
            "log": str(tmp_path / "job.log"), "MY.CloudMode": '"cloud"'}
    desc.update({f"MY.{k}": str(v) for k, v in attrs.items()})
    return pool.schedd().submit(htcondor2.Submit(desc), count=count).cluster()


def done(pool, cluster, count):
    ads = list(pool.schedd().history(f"ClusterId == {cluster}",
                                     ["ProcId", "LastRemoteHost", "ExitCode", "NumJobStarts",
                                      "JobStatus", "MachineAttrCloudRequestID0"]))
    ads = [a for a in ads if a.get("JobStatus") == 4]
    return ads if len(ads) >= count else None


def pilot_output(bed):
    return "\n".join(f"{p}: {p.read_text()[-1500:]}" for p in bed.dir.glob("pilots-*/*.out"))


def cli(prov, *args):
    res = subprocess.run([sys.executable, "-m", "condor_plugins.cli", *args], env=prov.env(),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout + res.stderr


def pilots(bed, prov):
    """Slurm job id -> (state, reason) of this provisioner's pilots."""
    out = bed.local("squeue", "--all", "--states=all", "--noheader",
                    "--format=%i|%T|%r|%k").stdout
    mine = f"provisioner=prov-{prov.name}"
    return {r[0]: (r[1], r[2]) for r in (line.split("|") for line in out.splitlines())
            if len(r) == 4 and mine in r[3]}


def test_burst_runs_jobs_on_pilots_that_retire_and_leave_the_queue(site, slurm_bed, tmp_path):  # noqa: F811
    pool, make = site
    prov = make(MAX_INSTANCES=2, MAX_BOOTING=2, IDLE_TIMEOUT=8)
    cluster = submit(pool, tmp_path, 3, 8)
    proc = prov.start()
    seen, ads_seen = [], {}

    def finished():
        seen.extend(cmdlines())
        for ad in pool.collector().query(htcondor2.AdType.Startd, "IsCloudNode is True",
                                         ["Name", "CloudProvider", "SlurmJobId",
                                          "CloudInstanceID", "CloudLeaseExpires",
                                          "CloudPilotRetireTime"]):
            ads_seen[ad["Name"]] = ad
        return done(pool, cluster, 3)
    try:
        ads = wait_for(finished, 240, interval=1, what="3 jobs done on Slurm pilots")
    except TimeoutError:
        pytest.fail(f"{prov.log_text()[-4000:]}\n{pilot_output(slurm_bed)}")
    ran = pilots(slurm_bed, prov)
    assert 1 <= len(ran) <= 2, ran
    # The jobs ran on the pilots (their request ids), as the allocation's user
    # on a Slurm node, not as the test user on this host.
    requests = {a["MachineAttrCloudRequestID0"] for a in ads}
    assert all(r.startswith(f"{ENTRY}-") for r in requests), requests
    for i in range(3):
        out = (tmp_path / f"out.{i}").read_text()
        assert "uid=4343" in out and re.search(r"host=node\d", out), out
    assert ads_seen
    for ad in ads_seen.values():   # the Slurm job id, and the walltime's end as the lease
        assert ad["CloudProvider"] == "slurm"
        assert ad["SlurmJobId"] == ad["CloudInstanceID"] in ran
        assert 0 < ad["CloudLeaseExpires"] - time.time() <= 600
        assert ad.eval("CloudPilotRetireTime") == ad["CloudLeaseExpires"] - 30   # the margin
    status = cli(prov, "status")
    # Demand gone: the pilots retire by pulling, HTCondor exits, and their
    # Slurm jobs end by themselves (COMPLETED, not cancelled or timed out).
    wait_for(lambda: not slurm_bed.live_jobs("hpcpilot"), 120, interval=1,
             what="every pilot's Slurm job ended")
    final = pilots(slurm_bed, prov)
    assert {s for s, _ in final.values()} <= {"COMPLETED", "CANCELLED"}, final
    assert "COMPLETED" in {s for s, _ in final.values()}, final
    assert prov.stop(proc) == 0
    text = prov.log_text()
    assert "by pulling" in text and "as a failure" not in text and "Traceback" not in text
    # No token on a command line, in the log, the status or the queue's comments.
    queue = slurm_bed.local("squeue", "--all", "--states=all", "--format=%i %j %k").stdout
    for name, body in {"log": text, "status": status, "queue": queue,
                       "cmdlines": "\n".join(seen)}.items():
        assert not JWT.search(body), f"a token in the {name}"


def test_walltime_a_pilot_takes_only_jobs_that_fit_and_requeues_an_overrun(
        site, slurm_bed, tmp_path):  # noqa: F811
    """Walltime 1 min, margin 30 s: a job declaring 1 h is never counted nor
    started; a job declaring 5 s that really runs 5 min on its first start is
    vacated by its pilot before the walltime, requeued, and completes on
    another pilot.  Its first pilot's Slurm job ends before its walltime."""
    pool, make = site
    prov = make(WALLTIME="1m", PILOT_MARGIN=30, PILOT_STARTUP=10, MAX_INSTANCES=2, MAX_BOOTING=1,
                IDLE_TIMEOUT=300)
    (tmp_path / "long").mkdir()
    long_job = submit(pool, tmp_path / "long", 1, 5, MaxWallTime=3600)
    overrun = submit(pool, tmp_path, 1, 300, 3, MaxWallTime=5)
    proc = prov.start()
    first = wait_for(lambda: [j for j, (s, _) in pilots(slurm_bed, prov).items()
                              if s == "RUNNING"], 60, what="a pilot running")[0]
    states = {}

    def finished():   # every pilot's last state (Slurm forgets them after MinJobAge)
        states.update(pilots(slurm_bed, prov))
        return done(pool, overrun, 1)
    try:
        ads = wait_for(finished, 300, interval=2,
                       what="the overrunning job done on a second pilot")
    except TimeoutError:
        pytest.fail(f"{prov.log_text()[-4000:]}")
    (ad,) = ads
    assert ad["ExitCode"] == 0 and ad["NumJobStarts"] >= 2
    assert "starts=2" in (tmp_path / "out.0").read_text()
    assert len(states) >= 2 and states[first][0] == "COMPLETED", states  # not TIMEOUT
    # The 1 h job: never started, and left out of demand with the reason.
    (job,) = pool.schedd().query(f"ClusterId == {long_job}", ["JobStatus", "NumJobStarts"])
    assert job["JobStatus"] == 1 and not job.get("NumJobStarts")
    status = cli(prov, "status")
    assert "CloudPilotUsableTime (20)" in status, status
    prov.stop(proc)


def test_pending_pilots_are_booting_not_failures_and_cancelled_without_demand(
        site, slurm_bed, tmp_path):  # noqa: F811
    pool, make = site
    slurm_bed.partition("short", "down")
    try:
        prov = make(PARTITION="short", MAX_INSTANCES=4, MAX_BOOTING=2, JOIN_TIMEOUT=5)
        cluster = submit(pool, tmp_path, 4, 5)
        proc = prov.start()
        queued = wait_for(lambda: len(p := pilots(slurm_bed, prov)) == 2 and p, 60,
                          what="two pilots in the queue")
        time.sleep(12)   # beyond JOIN_TIMEOUT: still no failure, still two
        now = pilots(slurm_bed, prov)
        assert set(now) == set(queued), (queued, now)
        assert all(v == ("PENDING", "PartitionDown") for v in now.values()), now
        status = cli(prov, "status")
        assert "queued (PartitionDown)" in status, status
        # The demand goes away: the queued pilots are cancelled, not as failures.
        pool.schedd().act(htcondor2.JobAction.Remove, f"ClusterId == {cluster}")
        wait_for(lambda: all(s == "CANCELLED" for s, _ in pilots(slurm_bed, prov).values()),
                 60, what="the queued pilots cancelled")
        assert prov.stop(proc) == 0
        text = prov.log_text()
        assert "cancelled while queued" in text
        assert "as a failure" not in text and "backing off" not in text, text[-3000:]
    finally:
        slurm_bed.partition("short", "up")


def test_slurm_errors_are_one_line_per_cycle_with_backoff(site, slurm_bed, tmp_path):  # noqa: F811
    pool, make = site
    submit(pool, tmp_path, 1, 5)
    bad = make(PARTITION="nosuchpartition", BACKOFF_INITIAL=3)
    proc = bad.start()
    try:
        wait_for(lambda: bad.log_text().count("invalid partition") >= 2, 60,
                 what="two failed submissions")
    except TimeoutError:
        pytest.fail(bad.log_text()[-3000:])
    bad.stop(proc)
    gone = make(SSH_PORT=1)   # nothing listens: Slurm (its login node) unreachable
    proc = gone.start()
    wait_for(lambda: gone.log_text().count("Listing of provider entry hpc failed") >= 3, 60,
             what="three failed listings")
    gone.stop(proc)
    text = bad.log_text()
    assert "Traceback" not in text + gone.log_text()
    (line,) = {re.sub(r"^\S+ \S+ ", "", ln) for ln in text.splitlines()
               if "Create for entry" in ln}
    assert "Create for entry hpc failed (error): sbatch on hpcpilot@198.18.0.1" in line, line
    assert "backing off" in text
    lines = [ln for ln in gone.log_text().splitlines() if "Listing of provider entry" in ln]
    assert all("(transient)" in ln and "Connection refused" in ln for ln in lines), lines[:3]
    assert not slurm_bed.live_jobs("hpcpilot")


def test_a_pilot_killed_by_slurm_while_a_job_runs_loses_no_job(site, slurm_bed, tmp_path):  # noqa: F811
    """Slurm ends the pilot at a walltime the pilot never knew (shortened after
    it started, as an admin or a reservation does): SIGTERM to every process,
    then SIGKILL.  The job is requeued and completes on another pilot."""
    pool, make = site
    prov = make(MAX_INSTANCES=2, MAX_BOOTING=1, IDLE_TIMEOUT=300)
    cluster = submit(pool, tmp_path, 1, 300, 3, MaxWallTime=5)
    proc = prov.start()
    host = wait_for(lambda: next((j.get("RemoteHost") for j in pool.schedd().query(
        f"ClusterId == {cluster} && JobStatus == 2", ["RemoteHost"])), None), 90,
        what="the job running on a pilot")
    request = host.split("@")[1]
    pilot = wait_for(lambda: next((j for j, (s, _) in pilots(slurm_bed, prov).items()
                                   if s == "RUNNING"), None), 30, what="its pilot")
    time.sleep(2)
    slurm_bed.remote(f"scontrol update JobId={pilot} TimeLimit=0:01 >/dev/null")
    states = {}

    def finished():
        states.update(pilots(slurm_bed, prov))
        return done(pool, cluster, 1)
    try:
        (ad,) = wait_for(finished, 240, interval=2, what="the job done on another pilot")
    except TimeoutError:
        pytest.fail(f"{states}\n{prov.log_text()[-3000:]}\n{pilot_output(slurm_bed)}")
    assert states[pilot][0] == "TIMEOUT", states
    assert ad["ExitCode"] == 0 and ad["NumJobStarts"] >= 2
    assert ad["MachineAttrCloudRequestID0"] != request
    assert "starts=2" in (tmp_path / "out.0").read_text()
    prov.stop(proc)


def test_local_access_submits_lists_describes_and_cancels(slurm_bed):  # noqa: F811
    """ACCESS = local (the provisioner on a login node): the same provider
    through sbatch, squeue and scancel run here, as the test user."""
    from condor_plugins.providers.base import InstanceSpec, InstanceState, instance_tags
    from condor_plugins.providers.slurm import SlurmProvider
    user_data = "#cloud-config\nwrite_files:\n- path: /etc/x.conf\n  content: x\n"
    p = SlurmProvider(ENTRY, {**slurm_bed.provider_settings("local"), "PARTITION": "short",
                              "WALLTIME": "10m", "OUTPUT": "/dev/null",
                              "CONDOR_LOCATION": "/nonexistent"})
    size = p.describe(InstanceSpec(ENTRY, "", "", 1, 100, 0))
    assert (size.cpus, size.memory_mb) == (2, 2048)
    slurm_bed.partition("short", "down")   # it stays queued
    try:
        tags = instance_tags("pool", "prov-local", ENTRY, "hpc-local1")
        [inst] = p.create(InstanceSpec(ENTRY, "", "", 1, 100, 0), 1, tags, user_data,
                          "hpc-local1")
        [listed] = p.list({"condor-plugins/provisioner": "prov-local"})
        assert (listed.id, listed.state, listed.reason) == (inst.id, InstanceState.PENDING,
                                                            "PartitionDown")
        assert listed.tags == tags
        assert slurm_bed.jobs()[inst.id][2] == "cptest"
        p.terminate([inst.id])
        p.terminate([inst.id])   # idempotent
        wait_for(lambda: p.list({"condor-plugins/provisioner": "prov-local"})[0].state
                 is InstanceState.TERMINATED, 30, what="the pilot cancelled")
    finally:
        slurm_bed.partition("short", "up")
        p.close()
