"""Node control by pulling (condor_plugins.node.control) on real daemons.

Every node here refuses inbound administration (``DENY_ADMINISTRATOR = *``
from a user-data template file, as a VM that cannot verify the provisioner
would), so a drain from the provisioner's side is refused and the nodes must
retire by reading the provisioner's ad: retire requests, and the lease when the
provisioner is gone.  "Powered off" is the node's condor_master exiting (the
local provider disables the real power-off script).
"""

import signal
import time

import htcondor2
import pytest

from condor_plugins.localpool import wait_for
from provtools import ProvMaker, history, refused_drains, jobs_done, no_inbound_admin, site_pool, submit, watch

pytestmark = pytest.mark.integration


@pytest.fixture
def site(condor, request, tmp_path):
    pool = site_pool(condor, "pull")
    make = ProvMaker(pool, condor.base, request.node.name, settings={
        "USER_DATA_TEMPLATE_DIR": no_inbound_admin(tmp_path), "WORKER_CONTROL_PERIOD": 1, "SHUTDOWN_GRACE": 5,
        "DRAIN_TIMEOUT": 600})
    yield pool, make
    make.cleanup()


def slot(pool, iid, attrs):
    ads = pool.collector().query(htcondor2.AdType.Startd,
                                 f'CloudRequestID == "{iid}" && PartitionableSlot', attrs)
    return ads[0] if ads else None


def test_idle_nodes_retire_by_pulling_while_inbound_admin_is_refused(site, tmp_path):
    pool, make = site
    prov = make(IDLE_TIMEOUT=4)
    cluster = submit(pool, tmp_path, 4, 3)
    proc = prov.start()
    seen = set()
    watch(prov, lambda: jobs_done(pool, cluster, 4), 120, "4 jobs done", seen=seen)
    # Every node retires by pulling: no new job, HTCondor stops ("power-off").
    watch(prov, lambda: not prov.running(), 90, "every node retired by itself", seen=seen)
    text = prov.log_text()
    assert "by pulling" in text and "Draining " not in text, text[-3000:]
    # The provisioner's direct drain was refused by the nodes themselves.
    assert refused_drains(prov.state_dir), "no node logged a refused drain"
    wait_for(lambda: not prov.instances() or all(
        i not in prov.running() for i in prov.instances()), 30, what="no instance running")
    assert all(a["NumJobStarts"] == 1 for a in history(pool, cluster))
    assert prov.stop(proc) == 0


def test_time_from_retire_request_to_no_new_job(site, tmp_path):
    """The figure for the note: retire request in the provisioner's ad ->
    the node's START is False (CloudRetiring in its slot ad)."""
    pool, make = site
    prov = make(IDLE_TIMEOUT=2, MAX_INSTANCES=1)
    cluster = submit(pool, tmp_path, 1, 1)
    proc = prov.start()
    watch(prov, lambda: jobs_done(pool, cluster, 1), 90, "the job done", cap=1)

    def requested():
        ads = pool.collector().query(htcondor2.AdType.Any, 'MyType == "CloudProvisioner"',
                                     ["CloudRetireRequests"])
        return any((a.get("CloudRetireRequests") or "").strip() for a in ads)
    wait_for(requested, 60, interval=0.1, what="a retire request in the provisioner's ad")
    asked = time.monotonic()
    [iid] = prov.instances()

    def retiring():   # START is False, or the startd already shut down
        ad = slot(pool, iid, ["CloudRetireRequested"])
        return ad is None or ad.get("CloudRetireRequested") is True
    wait_for(retiring, 60, interval=0.1, what="the node retiring")
    took = time.monotonic() - asked
    print(f"retire request -> node takes no new job: {took:.1f} s")
    assert took < 15
    watch(prov, lambda: not prov.running(), 60, "the node retired", cap=1)
    assert prov.stop(proc) == 0


def test_provisioner_gone_every_node_retires_within_the_lease(site, tmp_path):
    """SIGKILL mid-burst, no restart: running jobs finish exactly once, then
    every node retires by itself within LEASE plus the retirement."""
    pool, make = site
    lease = 8
    prov = make(IDLE_TIMEOUT=600, LEASE=lease, WORKER_IDLE_SHUTDOWN=600)
    cluster = submit(pool, tmp_path, 4, 12)
    proc = prov.start()
    wait_for(lambda: len(prov.running()) == 2 and pool.schedd().query(
        "JobStatus == 2", ["ProcId"]), 90, what="jobs running on 2 nodes")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    killed = time.monotonic()
    ads = wait_for(lambda: jobs_done(pool, cluster, 4), 120, what="every job done")
    assert all(a["NumJobStarts"] == 1 for a in ads), ads
    wait_for(lambda: not prov.running(), lease + 60, what="every node retired by itself")
    print(f"provisioner killed -> last node off: {time.monotonic() - killed:.1f} s")


def test_a_worker_token_cannot_forge_the_provisioners_ad(condor, tmp_path):
    """A stolen worker token cannot publish retire requests or renew the lease:
    the collector refuses the generic ad (worker tokens carry no DAEMON level,
    and COLLECTOR_REQUIREMENTS refuses a CloudProvisioner ad from a worker)."""
    from conftest import worker_token
    pool = site_pool(condor, "forge")
    tokens = tmp_path / "tokens"
    tokens.mkdir(mode=0o700)
    (tokens / "stolen").write_text(worker_token(pool, "vm1") + "\n")
    (tokens / "stolen").chmod(0o600)
    ad = tmp_path / "forged.ad"
    ad.write_text('MyType = "CloudProvisioner"\nName = "prov-forged"\n'
                  'CloudRetireRequests = "victim-1"\nLastCycleTime = 2000000000\n')
    env = {"_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS",
           "_CONDOR_SEC_TOKEN_DIRECTORY": str(tokens),
           "_CONDOR_SEC_TOKEN_SYSTEM_DIRECTORY": str(tmp_path / "none")}
    pool.run("condor_advertise", "UPDATE_AD_GENERIC", str(ad), check=False, env=env)
    time.sleep(2)
    assert not pool.collector().query(htcondor2.AdType.Any, 'Name == "prov-forged"', ["Name"])
    # The same ad from the pool's own daemon identity is accepted (the test is not vacuous).
    pool.run("condor_advertise", "UPDATE_AD_GENERIC", str(ad))
    wait_for(lambda: pool.collector().query(htcondor2.AdType.Any, 'Name == "prov-forged"',
                                            ["Name"]), 20, what="the daemon's ad")
