"""The provisioner's demand observation against a real schedd: autoclustered
jobs, jobs not yet in an autocluster, and the full-shape fallback agree."""

import htcondor2
import pytest

from condor_plugins.provisioning import observe as prov_mod
from condor_plugins.localpool import wait_for
from condor_plugins.provisioning.provisioner import Provisioner
from condor_plugins.provisioning.state import JobGroup

pytestmark = pytest.mark.integration


def submit(pool, tmp_path, count, cpus, memory, requirements="TARGET.IsCloudNode =?= True",
           universe="vanilla"):
    desc = {"executable": "/bin/true", "request_cpus": str(cpus), "request_memory": str(memory),
            "requirements": requirements, "universe": universe,
            "log": str(tmp_path / "job.log")}
    return pool.schedd().submit(htcondor2.Submit(desc), count=count).cluster()


def test_demand_counts_clustered_and_fresh_jobs(condor, tmp_path):
    tmp_path.chmod(0o777)
    pool = condor.site_pool("demand")
    condor.node(pool, "plainonly")  # the negotiator runs, so jobs get autoclusters
    submit(pool, tmp_path, 3, 1, 500)
    submit(pool, tmp_path, 2, 4, 6000)
    submit(pool, tmp_path, 4, 1, 500, requirements="TARGET.Arch == \"NO_SUCH_ARCH\"")  # never on a node
    schedd = pool.schedd()
    wait_for(lambda: len(schedd.query("AutoClusterId isnt undefined", ["ClusterId"])) == 9, 60,
             what="the negotiator to autocluster the jobs")
    submit(pool, tmp_path, 5, 2, 1000)  # fresh: not in an autocluster yet
    submit(pool, tmp_path, 1, 1, 100, universe="local")  # never on a node
    param = {"COLLECTOR_HOST": pool.collector_address, "SPOOL": str(tmp_path), "FULL_HOSTNAME": "cm",
             "CLOUD_PLUGINS_PROVIDERS": "e1", "CLOUD_PLUGINS_E1_TYPE": "local",
             "CLOUD_PLUGINS_E1_CPUS": "8", "CLOUD_PLUGINS_E1_MEMORY": "16000",
             "CLOUD_PLUGINS_E1_STATE_DIR": str(tmp_path / "nodes"),
             "CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN": "cloud-worker.test"}
    prov = Provisioner(param, state_file=tmp_path / "state.json")
    expected = (JobGroup(3, 1, 500), JobGroup(5, 2, 1000), JobGroup(2, 4, 6000))
    try:
        fresh = schedd.query("AutoClusterId is undefined", ["ClusterId"])
        assert fresh, "the test needs jobs outside any autocluster"
        assert prov.demand()["e1"] == expected
        # Too many unclustered jobs: the schedd groups by full shape instead.
        old = prov_mod.UNCLUSTERED_ONE_BY_ONE
        prov_mod.UNCLUSTERED_ONE_BY_ONE = 0
        try:
            assert prov.demand()["e1"] == expected
        finally:
            prov_mod.UNCLUSTERED_ONE_BY_ONE = old
    finally:
        prov.close()
