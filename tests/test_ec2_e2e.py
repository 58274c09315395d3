"""End to end on EC2's API (issue 4, acceptance 2-5): provisioner -> boto3 ->
moto's EC2 server on 127.0.0.1 -> a test hypervisor that boots each instance's
user data as a real node -> the node joins the site pool and runs jobs ->
scale-down terminates the instance through the API, which stops the node.

Faults (a SIGKILL right after RunInstances returned, EC2 error answers) are
injected on botocore's real code path by tests/cloudfaults.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto.server")
import boto3  # noqa: E402
import htcondor2  # noqa: E402

from condor_plugins.localpool import processes_using, wait_for  # noqa: E402
from condor_plugins.providers.base import TAG_ENTRY, TAG_PROVISIONER, TAG_REQUEST  # noqa: E402
from hypervisor import EC2Api, Hypervisor  # noqa: E402
from provtools import (VM_ADDRESS, ProvMaker, cmdlines, jobs_done,  # noqa: E402
                       kill_mid_burst, refused_drains, node_of, site_pool, submit, vm_timing)

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning")]

ENTRY = "ec2e"
KEY_ID = "AKIDE2ETESTKEY0042XYZ"
SECRET = "e2eSeCrEt/kEy+0123456789abcdefghijKLMNOP"
FAULTS = str(Path(__file__).with_name("cloudfaults.py"))
AWS_ENV = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_CONFIG_FILE": "/nonexistent/aws-config",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
           "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1,localhost"}


@pytest.fixture
def aws(monkeypatch, moto_url):
    """Credentials in the environment only (for the provisioner and the hypervisor)."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2",
                 "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_url)
    image = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    yield client, image
    client.close()


@pytest.fixture
def site(condor, request, aws, moto_url, tmp_path):
    """The site's central manager on the VMs' network; the VMs boot from
    nothing but the image and their user data (dev/vmhost)."""
    pool = site_pool(condor, "ec2e", address=VM_ADDRESS)
    make = ProvMaker(pool, condor.base, request.node.name, ENTRY, {
        "TYPE": "ec2", "ENDPOINT_URL": moto_url, "REGION": "us-east-1", "IMAGE": aws[1],
        "INSTANCE_TYPE": "t3.small", "MAX_ATTEMPTS": 1, "CONTROL_PERIOD": 1, "SHUTDOWN_GRACE": 5,
        "USER_DATA_TEMPLATE_DIR": vm_timing(tmp_path)})
    yield pool, make
    make.cleanup()


def instances(client, prov, live_only=True):
    """id -> EC2 description of ``prov``'s instances."""
    filters = [{"Name": f"tag:{TAG_PROVISIONER}", "Values": [f"prov-{prov.name}"]}]
    out = {}
    for res in client.describe_instances(Filters=filters)["Reservations"]:
        for inst in res["Instances"]:
            if not live_only or inst["State"]["Name"] in ("pending", "running"):
                out[inst["InstanceId"]] = inst
    return out


def log_texts(*dirs):
    """Every HTCondor and provisioner log under ``dirs`` that the test user
    can read (a VM's root-only logs, such as cloud-init's, hold its user data
    by design)."""
    out = {}
    for d in dirs:
        for path in Path(d).rglob("*"):
            if path.is_file() and ("/log/" in str(path) or path.suffix == ".log"):
                try:
                    out[str(path)] = path.read_text(errors="replace")
                except PermissionError:
                    continue
    return out


def cli(prov, *args):
    res = subprocess.run([sys.executable, "-m", "condor_plugins.cli", *args], env=prov.env(),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout + res.stderr


@pytest.mark.parametrize("datasource", [True, "foreign"], ids=["cloud-id", "foreign-id"])
def test_vms_boot_from_user_data_join_run_jobs_and_are_terminated(site, aws, moto_url,
                                                                   condor, tmp_path, datasource):
    """``foreign-id``: the VMs learn an id that is not the API's. The
    provisioner matches them by CloudRequestID (a short JOIN_TIMEOUT would kill
    a node it does not recognise)."""
    pool, make = site
    client, _ = aws
    prov = make(JOIN_TIMEOUT=45)
    hv = Hypervisor(EC2Api(moto_url, {TAG_PROVISIONER: f"prov-{prov.name}"}),
                    datasource=datasource).start()
    try:
        cluster = submit(pool, tmp_path, 3, 10)
        proc = prov.start()
        seen_cmdlines = []
        if datasource is True:
            # From the provisioner's side, condor_off and condor_drain are refused.
            slot = wait_for(lambda: pool.collector().query(
                htcondor2.AdType.Startd, "IsCloudNode is True", ["Machine", "MyAddress"]), 120,
                what="a VM's slot in the collector")[0]
            drain = ("import classad2, htcondor2, sys; htcondor2.Startd(classad2.ClassAd("
                     "{'MyType': 'Machine', 'MyAddress': sys.argv[1]})).drainJobs()")
            for args in (["condor_off", "-startd", "-addr", slot["MyAddress"]],
                         [sys.executable, "-c", drain, slot["MyAddress"]]):
                res = subprocess.run(args, env=prov.env(), capture_output=True, text=True,
                                     timeout=60)
                assert res.returncode != 0, (args, res.stdout, res.stderr)
                assert any(w in res.stdout + res.stderr for w in (
                    "AUTHENTICATE", "SECMAN", "denied", "failed to start draining")), (args, res.stdout, res.stderr)
            time.sleep(3)
            assert pool.collector().query(htcondor2.AdType.Startd,
                                          f'Machine == "{slot["Machine"]}"', ["Name"])

        def done():
            seen_cmdlines.extend(cmdlines())
            assert not hv.errors, hv.errors
            return jobs_done(pool, cluster, 3)
        try:
            ads = wait_for(done, 180, interval=1, what="3 jobs done on EC2 nodes")
        except TimeoutError:
            pytest.fail(f"{prov.log_text()[-3000:]}\n{hv.consoles()}")
        launched = instances(client, prov, live_only=False)
        assert 1 <= len(launched) <= 2, launched
        # Each instance: the provisioner's tags, booted by the hypervisor from its user data.
        for iid, inst in launched.items():
            tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
            assert tags[TAG_ENTRY] == ENTRY and tags[TAG_REQUEST].startswith(f"{ENTRY}-")
            assert hv.user_data[iid].startswith("#cloud-config")
        # Jobs ran on the EC2 nodes, which advertise the cloud's instance id.
        assert all(a["ExitCode"] == 0 for a in ads)
        assert {node_of(a["LastRemoteHost"]) for a in ads} <= set(hv.node_ids.values())
        assert set(hv.node_ids) == set(launched)
        # The status and the userdata command show no secret (checked below).
        status = cli(prov, "status") + cli(prov, "status", "--json")
        assert all(iid in status for iid in launched)
        userdata = cli(prov, "userdata", ENTRY)
        # Scale-down by pulling: each node retires itself and powers off
        # (terminating its instance, as EC2's shutdown behaviour "terminate" does).
        wait_for(lambda: not instances(client, prov), 120, interval=1,
                 what="every EC2 instance terminated")
        wait_for(lambda: set(hv.stopped) == set(launched) and not hv.running(), 60,
                 what="every node stopped")
        assert not processes_using(str(hv.state_dir))
        assert prov.stop(proc) == 0
        text = prov.log_text()
        assert "Created i-" in text and "by pulling" in text and "Draining i-" not in text
        assert "did not join" not in text and "as a failure" not in text
        # Each retired itself and powered off; the provisioner's drain was refused.
        assert set(hv.powered_off) == set(launched), hv.consoles()
        assert refused_drains(hv.state_dir), "no node logged a refused drain"
        # Secrets: no token and no AWS secret in any log, status output or command line.
        tokens = hv.tokens()
        count = len(tokens)  # (a failing assert must not print them)
        assert count == 2 * len(launched)  # the worker's and the control script's
        texts = log_texts(prov.dir, pool.workdir, hv.state_dir)
        texts.update(status=status, userdata=userdata, cmdlines="\n".join(seen_cmdlines))
        assert len(texts) > 10
        for name, body in texts.items():
            for secret in tokens + [SECRET]:
                assert secret not in body, f"a secret in {name}"
        assert "<redacted>" in userdata
    finally:
        hv.stop()


def test_userdata_command_shows_secrets_only_when_asked(site, aws, tmp_path):
    pool, make = site
    prov = make()
    shown = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "userdata", ENTRY,
                            "--show-secrets"], env=prov.env(), capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "live worker token" in shown.stderr
    assert shown.stdout.startswith("#cloud-config") and "eyJ" in shown.stdout
    hidden = cli(prov, "userdata", ENTRY, "--instance-id", "ec2e-look")
    assert "eyJ" not in hidden and "ec2e-look" in hidden
    for doc in (shown.stdout, hidden):
        path = tmp_path / "doc.yaml"
        path.write_text(doc)
        res = subprocess.run(["cloud-init", "schema", "-c", str(path)], capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
    bad = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "userdata", "nosuch"],
                         env=prov.env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no provider entry 'nosuch'" in bad.stderr


def test_sigkill_after_run_instances_then_restart_launches_exactly_the_request(
        site, aws, tmp_path):
    """Killed after RunInstances returned, before recording it: the restarted
    provisioner adopts the instance from the tag listing and tops up to the
    request; never a duplicate."""
    pool, make = site
    client, _ = aws
    faults = {"kill_after": "RunInstances", "marker": str(tmp_path / "killed"),
              "calls": str(tmp_path / "calls")}
    prov = make(command=[sys.executable, FAULTS], JOIN_TIMEOUT=300)
    prov.extra_env["CP_TEST_FAULTS"] = json.dumps(faults)
    submit(pool, tmp_path, 4, 60)  # 4 one-core jobs on 2-core VMs: 2 instances
    first = prov.start()
    assert first.wait(60) == -signal.SIGKILL
    assert len(instances(client, prov)) == 1  # launched, never recorded
    state = prov.pool.workdir / "spool" / "cloud_plugins" / "provisioner-state.json"
    assert not state.exists() or not json.loads(state.read_text())["records"]
    second = prov.start()
    wait_for(lambda: "adopted" in prov.log_text() and len(instances(client, prov)) == 2, 60,
             what="the orphan adopted and one more launched")
    time.sleep(5)  # several more cycles: still exactly two
    assert len(instances(client, prov)) == 2
    assert open(faults["calls"]).read().split().count("RunInstances") == 2
    assert prov.stop(second) == 0


@pytest.mark.parametrize("code, status, kind", [
    ("InsufficientInstanceCapacity", 500, "capacity"),
    ("InstanceLimitExceeded", 400, "quota")])
def test_capacity_and_quota_errors_back_off_without_crashing(site, aws, tmp_path,
                                                             code, status, kind):
    pool, make = site
    client, _ = aws
    faults = {"errors": {"RunInstances": [code, status]}, "calls": str(tmp_path / "calls")}
    prov = make(command=[sys.executable, FAULTS])
    prov.extra_env["CP_TEST_FAULTS"] = json.dumps(faults)
    submit(pool, tmp_path, 2, 60)
    proc = prov.start()
    wait_for(lambda: f"failed ({kind})" in prov.log_text(), 60, what=f"the {kind} error")
    time.sleep(6)  # cycles every second: backoff, not a retry per cycle
    assert proc.poll() is None, prov.log_text()
    calls = open(faults["calls"]).read().split()
    assert calls.count("RunInstances") == 1 and calls.count("DescribeInstances") >= 5
    text = prov.log_text()
    assert "Traceback" not in text and code in text and "backing off" in text
    assert not instances(client, prov)
    assert prov.stop(proc) == 0


def test_auth_errors_give_one_clear_line_per_cycle(site, aws, tmp_path):
    pool, make = site
    faults = {"errors": {op: ["AuthFailure", 401] for op in
                         ("DescribeInstances", "RunInstances", "TerminateInstances")},
              "calls": str(tmp_path / "calls")}
    prov = make(command=[sys.executable, FAULTS])
    prov.extra_env["CP_TEST_FAULTS"] = json.dumps(faults)
    submit(pool, tmp_path, 2, 60)
    proc = prov.start()
    time.sleep(8)
    assert proc.poll() is None, prov.log_text()
    calls = open(faults["calls"]).read().split()
    lines = [ln for ln in prov.log_text().splitlines() if "AuthFailure" in ln]
    cycles = calls.count("DescribeInstances")
    assert cycles >= 4 and "RunInstances" not in calls  # unknown state: hold, never launch
    assert cycles - 1 <= len(lines) <= cycles + 1, lines
    assert all("credentials" in ln and SECRET not in ln and KEY_ID not in ln for ln in lines)
    assert "Traceback" not in prov.log_text()
    assert prov.stop(proc) == 0


def test_instance_stopped_by_itself_is_terminated_and_the_entry_bursts_again(
        site, aws, moto_url, condor, tmp_path):
    """EC2 keeps a stopped instance (its volumes bill) and it held a
    MAX_INSTANCES slot: the provisioner terminates it at once, then bursts again."""
    pool, make = site
    client, _ = aws
    prov = make(MAX_INSTANCES=1, IDLE_TIMEOUT=600)
    hv = Hypervisor(EC2Api(moto_url, {TAG_PROVISIONER: f"prov-{prov.name}"})).start()
    try:
        first = submit(pool, tmp_path, 1, 1)
        proc = prov.start()
        wait_for(lambda: jobs_done(pool, first, 1), 120, interval=1, what="the first job done")
        [iid] = instances(client, prov)
        client.stop_instances(InstanceIds=[iid])   # the VM stopped itself (stop behaviour)
        state = lambda: instances(client, prov, live_only=False)[iid]["State"]["Name"]  # noqa: E731
        wait_for(lambda: state() == "terminated", 60, interval=1,
                 what="the stopped instance terminated")
        # Its ads (the VM stopped hard, it withdrew nothing) are withdrawn.
        gone = f'Machine == "{hv.hostnames[iid]}"'
        wait_for(lambda: not pool.collector().query(htcondor2.AdType.Startd, gone, ["Name"]),
                 10, what="the stopped VM's ads withdrawn")
        second = submit(pool, tmp_path, 1, 1)
        try:
            wait_for(lambda: jobs_done(pool, second, 1), 120, interval=1,
                     what="a job on a new instance")
        except TimeoutError:
            logs = "".join((pool.log_dir / n).read_text()[-3000:] for n in ("SchedLog", "NegotiatorLog"))
            pytest.fail(f"{prov.log_text()[-2000:]}\n{logs}\n{hv.consoles()[-3000:]}")
        assert len(instances(client, prov, live_only=False)) == 2
        assert prov.stop(proc) == 0
        text = prov.log_text()
        assert f"Terminated {iid} (entry {ENTRY}) (stopped)" in text, text[-3000:]
        assert "as a failure" not in text and "backing off" not in text
    finally:
        hv.stop()


def test_provisioner_gone_every_vm_retires_within_the_lease(site, aws, moto_url, condor,
                                                            tmp_path):
    """SIGKILL the provisioner mid-burst and never restart it: running jobs
    finish exactly once, then every VM retires by itself when the lease runs out
    and powers off, which terminates it: EC2 ends with no running instance."""
    pool, make = site
    client, _ = aws
    prov = make(IDLE_TIMEOUT=600, LEASE=8, IDLE_SHUTDOWN=600)
    hv = Hypervisor(EC2Api(moto_url, {TAG_PROVISIONER: f"prov-{prov.name}"})).start()
    try:
        launched = kill_mid_burst(pool, prov, hv, tmp_path,
                                  lambda: set(instances(client, prov)))
        wait_for(lambda: not instances(client, prov), 120, interval=1,
                 what="every instance terminated by its own power-off")
        assert set(hv.powered_off) == launched
    finally:
        hv.stop()


def test_spot_notice_vacates_the_node_and_its_job_completes_elsewhere(site, aws, moto_url,
                                                                      condor, tmp_path):
    """An instance-action notice served by one VM's metadata endpoint while it
    runs a job: within a control period the node stops taking jobs and vacates
    the job, which is requeued and completes on another VM; the instance is
    terminated, and the entry is not backed off."""
    pool, make = site
    client, _ = aws
    prov = make(INTERRUPTIBLE="true", MAX_INSTANCES=3, IDLE_TIMEOUT=600)
    hv = Hypervisor(EC2Api(moto_url, {TAG_PROVISIONER: f"prov-{prov.name}"})).start()
    try:
        cluster = submit(pool, tmp_path, 2, 40, cpus=2)  # one job per 2-core VM
        proc = prov.start()
        running = wait_for(lambda: (len(r := pool.schedd().query(
            "JobStatus == 2", ["ProcId", "RemoteHost"])) == 2 and r), 150, interval=1,
            what="both jobs running on two VMs")
        victim = running[0]
        host = node_of(victim["RemoteHost"])
        [iid] = [i for i, h in hv.node_ids.items() if h == host]
        t0 = time.monotonic()
        hv.booted[iid].serve("latest/meta-data/spot/instance-action",
                             json.dumps({"action": "terminate", "time": "2026-12-02T03:00:00Z"}))
        machine = f'Machine == "{hv.hostnames[iid]}"'
        try:
            wait_for(lambda: [a for a in pool.collector().query(
                htcondor2.AdType.Startd, machine, ["CloudInterruption"])
                if a.get("CloudInterruption")], 30, interval=0.2, what="CloudInterruption")
        except TimeoutError:
            pytest.fail(hv.consoles())
        seen = time.monotonic() - t0
        job = f"ClusterId == {cluster} && ProcId == {victim['ProcId']}"
        wait_for(lambda: not [a for a in pool.schedd().query(job, ["RemoteHost"])
                              if node_of(a.get("RemoteHost", "x@x")) == host], 30,
                 interval=0.2, what="the job vacated from the interrupted VM")
        vacated = time.monotonic() - t0
        ads = wait_for(lambda: jobs_done(pool, cluster, 2), 240, interval=1,
                       what="both jobs done")
        starts = {a["ProcId"]: a["NumJobStarts"] for a in ads}
        assert starts[victim["ProcId"]] == 2 and starts[1 - victim["ProcId"]] == 1, starts
        wait_for(lambda: iid not in instances(client, prov), 60, interval=1,
                 what="the interrupted instance terminated")
        [ad] = pool.collector().query(htcondor2.AdType.Any, 'MyType == "CloudProvisioner"',
                                      ["InstancesInterrupted", "BackoffEntries"])
        assert ad["InstancesInterrupted"] == 1 and not ad["BackoffEntries"], ad
        assert prov.stop(proc) == 0
        text = prov.log_text()
        assert f"{iid} (entry {ENTRY}): " in text and "-> draining, interrupted by the cloud " \
            "(terminate at 2026-12-02T03:00:00Z)" in text, text[-3000:]
        assert "as a failure" not in text and "backing off" not in text
        print(f"spot notice -> CloudInterruption in the collector {seen:.1f} s, "
              f"job vacated {vacated:.1f} s")
    finally:
        hv.stop()


def test_watchdog_powers_off_a_vm_whose_htcondor_never_starts(site, aws, moto_url, condor,
                                                              tmp_path):
    """A config file that HTCondor cannot parse: condor_master never runs, so
    no node control either; the VM's own watchdog powers it off."""
    pool, make = site
    broken = vm_timing(tmp_path / "broken")
    (broken / "etc" / "condor" / "config.d" / "99-broken.conf").write_text(
        "this is not a configuration line\n")
    prov = make(USER_DATA_TEMPLATE_DIR=broken, WATCHDOG=12, JOIN_TIMEOUT=600, MAX_INSTANCES=1)
    hv = Hypervisor(EC2Api(moto_url, {TAG_PROVISIONER: f"prov-{prov.name}"})).start()
    try:
        submit(pool, tmp_path, 1, 1)
        proc = prov.start()
        [iid] = wait_for(lambda: hv.wait_booted(1, 1), 60, what="a VM booted")
        t0 = time.monotonic()
        wait_for(lambda: iid in hv.powered_off, 60, interval=0.5,
                 what="the VM powered off by its watchdog")
        elapsed = time.monotonic() - t0
        vm = hv.booted[iid]
        log = vm.file("/var/log/condor-cloud-watchdog.log").read_text()
        assert "condor_master has not run for" in log, log
        assert not vm.file("/var/log/condor/MasterLog").exists()  # HTCondor never ran
        # the limit, one check period, the boot (cloud-init under the loaded suite)
        assert elapsed < 12 + 4 + 30, elapsed
        wait_for(lambda: iid not in instances(client=aws[0], prov=prov), 30, interval=1,
                 what="the powered-off instance terminated")
        assert prov.stop(proc) == 0
        print(f"watchdog: powered off {elapsed:.1f} s after boot (WATCHDOG 12 s)")
    finally:
        hv.stop()


def test_hung_vm_is_terminated_as_lost_and_the_healthy_one_is_kept(condor, request, aws,
                                                                   moto_url, tmp_path):
    """SIGSTOP every HTCondor process of one VM (a hung VM: its ads expire from
    the collector, its watchdog still sees a condor_master): after LOST_TIMEOUT
    with no job running there it is terminated as lost; the other VM is untouched."""
    pool = site_pool(condor, "hung", extra="CLASSAD_LIFETIME = 15\n", address=VM_ADDRESS)
    make = ProvMaker(pool, condor.base, request.node.name, ENTRY, {
        "TYPE": "ec2", "ENDPOINT_URL": moto_url, "REGION": "us-east-1", "IMAGE": aws[1],
        "INSTANCE_TYPE": "t3.small", "MAX_ATTEMPTS": 1, "CONTROL_PERIOD": 1,
        "SHUTDOWN_GRACE": 5, "USER_DATA_TEMPLATE_DIR": vm_timing(tmp_path)})
    prov = make(IDLE_TIMEOUT=3600, LOST_TIMEOUT=60, IDLE_SHUTDOWN=3600)
    hv = Hypervisor(EC2Api(moto_url, {TAG_PROVISIONER: f"prov-{prov.name}"})).start()
    try:
        cluster = submit(pool, tmp_path, 2, 10, cpus=2)  # one job per 2-core VM
        proc = prov.start()
        wait_for(lambda: jobs_done(pool, cluster, 2) and len(hv.running()) == 2, 150,
                 interval=1, what="2 jobs done on 2 VMs")
        hung, healthy = sorted(hv.running())
        assert hv.booted[hung].kill("STOP", "^condor_") >= 2  # master, startd, ...
        t0 = time.monotonic()
        line = f"Terminated {hung} (entry {ENTRY}) as lost: lost: not in the collector for"
        wait_for(lambda: line in prov.log_text(), 150, interval=1,
                 what="the hung VM terminated as lost")
        elapsed = time.monotonic() - t0
        assert elapsed >= 60, elapsed
        wait_for(lambda: hung not in instances(aws[0], prov), 30, interval=1,
                 what="the hung instance terminated in EC2")
        assert healthy in instances(aws[0], prov) and healthy in hv.running()
        text = prov.log_text()
        assert f"Retiring {healthy}" not in text and f"Terminated {healthy}" not in text
        [ad] = pool.collector().query(htcondor2.AdType.Any, 'MyType == "CloudProvisioner"',
                                      ["InstancesLost"])
        assert ad["InstancesLost"] == 1
        assert prov.stop(proc) == 0
        print(f"hung VM terminated as lost {elapsed:.0f} s after SIGSTOP (LOST_TIMEOUT 60 s)")
    finally:
        hv.stop()
        make.cleanup()
