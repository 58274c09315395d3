"""The ``local`` provider: every instance is a real startd-only HTCondor on this
machine (``localpool.ExecuteNode``), contextualised like a cloud VM with the
worker fragment, per-instance knobs and an IDTOKEN.

``user_data`` is the cloud-init document a cloud VM gets (``#cloud-config``,
see contextualize.py): its ``write_files`` are written under ``<node>/root/``
with their modes, and the node runs from those very files (the worker
fragment, the per-instance knobs, the token). A JSON object
``{"config": {knob: value, ...}, "token": "..."}`` is accepted too. The token
is written 0600; it never appears in a log, a message or a command line. Local
only: the power-off script is always disabled, and entry settings
``WORKER_<KNOB>`` override ``CLOUD_PLUGINS_<KNOB>`` on the node (tests use them
for short idle shutdowns or a node that never joins).

Each instance lives in ``<STATE_DIR>/<id>/`` with ``instance.json`` (tags, pid,
launch time), so ``list`` works after a provisioner restart.  Nodes are
started detached (init's children, in their own session), so no process
family of the provisioner holds them: they survive its restart or crash.  Settings (knobs
``CLOUD_PLUGINS_<ENTRY>_<NAME>``):

* ``STATE_DIR``: where instances live (default ``$(SPOOL)/cloud_plugins/local/<entry>``;
  keep it short, HTCondor's UNIX socket paths are limited to ~100 characters);
* ``KEEP_TERMINATED``: seconds a stopped instance stays listed as terminated
  before its directory is removed (default 600).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import time
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

from .base import (TAG_REQUEST, Instance, InstanceSpec, InstanceState, Provider, ProviderError,
                   TransientError)

META = "instance.json"


def _param(name: str, default: str = "") -> str:
    try:
        import htcondor2
        return htcondor2.param.get(name, default) or default
    except Exception:  # no bindings or no config: use the default
        return default


def _write_json(path: Path, data: Mapping) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _int_file(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_state(pid: Optional[int], config: Path) -> str:
    """'alive', 'dead' (or a zombie) for the master ``pid`` of ``config``."""
    if not pid:
        return "dead"
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return "dead"
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (OSError, IndexError):
        return "dead"
    # The pid may have been reused: it must be this instance's master.
    return "alive" if f"CONDOR_CONFIG={config}".encode() in environ else "dead"


class LocalProvider(Provider):
    """Instances are condor_master processes under ``STATE_DIR``."""

    type_name = "local"

    def __init__(self, entry: str, settings: Mapping[str, str]):
        super().__init__(entry, settings)
        default = Path(_param("SPOOL", "/tmp")) / "cloud_plugins" / "local" / entry
        self.state_dir = Path(self.settings.get("STATE_DIR") or default)
        self.keep_terminated = float(self.settings.get("KEEP_TERMINATED") or 600)

    # ---------------------------------------------------------------- create
    def create(self, spec: InstanceSpec, count: int, tags: Mapping[str, str],
               user_data: str, request_token: str) -> List[Instance]:
        files: List[Mapping] = []
        if (user_data or "").lstrip().startswith("#cloud-config"):
            config, token, files = _from_cloud_config(user_data)
        else:
            try:
                data = json.loads(user_data or "{}")
            except ValueError:
                raise ProviderError("local provider: user_data is neither cloud-config "
                                    "nor a JSON object") from None
            config = dict(data.get("config") or {})
            token = data.get("token")
        for key, value in self.settings.items():
            if key.startswith("WORKER_") and len(key) > 7:
                config["CLOUD_PLUGINS_" + key[7:]] = value
        out = []
        for i in range(count):
            wanted = config.get("CLOUD_PLUGINS_INSTANCE_ID") if count == 1 else None
            iid = str(wanted or f"{self.entry.lower()}-{secrets.token_hex(4)}")
            existing = self._instance(self.state_dir / iid)
            if existing is not None and existing.tags.get(TAG_REQUEST) == request_token:
                out.append(existing)   # a retried request: idempotent
                continue
            out.append(self._start(iid, spec, tags, config, token, request_token, files))
        return out

    def _start(self, iid: str, spec: InstanceSpec, tags: Mapping[str, str],
               config: Mapping[str, object], token: Optional[str],
               request_token: str, files: Sequence[Mapping] = ()) -> Instance:
        from ..localpool import ExecuteNode
        workdir = self.state_dir / iid
        try:
            workdir.mkdir(parents=True)
        except FileExistsError:
            raise ProviderError(f"local provider: instance {iid} already exists") from None
        except OSError as err:
            raise TransientError(f"local provider: cannot create {workdir}: {err.strerror}") from None
        meta = {"id": iid, "entry": self.entry, "tags": dict(tags), "request": request_token,
                "launch_time": time.time(), "pid": None, "instance_type": spec.instance_type}
        _write_json(workdir / META, meta)   # listed (pending) before anything runs
        fragment = _write_files(workdir / "root", files)
        values = dict(config)
        values.setdefault("CLOUD_PLUGINS_INSTANCE_ID", iid)
        # Never power off this machine when a local node stops itself.
        values["CLOUD_PLUGINS_POWEROFF_SCRIPT"] = ""
        # The node-control script as written under the node's root.
        from ..node.control import SCRIPT_PATH
        script = workdir / "root" / SCRIPT_PATH.lstrip("/")
        if script.is_file():
            values["CLOUD_PLUGINS_NODE_CONTROL"] = str(script)
        from ..node.context import CONTROL_TOKEN_DIR
        tokens = workdir / "root" / CONTROL_TOKEN_DIR.lstrip("/")
        if tokens.is_dir():
            values["CLOUD_PLUGINS_CONTROL_TOKEN_DIR"] = str(tokens)
        collector = str(values.get("CLOUD_PLUGINS_CENTRAL_MANAGER") or _param("COLLECTOR_HOST"))
        # Like a VM's HTCondor, read every other config.d file the user data wrote.
        confd = workdir / "root" / "etc" / "condor" / "config.d"
        extra = sorted(p for p in confd.glob("*.conf") if p != fragment) if confd.is_dir() else []
        node = ExecuteNode(workdir, iid, collector, cpus=spec.cpus, memory=spec.memory_mb,
                           cloud_config=values, token=token, worker_fragment=fragment,
                           include=extra)
        try:
            # Not our child: a restart or crash of the provisioner (its process
            # family under condor_master or systemd) never stops a node.
            node.launch(detach=True)
            meta["pid"] = node.proc.pid  # at once: a crash now must not orphan it
            _write_json(workdir / META, meta)
            node.wait_ready(30)
        except Exception as err:  # InstanceError carries log tails: keep it short
            node.kill()
            meta["error"] = str(err).splitlines()[0][:200]
            _write_json(workdir / META, meta)
            raise TransientError(f"local provider: instance {iid} did not start: "
                                 f"{meta['error']}") from None
        return self._instance(workdir) or Instance(iid, self.entry, InstanceState.PENDING)

    # ---------------------------------------------------------------- list
    def _instance(self, workdir: Path) -> Optional[Instance]:
        try:
            meta = json.loads((workdir / META).read_text())
        except (OSError, ValueError):
            return None
        iid = meta.get("id", workdir.name)
        launched = float(meta.get("launch_time") or 0)
        if meta.get("pid") is None:  # we crashed while it started: it wrote its pid
            meta["pid"] = _int_file(workdir / "master.pid")
        state = _pid_state(meta.get("pid"), workdir / "condor_config")
        if state == "alive":
            st, reason = InstanceState.RUNNING, ""
        elif meta.get("pid") is None and not meta.get("error") and time.time() - launched < 60:
            st, reason = InstanceState.PENDING, "starting"
        elif meta.get("error"):
            st, reason = InstanceState.TERMINATED, meta["error"]
        else:
            st, reason = InstanceState.TERMINATED, "condor_master exited"
        tags = dict(meta.get("tags") or {})
        return Instance(iid, meta.get("entry", self.entry), st, launched or None, tags,
                        address=str(workdir), reason=reason)

    def list(self, owner_tags: Mapping[str, str]) -> List[Instance]:
        out = []
        try:
            dirs = sorted(self.state_dir.iterdir()) if self.state_dir.is_dir() else []
        except OSError as err:
            raise TransientError(f"local provider: cannot read {self.state_dir}: "
                                 f"{err.strerror}") from None
        for workdir in dirs:
            inst = self._instance(workdir)
            if inst is None or any(inst.tags.get(k) != v for k, v in owner_tags.items()):
                continue
            if not (inst.state is InstanceState.TERMINATED and self._expired(workdir)):
                out.append(inst)
        return out

    def housekeeping(self, owner_tags: Mapping[str, str]) -> None:
        """Remove the directories of instances stopped ``KEEP_TERMINATED`` ago."""
        for workdir in sorted(self.state_dir.glob("*/" + META)):
            inst = self._instance(workdir.parent)
            if (inst is not None and inst.state is InstanceState.TERMINATED
                    and all(inst.tags.get(k) == v for k, v in owner_tags.items())
                    and self._expired(workdir.parent)):
                shutil.rmtree(workdir.parent, ignore_errors=True)

    def _expired(self, workdir: Path) -> bool:
        """Stopped ``KEEP_TERMINATED`` ago: its master's log (or record) was
        last written then.  Read-only, so ``list`` never changes anything."""
        stamps = []
        for path in (workdir / "log" / "MasterLog", workdir / META):
            try:
                stamps.append(path.stat().st_mtime)
            except OSError:
                pass
        return bool(stamps) and time.time() - max(stamps) >= self.keep_terminated

    # ---------------------------------------------------------------- terminate
    def terminate(self, ids: Sequence[str]) -> None:
        for iid in ids:
            workdir = self.state_dir / iid
            if "/" in iid or not (workdir / META).exists():
                continue
            self._stop(iid, workdir)
            shutil.rmtree(workdir, ignore_errors=True)

    def _stop(self, iid: str, workdir: Path) -> None:
        """SIGQUIT (fast shutdown, as condor_off -fast) to the master, then kill."""
        from ..localpool import processes_using
        try:
            pid = json.loads((workdir / META).read_text()).get("pid")
        except (OSError, ValueError):
            pid = None
        pid = pid or _int_file(workdir / "master.pid")
        config = workdir / "condor_config"
        if _pid_state(pid, config) == "alive":
            try:
                os.kill(pid, signal.SIGQUIT)
            except OSError:
                pass
            deadline = time.monotonic() + 15
            while _pid_state(pid, config) == "alive" and time.monotonic() < deadline:
                time.sleep(0.2)
            if _pid_state(pid, config) == "alive":
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
        for stray in processes_using(str(workdir)):
            try:
                os.kill(stray, signal.SIGKILL)
            except OSError:
                pass


def _from_cloud_config(user_data: str):
    """(per-instance knobs, token, write_files) from a cloud-init document."""
    from ..config import ConfigError
    from ..node.pilot import cloud_config_files
    try:
        files = cloud_config_files(user_data)
    except ConfigError as err:
        raise ProviderError(f"local provider: {err}") from None
    contents = {f["path"]: f["content"].decode(errors="replace") for f in files}
    config = {}
    for line in contents.get("/etc/condor/config.d/60-cloud-instance.conf", "").splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            config[name.strip()] = value.strip()
    token = contents.get("/etc/condor/tokens.d/cloud-worker", "").strip() or None
    return config, token, files


def _write_files(root: Path, files: Sequence[Mapping]) -> Optional[Path]:
    """Apply cloud-init write_files under ``root``; return the worker fragment's copy."""
    fragment = None
    for f in files:
        path = root / str(f["path"]).lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     int(str(f.get("permissions") or "0644"), 8))
        with os.fdopen(fd, "wb") as out:
            out.write(f["content"])
        if path.name == "50-cloud-worker.conf":
            fragment = path
    return fragment
