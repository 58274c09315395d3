"""The ``openstack`` provider: Nova servers via python-novaclient and keystoneauth1.

Settings, credentials (clouds.yaml or OS_*, read by openstacksdk's loader) and what the servers
look like: docs/knobs-openstack.md.  A create looks its request up first: a retry never boots twice.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import time
from datetime import datetime
from typing import Dict, List, Mapping, Optional, Sequence

import yaml
from keystoneauth1 import exceptions as kex
from novaclient import API_MAX_VERSION, API_MIN_VERSION, api_versions
from novaclient import client as nova_client
from novaclient import exceptions as nex
from openstack import config as os_config, exceptions as os_exc

from ..config import PARSERS, ConfigError
from .base import (TAG_ENTRY, TAG_POOL, TAG_REQUEST, AuthError, CapacityError, Instance,
                   InstanceSpec, InstanceState, InstanceType, Provider, ProviderError,
                   QuotaError, TransientError, scrub)

log = logging.getLogger(__name__)

USER_DATA_MAX, PAGE_SIZE, AUTO_MAX = 65535, 500, api_versions.APIVersion("2.95")
_S = InstanceState
STATES = {status: state for state, names in (
    (_S.PENDING, "BUILD REBUILD"), (_S.TERMINATED, "DELETED SOFT_DELETED"),
    (_S.RUNNING, "ACTIVE REBOOT HARD_REBOOT MIGRATING RESIZE VERIFY_RESIZE REVERT_RESIZE PASSWORD"),
    (_S.STOPPED, "SHUTOFF SUSPENDED PAUSED SHELVED SHELVED_OFFLOADED")) for status in names.split()}
SECRETS = ("password", "application_credential_secret", "token")
META_PREFIX = TAG_POOL.split("/")[0] + ":"   # "condor-plugins:"
_META_KEY = re.compile(r"[a-zA-Z0-9-_:. ]{1,255}\Z")
_TAG = re.compile(r"[^,/]{1,60}\Z")   # what Nova accepts as a tag
_ID = re.compile(r"[0-9a-f]{8}(?:-?[0-9a-f]{4}){3}-?[0-9a-f]{12}\Z", re.I)


def classify(status: int, message: str) -> type:   # the ProviderError class of a Nova reply
    text = message.lower()
    return (QuotaError if "quota" in text or status == 413 else CapacityError if any(
        w in text for w in ("no valid host", "not enough hosts", "insufficient", "capacity"))
        else AuthError if status in (401, 403) else TransientError
        if status in (409, 429) or status >= 500 else ProviderError)


def nova_tags(tags: Mapping[str, str]) -> List[str]:   # name=value, those Nova can hold
    return [t for t in (f"{k.rsplit('/', 1)[-1]}={v}" for k, v in sorted(tags.items())) if _TAG.match(t)]


def to_instance(info: Mapping, entry: str) -> Instance:
    """An ``Instance`` from one server of GET /servers/detail."""
    tags = {k.replace(":", "/", 1) if k.startswith(META_PREFIX) else k: v
            for k, v in (info.get("metadata") or {}).items()}
    status = str(info.get("status") or "").upper()
    state = _S.STOPPING if info.get("OS-EXT-STS:task_state") == "deleting" else STATES.get(status, _S.ERROR)
    reason = "" if state not in (_S.ERROR, _S.STOPPED) else scrub(f"Nova status {status or 'unknown'}" + (
        f": {info['fault'].get('message')}" if info.get("fault") and state is _S.ERROR else ""))
    created = info.get("created")   # ISO 8601, "Z" for UTC
    launched = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp() if created else None
    return Instance(info["id"], tags.get(TAG_ENTRY, entry), state, launched, tags, reason=reason)


class OpenStackProvider(Provider):
    type_name = "openstack"
    retry_delay = 0.5   # seconds before the 2nd attempt; doubles after

    def __init__(self, entry: str, settings: Mapping[str, str]):
        super().__init__(entry, settings)
        s = {k: str(v).strip() for k, v in self.settings.items() if str(v).strip()}
        self.max_attempts, self.timeout = (max(1, self.setting("MAX_ATTEMPTS", "int", "3")),
                                           max(1.0, self.setting("TIMEOUT", "float", "30")))
        self.api_version = v = s.get("API_VERSION", "auto")
        if v != "auto" and not (re.fullmatch(r"2\.\d+", v) and API_MIN_VERSION
                                <= api_versions.APIVersion(v) <= API_MAX_VERSION):
            raise ConfigError(f"{self.knob('API_VERSION')} = {v!r}: expected auto or "
                              f"{API_MIN_VERSION.get_string()} to {API_MAX_VERSION.get_string()}")
        self.network, self.key_name, self.zone, groups = (s.get(k) for k in (
            "NETWORK", "KEY_NAME", "AVAILABILITY_ZONE", "SECURITY_GROUPS"))
        self.security_groups = list(PARSERS["list"](groups)) if groups else None
        self.conf, self.source = self._credentials(s.get("CLOUD") or os.environ.get("OS_CLOUD"), s.get("REGION"))
        self.region, self.interface = self.conf.region_name, self.conf.get_interface("compute")
        self.endpoint_override = s.get("ENDPOINT_OVERRIDE") or self.conf.get_endpoint("compute")
        self._secrets = [str(v) for k, v in (self.conf.config.get("auth") or {}).items() if k in SECRETS]
        self._nova, self._refs = None, {}
        for logger in map(logging.getLogger, ("keystoneauth", "novaclient", "urllib3")):
            logger.setLevel(logger.level or logging.INFO)  # DEBUG logs bodies (user data)

    def _credentials(self, cloud: Optional[str], region: Optional[str]):
        """clouds.yaml (+ secure.yaml) or OS_*, read as every OpenStack client does
        (its file lists copied: the loader inserts $OS_CLIENT_*_FILE into them)."""
        if not cloud and not os.environ.get("OS_AUTH_URL"):
            raise ConfigError(f"openstack entry {self.entry}: no credentials: set "
                              f"{self.knob('CLOUD')} to a cloud of clouds.yaml, or OS_AUTH_URL "
                              "and the other OS_* variables in the provisioner's environment")
        source = f"cloud {cloud!r}" if cloud else "the provisioner's OS_* environment"
        try:
            loader = os_config.OpenStackConfig(app_name="condor-plugins", config_files=list(
                os_config.loader.CONFIG_FILES), secure_files=list(os_config.loader.SECURE_FILES))
            conf = loader.get_one(cloud=cloud or None, region_name=region or None, api_timeout=self.timeout)
            conf.get_auth()
        except (os_exc.ConfigException, kex.NoMatchingPlugin, kex.MissingRequiredOptions,
                KeyError, OSError, yaml.YAMLError) as err:
            where = f"{self.knob('CLOUD')} = {cloud!r}" if cloud else source
            raise ConfigError(f"openstack entry {self.entry}: {where}: {type(err).__name__}: {scrub(str(err))}") from None
        return conf, source + (f" of {loader.config_filename}" if cloud else "")

    def _call(self, op: str, fn):
        """``fn(nova)`` with typed errors; transient ones retried."""
        where = f"openstack entry {self.entry}: {op}"
        hint = f" (credentials of {self.source}; the cloud is named by {self.knob('CLOUD')})"
        token = getattr(getattr(self.conf.get_auth(), "auth_ref", None), "auth_token", None)
        clean = lambda err: scrub(str(err), [*self._secrets, token or ""])  # noqa: E731
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn(self._client())
            except nex.ClientException as err:
                status, text = int(err.code or 0), clean(err.message or "")
                cls = classify(status, text)
                exc = cls(f"{where} failed: HTTP {status}: {text}{hint if cls is AuthError else ''}")
                exc.status = status
            except (kex.Unauthorized, kex.Forbidden, kex.AuthorizationFailure, kex.DiscoveryFailure) as err:
                exc = AuthError(f"{where}: authentication failed: {clean(err)}{hint}")
            except kex.EndpointNotFound:
                exc = ProviderError(f"{where}: no {self.interface} compute endpoint for region "
                                    f"{self.region!r} in the catalog of {self.source} ({self.knob('REGION')})")
            except (kex.ConnectionError, kex.HttpServerError) as err:
                exc = TransientError(f"{where}: cannot reach the cloud: {clean(err)}")
            except kex.ClientException as err:
                exc = ProviderError(f"{where}: {clean(err)}")
            if not isinstance(exc, TransientError) or attempt == self.max_attempts:
                raise exc
            time.sleep(self.retry_delay * 2 ** (attempt - 1))

    def _client(self):
        if self._nova is None:
            auto = self.api_version == "auto"
            nova = nova_client.Client("2.1" if auto else self.api_version,
                                      session=self.conf.get_session(), region_name=self.region,
                                      endpoint_type=self.interface or "public",
                                      endpoint_override=self.endpoint_override)
            if auto:   # the highest both speak, up to AUTO_MAX (docs/knobs-openstack.md)
                nova.api_version = min(AUTO_MAX, api_versions.discover_version(
                    nova, api_versions.APIVersion("2.latest")))
            self._nova = nova
        return self._nova

    def _since(self, version: str) -> bool:   # tags: filters 2.26, at boot 2.52 (so ours have them)
        return self._call("version", lambda nova: nova.api_version >= api_versions.APIVersion(version))

    def _ref(self, kind: str, value: str) -> str:
        """The id of an image, network or flavour given by name or id (cached)."""
        def lookup(nova) -> str:
            try:
                if kind != "flavor":
                    return value if _ID.match(value) else (
                        nova.glance.find_image if kind == "image" else nova.neutron.find_network)(value).id
                with contextlib.suppress(nex.NotFound):
                    return nova.flavors.get(value).id
                return nova.flavors.find(name=value).id
            except nex.NoUniqueMatch:
                raise ProviderError(f"openstack entry {self.entry}: several {kind}s named {value!r}") from None
        return self._refs.get((kind, value)) or self._refs.setdefault(
            (kind, value), self._call(f"find {kind} {value!r}", lookup))

    def describe(self, spec: InstanceSpec) -> Optional[InstanceType]:   # the flavor (disk 0: unsaid)
        f = self._call("show flavor", lambda n, i=self._ref("flavor", spec.instance_type): n.flavors.get(i))
        return InstanceType(spec.instance_type, int(f.vcpus or 0), int(f.ram or 0), int(f.disk or 0) * 1024)

    def list(self, match: Mapping[str, str], name: str = "^condor-") -> List[Instance]:
        """Ours: Nova filters by ``name`` (a regex) and from 2.52 by tags (plus untagged
        servers of older versions), then metadata here.  Lists omit faults: GET those."""
        tags = ",".join(nova_tags(match))
        out: Dict[str, Instance] = {}
        for search in ([{"tags": tags}, {"name": name, "not-tags-any": tags}]
                       if tags and self._since("2.52") else [{"name": name}]):
            marker = None
            while True:   # until an empty page: the cloud may cap pages below PAGE_SIZE
                page = self._call("list servers", lambda nova: nova.servers.list(
                    detailed=True, search_opts=search, marker=marker, limit=PAGE_SIZE))
                for info in (server.to_dict() for server in page):
                    if info.get("status") == "ERROR" and not info.get("fault"):
                        with contextlib.suppress(ProviderError):   # gone since: as listed
                            info = self._call("show server", lambda n, i=info["id"]:
                                              n.servers.get(i)).to_dict()
                    inst = to_instance(info, self.entry)
                    if all(inst.tags.get(k) == v for k, v in match.items()):
                        out[inst.id] = inst
                if not page:
                    break
                marker = page[-1].id
        return list(out.values())

    def create(self, spec: InstanceSpec, count: int, tags: Mapping[str, str],
               user_data: str, request_token: str) -> List[Instance]:
        tags = {TAG_REQUEST: request_token, **tags}
        meta = {k.replace("/", ":"): str(v) for k, v in tags.items()}
        size = len(base64.b64encode((user_data or "").encode()))
        bad = [k for k, v in meta.items() if not _META_KEY.match(k) or len(v) > 255]
        problem = (f"{self.knob('IMAGE')} and _INSTANCE_TYPE must be set"
                   if not (spec.image and spec.instance_type) else
                   f"tag {bad[0]!r} is not valid Nova metadata" if bad else
                   f"user data is {size} characters in base64, Nova allows {USER_DATA_MAX}"
                   if size > USER_DATA_MAX else "")
        if problem:
            raise ProviderError(f"openstack entry {self.entry}: {problem}")
        if count < 1:
            return []
        image, flavor = self._ref("image", spec.image), self._ref("flavor", spec.instance_type)
        nics = ([{"net-id": self._ref("network", self.network)}] if self.network not in
                (None, "none", "auto") else (self.network or "auto") if self._since("2.37") else None)
        extra = {"tags": nova_tags(tags)} if self._since("2.52") else {}
        def boot(nova):   # again on a transient error: after a lookup, never twice
            return self._request(request_token) or nova.servers.create(
                f"condor-{request_token}", image, flavor, meta=meta, userdata=user_data or None,
                key_name=self.key_name, availability_zone=self.zone, nics=nics,
                security_groups=self.security_groups, min_count=1, max_count=count, **extra)
        try:
            server = self._call("create server", boot)
        except ProviderError:
            self._refs.clear()   # an image or flavour may have been replaced
            raise
        if isinstance(server, list):   # a retry of a request that got through: its servers
            return server
        return self._request(request_token) or [
            Instance(server.id, self.entry, _S.PENDING, time.time(), tags)]

    def _request(self, token: str) -> List[Instance]:   # named condor-<token>[-N]
        return self.list({TAG_REQUEST: token}, f"^condor-{re.escape(token)}(-[0-9]+)?$")

    def terminate(self, ids: Sequence[str]) -> None:
        errors = []
        for sid in dict.fromkeys(i for i in ids if i):
            try:
                self._call("delete server", lambda nova, sid=sid: nova.servers.delete(sid))
            except ProviderError as err:   # a 404 is gone already
                errors += [] if getattr(err, "status", 0) == 404 else [err]
        if errors:
            raise errors[0]

    def close(self) -> None:   # the session's connections (it reconnects when used)
        if self._nova is not None:
            self.conf.get_session().session.close()
            self._nova = None
