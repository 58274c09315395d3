"""Contextualisation: the cloud-init user-data of a worker VM (issue 4, deliver 1).

The document is checked with cloud-init's own schema checker (the real
``cloud-init schema`` CLI, unprivileged), parsed back with PyYAML (cloud-init's
own YAML loader) and its HTCondor files are read by ``condor_config_val``.
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from dataclasses import replace

import pytest

from condor_plugins import config
from condor_plugins.node import contextualize as ctxmod
from condor_plugins.node.cloudconfig import redact
from condor_plugins.node.context import (CmsSettings, ContextError, CvmfsSettings, ExtraFile,
                                         InstanceContext)
from condor_plugins.node.context_config import context_from_config
from condor_plugins.node.contextualize import INSTANCE_ID_SCRIPT, render_user_data
from condor_plugins.node.metadata_firewall import PROTECT_METADATA_SCRIPT
from condor_plugins.localpool import shipped_config_dir

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parent.parent
TOKEN = ("eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.eyJpYXQiOjE3MDAwMDAwMDAsImlzcyI6ImNtLmV4YW1w"
         "bGUub3JnIiwic2NvcGUiOiJjb25kb3I6XC9BRFZFUlRJU0VfU1RBUlREIiwic3ViIjoiZWMyYS0wMDAxQGNs"
         "b3VkLXdvcmtlci5leGFtcGxlLm9yZyJ9.Zm9vYmFyX3NpZ25hdHVyZS1ub3QtcmVhbA")
CLOUD_INIT = shutil.which("cloud-init")
CONDOR_CONFIG_VAL = shutil.which("condor_config_val")


def need(tool, name):
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} not found: run the suite in dev/sandbox")
        pytest.skip(f"{name} not installed; run the suite in dev/sandbox")


# ------------------------------------------------------------------ helpers

BASE = {"CLOUD_PLUGINS_PROVIDERS": "ec2a", "CLOUD_PLUGINS_EC2A_TYPE": "ec2",
        "COLLECTOR_HOST": "cm.site.example.org:9618", "FULL_HOSTNAME": "ce.site.example.org"}


def make_ctx(extra=None, instance_id="ec2a-0001", token=TOKEN):
    param = dict(BASE, **(extra or {}))
    entry = config.load(param).entry("ec2a")
    return context_from_config(entry, param, instance_id, token)


def customised_param(tmp_path):
    tdir = tmp_path / "templates"
    (tdir / "etc" / "profile.d").mkdir(parents=True)
    (tdir / "etc" / "profile.d" / "site.sh").write_text("export SITE_SQUID=squid.example.org\n")
    (tdir / "usr" / "local" / "bin").mkdir(parents=True)
    script = tdir / "usr" / "local" / "bin" / "site-check"
    script.write_bytes(b"#!/bin/sh\n\texit 0\n")
    script.chmod(0o750)
    secret = tdir / "etc" / "site-secret.key"
    secret.write_bytes(b"\x00\x01binary secret\xff\n")
    secret.chmod(0o600)
    return {
        "CLOUD_PLUGINS_EC2A_IMAGE": "ami-0123456789abcdef0",
        "CLOUD_PLUGINS_EC2A_INSTANCE_TYPE": "m5.xlarge",
        "CLOUD_PLUGINS_CVMFS_HTTP_PROXY":
            "http://squid1.example.org:3128|http://squid2.example.org:3128;DIRECT",
        "CLOUD_PLUGINS_EC2A_CVMFS_REPOSITORIES": "cms.cern.ch, grid.cern.ch unpacked.cern.ch",
        "CLOUD_PLUGINS_EC2A_CVMFS_QUOTA_LIMIT": "40000",
        "CLOUD_PLUGINS_CMS_LOCAL_SITE": "T2_XX_Example",
        "CLOUD_PLUGINS_EC2A_STAGEOUT_PROTOCOL": "WebDAV",
        "CLOUD_PLUGINS_EC2A_STAGEOUT_COMMAND": "gfal2",
        "CLOUD_PLUGINS_EC2A_STORAGE_DESCRIPTION":
            "trivialcatalog_file:/cvmfs/cms.cern.ch/SITECONF/T2_XX_Example/PhEDEx/storage.xml",
        "CLOUD_PLUGINS_EC2A_USER_DATA_TEMPLATE_DIR": str(tdir),
        "CLOUD_PLUGINS_EC2A_CENTRAL_MANAGER": "cm-public.example.org:9618",
        "CLOUD_PLUGINS_EC2A_PLATFORM": "EC2",
        "CLOUD_PLUGINS_EC2A_REGION": "eu-central-1",
        "CLOUD_PLUGINS_EC2A_ZONE": "eu-central-1a",
        "CLOUD_PLUGINS_EC2A_INTERRUPTIBLE": "true",
        "CLOUD_PLUGINS_EC2A_IDLE_SHUTDOWN": "30m",
        "CLOUD_PLUGINS_EC2A_SHUTDOWN_GRACE": "2m",
        "CLOUD_PLUGINS_EC2A_POWEROFF_SCRIPT": "/usr/sbin/poweroff",
        "CLOUD_PLUGINS_EC2A_CCB_ADDRESS": "ccb.example.org:9618",
    }


def parse(user_data):
    assert user_data.startswith("#cloud-config\n")
    return yaml.safe_load(user_data)


def written(doc):
    """path -> (owner, permissions, content bytes) of every write_files item."""
    out = {}
    for item in doc["write_files"]:
        assert item["path"] not in out, f"{item['path']} written twice"
        content = item.get("content", "")
        data = (base64.b64decode(content) if item.get("encoding") == "b64"
                else content.encode("utf-8"))
        out[item["path"]] = (item.get("owner"), item.get("permissions"), data)
    return out


def schema_check(tmp_path, text, name="user-data"):
    need(CLOUD_INIT, "cloud-init")
    path = tmp_path / name
    path.write_text(text)
    return subprocess.run([CLOUD_INIT, "schema", "-c", str(path)], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(params=["default", "customised"])
def user_data(request, tmp_path):
    extra = {} if request.param == "default" else customised_param(tmp_path)
    return request.param, render_user_data(make_ctx(extra))


# ------------------------------------------------------------------ (a) schema

def test_cloud_init_schema_accepts_the_document(user_data, tmp_path):
    kind, text = user_data
    res = schema_check(tmp_path, text)
    assert res.returncode == 0, f"{kind}: {res.stdout}{res.stderr}"
    assert "Valid" in res.stdout
    # The redacted document (what `condor_cloud userdata` prints) is valid too.
    res = schema_check(tmp_path, redact(text), "redacted")
    assert res.returncode == 0, f"{kind} redacted: {res.stdout}{res.stderr}"


def test_cloud_init_schema_checker_is_not_vacuous(tmp_path):
    text = render_user_data(make_ctx()).replace('permissions: "0600"', "permissions: 384")
    res = schema_check(tmp_path, text)
    assert res.returncode == 1
    assert "permissions" in res.stdout + res.stderr


# ------------------------------------------------------------------ (b) owners and modes

def test_every_file_has_the_intended_owner_and_mode(tmp_path):
    text = render_user_data(make_ctx())
    files = written(parse(text))
    assert {p: (o, m) for p, (o, m, _) in files.items()} == {
        "/etc/cvmfs/default.local": ("root:root", "0644"),
        "/etc/condor/config.d/50-cloud-worker.conf": ("root:root", "0644"),
        "/etc/condor/config.d/60-cloud-instance.conf": ("root:root", "0644"),
        "/etc/condor/tokens.d/cloud-worker": ("root:root", "0600"),
        "/usr/libexec/condor/condor_cloud_node_control": ("root:root", "0755"),
        "/usr/libexec/condor/condor_cloud_watchdog": ("root:root", "0755"),
    }
    files = written(parse(render_user_data(make_ctx(customised_param(tmp_path)))))
    assert {p: (o, m) for p, (o, m, _) in files.items()} == {
        "/etc/cvmfs/default.local": ("root:root", "0644"),
        "/etc/cvmfs/SITECONF/T2_XX_Example/JobConfig/site-local-config.xml":
            ("root:root", "0644"),
        "/etc/condor/config.d/50-cloud-worker.conf": ("root:root", "0644"),
        "/etc/condor/config.d/60-cloud-instance.conf": ("root:root", "0644"),
        "/etc/condor/tokens.d/cloud-worker": ("root:root", "0600"),
        "/usr/libexec/condor/condor_cloud_node_control": ("root:root", "0755"),
        "/usr/libexec/condor/condor_cloud_watchdog": ("root:root", "0755"),
        "/etc/profile.d/site.sh": ("root:root", "0644"),
        "/etc/site-secret.key": ("root:root", "0600"),
        "/usr/local/bin/site-check": ("root:root", "0750"),
    }
    assert files["/usr/local/bin/site-check"][2] == b"#!/bin/sh\n\texit 0\n"
    assert files["/etc/site-secret.key"][2] == b"\x00\x01binary secret\xff\n"
    # The control script's READ-only token belongs to the user STARTD_CRON runs it as.
    files = written(parse(render_user_data(replace(make_ctx(), control_token=TOKEN))))
    assert files["/etc/condor/cloud-control.d/cloud-control"][:2] == ("condor:condor", "0600")
    # No watchdog without a power-off command, nor with WATCHDOG 0.
    for ctx in (replace(make_ctx(), poweroff_script=""), replace(make_ctx(), watchdog=0)):
        doc = parse(render_user_data(ctx))
        assert "/usr/libexec/condor/condor_cloud_watchdog" not in written(doc)
        assert "watchdog" not in repr(doc["runcmd"])


def test_every_item_states_owner_and_permissions_as_octal_strings(user_data):
    _, text = user_data
    for item in parse(text)["write_files"]:
        assert set(item) <= {"path", "owner", "permissions", "content", "encoding"}
        assert isinstance(item["permissions"], str) and len(item["permissions"]) == 4
        int(item["permissions"], 8)
        assert item["owner"] == "root:root"


# ------------------------------------------------------------------ (c) the token

def test_token_is_only_in_the_token_file(user_data):
    _, text = user_data
    assert text.count(TOKEN) == 1
    doc = parse(text)
    files = written(doc)
    assert files["/etc/condor/tokens.d/cloud-worker"][2] == (TOKEN + "\n").encode()
    assert all(TOKEN.encode() not in data for path, (_, _, data) in files.items()
               if path != "/etc/condor/tokens.d/cloud-worker")
    assert TOKEN not in repr(doc["runcmd"])
    watchdog = doc["runcmd"][0]
    assert watchdog[:2] == ["sh", "-c"] and "condor_cloud_watchdog 900 " in watchdog[2]
    assert doc["runcmd"][1:] == [["sh", "-c", INSTANCE_ID_SCRIPT], ["cvmfs_config", "setup"],
                                 ["systemctl", "enable", "--now", "condor"]]
    # Nothing but write_files, bootcmd and runcmd: no other module sees the token.
    assert set(doc) == {"write_files", "bootcmd", "runcmd"}
    assert doc["bootcmd"] == [["sh", "-c", PROTECT_METADATA_SCRIPT]]
    assert "169.254.169.254" in PROTECT_METADATA_SCRIPT


def test_redact_removes_the_token_and_other_secrets(tmp_path):
    text = render_user_data(make_ctx(customised_param(tmp_path)))
    shown = redact(text)
    assert TOKEN not in shown
    # No fragment of the token's signature or payload survives either.
    for part in TOKEN.split("."):
        assert part not in shown
    files = written(parse(shown))
    assert files["/etc/condor/tokens.d/cloud-worker"][2] == b"<redacted>"
    assert files["/etc/site-secret.key"][2] == b"<redacted>"  # a 0600 template file
    # Everything else is shown as it is.
    original = written(parse(text))
    for path in original:
        if path not in ("/etc/condor/tokens.d/cloud-worker", "/etc/site-secret.key"):
            assert files[path] == original[path], path


def test_redact_catches_a_token_anywhere():
    text = f"#cloud-config\nruncmd:\n  - [\"echo\", \"{TOKEN}\"]\n"
    assert TOKEN not in redact(text)
    assert "<redacted>" in redact(text)


def test_token_never_in_repr_or_errors():
    ctx = make_ctx()
    assert TOKEN not in repr(ctx)
    with pytest.raises(ContextError) as err:
        render_user_data(InstanceContext("cm:9618", "ec2", "i-1", token="bad token\nwith lines"))
    assert "bad token" not in str(err.value)


# ------------------------------------------------------------------ (d) bad knobs

@pytest.mark.parametrize("knob, value", [
    ("CLOUD_PLUGINS_EC2A_CVMFS_REPOSITORIES", "cms.cern.ch,not a repo!"),
    ("CLOUD_PLUGINS_CVMFS_HTTP_PROXY", "http://squid:3128 'oops'"),
    ("CLOUD_PLUGINS_EC2A_CVMFS_QUOTA_LIMIT", "lots"),
    ("CLOUD_PLUGINS_EC2A_CVMFS_QUOTA_LIMIT", "500"),
    ("CLOUD_PLUGINS_EC2A_CMS_LOCAL_SITE", "my site"),
    ("CLOUD_PLUGINS_EC2A_STAGEOUT_PROTOCOL", "SRM v2"),
    ("CLOUD_PLUGINS_EC2A_STAGEOUT_COMMAND", "gfal2;rm -rf /"),
    ("CLOUD_PLUGINS_EC2A_STORAGE_DESCRIPTION", "relative/storage.xml"),
    ("CLOUD_PLUGINS_EC2A_USER_DATA_TEMPLATE_DIR", "/nonexistent/templates"),
    ("CLOUD_PLUGINS_EC2A_CENTRAL_MANAGER", "cm example org"),
    ("CLOUD_PLUGINS_EC2A_PLATFORM", "E C 2"),
    ("CLOUD_PLUGINS_EC2A_REGION", "eu central"),
    ("CLOUD_PLUGINS_EC2A_ZONE", 'a"b'),
    ("CLOUD_PLUGINS_EC2A_INTERRUPTIBLE", "maybe"),
    ("CLOUD_PLUGINS_EC2A_IDLE_SHUTDOWN", "soon"),
    ("CLOUD_PLUGINS_EC2A_IDLE_SHUTDOWN", "10"),
    ("CLOUD_PLUGINS_EC2A_SHUTDOWN_GRACE", "-1"),
    ("CLOUD_PLUGINS_EC2A_POWEROFF_SCRIPT", "poweroff now"),
    ("CLOUD_PLUGINS_EC2A_CCB_ADDRESS", "ccb host"),
    ("CLOUD_PLUGINS_EC2A_IMAGE", 'ami-"quoted"'),
    ("COLLECTOR_HOST", "$(CONDOR_HOST)"),
])
def test_bad_knob_values_name_the_knob(knob, value):
    with pytest.raises(config.ConfigError) as err:
        make_ctx({knob: value})
    assert knob in str(err.value)
    assert repr(value) in str(err.value) or value in str(err.value)


def test_bad_defaulted_values_name_the_knob_too():
    # Nothing set: the error names the knob the default stands for.
    with pytest.raises(config.ConfigError, match="COLLECTOR_HOST"):
        context_from_config(config.load(dict(BASE)).entry("ec2a"),
                            {k: v for k, v in BASE.items() if k != "COLLECTOR_HOST"},
                            "ec2a-1", TOKEN)


def test_template_dir_refuses_symlinks_and_generated_paths(tmp_path):
    tdir = tmp_path / "t"
    (tdir / "etc" / "condor" / "tokens.d").mkdir(parents=True)
    (tdir / "etc" / "condor" / "tokens.d" / "cloud-worker").write_text("x\n")
    with pytest.raises(ContextError, match="writes this file itself"):
        render_user_data(make_ctx({"CLOUD_PLUGINS_EC2A_USER_DATA_TEMPLATE_DIR": str(tdir)}))
    shutil.rmtree(tdir / "etc")
    tdir.joinpath("link").symlink_to("/etc/passwd")
    with pytest.raises(ContextError, match="CLOUD_PLUGINS_EC2A_USER_DATA_TEMPLATE_DIR.*link"):
        make_ctx({"CLOUD_PLUGINS_EC2A_USER_DATA_TEMPLATE_DIR": str(tdir)})


def test_bad_context_fields_are_refused():
    good = make_ctx()
    from dataclasses import replace
    for change, field in [({"instance_id": "a b"}, "instance_id"),
                          ({"central_manager": "cm\nDAEMON_LIST = MASTER"}, "central_manager"),
                          ({"image": "x\ny"}, "image"),
                          ({"extra_files": (ExtraFile("etc/x", b""),)}, "extra file path"),
                          ({"extra_files": (ExtraFile("/etc/x", b"", "644"),)}, "permissions"),
                          ({"cvmfs": CvmfsSettings(quota_limit_mb=10)}, "quota_limit_mb"),
                          ({"cms": CmsSettings(site="nope")}, "cms.site")]:
        with pytest.raises(ContextError, match=field):
            render_user_data(replace(good, **change))


# ------------------------------------------------------------------ (e) the worker fragment

def test_worker_fragment_is_the_shipped_file_byte_for_byte(user_data):
    _, text = user_data
    shipped = (shipped_config_dir() / "worker" / "50-cloud-worker.conf").read_bytes()
    assert written(parse(text))["/etc/condor/config.d/50-cloud-worker.conf"][2] == shipped


# ------------------------------------------------------------------ contents

def test_cvmfs_and_siteconf_defaults():
    files = written(parse(render_user_data(make_ctx())))
    local = files["/etc/cvmfs/default.local"][2].decode()
    assert "CVMFS_REPOSITORIES='cms.cern.ch,oasis.opensciencegrid.org,grid.cern.ch'" in local
    assert "CVMFS_HTTP_PROXY='DIRECT'" in local
    assert "CVMFS_QUOTA_LIMIT=20000" in local
    assert "CMS_LOCAL_SITE" not in local  # no CMS site configured: no SITECONF
    assert not any("SITECONF" in p for p in files)


def test_cvmfs_local_is_shell_and_siteconf_points_at_the_storage_description(tmp_path):
    files = written(parse(render_user_data(make_ctx({"CLOUD_PLUGINS_CMS_LOCAL_SITE":
                                                     "T2_XX_Example"}))))
    local = files["/etc/cvmfs/default.local"][2].decode()
    env = subprocess.run(["sh", "-c", f"{local}\necho \"$CVMFS_REPOSITORIES|$CMS_LOCAL_SITE\""],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert env == ("cms.cern.ch,oasis.opensciencegrid.org,grid.cern.ch|"
                   "/etc/cvmfs/SITECONF/T2_XX_Example")
    xml = files["/etc/cvmfs/SITECONF/T2_XX_Example/JobConfig/site-local-config.xml"][2]
    site = ET.fromstring(xml).find("site")
    assert site.get("name") == "T2_XX_Example"
    out = site.find("local-stage-out")
    assert out.find("command").get("value") == "gfal2"
    assert out.find("catalog").get("url") == ("trivialcatalog_file:/cvmfs/cms.cern.ch/SITECONF/"
                                              "T2_XX_Example/PhEDEx/storage.xml?protocol=SRMv2")
    assert out.find("phedex-node").get("value") == "T2_XX_Example"


def worker_config_dir(tmp_path):
    """A config.d with the worker fragment and per-instance file of a document."""
    files = written(parse(render_user_data(make_ctx(customised_param(tmp_path)))))
    cdir = tmp_path / "config.d"
    cdir.mkdir()
    for path in ("/etc/condor/config.d/50-cloud-worker.conf",
                 "/etc/condor/config.d/60-cloud-instance.conf"):
        (cdir / Path(path).name).write_bytes(files[path][2])
    return cdir


def test_htcondor_reads_the_per_instance_values(tmp_path):
    need(CONDOR_CONFIG_VAL, "condor_config_val")
    cdir = worker_config_dir(tmp_path)
    (tmp_path / "condor_config").write_text(f"LOCAL_DIR = {tmp_path}\n"
                                            f"LOCAL_CONFIG_DIR = {cdir}\n")
    env = dict(os.environ, CONDOR_CONFIG=str(tmp_path / "condor_config"))
    names = ["COLLECTOR_HOST", "CCB_ADDRESS", "CloudProvider", "CloudPlatform",
             "CloudInstanceID", "CloudVMType", "CloudImage", "CloudRegion", "CloudZone",
             "CloudInterruptible", "CloudProvisioner", "CloudProviderEntry",
             "STARTD_NOCLAIM_SHUTDOWN", "DEFAULT_MASTER_SHUTDOWN_SCRIPT"]
    res = subprocess.run([CONDOR_CONFIG_VAL] + names, env=env, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "cm-public.example.org:9618", "ccb.example.org:9618", '"ec2"', '"EC2"',
        '"ec2a-0001"', '"m5.xlarge"', '"ami-0123456789abcdef0"', '"eu-central-1"',
        '"eu-central-1a"', "True", '"ce.site.example.org"', '"ec2a"', "1800",
        "/usr/sbin/poweroff"]


@pytest.mark.parametrize("datasource_id", ["i-0abc123def4567890", None])
def test_boot_script_advertises_the_clouds_instance_id(tmp_path, datasource_id):
    """The runcmd script puts the datasource's id in CloudInstanceID; without a
    datasource the node keeps the request id, which CloudRequestID always has."""
    need(CONDOR_CONFIG_VAL, "condor_config_val")
    cdir = worker_config_dir(tmp_path)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "cloud-init"
    fake.write_text("#!/bin/sh\n[ \"$1 $2\" = 'query v1.instance_id' ] || exit 2\n"
                    + (f"echo {datasource_id}\n" if datasource_id else "exit 1\n"))
    fake.chmod(0o755)
    script = INSTANCE_ID_SCRIPT.replace("/etc/condor/config.d", str(cdir))
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    assert subprocess.run(["sh", "-c", script], env=env, timeout=30).returncode == 0
    (tmp_path / "condor_config").write_text(f"LOCAL_DIR = {tmp_path}\n"
                                            f"LOCAL_CONFIG_DIR = {cdir}\n")
    env["CONDOR_CONFIG"] = str(tmp_path / "condor_config")
    res = subprocess.run([CONDOR_CONFIG_VAL, "CloudInstanceID", "CloudRequestID"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [f'"{datasource_id or "ec2a-0001"}"', '"ec2a-0001"']


def test_metadata_firewall_can_be_switched_off():
    doc = parse(render_user_data(make_ctx({"CLOUD_PLUGINS_PROTECT_METADATA": "false"})))
    assert "bootcmd" not in doc


# The metadata firewall (issue 16): what the boot script feeds iptables-restore
# and ip6tables-restore, with stand-in tools (unprivileged).  The rulesets are
# checked by the real tools, and applied, in tests/test_metadata_guard.py.

def _rules(text):
    """{table: [lines]} of an iptables-restore input."""
    out, table = {}, None
    for line in text.splitlines():
        if line.startswith("*"):
            table = out.setdefault(line[1:], [])
        elif line != "COMMIT":
            table.append(line)
    return out


@pytest.mark.parametrize("tool, addresses, other", [
    ("iptables", ["169.254.169.254"], ["fd00:ec2::254", "fe80::a9fe:a9fe"]),
    ("ip6tables", ["fd00:ec2::254", "fe80::a9fe:a9fe"], ["169.254.169.254"])])
def test_metadata_ruleset_guards_output_and_forward_for_each_address(tool, addresses, other):
    assert ctxmod.METADATA_ADDRESSES[tool] == tuple(addresses)   # EC2's and OpenStack's
    text = ctxmod.metadata_ruleset(tool)
    assert text.endswith("COMMIT\n") and text.count("COMMIT") == 2
    rules = _rules(text)
    assert set(rules) == {"filter", "mangle"}
    # Only root and condor pass the chain; every other uid is rejected.
    assert rules["filter"][:4] == [
        ":CP-METADATA - [0:0]", "-A CP-METADATA -m owner --uid-owner 0 -j RETURN",
        "-A CP-METADATA -m owner --uid-owner condor -j RETURN", "-A CP-METADATA -j REJECT"]
    assert sorted(rules["filter"][4:]) == sorted(
        [f"-I OUTPUT 1 -d {a} -j CP-METADATA" for a in addresses]
        + [f"-I FORWARD 1 -d {a} -j REJECT" for a in addresses])
    assert sorted(rules["mangle"]) == sorted(f"-I FORWARD 1 -d {a} -j DROP" for a in addresses)
    assert not any(a in text for a in other)


def _fake_tools(tmp_path, missing=(), fail=None):
    """Stand-ins for the four tools in tmp_path/bin: ``-S`` works, ``-C`` finds
    the lines of tmp_path/present-TOOL, -restore records its input and args
    (or, for ``fail`` = (tool, message), fails with message)."""
    cat, grep = shutil.which("cat"), shutil.which("grep")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("iptables", "ip6tables"):
        (tmp_path / f"present-{tool}").write_text("")
        scripts = {tool: (f'case " $* " in *" -C "*) exec {grep} -qxF -- "$*" '
                          f'{tmp_path}/present-{tool};; esac\nexit 0\n'),
                   f"{tool}-restore": (f'echo "$*" >{tmp_path}/{tool}.args\n'
                                       f'exec {cat} >{tmp_path}/{tool}.in\n')}
        if fail and fail[0] == tool:
            scripts[f"{tool}-restore"] = f"{cat} >/dev/null; echo '{fail[1]}' >&2; exit 1\n"
        for name, body in scripts.items():
            if name not in missing:
                (bin_ / name).write_text("#!/bin/sh\n" + body)
                (bin_ / name).chmod(0o755)
    return bin_


def _boot_script(tmp_path, bin_):
    res = subprocess.run(["/bin/sh", "-c", PROTECT_METADATA_SCRIPT], env={"PATH": str(bin_)},
                         capture_output=True, text=True, timeout=30)
    fed = {t: (tmp_path / f"{t}.in").read_text() if (tmp_path / f"{t}.in").exists() else None
           for t in ("iptables", "ip6tables")}
    return res, fed


def test_boot_script_feeds_each_family_its_ruleset_in_one_restore(tmp_path):
    res, fed = _boot_script(tmp_path, _fake_tools(tmp_path))
    assert res.returncode == 0 and res.stderr == "", res.stderr
    for tool in ("iptables", "ip6tables"):
        assert fed[tool] == ctxmod.metadata_ruleset(tool)
        assert (tmp_path / f"{tool}.args").read_text().split() == ["-w", "--noflush"]


def test_boot_script_inserts_no_hook_rule_that_is_already_there(tmp_path):
    """A second run in one boot: the chain is refilled, present jumps stay single."""
    bin_ = _fake_tools(tmp_path)
    first = ("filter", "OUTPUT", "-d fd00:ec2::254 -j CP-METADATA")
    present = {"iptables": [("filter", "OUTPUT", "-d 169.254.169.254 -j CP-METADATA"),
                            ("filter", "FORWARD", "-d 169.254.169.254 -j REJECT"),
                            ("mangle", "FORWARD", "-d 169.254.169.254 -j DROP")],
               "ip6tables": [first]}
    for tool, rules in present.items():
        (tmp_path / f"present-{tool}").write_text(
            "".join(f"-w -t {t} -C {c} {r}\n" for t, c, r in rules))
    res, fed = _boot_script(tmp_path, bin_)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert fed["iptables"] == ctxmod.metadata_ruleset("iptables", present["iptables"])
    assert "-I " not in fed["iptables"] and "-A CP-METADATA -j REJECT" in fed["iptables"]
    assert fed["ip6tables"] == ctxmod.metadata_ruleset("ip6tables", [first])
    assert fed["ip6tables"].count("-I ") == 5


@pytest.mark.parametrize("missing, fail, error", [
    (("ip6tables",), None, "ip6tables: not found"),
    ((), ("ip6tables", "ip6tables-restore: Address family not supported by protocol"),
     "ip6tables-restore: Address family not supported by protocol")])
def test_a_family_that_cannot_be_firewalled_is_named_and_the_other_is(tmp_path, missing, fail,
                                                                       error):
    res, fed = _boot_script(tmp_path, _fake_tools(tmp_path, missing, fail))
    assert res.returncode == 0     # the node joins all the same (the policy)
    assert fed["iptables"] == ctxmod.metadata_ruleset("iptables")
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("condor_plugins: cannot firewall the metadata service with "
                           "ip6tables (jobs may read the user data): ") and error in line, line


def test_ccb_and_poweroff_can_be_switched_off():
    files = written(parse(render_user_data(make_ctx({
        "CLOUD_PLUGINS_EC2A_CCB_ADDRESS": "none",
        "CLOUD_PLUGINS_EC2A_POWEROFF_SCRIPT": "none"}))))
    conf = files["/etc/condor/config.d/60-cloud-instance.conf"][2].decode().splitlines()
    assert "CLOUD_PLUGINS_CCB_ADDRESS =" in conf
    assert "CLOUD_PLUGINS_POWEROFF_SCRIPT =" in conf
    default = written(parse(render_user_data(make_ctx())))
    conf = default["/etc/condor/config.d/60-cloud-instance.conf"][2].decode()
    assert "CCB_ADDRESS" not in conf  # the fragment's default: the central manager


# ------------------------------------------------------------------ YAML writer

CONTENTS = [b"", b"\n", b"\n\n", b"x", b"x\n", b"x\n\n\n", b"  leading spaces\n", b"\n\nlate\n",
            b"\ttab first\n", b"trailing spaces   \n   \n", b"# not a comment\n--- \n...\n",
            b"key: value\n- item\n", "caf\u00e9 \u2028 \ufeff \x85 \x7f\n".encode(),
            b"\r\nwindows\r\n", b"\xff\xfe binary", "emoji \U0001F600\n".encode(),
            b'"quotes" and \\backslashes\\\n']


@pytest.mark.parametrize("content", CONTENTS)
def test_file_contents_round_trip_exactly(content):
    ctx = make_ctx()
    from dataclasses import replace
    ctx = replace(ctx, extra_files=(ExtraFile("/etc/site/file", content),))
    assert written(parse(render_user_data(ctx)))["/etc/site/file"][2] == content


def test_file_contents_round_trip_property():
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings, strategies as st
    from dataclasses import replace
    ctx = make_ctx()

    @settings(max_examples=150, deadline=None, database=None)
    @given(st.one_of(st.binary(max_size=60), st.text(max_size=60).map(str.encode)))
    def check(content):
        doc = render_user_data(replace(ctx, extra_files=(ExtraFile("/etc/x", content),)))
        assert written(parse(doc))["/etc/x"][2] == content

    check()


# ------------------------------------------------------------------ knob table and docs

def test_knob_table_is_disjoint_from_the_provisioner_table():
    assert not {k.name for k in ctxmod.KNOBS} & {k.name for k in config.KNOBS}
    for knob in ctxmod.KNOBS:
        if knob.default or knob.type == "str":  # empty: derived (MAX_LIFETIME)
            config.PARSERS[knob.type](knob.default)  # every default parses


def test_knobs_reach_the_provider_as_settings():
    param = dict(BASE, CLOUD_PLUGINS_EC2A_REGION="eu-west-1")
    assert config.load(param).entry("ec2a").settings["REGION"] == "eu-west-1"
    assert make_ctx({"CLOUD_PLUGINS_EC2A_REGION": "eu-west-1"}).region == "eu-west-1"


def test_entry_only_knobs_ignore_the_nodes_own_global_names():
    # CLOUD_PLUGINS_ZONE is the node's knob (docs/knobs.md), not a fallback.
    assert make_ctx({"CLOUD_PLUGINS_ZONE": "zz"}).zone == "unknown"
    assert make_ctx({"CLOUD_PLUGINS_CVMFS_QUOTA_LIMIT": "30000"}).cvmfs.quota_limit_mb == 30000


def test_generated_docs_are_up_to_date():
    path = REPO / "docs" / "knobs-contextualisation.md"
    assert path.read_text() == ctxmod.knobs_markdown(), (
        "docs/knobs-contextualisation.md is stale: "
        "python3 -m condor_plugins.node.contextualize > docs/knobs-contextualisation.md")


# ------------------------------------------------------------------ cloud-init writes it

def test_cloud_init_write_files_module_produces_the_intended_files(tmp_path, monkeypatch):
    """cloud-init's own write_files handler, on the parsed document, with every
    path moved under tmp_path and chown recorded instead of done (unprivileged)."""
    cc_write_files = pytest.importorskip("cloudinit.config.cc_write_files")
    from cloudinit import util
    chowns = {}

    def chownbyname(path, user=None, group=None):
        if user or group:
            chowns[str(path)] = f"{user}:{group}"

    monkeypatch.setattr(util, "chownbyname", chownbyname)
    text = render_user_data(make_ctx(customised_param(tmp_path)))
    items = parse(text)["write_files"]
    root = tmp_path / "vm"
    for item in items:
        item["path"] = str(root) + item["path"]
    cc_write_files.write_files("write_files", items, "root:root")
    expected = written(parse(text))
    for path, (owner, perms, data) in expected.items():
        on_disk = Path(str(root) + path)
        assert on_disk.read_bytes() == data, path
        assert f"{stat.S_IMODE(on_disk.stat().st_mode):04o}" == perms, path
        assert chowns[str(on_disk)] == owner, path


def test_typical_documents_fit_ec2_user_data_limit(user_data):
    # EC2 accepts at most 16 KB of user data (before base64).
    _, text = user_data
    assert len(text.encode()) < 16 * 1024


def test_a_real_idtoken_is_written_once_and_redacted(tmp_path):
    """A token minted as Provisioner.mint_token does (plus a lifetime)."""
    tool = shutil.which("condor_token_create")
    need(tool, "condor_token_create")
    key = tmp_path / "POOL"
    key.write_bytes(os.urandom(64))
    key.chmod(0o600)
    (tmp_path / "condor_config").write_text(
        f"LOCAL_DIR = {tmp_path}\nSEC_PASSWORD_DIRECTORY = {tmp_path}\n"
        f"SEC_TOKEN_POOL_SIGNING_KEY_FILE = {key}\nTRUST_DOMAIN = cm.site.example.org\n")
    res = subprocess.run([tool, "-identity", "ec2a-0001@cloud-worker.example.org", "-key", "POOL",
                          "-authz", "ADVERTISE_STARTD", "-authz", "ADVERTISE_MASTER",
                          "-authz", "READ", "-lifetime", "3600"],
                         env=dict(os.environ, CONDOR_CONFIG=str(tmp_path / "condor_config")),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip()
    text = render_user_data(make_ctx(token=token))
    assert text.count(token) == 1
    assert written(parse(text))["/etc/condor/tokens.d/cloud-worker"][2] == (token + "\n").encode()
    shown = redact(text)
    assert all(part not in shown for part in token.split("."))


@pytest.mark.parametrize("extra, expected", [
    ({}, False), ({"CLOUD_PLUGINS_EC2A_SPOT": "true"}, True),
    ({"CLOUD_PLUGINS_EC2A_SPOT": "true", "CLOUD_PLUGINS_EC2A_INTERRUPTIBLE": "false"}, False),
    ({"CLOUD_PLUGINS_EC2A_INTERRUPTIBLE": "true"}, True)])
def test_spot_entries_advertise_cloud_interruptible(extra, expected):
    from condor_plugins.provisioning.provisioner import template_ad
    param = dict(BASE, **extra)
    cfg = config.load(param)
    assert make_ctx(extra).interruptible is expected
    assert template_ad(cfg.entry("ec2a"), cfg, param)["CloudInterruptible"] is expected


def test_bad_spot_setting_names_the_knob():
    with pytest.raises(ContextError, match="CLOUD_PLUGINS_EC2A_SPOT"):
        make_ctx({"CLOUD_PLUGINS_EC2A_SPOT": "maybe"})


def test_node_control_knobs_are_checked_and_written():
    """LEASE at least 3 cycles; MAX_LIFETIME defaults to, and may not exceed,
    the worker token's lifetime; the values reach the node's instance file."""
    ctx = make_ctx({"CLOUD_PLUGINS_WORKER_TOKEN_LIFETIME": "2d"})
    assert ctx.max_lifetime == 2 * 86400 and ctx.lease == 1800
    with pytest.raises(ContextError, match="CLOUD_PLUGINS_EC2A_MAX_LIFETIME.*WORKER_TOKEN"):
        make_ctx({"CLOUD_PLUGINS_EC2A_MAX_LIFETIME": "8d"})
    with pytest.raises(ContextError, match="CLOUD_PLUGINS_LEASE = 100.*3 provisioner cycles"):
        make_ctx({"CLOUD_PLUGINS_LEASE": "100"})
    files = written(parse(render_user_data(make_ctx({"CLOUD_PLUGINS_EC2A_LEASE": "1h"}))))
    conf = files["/etc/condor/config.d/60-cloud-instance.conf"][2].decode()
    assert "CLOUD_PLUGINS_LEASE = 3600" in conf and "CLOUD_PLUGINS_MAX_LIFETIME = 604800" in conf
    script = files["/usr/libexec/condor/condor_cloud_node_control"][2].decode()
    assert script.startswith("#!/bin/sh") and "CloudRetireRequests" in script
