"""A test "hypervisor": boots what a cloud API says is running, from its user data.

It plays the part of the cloud's compute hosts for end-to-end tests: it polls
the cloud API (moto's EC2 server; real Nova's admin API, in
tests/openstack_plane.py) like any client, reads each new instance's user
data back through the API, and boots it as a VM
(dev/vmhost, through the sandbox's sudo rule): its own network namespace,
host name, root user and filesystem overlay, real cloud-init and the
distribution's HTCondor, configured by nothing but the image and the user
data. It shares no Unix identity, file system or authentication method with
the provisioner; it reaches only the central manager's address, 198.18.0.1,
and serves its own metadata endpoint at 169.254.169.254.

The instance id reaches the VM through its datasource (NoCloud meta-data) and
its metadata endpoint. A VM has its instance type's cores and memory, less
what a guest kernel keeps (1/32): its HTCondor sees those, not the host's. An instance the API reports gone is destroyed; a VM
that powers itself off is terminated through the API (EC2's
``InstanceInitiatedShutdownBehavior=terminate``) or set SHUTOFF (Nova).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import yaml

#: The sandbox's VM host (dev/vmhost), which its test user may run as root.
VMHOST = "/usr/local/libexec/cp-vmhost"
VM_DISKS = Path("/srv/vms")


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

    def hardware(self, iid: str):
        """(cores, memory MB) of the instance's type, as EC2 describes it."""
        [res] = self.client.describe_instances(InstanceIds=[iid])["Reservations"]
        kind = res["Instances"][0]["InstanceType"]
        [info] = self.client.describe_instance_types(InstanceTypes=[kind])["InstanceTypes"]
        return info["VCpuInfo"]["DefaultVCpus"], info["MemoryInfo"]["SizeInMiB"]

    def user_data(self, iid: str) -> str:
        attr = self.client.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        value = (attr.get("UserData") or {}).get("Value") or ""
        return base64.b64decode(value).decode() if value else ""

    def powered_off(self, iid: str) -> None:
        self.client.terminate_instances(InstanceIds=[iid])

    def close(self) -> None:
        self.client.close()


class VM:
    """One test VM (dev/vmhost): boot, state, power off, inspect its disk."""

    def __init__(self, base: Path, name: str, user_data: str, instance_id: str,
                 hostname: str, hardware=None):
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name[-12:]}-", dir=base))
        self.dir.chmod(0o755)
        self.hostname = hostname
        self.instance_id = instance_id
        _write(self.dir / "user-data", user_data, 0o600)
        _write(self.dir / "meta-data",
               f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n", 0o644)
        cpus, memory = hardware or (0, 0)
        _write(self.dir / "boot.json", json.dumps(
            {"hostname": hostname, "cpus": cpus, "memory_mb": memory - memory // 32}), 0o644)
        self.serve("latest/meta-data/instance-id", instance_id)

    def _vmhost(self, *args: str) -> str:
        res = subprocess.run(["sudo", "-n", VMHOST, args[0], str(self.dir), *args[1:]],
                             capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"vmhost {args[0]}: {res.stderr.strip()[-2000:]}")
        return res.stdout.strip()

    def boot(self) -> "VM":
        self.address = json.loads(self._vmhost("boot"))["address"]
        return self

    def state(self) -> str:
        """'running' or 'off'."""
        return self._vmhost("state")

    def power_off(self) -> None:
        self._vmhost("stop")

    def kill(self, sig: str, pattern: str) -> int:
        """Send ``sig`` to the VM's processes whose name matches ``pattern``."""
        return int(self._vmhost("signal", sig, pattern))

    def exec(self, *cmd: str) -> str:
        """Run ``cmd`` as root inside the VM; its output."""
        return self._vmhost("exec", *cmd)

    def clean(self) -> None:
        self._vmhost("clean")

    def serve(self, path: str, text: str) -> None:
        """Publish ``text`` at http://169.254.169.254/``path`` inside the VM."""
        target = self.dir / "metadata" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        _write(target, text, 0o644)

    def file(self, path: str) -> Path:
        """A file the VM wrote (its overlay's upper layer)."""
        return self.dir / "disk" / "upper" / path.lstrip("/")

    @property
    def console(self) -> str:
        try:
            return (self.dir / "console.log").read_text(errors="replace")
        except OSError:
            return ""


def _write(path: Path, text: str, mode: int) -> None:
    path.write_text(text)
    path.chmod(mode)


def require_vmhost() -> None:
    """Test VMs need the sandbox (its sudo rule and private network)."""
    res = subprocess.run(["sudo", "-n", "-l", VMHOST], capture_output=True, text=True)
    if res.returncode != 0 or not VM_DISKS.is_dir():
        raise RuntimeError("test VMs need dev/vmhost inside dev/sandbox: run `make test`")


class Hypervisor:
    """Boots and destroys VMs following ``api`` (see EC2Api for its methods)."""

    def __init__(self, api, state_dir: Optional[Path] = None, poll: float = 0.5,
                 datasource=True):
        """``datasource`` "foreign": the VMs learn an id that is not the API's
        (an EC2-compatible cloud's internal UUID)."""
        require_vmhost()
        self.api = api
        self.state_dir = Path(tempfile.mkdtemp(prefix="hv-", dir=VM_DISKS))
        self.poll = poll
        self.datasource = datasource
        self.booted: Dict[str, VM] = {}              # id -> its VM
        self.user_data: Dict[str, str] = {}          # id -> what it booted from
        self.node_ids: Dict[str, str] = {}           # id -> its daemons' name (the request id)
        self.hostnames: Dict[str, str] = {}          # id -> the VM's host name
        self.stopped: List[str] = []
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
        for iid, vm in list(self.booted.items()):
            if iid in self.stopped:
                continue
            if states.get(iid, "gone") == "gone":
                vm.power_off()
                self.stopped.append(iid)
            elif vm.state() == "off":
                self.api.powered_off(iid)          # the VM shut itself down
                self.stopped.append(iid)

    @property
    def powered_off(self) -> List[str]:
        """The VMs that ran their own power-off (/sbin/poweroff), whoever then
        told the API first: the VM's power-off or the provisioner's terminate."""
        return [iid for iid, vm in self.booted.items()
                if vm.file("/var/log/poweroff.log").exists()]

    def _boot(self, iid: str) -> None:
        text = self.api.user_data(iid)
        learned = ("uuid-" + iid.replace("i-", "")[-12:] if self.datasource == "foreign"
                   else iid)
        hostname = "vm-" + "".join(c if c.isalnum() else "-" for c in iid.lower())[:40]
        vm = VM(self.state_dir, iid, text, learned, hostname, self.api.hardware(iid))
        self.booted[iid] = vm
        self.user_data[iid] = text
        self.hostnames[iid] = hostname
        named = re.findall(r"^\s*CLOUD_PLUGINS_REQUEST_ID = ([^$\s]+)$", text, re.M)
        self.node_ids[iid] = named[-1] if named else hostname   # MASTER/STARTD_NAME
        vm.boot()

    def wait_booted(self, count: int, timeout: float = 60) -> List[str]:
        deadline = time.monotonic() + timeout
        while len(self.booted) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return list(self.booted)

    def running(self) -> List[str]:
        return [iid for iid, vm in list(self.booted.items()) if iid not in self.stopped
                and vm.state() == "running"]

    def tokens(self) -> List[str]:
        """Every token handed to a VM (to look for leaks)."""
        out = []
        for text in self.user_data.values():
            for f in (yaml.safe_load(text) or {}).get("write_files") or []:
                if str(f.get("path", "")).startswith(("/etc/condor/tokens.d/",
                                                      "/etc/condor/cloud-control.d/")):
                    out.append(str(f.get("content", "")).strip())
        return [t for t in out if t]

    def consoles(self, logs=("MasterLog", "StartLog")) -> str:
        """The VMs' consoles and HTCondor log tails, for a failing test's message."""
        out = []
        for iid, vm in self.booted.items():
            out.append(f"--- {iid} console ---\n{vm.console[-2000:]}")
            for name in logs:
                try:
                    text = vm.file(f"/var/log/condor/{name}").read_text(errors="replace")
                except OSError as err:
                    text = str(err)
                out.append(f"--- {iid} {name} ---\n{text[-3000:]}")
        return "\n".join(out)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        for vm in self.booted.values():
            vm.clean()
        self.api.close()
        import shutil
        shutil.rmtree(self.state_dir, ignore_errors=True)
