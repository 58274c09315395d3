"""A real Slurm cluster for the tests (dev/slurmhost, through the sandbox's
sudo rule): slurmctld, munged, N slurmd nodes each in its own network, UTS,
pid and mount namespace (own host name, /tmp and /run; reaching only the
central manager's 198.18.0.1), and an ssh login node where only ``hpcpilot``
logs in, with the bed's key.  Jobs submitted over ssh run as ``hpcpilot``,
not as the test user."""

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SLURMHOST = "/usr/local/libexec/cp-slurmhost"
#: On the sandbox's own tmpfs, outside /tmp (the nodes have their own /tmp).
BEDS = "/srv/vms"


class SlurmBed:
    """One cluster: ``start()``, ``stop()``, Slurm commands as the test user
    (``local``), as the login node's user (``remote``), and as root
    (``partition``)."""

    def __init__(self, nodes=2, cpus=2, memory=2048):
        self.nodes, self.cpus, self.memory = nodes, cpus, memory
        self.dir = Path(tempfile.mkdtemp(prefix="slurm-", dir=BEDS))
        self.dir.chmod(0o755)          # hpcpilot reads slurm.conf, munge's socket
        self.keydir = Path(tempfile.mkdtemp(prefix="slurm-key-", dir=BEDS))  # 0700
        self.key = self.keydir / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True)
        self.info = {}

    def _host(self, *args, timeout=120):
        res = subprocess.run(["sudo", "-n", SLURMHOST, *args], capture_output=True, text=True,
                             timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"slurmhost {args[0]}: {res.stderr.strip()[-3000:]}")
        return res.stdout

    def start(self):
        t0 = time.monotonic()
        self.info = json.loads(self._host("start", str(self.dir), "--nodes", str(self.nodes),
                                          "--cpus", str(self.cpus), "--memory", str(self.memory),
                                          "--authorized-key", f"{self.key}.pub"))
        self.started_in = time.monotonic() - t0
        return self

    def stop(self):
        self._host("stop", str(self.dir))

    def partition(self, name, state):
        self._host("partition", str(self.dir), name, state)

    @property
    def conf(self) -> str:
        return str(self.dir / "slurm.conf")

    @property
    def login(self) -> dict:
        return self.info["login"]

    def env(self):
        return dict(os.environ, SLURM_CONF=self.conf)

    def local(self, *argv, input=None, check=True):
        """A Slurm command as the test user on this host."""
        return subprocess.run(argv, capture_output=True, text=True, env=self.env(),
                              input=input, check=check, timeout=60)

    def ssh_command(self):
        login = self.login
        return ["ssh", "-p", str(login["port"]), "-i", str(self.key), "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={login['known_hosts']}",
                "-o", "StrictHostKeyChecking=yes", f"{login['user']}@{login['host']}", "--"]

    def remote(self, command, input=None, check=True):
        """``command`` (a shell line) on the login node as hpcpilot."""
        return subprocess.run(self.ssh_command() + [command], capture_output=True, text=True,
                              input=input, check=check, timeout=60)

    def provider_settings(self, access="ssh"):
        """The slurm provider's settings for this bed (short names)."""
        if access == "local":
            return {"ACCESS": "local", "SLURM_CONF": self.conf}
        login = self.login
        return {"ACCESS": "ssh", "SSH_HOST": login["host"], "SSH_PORT": login["port"],
                "SSH_USER": login["user"], "SSH_KEY": str(self.key),
                "SSH_KNOWN_HOSTS": login["known_hosts"]}

    def jobs(self, user=None):
        """{job id: (state, reason, user)} of every job Slurm still knows."""
        out = self.local("squeue", "--all", "--states=all", "--noheader",
                         "--format=%i|%T|%r|%u").stdout
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        return {r[0]: (r[1], r[2], r[3]) for r in rows if user is None or r[3] == user}

    def live_jobs(self, user=None):
        return {j: v for j, v in self.jobs(user).items()
                if v[0] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")}

    def log(self, name):
        path = self.dir / "log" / name
        return path.read_text(errors="replace") if path.exists() else ""


def require_slurmhost():
    if not os.path.exists(SLURMHOST):
        raise RuntimeError("the Slurm test bed needs dev/slurmhost inside dev/sandbox: "
                           "run `make test`")


@pytest.fixture(scope="module")
def slurm_bed():
    """A 2-node bed for the whole module, stopped at its end."""
    require_slurmhost()
    bed = SlurmBed().start()
    try:
        yield bed
    finally:
        bed.stop()
