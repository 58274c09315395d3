"""condor_submit_cloud: condor_submit with cloud steering.

    condor_submit_cloud [--mode cloud|local|any] <any condor_submit arguments>

The wrapper removes its own ``--mode X`` / ``--mode=X`` (``-mode`` too: condor_submit
has no option of that name), then ``exec``s condor_submit with the same arguments,
so its output and exit status are condor_submit's own.  Steering is done the way
HTCondor itself appends site clauses (SubmitHash::SetRequirements in
src/condor_utils/submit_utils.cpp):

* condor_submit builds ``(<user requirements>) && (<append>) && <defaults>`` where
  ``<append>`` is APPEND_REQ_VANILLA (vanilla, docker, container) or APPEND_REQ_VM
  (vm universe) if defined, else APPEND_REQUIREMENTS, as its param() sees them
  (subsystem SUBMIT: ``SUBMIT.<KNOB>`` wins over ``<KNOB>``).  The wrapper reads
  them so (one ``condor_config_val -subsystem submit``, only when the mode has a
  clause or the default mode is needed) and sets both per-universe knobs to
  ``(<site value>) && (<clause>)`` through ``_CONDOR_SUBMIT.<KNOB>`` in condor_submit's
  environment, which wins over both forms (the site value being the knob's or, if
  undefined, APPEND_REQUIREMENTS'), so every ``requirements`` statement of every
  queue block keeps the user's expression.  The site value goes in expanded: an
  override naming its own knob (``$(APPEND_REQ_VANILLA) && ...``) makes HTCondor
  loop forever when that is undefined.  Java and parallel jobs take
  APPEND_REQUIREMENTS, which gets the clause guarded by JobUniverse: local and
  scheduler universe jobs, matched against the schedd, are exempt.
* ``+Requirements``/``MY.Requirements`` makes condor_submit skip all of that, so an
  ``-append`` block ANDs the clause into it when it is defined.
* ``-append '+CloudMode = "<mode>"'`` and ``-append '+CloudModeApplied = "<mode>"'``
  (condor_submit parses -append lines after the submit file's statements before
  every queue statement).

The mode is ``--mode``, else the job's own ``+CloudMode`` (the last one in
the submit file or an ``-append``; an invalid one is refused, as the schedd's
submit requirement would refuse it), else the knob CLOUD_PLUGINS_DEFAULT_MODE,
else ``cloud``.  A submit file read from standard input is not read ahead.  A site
value that is not an expression is refused, naming its knob, before condor_submit runs.
"""

from __future__ import annotations

import os
import sys
# Start-up cost: no typing (builtin generics), no re (one pattern, matched by hand).

from condor_plugins.steering import modes

PROG = "condor_submit_cloud"
CONDOR_SUBMIT = "condor_submit"

# condor_submit's knobs for the appended clause; see SubmitHash::SetRequirements.
KNOB_APPEND = "APPEND_REQUIREMENTS"
UNIVERSE_KNOBS = ("APPEND_REQ_VANILLA", "APPEND_REQ_VM")
# condor_submit's subsystem: its param() prefers SUBMIT.<KNOB> to <KNOB>.
SUBSYS_PREFIX = "SUBMIT."
ENV_PREFIX = "_CONDOR_" + SUBSYS_PREFIX

HELP_LINE = (
    "\n    --mode cloud|local|any\tcondor_submit_cloud only: run the jobs only on cloud\n"
    "\t\t\t\tnodes (cloud), never on them (local) or anywhere (any);\n"
    "\t\t\t\tdefault: the knob CLOUD_PLUGINS_DEFAULT_MODE, else cloud\n"
)


class WrapperError(Exception):
    """An error of the wrapper itself (reported as one line, exit 1)."""


# ---------------------------------------------------------------- arguments
# A faithful copy of condor_submit's option matching (is_dash_arg_prefix in
# src/condor_utils/match_prefix.cpp), needed only to know which arguments are
# values of condor_submit options and so never our --mode.

def _is_arg_prefix(arg: str, name: str, min_len: int, colon: bool) -> bool:
    if not arg or not name or arg[0] != name[0]:
        return False
    n = 0
    while n < len(arg) and n < len(name) and arg[n] == name[n]:
        n += 1
        if n < len(arg) and arg[n] == ":":
            break
    rest = arg[n:]
    if rest and not rest.startswith(":"):
        return False
    if min_len < 0:
        return n == len(name)
    return n >= min_len


def _is_dash_arg(arg: str, name: str, min_len: int = 0, colon: bool = False) -> bool:
    if not arg.startswith("-"):
        return False
    arg = arg[1:]
    if arg.startswith("-"):
        arg = arg[1:]
        min_len = -1
    return _is_arg_prefix(arg, name, min_len, colon)


# condor_submit's options, in the order it tests them: (name, min, colon, kind)
# kind: 0 no value, 1 one value, "q" queue args, "d" dry-run, "h" help
_OPTIONS = [
    ("verbose", 1, False, 0), ("terse", 3, False, 0), ("disable", 1, False, 0),
    ("debug", 2, True, 0), ("dry-run", 3, True, "d"), ("spool", 1, False, 0),
    ("file", 2, False, "f"), ("digest", 6, False, 1), ("factory", 2, False, 0),
    ("generator", 1, False, 0), ("address", 2, False, 1), ("remote", 1, False, 1),
    ("name", 1, False, 1), ("append", 1, False, "a"), ("batch-name", 1, False, 1),
    ("batch-id", 1, False, 1), ("queue", 1, False, "q"), ("maxjobs", 3, False, 1),
    ("single-cluster", 3, False, 0), ("pool", 2, False, 1), ("unused", 1, False, 0),
    ("dump", 2, False, "D"), ("force-mpi-universe", 7, False, 0),
    ("allow-crlf-script", 8, False, 0), ("help", 0, False, "h"),
    ("capabilities", 3, True, 0), ("interactive", 1, False, "i"),
]


class Args:
    def __init__(self) -> None:
        self.mode: str | None = None
        self.rest: list[str] = []
        self.files: list[str] = []     # submit files named (not '-')
        self.appended: list[str] = []  # -append lines
        self.help = False
        self.has_file = False      # positional, '-' or -file
        self.has_queue = False     # -queue or -append 'queue ...'
        self.has_keys = False      # key=value or non-queue -append (GotCmdlineKeys)
        self.dry_or_dump = False
        self.interactive = False


def _looks_like_queue(line: str) -> bool:
    words = line.strip().split(None, 1)
    return bool(words) and words[0].lower() == "queue"


def parse_args(argv: list[str]) -> Args:
    a = Args()
    i = 0
    n = len(argv)
    while i < n:
        arg = argv[i]
        if arg in ("--mode", "-mode"):
            if i + 1 >= n:
                raise WrapperError("--mode requires an argument: cloud, local or any")
            a.mode = argv[i + 1]
            i += 2
            continue
        if arg.startswith(("--mode=", "-mode=")):
            a.mode = arg.split("=", 1)[1]
            i += 1
            continue
        a.rest.append(arg)
        i += 1
        if arg == "-":
            a.has_file = True
            continue
        if arg.startswith("-"):
            kind = None
            for name, min_len, colon, k in _OPTIONS:
                if _is_dash_arg(arg, name, min_len, colon):
                    kind = k
                    break
            if kind == "h":
                a.help = True
            elif kind == "i":
                a.interactive = True
            elif kind in (1, "f", "a", "D") and i < n:
                val = argv[i]
                a.rest.append(val)
                i += 1
                if kind == "f":
                    a.has_file = True
                    if val != "-":
                        a.files.append(val)
                elif kind == "D":
                    a.dry_or_dump = True
                elif kind == "a":
                    a.appended.append(val)
                    if _looks_like_queue(val):
                        a.has_queue = True
                    else:
                        a.has_keys = True
            elif kind == "d":
                a.dry_or_dump = True
                # -dry-run takes a file unless given as -dry-run:<n> with n >= 0x10
                opt = arg.split(":", 1)[1] if ":" in arg else ""
                needs_file = not any(o.strip().isdigit() and int(o) >= 0x10 for o in opt.split(","))
                if needs_file and i < n and (not argv[i].startswith("-") or argv[i] == "-"):
                    a.rest.append(argv[i])
                    i += 1
            elif kind == "q":
                a.has_queue = True
                while i < n:
                    nxt = argv[i]
                    if nxt == "-" or not nxt.startswith("-"):
                        a.rest.append(nxt)
                        i += 1
                        if nxt == "-":
                            break
                        continue
                    break
            continue
        if "=" in arg:
            a.has_keys = True
        else:
            a.has_file = True
            a.files.append(arg)
    return a


def _mode_line(line: str) -> str | None:
    """The value of a ``+CloudMode = v`` / ``MY.CloudMode = v`` line (case-insensitive)."""
    s = line.strip()
    s = s[1:] if s[:1] == "+" else s[3:] if s[:3].upper() == "MY." else ""
    name, eq, value = s.partition("=")
    return value.strip() if eq and name.rstrip().lower() == "cloudmode" else None


def submitted_mode(args: Args) -> tuple[str, str] | None:
    """The job's own ``+CloudMode`` / ``MY.CloudMode`` (value, where), the last
    one condor_submit would apply: the submit file's, then -append lines.  A
    submit file on standard input is not read ahead (the knob default applies)."""
    found = None
    for path in args.files:
        try:
            with open(path, errors="replace") as f:
                for number, line in enumerate(f, 1):
                    value = _mode_line(line)
                    if value is not None:
                        found = (value, f"{path}, line {number}")
        except OSError:
            continue  # condor_submit says why
    for line in args.appended:
        value = _mode_line(line)
        if value is not None:
            found = (value, "-append")
    return found

# ------------------------------------------------------------------ config

WRAPPER_KNOBS = (modes.KNOB_DEFAULT_MODE, KNOB_APPEND) + UNIVERSE_KNOBS


def _param() -> dict:
    """The knobs the wrapper needs as condor_submit's param() sees them (subsystem
    SUBMIT), expanded, from one condor_config_val call (about 4 ms; importing the
    bindings takes 16); a site's ``SUBMIT.<KNOB>`` also under that name, for errors."""
    pattern = "^(SUBMIT\\.)?(" + "|".join(WRAPPER_KNOBS) + ")$"
    try:
        rc, out, err = _run_capture(
            ["condor_config_val", "-subsystem", "submit", "-expand", "-dump", pattern])
    except OSError as e:
        raise WrapperError(f"cannot read the HTCondor configuration: {e}") from None
    if rc != 0:
        msg = (err.strip().splitlines() or ["condor_config_val failed"])[-1]
        raise WrapperError(f"cannot read the HTCondor configuration: {msg}")
    values, lines = {}, iter(out.splitlines())
    for line in lines:
        name, sep, value = line.partition(" = ")
        if not sep:  # a value of several lines: 'NAME @=TAG', its lines, '@TAG'
            name, sep, tag = line.partition(" @=")
            value = "\n".join(iter(lines.__next__, "@" + tag)) if sep else ""
        name = name.upper()
        if sep and name.removeprefix(SUBSYS_PREFIX) in WRAPPER_KNOBS:
            values[name] = value.strip()
    return values


def _run_capture(argv: list[str]) -> tuple[int, str, str]:
    """Run ``argv``, return (status, stdout, stderr); posix_spawn, so that the
    wrapper need not import subprocess on its fast path."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    actions = [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2),
               (os.POSIX_SPAWN_CLOSE, out_r), (os.POSIX_SPAWN_CLOSE, err_r)]
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
    finally:
        os.close(out_w)
        os.close(err_w)
    with os.fdopen(out_r, "rb") as f_out, os.fdopen(err_r, "rb") as f_err:
        out = f_out.read()  # small output: no risk of a full stderr pipe first
        err = f_err.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace"), err.decode(errors="replace")


def _knob(param, name: str) -> str | None:
    try:
        value = param.get(name)
    except Exception:
        return None
    # condor's param() treats empty as undefined, too
    return None if value is None or not str(value).strip() else str(value)


def _source(param, knob: str) -> str:
    """Where condor_submit takes ``knob`` from: SUBMIT.<KNOB> if the site sets it."""
    return SUBSYS_PREFIX + knob if _knob(param, SUBSYS_PREFIX + knob) is not None else knob


def resolve_mode(cli_mode: str | None, param=None,
                 submitted: tuple[str, str] | None = None) -> modes.CloudMode:
    """--mode, else the job's own valid CloudMode, else the knob's default.  An
    invalid CloudMode in the job is refused, as the schedd would refuse it."""
    if cli_mode is not None:
        return modes.parse_mode(cli_mode, source="--mode")
    if submitted is not None:
        return modes.parse_mode(submitted[0], source=f"+CloudMode in {submitted[1]}")
    param = param if param is not None else _param()
    knob = _knob(param, modes.KNOB_DEFAULT_MODE)
    if knob is None:
        return modes.DEFAULT_MODE
    return modes.parse_mode(knob, source=f"the knob {_source(param, modes.KNOB_DEFAULT_MODE)}")


def append_env(mode: modes.CloudMode, param) -> dict:
    """The ``_CONDOR_SUBMIT.<KNOB>`` settings that make condor_submit append the
    clause, from ``param``, the knobs as the submit subsystem sees them (_param).

    Every universe that matches against machines is steered: vanilla (which
    includes container and docker jobs) and vm through their per-universe
    knobs, ``(<site value>) && (<clause>)``; java and parallel through
    APPEND_REQUIREMENTS, where the clause is guarded so that local and
    scheduler universe jobs, matched against the schedd's own ad, are exempt.
    """
    clause = modes.clause_for(mode)
    if clause is None:
        return {}
    # APPEND_REQUIREMENTS: scheduler (7) and local (12) universe jobs are exempt.
    guarded = f"(MY.JobUniverse =?= 7 || MY.JobUniverse =?= 12 || {clause})"
    env = {}
    for knob in UNIVERSE_KNOBS + (KNOB_APPEND,):
        source = knob if _knob(param, knob) is not None else KNOB_APPEND
        site = _knob(param, source)
        try:
            if knob != KNOB_APPEND:
                env[ENV_PREFIX + knob] = modes.merge_requirements(site, mode)
            else:
                env[ENV_PREFIX + knob] = (
                    guarded if site is None else f"({modes.normalize(site)}) && {guarded}")
        except modes.RequirementsError as e:
            raise WrapperError(f"the site's {_source(param, source)} is not a valid "
                               f"expression ({e})") from None
    return env


def append_lines(mode: modes.CloudMode) -> list[str]:
    lines = []
    clause = modes.clause_for(mode)
    if clause is not None:
        # +Requirements / MY.Requirements disables condor_submit's own
        # requirements generation (and so APPEND_REQUIREMENTS): AND it in there.
        lines.append(
            "if defined MY.Requirements\n"
            f"  MY.Requirements = ($(MY.Requirements)) && ({clause})\n"
            "endif"
        )
    lines.append(f'+{modes.ATTR_CLOUD_MODE} = "{mode.value}"')
    lines.append(f'+{modes.ATTR_CLOUD_MODE_APPLIED} = "{mode.value}"')
    return lines


def build_command(argv: list[str], environ=None, param=None) -> tuple[list[str], dict]:
    """(argv for condor_submit, environment); reads the configuration only if needed."""
    args = parse_args(argv)
    submitted = submitted_mode(args) if args.mode is None else None
    if param is None and args.mode is None and submitted is None:
        param = _param()  # for the default mode
    mode = resolve_mode(args.mode, param, submitted)
    env = dict(os.environ if environ is None else environ)
    if modes.clause_for(mode) is not None:
        env.update(append_env(mode, param if param is not None else _param()))
    cmd = [CONDOR_SUBMIT] + args.rest
    # Our -append lines count as command-line keys for condor_submit: with
    # -queue and no submit file, condor_submit would then stop reading stdin.
    if (args.has_queue and not args.has_file and not args.has_keys
            and not args.dry_or_dump and not args.interactive):
        cmd.append("/dev/stdin")
    for line in append_lines(mode):
        cmd += ["-append", line]
    return cmd, env


def _help(rest: list[str]) -> int:
    import subprocess
    try:
        rc = subprocess.call([CONDOR_SUBMIT] + rest)
    except OSError as e:
        print(f"{PROG}: cannot run {CONDOR_SUBMIT}: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(HELP_LINE)
    sys.stdout.flush()
    return rc


def build_parser():
    """The wrapper's own arguments, for its man page (condor_plugins.manpages).
    The wrapper itself parses by hand: everything else is condor_submit's,
    whose single-dash grammar argparse cannot pass through unchanged."""
    import argparse
    ap = argparse.ArgumentParser(
        prog=PROG, description="condor_submit with cloud steering: run the jobs only on cloud "
        "nodes, never on them, or anywhere.",
        epilog="exit status: condor_submit's own (the wrapper execs it); 1 if the wrapper "
               "refuses the arguments (an invalid --mode or CloudMode, a site requirement "
               "that is not an expression) or cannot run condor_submit.")
    ap.add_argument("--mode", choices=[m.value for m in modes.CloudMode],
                    help="cloud: only on cloud nodes; local: never on them; any: anywhere. "
                         "Default: the job's own +CloudMode, else the knob "
                         "CLOUD_PLUGINS_DEFAULT_MODE, else cloud")
    ap.add_argument("--version", action="store_true",
                    help="print the wrapper's version, then HTCondor's (condor_version)")
    ap.add_argument("condor_submit_args", nargs="*", metavar="ARG",
                    help="any condor_submit argument: submit file, -append, -queue, ...")
    ap.man_description = __doc__.split("\n", 1)[1]
    return ap


def _version() -> int:
    """Ours, then HTCondor's (condor_submit has no version option)."""
    from condor_plugins import __version__
    print(f"{PROG} {__version__} (condor_plugins)", flush=True)
    import subprocess
    try:
        subprocess.call(["condor_version"])
    except OSError:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:
        return _version()
    try:
        args = parse_args(argv)
        if args.help:
            if args.mode is not None:
                modes.parse_mode(args.mode, source="--mode")
            return _help(args.rest)
        cmd, env = build_command(argv)
    except (WrapperError, modes.ModeError, modes.RequirementsError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as e:
        print(f"{PROG}: cannot run {cmd[0]}: {e}", file=sys.stderr)
        return 1
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
