"""condor_plugins: run a grid site's HTCondor jobs on opportunistic cloud VMs."""

__version__ = "0.1.0"
