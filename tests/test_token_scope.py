"""Issue 16: what a stolen worker token cannot do, on real daemons.

The token is minted as the provisioner mints it (<request-id>@<worker domain>;
ADVERTISE_STARTD, ADVERTISE_MASTER, READ) and used from a client that has no
other credential: IDTOKENS only, a token directory holding only it, no system
token directory, no pool password or signing key. The sandbox's test user may
not become another Unix user, so FS is ruled out by the method list instead,
and the first test shows the daemons see the worker identity.

Covered elsewhere, not repeated: the provisioner's ad sent as a generic ad
(test_node_control.py::test_a_worker_token_cannot_forge_the_provisioners_ad),
another worker's ads (test_cloud_node.py::test_a_worker_cannot_overwrite_another_workers_ads).
"""

import re
import time

import htcondor2
import pytest

from condor_plugins.localpool import wait_for
from conftest import advertise_as_worker, worker_token

pytestmark = pytest.mark.integration

THIEF = "thief"


@pytest.fixture(scope="module")
def pool(condor_module):
    # WRITE and READ as in HTCondor's recommended security (anyone
    # authenticated may submit; anyone may read, unauthenticated), but the
    # schedd requires authentication for READ, as the admin guide says: what
    # stops the token is its own scope and the fragments.
    return condor_module.site_pool("scope", extra_config=(
        "CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS = True\n"
        "CLOUD_PLUGINS_SUBMIT_TRANSFORM = True\n"
        "ALLOW_WRITE = *\n"
        "SEC_READ_ENCRYPTION = OPTIONAL\nSEC_READ_INTEGRITY = OPTIONAL\n"
        "SCHEDD.SEC_READ_AUTHENTICATION = REQUIRED\n"))


def token_env(directory, token):
    """Client settings under which ``token`` is the only credential."""
    tokens, empty = directory / "tokens", directory / "empty"
    for d in (tokens, empty):
        d.mkdir(mode=0o700, exist_ok=True)
    (tokens / "only").write_text(token + "\n")
    (tokens / "only").chmod(0o600)
    return {"_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS",
            "_CONDOR_SEC_TOKEN_DIRECTORY": str(tokens),
            "_CONDOR_SEC_TOKEN_SYSTEM_DIRECTORY": str(empty),
            "_CONDOR_SEC_PASSWORD_DIRECTORY": str(empty),
            "_CONDOR_SEC_PASSWORD_FILE": str(empty / "none")}


@pytest.fixture(scope="module")
def stolen(pool, tmp_path_factory):
    return token_env(tmp_path_factory.mktemp("stolen"), worker_token(pool, THIEF))


def as_worker(pool, env, *args):
    return pool.run(*args, check=False, env=env)


def host(pool):
    return pool.run("condor_config_val", "FULL_HOSTNAME").stdout.strip()


def site_job(pool, tmp_path, **extra):
    """An idle job of the site's user (it matches no slot)."""
    tmp_path.chmod(0o777)
    return pool.submit({"executable": "/bin/true", "requirements": "false",
                        "log": str(tmp_path / "site.log"), **extra})


def test_the_client_authenticates_as_the_worker_and_nothing_else(pool, stolen, tmp_path):
    res = as_worker(pool, stolen, "condor_ping", "-verbose", "-type", "collector", "READ")
    assert res.returncode == 0, res.stderr
    domain = pool.run("condor_config_val", "CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN").stdout.strip()
    assert re.search(r"^Remote Mapping:\s+(\S+)$", res.stdout, re.M)[1] == f"{THIEF}@{domain}"
    assert re.search(r"^Authenticated using:\s+(\S+)$", res.stdout, re.M)[1] == "IDTOKENS"
    # The control for the refusals below: the same token, from the same kind
    # of client, still sends what a worker may send (its own slot ad).
    accepted = advertise_as_worker(pool, THIEF, worker_token(pool, THIEF), tmp_path, 1)
    assert accepted, "the worker token could not send its own slot ad"   # (no token shown)


def test_a_worker_token_cannot_submit(pool, stolen, tmp_path):
    tmp_path.chmod(0o777)
    sub = tmp_path / "job.sub"
    sub.write_text(f"executable = /bin/true\nMY.ScopeProbe = \"submit\"\nlog = {tmp_path}/j.log\nqueue\n")
    res = as_worker(pool, stolen, "condor_submit", str(sub))
    assert res.returncode != 0
    assert "DENIED" in res.stderr, res.stderr
    assert not pool.schedd().query('ScopeProbe =?= "submit"', ["ClusterId"])


def test_a_worker_token_cannot_remove_hold_or_edit_a_site_job(pool, stolen, tmp_path):
    cluster = site_job(pool, tmp_path, **{"MY.ScopeProbe": '"victim"'})
    job = f"{cluster}.0"
    for cmd in (["condor_rm", job], ["condor_hold", job], ["condor_qedit", job, "ScopeProbe", '"owned"']):
        res = as_worker(pool, stolen, *cmd)
        assert res.returncode != 0, (cmd, res.stdout, res.stderr)
    time.sleep(1)
    [ad] = pool.schedd().query(f"ClusterId == {cluster}", ["JobStatus", "ScopeProbe", "HoldReason"])
    assert ad["JobStatus"] == 1 and ad["ScopeProbe"] == "victim" and "HoldReason" not in ad, ad
    pool.run("condor_rm", job)  # its owner can


# Ads that pass the collector's worker-ad checks (IsCloudNode, the token's
# request id in CloudRequestID and Name, Machine): only the token's
# authorisations, the site's ALLOW lists, or the fragment's list of the types
# a worker may send (CLOUD_PLUGINS_WORKER_AD_TYPES) stop them.


@pytest.mark.parametrize("command, mytype", [
    ("UPDATE_SCHEDD_AD", "Scheduler"),
    ("UPDATE_NEGOTIATOR_AD", "Negotiator"),
    ("UPDATE_COLLECTOR_AD", "Collector"),
    ("UPDATE_STARTD_AD", "CloudProvisioner"),
    ("UPDATE_STARTD_AD", "CloudProvisionerClaim"),
    ("UPDATE_AD_GENERIC", "CloudProvisionerClaim"),
    ("UPDATE_STARTD_AD", "Submitter"),
    ("UPDATE_STARTD_AD", "Scheduler"),
    ("UPDATE_MASTER_AD", "Negotiator"),
])
def test_a_worker_token_cannot_advertise_other_ads(pool, stolen, tmp_path, command, mytype):
    h, probe = host(pool), f"{command}-{mytype}"
    ad = tmp_path / "forged.ad"
    ad.write_text(f'MyType = "{mytype}"\nName = "{THIEF}@{h}"\nMachine = "{h}"\n'
                  f'MyAddress = "<127.0.0.1:9>"\nScheddIpAddr = "<127.0.0.1:9>"\nIsCloudNode = true\n'
                  f'CloudRequestID = "{THIEF}"\nCloudProvisionerName = "test"\nScopeProbe = "{probe}"\n')
    as_worker(pool, stolen, "condor_advertise", "-tcp", command, str(ad))
    time.sleep(1)
    try:
        assert not pool.collector().query(htcondor2.AdType.Any, f'ScopeProbe == "{probe}"', ["Name"])
    finally:  # what got in must not linger for the other tests
        query = tmp_path / "forget.ad"
        query.write_text(f'MyType = "Query"\nTargetType = "{mytype}"\nRequirements = ScopeProbe =?= "{probe}"\n')
        for table in ("STARTD", "MASTER"):
            pool.run("condor_advertise", "-tcp", f"INVALIDATE_{table}_ADS", str(query), check=False)


def test_a_worker_token_cannot_read_the_schedds_queue(pool, stolen, tmp_path):
    cluster = site_job(pool, tmp_path)
    res = as_worker(pool, stolen, "condor_q", "-allusers", "-af", "ClusterId")
    assert res.returncode != 0 and str(cluster) not in res.stdout, res.stdout
    assert "DENIED" in res.stderr, res.stderr
    assert f"PERMISSION DENIED to {THIEF}@" in (pool.log_dir / "SchedLog").read_text(errors="replace")
    # Nor without authenticating (the schedd requires it for READ) ...
    anon = as_worker(pool, {**stolen, "_CONDOR_SEC_CLIENT_AUTHENTICATION": "NEVER",
                            "_CONDOR_SEC_CLIENT_ENCRYPTION": "OPTIONAL",
                            "_CONDOR_SEC_CLIENT_INTEGRITY": "OPTIONAL"},
                     "condor_q", "-allusers", "-af", "ClusterId")
    assert anon.returncode != 0 and str(cluster) not in anon.stdout, anon.stdout
    # ... but the collector still answers it (the node control script reads
    # the provisioner's ad there) ...
    res = as_worker(pool, stolen, "condor_status", "-schedd", "-af", "Name")
    assert res.returncode == 0 and "scope@" in res.stdout, res.stderr
    # ... and a READ token of another identity still reads the queue: the
    # refusal is the worker identity's.
    reader = token_env(tmp_path, pool.create_token("reader@elsewhere", ["READ"], lifetime=600))
    res = as_worker(pool, reader, "condor_q", "-allusers", "-af", "ClusterId")
    assert res.returncode == 0 and str(cluster) in res.stdout.split(), res.stderr
    pool.run("condor_rm", str(cluster))


def test_cloud_jobs_still_run_while_worker_reads_are_refused(condor_module, pool, tmp_path):
    """Claim, shadow, starter and file transfer in both directions."""
    condor_module.node(pool, "runner", cloud=True, token=worker_token(pool, "runner"))
    tmp_path.chmod(0o777)
    (tmp_path / "in.txt").write_text("payload\n")
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\ntr a-z A-Z < in.txt > out.txt\n")
    script.chmod(0o755)
    cluster = pool.submit({
        "executable": str(script), "MY.CloudMode": '"cloud"', "initialdir": str(tmp_path),
        "requirements": 'regexp("@runner@", Name)',
        "should_transfer_files": "YES", "when_to_transfer_output": "ON_EXIT",
        "transfer_input_files": "in.txt", "log": str(tmp_path / "job.log"),
        "output": "job.out", "error": "job.err"})
    wait_for(lambda: not pool.schedd().query(f"ClusterId == {cluster}", ["ProcId"]), 90,
             what="the cloud job done")
    [ad] = pool.schedd().history(f"ClusterId == {cluster}", ["ExitCode", "MachineAttrCloudRequestID0"], 1)
    assert ad["ExitCode"] == 0 and ad["MachineAttrCloudRequestID0"] == "runner", ad
    assert (tmp_path / "out.txt").read_text() == "PAYLOAD\n"
    # The restriction was in force, and nothing of the node's ever hit it.
    domain = pool.run("condor_config_val", "CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN").stdout.strip()
    assert f"*@{domain}" in pool.run("condor_config_val", "-schedd", "DENY_READ_SCHEDD").stdout
    sched_log = (pool.log_dir / "SchedLog").read_text(errors="replace")
    assert "PERMISSION DENIED to runner@" not in sched_log
