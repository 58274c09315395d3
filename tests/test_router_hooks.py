"""The JobRouter hooks as the router runs them: a process, stdin in, stdout out."""

from __future__ import annotations

import subprocess
import sys

import pytest

from condor_plugins.steering import router_hooks
from provtools import hook_dir

classad2 = pytest.importorskip("classad2")

ROUTE = '[ Name = "CloudPoolHook"; TargetUniverse = 9; GridResource = "condor cloud@h 127.0.0.1:9" ]'
JOB = """ClusterId = 12
ProcId = 3
Owner = "alice"
JobUniverse = 5
Cmd = "/bin/hostname"
RequestCpus = 2
RequestMemory = ifThenElse(MemoryUsage =!= undefined, MemoryUsage, 2048)
Requirements = (TARGET.Arch == "X86_64") && (TARGET.Memory >= RequestMemory)
x509userproxy = "/tmp/x509up_u1000"
TransferInputFiles = "in.dat"
CloudMode = "{mode}"
"""


@pytest.fixture(scope="module")
def hooks(tmp_path_factory):
    return hook_dir(tmp_path_factory.mktemp("h"))


def run(hooks, name, stdin):
    return subprocess.run([str(hooks / f"condor_cloud_route_{name}")], input=stdin,
                          capture_output=True, text=True, timeout=30)


def translated(hooks, job):
    res = run(hooks, "translate", ROUTE + router_hooks.SEPARATOR + job)
    assert res.returncode == 0, res.stderr
    return classad2.parseOne(res.stdout, classad2.ParserType.Old), res


def test_any_mode_job_gets_the_cloud_clause_and_keeps_everything_else(hooks):
    ad, res = translated(hooks, JOB.format(mode="any"))
    src = classad2.parseOne(JOB.format(mode="any"), classad2.ParserType.Old)
    for key in src.keys():  # user requirements, requests, proxy, file transfer: unchanged
        assert str(ad.lookup(key)) == str(src.lookup(key)), key
    remote = str(ad.lookup("Remote_Requirements"))
    assert str(src.lookup("Requirements")) in remote and "TARGET.IsCloudNode is true" in remote
    assert ad["GridResource"] == "condor cloud@h 127.0.0.1:9" and ad["CloudRoutedBy"] == "hook"
    assert ad["CloudRoute"] == "CloudPoolHook" and res.stderr == ""


def test_clause_applied_already_is_not_added_twice(hooks):
    job = (JOB.format(mode="cloud").replace(
        "Requirements = (TARGET.Arch", "Requirements = (TARGET.IsCloudNode =?= True) && (TARGET.Arch")
        + 'CloudModeApplied = "cloud"\n')
    ad, _ = translated(hooks, job)
    assert str(ad.lookup("Remote_Requirements")) == str(ad.lookup("Requirements"))


@pytest.mark.parametrize("stdin, message", [
    ("", "no route ad / job ad separator"),
    ("garbage \x00\x01 with no structure", "separator"),
    (ROUTE + router_hooks.SEPARATOR + "this is not an ad\n", "is not 'Name = value'"),
    (ROUTE + router_hooks.SEPARATOR + JOB.format(mode="local"), "local-mode job"),
    (ROUTE + router_hooks.SEPARATOR + JOB.format(mode="sometimes"), "invalid cloud mode"),
    (ROUTE + router_hooks.SEPARATOR + JOB.format(mode="cloud").replace("RequestCpus = 2",
                                                                       'RequestCpus = "2"'),
     'RequestCpus = "2" is not a number'),
    (ROUTE + router_hooks.SEPARATOR + JOB.format(mode="cloud").replace("JobUniverse = 5",
                                                                       "JobUniverse = 7"),
     "JobUniverse = 7 is not routable"),
    (ROUTE + router_hooks.SEPARATOR + JOB.format(mode="any").replace(
        "Requirements = (TARGET", "Requirements = ((TARGET"), "Requirements"),
])
def test_unroutable_input_exits_non_zero_with_one_line(hooks, stdin, message):
    res = run(hooks, "translate", stdin)
    assert res.returncode == 1 and res.stdout == ""
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith("condor_plugins translate hook: ")


def test_finalize_copies_where_the_job_ran_and_never_fails(hooks):
    routed = 'GridJobId = "condor cloud@h 127.0.0.1:9 7.0"\nLastRemoteHost = "slot1@vm-1"\n'
    res = run(hooks, "finalize", JOB.format(mode="cloud") + router_hooks.SEPARATOR + routed)
    assert res.returncode == 0
    update = classad2.parseOne(res.stdout, classad2.ParserType.Old)
    assert update["CloudGridJobId"] == "condor cloud@h 127.0.0.1:9 7.0"
    assert update["CloudLastRemoteHost"] == "slot1@vm-1"
    # A failed finalize would make the router run the job again: never fail.
    res = run(hooks, "finalize", "junk")
    assert res.returncode == 0 and res.stdout == "" and "separator" in res.stderr


@pytest.mark.parametrize("name", ["update", "cleanup"])
def test_update_and_cleanup_succeed_quietly(hooks, name):
    res = run(hooks, name, JOB.format(mode="cloud"))
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


@pytest.mark.parametrize("mode", ["cloud", "any"])
def test_translate_never_imports_classad2(mode):
    """Start-up cost: every routed job runs the hook once."""
    code = ("import sys, io; from condor_plugins.steering import router_hooks as h; "
            "sys.stdin = io.StringIO(sys.argv[1]); sys.stdout = io.StringIO(); "
            "rc = h.translate_main(); sys.stdout = sys.__stdout__; "
            "print(rc, 'classad2' in sys.modules, 'htcondor2' in sys.modules)")
    job = JOB.format(mode=mode)
    out = subprocess.run([sys.executable, "-c", code, ROUTE + router_hooks.SEPARATOR + job],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["0", "False", "False"], out.stderr


@pytest.mark.parametrize("req", [
    "TARGET.IsCloudNode =?= true", "(TARGET.Memory > 1) && (TARGET.IsCloudNode =?= true)",
    "TARGET.IsCloudNode is true && ((TARGET.Memory > 1))",
    "((TARGET.Arch == \"X86_64\") && (TARGET.IsCloudNode =?= TRUE))"])
def test_an_existing_clause_is_found_without_classad2(hooks, req):
    job = JOB.format(mode="cloud").replace(
        'Requirements = (TARGET.Arch == "X86_64") && (TARGET.Memory >= RequestMemory)',
        f"Requirements = {req}")
    ad, _ = translated(hooks, job)
    assert str(ad.lookup("Remote_Requirements")) == str(ad.lookup("Requirements"))


def test_a_clause_inside_an_or_is_not_enough(hooks):
    job = JOB.format(mode="any").replace(
        'Requirements = (TARGET.Arch == "X86_64") && (TARGET.Memory >= RequestMemory)',
        "Requirements = TARGET.IsCloudNode =?= true || TARGET.Memory > 1")
    ad, _ = translated(hooks, job)
    assert str(ad.lookup("Remote_Requirements")).endswith("&& (TARGET.IsCloudNode is true)")
