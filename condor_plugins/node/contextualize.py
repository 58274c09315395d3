"""Contextualisation: the cloud-init user-data (``#cloud-config``) of one worker VM.

``render_user_data(ctx)`` turns an ``InstanceContext`` into a standard
cloud-config document that, on first boot,

* writes ``/etc/cvmfs/default.local`` (CVMFS client) and, for a CMS site, a
  local SITECONF with ``JobConfig/site-local-config.xml`` (stage-out method and
  a pointer to the site's storage description);
* writes the worker fragment ``config.d/worker/50-cloud-worker.conf`` exactly
  as shipped, the per-instance values in ``60-cloud-instance.conf`` and the
  node's IDTOKEN (root-only, 0600) in ``/etc/condor/tokens.d``;
* writes the site's extra template files, if any;
* runs ``cvmfs_config setup``, then starts HTCondor.

The rest lives next to it (all re-exported here):

* ``context.py``: ``InstanceContext``, the paths on the VM, ``ContextError``
  and the checks;
* ``context_knobs.py``: the knob table ``KNOBS`` and ``knobs_markdown``; the
  generated reference is docs/knobs-contextualisation.md,
  ``python3 -m condor_plugins.node.contextualize``;
* ``context_config.py``: ``context_from_config(entry_cfg, param, instance_id,
  token)`` builds the context from those knobs;
* ``cloudconfig.py``: the hand-written YAML, and ``redact(user_data)``, which
  hides the token and every other secret for display;
* ``metadata_firewall.py``: the rules (and the bootcmd) that keep jobs from
  the cloud's metadata service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from ..config import PREFIX
from . import control, watchdog
from .cloudconfig import REDACTED, _content_lines, _q, redact
from .context import (CONTROL_TOKEN_DIR, CONTROL_TOKEN_FILE, CVMFS_LOCAL, DEFAULT_REPOSITORIES,
                      INSTANCE_CONF, SITECONF_BASE, TOKEN_FILE, WORKER_CONF,
                      CmsSettings, ContextError, CvmfsSettings, ExtraFile, InstanceContext,
                      _check_context)
from .context_config import context_from_config, entry_interruptible
from .context_knobs import KNOBS, ContextKnob, knobs_markdown
from .metadata_firewall import (METADATA_ADDRESSES, METADATA_CHAIN, PROTECT_METADATA_SCRIPT,
                                metadata_ruleset)

__all__ = [
    "KNOBS", "ContextKnob", "CvmfsSettings", "CmsSettings", "ExtraFile", "InstanceContext",
    "render_user_data", "context_from_config", "redact", "worker_fragment",
    "knobs_markdown", "REDACTED", "CVMFS_LOCAL", "SITECONF_BASE", "WORKER_CONF",
    "INSTANCE_CONF", "TOKEN_FILE", "DEFAULT_REPOSITORIES",
    # Importable from here too (most live in the modules next to this one).
    "ContextError", "CONTROL_TOKEN_DIR", "CONTROL_TOKEN_FILE", "entry_interruptible",
    "METADATA_ADDRESSES", "METADATA_CHAIN", "PROTECT_METADATA_SCRIPT", "metadata_ruleset",
    "INSTANCE_ID_CONF", "INSTANCE_ID_SCRIPT", "siteconf_dir",
]


# ------------------------------------------------------------------ files

def worker_fragment() -> bytes:
    """The shipped worker fragment, byte for byte."""
    from ..localpool import shipped_config_dir
    return (shipped_config_dir() / "worker" / "50-cloud-worker.conf").read_bytes()


def _cvmfs_local(ctx: InstanceContext) -> str:
    lines = ["# CVMFS client of this cloud worker (condor_plugins contextualisation).",
             f"CVMFS_REPOSITORIES='{','.join(ctx.cvmfs.repositories)}'",
             f"CVMFS_HTTP_PROXY='{ctx.cvmfs.http_proxy}'",
             f"CVMFS_QUOTA_LIMIT={ctx.cvmfs.quota_limit_mb}"]
    if ctx.cms.site:
        lines.append("# /cvmfs/cms.cern.ch/SITECONF/local -> the local SITECONF below.")
        lines.append(f"CMS_LOCAL_SITE='{siteconf_dir(ctx.cms.site)}'")
    return "\n".join(lines) + "\n"


def siteconf_dir(site: str) -> str:
    return f"{SITECONF_BASE}/{site}"


def _xml_attr(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _site_local_config(cms: CmsSettings) -> str:
    sd = cms.storage_description or f"/cvmfs/cms.cern.ch/SITECONF/{cms.site}/PhEDEx/storage.xml"
    if not sd.startswith("trivialcatalog_file:"):
        sd = "trivialcatalog_file:" + sd
    catalog = f"{sd}?protocol={cms.stageout_protocol}"
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<!-- Written by condor_plugins contextualisation for a cloud worker. -->",
        "<site-local-config>",
        f'  <site name="{_xml_attr(cms.site)}">',
        "    <local-stage-out>",
        f'      <command value="{_xml_attr(cms.stageout_command)}"/>',
        f'      <catalog url="{_xml_attr(catalog)}"/>',
        f'      <phedex-node value="{_xml_attr(cms.site)}"/>',
        "    </local-stage-out>",
        "  </site>",
        "</site-local-config>",
    ]) + "\n"


def _instance_conf(ctx: InstanceContext) -> str:
    values = [
        ("CENTRAL_MANAGER", ctx.central_manager), ("PROVIDER", ctx.provider),
        ("PLATFORM", ctx.platform), ("INSTANCE_ID", ctx.instance_id),
        ("REQUEST_ID", ctx.instance_id),
        ("INSTANCE_TYPE", ctx.instance_type), ("IMAGE", ctx.image),
        ("REGION", ctx.region), ("ZONE", ctx.zone),
        ("INTERRUPTIBLE", "True" if ctx.interruptible else "False"),
        ("PROVISIONER", ctx.provisioner), ("PROVIDER_ENTRY", ctx.entry),
        ("IDLE_SHUTDOWN", str(ctx.idle_shutdown)),
        ("SHUTDOWN_GRACE", str(ctx.shutdown_grace)),
        ("POWEROFF_SCRIPT", ctx.poweroff_script),
        ("CONTROL_PERIOD", str(ctx.control_period)), ("LEASE", str(ctx.lease)),
        ("MAX_LIFETIME", str(ctx.max_lifetime)), ("MAX_RETIRE_TIME", str(ctx.max_retire_time)),
    ]
    if ctx.ccb_address is not None:
        values.append(("CCB_ADDRESS", ctx.ccb_address))
    lines = ["# Per-instance values of this cloud worker (condor_plugins contextualisation);",
             "# they override the defaults in 50-cloud-worker.conf."]
    lines += [f"{PREFIX}{k} = {v}".rstrip() for k, v in values]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _File:
    path: str
    content: bytes
    permissions: str
    owner: str = "root:root"


def _files(ctx: InstanceContext) -> List[_File]:
    files = [_File(CVMFS_LOCAL, _cvmfs_local(ctx).encode(), "0644")]
    if ctx.cms.site:
        files.append(_File(f"{siteconf_dir(ctx.cms.site)}/JobConfig/site-local-config.xml",
                           _site_local_config(ctx.cms).encode(), "0644"))
    files += [_File(WORKER_CONF, worker_fragment(), "0644"),
              _File(INSTANCE_CONF, _instance_conf(ctx).encode(), "0644"),
              _File(TOKEN_FILE, (ctx.token + "\n").encode(), "0600"),
              _File(control.SCRIPT_PATH, control.SCRIPT.encode(), "0755")]
    if ctx.watchdog and ctx.poweroff_script:
        files.append(_File(watchdog.SCRIPT_PATH, watchdog.SCRIPT.encode(), "0755"))
    if ctx.control_token:
        files.append(_File(CONTROL_TOKEN_FILE, (ctx.control_token + "\n").encode(), "0600",
                           "condor:condor"))
    own = {f.path for f in files}
    for extra in ctx.extra_files:
        if extra.path in own:
            raise ContextError(f"extra file {extra.path}: contextualisation writes this file "
                               "itself")
        own.add(extra.path)
        files.append(_File(extra.path, extra.content, extra.permissions, extra.owner))
    return files


INSTANCE_ID_CONF = "/etc/condor/config.d/61-cloud-instance-id.conf"
INSTANCE_ID_SCRIPT = ("id=$(cloud-init query v1.instance_id 2>/dev/null) && [ -n \"$id\" ] && "
                      f"printf 'CLOUD_PLUGINS_INSTANCE_ID = %s\\n' \"$id\" > {INSTANCE_ID_CONF}"
                      " || true")


def render_user_data(ctx: InstanceContext) -> str:
    """The ``#cloud-config`` document of one instance (it contains the token)."""
    _check_context(ctx)
    out = ["#cloud-config",
           f"# condor_plugins worker {ctx.instance_id} (entry {ctx.entry}, "
           f"provisioner {ctx.provisioner})",
           "write_files:"]
    for f in _files(ctx):
        out += [f"  - path: {_q(f.path)}",
                f"    owner: {_q(f.owner)}",
                f"    permissions: {_q(f.permissions)}"]
        out += _content_lines(f.content, 4)
    # The image provides cvmfs and condor; nothing secret on a command line.
    # The cloud's own instance id (from the datasource) becomes CloudInstanceID;
    # without it the node keeps the provisioner's request id.
    if ctx.protect_metadata:  # bootcmd: early in every boot, before any service
        out += ["bootcmd:", f"  - [\"sh\", \"-c\", {_q(PROTECT_METADATA_SCRIPT)}]"]
    out += ["runcmd:"]
    if ctx.watchdog and ctx.poweroff_script:  # first: it covers HTCondor's start too
        start = (f"setsid {watchdog.SCRIPT_PATH} {ctx.watchdog} {ctx.poweroff_script} "
                 f"</dev/null >>{watchdog.LOG_PATH} 2>&1 &")
        out += [f"  - [\"sh\", \"-c\", {_q(start)}]"]
    out += [f"  - [\"sh\", \"-c\", {_q(INSTANCE_ID_SCRIPT)}]",
            "  - [\"cvmfs_config\", \"setup\"]",
            "  - [\"systemctl\", \"enable\", \"--now\", \"condor\"]"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(knobs_markdown(), end="")
