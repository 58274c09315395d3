"""A real Slurm cluster for the tests (dev/slurmhost, through the sandbox's
sudo rule), as tests/hypervisor.py is a cloud's compute hosts.

A bed is Debian's slurmctld, munged and N slurmd nodes.  Each node has its
own network (198.19.X.Y, reaching only the central manager's 198.18.0.1),
host name, pid namespace (its jobs die with it), /tmp, /var/tmp, /dev/shm and
/run; the file system is otherwise shared, as a cluster's.  The login node
``login`` runs sshd on 198.18.0.1, where only user ``hpcpilot`` logs in, only
with the bed's ed25519 key; its sessions have SLURM_CONF, so
``ssh ... hpcpilot@198.18.0.1 sbatch ...`` works and those jobs run as
``hpcpilot``.  The test user's own Slurm commands (``local``) use
``SLURM_CONF=DIR/slurm.conf`` and their jobs run as the test user.

    bed = SlurmBed(nodes=2, cpus=2, memory=2048).start()
    job = bed.sbatch("--time=5", wrap="hostname")              # as the test user
    job = bed.sbatch("--time=5", wrap="hostname", remote=True)  # as hpcpilot, over ssh
    bed.wait_job(job, "COMPLETED")
    bed.partition("short", "down")
    bed.stop()

Fixtures for other modules: ``slurm_bed`` (one 2-node bed per module) and
``slurm_beds`` (a factory: ``slurm_beds.bed(nodes=1)``; all stopped at the
module's end); import the one used into the test module.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

SLURMHOST = "/usr/local/libexec/cp-slurmhost"
#: On the sandbox's own tmpfs, outside /tmp (the nodes have their own /tmp).
BEDS = Path("/srv/vms")
#: Job states after which Slurm does nothing more with a job.
FINAL = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
         "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


class SlurmBed:
    """One cluster.  Slurm commands run as the test user on this host
    (``local``), as ``hpcpilot`` on the login node (``remote``), or as root
    through dev/slurmhost (``partition``)."""

    def __init__(self, nodes: int = 2, cpus: int = 2, memory: int = 2048,
                 base: Path = BEDS):
        self.nodes_wanted, self.cpus, self.memory = nodes, cpus, memory
        self.dir = Path(tempfile.mkdtemp(prefix="slurm-", dir=base))
        self.dir.chmod(0o755)          # the jobs' users read slurm.conf
        self.keydir = Path(tempfile.mkdtemp(prefix="slurm-key-", dir=base))   # 0700
        self.key = self.keydir / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "slurm-bed",
                        "-f", str(self.key)], check=True)
        self.info: dict = {}
        self.started_in: Optional[float] = None

    # ------------------------------------------------------------ dev/slurmhost
    def _host(self, *args: str, timeout: float = 120) -> str:
        res = subprocess.run(["sudo", "-n", SLURMHOST, args[0], str(self.dir), *args[1:]],
                             capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"slurmhost {args[0]}: {res.stderr.strip()[-4000:]}")
        return res.stdout

    def start(self) -> "SlurmBed":
        """Start the bed; returns once every node is idle."""
        t0 = time.monotonic()
        self.info = json.loads(self._host(
            "start", "--nodes", str(self.nodes_wanted), "--cpus", str(self.cpus),
            "--memory", str(self.memory), "--authorized-key", f"{self.key}.pub"))
        self.started_in = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop every process of the bed (idempotent); its logs stay in ``dir/log``."""
        self._host("stop")

    def partition(self, name: str, state: str) -> None:
        """Set partition ``name`` "up" or "down" (scontrol as root)."""
        self._host("partition", name, state)

    def status(self) -> dict:
        """{"running": bool, "nodes": {name: state}, "partitions": {name: "up"|"down"}}"""
        return json.loads(self._host("status"))

    # ------------------------------------------------------------ facts
    @property
    def conf(self) -> str:
        """The slurm.conf of the test user's own commands."""
        return str(self.dir / "slurm.conf")

    @property
    def nodes(self) -> List[str]:
        return list(self.info["nodes"])

    @property
    def addresses(self) -> Dict[str, str]:
        """node name -> its address (198.19.X.Y)."""
        return dict(self.info["addresses"])

    @property
    def login(self) -> dict:
        """{"host", "port", "user", "known_hosts", "hostname"} of the login node."""
        return self.info["login"]

    @property
    def public_key(self) -> Path:
        return Path(f"{self.key}.pub")

    def env(self) -> Dict[str, str]:
        """The environment of the test user's Slurm commands."""
        return dict(os.environ, SLURM_CONF=self.conf)

    def log(self, name: str) -> str:
        """A daemon's log: slurmctld.log, slurmd-node1.log, munged.log, sshd.log,
        or the stdout of one (slurmctld.out, ...)."""
        path = self.dir / "log" / name
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def logs(self, tail: int = 3000) -> str:
        """Every log's tail, for a failing test's message."""
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}"
                         for p in sorted((self.dir / "log").glob("*")) if p.is_file())

    # ------------------------------------------------------------ commands
    def local(self, *argv: str, input: Optional[str] = None, check: bool = True,
              timeout: float = 60) -> subprocess.CompletedProcess:
        """A Slurm command as the test user on this host."""
        return subprocess.run(argv, capture_output=True, text=True, env=self.env(),
                              input=input, check=check, timeout=timeout)

    def ssh_command(self, key: Optional[Path] = None, user: Optional[str] = None) -> List[str]:
        """ssh to the login node, non-interactive, the host key checked; the
        remote command (one shell line) follows."""
        login = self.login
        return ["ssh", "-p", str(login["port"]), "-i", str(key or self.key),
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
                "-o", f"UserKnownHostsFile={login['known_hosts']}",
                "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
                f"{user or login['user']}@{login['host']}", "--"]

    def remote(self, command: str, input: Optional[str] = None, check: bool = True,
               timeout: float = 60) -> subprocess.CompletedProcess:
        """``command`` (a shell line) on the login node as hpcpilot."""
        return subprocess.run(self.ssh_command() + [command], capture_output=True, text=True,
                              input=input, check=check, timeout=timeout)

    def sbatch(self, *args: str, script: Optional[str] = None, wrap: Optional[str] = None,
               remote: bool = False) -> str:
        """Submit a job (``script`` on sbatch's stdin, or ``wrap``); its id.
        ``remote``: over ssh, as hpcpilot."""
        argv = ["sbatch", "--parsable", *args] + ([f"--wrap={wrap}"] if wrap is not None else [])
        if remote:
            res = self.remote(" ".join(shlex.quote(a) for a in argv), input=script)
        else:
            res = self.local(*argv, input=script)
        return res.stdout.strip().split(";")[0]

    def provider_settings(self, access: str = "ssh") -> Dict[str, object]:
        """The slurm provider's settings for this bed (names without the prefix)."""
        if access == "local":
            return {"ACCESS": "local", "SLURM_CONF": self.conf}
        login = self.login
        return {"ACCESS": "ssh", "SSH_HOST": login["host"], "SSH_PORT": login["port"],
                "SSH_USER": login["user"], "SSH_KEY": str(self.key),
                "SSH_KNOWN_HOSTS": login["known_hosts"]}

    # ------------------------------------------------------------ jobs
    def jobs(self, user: Optional[str] = None) -> Dict[str, tuple]:
        """{job id: (state, reason, user)} of every job Slurm still knows
        (a finished job for MinJobAge, 30 s)."""
        out = self.local("squeue", "--all", "--states=all", "--noheader",
                         "--format=%i|%T|%r|%u").stdout
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        return {r[0]: (r[1], r[2], r[3]) for r in rows if user is None or r[3] == user}

    def live_jobs(self, user: Optional[str] = None) -> Dict[str, tuple]:
        return {j: v for j, v in self.jobs(user).items() if v[0] not in FINAL}

    def job(self, job: str) -> Dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Reason, NodeList, UserId,
        StartTime, EndTime, TimeLimit, ...); {} once Slurm forgot the job."""
        res = self.local("scontrol", "show", "job", "--oneliner", job, check=False)
        if res.returncode != 0:
            return {}
        return dict(w.split("=", 1) for w in res.stdout.split() if "=" in w)

    def wait_job(self, job: str, states: Sequence[str] | str, timeout: float = 60,
                 interval: float = 0.3) -> Dict[str, str]:
        """Wait until ``job`` is in one of ``states``; its scontrol fields."""
        states = (states,) if isinstance(states, str) else tuple(states)
        deadline = time.monotonic() + timeout
        info: Dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job)
            if info.get("JobState") in states:
                return info
            time.sleep(interval)
        raise AssertionError(f"job {job} not {'/'.join(states)} after {timeout:g} s: "
                             f"{info.get('JobState')} {info.get('Reason')}\n{self.logs(1500)}")

    # ------------------------------------------------------------ processes
    def processes(self) -> Dict[int, str]:
        """pid -> command line of every live process of the bed: dev/slurmhost's
        namespace processes and everything under them (daemons, ssh sessions,
        job steps, jobs).  A process that ended is not counted even if no one
        reaped it: the sandbox's pid 1 is the test command, which reaps no
        orphans."""
        procs = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except (OSError, ValueError):
                continue
            if state not in ("Z", "X"):   # a dead one, not reaped by the sandbox's pid 1
                procs[int(entry)] = (int(ppid), argv)
        mine = {pid for pid, (_, argv) in procs.items()
                if any(a.endswith("cp-slurmhost") for a in argv[:2]) and str(self.dir) in argv}
        grew = True
        while grew:
            more = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
            mine |= more
            grew = bool(more)
        return {pid: " ".join(procs[pid][1]).strip() for pid in mine}


def require_slurmhost() -> None:
    """The bed needs the sandbox (its sudo rule and private network)."""
    res = subprocess.run(["sudo", "-n", "-l", SLURMHOST], capture_output=True, text=True)
    if res.returncode != 0 or not BEDS.is_dir():
        raise RuntimeError("the Slurm test bed needs dev/slurmhost inside dev/sandbox: "
                           "run `make test`")


class SlurmBeds:
    """Starts beds; stops all of them at the end."""

    def __init__(self):
        self.beds: List[SlurmBed] = []

    def bed(self, nodes: int = 2, cpus: int = 2, memory: int = 2048) -> SlurmBed:
        require_slurmhost()
        b = SlurmBed(nodes, cpus, memory)
        self.beds.append(b)
        return b.start()

    def stop_all(self) -> None:
        errors = []
        for b in self.beds:
            try:
                b.stop()
            except Exception as err:   # stop the others all the same
                errors.append(err)
        if errors:
            raise errors[0]


@pytest.fixture(scope="module")
def slurm_beds():
    """A factory of beds (``slurm_beds.bed(nodes=1)``), all stopped at the module's end."""
    beds = SlurmBeds()
    try:
        yield beds
    finally:
        beds.stop_all()


@pytest.fixture(scope="module")
def slurm_bed():
    """A 2-node bed (2 cores, 2048 MB each) for the whole module."""
    beds = SlurmBeds()
    try:
        yield beds.bed()
    finally:
        beds.stop_all()
