# Globus::GRAM::JobManager::cloud -- the GRAM job manager type behind
# jobmanager-cloud (and, through its subclass nocloud.pm, jobmanager-nocloud).
#
# It is jobmanager-condor with one difference: condor_submit is run as
# condor_plugins' condor_submit_cloud with "--mode <mode of this type>".
# The submit description, the job states, cancel and stdio are
# Globus::GRAM::JobManager::condor's own code. Around it, this module only
#  - refuses a client's condorsubmit that would leave the vanilla universe;
#  - hands condor.pm's poll() the HTCondor log without nested ads (see poll);
#  - removes the job's HTCondor log when the job is over, which the C job
#    manager does for its own type "condor" only.
# GRAM's C job manager treats "condor" specially by name (its built-in log
# watcher, the exit-code extension): for this type it polls, calling poll()
# every 10 s per job, as for any LRM without a SEG module (GCT has no condor
# SEG module to give it with -seg-module).
#
# condor_submit_cloud ANDs the mode's clause into the job's Requirements with
# condor_submit's APPEND_REQ_VANILLA mechanism, that is after condor_submit
# has read the whole submit description: the clause is ANDed with whatever
# Requirements the job ends up with, GRAM's own line (OpSys, Arch, Memory) or
# a client's (condorsubmit=(requirements ...)); with a client
# "+Requirements" it is ANDed into that. The clauses themselves and the mode
# names live in Python (condor_plugins.steering.modes), not here.
#
# Configuration: ${sysconfdir}/globus/globus-cloud.conf (/etc/globus), or
# $GLOBUS_LOCATION/etc/globus/globus-cloud.conf if that exists (a job manager
# run with "-home DIR" in its -conf file; the job manager gives its Perl
# scripts only a fixed environment, GLOBUS_LOCATION being part of it):
#   condor_submit_cloud="/usr/bin/condor_submit_cloud"
#   <type>_mode="cloud|local|any"      e.g. cloud_mode="cloud", nocloud_mode="local"
#   condor_config="PATH"               optional: CONDOR_CONFIG for these types
#                                      (else globus-condor.conf's, as for condor)
#
# Installed as ${perlmoduledir}/Globus/GRAM/JobManager/cloud.pm; see
# jobmanager/README.md.

use strict;
use warnings;

use Globus::GRAM::Error;
use Globus::GRAM::JobState;
use Globus::GRAM::JobManager::condor;
use Globus::Core::Config;
use IPC::Open3 ();

package Globus::GRAM::JobManager::cloud;

our @ISA = qw(Globus::GRAM::JobManager::condor);

# The mode of each type when globus-cloud.conf does not name one.
my %DEFAULT_MODE = (cloud => 'cloud', nocloud => 'local');

# condor_submit commands a client may not set through (condorsubmit=...):
# they would take the job out of the vanilla universe, where the mode's
# clause is applied.
my %FORBIDDEN_KEY = map { $_ => 1 } qw(universe jobuniverse);

sub cloud_config_path
{
    my $location = $ENV{GLOBUS_LOCATION};

    if (defined($location) && $location ne ''
        && -f "$location/etc/globus/globus-cloud.conf")
    {
        return "$location/etc/globus/globus-cloud.conf";
    }
    return '${sysconfdir}/globus/globus-cloud.conf';
}

# The settings of this type: {type, wrapper, mode, condor_config, error}.
sub cloud_settings
{
    my $self = shift;
    my ($type) = (ref($self) || $self) =~ /([^:]+)$/;
    # undef when the file does not exist: the defaults apply
    my $config = Globus::Core::Config->new(cloud_config_path());
    my $get = sub { $config ? $config->get_attribute($_[0]) : undef };
    my $mode = $get->("${type}_mode") || $DEFAULT_MODE{$type};

    return {
        type => $type,
        wrapper => $get->('condor_submit_cloud') || 'condor_submit_cloud',
        mode => $mode,
        condor_config => $get->('condor_config'),
        error => defined($mode) ? undef
                 : "no mode for GRAM type $type (${type}_mode in " . cloud_config_path() . ")",
    };
}

sub new
{
    my $proto = shift;
    my $class = ref($proto) || $proto;
    my $description = $_[0];
    my $settings = $class->cloud_settings();

    # For condor_submit (through the wrapper) and condor_rm alike.
    $ENV{CONDOR_CONFIG} = $settings->{condor_config} if $settings->{condor_config};

    my $existed = 1;
    if ($ENV{GLOBUS_SPOOL_DIR} && ref($description))
    {
        $existed = -e "$ENV{GLOBUS_SPOOL_DIR}/condor." . $description->uniq_id();
    }
    my $self = $class->SUPER::new(@_);
    $self->{cloud} = $settings;

    # condor.pm's new() creates the job's (empty) HTCondor log, condor.<id> in
    # the job state directory the C job manager passes as GLOBUS_SPOOL_DIR,
    # for every script command, and the C job manager removes it for its own
    # type "condor" only. condor_submit creates it when it queues the job;
    # for any other command a missing log means the job is over (condor.pm's
    # poll() says DONE). So an empty log made just now goes again.
    if (!$existed && -z $self->{condor_logfile})
    {
        unlink($self->{condor_logfile});
    }
    return $self;
}

sub submit
{
    my $self = shift;
    my $result = $self->cloud_submit(@_);

    if (ref($result) ne 'HASH' || !$result->{JOB_ID})
    {
        unlink($self->{condor_logfile});      # nothing was queued
    }
    return $result;
}

sub cloud_submit
{
    my ($self, @args) = @_;
    my $description = $self->{JobDescription};
    my ($type, $wrapper, $mode, $error) = @{$self->{cloud}}{qw(type wrapper mode error)};

    if (defined($error))
    {
        return $self->respond_with_failure_extension(
            "jobmanager-$type: $error",
            Globus::GRAM::Error::GATEKEEPER_MISCONFIGURED());
    }

    # Only single and multiple jobs become vanilla universe jobs.
    my $jobtype = $description->jobtype();
    if ($jobtype ne 'single' && $jobtype ne 'multiple')
    {
        return Globus::GRAM::Error::JOBTYPE_NOT_SUPPORTED();
    }
    foreach my $pair ($description->condorsubmit())
    {
        next unless ref($pair) && scalar(@$pair) == 2;   # condor.pm rejects those
        my ($key, $value) = @$pair;
        if ("$key$value" =~ /[\r\n]/)
        {
            return $self->respond_with_failure_extension(
                "jobmanager-$type: condorsubmit entries must be single lines",
                Globus::GRAM::Error::RSL_SCHEDULER_SPECIFIC());
        }
        (my $name = lc($key)) =~ s/^\s*(?:\+|my\.)?//;
        $name =~ s/\s+$//;
        if ($FORBIDDEN_KEY{$name})
        {
            return $self->respond_with_failure_extension(
                "jobmanager-$type: condorsubmit may not set $key",
                Globus::GRAM::Error::RSL_SCHEDULER_SPECIFIC());
        }
    }

    # condor.pm runs IPC::Open3::open3(IN, OUT, ERR, <condor_submit>, <file>).
    # For the length of its submit(), run the wrapper in its place.
    my $open3 = \&IPC::Open3::open3;
    my $wrapped = 0;
    my $result;
    {
        no warnings 'redefine';
        local *IPC::Open3::open3 = sub {
            my ($in, $out, $err, $command, @rest) = @_;
            $wrapped++;
            $self->log("jobmanager-$type: running $wrapper --mode $mode"
                       . " in place of $command");
            return $open3->($in, $out, $err, $wrapper, '--mode', $mode, @rest);
        };
        $result = $self->SUPER::submit(@args);
    }

    if (!$wrapped && ref($result) eq 'HASH' && $result->{JOB_ID})
    {
        # condor.pm no longer submits the way this module expects: never
        # leave a job that went round the wrapper in the queue.
        my ($cluster) = $result->{JOB_ID} =~ /^0*(\d+)/;
        system('condor_rm', $cluster) if defined($cluster);
        return $self->respond_with_failure_extension(
            "jobmanager-$type: condor.pm did not run condor_submit through"
            . " IPC::Open3::open3; job $result->{JOB_ID} removed",
            Globus::GRAM::Error::JOB_EXECUTION_FAILED());
    }
    return $result;
}

sub cancel
{
    my $self = shift;
    my $result = $self->SUPER::cancel(@_);

    if (ref($result) eq 'HASH')   # condor_rm succeeded
    {
        # HTCondor logs the abort event just after condor_rm returns, and
        # would create the log again: wait for it (a few seconds at most).
        my $log = $self->{condor_logfile};
        for (my $i = 0; $i < 50; $i++)
        {
            my $fh;
            last if open($fh, '<', $log)
                    && grep { m{<a n="EventTypeNumber"><i>9</i>} } <$fh>;
            select(undef, undef, undef, 0.1);
        }
        unlink($log);
    }
    return $result;
}

# condor.pm's poll() reads the job's XML user log line by line and takes
# every "<c>" for the start of an event. HTCondor >= 9 nests an ad in the
# execute event (ExecuteProps), so condor.pm never counts an execute event and
# the job stays PENDING until it is DONE. Give it the log without the nested
# ads: the state logic stays condor.pm's.
sub poll
{
    my $self = shift;
    my $log = $self->{condor_logfile};
    my $result;

    if (open(my $in, '<', $log))
    {
        my $flat = $self->job_dir() . '/condor_log_events';
        open(my $out, '>', $flat)
            or return $self->SUPER::poll(@_);
        my $depth = 0;
        while (my $line = <$in>)
        {
            my $max = $depth;
            while ($line =~ m{<(/?)c>}g)
            {
                $depth += $1 ? -1 : 1;
                $max = $depth if $depth > $max;
            }
            print $out $line if $max <= 1;
        }
        close($in);
        close($out);
        local $self->{condor_logfile} = $flat;
        $result = $self->SUPER::poll(@_);
        unlink($flat);
    }
    else
    {
        $result = $self->SUPER::poll(@_);
    }

    # The job's HTCondor log (condor.<id> in the job state directory): the
    # C job manager deletes it for its own type "condor" only.
    if (ref($result) eq 'HASH' && defined($result->{JOB_STATE})
        && ($result->{JOB_STATE} == Globus::GRAM::JobState::DONE
            || $result->{JOB_STATE} == Globus::GRAM::JobState::FAILED))
    {
        unlink($log);
    }
    return $result;
}

1;
