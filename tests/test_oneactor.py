"""One acting provisioner per name (issue 16): claims, seniority, standby,
takeover, and an unreachable collector.  A fake collector, real ClassAds."""

import pytest

from condor_plugins.provisioning.oneactor import Claims, senior

classad2 = pytest.importorskip("classad2")


class FakeCollector:
    def __init__(self):
        self.ads, self.down = {}, False

    def advertise(self, ads, command):
        if self.down:
            raise OSError("collector unreachable")
        for ad in ads:
            if command == "INVALIDATE_ADS_GENERIC":
                self.ads.pop(ad["Name"], None)
            else:
                self.ads[ad["Name"]] = ad

    def query(self, ad_type, constraint, projection):
        if self.down:
            raise OSError("collector unreachable")
        return [ad for ad in self.ads.values() if classad2.ExprTree(constraint).eval(ad) is True]


def test_the_oldest_claim_then_the_lowest_name_is_senior():
    assert senior([(20.0, "b"), (10.0, "c"), (10.0, "a")]) == "a"
    assert senior([]) is None


def test_only_the_senior_acts_the_other_stands_by_and_takes_over(tmp_path):
    coll = FakeCollector()
    a = Claims("twin", "cm1", tmp_path / "a" / "state.json", now=100.0)
    b = Claims("twin", "cm2", tmp_path / "b" / "state.json", now=200.0)
    assert not a.decide(coll, 60) and not b.decide(coll, 60)   # first sight: nobody acts
    assert a.decide(coll, 60) and not b.decide(coll, 60)
    assert b.why.startswith("standing by: provisioner twin is acting on cm1")
    assert coll.ads[b.claim]["CloudClaimActing"] is False
    a.withdraw(coll)                                             # a clean stop
    assert b.decide(coll, 60)


def test_a_restart_keeps_its_seniority(tmp_path):
    first = Claims("twin", "cm1", tmp_path / "state.json", now=100.0)
    again = Claims("twin", "cm1", tmp_path / "state.json", now=500.0)
    assert first.since == again.since == 100.0 and first.claim == again.claim


def test_while_the_collector_cannot_be_asked_the_last_decision_stands(tmp_path):
    coll = FakeCollector()
    a = Claims("solo", "cm1", tmp_path / "state.json", now=100.0)
    a.decide(coll, 60)
    assert a.decide(coll, 60)
    coll.down = True
    assert a.decide(coll, 60)
    b = Claims("solo2", "cm1", tmp_path / "b.json", now=100.0)
    assert not b.decide(coll, 60)   # never seen: does not act
