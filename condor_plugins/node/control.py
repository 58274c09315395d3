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

* On an interruptible (spot) VM, the instance-action notice of the metadata
  service (IMDSv2, ``/latest/meta-data/spot/instance-action``): the node
  publishes ``CloudInterruption = "<action> at <time>"`` (sticky). The worker
  fragment then preempts every job at once (no retirement time, a short vacate
  time), so the schedds requeue them before the cloud takes the VM back, and
  the node retires as below.

The worker fragment turns the first two, or ``CLOUD_PLUGINS_MAX_LIFETIME`` since the
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
ATTRS = ("CloudRetireRequested", "CloudLeaseExpired", "CloudLeaseRenewed", "CloudControlReason",
         "CloudInterruption", "CloudInterruptionSeen")

SCRIPT = r"""#!/bin/sh
# condor_plugins node control (STARTD_CRON): pull retire requests and the
# lease from the provisioner's collector ad. Prints ClassAd attributes.
# Arguments: provisioner-name request-id lease-seconds state-file-prefix interruptible
prov=$1 req=$2 lease=$3 state=$4 interruptible=$5
now=$(date +%s)
[ -f "$state.boot" ] || echo "$now" > "$state.boot"
imds="http://169.254.169.254/latest"
# GET one metadata path with an IMDSv2 session token (curl or wget).
metadata() {
  if command -v curl >/dev/null 2>&1; then
    t=$(curl -sf -m 2 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" "$imds/api/token") &&
      curl -sf -m 2 -H "X-aws-ec2-metadata-token: $t" "$imds/meta-data/$1"
  else
    t=$(wget -q -T 2 -t 1 -O - --method=PUT \
          --header="X-aws-ec2-metadata-token-ttl-seconds: 60" "$imds/api/token") &&
      wget -q -T 2 -t 1 -O - --header="X-aws-ec2-metadata-token: $t" "$imds/meta-data/$1"
  fi
}
case "$interruptible" in
  [Tt]rue)
    if [ ! -f "$state.interruption" ]; then
      notice=$(metadata spot/instance-action 2>/dev/null | tr -d '\n"{}\\' | head -c 300)
      if [ -n "$notice" ]; then
        action=$(echo "$notice" | tr ',' '\n' | sed -n 's/^ *action *: *//p')
        when=$(echo "$notice" | tr ',' '\n' | sed -n 's/^ *time *: *//p')
        echo "$now" > "$state.interruption-seen"
        echo "${action:-interruption} at ${when:-unknown time}" | tr -cd 'A-Za-z0-9:. -' \
          > "$state.interruption"
      fi
    fi ;;
esac
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
if [ -f "$state.interruption" ]; then
  echo "CloudInterruption = \"$(cat "$state.interruption")\""
  echo "CloudInterruptionSeen = $(cat "$state.interruption-seen" 2>/dev/null || echo "$now")"
  reason="cloud interruption notice: $(cat "$state.interruption")"
fi
echo "CloudLeaseRenewed = $renewed"
echo "CloudControlReason = \"$reason\""
"""
