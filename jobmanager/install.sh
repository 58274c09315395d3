#!/bin/sh
# jobmanager/install.sh: install jobmanager-cloud and jobmanager-nocloud next to
# jobmanager-condor (GRAM, globus-gram-job-manager-condor).
#
#   jobmanager/install.sh                 install into the running system (root)
#   DESTDIR=%{buildroot} jobmanager/install.sh    for a package build
#
# Locations (override with the variables of the same name):
#   PERLMODULEDIR  where Globus/GRAM/JobManager/condor.pm lives
#                  (Debian /usr/share/perl5, EL /usr/share/perl5/vendor_perl)
#   VALIDATIONDIR  /usr/share/globus/globus_gram_job_manager (the .rvf files)
#   SYSCONFDIR     /etc (globus/globus-cloud.conf, grid-services/available/)
#
# An existing globus-cloud.conf is kept (the new one goes to
# globus-cloud.conf.new). Enabling a service is the administrator's step:
#   globus-gatekeeper-admin -e jobmanager-cloud
#   globus-gatekeeper-admin -e jobmanager-nocloud
set -eu

here=$(cd "$(dirname "$0")" && pwd)
DESTDIR=${DESTDIR:-}
SYSCONFDIR=${SYSCONFDIR:-/etc}
VALIDATIONDIR=${VALIDATIONDIR:-/usr/share/globus/globus_gram_job_manager}
if [ -z "${PERLMODULEDIR:-}" ]; then
  # The directory that holds GRAM's own Perl modules, else the vendor default.
  PERLMODULEDIR=$(perl -e 'for (@INC) { if (-f "$_/Globus/GRAM/JobManager.pm") { print; exit } }' 2>/dev/null || true)
  if [ -z "$PERLMODULEDIR" ]; then
    if [ -d /usr/share/perl5/vendor_perl ]; then PERLMODULEDIR=/usr/share/perl5/vendor_perl
    else PERLMODULEDIR=/usr/share/perl5; fi
  fi
fi

inst() {  # inst MODE SRC DEST
  mkdir -p "$(dirname "$3")"
  cp "$2" "$3.tmp.$$"
  chmod "$1" "$3.tmp.$$"
  mv -f "$3.tmp.$$" "$3"
}

pm=$DESTDIR$PERLMODULEDIR/Globus/GRAM/JobManager
inst 0644 "$here/cloud.pm" "$pm/cloud.pm"
inst 0644 "$here/nocloud.pm" "$pm/nocloud.pm"
for type in cloud nocloud; do
  inst 0644 "$here/cloud.rvf" "$DESTDIR$VALIDATIONDIR/$type.rvf"
  inst 0644 "$here/jobmanager-$type" "$DESTDIR$SYSCONFDIR/grid-services/available/jobmanager-$type"
done
conf=$DESTDIR$SYSCONFDIR/globus/globus-cloud.conf
if [ -e "$conf" ] && ! cmp -s "$here/globus-cloud.conf" "$conf"; then
  inst 0644 "$here/globus-cloud.conf" "$conf.new"
  echo "jobmanager/install.sh: kept $conf; the shipped one is $conf.new" >&2
else
  inst 0644 "$here/globus-cloud.conf" "$conf"
fi
