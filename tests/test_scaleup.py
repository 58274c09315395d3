"""Cross-entry scale-up through the policy (issue 15): one allocation per cycle,
spill-over on backoff, disable, limits and a capacity error, the global caps,
and the spend rate.  Pure: no daemons, no clock."""

import pytest

from condor_plugins import config
from condor_plugins.config import ConfigError
from condor_plugins.providers.base import Instance, InstanceState
from condor_plugins.provisioning.policy import plan
from condor_plugins.provisioning.scaleup import global_limits, spend_per_hour
from condor_plugins.provisioning.state import (Backoff, Create, Demand, Hold, InstanceRecord,
                                               LaunchFailed, Listing, ObservedState, Phase)

T0 = 1_000_000.0
BOTH = ("spot", "ondemand")


def cfg(**knobs):
    param = {"CLOUD_PLUGINS_PROVIDERS": "spot ondemand", "FULL_HOSTNAME": "cm",
             "CLOUD_PLUGINS_SPOT_TYPE": "local", "CLOUD_PLUGINS_ONDEMAND_TYPE": "local",
             "CLOUD_PLUGINS_SPOT_COST_PER_HOUR": "0.1",
             "CLOUD_PLUGINS_ONDEMAND_COST_PER_HOUR": "0.4",
             "CLOUD_PLUGINS_COLLECTOR_GRACE": "0"}
    param.update({f"CLOUD_PLUGINS_{k}": str(v) for k, v in knobs.items()})
    return config.load(param)


def world(jobs=16, records=(), **kw):
    listings = {e: Listing(True, tuple(
        Instance(r.id, e, InstanceState.RUNNING, launch_time=T0 - 10, tags={})
        for r in records if r.entry == e)) for e in BOTH}
    return ObservedState(records={r.id: r for r in records}, listings=listings,
                         jobs=(Demand(jobs, 1, 1000, BOTH),) if jobs else (), **kw)


def creates(p):
    return {a.entry: a.count for a in p.actions if isinstance(a, Create)}


def holds(p):
    return {a.entry: a for a in p.actions if isinstance(a, Hold)}


def booting(n, entry):
    return [InstanceRecord(f"{entry}-{i}", entry, Phase.BOOTING, since=T0, created=T0)
            for i in range(n)]


def test_two_entries_matching_the_same_jobs_provision_once_on_the_cheaper():
    """The motivating bug: 16 one-core jobs, two 4-core entries: 4 nodes, not 4 + 4."""
    p = plan(world(), cfg(), T0)
    assert creates(p) == {"spot": 4}
    assert p.allocation.nodes("spot") == 4 and p.allocation.nodes("ondemand") == 0


def test_priority_beats_cost():
    assert creates(plan(world(), cfg(ONDEMAND_PRIORITY=-1), T0)) == {"ondemand": 4}


def test_booting_capacity_of_either_entry_counts_once():
    p = plan(world(records=booting(3, "ondemand")), cfg(), T0)
    assert creates(p) == {"spot": 1}


def test_spill_over_at_max_instances_says_why_on_both_entries():
    p = plan(world(), cfg(SPOT_MAX_INSTANCES=1), T0)
    assert creates(p) == {"spot": 1, "ondemand": 3}
    create = [a for a in p.actions if isinstance(a, Create) and a.entry == "ondemand"][0]
    assert "spilled over from spot" in create.reason
    assert holds(p)["spot"].key == "MAX_INSTANCES" and "1 within" in holds(p)["spot"].reason


@pytest.mark.parametrize("knobs, backoff, key", [
    ({"SPOT_ENABLED": "false"}, {}, "disabled"),
    ({}, {"spot": Backoff(1, T0 + 100, "boot failure")}, "backoff"),
])
def test_blocked_entry_spills_and_holds_with_its_reason(knobs, backoff, key):
    p = plan(world(backoff=backoff), cfg(**knobs), T0)
    assert creates(p) == {"ondemand": 4}
    assert holds(p)["spot"].key == key


def test_capacity_error_moves_the_demand_to_the_other_entry_next_cycle():
    c = cfg()
    first = plan(world(), c, T0)
    assert creates(first) == {"spot": 4}
    # The act phase failed (InsufficientInstanceCapacity): the next cycle backs
    # the spot entry off and the on-demand entry takes the jobs.
    state = world(backoff=first.backoff,
                  outcomes=(LaunchFailed("spot", "capacity", "InsufficientInstanceCapacity"),))
    second = plan(state, c, T0 + 60)
    assert creates(second) == {"ondemand": 4}
    assert "capacity" in second.backoff["spot"].reason


@pytest.mark.parametrize("knobs, spot, ondemand, cap", [
    ({"MAX_INSTANCES": 3}, 3, 0, "CLOUD_PLUGINS_MAX_INSTANCES"),
    ({"MAX_CORES": 8}, 2, 0, "CLOUD_PLUGINS_MAX_CORES"),
    ({"BUDGET_PER_HOUR": "0.65", "SPOT_MAX_INSTANCES": 2}, 2, 1, "CLOUD_PLUGINS_BUDGET_PER_HOUR"),
])
def test_global_caps_are_never_exceeded_and_named(knobs, spot, ondemand, cap):
    p = plan(world(), cfg(**knobs), T0)
    assert creates(p) == {k: v for k, v in (("spot", spot), ("ondemand", ondemand)) if v}
    assert any(h.key == cap for h in holds(p).values())


def test_budget_counts_what_already_runs():
    records = booting(2, "ondemand")  # 0.8/h already spent
    c = cfg(BUDGET_PER_HOUR="1.0")
    assert spend_per_hour(records, c) == {"spot": 0.0, "ondemand": 0.8}
    assert global_limits(records, c).spend_per_hour == pytest.approx(0.2)
    assert creates(plan(world(records=records), c, T0)) == {"spot": 2}


def test_global_max_instances_is_also_the_entry_default():
    c = cfg(MAX_INSTANCES=7)
    assert c.max_instances == 7 and {e.max_instances for e in c.entries} == {7}
    assert cfg().max_instances is None  # unset: no cap over all entries


@pytest.mark.parametrize("knob, value", [("BUDGET_PER_HOUR", "cheap"), ("MAX_CORES", "1.5"),
                                         ("SPOT_COST_PER_HOUR", "-1")])
def test_bad_limit_names_the_knob(knob, value):
    with pytest.raises(ConfigError, match=f"CLOUD_PLUGINS_{knob}"):
        cfg(**{knob: value})


def test_old_per_entry_demand_is_still_per_entry():
    """Without ``jobs`` (as the one-entry tests build it) each entry's groups
    are its own."""
    from condor_plugins.provisioning.state import JobGroup
    state = ObservedState(listings={e: Listing(True) for e in BOTH},
                          demand={e: (JobGroup(8, 1, 1000),) for e in BOTH})
    assert creates(plan(state, cfg(), T0)) == {"spot": 2, "ondemand": 2}


# ---------------------------------------------------------------- churn brake

def _one(**knobs):
    param = {"CLOUD_PLUGINS_PROVIDERS": "e1", "CLOUD_PLUGINS_E1_TYPE": "local",
             "FULL_HOSTNAME": "cm", "CLOUD_PLUGINS_COLLECTOR_GRACE": "0",
             "CLOUD_PLUGINS_E1_IDLE_TIMEOUT": "600"}
    param.update({f"CLOUD_PLUGINS_E1_{k}": str(v) for k, v in knobs.items()})
    return config.load(param)


MISMATCH = {"e1": '2 idle job(s) (RequestCpus=1): needs OpSysAndVer == "AlmaLinux9"; '
                  'the node has OpSysAndVer = \'Debian13\''}


def _idle_world(busy=0, mismatch=MISMATCH, backoff=None, last_busy=None):
    from condor_plugins.provisioning.state import NodeInfo
    rec = InstanceRecord("a", "e1", Phase.IDLE, since=T0 - 700, created=T0 - 800,
                         joined=T0 - 700, last_busy=last_busy)
    listing = Listing(True, (Instance("a", "e1", InstanceState.RUNNING, launch_time=T0 - 800,
                                      tags={}),))
    return ObservedState(records={"a": rec}, listings={"e1": listing},
                         nodes={"a": NodeInfo("a", busy_slots=busy, idle_cpus=4 - busy,
                                              idle_memory_mb=8192)},
                         mismatch=mismatch, backoff=backoff or {})


def test_churn_brake_a_node_no_job_matched_is_a_failure_of_its_entry():
    p = plan(_idle_world(), _one(), T0)
    assert [a.instance_id for a in p.actions if a.__class__.__name__ == "Drain"] == ["a"]
    b = p.backoff["e1"]
    assert b.kind == "churn" and b.until > T0 and "started, but no job matched" in b.reason
    assert "OpSysAndVer" in b.reason


@pytest.mark.parametrize("world", [
    dict(mismatch={}),              # nothing waits that the node does not match: plain idle
    dict(last_busy=T0 - 650),       # it ran a job: it served its demand
])
def test_churn_brake_not_for_a_node_that_served_or_had_no_mismatch(world):
    p = plan(_idle_world(**world), _one(), T0)
    assert "e1" not in p.backoff


def test_churn_backoff_outlives_a_join_but_not_a_job():
    churn = {"e1": Backoff(1, T0 + 300, "a started, but no job matched", "churn")}
    from condor_plugins.provisioning.state import NodeInfo
    rec = InstanceRecord("b", "e1", Phase.BOOTING, since=T0 - 10, created=T0 - 10)
    joined = ObservedState(records={"b": rec}, backoff=churn, listings={"e1": Listing(True, (
        Instance("b", "e1", InstanceState.RUNNING, launch_time=T0 - 10, tags={}),))},
        nodes={"b": NodeInfo("b", idle_cpus=4, idle_memory_mb=8192)})
    assert plan(joined, _one(), T0).backoff["e1"].kind == "churn"
    assert "e1" not in plan(_idle_world(busy=1, backoff=churn), _one(), T0).backoff
