"""Fixtures that run real HTCondor daemons (see condor_plugins/localpool.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from condor_plugins.localpool import (ExecuteNode, PersonalPool, processes_using,
                                      shipped_config_dir, wait_for)

HAVE_CONDOR = shutil.which("condor_master") is not None


#: The modules that take longest (minutes of real daemons), longest first:
#: run first, so that no worker starts one of them when the others are
#: nearly done (longest processing time first).
SLOW_FIRST = ("test_provisioner", "test_slurm_e2e", "test_cloud_pool", "test_ec2_e2e",
              "test_openstack_e2e", "test_provisioner_master", "test_metrics_prometheus",
              "test_simulate_honesty", "test_admin", "test_revocation", "test_burst")


#: Modules with module-scoped fixtures (a pool, a cloud control plane, a Slurm
#: bed): their tests stay on one worker (``--dist loadgroup``); every other
#: test goes to whichever worker is free.
GROUPED = ("test_cloud_node", "test_gram", "test_metadata_firewall", "test_metadata_guard",
           "test_openstack_e2e", "test_openstack_provider", "test_router_hooks", "test_rpm",
           "test_slurm_bed", "test_slurm_e2e", "test_steering", "test_submit_wrapper",
           "test_token_scope", "test_ec2_e2e", "test_ec2_provider")


@pytest.hookimpl(tryfirst=True)   # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        if module in GROUPED:
            item.add_marker(pytest.mark.xdist_group(module))
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2],
                                         len(SLOW_FIRST)))   # stable: order kept within
    if HAVE_CONDOR:
        return
    # Outside CI a developer without HTCondor gets a clear skip; in CI a
    # missing HTCondor is an error (the sandbox provides it).
    if os.environ.get("CI"):
        raise pytest.UsageError("HTCondor (condor_master) not found: run the suite with `make test`")
    skip = pytest.mark.skip(reason="HTCondor not installed; run `make test` (uses dev/sandbox)")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def condor_base():
    """Short base directory for all instances (UNIX socket paths must stay short)."""
    base = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
    yield base
    leftovers = processes_using(str(base))
    for pid in leftovers:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    shutil.rmtree(base, ignore_errors=True)
    assert not leftovers, f"HTCondor processes left behind by the tests: {leftovers}"


class PoolFactory:
    """Starts pools and nodes; stops all of them at teardown."""

    def __init__(self, base: Path, prefix: str):
        self.base = base
        self.prefix = prefix
        self.instances = []
        self._n = 0

    def _dir(self, name: str) -> Path:
        self._n += 1
        d = Path(tempfile.mkdtemp(prefix=f"{self.prefix[:12]}-{name[:10]}-", dir=self.base))
        return d

    def pool(self, name: str = "site", *, timeout: float = 120, **kw) -> PersonalPool:
        p = PersonalPool(self._dir(name), name=name, **kw)
        self.instances.append(p)
        p.start(timeout=timeout)
        return p

    def site_pool(self, name: str = "site", extra_config: str = "", include_extra=(),
                  **kw) -> PersonalPool:
        """A pool with the project's central manager and submit fragments."""
        d = shipped_config_dir()
        include = [d / "10-cloud-plugins-defaults.conf", d / "20-cloud-central-manager.conf",
                   d / "20-cloud-submit.conf", *include_extra]
        return self.pool(name, include=include, extra_config=extra_config, **kw)

    def node(self, pool: PersonalPool, name: str, *, cloud: bool = False, token: str | None = None,
             cloud_config: dict | None = None, wait: bool = True, **kw) -> ExecuteNode:
        if cloud and cloud_config is None:
            cloud_config = {
                "CLOUD_PLUGINS_PROVIDER": "local",
                "CLOUD_PLUGINS_PLATFORM": "local",
                "CLOUD_PLUGINS_INSTANCE_ID": name,
                "CLOUD_PLUGINS_INSTANCE_TYPE": "test.small",
                "CLOUD_PLUGINS_PROVISIONER": "test",
                "CLOUD_PLUGINS_POWEROFF_SCRIPT": "",
            }
        n = ExecuteNode(self._dir(name), name, pool.collector_address,
                        cloud_config=cloud_config, token=token, **kw)
        self.instances.append(n)
        n.start()
        if wait:
            try:
                wait_for(lambda: n.slot_ads(pool), 60, what=f"node {name} in the collector")
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}\n{n.log_tails()}") from None
        return n

    def stop_all(self):
        errors = []
        for inst in reversed(self.instances):
            try:
                inst.stop()
            except Exception as exc:  # teardown must reach every instance
                errors.append(f"{inst.name}: {exc}")
        if os.environ.get("CONDOR_PLUGINS_KEEP_POOLS") is None:
            for inst in self.instances:
                shutil.rmtree(inst.workdir, ignore_errors=True)
        self.instances.clear()
        return errors


@pytest.fixture
def condor(condor_base, request):
    """Factory for personal pools and execute nodes, torn down after the test."""
    factory = PoolFactory(condor_base, request.node.name.replace("[", "-").replace("]", ""))
    yield factory
    errors = factory.stop_all()
    assert not errors, errors


@pytest.fixture(scope="module")
def condor_module(condor_base, request):
    """Module-scoped factory, for pools shared by several tests."""
    factory = PoolFactory(condor_base, request.module.__name__.rsplit(".", 1)[-1])
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def moto_url():
    """moto's EC2 server: a real HTTP endpoint on 127.0.0.1."""
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def worker_token(pool: PersonalPool, instance: str, domain: str | None = None) -> str:
    """A cloud worker token with the minimal authorisations."""
    if domain is None:
        domain = pool.run("condor_config_val", "CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN").stdout.strip()
    return pool.create_token(f"{instance}@{domain}",
                             ["ADVERTISE_STARTD", "ADVERTISE_MASTER", "READ"], lifetime=3600)


def advertise_as_worker(pool: PersonalPool, request_id: str, token: str, workdir: Path,
                        probe: int) -> bool:
    """Send a worker's literal slot ad for ``request_id`` with ``token`` and no
    other credential (as from a stolen VM), carrying ``CloudProbe = probe``;
    True if the collector then shows that probe."""
    host = pool.run("condor_config_val", "FULL_HOSTNAME").stdout.strip()
    name = f"slot1@{request_id}@{host}"
    tokens = workdir / f"probe-tokens-{request_id}"
    tokens.mkdir(mode=0o700, exist_ok=True)
    (tokens / "stolen").write_text(token)
    (tokens / "stolen").chmod(0o600)
    ad = workdir / f"probe-{request_id}-{probe}.ad"
    ad.write_text(f'MyType = "Machine"\nName = "{name}"\nMachine = "{host}"\n'
                  f'IsCloudNode = true\nCloudRequestID = "{request_id}"\nCloudProbe = {probe}\n')
    pool.run("condor_advertise", "UPDATE_STARTD_AD", str(ad), check=False, env={
        "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS",
        "_CONDOR_SEC_TOKEN_DIRECTORY": str(tokens)})
    time.sleep(1)
    out = pool.run("condor_status", "-const", f'Name == "{name}"', "-af", "CloudProbe").stdout
    return str(probe) in out.split()
