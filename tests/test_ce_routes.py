"""The HTCondor-CE routes (config.d/ce/50-cloud-routes.conf), checked with
HTCondor's own offline router (condor_job_router_info -route-jobs) on a
CE-like configuration: a catch-all Condor_Pool route and CE's Base pre-route
transform."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

classad2 = pytest.importorskip("classad2")

from condor_plugins.localpool import shipped_config_dir  # noqa: E402

CE_LIKE = """
JOB_ROUTER_ROUTE_NAMES = Condor_Pool
JOB_ROUTER_ROUTE_Condor_Pool @=jrt
  REQUIREMENTS true
  UNIVERSE VANILLA
@jrt
JOB_ROUTER_PRE_ROUTE_TRANSFORM_NAMES = Base
JOB_ROUTER_TRANSFORM_Base @=jrt
  SET RoutedJob True
@jrt
"""
JOB = """ClusterId = {n}
ProcId = 0
Owner = "griduser"
JobUniverse = 5
JobStatus = 1
Cmd = "/bin/hostname"
Requirements = (TARGET.Memory >= 1024)
{extra}
"""


def route(tmp_path, enabled, jobs):
    if not shutil.which("condor_job_router_info"):
        if os.environ.get("CI"):
            pytest.fail("condor_job_router_info not found: run the suite in dev/sandbox")
        pytest.skip("needs HTCondor")
    config = tmp_path / "condor_config"
    config.write_text(
        f"LOCAL_DIR = {tmp_path}\nLOG = {tmp_path}\nSPOOL = {tmp_path}\n" + CE_LIKE
        + f"include : {shipped_config_dir() / 'ce' / '50-cloud-routes.conf'}\n"
        + (f"CLOUD_PLUGINS_CE_ROUTES = {enabled}\n"))
    ads = tmp_path / "jobs.ad"
    ads.write_text("\n".join(JOB.format(n=n, extra=extra) for n, extra in enumerate(jobs, 1)))
    env = dict(os.environ, CONDOR_CONFIG=str(config))
    res = subprocess.run(["condor_job_router_info", "-route-jobs", "-", "-jobads", str(ads)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    text = res.stdout[res.stdout.index("submit_job"):] if "submit_job" in res.stdout else ""
    out = {}
    for block in text.split("submit_job")[1:]:
        ad = classad2.parseOne(block.split("\n", 1)[1], classad2.ParserType.Old)
        out[ad["RoutedFromJobId"]] = ad
    return out


def test_queue_selects_the_mode(tmp_path):
    routed = route(tmp_path, True, ['queue = "cloud"', 'queue = "nocloud"', 'queue = "anycloud"',
                                    'queue = "long"', 'CloudMode = "local"', ""])
    cloud, never, anyc, other, bymode, plain = (routed[f"{n}.0"] for n in range(1, 7))
    assert cloud["RouteName"] == "Cloud_Only" and cloud["CloudMode"] == "cloud"
    assert str(cloud.lookup("Requirements")).endswith("(TARGET.IsCloudNode is true)")
    assert "TARGET.Memory >= 1024" in str(cloud.lookup("Requirements"))
    assert cloud["CloudModeApplied"] == "cloud" and cloud["RoutedJob"] is True
    assert never["RouteName"] == "Cloud_Never" and never["CloudMode"] == "local"
    assert str(never.lookup("Requirements")).endswith("(TARGET.IsCloudNode isnt true)")
    assert anyc["RouteName"] == "Cloud_Transparent" and anyc["CloudMode"] == "any"
    assert str(anyc.lookup("Requirements")) == "(TARGET.Memory >= 1024)"
    # Other queues: the CE's own route, untouched.
    for ad in (other, plain):
        assert ad["RouteName"] == "Condor_Pool" and "CloudMode" not in ad
    assert bymode["RouteName"] == "Cloud_Never"


def test_inert_until_enabled(tmp_path):
    routed = route(tmp_path, False, ['queue = "cloud"', 'CloudMode = "cloud"'])
    assert {ad["RouteName"] for ad in routed.values()} == {"Condor_Pool"}
    assert all("IsCloudNode" not in str(ad.lookup("Requirements")) for ad in routed.values())
