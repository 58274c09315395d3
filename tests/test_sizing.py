"""Entry sizes from the instance type (issue 15, template ads that match real
VMs): CPUS, MEMORY and DISK left auto come from the provider's description,
numbers above it are capped (EC2's DISK is applied instead), and an entry whose
auto size is unknown starts nothing while its jobs spill.  Pure: no daemons."""

import logging

import pytest

from condor_plugins import config
from condor_plugins.config import ConfigError
from condor_plugins.providers.base import InstanceType, Provider, TransientError
from condor_plugins.provisioning.policy import plan
from condor_plugins.provisioning.sizing import Sizes, resize
from condor_plugins.provisioning.state import Create, Demand, Hold, Listing, ObservedState

T0 = 1_000_000.0
M5 = InstanceType("m5.xlarge", 4, 16384, 8192, disk_grows=True)
FLAVOR = InstanceType("m1.large", 4, 8192, 40960)


def entry(**knobs):
    param = {"CLOUD_PLUGINS_PROVIDERS": "e1", "FULL_HOSTNAME": "cm",
             "CLOUD_PLUGINS_E1_TYPE": "local"}
    param.update({f"CLOUD_PLUGINS_E1_{k}": str(v) for k, v in knobs.items()})
    return config.load(param).entries[0]


def test_auto_is_the_default_and_falls_back_where_no_type_is_described():
    e = entry()
    assert e.auto == {"cpus", "memory_mb", "disk_mb"}
    assert (e.cpus, e.memory_mb, e.disk_mb) == (4, 8192, 20000)
    assert resize(e, None) == (e, [])
    assert entry(CPUS=8, MEMORY="auto").auto == {"memory_mb", "disk_mb"}
    with pytest.raises(ConfigError, match="CLOUD_PLUGINS_E1_MEMORY = 'lots'"):
        entry(MEMORY="lots")


def test_auto_sizes_come_from_the_instance_type():
    sized, notes = resize(entry(), M5)
    assert (sized.cpus, sized.memory_mb, sized.disk_mb) == (4, 16384, 8192) and notes == []


def test_a_number_above_the_type_is_capped_and_the_warning_names_the_knob():
    sized, notes = resize(entry(CPUS=8, MEMORY=32000, DISK=100000), FLAVOR)
    assert (sized.cpus, sized.memory_mb, sized.disk_mb) == (4, 8192, 40960)
    assert any("CLOUD_PLUGINS_E1_MEMORY = 32000 exceeds the 8192 MB of instance type "
               "m1.large" in n for n in notes) and len(notes) == 3
    smaller, notes = resize(entry(MEMORY=6000), FLAVOR)   # below the type: the admin's number
    assert smaller.memory_mb == 6000 and notes == []


def test_ec2_applies_a_larger_disk_and_raises_a_smaller_one_to_the_image_root():
    assert resize(entry(DISK=50000), M5)[0].disk_mb == 50000
    sized, notes = resize(entry(DISK=1000), M5)
    assert sized.disk_mb == 8192 and "below the image's root volume" in notes[0]


class Described(Provider):
    """A provider whose describe fails until ``ok`` is set."""

    def __init__(self, entry, settings, kind=M5):
        super().__init__(entry, settings)
        self.kind, self.ok, self.calls = kind, False, 0

    def describe(self, spec):
        self.calls += 1
        if not self.ok:
            raise TransientError("ec2 entry e1: DescribeInstanceTypes failed: timed out")
        return self.kind

    def create(self, *a):
        return []

    def list(self, tags):
        return []

    def terminate(self, ids):
        pass


def test_a_failed_description_makes_an_auto_entry_unsized_until_it_works(caplog):
    e, sizes = entry(), Sizes()
    provider = Described("e1", {})
    caplog.set_level(logging.INFO, logger="condor_plugins.provisioning.sizing")
    for _ in range(2):
        assert sizes.apply([e], {"e1": provider}) == (e,)
    assert "DescribeInstanceTypes failed" in sizes.unsized["e1"]
    assert "CLOUD_PLUGINS_E1_CPUS" in sizes.unsized["e1"]
    assert caplog.text.count("not described") == 1   # logged once while it fails
    provider.ok = True
    [sized] = sizes.apply([e], {"e1": provider})
    assert sized.memory_mb == 16384 and sizes.unsized == {}
    assert "has 4 cores, 16384 MB memory, 8192 MB disk (from the cloud)" in caplog.text
    calls = provider.calls
    sizes.apply([e], {"e1": provider})
    assert provider.calls == calls   # described once, kept until a reconfig
    sizes.reset()
    sizes.apply([e], {"e1": provider})
    assert provider.calls == calls + 1


def test_an_entry_with_every_size_set_does_not_depend_on_the_description():
    e, sizes = entry(CPUS=2, MEMORY=4000, DISK=10000), Sizes()
    assert sizes.apply([e], {"e1": Described("e1", {})}) == (e,) and sizes.unsized == {}


def test_an_unsized_entry_holds_and_its_jobs_spill_to_the_next():
    param = {"CLOUD_PLUGINS_PROVIDERS": "cheap dear", "FULL_HOSTNAME": "cm",
             "CLOUD_PLUGINS_CHEAP_TYPE": "ec2", "CLOUD_PLUGINS_DEAR_TYPE": "local",
             "CLOUD_PLUGINS_CHEAP_COST_PER_HOUR": "0.1",
             "CLOUD_PLUGINS_DEAR_COST_PER_HOUR": "0.4", "CLOUD_PLUGINS_COLLECTOR_GRACE": "0"}
    cfg = config.load(param)
    why = "instance type t3.small not described (transient): timed out"
    state = ObservedState(listings={e: Listing(True, ()) for e in ("cheap", "dear")},
                          jobs=(Demand(8, 1, 1000, ("cheap", "dear")),),
                          unsized={"cheap": why})
    p = plan(state, cfg, T0)
    assert {a.entry: a.count for a in p.actions if isinstance(a, Create)} == {"dear": 2}
    [hold] = [a for a in p.actions if isinstance(a, Hold) and a.entry == "cheap"]
    assert hold.key == "sizing" and why in hold.reason
