"""Node-side control by pulling: the VM asks, the provisioner never has to reach it.

A real VM holds no key with which to verify the provisioner, so an inbound
``condor_drain`` is refused there.  Instead every node runs a ``STARTD_CRON``
job (``SCRIPT`` below, written to ``SCRIPT_PATH`` by contextualisation) that
reads the provisioner's own collector ad with the node's READ token:

* ``CloudRetireRequests``: the request ids the provisioner wants retired.  The
  node whose ``CLOUD_PLUGINS_REQUEST_ID`` is listed publishes
  ``CloudRetireRequested = True`` (and keeps it, even if the provisioner dies).
* ``LastCycleTime``: the lease.  When the node has not seen it change for
  ``CLOUD_PLUGINS_LEASE`` seconds (or never saw the ad since it booted),
  it publishes ``CloudLeaseExpired = True``.

The worker fragment turns either, or ``CLOUD_PLUGINS_MAX_LIFETIME`` since the
startd started, into a graceful retirement: ``START`` becomes False, the
startd's ``DAEMON_SHUTDOWN`` fires, running jobs get ``MAXJOBRETIREMENTTIME``
(``CLOUD_PLUGINS_MAX_RETIRE_TIME``) to finish, the master exits and the
power-off script runs.  No inbound connection, so it works behind NAT and CCB.
The script is plain POSIX sh: the image has HTCondor, not this package.
"""

from __future__ import annotations

__all__ = ["SCRIPT", "SCRIPT_PATH", "ATTRS"]

SCRIPT_PATH = "/usr/libexec/condor/condor_cloud_node_control"
#: What the script publishes into every slot ad.
ATTRS = ("CloudRetireRequested", "CloudLeaseExpired", "CloudLeaseRenewed", "CloudControlReason")

SCRIPT = r"""#!/bin/sh
# condor_plugins node control (STARTD_CRON): pull retire requests and the
# lease from the provisioner's collector ad. Prints ClassAd attributes.
# Arguments: provisioner-name request-id lease-seconds state-file-prefix
prov=$1 req=$2 lease=$3 state=$4
now=$(date +%s)
[ -f "$state.boot" ] || echo "$now" > "$state.boot"
line=$(condor_status -any -constraint \
  "MyType == \"CloudProvisioner\" && Name == \"$prov\"" \
  -af LastCycleTime CloudRetireRequests 2>/dev/null | head -n 1)
reason=""
if [ -n "$line" ]; then
  set -- $line
  # Renewed when LastCycleTime changes; timed by this node's own clock, so a
  # clock skew between the VM and the provisioner does not matter.
  case "$1" in
    ''|*[!0-9]*) ;;
    *) if [ "$1" != "$(cat "$state.cycle" 2>/dev/null)" ]; then
         echo "$1" > "$state.cycle"; echo "$now" > "$state.tmp" && mv "$state.tmp" "$state.renewed"
       fi ;;
  esac
  shift
  for r in "$@"; do
    if [ "$r" = "$req" ]; then echo "$now" > "$state.retire"; fi
  done
else
  reason="provisioner ad not found"
fi
renewed=$(cat "$state.renewed" 2>/dev/null || cat "$state.boot")
if [ -f "$state.retire" ]; then
  echo "CloudRetireRequested = True"
  reason="retire requested by the provisioner"
else
  echo "CloudRetireRequested = False"
fi
if [ $((now - renewed)) -gt "$lease" ]; then
  echo "CloudLeaseExpired = True"
  reason="lease expired: provisioner ad not renewed for $((now - renewed))s"
else
  echo "CloudLeaseExpired = False"
fi
echo "CloudLeaseRenewed = $renewed"
echo "CloudControlReason = \"$reason\""
"""
