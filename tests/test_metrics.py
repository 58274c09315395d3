"""provisioning/metrics.py without daemons: what a cycle sets, the exact cost,
low-cardinality labels, a bad port, and a failure that does not stop a cycle."""

import logging
import math
from types import SimpleNamespace

import pytest

from condor_plugins.config import ConfigError, load
from condor_plugins.provisioning.explain import Reasons
from condor_plugins.provisioning.metrics import Metrics, serve
from condor_plugins.provisioning.provisioner import Provisioner
from condor_plugins.provisioning.state import (Backoff, Drain, InstanceRecord, JobGroup,
                                               LaunchFailed, Phase, Plan, Terminate)

CFG = load({"CLOUD_PLUGINS_PROVIDERS": "ec2", "CLOUD_PLUGINS_PROVISIONER_NAME": "p",
            "CLOUD_PLUGINS_EC2_TYPE": "ec2", "CLOUD_PLUGINS_EC2_CPUS": "4",
            "CLOUD_PLUGINS_EC2_MEMORY": "8000", "CLOUD_PLUGINS_EC2_COST_PER_HOUR": "3.6"})


def prov(records, **kw):
    holds = Reasons(logging.getLogger("t"), "Hold", "Hold cleared")
    holds.current = {("ec2", "MAX_INSTANCES"): "at MAX_INSTANCES",
                     ("ec2", "drain i-z"): "not going to drain i-z: it runs 1 job(s)"}
    return SimpleNamespace(cfg=CFG, records=records, backoff=kw.get("backoff", {}),
                           holds=holds, failures=kw.get("failures", []),
                           interrupted=kw.get("interrupted", set()))


def value(m, name, **labels):
    return m.registry.get_sample_value(name, labels)


def test_a_cycle_sets_gauges_counters_and_exact_cost():
    m = Metrics()
    m.started = 0.0   # the records' clock
    a = InstanceRecord("i-a", "ec2", Phase.REQUESTED, since=1000, created=1000,
                       reason="requested")
    b = InstanceRecord("i-b", "ec2", Phase.BOOTING, since=1000, created=1000,
                       reason="adopted from the provider listing")
    state = SimpleNamespace(demand={"ec2": (JobGroup(5, 1, 100), JobGroup(2, 4, 100))})
    p = prov({"i-a": a, "i-b": b}, failures=[LaunchFailed("ec2", "capacity", "no room")],
             backoff={"ec2": Backoff(1, 9e12, "x")})
    p.left_out_counts = {"held back": 3}
    m.update(p, Plan((), p.records, {}), state, {}, 1000.0, {"observe": 0.2, "plan": 0.01,
                                                             "act": 0.1}, ok=True)
    assert value(m, "condor_cloud_instances", entry="ec2", phase="requested") == 1
    assert value(m, "condor_cloud_instances", entry="ec2", phase="busy") == 0
    assert value(m, "condor_cloud_idle_jobs", entry="ec2") == 7
    assert value(m, "condor_cloud_creates_total", entry="ec2") == 1
    assert value(m, "condor_cloud_instances_adopted_total", entry="ec2") == 1
    assert value(m, "condor_cloud_create_failures_total", entry="ec2", kind="capacity") == 1
    assert value(m, "condor_cloud_entry_backoff", entry="ec2") == 1
    assert value(m, "condor_cloud_holds", entry="ec2", reason="MAX_INSTANCES") == 1
    assert value(m, "condor_cloud_holds", entry="ec2", reason="drain") == 1   # no id
    assert value(m, "condor_cloud_left_out_jobs", reason="held back") == 3
    assert value(m, "condor_cloud_spend_per_hour", entry="ec2") == 7.2
    assert value(m, "condor_cloud_cycle_duration_seconds_count", phase="observe") == 1
    assert value(m, "condor_cloud_worker_token_expiry_timestamp_seconds") == 1000 + 7 * 86400
    # 100 s later, i-a is gone (seen at 1100) and i-b is draining; then retired.
    gone = InstanceRecord("i-a", "ec2", Phase.GONE, since=1100, created=1000)
    b2 = InstanceRecord("i-b", "ec2", Phase.DRAINING, since=1100, created=1000)
    p2 = prov({"i-a": gone, "i-b": b2})
    plan = Plan((Drain("ec2", "i-b", "idle"), Terminate("ec2", "i-x", "drained, no job left"),
                 Terminate("ec2", "i-y", "lost: ...", lost=True)), p2.records, {})
    m.update(p2, plan, None, p.records, 1100.0, {}, ok=True)
    # 3.6/h = 0.001/s: i-a 100 s, i-b 100 s so far.
    assert value(m, "condor_cloud_cost_total", entry="ec2") == pytest.approx(0.2)
    assert m.totals["CloudCostTotal"] == pytest.approx(0.2)
    assert value(m, "condor_cloud_drains_total", entry="ec2") == 1
    assert value(m, "condor_cloud_terminations_total", entry="ec2", reason="idle") == 1
    assert value(m, "condor_cloud_terminations_total", entry="ec2", reason="lost") == 1
    assert value(m, "condor_cloud_instances_lost_total", entry="ec2") == 1
    assert value(m, "condor_cloud_creates_total", entry="ec2") == 1   # not counted again
    # Dropped once reported gone: billed once, never again.
    p3 = prov({"i-b": InstanceRecord("i-b", "ec2", Phase.GONE, since=1200, created=1000)})
    m.update(p3, Plan((), p3.records, {}), None, p2.records, 1300.0, {}, ok=True)
    assert value(m, "condor_cloud_cost_total", entry="ec2") == pytest.approx(0.3)
    assert value(m, "condor_cloud_instances", entry="ec2", phase="draining") == 0
    assert math.isnan(value(m, "condor_cloud_worker_token_expiry_timestamp_seconds"))
    from prometheus_client import generate_latest
    text = generate_latest(m.registry).decode()
    assert "i-a" not in text and "i-b" not in text and "i-z" not in text  # never an id


def test_a_failed_cycle_counts_and_a_bad_port_names_the_knob():
    m = Metrics()
    m.update(prov({}), None, None, {}, 5.0, {"observe": 0.1}, ok=False)
    assert value(m, "condor_cloud_cycles_failed_total") == 1
    assert value(m, "condor_cloud_last_successful_cycle_timestamp_seconds") == 0
    assert serve(m, {"CLOUD_PLUGINS_METRICS_PORT": ""}) is False
    with pytest.raises(ConfigError, match="CLOUD_PLUGINS_METRICS_PORT = 'http'"):
        serve(m, {"CLOUD_PLUGINS_METRICS_PORT": "http"})


def test_a_metrics_failure_never_fails_a_cycle(caplog):
    p = Provisioner.__new__(Provisioner)

    class Broken:
        def update(self, *args, **kw):
            raise RuntimeError("boom")
    p.metrics = Broken()
    with caplog.at_level(logging.ERROR):
        p._update_metrics(None, None, {}, 0.0, [0.0, 1.0, 2.0, 3.0])
    assert "Updating the metrics failed" in caplog.text


def test_cost_by_accounting_group_shares_each_instance_by_cores():
    m = Metrics()
    m.started = 0.0
    rec = InstanceRecord("i-a", "ec2", Phase.BUSY, since=0, created=0, startd="i-a@ip")
    p = prov({"i-a": rec})
    p.running_groups = {"i-a@ip": {"group_cms": 2, "group_atlas": 1}}   # of 4 cores
    m.update(p, Plan((), p.records, {}), None, {}, 0.0, {}, ok=True)
    p.running_groups = {}
    m.update(p, Plan((), p.records, {}), None, p.records, 1000.0, {}, ok=True)
    # 3.6/h = 0.001/s for 1000 s = 1.0: cms 2/4, atlas 1/4, idle 1/4.
    assert value(m, "condor_cloud_group_cost_total", group="group_cms") == pytest.approx(0.5)
    assert value(m, "condor_cloud_group_cost_total", group="group_atlas") == pytest.approx(0.25)
    assert value(m, "condor_cloud_group_cost_total", group="(idle)") == pytest.approx(0.25)
    assert value(m, "condor_cloud_cost_total", entry="ec2") == pytest.approx(1.0)


def test_a_restarted_daemon_bills_only_from_its_start():
    m = Metrics()
    m.started = 5000.0
    rec = InstanceRecord("i-old", "ec2", Phase.BUSY, since=0, created=0)
    p = prov({"i-old": rec})
    m.update(p, Plan((), p.records, {}), None, {"i-old": rec}, 6000.0, {}, ok=True)
    assert value(m, "condor_cloud_cost_total", entry="ec2") == pytest.approx(1.0)  # 1000 s
