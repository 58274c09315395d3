"""The ``openstack`` provider: instances are Nova servers, via python-novaclient and keystoneauth1.

Image and flavour come from the entry's ``IMAGE`` and ``INSTANCE_TYPE`` knobs (names or ids);
the rest from settings, knobs ``CLOUD_PLUGINS_<ENTRY>_<NAME>`` (an empty value counts as unset):

================= =============== ==============================================================
Setting           Default         Meaning
================= =============== ==============================================================
CLOUD             $OS_CLOUD       Cloud name in clouds.yaml ($OS_CLIENT_CONFIG_FILE, else the
                                  first of ./, ~/.config/openstack/, /etc/openstack/; secrets
                                  may sit in secure.yaml). Unset: the provisioner's OS_*
                                  environment (OS_AUTH_URL...). A knob never holds a secret.
REGION            (the cloud's)   Region; default region_name of the cloud, or OS_REGION_NAME.
NETWORK           (Nova's)        Network of the instances, name or id.
KEY_NAME          (none)          Nova key pair for ssh access.
SECURITY_GROUPS   (default)       Security group names, comma or space separated.
AVAILABILITY_ZONE (any)           Availability zone.
ENDPOINT_OVERRIDE (catalog)       Compute endpoint URL to use instead of the catalog's.
API_VERSION       2.1             Compute API microversion (2.37+: no NETWORK means "auto").
MAX_ATTEMPTS      3               Attempts per API call on connection errors, 409, 429, 5xx.
TIMEOUT           30              Seconds per HTTP request.
================= =============== ==============================================================

Credentials: keystoneauth1's ``password`` plugin, ``v3applicationcredential`` when an
application credential secret is given, ``token``, or the cloud's ``auth_type``
(OS_AUTH_TYPE); keystoneauth renews an expired token on the first 401.

Servers are named ``condor-<request token>`` and carry the tags as metadata (``/`` in keys
written ``:``, as Nova allows only letters, digits and ``-_:. ``; mapped back by ``list``).
A create first looks up its request token's servers (name filter, then metadata) and
returns them if any; a failed POST is never repeated blindly, each attempt looks up first.
Nova status BUILD is PENDING; ACTIVE, reboots, resizes and migrations are RUNNING; a server
being deleted is STOPPING, DELETED/SOFT_DELETED TERMINATED; SHUTOFF (a node that powered
itself off), SUSPENDED, PAUSED and SHELVED* are STOPPED; anything else (ERROR...) is ERROR
with Nova's fault as the reason.  The provisioner terminates STOPPED and ERROR servers.
Messages hold no password, secret, token or user data; keystoneauth's and novaclient's
DEBUG logs (request bodies) are capped at INFO unless a level was set.

novaclient vs openstacksdk: novaclient is frozen upstream (no new microversions), but it is
what Debian and EL ship (python3-novaclient), what the design names, and all this needs.
openstacksdk is the long-term API: a variant would be one more file with the same four
methods (``openstack.connect(cloud=...)`` reads clouds.yaml itself).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import yaml
from keystoneauth1 import exceptions as kex
from keystoneauth1 import loading
from keystoneauth1 import session as ks_session
from novaclient import API_MAX_VERSION, API_MIN_VERSION
from novaclient import api_versions
from novaclient import client as nova_client
from novaclient import exceptions as nex

from ..config import PARSERS, ConfigError
from .base import (TAG_ENTRY, TAG_POOL, TAG_REQUEST, AuthError, CapacityError, Instance,
                   InstanceSpec, InstanceState, Provider, ProviderError, QuotaError,
                   TransientError)

log = logging.getLogger(__name__)

USER_DATA_MAX = 65535  # base64 characters (Nova's limit)
PAGE_SIZE = 500
_P, _R, _T = InstanceState.PENDING, InstanceState.RUNNING, InstanceState.TERMINATED
STATES = {"BUILD": _P, "REBUILD": _P, "ACTIVE": _R, "REBOOT": _R, "HARD_REBOOT": _R,
          "MIGRATING": _R, "RESIZE": _R, "VERIFY_RESIZE": _R, "REVERT_RESIZE": _R,
          "PASSWORD": _R, "DELETED": _T, "SOFT_DELETED": _T,
          **dict.fromkeys(("SHUTOFF", "SUSPENDED", "PAUSED", "SHELVED", "SHELVED_OFFLOADED"),
                          InstanceState.STOPPED)}
CONFIG_DIRS = (".", "~/.config/openstack", "/etc/openstack")
ENV_AUTH = ("auth_url username user_id password project_name project_id user_domain_name "
            "user_domain_id project_domain_name project_domain_id domain_name domain_id "
            "application_credential_id application_credential_name "
            "application_credential_secret token system_scope").split()
SECRET_OPTIONS = ("password", "application_credential_secret", "token")
META_PREFIX = TAG_POOL.split("/")[0] + ":"   # "condor-plugins:"
_META_KEY = re.compile(r"[a-zA-Z0-9-_:. ]{1,255}\Z")
_ID = re.compile(r"\b[0-9a-f]{8}(?:-?[0-9a-f]{4}){3}-?[0-9a-f]{12}\b", re.I)
_SECRETISH = re.compile(r"[A-Za-z0-9/+=_-]{32,}|eyJ[\w.-]{16,}")  # long opaque strings, JWTs
_NAME_FILTER_OK = re.compile(r"[A-Za-z0-9_:-]+\Z")  # no regex metacharacters


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` on one line, short, without ``secrets`` or long opaque strings (tokens,
    base64), keeping ids (UUIDs) readable."""
    for secret in (s for s in secrets if s and len(s) >= 6):
        text = text.replace(secret, "[redacted]")
    ids: List[str] = []
    text = _ID.sub(lambda m: ids.append(m.group()) or f"\0{len(ids) - 1}\0", " ".join(text.split()))
    text = re.sub(r"\0(\d+)\0", lambda m: ids[int(m.group(1))], _SECRETISH.sub("[redacted]", text))
    return text if len(text) <= 200 else text[:197] + "..."


def classify(status: int, message: str) -> type:
    """The ProviderError class for an HTTP ``status`` with Nova's ``message``."""
    text = message.lower()
    if "quota" in text or status == 413:
        return QuotaError
    if any(w in text for w in ("no valid host", "not enough hosts", "insufficient", "capacity")):
        return CapacityError
    if status in (401, 403):
        return AuthError
    if status in (409, 429) or status >= 500:
        return TransientError
    return ProviderError


def to_instance(info: Mapping, entry: str) -> Instance:
    """An ``Instance`` from one server of GET /servers/detail."""
    tags = {k.replace(":", "/", 1) if k.startswith(META_PREFIX) else k: v
            for k, v in (info.get("metadata") or {}).items()}
    status = str(info.get("status") or "").upper()
    state = (InstanceState.STOPPING if info.get("OS-EXT-STS:task_state") == "deleting"
             else STATES.get(status, InstanceState.ERROR))
    reason = ""
    if state is InstanceState.STOPPED:
        reason = f"Nova status {status}"
    if state is InstanceState.ERROR:
        fault = (info.get("fault") or {}).get("message") or ""
        reason = scrub(f"Nova status {status or 'unknown'}" + (f": {fault}" if fault else ""))
    launched = None
    with contextlib.suppress(AttributeError, ValueError):
        created = datetime.fromisoformat(info.get("created", "").replace("Z", "+00:00"))
        launched = created.timestamp()
    address = next((a["addr"] for net in (info.get("addresses") or {}).values()
                    for a in net if a.get("addr")), "")
    return Instance(info["id"], tags.get(TAG_ENTRY, entry), state, launched, tags,
                    address=address, reason=reason)


def _config_file(names: Sequence[str], variable: str) -> Optional[Path]:
    if os.environ.get(variable):
        return Path(os.environ[variable])
    return next((p for d in CONFIG_DIRS for n in names
                 if (p := Path(d).expanduser() / n).is_file()), None)


class OpenStackProvider(Provider):
    """Instances are Nova servers; see the module docstring for the settings."""

    type_name = "openstack"
    retry_delay = 0.5   # seconds before the 2nd attempt; doubles after

    def __init__(self, entry: str, settings: Mapping[str, str]):
        super().__init__(entry, settings)
        s = {k: str(v).strip() for k, v in self.settings.items() if str(v).strip()}
        self.max_attempts = max(1, self._parse(s, "MAX_ATTEMPTS", "int", "3"))
        self.timeout = max(1.0, self._parse(s, "TIMEOUT", "float", "30"))
        self.api_version = s.get("API_VERSION", "2.1")
        if not (re.fullmatch(r"2\.\d+", self.api_version) and API_MIN_VERSION <=
                api_versions.APIVersion(self.api_version) <= API_MAX_VERSION):
            raise ConfigError(f"{self._knob('API_VERSION')} = {self.api_version!r}: expected a "
                              f"compute microversion {API_MIN_VERSION.get_string()} to "
                              f"{API_MAX_VERSION.get_string()}")
        self.network, self.key_name, self.zone, self.endpoint_override = (
            s.get(k) for k in ("NETWORK", "KEY_NAME", "AVAILABILITY_ZONE", "ENDPOINT_OVERRIDE"))
        groups = s.get("SECURITY_GROUPS")
        self.security_groups = list(PARSERS["list"](groups)) if groups else None
        cloud = s.get("CLOUD") or os.environ.get("OS_CLOUD")
        conf = self._cloud(cloud) if cloud else self._environment()
        self.source = (f"cloud {cloud!r} of {conf.pop('_file')}" if cloud
                       else "the provisioner's OS_* environment")
        self.region = s.get("REGION") or conf.get("region_name")
        self.interface = conf.get("interface") or "public"
        self.verify = conf.get("cacert") or conf.get("verify", True)
        auth = {k: str(v) for k, v in (conf.get("auth") or {}).items() if v not in (None, "")}
        self._secrets = [auth[k] for k in SECRET_OPTIONS if k in auth]
        self.auth = self._plugin(conf.get("auth_type"), auth)
        self._session = self._nova = None
        self._refs: Dict[tuple, str] = {}
        for logger in map(logging.getLogger, ("keystoneauth", "novaclient", "urllib3")):
            logger.setLevel(logger.level or logging.INFO)  # DEBUG logs bodies (user data)

    # ------------------------------------------------------------ configuration
    def _knob(self, name: str) -> str:
        return f"CLOUD_PLUGINS_{self.entry.upper()}_{name}"

    def _parse(self, s: Mapping[str, str], name: str, kind: str, default: str):
        try:
            return PARSERS[kind](s.get(name, default))
        except ValueError as err:
            raise ConfigError(f"{self._knob(name)} = {s[name]!r}: {err}") from None

    def _cloud(self, name: str) -> dict:
        where = f"{self._knob('CLOUD')} = {name!r}"
        path = _config_file(("clouds.yaml", "clouds.yml"), "OS_CLIENT_CONFIG_FILE")
        if path is None:
            raise ConfigError(f"{where}: no clouds.yaml ($OS_CLIENT_CONFIG_FILE, "
                              f"{', '.join(d + '/' for d in CONFIG_DIRS)})")
        clouds = self._yaml(path, where)
        if not isinstance(clouds.get(name), Mapping):
            raise ConfigError(f"{where}: no such cloud in {path} (clouds: "
                              f"{', '.join(sorted(map(str, clouds))) or 'none'})")
        conf = dict(clouds[name], _file=str(path))
        secure = _config_file(("secure.yaml", "secure.yml"), "OS_CLIENT_SECURE_FILE")
        if secure is not None and secure.is_file():   # secrets kept apart: merge the auth
            extra = self._yaml(secure, where).get(name) or {}
            conf["auth"] = {**(conf.get("auth") or {}), **(extra.get("auth") or {})}
        return conf

    @staticmethod
    def _yaml(path: Path, where: str) -> dict:
        try:
            with open(path, encoding="utf-8") as f:   # a stream: errors quote no file content
                clouds = (yaml.safe_load(f) or {}).get("clouds") or {}
        except (OSError, yaml.YAMLError, AttributeError) as err:
            mark = getattr(err, "problem_mark", None)
            raise ConfigError(f"{where}: cannot read {path}: {type(err).__name__}"
                              + (f" at line {mark.line + 1}" if mark else "")) from None
        return clouds if isinstance(clouds, dict) else {}

    def _environment(self) -> dict:
        env = os.environ
        if not env.get("OS_AUTH_URL"):
            raise ConfigError(f"openstack entry {self.entry}: no credentials: set "
                              f"{self._knob('CLOUD')} to a cloud of clouds.yaml, or OS_AUTH_URL "
                              "and the other OS_* variables in the provisioner's environment")
        auth = {k: env.get("OS_" + k.upper()) for k in ENV_AUTH}
        auth["project_name"] = auth["project_name"] or env.get("OS_TENANT_NAME")
        auth["project_id"] = auth["project_id"] or env.get("OS_TENANT_ID")
        return {"auth": auth, "auth_type": env.get("OS_AUTH_TYPE"), "cacert": env.get("OS_CACERT"),
                "region_name": env.get("OS_REGION_NAME"), "interface": env.get("OS_INTERFACE"),
                "verify": env.get("OS_INSECURE", "").lower() not in ("1", "true", "yes")}

    def _plugin(self, kind: Optional[str], auth: Mapping[str, str]):
        kind = kind or ("v3applicationcredential" if "application_credential_secret" in auth
                        else "token" if "token" in auth and "password" not in auth
                        else "password")
        if kind in ("password", "token") and auth.get("auth_url", "").rstrip("/").endswith("/v3"):
            kind = "v3" + kind   # no version discovery (which deadlocks on a 401)
        try:
            loader = loading.get_plugin_loader(kind)
            known = {opt.dest for opt in loader.get_options()}
            return loader.load_from_options(**{k: v for k, v in auth.items() if k in known})
        except (kex.NoMatchingPlugin, kex.MissingRequiredOptions) as err:
            missing = ", ".join(o.dest for o in getattr(err, "options", ()))
            raise ConfigError(f"openstack entry {self.entry}: {self.source}: auth type {kind!r}"
                              + (f" needs {missing}" if missing else " is unknown")
                              + f" (the cloud is named by {self._knob('CLOUD')})") from None

    # ------------------------------------------------------------ API calls
    def _client(self):
        if self._nova is None:
            self._session = ks_session.Session(auth=self.auth, verify=self.verify,
                                               timeout=self.timeout, app_name="condor-plugins")
            self._nova = nova_client.Client(
                self.api_version, session=self._session, region_name=self.region or None,
                endpoint_type=self.interface, endpoint_override=self.endpoint_override)
        return self._nova

    def _scrub(self, text: str) -> str:
        token = getattr(getattr(self.auth, "auth_ref", None), "auth_token", None)
        return scrub(text, [*self._secrets, token or ""])

    @contextlib.contextmanager
    def _api(self, op: str) -> Iterator:
        """Yield the client; map what the call raises to typed errors."""
        where = f"openstack entry {self.entry}: {op}"
        hint = f" (credentials of {self.source}; the cloud is named by {self._knob('CLOUD')})"
        try:
            yield self._client()
        except nex.ClientException as err:
            status, text = int(err.code or 0), self._scrub(str(err.message or ""))
            cls = classify(status, text)
            exc = cls(f"{where} failed: HTTP {status}: {text}{hint if cls is AuthError else ''}")
            exc.status = status
            raise exc from None
        except (kex.Unauthorized, kex.Forbidden, kex.AuthorizationFailure,
                kex.DiscoveryFailure) as err:
            raise AuthError(f"{where}: authentication failed: {self._scrub(str(err))}"
                            f"{hint}") from None
        except kex.EndpointNotFound:
            raise ProviderError(f"{where}: no {self.interface} compute endpoint for region "
                                f"{self.region!r} in the catalog of {self.source} (setting "
                                f"{self._knob('REGION')})") from None
        except kex.SSLError as err:
            raise ProviderError(f"{where}: TLS error: {self._scrub(str(err))}") from None
        except (kex.ConnectionError, kex.HttpServerError) as err:
            raise TransientError(f"{where}: cannot reach the cloud: "
                                 f"{self._scrub(str(err))}") from None
        except kex.ClientException as err:
            raise ProviderError(f"{where}: {self._scrub(str(err))}") from None

    def _call(self, op: str, fn):
        """``fn(nova)``, retried on transient errors: only for calls safe to repeat."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                with self._api(op) as nova:
                    return fn(nova)
            except TransientError:
                if attempt == self.max_attempts:
                    raise
                time.sleep(self.retry_delay * 2 ** (attempt - 1))

    def _ref(self, kind: str, value: str) -> str:
        """The id of an image, network or flavour given by name or id (cached)."""
        def lookup(nova) -> str:
            try:
                if kind == "image":
                    return value if _ID.fullmatch(value) else nova.glance.find_image(value).id
                if kind == "network":
                    return value if _ID.fullmatch(value) else nova.neutron.find_network(value).id
                with contextlib.suppress(nex.NotFound):
                    return nova.flavors.get(value).id
                return nova.flavors.find(name=value).id
            except nex.NoUniqueMatch:
                raise ProviderError(f"openstack entry {self.entry}: several {kind}s are named "
                                    f"{value!r}: give its id") from None
        if (kind, value) not in self._refs:
            self._refs[kind, value] = self._call(f"find {kind} {value!r}", lookup)
        return self._refs[kind, value]

    def _servers(self, match: Mapping[str, str], search: Optional[dict] = None) -> List[Instance]:
        out, marker = [], None
        while True:   # until an empty page: the cloud may cap pages below PAGE_SIZE
            page = self._call("list servers", lambda nova: nova.servers.list(
                detailed=True, search_opts=search, marker=marker, limit=PAGE_SIZE))
            if not page:
                return out
            found = [to_instance(server.to_dict(), self.entry) for server in page]
            out += [i for i in found if all(i.tags.get(k) == v for k, v in match.items())]
            marker = page[-1].id

    def create(self, spec: InstanceSpec, count: int, tags: Mapping[str, str],
               user_data: str, request_token: str) -> List[Instance]:
        where = f"openstack entry {self.entry}"
        if not spec.image or not spec.instance_type:
            raise ProviderError(f"{where}: {self._knob('IMAGE')} and _INSTANCE_TYPE must be set")
        size = len(base64.b64encode((user_data or "").encode()))
        if size > USER_DATA_MAX:
            raise ProviderError(f"{where}: user data is {size} characters in base64, Nova "
                                f"allows {USER_DATA_MAX}")
        tags = {TAG_REQUEST: request_token, **tags}
        meta = {k.replace("/", ":"): str(v) for k, v in tags.items()}
        bad = [k for k, v in meta.items() if not _META_KEY.match(k) or len(v) > 255]
        if bad:
            raise ProviderError(f"{where}: tag {bad[0]!r} is not valid Nova metadata "
                                "(key characters, or longer than 255)")
        if count < 1:
            return []
        name, mine = f"condor-{request_token}", {TAG_REQUEST: tags[TAG_REQUEST]}
        search = {"name": name} if _NAME_FILTER_OK.match(name) else None
        image, flavor = self._ref("image", spec.image), self._ref("flavor", spec.instance_type)
        nics = ([{"net-id": self._ref("network", self.network)}] if self.network else
                "auto" if api_versions.APIVersion(self.api_version) >= api_versions.APIVersion(
                    "2.37") else None)
        for attempt in range(1, self.max_attempts + 1):
            existing = self._servers(mine, search)
            if existing:   # a retry of a request that got through: its servers
                log.info("%s: request %s already launched", where, request_token)
                return existing
            try:
                with self._api("create server") as nova:
                    server = nova.servers.create(
                        name, image, flavor, meta=meta, userdata=user_data or None,
                        key_name=self.key_name, availability_zone=self.zone, nics=nics,
                        security_groups=self.security_groups, min_count=1, max_count=count)
                break
            except TransientError:
                if attempt == self.max_attempts:
                    raise
                time.sleep(self.retry_delay * 2 ** (attempt - 1))
            except ProviderError:
                self._refs.clear()   # an image or flavour may have been replaced
                raise
        return self._servers(mine, search) or [
            Instance(server.id, self.entry, InstanceState.PENDING, time.time(), tags)]

    def list(self, owner_tags: Mapping[str, str]) -> List[Instance]:
        return self._servers(owner_tags)

    def terminate(self, ids: Sequence[str]) -> None:
        first_error = None
        for server_id in dict.fromkeys(i for i in ids if i):
            try:
                self._call("delete server", lambda nova, sid=server_id: nova.servers.delete(sid))
            except ProviderError as err:
                if getattr(err, "status", 0) != 404:   # already gone: fine
                    first_error = first_error or err
        if first_error is not None:
            raise first_error

    def close(self) -> None:
        if self._session is not None:
            self._session.session.close()
        self._session = self._nova = None
