"""Demand a cloud node would really serve (issue 15), against real daemons:
transparent (mode any) jobs wait for the site first, and a job the template
matches but the real node does not starts one node, not dozens."""

import json
import re
import subprocess
import sys
import time

import htcondor2
import pytest

from condor_plugins.localpool import wait_for
from provtools import ProvMaker, jobs_done, site_pool, watch

pytestmark = pytest.mark.integration


@pytest.fixture
def site(condor, request):
    pool = site_pool(condor, "bst")
    make = ProvMaker(pool, condor.base, request.node.name)
    yield pool, make
    make.cleanup()


def submit(pool, tmp_path, count, seconds, mode, requirements=None):
    tmp_path.chmod(0o777)
    desc = {"executable": "/bin/sleep", "arguments": str(seconds), "request_cpus": "1",
            "request_memory": "64", "request_disk": "1000", "should_transfer_files": "IF_NEEDED",
            "log": str(tmp_path / f"{mode}.log"), "MY.CloudMode": f'"{mode}"'}
    if requirements:
        desc["requirements"] = requirements
    return pool.schedd().submit(htcondor2.Submit(desc), count=count).cluster()


def created(prov):
    return re.findall(r"^(\S+ \S+) Created (\S+)", prov.log_text(), re.M)


def test_transparent_burst_waits_for_the_site_then_bursts_after_burst_delay(
        site, condor, tmp_path):
    """Mode any: with free site slots the jobs run there and no VM starts; on a
    full site (its one slot busy), VMs start only once the jobs waited
    BURST_DELAY and the negotiator found no match for them."""
    pool, make = site
    condor.node(pool, "sitebst", cpus=1)
    prov = make(CLOUD_PLUGINS_BURST_DELAY=12, MAX_INSTANCES=1)
    proc = prov.start()
    try:
        first = submit(pool, tmp_path, 2, 1, "any")
        wait_for(lambda: jobs_done(pool, first, 2), 90, what="the any-mode jobs done on the site")
        time.sleep(3)
        assert not created(prov), prov.log_text()
        # Now the site is full: a long local job holds its only slot.
        local = submit(pool, tmp_path, 1, 300, "local")
        wait_for(lambda: pool.schedd().query(f"ClusterId == {local} && JobStatus == 2",
                                             ["ProcId"]), 60, what="the local job running")
        t_submit = time.time()
        burst = submit(pool, tmp_path, 2, 5, "any")
        wait_for(lambda: "Idle jobs left out of demand" in prov.log_text() and
                 "mode any" in prov.log_text(), 30, what="the jobs left out, with why")
        made = watch(prov, lambda: created(prov), 90, "a VM for the any-mode burst", cap=1)
        when = time.mktime(time.strptime(made[0][0], "%m/%d/%y %H:%M:%S"))
        assert when >= int(t_submit) + 12 - 1, (made, t_submit)
        wait_for(lambda: jobs_done(pool, burst, 2), 120, what="the burst done on the cloud node")
        ad = pool.collector().query(htcondor2.AdType.Any, f'Name == "prov-{prov.name}"',
                                    ["CloudLeftOutJobs"])
        assert ad, "no provisioner ad"
        assert prov.stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_churn_brake_a_template_match_the_node_does_not_start_one_node(site, tmp_path):
    """The job asks for the documented image (OpSysAndVer == "AlmaLinux9", the
    template's default), but this entry's nodes are something else: one node
    starts, joins, serves nothing, and the entry backs off, saying why."""
    pool, make = site
    prov = make(IDLE_TIMEOUT=4, BACKOFF_INITIAL=3600)
    real = subprocess.run(["condor_config_val", "OPSYSANDVER"], capture_output=True,
                          text=True).stdout.strip()
    assert real and real != "AlmaLinux9", "the test needs a host that is not EL9"
    submit(pool, tmp_path, 2, 10, "cloud", requirements='OpSysAndVer == "AlmaLinux9"')
    proc = prov.start()
    try:
        watch(prov, lambda: "started, but no job matched" in prov.log_text(), 120,
              "the churn brake", cap=1)
        time.sleep(5)   # cycles every second: a backoff, not a node per IDLE_TIMEOUT
        assert len(created(prov)) == 1, prov.log_text()
        res = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "status", "--json"],
                             env=prov.env(), capture_output=True, text=True, timeout=60)
        doc = json.loads(res.stdout)
        why = doc["backoff"][prov.entry]["reason"]
        assert "started, but no job matched" in why and "OpSysAndVer" in why, why
        assert real in why, why
        assert prov.stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
