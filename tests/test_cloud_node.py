"""Cloud-node tagging and token admission, on real daemons (issue 2, acceptance 4)."""

import json
import stat
import sys
import time
from pathlib import Path

import pytest

from condor_plugins.localpool import wait_for
from conftest import advertise_as_worker, worker_token

pytestmark = pytest.mark.integration

CLOUD_ATTRS = ["IsCloudNode", "CloudProvider", "CloudPlatform", "CloudInstanceID", "CloudVMType",
               "CloudImage", "CloudRegion", "CloudZone", "CloudInterruptible", "CloudProvisioner"]


def machine_names(pool):
    out = pool.run("condor_status", "-af", "Name").stdout.split()
    return sorted(out)


@pytest.fixture(scope="module")
def admitting_pool(condor_module):
    return condor_module.site_pool("cm", extra_config="CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS = True\n")


def test_worker_fragment_tags_the_node(condor_module, admitting_pool):
    pool = admitting_pool
    node = condor_module.node(pool, "tagged", cloud=True, token=worker_token(pool, "tagged"))
    out = pool.run("condor_status", "-const", 'Name == "slot1@tagged@' + node_host(pool) + '"',
                   "-af", "IsCloudNode", "CloudProvider").stdout.split()
    assert out == ["true", "local"]
    ads = node.slot_ads(pool)
    assert ads and all(a["IsCloudNode"] is True for a in ads)
    for attr in CLOUD_ATTRS:
        assert attr in ads[0], attr
    assert ads[0]["CloudInstanceID"] == "tagged"
    assert ads[0]["AuthenticationMethod"] == "IDTOKENS"
    master = wait_for(lambda: pool.run(
        "condor_status", "-master", "-const", 'Name == "tagged@' + node_host(pool) + '"',
        "-af", "IsCloudNode", "CloudInstanceID").stdout.split(), 30, what="the node's master ad")
    assert master == ["true", "tagged"]
    # The token is stored root-/owner-only.
    tok = node.workdir / "tokens.d" / "cloud-worker"
    assert stat.S_IMODE(tok.stat().st_mode) == 0o600


def node_host(pool):
    return pool.run("condor_config_val", "FULL_HOSTNAME").stdout.strip()


def wait_refused(node, pool, pattern, timeout=40):
    """The node is never in the collector, and its own log says why."""
    def refused():
        logs = node.log_tails(200)
        return pattern in logs
    wait_for(refused, timeout, what=f"'{pattern}' in {node.name}'s logs")
    assert not node.slot_ads(pool)


def test_startd_without_token_is_refused(condor_module, admitting_pool):
    node = condor_module.node(admitting_pool, "notoken", cloud=True, token=None, wait=False)
    # Token-only authentication: without a token the node cannot authenticate at all.
    wait_refused(node, admitting_pool, "SECMAN")
    time.sleep(4)
    assert not node.slot_ads(admitting_pool)


def test_token_from_another_pool_is_refused(condor_module, admitting_pool):
    other = condor_module.site_pool("other")
    forged = worker_token(other, "forged", domain=admitting_pool.run(
        "condor_config_val", "CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN").stdout.strip())
    node = condor_module.node(admitting_pool, "forged", cloud=True, token=forged, wait=False)
    wait_refused(node, admitting_pool, "Collector update failed")


def test_token_outside_the_worker_domain_is_refused(condor_module, admitting_pool):
    tok = admitting_pool.create_token("intruder@elsewhere",
                                      ["ADVERTISE_STARTD", "ADVERTISE_MASTER", "READ"])
    node = condor_module.node(admitting_pool, "intruder", cloud=True, token=tok, wait=False)
    wait_refused(node, admitting_pool, "DENIED")


def test_plain_node_cannot_claim_to_be_a_cloud_node(condor_module, admitting_pool):
    spoof = condor_module.node(admitting_pool, "spoof", wait=False,
                               extra_config="IsCloudNode = True\nSTARTD_ATTRS = $(STARTD_ATTRS) IsCloudNode\n")
    honest = condor_module.node(admitting_pool, "honest")
    assert honest.slot_ads(admitting_pool)
    # Both report at the same rate: by now the spoofing ad would have arrived.
    wait_for(lambda: "spoof@" in admitting_pool.run("condor_status", "-master", "-af", "Name").stdout,
             30, what="the spoofing node's master ad")
    time.sleep(3)
    assert not spoof.slot_ads(admitting_pool)


def test_cloud_worker_cannot_pose_as_a_site_node(condor_module, admitting_pool):
    pose = condor_module.node(admitting_pool, "poser", cloud=True, token=worker_token(admitting_pool, "poser"),
                              wait=False, extra_config="IsCloudNode = False\n")
    wait_refused(pose, admitting_pool, "Failed to send update")


def test_workers_are_refused_until_the_site_opts_in(condor):
    pool = condor.site_pool("inert")  # CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS defaults to False
    node = condor.node(pool, "early", cloud=True, token=worker_token(pool, "early"), wait=False)
    # The collector drops the ads (COLLECTOR_REQUIREMENTS) and closes the connection.
    wait_refused(node, pool, "Failed to send update")


def test_idle_node_shuts_itself_down(condor, tmp_path):
    pool = condor.site_pool("idle", extra_config="CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS = True\n")
    marker = tmp_path / "powered-off"
    script = tmp_path / "poweroff.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    cfg = {"CLOUD_PLUGINS_PROVIDER": "local", "CLOUD_PLUGINS_INSTANCE_ID": "idler",
           "CLOUD_PLUGINS_IDLE_SHUTDOWN": 5, "CLOUD_PLUGINS_SHUTDOWN_GRACE": 5,
           "CLOUD_PLUGINS_POWEROFF_SCRIPT": str(script)}
    node = condor.node(pool, "idler", cloud=True, token=worker_token(pool, "idler"), cloud_config=cfg)
    wait_for(lambda: not node.is_running(), 90, what="the idle node's master to exit")
    # The master ran the power-off script as it exited (the VM would power off).
    wait_for(marker.exists, 10, what="the power-off script to run")
    print("poweroff script ran:", marker.exists())


# ---------------------------------------------------------------- literal ads (issue 16)

def test_an_is_cloud_node_expression_is_never_matched(condor_module, admitting_pool, tmp_path):
    """IsCloudNode = TARGET.CloudMode =!= "local" is true in the collector, but
    false against a local-only job, which would then run on the stolen VM. The
    negotiator matches only a literal true (or none): the local job, which may
    run only there, stays idle, while the same job runs on an honest site node."""
    pool = admitting_pool
    forged = condor_module.node(pool, "exprnode", cloud=True, token=worker_token(pool, "exprnode"),
                                extra_config='IsCloudNode = TARGET.CloudMode =!= "local"\n')
    site = condor_module.node(pool, "sitenode")
    assert forged.slot_ads(pool) and site.slot_ads(pool)
    tmp_path.chmod(0o777)

    def job(where):
        return pool.submit({"executable": "/bin/true", "MY.CloudMode": '"local"',
                            "requirements": f'regexp("@{where}@", Name)',
                            "log": str(tmp_path / f"{where}.log")})
    on_site, on_forged = job("sitenode"), job("exprnode")
    wait_for(lambda: not pool.schedd().query(f"ClusterId == {on_site}", ["ProcId"]), 60,
             what="the job on the site node done")
    time.sleep(6)   # negotiation cycles every 2 s
    [ad] = pool.schedd().query(f"ClusterId == {on_forged}", ["JobStatus", "NumJobStarts"])
    assert ad["JobStatus"] == 1 and ad.get("NumJobStarts", 0) == 0, ad


def test_a_site_node_cannot_carry_an_is_cloud_node_expression(condor_module, admitting_pool):
    """Not a worker: no IsCloudNode that the collector can evaluate (an
    expression false there is true against a cloud job)."""
    spoof = condor_module.node(admitting_pool, "exprsite", wait=False, extra_config=(
        'IsCloudNode = TARGET.CloudMode =?= "cloud"\n'
        "STARTD_ATTRS = $(STARTD_ATTRS) IsCloudNode\n"))
    honest = condor_module.node(admitting_pool, "honest2")
    assert honest.slot_ads(admitting_pool)
    wait_for(lambda: "exprsite@" in admitting_pool.run("condor_status", "-master", "-af",
                                                       "Name").stdout, 30,
             what="the node's master ad (it carries no IsCloudNode)")
    time.sleep(3)
    assert not spoof.slot_ads(admitting_pool)


def test_a_worker_cannot_claim_another_request_id(condor_module, admitting_pool):
    """A stolen token of request "thief" may not advertise CloudRequestID "victim"."""
    node = condor_module.node(admitting_pool, "thief", cloud=True,
                              token=worker_token(admitting_pool, "thief"), wait=False,
                              extra_config='CloudRequestID = "victim"\n')
    wait_refused(node, admitting_pool, "Failed to send update")


def test_a_worker_cannot_overwrite_another_workers_ads(condor_module, admitting_pool):
    """Token "mallory", but the daemon names and request id of worker "alice":
    refused, and alice's ads are untouched."""
    alice = condor_module.node(admitting_pool, "alice", cloud=True,
                               token=worker_token(admitting_pool, "alice"))
    before = {a["Name"]: a["CloudRequestID"] for a in alice.slot_ads(admitting_pool)}
    assert before and all(name.startswith("slot1@alice@") for name in before)
    mallory = condor_module.node(admitting_pool, "mallory", cloud=True,
                                 token=worker_token(admitting_pool, "mallory"), wait=False,
                                 extra_config="CLOUD_PLUGINS_REQUEST_ID = alice\n"
                                              "MASTER_NAME = alice\nSTARTD_NAME = alice\n"
                                              'CloudRequestID = "alice"\n')
    wait_refused(mallory, admitting_pool, "Failed to send update")
    after = alice.slot_ads(admitting_pool)
    assert {a["Name"]: a["CloudRequestID"] for a in after} == before
    assert all(a["AuthenticatedIdentity"].startswith("alice@") for a in after)


def test_a_revoked_worker_token_is_refused_after_the_collector_reconfig(
        condor_module, admitting_pool, tmp_path):
    """Issue 16: revocation (provisioning/revocation.py): the identity listed
    in $(SPOOL)/cloud_plugins/revoked-tokens.config and one reconfig of the
    collector, and the stolen token can no longer advertise; another worker's
    token still can."""
    pool = admitting_pool
    stolen, other = worker_token(pool, "revokee"), worker_token(pool, "bystander")
    # Never a token in an assertion's message: the results go to names first.
    accepted = advertise_as_worker(pool, "revokee", stolen, tmp_path, 1)
    assert accepted, "the token was refused before its revocation"
    spool = pool.run("condor_config_val", "SPOOL").stdout.strip()
    domain = pool.run("condor_config_val", "CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN").stdout.strip()
    script = (
        "import sys, time; from pathlib import Path\n"
        "from condor_plugins.provisioning.revocation import Revocations, reconfigure_collector\n"
        "r = Revocations(Path(sys.argv[1]) / 'cloud_plugins', reconfigure_collector)\n"
        "r.revoke({'revokee': time.time()}, sys.argv[2], 3600)\n"
        "sys.exit(0 if not r.pending else 1)\n")
    res = pool.run(sys.executable, "-c", script, spool, domain, check=False,
                   env={"PYTHONPATH": ":".join(sys.path)})
    assert res.returncode == 0, res.stdout + res.stderr
    listed = json.loads((Path(spool) / "cloud_plugins" / "revoked-tokens.json").read_text())
    assert list(listed) == [f"revokee@{domain}"]
    assert "member(sub, {" in pool.run("condor_config_val", "-collector",
                                       "SEC_TOKEN_REVOCATION_EXPR").stdout
    # The collector has reconfigured (the reconfig is asynchronous, so the
    # first tries may still pass): from then on the token is refused.
    wait_for(lambda: not advertise_as_worker(pool, "revokee", stolen, tmp_path, 2), 30,
             what="the revoked token refused")
    accepted = advertise_as_worker(pool, "revokee", stolen, tmp_path, 3)
    assert not accepted, "the revoked token was accepted again"
    accepted = advertise_as_worker(pool, "bystander", other, tmp_path, 1)
    assert accepted, "another worker's token was refused"
    leaked = stolen in pool.log_tails(500)
    assert not leaked, "the token is in a daemon's log"
