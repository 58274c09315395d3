"""A test "hypervisor": boots what a cloud API says is running, from its user data.

It plays the part of the cloud's compute hosts for end-to-end tests: it polls
the cloud API (moto's EC2 server, the Nova emulator) like any client, reads
each new instance's user data back through the API, and boots it as a real
HTCondor node with the ``local`` provider (which applies the cloud-init
``write_files``, runs the node from them and uses the token inside).  The
instance id is handed to the node as a cloud datasource would.  An instance
the API reports gone is stopped; a node that powers itself off (idle
shutdown) is terminated through the API, as EC2's
``InstanceInitiatedShutdownBehavior=terminate`` would.
"""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from condor_plugins.providers.base import InstanceSpec, InstanceState
from condor_plugins.providers.local import LocalProvider


class EC2Api:
    """The hypervisor's view of an EC2 endpoint (boto3, like any client)."""

    def __init__(self, endpoint_url: str, tags: Optional[Mapping[str, str]] = None,
                 region: str = "us-east-1"):
        import boto3
        self.client = boto3.client("ec2", region_name=region, endpoint_url=endpoint_url)
        self.filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in (tags or {}).items()]

    def states(self) -> Dict[str, str]:
        """id -> 'running', 'pending' or 'gone', for every instance with the tags."""
        out = {}
        pages = self.client.get_paginator("describe_instances").paginate(Filters=self.filters)
        for page in pages:
            for res in page["Reservations"]:
                for inst in res["Instances"]:
                    name = inst["State"]["Name"]
                    out[inst["InstanceId"]] = (name if name in ("pending", "running")
                                               else "gone")
        return out

    def user_data(self, iid: str) -> str:
        attr = self.client.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        value = (attr.get("UserData") or {}).get("Value") or ""
        return base64.b64decode(value).decode() if value else ""

    def powered_off(self, iid: str) -> None:
        self.client.terminate_instances(InstanceIds=[iid])

    def close(self) -> None:
        self.client.close()


class NovaApi:
    """The hypervisor's view of the Nova emulator (tests/nova_emulator.py): the
    compute host's side, which sees each server's user data."""

    def __init__(self, emulator, metadata: Optional[Mapping[str, str]] = None):
        self.emulator = emulator
        # Nova metadata keys cannot hold '/': the provider writes ':'.
        self.metadata = {k.replace("/", ":"): v for k, v in (metadata or {}).items()}

    def states(self) -> Dict[str, str]:
        out = {}
        for sid, status, meta, _ in self.emulator.servers_with_user_data():
            if any(meta.get(k) != v for k, v in self.metadata.items()):
                continue
            deleting = (self.emulator.server(sid).get("task_state") == "deleting")
            out[sid] = ("gone" if deleting or status not in ("BUILD", "ACTIVE") else
                        "pending" if status == "BUILD" else "running")
        return out

    def user_data(self, sid: str) -> str:
        for found, _, _, text in self.emulator.servers_with_user_data():
            if found == sid:
                return text or ""
        return ""

    def powered_off(self, sid: str) -> None:
        self.emulator.set_status(sid, "SHUTOFF")  # Nova keeps a shut-off server

    def close(self) -> None:
        pass


class Hypervisor:
    """Boots and stops local nodes following ``api`` (see EC2Api for its methods)."""

    def __init__(self, api, state_dir: Path, cpus: int = 2, memory_mb: int = 512,
                 poll: float = 0.5, worker: Optional[Mapping[str, str]] = None,
                 datasource=True):
        """``datasource`` False: nodes cannot learn their cloud id (they keep the
        provisioner's request id as CloudInstanceID); "foreign": they learn an
        id that is not the API's (an EC2-compatible cloud's internal UUID)."""
        self.api = api
        self.state_dir = Path(state_dir)
        self.spec = InstanceSpec("hv", "hv.node", "hv-image", cpus, memory_mb, 1000)
        self.poll = poll
        self.worker = dict(worker or {})
        self.datasource = datasource
        self.booted: Dict[str, LocalProvider] = {}   # id -> the provider running it
        self.user_data: Dict[str, str] = {}          # id -> what it booted from
        self.node_ids: Dict[str, str] = {}           # id -> the local node's id
        self.stopped: List[str] = []
        self.powered_off: List[str] = []
        self.errors: List[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hypervisor", daemon=True)

    def start(self) -> "Hypervisor":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as err:  # the test reads .errors; keep following the API
                self.errors.append(f"{type(err).__name__}: {err}")
            self._stop.wait(self.poll)

    def step(self) -> None:
        states = self.api.states()
        for iid, state in states.items():
            if state in ("pending", "running") and iid not in self.booted:
                self._boot(iid)
        for iid, provider in list(self.booted.items()):
            if iid in self.stopped:
                continue
            if states.get(iid, "gone") == "gone":
                provider.terminate([self.node_ids.get(iid, iid)])
                self.stopped.append(iid)
            elif self._state(iid) in (None, InstanceState.TERMINATED):
                self.api.powered_off(iid)          # the node shut itself down
                self.powered_off.append(iid)
                self.stopped.append(iid)

    def _state(self, iid: str) -> Optional[InstanceState]:
        node = self.node_ids.get(iid, iid)
        found = [i.state for i in self.booted[iid].list({}) if i.id == node]
        return found[0] if found else None

    def _boot(self, iid: str) -> None:
        text = self.api.user_data(iid)
        # The node learns its id from the "datasource", as on a real cloud.
        settings = {"STATE_DIR": str(self.state_dir),
                    **{f"WORKER_{k}": v for k, v in self.worker.items()}}
        if self.datasource == "foreign":
            settings["WORKER_INSTANCE_ID"] = "uuid-" + iid.replace("i-", "")[-12:]
        elif self.datasource:
            settings["WORKER_INSTANCE_ID"] = iid
        provider = LocalProvider("hv", settings)
        self.booted[iid] = provider
        self.user_data[iid] = text
        [node] = provider.create(self.spec, 1, {}, text, request_token=iid)
        self.node_ids[iid] = node.id

    def wait_booted(self, count: int, timeout: float = 60) -> List[str]:
        deadline = time.monotonic() + timeout
        while len(self.booted) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return list(self.booted)

    def running(self) -> List[str]:
        return [iid for iid in list(self.booted) if iid not in self.stopped
                and self._state(iid) is InstanceState.RUNNING]

    def tokens(self) -> List[str]:
        """Every token handed to a node (to look for leaks)."""
        import yaml
        out = []
        for text in self.user_data.values():
            for f in (yaml.safe_load(text) or {}).get("write_files") or []:
                if str(f.get("path", "")).startswith("/etc/condor/tokens.d/"):
                    out.append(str(f.get("content", "")).strip())
        return [t for t in out if t]

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        for iid, provider in self.booted.items():
            provider.terminate([self.node_ids.get(iid, iid)])
        self.api.close()
