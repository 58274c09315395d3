# Globus::GRAM::JobManager::nocloud -- the GRAM job manager type behind
# jobmanager-nocloud: jobmanager-cloud with the mode nocloud_mode of
# globus-cloud.conf (default "local": never on a cloud node).
#
# A type of its own (not jobmanager-cloud with another option) because the
# C job manager shares one process per user, type and service tag: two
# services of the same type would hand each other's jobs over.

use strict;
use warnings;

use Globus::GRAM::JobManager::cloud;

package Globus::GRAM::JobManager::nocloud;

our @ISA = qw(Globus::GRAM::JobManager::cloud);

1;
