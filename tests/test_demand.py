"""The provisioner's demand observation against a real schedd: autoclustered
jobs, jobs not yet in an autocluster, and the full-shape fallback agree."""

import htcondor2
import pytest

from condor_plugins.provisioning import idlejobs as prov_mod
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
    # Fresh jobs stay out of any autocluster while no negotiation runs.
    assert pool.run("condor_off", "-negotiator").returncode == 0
    wait_for(lambda: not pool.collector().query(htcondor2.AdType.Negotiator, "true", ["Name"]),
             30, what="the negotiator stopped")
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


class FakeSchedd:
    """Answers idle_shapes' three queries like a schedd (GroupBy, AutoCluster, jobs)."""

    def __init__(self, groups, clusters, jobs=()):
        self.groups, self.clusters, self.jobs = groups, clusters, list(jobs)

    def query(self, constraint, projection=(), opts=None, limit=-1):
        if opts == htcondor2.QueryOpt.GroupBy:
            return self.groups
        if opts == htcondor2.QueryOpt.AutoCluster:
            return self.clusters
        return self.jobs


def _cluster(cid, requirements):
    import classad2
    ad = classad2.ClassAd({"AutoClusterId": cid, "RequestCpus": 1, "RequestMemory": 100})
    ad["Requirements"] = classad2.ExprTree(requirements)
    return ad


def test_held_back_and_transparent_jobs_are_left_out_with_why():
    """Group quota or priority: left out.  Mode any: counted only when the
    negotiator found no match and the jobs waited BURST_DELAY (here 3 of 5)."""
    import classad2
    from condor_plugins.provisioning.demand import site_twin
    template = classad2.ClassAd({"IsCloudNode": True, "Cpus": 4, "Memory": 8000})
    cloud, anywhere = "TARGET.IsCloudNode =?= True", "TARGET.Cpus >= RequestCpus"
    groups = [classad2.ClassAd(g) for g in (
        {"JobStatus": 1, "JobUniverse": 5, "AutoClusterId": 1, "JobCount": 4,
         "LastRejMatchReason": "insufficient priority"},
        {"JobStatus": 1, "JobUniverse": 5, "AutoClusterId": 2, "JobCount": 6},
        {"JobStatus": 1, "JobUniverse": 5, "AutoClusterId": 3, "JobCount": 4},
        {"JobStatus": 1, "JobUniverse": 5, "AutoClusterId": 3, "JobCount": 1,
         "LastRejMatchReason": "no match found"},
        {"JobStatus": 1, "JobUniverse": 5, "AutoClusterId": 4, "JobCount": 2})]
    clusters = [_cluster(1, cloud), _cluster(2, cloud), _cluster(3, anywhere),
                _cluster(4, anywhere)]
    old = [classad2.ClassAd({"AutoClusterId": 3}) for _ in range(3)]
    rows = prov_mod.idle_shapes(FakeSchedd(groups, clusters, old), [template],
                                [site_twin(template)], burst_delay=600, now=10_000)
    got = sorted((int(r["AutoClusterId"]), n, why) for r, n, why in rows)
    assert got == [(1, 4, "held back by the negotiator (insufficient priority)"),
                   (2, 6, ""), (3, 2, prov_mod.WAITING), (3, 3, ""),
                   (4, 2, prov_mod.WAITING)]
