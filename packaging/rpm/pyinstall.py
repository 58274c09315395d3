#!/usr/bin/env python3
"""Install condor_plugins into an RPM build root without a build backend.

Used by condor-cloud-plugins.spec, run from the top of the source tree:

  pyinstall.py package SITELIB
      copy condor_plugins/ (no caches) into SITELIB and write a
      <name>-<version>.dist-info next to it, with the entry points of
      setup.cfg, so that importlib.metadata finds the providers
      (group condor_plugins.providers) as it does after a pip install;
  pyinstall.py launcher NAME DEST [PYTHON]
      write DEST, a small launcher for the console script NAME of setup.cfg
      ("#!PYTHON -s", imports the installed package).

Why not setuptools/pip: Debian's rpmbuild has no %pyproject macros and EL's
setuptools is older than the one pyproject.toml asks for; the package is pure
Python, so copying it and writing its metadata is all an install does.
Everything is read from setup.cfg (one source of truth).
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import sys
from pathlib import Path

SRC = Path.cwd()
PACKAGE = "condor_plugins"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*~")


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.optionxform = str  # keep the case of entry point names
    if not cfg.read(SRC / "setup.cfg"):
        sys.exit(f"pyinstall: no setup.cfg in {SRC}")
    return cfg


def entry_points(cfg) -> dict:
    """{group: {name: 'module:attr'}} from [options.entry_points]."""
    groups = {}
    for group, text in cfg["options.entry_points"].items():
        eps = {}
        for line in text.strip().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, target = line.partition("=")
                eps[name.strip()] = target.strip()
        groups[group] = eps
    return groups


def dist_info_name(name: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"


def install_package(sitelib: Path) -> None:
    cfg = setup_cfg()
    meta = cfg["metadata"]
    name, version = meta["name"], meta["version"]
    sitelib.mkdir(parents=True, exist_ok=True)
    dest = sitelib / PACKAGE
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(SRC / PACKAGE, dest, ignore=IGNORE)

    info = sitelib / dist_info_name(name, version)
    if info.exists():
        shutil.rmtree(info)
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if meta.get("description"):
        lines.append(f"Summary: {meta['description']}")
    if meta.get("license"):
        lines.append(f"License: {meta['license']}")
    if cfg.has_option("options", "python_requires"):
        lines.append(f"Requires-Python: {cfg['options']['python_requires']}")
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    eps = entry_points(cfg)
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{n} = {t}\n" for n, t in sorted(items.items())) + "\n"
        for group, items in eps.items()))
    (info / "top_level.txt").write_text(PACKAGE + "\n")
    (info / "INSTALLER").write_text("rpm\n")
    # RECORD without hashes (allowed by the spec); pip must not manage
    # an RPM-owned package anyway.
    files = sorted(p for p in list(dest.rglob("*")) + list(info.rglob("*")) if p.is_file())
    rel = [os.path.relpath(p, sitelib) for p in files]
    rel.append(os.path.relpath(info / "RECORD", sitelib))
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in rel))


def write_launcher(name: str, dest: Path, python: str = "/usr/bin/python3") -> None:
    scripts = entry_points(setup_cfg()).get("console_scripts", {})
    if name not in scripts:
        sys.exit(f"pyinstall: no console script {name!r} in setup.cfg "
                 f"(have: {', '.join(sorted(scripts))})")
    module, _, func = scripts[name].partition(":")
    if not module or not func or not func.replace(".", "_").isidentifier():
        sys.exit(f"pyinstall: cannot make a launcher for {name} = {scripts[name]}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(
        f"#!{python} -s\n"
        f"# {name}: launcher installed by condor-cloud-plugins ({scripts[name]}).\n"
        "import sys\n"
        f"from {module} import {func.split('.')[0]}\n"
        "\n"
        "if __name__ == \"__main__\":\n"
        f"    sys.exit({func}())\n")
    dest.chmod(0o755)


def main(argv) -> None:
    if len(argv) == 2 and argv[0] == "package":
        install_package(Path(argv[1]))
    elif len(argv) in (3, 4) and argv[0] == "launcher":
        write_launcher(argv[1], Path(argv[2]), *argv[3:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
