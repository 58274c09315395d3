"""Provisioning: observed state, the pure policy and packing, and the daemon shell."""
