"""Man pages generated from the commands' argument parsers (the RPM ships them).

    python3 -m condor_plugins.manpages OUTDIR     # writes OUTDIR/<command>.1

Each page has NAME, SYNOPSIS, DESCRIPTION, OPTIONS (and COMMANDS for
subcommands), then the parser's epilog (exit status and notes), so ``--help``
and ``man`` never disagree.  ``SOURCE_DATE_EPOCH`` dates the pages
(reproducible builds); without it they carry no date.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Dict, List

__all__ = ["PARSERS", "render", "write_all"]

#: Command -> "module:function" returning its ArgumentParser.
PARSERS: Dict[str, str] = {
    "condor_cloud": "condor_plugins.cli:build_parser",
    "condor_cloud_provisioner": "condor_plugins.provisioning.daemon:build_parser",
    "condor_submit_cloud": "condor_plugins.steering.submit_wrapper:build_parser",
    **{f"condor_cloud_route_{hook}": f"condor_plugins.steering.router_hooks:{hook}_parser"
       for hook in ("translate", "update", "finalize", "cleanup")},
}


def _parser(command: str) -> argparse.ArgumentParser:
    module, func = PARSERS[command].split(":")
    make: Callable[[], argparse.ArgumentParser] = getattr(importlib.import_module(module), func)
    return make()


def _esc(text: str) -> str:
    """Text for roff: backslashes and dashes escaped, ``literal`` in bold, no
    line starting a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"``(.+?)``", r"\\fB\1\\fR", text)
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.splitlines())


def _paragraphs(text: str) -> List[str]:
    """Prose paragraphs filled; an indented block kept as it is."""
    out: List[str] = []
    for chunk in text.strip("\n").split("\n\n"):
        lines = chunk.strip("\n").splitlines()
        if not lines:
            continue
        if out:
            out.append(".PP")
        if any(line.startswith(" ") for line in lines):
            out.append(".nf\n" + _esc(textwrap.dedent("\n".join(lines))) + "\n.fi")
        else:
            out.append(_esc(" ".join(line.strip() for line in lines)))
    return out


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().split()).removeprefix("usage: ")


def _options(parser: argparse.ArgumentParser, with_help: bool = True) -> List[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._HelpAction) and not with_help:
            continue
        metavar = action.metavar or action.dest.upper()
        if not action.option_strings:
            name = action.metavar or action.dest
        elif action.nargs == 0:
            name = ", ".join(action.option_strings)
        else:
            name = ", ".join(action.option_strings) + " " + metavar
        text = parser._get_formatter()._expand_help(action) if action.help else ""
        out.append(f".TP\n.B {_esc(name)}\n{_esc(text)}")
    return out


def render(command: str, parser: argparse.ArgumentParser, version: str) -> str:
    """The man page (section 1) of ``command``."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    date = time.strftime("%Y-%m-%d", time.gmtime(int(epoch))) if epoch else ""
    summary = (parser.description or "").strip().splitlines()
    lines = [f'.TH {command.upper()} 1 "{date}" "condor_plugins {version}" "condor_plugins"',
             ".SH NAME", f"{_esc(command)} \\- {_esc(summary[0] if summary else command)}",
             ".SH SYNOPSIS", f".B {_esc(_usage(parser))}"]
    # ``man_description``: prose for the page only (--help stays short).
    more = getattr(parser, "man_description", None) or "\n".join(summary[1:])
    if more.strip():
        lines += [".SH DESCRIPTION", *_paragraphs(more)]
    lines += [".SH OPTIONS", *_options(parser)]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subs:
        lines.append(".SH COMMANDS")
        helps = {c.dest: c.help for c in subs[0]._choices_actions}
        for name, sub in subs[0].choices.items():
            lines += [f".SS {_esc(name)}", f".B {_esc(_usage(sub))}", ".PP",
                      _esc(helps.get(name) or ""), *_options(sub, with_help=False)]
    if parser.epilog:
        lines += [".SH NOTES", *_paragraphs(parser.epilog)]
    others = [c for c in PARSERS if c != command and not c.startswith("condor_cloud_route_")]
    lines += [".SH SEE ALSO", ", ".join(f"{_esc(c)}(1)" for c in
                                        sorted(others) + ["condor_submit", "condor_config_val"])]
    return "\n".join(lines) + "\n"


def write_all(outdir: Path) -> List[Path]:
    from . import __version__
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for command in PARSERS:
        path = outdir / f"{command}.1"
        path.write_text(render(command, _parser(command), __version__))
        written.append(path)
    return written


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python3 -m condor_plugins.manpages OUTDIR", file=sys.stderr)
        return 2
    for path in write_all(Path(args[0])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
