"""Helpers of the provisioner tests: a provisioner process with its own config,
job submission and history, and waiting while watching the node cap."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import htcondor2

from condor_plugins.localpool import wait_for
from condor_plugins.providers.base import InstanceState
from condor_plugins.providers.local import LocalProvider

ENTRY = "local1"
REPO = Path(__file__).resolve().parent.parent
HOOKS = ("translate", "update", "finalize", "cleanup")


class Prov:
    """A provisioner for one test: config file, state dir, processes, log."""

    def __init__(self, pool, base, name, entry=ENTRY, knobs=None, command=None, env=None):
        """``knobs``: settings of ``entry`` (short names) or full knob names;
        ``command``: what runs instead of ``python3 -m condor_plugins.provisioning.provisioner``."""
        self.pool = pool
        self.entry = entry
        self.dir = base / f"p-{name}"
        self.dir.mkdir()
        self.state_dir = base / f"n-{name}"  # short: HTCondor socket paths are limited
        self.config = self.dir / "provisioner.conf"
        self.log = self.dir / "provisioner.log"
        self.name = name
        self.procs = []
        self.command = list(command or [sys.executable, "-m", "condor_plugins.provisioning.provisioner"])
        self.extra_env = dict(env or {})
        e = entry.upper()
        self.knobs = {
            "CLOUD_PLUGINS_PROVIDERS": entry,
            "CLOUD_PLUGINS_PROVISIONER_NAME": f"prov-{name}",
            "CLOUD_PLUGINS_POOL_NAME": "testpool",
            "CLOUD_PLUGINS_CYCLE_INTERVAL": 1,
            "CLOUD_PLUGINS_COLLECTOR_GRACE": 0,
            f"CLOUD_PLUGINS_{e}_TYPE": "local",
            f"CLOUD_PLUGINS_{e}_CPUS": 2,
            f"CLOUD_PLUGINS_{e}_MEMORY": 512,
            f"CLOUD_PLUGINS_{e}_DISK": 1000,
            f"CLOUD_PLUGINS_{e}_MAX_INSTANCES": 2,
            f"CLOUD_PLUGINS_{e}_MAX_BOOTING": 2,
            f"CLOUD_PLUGINS_{e}_IDLE_TIMEOUT": 8,
            f"CLOUD_PLUGINS_{e}_JOIN_TIMEOUT": 120,
            f"CLOUD_PLUGINS_{e}_DRAIN_TIMEOUT": 30,
            f"CLOUD_PLUGINS_{e}_STATE_DIR": self.state_dir,
            # The node's own idle shutdown is only a safety net here.
            f"CLOUD_PLUGINS_{e}_WORKER_IDLE_SHUTDOWN": 600,
        }
        self.entries = [entry]
        self.configure(**(knobs or {}))

    def add_entry(self, entry, **knobs):
        """A second entry in this provisioner: ``entry``'s settings are a copy of
        the first one's, with its own STATE_DIR, then ``knobs`` (short names)."""
        first, e = f"CLOUD_PLUGINS_{self.entry.upper()}_", f"CLOUD_PLUGINS_{entry.upper()}_"
        copied = {e + k[len(first):]: v for k, v in self.knobs.items() if k.startswith(first)}
        copied[e + "STATE_DIR"] = self.dir.parent / f"n-{self.name}-{len(self.entries) + 1}"
        copied.update({e + k: v for k, v in knobs.items()})
        self.entries.append(entry)
        self.configure(CLOUD_PLUGINS_PROVIDERS=" ".join(self.entries), **copied)

    def configure(self, **knobs):
        self.knobs.update({(k if k.startswith("CLOUD_PLUGINS_") else
                            f"CLOUD_PLUGINS_{self.entry.upper()}_{k}"): v
                           for k, v in knobs.items()})
        lines = [f"include : {self.pool.config_path}"]
        lines += [f"{k} = {v}" for k, v in self.knobs.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def env(self, extra=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("_CONDOR_")}
        env.update(CONDOR_CONFIG=str(self.config), PYTHONPATH=":".join(sys.path))
        env.pop("CONDOR_INHERIT", None)
        env.update(self.extra_env)
        env.update(extra or {})
        return env

    def once(self, extra_env=None):
        with open(self.log, "a") as log:
            res = subprocess.run(self.command + ["--once"],
                                 env=self.env(extra_env), stdout=log, stderr=log, timeout=120,
                                 cwd=self.dir)
        return res.returncode

    def start(self):
        log = open(self.log, "a")
        proc = subprocess.Popen(self.command,
                                env=self.env(), stdout=log, stderr=log, cwd=self.dir)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc, sig=signal.SIGTERM, timeout=60):
        proc.send_signal(sig)
        return proc.wait(timeout)

    def provider(self, entry=None):
        entry = entry or self.entry
        state_dir = self.knobs[f"CLOUD_PLUGINS_{entry.upper()}_STATE_DIR"]
        return LocalProvider(entry, {"STATE_DIR": str(state_dir)})

    def running(self, entry=None):
        return [i.id for i in self.provider(entry).list({}) if i.state is InstanceState.RUNNING]

    def instances(self, entry=None):
        return [i.id for i in self.provider(entry).list({})]

    def node_dir(self, iid, entry=None):
        return Path(self.provider(entry).state_dir) / iid

    def log_text(self):
        return self.log.read_text() if self.log.exists() else ""

    def cleanup(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for entry in self.entries:
            if self.knobs.get(f"CLOUD_PLUGINS_{entry.upper()}_TYPE") != "local":
                continue
            provider = self.provider(entry)
            provider.terminate([i.id for i in provider.list({})])


class ProvMaker:
    """Provisioners for one test on ``pool``, each with ``settings`` of ``entry``
    (call with more knobs), cleaned up by ``cleanup``."""

    def __init__(self, pool, base, test_name, entry=ENTRY, settings=None, env=None):
        self.pool, self.base, self.entry = pool, base, entry
        self.prefix = test_name[5:9]  # short: HTCondor socket paths are limited
        self.settings, self.env = dict(settings or {}), env
        self.made = []

    def __call__(self, command=None, **knobs):
        name = f"{self.prefix}{len(self.made)}{os.urandom(2).hex()}"
        prov = Prov(self.pool, self.base, name, entry=self.entry,
                    knobs={**self.settings, **knobs}, command=command, env=self.env)
        self.made.append(prov)
        return prov

    def cleanup(self):
        for prov in self.made:
            prov.cleanup()


def no_inbound_admin(base: Path) -> Path:
    """A USER_DATA_TEMPLATE_DIR whose config file makes a node refuse every
    administrative command, as a real VM that cannot verify the provisioner."""
    conf = Path(base) / "no-inbound-admin" / "etc" / "condor" / "config.d"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "70-no-inbound-admin.conf").write_text("DENY_ADMINISTRATOR = *\n")
    return conf.parents[2]


def refused_drains(*dirs):
    """StartLog lines of nodes under ``dirs`` that refused an administrative
    command (the provisioner's drain): for lack of permission (a node told to
    deny it), or because the sender could not authenticate (a VM, which holds
    no key to verify the provisioner's identity)."""
    out = []
    for d in dirs:
        for log in Path(d).rglob("StartLog*"):
            out += [line for line in log.read_text(errors="replace").splitlines()
                    if ("PERMISSION DENIED" in line and "ADMINISTRATOR" in line)
                    or ("DC_AUTHENTICATE: required authentication of" in line
                        and "failed" in line)]
    return out


def site_pool(condor, name, extra="", address="127.0.0.1"):
    """A site pool that admits cloud workers and applies the cloud mode
    (``extra``: more of its config; ``address``: VM_ADDRESS for test VMs)."""
    return condor.site_pool(name, extra_config=("CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS = True\n"
                                                "CLOUD_PLUGINS_SUBMIT_TRANSFORM = True\n"
                                                + extra), address=address)


#: The address the site's central manager has on the test VMs' network.
VM_ADDRESS = "198.18.0.1"


def vm_timing(base: Path) -> Path:
    """A USER_DATA_TEMPLATE_DIR with what test VMs add to the image: HTCondor's
    timers in seconds instead of minutes. Nothing in it changes who may do what."""
    conf = Path(base) / "vm-timing" / "etc" / "condor" / "config.d"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "70-test-timing.conf").write_text(
        "UPDATE_INTERVAL = 2\nMASTER_UPDATE_INTERVAL = 5\nSTARTER_UPDATE_INTERVAL = 2\n"
        "RunBenchmarks = False\n")
    return conf.parents[2]


def submit(pool, tmp_path, count, seconds, cpus=1, requirements=None, memory=64):
    tmp_path.chmod(0o777)
    desc = {
        "executable": "/bin/sleep", "arguments": str(seconds), "request_cpus": str(cpus),
        "request_memory": str(memory), "request_disk": "1000", "should_transfer_files": "IF_NEEDED",
        "log": str(tmp_path / "job.log"), "MY.CloudMode": '"cloud"'}
    if requirements:
        desc["requirements"] = requirements
    sub = htcondor2.Submit(desc)
    return pool.schedd().submit(sub, count=count).cluster()


def history(pool, cluster, schedd=None):
    """``schedd``: the one to ask, when the collector lists more than the pool's."""
    return list((schedd or pool.schedd()).history(
        f"ClusterId == {cluster}",
        ["ProcId", "LastRemoteHost", "ExitCode", "NumJobStarts", "JobStatus"]))


def jobs_done(pool, cluster, count, schedd=None):
    ads = [a for a in history(pool, cluster, schedd) if a.get("JobStatus") == 4]
    return ads if len(ads) >= count else None


def advertise_ghost_schedd(pool, name, address, lifetime=900):
    """A schedd ad for ``name`` at ``address`` (where nothing answers) in ``pool``'s
    collector, with the real schedd's version, so that a client gets as far as
    connecting: every query of that schedd fails until the ad expires."""
    real = pool.collector().locate(htcondor2.DaemonType.Schedd)
    ad = pool.workdir / f"ghost-{name.partition('@')[0]}.ad"
    ad.write_text(f'MyType = "Scheduler"\nName = "{name}"\nMachine = "{name.partition("@")[2]}"\n'
                  f'MyAddress = "<{address}>"\nScheddIpAddr = "<{address}>"\n'
                  f'CondorVersion = "{real["CondorVersion"]}"\n'
                  f'CondorPlatform = "{real["CondorPlatform"]}"\n'
                  f'ClassAdLifetime = {lifetime}\n')
    pool.run("condor_advertise", "-tcp", "UPDATE_SCHEDD_AD", str(ad))
    # The collector files an update after condor_advertise returns: wait until a
    # query sees it, so a test never races its own setup.
    wait_for(lambda: pool.collector().query(
        htcondor2.AdType.Schedd, constraint=f'Name == "{name}"', projection=["Name"]),
        30, interval=0.2, what=f"the ghost schedd ad {name}")


def node_of(host):
    return host.split("@")[1]  # slot1_1@local1-ab12cd34@host -> local1-ab12cd34


def watch(prov, predicate, timeout, what, cap=2, seen=None):
    """Wait for ``predicate`` while checking that at most ``cap`` nodes run."""
    seen = set() if seen is None else seen

    def check():
        running = prov.running()
        seen.update(running)
        assert len(running) <= cap, f"{len(running)} nodes running (cap {cap}): {running}"
        return predicate()
    try:
        return wait_for(check, timeout, interval=0.5, what=what)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n--- provisioner log ---\n{prov.log_text()[-6000:]}") from None


def token_claims(token):
    """The JWT payload of an IDTOKEN (no verification: only its claims are read)."""
    import base64
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def hook_dir(base: Path) -> Path:
    """Launchers of the hooks, as the RPM installs them in $(LIBEXEC)."""
    d = base / "hooks"
    d.mkdir(exist_ok=True)
    for name in HOOKS:
        path = d / f"condor_cloud_route_{name}"
        path.write_text(f"#!{sys.executable} -s\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
                        f"from condor_plugins.steering.router_hooks import {name}_main\n"
                        f"sys.exit({name}_main())\n")
        path.chmod(0o755)
    return d


def kill_mid_burst(pool, prov, hv, tmp_path, listed=lambda: None):
    """Four 12 s jobs on two VMs, the provisioner SIGKILLed while they run and
    never restarted; ``listed()`` is taken right after the kill. Waits until
    every job is done, exactly once; returns what ``listed()`` returned."""
    import signal as _signal
    cluster = submit(pool, tmp_path, 4, 12)
    proc = prov.start()
    wait_for(lambda: len(hv.running()) == 2 and pool.schedd().query(
        "JobStatus == 2", ["ProcId"]), 120, interval=1, what="jobs running on 2 VMs")
    proc.send_signal(_signal.SIGKILL)
    proc.wait(10)
    seen = listed()
    ads = wait_for(lambda: jobs_done(pool, cluster, 4), 120, interval=1, what="every job done")
    assert all(a["NumJobStarts"] == 1 for a in ads), ads
    return seen


def cmdlines():
    """Every process's command line (test VMs' and Slurm nodes' too: their pid
    namespaces are children of this one), to check that no secret is on one."""
    out = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            out.append(open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace"))
        except OSError:
            continue
    return out
