"""jobmanager-cloud and jobmanager-nocloud behind a real Globus gatekeeper (issue 8).

A throw-away CA, host and user certificates and a proxy are made under the
test's directory; globus-gatekeeper runs as the test user against a pool with
one cloud-tagged and one plain node. Where each job ran and what its
Requirements were is read back from the schedd's history.
"""

import getpass
import time
import uuid

import pytest

from conftest import worker_token
from condor_plugins.localpool import wait_for
from gram_site import GramSite

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def site(condor_module, tmp_path_factory):
    pool = condor_module.site_pool("gram", extra_config="CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS = True\n")
    condor_module.node(pool, "plain", cpus=2)
    condor_module.node(pool, "cloud", cpus=2, cloud=True, token=worker_token(pool, "cloud"))
    gram = GramSite(tmp_path_factory.mktemp("gram"), pool.config_path, getpass.getuser())
    gram.make_credentials()
    gram.write_site_files()
    gram.start_gatekeeper()
    yield pool, gram
    gram.stop()


def history_ad(pool, mark, timeout=60):
    """The completed job whose environment carries ``GRAMTEST_MARK=<mark>``."""
    schedd = pool.schedd()

    def find():
        for ad in schedd.history("JobStatus == 4", ["ClusterId", "LastRemoteHost", "Requirements",
                                                    "CloudMode", "Env", "Environment", "Cmd"]):
            env = str(ad.get("Environment", "")) + str(ad.get("Env", ""))
            if f"GRAMTEST_MARK={mark}" in env:
                return ad
        return None
    return wait_for(find, timeout, what=f"the job marked {mark} in the history")


def node_of(host):
    return host.split("@")[1]


def test_job_run(site):
    pool, gram = site
    mark = uuid.uuid4().hex[:12]
    t0 = time.monotonic()
    res = gram.client("globus-job-run", gram.contact("jobmanager-cloud"), "-env", f"GRAMTEST_MARK={mark}",
                      "/bin/hostname")
    print(res.stdout, res.stderr, time.monotonic() - t0)
    ad = history_ad(pool, mark)
    print(ad)
    assert node_of(ad["LastRemoteHost"]) == "cloud"
