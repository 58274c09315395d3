"""The pilot: a VM's contextualisation rendered as a batch job (HPC, Slurm).

``render_pilot(user_data, settings)`` turns the cloud-init document every
instance gets (contextualize.py: the worker fragment, the per-instance knobs,
the worker and control tokens, the node-control script, the site's extra
files) into one bash script that, run as a batch job,

* makes a private directory (mode 0700) under ``settings.workdir`` (default
  ``$TMPDIR`` or /tmp), and writes every file of the user data below it at
  its own path (``/etc/condor/config.d/x.conf`` -> ``DIR/etc/condor/config.d/
  x.conf``) with its mode (tokens 0600);
* adds the pilot fragment ``config.d/worker/55-cloud-pilot.conf`` (walltime
  awareness) and, at start, ``62-cloud-pilot.conf``: the batch job's id as the
  instance id, the end of the allocation (``SLURM_JOB_END_TIME``, else start
  plus the walltime), its cores and memory, and the paths below DIR;
* runs ``condor_master`` of the HTCondor installation ``settings.condor``
  (a CVMFS or shared-tarball release directory, or /usr) in user space, with
  a ``condor_config`` that reads only DIR's files;
* on SIGTERM (scancel, or Slurm's walltime) shuts HTCondor down fast, so the
  schedds requeue its jobs at once; on exit removes DIR (and the tokens).

The script travels on sbatch's standard input, never on a command line; the
tokens in it are seen by Slurm's administrators and the job's owner only.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass
from typing import List, Mapping, Tuple

from ..config import ConfigError

__all__ = ["PilotSettings", "render_pilot", "cloud_config_files", "job_runtime", "PILOT_CONF"]

PILOT_CONF = "/etc/condor/config.d/55-cloud-pilot.conf"
PILOT_INSTANCE_CONF = "/etc/condor/config.d/62-cloud-pilot.conf"


@dataclass(frozen=True)
class PilotSettings:
    condor: str = "/usr"        # HTCondor release directory on the compute node
    workdir: str = ""           # parent of the private directory ("": $TMPDIR or /tmp)
    walltime: int = 86400       # seconds: the lease end if Slurm does not say
    cpus: int = 1
    memory_mb: int = 0          # 0: what Slurm says (SLURM_MEM_PER_NODE)
    margin: int = 300           # retire this long before the end
    default_runtime: int = 3600  # what a job that declares no runtime is assumed to take


def job_runtime(default: str) -> str:
    """The ClassAd expression of a job's declared runtime in seconds (the
    pilot fragment's CLOUD_PLUGINS_JOB_RUNTIME, and the entry's template ad):
    BatchRuntime, MaxWallTimeMins (minutes), MaxWallTime, JobDurationEstimate,
    else ``default``."""
    return ("ifThenElse(TARGET.BatchRuntime isnt undefined, TARGET.BatchRuntime, "
            "ifThenElse(TARGET.MaxWallTimeMins isnt undefined, 60 * TARGET.MaxWallTimeMins, "
            "ifThenElse(TARGET.MaxWallTime isnt undefined, TARGET.MaxWallTime, "
            "ifThenElse(TARGET.JobDurationEstimate isnt undefined, TARGET.JobDurationEstimate, "
            f"{default}))))")


def cloud_config_files(user_data: str) -> List[Mapping]:
    """The ``write_files`` of a cloud-init document, contents decoded:
    dicts with ``path``, ``content`` (bytes) and ``permissions``."""
    import yaml
    try:
        doc = yaml.safe_load(user_data)
        files = list(doc.get("write_files") or [])
    except (yaml.YAMLError, AttributeError, TypeError):
        raise ConfigError("user data is not a valid cloud-config document") from None
    out = []
    for f in files:
        raw = f.get("content", "")
        data = (base64.b64decode(raw) if f.get("encoding") in ("b64", "base64")
                else str(raw).encode())
        out.append({"path": str(f.get("path")), "content": data,
                    "permissions": str(f.get("permissions") or "0644")})
    return out


def _pilot_fragment() -> bytes:
    from ..localpool import shipped_config_dir
    return (shipped_config_dir() / "worker" / "55-cloud-pilot.conf").read_bytes()


def _write(path: str, content: bytes, mode: str, n: int) -> List[str]:
    """Lines that write ``content`` to DIR``path`` with ``mode``, base64 in a
    quoted here-document (no process sees it on a command line)."""
    target = shlex.quote(path.lstrip("/"))
    body = base64.encodebytes(content).decode("ascii").rstrip("\n")
    return [f'mkdir -p "$(dirname "$dir"/{target})"',
            f'base64 -d > "$dir"/{target} <<\'CP_FILE_{n}\'', body, f"CP_FILE_{n}",
            f'chmod {mode} "$dir"/{target}']


SCRIPT_HEAD = r'''#!/bin/bash
# condor_plugins pilot: a user-space HTCondor execute node in this batch job.
set -u
umask 077
log() { echo "condor_plugins pilot: $*"; }
# Nothing an HTCondor above the submitter handed down (sbatch exports its
# environment): no knobs, no daemon family, no session key.
unset CONDOR_INHERIT CONDOR_PRIVATE_INHERIT CONDOR_PARENT_ID CONDOR_CONFIG
for v in $(compgen -e); do case $v in _CONDOR_*|_condor_*) unset "$v";; esac; done
trap 'log "SIGTERM before HTCondor started"; exit 143' TERM
parent=${CP_WORKDIR:-${TMPDIR:-/tmp}}
dir=$(mktemp -d "$parent/cp-pilot.XXXXXXXX") || { log "cannot create a directory in $parent"; exit 1; }
chmod 0700 "$dir"
trap 'rm -rf "$dir"' EXIT
echo "${SLURM_JOB_ID:-}" > "$dir/job"
# A pilot killed before its trap ran (SIGKILL) left its directory, and its
# tokens: remove this user's that belong to a batch job Slurm says is over
# (or to an earlier run of this very job). If Slurm cannot say, keep them.
for old in "$parent"/cp-pilot.*; do
  [ "$old" != "$dir" ] && [ ! -L "$old" ] && [ -d "$old" ] && [ -O "$old" ] || continue
  job=$(cat "$old/job" 2>/dev/null) || continue
  case $job in ''|*[!0-9_]*) continue;; esac
  if [ "$job" = "${SLURM_JOB_ID:-}" ]; then state=REQUEUED
  else state=$(squeue -h -j "$job" -o %T 2>&1) || case $state in
    *"Invalid job id"*) state=GONE;; *) continue;; esac
  fi
  case ${state:-GONE} in
    GONE|REQUEUED|COMPLETED|CANCELLED|FAILED|TIMEOUT|NODE_FAIL|PREEMPTED|BOOT_FAIL|DEADLINE|OUT_OF_MEMORY)
      rm -rf "$old" && log "removed $old, left by job $job ($state)";;
  esac
done
start=$(date +%s)
end=${SLURM_JOB_END_TIME:-$((start + CP_WALLTIME))}
'''

SCRIPT_TAIL = r'''
loc=$CP_CONDOR
[ -x "$loc/sbin/condor_master" ] || { log "no HTCondor at $loc (no sbin/condor_master)"; exit 1; }
libexec=$loc/libexec; [ -d "$loc/libexec/condor" ] && libexec=$loc/libexec/condor
lib=$loc/lib; [ -d "$loc/lib/condor" ] && lib=$loc/lib/condor
share=$loc/share; [ -d "$loc/share/condor" ] && share=$loc/share/condor
cpus=${SLURM_CPUS_ON_NODE:-$CP_CPUS}
memory=${SLURM_MEM_PER_NODE:-}
if [ -z "$memory" ] && [ -n "${SLURM_MEM_PER_CPU:-}" ]; then memory=$((SLURM_MEM_PER_CPU * cpus)); fi
memory=${memory:-$CP_MEMORY}
mkdir -p "$dir"/log "$dir"/spool "$dir"/execute "$dir"/lock "$dir"/run "$dir"/passwords.d
cat > "$dir/condor_config" <<EOF
# This pilot's own configuration: nothing of the host's HTCondor is read.
RELEASE_DIR = $loc
BIN = $loc/bin
SBIN = $loc/sbin
LIB = $lib
LIBEXEC = $libexec
SHARE = $share
LOCAL_DIR = $dir
LOG = \$(LOCAL_DIR)/log
SPOOL = \$(LOCAL_DIR)/spool
EXECUTE = \$(LOCAL_DIR)/execute
LOCK = \$(LOCAL_DIR)/lock
RUN = \$(LOCAL_DIR)/run
SEC_PASSWORD_DIRECTORY = \$(LOCAL_DIR)/passwords.d
SEC_TOKEN_SYSTEM_DIRECTORY = \$(LOCAL_DIR)/etc/condor/tokens.d
SEC_TOKEN_DIRECTORY = \$(SEC_TOKEN_SYSTEM_DIRECTORY)
# A batch job cannot make mount namespaces or change users.
MOUNT_UNDER_SCRATCH =
USE_SHARED_PORT = False
# Other HTCondors may share this host (other pilots, a login node's): never
# take one of them for this pilot's own family of daemons.
SEC_USE_FAMILY_SESSION = False
LOCAL_CONFIG_DIR = \$(LOCAL_DIR)/etc/condor/config.d
EOF
id=${SLURM_JOB_ID:-unknown}
cat > "$dir/etc/condor/config.d/62-cloud-pilot.conf" <<EOF
# This pilot's batch job (after the per-instance values of 60-).
CLOUD_PLUGINS_INSTANCE_ID = $id
CLOUD_PLUGINS_SLURM_JOB_ID = $id
CLOUD_PLUGINS_PILOT_END = $end
CLOUD_PLUGINS_PILOT_MARGIN = $CP_MARGIN
CLOUD_PLUGINS_PILOT_DEFAULT_RUNTIME = $CP_DEFAULT_RUNTIME
CLOUD_PLUGINS_POWEROFF_SCRIPT =
CLOUD_PLUGINS_NODE_CONTROL = $dir/usr/libexec/condor/condor_cloud_node_control
CLOUD_PLUGINS_CONTROL_TOKEN_DIR = $dir/etc/condor/cloud-control.d
NUM_CPUS = $cpus
EOF
[ "${memory:-0}" -gt 0 ] && echo "MEMORY = $memory" >> "$dir/etc/condor/config.d/62-cloud-pilot.conf"
export CONDOR_CONFIG=$dir/condor_config
export PATH=$loc/bin:$loc/sbin:$PATH
log "job $id on $(hostname): $cpus cores, ${memory:-?} MB, until $(date -d @"$end" 2>/dev/null || echo "$end")"
"$loc/sbin/condor_master" -f &
master=$!
# scancel and the walltime send SIGTERM: a fast shutdown, so the schedds
# requeue the jobs at once; then wait for the master to be gone.
trap 'log "SIGTERM: shutting HTCondor down fast"; kill -QUIT $master 2>/dev/null' TERM
wait $master; rc=$?
while kill -0 $master 2>/dev/null; do wait $master; rc=$?; done
log "condor_master exited ($rc); the pilot ends"
# 99: the master's "do not restart me" (DAEMON_SHUTDOWN, condor_off): a
# planned end. Anything else is the batch job's failure, for Slurm to record.
[ $rc -eq 99 ] && rc=0
exit $rc
'''


def render_pilot(user_data: str, settings: PilotSettings) -> str:
    """The batch script of one pilot (see the module docstring)."""
    if not settings.condor.startswith("/"):
        raise ConfigError(f"HTCondor location {settings.condor!r}: expected an absolute path")
    files: List[Tuple[str, bytes, str]] = [(f["path"], f["content"], f["permissions"])
                                           for f in cloud_config_files(user_data)]
    files.append((PILOT_CONF, _pilot_fragment(), "0644"))
    values = {"CP_CONDOR": settings.condor, "CP_WALLTIME": str(int(settings.walltime)),
              "CP_CPUS": str(int(settings.cpus)), "CP_MEMORY": str(int(settings.memory_mb)),
              "CP_MARGIN": str(int(settings.margin)),
              "CP_DEFAULT_RUNTIME": str(int(settings.default_runtime))}
    lines = [f"{k}={shlex.quote(v)}" for k, v in values.items()]
    if settings.workdir:
        lines.append(f"CP_WORKDIR={shlex.quote(settings.workdir)}")
    lines.append(SCRIPT_HEAD.split("\n", 1)[1])
    for n, (path, content, mode) in enumerate(files):
        if path == PILOT_INSTANCE_CONF or not path.startswith("/") or ".." in path.split("/"):
            raise ConfigError(f"user data file {path!r}: not a file a pilot can write")
        lines += _write(path, content, mode, n)
    return SCRIPT_HEAD.split("\n", 1)[0] + "\n" + "\n".join(lines) + SCRIPT_TAIL
