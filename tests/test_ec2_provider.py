"""The ``ec2`` provider against moto's EC2 server: a real HTTP endpoint on 127.0.0.1.

Cloud errors moto cannot produce (capacity, quota, auth, throttling) are
injected on the real code path: a ``before-send`` hook answers the HTTP request
with an EC2 error document, which botocore parses (and retries) as it would
AWS's; the listing errors use botocore's Stubber.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import socket
import uuid
from urllib.parse import parse_qs

import pytest

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")
from botocore.stub import Stubber  # noqa: E402

from cloudfaults import ec2_error  # noqa: E402
from condor_plugins.config import ConfigError  # noqa: E402
from condor_plugins.providers import provider_class  # noqa: E402
from condor_plugins.providers.base import (TAG_ENTRY, TAG_REQUEST, AuthError,  # noqa: E402
                                           CapacityError, InstanceSpec, InstanceState,
                                           ProviderError, QuotaError, TransientError,
                                           instance_tags, owner_tags)
from condor_plugins.providers.ec2 import EC2Provider, client_token, to_instance  # noqa: E402

# botocore 1.37 signs with datetime.utcnow(): not this project's warning to fix.
pytestmark = pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning")

KEY_ID = "AKIDCONDORTEST0042XYZ"
SECRET = "cOnDoRtEsT/sEcReT+kEy0123456789abcdefghij"
TOKEN = "eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.eyJzdWIiOiJub2RlIn0.c2lnbmF0dXJlLW5vdC1yZWFs"
USER_DATA = ("#cloud-config\nwrite_files:\n- path: /etc/condor/tokens.d/cloud-worker\n"
             f"  permissions: '0600'\n  content: {TOKEN}\nruncmd:\n- [systemctl, start, condor]\n")
POOL = "cm.example.org:9618"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    """Fake credentials in the environment only; no real AWS file or metadata."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2",
                 "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def ec2(moto_url):
    client = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_url)
    yield client
    client.close()


@pytest.fixture
def make(moto_url):
    made = []

    def make(**settings):
        provider = EC2Provider("ec2east", {"ENDPOINT_URL": moto_url, **settings})
        made.append(provider)
        return provider
    yield make
    for provider in made:
        provider.close()


_AMI = []


@pytest.fixture
def spec(ec2):
    """A spec with one of moto's Amazon images (looked up once: the list is long)."""
    if not _AMI:
        _AMI.append(ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])
    return InstanceSpec("ec2east", "t3.micro", _AMI[0], 2, 4096, 20000)


@pytest.fixture
def prov():
    """A provisioner name of its own per test: tests never see each other's instances."""
    return f"prov-{uuid.uuid4().hex[:8]}"


def request(prov: str):
    token = f"ec2east-{uuid.uuid4().hex[:8]}"
    return instance_tags(POOL, prov, "ec2east", token), token


def args(prov: str):
    """Tags, user data and request token of a new request of ``prov``."""
    tags, token = request(prov)
    return tags, USER_DATA, token


def described(ec2, **tags):
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
    return [i for r in ec2.describe_instances(Filters=filters)["Reservations"]
            for i in r["Instances"]]


def hook(provider, operation: str, answers=(), sent=None):
    """Record every HTTP request of ``operation`` in ``sent``; answer the first
    ones with ``answers`` (a response, or None to let it through to moto)."""
    sent = [] if sent is None else sent
    answers = list(answers)

    def before_send(request, **_):
        sent.append(request)
        return answers.pop(0) if answers else None
    provider._client().meta.events.register(f"before-send.ec2.{operation}", before_send)
    return sent


def params(request) -> dict:
    body = request.body
    text = body.decode() if isinstance(body, bytes) else body
    return {k: v[0] for k, v in parse_qs(text).items()}


# ------------------------------------------------------------------ tests

def test_registered_as_builtin_type():
    assert provider_class("ec2", "ec2east") is EC2Provider


def test_create_with_tags_user_data_and_network_settings(make, ec2, spec, prov, moto_url):
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
    groups = [ec2.create_security_group(GroupName=f"g{i}-{prov}", Description="workers",
                                        VpcId=vpc)["GroupId"] for i in range(2)]
    ec2.create_key_pair(KeyName=f"key-{prov}")
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=moto_url)
    iam.create_instance_profile(InstanceProfileName=f"worker-{prov}")
    provider = make(SUBNET_ID=subnet, SECURITY_GROUP_IDS=", ".join(groups),
                    KEY_NAME=f"key-{prov}", INSTANCE_PROFILE=f"worker-{prov}")
    tags, token = request(prov)
    sent = hook(provider, "RunInstances")

    started = provider.create(spec, 2, tags, USER_DATA, token)

    assert len(started) == 2 and len({i.id for i in started}) == 2
    # IMDSv2 only, one hop (moto does not echo MetadataOptions: read the request).
    assert {k: v for k, v in params(sent[0]).items() if k.startswith("MetadataOptions.")} == {
        "MetadataOptions.HttpTokens": "required", "MetadataOptions.HttpPutResponseHopLimit": "1",
        "MetadataOptions.HttpEndpoint": "enabled"}
    for inst in started:
        assert inst.id.startswith("i-") and inst.entry == "ec2east"
        assert inst.state in (InstanceState.PENDING, InstanceState.RUNNING)
    found = {i["InstanceId"]: i for i in described(ec2, **{TAG_REQUEST: token})}
    assert set(found) == {i.id for i in started}
    for iid, inst in found.items():
        assert {t["Key"]: t["Value"] for t in inst["Tags"]} == {**tags, "Name": f"condor-{token}"}
        assert (inst["ImageId"], inst["InstanceType"], inst["SubnetId"], inst["KeyName"]) == \
            (spec.image, "t3.micro", subnet, f"key-{prov}")
        assert sorted(g["GroupId"] for g in inst["SecurityGroups"]) == sorted(groups)
        data = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        assert base64.b64decode(data["UserData"]["Value"]).decode() == USER_DATA
        shutdown = ec2.describe_instance_attribute(
            InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")
        assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    # moto checks that the profile exists, and associates it with the first instance only
    assoc = ec2.describe_iam_instance_profile_associations()["IamInstanceProfileAssociations"]
    assert any(a["InstanceId"] in found and a["IamInstanceProfile"]["Arn"].endswith(
        f"/worker-{prov}") for a in assoc)


def test_condor_knobs_reach_the_provider(ec2, spec, prov, moto_url):
    """CLOUD_PLUGINS_<ENTRY>_* knobs, read as the provisioner reads them."""
    from condor_plugins import config
    cfg = config.load({
        "CLOUD_PLUGINS_PROVIDERS": "ec2east", "CLOUD_PLUGINS_PROVISIONER_NAME": prov,
        "COLLECTOR_HOST": POOL, "CLOUD_PLUGINS_EC2EAST_TYPE": "ec2",
        "CLOUD_PLUGINS_EC2EAST_IMAGE": spec.image,
        "CLOUD_PLUGINS_EC2EAST_INSTANCE_TYPE": "m5.large",
        "CLOUD_PLUGINS_EC2EAST_ENDPOINT_URL": moto_url,
        "CLOUD_PLUGINS_EC2EAST_REGION": "us-east-1",
        "CLOUD_PLUGINS_EC2EAST_SPOT": "yes", "CLOUD_PLUGINS_EC2EAST_KEY_NAME": "",
        "CLOUD_PLUGINS_EC2EAST_WORKER_START_DELAY": "5"})
    [entry] = cfg.entries
    provider = provider_class(entry.type, entry.name)(entry.name, entry.settings)
    try:
        tags = instance_tags(cfg.pool, cfg.name, entry.name, f"{prov}-1")
        [inst] = provider.create(entry.spec(), 1, tags, USER_DATA, f"{prov}-1")
        [found] = described(ec2, **{TAG_REQUEST: f"{prov}-1"})
        assert (found["InstanceId"], found["InstanceType"], found["ImageId"]) == \
            (inst.id, "m5.large", spec.image)
        assert found["InstanceLifecycle"] == "spot" and "KeyName" not in found
        assert [i.id for i in provider.list(owner_tags(cfg.pool, cfg.name))] == [inst.id]
    finally:
        provider.close()


def test_list_by_owner_tags_only(make, ec2, spec, prov):
    provider = make()
    mine = [provider.create(spec, 1, *args(prov))[0].id for _ in range(2)]
    other = provider.create(spec, 1, *args(prov + "-other"))[0].id
    ec2.run_instances(ImageId=spec.image, InstanceType="t3.micro", MinCount=1, MaxCount=1)

    listed = provider.list(owner_tags(POOL, prov))

    assert sorted(i.id for i in listed) == sorted(mine)
    assert other not in {i.id for i in listed}
    for inst in listed:
        assert inst.state is InstanceState.RUNNING and inst.entry == "ec2east"
        assert inst.tags[TAG_ENTRY] == "ec2east" and inst.launch_time and inst.address
    by_entry = provider.list({**owner_tags(POOL, prov), TAG_ENTRY: "ec2east"})
    assert sorted(i.id for i in by_entry) == sorted(mine)
    assert provider.list({**owner_tags(POOL, prov), TAG_ENTRY: "elsewhere"}) == []


def test_list_pages_through_many_instances(make, spec, prov):
    provider = make()
    for _ in range(7):   # moto pages by reservation: one per create
        provider.create(spec, 2, *args(prov))
    sent = hook(provider, "DescribeInstances")
    provider._client().meta.events.register(  # small pages, to see the pagination work
        "provide-client-params.ec2.DescribeInstances",
        lambda params, **_: params.update(MaxResults=5))
    assert len({i.id for i in provider.list(owner_tags(POOL, prov))}) == 14
    assert [params(r).get("MaxResults") for r in sent] == ["5", "5"]


def test_terminate_reports_terminated_and_ignores_gone_ids(make, spec, prov):
    provider = make()
    tags, token = request(prov)
    a, b = (i.id for i in provider.create(spec, 2, tags, USER_DATA, token))

    provider.terminate([a, "i-0123456789abcdef0"])   # one unknown id among them
    provider.terminate([a])                            # again: not an error
    provider.terminate(["i-0fedcba9876543210"])
    provider.terminate([])

    states = {i.id: i for i in provider.list(owner_tags(POOL, prov))}
    assert states[a].state is InstanceState.TERMINATED   # still listed: the policy sees it
    assert states[b].state is InstanceState.RUNNING
    assert states[a].reason


def test_stopped_instance_is_listed_as_stopped(make, ec2, spec, prov):
    provider = make()
    iid = provider.create(spec, 1, *args(prov))[0].id
    ec2.stop_instances(InstanceIds=[iid])
    [inst] = provider.list(owner_tags(POOL, prov))
    assert inst.state is InstanceState.STOPPED and inst.reason.startswith("EC2 state stopp")


@pytest.mark.parametrize("ec2_state, state", [
    ("pending", InstanceState.PENDING), ("running", InstanceState.RUNNING),
    ("stopping", InstanceState.STOPPED), ("shutting-down", InstanceState.STOPPING),
    ("terminated", InstanceState.TERMINATED), ("stopped", InstanceState.STOPPED),
    ("weird", InstanceState.ERROR)])
def test_state_mapping(ec2_state, state):
    inst = to_instance({"InstanceId": "i-1", "State": {"Name": ec2_state}}, "e")
    assert inst.state is state and inst.entry == "e" and inst.launch_time is None


def test_same_request_token_twice_launches_once(make, ec2, spec, prov):
    provider = make()
    tags, token = request(prov)
    restarted = make()   # e.g. the provisioner after a crash
    sent = hook(provider, "RunInstances")
    hook(restarted, "RunInstances", sent=sent)
    first = provider.create(spec, 2, tags, USER_DATA, token)
    again = restarted.create(spec, 2, tags, USER_DATA, token)
    assert sorted(i.id for i in again) == sorted(i.id for i in first)
    assert len(sent) == 1 and params(sent[0])["ClientToken"] == token
    assert len(described(ec2, **{TAG_REQUEST: token})) == 2


def test_botocore_retry_resends_the_same_client_token(make, ec2, spec, prov):
    provider = make()
    tags, token = request(prov)
    sent = hook(provider, "RunInstances", [ec2_error("Unavailable", 503)])
    [inst] = provider.create(spec, 1, tags, USER_DATA, token)
    assert len(sent) == 2 and {params(r)["ClientToken"] for r in sent} == {token}
    assert [i["InstanceId"] for i in described(ec2, **{TAG_REQUEST: token})] == [inst.id]


def test_long_request_tokens_become_valid_client_tokens():
    long = "x" * 100
    assert client_token("ec2east-1a2b3c4d") == "ec2east-1a2b3c4d"
    assert len(client_token(long)) <= 64 and client_token(long) == client_token(long)
    assert client_token(long) != client_token(long + "y")
    assert client_token("é").isascii()


def test_spot_market_options(make, ec2, spec, prov):
    provider = make(SPOT="true", SPOT_MAX_PRICE="0.05")
    sent = hook(provider, "RunInstances")
    tags, token = request(prov)
    provider.create(spec, 1, tags, USER_DATA, token)
    p = params(sent[0])
    assert p["InstanceMarketOptions.MarketType"] == "spot"
    assert p["InstanceMarketOptions.SpotOptions.MaxPrice"] == "0.05"
    assert p["InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"] == "terminate"
    [inst] = described(ec2, **{TAG_REQUEST: token})
    assert inst["InstanceLifecycle"] == "spot"
    on_demand = make()
    sent = hook(on_demand, "RunInstances")
    on_demand.create(spec, 1, *args(prov))
    assert not any(k.startswith("InstanceMarketOptions") for k in params(sent[0]))


@pytest.mark.parametrize("settings", [{"SPOT": "maybe"}, {"SPOT": "1", "SPOT_MAX_PRICE": "cheap"},
                                      {"MAX_ATTEMPTS": "many"}])
def test_bad_settings_are_config_errors(settings):
    with pytest.raises(ConfigError, match="CLOUD_PLUGINS_EC2EAST_"):
        EC2Provider("ec2east", settings)


@pytest.mark.parametrize("code, status, error", [
    ("InsufficientInstanceCapacity", 500, CapacityError),
    ("InsufficientCapacity", 500, CapacityError),
    ("SpotMaxPriceTooLow", 400, CapacityError),
    ("InstanceLimitExceeded", 400, QuotaError),
    ("VcpuLimitExceeded", 400, QuotaError),
    ("MaxSpotInstanceCountExceeded", 400, QuotaError),
    ("AuthFailure", 401, AuthError),
    ("UnauthorizedOperation", 403, AuthError),
    ("InvalidClientTokenId", 403, AuthError),
    ("SignatureDoesNotMatch", 403, AuthError),
    ("ExpiredToken", 400, AuthError),
    ("RequestLimitExceeded", 503, TransientError),
    ("Throttling", 400, TransientError),
    ("InternalError", 500, TransientError),
    ("Unavailable", 503, TransientError),
    ("InvalidParameterValue", 400, ProviderError),
])
def test_create_errors_map_to_typed_errors(make, spec, prov, code, status, error):
    provider = make(MAX_ATTEMPTS="1")
    sent = hook(provider, "RunInstances", [ec2_error(code, status)])
    with pytest.raises(ProviderError) as info:
        provider.create(spec, 1, *args(prov))
    assert type(info.value) is error and len(sent) == 1
    assert info.value.message.startswith(
        f"ec2 entry ec2east: RunInstances failed: {code}: injected by the test")
    assert len(info.value.message) < 300 and "\n" not in info.value.message
    assert provider.list(owner_tags(POOL, prov)) == []


def test_throttling_is_retried_by_botocore_then_transient(make, spec, prov):
    provider = make()   # default: 3 attempts
    sent = hook(provider, "RunInstances", [ec2_error("RequestLimitExceeded", 503)] * 3)
    with pytest.raises(TransientError, match="RequestLimitExceeded"):
        provider.create(spec, 1, *args(prov))
    assert len(sent) == 3


def test_listing_and_terminate_errors_with_stubber(make, prov):
    provider = make()
    with Stubber(provider._client()) as stub:
        stub.add_client_error("describe_instances", "RequestLimitExceeded", "slow down", 503)
        stub.add_client_error("terminate_instances", "UnauthorizedOperation", "no", 403)
        stub.add_client_error("terminate_instances", "InvalidInstanceID.NotFound", "gone", 400)
        with pytest.raises(TransientError):
            provider.list(owner_tags(POOL, prov))
        with pytest.raises(AuthError, match="UnauthorizedOperation"):
            provider.terminate(["i-0123456789abcdef0"])
        provider.terminate(["i-0123456789abcdef0"])
        stub.assert_no_pending_responses()


def test_not_found_right_after_launch_is_retried_not_ignored(make, spec, prov):
    """EC2 is eventually consistent: a just-launched instance may be unknown to
    TerminateInstances for a while; forgetting it would leak a VM."""
    provider = make()
    [inst] = provider.create(spec, 1, *args(prov))
    with Stubber(provider._client()) as stub:
        stub.add_client_error("terminate_instances", "InvalidInstanceID.NotFound", "no", 400)
        with pytest.raises(TransientError, match="not visible yet"):
            provider.terminate([inst.id])
    provider.terminate([inst.id])
    assert provider.list(owner_tags(POOL, prov))[0].state is InstanceState.TERMINATED


def test_missing_credentials_are_auth_errors(make, spec, prov, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(AuthError, match="no usable credentials"):
        make().create(spec, 1, *args(prov))
    with pytest.raises(AuthError, match="nosuchprofile"):
        make(PROFILE="nosuchprofile").list(owner_tags(POOL, prov))


def test_named_profile_is_used(make, prov, tmp_path, monkeypatch):
    (tmp_path / "credentials").write_text(
        "[condor]\naws_access_key_id = AKIDPROFILE0000000001\n"
        "aws_secret_access_key = profileSecret0000000000000000000000000000\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    provider = make(PROFILE="condor")
    sent = hook(provider, "DescribeInstances")
    assert provider.list(owner_tags(POOL, prov)) == []
    assert "Credential=AKIDPROFILE0000000001/" in sent[0].headers["Authorization"].decode()


def test_unreachable_endpoint_is_transient(make, spec, prov):
    with socket.socket() as sock:   # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = make(ENDPOINT_URL=f"http://127.0.0.1:{port}", MAX_ATTEMPTS="2")
    with pytest.raises(TransientError, match="cannot reach the EC2 endpoint"):
        provider.list(owner_tags(POOL, prov))
    with pytest.raises(TransientError):
        provider.create(spec, 1, *args(prov))


def test_bad_requests_are_refused_before_any_call(make, spec, prov):
    provider = make()
    sent = hook(provider, "RunInstances")
    hook(provider, "DescribeInstances", sent=sent)
    huge = "#cloud-config\n# " + TOKEN * 400
    with pytest.raises(ProviderError, match="user data is .* bytes, EC2 allows 16384") as info:
        provider.create(spec, 1, *request(prov)[:1], huge, "t1")
    assert TOKEN not in info.value.message
    no_image = InstanceSpec("ec2east", "t3.micro", "", 1, 1, 1)
    with pytest.raises(ProviderError, match="CLOUD_PLUGINS_EC2EAST_IMAGE"):
        provider.create(no_image, 1, *request(prov)[:1], USER_DATA, "t2")
    assert provider.create(spec, 0, *request(prov)[:1], USER_DATA, "t3") == []
    assert sent == []


def test_secrets_never_in_messages_or_logs(make, spec, prov, caplog):
    caplog.set_level(logging.DEBUG)
    provider = make(MAX_ATTEMPTS="1")
    tags, token = request(prov)
    [inst] = provider.create(spec, 1, tags, USER_DATA, token)
    provider.list(owner_tags(POOL, prov))
    provider.terminate([inst.id])
    # The worst case: a server that echoes the credentials and the request.
    echo = (f"AWSAccessKeyId {KEY_ID} secret {SECRET} StringToSign AWS4-HMAC-SHA256 "
            f"UserData={base64.b64encode(USER_DATA.encode()).decode()} token {TOKEN}")
    messages = []
    for code, status in [("SignatureDoesNotMatch", 403), ("AuthFailure", 401),
                         ("InsufficientInstanceCapacity", 500), ("InstanceLimitExceeded", 400),
                         ("RequestLimitExceeded", 503), ("InvalidParameterValue", 400)]:
        hook(provider, "RunInstances", [ec2_error(code, status, echo)])
        with pytest.raises(ProviderError) as info:
            provider.create(spec, 1, *args(prov))
        messages += [info.value.message, str(info.value), repr(info.value)]
    logging.getLogger("condor_plugins.test").error("failures: %s", messages)
    text = "\n".join(messages + [r.getMessage() for r in caplog.records] + [caplog.text])
    for secret in (SECRET, KEY_ID, TOKEN, base64.b64encode(USER_DATA.encode()).decode()[:40]):
        assert secret not in text
    assert "SignatureDoesNotMatch" in text
    assert not [r for r in caplog.records if r.name.startswith("botocore")
                and r.levelno < logging.INFO]


def test_describe_reads_the_type_and_the_image_root_and_a_larger_disk_is_applied(make, ec2,
                                                                               spec, prov):
    """Issue 15: the template's size is the instance type's (DescribeInstanceTypes), its
    disk the image's root volume; a DISK above that is the new root volume's size."""
    provider = make()
    kind = provider.describe(spec)
    assert (kind.name, kind.cpus, kind.memory_mb) == ("t3.micro", 2, 1024) and kind.disk_grows
    [image] = ec2.describe_images(ImageIds=[spec.image])["Images"]
    root = [m for m in image["BlockDeviceMappings"] if m["DeviceName"] == image["RootDeviceName"]]
    assert kind.disk_mb == root[0]["Ebs"]["VolumeSize"] * 1024
    bigger = dataclasses.replace(spec, disk_mb=kind.disk_mb + 5000)
    sent = hook(provider, "RunInstances")
    [inst] = provider.create(bigger, 1, *args(prov))
    assert params(sent[0])["BlockDeviceMapping.1.Ebs.VolumeSize"] == str(
        -(-bigger.disk_mb // 1024))
    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id",
                                             "Values": [inst.id]}])["Volumes"]
    assert [v["Size"] for v in volumes] == [-(-bigger.disk_mb // 1024)]
    sent.clear()
    provider.create(dataclasses.replace(spec, disk_mb=kind.disk_mb), 1, *args(prov))
    assert not any(k.startswith("BlockDeviceMapping") for k in params(sent[0]))
    with pytest.raises(ProviderError, match="DescribeInstanceTypes failed: InvalidInstanceType"):
        provider.describe(dataclasses.replace(spec, instance_type="t3.nosuch"))


def test_the_provisioner_sizes_an_auto_entry_from_ec2_and_holds_while_ec2_is_unreachable(
        spec, prov, moto_url, tmp_path):
    """The template ad of an entry with CPUS and MEMORY left auto is the instance
    type's (less MEMORY_RESERVE); while EC2 cannot describe it, the entry holds."""
    from condor_plugins.provisioning.provisioner import Provisioner
    from condor_plugins.provisioning.policy import plan
    from condor_plugins.provisioning.state import Demand, Hold, Listing, ObservedState
    e = "CLOUD_PLUGINS_EC2EAST_"
    param = {"CLOUD_PLUGINS_PROVIDERS": "ec2east", "CLOUD_PLUGINS_PROVISIONER_NAME": prov,
             "COLLECTOR_HOST": POOL, "SPOOL": str(tmp_path),
             "CLOUD_PLUGINS_WORKER_TOKEN_DOMAIN": "cloud-worker.test",
             e + "TYPE": "ec2", e + "IMAGE": spec.image, e + "INSTANCE_TYPE": "m5.xlarge",
             e + "ENDPOINT_URL": moto_url, e + "MEMORY_RESERVE": "384", e + "MAX_ATTEMPTS": "1"}
    sized = Provisioner(param, state_file=tmp_path / "state.json")
    try:
        sized.resize()
        [entry] = sized.cfg.entries
        assert (entry.cpus, entry.memory_mb) == (4, 16384) and not sized.sizes.unsized
        ad = sized.templates["ec2east"]
        assert (ad["Cpus"], ad["Memory"]) == (4, 16384 - 384)
        assert ad["Disk"] == entry.disk_mb * 1024 > 0
    finally:
        sized.close()
    down = Provisioner(dict(param, **{e + "ENDPOINT_URL": "http://127.0.0.1:9"}),
                       state_file=tmp_path / "state2.json")
    try:
        down.resize()
        assert "DescribeInstanceTypes" in down.sizes.unsized["ec2east"]
        state = ObservedState(listings={"ec2east": Listing(True, ())},
                              jobs=(Demand(4, 1, 1000, ("ec2east",)),),
                              unsized=dict(down.sizes.unsized))
        [hold] = [a for a in plan(state, down.cfg, 1e6).actions if isinstance(a, Hold)]
        assert hold.key == "sizing" and "cannot reach the EC2 endpoint" in hold.reason
    finally:
        down.close()
