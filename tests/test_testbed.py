"""The test bed itself: pools start, fail loudly, coexist and leave nothing behind."""

import time

import pytest

from condor_plugins.localpool import InstanceError, PersonalPool, processes_using

pytestmark = pytest.mark.integration


def test_two_pools_side_by_side(condor):
    a = condor.pool("alpha")
    b = condor.pool("beta")
    condor.node(a, "na")
    condor.node(b, "nb")
    names_a = a.run("condor_status", "-af", "Name").stdout.split()
    names_b = b.run("condor_status", "-af", "Name").stdout.split()
    assert [n.split("@")[1] for n in names_a] == ["na"]
    assert [n.split("@")[1] for n in names_b] == ["nb"]
    assert a.collector_address != b.collector_address


def test_failing_daemon_fails_fast_with_its_log(condor_base, tmp_path):
    pool = PersonalPool(tmp_path / "broken", name="broken",
                        extra_config="SCHEDD = /nonexistent/condor_schedd\n")
    t0 = time.monotonic()
    with pytest.raises(InstanceError) as err:
        pool.start(timeout=15)
    try:
        assert time.monotonic() - t0 < 30
        msg = str(err.value)
        assert "Scheduler" in msg and "MasterLog" in msg and "/nonexistent/condor_schedd" in msg
    finally:
        pool.stop()


def test_master_that_exits_is_reported(condor_base, tmp_path):
    pool = PersonalPool(tmp_path / "bad", name="bad", extra_config="DAEMON_LIST = MASTER, NO_SUCH_DAEMON\n")
    with pytest.raises(InstanceError):
        pool.start(timeout=15)
    pool.stop()


def test_stop_leaves_no_process(condor_base, tmp_path):
    pool = PersonalPool(tmp_path / "p", name="p")
    pool.start()
    assert processes_using(str(pool.workdir))
    pool.stop()
    assert processes_using(str(pool.workdir)) == []
