"""condor_plugins.provisioning.allocation: hypothesis properties and worked cases."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from condor_plugins.provisioning.allocation import Demand, Limits, Offer, allocate
from condor_plugins.provisioning.packing import nodes_needed, per_node
from condor_plugins.provisioning.state import JobGroup

NAMES = ("a", "b", "c", "d")

shapes = st.tuples(st.integers(1, 8), st.sampled_from([0, 1000, 2000, 4000, 16000]))
#: Seconds a job runs (0: not known), and a joined pilot's seconds left.
RUNTIMES = st.sampled_from([0, 0, 300, 500, 1000])
demands = st.lists(st.builds(lambda n, s, e, r: Demand(n, s[0], s[1], tuple(sorted(e)), r),
                             st.integers(0, 40), shapes,
                             st.sets(st.sampled_from(NAMES), min_size=1, max_size=4),
                             RUNTIMES),
                   max_size=6)


def capacities(cpus):
    """Free capacities, some of pilots that retire in a while."""
    plain = st.tuples(st.integers(0, cpus), st.integers(0, 16000))
    timed = st.tuples(st.integers(0, cpus), st.integers(0, 16000), st.sampled_from([100, 300,
                                                                                     1000]))
    return st.lists(plain | timed, max_size=3)


@st.composite
def offers(draw):
    out = []
    for name in draw(st.sets(st.sampled_from(NAMES), min_size=1)):
        cpus = draw(st.sampled_from([1, 2, 4, 8]))
        free = draw(capacities(cpus))
        out.append(Offer(name, cpus, draw(st.sampled_from([2000, 8000, 16000, 32000])),
                         draw(st.integers(0, 2)), draw(st.sampled_from([0.0, 0.1, 0.25, 1.0])),
                         tuple(free), draw(st.integers(0, 10)),
                         draw(st.sampled_from(["", "", "", "backing off"]))))
    return out


limits = st.builds(Limits, st.none() | st.integers(0, 20), st.none() | st.integers(0, 64),
                   st.none() | st.sampled_from([0.0, 0.5, 1.0, 2.5]))


def _need_alone(demand, offers):
    """Nodes the demand needs if each group went to its cheapest-to-open entry
    alone, with no free capacity: an upper bound on what any allocation opens."""
    total = 0
    for g in demand:
        fits = [per_node((o.cpus, o.memory_mb), (g.cpus, g.memory_mb)) for o in offers
                if o.name in g.entries]
        fits = [k for k in fits if k > 0]
        if fits and g.count:
            total += -(-g.count // min(fits))
    return total


@settings(max_examples=300, deadline=None)
@given(demands, offers(), limits)
def test_no_double_provisioning_and_the_caps_hold(demand, offers, limits):
    result = allocate(demand, offers, limits)
    by = {o.name: o for o in offers}
    total_jobs = sum(g.count for g in demand)
    assert sum(g.jobs for g in result.grants) <= total_jobs
    for grant in result.grants:
        offer = by[grant.entry]
        assert 0 < grant.nodes <= grant.jobs          # every new node is for a job
        assert not offer.blocked and grant.nodes <= offer.room
    assert sum(g.nodes for g in result.grants) <= _need_alone(demand, offers)
    if limits.instances is not None:
        assert sum(g.nodes for g in result.grants) <= limits.instances
    if limits.cores is not None:
        assert sum(g.nodes * by[g.entry].cpus for g in result.grants) <= limits.cores
    if limits.spend_per_hour is not None:
        assert sum(g.spend_per_hour for g in result.grants) <= limits.spend_per_hour + 1e-6


@settings(max_examples=200, deadline=None)
@given(demands, offers(), limits, st.randoms(use_true_random=False))
def test_deterministic_whatever_the_input_order(demand, offers, limits, rnd):
    first = allocate(demand, offers, limits)
    demand, offers = list(demand), list(offers)
    rnd.shuffle(demand)
    rnd.shuffle(offers)
    assert allocate(demand, offers, limits) == first


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60), st.integers(0, 6), st.integers(0, 6), st.sampled_from([0.1, 0.3]),
       st.booleans())
def test_cheaper_fills_first_then_spills_and_priority_beats_cost(jobs, room_cheap, room_dear,
                                                                 cost, by_priority):
    """One job shape, two entries with the same node: the preferred one (cheaper,
    or of better priority although dearer) fills up to its room, the rest spills."""
    best_cost, other_cost = (1.0, cost) if by_priority else (cost, 1.0)
    best = Offer("zbest", 4, 8000, 0, best_cost, (), room_cheap)
    other = Offer("aother", 4, 8000, 1 if by_priority else 0, other_cost, (), room_dear)
    result = allocate([Demand(jobs, 1, 1000, ("aother", "zbest"))], [other, best])
    need = -(-jobs // 4)
    assert result.nodes("zbest") == min(need, room_cheap)
    assert result.nodes("aother") == min(need - result.nodes("zbest"), room_dear)
    if result.nodes("aother"):
        assert result.limited["zbest"]


@given(st.integers(1, 50))
def test_a_blocked_entry_spills_everything_and_says_why(jobs):
    result = allocate([Demand(jobs, 1, 1000, ("spot", "ondemand"))],
                      [Offer("spot", 4, 8000, 0, 0.1, (), 10, "backing off for 120s"),
                       Offer("ondemand", 4, 8000, 0, 0.4, (), 10)])
    assert result.nodes("spot") == 0 and result.nodes("ondemand") == min(10, -(-jobs // 4))
    assert result.limited["spot"] == "backing off for 120s"


def test_free_capacity_is_counted_once_across_entries():
    """16 one-core jobs, two 4-core entries: 4 nodes in all, not 4 + 4; the
    free cores of a booting node of either entry are used first."""
    demand = [Demand(16, 1, 1000, ("ec2", "os"))]
    ec2, os_ = Offer("ec2", 4, 8000, 0, 0.2, (), 10), Offer("os", 4, 8000, 0, 0.1, (), 10)
    assert [(g.entry, g.nodes) for g in allocate(demand, [ec2, os_]).grants] == [("os", 4)]
    booting = Offer("ec2", 4, 8000, 0, 0.2, ((4, 8000),), 10)
    assert [(g.entry, g.nodes) for g in allocate(demand, [booting, os_]).grants] == [("os", 3)]


def test_budget_and_global_caps_bind_and_are_named():
    demand = [Demand(40, 1, 1000, ("a",))]
    a = Offer("a", 4, 8000, 0, 0.5, (), 10)
    result = allocate(demand, [a], Limits(spend_per_hour=1.6))
    assert result.nodes("a") == 3 and result.limited["a"] == "CLOUD_PLUGINS_BUDGET_PER_HOUR"
    result = allocate(demand, [a], Limits(instances=2))
    assert result.nodes("a") == 2 and result.limited["a"] == "CLOUD_PLUGINS_MAX_INSTANCES"
    result = allocate(demand, [a], Limits(cores=9))
    assert result.nodes("a") == 2 and result.limited["a"] == "CLOUD_PLUGINS_MAX_CORES"
    assert result.unserved and "CLOUD_PLUGINS_MAX_CORES" in result.unserved[0][2]


def test_jobs_no_entry_can_take_are_left_out_with_why():
    result = allocate([Demand(3, 16, 1000, ("a",)), Demand(2, 1, 1000, ("zz",))],
                      [Offer("a", 4, 8000, 0, 0.0, (), 10)])
    assert not result.grants
    assert sorted(why for _, _, why in result.unserved) == [
        "larger than a node of every matching entry", "no configured entry matches"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), shapes, RUNTIMES), max_size=5), capacities(4))
def test_one_entry_opens_what_nodes_needed_says(groups, free):
    """With one unlimited entry the allocation is today's per-entry packing."""
    demand = [Demand(n, c, m, ("a",), r) for n, (c, m), r in groups]
    offer = Offer("a", 4, 16000, 0, 0.0, tuple(free), 10 ** 6)
    want = nodes_needed([JobGroup(n, c, m, r) for n, (c, m), r in groups], 4, 16000, free)
    assert allocate(demand, [offer]).nodes("a") == want



def test_pilots_that_retire_soon_take_the_short_jobs_and_leave_the_rest():
    """Short jobs go to the capacity that retires soon, so the long-lived
    capacity is left for the long jobs, whatever order the groups come in."""
    free = ((8, 8000, 1000), (8, 8000, 300))
    groups = [Demand(5, 2, 100, ("a",), 0), Demand(5, 2, 100, ("a",), 500)]
    offer = Offer("a", 8, 8000, 0, 0.0, free, 10)
    assert allocate(groups, [offer]).nodes("a") == 1
    assert allocate(groups[::-1], [offer]).nodes("a") == 1
    # A joined pilot with 300 s left takes none of the 500 s jobs.
    only = Offer("a", 8, 8000, 0, 0.0, ((8, 8000, 300),), 10)
    assert allocate([Demand(4, 2, 100, ("a",), 500)], [only]).nodes("a") == 1
    assert allocate([Demand(4, 2, 100, ("a",), 200)], [only]).nodes("a") == 0
