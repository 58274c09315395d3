"""The provisioner with the local provider on a real pool (issue 3, acceptance 1-5).

The provisioner runs as its own process (``python3 -m condor_plugins.provisioning.provisioner``)
with a config file that includes the site pool's; every node is a real
condor_master started by the local provider.  Where jobs ran is read back from
the schedd's history, what runs from the provider's instance directories.
"""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import htcondor2
import pytest

from condor_plugins.localpool import processes_using, wait_for
from condor_plugins.providers.base import InstanceState
from condor_plugins.providers.local import LocalProvider
from conftest import advertise_as_worker, worker_token
from provtools import (ENTRY, ProvMaker, advertise_ghost_schedd, history, jobs_done, site_pool,
                       node_of, submit, token_claims, watch)

pytestmark = pytest.mark.integration


@pytest.fixture
def site(condor, request):
    pool = site_pool(condor, "prov")
    make = ProvMaker(pool, condor.base, request.node.name)
    yield pool, make
    make.cleanup()


def check_tokens(prov):
    """Each node's token is 0600 in its token directory and on no command line."""
    tokens = []
    for iid in prov.running():
        path = prov.state_dir / iid / "tokens.d" / "cloud-worker"
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            tokens.append(path.read_text().strip())
            claims = token_claims(tokens[-1])
            # Minimal authorisations, a per-instance identity, a limited lifetime.
            assert sorted(claims["scope"].split()) == [
                "condor:/ADVERTISE_MASTER", "condor:/ADVERTISE_STARTD", "condor:/READ"], claims
            assert claims["sub"].startswith(iid + "@")
            assert claims["exp"] - claims["iat"] == 7 * 86400
            # The node runs from the cloud-init document a cloud VM would get.
            root = prov.state_dir / iid / "root"
            fragment = root / "etc/condor/config.d/50-cloud-worker.conf"
            assert f"include : {fragment}" in (prov.state_dir / iid / "condor_config").read_text()
            assert (root / "etc/condor/config.d/60-cloud-instance.conf").exists()
            assert (root / "etc/cvmfs/default.local").exists()
            assert stat.S_IMODE((root / "etc/condor/tokens.d/cloud-worker").stat().st_mode) == 0o600
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        assert not any(t and t in cmdline for t in tokens), f"a token on pid {pid}'s command line"
    return tokens


def assert_revoked(pool, nodes, tmp_path):
    """Issue 16: the worker tokens of ended instances are revoked: listed for
    the collector, which refuses a token of each node's identity."""
    spool = Path(pool.run("condor_config_val", "SPOOL").stdout.strip())
    listed = (spool / "cloud_plugins" / "revoked-tokens.config").read_text()
    for node in nodes:
        assert f'"{node}@' in listed, listed
        accepted = advertise_as_worker(pool, node, worker_token(pool, node), tmp_path, 1)
        assert not accepted, f"a token of {node} was accepted"   # (never print a token)
    # The control: a token of an identity that never ended is accepted.
    accepted = advertise_as_worker(pool, "control-0", worker_token(pool, "control-0"), tmp_path, 1)
    assert accepted, "a token of an identity that never ended was refused"


def test_burst_scales_up_to_the_cap_and_retires(site, tmp_path):
    pool, make = site
    prov = make()
    # Cloud jobs no instance of the entry can run: never counted as demand.
    other = submit(pool, tmp_path, 2, 1, requirements='TARGET.CloudProvider =!= "local"')
    cluster = submit(pool, tmp_path, 6, 3)
    proc = prov.start()
    seen = set()
    watch(prov, lambda: check_tokens(prov), 60, "a node with its token", seen=seen)
    # A second provisioner on the same state refuses to run.
    assert prov.once() == 3 and "Another provisioner is running" in prov.log_text()
    # The provisioner's own ad, with its counts, is in the collector.
    own = wait_for(lambda: pool.collector().query(
        htcondor2.AdType.Any, f'MyType == "CloudProvisioner" && Name == "prov-{prov.name}"',
        ["NumInstances", "CyclesTotal", "CloudEntries"]), 30, what="the provisioner's ad")
    assert own[0]["CloudEntries"] == ENTRY and own[0]["CyclesTotal"] >= 1
    ads = watch(prov, lambda: jobs_done(pool, cluster, 6), 150, "6 jobs done", seen=seen)
    assert all(a["ExitCode"] == 0 for a in ads)
    hosts = {node_of(a["LastRemoteHost"]) for a in ads}
    assert hosts <= seen and all(h.startswith(f"{ENTRY}-") for h in hosts), (hosts, seen)
    # 6 one-core jobs on 2-core nodes want 3 nodes; the cap is 2.
    assert len(seen) >= 2
    assert "at MAX_INSTANCES" in prov.log_text() or len(seen) > 2
    # Idle nodes are drained, then terminated; none is left.
    watch(prov, lambda: not prov.instances(), 90, "every node retired")
    # Issue 18: the totals since start are in its ad too (condor_gangliad, adstash).
    totals = wait_for(lambda: pool.collector().query(
        htcondor2.AdType.Any, f'MyType == "CloudProvisioner" && CloudTerminationsTotal >= '
        f'{len(seen)}', ["CloudCreatesTotal", "CloudTerminationsTotal", "CloudCostTotal",
                         "CloudCreateFailuresTotal"]), 30, what="the totals in its ad")
    assert totals[0]["CloudCreatesTotal"] == len(seen)
    assert totals[0]["CloudCreateFailuresTotal"] == 0 and totals[0]["CloudCostTotal"] == 0
    # ... and each instance gone is in the ledger condor_cloud report reads.
    # (written in the cycle that sees an instance gone, after its terminate).
    spool = Path(pool.run("condor_config_val", "SPOOL").stdout.strip())
    path = spool / "cloud_plugins" / "instances.jsonl"

    def ledger():
        lines = path.read_text().splitlines() if path.exists() else []
        out = [json.loads(line) for line in lines]
        return out if {v["id"] for v in out} == seen else None
    entries = wait_for(ledger, 30, what="every instance in the ledger")
    assert all(v["startd"] for v in entries)
    # The report from the real schedd's history: the 6 jobs on those nodes, by
    # their owner (no AcctGroup), and the nodes' unused time as idle.
    report = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "report", "--json",
                             "--by", "user"], env=prov.env(), capture_output=True, text=True,
                            timeout=60)
    assert report.returncode == 0, report.stderr
    rows = {r["key"]: r for r in json.loads(report.stdout)["rows"]}
    assert sum(r["jobs"] for k, r in rows.items() if k != "idle") == 6 and "idle" in rows
    assert prov.stop(proc) == 0
    assert_revoked(pool, seen, tmp_path)
    # Stopped cleanly: its ad is withdrawn.
    assert not pool.collector().query(htcondor2.AdType.Any, 'MyType == "CloudProvisioner"',
                                      ["Name"])
    text = prov.log_text()
    for word in ("Created ", "Draining ", "Terminated "):
        assert word in text, word
    assert "eyJ" not in text  # no token (JWT) in the log
    assert "did not join" not in text
    assert "6 idle job(s) need" in text and "8 idle job(s)" not in text
    assert not prov.running()
    ad = pool.schedd().query(f"ClusterId == {other}", ["JobStatus"])
    assert [a["JobStatus"] for a in ad] == [1, 1]
    pool.schedd().act(htcondor2.JobAction.Remove, f"ClusterId == {other}")


def test_busy_node_is_never_drained_even_with_zero_idle_timeout(site, tmp_path):
    pool, make = site
    prov = make(IDLE_TIMEOUT=60, MAX_INSTANCES=1)
    cluster = submit(pool, tmp_path, 1, 20)
    proc = prov.start()
    watch(prov, lambda: pool.schedd().query(f"ClusterId == {cluster} && JobStatus == 2",
                                            ["ProcId"]), 90, "the job running", cap=1)
    node = prov.running()[0]
    assert prov.stop(proc) == 0
    # Restart with a zero idle timeout while the job runs.
    prov.configure(IDLE_TIMEOUT=0)
    proc = prov.start()
    t0 = time.monotonic()
    while not jobs_done(pool, cluster, 1):
        assert prov.running() == [node], "the busy node was terminated"
        slots = pool.collector().query(htcondor2.AdType.Startd,
                                       f'CloudInstanceID == "{node}"', ["Draining"])
        assert not any(s.get("Draining") for s in slots) or jobs_done(pool, cluster, 1)
        assert time.monotonic() - t0 < 60, prov.log_text()[-4000:]
        time.sleep(1)
    ad = jobs_done(pool, cluster, 1)[0]
    assert ad["ExitCode"] == 0 and ad["NumJobStarts"] == 1
    assert node_of(ad["LastRemoteHost"]) == node
    text = prov.log_text()
    # Held while busy, or (a drain refused as the job started) retiring by
    # pulling: the job finishes first, it is never vacated.
    assert any(s in text for s in ("runs 1 job(s)", "running 1 job(s)", "by pulling")), text
    # Once the job is done, the idle node goes.
    watch(prov, lambda: not prov.instances(), 60, "the idle node retired", cap=1)
    assert prov.stop(proc) == 0


def test_unreachable_collector_or_schedd_holds_what_depends_on_it(site, tmp_path):
    pool, make = site
    prov = make(IDLE_TIMEOUT=600, MAX_INSTANCES=1)
    cluster = submit(pool, tmp_path, 1, 1)
    proc = prov.start()
    watch(prov, lambda: jobs_done(pool, cluster, 1), 90, "the job done", cap=1)
    assert prov.stop(proc) == 0
    node = prov.running()
    assert len(node) == 1
    prov.configure(IDLE_TIMEOUT=0)
    # The collector is unreachable for a cycle: nothing is drained or terminated.
    mark = len(prov.log_text())
    dead = f"127.0.0.1:{_dead_port()}"
    assert prov.once({"_CONDOR_COLLECTOR_HOST": dead}) == 1  # an incomplete cycle
    text = prov.log_text()[mark:]
    assert "Observation of the collector failed" in text, text
    assert "Draining" not in text and "Terminated" not in text, text
    assert prov.running() == node
    # The schedd is gone for a cycle: demand is unknown, so the idle node waits
    # up to 3x IDLE_TIMEOUT (as if idle jobs fitted it) instead of draining.
    prov.configure(IDLE_TIMEOUT=120)
    pool.run("condor_off", "-fast", "-daemon", "schedd")
    wait_for(lambda: not pool.collector().query(htcondor2.AdType.Schedd, "true", ["Name"]),
             30, what="the schedd ad gone")
    mark = len(prov.log_text())
    assert prov.once() == 1  # an incomplete cycle
    text = prov.log_text()[mark:]
    assert "Observation of the schedd(s) failed" in text, text
    assert "Draining" not in text and "Terminated" not in text, text
    assert prov.running() == node
    pool.run("condor_on", "-daemon", "schedd")
    wait_for(lambda: pool.collector().query(htcondor2.AdType.Schedd, "true", ["Name"]),
             30, what="the schedd back")
    prov.configure(IDLE_TIMEOUT=0)
    # Everything observable again: the idle node is drained, then terminated.
    deadline = time.monotonic() + 60
    while prov.instances() and time.monotonic() < deadline:
        prov.once()
        time.sleep(1)
    assert not prov.instances(), prov.log_text()[-4000:]
    assert "Draining " + node[0] in prov.log_text()


def _dead_port():
    from condor_plugins.localpool import free_port
    return free_port()  # nothing listens on it once the probe socket is closed


def test_sigkill_mid_burst_no_duplicate_no_orphan(site, tmp_path):
    pool, make = site
    prov = make(IDLE_TIMEOUT=6)
    cluster = submit(pool, tmp_path, 6, 6)
    proc = prov.start()
    seen = set()
    watch(prov, lambda: len(prov.running()) >= 1, 60, "a node running", seen=seen)
    proc.kill()  # SIGKILL, mid-burst (the next node may be half created)
    proc.wait(10)
    time.sleep(1)  # a node being launched at the kill writes its own pid
    # Started nodes survive; one killed before its master was launched never runs
    # (listed as pending, then terminated: a failed create).
    before = set(prov.running())
    assert before, "the nodes must survive the provisioner"
    proc = prov.start()
    ads = watch(prov, lambda: jobs_done(pool, cluster, 6), 150, "6 jobs done", seen=seen)
    # No job was killed: each ran once, to the end.
    assert all(a["ExitCode"] == 0 and a["NumJobStarts"] == 1 for a in ads), \
        [dict(a) for a in ads]
    assert {node_of(a["LastRemoteHost"]) for a in ads} <= seen
    text = prov.log_text()
    # Nodes started before the kill were kept (from the state file or adopted).
    assert before <= seen, text[-5000:]
    watch(prov, lambda: not prov.running(), 90, "every node retired", seen=seen)
    assert prov.stop(proc) == 0
    assert not prov.running()
    assert "eyJ" not in text


def test_node_that_never_joins_is_terminated_and_the_entry_backs_off(site, tmp_path):
    pool, make = site
    prov = make(MAX_INSTANCES=1, JOIN_TIMEOUT=5, BACKOFF_INITIAL=3600,
                WORKER_CENTRAL_MANAGER=f"127.0.0.1:{_dead_port()}")
    submit(pool, tmp_path, 1, 1)
    proc = prov.start()
    seen = set()
    watch(prov, lambda: "did not join the pool within 5s" in prov.log_text(), 60,
          "the join timeout", cap=1, seen=seen)
    watch(prov, lambda: not prov.instances(), 30, "the node terminated", cap=1, seen=seen)
    watch(prov, lambda: "backing off" in prov.log_text(), 30, "the backoff", cap=1, seen=seen)
    time.sleep(4)  # several cycles: no new instance while backing off
    assert not prov.instances() and len(seen) == 1
    # The backoff is visible to the admin in `condor_cloud status`.
    status = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "status"], env=prov.env(),
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert f"Backoff {ENTRY}: 1 failure(s)" in status.stdout and "did not join" in status.stdout
    status = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "status", "--json"],
                            env=prov.env(), capture_output=True, text=True, timeout=60)
    assert json.loads(status.stdout)["backoff"][ENTRY]["failures"] == 1
    assert prov.stop(proc) == 0
    state = json.loads((prov.pool.workdir / "spool" / "cloud_plugins"
                        / "provisioner-state.json").read_text())
    assert state["backoff"][ENTRY]["failures"] == 1
    assert "did not join" in state["backoff"][ENTRY]["reason"]


def test_node_that_ran_jobs_is_no_boot_failure_when_its_join_was_never_saved(site, tmp_path):
    """Issue 13: a provisioner killed before it saved a join remembers a node
    that ran jobs as 'requested'.  When that node goes, the schedd history
    (each job's MachineAttrCloudRequestID0), not the record, decides: no
    failure, no backoff."""
    pool, make = site
    prov = make(MAX_INSTANCES=1, IDLE_TIMEOUT=600)
    cluster = submit(pool, tmp_path, 1, 1)
    proc = prov.start()
    seen = set()
    watch(prov, lambda: jobs_done(pool, cluster, 1), 90, "the job done", cap=1, seen=seen)
    assert prov.stop(proc) == 0
    [node] = seen
    [job] = pool.schedd().history(f"ClusterId == {cluster}", ["MachineAttrCloudRequestID0"])
    assert job.get("MachineAttrCloudRequestID0") == node   # SYSTEM_JOB_MACHINE_ATTRS
    path = pool.workdir / "spool" / "cloud_plugins" / "provisioner-state.json"
    state = json.loads(path.read_text())
    old = time.time() - 10_000
    state["records"][node].update(phase="requested", joined=None, since=old, created=old,
                                  last_busy=None, reason="requested")
    path.write_text(json.dumps(state))
    provider = prov.provider()
    provider._stop(node, prov.node_dir(node))   # it stops outside the provisioner
    assert {i.id: i.state for i in provider.list({})}[node] is InstanceState.TERMINATED
    wait_for(lambda: not _startd_ads(pool, node), 30, what="the node's ads withdrawn")
    assert prov.once() == 0
    log = prov.log_text()
    assert (f"{node} (entry {ENTRY}): requested -> gone, gone before we saw it join; not a "
            "failure: it had joined: 1 job(s) ran there (schedd queue or history)") in log, log
    assert "terminated before it joined" not in log
    assert not json.loads(path.read_text())["backoff"]
    # Forgotten at the next cycle; still listed (terminated) by the provider,
    # but status does not bring it back as "unrecorded" with stale counts.
    assert prov.once() == 0 and node not in json.loads(path.read_text())["records"]
    assert node in prov.instances()
    status = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "status", "--json"],
                            env=prov.env(), capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert node not in [r["id"] for r in json.loads(status.stdout)["instances"]]


def _signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _startd_ads(pool, iid):
    return pool.collector().query(htcondor2.AdType.Startd, f'CloudInstanceID == "{iid}"',
                                  ["Name", "Draining", "State"])


def test_hung_node_is_terminated_as_lost_and_the_healthy_one_is_kept(condor, request, tmp_path):
    """A node whose HTCondor is frozen (SIGSTOP of all its processes: a hung VM)
    drops out of the collector. Once it has been absent for LOST_TIMEOUT, with no
    job running there, it is terminated as lost and counted (InstancesLost), while
    the healthy node of the same entry is neither drained nor terminated."""
    # Stale ads leave the site collector within ~2x CLASSAD_LIFETIME (nodes update every 2 s).
    pool = site_pool(condor, "lost", extra="CLASSAD_LIFETIME = 15\n")
    make = ProvMaker(pool, condor.base, request.node.name)
    hung_dir = None
    try:
        prov = make(IDLE_TIMEOUT=3600, LOST_TIMEOUT=60)
        # One job per 2-core node: two nodes (long enough that the first node
        # cannot run both before the second joins).
        cluster = submit(pool, tmp_path, 2, 10, cpus=2)
        proc = prov.start()
        seen = set()
        ads = watch(prov, lambda: jobs_done(pool, cluster, 2), 120, "2 jobs done", seen=seen)
        nodes = sorted(prov.running())
        assert len(nodes) == 2 and {node_of(a["LastRemoteHost"]) for a in ads} <= set(nodes)
        hung, healthy = nodes
        hung_dir = prov.node_dir(hung)
        frozen = processes_using(str(hung_dir))
        assert len(frozen) >= 2, frozen  # at least the master and the startd
        _signal_all(frozen, signal.SIGSTOP)
        t_stop = time.monotonic()

        def healthy_untouched():
            assert healthy in prov.running(), "the healthy node was terminated"
            slots = _startd_ads(pool, healthy)
            assert slots and not any(s.get("Draining") for s in slots), slots

        def gone():
            healthy_untouched()
            return not _startd_ads(pool, hung)
        watch(prov, gone, 60, "the hung node's ads gone from the collector")
        t_gone = time.monotonic()
        line = re.compile(rf"Terminated {hung} \(entry {ENTRY}\) as lost: lost: not in the "
                          r"collector for (\d+)s \(LOST_TIMEOUT 60s\)")

        def lost():
            healthy_untouched()
            return line.search(prov.log_text())
        found = watch(prov, lost, 100, "the hung node terminated as lost")
        t_lost = time.monotonic()
        assert int(found.group(1)) >= 60 and t_lost - t_gone >= 55, (found.group(0),
                                                                     t_lost - t_gone)
        assert hung not in prov.instances() and not processes_using(str(hung_dir))
        own = wait_for(lambda: pool.collector().query(
            htcondor2.AdType.Any, f'MyType == "CloudProvisioner" && Name == "prov-{prov.name}" '
            "&& InstancesLost == 1", ["InstancesLost"]), 30, what="InstancesLost == 1 advertised")
        assert own[0]["InstancesLost"] == 1
        healthy_untouched()
        assert prov.stop(proc) == 0
        text = prov.log_text()
        assert f"Draining {healthy}" not in text and f"Terminated {healthy}" not in text, text
        assert text.count(" as lost") == 1, text
        print(f"hung node: ads gone {t_gone - t_stop:.0f}s after SIGSTOP, "
              f"terminated {t_lost - t_stop:.0f}s after")
    finally:
        if hung_dir is not None:  # nothing stays frozen, whatever happened
            _signal_all(processes_using(str(hung_dir)), signal.SIGCONT)
        make.cleanup()


def test_one_unreachable_schedd_holds_only_what_depends_on_it(condor, request, tmp_path):
    """A second schedd that never answers (its ad points at a dead port) for the
    whole test: each cycle logs its failed query, yet an instance that never joins
    is still terminated after JOIN_TIMEOUT, the busy node is neither drained nor
    terminated, and its job runs once, to the end."""
    pool = site_pool(condor, "psf")
    make = ProvMaker(pool, condor.base, request.node.name)
    try:
        prov = make(MAX_INSTANCES=1)
        # A second entry, preferred, whose nodes report to a dead collector:
        # they never join, so after JOIN_TIMEOUT it backs off and the job
        # spills to local1 (one allocation across entries, issue 15).
        prov.add_entry("local2", JOIN_TIMEOUT=10, BACKOFF_INITIAL=3600, PRIORITY=-1,
                       WORKER_CENTRAL_MANAGER=f"127.0.0.1:{_dead_port()}")
        schedd = pool.schedd()  # the real one, found before the ghost is advertised
        cluster = submit(pool, tmp_path, 1, 60, cpus=2)
        ghost = "ghost@nowhere.invalid"
        advertise_ghost_schedd(pool, ghost, f"127.0.0.1:{_dead_port()}")
        assert len(pool.collector().locateAll(htcondor2.DaemonType.Schedd)) == 2
        proc = prov.start()
        t0 = time.monotonic()
        never = watch(prov, lambda: prov.instances("local2"), 60, "the local2 instance",
                      cap=1)[0]
        watch(prov, lambda: "did not join the pool within 10s" in prov.log_text(), 60,
              "the join timeout despite the failed schedd", cap=1)
        t_join = time.monotonic()
        watch(prov, lambda: not prov.instances("local2"), 30, "the never-joined instance gone",
              cap=1)
        assert re.search(rf"Terminated {never} \(entry local2\) as a failure: did not join",
                         prov.log_text())
        running = watch(prov, lambda: schedd.query(f"ClusterId == {cluster} && JobStatus == 2",
                                                   ["RemoteHost"]), 60, "the job running", cap=1)
        busy = node_of(running[0]["RemoteHost"])
        assert prov.running() == [busy]

        def done():
            if not jobs_done(pool, cluster, 1, schedd):
                assert prov.running() == [busy], "the busy node was terminated"
                slots = _startd_ads(pool, busy)
                assert slots and not any(s.get("Draining") for s in slots), slots
                return False
            return True
        watch(prov, done, 90, "the job done", cap=1)
        t_done = time.monotonic()
        assert prov.stop(proc) == 0
        [ad] = history(pool, cluster, schedd)
        assert ad["ExitCode"] == 0 and ad["NumJobStarts"] == 1, dict(ad)
        assert node_of(ad["LastRemoteHost"]) == busy
        text = prov.log_text()
        failures = len(re.findall(rf"Query of schedd {re.escape(ghost)} failed: .*Failed to connect", text))
        # Failed every cycle for the whole test (~60 cycles); logged once while it holds.
        assert failures == 1 and t_done - t0 > 30, text[-4000:]
        assert f"Draining {busy}" not in text and f"Terminated {busy}" not in text, text
        # One instance of local2 only: after its failure the entry backs off.
        assert not prov.instances("local2")
        assert len(re.findall(r"Created .*\(entry local2\)", text)) == 1, text
        print(f"join timeout logged {t_join - t0:.0f}s after start, job done after "
              f"{t_done - t0:.0f}s, {failures} failed queries of the ghost")
    finally:
        make.cleanup()


def test_runs_under_condor_master_and_logs_there(condor):
    """In DAEMON_LIST: logs to $(LOG)/CloudProvisionerLog, exits 0 when the master stops."""
    state_dir = condor.base / "n-master"
    pool = condor.site_pool("mprov", extra_config=(
        "CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS = True\n"
        f"CLOUD_PROVISIONER = {sys.executable}\n"
        "CLOUD_PROVISIONER_ARGS = -m condor_plugins.provisioning.provisioner\n"
        f'CLOUD_PROVISIONER_ENVIRONMENT = "PYTHONPATH={":".join(sys.path)}"\n'
        "DAEMON_LIST = $(DAEMON_LIST) CLOUD_PROVISIONER\n"
        f"CLOUD_PLUGINS_PROVIDERS = {ENTRY}\n"
        f"CLOUD_PLUGINS_{ENTRY.upper()}_TYPE = local\n"
        f"CLOUD_PLUGINS_{ENTRY.upper()}_STATE_DIR = {state_dir}\n"
        "CLOUD_PLUGINS_CYCLE_INTERVAL = 1\n"))
    log = pool.log_dir / "CloudProvisionerLog"
    wait_for(lambda: log.exists() and "entries local1" in log.read_text(), 30,
             what="the provisioner's log")
    state = pool.workdir / "spool" / "cloud_plugins" / "provisioner-state.json"
    wait_for(state.exists, 30, what="a cycle (the state file)")
    pool.stop()
    text = log.read_text()
    assert "Stopped after" in text and "failed)" in text and "Traceback" not in text, text
    master = (pool.log_dir / "MasterLog").read_text()
    assert "CLOUD_PROVISIONER" in master and "exited with status 0" in master


# ---------------------------------------------------------------- the shell alone

class FakeProvider:
    entry = ENTRY

    def __init__(self, fail=None):
        self.fail = fail
        self.terminated = []

    def list(self, tags):
        if self.fail:
            raise self.fail
        return []

    def terminate(self, ids):
        self.terminated += ids

    def close(self):
        pass


def shell(tmp_path, provider, **knobs):
    from condor_plugins.provisioning.provisioner import Provisioner
    param = {"COLLECTOR_HOST": f"127.0.0.1:{_dead_port()}", "SPOOL": str(tmp_path),
             "CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN": "w.test",
             "CLOUD_PLUGINS_PROVIDERS": ENTRY, "CLOUD_PLUGINS_PROVISIONER_NAME": "unit",
             f"CLOUD_PLUGINS_{ENTRY.upper()}_TYPE": "local"}
    param.update(knobs)
    return Provisioner(param=param, providers={ENTRY: provider})


def test_failed_observations_hold_what_depends_on_them_and_the_cycle_survives(tmp_path, monkeypatch):
    from condor_plugins.provisioning import provisioner
    from condor_plugins.provisioning.state import Hold, InstanceRecord, Phase
    fake = FakeProvider(fail=RuntimeError("cloud API down"))
    prov = shell(tmp_path, fake)
    prov.records = {"local1-x": InstanceRecord("local1-x", ENTRY, Phase.IDLE, 0.0, 0.0, joined=0.0)}
    assert prov.cycle() is True  # schedd, collector and provider all unreachable
    assert all(isinstance(a, Hold) for a in prov.last_plan.actions)
    assert fake.terminated == [] and "local1-x" in prov.records
    monkeypatch.setattr(provisioner, "plan_cycle", lambda *a: 1 / 0)
    assert prov.cycle() is False and prov.failed_cycles == 1  # logged, not raised


def test_state_file_round_trip_and_corruption(tmp_path):
    from condor_plugins.provisioning.provisioner import load_state, save_state
    from condor_plugins.provisioning.state import Backoff, InstanceRecord, LaunchFailed, Phase
    path = tmp_path / "s" / "state.json"
    recs = {"a": InstanceRecord("a", ENTRY, Phase.DRAINING, 1.0, 0.5, joined=0.7, reason="r")}
    back = {ENTRY: Backoff(2, 99.0, "boom")}
    fails = [LaunchFailed(ENTRY, "quota", "no more")]
    save_state(path, recs, back, fails)
    assert load_state(path) == (recs, back, fails)
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp file left
    path.write_text("{not json")
    assert load_state(path) == ({}, {}, [])  # rebuilt from the listings instead


def test_missing_token_domain_is_a_config_error(tmp_path):
    from condor_plugins.config import ConfigError
    with pytest.raises(ConfigError, match="CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN"):
        shell(tmp_path, FakeProvider(), CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN="")


def test_node_that_shuts_itself_down_is_listed_terminated_and_forgotten(site, tmp_path):
    """The worker's own idle shutdown (the safety net when no provisioner drains)."""
    pool, make = site
    prov = make(IDLE_TIMEOUT=600, MAX_INSTANCES=1, KEEP_TERMINATED=3,
                WORKER_IDLE_SHUTDOWN=10, WORKER_SHUTDOWN_GRACE=3)  # > one negotiation
    cluster = submit(pool, tmp_path, 1, 1)
    proc = prov.start()
    seen = set()
    watch(prov, lambda: jobs_done(pool, cluster, 1), 90, "the job done", cap=1, seen=seen)
    assert len(seen) == 1
    node = seen.pop()
    listed = lambda: {i.id: i for i in prov.provider().list({})}  # noqa: E731
    watch(prov, lambda: node in listed() and listed()[node].state is InstanceState.TERMINATED,
          90, "the node stopped by itself", cap=1)
    watch(prov, lambda: "shut itself down" in prov.log_text(), 30, "the provisioner noticing",
          cap=1)
    watch(prov, lambda: not prov.instances(), 30, "the stopped node forgotten", cap=1)
    assert prov.stop(proc) == 0
    assert "Terminated " + node not in prov.log_text()  # it was never asked to
    assert_revoked(pool, {node}, tmp_path)   # gone by itself: its token revoked too


@pytest.mark.parametrize("keep", [1, 3])
def test_log_under_condor_master_rotates_like_htcondor(tmp_path, monkeypatch, keep):
    import logging
    from condor_plugins.provisioning.provisioner import setup_logging
    monkeypatch.setenv("CONDOR_INHERIT", "x")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging({"LOG": str(tmp_path), "MAX_CLOUD_PROVISIONER_LOG": "200",
                       "MAX_NUM_CLOUD_PROVISIONER_LOG": str(keep)})
        for i in range(40):  # about 20 rotations
            logging.getLogger("condor_plugins.provisioning.provisioner").info("line %02d of the log", i)
        for handler in root.handlers:
            handler.close()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    names = sorted(p.name for p in tmp_path.iterdir())
    if keep == 1:
        assert names == ["CloudProvisionerLog", "CloudProvisionerLog.old"]
    else:  # timestamped, the oldest removed
        assert len(names) == 1 + keep and names[0] == "CloudProvisionerLog", names
        assert all(re.fullmatch(r"CloudProvisionerLog\.\d{8}T\d{6}(\.\d{3})?", n)
                   for n in names[1:]), names
    first = (tmp_path / "CloudProvisionerLog").read_text().splitlines()[0]
    assert re.fullmatch(r"\d\d/\d\d/\d\d \d\d:\d\d:\d\d line \d\d of the log", first)


def test_local_provider_contract(condor):
    """create / list by tags / idempotent retry / terminate (idempotent), on real nodes."""
    from condor_plugins.providers.base import InstanceSpec, instance_tags, owner_tags
    from conftest import worker_token
    pool = condor.site_pool("lp", extra_config="CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS = True\n")
    provider = LocalProvider(ENTRY, {"STATE_DIR": str(condor.base / "n-lp")})
    spec = InstanceSpec(ENTRY, "t.small", "img", 1, 256, 100)
    tags = instance_tags("pool", "me", ENTRY, "req-1")
    user_data = json.dumps({"config": {"CLOUD_PLUGINS_INSTANCE_ID": "lp-1",
                                       "CLOUD_PLUGINS_CENTRAL_MANAGER": pool.collector_address,
                                       "CLOUD_PLUGINS_PROVISIONER": "me"},
                            "token": worker_token(pool, "lp-1")})
    try:
        [inst] = provider.create(spec, 1, tags, user_data, "req-1")
        assert inst.id == "lp-1" and inst.state is InstanceState.RUNNING
        assert provider.create(spec, 1, tags, user_data, "req-1") == [inst]  # a retry
        assert [i.id for i in provider.list(owner_tags("pool", "me"))] == ["lp-1"]
        assert provider.list(owner_tags("pool", "someone-else")) == []
        wait_for(lambda: pool.collector().query(
            htcondor2.AdType.Startd, 'CloudInstanceID == "lp-1"', ["CloudProvisioner"]), 60,
            what="the node in the collector")
        workdir = condor.base / "n-lp" / "lp-1"
        provider.terminate(["lp-1", "no-such-instance"])
        assert not workdir.exists() and provider.list({}) == []
        provider.terminate(["lp-1"])  # already gone: not an error
        from condor_plugins.localpool import processes_using
        assert processes_using(str(workdir)) == []
    finally:
        provider.terminate([i.id for i in provider.list({})])


def test_sighup_rereads_the_knobs_in_place_and_a_bad_config_is_refused(condor, request,
                                                                       tmp_path):
    """condor_reconfig sends SIGHUP: the provisioner keeps running (and so do its
    nodes and their jobs), a raised MAX_INSTANCES takes effect in the next
    cycles, and a malformed knob is refused with one line while the running
    configuration stays."""
    pool = site_pool(condor, "hup")
    make = ProvMaker(pool, condor.base, request.node.name)
    try:
        prov = make(MAX_INSTANCES=1, IDLE_TIMEOUT=600)
        cluster = submit(pool, tmp_path, 2, 20, cpus=2)  # one job per 2-core node
        proc = prov.start()
        watch(prov, lambda: len(prov.running()) == 1 and pool.schedd().query(
            "JobStatus == 2", ["ProcId"]), 90, "one node running a job", cap=1)
        first = prov.running()[0]
        prov.configure(MAX_INSTANCES=2)
        for _ in range(5):  # several reconfigs in a row
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
        watch(prov, lambda: len(prov.running()) == 2, 60, "a second node after the reconfig")
        prov.configure(MAX_INSTANCES="many")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "Reconfig refused" in prov.log_text(), 30, what="the refusal")
        ads = watch(prov, lambda: jobs_done(pool, cluster, 2), 120, "both jobs done")
        assert all(a["NumJobStarts"] == 1 for a in ads), ads
        assert proc.poll() is None and first in prov.running()
        text = prov.log_text()
        assert text.count("Reconfigured: entries local1") >= 1, text[-3000:]
        [refused] = [ln for ln in text.splitlines() if "Reconfig refused" in ln]
        assert "CLOUD_PLUGINS_LOCAL1_MAX_INSTANCES" in refused and "many" in refused
        assert "as a failure" not in text and "Traceback" not in text
        assert prov.stop(proc) == 0
    finally:
        make.cleanup()


def test_once_exit_codes(condor, request, tmp_path):
    """``--once``: 0 only when every observation and action succeeded; 1 when
    one failed (a dead collector, a failed listing); 2 for a bad config; 3
    while another provisioner holds the state."""
    from condor_plugins.localpool import free_port
    pool = site_pool(condor, "codes")
    make = ProvMaker(pool, condor.base, request.node.name)
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    try:
        good = make()
        assert good.once() == 0, good.log_text()[-2000:]
        assert make(MAX_INSTANCES="many").once() == 2
        unreadable.chmod(0)
        listing = make(STATE_DIR=unreadable)
        assert listing.once() == 1
        assert "The cycle was incomplete: the listing of entry local1 failed" in listing.log_text()
        unreadable.chmod(0o755)
        dead = make()
        dead.knobs["COLLECTOR_HOST"] = f"127.0.0.1:{free_port()}"
        dead.configure()
        assert dead.once() == 1
        assert "the collector query failed" in dead.log_text()
        proc = good.start()
        wait_for(lambda: good.log_text().count("cycle every") == 2, 30, what="the daemon started")
        assert good.once() == 3
        assert good.stop(proc) == 0
    finally:
        unreadable.chmod(0o755)  # pytest must be able to remove it
        make.cleanup()


def test_two_provisioners_with_one_name_only_the_senior_acts(site, tmp_path):
    """Issue 16: two provisioners of one name (an HA pair, a restored backup)
    with separate state files and one cloud: only the senior claim ever
    creates; the other stands by, says so in its log and in condor_cloud
    status, and takes over when the first stops."""
    pool, make = site
    a = make(IDLE_TIMEOUT=600, CLOUD_PLUGINS_PROVISIONER_NAME="prov-twin")
    b = make(IDLE_TIMEOUT=600, CLOUD_PLUGINS_PROVISIONER_NAME="prov-twin",
             STATE_DIR=a.knobs[f"CLOUD_PLUGINS_{a.entry.upper()}_STATE_DIR"])
    b.knobs["SPOOL"] = str(tmp_path / "spool-b")   # its own state file (another host's)
    b.configure()
    pa = a.start()
    pb = None
    try:
        wait_for(lambda: "Acting as provisioner prov-twin" in a.log_text(), 60,
                 what="the first provisioner acting")
        pb = b.start()
        try:
            wait_for(lambda: "Not acting: standing by: provisioner prov-twin is acting on" in
                     b.log_text(), 60, what="the second one standing by")
        except TimeoutError as err:
            pytest.fail(f"{err}\n--- a:\n{a.log_text()[-3000:]}\n--- b:\n{b.log_text()[-3000:]}")
        cluster = submit(pool, tmp_path, 2, 3)
        wait_for(lambda: jobs_done(pool, cluster, 2), 120, what="2 jobs done")
        assert "Created " in a.log_text() and "Created " not in b.log_text()
        res = subprocess.run([sys.executable, "-m", "condor_plugins.cli", "status"],
                             env=b.env(), capture_output=True, text=True, timeout=60)
        assert "Not acting: " in res.stdout and "standing by" in res.stdout, res.stdout
        assert a.stop(pa) == 0   # its claim is withdrawn: b takes over
        wait_for(lambda: "Acting as provisioner prov-twin" in b.log_text(), 60,
                 what="the second one taking over")
        assert "Not acting" not in a.log_text()
    finally:
        for proc, prov in ((pa, a), (pb, b)):
            if proc is not None and proc.poll() is None:
                prov.stop(proc)
