"""How a batch-queue provider reaches its cluster: the access method, kept
apart from the provider's logic (as TARDIS keeps its shell and SSH executors
apart from its site adapters).

An executor runs one command (an argv list, never a shell string) on the
cluster's submit host and returns its exit code and output.  ``stdin`` carries
what must not appear on a command line (the pilot script with its token).
Executors raise only ``TransientError`` (the host cannot be reached, or the
command timed out) or ``AuthError`` (the login was refused); what the command
itself says is the provider's to interpret.

* ``local``: the provisioner runs on a login node (``sbatch`` on its PATH);
* ``ssh``: OpenSSH to a login node, key authentication only (``BatchMode``:
  never a password prompt), one multiplexed connection reused across commands.

A site adds another method (slurmrestd, a gateway) by subclassing
``Executor`` and registering it in ``EXECUTORS``.
"""

from __future__ import annotations

import abc
import os
import shlex
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Sequence, Tuple

from .base import AuthError, TransientError, scrub

__all__ = ["Result", "Executor", "LocalExecutor", "SSHExecutor", "EXECUTORS", "executor"]


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    def first_error(self) -> str:
        """The command's first error line, short and without secrets."""
        lines = [ln for ln in (self.stderr or self.stdout).splitlines() if ln.strip()]
        return scrub(lines[0] if lines else f"exit code {self.returncode}")

    def error(self, needles: Sequence[str] = ()) -> Tuple[str, str]:
        """(the first needle found anywhere in the output, else "", and the
        line to report: the one with that needle, else the first error line
        that is not a retry; short, without secrets).  sbatch prints its
        retries, then the cause, then "Batch job submission failed"."""
        lines = [ln for ln in (self.stderr or self.stdout).splitlines() if ln.strip()]
        for needle in needles:
            for line in lines:
                if needle.lower() in line.lower():
                    return needle, scrub(line.strip())
        final = [ln for ln in lines if "retrying" not in ln.lower()] or lines
        return "", scrub(final[0].strip() if final else f"exit code {self.returncode}")


class Executor(abc.ABC):
    """Runs commands on the cluster's submit host."""

    def __init__(self, setting: Callable[[str, str, str], object], knob: Callable[[str], str],
                 timeout: float):
        self.setting, self.knob, self.timeout = setting, knob, timeout

    @abc.abstractmethod
    def run(self, argv: Sequence[str], stdin: str = "") -> Result:
        """Run ``argv``; raise TransientError if it cannot be run at all."""

    def describe(self) -> str:
        """Where commands run, for messages."""
        return "this host"

    def close(self) -> None:
        """Release connections; the default does nothing."""


def _subprocess(argv: Sequence[str], stdin: str, timeout: float, env: Mapping[str, str],
                what: str) -> Result:
    feed = {"input": stdin} if stdin else {"stdin": subprocess.DEVNULL}
    try:
        res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                             env=dict(env), **feed)
    except FileNotFoundError:
        raise TransientError(f"{argv[0]} not found on {what}") from None
    except subprocess.TimeoutExpired:
        raise TransientError(f"{argv[0]} on {what} did not answer within "
                             f"{timeout:g} s") from None
    except OSError as err:
        raise TransientError(f"cannot run {argv[0]} on {what}: {err.strerror}") from None
    return Result(res.returncode, res.stdout, res.stderr)


class LocalExecutor(Executor):
    """Commands run here.  Setting ``SLURM_CONF``: the cluster's slurm.conf,
    if not the system's."""

    def run(self, argv: Sequence[str], stdin: str = "") -> Result:
        # sbatch hands its whole environment to the job (--export=ALL): not
        # what HTCondor gave the provisioner (CONDOR_PRIVATE_INHERIT is its
        # master's session key).
        from ..localpool import own_environment
        env = own_environment()
        conf = str(self.setting("SLURM_CONF", "str", "") or "")
        if conf:
            env["SLURM_CONF"] = conf
        return _subprocess(argv, stdin, self.timeout, env, "this host")


class SSHExecutor(Executor):
    """Commands run on ``SSH_HOST`` as ``SSH_USER`` with the private key
    ``SSH_KEY`` (readable only by the provisioner's user); the host key is
    checked against ``SSH_KNOWN_HOSTS`` (default: OpenSSH's own files)."""

    def __init__(self, setting, knob, timeout):
        super().__init__(setting, knob, timeout)
        from ..config import ConfigError
        self.host = str(setting("SSH_HOST", "str", "") or "")
        if not self.host:
            raise ConfigError(f"{knob('SSH_HOST')} is required with {knob('ACCESS')} = ssh")
        self.port = int(setting("SSH_PORT", "int", "22"))
        self.user = str(setting("SSH_USER", "str", "") or "")
        self.key = str(setting("SSH_KEY", "str", "") or "")
        self.known_hosts = str(setting("SSH_KNOWN_HOSTS", "str", "") or "")
        self._control = ""

    @staticmethod
    def _control_dir() -> str:
        """This user's private directory of ssh connection sockets (one per
        login node, shared by this user's processes; ssh ends each one
        ControlPersist after its last use)."""
        path = os.path.join(tempfile.gettempdir(), f"cp-ssh-{os.getuid()}")
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise TransientError(f"{path} is not a private directory of this user: "
                                 "not sharing ssh connections through it")
        return path

    def describe(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    def _ssh(self) -> list:
        self._control = self._control or self._control_dir()
        cmd = ["ssh", "-p", str(self.port), "-o", "BatchMode=yes",
               "-o", f"ConnectTimeout={max(1, int(self.timeout))}",
               "-o", "ServerAliveInterval=15", "-o", "ControlMaster=auto",
               "-o", f"ControlPath={self._control}/%C", "-o", "ControlPersist=120",
               "-o", "LogLevel=ERROR"]
        if self.key:
            cmd += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            cmd += ["-o", f"UserKnownHostsFile={self.known_hosts}",
                    "-o", "StrictHostKeyChecking=yes"]
        if self.user:
            cmd += ["-l", self.user]
        return cmd + [self.host, "--"]

    def run(self, argv: Sequence[str], stdin: str = "") -> Result:
        # The remote side runs the words through a shell: quote each one.
        remote = " ".join(shlex.quote(a) for a in argv)
        res = _subprocess(self._ssh() + [remote], stdin, self.timeout, os.environ,
                          self.describe())
        if res.returncode == 255:  # ssh's own failure, not the command's
            err = res.first_error()
            if "Permission denied" in err or "Host key verification failed" in err:
                raise AuthError(f"ssh to {self.describe()} refused: {err}")
            raise TransientError(f"ssh to {self.describe()} failed: {err}")
        return res



#: Access methods by the name of setting ``ACCESS``.
EXECUTORS: Dict[str, type] = {"local": LocalExecutor, "ssh": SSHExecutor}


def executor(setting, knob, timeout: float) -> Executor:
    """The executor that setting ``ACCESS`` names; a bad name is a ConfigError."""
    from ..config import ConfigError
    name = str(setting("ACCESS", "str", "local") or "local").lower()
    if name not in EXECUTORS:
        raise ConfigError(f"{knob('ACCESS')} = {name!r}: expected one of "
                          f"{', '.join(sorted(EXECUTORS))}")
    return EXECUTORS[name](setting, knob, timeout)
