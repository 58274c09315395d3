"""The slurm provider and its pilot, against a scripted executor (no Slurm):
the sbatch arguments, tags through the comment, squeue parsing, error mapping,
idempotent scancel, and the pilot script.  tests/test_slurm_e2e.py runs them
against a real Slurm."""

import base64
import os
import subprocess

import pytest
import yaml

from condor_plugins.config import ConfigError
from condor_plugins.node.pilot import PILOT_CONF, PilotSettings, render_pilot
from condor_plugins.providers import provider_class
from condor_plugins.providers.base import (AuthError, InstanceSpec, InstanceState, ProviderError,
                                           QuotaError, TransientError, instance_tags, owner_tags)
from condor_plugins.providers.executors import Result, SSHExecutor
from condor_plugins.providers.slurm import SlurmProvider, _comment, _duration, _tags

TOKEN = "eyJhbGciOiJIUzI1NiJ9." + "a" * 40 + "." + "b" * 43
USER_DATA = "#cloud-config\n" + yaml.safe_dump({"write_files": [
    {"path": "/etc/condor/config.d/60-cloud-instance.conf", "permissions": "0644",
     "content": "CLOUD_PLUGINS_REQUEST_ID = hpc-1\n"},
    {"path": "/etc/condor/tokens.d/cloud-worker", "permissions": "0600",
     "content": TOKEN + "\n"},
    {"path": "/etc/x.bin", "permissions": "0640", "encoding": "b64",
     "content": base64.b64encode(b"\x00\x01binary").decode()}]})
SPEC = InstanceSpec("hpc", "", "", 4, 4000, 0)


class Script:
    """An executor that answers from a table and records what it was asked."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def run(self, argv, stdin=""):
        self.calls.append((list(argv), stdin))
        for word, result in self.answers.items():
            if word in argv:
                if isinstance(result, Exception):
                    raise result
                return result
        return Result(0, "", "")

    def describe(self):
        return "login.example"

    def close(self):
        pass


def provider(answers, **settings):
    p = SlurmProvider("hpc", {"PARTITION": "batch", "WALLTIME": "2h", **settings})
    p.exec = Script(answers)
    return p


def test_registered_as_an_entry_point_and_a_batch_queue():
    assert provider_class("slurm", "hpc") is SlurmProvider and SlurmProvider.queued


def test_create_submits_one_pilot_per_instance_on_stdin_with_the_tags():
    p = provider({"sbatch": Result(0, "4242;cluster\n", "")}, ACCOUNT="cms", QOS="opp",
                 CONSTRAINT="haswell")
    tags = instance_tags("pool", "prov", "hpc", "hpc-1")
    [inst] = p.create(SPEC, 1, tags, USER_DATA, "hpc-1")
    assert (inst.id, inst.state) == ("4242", InstanceState.PENDING)
    argv, stdin = p.exec.calls[0]
    assert {"--partition=batch", "--account=cms", "--qos=opp", "--constraint=haswell",
            "--cpus-per-task=4", "--mem=4000", "--time=0-02:00:00", "--job-name=cp-hpc-1",
            "--no-requeue"} <= set(argv)
    assert not any(TOKEN in a for a in argv), "the token must never be on a command line"
    assert TOKEN not in stdin  # base64 in the script, not verbatim
    assert stdin.startswith("#!/bin/bash")
    comment = next(a for a in argv if a.startswith("--comment="))[len("--comment="):]
    assert _tags(comment) == tags


def test_squeue_listing_states_tags_and_times():
    tags = instance_tags("pool", "prov", "hpc", "r1")
    c = _comment(tags)
    other = _comment(instance_tags("pool", "someone-else", "hpc", "r9"))
    out = "\n".join([
        f"11|PENDING|100|N/A|PartitionDown|{c}|",
        f"12|RUNNING|100|200|None|{c}|node1",
        f"13|PENDING|100|N/A|InvalidAccount|{c}|",
        f"14|TIMEOUT|100|200|None|{c}|node2",
        f"15|RUNNING|100|200|None|{other}|node1",
        "16|RUNNING|100|200|None|somebody's own job|node1",
        f"17|COMPLETING|100|200|None|{c}|node1",
        f"18|SUSPENDED|100|200|None|{c}|node1",          # resumes: keeps its allocation
        f"19|EXPEDITING|100|200|None|{c}|node1",         # a newer Slurm's state
        f"20|PENDING|100|N/A|PartitionTimeLimit|{c}|"])  # WALLTIME > the partition's
    p = provider({"squeue": Result(0, out + "\n", "")})
    got = {i.id: i for i in p.list(owner_tags("pool", "prov"))}
    assert set(got) == {"11", "12", "13", "14", "17", "18", "19", "20"}
    assert (got["11"].state, got["11"].reason, got["11"].launch_time) == (
        InstanceState.PENDING, "PartitionDown", 100.0)
    assert (got["12"].state, got["12"].launch_time, got["12"].address) == (
        InstanceState.RUNNING, 200.0, "node1")
    assert got["13"].state is InstanceState.ERROR          # never starts
    assert (got["14"].state, got["14"].reason) == (InstanceState.TERMINATED, "timeout")
    assert got["17"].state is InstanceState.STOPPING
    assert (got["18"].state, got["18"].reason) == (InstanceState.RUNNING, "suspended")
    assert got["19"].state is InstanceState.RUNNING          # never taken for over
    assert got["20"].state is InstanceState.ERROR
    argv = p.exec.calls[0][0]
    assert "--me" in argv and "--all" in argv and "SLURM_TIME_FORMAT=%s" in argv


@pytest.mark.parametrize("stderr, kind", [
    ("sbatch: error: Batch job submission failed: Unable to contact slurm controller "
     "(connect failure)", TransientError),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition "
     "combination specified", ProviderError),
    ("sbatch: error: Batch job submission failed: Invalid partition name specified",
     ProviderError),
    ("sbatch: error: QOSMaxSubmitJobPerUserLimit", QuotaError),
    ("sbatch: error: Batch job submission failed: Access/permission denied", AuthError),
    # sbatch's retries come first; the cause may be on any line.
    ("sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\n"
     "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
     TransientError),
    ("sbatch: error: Munge encode failed: Failed to access \"/run/munge/munge.socket.2\"\n"
     "sbatch: error: Batch job submission failed: Protocol authentication error",
     TransientError)])
def test_sbatch_errors_map_to_typed_provider_errors(stderr, kind):
    p = provider({"sbatch": Result(1, "", stderr + "\n")})
    with pytest.raises(ProviderError) as err:
        p.create(SPEC, 1, {}, USER_DATA, "r")
    assert type(err.value) is kind
    assert "login.example" in err.value.message and "\n" not in err.value.message


def test_scancel_is_idempotent_and_reports_other_errors():
    provider({"scancel": Result(1, "", "scancel: error: Kill job error on job id 12: "
                                       "Invalid job id specified\n")}).terminate(["12"])
    with pytest.raises(ProviderError, match="Unable to contact"):
        provider({"scancel": Result(1, "", "scancel: error: Unable to contact slurm "
                                           "controller\n")}).terminate(["12"])
    p = provider({})
    p.terminate(["12; rm -rf /"])   # never passed on: not a job id
    assert p.exec.calls == []


def test_describe_is_the_smallest_node_of_the_partition():
    p = provider({"sinfo": Result(0, "batch|8|16000\nbatch|4+|8000\n", "")})
    t = p.describe(SPEC)
    assert (t.cpus, t.memory_mb) == (4, 8000)
    # Without PARTITION: the cluster's default one (sinfo marks it *).
    p = provider({"sinfo": Result(0, "big|2|1000\nbatch*|8|16000\n", "")}, PARTITION="")
    assert (p.describe(SPEC).cpus, p.describe(SPEC).memory_mb) == (8, 16000)
    # RealMemory unset: Slurm says 1 MB; never a pilot of 1 MB.
    p = provider({"sinfo": Result(0, "batch|8|1\n", "")})
    with pytest.raises(ProviderError, match="CLOUD_PLUGINS_HPC_MEMORY"):
        p.describe(SPEC)


def test_bad_settings_name_their_knob():
    with pytest.raises(ConfigError, match="CLOUD_PLUGINS_HPC_ACCESS"):
        SlurmProvider("hpc", {"ACCESS": "carrier-pigeon"})
    with pytest.raises(ConfigError, match="CLOUD_PLUGINS_HPC_SSH_HOST"):
        SlurmProvider("hpc", {"ACCESS": "ssh"})
    with pytest.raises(ConfigError, match="CLOUD_PLUGINS_HPC_PILOT_MARGIN"):
        SlurmProvider("hpc", {"WALLTIME": "5m", "PILOT_MARGIN": "10m"})
    with pytest.raises(ConfigError, match="CLOUD_PLUGINS_HPC_PILOT_STARTUP"):
        SlurmProvider("hpc", {"WALLTIME": "5m", "PILOT_MARGIN": "3m", "PILOT_STARTUP": "2m"})
    # A new pilot's usable time: the walltime less the margin and its startup.
    assert SlurmProvider.template_attrs({"WALLTIME": "1h"})["CloudPilotUsableTime"] == "3180"
    with pytest.raises(ConfigError, match="CLOUD_PLUGINS_HPC_WALLTIME"):
        SlurmProvider("hpc", {"WALLTIME": "soon"})


def test_ssh_executor_is_key_only_and_maps_a_refused_login(tmp_path):
    settings = {"ACCESS": "ssh", "SSH_HOST": "login.example", "SSH_USER": "pilot",
                "SSH_KEY": str(tmp_path / "key"), "SSH_PORT": "2222"}
    p = SlurmProvider("hpc", settings)
    assert isinstance(p.exec, SSHExecutor)
    cmd = p.exec._ssh()
    assert "BatchMode=yes" in cmd and "-i" in cmd and "2222" in cmd
    p.close()


def test_duration_rounds_up_to_minutes():
    assert [_duration(s) for s in (1, 60, 61, 86400, 90061)] == [
        "0-00:01:00", "0-00:01:00", "0-00:02:00", "1-00:00:00", "1-01:02:00"]


def test_pilot_script_writes_every_file_privately_and_runs_condor(tmp_path):
    """The script's file part, run for real: a 0700 directory with each file
    at its path and mode, the pilot fragment, and no token outside it."""
    script = render_pilot(USER_DATA, PilotSettings(condor="/nonexistent", walltime=600,
                                                   workdir=str(tmp_path)))
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    # No HTCondor at /nonexistent: it stops before condor_master, after the files.
    stop = script.replace('trap \'rm -rf "$dir"\' EXIT', 'echo "$dir" > ' + str(tmp_path / "d"))
    res = subprocess.run(["bash"], input=stop, text=True, capture_output=True,
                         env={"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "77"})
    assert res.returncode == 1 and "no HTCondor at /nonexistent" in res.stdout
    d = (tmp_path / "d").read_text().strip()
    import os
    import stat
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    tok = os.path.join(d, "etc/condor/tokens.d/cloud-worker")
    assert stat.S_IMODE(os.stat(tok).st_mode) == 0o600
    assert open(tok).read().strip() == TOKEN
    assert open(os.path.join(d, "etc/x.bin"), "rb").read() == b"\x00\x01binary"
    assert os.path.exists(os.path.join(d, PILOT_CONF.lstrip("/")))
    assert TOKEN not in res.stdout + res.stderr


def test_pilot_refuses_paths_outside_its_directory():
    bad = "#cloud-config\n" + yaml.safe_dump({"write_files": [
        {"path": "/etc/../../x", "content": "x"}]})
    with pytest.raises(ConfigError, match="not a file a pilot can write"):
        render_pilot(bad, PilotSettings())
    with pytest.raises(ConfigError, match="absolute path"):
        render_pilot(USER_DATA, PilotSettings(condor="relative/condor"))


def test_a_misspelled_setting_is_named_with_the_closest_one():
    from condor_plugins.config import unknown_knobs
    param = {"CLOUD_PLUGINS_PROVIDERS": "hpc", "CLOUD_PLUGINS_HPC_TYPE": "slurm",
             "CLOUD_PLUGINS_HPC_PARTITON": "batch", "CLOUD_PLUGINS_HPC_ACCOUNT": "cms",
             "CLOUD_PLUGINS_HPC_PENDING_TIMEOUT": "2h", "CLOUD_PLUGINS_HPC_REGION": "x"}
    (warning,) = unknown_knobs(param)
    assert "CLOUD_PLUGINS_HPC_PARTITON" in warning
    assert "did you mean CLOUD_PLUGINS_HPC_PARTITION?" in warning


def test_the_template_takes_only_jobs_that_fit_the_walltime():
    """Demand: a slurm entry's template ad matches a job only if its declared
    runtime fits WALLTIME - PILOT_MARGIN (what the pilot's START says)."""
    import classad2
    import htcondor2  # noqa: F401  (HTCondor's ClassAd functions)
    from condor_plugins import config as cfgmod
    from condor_plugins.provisioning.demand import group_jobs
    from condor_plugins.provisioning.explain import first_failure
    from condor_plugins.provisioning.observe import template_ad
    param = {"CLOUD_PLUGINS_PROVIDERS": "hpc", "CLOUD_PLUGINS_HPC_TYPE": "slurm",
             "CLOUD_PLUGINS_HPC_WALLTIME": "1h", "CLOUD_PLUGINS_HPC_PILOT_MARGIN": "300",
             "CLOUD_PLUGINS_HPC_PILOT_STARTUP": "0",
             "CLOUD_PLUGINS_HPC_DEFAULT_RUNTIME": "600", "CLOUD_PLUGINS_HPC_CPUS": "4",
             "CLOUD_PLUGINS_HPC_MEMORY": "8000", "FULL_HOSTNAME": "ce"}
    cfg = cfgmod.load(param)
    template = template_ad(cfg.entry("hpc"), cfg, param)

    def job(**attrs):
        ad = classad2.ClassAd({"RequestCpus": 1, "RequestMemory": 100, **attrs})
        ad["Requirements"] = classad2.ExprTree("TARGET.IsCloudNode =?= True")
        return ad
    fits = [job(), job(MaxWallTime=3300), job(MaxWallTimeMins=55), job(BatchRuntime=100),
            job(JobDurationEstimate=3000)]
    too_long = [job(MaxWallTime=3301), job(MaxWallTimeMins=56), job(BatchRuntime=7200),
                job(JobDurationEstimate=3600)]
    for ad in fits:
        assert template.symmetricMatch(ad), ad
    for ad in too_long:
        assert not template.symmetricMatch(ad), ad
    jobs, _, unmatched = group_jobs([(j, 1) for j in fits + too_long], {"hpc": template}, {})
    assert sum(d.count for d in jobs) == len(fits) and len(unmatched) == len(too_long)
    # Each group knows how long its jobs need a pilot for (its retire time).
    assert sorted((d.runtime, d.count) for d in jobs) == [(100, 1), (600, 1), (3000, 1),
                                                          (3300, 2)]
    # A joined pilot's real ad does not make a too-long job fit it.
    node = classad2.ClassAd({"IsCloudNode": True, "Cpus": 4, "Memory": 8000})
    jobs, mismatch, unmatched = group_jobs([(j, 1) for j in fits + too_long],
                                           {"hpc": template}, {"hpc": node})
    assert sum(d.count for d in jobs) == len(fits) and len(unmatched) == len(too_long)
    assert not mismatch   # not the churn brake's evidence
    why = first_failure(too_long[0], template)
    assert "CloudPilotUsableTime (3300)" in why, why


def test_the_fragment_uses_the_same_runtime_expression():
    from condor_plugins.localpool import shipped_config_dir
    from condor_plugins.node.pilot import job_runtime
    text = (shipped_config_dir() / "worker" / "55-cloud-pilot.conf").read_text()
    assert ("CLOUD_PLUGINS_JOB_RUNTIME = " + job_runtime("$(CLOUD_PLUGINS_PILOT_DEFAULT_RUNTIME)")
            + "\n") in text



def test_an_old_or_retiring_pilot_does_not_hide_the_demand_for_the_next_one(tmp_path):
    """Demand matches jobs against a joined node's real ad (the job's
    Requirements), never that node's own START: a pilot whose walltime is
    nearly over, or one asked to retire, refuses every job (its real START,
    from the shipped fragments), yet the jobs still count for the entry's
    next pilot; only the entry's template decides what a walltime allows."""
    import time
    import classad2
    import htcondor2  # noqa: F401  (HTCondor's ClassAd functions)
    from condor_plugins import config as cfgmod
    from condor_plugins.localpool import shipped_config_dir
    from condor_plugins.provisioning.demand import group_jobs, whole_node
    from condor_plugins.provisioning.observe import template_ad
    d = shipped_config_dir() / "worker"
    conf = tmp_path / "pilot.conf"
    conf.write_text(f"include : {d}/50-cloud-worker.conf\ninclude : {d}/55-cloud-pilot.conf\n")
    start = subprocess.run(["condor_config_val", "START"], capture_output=True, text=True,
                           timeout=30, env=dict(os.environ, CONDOR_CONFIG=str(conf)),
                           check=True).stdout.strip()
    now = int(time.time())
    node = classad2.ClassAd({"IsCloudNode": True, "Cpus": 1, "Memory": 100,
                             "TotalSlotCpus": 4, "TotalSlotMemory": 8000,
                             "DaemonStartTime": now - 3000,        # a 1 h walltime,
                             "CloudLeaseExpires": now + 600,       # 10 min left,
                             "CloudRetireRequested": True})        # and asked to retire
    node["Requirements"] = classad2.ExprTree(start)
    node["Start"] = classad2.ExprTree(start)
    node["CloudPilotRetireTime"] = classad2.ExprTree("CloudLeaseExpires - 300")
    job = classad2.ClassAd({"RequestCpus": 2, "RequestMemory": 1000, "MaxWallTime": 1800})
    job["Requirements"] = classad2.ExprTree("TARGET.IsCloudNode =?= True")
    assert not job.matches(node)     # the old pilot itself takes nothing now
    param = {"CLOUD_PLUGINS_PROVIDERS": "hpc", "CLOUD_PLUGINS_HPC_TYPE": "slurm",
             "CLOUD_PLUGINS_HPC_WALLTIME": "1h", "CLOUD_PLUGINS_HPC_CPUS": "4",
             "CLOUD_PLUGINS_HPC_MEMORY": "8000", "FULL_HOSTNAME": "ce"}
    cfg = cfgmod.load(param)
    template = template_ad(cfg.entry("hpc"), cfg, param)
    too_long = classad2.ClassAd({"RequestCpus": 1, "MaxWallTime": 3500})
    too_long["Requirements"] = classad2.ExprTree("TARGET.IsCloudNode =?= True")
    jobs, mismatch, unmatched = group_jobs([(job, 3), (too_long, 1)], {"hpc": template},
                                           {"hpc": whole_node(node)})
    assert [(j.count, j.cpus, j.entries) for j in jobs] == [(3, 2, ("hpc",))]
    assert not mismatch                           # no churn-brake evidence either
    assert [n for _, n in unmatched] == [1]       # a whole walltime is still the limit


def test_an_interrupted_pilot_stays_two_updates_before_its_startd_shuts_down(tmp_path):
    """STARTD.DAEMON_SHUTDOWN with the pilot's retiring expression (A || B):
    an interruption notice must not shut the startd down before the collector
    has seen it (two updates), exactly as on a VM."""
    import time
    import classad2
    import htcondor2  # noqa: F401
    from condor_plugins.localpool import shipped_config_dir
    d = shipped_config_dir() / "worker"
    conf = tmp_path / "pilot.conf"
    conf.write_text(f"include : {d}/50-cloud-worker.conf\ninclude : {d}/55-cloud-pilot.conf\n"
                    "UPDATE_INTERVAL = 2\n")
    text = subprocess.run(["condor_config_val", "STARTD.DAEMON_SHUTDOWN"], capture_output=True,
                          text=True, timeout=30, env=dict(os.environ, CONDOR_CONFIG=str(conf)),
                          check=True).stdout.strip()
    now = int(time.time())

    def shutdown(**attrs):
        ad = classad2.ClassAd({"DaemonStartTime": now - 100, **attrs})
        ad["CloudPilotRetireTime"] = now + 3000
        ad["Expr"] = classad2.ExprTree(text)
        return ad.eval("Expr")
    assert shutdown() is False
    assert shutdown(CloudInterruption="spot", CloudInterruptionSeen=now) is False
    assert shutdown(CloudInterruption="spot", CloudInterruptionSeen=now - 10) is True
    assert shutdown(CloudRetireRequested=True) is True


def test_a_pilot_removes_what_killed_pilots_left_and_nothing_else(tmp_path):
    """Directories of this user's pilots whose batch job is over (SIGKILLed
    before their trap ran, with their tokens) are removed at the next pilot's
    start; a live job's, an unknown one's (Slurm unreachable), and another
    directory are kept."""
    import os
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(
        "#!/bin/sh\ncase $3 in 11) echo RUNNING;; 12) echo COMPLETED;; 13) ;;\n"
        " 14) echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1;;\n"
        " *) echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1;;"
        "\nesac\n")
    (bin_dir / "squeue").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    for name, job in [("live", "11"), ("done", "12"), ("purged", "13"), ("gone", "14"),
                      ("unknown", "15"), ("requeued", "77"), ("foreign", None)]:
        d = work / f"cp-pilot.{name}"
        (d / "etc").mkdir(parents=True)
        (d / "etc" / "token").write_text("secret")
        if job:
            (d / "job").write_text(job + "\n")
    (work / "other").mkdir()
    script = render_pilot(USER_DATA, PilotSettings(condor="/nonexistent", walltime=600,
                                                   workdir=str(work)))
    res = subprocess.run(["bash"], input=script, text=True, capture_output=True,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "77"})
    assert res.returncode == 1, res.stdout + res.stderr
    left = sorted(os.listdir(work))
    assert left == ["cp-pilot.foreign", "cp-pilot.live", "cp-pilot.unknown", "other"], left
    assert "left by job 12 (COMPLETED)" in res.stdout and "left by job 14 (GONE)" in res.stdout
    assert "secret" not in res.stdout + res.stderr


def test_the_local_executor_hands_sbatch_nothing_htcondor_gave_the_provisioner(monkeypatch):
    """sbatch exports its environment into the job: the master's family
    session key (CONDOR_PRIVATE_INHERIT) and knobs must not be in it."""
    monkeypatch.setenv("CONDOR_PRIVATE_INHERIT", "FamilySessionKey=secret")
    monkeypatch.setenv("CONDOR_INHERIT", "1 <127.0.0.1:9618> 0 0")
    monkeypatch.setenv("_CONDOR_SEC_DEFAULT_AUTHENTICATION", "REQUIRED")
    p = SlurmProvider("hpc", {"SLURM_CONF": "/etc/slurm/other.conf"})
    out = p.exec.run(["env"]).stdout
    assert "INHERIT" not in out and "_CONDOR_" not in out and "secret" not in out
    assert "SLURM_CONF=/etc/slurm/other.conf" in out


def test_the_pilot_exits_with_its_masters_status_and_writes_any_path(tmp_path):
    """Slurm records how a pilot ended: a condor_master that fails makes the
    batch job fail, not COMPLETED.  A site file whose path has a space lands
    at that path, under the pilot's directory."""
    condor = tmp_path / "condor"
    (condor / "sbin").mkdir(parents=True)
    master = condor / "sbin" / "condor_master"
    master.write_text('#!/bin/sh\nls "$(dirname "$CONDOR_CONFIG")/etc/site files" '
                      '> "$CP_T/seen"; env > "$CP_T/env"; exit 4\n')
    master.chmod(0o755)
    data = "#cloud-config\n" + yaml.safe_dump({"write_files": [
        {"path": "/etc/site files/a b.conf", "content": "x = 1\n"}]})
    script = render_pilot(data, PilotSettings(condor=str(condor), walltime=600,
                                              workdir=str(tmp_path)))
    res = subprocess.run(["bash"], input=script, text=True, capture_output=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "78", "CP_T": str(tmp_path),
                              "CONDOR_PRIVATE_INHERIT": "FamilySessionKey=k",
                              "_CONDOR_LOG": "/elsewhere", "SLURM_MEM_PER_CPU": "1000",
                              "SLURM_CPUS_ON_NODE": "3"})
    assert res.returncode == 4, res.stdout + res.stderr
    assert "condor_master exited (4)" in res.stdout
    assert (tmp_path / "seen").read_text().strip() == "a b.conf"
    env = (tmp_path / "env").read_text()
    assert "INHERIT" not in env and "_CONDOR_LOG" not in env
    assert not (tmp_path / "dir").exists()      # nothing outside the pilot's directory
    assert "3 cores, 3000 MB" in res.stdout    # SLURM_MEM_PER_CPU x cores
