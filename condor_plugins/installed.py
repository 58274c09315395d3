"""Where this installation keeps its config fragments and commands, and the
config file that enables a pip (virtual environment) install without the RPM.

The RPM puts the site fragments in HTCondor's own ``/usr/share/condor/config.d``
and the daemon and route hooks in ``$(LIBEXEC)``.  ``pip install`` puts the
fragments in ``<prefix>/share/condor-cloud-plugins/config.d`` (setup.cfg's
data_files) and the commands in ``<prefix>/bin``: ``condor_cloud config``
prints the file that includes those fragments and points ``CLOUD_PROVISIONER``
and ``CLOUD_PLUGINS_HOOK_DIR`` at those commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from .localpool import shipped_config_dir

__all__ = ["SITE_FRAGMENTS", "command", "pip_config"]

#: The site fragments, in the order HTCondor reads them (the RPM's config.d).
SITE_FRAGMENTS = ("10-cloud-plugins-defaults.conf", "20-cloud-central-manager.conf",
                  "20-cloud-submit.conf", "30-cloud-provisioner.conf", "40-cloud-route.conf")


def command(name: str) -> Optional[Path]:
    """This installation's command ``name`` in ``<prefix>/bin`` (pip, venv), if any."""
    path = Path(sys.prefix) / "bin" / name
    return path if path.is_file() else None


#: Where the RPM puts the site fragments (HTCondor reads them from there).
RPM_CONFIG_DIR = Path("/usr/share/condor/config.d")


def _has_fragments(directory: Path) -> bool:
    return all((directory / f).is_file() for f in SITE_FRAGMENTS)


def pip_config(allow_rpm: bool = False) -> str:
    """The HTCondor config file for this (non-RPM) installation.  With
    ``allow_rpm`` (``condor_cloud try``: a pool with a config of its own), an
    RPM install gives the includes of its fragments."""
    fragments = shipped_config_dir()
    if not _has_fragments(fragments):
        if _has_fragments(RPM_CONFIG_DIR):
            if not allow_rpm:
                raise RuntimeError(f"installed by the RPM: its fragments are in {RPM_CONFIG_DIR}, "
                                   "which HTCondor already reads; nothing to add")
            return "".join(f"include : {RPM_CONFIG_DIR / f}\n" for f in SITE_FRAGMENTS)
        raise RuntimeError(f"no config fragments in {fragments}: install with pip "
                           "(pip install .) or the RPM")
    daemon = command("condor_cloud_provisioner")
    hook = command("condor_cloud_route_translate")
    if daemon is None or hook is None:
        raise RuntimeError(f"no condor_cloud_provisioner or route hooks in {sys.prefix}/bin: "
                           "install with pip (pip install .) first")
    lines = [
        f"# condor_plugins installed in {sys.prefix} (pip), written by `condor_cloud config`.",
        "# It stands in for the RPM's /usr/share/condor/config.d fragments: put it in",
        "# HTCondor's config.d before your settings, e.g.",
        "#   condor_cloud config > /etc/condor/config.d/50-cloud-plugins.conf",
        "# and set your knobs in /etc/condor/config.d/99-cloud-plugins-local.conf.",
        "# HTCondor-CE: the routes are in "
        f"{fragments / 'ce' / '50-cloud-routes.conf'} (include it from /etc/condor-ce/config.d).",
    ]
    lines += [f"include : {fragments / f}" for f in SITE_FRAGMENTS]
    lines += ["# The commands are in this installation's bin, not $(LIBEXEC).",
              f"CLOUD_PROVISIONER = {daemon}", f"CLOUD_PLUGINS_HOOK_DIR = {hook.parent}"]
    return "\n".join(lines) + "\n"
