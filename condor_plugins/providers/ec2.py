"""The ``ec2`` provider: instances are EC2 VMs (or any EC2-compatible cloud), via boto3.

IMAGE and INSTANCE_TYPE are entry knobs; the settings (REGION, ENDPOINT_URL, PROFILE,
SUBNET_ID, SECURITY_GROUP_IDS, KEY_NAME, INSTANCE_PROFILE, ZONE, SPOT, SPOT_MAX_PRICE,
MAX_ATTEMPTS) and what instances get (tags, IMDSv2 with one hop, a root volume of DISK, a
ClientToken so a retry never launches twice): docs/knobs-ec2.md.  Credentials come from
boto3's chain, never from condor config; messages hold no credentials or user data, and
botocore's DEBUG log (request bodies, so the node's token) is capped at INFO.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import boto3
from botocore import exceptions as bex
from botocore.config import Config

from ..config import PARSERS
from .base import (TAG_ENTRY, TAG_REQUEST, AuthError, CapacityError, Instance, InstanceSpec,
                   InstanceState, InstanceType, Provider, ProviderError, QuotaError,
                   TransientError)

log = logging.getLogger(__name__)

USER_DATA_MAX = 16384  # bytes, before base64 (EC2 limit)
STATES = {"pending": InstanceState.PENDING, "running": InstanceState.RUNNING,
          "stopping": InstanceState.STOPPED, "stopped": InstanceState.STOPPED,  # powered off
          "shutting-down": InstanceState.STOPPING, "terminated": InstanceState.TERMINATED}
AUTH = set("AuthFailure UnauthorizedOperation InvalidClientTokenId SignatureDoesNotMatch "
           "ExpiredToken RequestExpired IncompleteSignature MissingAuthenticationToken "
           "InvalidAccessKeyId OptInRequired Blocked AccessDenied".split())
TRANSIENT = set("RequestLimitExceeded Throttling ThrottlingException RequestThrottled "
                "InternalError InternalFailure ServiceUnavailable Unavailable RequestTimeout "
                "RequestTimeoutException PriorRequestNotComplete".split())
GONE = {"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"}
AUTH_HINT = "credentials: boto3's chain (environment, ~/.aws, instance role) or PROFILE"
_SECRETISH = re.compile(r"\b(?:AKIA|ASIA|AKID)[A-Z0-9]{8,}|[A-Za-z0-9/+=_-]{32,}")


def classify(code: str, status: int) -> type:
    """The ProviderError class for an EC2 error ``code`` with HTTP ``status``."""
    if code == "SpotMaxPriceTooLow" or code.startswith("Insufficient"):
        return CapacityError
    if code == "MaxSpotInstanceCountExceeded" or (code.endswith("LimitExceeded")
                                                  and code not in TRANSIENT):
        return QuotaError
    if code in AUTH or code.startswith("AuthFailure"):
        return AuthError
    if code in TRANSIENT or status >= 500:
        return TransientError
    return ProviderError


def client_token(request_token: str) -> str:
    """EC2 ClientTokens are at most 64 ASCII characters: hash longer ones."""
    token = request_token
    ok = len(token) <= 64 and token.isascii() and token.isprintable()
    return token if ok else "cp-" + hashlib.sha256(token.encode()).hexdigest()[:61]


def to_instance(data: Mapping, entry: str, tags: Optional[Mapping[str, str]] = None) -> Instance:
    """An ``Instance`` from one EC2 instance description (``tags`` if it has none)."""
    name = (data.get("State") or {}).get("Name", "")
    state = STATES.get(name, InstanceState.ERROR)
    found = {t["Key"]: t["Value"] for t in data.get("Tags") or []} or dict(tags or {})
    reason = ((data.get("StateReason") or {}).get("Message")
              or data.get("StateTransitionReason") or "")
    if state in (InstanceState.ERROR, InstanceState.STOPPED):
        reason = f"EC2 state {name or 'unknown'}" + (f": {reason}" if reason else "")
    launched = data.get("LaunchTime")
    return Instance(data["InstanceId"], found.get(TAG_ENTRY, entry), state,
                    launched.timestamp() if launched else None, found,
                    address=data.get("PrivateIpAddress") or data.get("PublicDnsName") or "",
                    reason=reason[:200])


class EC2Provider(Provider):
    """Instances are EC2 VMs; see the module docstring for the settings."""

    type_name = "ec2"

    def __init__(self, entry: str, settings: Mapping[str, str]):
        super().__init__(entry, settings)
        s = {k: str(v).strip() for k, v in self.settings.items() if str(v).strip()}
        self.region, self.endpoint_url, self.profile = (
            s.get("REGION", "us-east-1"), s.get("ENDPOINT_URL"), s.get("PROFILE"))
        self.spot = self.setting("SPOT", "bool", "false")
        self.spot_max_price = self.setting("SPOT_MAX_PRICE", "rate", "") and s["SPOT_MAX_PRICE"]
        if self.spot_max_price and not self.spot:
            log.warning("Provider entry %s: SPOT_MAX_PRICE is ignored, SPOT is false", entry)
        self.max_attempts = max(1, self.setting("MAX_ATTEMPTS", "int", "3"))
        profile, zone, groups = (s.get(k) for k in ("INSTANCE_PROFILE", "ZONE",
                                                     "SECURITY_GROUP_IDS"))
        opts = {"InstanceInitiatedShutdownBehavior": "terminate", "SubnetId": s.get("SUBNET_ID"),
                # IMDSv2 only, one hop: containers (job sandboxes) cannot reach it.
                "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1,
                                    "HttpEndpoint": "enabled"},
                "KeyName": s.get("KEY_NAME"),
                "SecurityGroupIds": list(PARSERS["list"](groups)) if groups else None,
                "IamInstanceProfile": profile and {
                    "Arn" if profile.startswith("arn:") else "Name": profile},
                "Placement": zone and {"AvailabilityZone": zone},
                "InstanceMarketOptions": self.spot and {"MarketType": "spot", "SpotOptions": {
                    "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate",
                    **({"MaxPrice": self.spot_max_price} if self.spot_max_price else {})}}}
        self.options: Dict[str, object] = {k: v for k, v in opts.items() if v}
        self._session = self._ec2 = None
        self._created: Dict[str, float] = {}  # id -> when this object launched it
        self._roots: Dict[str, tuple] = {}     # image -> (root device, its size in GiB)
        for logger in map(logging.getLogger, ("botocore", "boto3", "urllib3")):
            logger.setLevel(logger.level or logging.INFO)  # DEBUG logs request bodies

    def _client(self):
        if self._ec2 is None:
            self._session = boto3.session.Session(profile_name=self.profile,
                                                  region_name=self.region)
            config = Config(connect_timeout=10, read_timeout=30,
                            retries={"mode": "standard", "total_max_attempts": self.max_attempts})
            self._ec2 = self._session.client("ec2", endpoint_url=self.endpoint_url, config=config)
        return self._ec2

    def _scrub(self, text: str) -> str:
        """``text`` without anything that looks like a credential, short."""
        creds = None
        with contextlib.suppress(Exception):  # unresolvable credentials: nothing to scrub
            creds = self._session.get_credentials().get_frozen_credentials()
        for secret in (c for c in creds or () if c and len(c) >= 16):  # real ones are long
            text = text.replace(secret, "[redacted]")
        text = _SECRETISH.sub("[redacted]", " ".join(text.split()))
        return text if len(text) <= 200 else text[:197] + "..."

    @contextlib.contextmanager
    def _api(self, op: str) -> Iterator:
        """Yield the client; map what the call raises to typed errors."""
        where = f"ec2 entry {self.entry}: {op}"
        try:
            yield self._client()
        except bex.ClientError as err:
            error, meta = err.response.get("Error") or {}, err.response.get("ResponseMetadata")
            code = str(error.get("Code") or "Unknown")
            cls = classify(code, int((meta or {}).get("HTTPStatusCode") or 0))
            hint = f" ({AUTH_HINT})" if cls is AuthError else ""
            exc = cls(f"{where} failed: {code}: {self._scrub(str(error.get('Message') or ''))}"
                      f"{hint}")
            exc.code = code
            raise exc from None
        except (bex.NoCredentialsError, bex.PartialCredentialsError, bex.ProfileNotFound,
                bex.CredentialRetrievalError, bex.TokenRetrievalError, bex.SSOError) as err:
            raise AuthError(f"{where}: no usable credentials: {self._scrub(str(err))} "
                            f"({AUTH_HINT})") from None
        except (bex.ConnectionError, bex.HTTPClientError) as err:
            raise TransientError(f"{where}: cannot reach the EC2 endpoint: "
                                 f"{type(err).__name__}") from None
        except bex.BotoCoreError as err:
            raise ProviderError(f"{where}: {self._scrub(str(err))}") from None

    def _describe(self, tags: Mapping[str, str]) -> List[Instance]:
        out = []
        with self._api("DescribeInstances") as ec2:
            pages = ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted(tags.items())],
                PaginationConfig={"PageSize": 500})
            for page in pages:
                for reservation in page.get("Reservations", []):
                    out.extend(to_instance(i, self.entry) for i in reservation["Instances"])
        return out

    def _root(self, image: str) -> tuple:
        """The image's root device name and volume size (GiB), cached."""
        if image not in self._roots:
            with self._api("DescribeImages") as ec2:
                found = ec2.describe_images(ImageIds=[image]).get("Images") or [{}]
            dev = found[0].get("RootDeviceName") or ""
            ebs = [m.get("Ebs") or {} for m in found[0].get("BlockDeviceMappings") or []
                   if m.get("DeviceName") == dev]
            self._roots[image] = (dev, int((ebs or [{}])[0].get("VolumeSize") or 0))
        return self._roots[image]

    def describe(self, spec: InstanceSpec) -> Optional[InstanceType]:
        with self._api("DescribeInstanceTypes") as ec2:
            info = ec2.describe_instance_types(InstanceTypes=[spec.instance_type])["InstanceTypes"]
        cpus = int((info[0].get("VCpuInfo") or {}).get("DefaultVCpus") or 0) if info else 0
        memory = int((info[0].get("MemoryInfo") or {}).get("SizeInMiB") or 0) if info else 0
        return InstanceType(spec.instance_type, cpus, memory,
                            self._root(spec.image)[1] * 1024, disk_grows=True)

    def create(self, spec: InstanceSpec, count: int, tags: Mapping[str, str],
               user_data: str, request_token: str) -> List[Instance]:
        where, size = f"ec2 entry {self.entry}", len((user_data or "").encode())
        if not spec.image or not spec.instance_type:
            raise ProviderError(f"{where}: CLOUD_PLUGINS_{self.entry.upper()}_IMAGE and "
                                f"_INSTANCE_TYPE must be set")
        if size > USER_DATA_MAX:
            raise ProviderError(f"{where}: user data is {size} bytes, EC2 allows {USER_DATA_MAX}")
        if count < 1:
            return []
        existing = TAG_REQUEST in tags and self._describe(
            {k: v for k, v in tags.items() if k != "Name"})
        if existing:  # a retry of a request that got through: its instances
            log.info("%s: request %s already launched", where, request_token)
            return existing
        all_tags = {"Name": f"condor-{request_token}", **tags}
        tag_list = [{"Key": k, "Value": str(v)} for k, v in all_tags.items()]
        request = dict(self.options, ImageId=spec.image, InstanceType=spec.instance_type,
                       MinCount=count, MaxCount=count, ClientToken=client_token(request_token),
                       TagSpecifications=[{"ResourceType": r, "Tags": tag_list}
                                          for r in ("instance", "volume")])
        dev, gib = self._root(spec.image)
        if dev and spec.disk_mb > gib * 1024:   # DISK applied: a bigger root volume
            request["BlockDeviceMappings"] = [{"DeviceName": dev, "Ebs": {
                "VolumeSize": -(-spec.disk_mb // 1024), "DeleteOnTermination": True}}]
        if user_data:
            request["UserData"] = user_data  # botocore base64-encodes it
        with self._api("RunInstances") as ec2:
            reply = ec2.run_instances(**request)
        out = [to_instance(i, self.entry, all_tags) for i in reply.get("Instances", [])]
        self._created.update((i.id, time.monotonic()) for i in out)
        return out

    def list(self, owner_tags: Mapping[str, str]) -> List[Instance]:
        return self._describe(owner_tags)

    def terminate(self, ids: Sequence[str]) -> None:
        ids = [i for i in dict.fromkeys(ids) if i]
        if not ids:
            return
        try:
            with self._api("TerminateInstances") as ec2:
                ec2.terminate_instances(InstanceIds=ids)
        except ProviderError as err:
            if getattr(err, "code", "") not in GONE:
                raise
            if len(ids) > 1:  # one unknown id fails the call: the others one by one
                for iid in ids:
                    self.terminate([iid])
            elif time.monotonic() - self._created.get(ids[0], -1e9) < 300:
                raise TransientError(f"ec2 entry {self.entry}: {ids[0]} not visible yet "
                                     "(EC2 is eventually consistent); will retry") from None

    def close(self) -> None:
        if self._ec2 is not None:
            self._ec2.close()
        self._ec2 = self._session = None
