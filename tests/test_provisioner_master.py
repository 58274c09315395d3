"""The provisioner under condor_master from the shipped fragment (config.d/30-cloud-provisioner.conf)."""

import os
import time
import signal
import sys

import pytest

from condor_plugins.localpool import shipped_config_dir, wait_for

pytestmark = pytest.mark.integration


def provisioner_pid(pool):
    out = pool.run("condor_status", "-any", "-const", 'MyType == "CloudProvisioner"',
                   "-af", "Name", "MyType", check=False).stdout
    return out


def pool_provisioner_pids(pool):
    """This pool's provisioner processes (other tests run theirs in parallel)."""
    out = []
    for p in pool.run("pgrep", "-f", "condor_plugins.provisioning.provisioner",
                      check=False).stdout.split():
        try:
            environ = open(f"/proc/{p}/environ", "rb").read()
        except OSError:
            continue
        if str(pool.workdir).encode() in environ:
            out.append(int(p))
    return out


def master_pool(condor, name, state_dir, extra=""):
    """A site pool whose condor_master runs the provisioner (the shipped
    fragment) with one local entry in ``state_dir``, cycling every second."""
    return condor.site_pool(name, include_extra=[shipped_config_dir() / "30-cloud-provisioner.conf"],
                            extra_config=(
        "CLOUD_PLUGINS_RUN_PROVISIONER = True\n"
        f"CLOUD_PROVISIONER = {sys.executable}\n"
        "CLOUD_PROVISIONER_ARGS = -m condor_plugins.provisioning.provisioner\n"
        f'CLOUD_PROVISIONER_ENVIRONMENT = "PYTHONPATH={":".join(sys.path)}"\n'
        "CLOUD_PLUGINS_PROVIDERS = local1\n"
        "CLOUD_PLUGINS_LOCAL1_TYPE = local\n"
        f"CLOUD_PLUGINS_LOCAL1_STATE_DIR = {state_dir}\n"
        "CLOUD_PLUGINS_CYCLE_INTERVAL = 1\n"
        "MASTER_BACKOFF_CONSTANT = 1\nMASTER_BACKOFF_FACTOR = 1.0\n" + extra))


def test_master_starts_advertises_and_restarts_the_provisioner(condor):
    state_dir = condor.base / "n-fragment"
    pool = master_pool(condor, "frag", state_dir)
    assert "CLOUD_PROVISIONER" in pool.run("condor_config_val", "DAEMON_LIST").stdout
    ad = wait_for(lambda: provisioner_pid(pool), 60, what="the provisioner's ad in condor_status -any")
    assert "CloudProvisioner" in ad
    pids = pool_provisioner_pids(pool)
    assert len(pids) == 1, pids
    # condor_reconfig (SIGHUP from the master) re-reads the knobs in place:
    # the same process goes on.
    prov_log = pool.log_dir / "CloudProvisionerLog"
    for _ in range(3):
        pool.run("condor_reconfig")
    wait_for(lambda: prov_log.read_text().count("Reconfigured: entries local1") >= 1, 30,
             what="the provisioner reconfigured")
    assert pool_provisioner_pids(pool) == pids
    assert "died due to signal 1" not in (pool.log_dir / "MasterLog").read_text()
    os.kill(pids[0], signal.SIGKILL)
    log = pool.log_dir / "MasterLog"
    wait_for(lambda: "CLOUD_PROVISIONER" in log.read_text() and "restarting" in log.read_text().lower(),
             60, what="condor_master noticing the provisioner died")

    def restarted():
        return [p for p in pool_provisioner_pids(pool) if p not in pids]
    wait_for(restarted, 60, what="condor_master restarting the provisioner")


def test_fragment_is_inert_by_default(condor):
    pool = condor.site_pool("inertprov", include_extra=[shipped_config_dir() / "30-cloud-provisioner.conf"])
    assert "CLOUD_PROVISIONER" not in pool.run("condor_config_val", "DAEMON_LIST").stdout


def _node_masters(state_dir):
    """instance id -> pid of its condor_master, for the local instances alive now."""
    import json
    out = {}
    for meta in state_dir.glob("*/instance.json"):
        pid = json.loads(meta.read_text()).get("pid")
        try:
            if pid and f"CONDOR_CONFIG={meta.parent}/condor_config".encode() in open(
                    f"/proc/{pid}/environ", "rb").read():
                out[meta.parent.name] = pid
        except OSError:
            pass
    return out


def test_reconfigs_and_a_sigkill_under_the_master_stop_no_node_and_lose_no_job(condor, tmp_path):
    """Acceptance (issue 13): with local nodes running jobs, 5 condor_reconfigs
    and one SIGKILL of the provisioner under condor_master: every job completes
    exactly once, no node stops, no failure or backoff is recorded, and a
    MAX_INSTANCES raised by the last reconfig takes effect without a restart."""
    state_dir = condor.base / "n-reconf"
    knobs = tmp_path / "admin.conf"
    knobs.write_text("CLOUD_PLUGINS_LOCAL1_MAX_INSTANCES = 1\n")
    pool = master_pool(condor, "reconf", state_dir, extra=(
        "CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS = True\nCLOUD_PLUGINS_SUBMIT_TRANSFORM = True\n"
        "CLOUD_PLUGINS_LOCAL1_CPUS = 1\nCLOUD_PLUGINS_LOCAL1_MEMORY = 512\n"
        "CLOUD_PLUGINS_LOCAL1_IDLE_TIMEOUT = 600\n"
        "CLOUD_PLUGINS_LOCAL1_WORKER_IDLE_SHUTDOWN = 600\n"
        "CLOUD_PLUGINS_COLLECTOR_GRACE = 0\n"
        # The procd finds the provisioner's children within 2s: a node that is
        # still our child is then in its family, which the master kills.
        "PID_SNAPSHOT_INTERVAL = 2\n"
        f"include : {knobs}\n"))
    try:
        _reconfigs_and_a_sigkill(pool, state_dir, knobs, tmp_path)
    finally:
        from condor_plugins.providers.local import LocalProvider
        local = LocalProvider("local1", {"STATE_DIR": str(state_dir)})
        local.terminate([d.name for d in state_dir.iterdir()] if state_dir.is_dir() else [])


def _reconfigs_and_a_sigkill(pool, state_dir, knobs, tmp_path):
    from provtools import history, submit
    prov_log = pool.log_dir / "CloudProvisionerLog"
    cluster = submit(pool, tmp_path, 3, 40)
    schedd = pool.schedd()

    def running():
        return len(schedd.query(f"ClusterId == {cluster} && JobStatus == 2", ["ProcId"]))
    try:
        wait_for(running, 120, what="the first job running on a provisioned node")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{prov_log.read_text()[-3000:] if prov_log.exists() else ''}"
                           + "".join(f"\n--- {f}\n{f.read_text()[-1500:]}"
                                     for f in state_dir.glob("*/log/*Log"))
                           + "\n".join(line for line in (pool.log_dir / "CollectorLog").read_text().splitlines()
                                       if "DENIED" in line or "rror" in line or "fail" in line)) from None
    first = _node_masters(state_dir)
    assert len(first) == 1, first
    time.sleep(5)  # several procd snapshots
    for n in range(4):
        pool.run("condor_reconfig")
        time.sleep(1)
        if n == 1:
            pids = pool_provisioner_pids(pool)
            assert len(pids) == 1, pids
            os.kill(pids[0], signal.SIGKILL)
            wait_for(lambda: [p for p in pool_provisioner_pids(pool) if p not in pids], 60,
                     what="condor_master restarting the provisioner")
            wait_for(lambda: prov_log.read_text().count("condor_cloud_provisioner ") >= 2, 60,
                     what="the restarted provisioner")
    assert _node_masters(state_dir) == first, "a node stopped with the provisioner"
    knobs.write_text("CLOUD_PLUGINS_LOCAL1_MAX_INSTANCES = 2\n")
    pool.run("condor_reconfig")
    wait_for(lambda: len(_node_masters(state_dir)) == 2, 90,
             what="a second node after MAX_INSTANCES was raised by condor_reconfig")
    done = wait_for(lambda: [a for a in history(pool, cluster) if a.get("JobStatus") == 4]
                    if len([a for a in history(pool, cluster) if a.get("JobStatus") == 4]) == 3
                    else None, 240, what="the 3 jobs completing")
    assert sorted(a["ProcId"] for a in done) == [0, 1, 2]
    assert all(a.get("NumJobStarts") == 1 for a in done), [dict(a) for a in done]
    masters = _node_masters(state_dir)
    assert all(masters.get(i) == p for i, p in first.items()), (first, masters)
    text = prov_log.read_text()
    assert text.count("Reconfigured: entries local1") >= 3, text[-3000:]
    for bad in ("failure", "Backoff", "gone while", "terminated before it joined"):
        assert bad not in text, f"{bad!r} in the provisioner log:\n{text[-4000:]}"
    assert "died due to signal 1" not in (pool.log_dir / "MasterLog").read_text()
