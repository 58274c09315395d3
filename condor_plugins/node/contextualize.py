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

``context_from_config(entry_cfg, param, instance_id, token)`` builds the
context from HTCondor knobs (table ``KNOBS`` below; the generated reference is
docs/knobs-contextualisation.md, ``python3 -m condor_plugins.node.contextualize``).
``redact(user_data)`` hides the token and every other secret for display.

The YAML is written by hand (no PyYAML dependency on the provisioner host): a
small fixed layout where every scalar is a double-quoted string with escapes,
and file contents are literal blocks with an explicit indentation indicator,
or base64 when they are not printable UTF-8 text.  The tests parse it back
with PyYAML (what cloud-init itself uses) and validate it with
``cloud-init schema``.
"""

from __future__ import annotations

import base64
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import List, Mapping, Optional, Tuple

from ..config import PREFIX, PARSERS, ConfigError
from . import control, watchdog

__all__ = [
    "KNOBS", "ContextKnob", "CvmfsSettings", "CmsSettings", "ExtraFile", "InstanceContext",
    "render_user_data", "context_from_config", "redact", "worker_fragment",
    "knobs_markdown", "REDACTED", "CVMFS_LOCAL", "SITECONF_BASE", "WORKER_CONF",
    "INSTANCE_CONF", "TOKEN_FILE", "DEFAULT_REPOSITORIES",
]

REDACTED = "<redacted>"

# Paths on the VM.
CVMFS_LOCAL = "/etc/cvmfs/default.local"
# The local SITECONF lives under /etc/cvmfs/SITECONF/<site>: CMS documents
# /etc/cvmfs/SITECONF as the place for a site's local copy of its SITECONF
# section (CMS pilots bind it into their Singularity/Apptainer containers), and
# the directory between SITECONF and JobConfig names the site.  CMS_LOCAL_SITE
# in default.local then points /cvmfs/cms.cern.ch/SITECONF/local at that
# directory (CMS_LOCAL_SITE may be a site name or an absolute path), so jobs
# read $CMS_PATH/SITECONF/local/JobConfig/site-local-config.xml as usual.
SITECONF_BASE = "/etc/cvmfs/SITECONF"
WORKER_CONF = "/etc/condor/config.d/50-cloud-worker.conf"
INSTANCE_CONF = "/etc/condor/config.d/60-cloud-instance.conf"
# SEC_TOKEN_SYSTEM_DIRECTORY's default; the worker fragment leaves it alone.
TOKEN_FILE = "/etc/condor/tokens.d/cloud-worker"
#: A READ-only token for the node-control script, which STARTD_CRON runs as the
#: condor user: the worker token is root's alone.
CONTROL_TOKEN_DIR = "/etc/condor/cloud-control.d"
CONTROL_TOKEN_FILE = CONTROL_TOKEN_DIR + "/cloud-control"

DEFAULT_REPOSITORIES = ("cms.cern.ch", "oasis.opensciencegrid.org", "grid.cern.ch")


class ContextError(ConfigError):
    """A knob or a context field has a bad value; the message names it."""


# ------------------------------------------------------------------ knobs

@dataclass(frozen=True)
class ContextKnob:
    name: str            # without prefix and entry
    default: str         # as written in a config file
    type: str            # a key of config.PARSERS
    doc: str
    global_fallback: bool = True   # False: only CLOUD_PLUGINS_<ENTRY>_<NAME>


#: Per-entry contextualisation knobs, read as ``CLOUD_PLUGINS_<ENTRY>_<NAME>``,
#: then (if global_fallback) ``CLOUD_PLUGINS_<NAME>``, then the default.  They
#: are unknown to condor_plugins.config.KNOBS, so providers see them among their
#: settings too (one REGION knob serves the provider and the node's ad).
KNOBS: Tuple[ContextKnob, ...] = (
    ContextKnob("CVMFS_REPOSITORIES", ",".join(DEFAULT_REPOSITORIES), "list",
                "CVMFS repositories mounted on the VM (`CVMFS_REPOSITORIES`), comma or "
                "space separated."),
    ContextKnob("CVMFS_HTTP_PROXY", "DIRECT", "str",
                "`CVMFS_HTTP_PROXY` of the VM: `DIRECT`, or proxies such as "
                "`http://squid1:3128|http://squid2:3128` (`|` balances, `;` fails over). "
                "Use the site's squids for more than a handful of VMs."),
    ContextKnob("CVMFS_QUOTA_LIMIT", "20000", "int",
                "CVMFS cache size on the VM, MB (`CVMFS_QUOTA_LIMIT`); at least 1000."),
    ContextKnob("CMS_LOCAL_SITE", "", "str",
                "CMS site name (e.g. `T2_XX_Example`). Set: a local SITECONF is written "
                f"to `{SITECONF_BASE}/<site>/JobConfig/site-local-config.xml` and "
                "`CMS_LOCAL_SITE` in default.local points "
                "`/cvmfs/cms.cern.ch/SITECONF/local` at it. Empty: no SITECONF, no "
                "`CMS_LOCAL_SITE`."),
    ContextKnob("STAGEOUT_PROTOCOL", "SRMv2", "str",
                "Stage-out protocol of site-local-config.xml: the protocol name in the "
                "storage description (names are case-sensitive there)."),
    ContextKnob("STAGEOUT_COMMAND", "gfal2", "str",
                "Stage-out command (WMCore implementation name) of site-local-config.xml."),
    ContextKnob("STORAGE_DESCRIPTION", "", "str",
                "The site's storage description (trivial file catalogue) that "
                "site-local-config.xml points to: an absolute path on the VM, optionally "
                "with the `trivialcatalog_file:` prefix. Empty: "
                "`/cvmfs/cms.cern.ch/SITECONF/<site>/PhEDEx/storage.xml`."),
    ContextKnob("USER_DATA_TEMPLATE_DIR", "", "str",
                "Directory on the provisioner host whose files are added to the VM, at the "
                "same path below `/` (`DIR/etc/x.conf` becomes `/etc/x.conf`), owned by "
                "root with the file's permission bits. Regular files only; a file may not "
                "replace one that contextualisation writes itself. Empty: none."),
    ContextKnob("CENTRAL_MANAGER", "", "str",
                "host[:port] by which the VMs reach the central manager (its public name "
                "if the VMs are outside the site). Empty: the value of `COLLECTOR_HOST`.",
                False),
    ContextKnob("PLATFORM", "", "str",
                "→ `CloudPlatform` of the nodes. Empty: the entry's provider type.", False),
    ContextKnob("REGION", "unknown", "str", "→ `CloudRegion` of the nodes (also a setting "
                "of providers that need a region).", False),
    ContextKnob("ZONE", "unknown", "str", "→ `CloudZone` of the nodes.", False),
    ContextKnob("INTERRUPTIBLE", "false", "bool",
                "→ `CloudInterruptible`: the entry's VMs may be preempted; unset, "
                "the entry's `SPOT` setting decides (false if it has none).", False),
    ContextKnob("IDLE_SHUTDOWN", "1200", "duration",
                "A node unclaimed this long shuts itself down and powers off "
                "(`CLOUD_PLUGINS_IDLE_SHUTDOWN` on the node); at least 60 s. A safety net "
                "behind the provisioner's own idle drain.", False),
    ContextKnob("SHUTDOWN_GRACE", "60", "duration",
                "`CLOUD_PLUGINS_SHUTDOWN_GRACE` on the node.", False),
    ContextKnob("POWEROFF_SCRIPT", "/sbin/poweroff", "str",
                "Run on the node when HTCondor exits after an idle shutdown "
                "(`CLOUD_PLUGINS_POWEROFF_SCRIPT`). `none`: just stop HTCondor.", False),
    ContextKnob("CONTROL_PERIOD", "60", "duration",
                "How often the node reads the provisioner's ad for retire requests and "
                "the lease (`STARTD_CRON`, `CLOUD_PLUGINS_CONTROL_PERIOD`); at least 1 s.",
                False),
    ContextKnob("LEASE", "1800", "duration",
                "A node that has not seen the provisioner's ad renewed for this long "
                "retires by itself (no new job, running jobs finish, power-off): a dead "
                "provisioner leaves nothing running. At least 3 cycles.", True),
    ContextKnob("MAX_LIFETIME", "", "duration",
                "The node retires by itself this long after its startd started. Empty: "
                "the worker token's lifetime (`CLOUD_PLUGINS_WORKER_TOKEN_LIFETIME`), "
                "which it may not exceed.", True),
    ContextKnob("MAX_RETIRE_TIME", "86400", "duration",
                "Once a node retires, how long its running jobs may take to finish before "
                "they are vacated (`MAXJOBRETIREMENTTIME` on the node).", True),
    ContextKnob("PROTECT_METADATA", "true", "bool",
                "Firewall the cloud's metadata service (169.254.169.254, and over IPv6 "
                "fd00:ec2::254 and fe80::a9fe:a9fe; it serves the user data and so the "
                "node's token) from every process but root's and the condor user's (node "
                "control reads spot notices there), and from all forwarded traffic "
                "(containers on a bridge), so jobs cannot read it. Needs iptables (and "
                "ip6tables) on the image.", True),
    ContextKnob("WATCHDOG", "900", "duration",
                "The VM powers itself off (`POWEROFF_SCRIPT`) when `condor_master` has "
                "not run for this long, HTCondor or not: a VM whose HTCondor never starts, "
                "or died, is not billed for ever. A loop started by cloud-init; at least "
                "10 s, well above the time HTCondor takes to start. `0`: no watchdog (nor "
                "with `POWEROFF_SCRIPT = none`).", True),
    ContextKnob("CCB_ADDRESS", "", "str",
                "CCB broker of the nodes. Empty: the central manager (NAT-safe); `none`: "
                "no CCB (VMs with addresses the schedds can reach).", False),
)

_KNOB = {k.name: k for k in KNOBS}


def _duration(param: Mapping[str, str], name: str, default: str) -> int:
    text = str(param.get(name) or "").strip() or default
    try:
        return int(PARSERS["duration"](text))
    except ValueError as err:
        raise ContextError(f"{name} = {text!r}: {err}") from None


def _read(param: Mapping[str, str], entry: str, knob: ContextKnob) -> Tuple[str, str]:
    """(knob name read, text); the default's name is 'default of <name>'."""
    names = [f"{PREFIX}{entry.upper()}_{knob.name}"]
    if knob.global_fallback:
        names.append(PREFIX + knob.name)
    for name in names:
        value = param.get(name)
        if value is not None and str(value).strip():
            return name, str(value).strip()
    return f"default of {names[0]}", knob.default


def _knob(param: Mapping[str, str], entry: str, name: str):
    """(knob name, parsed value)."""
    knob = _KNOB[name]
    where, text = _read(param, entry, knob)
    try:
        return where, PARSERS[knob.type](text)
    except ValueError as err:
        raise ContextError(f"{where} = {text!r}: {err}") from None


# ------------------------------------------------------------------ context

@dataclass(frozen=True)
class CvmfsSettings:
    repositories: Tuple[str, ...] = DEFAULT_REPOSITORIES
    http_proxy: str = "DIRECT"
    quota_limit_mb: int = 20000


@dataclass(frozen=True)
class CmsSettings:
    #: CMS site name; empty: no SITECONF and no CMS_LOCAL_SITE.
    site: str = ""
    stageout_protocol: str = "SRMv2"
    stageout_command: str = "gfal2"
    #: Path (or trivialcatalog_file: URL) of the storage description; empty:
    #: the site's storage.xml in the CMS CVMFS repository.
    storage_description: str = ""


@dataclass(frozen=True)
class ExtraFile:
    path: str                  # absolute, on the VM
    content: bytes = field(repr=False)
    permissions: str = "0644"  # octal string
    owner: str = "root:root"


@dataclass(frozen=True)
class InstanceContext:
    """Everything one VM needs; values are checked by ``render_user_data``."""
    central_manager: str
    provider: str
    instance_id: str
    token: str = field(repr=False)   # never in reprs, logs or tracebacks
    platform: str = "unknown"
    #: READ-only token for the control script (empty: the script has none).
    control_token: str = field(default="", repr=False)
    instance_type: str = "unknown"
    image: str = "unknown"
    region: str = "unknown"
    zone: str = "unknown"
    interruptible: bool = False
    provisioner: str = "unknown"
    entry: str = "unknown"
    idle_shutdown: int = 1200
    shutdown_grace: int = 60
    #: Empty: no power-off, HTCondor just stops.
    poweroff_script: str = "/sbin/poweroff"
    control_period: int = 60
    lease: int = 1800
    max_lifetime: int = 7 * 86400
    max_retire_time: int = 86400
    #: Seconds without condor_master before the VM powers off (0: no watchdog).
    watchdog: int = 900
    #: Firewall the metadata service (it serves the token) from non-root processes.
    protect_metadata: bool = True
    #: None: the worker fragment's default (the central manager); empty: no CCB.
    ccb_address: Optional[str] = None
    cvmfs: CvmfsSettings = field(default_factory=CvmfsSettings)
    cms: CmsSettings = field(default_factory=CmsSettings)
    extra_files: Tuple[ExtraFile, ...] = ()


# ------------------------------------------------------------------ checks

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_HOSTPORT = re.compile(r"[A-Za-z0-9\[][A-Za-z0-9._:\[\]?=&,/-]*\Z")
_REPO = re.compile(r"[a-z0-9][a-z0-9-]*(\.[a-z0-9-]+)+\Z")
_PROXY = re.compile(r"[A-Za-z0-9._:/;|@-]+\Z")
_CMS_SITE = re.compile(r"T[0-9]_[A-Z]{2}_[A-Za-z0-9_-]+\Z")
_PATH = re.compile(r"/[A-Za-z0-9._/+@-]*\Z")
# An IDTOKEN is a JWT: three base64url parts, the header starting '{"'.
_TOKEN = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\Z")
# A config value that HTCondor writes verbatim into a ClassAd string.
_ADSTRING = re.compile(r"[^\"\\$\x00-\x1f\x7f]*\Z")


def _check(ok: bool, what: str, value, expected: str) -> None:
    if not ok:
        raise ContextError(f"{what} = {value!r}: {expected}")


def _check_context(ctx: InstanceContext) -> None:
    def word(name, value, empty=False):
        _check(isinstance(value, str) and (bool(_WORD.match(value)) or (empty and value == "")),
               name, value, "expected letters, digits, '.', '_' or '-'")

    _check(isinstance(ctx.central_manager, str) and bool(_HOSTPORT.match(ctx.central_manager)),
           "central_manager", ctx.central_manager, "expected host[:port]")
    for name in ("provider", "instance_id", "platform", "region", "zone", "provisioner", "entry"):
        word(name, getattr(ctx, name))
    for name in ("instance_type", "image"):
        value = getattr(ctx, name)
        _check(isinstance(value, str) and value.strip() != "" and bool(_ADSTRING.match(value)),
               name, value, "expected printable text without quotes, backslashes or '$'")
    # Never echo the token itself in an error.
    if not isinstance(ctx.token, str) or not _TOKEN.match(ctx.token):
        raise ContextError("token: expected an IDTOKEN (a JWT: three base64url parts "
                           "joined by dots); value not shown")
    if ctx.control_token and not _TOKEN.match(ctx.control_token):
        raise ContextError("control_token: expected an IDTOKEN (a JWT); value not shown")
    _check(isinstance(ctx.interruptible, bool), "interruptible", ctx.interruptible,
           "expected True or False")
    _check(isinstance(ctx.idle_shutdown, int) and ctx.idle_shutdown >= 60, "idle_shutdown",
           ctx.idle_shutdown, "expected at least 60 seconds")
    _check(isinstance(ctx.shutdown_grace, int) and ctx.shutdown_grace >= 0, "shutdown_grace",
           ctx.shutdown_grace, "expected seconds, at least 0")
    _check(ctx.poweroff_script == "" or bool(_PATH.match(ctx.poweroff_script)),
           "poweroff_script", ctx.poweroff_script, "expected an absolute path or nothing")
    _check(ctx.ccb_address is None or ctx.ccb_address == ""
           or bool(_HOSTPORT.match(ctx.ccb_address)), "ccb_address", ctx.ccb_address,
           "expected host[:port]")
    cv = ctx.cvmfs
    _check(len(cv.repositories) > 0 and all(_REPO.match(r) for r in cv.repositories),
           "cvmfs.repositories", cv.repositories, "expected repository names such as cms.cern.ch")
    _check(bool(_PROXY.match(cv.http_proxy)), "cvmfs.http_proxy", cv.http_proxy,
           "expected DIRECT or proxy URLs separated by '|' and ';'")
    _check(isinstance(cv.quota_limit_mb, int) and cv.quota_limit_mb >= 1000,
           "cvmfs.quota_limit_mb", cv.quota_limit_mb, "expected at least 1000 (MB)")
    cms = ctx.cms
    _check(cms.site == "" or bool(_CMS_SITE.match(cms.site)), "cms.site", cms.site,
           "expected a CMS site name such as T2_XX_Example")
    word("cms.stageout_protocol", cms.stageout_protocol)
    word("cms.stageout_command", cms.stageout_command)
    sd = cms.storage_description
    path = sd[len("trivialcatalog_file:"):] if sd.startswith("trivialcatalog_file:") else sd
    _check(sd == "" or bool(_PATH.match(path)), "cms.storage_description", sd,
           "expected an absolute path, optionally with the trivialcatalog_file: prefix")
    for f in ctx.extra_files:
        _check(_abs_path_ok(f.path), "extra file path", f.path, "expected an absolute path")
        _check(re.fullmatch(r"0[0-7]{3}", f.permissions) is not None, f"permissions of {f.path}",
               f.permissions, "expected an octal string such as '0644'")
        _check(re.fullmatch(r"[a-z_][a-z0-9_-]*(:[a-z_][a-z0-9_-]*)?", f.owner) is not None,
               f"owner of {f.path}", f.owner, "expected user[:group]")


def _abs_path_ok(path: str) -> bool:
    p = PurePosixPath(path)
    return (p.is_absolute() and ".." not in p.parts and str(p) == path
            and all(c.isprintable() and c not in "\"\\" for c in path))


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


# ------------------------------------------------------------------ YAML

def _q(text: str) -> str:
    """A YAML double-quoted scalar that PyYAML and YAML 1.2 read back exactly."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif 0x20 <= code <= 0x7E:
            out.append(ch)
        elif 0xD800 <= code <= 0xDFFF:
            raise ContextError(f"text contains a lone surrogate: {text!r}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


# Characters a literal block may carry verbatim: printable, and no character
# that YAML 1.1 (PyYAML) treats as a line break or a byte order mark.
_LITERAL_OK = re.compile("[\t\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd"
                         "\U00010000-\U0010ffff]*\\Z")


def _content_lines(content: bytes, indent: int) -> List[str]:
    """``content:`` (and ``encoding:``) lines for one write_files item."""
    pad = " " * indent
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.strip("\n") == "":
        return [f"{pad}content: {_q(text)}"]  # empty, or nothing but line breaks
    if text is None or not _LITERAL_OK.match(text):
        b64 = base64.b64encode(content).decode("ascii")
        return [f"{pad}encoding: b64", f"{pad}content: {_q(b64)}"]
    if text.endswith("\n\n"):
        chomp = "+"
    elif text.endswith("\n"):
        chomp = ""
    else:
        chomp = "-"
    body = text[:-1] if text.endswith("\n") else text
    # Explicit indentation indicator (2, relative to the item's keys): content
    # may start with spaces or blank lines.
    lines = [f"{pad}content: |2{chomp}"]
    for line in body.split("\n"):
        lines.append(f"{pad}  {line}" if line else "")
    return lines


INSTANCE_ID_CONF = "/etc/condor/config.d/61-cloud-instance-id.conf"
INSTANCE_ID_SCRIPT = ("id=$(cloud-init query v1.instance_id 2>/dev/null) && [ -n \"$id\" ] && "
                      f"printf 'CLOUD_PLUGINS_INSTANCE_ID = %s\\n' \"$id\" > {INSTANCE_ID_CONF}"
                      " || true")

#: The metadata services (they serve the user data, so the token): EC2's IMDS
#: (IPv6 on Nitro) and OpenStack's (Nova: fe80::a9fe:a9fe since Victoria).
METADATA_ADDRESSES = {"iptables": ("169.254.169.254",),
                      "ip6tables": ("fd00:ec2::254", "fe80::a9fe:a9fe")}
METADATA_CHAIN = "CP-METADATA"
# Root (cloud-init) and condor (node control reads spot notices, control.py)
# may reach it; any other uid (jobs) is rejected.  Every packet forwarded to it
# (containers on a bridge, NATed or not) is dropped in mangle FORWARD, which
# comes before filter FORWARD, where container runtimes (Docker, CNI) insert
# their ACCEPTs on top of our REJECT when they start.  On OpenStack this is
# the only guard (EC2 also has the IMDSv2 hop limit of 1, providers/ec2.py).
_CHAIN_RULES = ("-m owner --uid-owner 0 -j RETURN", "-m owner --uid-owner condor -j RETURN",
                "-j REJECT")
_HOOKS = {"filter": (("OUTPUT", "-j " + METADATA_CHAIN), ("FORWARD", "-j REJECT")),
          "mangle": (("FORWARD", "-j DROP"),)}


def metadata_ruleset(tool: str, present=()) -> str:
    """The ``iptables-restore --noflush`` input that the boot script feeds
    ``tool``-restore (``tool``: a key of METADATA_ADDRESSES): the chain is
    (re)declared, so flushed and refilled; a hook rule in ``present``, as
    (table, chain, rule), is already there and not inserted again."""
    out = [f"*filter\n:{METADATA_CHAIN} - [0:0]"]
    out += [f"-A {METADATA_CHAIN} {r}" for r in _CHAIN_RULES]
    for table, hooks in _HOOKS.items():
        if table != "filter":
            out += ["COMMIT", f"*{table}"]
        out += [f"-I {chain} 1 -d {a} {target}" for a in METADATA_ADDRESSES[tool]
                for chain, target in hooks if (table, chain, f"-d {a} {target}") not in present]
    return "\n".join(out + ["COMMIT"]) + "\n"


def _protect_metadata_script() -> str:
    """sh for bootcmd (root, every boot, before any service).  Per family: the
    tool must work (else its error), then metadata_ruleset() goes through
    ``-restore --noflush``, one transaction; a hook rule that ``-C`` finds is
    left out, so a re-run adds nothing.  The input is built before -restore
    runs (legacy -restore holds the xtables lock that -C waits for).  A family
    that fails (no ip6tables, IPv6 off) is named with its error on the console
    and in cloud-init-output.log, the other is applied, and the node joins the
    pool all the same: the boot never fails on it (the policy since the first
    release)."""
    loops = []
    for table, hooks in _HOOKS.items():
        if table != "filter":
            loops.append(f"echo 'COMMIT\n*{table}'")
        loops.append("for a;do " + ";".join(f'j {table} {c} "-d $a {t}"' for c, t in hooks)
                     + ";done")
    head = metadata_ruleset("iptables").split("\n-I ")[0]   # *filter and the chain
    return "\n".join([
        'j(){ $t -w -t $1 -C $2 $3 2>/dev/null||echo "-I $2 1 $3";}',
        f"r(){{ echo '{head}';" + ";".join(loops) + ";echo COMMIT;}",
        'f(){ t=$1;shift;e=$($t -w -S OUTPUT 2>&1 >/dev/null)&&i=$(r "$@")&&e=$(printf '
        '"%s\\n" "$i"|$t-restore -w --noflush 2>&1)||echo "condor_plugins: cannot '
        'firewall the metadata service with $t (jobs may read the user data): $e" >&2;}']
        + [f"f {tool} {' '.join(a)}" for tool, a in METADATA_ADDRESSES.items()])


PROTECT_METADATA_SCRIPT = _protect_metadata_script()


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


# ------------------------------------------------------------------ redaction

# IDTOKENs (and other JWTs): base64url of '{"' ... three dot-separated parts.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


def redact(user_data: str) -> str:
    """``user_data`` for display: the content of every written file that only
    its owner may read (the token, secret template files) and anything that
    looks like a JWT are replaced with ``<redacted>``.  The result is still a
    valid cloud-config document."""
    out: List[str] = []
    item: List[str] = []

    def flush() -> None:
        perms = ""
        for ln in item:
            m = re.match(r'\s*(?:- )?permissions:\s*"?([0-7]+)"?\s*$', ln)
            if m:
                perms = m.group(1)
        if not re.fullmatch(r"[0-7]{1,3}00", perms):
            out.extend(item)
        else:
            skipping = False
            for n, ln in enumerate(item):
                m = re.match(r"(?:  - |    )([A-Za-z_]+):", ln)
                if n == 0 or (m and ln[4:5] != " "):
                    key = m.group(1) if m else ""
                    skipping = key in ("content", "encoding")
                    if key == "content":
                        out.append(f"    content: {_q(REDACTED)}")
                if not skipping:
                    out.append(ln)
        item.clear()

    in_files = False
    for ln in user_data.split("\n"):
        if ln and not ln.startswith((" ", "#")):
            flush()
            in_files = ln.startswith("write_files:")
            out.append(ln)
        elif in_files and ln.startswith("  - "):
            flush()
            item.append(ln)
        elif item:
            item.append(ln)
        else:
            out.append(ln)
    flush()
    return _JWT.sub(REDACTED, "\n".join(out))


# ------------------------------------------------------------------ from knobs

def _template_files(where: str, directory: str) -> Tuple[ExtraFile, ...]:
    root = Path(directory)
    if not root.is_absolute() or not root.is_dir():
        raise ContextError(f"{where} = {directory!r}: not an absolute path to a directory")
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames
                                         if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = "/" + path.relative_to(root).as_posix()
            if not stat.S_ISREG(st.st_mode):
                raise ContextError(f"{where}: {path} is not a regular file (symbolic links "
                                   "and special files are refused)")
            if not _abs_path_ok(rel):
                raise ContextError(f"{where}: {path}: unusable file name")
            try:
                content = path.read_bytes()
            except OSError as err:
                raise ContextError(f"{where}: cannot read {path}: {err.strerror}") from None
            files.append(ExtraFile(rel, content, f"{stat.S_IMODE(st.st_mode) & 0o777:04o}"))
    return tuple(files)


def entry_interruptible(entry_cfg, param: Mapping[str, str]) -> bool:
    """``CloudInterruptible`` of the entry's nodes: the knob, else its SPOT setting."""
    knob = f"{PREFIX}{entry_cfg.name.upper()}_INTERRUPTIBLE"
    if str(param.get(knob) or "").strip():
        return _knob(param, entry_cfg.name, "INTERRUPTIBLE")[1]
    spot = str(entry_cfg.settings.get("SPOT") or "").strip()
    try:
        return bool(PARSERS["bool"](spot)) if spot else False
    except ValueError as err:
        raise ContextError(f"{PREFIX}{entry_cfg.name.upper()}_SPOT = {spot!r}: {err}") from None


def context_from_config(entry_cfg, param: Mapping[str, str], instance_id: str, token: str,
                        provisioner: Optional[str] = None,
                        control_token: str = "") -> InstanceContext:
    """The context of one new instance of ``entry_cfg`` (a config.EntryConfig)
    from the knobs in ``param``; raises ContextError naming the bad knob."""
    entry = entry_cfg.name
    get = lambda name: _knob(param, entry, name)  # noqa: E731

    def text(name, pattern, expected, allow_empty=False):
        where, value = get(name)
        if not (allow_empty and value == "") and not pattern.match(value):
            raise ContextError(f"{where} = {value!r}: {expected}")
        return value

    where, repos = get("CVMFS_REPOSITORIES")
    bad = [r for r in repos if not _REPO.match(r)]
    if not repos or bad:
        raw = _read(param, entry, _KNOB["CVMFS_REPOSITORIES"])[1]
        raise ContextError(f"{where} = {raw!r}: " + (f"{bad[0]!r} is not a repository name"
                           if bad else "no repository") + " (expected names such as "
                           "cms.cern.ch)")
    proxy = text("CVMFS_HTTP_PROXY", _PROXY,
                 "expected DIRECT or proxy URLs separated by '|' and ';'")
    where, quota = get("CVMFS_QUOTA_LIMIT")
    if quota < 1000:
        raise ContextError(f"{where} = {quota!r}: must be at least 1000 (MB)")
    site = text("CMS_LOCAL_SITE", _CMS_SITE, "expected a CMS site name such as T2_XX_Example",
                allow_empty=True)
    protocol = text("STAGEOUT_PROTOCOL", _WORD, "expected a protocol name such as SRMv2")
    command = text("STAGEOUT_COMMAND", _WORD, "expected a stage-out command such as gfal2")
    where, sd = get("STORAGE_DESCRIPTION")
    path = sd[len("trivialcatalog_file:"):] if sd.startswith("trivialcatalog_file:") else sd
    if sd and not _PATH.match(path):
        raise ContextError(f"{where} = {sd!r}: expected an absolute path, optionally with the "
                           "trivialcatalog_file: prefix")
    where, tdir = get("USER_DATA_TEMPLATE_DIR")
    extra = _template_files(where, tdir) if tdir else ()

    where, cm = get("CENTRAL_MANAGER")
    if not cm:
        where, cm = "COLLECTOR_HOST", str(param.get("COLLECTOR_HOST") or "").strip()
    if not _HOSTPORT.match(cm):
        raise ContextError(f"{where} = {cm!r}: expected host[:port] of the central manager")
    platform = text("PLATFORM", _WORD, "expected a word such as EC2", allow_empty=True)
    region = text("REGION", _WORD, "expected a region name")
    zone = text("ZONE", _WORD, "expected a zone name")
    interruptible = entry_interruptible(entry_cfg, param)
    where, idle = get("IDLE_SHUTDOWN")
    if idle < 60:
        raise ContextError(f"{where} = {idle!r}: must be at least 60 seconds")
    _, grace = get("SHUTDOWN_GRACE")
    where, period = get("CONTROL_PERIOD")
    if period < 1:
        raise ContextError(f"{where} = {period!r}: must be at least 1 second")
    where, lease = get("LEASE")
    cycle = _duration(param, PREFIX + "CYCLE_INTERVAL", "60")
    if lease < 3 * cycle:
        raise ContextError(f"{where} = {lease!r}: must be at least 3 provisioner cycles "
                           f"({3 * cycle} s)")
    token_life = _duration(param, PREFIX + "WORKER_TOKEN_LIFETIME", "7d")
    where, lifetime = _read(param, entry, _KNOB["MAX_LIFETIME"])
    lifetime = get("MAX_LIFETIME")[1] if lifetime else token_life
    if lifetime > token_life:
        raise ContextError(f"{where} = {lifetime!r}: must not exceed "
                           f"{PREFIX}WORKER_TOKEN_LIFETIME ({token_life} s)")
    _, retire_time = get("MAX_RETIRE_TIME")
    where, watchdog_time = get("WATCHDOG")
    if 0 < watchdog_time < 10:
        raise ContextError(f"{where} = {watchdog_time!r}: must be 0 (none) or at least 10 "
                           "seconds")
    _, protect_metadata = get("PROTECT_METADATA")
    where, poweroff = get("POWEROFF_SCRIPT")
    if poweroff.lower() == "none":
        poweroff = ""
    elif not _PATH.match(poweroff):
        raise ContextError(f"{where} = {poweroff!r}: expected an absolute path or none")
    where, ccb = get("CCB_ADDRESS")
    if ccb.lower() == "none":
        ccb = ""
    elif not ccb:
        ccb = None
    elif not _HOSTPORT.match(ccb):
        raise ContextError(f"{where} = {ccb!r}: expected host[:port] or none")

    if provisioner is None:
        provisioner = (str(param.get(PREFIX + "PROVISIONER_NAME") or "").strip()
                       or str(param.get("FULL_HOSTNAME") or "").strip() or "unknown")

    def plain(knob, value):
        value = (value or "").strip()
        if not value:
            return "unknown"
        if not _ADSTRING.match(value):
            raise ContextError(f"{PREFIX}{entry.upper()}_{knob} = {value!r}: expected text "
                               "without quotes, backslashes or '$'")
        return value

    if not _WORD.match(entry_cfg.type or ""):
        raise ContextError(f"{PREFIX}{entry.upper()}_TYPE = {entry_cfg.type!r}: expected a "
                           "provider type name")

    return InstanceContext(
        central_manager=cm, provider=entry_cfg.type, instance_id=instance_id, token=token,
        control_token=control_token, platform=platform or entry_cfg.type,
        instance_type=plain("INSTANCE_TYPE", entry_cfg.instance_type),
        image=plain("IMAGE", entry_cfg.image), region=region, zone=zone,
        interruptible=interruptible,
        provisioner=provisioner, entry=entry, idle_shutdown=idle, shutdown_grace=grace,
        poweroff_script=poweroff, ccb_address=ccb, protect_metadata=protect_metadata,
        control_period=period, lease=lease, max_lifetime=lifetime,
        max_retire_time=retire_time, watchdog=watchdog_time,
        cvmfs=CvmfsSettings(tuple(repos), proxy, quota),
        cms=CmsSettings(site, protocol, command, sd),
        extra_files=extra)


# ------------------------------------------------------------------ docs

def knobs_markdown() -> str:
    """The knob table as Markdown (docs/knobs-contextualisation.md)."""
    lines = [
        "# Contextualisation knobs",
        "",
        "Generated from `condor_plugins/node/contextualize.py`",
        "(`python3 -m condor_plugins.node.contextualize > docs/knobs-contextualisation.md`);",
        "do not edit by hand. They shape the cloud-init user-data of each new VM of a",
        "provider entry. `<ENTRY>` is a name from `CLOUD_PLUGINS_PROVIDERS`. Each knob is",
        "read as `CLOUD_PLUGINS_<ENTRY>_<KNOB>`, then (scope *entry*) as",
        "`CLOUD_PLUGINS_<KNOB>`, then the default; scope *entry-only* has no global",
        "fallback (the global names are the node's own knobs, docs/knobs.md).",
        "An empty value counts as unset. Durations are seconds, or a number with",
        "`s`, `m`, `h` or `d`. The provider sees these knobs among its settings too.",
        "Bad values are errors naming the knob.",
        "",
        "The user-data (`#cloud-config`) writes, all owned by `root:root`:",
        f"`{CVMFS_LOCAL}` (0644); with a CMS site, `{SITECONF_BASE}/<site>/JobConfig/`",
        "`site-local-config.xml` (0644); the shipped worker fragment as",
        f"`{WORKER_CONF}` and the per-instance knobs as `{INSTANCE_CONF}` (0644);",
        f"the node's IDTOKEN as `{TOKEN_FILE}` (0600); the template files. Then it",
        "runs `cvmfs_config setup` and `systemctl enable --now condor`: the image must",
        "provide the CVMFS client and HTCondor.",
        "",
        "| Knob | Scope | Type | Default | Description |",
        "|---|---|---|---|---|",
    ]
    for k in KNOBS:
        scope, entry = ("entry", "[<ENTRY>_]") if k.global_fallback else ("entry-only",
                                                                            "<ENTRY>_")
        default = f"`{k.default}`" if k.default else "*(empty)*"
        lines.append(f"| `{PREFIX}{entry}{k.name}` | {scope} | {k.type} | {default} | "
                     f"{k.doc.replace('|', chr(92) + '|')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(knobs_markdown(), end="")
