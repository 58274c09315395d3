"""The ``slurm`` provider: instances are pilot jobs in a Slurm cluster (an HPC
allocation), each a user-space HTCondor execute node (node/pilot.py).

* ``create`` submits one pilot per instance with ``sbatch`` (the script on
  its standard input); ``list`` reads ``squeue`` and keeps the jobs whose
  comment carries this provisioner's tags; ``terminate`` is ``scancel``.
* A pilot waiting in the queue is PENDING: the provisioner counts it as
  booting capacity, under PENDING_TIMEOUT (``queued``), and cancels it when
  the demand is gone.  Its ``launch_time`` is its start once it runs, so
  JOIN_TIMEOUT counts from there.
* How commands reach the cluster (this host, ssh to a login node) is the
  executor's business (executors.py, setting ``ACCESS``).

Settings (``CLOUD_PLUGINS_<ENTRY>_<NAME>``; docs/knobs-slurm.md): ACCESS,
SSH_HOST, SSH_PORT, SSH_USER, SSH_KEY, SSH_KNOWN_HOSTS, SLURM_CONF, PARTITION,
ACCOUNT, QOS, WALLTIME, CONSTRAINT, CONDOR_LOCATION, PILOT_DIR,
PILOT_MARGIN, PILOT_STARTUP, DEFAULT_RUNTIME, OUTPUT, COMMAND_TIMEOUT.  The entry's CPUS and
MEMORY are each pilot's cores and memory (auto: a whole node of PARTITION).
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Dict, List, Mapping, Optional, Sequence

from .base import (TAG_ENTRY, AuthError, Instance, InstanceSpec, InstanceState, InstanceType, Provider,
                   ProviderError, QuotaError, TransientError)
from .executors import executor

#: Slurm job states (squeue %T) -> InstanceState.  A suspended or stopped
#: job keeps its allocation and resumes (preemption by suspension, gang
#: scheduling): running.  Only the end states are TERMINATED; a state this
#: table does not know (a newer Slurm's) counts as running, never as over.
STATES = {"PENDING": InstanceState.PENDING, "CONFIGURING": InstanceState.PENDING,
          "REQUEUED": InstanceState.PENDING, "REQUEUE_HOLD": InstanceState.PENDING,
          "REQUEUE_FED": InstanceState.PENDING, "RESV_DEL_HOLD": InstanceState.PENDING,
          "RUNNING": InstanceState.RUNNING, "RESIZING": InstanceState.RUNNING,
          "SIGNALING": InstanceState.RUNNING, "SUSPENDED": InstanceState.RUNNING,
          "STOPPED": InstanceState.RUNNING, "STAGE_OUT": InstanceState.STOPPING,
          "COMPLETING": InstanceState.STOPPING,
          **{s: InstanceState.TERMINATED for s in (
              "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
              "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT", "REVOKED")}}
#: Pending reasons that never clear by waiting: the pilot can never start.
HOPELESS = ("InvalidAccount", "InvalidQOS", "BadConstraints", "PartitionConfig",
            "AccountNotAllowed", "QOSNotAllowed", "JobHeldAdmin", "DependencyNeverSatisfied",
            "PartitionTimeLimit", "PartitionNodeLimit", "ReservationInvalid",
            "QOSMaxWallDurationPerJobLimit", "AssocMaxWallDurationPerJobLimit",
            "QOSMaxCpuPerJobLimit", "AssocMaxCpuPerJobLimit", "QOSMaxMemoryPerJob",
            "AssocMaxMemPerJob")
#: Errors (anywhere in the output: sbatch prints its retries first) ->
#: provider errors, first match wins; others: ProviderError.
ERRORS = (("Unable to contact slurm controller", TransientError),
          ("Socket timed out", TransientError), ("temporarily unable", TransientError),
          ("job queue full", TransientError), ("Munge", TransientError),
          ("Job violates accounting/QOS policy", QuotaError),
          ("QOSMaxSubmitJob", QuotaError), ("AssocMaxSubmitJob", QuotaError),
          ("Access/permission denied", AuthError), ("Invalid user", AuthError),
          ("authentication", AuthError))
COMMENT = "condor-plugins"
FIELDS = "%i|%T|%V|%S|%r|%k|%N"   # id, state, submit, start, reason, comment, nodes


def _duration(seconds: int) -> str:
    """Slurm's --time (D-HH:MM:SS), rounded up to whole minutes."""
    minutes = max(1, -(-int(seconds) // 60))
    return f"{minutes // 1440}-{minutes % 1440 // 60:02d}:{minutes % 60:02d}:00"


def _comment(tags: Mapping[str, str]) -> str:
    q = urllib.parse.quote
    return COMMENT + " " + " ".join(f"{q(k, safe='')}={q(v, safe='')}"
                                    for k, v in sorted(tags.items()))


def _tags(comment: str) -> Optional[Dict[str, str]]:
    words = comment.split()
    if not words or words[0] != COMMENT:
        return None
    out = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if sep:
            out[urllib.parse.unquote(key)] = urllib.parse.unquote(value)
    return out


def _epoch(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:
        return None   # N/A, Unknown, or not yet known


class SlurmProvider(Provider):
    """Pilot jobs in one Slurm partition (or the cluster's default)."""

    type_name = "slurm"
    queued = True
    SETTINGS = ("ACCESS", "SSH_HOST", "SSH_PORT", "SSH_USER", "SSH_KEY", "SSH_KNOWN_HOSTS",
                "SLURM_CONF", "PARTITION", "ACCOUNT", "QOS", "WALLTIME", "CONSTRAINT",
                "CONDOR_LOCATION", "PILOT_DIR", "PILOT_MARGIN", "PILOT_STARTUP",
                "DEFAULT_RUNTIME", "OUTPUT", "COMMAND_TIMEOUT")
    #: Defaults of the settings that decide which jobs a pilot takes.
    TIMES = {"WALLTIME": "1d", "PILOT_MARGIN": "300", "PILOT_STARTUP": "120",
             "DEFAULT_RUNTIME": "3600"}

    def __init__(self, entry: str, settings: Mapping[str, str]):
        super().__init__(entry, settings)
        self.timeout = float(self.setting("COMMAND_TIMEOUT", "duration", "60"))
        self.exec = executor(self.setting, self.knob, self.timeout)
        self.partition = self.setting("PARTITION", "str", "") or ""
        self.walltime = int(self.setting("WALLTIME", "duration", self.TIMES["WALLTIME"]))
        self.margin = int(self.setting("PILOT_MARGIN", "duration", self.TIMES["PILOT_MARGIN"]))
        startup = int(self.setting("PILOT_STARTUP", "duration", self.TIMES["PILOT_STARTUP"]))
        if self.margin + startup >= self.walltime:
            from ..config import ConfigError
            raise ConfigError(f"{self.knob('PILOT_MARGIN')} ({self.margin} s) + "
                              f"{self.knob('PILOT_STARTUP')} ({startup} s): must be less "
                              f"than {self.knob('WALLTIME')} ({self.walltime} s)")

    @classmethod
    def template_attrs(cls, settings: Mapping[str, str]) -> Dict[str, str]:
        """A pilot takes only jobs whose declared runtime fits its walltime
        less the margin (55-cloud-pilot.conf), and less the time it takes to
        start (PILOT_STARTUP): its template takes only the jobs it will."""
        from ..config import PARSERS
        from ..node.pilot import job_runtime
        get = lambda name: PARSERS["duration"](settings.get(name) or cls.TIMES[name])  # noqa
        try:
            usable = get("WALLTIME") - get("PILOT_MARGIN") - get("PILOT_STARTUP")
            default = get("DEFAULT_RUNTIME")
        except ValueError:
            return {}   # the provider itself reports the bad knob
        return {"CloudJobRuntime": job_runtime(str(default)),
                "CloudPilotUsableTime": str(usable),
                "Requirements": "MY.CloudJobRuntime <= MY.CloudPilotUsableTime"}

    # ---------------------------------------------------------------- helpers
    def _run(self, argv: Sequence[str], stdin: str = "", what: str = "") -> str:
        res = self.exec.run(argv, stdin)
        if res.returncode == 0:
            return res.stdout
        needle, err = res.error([n for n, _ in ERRORS])
        kind = dict(ERRORS).get(needle, ProviderError)
        raise kind(f"{what or argv[0]} on {self.exec.describe()}: {err}")

    def _sbatch_args(self, spec: InstanceSpec, name: str, comment: str) -> List[str]:
        args = ["sbatch", "--parsable", f"--job-name={name}", f"--comment={comment}",
                f"--time={_duration(self.walltime)}", "--nodes=1", "--ntasks=1",
                f"--cpus-per-task={spec.cpus}", "--no-requeue",
                f"--output={self.setting('OUTPUT', 'str', '/dev/null')}"]
        if spec.memory_mb > 0:
            args.append(f"--mem={spec.memory_mb}")
        for flag, name_ in (("--partition", "PARTITION"), ("--account", "ACCOUNT"),
                            ("--qos", "QOS"), ("--constraint", "CONSTRAINT")):
            value = self.setting(name_, "str", "")
            if value:
                args.append(f"{flag}={value}")
        return args

    # ---------------------------------------------------------------- interface
    def describe(self, spec: InstanceSpec) -> Optional[InstanceType]:
        """A whole node of the partition (the smallest one; without PARTITION
        the cluster's default, marked * by sinfo): for CPUS/MEMORY auto."""
        argv = ["sinfo", "--noheader", "--format=%P|%c|%m"]
        if self.partition:
            argv.append(f"--partition={self.partition}")
        sizes = []
        for line in self._run(argv, what="sinfo").splitlines():
            part, cpus, memory = (line.strip().split("|") + ["", ""])[:3]
            if not self.partition and not part.endswith("*"):
                continue
            if cpus.rstrip("+").isdigit() and memory.rstrip("+").isdigit():
                sizes.append((int(cpus.rstrip("+")), int(memory.rstrip("+"))))
        if not sizes:
            raise ProviderError(f"partition {self.partition or '(default)'} has no nodes")
        cpus, memory = min(sizes)
        if memory <= 1:   # RealMemory unset in slurm.conf: Slurm says 1 MB
            raise ProviderError(f"partition {self.partition or '(default)'}: Slurm does not "
                                f"know its nodes' memory (RealMemory); set "
                                f"{self.knob('MEMORY')}")
        return InstanceType(self.partition or "default", cpus, memory)

    def create(self, spec: InstanceSpec, count: int, tags: Mapping[str, str],
               user_data: str, request_token: str) -> List[Instance]:
        from ..node.pilot import PilotSettings, render_pilot
        script = render_pilot(user_data, PilotSettings(
            condor=self.setting("CONDOR_LOCATION", "str", "/usr"),
            workdir=self.setting("PILOT_DIR", "str", ""), walltime=self.walltime,
            cpus=spec.cpus, memory_mb=spec.memory_mb, margin=self.margin,
            default_runtime=int(self.setting("DEFAULT_RUNTIME", "duration",
                                             self.TIMES["DEFAULT_RUNTIME"]))))
        out = []
        for i in range(count):
            name = f"cp-{request_token}" + (f"-{i}" if count > 1 else "")
            argv = self._sbatch_args(spec, name, _comment(tags))
            job = self._run(argv, script, what="sbatch").strip().split(";")[0]
            if not job.isdigit():
                raise ProviderError(f"sbatch on {self.exec.describe()} printed no job id")
            out.append(Instance(job, self.entry, InstanceState.PENDING, time.time(),
                                dict(tags), reason="submitted"))
        return out

    def list(self, owner_tags: Mapping[str, str]) -> List[Instance]:
        # --me: only this account's jobs; all states, so finished pilots show
        # as terminated (with the reason) until Slurm forgets them (MinJobAge).
        # --all: a hidden partition's jobs too.
        out = self._run(["env", "SLURM_TIME_FORMAT=%s", "squeue", "--me", "--all", "--noheader",
                         "--states=all", f"--format={FIELDS}"], what="squeue")
        instances = []
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) < 7:
                continue
            job, state, submitted, started, reason, comment, nodes = parts[:7]
            tags = _tags(comment.strip())
            if tags is None or any(tags.get(k) != v for k, v in owner_tags.items()):
                continue
            st = STATES.get(state.strip(), InstanceState.RUNNING)
            reason = "" if reason.strip() in ("None", "(null)") else reason.strip()
            if st is InstanceState.RUNNING and state.strip() != "RUNNING":
                reason = state.strip().lower() + (f" ({reason})" if reason else "")
            if st is InstanceState.PENDING and reason.split(",")[0] in HOPELESS:
                st = InstanceState.ERROR
            elif st is InstanceState.TERMINATED:
                reason = state.strip().lower() + (f" ({reason})" if reason else "")
            launched = _epoch(started) if st in (InstanceState.RUNNING,
                                                 InstanceState.STOPPING) else None
            instances.append(Instance(job.strip(), tags.get(TAG_ENTRY, self.entry),
                                      st, launched or _epoch(submitted), tags,
                                      address=nodes.strip(), reason=reason))
        return instances

    def terminate(self, ids: Sequence[str]) -> None:
        jobs = [i for i in ids if i.isdigit()]
        if not jobs:
            return
        res = self.exec.run(["scancel", *jobs])
        err = res.first_error()
        # Already finished or forgotten: not an error (idempotent).
        if res.returncode != 0 and not any(s in err for s in (
                "Invalid job id", "already completing or completed", "Job/step already")):
            raise ProviderError(f"scancel on {self.exec.describe()}: {err}")

    def close(self) -> None:
        self.exec.close()
