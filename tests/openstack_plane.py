"""The real OpenStack control plane of the tests (dev/openstack), seen as its admin.

``RealOpenStack`` starts Keystone, Placement, Glance and Nova on free 127.0.0.1
ports, once per test module, and stops them with every process. Its admin
view (all projects, API 2.75: metadata, task state, faults and user data) is
what a cloud operator sees; the provisioner sees only the project ``condor``
through clouds.yaml and its application credential.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
from pathlib import Path
from typing import Dict, List, Mapping, Optional

REPO = Path(__file__).resolve().parents[1]
PORTS = 9   # dev/openstack uses port base .. base+8


def _free(base: int) -> bool:
    for port in range(base, base + PORTS):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


class RealOpenStack:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.cloud: Dict = {}
        self._admin = None

    def start(self) -> "RealOpenStack":
        base = next(b for b in range(27000, 29000, 20) if _free(b))
        res = subprocess.run([str(REPO / "dev/openstack"), "start", str(self.dir),
                              "--port-base", str(base)], capture_output=True, text=True,
                             timeout=600)
        if res.returncode != 0:
            raise RuntimeError(f"dev/openstack start failed:\n{res.stderr[-4000:]}")
        self.cloud = json.loads((self.dir / "cloud.json").read_text())
        return self

    def stop(self) -> None:
        subprocess.run([str(REPO / "dev/openstack"), "stop", str(self.dir)], timeout=120)

    # ------------------------------------------------------------ the admin
    @property
    def admin(self):
        if self._admin is None:
            from keystoneauth1 import session
            from keystoneauth1.identity import v3
            from novaclient import client
            auth = v3.Password(auth_url=self.cloud["auth_url"], username="admin",
                               password=self.cloud["admin_password"], project_name="admin",
                               user_domain_id="default", project_domain_id="default")
            self._admin = client.Client("2.75", session=session.Session(auth=auth))
        return self._admin

    def os_environ(self) -> Dict[str, str]:
        """The provisioner's environment: clouds.yaml, nothing else."""
        return {"OS_CLIENT_CONFIG_FILE": self.cloud["clouds_yaml"],
                "NO_PROXY": "127.0.0.1,localhost"}

    def servers(self, metadata: Optional[Mapping[str, str]] = None) -> List[dict]:
        """Every server of every project (not deleted) whose metadata has
        ``metadata`` (keys with '/' as the provider writes them, ':')."""
        want = {k.replace("/", ":"): v for k, v in (metadata or {}).items()}
        out, marker = [], None
        while True:
            page = self.admin.servers.list(search_opts={"all_tenants": 1}, marker=marker,
                                           limit=200)
            if not page:
                return out
            out += [s.to_dict() for s in page
                    if all((s.metadata or {}).get(k) == v for k, v in want.items())]
            marker = page[-1].id

    def user_data(self, sid: str) -> str:
        text = self.admin.servers.get(sid).to_dict().get("OS-EXT-SRV-ATTR:user_data") or ""
        return base64.b64decode(text).decode() if text else ""

    def set_instances_quota(self, count: int) -> None:
        self.admin.quotas.update(self.cloud["project_id"], instances=count, force=True)

    def api_log(self) -> str:
        """nova-api's access log: every request the provisioner made."""
        return (self.dir / "log" / "nova-api.log").read_text(errors="replace")


class RealNovaApi:
    """The hypervisor's view (tests/hypervisor.py) of real Nova: the admin API,
    as a compute host sees the servers it must run."""

    def __init__(self, plane: RealOpenStack, metadata: Optional[Mapping[str, str]] = None):
        self.plane, self.metadata = plane, dict(metadata or {})

    def states(self) -> Dict[str, str]:
        out = {}
        for info in self.plane.servers(self.metadata):
            status, task = info.get("status"), info.get("OS-EXT-STS:task_state")
            if status == "BUILD" and not info.get("OS-EXT-SRV-ATTR:host"):
                continue   # not yet scheduled to a host: nothing runs it
            out[info["id"]] = ("gone" if task == "deleting" or status not in ("BUILD", "ACTIVE")
                               else "pending" if status == "BUILD" else "running")
        return out

    def user_data(self, sid: str) -> str:
        return self.plane.user_data(sid)

    def hardware(self, sid: str):
        """(cores, memory MB) of the server's flavor (embedded from 2.47)."""
        flavor = self.plane.admin.servers.get(sid).to_dict()["flavor"]
        return flavor["vcpus"], flavor["ram"]

    def powered_off(self, sid: str) -> None:
        self.plane.admin.servers.stop(sid)   # Nova keeps a shut-off server: SHUTOFF

    def close(self) -> None:
        pass
