"""A small OpenStack cloud for tests: Keystone v3, Nova v2.1, and the Glance and Neutron
look-ups python-novaclient makes, as a real HTTP server on 127.0.0.1.

No maintained fake Nova exists, so this one speaks just enough of the API (response shapes
as in the OpenStack API reference) for the real novaclient + keystoneauth1 stack:

* ``GET /identity``, ``GET /identity/v3`` (version discovery), ``POST /identity/v3/auth/tokens``
  (password, application_credential and token methods; ``X-Subject-Token`` and a catalog);
* ``GET /compute[/v2.1]``, ``POST /servers`` (min/max_count, metadata, base64 user data, key,
  networks, security groups, zone, instance quota), ``GET /servers[/detail]`` (name regex,
  status and reservation_id filters; limit/marker paging, newest first),
  ``GET``/``DELETE /servers/{id}``, ``GET /flavors[/detail]``, ``GET /flavors/{id}``;
* ``GET /image/v2/images[?name=]``, ``GET /image/v2/images/{id}``,
  ``GET /networking/v2.0/networks[?name=]``.

Servers are BUILD for ``build_delay`` seconds, then ACTIVE; a deleted server is ACTIVE with
task_state ``deleting`` for ``delete_delay`` seconds, then gone (404), as in Nova.

Usage::

    with NovaEmulator(build_delay=0.2) as cloud:
        env = cloud.os_environ()           # OS_AUTH_URL, OS_USERNAME, OS_PASSWORD...
        cloud.fail(NovaEmulator.CREATE, 503)          # the next POST /servers fails
        cloud.over_quota()                             # ... or is over quota (403)
        cloud.expire_tokens()                          # every issued token gets 401
        cloud.set_error(server_id, "No valid host was found.")
        cloud.servers_with_user_data()   # [(id, status, metadata, user_data), ...]
        cloud.count(NovaEmulator.CREATE)               # POST /servers received so far
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

__all__ = ["NovaEmulator"]

UNAUTHORIZED = "The request you have made requires authentication."
METADATA_KEY = re.compile(r"[a-zA-Z0-9-_:. ]{1,255}\Z")  # Nova's schema
USER_DATA_MAX = 65535  # base64 characters
# Nova's fault names by HTTP status (others: computeFault)
FAULT_NAMES = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
               405: "badMethod", 409: "conflictingRequest", 413: "overLimit", 415: "badMediaType",
               429: "overLimit", 501: "notImplemented", 503: "serviceUnavailable"}
MAX_MICROVERSION = "2.51"   # below tags (2.52): those are tested on real Nova
_ID_AFTER = re.compile(r"(/(?:servers|flavors|images|networks))/(?!detail\b)[^/]+")


def _iso(when: float, fraction: bool = False) -> str:
    """Nova's "2024-05-01T10:00:00Z" or, with ``fraction``, Keystone's
    "2024-05-01T10:00:00.123456Z"."""
    return datetime.fromtimestamp(when, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ" if fraction else "%Y-%m-%dT%H:%M:%SZ")


def route_of(method: str, path: str) -> str:
    """``"GET /compute/v2.1/servers/{id}"`` for a request: the key of ``count``."""
    path = _ID_AFTER.sub(lambda m: m.group(1) + "/{id}", path.rstrip("/") or "/")
    return f"{method} {path}"


class HTTPError(Exception):
    def __init__(self, status: int, message: str, body: Optional[dict] = None, headers=None):
        super().__init__(message)
        self.status, self.message, self.body, self.headers = status, message, body, headers or {}


class NovaEmulator:
    """Keystone + Nova on ``http://127.0.0.1:<port>``; see the module docstring."""

    CREATE = "POST /compute/v2.1/servers"
    LIST = "GET /compute/v2.1/servers/detail"
    DELETE = "DELETE /compute/v2.1/servers/{id}"
    TOKENS = "POST /identity/v3/auth/tokens"

    def __init__(self, *, build_delay: float = 0.0, delete_delay: float = 0.0,
                 max_limit: int = 1000, quota_instances: Optional[int] = None,
                 region: str = "RegionOne", token_ttl: float = 3600.0,
                 username: str = "condor", password: Optional[str] = None,
                 project_name: str = "htc-burst"):
        self.build_delay, self.delete_delay = build_delay, delete_delay
        self.max_limit, self.quota_instances = max_limit, quota_instances
        self.region, self.token_ttl = region, token_ttl
        self.username, self.project_name, self.domain = username, project_name, "Default"
        self.password = password or "pw-" + secrets.token_urlsafe(24)
        self.user_id, self.project_id = uuid.uuid4().hex, uuid.uuid4().hex
        self.app_credential_id = uuid.uuid4().hex
        self.app_credential_name = "condor-provisioner"
        self.app_credential_secret = "ac-" + secrets.token_urlsafe(32)
        self.flavors = {fid: {"id": fid, "name": name, "vcpus": cpus, "ram": ram, "disk": disk}
                        for fid, name, cpus, ram, disk in [
                            ("1", "m1.tiny", 1, 512, 1), ("2", "m1.small", 1, 2048, 20),
                            ("3", "m1.medium", 2, 4096, 40), ("4", "m1.large", 4, 8192, 80),
                            ("c4m8", "worker.4c8g", 4, 8192, 40)]}
        self.images: Dict[str, str] = {}     # name -> id
        self.networks: Dict[str, str] = {}   # name -> id
        for name in ("cirros-0.6.2-x86_64-disk", "el9-condor-worker"):
            self.add_image(name)
        for name in ("private", "public"):
            self.add_network(name)
        self.keypairs = {"condor-admin"}
        self.security_groups = {"default", "condor-worker"}
        self.zones = {"nova"}
        self.requests: Counter = Counter()   # route -> requests received
        self.calls: List[Tuple[str, str, int]] = []   # (method, path?query, status)
        self._servers: Dict[str, dict] = {}
        self._tokens: Dict[str, dict] = {}
        self._faults: List[dict] = []
        self._seq = 0
        self.last_token = ""   # the newest token issued
        self._lock = threading.RLock()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self.base_url = self.auth_url = self.compute_url = ""

    # ------------------------------------------------------------ life cycle
    def start(self) -> "NovaEmulator":
        emulator = self

        class Handler(_Handler):
            cloud = emulator
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.auth_url = f"{self.base_url}/identity/v3"
        self.compute_url = f"{self.base_url}/compute/v2.1"
        threading.Thread(target=self._httpd.serve_forever, name="nova-emulator",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "NovaEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ test helpers
    def os_environ(self, application_credential: bool = False) -> Dict[str, str]:
        """``OS_*`` variables a client would need (password or application credential)."""
        env = {"OS_AUTH_URL": self.auth_url, "OS_REGION_NAME": self.region,
               "OS_IDENTITY_API_VERSION": "3", "OS_INTERFACE": "public"}
        if application_credential:
            env.update(OS_AUTH_TYPE="v3applicationcredential",
                       OS_APPLICATION_CREDENTIAL_ID=self.app_credential_id,
                       OS_APPLICATION_CREDENTIAL_SECRET=self.app_credential_secret)
        else:
            env.update(OS_USERNAME=self.username, OS_PASSWORD=self.password,
                       OS_PROJECT_NAME=self.project_name, OS_USER_DOMAIN_NAME=self.domain,
                       OS_PROJECT_DOMAIN_NAME=self.domain)
        return env

    def clouds_yaml(self, cloud: str = "testcloud", application_credential: bool = False) -> dict:
        """A ``clouds.yaml`` document (as a dict) with one cloud for this emulator."""
        if application_credential:
            auth = {"auth_url": self.auth_url,
                    "application_credential_id": self.app_credential_id,
                    "application_credential_secret": self.app_credential_secret}
        else:
            auth = {"auth_url": self.auth_url, "username": self.username,
                    "password": self.password, "project_name": self.project_name,
                    "user_domain_name": self.domain, "project_domain_name": self.domain}
        entry = {"auth": auth, "region_name": self.region, "interface": "public",
                 "identity_api_version": 3}
        if application_credential:
            entry["auth_type"] = "v3applicationcredential"
        return {"clouds": {cloud: entry}}

    def count(self, route: str) -> int:
        """Requests received for ``route``, e.g. ``NovaEmulator.CREATE``."""
        with self._lock:
            return self.requests[route]

    def fail(self, route: str, status: int, message: Optional[str] = None, *, times: int = 1,
             after: bool = False, body: Optional[dict] = None) -> None:
        """Answer the next ``times`` requests of ``route`` with ``status`` and a Nova error
        body (or ``body``). ``after``: carry the request out first, then answer the error
        (a response lost on the way back)."""
        message = message or {409: "Cannot 'create' instance while it is in task_state "
                              "spawning", 500: "Unexpected API Error. Please report this.",
                              503: "Service Unavailable"}.get(status, f"injected {status}")
        with self._lock:
            self._faults.append({"route": route, "status": status, "message": message,
                                 "times": times, "after": after, "body": body})

    def clear_faults(self) -> None:
        """Forget injected failures not yet used."""
        with self._lock:
            self._faults.clear()

    def over_quota(self, status: int = 403, resource: str = "instances",
                   times: int = 1) -> None:
        """The next create is refused as over quota: 403 (Nova today) or 413 (older)."""
        message = (f"Quota exceeded for {resource}: Requested 1, but already used 10 of 10 "
                   f"{resource}")
        body = {FAULT_NAMES[status]: {"code": status, "message": message}}
        if status == 413:
            body["overLimit"]["retryAfter"] = "0"
        self.fail(self.CREATE, status, message, times=times, body=body)

    def expire_tokens(self) -> None:
        """Every token issued so far is no longer valid: its next use gets 401."""
        with self._lock:
            for token in self._tokens.values():
                token["revoked"] = True

    def tokens_issued(self) -> int:
        with self._lock:
            return len(self._tokens)

    def set_error(self, server_id: str, message: str = "No valid host was found. There are "
                  "not enough hosts available.", code: int = 500) -> None:
        """Put a server into ERROR with a fault, as the scheduler or compute would."""
        with self._lock:
            server = self._servers[server_id]
            server.update(status="ERROR", vm_state="error", task_state=None, power_state=0)
            server["fault"] = {"code": code, "created": _iso(time.time()), "message": message,
                               "details": "Traceback (most recent call last): ..."}

    def set_status(self, server_id: str, status: str, task_state: Optional[str] = None) -> None:
        with self._lock:
            self._servers[server_id].update(status=status, task_state=task_state)

    def add_server(self, name: str, metadata: Optional[dict] = None,
                   project_id: Optional[str] = None) -> str:
        """A server made outside the tests' provider (other users, other projects)."""
        with self._lock:
            [server] = self._new_servers({"name": name, "metadata": metadata or {}}, 1,
                                         project_id or self.project_id, "r-seed")
            return server["id"]

    def add_image(self, name: str) -> str:
        self.images[name] = str(uuid.uuid4())
        return self.images[name]

    def add_network(self, name: str) -> str:
        self.networks[name] = str(uuid.uuid4())
        return self.networks[name]

    def server(self, server_id: str) -> dict:
        """The stored record of a server (a copy)."""
        with self._lock:
            server = self._servers[server_id]
            self._refresh(server)
            return dict(server)

    def servers_with_user_data(self) -> List[Tuple[str, str, dict, Optional[str]]]:
        """What a hypervisor would boot: (id, status, metadata, decoded user data), oldest
        first; deleted servers are left out."""
        with self._lock:
            out = []
            for server in sorted(self._servers.values(), key=lambda s: s["seq"]):
                if self._refresh(server):
                    data = server["user_data"]
                    out.append((server["id"], server["status"], dict(server["metadata"]),
                                base64.b64decode(data).decode() if data else None))
            return out

    # ------------------------------------------------------------ state
    def _refresh(self, server: dict) -> bool:
        """Advance ``server`` in time; False once it is gone."""
        now = time.time()
        if server["task_state"] == "deleting" and now >= server["deleted_at"] + self.delete_delay:
            self._servers.pop(server["id"], None)
            return False
        if server["status"] == "BUILD" and now >= server["created"] + self.build_delay:
            n = server["seq"]
            server.update(status="ACTIVE", vm_state="active", task_state=None, power_state=1,
                          launched_at=now, addresses={
                              name: [{"version": 4, "addr": f"10.0.{n // 250}.{n % 250 + 2}",
                                      "OS-EXT-IPS:type": "fixed",
                                      "OS-EXT-IPS-MAC:mac_addr": f"fa:16:3e:00:{n // 256:02x}:"
                                                                 f"{n % 256:02x}"}]
                              for name in server["network_names"]})
        return True

    def _new_servers(self, req: dict, count: int, project_id: str, reservation: str,
                     networks=(), security_groups=("default",)) -> List[dict]:
        out = []
        for i in range(count):
            self._seq += 1
            name = f"{req['name']}-{i + 1}" if count > 1 else req["name"]
            names = [n for n, nid in self.networks.items() if nid in networks] or ["private"]
            server = {"id": str(uuid.uuid4()), "name": name, "status": "BUILD",
                      "vm_state": "building", "task_state": "scheduling", "power_state": 0,
                      "created": time.time(), "seq": self._seq, "project_id": project_id,
                      "metadata": dict(req.get("metadata") or {}),
                      "user_data": req.get("user_data"), "image": req.get("imageRef", ""),
                      "flavor": req.get("flavorRef", "2"), "key_name": req.get("key_name"),
                      "availability_zone": req.get("availability_zone") or "nova",
                      "security_groups": list(security_groups), "network_names": names,
                      "reservation_id": reservation, "addresses": {}, "launched_at": None,
                      "fault": None, "deleted_at": None}
            self._servers[server["id"]] = server
            out.append(server)
        if self.build_delay <= 0:
            for server in out:
                self._refresh(server)
        return out

    def _view(self, server: dict, detailed: bool = True) -> dict:
        link = f"{self.compute_url}/servers/{server['id']}"
        links = [{"rel": "self", "href": link},
                 {"rel": "bookmark", "href": link.replace("/v2.1", "")}]
        if not detailed:
            return {"id": server["id"], "name": server["name"], "links": links}
        view = {
            "id": server["id"], "name": server["name"], "status": server["status"],
            "tenant_id": server["project_id"], "user_id": self.user_id,
            "metadata": dict(server["metadata"]), "hostId": "" if server["status"] == "BUILD"
            else uuid.uuid5(uuid.NAMESPACE_DNS, server["project_id"]).hex,
            "image": {"id": server["image"], "links": []} if server["image"] else "",
            "flavor": {"id": server["flavor"], "links": []},
            "created": _iso(server["created"]), "updated": _iso(time.time()),
            "addresses": server["addresses"], "accessIPv4": "", "accessIPv6": "",
            "links": links, "OS-DCF:diskConfig": "MANUAL", "progress": 0,
            "OS-EXT-AZ:availability_zone": server["availability_zone"], "config_drive": "",
            "key_name": server["key_name"],
            "OS-SRV-USG:launched_at": server["launched_at"]
            and _iso(server["launched_at"], fraction=True)[:-1],
            "OS-SRV-USG:terminated_at": None, "OS-EXT-STS:task_state": server["task_state"],
            "OS-EXT-STS:vm_state": server["vm_state"],
            "OS-EXT-STS:power_state": server["power_state"],
            "os-extended-volumes:volumes_attached": [],
            "security_groups": [{"name": g} for g in server["security_groups"]]}
        if server["fault"]:
            view["fault"] = dict(server["fault"])
        return view

    # ------------------------------------------------------------ HTTP
    def handle(self, method: str, url: str, headers, body: bytes):
        """(status, headers, body) for one request."""
        parts = urlsplit(url)
        path, query = parts.path.rstrip("/") or "/", parse_qs(parts.query)
        route = route_of(method, path)
        with self._lock:
            self.requests[route] += 1
            fault = next((f for f in self._faults if f["route"] == route), None)
            if fault:
                fault["times"] -= 1
                if fault["times"] <= 0:
                    self._faults.remove(fault)
        try:
            if fault and not fault["after"]:
                raise HTTPError(fault["status"], fault["message"], fault["body"])
            result = self._dispatch(method, path, query, headers, body)
            if fault:
                raise HTTPError(fault["status"], fault["message"], fault["body"])
        except HTTPError as err:
            result = self._error(path, err)
        with self._lock:
            self.calls.append((method, url, result[0]))
        return result

    def _error(self, path: str, err: HTTPError):
        if err.body is not None:
            body = err.body
        elif err.status == 401 or path.startswith("/identity"):
            title = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}.get(
                err.status, "Error")
            body = {"error": {"code": err.status, "title": title, "message": err.message}}
        else:
            body = {FAULT_NAMES.get(err.status, "computeFault"):
                    {"code": err.status, "message": err.message}}
        headers = dict(err.headers)
        if err.status == 401:
            headers["WWW-Authenticate"] = f'Keystone uri="{self.base_url}/identity"'
        return err.status, headers, body

    def _dispatch(self, method, path, query, headers, body):
        if path.startswith("/identity"):
            return self._keystone(method, path, body)
        if not path.startswith(("/compute", "/image", "/networking")):
            raise HTTPError(404, "Not Found")   # as the web server in front would
        project = self._authorize(headers.get("X-Auth-Token"))
        if path.startswith("/compute"):
            return self._nova(method, path[len("/compute"):], query, headers, body, project)
        if method == "GET" and path.startswith("/image/v2/images"):
            one = path.rsplit("/", 1)[1] if path != "/image/v2/images" else None
            found = [(n, i) for n, i in self.images.items()
                     if i == one or (one is None and query.get("name", [n])[0] == n)]
            images = [{"id": i, "name": n, "status": "active", "visibility": "public",
                       "disk_format": "qcow2", "container_format": "bare", "min_disk": 0,
                       "min_ram": 0, "size": 21430272, "self": f"/v2/images/{i}",
                       "file": f"/v2/images/{i}/file", "schema": "/v2/schemas/image"}
                      for n, i in found]
            if path != "/image/v2/images":
                if not images:
                    raise HTTPError(404, "No image found")
                return 200, {}, images[0]
            return 200, {}, {"images": images, "first": "/v2/images",
                             "schema": "/v2/schemas/images"}
        if method == "GET" and path == "/networking/v2.0/networks":
            nets = [{"id": i, "name": n, "status": "ACTIVE", "admin_state_up": True,
                     "shared": n == "public", "subnets": [], "tenant_id": project,
                     "project_id": project, "router:external": n == "public", "mtu": 1450}
                    for n, i in self.networks.items() if query.get("name", [n])[0] == n]
            return 200, {}, {"networks": nets}
        raise HTTPError(404, "The resource could not be found.")

    def _authorize(self, token_id: Optional[str]) -> str:
        with self._lock:
            token = self._tokens.get(token_id or "")
        if (token is None or token["revoked"] or token["expires"] < time.time()
                or not token["project"]):
            raise HTTPError(401, UNAUTHORIZED)
        return token["project"]

    # ------------------------------------------------------------ Keystone
    def _keystone(self, method, path, body):
        v3 = {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
              "links": [{"rel": "self", "href": f"{self.base_url}/identity/v3/"}],
              "media-types": [{"base": "application/json",
                               "type": "application/vnd.openstack.identity-v3+json"}]}
        if method == "GET" and path == "/identity":
            return 300, {}, {"versions": {"values": [v3]}}
        if method == "GET" and path == "/identity/v3":
            return 200, {}, {"version": v3}
        if method == "POST" and path == "/identity/v3/auth/tokens":
            return self._issue_token(json.loads(body or b"{}").get("auth") or {})
        raise HTTPError(404, "Could not find the requested resource.")

    def _issue_token(self, auth: dict):
        identity = auth.get("identity") or {}
        methods = identity.get("methods") or []
        domain = {"id": "default", "name": self.domain}
        ok, scoped = False, True
        if methods == ["password"]:
            user = (identity.get("password") or {}).get("user") or {}
            dom = user.get("domain") or {}
            ok = ((user.get("id") == self.user_id or (
                user.get("name") == self.username and (dom.get("name") == self.domain
                                                       or dom.get("id") == "default")))
                  and user.get("password") == self.password)
        elif methods == ["application_credential"]:
            cred = identity.get("application_credential") or {}
            ok = (cred.get("id") == self.app_credential_id
                  or cred.get("name") == self.app_credential_name) \
                and cred.get("secret") == self.app_credential_secret
        elif methods == ["token"]:
            old = self._tokens.get((identity.get("token") or {}).get("id") or "")
            ok = old is not None and not old["revoked"] and old["expires"] > time.time()
        if not ok:
            raise HTTPError(401, UNAUTHORIZED)
        scope = auth.get("scope") or {}
        if methods != ["application_credential"]:
            project = scope.get("project") or {}
            pdom = project.get("domain") or {}
            scoped = project.get("id") == self.project_id or (
                project.get("name") == self.project_name and
                (pdom.get("name") == self.domain or pdom.get("id") == "default"))
            if project and not scoped:
                raise HTTPError(401, UNAUTHORIZED)
        token_id = "gAAAAAB" + secrets.token_urlsafe(140)
        now = time.time()
        with self._lock:
            self.last_token = token_id
            self._tokens[token_id] = {"project": self.project_id if scoped else None,
                                      "expires": now + self.token_ttl, "revoked": False}
        token = {"methods": methods, "user": {"domain": domain, "id": self.user_id,
                                              "name": self.username,
                                              "password_expires_at": None},
                 "audit_ids": [secrets.token_urlsafe(16)],
                 "expires_at": _iso(now + self.token_ttl, fraction=True),
                 "issued_at": _iso(now, fraction=True)}
        if scoped:
            token.update(project={"domain": domain, "id": self.project_id,
                                  "name": self.project_name}, is_domain=False,
                         roles=[{"id": uuid.uuid4().hex, "name": "member"},
                                {"id": uuid.uuid4().hex, "name": "reader"}],
                         catalog=self._catalog())
        if methods == ["application_credential"]:
            token["application_credential"] = {"id": self.app_credential_id,
                                               "name": self.app_credential_name,
                                               "restricted": True}
        return 201, {"X-Subject-Token": token_id}, {"token": token}

    def _catalog(self) -> List[dict]:
        services = [("identity", "keystone", "/identity"), ("compute", "nova", "/compute/v2.1"),
                    ("image", "glance", "/image"), ("network", "neutron", "/networking")]
        return [{"id": uuid.uuid5(uuid.NAMESPACE_URL, path).hex, "type": kind, "name": name,
                 "endpoints": [{"id": uuid.uuid4().hex, "interface": interface,
                                "region": self.region, "region_id": self.region,
                                "url": self.base_url + path}
                               for interface in ("public", "internal")]}
                for kind, name, path in services]

    # ------------------------------------------------------------ Nova
    def _nova(self, method, path, query, headers, body, project):
        version = self._microversion(headers)
        extra = {"OpenStack-API-Version": f"compute {version}",
                 "X-OpenStack-Nova-API-Version": version, "Vary": "OpenStack-API-Version"}
        status, answer = self._nova_call(method, path, query, body, project, version)
        return status, extra, answer

    def _microversion(self, headers) -> str:
        wanted = (headers.get("OpenStack-API-Version") or "").replace("compute", "").strip() \
            or (headers.get("X-OpenStack-Nova-API-Version") or "2.1")
        if wanted == "latest":
            return MAX_MICROVERSION
        if not re.fullmatch(r"2\.\d+", wanted) or int(wanted[2:]) > int(MAX_MICROVERSION[2:]):
            raise HTTPError(406, f"Version {wanted} is not supported by the API. Minimum is "
                                 f"2.1 and maximum is {MAX_MICROVERSION}.")
        return wanted

    def _nova_call(self, method, path, query, body, project, version):
        if method == "GET" and path in ("", "/v2.1"):
            doc = {"id": "v2.1", "status": "CURRENT", "version": MAX_MICROVERSION,
                   "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
                   "links": [{"rel": "self", "href": self.compute_url + "/"}]}
            return (200, {"version": doc}) if path else (200, {"versions": [doc]})
        if not path.startswith("/v2.1/"):
            raise HTTPError(404, "The resource could not be found.")
        path = path[len("/v2.1"):]
        if path == "/servers" and method == "POST":
            return self._create(json.loads(body or b"{}"), project, version)
        if path in ("/servers", "/servers/detail") and method == "GET":
            return 200, self._list(query, project, path.endswith("detail"))
        match = re.fullmatch(r"/servers/([^/]+)", path)
        if match and method in ("GET", "DELETE"):
            with self._lock:
                server = self._servers.get(match.group(1))
                if (server is None or server["project_id"] != project
                        or not self._refresh(server)):
                    raise HTTPError(404, f"Instance {match.group(1)} could not be found.")
                if method == "GET":
                    return 200, {"server": self._view(server)}
                if server["task_state"] != "deleting":
                    server.update(task_state="deleting", deleted_at=time.time())
                    self._refresh(server)
                return 204, None
        if method == "GET" and path in ("/flavors", "/flavors/detail"):
            return 200, {"flavors": [self._flavor(f, path.endswith("detail"))
                                     for f in self.flavors.values()]}
        match = re.fullmatch(r"/flavors/([^/]+)", path)
        if method == "GET" and match:
            if match.group(1) not in self.flavors:
                raise HTTPError(404, f"Flavor {match.group(1)} could not be found.")
            return 200, {"flavor": self._flavor(self.flavors[match.group(1)], True)}
        raise HTTPError(404, "The resource could not be found.")

    def _flavor(self, flavor: dict, detailed: bool) -> dict:
        view = {"id": flavor["id"], "name": flavor["name"], "links": [
            {"rel": "self", "href": f"{self.compute_url}/flavors/{flavor['id']}"}]}
        if detailed:
            view.update(vcpus=flavor["vcpus"], ram=flavor["ram"], disk=flavor["disk"],
                        swap="", rxtx_factor=1.0, **{"OS-FLV-EXT-DATA:ephemeral": 0,
                                                     "OS-FLV-DISABLED:disabled": False,
                                                     "os-flavor-access:is_public": True})
        return view

    def _list(self, query, project, detailed) -> dict:
        def one(name):
            return (query.get(name) or [None])[0]
        limit = int(one("limit") or self.max_limit)
        if limit < 0:
            raise HTTPError(400, "Invalid input for query parameters limit.")
        limit = min(limit, self.max_limit)
        with self._lock:
            servers = [s for s in sorted(self._servers.values(), key=lambda s: -s["seq"])
                       if s["project_id"] == project and self._refresh(s)]
            if one("name"):
                servers = [s for s in servers if re.search(one("name"), s["name"])]
            for field in ("status", "reservation_id"):
                if one(field):
                    servers = [s for s in servers if s[field] == one(field)]
            marker = one("marker")
            if marker:
                ids = [s["id"] for s in servers]
                if marker not in ids:
                    raise HTTPError(400, f"marker [{marker}] not found")
                servers = servers[ids.index(marker) + 1:]
            page = servers[:limit]
            answer = {"servers": [self._view(s, detailed) for s in page]}
        if len(page) == limit and page:
            answer["servers_links"] = [{"rel": "next", "href": f"{self.compute_url}/servers"
                                        f"{'/detail' if detailed else ''}?limit={limit}"
                                        f"&marker={page[-1]['id']}"}]
        return answer

    def _create(self, body: dict, project: str, version: str):
        req = body.get("server")
        if not isinstance(req, dict):
            raise HTTPError(400, "Invalid input for field/attribute server.")
        name = req.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 255:
            raise HTTPError(400, f"Invalid input for field/attribute name. Value: {name}.")
        meta = req.get("metadata") or {}
        for key, value in meta.items():
            if not METADATA_KEY.match(key) or not isinstance(value, str) or len(value) > 255:
                raise HTTPError(400, f"Invalid input for field/attribute metadata. Value: "
                                     f"{meta}. Additional properties are not allowed "
                                     f"('{key}' was unexpected)")
        data = req.get("user_data")
        if data is not None:
            try:
                base64.b64decode(data, validate=True)
            except (binascii.Error, TypeError):
                raise HTTPError(400, "User data needs to be valid base 64.") from None
            if len(data) > USER_DATA_MAX:  # Nova echoes the value, as here
                raise HTTPError(400, f"Invalid input for field/attribute user_data. Value: "
                                     f"{data}. '{data}' is too long")
        if req.get("imageRef") not in self.images.values():
            raise HTTPError(400, "Can not find requested image")
        if req.get("flavorRef") not in self.flavors:
            raise HTTPError(400, f"Flavor {req.get('flavorRef')} could not be found.")
        if req.get("key_name") and req["key_name"] not in self.keypairs:
            raise HTTPError(400, "Invalid key_name provided.")
        if req.get("availability_zone") and req["availability_zone"] not in self.zones:
            raise HTTPError(400, "The requested availability zone is not available")
        groups = [g.get("name") for g in req.get("security_groups") or [{"name": "default"}]]
        for group in groups:
            if group not in self.security_groups:
                raise HTTPError(400, f"Security group {group} not found for project "
                                     f"{project}.")
        networks = req.get("networks")
        if networks is None and int(version[2:]) >= 37:
            raise HTTPError(400, "Invalid input for field/attribute server. Value: ... "
                                 "'networks' is a required property")
        net_ids = []
        if isinstance(networks, list):
            for net in networks:
                if net.get("uuid") not in self.networks.values():
                    raise HTTPError(400, f"Network {net.get('uuid')} could not be found.")
                net_ids.append(net["uuid"])
        low, high = int(req.get("min_count") or 1), int(req.get("max_count") or 0)
        high = max(high, low)
        with self._lock:
            count = high
            if self.quota_instances is not None:
                used = sum(1 for s in self._servers.values() if s["project_id"] == project
                           and self._refresh(s))
                if used + low > self.quota_instances:
                    raise HTTPError(403, f"Quota exceeded for instances: Requested {low}, but "
                                         f"already used {used} of {self.quota_instances} "
                                         f"instances")
                count = min(high, self.quota_instances - used)
            reservation = "r-" + secrets.token_hex(4)
            servers = self._new_servers(req, count, project, reservation, net_ids, groups)
        if req.get("return_reservation_id"):
            return 202, {"reservation_id": reservation}
        link = f"{self.compute_url}/servers/{servers[0]['id']}"
        return 202, {"server": {"id": servers[0]["id"], "links": [
            {"rel": "self", "href": link}, {"rel": "bookmark", "href": link}],
            "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": g} for g in groups],
            "adminPass": secrets.token_urlsafe(9)}}


class _Handler(BaseHTTPRequestHandler):
    cloud: NovaEmulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body are two writes: no 40 ms stalls

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, answer = self.cloud.handle(self.command, self.path, self.headers, body)
        data = b"" if answer is None else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        request_id = f"req-{uuid.uuid4()}"
        self.send_header("x-openstack-request-id", request_id)
        if self.path.startswith("/compute"):
            self.send_header("x-compute-request-id", request_id)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _serve

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass
