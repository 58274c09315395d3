"""The ``openstack`` provider with the real python-novaclient and keystoneauth1, over HTTP,
against ``nova_emulator`` (Keystone v3 + Nova up to 2.51 on 127.0.0.1), for what real Nova
cannot be made to do on demand: 5xx storms, lost responses, tokens that expire mid-cycle,
capped pages, conflicts, and clouds that echo secrets. What real Nova does (tags, quota,
scheduler errors, application credentials, deletes) is tested against it in
test_openstack_e2e.py."""

from __future__ import annotations

import base64
import logging
import os
import socket
import time
import uuid

import pytest

pytest.importorskip("novaclient")
pytest.importorskip("keystoneauth1")
yaml = pytest.importorskip("yaml")

from condor_plugins.config import ConfigError  # noqa: E402
from condor_plugins.providers import provider_class  # noqa: E402
from condor_plugins.providers.base import (TAG_ENTRY, AuthError,  # noqa: E402
                                           CapacityError, InstanceSpec, InstanceState,
                                           ProviderError, QuotaError, TransientError,
                                           instance_tags, owner_tags)
from condor_plugins.providers.openstack import (OpenStackProvider, scrub,  # noqa: E402
                                                to_instance)

from nova_emulator import NovaEmulator  # noqa: E402  (tests/ is on sys.path)

TOKEN = "eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.eyJzdWIiOiJub2RlIn0.c2lnbmF0dXJlLW5vdC1yZWFs"
USER_DATA = ("#cloud-config\nwrite_files:\n- path: /etc/condor/tokens.d/cloud-worker\n"
             f"  permissions: '0600'\n  content: {TOKEN}\nruncmd:\n- [systemctl, start, condor]\n")
POOL = "cm.example.org:9618"
SPEC = InstanceSpec("os1", "m1.small", "el9-condor-worker", 1, 2048, 20000)


@pytest.fixture(scope="module")
def cloud():
    with NovaEmulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def clean(cloud, monkeypatch, tmp_path):
    """No OpenStack configuration but the test's own; the emulator back to its defaults."""
    for name in [n for n in os.environ if n.startswith("OS_")] + [
            "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.chdir(tmp_path)
    cloud.clear_faults()
    cloud.build_delay = cloud.delete_delay = 0.0
    cloud.max_limit, cloud.quota_instances = 1000, None


@pytest.fixture
def env(cloud, monkeypatch):
    """The password credentials in OS_* variables, as a provisioner's environment."""
    for name, value in cloud.os_environ().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def make(env):
    made = []

    def make(**settings):
        provider = OpenStackProvider("os1", settings)
        provider.retry_delay = 0.0
        made.append(provider)
        return provider
    yield make
    for provider in made:
        provider.close()


@pytest.fixture
def prov():
    """A provisioner name of its own per test: tests never see each other's servers."""
    return f"prov-{uuid.uuid4().hex[:8]}"


def request(prov: str, entry: str = "os1"):
    token = f"{entry}-{uuid.uuid4().hex[:8]}"
    return instance_tags(POOL, prov, entry, token), token


def args(prov: str):
    tags, token = request(prov)
    return tags, USER_DATA, token


def stored(cloud, token: str):
    """(id, status, metadata, user data) of the servers of request ``token``."""
    return [s for s in cloud.servers_with_user_data()
            if s[2].get("condor-plugins:request") == token]


def write_clouds(path, document) -> str:
    path.write_text(yaml.safe_dump(document))
    return str(path)


# ------------------------------------------------------------------ create and list

def test_registered_as_builtin_type():
    assert provider_class("openstack", "os1") is OpenStackProvider


def test_create_with_flavor_image_network_key_user_data_and_metadata(make, cloud, prov):
    cloud.build_delay = 0.3
    provider = make(NETWORK="private", KEY_NAME="condor-admin", AVAILABILITY_ZONE="nova",
                    SECURITY_GROUPS="default, condor-worker")
    tags, token = request(prov)

    started = provider.create(SPEC, 2, tags, USER_DATA, token)

    assert len(started) == 2 and len({i.id for i in started}) == 2
    for inst in started:
        assert inst.state is InstanceState.PENDING and inst.entry == "os1"
        assert inst.tags == tags and inst.launch_time
    found = stored(cloud, token)
    assert sorted(s[0] for s in found) == sorted(i.id for i in started)
    for server_id, status, metadata, user_data in found:
        record = cloud.server(server_id)
        assert status == "BUILD" and user_data == USER_DATA
        assert metadata == {k.replace("/", ":"): v for k, v in tags.items()}
        assert (record["image"], record["flavor"], record["key_name"]) == \
            (cloud.images["el9-condor-worker"], "2", "condor-admin")
        assert record["network_names"] == ["private"] and record["availability_zone"] == "nova"
        assert record["security_groups"] == ["default", "condor-worker"]
        assert record["name"] in (f"condor-{token}-1", f"condor-{token}-2")
    assert cloud.count(NovaEmulator.CREATE) >= 1
    time.sleep(0.35)   # after the build: running, with an address and the tags mapped back
    listed = provider.list(owner_tags(POOL, prov))
    assert {i.state for i in listed} == {InstanceState.RUNNING}
    assert all(i.tags == tags for i in listed)


def test_ids_need_no_lookups(make, cloud, prov):
    image, network = cloud.images["cirros-0.6.2-x86_64-disk"], cloud.networks["public"]
    provider = make(NETWORK=network)
    before = (cloud.count("GET /image/v2/images"), cloud.count("GET /networking/v2.0/networks"),
              cloud.count("GET /compute/v2.1/flavors"))
    tags, token = request(prov)
    [inst] = provider.create(InstanceSpec("os1", "c4m8", image, 4, 8192, 1), 1, tags, "", token)
    after = (cloud.count("GET /image/v2/images"), cloud.count("GET /networking/v2.0/networks"),
             cloud.count("GET /compute/v2.1/flavors"))
    assert after == before   # flavour by id: GET /flavors/{id} only
    record = cloud.server(inst.id)
    assert (record["image"], record["flavor"], record["network_names"], record["user_data"]) \
        == (image, "c4m8", ["public"], None)


def test_condor_knobs_reach_the_provider(cloud, prov, tmp_path, monkeypatch):
    """CLOUD_PLUGINS_<ENTRY>_* knobs, read as the provisioner reads them; clouds.yaml."""
    from condor_plugins import config
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE",
                       write_clouds(tmp_path / "c.yaml", cloud.clouds_yaml("site")))
    cfg = config.load({
        "CLOUD_PLUGINS_PROVIDERS": "os1", "CLOUD_PLUGINS_PROVISIONER_NAME": prov,
        "COLLECTOR_HOST": POOL, "CLOUD_PLUGINS_OS1_TYPE": "openstack",
        "CLOUD_PLUGINS_OS1_IMAGE": "el9-condor-worker",
        "CLOUD_PLUGINS_OS1_INSTANCE_TYPE": "m1.large", "CLOUD_PLUGINS_OS1_CLOUD": "site",
        "CLOUD_PLUGINS_OS1_NETWORK": "private", "CLOUD_PLUGINS_OS1_KEY_NAME": "",
        "CLOUD_PLUGINS_OS1_REGION": "RegionOne", "CLOUD_PLUGINS_OS1_MAX_ATTEMPTS": "2"})
    [entry] = cfg.entries
    provider = provider_class(entry.type, entry.name)(entry.name, entry.settings)
    try:
        tags = instance_tags(cfg.pool, cfg.name, entry.name, f"{prov}-1")
        [inst] = provider.create(entry.spec(), 1, tags, USER_DATA, f"{prov}-1")
        record = cloud.server(inst.id)
        assert (record["flavor"], record["image"], record["key_name"]) == \
            ("4", cloud.images["el9-condor-worker"], None)
        assert provider.max_attempts == 2 and provider.region == "RegionOne"
        assert [i.id for i in provider.list(owner_tags(cfg.pool, cfg.name))] == [inst.id]
    finally:
        provider.close()


def test_list_pages_through_many_servers(make, cloud, prov):
    provider = make()
    for _ in range(7):
        provider.create(SPEC, 1, *args(prov))
    cloud.max_limit = 3   # the cloud caps pages below what the provider asks for
    start = len(cloud.calls)
    assert len({i.id for i in provider.list(owner_tags(POOL, prov))}) == 7
    pages = [url for method, url, _ in cloud.calls[start:] if "/servers/detail" in url]
    assert len(pages) >= 4 and "marker=" not in pages[0]
    assert all("marker=" in url and "limit=" in url for url in pages[1:])


def test_terminate_and_gone_servers(make, cloud, prov):
    cloud.delete_delay = 30
    provider = make()
    tags, token = request(prov)
    a, b = (i.id for i in provider.create(SPEC, 2, tags, USER_DATA, token))

    provider.terminate([a, str(uuid.uuid4())])   # one unknown id among them
    provider.terminate([a])                       # again, while Nova deletes it
    provider.terminate([])

    states = {i.id: i.state for i in provider.list(owner_tags(POOL, prov))}
    assert states == {a: InstanceState.STOPPING, b: InstanceState.RUNNING}
    cloud.delete_delay = 0
    assert {i.id for i in provider.list(owner_tags(POOL, prov))} == {b}   # gone, as in Nova
    provider.terminate([a])
    assert cloud.count(NovaEmulator.DELETE) >= 4


def test_lost_response_is_not_created_twice(make, cloud, prov):
    """The POST went through but its answer was lost: the retry finds the server."""
    provider = make(MAX_ATTEMPTS="2")
    tags, token = request(prov)
    cloud.fail(NovaEmulator.CREATE, 500, after=True)
    before = cloud.count(NovaEmulator.CREATE)
    [inst] = provider.create(SPEC, 1, tags, USER_DATA, token)
    assert cloud.count(NovaEmulator.CREATE) == before + 1
    assert [s[0] for s in stored(cloud, token)] == [inst.id]


def test_5xx_is_retried_then_transient(make, cloud, prov):
    provider = make()   # default: 3 attempts
    tags, token = request(prov)
    cloud.fail(NovaEmulator.CREATE, 503, times=2)
    before = cloud.count(NovaEmulator.CREATE)
    [inst] = provider.create(SPEC, 1, tags, USER_DATA, token)
    assert cloud.count(NovaEmulator.CREATE) == before + 3 and stored(cloud, token)
    cloud.fail(NovaEmulator.CREATE, 502, times=3)
    with pytest.raises(TransientError, match="create server failed: HTTP 502"):
        provider.create(SPEC, 1, *args(prov))
    cloud.fail(NovaEmulator.LIST, 503, times=3)
    with pytest.raises(TransientError, match="list servers failed: HTTP 503"):
        provider.list(owner_tags(POOL, prov))
    cloud.fail(NovaEmulator.DELETE, 500)
    provider.terminate([inst.id])   # retried
    assert provider.list(owner_tags(POOL, prov)) == []


@pytest.mark.parametrize("status, task, state", [
    ("BUILD", "scheduling", InstanceState.PENDING), ("ACTIVE", None, InstanceState.RUNNING),
    ("REBOOT", "rebooting", InstanceState.RUNNING), ("HARD_REBOOT", None, InstanceState.RUNNING),
    ("MIGRATING", None, InstanceState.RUNNING), ("RESIZE", None, InstanceState.RUNNING),
    ("ACTIVE", "deleting", InstanceState.STOPPING), ("DELETED", None, InstanceState.TERMINATED),
    ("SOFT_DELETED", None, InstanceState.TERMINATED), ("SHUTOFF", None, InstanceState.STOPPED),
    ("ERROR", None, InstanceState.ERROR), ("SHELVED_OFFLOADED", None, InstanceState.STOPPED),
    ("SUSPENDED", None, InstanceState.STOPPED), ("PAUSED", None, InstanceState.STOPPED),
    ("", None, InstanceState.ERROR)])
def test_state_mapping(status, task, state):
    inst = to_instance({"id": "s1", "status": status, "OS-EXT-STS:task_state": task,
                        "metadata": {"condor-plugins:entry": "os2", "other:key": "x"}}, "os1")
    assert inst.state is state and inst.entry == "os2" and inst.launch_time is None
    assert inst.tags == {TAG_ENTRY: "os2", "other:key": "x"}
    assert bool(inst.reason) is (state in (InstanceState.ERROR, InstanceState.STOPPED))


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("status", [413])   # real Nova's 403: test_openstack_e2e.py
def test_over_quota_is_a_quota_error(make, cloud, prov, status):
    provider = make(MAX_ATTEMPTS="1")
    cloud.over_quota(status)
    with pytest.raises(QuotaError, match=f"HTTP {status}: Quota exceeded for instances"):
        provider.create(SPEC, 1, *args(prov))
    assert provider.list(owner_tags(POOL, prov)) == []


@pytest.mark.parametrize("status, message, error", [
    (409, None, TransientError),
    (409, "Quota exceeded for cores: Requested 4, but already used 20 of 20 cores", QuotaError),
    (500, "No valid host was found. There are not enough hosts available.", CapacityError),
    (403, "Policy doesn't allow os_compute_api:servers:create to be performed.", AuthError),
    (429, "Rate limit exceeded", TransientError),
    (500, None, TransientError), (503, None, TransientError),
    (400, "Invalid input for field/attribute server.", ProviderError)])
def test_create_errors_map_to_typed_errors(make, cloud, prov, status, message, error):
    provider = make(MAX_ATTEMPTS="1")
    cloud.fail(NovaEmulator.CREATE, status, message)
    with pytest.raises(ProviderError) as info:
        provider.create(SPEC, 1, *args(prov))
    assert type(info.value) is error
    assert info.value.message.startswith(f"openstack entry os1: create server failed: HTTP "
                                         f"{status}: ")
    assert len(info.value.message) < 400 and "\n" not in info.value.message
    assert provider.list(owner_tags(POOL, prov)) == []


def test_unknown_image_flavor_or_key(make, prov):
    provider = make(MAX_ATTEMPTS="1")
    with pytest.raises(ProviderError, match="find image 'nope' failed: HTTP 404"):
        provider.create(InstanceSpec("os1", "m1.small", "nope", 1, 1, 1), 1, *args(prov))
    with pytest.raises(ProviderError, match="find flavor 'huge' failed: HTTP 404"):
        provider.create(InstanceSpec("os1", "huge", "el9-condor-worker", 1, 1, 1), 1,
                        *args(prov))
    with pytest.raises(ProviderError, match="HTTP 400: Invalid key_name provided"):
        make(KEY_NAME="nokey").create(SPEC, 1, *args(prov))


def test_bad_password_is_an_auth_error_naming_the_setting(make, cloud, prov, monkeypatch):
    wrong = "wR0ng-" + uuid.uuid4().hex
    monkeypatch.setenv("OS_PASSWORD", wrong)
    with pytest.raises(AuthError) as info:
        make().list(owner_tags(POOL, prov))
    text = str(info.value)
    assert "authentication failed" in text and "CLOUD_PLUGINS_OS1_CLOUD" in text
    assert "OS_* environment" in text and wrong not in text and cloud.password not in text


def test_token_expiry_in_the_middle_of_a_cycle(make, cloud, prov):
    provider = make()
    tags, token = request(prov)
    [inst] = provider.create(SPEC, 1, tags, USER_DATA, token)
    issued = cloud.tokens_issued()
    cloud.expire_tokens()   # e.g. revoked, or expired early on the Keystone side
    start = len(cloud.calls)
    assert [i.id for i in provider.list(owner_tags(POOL, prov))] == [inst.id]
    cloud.expire_tokens()
    provider.terminate([inst.id])
    assert cloud.tokens_issued() == issued + 2
    seen = [(m, u.split("?")[0], s) for m, u, s in cloud.calls[start:start + 3]]
    assert seen == [("GET", "/compute/v2.1/servers/detail", 401),
                    ("POST", "/identity/v3/auth/tokens", 201),
                    ("GET", "/compute/v2.1/servers/detail", 200)]


def test_unknown_region_and_unreachable_cloud(make, prov, monkeypatch):
    with pytest.raises(ConfigError, match="Region Nowhere is not a valid region name"):
        make(REGION="Nowhere")   # the cloud names its regions (OS_REGION_NAME): at start
    monkeypatch.delenv("OS_REGION_NAME")
    with pytest.raises(ProviderError, match="region 'Nowhere'.*CLOUD_PLUGINS_OS1_REGION"):
        make(REGION="Nowhere").list(owner_tags(POOL, prov))   # found missing in the catalog
    with socket.socket() as sock:   # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = make(ENDPOINT_OVERRIDE=f"http://127.0.0.1:{port}/compute/v2.1", MAX_ATTEMPTS="2")
    with pytest.raises(TransientError, match="cannot reach the cloud"):
        provider.list(owner_tags(POOL, prov))
    with pytest.raises(TransientError):
        provider.create(SPEC, 1, *args(prov))


def test_bad_requests_are_refused_before_any_call(make, cloud, prov):
    provider = make()
    before = cloud.count(NovaEmulator.CREATE)
    huge = "#cloud-config\n# " + TOKEN * 700
    with pytest.raises(ProviderError, match="user data is .* base64, Nova allows 65535") as info:
        provider.create(SPEC, 1, *request(prov)[:1], huge, "t1")
    assert TOKEN not in info.value.message
    with pytest.raises(ProviderError, match="CLOUD_PLUGINS_OS1_IMAGE"):
        provider.create(InstanceSpec("os1", "m1.small", "", 1, 1, 1), 1, {}, USER_DATA, "t2")
    with pytest.raises(ProviderError, match="not valid Nova metadata"):
        provider.create(SPEC, 1, {"condor-plugins/pool": "x" * 256}, USER_DATA, "t3")
    assert provider.create(SPEC, 0, *request(prov)[:1], USER_DATA, "t4") == []
    assert cloud.count(NovaEmulator.CREATE) == before


# ------------------------------------------------------------------ credentials

def test_clouds_yaml_by_name_with_secure_yaml(cloud, prov, tmp_path, monkeypatch):
    document = cloud.clouds_yaml("site")
    password = document["clouds"]["site"]["auth"].pop("password")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", write_clouds(tmp_path / "clouds.yaml", document))
    monkeypatch.setenv("OS_CLIENT_SECURE_FILE", write_clouds(
        tmp_path / "secure.yaml", {"clouds": {"site": {"auth": {"password": password}}}}))
    provider = OpenStackProvider("os1", {"CLOUD": "site", "API_VERSION": "2.1"})
    try:
        assert provider.list(owner_tags(POOL, prov)) == []
        assert "site" in provider.source and str(tmp_path / "clouds.yaml") in provider.source
    finally:
        provider.close()
    # OS_CLOUD names the cloud when CLOUD is unset
    write_clouds(tmp_path / "clouds.yaml", cloud.clouds_yaml("local", application_credential=True))
    monkeypatch.setenv("OS_CLOUD", "local")
    provider = OpenStackProvider("os1", {})
    try:
        assert provider.list(owner_tags(POOL, prov)) == []
        assert provider.source.startswith("cloud 'local'")
    finally:
        provider.close()


@pytest.mark.parametrize("settings, knob", [
    ({"MAX_ATTEMPTS": "many"}, "MAX_ATTEMPTS"), ({"TIMEOUT": "soon"}, "TIMEOUT"),
    ({"API_VERSION": "3.0"}, "API_VERSION"), ({"API_VERSION": "2.999"}, "API_VERSION"),
    ({"API_VERSION": "latest"}, "API_VERSION"), ({"CLOUD": "nosuchcloud"}, "CLOUD")])
def test_bad_settings_are_config_errors(cloud, tmp_path, monkeypatch, settings, knob):
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE",
                       write_clouds(tmp_path / "clouds.yaml", cloud.clouds_yaml("site")))
    with pytest.raises(ConfigError, match=f"CLOUD_PLUGINS_OS1_{knob} = "):
        OpenStackProvider("os1", {"CLOUD": "site", **settings})


def test_missing_or_broken_configuration_is_a_config_error(cloud, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no credentials: set CLOUD_PLUGINS_OS1_CLOUD"):
        OpenStackProvider("os1", {})
    with pytest.raises(ConfigError, match="CLOUD_PLUGINS_OS1_CLOUD = 'site': .*Cloud site was not "
                       "found"):
        OpenStackProvider("os1", {"CLOUD": "site"})
    broken = tmp_path / "clouds.yaml"
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(broken))
    broken.write_text(f"clouds:\n  site:\n    auth: {{password: {cloud.password}\n  bad: [\n")
    with pytest.raises(ConfigError, match="CLOUD = 'site': .*clouds.yaml\", line 3") as info:
        OpenStackProvider("os1", {"CLOUD": "site"})
    assert cloud.password not in str(info.value)
    document = cloud.clouds_yaml("site")
    document["clouds"]["site"]["auth_type"] = "kerberos-magic"
    write_clouds(broken, document)
    with pytest.raises(ConfigError, match="plugin kerberos-magic could not be found"):
        OpenStackProvider("os1", {"CLOUD": "site"})
    del document["clouds"]["site"]["auth"]["auth_url"], document["clouds"]["site"]["auth_type"]
    write_clouds(broken, document)
    with pytest.raises(ConfigError, match="not given: auth_url") as info:
        OpenStackProvider("os1", {"CLOUD": "site"})
    assert cloud.password not in str(info.value)


# ------------------------------------------------------------------ secrets

def test_scrub_keeps_ids_and_hides_secrets():
    server = str(uuid.uuid4())
    text = scrub(f"Instance {server} (req-{server}) project {uuid.uuid4().hex} token "
                 f"gAAAAAB{'x' * 150} pw hunter22", ["hunter22"])
    assert server in text and f"req-{server}" in text and "gAAAA" not in text
    assert "hunter22" not in text and text.count("[redacted]") == 2
    assert len(scrub("word " * 100)) == 200


def test_secrets_never_in_messages_or_logs(make, cloud, prov, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    provider = make(MAX_ATTEMPTS="1")
    tags, token = request(prov)
    [inst] = provider.create(SPEC, 1, tags, USER_DATA, token)
    provider.list(owner_tags(POOL, prov))
    provider.terminate([inst.id])
    encoded = base64.b64encode(USER_DATA.encode()).decode()
    # The worst case: a cloud that echoes the credentials and the request.
    echo = (f"password {cloud.password} secret {cloud.app_credential_secret} token "
            f"{cloud.last_token} user_data {encoded} node token {TOKEN}")
    messages = []
    for status in (400, 401, 403, 409, 413, 500, 503):
        cloud.fail(NovaEmulator.CREATE, status, echo, times=2)   # 401: after a re-auth too
        with pytest.raises(ProviderError) as info:
            provider.create(SPEC, 1, *args(prov))
        cloud.clear_faults()
        messages += [info.value.message, str(info.value), repr(info.value)]
    cloud.fail(NovaEmulator.CREATE, 500, "Quota exceeded " + echo)
    with pytest.raises(QuotaError) as info:
        provider.create(SPEC, 1, *args(prov))
    messages.append(str(info.value))
    cloud.set_error(provider.create(SPEC, 1, *args(prov))[0].id, "No valid host " + echo)
    messages += [i.reason for i in provider.list(owner_tags(POOL, prov)) if i.reason]
    monkeypatch.setenv("OS_PASSWORD", cloud.password + "-wrong")
    with pytest.raises(AuthError) as info:
        make().list(owner_tags(POOL, prov))
    messages.append(str(info.value))
    logging.getLogger("condor_plugins.test").error("failures: %s", messages)
    text = "\n".join(messages + [r.getMessage() for r in caplog.records] + [caplog.text])
    for secret in (cloud.password, cloud.app_credential_secret, cloud.last_token, TOKEN,
                   encoded[:40], *TOKEN.split(".")):
        assert secret not in text
    assert "No valid host" in text and "HTTP 401" in text
    assert not [r for r in caplog.records if r.name.startswith(("keystoneauth", "novaclient"))
                and r.levelno < logging.INFO]
