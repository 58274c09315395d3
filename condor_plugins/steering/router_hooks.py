"""JobRouter hooks that route cloud jobs to a separate cloud pool (Condor-C).

HTCondor's job router runs each hook with no arguments, as the job owner
(see HTCondor's job-router documentation, "Hooks for the Job Router"):

* translate (``<KEYWORD>_HOOK_TRANSLATE_JOB``): stdin is the route ad (one
  line) and ``------`` and the job ad (old syntax); stdout is the whole
  routed ad.  A non-zero exit abandons the routing: the job stays idle at
  the site, and the router logs our stderr line.
* update (``_HOOK_UPDATE_JOB_INFO``): stdin is the routed ad; stdout holds
  attributes to set on it.
* finalize (``_HOOK_JOB_FINALIZE``): stdin is the source ad, ``------``, the
  routed ad; stdout holds updates to the source ad.  Non-zero: re-route.
* cleanup (``_HOOK_JOB_CLEANUP``): stdin is the job ad; must exit 0.

The router itself still turns the ad into a grid job (``GridResource`` of
the route), mirrors status, and finalizes; these hooks add the cloud policy:
the remote copy's ``Remote_Requirements`` carry the cloud clause (merged by
condor_plugins.steering.modes, as condor_submit_cloud does: no second clause), a
local-mode or malformed job is refused, and where the job ran in the cloud
pool is copied back.  The ad is handled as text with modes' lexer; classad2
is never imported (start-up cost: every routed job costs a process start).
"""

from __future__ import annotations

import re
import sys

from .modes import (ATTR_CLOUD_MODE, CLAUSES, CloudMode, ModeError, RequirementsError,
                    has_clause, parse_mode)

SEPARATOR = "\n------\n"
#: Attributes a routable job must have, with the pattern of their value.
REQUIRED = {"ClusterId": r"\d+", "ProcId": r"\d+", "Owner": r'"[^"\\]+"', "JobUniverse": r"5",
            "Cmd": r'".*"'}
#: Resource requests must be expressions, not strings.
NOT_STRINGS = ("RequestCpus", "RequestMemory", "RequestDisk")
#: Copied from the routed job back to the source job when it finishes.
FINAL_ATTRS = ("LastRemoteHost", "RemoteHost", "GridJobId", "RemoteWallClockTime")
_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)\Z")


class HookError(Exception):
    """The input cannot be routed; the message says why (one line)."""


def parse_old(text: str) -> dict:
    """{lower-case name: (name, value text)} of an old-syntax ad."""
    attrs = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line.strip())
        if not m:
            raise HookError(f"job ad line {n} is not 'Name = value': {line[:80]!r}")
        attrs[m.group(1).lower()] = (m.group(1), m.group(2).strip())
    return attrs


def _value(attrs: dict, name: str, default: str | None = None) -> str | None:
    return attrs.get(name.lower(), (name, default))[1]


def _unquote(text: str | None) -> str | None:
    if text and len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def job_id(attrs: dict) -> str:
    return f"{_value(attrs, 'ClusterId', '?')}.{_value(attrs, 'ProcId', '?')}"


def check_job(attrs: dict) -> None:
    for name, pattern in REQUIRED.items():
        value = _value(attrs, name)
        if value is None:
            raise HookError(f"job {job_id(attrs)}: no {name}")
        if not re.fullmatch(pattern, value):
            raise HookError(f"job {job_id(attrs)}: {name} = {value[:60]} is not routable")
    for name in NOT_STRINGS:
        value = _value(attrs, name)
        if value is not None and (not value or value.startswith('"')):
            raise HookError(f"job {job_id(attrs)}: {name} = {value[:60]} is not a number")


def remote_requirements(attrs: dict, default_mode: str = "cloud") -> str:
    """The Requirements of the remote copy: the job's, with the cloud clause."""
    try:
        mode = parse_mode(_unquote(_value(attrs, ATTR_CLOUD_MODE, default_mode)),
                          f"{ATTR_CLOUD_MODE} of job {job_id(attrs)}")
    except ModeError as err:
        raise HookError(str(err)) from None
    if mode is CloudMode.LOCAL:
        raise HookError(f"job {job_id(attrs)} is a local-mode job: never routed to the cloud")
    requirements = _value(attrs, "Requirements")
    clause = CLAUSES[CloudMode.CLOUD]
    if not requirements:
        return clause
    # The router prints the job's own (valid, canonical) expression: the lexer
    # suffices, and classad2 (30 ms to import) is not needed.
    try:
        if has_clause(requirements, CloudMode.CLOUD, canonical=True):
            return requirements
    except RequirementsError as err:
        raise HookError(f"job {job_id(attrs)}: Requirements: {err}") from None
    return f"({requirements}) && ({clause})"


def translate(text: str) -> str:
    """The routed ad (old syntax) for the router's translate input."""
    route, sep, job = text.partition(SEPARATOR)
    if not sep:
        raise HookError("input has no route ad / job ad separator")
    attrs = parse_old(job)
    check_job(attrs)
    remote = remote_requirements(attrs)
    grid = re.search(r'\bGridResource\s*=\s*("(?:[^"\\]|\\.)*")', route)
    name = re.search(r'\bName\s*=\s*("(?:[^"\\]|\\.)*")', route)
    own = {"Remote_Requirements": remote, "CloudRouted": "true",
           "CloudRoute": name.group(1) if name else '"unknown"', "CloudRoutedBy": '"hook"'}
    if grid:
        own["GridResource"] = grid.group(1)
    lines = [f"{n} = {v}" for key, (n, v) in attrs.items()
             if key not in {k.lower() for k in own}]
    lines += [f"{k} = {v}" for k, v in own.items()]
    return "\n".join(lines) + "\n"


def finalize(text: str) -> str:
    """Updates to the source job: where it ran in the cloud pool."""
    _source, sep, routed = text.partition(SEPARATOR)
    if not sep:
        raise HookError("input has no source ad / routed ad separator")
    attrs = parse_old(routed)
    out = [f"Cloud{name} = {_value(attrs, name)}" for name in FINAL_ATTRS
           if _value(attrs, name) is not None]
    return "\n".join(out) + ("\n" if out else "")


_HOOK_HELP = {
    "translate": "stdin: the route ad, ------, the job ad; stdout: the routed ad, with the "
                 "cloud clause in Remote_Requirements. Non-zero: the job is not routed.",
    "update": "stdin: the routed ad; stdout: nothing to set (the router mirrors status).",
    "finalize": "stdin: the source ad, ------, the routed ad; stdout: where the job ran "
                "(LastRemoteHost, ...) for the source job. Always exits 0.",
    "cleanup": "stdin: the job ad; nothing to clean up. Always exits 0.",
}


def _hook_parser(name: str):
    import argparse
    from condor_plugins import __version__
    ap = argparse.ArgumentParser(
        prog=f"condor_cloud_route_{name}",
        description=f"HTCondor JobRouter {name} hook of condor_plugins (cloud pool routes).",
        epilog=_HOOK_HELP[name] + " The job router runs it with no arguments "
               "(40-cloud-route.conf: CLOUD_PLUGINS_HOOK_DIR).")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ap.man_description = __doc__.split("\n", 1)[1]
    return ap


def translate_parser():
    return _hook_parser("translate")


def update_parser():
    return _hook_parser("update")


def finalize_parser():
    return _hook_parser("finalize")


def cleanup_parser():
    return _hook_parser("cleanup")


def _run(name: str, fn, failure: int = 1) -> int:
    """Run ``fn`` on stdin; on failure one stderr line (the router logs it)
    and exit ``failure``.  With an option (--version, --help), only that
    (the router passes no argument)."""
    if len(sys.argv) > 1 and sys.argv[1].startswith("-"):
        _hook_parser(name).parse_args(sys.argv[1:])
        return 0
    try:
        text = sys.stdin.read()
        sys.stdout.write(fn(text))
        return 0
    except (HookError, UnicodeDecodeError) as err:
        print(f"condor_plugins {name} hook: {err}", file=sys.stderr)
    except Exception as err:  # never a traceback in the router log: one line
        print(f"condor_plugins {name} hook: {type(err).__name__}: {err}", file=sys.stderr)
    return failure


def translate_main() -> int:
    return _run("translate", translate)


def update_main() -> int:
    """Nothing to add: the router mirrors the routed job's status itself."""
    return _run("update", lambda text: "")


def finalize_main() -> int:
    # A failed finalize makes the router re-route (run the job again): the
    # extra attributes are not worth that, so it always succeeds.
    return _run("finalize", finalize, failure=0)


def cleanup_main() -> int:
    """Nothing was created outside HTCondor: always succeeds."""
    return _run("cleanup", lambda text: "", failure=0)
