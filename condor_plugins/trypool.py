"""``condor_cloud try``: a personal pool with condor_plugins enabled, to try
things on before touching a site.

One condor_master in DIR runs a collector, negotiator and schedd with this
installation's fragments (``condor_cloud config``) and an admin file that
enables them, plus the provisioner with a ``local`` entry: its "VMs" are
HTCondor execute nodes on this host, contextualised as cloud VMs are.  It runs
on after the command returns; ``condor_cloud try --stop`` stops it (the
master, then every node).  Nothing outside DIR is touched.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from .installed import pip_config
from .localpool import PersonalPool, processes_using, remove_tree, wait_for

__all__ = ["ENTRY", "default_dir", "start", "stop"]

ENTRY = "try1"


def default_dir() -> Path:
    # Short: HTCondor's socket paths are limited to about 100 characters.
    return Path("/tmp") / f"condor-cloud-try-{os.getuid()}"


def admin_file(directory: Path, nodes: int, cpus: int) -> str:
    e = f"CLOUD_PLUGINS_{ENTRY.upper()}_"
    return "\n".join([
        "# Your settings, as in /etc/condor/config.d/99-cloud-plugins-local.conf:",
        "# edit, then condor_reconfig (the provisioner re-reads them in place).",
        "CLOUD_PLUGINS_ADMIT_CLOUD_WORKERS = True",
        "CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN = cloud-worker.try",
        "CLOUD_PLUGINS_SUBMIT_TRANSFORM = True",
        "CLOUD_PLUGINS_RUN_PROVISIONER = True",
        "CLOUD_PLUGINS_PROVISIONER_NAME = try",
        "CLOUD_PLUGINS_CYCLE_INTERVAL = 5",
        "CLOUD_PLUGINS_COLLECTOR_GRACE = 0",
        f"CLOUD_PLUGINS_PROVIDERS = {ENTRY}",
        f"{e}TYPE = local",
        f"{e}CPUS = {cpus}",
        f"{e}MEMORY = {512 * cpus}",
        f"{e}MAX_INSTANCES = {nodes}",
        f"{e}IDLE_TIMEOUT = 60",
        f"{e}STATE_DIR = {directory / 'nodes'}",
        f"{e}WORKER_SHUTDOWN_GRACE = 5",
    ]) + "\n"


def _master_pid(directory: Path):
    try:
        pid = int((directory / "pool" / "master.pid").read_text())
    except (OSError, ValueError):
        return None
    config = f"CONDOR_CONFIG={directory / 'pool' / 'condor_config'}".encode()
    try:
        alive = config in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    return pid if alive else None


def start(directory: Path, nodes: int = 2, cpus: int = 1, timeout: float = 120) -> str:
    """Start the pool in ``directory`` (wiped first); returns how to use it."""
    directory = Path(directory).resolve()
    if _master_pid(directory):
        raise RuntimeError(f"a pool is already running in {directory}: "
                           f"condor_cloud try --stop --dir {directory}")
    config = pip_config(allow_rpm=True)  # before anything is wiped: it may refuse
    remove_tree(directory)
    directory.mkdir(parents=True)
    (directory / "50-cloud-plugins.conf").write_text(config)
    admin = directory / "99-cloud-plugins-local.conf"
    admin.write_text(admin_file(directory, nodes, cpus))
    pool = PersonalPool(directory / "pool", name="try",
                        include=[directory / "50-cloud-plugins.conf", admin])
    pool.start(timeout=timeout, detach=True)
    import htcondor2
    try:
        wait_for(lambda: pool.collector().query(
            htcondor2.AdType.Any, 'MyType == "CloudProvisioner"', ["Name"]), 90,
            what="the provisioner's ad")
    except TimeoutError as err:
        stop(directory)
        raise RuntimeError(f"{err}\n{pool.log_tails()}") from None
    cfg = pool.config_path
    return f"""\
A personal pool with condor_plugins runs in {directory}
  collector {pool.collector_address}, schedd "try", and the provisioner with the
  local provider (entry {ENTRY}: at most {nodes} node(s) of {cpus} core(s), on this host).

Use it (as a user other than root, who may not submit):
  export CONDOR_CONFIG={cfg}
  printf 'executable = /bin/hostname\\nqueue\\n' > hello.sub
  condor_submit_cloud --mode cloud hello.sub   # a node starts, runs it, retires
  condor_cloud status --watch                  # instances, reasons, holds
  condor_history -af ClusterId LastRemoteHost
Your knobs: {admin} (then condor_reconfig)
Logs: {pool.log_dir} (CloudProvisionerLog), nodes in {directory / 'nodes'}

Stop it: condor_cloud try --stop --dir {directory}
"""


def stop(directory: Path, timeout: float = 60) -> str:
    """Stop the pool's master (provisioner included), then every node."""
    from .providers.local import LocalProvider
    directory = Path(directory).resolve()
    if not (directory / "pool").is_dir():
        raise RuntimeError(f"no pool in {directory}")
    pid = _master_pid(directory)
    if pid:
        os.kill(pid, signal.SIGQUIT)  # as condor_off -fast
        deadline = time.monotonic() + timeout
        while _master_pid(directory) and time.monotonic() < deadline:
            time.sleep(0.2)
    for left in processes_using(str(directory / "pool")):
        try:
            os.kill(left, signal.SIGKILL)
        except OSError:
            pass
    nodes = LocalProvider(ENTRY, {"STATE_DIR": str(directory / "nodes")})
    ids = [i.id for i in nodes.list({})]
    nodes.terminate(ids)
    return (f"Stopped the pool in {directory} and {len(ids)} node(s); its logs stay there "
            f"(rm -rf {directory} to remove them).\n")
