"""``condor_cloud simulate``: the provisioner's own policy in a simulated world
(trace.py reads histories, match.py decides where jobs may run, world.py is
the clock, clouds and negotiator, controllers.py drives it, report.py and
command.py show the result)."""
