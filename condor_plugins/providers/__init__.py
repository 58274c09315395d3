"""Cloud providers: the interface (``base``) and loading by entry point.

A site adds a provider without editing this package: a distribution declares

    [options.entry_points]
    condor_plugins.providers =
        mycloud = mypackage.mycloud:MyCloudProvider

and an entry sets ``CLOUD_PLUGINS_<ENTRY>_TYPE = mycloud``.
"""

from __future__ import annotations

from importlib import metadata
from typing import Dict, Type

from .base import (TAG_ENTRY, TAG_POOL, TAG_PROVISIONER, TAG_REQUEST, AuthError,
                   CapacityError, Instance, InstanceSpec, InstanceState, Provider,
                   ProviderError, QuotaError, TransientError, instance_tags, owner_tags)

__all__ = [
    "ENTRY_POINT_GROUP", "ProviderNotFound", "available", "provider_class",
    "Provider", "Instance", "InstanceSpec", "InstanceState",
    "ProviderError", "CapacityError", "QuotaError", "AuthError", "TransientError",
    "TAG_POOL", "TAG_PROVISIONER", "TAG_ENTRY", "TAG_REQUEST",
    "owner_tags", "instance_tags",
]

ENTRY_POINT_GROUP = "condor_plugins.providers"

#: Providers shipped in this package, found even when its metadata (entry
#: points) is not installed, e.g. when run from a source tree.
BUILTIN = {"local": "condor_plugins.providers.local:LocalProvider",
           "ec2": "condor_plugins.providers.ec2:EC2Provider",
           "openstack": "condor_plugins.providers.openstack:OpenStackProvider",
           "slurm": "condor_plugins.providers.slurm:SlurmProvider"}


class ProviderNotFound(LookupError):
    """No usable provider of the type an entry asks for."""


def _entry_points() -> Dict[str, metadata.EntryPoint]:
    eps = metadata.entry_points()
    group = eps.select(group=ENTRY_POINT_GROUP) if hasattr(eps, "select") \
        else eps.get(ENTRY_POINT_GROUP, ())  # Python 3.9
    return {ep.name: ep for ep in group}


def available() -> list:
    """Names of the installed provider types, sorted."""
    return sorted(_entry_points())


def provider_class(type_name: str, entry: str) -> Type[Provider]:
    """The Provider subclass registered as ``type_name``; ``entry`` is the
    configured entry that asked for it, named in the error."""
    eps = _entry_points()
    ep = eps.get(type_name)
    if ep is None and type_name in BUILTIN:
        ep = metadata.EntryPoint(type_name, BUILTIN[type_name], ENTRY_POINT_GROUP)
    if ep is None:
        installed = ", ".join(sorted(eps)) or "none"
        raise ProviderNotFound(
            f"provider entry {entry!r}: no provider of type {type_name!r} in entry point "
            f"group {ENTRY_POINT_GROUP} (installed: {installed})")
    try:
        cls = ep.load()
    except ImportError as err:
        raise ProviderNotFound(
            f"provider entry {entry!r}: provider {type_name!r} ({ep.value}) cannot be "
            f"imported: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ProviderNotFound(
            f"provider entry {entry!r}: {ep.value} (type {type_name!r}) is not a "
            f"condor_plugins Provider subclass")
    return cls
