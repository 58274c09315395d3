"""Job steering: cloud modes, condor_submit_cloud and the JobRouter hooks.

Kept import-free: the route hooks start on a fast path."""
