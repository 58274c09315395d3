"""The revoked-token list (provisioning/revocation.py), without daemons; the
collector refusing a revoked token is tested in test_cloud_node.py, the
provisioner revoking what it terminated in test_provisioner.py."""

import json
import stat

from condor_plugins.provisioning.revocation import CONFIG_NAME, JSON_NAME, SKEW, Revocations, render

DAY = 86400.0


class Reconfig:
    def __init__(self, fail=0):
        self.calls, self.fail = 0, fail

    def __call__(self):
        self.calls += 1
        if self.calls <= self.fail:
            raise RuntimeError("connection refused")


def test_render_is_a_member_test_on_the_token_subject_and_false_when_empty():
    assert render({}).splitlines()[-1] == "CLOUD_PLUGINS_REVOKED_WORKER_TOKENS = false"
    line = render({"b-2@w.example": 1.0, "a-1@w.example": 2.0}).splitlines()[-1]
    assert line == 'CLOUD_PLUGINS_REVOKED_WORKER_TOKENS = member(sub, {"a-1@w.example", ' \
                   '"b-2@w.example"})'
    # Nothing that could break out of the string is ever written.
    assert "evil" not in render({'x"} || true || {"evil@w': 1.0, "a b@w": 1.0})


def test_revoke_writes_both_files_reconfigures_once_and_is_idempotent(tmp_path):
    rc = Reconfig()
    rev = Revocations(tmp_path, rc)
    assert rev.revoke({"e-1": 1000.0}, "w.example", DAY, now=2000.0) == 1
    assert rc.calls == 1 and not rev.pending
    assert json.loads((tmp_path / JSON_NAME).read_text()) == {"e-1@w.example": 1000 + DAY + SKEW}
    conf = tmp_path / CONFIG_NAME
    assert '"e-1@w.example"' in conf.read_text()
    assert stat.S_IMODE(conf.stat().st_mode) == 0o644
    assert rev.revoke({"e-1": 1000.0}, "w.example", DAY, now=2001.0) == 0
    assert rc.calls == 1   # nothing changed: no reconfig


def test_expired_tokens_are_dropped_and_never_added(tmp_path):
    rev = Revocations(tmp_path, Reconfig())
    rev.revoke({"old": 0.0}, "w", DAY, now=10.0)
    # Created long ago: every token of it has expired, nothing to revoke.
    assert rev.revoke({"ancient": 0.0}, "w", DAY, now=3 * DAY) == 0
    assert rev.load() == {}
    assert "false" in (tmp_path / CONFIG_NAME).read_text()


def test_a_failed_reconfig_is_retried_until_it_succeeds(tmp_path):
    rc = Reconfig(fail=2)
    rev = Revocations(tmp_path, rc)
    rev.revoke({"e-1": 0.0}, "w", DAY, now=1.0)
    assert rev.pending and rc.calls == 1
    assert not rev.sync() and rev.pending
    assert rev.sync() and not rev.pending and rc.calls == 3
    assert rev.sync() and rc.calls == 3


def test_two_provisioners_on_one_host_keep_each_others_entries(tmp_path):
    a, b = Revocations(tmp_path, Reconfig()), Revocations(tmp_path, Reconfig())
    a.revoke({"a-1": 0.0}, "w", DAY, now=1.0)
    b.revoke({"b-1": 0.0}, "w", DAY, now=2.0)
    assert set(a.load()) == {"a-1@w", "b-1@w"}


def test_an_unreadable_list_is_replaced_and_says_so(tmp_path, caplog):
    (tmp_path / JSON_NAME).write_text("{not json")
    rev = Revocations(tmp_path, Reconfig())
    rev.revoke({"e-1": 0.0}, "w", DAY, now=1.0)
    assert set(rev.load()) == {"e-1@w"}
    assert "unreadable" in caplog.text
