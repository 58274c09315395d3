"""The RPM (packaging/rpm/condor-cloud-plugins.spec, built by `make rpm`):
paths and %config(noreplace) files, metadata, the payload extracted with
rpm2cpio runs its commands, and the shipped fragments are inert until the
admin's file enables them.

Builds one RPM from the work tree into a temporary _topdir (any user)."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "packaging" / "rpm" / "condor-cloud-plugins.spec"
BUILD = REPO / "packaging" / "rpm" / "build-rpm"
ADMIN_FILE = "/etc/condor/config.d/99-cloud-plugins-local.conf"
CE_ADMIN_FILE = "/etc/condor-ce/config.d/99-cloud-plugins-local.conf"
HOOKS = [f"/usr/libexec/condor/condor_cloud_route_{h}"
         for h in ("translate", "update", "finalize", "cleanup")]
UNIT = "/usr/lib/systemd/system/condor-cloud-provisioner.service"
RPMFILE_CONFIG = 1 << 0
RPMFILE_NOREPLACE = 1 << 4

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("rpmbuild", "rpm", "rpm2cpio", "cpio")),
    reason="needs rpmbuild, rpm2cpio and cpio (in dev/sandbox)")


def _setup_cfg():
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(REPO / "setup.cfg")
    return cfg


VERSION = _setup_cfg()["metadata"]["version"]
SCRIPTS = [line.split("=")[0].strip() for line in
           _setup_cfg()["options.entry_points"]["console_scripts"].splitlines() if line.strip()]


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    p = subprocess.run(cmd, **kw)
    assert p.returncode == 0, f"{cmd} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def rpm_file(tmp_path_factory):
    """Built as `make rpm` does: a source tarball (here of the work tree, as
    the sandbox has no git), then rpmbuild on it."""
    tmp = tmp_path_factory.mktemp("rpm")
    sdist = tmp / "sources.tar.gz"
    run([str(BUILD), "--source", "tree", "--sdist", str(sdist)])
    names = run(["tar", "-tzf", str(sdist)]).stdout.split()
    top = f"condor-cloud-plugins-{VERSION}/"
    assert all(n.startswith(top) for n in names)
    assert f"{top}packaging/rpm/condor-cloud-plugins.spec" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith(f"{top}.git/")]
    out = run([str(BUILD), "--tarball", str(sdist), "--topdir", str(tmp / "top"),
               "--outdir", str(tmp / "out")]).stdout.strip().splitlines()[-1]
    path = Path(out)
    assert path.is_file() and path.name == f"condor-cloud-plugins-{VERSION}-1.noarch.rpm"
    return path


@pytest.fixture(scope="module")
def rpmq(rpm_file, tmp_path_factory):
    """rpm -qp … on the built package, with a private (empty) rpm database."""
    db = tmp_path_factory.mktemp("rpmdb")

    def q(*args):
        return run(["rpm", "--dbpath", str(db), "-qp", *args, str(rpm_file)]).stdout
    return q


@pytest.fixture(scope="module")
def payload(rpm_file, tmp_path_factory):
    """The payload extracted into a temporary root: (root, sitelib inside it)."""
    root = tmp_path_factory.mktemp("root")
    cpio = subprocess.run(f"rpm2cpio '{rpm_file}' | cpio -idm --quiet", shell=True,
                          cwd=root, capture_output=True, text=True, timeout=60)
    assert cpio.returncode == 0, cpio.stderr
    inits = list(root.glob("usr/lib*/python3*/site-packages/condor_plugins/__init__.py"))
    assert len(inits) == 1, inits
    return root, inits[0].parent.parent


def sitelib_of(files):
    [init] = [f for f in files if f.endswith("/condor_plugins/__init__.py")]
    return init[:-len("/condor_plugins/__init__.py")]


# ---------------------------------------------------------------- the package

def test_paths(rpmq):
    """rpm -qlp: every file where an EL admin expects it, nothing else."""
    files = set(rpmq("-l").split())
    sitelib = sitelib_of(files)
    assert re.fullmatch(r"/usr/lib/python3\.\d+/site-packages", sitelib), sitelib
    src = REPO / "condor_plugins"
    modules = {f"{sitelib}/condor_plugins/{p.relative_to(src).as_posix()}"
               for p in src.rglob("*.py")}
    info = f"{sitelib}/condor_cloud_plugins-{VERSION}.dist-info"
    fragments = {f"/usr/share/condor/config.d/{p.name}" for p in (REPO / "config.d").glob("*.conf")}
    assert {"/usr/share/condor/config.d/10-cloud-plugins-defaults.conf",
            "/usr/share/condor/config.d/30-cloud-provisioner.conf"} <= fragments
    ce = {f"/usr/share/condor-ce/config.d/{p.name}" for p in (REPO / "config.d/ce").glob("*.conf")}
    assert "/usr/share/condor-ce/config.d/50-cloud-routes.conf" in ce
    expected = modules | fragments | ce | set(HOOKS) | {
        CE_ADMIN_FILE,
        "/usr/bin/condor_submit_cloud",
        "/usr/bin/condor_cloud",
        "/usr/libexec/condor/condor_cloud_provisioner",
        ADMIN_FILE,
        "/usr/share/condor-cloud-plugins/worker/50-cloud-worker.conf",
        "/usr/share/condor-cloud-plugins/worker/55-cloud-pilot.conf",
        "/usr/share/condor-cloud-plugins/grafana/condor-cloud.json",
        UNIT,
        *(f"{info}/{n}" for n in ("METADATA", "entry_points.txt", "top_level.txt",
                                  "INSTALLER", "RECORD")),
    }
    # Man pages (gzipped where the build compresses them).
    man = {f for f in files if f.startswith("/usr/share/man/man1/")}
    assert {re.sub(r"\.1(\.gz)?$", "", f.rsplit("/", 1)[1]) for f in man} == set(SCRIPTS)
    expected |= man
    missing = expected - files
    assert not missing, f"missing from the RPM: {sorted(missing)}"
    # Besides these: directories, the package's byte code (EL's brp step) and docs.
    extra = {f for f in files - expected
             if not f.startswith("/usr/share/doc/")
             and "/__pycache__" not in f
             and f not in {info, f"{sitelib}/condor_plugins",
                           *(f"{sitelib}/condor_plugins/{d.relative_to(src).as_posix()}"
                             for d in src.rglob("*")
                             if d.is_dir() and "__pycache__" not in d.parts),
                           "/usr/share/condor-cloud-plugins",
                           "/usr/share/condor-cloud-plugins/worker",
                           "/usr/share/condor-cloud-plugins/grafana"}}
    assert not extra, f"unexpected in the RPM: {sorted(extra)}"
    assert any(f.endswith("/docs/knobs.md") for f in files)
    # No directory that HTCondor's (or HTCondor-CE's) own package owns.
    for d in ("/etc/condor/config.d", "/usr/share/condor/config.d", "/usr/libexec/condor",
              "/usr/bin", "/etc/condor-ce/config.d", "/usr/share/condor-ce/config.d"):
        assert d not in files


GRAM_FILES = {
    "/usr/share/perl5/vendor_perl/Globus/GRAM/JobManager/cloud.pm",
    "/usr/share/perl5/vendor_perl/Globus/GRAM/JobManager/nocloud.pm",
    "/usr/share/globus/globus_gram_job_manager/cloud.rvf",
    "/usr/share/globus/globus_gram_job_manager/nocloud.rvf",
}
GRAM_CONFIG = {"/etc/globus/globus-cloud.conf", "/etc/grid-services/available/jobmanager-cloud",
               "/etc/grid-services/available/jobmanager-nocloud"}


def test_gram_subpackage(rpm_file, tmp_path):
    """condor-cloud-plugins-gram: the GRAM types next to jobmanager-condor, the
    service entries and globus-cloud.conf as %config(noreplace)."""
    [gram] = rpm_file.parent.glob(f"condor-cloud-plugins-gram-{VERSION}-1.noarch.rpm")
    q = ["rpm", "--dbpath", str(tmp_path), "-qp"]
    files = set(run(q + ["-l", str(gram)]).stdout.split())
    assert GRAM_FILES | GRAM_CONFIG <= files, sorted(files)
    assert set(run(q + ["-c", str(gram)]).stdout.split()) == GRAM_CONFIG
    fflags = dict(line.rsplit(" ", 1) for line in run(
        q + ["--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", str(gram)]).stdout.splitlines())
    assert all(set(fflags[f]) >= {"c", "n"} for f in GRAM_CONFIG)
    requires = run(q + ["-R", str(gram)]).stdout
    assert "globus-gram-job-manager-condor" in requires
    assert f"condor-cloud-plugins = {VERSION}-1" in requires
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(f"rpm2cpio '{gram}' | cpio -idm --quiet", shell=True, cwd=root, check=True,
                   timeout=60)
    for f in GRAM_FILES | GRAM_CONFIG:  # byte for byte the repository's
        name = "cloud.rvf" if f.endswith(".rvf") else Path(f).name
        assert (root / f.lstrip("/")).read_bytes() == (REPO / "jobmanager" / name).read_bytes(), f


def test_every_console_script_packaged(rpmq):
    """Each console script of setup.cfg has a launcher in the RPM (the spec
    lists them one by one: a new one must be added there)."""
    files = rpmq("-l").split()
    text = _setup_cfg()["options.entry_points"]["console_scripts"]
    for line in filter(None, (l.strip() for l in text.splitlines())):
        name = line.split("=")[0].strip()
        assert f"/usr/bin/{name}" in files or f"/usr/libexec/condor/{name}" in files, name


def test_man_pages_from_the_parsers(payload, tmp_path):
    """Every command has a man page generated from its argument parser: it
    renders without a warning and names every option the parser has."""
    import gzip
    from condor_plugins import manpages
    root, _ = payload
    for command in SCRIPTS:
        [page] = (root / "usr/share/man/man1").glob(f"{command}.1*")
        text = (gzip.decompress(page.read_bytes()) if page.suffix == ".gz"
                else page.read_bytes()).decode()
        assert text.startswith(f".TH {command.upper()} 1 ") and f"condor_plugins {VERSION}" in text
        parser = manpages._parser(command)
        for action in parser._actions:
            for option in action.option_strings:
                assert option.replace("-", "\\-") in text, (command, option)
        plain = tmp_path / "page.1"
        plain.write_text(text)
        out = run(["nroff", "-man", "-ww", "-z", str(plain)], env=dict(os.environ, LANG="C.UTF-8"))
        assert not out.stderr.strip(), (command, out.stderr)


def test_payload_versions(payload, tmp_path):
    """--version on every command of the payload."""
    root, sitelib = payload
    for command in SCRIPTS:
        [exe] = [root / d / command for d in ("usr/bin", "usr/libexec/condor")
                 if (root / d / command).exists()]
        out = run([str(exe), "--version"], env=payload_env(sitelib), cwd=tmp_path).stdout
        assert out.splitlines()[0].startswith(f"{command} {VERSION}"), (command, out)


def test_config_noreplace(rpmq):
    """rpm -qcp lists only the admin's files (HTCondor's and HTCondor-CE's),
    flagged %config(noreplace); the shipped defaults are not %config (an
    update replaces them)."""
    assert sorted(rpmq("-c").split()) == sorted([ADMIN_FILE, CE_ADMIN_FILE])
    flags = {}
    for line in rpmq("--qf", "[%{FILENAMES} %{FILEFLAGS}\n]").splitlines():
        name, flag = line.rsplit(" ", 1)
        flags[name] = int(flag)
    fflags = dict(line.rsplit(" ", 1) for line in
                  rpmq("--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]").splitlines())
    for admin in (ADMIN_FILE, CE_ADMIN_FILE):
        assert flags[admin] & RPMFILE_CONFIG
        assert flags[admin] & RPMFILE_NOREPLACE
        # rpm's own rendering: c = %config, n = noreplace.
        assert set(fflags[admin]) >= {"c", "n"}
    for name, flag in flags.items():
        if name not in (ADMIN_FILE, CE_ADMIN_FILE):
            assert not flag & (RPMFILE_CONFIG | RPMFILE_NOREPLACE), name


def test_metadata(rpmq):
    """noarch, the setup.cfg version, the required packages, and the systemd
    scriptlets for the unit (which no preset enables)."""
    name, version, arch = rpmq("--qf", "%{NAME} %{VERSION} %{ARCH}").split()
    assert (name, version, arch) == ("condor-cloud-plugins", VERSION, "noarch")
    m = re.search(r"^%\{!\?cp_version:%global cp_version (\S+)\}$", SPEC.read_text(), re.M)
    assert m and m.group(1) == VERSION, "the spec's default version differs from setup.cfg"
    requires = rpmq("-R")
    for req in ("condor >= 23", "python3-boto3", "python3-novaclient", "python3-openstacksdk",
                "python3-condor >= 23", "python3-pyyaml"):
        assert req in requires, requires
    scripts = rpmq("--scripts")
    for verb in ("preset", "disable --now", "try-restart"):
        assert f"{verb} condor-cloud-provisioner.service" in scripts, scripts


# ---------------------------------------------------------------- the payload

def payload_env(sitelib):
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8", "PYTHONPATH": str(sitelib), "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.mark.parametrize("script, expect", [
    ("usr/bin/condor_submit_cloud", "--mode"),
    ("usr/bin/condor_cloud", "status"),
    ("usr/libexec/condor/condor_cloud_provisioner", "--once"),
])
def test_payload_runs_help(payload, tmp_path, script, expect):
    """The extracted launchers (#!/usr/bin/python3 -s) run from the temporary
    root, importing the package from its extracted site-lib, not the source."""
    root, sitelib = payload
    exe = root / script
    assert os.access(exe, os.X_OK)
    assert exe.read_text().startswith("#!/usr/bin/python3 -s\n")
    p = run([str(exe), "--help"], env=payload_env(sitelib), cwd=tmp_path)
    assert expect in p.stdout


def test_payload_route_hook_runs(payload, tmp_path):
    """The translate hook from the payload's libexec routes a job ad."""
    root, sitelib = payload
    exe = root / HOOKS[0].lstrip("/")
    job = ('[ Name = "CloudPoolHook"; GridResource = "condor s c" ]\n------\nClusterId = 1\n'
           'ProcId = 0\nOwner = "u"\nJobUniverse = 5\nCmd = "/bin/true"\nCloudMode = "any"\n')
    p = run([str(exe)], env=payload_env(sitelib), cwd=tmp_path, input=job)
    assert "Remote_Requirements = TARGET.IsCloudNode =?= True" in p.stdout, p.stdout


def test_payload_imports_and_entry_points(payload, tmp_path):
    """From the payload: the package and its metadata come from the extracted
    site-lib, and the provider entry points are registered."""
    root, sitelib = payload
    code = ("import condor_plugins, importlib.metadata as m, condor_plugins.providers as p;"
            "d = m.distribution('condor-cloud-plugins');"
            "print(condor_plugins.__file__); print(d.locate_file('')); print(d.version);"
            "print(','.join(p.available()))")
    out = run(["/usr/bin/python3", "-s", "-c", code], env=payload_env(sitelib),
              cwd=tmp_path).stdout.splitlines()
    assert out[0] == str(sitelib / "condor_plugins" / "__init__.py")
    assert Path(out[1]) == sitelib
    assert out[2] == VERSION
    assert "local" in out[3].split(",")


def test_unit(payload):
    text = (payload[0] / UNIT.lstrip("/")).read_text()
    # Root: condor_token_create -key POOL reads the root-only pool signing key.
    for line in ("Type=simple", "User=root", "NoNewPrivileges=true", "Restart=on-failure",
                 "ExecStart=/usr/libexec/condor/condor_cloud_provisioner",
                 # systemctl reload is condor_reconfig; a restart stops no node.
                 "ExecReload=/bin/kill -HUP $MAINPID", "KillMode=process",
                 "WantedBy=multi-user.target"):
        assert line in text.splitlines(), line


# ------------------------------------------------------- inert until enabled

SITE = """\
RELEASE_DIR = /usr
LOCAL_DIR = {tmp}/local
LIBEXEC = /usr/libexec/condor
use SECURITY: recommended_v9_0
use ROLE: Personal
JOB_TRANSFORM_NAMES = SiteOne
COLLECTOR_REQUIREMENTS = MyType =!= "Bogus"
LOCAL_CONFIG_DIR = {dirs}
"""
KEYS = ("DAEMON_LIST", "JOB_TRANSFORM_NAMES", "COLLECTOR_REQUIREMENTS",
        "SUBMIT_REQUIREMENT_NAMES", "ALLOW_ADVERTISE_STARTD", "CLOUD_PROVISIONER",
        "JOB_ROUTER_ROUTE_NAMES", "JOB_ROUTER_ROUTE_CloudPool", "CLOUDROUTE_HOOK_TRANSLATE_JOB",
        "JOB_ROUTER_HOOK_KEYWORD")


def config_values(tmp, name, dirs):
    """condor_config_val KEYS with a minimal site config whose LOCAL_CONFIG_DIR
    is DIRS (as HTCondor's RPM: /usr/share/condor/config.d, then /etc)."""
    cfg = tmp / f"{name}.config"
    cfg.write_text(SITE.format(tmp=tmp, dirs=",".join(str(d) for d in dirs)))
    env = dict(os.environ, CONDOR_CONFIG=str(cfg))
    out = {}
    for key in KEYS:
        p = subprocess.run(["condor_config_val", key], env=env, capture_output=True,
                           text=True, timeout=30)
        out[key] = p.stdout.strip() if p.returncode == 0 else None
    out["_config"] = cfg
    return out


def words(v):
    return (v or "").replace(",", " ").split()


@pytest.fixture(scope="module")
def configs(payload, tmp_path_factory):
    if not shutil.which("condor_config_val"):
        pytest.skip("needs HTCondor's condor_config_val")
    root, _ = payload
    tmp = tmp_path_factory.mktemp("cfg")
    (tmp / "empty").mkdir()
    shipped = [root / "usr/share/condor/config.d", root / "etc/condor/config.d"]
    # The admin's file with its examples uncommented.
    enabled_etc = tmp / "etc-enabled"
    enabled_etc.mkdir()
    text = (root / ADMIN_FILE.lstrip("/")).read_text()
    (enabled_etc / "99-cloud-plugins-local.conf").write_text(
        re.sub(r"^#(CLOUD_PLUGINS_[A-Z_]+ =)", r"\1", text, flags=re.M))
    return (config_values(tmp, "without", [tmp / "empty"]),
            config_values(tmp, "shipped", shipped),
            config_values(tmp, "enabled", [shipped[0], enabled_etc]))


def test_shipped_fragments_inert(configs):
    """Installing the RPM (payload fragments + the admin's commented file)
    leaves the daemons, the schedd transforms and submit requirements as
    they were."""
    without, shipped, _ = configs
    assert "SCHEDD" in words(without["DAEMON_LIST"])
    for key in ("DAEMON_LIST", "JOB_TRANSFORM_NAMES", "SUBMIT_REQUIREMENT_NAMES",
                "JOB_ROUTER_ROUTE_NAMES", "JOB_ROUTER_HOOK_KEYWORD"):
        assert words(shipped[key]) == words(without[key]), key
    # Additive to the site's ALLOW_DAEMON (the collector still admits no worker:
    # see the next test).
    assert words(shipped["ALLOW_ADVERTISE_STARTD"])[:-1] == ["condor@*", "condor_pool@*"]


def evaluate(expr, ad):
    """``expr`` as the collector evaluates it: htcondor2 registers HTCondor's
    own ClassAd functions (splitUserName...); with classad2 alone they are
    errors, so the result depended on which test ran first in the process."""
    import classad2
    import htcondor2  # noqa: F401
    return classad2.ExprTree(expr).eval(ad)


def test_collector_requirements_inert(configs):
    """COLLECTOR_REQUIREMENTS gains terms (the text differs) but, until cloud
    workers are admitted, decides as before for every ad but a cloud node's:
    a site ad, a bogus ad; an IsCloudNode ad or a worker token is refused."""
    classad2 = pytest.importorskip("classad2")
    without, shipped, enabled = configs
    domain = "@cloud-worker."
    ads = {
        "site startd (FS)": ({"MyType": "Machine", "AuthenticationMethod": "FS",
                              "AuthenticatedIdentity": "condor@site"}, True),
        "site startd (IDTOKENS)": ({"MyType": "Machine", "AuthenticationMethod": "IDTOKENS",
                                    "AuthenticatedIdentity": "condor@site"}, True),
        "bogus": ({"MyType": "Bogus"}, False),
    }
    for name, (attrs, expected) in ads.items():
        ad = classad2.ClassAd(attrs)
        for cfg in (without, shipped):
            assert evaluate(cfg["COLLECTOR_REQUIREMENTS"], ad) is expected, (name, cfg)
    assert domain in shipped["COLLECTOR_REQUIREMENTS"]
    uid_domain = re.search(r'@cloud-worker\.([^$"]*)\$', shipped["COLLECTOR_REQUIREMENTS"]).group(1)
    attrs = {"MyType": "Machine", "IsCloudNode": True, "AuthenticationMethod": "IDTOKENS",
             "AuthenticatedIdentity": f"vm1@cloud-worker.{uid_domain}",
             "Name": "slot1@vm1@ip-10-0-0-7", "Machine": "ip-10-0-0-7", "CloudRequestID": "vm1"}
    worker = classad2.ClassAd(attrs)
    assert evaluate(without["COLLECTOR_REQUIREMENTS"], worker) is True
    assert evaluate(shipped["COLLECTOR_REQUIREMENTS"], worker) is False
    assert evaluate(enabled["COLLECTOR_REQUIREMENTS"], worker) is True
    # Issue 16: only its own ads (the token names request vm1).
    for forged in ({"CloudRequestID": "vm2"}, {"Name": "slot1@vm2@ip-10-0-0-7"},
                   {"Machine": "ip-10-0-0-8"}, {"Name": "vm1@ip-10-0-0-7@x"}):
        assert evaluate(enabled["COLLECTOR_REQUIREMENTS"],
                        classad2.ClassAd(dict(attrs, **forged))) is False, forged
    master = dict(attrs, MyType="DaemonMaster", Name="vm1@ip-10-0-0-7")
    assert evaluate(enabled["COLLECTOR_REQUIREMENTS"], classad2.ClassAd(master)) is True


def test_admin_file_enables(configs, payload):
    """Uncommenting the knobs in /etc/condor/config.d/99-cloud-plugins-local.conf
    (read after /usr/share/condor/config.d) turns the fragments on: the master
    runs the provisioner from the payload's libexec, the schedd transforms and
    the submit requirement are in place, and the job router routes to the
    cloud pool with hooks from the payload's libexec."""
    root, _ = payload
    without, _, enabled = configs
    assert words(enabled["DAEMON_LIST"]) == words(without["DAEMON_LIST"]) + [
        "CLOUD_PROVISIONER", "JOB_ROUTER"]
    assert words(enabled["JOB_ROUTER_ROUTE_NAMES"]) == ["CloudPool"]
    assert enabled["JOB_ROUTER_ROUTE_CloudPool"].count(
        'GridResource = "condor cloud-schedd.example.org cloud-cm.example.org:9618"') == 1
    assert (root / enabled["CLOUDROUTE_HOOK_TRANSLATE_JOB"].lstrip("/")).is_file()
    assert enabled["CLOUD_PROVISIONER"] == "/usr/libexec/condor/condor_cloud_provisioner"
    assert (root / enabled["CLOUD_PROVISIONER"].lstrip("/")).is_file()
    assert words(enabled["JOB_TRANSFORM_NAMES"]) == ["SiteOne", "CloudPluginsCloud",
                                                      "CloudPluginsLocal"]
    assert words(enabled["SUBMIT_REQUIREMENT_NAMES"]) == ["CloudPluginsMode"]


def test_site_files_that_append_keep_the_additions(payload, tmp_path):
    """As the admin's file says: a site file in /etc/condor/config.d that
    appends to DAEMON_LIST / JOB_TRANSFORM_NAMES keeps the plugins' additions
    (one that sets them outright drops them: the /usr/share fragments come
    first)."""
    if not shutil.which("condor_config_val"):
        pytest.skip("needs HTCondor's condor_config_val")
    root, _ = payload
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "50-site.conf").write_text(
        "DAEMON_LIST = $(DAEMON_LIST) SCHEDD\nJOB_TRANSFORM_NAMES = $(JOB_TRANSFORM_NAMES) SiteTwo\n")
    (etc / "99-cloud-plugins-local.conf").write_text(
        "CLOUD_PLUGINS_RUN_PROVISIONER = True\nCLOUD_PLUGINS_SUBMIT_TRANSFORM = True\n")
    got = config_values(tmp_path, "appending", [root / "usr/share/condor/config.d", etc])
    assert "CLOUD_PROVISIONER" in words(got["DAEMON_LIST"])
    assert "SCHEDD" in words(got["DAEMON_LIST"])
    assert words(got["JOB_TRANSFORM_NAMES"]) == ["SiteOne", "CloudPluginsCloud",
                                                  "CloudPluginsLocal", "SiteTwo"]


def test_admin_file_examples_are_a_valid_provisioner_config(configs, payload, tmp_path):
    """With every example in the admin's file uncommented, the packaged
    provisioner (from the payload) loads a valid configuration."""
    pytest.importorskip("htcondor2")
    _, sitelib = payload
    code = ("import htcondor2; from condor_plugins import config;"
            "c = config.load(htcondor2.param);"
            "print(' '.join(f'{e.name}:{e.type}' for e in c.entries))")
    env = dict(payload_env(sitelib), CONDOR_CONFIG=str(configs[2]["_config"]))
    out = run(["/usr/bin/python3", "-s", "-c", code], env=env, cwd=tmp_path).stdout.split()
    assert out == ["mycloud:local"]


def test_fresh_source_tarball_from_git(tmp_path):
    """`make rpm` builds from `git archive HEAD`: the committed tree carries
    everything the spec reads (skipped where git is not installed)."""
    if not shutil.which("git") or not (REPO / ".git").exists():
        pytest.skip("no git here (dev/sandbox has none; `make rpm` archives on the host)")
    files = set(run(["git", "-c", "safe.directory=*", "-C", str(REPO), "ls-files"]).stdout.split())
    for f in ("packaging/rpm/condor-cloud-plugins.spec", "packaging/rpm/pyinstall.py",
              "packaging/rpm/99-cloud-plugins-local.conf",
              "packaging/systemd/condor-cloud-provisioner.service", "setup.cfg", "README.md"):
        assert f in files, f


def test_payload_fragments_are_the_sources(payload):
    """The shipped fragments are config.d/ byte for byte: the site ones in
    /usr/share/condor/config.d, the VM one only as a template (never in a
    directory HTCondor reads on the site hosts)."""
    root, _ = payload
    for src in (REPO / "config.d").glob("*.conf"):
        assert (root / "usr/share/condor/config.d" / src.name).read_bytes() == src.read_bytes()
    for src in (REPO / "config.d" / "worker").glob("*.conf"):
        assert (root / "usr/share/condor-cloud-plugins/worker" / src.name).read_bytes() \
            == src.read_bytes()
        assert not (root / "usr/share/condor/config.d" / src.name).exists()
        assert not (root / "etc/condor/config.d" / src.name).exists()


def test_admin_file_knobs_documented(payload):
    """Every knob the admin's file suggests is a documented one, and every
    line in it is a comment or blank (inert as shipped)."""
    root, _ = payload
    text = (root / ADMIN_FILE.lstrip("/")).read_text()
    assert all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())
    docs = "".join(p.read_text() for p in (REPO / "docs").glob("knobs*.md"))
    entries = set()
    for name in re.findall(r"^#(CLOUD_PLUGINS_[A-Z0-9_]+) =", text, re.M):
        if name == "CLOUD_PLUGINS_PROVIDERS":
            continue
        m = re.fullmatch(r"CLOUD_PLUGINS_(MYCLOUD)_([A-Z_]+)", name)
        if m:  # an entry's setting: CLOUD_PLUGINS_<ENTRY>_<KNOB> or [<ENTRY>_]<KNOB>
            entries.add(m.group(1))
            knob = m.group(2)
            assert (f"`CLOUD_PLUGINS_<ENTRY>_{knob}`" in docs
                    or f"`CLOUD_PLUGINS_[<ENTRY>_]{knob}`" in docs), name
        else:
            assert f"`{name}`" in docs, name
    assert re.search(r"^#CLOUD_PLUGINS_PROVIDERS = " + " ".join(e.lower() for e in entries) + "$",
                     text, re.M)


# ---------------------------------------------------------------- the admin guide

def guide_blocks(text, sections=("2", "3", "4")):
    """The config blocks (fences without a language) of the guide's sections,
    except the EC2 example."""
    blocks, section, block = [], None, None
    for line in text.splitlines():
        m = re.match(r"## (\d+)\. ", line)
        if m and block is None:
            section = m.group(1)
        elif line.startswith("```"):
            if block is None:
                block = [] if line.strip() == "```" else None
                if block is None:
                    block = False  # a shell block: skipped
            else:
                if block is not False and section in sections:
                    body = "\n".join(block)
                    if "EC2EAST" not in body:
                        blocks.append(body)
                block = None
        elif block not in (None, False):
            block.append(line)
    return blocks


@pytest.mark.integration
def _guide_knobs(nodes):
    knobs = "\n".join(guide_blocks((REPO / "docs" / "admin-guide.md").read_text()))
    for name in ("CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS", "CLOUD_PLUGINS_SUBMIT_TRANSFORM",
                 "CLOUD_PLUGINS_PROVIDERS", "CLOUD_PLUGINS_RUN_PROVISIONER"):
        assert f"{name} = " in knobs, name
    return knobs.replace("/var/lib/condor/cloud-nodes", str(nodes))  # a short, writable path


def _walkthrough(condor, tmp_path, include, extra, submit_cloud, nodes):
    """Start a pool on ``include`` (the installed fragments, then the admin's
    file), wait for the provisioner condor_master starts, submit a cloud job
    with ``submit_cloud``: it runs on a local-provider node."""
    import htcondor2
    from condor_plugins.localpool import wait_for
    from condor_plugins.providers.local import LocalProvider
    pool = condor.pool("guide", include=include, extra_config=extra +
                       "CLOUD_PLUGINS_CYCLE_INTERVAL = 2\n")
    try:
        wait_for(lambda: pool.collector().query(
            htcondor2.AdType.Any, 'MyType == "CloudProvisioner"', ["Name"]),
            60, what="the provisioner's ad (started by condor_master)")
        (tmp_path / "hello.sub").write_text("executable = /bin/hostname\nqueue\n")
        tmp_path.chmod(0o777)
        env = dict(os.environ, CONDOR_CONFIG=str(pool.config_path))
        sub = run([str(submit_cloud), "--mode", "cloud", "hello.sub"], cwd=tmp_path, env=env)
        cluster = int(re.search(r"submitted to cluster (\d+)", sub.stdout).group(1))
        try:
            [job] = wait_for(lambda: list(pool.schedd().history(
                f"ClusterId == {cluster} && JobStatus == 4", ["LastRemoteHost", "ExitCode"])),
                150, what="the cloud job ran")
        except TimeoutError as err:
            logs = pool.workdir / "log"
            tails = {n: (logs / n).read_text()[-2500:] for n in ("CloudProvisionerLog", "MasterLog")
                     if (logs / n).exists()}
            raise TimeoutError(f"{err}\n{tails}") from None
        assert job["ExitCode"] == 0 and "@onbox-" in job["LastRemoteHost"]
        ads = pool.collector().query(htcondor2.AdType.Startd,
                                     "IsCloudNode", ["CloudProvider", "CloudInstanceID"])
        assert ads and ads[0]["CloudProvider"] == "local"
        return [p for p in Path(nodes).iterdir() if p.is_dir()]
    finally:
        provider = LocalProvider("onbox", {"STATE_DIR": str(nodes)})
        provider.terminate([i.id for i in provider.list({})])


def test_admin_guide_walkthrough(payload, condor, tmp_path, monkeypatch):
    """From "RPM payload installed" to "a cloud-mode job ran on a local-provider
    node" with only the knobs the admin guide shows (its config blocks of
    sections 2-4, in the admin's file), the daemon started by condor_master
    from the payload, and the payload's condor_submit_cloud."""
    root, sitelib = payload
    nodes = Path(tempfile.mkdtemp(prefix="g", dir=condor.base))
    etc = tmp_path / "etc"
    etc.mkdir()
    admin = etc / "99-cloud-plugins-local.conf"
    admin.write_text((root / ADMIN_FILE.lstrip("/")).read_text() + "\n" + _guide_knobs(nodes)
                     + "\n")
    # The payload stands in for the installed package (a temporary root, not /usr).
    monkeypatch.setenv("PYTHONPATH", str(sitelib))
    monkeypatch.setenv("CLOUD_PLUGINS_CONFIG_DIR", str(root / "usr/share/condor-cloud-plugins"))
    shipped = sorted((root / "usr/share/condor/config.d").glob("*.conf"))
    _walkthrough(condor, tmp_path, [*shipped, admin],
                 f"CLOUD_PROVISIONER = {root}/usr/libexec/condor/condor_cloud_provisioner\n",
                 root / "usr/bin/condor_submit_cloud", nodes)


def test_admin_guide_walkthrough_from_a_pip_virtual_environment(condor, tmp_path, monkeypatch):
    """Issue 13: the same walkthrough without the RPM, as the guide's "Without
    the RPM" says: `pip install` of the source tarball into a virtual
    environment that sees the system's HTCondor bindings, its `condor_cloud
    config` in HTCondor's config, and the guide's knobs.  Nothing comes from the
    source tree: no PYTHONPATH, no LIBEXEC, no CLOUD_PLUGINS_CONFIG_DIR."""
    venv = Path(tempfile.mkdtemp(prefix="v", dir=condor.base)) / "cp"
    sdist = tmp_path / "condor-cloud-plugins.tar.gz"
    run([str(BUILD), "--source", "tree", "--sdist", str(sdist)])
    run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)])
    run([str(venv / "bin/pip"), "install", "-q", "--no-build-isolation", str(sdist)],
        timeout=300, cwd=tmp_path)
    for name in ("PYTHONPATH", "CLOUD_PLUGINS_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    env = {k: v for k, v in os.environ.items() if k != "CONDOR_CONFIG"}
    config = run([str(venv / "bin/condor_cloud"), "config"], cwd=tmp_path, env=env).stdout
    share = venv / "share/condor-cloud-plugins/config.d"
    assert f"include : {share}/30-cloud-provisioner.conf" in config
    assert f"CLOUD_PROVISIONER = {venv}/bin/condor_cloud_provisioner" in config
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "50-cloud-plugins.conf").write_text(config)
    nodes = Path(tempfile.mkdtemp(prefix="g", dir=condor.base))
    admin = etc / "99-cloud-plugins-local.conf"
    admin.write_text(_guide_knobs(nodes) + "\n")
    [node] = _walkthrough(condor, tmp_path, [etc / "50-cloud-plugins.conf", admin], "",
                          venv / "bin/condor_submit_cloud", nodes)
    assert node.name.startswith("onbox-")
    # What ran came from the virtual environment, not the source tree.
    where = run([str(venv / "bin/python3"), "-c", "import condor_plugins.localpool as l; "
                 "print(l.__file__); print(l.shipped_config_dir())"], cwd=tmp_path,
                env=env).stdout.split()
    assert where[0].startswith(f"{venv}/lib/") and where[1] == str(share), where
