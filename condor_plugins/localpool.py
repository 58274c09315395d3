"""Real HTCondor instances on this machine: a personal pool and extra execute nodes.

Used by the test fixtures, the demo and the ``local`` provider. Each instance is
its own ``condor_master`` with its own ``LOCAL_DIR``, configured through a file
``condor_config`` in that directory (selected with ``CONDOR_CONFIG``), so any
number of pools and nodes can run side by side on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

REPO_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config.d"


#: Where the RPM puts the worker fragment (worker/50-cloud-worker.conf).
INSTALLED_DATA_DIR = Path("/usr/share/condor-cloud-plugins")


def shipped_config_dir() -> Path:
    """Where the project's config fragments live: $CLOUD_PLUGINS_CONFIG_DIR, the
    source tree's config.d, a pip install's ``<prefix>/share/condor-cloud-plugins/
    config.d``, else the RPM's data directory (whose worker/ holds the worker
    fragment; the site fragments are in HTCondor's config.d)."""
    import sys
    override = os.environ.get("CLOUD_PLUGINS_CONFIG_DIR")
    if override:
        return Path(override)
    if REPO_CONFIG_DIR.is_dir():
        return REPO_CONFIG_DIR
    pip = Path(sys.prefix) / "share" / "condor-cloud-plugins" / "config.d"
    if (pip / "worker").is_dir():
        return pip
    return INSTALLED_DATA_DIR


class InstanceError(RuntimeError):
    """A daemon did not start (the message carries its log tails)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


_RELEASE_KNOBS = ("RELEASE_DIR", "BIN", "SBIN", "LIB", "LIBEXEC", "SHARE", "ETC")
_release_cache: Optional[str] = None


def release_config() -> str:
    """Installation paths from the system's own HTCondor config (Debian, EL, ...)."""
    global _release_cache
    if _release_cache is None:
        env = {k: v for k, v in os.environ.items()
               if k != "CONDOR_CONFIG" and not k.startswith("_CONDOR_")}
        lines = []
        for knob in _RELEASE_KNOBS:
            res = subprocess.run(["condor_config_val", knob], env=env, capture_output=True, text=True)
            if res.returncode == 0 and res.stdout.strip():
                lines.append(f"{knob} = {res.stdout.strip()}")
        _release_cache = "\n".join(lines)
    return _release_cache


def config_value(value) -> str:
    """Render a Python value as an HTCondor config value."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


COMMON_CONFIG = """\
{release}
LOCAL_DIR = {local_dir}
LOG = $(LOCAL_DIR)/log
SPOOL = $(LOCAL_DIR)/spool
EXECUTE = $(LOCAL_DIR)/execute
LOCK = $(LOCAL_DIR)/lock
RUN = $(LOCAL_DIR)/run
PROCD_ADDRESS = $(LOCK)/procd_pipe
SEC_PASSWORD_DIRECTORY = $(LOCAL_DIR)/passwords.d
SEC_TOKEN_SYSTEM_DIRECTORY = $(LOCAL_DIR)/tokens.d
SEC_TOKEN_DIRECTORY = $(LOCAL_DIR)/tokens.d
SEC_CREDENTIAL_DIRECTORY = $(LOCAL_DIR)/creds
NETWORK_INTERFACE = {address}
USE_SHARED_PORT = False
CONDOR_HOST = {address}
COLLECTOR_HOST = {collector}
# The starter cannot make a mount namespace inside a chroot.
MOUNT_UNDER_SCRATCH =
MASTER_NAME = {name}
# Fast cycles for tests and the demo.
UPDATE_INTERVAL = 2
MASTER_UPDATE_INTERVAL = 5
NEGOTIATOR_INTERVAL = 2
NEGOTIATOR_MIN_INTERVAL = 1
NEGOTIATOR_CYCLE_DELAY = 1
SCHEDD_INTERVAL = 2
SCHEDD_MIN_INTERVAL = 1
STARTER_UPDATE_INTERVAL = 2
SHADOW_QUEUE_UPDATE_INTERVAL = 2
PERIODIC_EXPR_INTERVAL = 2
JOB_START_DELAY = 0
JOB_START_COUNT = 100
MASTER_NEW_BINARY_RESTART = NEVER
MAIL = /bin/true
ENABLE_SOAP = False
STARTD_CRON_JOBLIST =
RunBenchmarks = False
"""

SECURITY_CONFIG = """\
# Strong security: every connection authenticated (FS on this host, or IDTOKENS).
use SECURITY : Strong
SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS
SEC_READ_AUTHENTICATION = OPTIONAL
POOL_USER = {user}@*
ALLOW_READ = *
ALLOW_WRITE = $(POOL_USER)
ALLOW_DAEMON = $(POOL_USER)
ALLOW_NEGOTIATOR = $(POOL_USER)
ALLOW_ADMINISTRATOR = $(POOL_USER)
ALLOW_CONFIG = $(POOL_USER)
"""


class CondorInstance:
    """One condor_master with its own LOCAL_DIR and config."""

    ready_ad_types: Sequence[str] = ()

    def __init__(self, workdir: Path, name: str, config_text: str,
                 include: Iterable[Path] = (), post_text: str = ""):
        self.workdir = Path(workdir)
        self.name = name
        self.config_path = self.workdir / "condor_config"
        self._config_text = config_text
        self._include = list(include)
        self._post_text = post_text
        self.proc: Optional[subprocess.Popen] = None

    # -- paths -----------------------------------------------------------------
    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    @property
    def pid_file(self) -> Path:
        """A detached master's pid, written by itself before it execs."""
        return self.workdir / "master.pid"

    @property
    def env(self) -> dict:
        env = own_environment()
        env["CONDOR_CONFIG"] = str(self.config_path)
        return env

    def write_config(self) -> None:
        for sub in ("log", "spool", "execute", "lock", "run", "creds"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("passwords.d", "tokens.d"):
            d = self.workdir / sub
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)
        self.workdir.chmod(0o755)
        parts = [self._config_text]
        for path in self._include:
            parts.append(f"include : {path}\n")
        if self._post_text:
            parts.append(self._post_text)
        local = self.workdir / "config.local"
        if local.exists():
            parts.append(f"include : {local}\n")
        self.config_path.write_text("\n".join(parts))

    # -- lifecycle -------------------------------------------------------------
    def start(self, timeout: float = 60.0, detach: bool = False) -> "CondorInstance":
        self.launch(detach)
        self.wait_ready(timeout)
        return self

    def launch(self, detach: bool = False) -> None:
        """Start the master; ``self.proc.pid`` is its pid.  ``detach``: it is not
        our child but init's (double fork, own session), so no process family
        of ours holds it: condor_master's procd and systemd then never kill it
        when we exit or crash."""
        self.write_config()
        if detach:
            self.proc = _Detached.spawn(["condor_master", "-f"], self.env, self.workdir,
                                        self.log_dir / "master.stdout", self.pid_file)
        else:
            out = open(self.log_dir / "master.stdout", "ab")
            self.proc = subprocess.Popen(
                ["condor_master", "-f"], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.workdir)
            out.close()

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise InstanceError(f"{self.name}: condor_master exited with status "
                                    f"{self.proc.returncode}\n{self.log_tails()}")
            missing = self.missing_daemons()
            if not missing:
                return
            if time.monotonic() > deadline:
                raise InstanceError(f"{self.name}: not ready after {timeout:.0f}s "
                                    f"(waiting for {', '.join(missing)})\n{self.log_tails()}")
            time.sleep(0.5)

    def missing_daemons(self) -> list:
        return []

    def log_tails(self, lines: int = 25) -> str:
        chunks = []
        if self.log_dir.is_dir():
            for log in sorted(self.log_dir.iterdir()):
                if log.is_file() and (log.name.endswith("Log") or log.name == "master.stdout"):
                    tail = _tail(log, lines)
                    if tail:
                        chunks.append(f"--- {log} (tail) ---\n{tail}")
        return "\n".join(chunks)

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGQUIT to the master, as `condor_off -fast`), then kill."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGQUIT)
                self.proc.wait(timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        self.kill()

    def kill(self) -> None:
        """Kill the master, every daemon it started and any job, without asking."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for pid in processes_using(str(self.workdir)):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def run(self, *args: str, check: bool = True, timeout: float = 60,
            input: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
            ) -> subprocess.CompletedProcess:
        """Run an HTCondor tool against this instance's config."""
        full_env = self.env
        if env:
            full_env.update(env)
        return subprocess.run(list(args), env=full_env, capture_output=True, text=True,
                              check=check, timeout=timeout, input=input, cwd=self.workdir)


#: Forks; the child starts a session, writes its pid to argv[2] (so it is
#: known even if our caller dies now) and execs argv[3:] with its output
#: appended to argv[1]; the parent prints the child's pid and exits.
_DETACH = """import os, sys
pid = os.fork()
if pid:
    print(pid, flush=True)
    os._exit(0)
os.setsid()
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
out = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.dup2(out, 1)
os.dup2(out, 2)
os.execvp(sys.argv[3], sys.argv[3:])
"""


class _Detached:
    """A process started by :data:`_DETACH`: the ``Popen`` calls the callers use
    (``pid``, ``poll``, ``wait``, ``send_signal``), from ``/proc``; its exit
    status is not ours to read (``returncode`` -1 once it is gone)."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    @classmethod
    def spawn(cls, argv, env, cwd, output, pidfile) -> "_Detached":
        import sys
        res = subprocess.run([sys.executable, "-c", _DETACH, str(output), str(pidfile), *argv],
                             env=env,
                             cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=30)
        if res.returncode != 0 or not res.stdout.strip().isdigit():
            raise InstanceError(f"cannot start {argv[0]}: {res.stderr.strip()[:200]}")
        return cls(int(res.stdout.strip()))

    def poll(self):
        if self.returncode is None:
            try:
                state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                state = "X"
            if state in ("Z", "X"):
                self.returncode = -1
        return self.returncode

    def wait(self, timeout: Optional[float] = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("condor_master", timeout)
            time.sleep(0.1)
        return self.returncode

    def send_signal(self, sig) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)


def own_environment() -> dict:
    """This process's environment without what HTCondor handed it: knobs
    (``_CONDOR_*``) and its daemon family (under a condor_master,
    CONDOR_INHERIT names the master as parent, CONDOR_PRIVATE_INHERIT carries
    the family's session key): never for another HTCondor, nor a batch job."""
    return {k: v for k, v in os.environ.items() if not k.startswith("_CONDOR_")
            and k not in ("CONDOR_INHERIT", "CONDOR_PRIVATE_INHERIT", "CONDOR_PARENT_ID")}


def processes_using(marker: str) -> list:
    """PIDs whose command line or CONDOR_CONFIG mentions ``marker``."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline or f"CONDOR_CONFIG={marker}".encode() in environ:
            found.append(int(entry))
    return found


class PersonalPool(CondorInstance):
    """Central manager and schedd (and optionally a job router) on 127.0.0.1,
    or on ``address`` (tests' VMs reach 198.18.0.1)."""

    def __init__(self, workdir: Path, name: str = "site", daemons: Sequence[str] = (
            "COLLECTOR", "NEGOTIATOR", "SCHEDD"), extra_config: str = "",
            include: Iterable[Path] = (), port: Optional[int] = None,
            address: str = "127.0.0.1"):
        self.port = port or free_port()
        self.address = address
        self.daemons = [d.upper() for d in daemons]
        user = _username()
        text = (COMMON_CONFIG.format(release=release_config(), local_dir=workdir, collector=f"{address}:{self.port}", name=name, address=address)
                + SECURITY_CONFIG.format(user=user)
                + f"COLLECTOR_NAME = {name}\n"
                + f"SCHEDD_NAME = {name}\n"
                + f"DAEMON_LIST = MASTER, {', '.join(self.daemons)}\n")
        super().__init__(workdir, name, text, include, extra_config)

    @property
    def collector_address(self) -> str:
        return f"{self.address}:{self.port}"

    def missing_daemons(self) -> list:
        wanted = {"COLLECTOR": "Collector", "NEGOTIATOR": "Negotiator", "SCHEDD": "Scheduler"}
        want = [wanted[d] for d in self.daemons if d in wanted] + ["DaemonMaster"]
        try:
            out = self.run("condor_status", "-any", "-af", "MyType", check=False, timeout=10)
        except subprocess.TimeoutExpired:
            return want
        seen = set(out.stdout.split())
        return [t for t in want if t not in seen]

    # -- helpers for tests and the demo ------------------------------------------
    def collector(self):
        import htcondor2
        return htcondor2.Collector(self.collector_address)

    def schedd(self):
        import htcondor2
        ad = self.collector().locate(htcondor2.DaemonType.Schedd)
        return htcondor2.Schedd(ad)

    def create_token(self, identity: str, authz: Sequence[str] = (), lifetime: Optional[int] = None) -> str:
        """Mint an IDTOKEN signed with this pool's key. The token is returned, never logged."""
        args = ["condor_token_create", "-identity", identity, "-key", "POOL"]
        for a in authz:
            args += ["-authz", a]
        if lifetime:
            args += ["-lifetime", str(int(lifetime))]
        res = self.run(*args, check=False)
        if res.returncode != 0:
            raise InstanceError(f"condor_token_create failed for {identity}: {res.stderr.strip()}")
        return res.stdout.strip()

    def submit(self, description: Mapping[str, str], count: int = 1) -> int:
        """Submit via the bindings; returns the cluster id."""
        import htcondor2
        result = self.schedd().submit(htcondor2.Submit(dict(description)), count=count)
        return result.cluster()


class ExecuteNode(CondorInstance):
    """A startd-only HTCondor that reports to ``collector``.

    ``cloud_config`` (a mapping of knob -> value) makes it a cloud worker: the
    shipped worker fragment is included and the knobs carry the per-instance
    values. ``token`` is written to the node's token directory (mode 0600).
    """

    def __init__(self, workdir: Path, name: str, collector: str, cpus: int = 1,
                 memory: int = 1024, cloud_config: Optional[Mapping[str, object]] = None,
                 token: Optional[str] = None, extra_config: str = "",
                 include: Iterable[Path] = (), worker_fragment: Optional[Path] = None):
        workdir = Path(workdir)
        user = _username()
        self.cloud = cloud_config is not None
        self.token = token
        text = (COMMON_CONFIG.format(release=release_config(), local_dir=workdir, collector=collector, name=name, address="127.0.0.1")
                + SECURITY_CONFIG.format(user=user)
                + "DAEMON_LIST = MASTER, STARTD\n"
                + f"STARTD_NAME = {name}\n"
                # A second master on this host must not use the family session.
                + "SEC_USE_FAMILY_SESSION = False\n"
                + "use FEATURE : PartitionableSlot\n"
                + "use POLICY : Always_Run_Jobs\n"
                + f"NUM_CPUS = {cpus}\nMEMORY = {memory}\n")
        includes = list(include)
        post = ""
        if cloud_config is not None:
            # The fragment first, then the per-instance values, which win.
            includes.insert(0, worker_fragment or shipped_config_dir() / "worker" / "50-cloud-worker.conf")
            values = dict(cloud_config)
            values.setdefault("CLOUD_PLUGINS_CENTRAL_MANAGER", collector)
            post = "".join(f"{k} = {config_value(v)}\n" for k, v in values.items())
        super().__init__(workdir, name, text, includes, post + extra_config)
        self.collector_address = collector

    def write_config(self) -> None:
        super().write_config()
        if self.token:
            tok = self.workdir / "tokens.d" / "cloud-worker"
            fd = os.open(tok, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.token + "\n")

    def missing_daemons(self) -> list:
        return [] if self.is_running() else ["condor_master"]

    def slot_ads(self, pool: PersonalPool):
        import htcondor2
        return pool.collector().query(htcondor2.AdType.Startd,
                                      constraint=f'Machine =!= undefined && regexp("@{self.name}@", Name)')


def _username() -> str:
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
