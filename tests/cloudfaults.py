"""Run the provisioner with EC2 faults injected on botocore's real code path.

    CP_TEST_FAULTS='{"errors": {...}, "kill_after": "RunInstances", ...}' \\
        python3 -m tests.cloudfaults [provisioner arguments]

Every EC2 client botocore creates gets event hooks:

* ``calls``: a file that receives one line per HTTP request (the operation);
* ``errors``: ``{"Operation": ["Code", http_status], ...}``: that operation is
  answered with an EC2 error document (botocore parses and retries it as it
  would AWS's answer);
* ``kill_after``: SIGKILL this process once that call has returned, before
  the provisioner can record the result; ``marker`` (a path) makes it happen
  once only (the file is created just before the kill);
* ``kill_after_request``: ``"METHOD /path-suffix"``, the same for an HTTP
  request made through keystoneauth (novaclient), e.g. ``"POST /servers"``;
  with ``calls``, every such request is recorded too (``METHOD /path``).

``CP_TEST_MODULE`` runs another module than the provisioner (e.g.
``condor_plugins.cli``, for ``condor_cloud plan``).
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
from xml.sax.saxutils import escape

from botocore.awsrequest import AWSResponse


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


def ec2_error(code: str, status: int, message: str = "injected by the test") -> AWSResponse:
    """An HTTP response as EC2 sends it for an error."""
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{code}</Code><Message>{escape(message)}</Message></Error></Errors>"
            "<RequestID>5f1c0e6a-0000-4000-8000-000000000000</RequestID></Response>")
    return AWSResponse("https://ec2.us-east-1.amazonaws.com/", status,
                       {"Content-Type": "text/xml;charset=UTF-8"}, _Raw(body.encode()))


def _kill_once(faults: dict) -> None:
    marker = faults.get("marker")
    if marker and os.path.exists(marker):
        return
    if marker:
        open(marker, "w").close()
    os.kill(os.getpid(), signal.SIGKILL)


def install_keystoneauth(faults: dict) -> None:
    from urllib.parse import urlsplit
    from keystoneauth1 import session
    method, _, suffix = (faults.get("kill_after_request") or "").partition(" ")
    request = session.Session.request

    def patched(self, url, verb, *args, **kwargs):
        response = request(self, url, verb, *args, **kwargs)
        if faults.get("calls"):
            with open(faults["calls"], "a") as f:
                f.write(f"{verb.upper()} {urlsplit(url).path}\n")
        if method and verb.upper() == method and url.rstrip("/").endswith(suffix):
            _kill_once(faults)
        return response
    session.Session.request = patched


def install(faults: dict) -> None:
    if faults.get("kill_after_request") or faults.get("calls"):
        try:
            install_keystoneauth(faults)
        except ImportError:  # no novaclient here: EC2 only
            pass
    import botocore.session
    create_client = botocore.session.Session.create_client

    def before_send(request, event_name, **_):
        op = event_name.rsplit(".", 1)[-1]
        if faults.get("calls"):
            with open(faults["calls"], "a") as f:
                f.write(op + "\n")
        error = (faults.get("errors") or {}).get(op)
        return ec2_error(error[0], int(error[1])) if error else None

    def after_call(event_name, **_):
        _kill_once(faults)

    def patched(self, service_name, *args, **kwargs):
        client = create_client(self, service_name, *args, **kwargs)
        if service_name == "ec2":
            client.meta.events.register("before-send.ec2.*", before_send)
            if faults.get("kill_after"):
                client.meta.events.register(f"after-call.ec2.{faults['kill_after']}", after_call)
        return client

    botocore.session.Session.create_client = patched


if __name__ == "__main__":
    install(json.loads(os.environ.get("CP_TEST_FAULTS") or "{}"))
    module = os.environ.get("CP_TEST_MODULE") or "condor_plugins.provisioning.provisioner"
    sys.argv = [module.rsplit(".", 1)[-1], *sys.argv[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
