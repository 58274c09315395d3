"""The VM's watchdog, independent of HTCondor: power off when ``condor_master``
has not run for a while.

Node control by pulling (control.py) needs a running HTCondor. A VM whose
HTCondor never starts (a broken image, a bad config file, a full disk), or
whose master died and stayed dead, would otherwise be billed until someone
notices. Contextualisation writes ``SCRIPT`` to ``SCRIPT_PATH`` and starts it
from cloud-init's ``runcmd`` before HTCondor, as a plain background loop:

    condor_cloud_watchdog <seconds> <power-off command>

Every ``min(30, seconds / 3)`` s it looks for a process named
``condor_master`` (in /proc, so no procps is needed). Once none has been seen
for ``seconds`` (counted from the watchdog's start, so the boot is covered),
it logs why to standard error and runs the power-off command.
"""

from __future__ import annotations

__all__ = ["SCRIPT", "SCRIPT_PATH", "LOG_PATH"]

SCRIPT_PATH = "/usr/libexec/condor/condor_cloud_watchdog"
LOG_PATH = "/var/log/condor-cloud-watchdog.log"

SCRIPT = r"""#!/bin/sh
# condor_plugins VM watchdog: power off when condor_master has not run for
# $1 seconds. Arguments: seconds power-off-command...
limit=$1; shift
period=$((limit / 3)); [ "$period" -gt 30 ] && period=30; [ "$period" -lt 1 ] && period=1
last=$(date +%s)
echo "$(date -u +%FT%TZ) watchdog: powering off if condor_master does not run for ${limit}s" >&2
while sleep "$period"; do
  now=$(date +%s)
  if grep -qx condor_master /proc/[0-9]*/comm 2>/dev/null; then
    last=$now
  elif [ $((now - last)) -ge "$limit" ]; then
    echo "$(date -u +%FT%TZ) watchdog: condor_master has not run for $((now - last))s: $*" >&2
    exec "$@"
  fi
done
"""
