"""The provisioner under condor_master from the shipped fragment (config.d/30-cloud-provisioner.conf)."""

import os
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


def test_master_starts_advertises_and_restarts_the_provisioner(condor):
    state_dir = condor.base / "n-fragment"
    pool = condor.site_pool("frag", include_extra=[shipped_config_dir() / "30-cloud-provisioner.conf"],
                            extra_config=(
        "CLOUD_PLUGINS_RUN_PROVISIONER = True\n"
        f"CLOUD_PROVISIONER = {sys.executable}\n"
        "CLOUD_PROVISIONER_ARGS = -m condor_plugins.provisioning.provisioner\n"
        f'CLOUD_PROVISIONER_ENVIRONMENT = "PYTHONPATH={":".join(sys.path)}"\n'
        "CLOUD_PLUGINS_PROVIDERS = local1\n"
        "CLOUD_PLUGINS_LOCAL1_TYPE = local\n"
        f"CLOUD_PLUGINS_LOCAL1_STATE_DIR = {state_dir}\n"
        "CLOUD_PLUGINS_CYCLE_INTERVAL = 1\n"
        "MASTER_BACKOFF_CONSTANT = 1\nMASTER_BACKOFF_FACTOR = 1.0\n"))
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
