"""condor_submit_cloud against plain condor_submit, with `-dry-run` (no daemons).

Every submit file of tests/data/submit_corpus is dry-run twice: with plain
condor_submit and with the wrapper.  Per proc, the wrapper's Requirements must
evaluate, against a set of machine ads, to ``plain && clause``.
"""

import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import classad2
import pytest

from condor_plugins.steering import modes, submit_wrapper

pytestmark = pytest.mark.skipif(shutil.which("condor_submit") is None,
                                reason="needs condor_submit (run inside dev/sandbox)")

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "submit_corpus"
GOOD = sorted(p.name for p in CORPUS.glob("*.sub") if p.stem not in ("broken", "no_queue"))
MODES = [None, "cloud", "local", "any"]


def wrapper_cmd():
    """The wrapper command (the console script may not be installed)."""
    return [sys.executable, "-m", "condor_plugins.steering.submit_wrapper"]


SITE_APPEND = 'TARGET.Site =!= "banned"'
CONFIGS = {
    "bare": "",
    "site": f"APPEND_REQUIREMENTS = {SITE_APPEND}\n",
    "vanilla": f"APPEND_REQUIREMENTS = {SITE_APPEND}\n"
               "APPEND_REQ_VANILLA = (a =!= undefined) || Site == \"T2_YY\"\n",
}


def make_config(tmp_path, name, extra=""):
    d = tmp_path / f"cfg-{name}"
    (d / "local").mkdir(parents=True, exist_ok=True)
    cfg = d / "condor_config"
    cfg.write_text(
        f"LOCAL_DIR = {d}/local\n"
        "LOG = $(LOCAL_DIR)\nSPOOL = $(LOCAL_DIR)\nEXECUTE = $(LOCAL_DIR)\n"
        "LOCK = $(LOCAL_DIR)\nRUN = $(LOCAL_DIR)\n"
        "FILESYSTEM_DOMAIN = test.domain\n"
        # no DNS: resolving this host's name can stall config() for 5 s here
        "NO_DNS = True\nDEFAULT_DOMAIN_NAME = test.domain\nNETWORK_INTERFACE = 127.0.0.1\n"
        + CONFIGS[name] + extra)
    return cfg


def env_for(cfg):
    env = {k: v for k, v in os.environ.items() if not k.startswith("_CONDOR_")}
    env["CONDOR_CONFIG"] = str(cfg)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run(cmd, cfg, cwd, stdin=None):
    return subprocess.run(cmd, cwd=cwd, env=env_for(cfg), input=stdin,
                          capture_output=True, text=True, timeout=60)


def parse_dry_run(text):
    """Job ads from condor_submit's -dry-run output (old ClassAd syntax): a
    cluster ad followed by 'ProcId=N' and that proc's own attributes, then one
    block of differences per further proc."""
    ads = []
    base = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if not lines:
            continue
        ix = next(i for i, ln in enumerate(lines) if ln.startswith("ProcId="))
        if ix:  # a (new) cluster ad precedes the first proc
            base = lines[:ix]
        ads.append(classad2.parseOne("\n".join(base + lines[ix:]), classad2.ParserType.Old))
    return ads


def dry_run(cmd_prefix, args, cfg, tmp_path, stdin=None):
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}.ad"
    res = run(cmd_prefix + ["-dry-run", str(out)] + args, cfg, CORPUS, stdin)
    assert res.returncode == 0, res.stderr
    return parse_dry_run(out.read_text())


def machine_ads():
    out = []
    for cloud, a, b, site in itertools.product(
            (True, False, None), (True, False, None), (True, False),
            ("T2_XX", "T2_YY", "banned", "x&&y")):
        ad = classad2.ClassAd()
        if cloud is not None:
            ad["IsCloudNode"] = cloud
        if a is not None:
            ad["a"] = a
        ad["b"] = b
        ad["Site"] = site
        ad["Arch"] = "X86_64"
        ad["OpSys"] = "LINUX"
        ad["Disk"] = 10 ** 7
        ad["Memory"] = 4096
        ad["FileSystemDomain"] = "test.domain"
        ad["HasFileTransfer"] = True
        out.append(ad)
    return out


MACHINES = machine_ads()


def clause_ok(machine, mode):
    clause = modes.clause_for(mode)
    if clause is None:
        return True
    j = classad2.ClassAd()
    j["Requirements"] = classad2.ExprTree(clause)
    return machine.matches(j)


def assert_steered(plain_ads, wrapped_ads, mode):
    assert len(plain_ads) == len(wrapped_ads) > 0
    for p, w in zip(plain_ads, wrapped_ads):
        assert p["ProcId"] == w["ProcId"]
        assert w[modes.ATTR_CLOUD_MODE] == mode.value
        assert w[modes.ATTR_CLOUD_MODE_APPLIED] == mode.value
        assert modes.ATTR_CLOUD_MODE not in p
        if mode is modes.CloudMode.ANY:
            assert str(w.lookup("Requirements")) == str(p.lookup("Requirements"))
        else:
            assert modes.has_clause(str(w.lookup("Requirements")), mode)
        hits = 0
        for m in MACHINES:
            expect = m.matches(p) and clause_ok(m, mode)
            assert m.matches(w) == expect, (p["ProcId"], str(w.lookup("Requirements")))
            hits += expect
    return hits


@pytest.fixture(scope="module")
def cfgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cfg")
    return {name: make_config(tmp, name) for name in CONFIGS}


# ----------------------------------------------------------------- corpus

@pytest.mark.parametrize("subfile", GOOD)
def test_corpus_all_modes(subfile, cfgs, tmp_path):
    cfg = cfgs["site"]
    plain = dry_run(["condor_submit"], [subfile], cfg, tmp_path)
    for mode in MODES:
        extra = [] if mode is None else ["--mode", mode]
        wrapped = dry_run(wrapper_cmd(), extra + [subfile], cfg, tmp_path)
        assert_steered(plain, wrapped, modes.parse_mode(mode or "cloud"))


@pytest.mark.parametrize("cfgname", ["bare", "vanilla"])
@pytest.mark.parametrize("subfile", ["or_requirements.sub", "multi_queue.sub", "no_requirements.sub"])
def test_site_append_knobs(cfgname, subfile, cfgs, tmp_path):
    """The site's APPEND_REQUIREMENTS / APPEND_REQ_VANILLA stay in effect."""
    cfg = cfgs[cfgname]
    plain = dry_run(["condor_submit"], [subfile], cfg, tmp_path)
    for mode in ("cloud", "local"):
        wrapped = dry_run(wrapper_cmd(), [f"--mode={mode}", subfile], cfg, tmp_path)
        assert_steered(plain, wrapped, modes.parse_mode(mode))


def test_user_requirements_kept_verbatim(cfgs, tmp_path):
    cfg = cfgs["site"]
    plain = dry_run(["condor_submit"], ["multi_queue.sub"], cfg, tmp_path)
    wrapped = dry_run(wrapper_cmd(), ["multi_queue.sub"], cfg, tmp_path)
    for p, w in zip(plain, wrapped):
        pr, wr = str(p.lookup("Requirements")), str(w.lookup("Requirements"))
        head = pr.split(" && ")[0]
        if head.startswith("(a") or head.startswith("(b"):  # user's clause comes first
            assert wr.startswith(head)


def test_forced_requirements(cfgs, tmp_path):
    cfg = cfgs["site"]
    plain = dry_run(["condor_submit"], ["forced_requirements.sub"], cfg, tmp_path)
    assert str(plain[0].lookup("Requirements")) == "a || b"
    wrapped = dry_run(wrapper_cmd(), ["forced_requirements.sub"], cfg, tmp_path)
    assert_steered(plain, wrapped, modes.CloudMode.CLOUD)


# ---------------------------------------------------------- command line

def test_append_and_queue_options(cfgs, tmp_path):
    cfg = cfgs["site"]
    # (a file after -queue's items would be taken as one more item, as condor_submit does)
    args = ["-append", "requirements = b || Site == \"T2_XX\"", "no_queue.sub", "-queue", "2"]
    plain = dry_run(["condor_submit"], args, cfg, tmp_path)
    assert len(plain) == 2
    for mode in ("cloud", "local", "any"):
        # --mode may come anywhere, also right after the -queue items
        wargs = args + ["--mode", mode]
        wrapped = dry_run(wrapper_cmd(), wargs, cfg, tmp_path)
        assert_steered(plain, wrapped, modes.parse_mode(mode))


def test_key_value_args(cfgs, tmp_path):
    cfg = cfgs["site"]
    args = ["requirements=a||b", "no_queue.sub", "-queue", "1"]
    plain = dry_run(["condor_submit"], args, cfg, tmp_path)
    wrapped = dry_run(wrapper_cmd(), ["--mode=local"] + args, cfg, tmp_path)
    assert_steered(plain, wrapped, modes.CloudMode.LOCAL)


def test_stdin_submit_file(cfgs, tmp_path):
    cfg = cfgs["site"]
    text = (CORPUS / "multi_queue.sub").read_text()
    plain = dry_run(["condor_submit"], ["-"], cfg, tmp_path, stdin=text)
    wrapped = dry_run(wrapper_cmd(), ["-", "--mode", "local"], cfg, tmp_path, stdin=text)
    assert_steered(plain, wrapped, modes.CloudMode.LOCAL)


def test_stdin_with_queue_and_no_file(cfgs, tmp_path):
    """condor_submit -queue N without a file reads stdin; our -append lines must
    not change that (condor_submit counts them as command-line keys)."""
    cmd, _ = submit_wrapper.build_command(["-queue", "2"], environ={}, param={})
    assert cmd[:4] == ["condor_submit", "-queue", "2", "/dev/stdin"]
    cmd, _ = submit_wrapper.build_command(["x.sub", "-queue", "2"], environ={}, param={})
    assert "/dev/stdin" not in cmd
    cmd, _ = submit_wrapper.build_command(["-dry-run", "o", "-queue", "2"], environ={}, param={})
    assert "/dev/stdin" not in cmd  # condor_submit's own error must stay


def test_default_mode_from_knob(tmp_path):
    cfg = make_config(tmp_path, "site", "CLOUD_PLUGINS_DEFAULT_MODE = local\n")
    plain = dry_run(["condor_submit"], ["or_requirements.sub"], cfg, tmp_path)
    wrapped = dry_run(wrapper_cmd(), ["or_requirements.sub"], cfg, tmp_path)
    assert_steered(plain, wrapped, modes.CloudMode.LOCAL)
    # --mode wins over the knob
    wrapped = dry_run(wrapper_cmd(), ["--mode", "cloud", "or_requirements.sub"], cfg, tmp_path)
    assert_steered(plain, wrapped, modes.CloudMode.CLOUD)


def test_the_submit_files_own_cloud_mode_is_kept_and_an_invalid_one_refused(cfgs, tmp_path):
    """Issue 13: without --mode, the job's own valid +CloudMode wins over the
    default (it was overridden by it); an invalid one is refused, as the
    schedd would, naming where it came from; --mode still wins."""
    cfg = cfgs["site"]
    body = (CORPUS / "or_requirements.sub").read_text()
    own = tmp_path / "own.sub"
    own.write_text('+CloudMode = "local"\n' + body)
    plain = dry_run(["condor_submit"], ["or_requirements.sub"], cfg, tmp_path)
    assert_steered(plain, dry_run(wrapper_cmd(), [str(own)], cfg, tmp_path),
                   modes.CloudMode.LOCAL)
    assert_steered(plain, dry_run(wrapper_cmd(), ["--mode", "cloud", str(own)], cfg, tmp_path),
                   modes.CloudMode.CLOUD)
    assert_steered(plain, dry_run(wrapper_cmd(), ["-append", "MY.CloudMode = any",
                                                  str(own)], cfg, tmp_path),
                   modes.CloudMode.ANY)
    sky = tmp_path / "sky.sub"
    sky.write_text(body.replace("queue", 'MY.CloudMode = "sky"\nqueue', 1))
    r = run(wrapper_cmd() + [str(sky)], cfg, CORPUS)
    assert r.returncode == 1 and r.stdout == ""
    line = r.stderr.strip()
    assert line.startswith("condor_submit_cloud: invalid cloud mode") and "sky" in line
    assert f"{sky}, line" in line, line


# ----------------------------------------------------------------- errors

def test_broken_submit_file_same_exit_code(cfgs, tmp_path):
    cfg = cfgs["site"]
    for f in ("broken.sub", "does_not_exist.sub"):
        p = run(["condor_submit", "-dry-run", str(tmp_path / "p.ad"), f], cfg, CORPUS)
        w = run(wrapper_cmd() + ["-dry-run", str(tmp_path / "w.ad"), f], cfg, CORPUS)
        assert p.returncode != 0
        assert w.returncode == p.returncode
        perr = [ln for ln in p.stderr.splitlines() if ln.startswith("ERROR")]
        werr = [ln for ln in w.stderr.splitlines() if ln.startswith("ERROR")]
        assert perr and werr == perr


@pytest.mark.parametrize("args,needle", [
    (["--mode", "cloudy", "or_requirements.sub"], "'cloudy' from --mode"),
    (["--mode=", "or_requirements.sub"], "from --mode"),
    (["or_requirements.sub", "--mode"], "--mode requires an argument"),
])
def test_bad_mode(args, needle, cfgs):
    r = run(wrapper_cmd() + args, cfgs["site"], CORPUS)
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("condor_submit_cloud: ") and needle in lines[0]


def test_bad_knob(tmp_path):
    cfg = make_config(tmp_path, "site", "CLOUD_PLUGINS_DEFAULT_MODE = sometimes\n")
    r = run(wrapper_cmd() + ["or_requirements.sub"], cfg, CORPUS)
    assert r.returncode == 1
    assert r.stderr.strip() == ("condor_submit_cloud: invalid cloud mode 'sometimes' from the knob "
                                "CLOUD_PLUGINS_DEFAULT_MODE: expected one of cloud, local, any")


def test_bad_site_append_requirements(tmp_path):
    cfg = make_config(tmp_path, "bare", "APPEND_REQUIREMENTS = (a ||\n")
    r = run(wrapper_cmd() + ["or_requirements.sub"], cfg, CORPUS)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "APPEND_REQUIREMENTS" in lines[0] and "(a ||" in lines[0]
    # --mode any does not touch it
    r = run(wrapper_cmd() + ["--mode", "any", "-dry-run", str(tmp_path / "o"), "or_requirements.sub"],
            cfg, CORPUS)
    assert "APPEND_REQUIREMENTS" not in r.stderr


def test_help(cfgs):
    p = run(["condor_submit", "-help"], cfgs["site"], CORPUS)
    for flag in ("-help", "--help", "-h"):
        w = run(wrapper_cmd() + [flag], cfgs["site"], CORPUS)
        assert w.returncode == p.returncode == 0
        assert w.stdout.startswith(p.stdout)
        assert "--mode cloud|local|any" in w.stdout


# ------------------------------------------------------------ arguments

@pytest.mark.parametrize("argv,mode,rest", [
    (["--mode", "local", "f.sub"], "local", ["f.sub"]),
    (["f.sub", "--mode=any"], "any", ["f.sub"]),
    (["-mode", "cloud", "f.sub"], "cloud", ["f.sub"]),
    (["-a", "--mode", "f.sub"], None, ["-a", "--mode", "f.sub"]),  # a value of -append
    (["-batch-name", "--mode", "f.sub"], None, ["-batch-name", "--mode", "f.sub"]),
    (["-queue", "a", "b", "--mode", "any"], "any", ["-queue", "a", "b"]),
    (["-dry-run", "-", "--mode", "local", "-"], "local", ["-dry-run", "-", "-"]),
    (["--mode", "cloud", "--mode", "local"], "local", []),
])
def test_parse_args(argv, mode, rest):
    a = submit_wrapper.parse_args(argv)
    assert a.mode == mode and a.rest == rest


def test_wrapper_startup_overhead(cfgs, tmp_path):
    """The wrapper adds only Python start-up and two small imports."""
    import time
    cfg = cfgs["site"]

    def best(cmd):
        t = []
        for _ in range(3):
            s = time.perf_counter()
            r = run(cmd + ["-dry-run", str(tmp_path / "o.ad"), "or_requirements.sub"], cfg, CORPUS)
            t.append(time.perf_counter() - s)
            assert r.returncode == 0
        return min(t)

    overhead = best(wrapper_cmd()) - best(["condor_submit"])
    assert overhead < 0.5, f"wrapper overhead {overhead:.3f}s"


@pytest.mark.parametrize("universe", ["local", "scheduler"])
def test_local_and_scheduler_universe_not_steered(tmp_path, universe):
    """Jobs matched against the schedd's own ad must not get the cloud clause."""
    cfg = make_config(tmp_path, "site")
    sub = tmp_path / "u.sub"
    sub.write_text(f"universe = {universe}\nexecutable = /bin/true\nqueue\n")
    plain = dry_run(["condor_submit"], [str(sub)], cfg, tmp_path)
    wrapped = dry_run(wrapper_cmd(), ["--mode", "cloud", str(sub)], cfg, tmp_path)
    # The clause is there, guarded by the job's universe: against the schedd's
    # ad the Requirements decide as without the wrapper.
    req = str(wrapped[0].lookup("Requirements"))
    assert wrapped[0]["JobUniverse"] in (7, 12)
    assert re.search(r"MY\.JobUniverse (=\?=|is) 7 \|\| MY\.JobUniverse (=\?=|is) 12 \|\|", req), req
    assert '"banned"' in req and '"banned"' in str(plain[0].lookup("Requirements"))


@pytest.mark.parametrize("universe", ["java", "parallel"])
@pytest.mark.parametrize("mode,clause", [("local", "TARGET.IsCloudNode =!= True"),
                                         ("cloud", "TARGET.IsCloudNode =?= True")])
def test_java_and_parallel_universe_get_the_mode_clause(tmp_path, universe, mode, clause):
    """Issue 16: they land on startds, through APPEND_REQUIREMENTS."""
    cfg = make_config(tmp_path, "site")
    sub = tmp_path / "u.sub"
    extra = "machine_count = 1\n" if universe == "parallel" else "arguments = Main\n"
    sub.write_text(f"universe = {universe}\nexecutable = /bin/true\n{extra}queue\n")
    [ad] = dry_run(wrapper_cmd(), ["--mode", mode, str(sub)], cfg, tmp_path)
    req = str(ad.lookup("Requirements"))
    spelt = req.replace(" isnt ", " =!= ").replace(" is ", " =?= ").lower()
    assert clause.lower() in spelt and ad["CloudModeApplied"] == mode, req
    assert '"banned"' in req, req   # the site's own clause stays


# ------------------------------------- the submit subsystem's knobs (issue 16)
# condor_submit's subsystem is SUBMIT: its param() prefers SUBMIT.<KNOB> to
# <KNOB>.  A site's SUBMIT.-prefixed knob must neither drop the wrapper's
# clause nor be dropped by it.

def site_clause(tag):
    return f'TARGET.Site =!= "{tag}"'


# Every APPEND knob condor_submit reads, bare and SUBMIT.-prefixed, each with
# a clause of its own that names it.
SITE_FORMS = {(knob, prefix): f"{prefix}{knob} = {site_clause(prefix + knob)}\n"
              for knob in ("APPEND_REQUIREMENTS", "APPEND_REQ_VANILLA", "APPEND_REQ_VM")
              for prefix in ("", "SUBMIT.")}
UNIVERSE_JOBS = {
    "vanilla": "",
    "vm": "universe = vm\nvm_type = kvm\nvm_memory = 128\nvm_disk = {dir}/disk.img:vda:w\n",
    "java": "universe = java\narguments = Main\n",
    "local": "universe = local\n",
}


def universe_sub(tmp_path, universe):
    (tmp_path / "disk.img").touch()
    sub = tmp_path / f"{universe}.sub"
    sub.write_text(UNIVERSE_JOBS[universe].format(dir=tmp_path)
                   + "executable = /bin/true\nrequirements = TARGET.Memory > 32\nqueue\n")
    return str(sub)


def site_tags(req):
    return set(re.findall(r'TARGET\.Site (?:=!=|isnt) "([A-Za-z_.]+)"', req))


@pytest.mark.parametrize("knob,universe", [
    ("APPEND_REQ_VANILLA", "vanilla"), ("APPEND_REQUIREMENTS", "vanilla"),
    ("APPEND_REQ_VM", "vm"), ("APPEND_REQUIREMENTS", "java"), ("APPEND_REQUIREMENTS", "local"),
])
@pytest.mark.parametrize("mode", ["cloud", "local"])
def test_a_sites_submit_prefixed_knob_and_the_clause_both_apply(tmp_path, knob, universe, mode):
    """SUBMIT.<KNOB> (beside a bare <KNOB>) used to win over the wrapper's
    _CONDOR_<KNOB>: the job then carried CloudModeApplied without the clause."""
    cfg = make_config(tmp_path, "bare", SITE_FORMS[knob, ""] + SITE_FORMS[knob, "SUBMIT."])
    sub = universe_sub(tmp_path, universe)
    [plain] = dry_run(["condor_submit"], [sub], cfg, tmp_path)
    [wrapped] = dry_run(wrapper_cmd(), ["--mode", mode, sub], cfg, tmp_path)
    preq, wreq = str(plain.lookup("Requirements")), str(wrapped.lookup("Requirements"))
    assert site_tags(preq) == {"SUBMIT." + knob}, preq  # condor_submit's own choice
    assert site_tags(wreq) == site_tags(preq), wreq
    clause = modes.clause_for(mode)
    if universe == "local":
        clause = f"MY.JobUniverse =?= 7 || MY.JobUniverse =?= 12 || {clause}"
    spelt = wreq.replace(" isnt ", " =!= ").replace(" is ", " =?= ").lower()
    assert clause.lower() in spelt and wrapped["CloudModeApplied"] == mode, wreq
    if universe == "vanilla":
        assert_steered([plain], [wrapped], modes.parse_mode(mode))


# Each knob family in each of its four states (undefined, bare, SUBMIT., both),
# as four rows of a Latin square: no combination may hang or lose a clause.
STATES = [(), ("",), ("SUBMIT.",), ("", "SUBMIT.")]


@pytest.mark.parametrize("row", range(4))
def test_defined_and_undefined_knob_combinations(tmp_path, row):
    knobs = ("APPEND_REQUIREMENTS", "APPEND_REQ_VANILLA", "APPEND_REQ_VM")
    extra = "".join(SITE_FORMS[knob, prefix] for i, knob in enumerate(knobs)
                    for prefix in STATES[(row + i) % 4])
    cfg = make_config(tmp_path, "bare", extra)
    for universe in ("vanilla", "vm", "java"):
        sub = universe_sub(tmp_path, universe)
        [plain] = dry_run(["condor_submit"], [sub], cfg, tmp_path)
        [wrapped] = dry_run(wrapper_cmd(), ["--mode", "local", sub], cfg, tmp_path)
        wreq = str(wrapped.lookup("Requirements"))
        assert site_tags(wreq) == site_tags(str(plain.lookup("Requirements"))), (universe, wreq)
        assert "iscloudnode isnt true" in wreq.lower().replace("=!=", "isnt"), (universe, wreq)


def test_the_submit_subsystems_default_mode_knob(tmp_path):
    cfg = make_config(tmp_path, "site", "CLOUD_PLUGINS_DEFAULT_MODE = cloud\n"
                                        "SUBMIT.CLOUD_PLUGINS_DEFAULT_MODE = local\n")
    plain = dry_run(["condor_submit"], ["or_requirements.sub"], cfg, tmp_path)
    wrapped = dry_run(wrapper_cmd(), ["or_requirements.sub"], cfg, tmp_path)
    assert_steered(plain, wrapped, modes.CloudMode.LOCAL)


@pytest.mark.parametrize("knob,value,needle", [
    ("APPEND_REQ_VANILLA", "(a ||", "the site's SUBMIT.APPEND_REQ_VANILLA is not a valid"),
    ("APPEND_REQUIREMENTS", "(a ||", "the site's SUBMIT.APPEND_REQUIREMENTS is not a valid"),
    ("CLOUD_PLUGINS_DEFAULT_MODE", "sometimes", "from the knob SUBMIT.CLOUD_PLUGINS_DEFAULT_MODE"),
])
def test_a_bad_submit_prefixed_site_knob_is_named(tmp_path, knob, value, needle):
    cfg = make_config(tmp_path, "site", f"{knob} = cloud\nSUBMIT.{knob} = {value}\n")
    r = run(wrapper_cmd() + ["or_requirements.sub"], cfg, CORPUS)
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and value in lines[0], lines


def test_mode_any_reads_no_configuration(monkeypatch, tmp_path):
    """Nothing to append: no condor_config_val (start-up cost), not even for
    the default mode when --mode or the job's own CloudMode decides."""
    def no_config(argv):
        raise AssertionError(f"ran {argv}")
    monkeypatch.setattr(submit_wrapper, "_run_capture", no_config)
    cmd, env = submit_wrapper.build_command(["--mode", "any", "x.sub"], environ={})
    assert env == {} and '+CloudModeApplied = "any"' in cmd
    own = tmp_path / "own.sub"
    own.write_text('executable = /bin/true\n+CloudMode = "any"\nqueue\n')
    cmd, env = submit_wrapper.build_command([str(own)], environ={})
    assert env == {} and '+CloudModeApplied = "any"' in cmd


def test_a_site_value_of_several_lines(tmp_path):
    """condor_config_val dumps it as 'NAME @=TAG', its lines, '@TAG': all of it
    is the site's clause (only its first line was read, and the clause lost)."""
    cfg = make_config(tmp_path, "bare", "SUBMIT.APPEND_REQ_VANILLA @=end\n"
                                        f"  {site_clause('multi')}  // the first line\n"
                                        f"  && {site_clause('line')}\n@end\n")
    sub = universe_sub(tmp_path, "vanilla")
    [plain] = dry_run(["condor_submit"], [sub], cfg, tmp_path)
    [wrapped] = dry_run(wrapper_cmd(), [sub], cfg, tmp_path)
    assert site_tags(str(plain.lookup("Requirements"))) == {"multi", "line"}
    assert site_tags(str(wrapped.lookup("Requirements"))) == {"multi", "line"}
    assert_steered([plain], [wrapped], modes.CloudMode.CLOUD)
