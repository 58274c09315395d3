"""End to end on OpenStack's API (issue 5, acceptance 2-3): provisioner ->
python-novaclient and keystoneauth1 -> the Nova/Keystone emulator on
127.0.0.1 -> the test hypervisor boots each server's user data as a real node
-> it joins the site pool and runs jobs -> scale-down deletes the server.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("novaclient")
from condor_plugins.localpool import processes_using, wait_for  # noqa: E402
from condor_plugins.providers.base import TAG_PROVISIONER  # noqa: E402
from hypervisor import Hypervisor, NovaApi  # noqa: E402
from nova_emulator import NovaEmulator  # noqa: E402
from provtools import (VM_ADDRESS, ProvMaker, jobs_done, kill_mid_burst,  # noqa: E402
                       refused_drains, node_of, site_pool, submit, vm_timing)

pytestmark = pytest.mark.integration

ENTRY = "os1"
FAULTS = str(Path(__file__).with_name("cloudfaults.py"))


@pytest.fixture
def nova():
    with NovaEmulator(build_delay=1.0, delete_delay=1.0) as emulator:
        yield emulator


@pytest.fixture
def site(condor, request, nova, tmp_path):
    """The site's central manager on the VMs' network; the VMs boot from
    nothing but the image and their user data (dev/vmhost)."""
    pool = site_pool(condor, "os", address=VM_ADDRESS)
    make = ProvMaker(pool, condor.base, request.node.name, ENTRY, {
        "TYPE": "openstack", "IMAGE": "el9-condor-worker", "INSTANCE_TYPE": "m1.small",
        "NETWORK": "private", "MAX_ATTEMPTS": 1, "CONTROL_PERIOD": 1, "SHUTDOWN_GRACE": 5,
        "USER_DATA_TEMPLATE_DIR": vm_timing(tmp_path)},
        env=dict(nova.os_environ(), NO_PROXY="127.0.0.1,localhost"))
    yield pool, make
    make.cleanup()


def servers(nova, prov):
    """id -> status of ``prov``'s servers that are not being deleted."""
    key = TAG_PROVISIONER.replace("/", ":")
    return {sid: status for sid, status, meta, _ in nova.servers_with_user_data()
            if meta.get(key) == f"prov-{prov.name}"
            and nova.server(sid).get("task_state") != "deleting"}


def test_servers_boot_from_user_data_join_run_jobs_and_are_deleted(site, nova, condor,
                                                                    tmp_path):
    pool, make = site
    prov = make()
    hv = Hypervisor(NovaApi(nova, {TAG_PROVISIONER: f"prov-{prov.name}"})).start()
    try:
        cluster = submit(pool, tmp_path, 3, 10)
        proc = prov.start()
        ads = wait_for(lambda: (not hv.errors or pytest.fail(str(hv.errors)))
                       and jobs_done(pool, cluster, 3), 180, interval=1,
                       what="3 jobs done on OpenStack nodes")
        launched = set(hv.booted)
        assert 1 <= len(launched) <= 2
        assert all(a["ExitCode"] == 0 for a in ads)
        # The jobs ran on the VMs.
        assert {node_of(a["LastRemoteHost"]) for a in ads} <= set(hv.node_ids.values())
        for sid in launched:
            meta = nova.server(sid)["metadata"]
            assert meta["condor-plugins:entry"] == ENTRY
            assert hv.user_data[sid].startswith("#cloud-config")
        status = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "status", "--json"],
                                env=prov.env(), capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        rows = {r["id"]: r for r in json.loads(status.stdout)["instances"]}
        assert launched <= set(rows)
        # Scale-down by pulling: each node retires itself and powers off (SHUTOFF,
        # which Nova keeps); the provisioner deletes the shut-off servers.
        wait_for(lambda: not servers(nova, prov), 120, interval=1, what="every server deleted")
        assert set(hv.powered_off) == launched, hv.consoles()
        assert refused_drains(hv.state_dir), "no node logged a refused drain"
        wait_for(lambda: set(hv.stopped) == launched and not hv.running(), 60,
                 what="every node stopped")
        assert not processes_using(str(hv.state_dir))
        assert nova.count(NovaEmulator.CREATE) == len(launched)
        assert prov.stop(proc) == 0
        text = prov.log_text()
        assert "Created " in text and "by pulling" in text and "(stopped)" in text
        for token in hv.tokens() + [nova.password]:
            assert token not in text and token not in status.stdout
    finally:
        hv.stop()


def test_sigkill_after_create_then_restart_no_duplicate_no_orphan(site, nova, tmp_path):
    pool, make = site
    faults = {"kill_after_request": "POST /servers", "marker": str(tmp_path / "killed")}
    prov = make(command=[sys.executable, FAULTS], JOIN_TIMEOUT=300)
    prov.extra_env["CP_TEST_FAULTS"] = json.dumps(faults)
    submit(pool, tmp_path, 4, 60)  # 4 one-core jobs on 2-core servers: 2 servers
    first = prov.start()
    assert first.wait(60) == -signal.SIGKILL
    assert len(servers(nova, prov)) == 1  # created, never recorded
    second = prov.start()
    wait_for(lambda: "adopted" in prov.log_text() and len(servers(nova, prov)) == 2, 60,
             what="the orphan adopted and one more created")
    time.sleep(5)  # more cycles: still exactly two, and both recorded
    assert len(servers(nova, prov)) == 2
    assert nova.count(NovaEmulator.CREATE) == 2
    status = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "status", "--json"],
                            env=prov.env(), capture_output=True, text=True, timeout=60)
    rows = json.loads(status.stdout)["instances"]
    assert {r["id"] for r in rows} >= set(servers(nova, prov))
    assert not [r for r in rows if r["state"] == "unrecorded"], rows
    assert prov.stop(second) == 0


def test_server_shut_off_by_itself_is_deleted_and_the_entry_bursts_again(site, nova, condor,
                                                                         tmp_path):
    """Nova keeps a SHUTOFF server (quota, often the bill) and it held a
    MAX_INSTANCES slot: the provisioner deletes it at once, then bursts again."""
    pool, make = site
    prov = make(MAX_INSTANCES=1, IDLE_TIMEOUT=600)
    hv = Hypervisor(NovaApi(nova, {TAG_PROVISIONER: f"prov-{prov.name}"})).start()
    try:
        first = submit(pool, tmp_path, 1, 1)
        proc = prov.start()
        wait_for(lambda: jobs_done(pool, first, 1), 120, interval=1, what="the first job done")
        [sid] = servers(nova, prov)
        nova.set_status(sid, "SHUTOFF")   # the VM powered itself off
        wait_for(lambda: sid not in servers(nova, prov), 60, interval=1,
                 what="the shut-off server deleted")
        second = submit(pool, tmp_path, 1, 1)
        wait_for(lambda: jobs_done(pool, second, 1), 120, interval=1,
                 what="a job on a new server")
        assert nova.count(NovaEmulator.CREATE) == 2
        assert prov.stop(proc) == 0
        text = prov.log_text()
        assert f"Terminated {sid} (entry {ENTRY}) (stopped)" in text, text[-3000:]
        assert "Nova status SHUTOFF" in text and "as a failure" not in text
    finally:
        hv.stop()


def test_provisioner_gone_every_server_shuts_off_within_the_lease(site, nova, condor,
                                                                  tmp_path):
    """SIGKILL the provisioner mid-burst and never restart it: running jobs
    finish exactly once, then every server retires by itself when the lease
    runs out and powers off (SHUTOFF: nothing runs; a provisioner that comes
    back deletes them)."""
    pool, make = site
    prov = make(IDLE_TIMEOUT=600, LEASE=8, IDLE_SHUTDOWN=600)
    hv = Hypervisor(NovaApi(nova, {TAG_PROVISIONER: f"prov-{prov.name}"})).start()
    try:
        kill_mid_burst(pool, prov, hv, tmp_path)
        wait_for(lambda: set(servers(nova, prov).values()) == {"SHUTOFF"}, 120, interval=1,
                 what="every server shut off by itself")
        assert set(hv.powered_off) == set(servers(nova, prov))
    finally:
        hv.stop()
