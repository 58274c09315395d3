"""jobmanager-cloud and jobmanager-nocloud behind a real Globus gatekeeper (issue 8).

A throw-away Simple CA, host and user certificates and a proxy are made under
the module's temporary directory; globus-gatekeeper runs as the test user
(grid-mapfile: the user's DN -> this user) against a pool with one
cloud-tagged and one plain node, with the job manager types, validation file,
service files and globus-cloud.conf of jobmanager/ (see tests/gram_site.py).
Where each job ran and what its Requirements were is read back from the
schedd (queue and history), not from our code.
"""

import getpass
import os
import shutil
import socket
import time
import uuid

import pytest

from conftest import worker_token
from condor_plugins.localpool import wait_for
from gram_site import GramSite

pytestmark = pytest.mark.integration

GRAM_TOOLS = ("globus-gatekeeper", "globus-job-manager", "globus-job-run", "grid-ca-create",
              "grid-proxy-init")

CLOUD = "TARGET.IsCloudNode is true"      # how the schedd prints modes.CLAUSES[cloud]
NOT_CLOUD = "TARGET.IsCloudNode isnt true"  # ... and modes.CLAUSES[local]


@pytest.fixture(scope="module")
def site(condor_module, tmp_path_factory):
    missing = [t for t in GRAM_TOOLS if shutil.which(t) is None]
    if missing:
        # dev/sandbox installs GRAM; in CI a missing tool is an error.
        if os.environ.get("CI"):
            pytest.fail(f"GRAM tools missing: {missing}")
        pytest.skip(f"GRAM not installed ({', '.join(missing)}); run `make test` (dev/sandbox)")
    # GRAM gives every job its proxy (X509UserProxy). On a shared filesystem the
    # starter asks the shadow to delegate it, which fails with HTCondor 23.9.6
    # here ("X509Credential::Request() failed" in the StarterLog): the shadow
    # loses the starter at once and never logs the execute event that GRAM's
    # poll reads. Cloud nodes do not share the site's filesystem anyway: give
    # each node its own FILESYSTEM_DOMAIN, so the job's files (proxy included,
    # copied rather than delegated) go by file transfer.
    no_delegation = "DELEGATE_JOB_GSI_CREDENTIALS = False\n"
    pool = condor_module.site_pool("gram", extra_config="CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS = True\n"
                                   + no_delegation)
    for name in ("plain", "cloud"):
        extra = no_delegation + f"FILESYSTEM_DOMAIN = {name}.fs.example\n"
        if name == "cloud":
            condor_module.node(pool, name, cpus=2, cloud=True, token=worker_token(pool, name),
                               extra_config=extra)
        else:
            condor_module.node(pool, name, cpus=2, extra_config=extra)
    gram = GramSite(tmp_path_factory.mktemp("gram"), pool.config_path, getpass.getuser())
    try:
        gram.make_credentials()
        gram.write_site_files()
        gram.start_gatekeeper()
        yield pool, gram
    finally:
        gram.stop()
    # Nothing of the site may outlive it: gatekeeper, job managers, scripts.
    assert gram.site_processes() == []
    # Every job's state and HTCondor log is gone once its job has ended.
    left = sorted(p.name for p in (gram.root / "state").rglob("condor.*"))
    assert left == [], left


def mark_env():
    mark = uuid.uuid4().hex[:12]
    return mark, ["-env", f"GRAMTEST_MARK={mark}"]


def _marked(ad, mark):
    return f"GRAMTEST_MARK={mark}" in str(ad.get("Environment", "")) + str(ad.get("Env", ""))


ATTRS = ["ClusterId", "JobStatus", "LastRemoteHost", "Requirements", "CloudMode", "CloudModeApplied",
         "NumJobStarts", "Environment", "Env"]


def queued_ad(pool, mark, timeout=30):
    """The queued job whose environment carries GRAMTEST_MARK=<mark>."""
    schedd = pool.schedd()
    return wait_for(lambda: next((a for a in schedd.query("true", ATTRS) if _marked(a, mark)), None),
                    timeout, what=f"the job marked {mark} in the queue")


def history_ad(pool, mark, timeout=60, status=4):
    """The job (completed by default) whose environment carries GRAMTEST_MARK=<mark>."""
    schedd = pool.schedd()

    def find():
        return next((a for a in schedd.history(f"JobStatus == {status}", ATTRS) if _marked(a, mark)), None)
    return wait_for(find, timeout, what=f"the job marked {mark} in the history")


def node_of(host):
    return host.split("@")[1]  # slot1_1@cloud@vm -> cloud


@pytest.mark.parametrize("service,node,clause,mode", [
    ("jobmanager-cloud", "cloud", CLOUD, "cloud"),
    ("jobmanager-nocloud", "plain", NOT_CLOUD, "local"),
])
def test_globus_job_run_lands_on_the_right_node(site, service, node, clause, mode):
    """globus-job-run through each service; GRAM's own Requirements line
    (min_memory -> Memory >= N) is kept and the mode's clause ANDed to it."""
    pool, gram = site
    mark, env = mark_env()
    res = gram.client("globus-job-run", gram.contact(service), *env, "-x", "(min_memory=32)",
                      "/bin/hostname")
    assert res.stdout.strip() == socket.gethostname()
    ad = history_ad(pool, mark)
    assert node_of(ad["LastRemoteHost"]) == node
    req = str(ad["Requirements"])
    assert clause in req and "Memory >= 32" in req, req
    assert req.count("IsCloudNode") == 1, req
    assert ad["CloudMode"] == mode and ad["CloudModeApplied"] == mode


def test_client_requirements_are_anded_with_the_cloud_clause(site):
    """(condorsubmit=(requirements ...)) replaces GRAM's own line, as for
    jobmanager-condor, and the cloud clause is still ANDed to it."""
    pool, gram = site
    mark, env = mark_env()
    gram.client("globus-job-run", gram.contact("jobmanager-cloud"), *env,
                "-x", "(condorsubmit=(requirements 'TARGET.TotalCpus >= 2'))", "/bin/true")
    ad = history_ad(pool, mark)
    req = str(ad["Requirements"])
    assert "TARGET.TotalCpus >= 2" in req and CLOUD in req, req
    assert node_of(ad["LastRemoteHost"]) == "cloud"


@pytest.mark.parametrize("command", ["requirements", "'+Requirements'"])
def test_client_requirements_cannot_override_the_cloud_clause(site, command):
    """A client that asks for a non-cloud node through jobmanager-cloud gets a
    job that matches nothing (not one on the plain node); globus-job-cancel
    (condor_rm through the type's configuration) removes it."""
    pool, gram = site
    mark, env = mark_env()
    contact = gram.client("globus-job-submit", gram.contact("jobmanager-cloud"), *env,
                          "-x", f"(condorsubmit=({command} 'TARGET.IsCloudNode =!= true'))",
                          "/bin/true").stdout.strip().splitlines()[-1]
    ad = queued_ad(pool, mark)
    req = str(ad["Requirements"])
    assert "IsCloudNode isnt true" in req and CLOUD in req, req
    time.sleep(5)  # a few negotiation cycles (NEGOTIATOR_INTERVAL = 2)
    ad = queued_ad(pool, mark)
    assert ad["JobStatus"] == 1 and ad.get("NumJobStarts", 0) == 0
    gram.client("globus-job-cancel", "-f", contact)
    history_ad(pool, mark, status=3)  # removed
    gram.client("globus-job-clean", "-q", contact, check=False)


@pytest.mark.parametrize("command", ["universe", "'+JobUniverse'"])
def test_client_cannot_leave_the_vanilla_universe(site, command):
    """The clause is applied to vanilla universe jobs: jobmanager-cloud refuses a
    condorsubmit that would make a local/scheduler universe job (which runs on
    the CE itself), and nothing is queued."""
    pool, gram = site
    mark, env = mark_env()
    res = gram.client("globus-job-run", gram.contact("jobmanager-cloud"), *env,
                      "-x", f"(condorsubmit=({command} local))", "/bin/true", check=False)
    assert res.returncode != 0
    assert "condorsubmit may not set" in res.stdout + res.stderr
    schedd = pool.schedd()
    assert not [a for a in schedd.query("true", ATTRS) if _marked(a, mark)]
    assert not [a for a in schedd.history("true", ATTRS) if _marked(a, mark)]


def test_job_state_goes_pending_active_done(site):
    """globus-job-status of a jobmanager-cloud job: PENDING -> ACTIVE -> DONE
    (the job manager polls the type's poll(), condor.pm's, every 10 s)."""
    pool, gram = site
    mark, env = mark_env()
    contact = gram.client("globus-job-submit", gram.contact("jobmanager-cloud"), *env,
                          "/bin/sleep", "14").stdout.strip().splitlines()[-1]
    seen = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        state = gram.client("globus-job-status", contact).stdout.strip()
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in ("DONE", "FAILED"):
            break
        time.sleep(0.5)
    gram.client("globus-job-clean", "-q", contact, check=False)
    # UNSUBMITTED is GRAM's state until the job manager has submitted to the
    # schedd: seen first when the machine is slow.
    assert seen[seen[:1] == ["UNSUBMITTED"]:] == ["PENDING", "ACTIVE", "DONE"], seen
    ad = history_ad(pool, mark)
    assert node_of(ad["LastRemoteHost"]) == "cloud"
