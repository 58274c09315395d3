"""condor_plugins.config: knob parsing, fallback, errors, generated docs."""

from pathlib import Path

import pytest

from condor_plugins import config
from condor_plugins.config import ConfigError

BASE = {"CLOUD_PLUGINS_PROVIDERS": "local1, ec2east", "FULL_HOSTNAME": "cm.example.org",
        "COLLECTOR_HOST": "cm.example.org:9618",
        "CLOUD_PLUGINS_LOCAL1_TYPE": "local", "CLOUD_PLUGINS_EC2EAST_TYPE": "ec2"}


def load(**extra):
    return config.load({**BASE, **extra})


def test_defaults_come_from_the_table():
    cfg = load()
    assert [e.name for e in cfg.entries] == ["local1", "ec2east"]
    e = cfg.entry("local1")
    assert (e.type, e.max_instances, e.max_booting, e.cpus, e.memory_mb) == ("local", 10, 4, 4, 8192)
    assert (e.idle_timeout, e.join_timeout, e.backoff_factor, e.enabled) == (600, 900, 2.0, True)
    assert cfg.name == "cm.example.org" and cfg.pool == "cm.example.org:9618"
    assert cfg.cycle_interval == 60


def test_entry_knob_overrides_global_which_overrides_default():
    cfg = load(CLOUD_PLUGINS_MAX_INSTANCES="20", CLOUD_PLUGINS_EC2EAST_MAX_INSTANCES="3")
    assert cfg.entry("local1").max_instances == 20
    assert cfg.entry("ec2east").max_instances == 3


def test_entry_only_knobs_have_no_global_fallback():
    # CLOUD_PLUGINS_IMAGE is also a worker knob: it must not leak into entries
    cfg = load(CLOUD_PLUGINS_IMAGE="worker-value", CLOUD_PLUGINS_LOCAL1_IMAGE="img-1")
    assert cfg.entry("local1").image == "img-1"
    assert cfg.entry("ec2east").image == ""


def test_empty_value_counts_as_unset():
    cfg = load(CLOUD_PLUGINS_EC2EAST_CPUS="", CLOUD_PLUGINS_CPUS="8")
    assert cfg.entry("ec2east").cpus == 8


@pytest.mark.parametrize("text, seconds", [
    ("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), (" 5 m ", 300),
    ("0", 0), ("10M", 600)])
def test_durations(text, seconds):
    assert load(CLOUD_PLUGINS_IDLE_TIMEOUT=text).entry("local1").idle_timeout == seconds


@pytest.mark.parametrize("text, value", [
    ("true", True), ("False", False), ("YES", True), ("no", False), ("1", True), ("0", False)])
def test_booleans(text, value):
    assert load(CLOUD_PLUGINS_LOCAL1_ENABLED=text).entry("local1").enabled is value


def test_extra_entry_knobs_are_provider_settings():
    cfg = load(CLOUD_PLUGINS_EC2EAST_REGION="us-east-1", CLOUD_PLUGINS_EC2EAST_SUBNET="s-1",
               cloud_plugins_ec2east_keyname="k", CLOUD_PLUGINS_LOCAL1_BASE_DIR="/tmp/x")
    assert dict(cfg.entry("ec2east").settings) == {"KEYNAME": "k", "REGION": "us-east-1",
                                                   "SUBNET": "s-1"}
    spec = cfg.entry("local1").spec()
    assert spec.settings == {"BASE_DIR": "/tmp/x"} and spec.cpus == 4


@pytest.mark.parametrize("knob, text, message", [
    ("CLOUD_PLUGINS_LOCAL1_MAX_INSTANCES", "ten", "CLOUD_PLUGINS_LOCAL1_MAX_INSTANCES = 'ten': expected an integer"),
    ("CLOUD_PLUGINS_MAX_BOOTING", "2.5", "CLOUD_PLUGINS_MAX_BOOTING = '2.5': expected an integer"),
    ("CLOUD_PLUGINS_EC2EAST_IDLE_TIMEOUT", "10 minutes", "CLOUD_PLUGINS_EC2EAST_IDLE_TIMEOUT = '10 minutes': expected a duration"),
    ("CLOUD_PLUGINS_IDLE_TIMEOUT", "-5", "CLOUD_PLUGINS_IDLE_TIMEOUT = '-5': expected a duration"),
    ("CLOUD_PLUGINS_LOCAL1_ENABLED", "maybe", "CLOUD_PLUGINS_LOCAL1_ENABLED = 'maybe': expected true or false"),
    ("CLOUD_PLUGINS_LOCAL1_CPUS", "0", "CLOUD_PLUGINS_LOCAL1_CPUS = '0': must be at least 1"),
    ("CLOUD_PLUGINS_BACKOFF_FACTOR", "x2", "CLOUD_PLUGINS_BACKOFF_FACTOR = 'x2': expected a number"),
    ("CLOUD_PLUGINS_CYCLE_INTERVAL", "0", "CLOUD_PLUGINS_CYCLE_INTERVAL = '0': must be at least 1"),
])
def test_bad_values_name_the_knob_and_the_value(knob, text, message):
    with pytest.raises(ConfigError) as err:
        load(**{knob: text})
    assert str(err.value).startswith(message)


def test_missing_type_is_named():
    with pytest.raises(ConfigError, match="CLOUD_PLUGINS_EC2EAST_TYPE is not set"):
        config.load({k: v for k, v in BASE.items() if k != "CLOUD_PLUGINS_EC2EAST_TYPE"})


@pytest.mark.parametrize("providers, message", [
    ("local_1", "must be letters and digits"),
    ("1local", "must be letters and digits"),
    ("local1 LOCAL1", "listed twice"),
    ("max", "reserved"),
    ("worker", "reserved"),
])
def test_bad_entry_names(providers, message):
    with pytest.raises(ConfigError, match=message) as err:
        config.load({"CLOUD_PLUGINS_PROVIDERS": providers, "FULL_HOSTNAME": "h"})
    assert "CLOUD_PLUGINS_PROVIDERS" in str(err.value)


def test_no_entries_is_valid():
    assert config.load({}).entries == ()


def test_explicit_names_win_over_host_values():
    cfg = load(CLOUD_PLUGINS_PROVISIONER_NAME="prov-a", CLOUD_PLUGINS_POOL_NAME="t2_xx")
    assert (cfg.name, cfg.pool) == ("prov-a", "t2_xx")


def test_every_knob_default_parses():
    for knob in config.KNOBS:
        if knob.default is not None:
            config.PARSERS[knob.type](knob.default)


def test_markdown_lists_every_knob():
    text = config.knobs_markdown()
    for knob in config.KNOBS:
        assert f"{knob.name}` |" in text


def test_generated_docs_are_up_to_date():
    path = Path(__file__).resolve().parent.parent / "docs" / "knobs-provisioner.md"
    assert path.read_text() == config.knobs_markdown(), \
        "docs/knobs-provisioner.md is stale: python3 -m condor_plugins.config > docs/knobs-provisioner.md"


def test_reads_htcondor_param_when_available():
    htcondor2 = pytest.importorskip("htcondor2")
    htcondor2.param["CLOUD_PLUGINS_PROVIDERS"] = "p1"
    htcondor2.param["CLOUD_PLUGINS_P1_TYPE"] = "local"
    htcondor2.param["CLOUD_PLUGINS_P1_MAX_INSTANCES"] = "7"
    htcondor2.param["CLOUD_PLUGINS_P1_ZONE_HINT"] = "z"
    try:
        entry = config.load(htcondor2.param).entry("p1")
        assert (entry.max_instances, entry.type) == (7, "local")
        assert entry.settings == {"ZONE_HINT": "z"}
    finally:
        for key in ("CLOUD_PLUGINS_PROVIDERS", "CLOUD_PLUGINS_P1_TYPE",
                    "CLOUD_PLUGINS_P1_MAX_INSTANCES", "CLOUD_PLUGINS_P1_ZONE_HINT"):
            del htcondor2.param[key]


def test_unknown_knobs_name_the_closest_known_knob():
    """Issue 13: misspelled knobs and entries missing from PROVIDERS are named
    (they passed without a word); provider settings and known knobs are not."""
    from condor_plugins.config import unknown_knobs
    param = {"CLOUD_PLUGINS_PROVIDERS": "local1", "CLOUD_PLUGINS_LOCAL1_TYPE": "local",
             "CLOUD_PLUGINS_LOCAL1_MAX_INSTANCE": "3", "CLOUD_PLUGINS_LOCL1_CPUS": "2",
             "CLOUD_PLUGINS_EC2WEST_TYPE": "ec2", "CLOUD_PLUGINS_LOCAL1_STATE_DIR": "/x",
             "CLOUD_PLUGINS_CYCLE_INTERVALL": "5", "CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS": "True",
             "CLOUD_PLUGINS_CVMFS_HTTP_PROXY": "DIRECT", "CLOUD_PLUGINS_LOCAL1_CPUS": "2",
             "CLOUD_PLUGINS_LOCAL1_WORKER_IDLE_SHUTDOWN": "3", "CLOUD_PLUGINS_ZZZ": "1",
             "COLLECTOR_HOST": "cm"}
    warnings = unknown_knobs(param)
    assert warnings == [
        "CLOUD_PLUGINS_CYCLE_INTERVALL is not a condor_plugins knob: did you mean "
        "CLOUD_PLUGINS_CYCLE_INTERVAL?",
        "CLOUD_PLUGINS_EC2WEST_TYPE configures an entry ec2west that is not in "
        "CLOUD_PLUGINS_PROVIDERS (local1): it is ignored",
        "CLOUD_PLUGINS_LOCAL1_MAX_INSTANCE is not a knob (a setting of provider entry local1): "
        "did you mean CLOUD_PLUGINS_LOCAL1_MAX_INSTANCES?",
        "CLOUD_PLUGINS_LOCL1_CPUS is not a condor_plugins knob: did you mean "
        "CLOUD_PLUGINS_LOCAL1_CPUS?",
        "CLOUD_PLUGINS_ZZZ is not a condor_plugins knob (nothing reads it)"], warnings


def test_every_knob_the_fragments_define_is_known():
    """The typo check knows every CLOUD_PLUGINS_* name the shipped fragments set."""
    import re
    from pathlib import Path
    from condor_plugins.config import unknown_knobs
    repo = Path(__file__).resolve().parent.parent
    names = set()
    for conf in [*repo.glob("config.d/**/*.conf"), *repo.glob("packaging/rpm/*.conf")]:
        names |= set(re.findall(r"^(CLOUD_PLUGINS_[A-Z0-9_]+)\s*=", conf.read_text(), re.M))
    assert len(names) > 40
    assert unknown_knobs({n: "x" for n in names}) == []
