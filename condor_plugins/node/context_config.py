"""The context of a new instance from HTCondor knobs (the table is
context_knobs.KNOBS): ``context_from_config(entry_cfg, param, instance_id, token)``
and ``entry_interruptible``; a bad value raises ContextError naming the knob.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Mapping, Optional, Tuple

from ..config import PREFIX, PARSERS
from .context import (_ADSTRING, _CMS_SITE, _HOSTPORT, _PATH, _PROXY, _REPO, _WORD,
                      CmsSettings, ContextError, CvmfsSettings, ExtraFile, InstanceContext,
                      _abs_path_ok)
from .context_knobs import KNOBS, ContextKnob

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

