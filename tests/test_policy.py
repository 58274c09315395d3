"""condor_plugins.provisioning.policy: table-driven rule tests and hypothesis properties.

Pure: no daemons, no clock.  Times are plain numbers (seconds)."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from condor_plugins import config
from condor_plugins.provisioning.packing import nodes_needed
from condor_plugins.provisioning.policy import backoff_delay, evidence_wanted, fold_launches, plan
from condor_plugins.providers.base import Instance, InstanceState
from condor_plugins.provisioning.state import (Backoff, Create, Drain, Hold, InstanceRecord, JobGroup,
                                  Launched, LaunchFailed, Listing, NodeInfo, ObservedState,
                                  Phase, Terminate)

E = "e1"
T0 = 1_000_000.0


def cfg(**knobs):
    """A one-entry (or more) config; knobs without a prefix are per entry e1."""
    param = {"CLOUD_PLUGINS_PROVIDERS": E, "CLOUD_PLUGINS_E1_TYPE": "local",
             "FULL_HOSTNAME": "cm", "CLOUD_PLUGINS_COLLECTOR_GRACE": "0"}
    for key, value in knobs.items():
        name = key if key.startswith("CLOUD_PLUGINS_") else f"CLOUD_PLUGINS_E1_{key}"
        param[name] = str(value)
    return config.load(param)


def inst(iid, state=InstanceState.RUNNING, entry=E, reason=""):
    return Instance(iid, entry, state, launch_time=T0 - 50, tags={}, reason=reason)


def rec(iid, phase, since=T0, created=None, joined=None, last_busy=None, entry=E):
    if joined is None and phase in (Phase.IDLE, Phase.BUSY, Phase.DRAINING):
        joined = since
    return InstanceRecord(iid, entry, phase, since=since,
                          created=since if created is None else created,
                          joined=joined, last_busy=last_busy)


def node(iid, busy=0, idle_cpus=None, memory=None, draining=False, last_busy=None):
    return NodeInfo(iid, busy_slots=busy, idle_cpus=4 - busy if idle_cpus is None else idle_cpus,
                    idle_memory_mb=8192 if memory is None else memory, draining=draining,
                    last_busy=last_busy)


def observed(records=(), listed=(), nodes=(), jobs=0, cpus=1, memory=1000, **kw):
    """``listed`` None means the listing failed; ``jobs`` single-shape demand."""
    listings = {} if listed is None else {E: Listing(True, tuple(listed))}
    return ObservedState(records={r.id: r for r in records}, listings=listings,
                         nodes={n.instance_id: n for n in nodes},
                         demand={E: (JobGroup(jobs, cpus, memory),)} if jobs else {}, **kw)


def kinds(p, kind):
    return [a for a in p.actions if isinstance(a, kind)]


def creates(p):
    return sum(a.count for a in kinds(p, Create))


def destructive(p):
    return [a for a in p.actions if isinstance(a, (Drain, Terminate))]


# ---------------------------------------------------------------- packing

@pytest.mark.parametrize("groups, cpus, memory, free, expected", [
    ([JobGroup(8, 1, 1000)], 4, 8192, [], 2),                 # 8 single-core jobs, 4-core VMs
    ([JobGroup(8, 2, 1000)], 4, 8192, [], 4),
    ([JobGroup(3, 1, 6000)], 4, 8192, [], 3),                 # memory bound
    ([JobGroup(2, 3, 100), JobGroup(2, 1, 100)], 4, 8192, [], 2),  # small jobs fill the gaps
    ([JobGroup(5, 8, 100)], 4, 8192, [], 0),                  # fits no node: ignored
    ([JobGroup(8, 1, 1000)], 4, 8192, [(4, 8192)], 1),        # one node already booting
    ([JobGroup(8, 1, 1000)], 4, 8192, [(2, 8192), (2, 1000)], 2 - 0),  # 3 fit in free space
    ([JobGroup(100_000, 1, 2000)], 8, 16000, [], 12_500),
    ([JobGroup(0, 1, 1)], 4, 8192, [], 0),
    # A pilot with 600 s left takes 10-minute jobs, not 20-minute ones.
    ([JobGroup(4, 1, 1000, runtime=600)], 4, 8192, [(4, 8192, 600)], 0),
    ([JobGroup(4, 1, 1000, runtime=1200)], 4, 8192, [(4, 8192, 600)], 1),
    ([JobGroup(4, 1, 1000, runtime=1200)], 4, 8192, [(4, 8192)], 0),      # no limit
    ([JobGroup(2, 1, 1000, runtime=1200), JobGroup(2, 1, 1000)], 4, 8192,
     [(2, 8192, 600)], 1),    # the short jobs take the pilot, the long ones a new node
])
def test_packing(groups, cpus, memory, free, expected):
    assert nodes_needed(groups, cpus, memory, free) == expected


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 8), st.integers(0, 20000)),
                max_size=5),
       st.lists(st.tuples(st.integers(0, 8), st.integers(0, 16000)), max_size=4))
def test_packing_bounds(shapes, free):
    groups = [JobGroup(n, c, m) for n, c, m in shapes]
    got = nodes_needed(groups, 8, 16000, free)
    fitting = [g for g in groups if g.cpus <= 8 and g.memory_mb <= 16000]
    jobs = sum(g.count for g in fitting)
    assert got <= jobs
    if not free:   # lower bound: total cores and memory
        assert got * 8 >= sum(g.count * g.cpus for g in fitting)
        assert got * 16000 >= sum(g.count * g.memory_mb for g in fitting)
    assert nodes_needed(groups, 8, 16000, free, limit=2) == min(got, 2)


def test_packing_stops_at_the_limit():
    assert nodes_needed([JobGroup(10**9, 1, 1)], 4, 8192, limit=5) == 5


# ---------------------------------------------------------------- scale up

@pytest.mark.parametrize("knobs, records, jobs, expected", [
    ({"MAX_INSTANCES": 3, "MAX_BOOTING": 10}, [], 100, 3),                # cap
    ({"MAX_INSTANCES": 10, "MAX_BOOTING": 2}, [], 100, 2),                # max booting
    ({"MAX_INSTANCES": 10, "MAX_BOOTING": 2}, [rec("a", Phase.BOOTING)], 100, 1),
    ({"MAX_INSTANCES": 10, "MAX_BOOTING": 2}, [rec("a", Phase.REQUESTED)], 100, 1),
    ({"MAX_INSTANCES": 2, "MAX_BOOTING": 5},
     [rec("a", Phase.BUSY), rec("b", Phase.DRAINING)], 100, 0),          # every phase counts
    ({"MAX_INSTANCES": 10}, [], 8, 2),                                    # packing: 8 x 1 core
    ({"MAX_INSTANCES": 10}, [], 0, 0),                                    # no demand
    ({"MAX_INSTANCES": 0}, [], 5, 0),
    ({"MAX_INSTANCES": 10, "ENABLED": "false"}, [], 5, 0),
])
def test_scale_up(knobs, records, jobs, expected):
    listed = [inst(r.id) for r in records if r.phase is not Phase.REQUESTED]
    nodes = [node(r.id, busy=1) for r in records if r.phase in (Phase.BUSY, Phase.DRAINING)]
    p = plan(observed(records, listed, nodes, jobs=jobs), cfg(**knobs), T0)
    assert creates(p) == expected
    assert all(a.reason for a in p.actions)
    if expected == 0 and jobs:
        assert kinds(p, Hold)


def test_booting_and_idle_capacity_absorb_demand():
    records = [rec("a", Phase.BOOTING), rec("b", Phase.IDLE)]
    state = observed(records, [inst("a"), inst("b")], [node("b")], jobs=9)
    assert creates(plan(state, cfg(), T0 + 1)) == 1   # 4 + 4 free slots, 1 job left


def test_create_reason_explains_the_numbers():
    (action,) = kinds(plan(observed(jobs=8), cfg(), T0), Create)
    assert action == Create(E, 2, action.reason)
    assert "8 idle job(s)" in action.reason and "2 more node(s)" in action.reason


# ---------------------------------------------------------------- scale down

def run_cycles(state, c, times, observe):
    """Feed each plan's records and backoff into the next cycle."""
    plans = []
    for now in times:
        p = plan(replace(state, **observe(now)), c, now)
        plans.append(p)
        state = replace(state, records=p.records, backoff=p.backoff, outcomes=())
    return plans


def test_idle_timeout_drains_then_terminates():
    c = cfg(IDLE_TIMEOUT=300)
    state = observed([rec("a", Phase.IDLE, since=T0)], [inst("a")], [node("a")])
    p = plan(state, c, T0 + 299)
    assert not destructive(p) and p.records["a"].phase is Phase.IDLE
    p = plan(state, c, T0 + 300)
    assert kinds(p, Drain) == [Drain(E, "a", kinds(p, Drain)[0].reason)]
    assert p.records["a"].phase is Phase.DRAINING
    # next cycle the startd reports draining, no job: terminate
    p2 = plan(replace(state, records=p.records, nodes={"a": node("a", draining=True)}), c, T0 + 360)
    assert [a.instance_id for a in kinds(p2, Terminate)] == ["a"]
    assert not kinds(p2, Terminate)[0].failure
    assert p2.records["a"].phase is Phase.TERMINATING
    # then the provider stops listing it: gone, then forgotten
    p3 = plan(replace(state, records=p2.records, listings={E: Listing(True)}, nodes={}), c, T0 + 420)
    assert p3.records["a"].phase is Phase.GONE and not p3.actions
    p4 = plan(replace(state, records=p3.records, listings={E: Listing(True)}, nodes={}), c, T0 + 480)
    assert p4.records == {}


def test_idle_time_counts_from_the_last_busy_moment():
    c = cfg(IDLE_TIMEOUT=300)
    state = observed([rec("a", Phase.IDLE, since=T0, last_busy=T0 + 200)], [inst("a")],
                     [node("a", last_busy=T0 + 100)])
    assert not destructive(plan(state, c, T0 + 400))
    assert kinds(plan(state, c, T0 + 500), Drain)
    state = observed([rec("a", Phase.IDLE, since=T0)], [inst("a")], [node("a", last_busy=T0 + 250)])
    assert not destructive(plan(state, c, T0 + 500))


def test_drain_timeout_terminates_an_unclaimed_node_not_reporting_draining():
    c = cfg(DRAIN_TIMEOUT=600)
    state = observed([rec("a", Phase.DRAINING, since=T0)], [inst("a")], [node("a")])
    assert not destructive(plan(state, c, T0 + 599))
    assert kinds(plan(state, c, T0 + 600), Terminate)


@pytest.mark.parametrize("phase", [Phase.IDLE, Phase.BUSY, Phase.DRAINING, Phase.TERMINATING])
@pytest.mark.parametrize("draining", [False, True])
def test_busy_node_is_never_drained_or_terminated(phase, draining):
    c = cfg(IDLE_TIMEOUT=0, DRAIN_TIMEOUT=0)
    state = observed([rec("a", phase, since=T0 - 10_000)], [inst("a")],
                     [node("a", busy=2, draining=draining)])
    for now in (T0, T0 + 10**6):
        p = plan(state, c, now)
        assert not destructive(p)
        assert p.records["a"].phase in (phase, Phase.BUSY, Phase.DRAINING)


def test_busy_node_with_provider_error_is_not_terminated():
    state = observed([rec("a", Phase.BUSY)], [inst("a", InstanceState.ERROR)], [node("a", busy=1)])
    p = plan(state, cfg(), T0 + 1)
    assert not destructive(p) and kinds(p, Hold)


def test_joined_node_missing_from_collector_is_left_alone():
    c = cfg(IDLE_TIMEOUT=0, JOIN_TIMEOUT=10, DRAIN_TIMEOUT=0)
    for phase in (Phase.IDLE, Phase.BUSY, Phase.DRAINING):
        state = observed([rec("a", phase, since=T0)], [inst("a")], [])
        p = plan(state, c, T0 + 10**5)
        assert not destructive(p)
        assert p.records["a"].phase is phase and p.records["a"].missing_since == T0 + 10**5


def test_terminate_is_retried_while_still_listed_running():
    state = observed([rec("a", Phase.TERMINATING, since=T0)], [inst("a")], [])
    assert not destructive(plan(state, cfg(), T0))       # sent this cycle already
    p = plan(state, cfg(), T0 + 60)
    assert [a.instance_id for a in kinds(p, Terminate)] == ["a"]
    assert p.records["a"].phase is Phase.TERMINATING
    state = observed([rec("a", Phase.TERMINATING, since=T0)], [inst("a", InstanceState.STOPPING)])
    assert not destructive(plan(state, cfg(), T0 + 60))


def test_instance_stopping_by_itself_is_not_a_failure():
    state = observed([rec("a", Phase.IDLE)], [inst("a", InstanceState.STOPPING)], [])
    p = plan(state, cfg(), T0 + 5)
    assert p.records["a"].phase is Phase.TERMINATING and not p.actions and not p.backoff


# ---------------------------------------------------------------- failures, backoff

def test_join_timeout_terminates_and_counts_a_failure():
    c = cfg(JOIN_TIMEOUT=900, BACKOFF_INITIAL=120)
    state = observed([rec("a", Phase.BOOTING, since=T0)], [inst("a")], [], jobs=4)
    p = plan(state, c, T0 + 899)
    assert not destructive(p) and creates(p) == 0      # the booting node covers the demand
    p = plan(state, c, T0 + 900)
    (t,) = kinds(p, Terminate)
    assert t.failure and t.instance_id == "a" and "did not join" in t.reason
    assert p.records["a"].phase is Phase.FAILED
    assert p.backoff[E].failures == 1 and p.backoff[E].until == T0 + 900 + 120
    assert creates(p) == 0 and kinds(p, Hold)           # backing off, no replacement yet


def test_join_timeout_waits_for_a_restarted_collector():
    c = cfg(JOIN_TIMEOUT=900, CLOUD_PLUGINS_COLLECTOR_GRACE=600)
    state = observed([rec("a", Phase.BOOTING, since=T0)], [inst("a")], [],
                     collector_started=T0 + 1000)
    assert not destructive(plan(state, c, T0 + 1500))
    assert kinds(plan(state, c, T0 + 1600), Terminate)


def test_requested_instance_never_listed_times_out_as_failure():
    c = cfg(REQUEST_TIMEOUT=300)
    state = observed([rec("a", Phase.REQUESTED, since=T0)], [], [])
    assert plan(state, c, T0 + 299).records["a"].phase is Phase.REQUESTED
    p = plan(state, c, T0 + 300)
    assert kinds(p, Terminate)[0].failure and p.backoff[E].failures == 1


@pytest.mark.parametrize("state, reason", [
    (InstanceState.ERROR, "provider reports an error: boot failed"),
    (InstanceState.TERMINATED, None),
])
def test_instance_dying_before_join_is_a_failure(state, reason):
    s = observed([rec("a", Phase.BOOTING)], [inst("a", state, reason="boot failed")], [])
    p = plan(s, cfg(), T0 + 1)
    assert p.backoff[E].failures == 1
    if reason:
        assert kinds(p, Terminate)[0].reason == reason and p.records["a"].phase is Phase.FAILED
    else:
        assert p.records["a"].phase is Phase.GONE


@pytest.mark.parametrize("state", [InstanceState.TERMINATED, InstanceState.STOPPED,
                                   InstanceState.ERROR, None])
@pytest.mark.parametrize("evidence, ok, counted", [
    ({"a": "3 job(s) ran there (schedd queue or history)"}, True, False),
    ({}, False, False),   # the history query failed: unknown, not counted
    ({}, True, True),     # no trace of it in the pool: a boot failure
])
def test_gone_before_joined_is_a_failure_only_without_evidence_that_it_joined(
        state, evidence, ok, counted):
    """Issue 13: a provisioner killed before it saved a join must not count
    a node that ran jobs as a boot failure (the collector's and the schedds'
    history decide, not only the record's phase)."""
    phase = Phase.REQUESTED if state is None else Phase.BOOTING
    records = [rec("a", phase, since=T0 - 10_000)]
    listed = [] if state is None else [inst("a", state)]
    assert evidence_wanted({"a": records[0]}, {E: Listing(True, tuple(listed))}) == ["a"]
    p = plan(observed(records, listed, [], join_evidence=evidence, evidence_ok=ok), cfg(), T0)
    assert bool(p.backoff) is counted
    assert all(t.failure is counted for t in kinds(p, Terminate))
    if state is InstanceState.TERMINATED and not counted:
        assert "not a failure" in p.records["a"].reason


def test_evidence_is_wanted_only_for_records_that_would_count_as_failures():
    records = {"run": rec("run", Phase.BOOTING), "idle": rec("idle", Phase.IDLE),
               "gone": rec("gone", Phase.BOOTING), "other": rec("other", Phase.BOOTING,
                                                                 entry="e2")}
    listings = {E: Listing(True, (inst("run"), inst("idle", InstanceState.TERMINATED)))}
    assert evidence_wanted(records, listings) == ["gone"]   # e2's listing was not read


@pytest.mark.parametrize("kind", ["capacity", "quota", "auth", "transient"])
def test_launch_errors_back_off(kind):
    state = observed(jobs=4, outcomes=(LaunchFailed(E, kind, "no luck"),))
    p = plan(state, cfg(), T0)
    assert p.backoff[E].failures == 1 and kind in p.backoff[E].reason
    assert creates(p) == 0


def test_backoff_grows_is_capped_and_resets_on_join():
    c = cfg(BACKOFF_INITIAL=100, BACKOFF_FACTOR=2, BACKOFF_MAX=1000)
    e = c.entry(E)
    assert [backoff_delay(e, n) for n in range(1, 7)] == [100, 200, 400, 800, 1000, 1000]
    assert backoff_delay(e, 10**6) == 1000
    b = Backoff()
    now = T0
    for n in range(1, 7):   # one failure per cycle, each after the previous pause
        state = observed(jobs=4, backoff={E: b}, outcomes=(LaunchFailed(E, "capacity", "full"),))
        p = plan(state, c, now)
        b = p.backoff[E]
        assert b.failures == n and b.until - now == backoff_delay(e, n)
        now = b.until
    # pause over: probe with exactly one instance, even though 4 are wanted
    p = plan(observed(jobs=40, backoff={E: b}), c, now)
    assert kinds(p, Create) == [Create(E, 1, kinds(p, Create)[0].reason)]
    assert "probing" in kinds(p, Create)[0].reason
    # while the probe boots, nothing more is started
    probe = rec("p", Phase.BOOTING, since=now)
    p = plan(observed([probe], [inst("p")], [], jobs=40, backoff={E: b}), c, now + 10)
    assert creates(p) == 0 and "probe" in kinds(p, Hold)[0].reason
    # the probe joins: backoff is reset and scale-up resumes at full speed
    p = plan(observed([probe], [inst("p")], [node("p")], jobs=40, backoff={E: b}), c, now + 20)
    assert E not in p.backoff and creates(p) == 4


def test_many_failures_in_one_cycle_count_once():
    records = [rec(f"i{n}", Phase.BOOTING, since=T0) for n in range(5)]
    p = plan(observed(records, [inst(r.id) for r in records], []), cfg(JOIN_TIMEOUT=10), T0 + 10)
    assert len(kinds(p, Terminate)) == 5 and p.backoff[E].failures == 1
    assert "(+4 more)" in p.backoff[E].reason


# ---------------------------------------------------------------- failed observations

def busy_world():
    """A state in which every destructive rule fires if observations are trusted."""
    records = [rec("idle", Phase.IDLE, since=T0 - 10_000),
               rec("drained", Phase.DRAINING, since=T0 - 10_000),
               rec("late", Phase.BOOTING, since=T0 - 10_000),
               rec("lost", Phase.REQUESTED, since=T0 - 10_000),
               rec("gone", Phase.TERMINATING, since=T0 - 10_000)]
    listed = [inst("idle"), inst("drained"), inst("late")]
    nodes = [node("idle"), node("drained", draining=True)]
    return observed(records, listed, nodes, jobs=50)


def test_trusted_world_fires_every_rule():
    p = plan(busy_world(), cfg(), T0)
    assert {a.instance_id for a in destructive(p)} == {"idle", "drained", "late", "lost"}
    assert p.records["gone"].phase is Phase.GONE


def test_failed_listing_holds_only_its_entry():
    for listings in ({}, {E: Listing(False)}):
        state = replace(busy_world(), listings=listings)
        p = plan(state, cfg(), T0)
        assert not destructive(p) and not kinds(p, Create)
        assert "observation failed" in kinds(p, Hold)[0].reason
        assert dict(p.records) == dict(state.records)     # kept unchanged, nothing forgotten


def test_failed_schedd_query_holds_only_what_depends_on_demand():
    """Partial failure (one of two schedds down for many cycles): the
    never-joined instance still goes at JOIN_TIMEOUT, the drained node is
    terminated, busy nodes are untouched, the idle node waits (demand unknown)."""
    state = replace(busy_world(), demand_ok=False)
    state = replace(state, records=dict(state.records, busy=rec("busy", Phase.BUSY, T0 - 9000),
                                        idle=rec("idle", Phase.IDLE, since=T0 - 1000)),
                    listings={E: Listing(True, state.listings[E].instances + (inst("busy"),))},
                    nodes=dict(state.nodes, busy=node("busy", busy=2)))
    p = plan(state, cfg(), T0)
    assert {a.instance_id for a in destructive(p)} == {"drained", "late", "lost"}
    assert "demand is unknown" in p.records["idle"].reason
    assert p.records["busy"].phase is Phase.BUSY
    # the schedds that answered still count (a lower bound)
    assert creates(plan(observed(jobs=8, demand_ok=False), cfg(), T0)) == 2
    # 3x IDLE_TIMEOUT later the idle node goes, demand or not
    assert kinds(plan(state, cfg(IDLE_TIMEOUT=100), T0), Drain)


def test_failed_collector_query_holds_what_depends_on_the_collector():
    state = replace(busy_world(), nodes_ok=False)
    state = replace(state, records=dict(state.records, stop=rec("stop", Phase.IDLE, T0 - 50),
                                        err=rec("err", Phase.BOOTING, T0 - 50)),
                    listings={E: Listing(True, state.listings[E].instances + (
                        inst("stop", InstanceState.STOPPED), inst("err", InstanceState.ERROR)))})
    p = plan(state, cfg(), T0)
    assert {a.instance_id for a in destructive(p)} == {"lost", "stop", "err"}
    assert not kinds(p, Create) and set(state.records) <= set(p.records)


def test_gone_records_are_dropped_only_after_their_listing_was_read():
    state = observed([rec("a", Phase.GONE)], None, [])
    assert "a" in plan(state, cfg(), T0).records
    assert "a" not in plan(observed([rec("a", Phase.GONE)], [], [], nodes_ok=False),
                           cfg(), T0).records


def test_one_entry_listing_failure_does_not_hold_another_entry():
    c = config.load({"CLOUD_PLUGINS_PROVIDERS": "e1 e2", "CLOUD_PLUGINS_E1_TYPE": "local",
                     "CLOUD_PLUGINS_E2_TYPE": "local", "FULL_HOSTNAME": "cm",
                     "CLOUD_PLUGINS_COLLECTOR_GRACE": "0"})
    records = {"a": rec("a", Phase.BOOTING, T0 - 5000), "b": rec("b", Phase.BOOTING, T0 - 5000,
                                                                  entry="e2")}
    state = ObservedState(records=records, listings={"e1": Listing(False), "e2": Listing(
        True, (inst("b", entry="e2"),))}, demand={"e1": (JobGroup(40),), "e2": (JobGroup(40),)})
    p = plan(state, c, T0)
    assert [a.instance_id for a in destructive(p)] == ["b"] and p.records["a"] == records["a"]
    p = plan(replace(state, records={"a": records["a"]}, listings={
        "e1": Listing(False), "e2": Listing(True)}), c, T0)
    assert [a.entry for a in kinds(p, Create)] == ["e2"]
    assert "listing failed" in [h.reason for h in kinds(p, Hold) if h.entry == "e1"][0]


# ---------------------------------------------------------------- stopped and lost

@pytest.mark.parametrize("phase, failure", [(Phase.IDLE, False), (Phase.BUSY, False),
                                            (Phase.DRAINING, False), (Phase.BOOTING, True)])
def test_stopped_instance_is_terminated_at_once(phase, failure):
    """SHUTOFF / stopped: no 'joined but absent' guard, even with the collector
    down or a stale busy ad; a boot failure only if it never joined."""
    r = rec("s", phase, since=T0 - 100)
    listed = [inst("s", InstanceState.STOPPED, reason="Nova status SHUTOFF")]
    for nodes, ok in (([], True), ([], False), ([node("s", busy=1)], True)):
        p = plan(observed([r], listed, nodes, nodes_ok=ok), cfg(), T0)
        [t] = kinds(p, Terminate)
        assert t.stopped and t.failure is failure and "SHUTOFF" in t.reason
        assert bool(p.backoff) is failure


def test_stopped_instance_frees_its_slot_and_retries_without_a_second_failure():
    c = cfg(MAX_INSTANCES=1)
    r = rec("s", Phase.IDLE, since=T0 - 100)
    stopped = [inst("s", InstanceState.STOPPED)]
    p1 = plan(observed([r], stopped, [], jobs=4), c, T0)
    assert kinds(p1, Terminate) and not kinds(p1, Create)
    p2 = plan(observed(list(p1.records.values()), stopped, [], jobs=4), c, T0 + 60)
    assert kinds(p2, Terminate) and not p2.backoff               # retried, not counted
    p3 = plan(observed(list(p2.records.values()), [], [], jobs=4), c, T0 + 120)
    assert p3.records["s"].phase is Phase.GONE and creates(p3) == 1    # bursts again


def lost_world(running=None, demand_ok=True, absent=4000, startd="s.node"):
    r = replace(rec("l", Phase.BUSY, since=T0 - 9000), missing_since=T0 - absent,
                startd=startd)
    others = [rec("b", Phase.BUSY, since=T0 - 9000), rec("i", Phase.IDLE, since=T0 - 10)]
    return observed([r, *others], [inst("l"), inst("b"), inst("i")],
                    [node("b", busy=2), node("i")], running=running or {}, demand_ok=demand_ok)


def test_lost_node_is_terminated_after_lost_timeout_and_nothing_else_is_touched():
    p = plan(lost_world(), cfg(LOST_TIMEOUT=3000), T0)
    [t] = destructive(p)
    assert t.instance_id == "l" and t.lost and not t.failure and "LOST_TIMEOUT" in t.reason
    assert not p.backoff


@pytest.mark.parametrize("world, why", [
    (dict(absent=1000), "not in the collector for 1000s"),
    (dict(running={"s.node": 1}), "1 job(s) running there"),
    (dict(demand_ok=False), "not in the collector"),
    (dict(startd=""), "not in the collector")])
def test_lost_node_is_kept_while_it_may_run_jobs(world, why):
    p = plan(lost_world(**world), cfg(LOST_TIMEOUT=3000), T0)
    assert not destructive(p) and why in p.records["l"].reason


def test_lost_rule_waits_for_the_collector_grace():
    state = replace(lost_world(), collector_started=T0 - 10)
    assert not destructive(plan(state, cfg(LOST_TIMEOUT=3000,
                                           CLOUD_PLUGINS_COLLECTOR_GRACE=600), T0))


# ---------------------------------------------------------------- restart safety

def test_adoption_after_restart_without_duplicates():
    # records lost; the provider lists 2 of ours, one has joined; demand wants 3 nodes
    c = cfg(MAX_INSTANCES=3)
    listed = [inst("a"), inst("b"), inst("x", InstanceState.TERMINATED),
              inst("other", entry="e9")]
    p = plan(observed([], listed, [node("a", busy=4, idle_cpus=0)], jobs=12), c, T0)
    assert set(p.records) == {"a", "b"}
    assert p.records["a"].phase is Phase.BUSY and p.records["b"].phase is Phase.BOOTING
    assert "adopted" in p.records["b"].reason
    assert creates(p) == 1                               # 3 cap - 2 adopted
    assert not destructive(p)


def test_adopted_booting_instance_gets_a_full_join_timeout():
    c = cfg(JOIN_TIMEOUT=900)
    p = plan(observed([], [inst("b")], []), c, T0)
    assert not destructive(p)
    p = plan(observed(list(p.records.values()), [inst("b")], []), c, T0 + 900)
    assert kinds(p, Terminate)


def test_no_double_provision_while_requested_instances_are_not_listed():
    c = cfg(MAX_INSTANCES=10, MAX_BOOTING=10, REQUEST_TIMEOUT=300)
    p1 = plan(observed(jobs=8), c, T0)
    assert creates(p1) == 2
    launched = (Launched(E, (inst("n1", InstanceState.PENDING), inst("n2", InstanceState.PENDING))),)
    # the cloud's listing lags: the new instances are not listed yet
    p2 = plan(observed(jobs=8, outcomes=launched), c, T0 + 60)
    assert creates(p2) == 0
    assert {r: p2.records[r].phase for r in p2.records} == {"n1": Phase.REQUESTED,
                                                            "n2": Phase.REQUESTED}
    # the outcome delivered twice (shell persisted early) changes nothing
    p3 = plan(observed(list(p2.records.values()), jobs=8, outcomes=launched), c, T0 + 120)
    assert creates(p3) == 0 and p3.records == p2.records
    # once listed they are booting, still no duplicate
    p4 = plan(observed(list(p3.records.values()), [inst("n1"), inst("n2")], [], jobs=8), c, T0 + 180)
    assert creates(p4) == 0 and {r.phase for r in p4.records.values()} == {Phase.BOOTING}


def test_fold_launches_is_idempotent():
    launched = [Launched(E, (inst("n1"),))]
    once = fold_launches({}, launched, T0)
    assert fold_launches(once, launched, T0 + 5) == once
    assert once["n1"].phase is Phase.REQUESTED


def test_unconfigured_entry_records_are_kept_reported_and_retired_by_pulling():
    """Issue 13: an instance whose entry left the config is never forgotten or
    terminated (nothing can list it), is reported every cycle, and a joined one
    is retired by pulling (DRAINING puts it in the ad's CloudRetireRequests)."""
    r = rec("z", Phase.IDLE, entry="removed")
    p = plan(observed([r], [], []), cfg(IDLE_TIMEOUT=0), T0 + 10**6)
    assert not destructive(p)
    assert p.records["z"].phase is Phase.DRAINING and "no longer configured" in p.records["z"].reason
    held = [a for a in p.actions if isinstance(a, Hold) and "z belongs to entry removed" in a.reason]
    assert held and held[0].key == "unconfigured z"
    again = plan(observed(list(p.records.values()), [], []), cfg(), T0 + 10**6 + 60)
    assert again.records["z"] == p.records["z"]
    assert any(isinstance(a, Hold) and a.key == "unconfigured z" for a in again.actions)


def test_admin_retire_and_terminate_requests():
    """condor_cloud retire drains even a busy node (gracefully, by pulling);
    terminate refuses a busy node unless forced."""
    busy, idle, busy2 = rec("b", Phase.BUSY), rec("i", Phase.IDLE), rec("f", Phase.BUSY)
    listed = [inst("b"), inst("i"), inst("f")]
    nodes = [node("b", busy=1), node("i"), node("f", busy=1)]
    state = replace(observed([busy, idle, busy2], listed, nodes),
                    requests={"b": ("retire", "retire asked by root", False),
                              "i": ("terminate", "terminate asked by root", False),
                              "f": ("terminate", "terminate asked by root", False)})
    p = plan(state, cfg(IDLE_TIMEOUT=3600), T0 + 10)
    assert p.records["b"].phase is Phase.DRAINING and Drain(E, "b", "retire asked by root") in p.actions
    assert p.records["i"].phase is Phase.TERMINATING
    assert p.records["f"].phase is Phase.BUSY  # busy: held, not terminated
    assert any(isinstance(a, Hold) and a.key == "terminate f" for a in p.actions)
    forced = replace(state, requests={"f": ("terminate", "terminate asked by root", True)})
    p = plan(forced, cfg(IDLE_TIMEOUT=3600), T0 + 10)
    assert p.records["f"].phase is Phase.TERMINATING
    assert any(isinstance(a, Terminate) and a.instance_id == "f" for a in p.actions)


# ---------------------------------------------------------------- properties

ENTRIES = ("e1", "e2")
PHASES = list(Phase)
STATES = list(InstanceState)


@st.composite
def worlds(draw):
    param = {"CLOUD_PLUGINS_PROVIDERS": " ".join(ENTRIES), "FULL_HOSTNAME": "cm",
             "CLOUD_PLUGINS_COLLECTOR_GRACE": str(draw(st.sampled_from([0, 600])))}
    for e in ENTRIES:
        up = e.upper()
        param[f"CLOUD_PLUGINS_{up}_TYPE"] = "local"
        param[f"CLOUD_PLUGINS_{up}_MAX_INSTANCES"] = str(draw(st.integers(0, 6)))
        param[f"CLOUD_PLUGINS_{up}_MAX_BOOTING"] = str(draw(st.integers(0, 4)))
        for knob in ("IDLE_TIMEOUT", "DRAIN_TIMEOUT"):
            param[f"CLOUD_PLUGINS_{up}_{knob}"] = str(draw(st.sampled_from([0, 100, 1000])))
        param[f"CLOUD_PLUGINS_{up}_JOIN_TIMEOUT"] = str(draw(st.sampled_from([1, 100, 1000])))
        param[f"CLOUD_PLUGINS_{up}_LOST_TIMEOUT"] = str(draw(st.sampled_from([60, 1000])))
    c = config.load(param)
    now = T0
    times = st.floats(T0 - 5000, T0)
    records, listings, nodes, backoff, demand, outcomes = {}, {}, {}, {}, {}, []
    for e in ENTRIES:
        ids = [f"{e}-{n}" for n in range(draw(st.integers(0, 6)))]
        listed = []
        for iid in ids:
            if draw(st.booleans()):
                since = draw(times)
                joined = draw(st.one_of(st.none(), times))
                records[iid] = InstanceRecord(iid, e, draw(st.sampled_from(PHASES)), since=since,
                                              created=since, joined=joined,
                                              last_busy=draw(st.one_of(st.none(), times)),
                                              missing_since=draw(st.one_of(st.none(), times)),
                                              startd=draw(st.sampled_from(["", f"h-{iid}"])))
            if draw(st.booleans()):
                listed.append(Instance(iid, e, draw(st.sampled_from(STATES))))
            if draw(st.booleans()):
                busy = draw(st.integers(0, 3))
                nodes[iid] = NodeInfo(iid, busy, draw(st.integers(0, 4)), 4096,
                                      draw(st.booleans()), draw(st.one_of(st.none(), times)))
        listings[e] = Listing(draw(st.booleans()) or draw(st.booleans()), tuple(listed))
        if draw(st.booleans()):
            listings.pop(e)
        demand[e] = tuple(JobGroup(draw(st.integers(0, 40)), draw(st.integers(1, 6)),
                                   draw(st.integers(0, 9000)))
                          for _ in range(draw(st.integers(0, 3))))
        if draw(st.booleans()):
            backoff[e] = Backoff(draw(st.integers(1, 5)), draw(st.floats(T0 - 100, T0 + 100)), "x")
        if draw(st.booleans()):
            outcomes.append(LaunchFailed(e, "capacity", "full"))
    running = {f"h-{i}": draw(st.integers(0, 2)) for i in records if draw(st.booleans())}
    state = ObservedState(records=records, backoff=backoff, demand=demand, running=running,
                          demand_ok=draw(st.booleans()) or draw(st.booleans()),
                          listings=listings, nodes=nodes,
                          nodes_ok=draw(st.booleans()) or draw(st.booleans()),
                          collector_started=draw(st.one_of(st.none(), times)),
                          outcomes=tuple(outcomes))
    return state, c, now


@settings(max_examples=400, deadline=None, database=None)
@given(worlds())
def test_property_safety_limits_and_determinism(world):
    state, c, now = world
    p = plan(state, c, now)
    # (a) never drain or terminate an instance that runs a job (unless the
    #     cloud lists it as stopped: the collector's ad is stale)
    for a in destructive(p):
        n = state.nodes.get(a.instance_id)
        assert getattr(a, "stopped", False) or not (
            state.nodes_ok and n is not None and n.busy_slots > 0), a
    # (b) never start more than MAX_INSTANCES (or MAX_BOOTING) per entry
    for e in c.entries:
        new = sum(a.count for a in kinds(p, Create) if a.entry == e.name)
        if new:
            active = [r for r in p.records.values()
                      if r.entry == e.name and r.phase is not Phase.GONE]
            booting = [r for r in active if r.phase in (Phase.REQUESTED, Phase.BOOTING)]
            assert len(active) + new <= e.max_instances
            assert len(booting) + new <= e.max_booting
    # (c) each failed observation holds exactly what depends on it (policy.py's table)
    for e in c.entries:
        if not state.listings.get(e.name, Listing(False)).ok:       # row: entry listing
            assert not [a for a in p.actions if isinstance(a, (Create, Drain, Terminate))
                        and a.entry == e.name]
            assert all(p.records[i] == r for i, r in state.records.items() if r.entry == e.name)
    if not state.nodes_ok:                                            # row: collector
        assert not kinds(p, Create) and not kinds(p, Drain)
        for a in kinds(p, Terminate):
            r = state.records.get(a.instance_id)
            assert a.stopped or r is None or r.joined is None or r.phase in (
                Phase.TERMINATING, Phase.FAILED)
            assert not a.lost
    if not state.demand_ok:                                           # row: schedd
        assert not [a for a in kinds(p, Terminate) if a.lost]
    # a lost node: absent from a healthy collector past LOST_TIMEOUT, no job there
    for a in kinds(p, Terminate):
        if a.lost:
            r = state.records[a.instance_id]
            assert state.nodes_ok and a.instance_id not in state.nodes
            assert r.startd and not state.running.get(r.startd)
    # never a guarded joined node the collector does not show
    for a in destructive(p):
        r = state.records.get(a.instance_id)
        if r and r.joined is not None and a.instance_id not in state.nodes and not (
                getattr(a, "stopped", False) or getattr(a, "lost", False)):
            assert r.phase in (Phase.TERMINATING, Phase.FAILED), a
    # nothing is forgotten unless its listing was read
    for i, r in state.records.items():
        if i not in p.records:
            assert state.listings.get(r.entry, Listing(False)).ok
    # every action explains itself
    assert all(a.reason for a in p.actions)
    # (d) deterministic, whatever the order of the inputs
    shuffled = replace(state, records=dict(reversed(list(state.records.items()))),
                       nodes=dict(reversed(list(state.nodes.items()))))
    assert plan(shuffled, c, now) == p
    assert plan(state, c, now) == p


def test_idle_node_with_fitting_idle_jobs_waits_for_the_negotiator():
    """No churn: an idle node whose free cores fit waiting jobs is kept for up to
    3x IDLE_TIMEOUT, then drained anyway (jobs that never match cannot pin it)."""
    c = cfg(IDLE_TIMEOUT=100, MAX_INSTANCES=1)
    state = observed([rec("a", Phase.IDLE, since=T0)], [inst("a")], [node("a")], jobs=3, cpus=1)
    p = plan(state, c, T0 + 150)
    assert not destructive(p) and "fit here" in p.records["a"].reason
    assert kinds(plan(state, c, T0 + 300), Drain)
    # jobs too big for the node's free resources do not hold it
    big = observed([rec("a", Phase.IDLE, since=T0)], [inst("a")], [node("a")], jobs=3, cpus=8)
    assert kinds(plan(big, c, T0 + 150), Drain)


# ---------------------------------------------------------------- batch queues (slurm)

def queued_state(records, listed, nodes=(), jobs=0, **kw):
    """Like ``observed``, with the listing of a batch-queue provider."""
    state = observed(records, listed, nodes, jobs=jobs, **kw)
    return replace(state, listings={E: Listing(True, tuple(listed), queued=True)})


def pilot(iid, state=InstanceState.PENDING, launched=T0, reason=""):
    return Instance(iid, E, state, launch_time=launched, tags={}, reason=reason)


def test_a_queued_pilot_is_booting_capacity_and_no_failure_before_pending_timeout():
    c = cfg(JOIN_TIMEOUT=900, PENDING_TIMEOUT=7200, CPUS=4, MEMORY=8192)
    state = queued_state([rec("p", Phase.BOOTING, since=T0)],
                         [pilot("p", reason="PartitionDown")], jobs=4)
    p = plan(state, c, T0 + 7199)                     # far beyond JOIN_TIMEOUT
    assert not destructive(p) and creates(p) == 0     # it still covers the 4 jobs
    assert p.records["p"].reason.startswith("queued (PartitionDown)")
    p = plan(state, c, T0 + 7200)
    (t,) = kinds(p, Terminate)
    assert t.failure and "PENDING_TIMEOUT" in t.reason and "PartitionDown" in t.reason
    assert p.backoff[E].failures == 1


def test_join_timeout_of_a_pilot_counts_from_its_start():
    c = cfg(JOIN_TIMEOUT=900, CPUS=4, MEMORY=8192)
    started = T0 + 5000
    state = queued_state([rec("p", Phase.BOOTING, since=T0)],
                         [pilot("p", InstanceState.RUNNING, launched=started)], jobs=4)
    assert not destructive(plan(state, c, started + 899))
    (t,) = kinds(plan(state, c, started + 900), Terminate)
    assert t.failure and "of its start" in t.reason


def test_cloud_listings_keep_join_timeout_from_the_request():
    c = cfg(JOIN_TIMEOUT=900)
    state = observed([rec("a", Phase.BOOTING, since=T0)], [inst("a", InstanceState.PENDING)])
    assert kinds(plan(state, c, T0 + 900), Terminate)


def test_queued_pilots_the_demand_no_longer_needs_are_cancelled_newest_first():
    c = cfg(CPUS=4, MEMORY=8192, MAX_INSTANCES=10, MAX_BOOTING=10)
    records = [rec(f"p{i}", Phase.BOOTING, since=T0 + i) for i in range(4)]
    listed = [pilot(f"p{i}") for i in range(4)]
    p = plan(queued_state(records, listed, jobs=5), c, T0 + 10)   # 5 jobs: 2 pilots
    cancelled = sorted(t.instance_id for t in kinds(p, Terminate))
    assert cancelled == ["p2", "p3"] and not any(t.failure for t in kinds(p, Terminate))
    assert "need 2 of the 4 queued" in kinds(p, Terminate)[0].reason
    p = plan(queued_state(records, listed), c, T0 + 10)           # no demand: all go
    assert len(kinds(p, Terminate)) == 4


def test_a_started_pilot_is_never_cancelled_for_want_of_demand():
    c = cfg(CPUS=4, MEMORY=8192, IDLE_TIMEOUT=600)
    state = queued_state([rec("p", Phase.BOOTING, since=T0)],
                         [pilot("p", InstanceState.RUNNING, launched=T0 + 5)])
    assert not destructive(plan(state, c, T0 + 10))


def test_queued_pilots_are_kept_while_the_demand_is_unknown():
    c = cfg(CPUS=4, MEMORY=8192)
    state = queued_state([rec("p", Phase.BOOTING, since=T0)], [pilot("p")], demand_ok=False)
    p = plan(state, c, T0 + 10)
    assert not destructive(p)
    assert any("not cancelling queued" in h.reason for h in kinds(p, Hold))


def test_joined_free_capacity_absorbs_demand_before_queued_pilots():
    c = cfg(CPUS=4, MEMORY=8192)
    records = [rec("n", Phase.IDLE, since=T0), rec("p", Phase.BOOTING, since=T0)]
    listed = [pilot("n", InstanceState.RUNNING), pilot("p")]
    state = queued_state(records, listed, nodes=[node("n")], jobs=3)   # 3 jobs fit on n
    (t,) = kinds(plan(state, c, T0 + 10), Terminate)
    assert t.instance_id == "p"


def test_a_joined_pilot_near_its_end_serves_only_the_jobs_that_end_before_it_retires():
    c = cfg(CPUS=4, MEMORY=8192, IDLE_TIMEOUT=86400)
    near = NodeInfo("n", idle_cpus=4, idle_memory_mb=8192, retire_time=T0 + 600)
    records = [rec("n", Phase.IDLE, since=T0 - 3000)]
    listed = [pilot("n", InstanceState.RUNNING, launched=T0 - 3000)]

    def state(runtime, count=4):
        s = queued_state(records, listed, nodes=[near])
        return replace(s, demand={E: (JobGroup(count, 1, 1000, runtime),)})
    assert creates(plan(state(300), c, T0)) == 0      # 4 short jobs: the pilot takes them
    p = plan(state(1800), c, T0)                      # 30-min jobs: it retires before
    assert creates(p) == 1 and not destructive(p)
    assert ("1 joined node(s) retire before the longest of these jobs (1800s) would end"
            in kinds(p, Create)[0].reason)
    assert creates(plan(state(1800), c, T0 - 1800)) == 0   # half an hour earlier it could
    # A queued pilot for the long jobs is not cancelled for the old pilot's cores.
    records2 = records + [rec("q", Phase.BOOTING, since=T0)]
    listed2 = listed + [pilot("q")]
    s = replace(queued_state(records2, listed2, nodes=[near]),
                demand={E: (JobGroup(4, 1, 1000, 1800),)})
    p = plan(s, c, T0 + 10)
    assert not destructive(p) and creates(p) == 0
    s = replace(s, demand={E: (JobGroup(4, 1, 1000, 300),)})
    (t,) = kinds(plan(s, c, T0 + 10), Terminate)      # short jobs: the old pilot suffices
    assert t.instance_id == "q"


def test_jobs_too_long_for_an_idle_pilot_do_not_keep_it_from_retiring():
    c = cfg(CPUS=4, MEMORY=8192, IDLE_TIMEOUT=60)
    near = NodeInfo("n", idle_cpus=4, idle_memory_mb=8192, retire_time=T0 + 600)
    s = replace(queued_state([rec("n", Phase.IDLE, since=T0 - 100)],
                             [pilot("n", InstanceState.RUNNING, launched=T0 - 3000)],
                             nodes=[near]), demand={E: (JobGroup(4, 1, 1000, 1800),)})
    p = plan(s, c, T0)
    assert [a.instance_id for a in kinds(p, Drain)] == ["n"]
    s = replace(s, demand={E: (JobGroup(4, 1, 1000, 300),)})   # these fit: it waits
    assert not destructive(plan(s, c, T0))


def test_a_queued_pilot_is_not_cancelled_for_a_create_still_in_flight():
    """A pilot requested but not listed yet is probably queued too: the older
    queued pilot, further ahead in the queue, is kept for the jobs."""
    c = cfg(CPUS=4, MEMORY=8192)
    records = [rec("p", Phase.BOOTING, since=T0 - 60), rec("r", Phase.REQUESTED, since=T0)]
    p = plan(queued_state(records, [pilot("p", launched=T0 - 60)], jobs=4), c, T0 + 5)
    assert not destructive(p)


def test_a_pilot_past_its_retire_time_is_no_capacity():
    c = cfg(CPUS=4, MEMORY=8192, IDLE_TIMEOUT=86400)
    late = NodeInfo("n", idle_cpus=4, idle_memory_mb=8192, retire_time=T0 - 1)
    s = queued_state([rec("n", Phase.IDLE, since=T0 - 100)],
                     [pilot("n", InstanceState.RUNNING, launched=T0 - 3000)], nodes=[late],
                     jobs=4)                  # runtime 0: no runtime known
    assert creates(plan(s, c, T0)) == 1
