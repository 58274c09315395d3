"""Operating the provisioner (issue 13): why no VM, admin levers, status exit codes."""

import getpass
import json
import os
import subprocess
import sys

import htcondor2
import pytest

from provtools import ENTRY, ProvMaker, history, site_pool, submit, watch

pytestmark = pytest.mark.integration


@pytest.fixture
def site(condor, request):
    pool = site_pool(condor, "adm")
    make = ProvMaker(pool, condor.base, request.node.name)
    yield pool, make
    make.cleanup()


def cli(prov, *args, env=None):
    return subprocess.run([sys.executable, "-m", "condor_plugins.cli", *args],
                          env={**prov.env(), **(env or {})}, capture_output=True, text=True,
                          timeout=90)


def provisioner_ad(pool, prov):
    ads = pool.collector().query(htcondor2.AdType.Any,
                                 f'MyType == "CloudProvisioner" && Name == "prov-{prov.name}"',
                                 ["CloudHolds", "CloudUnmatchedJobs"])
    return ads[0] if ads else None


def test_status_and_the_ad_say_why_no_vm_started(site, tmp_path):
    """16-core and HasGPU jobs against a 2-core entry are reported by shape with
    the clause that fails; an entry at MAX_INSTANCES is named, in status --json
    and in the provisioner's ad."""
    pool, make = site
    prov = make(MAX_INSTANCES=1, IDLE_TIMEOUT=600)
    submit(pool, tmp_path, 1, 60, cpus=16)
    submit(pool, tmp_path, 1, 60, requirements="HasGPU =?= True")
    small = submit(pool, tmp_path, 3, 60)  # 3 x 1 core: 2 nodes wanted, 1 allowed
    proc = prov.start()
    try:
        def explained():
            ad = provisioner_ad(pool, prov)
            if ad is None:
                return None
            holds, unmatched = list(ad.get("CloudHolds") or []), list(ad.get("CloudUnmatchedJobs") or [])
            ok = (any("at MAX_INSTANCES" in h for h in holds)
                  and any("RequestCpus=16" in u for u in unmatched)
                  and any("HasGPU" in u for u in unmatched))
            return (holds, unmatched) if ok else None
        holds, unmatched = watch(prov, explained, 90, "the reasons in the provisioner's ad", cap=1)
        sixteen = next(u for u in unmatched if "RequestCpus=16" in u)
        assert "Cpus" in sixteen.split(":", 1)[1] and f"{ENTRY} needs" in sixteen, sixteen
        res = cli(prov, "status", "--json")
        assert res.returncode == 0, res.stderr
        status = json.loads(res.stdout)
        assert status["schema_version"] == 2 and status["time"].endswith("+00:00")
        assert status["daemon"]["alive"] is True and status["daemon"]["last_cycle"]
        assert any("at MAX_INSTANCES" in h for h in status["holds"]), status["holds"]
        assert any("RequestCpus=16" in u for u in status["unmatched_jobs"])
        assert any("HasGPU" in u for u in status["unmatched_jobs"])
        table = cli(prov, "status").stdout
        assert "Unmatched 1 idle job(s) (RequestCpus=16" in table and "at MAX_INSTANCES" in table
        # Each reason once in the log while it holds.
        text = prov.log_text()
        assert text.count("Idle jobs no entry can run") == 2, text[-3000:]
        # The filters.
        only = json.loads(cli(prov, "status", "--json", "--constraint", 'State == "nosuch"').stdout)
        assert only["instances"] == [] and status["instances"]
        assert json.loads(cli(prov, "status", "--json", "--entry", ENTRY).stdout)["instances"]
        pool.run("condor_rm", str(small))
    finally:
        prov.stop(proc)


def test_levers_retire_terminate_disable_enable_against_a_running_provisioner(site, tmp_path):
    pool, make = site
    prov = make(MAX_INSTANCES=2, IDLE_TIMEOUT=600)
    first = submit(pool, tmp_path, 2, 30, cpus=2)  # one per node
    proc = prov.start()
    try:
        schedd = pool.schedd()

        def busy_nodes():
            jobs = schedd.query(f"ClusterId == {first} && JobStatus == 2", ["RemoteHost"])
            nodes = sorted({str(j["RemoteHost"]).split("@")[1] for j in jobs
                            if "@" in str(j.get("RemoteHost", ""))})
            return nodes if len(nodes) == 2 else None
        a, b = watch(prov, busy_nodes, 120, "both jobs running on two nodes")
        res = cli(prov, "disable", ENTRY)
        assert res.returncode == 0, res.stderr
        assert json.loads(cli(prov, "status", "--json").stdout)["entries"][ENTRY]["enabled"] is False
        later = submit(pool, tmp_path, 2, 3, cpus=2)
        watch(prov, lambda: any("entry disabled" in h for h in
                                (provisioner_ad(pool, prov) or {}).get("CloudHolds", [])),
              30, "the disabled entry's hold in the ad")
        # retire A: it finishes its job, takes no new one, and goes.
        assert cli(prov, "retire", a).returncode == 0
        # terminate B without --force: refused while it runs a job.
        assert cli(prov, "terminate", b).returncode == 0
        watch(prov, lambda: f"not going to terminate {b}" in prov.log_text(), 30,
              "the refused terminate")
        assert b in prov.running()
        watch(prov, lambda: a not in prov.running(), 90, "the retired node gone")
        done = [h for h in history(pool, first) if h.get("JobStatus") == 4]
        assert len(done) >= 1 and all(h["NumJobStarts"] == 1 for h in done)
        assert cli(prov, "terminate", "--force", b).returncode == 0
        watch(prov, lambda: b not in prov.running(), 60, "the forced terminate")
        assert not prov.running(), "disabled: no new instance"
        assert cli(prov, "enable", ENTRY).returncode == 0
        watch(prov, lambda: len([h for h in history(pool, later) if h.get("JobStatus") == 4]) == 2
              and len([h for h in history(pool, first) if h.get("JobStatus") == 4]) == 2,
              180, "every job done after enable")
        text = prov.log_text()
        user = getpass.getuser()
        for line in (f"disable {ENTRY}: no new instance", f"retire {a}: accepted",
                     f"terminate {b}: accepted", f"terminate --force {b}: accepted",
                     f"enable {ENTRY}: may create instances again"):
            assert f"Command from {user}: {line}" in text, line
        # Unknown targets are usage errors (2), and nothing is sent.
        assert cli(prov, "retire", "nosuch-1").returncode == 2
        assert cli(prov, "disable", "nosuch").returncode == 2
    finally:
        prov.stop(proc)
    # No provisioner: the command is not taken and is withdrawn (1).
    res = cli(prov, "disable", ENTRY, "--wait", "2")
    assert res.returncode == 1 and "withdrawn" in res.stderr
    assert not list((pool.workdir / "spool" / "cloud_plugins" / "commands").glob("*.json"))


def _status(tmp_path, collector, **knobs):
    conf = tmp_path / "status.conf"
    lines = {"SPOOL": tmp_path / "spool", "COLLECTOR_HOST": collector,
             "CLOUD_PLUGINS_PROVIDERS": ENTRY, f"CLOUD_PLUGINS_{ENTRY.upper()}_TYPE": "local",
             f"CLOUD_PLUGINS_{ENTRY.upper()}_STATE_DIR": tmp_path / "state",
             f"CLOUD_PLUGINS_{ENTRY.upper()}_KEEP_TERMINATED": 0,
             "CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN": "w.test",
             "CLOUD_PLUGINS_PROVISIONER_NAME": "unit", **knobs}
    conf.write_text("".join(f"{k} = {v}\n" for k, v in lines.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("_CONDOR_")}
    env.update(CONDOR_CONFIG=str(conf), PYTHONPATH=":".join(sys.path))
    return subprocess.run([sys.executable, "-m", "condor_plugins.cli", "status"], env=env,
                          capture_output=True, text=True, timeout=90)


def _tree(path):
    return sorted((str(p), p.stat().st_mtime_ns, p.stat().st_mode) for p in [path, *path.rglob("*")])


def test_status_exit_codes_and_it_never_writes(site, tmp_path):
    """0: every query worked; 1: the collector or a listing failed (the rest is
    still printed); 2: a bad knob. A stopped local instance long past
    KEEP_TERMINATED is shown, and nothing on disk changes (status used to mark
    it, which let its directory be deleted)."""
    from condor_plugins.localpool import free_port
    pool, _ = site
    (tmp_path / "spool").mkdir()
    stopped = tmp_path / "state" / "local1-0badc0de"
    stopped.mkdir(parents=True)
    (stopped / "instance.json").write_text(json.dumps(
        {"id": stopped.name, "entry": ENTRY, "pid": None, "error": "it crashed",
         "launch_time": 1.0, "tags": {}}))
    os.utime(stopped / "instance.json", (1, 1))
    before = _tree(tmp_path / "state")
    ok = _status(tmp_path, pool.collector_address)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "NOT RUNNING" in ok.stdout  # no provisioner ad: the daemon is not running
    assert _tree(tmp_path / "state") == before
    dead = _status(tmp_path, f"127.0.0.1:{free_port()}")
    assert dead.returncode == 1 and "WARNING: the collector query failed" in dead.stdout
    (tmp_path / "state").chmod(0)
    try:
        failed = _status(tmp_path, pool.collector_address)
    finally:
        (tmp_path / "state").chmod(0o755)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"WARNING: the listing of provider entry {ENTRY} failed" in failed.stdout
    bad = _status(tmp_path, pool.collector_address, CLOUD_PLUGINS_CYCLE_INTERVAL="often")
    assert bad.returncode == 2 and "CLOUD_PLUGINS_CYCLE_INTERVAL" in bad.stderr
    assert _tree(tmp_path / "state") == before


def test_status_state_and_reason_agree_with_the_live_busy_count():
    """Issue 13: REASON no longer lags BUSY, and a VM that is not running
    shows no counts from its stale ads."""
    from condor_plugins.cli import _may_run, live_view
    from condor_plugins.providers.base import Instance, InstanceState
    from condor_plugins.provisioning.state import NodeInfo
    busy, idle = NodeInfo("a", busy_slots=2), NodeInfo("a", busy_slots=0, idle_cpus=2)
    assert live_view("idle", "idle for 30s", busy) == ("busy", "running 2 job(s)")
    assert live_view("busy", "running 1 job(s)", busy) == ("busy", "running 2 job(s)")
    assert live_view("busy", "running 1 job(s)", idle)[0] == "idle"
    assert live_view("idle", "idle for 30s", idle) == ("idle", "idle for 30s")
    assert live_view("draining", "idle for 600s", busy) == ("draining", "idle for 600s")
    assert live_view("idle", "idle for 30s", None) == ("idle", "idle for 30s")
    inst = lambda state: Instance("a", "e1", state, launch_time=0, tags={})  # noqa: E731
    assert _may_run(inst(InstanceState.RUNNING)) and _may_run(inst(InstanceState.PENDING))
    assert not _may_run(inst(InstanceState.STOPPED)) and not _may_run(None)
    assert not _may_run(inst(InstanceState.TERMINATED))
