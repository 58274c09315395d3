"""The context of one worker VM: the paths contextualisation writes on the VM,
``InstanceContext`` (everything one VM needs) and its checks.

``InstanceContext`` is built from the knobs by ``context_config.context_from_config``
and turned into the VM's cloud-init document by ``contextualize.render_user_data``,
which checks it first (``_check_context``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Optional, Tuple

from ..config import ConfigError

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

