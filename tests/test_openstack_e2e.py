"""End to end on real OpenStack (issue 14): the provisioner -> python-novaclient
and keystoneauth1 -> real Keystone 27 and Nova 31 (dev/openstack, started once
for this module) -> the test hypervisor reads each server's user data back
through Nova's admin API and boots it as a VM -> it joins the site pool and
runs jobs -> scale-down deletes the server.

The provisioner holds nothing but clouds.yaml with an application credential
of the project ``condor``; the tests look on as the cloud's admin.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import htcondor2
import pytest

from condor_plugins.localpool import processes_using, wait_for
from condor_plugins.providers.base import (TAG_PROVISIONER, InstanceSpec, InstanceState,
                                           QuotaError, TransientError)
from hypervisor import Hypervisor
from openstack_plane import RealNovaApi, RealOpenStack
from provtools import (VM_ADDRESS, ProvMaker, jobs_done, kill_mid_burst, node_of,
                       refused_drains, site_pool, submit, vm_timing)

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning")]

ENTRY = "os1"
FAULTS = str(Path(__file__).with_name("cloudfaults.py"))


@pytest.fixture(scope="module")
def nova(tmp_path_factory):
    plane = RealOpenStack(tmp_path_factory.mktemp("openstack") / "plane")
    try:
        yield plane.start()
    finally:
        plane.stop()
        left = processes_using(str(plane.dir))
        assert not left, f"dev/openstack stop left processes {left}"


@pytest.fixture
def os_env(nova, monkeypatch):
    """The project's credentials in OS_*, for the providers a test makes itself."""
    for key, value in nova.os_environ().items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def site(condor, request, nova, tmp_path):
    """The site's central manager on the VMs' network; the VMs boot from
    nothing but the image and their user data (dev/vmhost)."""
    pool = site_pool(condor, "os", address=VM_ADDRESS)
    make = ProvMaker(pool, condor.base, request.node.name, ENTRY, {
        "TYPE": "openstack", "CLOUD": "condor", "IMAGE": "el9-condor-worker",
        "INSTANCE_TYPE": "m1.small", "NETWORK": "none", "MAX_ATTEMPTS": 1,
        "CONTROL_PERIOD": 1, "SHUTDOWN_GRACE": 5,
        "USER_DATA_TEMPLATE_DIR": vm_timing(tmp_path)}, env=nova.os_environ())
    yield pool, make
    make.cleanup()
    from novaclient.exceptions import NotFound
    for prov in make.made:   # what a test left in the shared project
        for sid in servers(nova, prov):
            try:
                nova.admin.servers.delete(sid)
            except NotFound:   # deleted meanwhile (the provisioner, or Nova itself)
                pass


def owned(prov):
    return {TAG_PROVISIONER: f"prov-{prov.name}"}


def servers(nova, prov):
    """id -> status of ``prov``'s servers that are not being deleted."""
    return {s["id"]: s["status"] for s in nova.servers(owned(prov))
            if s.get("OS-EXT-STS:task_state") != "deleting"}


def status_json(prov):
    res = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "status", "--json"],
                         env=prov.env(), capture_output=True, text=True, timeout=60)
    assert res.returncode in (0, 1), res.stderr
    return res, json.loads(res.stdout)


def test_servers_boot_from_user_data_join_run_jobs_and_are_deleted(site, nova, tmp_path):
    """clouds.yaml with an application credential; listings filtered by tag in
    Nova; scale-down deletes every server."""
    pool, make = site
    prov = make()
    hv = Hypervisor(RealNovaApi(nova, owned(prov)), poll=1.0).start()
    log_start = len(nova.api_log())
    try:
        cluster = submit(pool, tmp_path, 3, 10)
        proc = prov.start()
        ads = wait_for(lambda: (not hv.errors or pytest.fail(str(hv.errors)))
                       and jobs_done(pool, cluster, 3), 240, interval=1,
                       what="3 jobs done on OpenStack nodes")
        launched = set(hv.booted)
        assert 1 <= len(launched) <= 3
        assert all(a["ExitCode"] == 0 and a["NumJobStarts"] == 1 for a in ads)
        assert {node_of(a["LastRemoteHost"]) for a in ads} <= set(hv.node_ids.values())
        for info in nova.servers(owned(prov)):
            assert info["metadata"]["condor-plugins:entry"] == ENTRY
            assert f"provisioner=prov-{prov.name}" in info["tags"]
        assert all(hv.user_data[sid].startswith("#cloud-config") for sid in launched)
        res, doc = status_json(prov)
        assert launched <= {r["id"] for r in doc["instances"]}
        # Scale-down by pulling: each node retires itself and powers off
        # (SHUTOFF, which Nova keeps); the provisioner deletes the servers.
        wait_for(lambda: not servers(nova, prov), 180, interval=1, what="every server deleted")
        assert set(hv.powered_off) == launched, hv.consoles()
        assert refused_drains(hv.state_dir), "no node logged a refused drain"
        wait_for(lambda: set(hv.stopped) == launched and not hv.running(), 60,
                 what="every node stopped")
        assert not processes_using(str(hv.state_dir))
        assert prov.stop(proc) == 0
        # Nova filtered the listings by our tags (microversion >= 2.52).
        api = nova.api_log()[log_start:]
        assert "GET /v2.1/servers/detail?limit=500&tags=" in api
        assert 1 <= api.count("POST /v2.1/servers HTTP") <= len(launched)   # one may boot several
        text = prov.log_text()
        assert "Created " in text and "by pulling" in text and "(stopped)" in text
        secret = json.loads(Path(nova.cloud["clouds_yaml"]).read_text())[
            "clouds"]["condor"]["auth"]["application_credential_secret"]
        for token in hv.tokens() + [secret, nova.cloud["admin_password"]]:
            assert token not in text and token not in res.stdout
    finally:
        hv.stop()


def test_sigkill_after_create_then_restart_no_duplicate_no_orphan(site, nova, tmp_path):
    pool, make = site
    faults = {"kill_after_request": "POST /servers", "marker": str(tmp_path / "killed")}
    prov = make(command=[sys.executable, FAULTS], JOIN_TIMEOUT=300, MAX_INSTANCES=2)
    prov.extra_env["CP_TEST_FAULTS"] = json.dumps(faults)
    submit(pool, tmp_path, 4, 60)   # 4 one-core jobs on 2-core nodes: 2 servers
    first = prov.start()
    assert first.wait(60) == -signal.SIGKILL
    orphans = servers(nova, prov)
    assert len(orphans) >= 1   # created in Nova, never recorded
    second = prov.start()
    wait_for(lambda: "adopted" in prov.log_text() and len(servers(nova, prov)) == 2, 90,
             interval=1, what="the orphan adopted and the demand met")
    time.sleep(5)   # more cycles: still exactly two, and both recorded
    now = servers(nova, prov)
    assert len(now) == 2 and set(orphans) <= set(now)
    _, doc = status_json(prov)
    rows = doc["instances"]
    assert {r["id"] for r in rows} >= set(now)
    assert not [r for r in rows if r["state"] == "unrecorded"], rows
    assert prov.stop(second) == 0


def test_server_shut_off_by_itself_is_deleted_and_the_entry_bursts_again(site, nova, tmp_path):
    """A VM that powers itself off is SHUTOFF in real Nova (kept: quota, often
    the bill) and held a MAX_INSTANCES slot: deleted at once, then a new burst."""
    pool, make = site
    prov = make(MAX_INSTANCES=1, IDLE_TIMEOUT=600)
    hv = Hypervisor(RealNovaApi(nova, owned(prov)), poll=1.0).start()
    try:
        first = submit(pool, tmp_path, 1, 1)
        proc = prov.start()
        wait_for(lambda: jobs_done(pool, first, 1), 180, interval=1, what="the first job done")
        [sid] = servers(nova, prov)
        nova.admin.servers.stop(sid)   # the VM powered itself off
        wait_for(lambda: sid not in servers(nova, prov), 90, interval=1,
                 what="the shut-off server deleted")
        # Its VM really off and its slots gone, so the second job cannot start
        # on it in the moment before the hypervisor powers it off (the job
        # would then wait for its lease to reconnect).
        wait_for(lambda: not hv.running() and not pool.collector().query(
            htcondor2.AdType.Startd, "IsCloudNode is True", ["Name"]), 90, interval=1,
            what="the shut-off server's VM off and its slots gone")
        second = submit(pool, tmp_path, 1, 1)
        wait_for(lambda: jobs_done(pool, second, 1), 180, interval=1,
                 what="a job on a new server")
        assert len(hv.booted) == 2
        assert prov.stop(proc) == 0
        text = prov.log_text()
        assert f"Terminated {sid} (entry {ENTRY}) (stopped)" in text, text[-3000:]
        assert "Nova status SHUTOFF" in text and "as a failure" not in text
    finally:
        hv.stop()


def test_real_over_quota_backs_off_and_touches_no_other_server(site, nova, tmp_path, os_env):
    """The project is full (quota 1, one server of someone else's): the create
    gets Nova's real 403 and the entry backs off, with no POST per cycle and
    the other server untouched."""
    from condor_plugins.providers.openstack import OpenStackProvider
    pool, make = site
    prov = make()
    # Servers of the earlier tests are deleted asynchronously: one still
    # counted would fill the quota before "someone else's" server is made.
    wait_for(lambda: not nova.servers(), 120, interval=1, what="no server left from earlier tests")
    nova.set_instances_quota(1)
    other = theirs = None
    try:
        other = OpenStackProvider(ENTRY, {"CLOUD": "condor", "NETWORK": "none"})
        [theirs] = other.create(InstanceSpec(ENTRY, "m1.small", "el9-condor-worker", 1, 2048, 0),
                                1, {"condor-plugins/provisioner": "someone-else"}, "", "theirs-1")
        log_start = len(nova.api_log())
        submit(pool, tmp_path, 2, 120)
        proc = prov.start()
        wait_for(lambda: "failed (quota)" in prov.log_text(), 120, interval=1,
                 what="the quota error")
        time.sleep(6)   # cycles every second: a backoff, not a POST per cycle
        text = prov.log_text()
        assert proc.poll() is None and "Traceback" not in text
        assert "HTTP 403: Quota exceeded for instances" in text and "backing off" in text
        assert nova.api_log()[log_start:].count("POST /v2.1/servers HTTP") == 1
        assert not servers(nova, prov)
        assert [s["status"] in ("BUILD", "ACTIVE") for s in nova.servers()
                if s["id"] == theirs.id] == [True]
        _, doc = status_json(prov)
        assert "Quota exceeded" in json.dumps(doc)
        assert prov.stop(proc) == 0
    finally:
        nova.set_instances_quota(10)
        if theirs:
            nova.admin.servers.delete(theirs.id)
        if other:
            other.close()


def test_real_scheduler_error_is_terminated_as_a_failure(site, nova, tmp_path):
    """A flavour no host can take: Nova's scheduler puts the server in ERROR
    ("No valid host was found"); it is deleted as a failure and backs off."""
    pool, make = site
    prov = make(INSTANCE_TYPE="m1.huge")
    submit(pool, tmp_path, 1, 60)
    proc = prov.start()
    wait_for(lambda: "as a failure" in prov.log_text(), 120, interval=1,
             what="the ERROR server terminated as a failure")
    wait_for(lambda: not servers(nova, prov), 60, interval=1, what="the ERROR server deleted")
    text = prov.log_text()
    assert "Nova status ERROR" in text and "No valid host was found" in text, text[-3000:]
    assert proc.poll() is None and "Traceback" not in text
    assert prov.stop(proc) == 0


def test_listings_filter_by_tag_in_nova_and_fall_back_to_names_before_2_52(nova, os_env):
    """From 2.52 servers carry Nova tags and listings ask Nova for them (plus
    the untagged servers of older versions); before, Nova filters by name, and
    the metadata filter keeps only ours either way."""
    from condor_plugins.providers.openstack import OpenStackProvider
    settings = {"CLOUD": "condor", "NETWORK": "none"}
    new = OpenStackProvider(ENTRY, settings)
    old = OpenStackProvider(ENTRY, dict(settings, API_VERSION="2.37"))   # before tags
    spec = InstanceSpec(ENTRY, "m1.small", "el9-condor-worker", 1, 2048, 0)
    ours = {"condor-plugins/pool": "tags", "condor-plugins/provisioner": "prov-tags"}
    other = {"condor-plugins/pool": "tags", "condor-plugins/provisioner": "prov-other"}
    log_start = len(nova.api_log())
    try:
        tagged = new.create(spec, 1, ours, "", "tagged-1")
        untagged = old.create(spec, 1, ours, "", "untagged-1")   # made by an older version
        new.create(spec, 1, other, "", "other-1")
        want = {i.id for i in tagged + untagged}
        assert {i.id for i in new.list(ours)} == want
        assert {i.id for i in old.list(ours)} == want
        api = nova.api_log()[log_start:]
        assert "tags=pool%3Dtags%2Cprovisioner%3Dprov-tags" in api
        assert "not-tags-any=pool%3Dtags%2Cprovisioner%3Dprov-tags" in api
        assert "servers/detail?limit=500&name=%5Econdor-" in api   # 2.37: by name only
        assert [t for t in nova.admin.servers.get(tagged[0].id).tag_list()
                if t.startswith("request=")] == ["request=tagged-1"]
    finally:
        for provider, tags in ((new, ours), (new, other)):
            provider.terminate([i.id for i in provider.list(tags)])
        wait_for(lambda: not new.list(ours) and not new.list(other), 60, interval=1,
                 what="the servers deleted")
        new.close()
        old.close()


def test_servers_a_quota_recheck_failed_are_listed_with_why_and_deleted(nova, os_env):
    """Two creates in a row at quota 1: Nova's API admits both, then its
    conductor's quota recheck puts them in ERROR and drops their RequestSpecs.
    At 2.96 Nova's lists then fail (HTTP 500), which would hide the entry's
    servers; ``auto`` stops at 2.95, where they are listed with the reason."""
    from condor_plugins.providers.openstack import OpenStackProvider
    settings = {"CLOUD": "condor", "NETWORK": "none", "MAX_ATTEMPTS": "1"}
    provider = OpenStackProvider(ENTRY, settings)
    spec = InstanceSpec(ENTRY, "m1.small", "el9-condor-worker", 1, 2048, 0)
    tags = {"condor-plugins/pool": "recheck", "condor-plugins/provisioner": "prov-recheck"}
    nova.set_instances_quota(1)
    try:
        made = []
        for token in ("recheck-1", "recheck-2"):
            try:
                made += provider.create(spec, 1, tags, "", token)
            except QuotaError:
                pass   # the API counted the first one
        def settled():
            try:
                found = provider.list(tags)
            except TransientError:   # mid-recheck Nova may answer one list with a 500
                return None          # (seen once in CI); the provisioner calls it unknown
            return found if all(i.state is not InstanceState.PENDING for i in found) else None
        listed = wait_for(settled, 60, interval=1, what="the servers built or failed")
        assert {i.id for i in listed} == {i.id for i in made}
        errors = [i for i in listed if i.state is InstanceState.ERROR]
        assert errors, listed   # Nova 31 admitted both, then failed them
        assert all("Quota exceeded" in i.reason for i in errors), errors
        at_2_96 = OpenStackProvider(ENTRY, dict(settings, API_VERSION="2.96"))
        with pytest.raises(TransientError, match="list servers failed: HTTP 500"):
            at_2_96.list(tags)
        at_2_96.close()
    finally:
        nova.set_instances_quota(10)
        provider.terminate([i.id for i in provider.list(tags)])
        wait_for(lambda: not provider.list(tags), 60, interval=1, what="the servers deleted")
        provider.close()


def test_provisioner_gone_every_server_shuts_off_within_the_lease(site, nova, tmp_path):
    """SIGKILL the provisioner mid-burst and never restart it: running jobs
    finish exactly once, then every server retires by itself when the lease
    runs out and powers off (SHUTOFF in real Nova)."""
    pool, make = site
    # A lease of 20 s (EC2's test: 8 s): a cycle against real Nova under a
    # loaded CI machine can take seconds, and a late renewal retires the nodes.
    prov = make(IDLE_TIMEOUT=600, LEASE=20, IDLE_SHUTDOWN=600)
    hv = Hypervisor(RealNovaApi(nova, owned(prov)), poll=1.0).start()
    try:
        try:
            kill_mid_burst(pool, prov, hv, tmp_path)
        except TimeoutError as err:
            pytest.fail(f"{err}\n{prov.log_text()[-4000:]}\n{hv.errors}\n{hv.consoles()[-6000:]}")
        wait_for(lambda: set(servers(nova, prov).values()) == {"SHUTOFF"}, 180, interval=1,
                 what="every server shut off by itself")
        assert set(hv.powered_off) == set(servers(nova, prov))
    finally:
        hv.stop()


# ---------------------------------------------------------------- two clouds (issue 15)

AWS_ENV = {"AWS_ACCESS_KEY_ID": "AKIDTWOCLOUDS0042XYZ",
           "AWS_SECRET_ACCESS_KEY": "twoClouds/kEy+0123456789abcdefghijKLMNOP",
           "AWS_CONFIG_FILE": "/nonexistent/aws-config",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
           "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1,localhost"}
#: os1's knobs that are not its provider's: the EC2 entry gets the same.
SHARED_KNOBS = ("CPUS", "MEMORY", "DISK", "MAX_BOOTING", "IDLE_TIMEOUT", "JOIN_TIMEOUT",
                "DRAIN_TIMEOUT", "WORKER_IDLE_SHUTDOWN", "CONTROL_PERIOD", "SHUTDOWN_GRACE",
                "USER_DATA_TEMPLATE_DIR")


@pytest.fixture
def two_clouds(site, moto_url, monkeypatch):
    """A provisioner maker with two entries: os1 (real Nova, 0.05/h) and ec2e
    (moto's EC2, 0.20/h), both with one-core nodes, so one job per node."""
    import boto3
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2"):
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_url)
    image = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    pool, make = site
    made = []

    def two(os_max, command=None, **knobs):
        prov = make(command=command, CPUS=1, MEMORY=512, MAX_INSTANCES=os_max,
                    COST_PER_HOUR="0.05", **knobs)
        e = "CLOUD_PLUGINS_EC2E_"
        ec2 = {e + k: prov.knobs[f"CLOUD_PLUGINS_{ENTRY.upper()}_{k}"] for k in SHARED_KNOBS
               if f"CLOUD_PLUGINS_{ENTRY.upper()}_{k}" in prov.knobs}
        ec2.update({e + k: v for k, v in {
            "TYPE": "ec2", "ENDPOINT_URL": moto_url, "REGION": "us-east-1", "IMAGE": image,
            "INSTANCE_TYPE": "t3.small", "MAX_ATTEMPTS": 1, "MAX_INSTANCES": 4,
            "COST_PER_HOUR": "0.20"}.items()})
        prov.configure(CLOUD_PLUGINS_PROVIDERS=f"{ENTRY} ec2e", **ec2)
        prov.extra_env.update(AWS_ENV)
        made.append(prov)
        return prov

    yield pool, two, client
    for prov in made:
        ids = [i for res in client.describe_instances(Filters=[
            {"Name": f"tag:{TAG_PROVISIONER}", "Values": [f"prov-{prov.name}"]}])["Reservations"]
            for i in (x["InstanceId"] for x in res["Instances"])]
        if ids:
            client.terminate_instances(InstanceIds=ids)
    client.close()


def created(prov, entry):
    return len(re.findall(rf"Created \S+ \(entry {entry}\)", prov.log_text()))


def tree(path: Path) -> dict:
    return {str(p): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()} \
        if path.exists() else {}


def test_two_clouds_cheaper_fills_first_spills_the_rest_and_plan_agrees(two_clouds, nova,
                                                                        moto_url, tmp_path):
    """3 cloud-mode jobs, one per node: the cheaper OpenStack entry (MAX_INSTANCES
    1) gets one server and EC2 the other two, each job is provisioned for once
    and runs once.  ``condor_cloud plan`` first predicts exactly these creates,
    writes nothing and calls nothing but listings on either cloud."""
    from hypervisor import EC2Api
    pool, two, client = two_clouds
    calls = tmp_path / "plan-calls"
    prov = two(1)
    spool = Path(subprocess.run(["condor_config_val", "SPOOL"], env=prov.env(),
                                capture_output=True, text=True).stdout.strip())
    cluster = submit(pool, tmp_path, 3, 20)
    wait_for(lambda: len(pool.schedd().query(f"ClusterId == {cluster}", ["ProcId"])) == 3, 30,
             what="the jobs in the queue")
    before = tree(spool / "cloud_plugins"), tree(prov.dir)
    res = subprocess.run([sys.executable, FAULTS, "plan", "--json"], capture_output=True,
                         text=True, timeout=120, env=prov.env({
                             "CP_TEST_MODULE": "condor_plugins.cli",
                             "CP_TEST_FAULTS": json.dumps({"calls": str(calls)})}))
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert {c["entry"]: c["count"] for c in doc["creates"]} == {ENTRY: 1, "ec2e": 2}, doc
    assert doc["spend_per_hour"]["after"] == pytest.approx(0.45)
    assert (tree(spool / "cloud_plugins"), tree(prov.dir)) == before
    made = calls.read_text().split("\n")
    assert any("DescribeInstances" in c for c in made) and any(c.startswith("GET ") for c in made)
    # Reads only (and Keystone's authentication): no create, delete, tag or action.
    assert all(c in ("", "POST /v3/auth/tokens") or c.startswith(("GET ", "Describe"))
               for c in made), made
    hv_os = Hypervisor(RealNovaApi(nova, owned(prov)), poll=1.0).start()
    hv_ec2 = Hypervisor(EC2Api(moto_url, {TAG_PROVISIONER: f"prov-{prov.name}"})).start()
    try:
        proc = prov.start()
        ads = wait_for(lambda: (not (hv_os.errors or hv_ec2.errors)
                                or pytest.fail(str(hv_os.errors + hv_ec2.errors)))
                       and jobs_done(pool, cluster, 3), 300, interval=1,
                       what="3 jobs done on nodes of both clouds")
        text = prov.log_text()
        assert all(a["ExitCode"] == 0 and a["NumJobStarts"] == 1 for a in ads), text
        # The first cycle's creates are the plan's.  A replacement is made only
        # for a failure the log names (under CI load a Nova create may time out
        # on the client and the server appear later: adopted, then retired).
        first = re.findall(r"Created \S+ \(entry (\S+)\)", text)[:3]
        assert sorted(first) == sorted([ENTRY, "ec2e", "ec2e"]), text
        failures = len(re.findall(r"Create for entry \S+ failed|as a failure", text))
        assert len(hv_os.booted) + len(hv_ec2.booted) <= 3 + failures, text
        if not failures:
            assert (len(hv_os.booted), len(hv_ec2.booted)) == (1, 2), text
            assert (created(prov, ENTRY), created(prov, "ec2e")) == (1, 2), text
        assert "spilled over from os1" in text and "Hold (os1)" in text, text
        assert prov.stop(proc) == 0
    finally:
        hv_os.stop()
        hv_ec2.stop()


def test_quota_error_on_the_cheaper_cloud_moves_its_jobs_to_the_other(two_clouds, nova,
                                                                      tmp_path):
    """The project has no room left (quota 0): os1's create gets Nova's 403 and
    backs off; the next cycle starts the 2 nodes on EC2, and no more."""
    pool, two, client = two_clouds
    prov = two(4, JOIN_TIMEOUT=300)
    nova.set_instances_quota(0)
    try:
        submit(pool, tmp_path, 2, 60)
        proc = prov.start()
        wait_for(lambda: created(prov, "ec2e") >= 2, 120, interval=1,
                 what="the EC2 creates after the quota error")
        time.sleep(5)   # cycles every second: no more creates on either entry
        text = prov.log_text()
        assert "failed (quota)" in text and "backing off" in text
        assert text.index("failed (quota)") < text.index("(entry ec2e)")
        assert (created(prov, ENTRY), created(prov, "ec2e")) == (0, 2)
        assert not servers(nova, prov)
        _, doc = status_json(prov)
        assert doc["spend_per_hour"] == pytest.approx(0.4)
        assert doc["entries"]["ec2e"]["spend_per_hour"] == pytest.approx(0.4)
        assert prov.stop(proc) == 0
    finally:
        nova.set_instances_quota(10)


def test_the_flavor_sizes_the_entry(nova, os_env):
    """Issue 15: an entry's size is its flavor's, read from real Nova."""
    from condor_plugins.providers.base import ProviderError
    from condor_plugins.providers.openstack import OpenStackProvider
    provider = OpenStackProvider(ENTRY, {"CLOUD": "condor", "NETWORK": "none"})
    spec = InstanceSpec(ENTRY, "m1.small", "el9-condor-worker", 1, 2048, 0)
    try:
        kind = provider.describe(spec)
        assert (kind.cpus, kind.memory_mb, kind.disk_mb, kind.disk_grows) == (2, 2048, 1024, False)
        with pytest.raises(ProviderError, match="find flavor 'm1.nosuch' failed: HTTP 404"):
            provider.describe(InstanceSpec(ENTRY, "m1.nosuch", "el9-condor-worker", 1, 2048, 0))
    finally:
        provider.close()


def test_a_job_the_flavor_fits_but_the_vm_does_not_starts_one_server(site, nova, tmp_path):
    """Sizes left auto: the template has the flavor's 2 cores and 2048 MB; the
    VM's HTCondor reports 1984 MB (its kernel keeps some, as on a real cloud).
    A job of 2000 MB starts one server, which joins and serves nothing: the entry
    backs off and says which attribute did not match.  The cycle that sees the
    node join already plans with its real ad: no second server."""
    pool, make = site
    prov = make(CPUS="", MEMORY="", DISK="", IDLE_TIMEOUT=4, BACKOFF_INITIAL=3600,
                MAX_INSTANCES=3)
    hv = Hypervisor(RealNovaApi(nova, owned(prov)), poll=1.0).start()
    submit(pool, tmp_path, 1, 10, memory=2000)
    proc = prov.start()
    try:
        wait_for(lambda: (not hv.errors or pytest.fail(str(hv.errors)))
                 and "started, but no job matched" in prov.log_text(), 240, interval=1,
                 what="the churn brake")
        time.sleep(4)   # cycles every second: a backoff, not a server per IDLE_TIMEOUT
        assert len(hv.booted) == 1, prov.log_text()
        text = prov.log_text()
        assert "instance type m1.small has 2 cores, 2048 MB memory, 1024 MB disk" in text
        res, doc = status_json(prov)
        entry = doc["entries"][ENTRY]
        assert (entry["cpus"], entry["memory_mb"], entry["size_unknown"]) == (2, 2048, None)
        why = doc["backoff"][ENTRY]["reason"]
        assert "started, but no job matched" in why and "Memory = 1984" in why, why
        assert prov.stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        hv.stop()
