"""The contextualisation knobs: the table ``KNOBS`` and its Markdown reference.

``knobs_markdown()`` is docs/knobs-contextualisation.md, generated with
``python3 -m condor_plugins.node.contextualize`` (or this module, the same).
``context_config.context_from_config`` reads the knobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from ..config import PREFIX
from .context import (CVMFS_LOCAL, DEFAULT_REPOSITORIES, INSTANCE_CONF, SITECONF_BASE,
                      TOKEN_FILE, WORKER_CONF)


@dataclass(frozen=True)
class ContextKnob:
    name: str            # without prefix and entry
    default: str         # as written in a config file
    type: str            # a key of config.PARSERS
    doc: str
    global_fallback: bool = True   # False: only CLOUD_PLUGINS_<ENTRY>_<NAME>


#: Per-entry contextualisation knobs, read as ``CLOUD_PLUGINS_<ENTRY>_<NAME>``,
#: then (if global_fallback) ``CLOUD_PLUGINS_<NAME>``, then the default.  They
#: are unknown to condor_plugins.config.KNOBS, so providers see them among their
#: settings too (one REGION knob serves the provider and the node's ad).
KNOBS: Tuple[ContextKnob, ...] = (
    ContextKnob("CVMFS_REPOSITORIES", ",".join(DEFAULT_REPOSITORIES), "list",
                "CVMFS repositories mounted on the VM (`CVMFS_REPOSITORIES`), comma or "
                "space separated."),
    ContextKnob("CVMFS_HTTP_PROXY", "DIRECT", "str",
                "`CVMFS_HTTP_PROXY` of the VM: `DIRECT`, or proxies such as "
                "`http://squid1:3128|http://squid2:3128` (`|` balances, `;` fails over). "
                "Use the site's squids for more than a handful of VMs."),
    ContextKnob("CVMFS_QUOTA_LIMIT", "20000", "int",
                "CVMFS cache size on the VM, MB (`CVMFS_QUOTA_LIMIT`); at least 1000."),
    ContextKnob("CMS_LOCAL_SITE", "", "str",
                "CMS site name (e.g. `T2_XX_Example`). Set: a local SITECONF is written "
                f"to `{SITECONF_BASE}/<site>/JobConfig/site-local-config.xml` and "
                "`CMS_LOCAL_SITE` in default.local points "
                "`/cvmfs/cms.cern.ch/SITECONF/local` at it. Empty: no SITECONF, no "
                "`CMS_LOCAL_SITE`."),
    ContextKnob("STAGEOUT_PROTOCOL", "SRMv2", "str",
                "Stage-out protocol of site-local-config.xml: the protocol name in the "
                "storage description (names are case-sensitive there)."),
    ContextKnob("STAGEOUT_COMMAND", "gfal2", "str",
                "Stage-out command (WMCore implementation name) of site-local-config.xml."),
    ContextKnob("STORAGE_DESCRIPTION", "", "str",
                "The site's storage description (trivial file catalogue) that "
                "site-local-config.xml points to: an absolute path on the VM, optionally "
                "with the `trivialcatalog_file:` prefix. Empty: "
                "`/cvmfs/cms.cern.ch/SITECONF/<site>/PhEDEx/storage.xml`."),
    ContextKnob("USER_DATA_TEMPLATE_DIR", "", "str",
                "Directory on the provisioner host whose files are added to the VM, at the "
                "same path below `/` (`DIR/etc/x.conf` becomes `/etc/x.conf`), owned by "
                "root with the file's permission bits. Regular files only; a file may not "
                "replace one that contextualisation writes itself. Empty: none."),
    ContextKnob("CENTRAL_MANAGER", "", "str",
                "host[:port] by which the VMs reach the central manager (its public name "
                "if the VMs are outside the site). Empty: the value of `COLLECTOR_HOST`.",
                False),
    ContextKnob("PLATFORM", "", "str",
                "→ `CloudPlatform` of the nodes. Empty: the entry's provider type.", False),
    ContextKnob("REGION", "unknown", "str", "→ `CloudRegion` of the nodes (also a setting "
                "of providers that need a region).", False),
    ContextKnob("ZONE", "unknown", "str", "→ `CloudZone` of the nodes.", False),
    ContextKnob("INTERRUPTIBLE", "false", "bool",
                "→ `CloudInterruptible`: the entry's VMs may be preempted; unset, "
                "the entry's `SPOT` setting decides (false if it has none).", False),
    ContextKnob("IDLE_SHUTDOWN", "1200", "duration",
                "A node unclaimed this long shuts itself down and powers off "
                "(`CLOUD_PLUGINS_IDLE_SHUTDOWN` on the node); at least 60 s. A safety net "
                "behind the provisioner's own idle drain.", False),
    ContextKnob("SHUTDOWN_GRACE", "60", "duration",
                "`CLOUD_PLUGINS_SHUTDOWN_GRACE` on the node.", False),
    ContextKnob("POWEROFF_SCRIPT", "/sbin/poweroff", "str",
                "Run on the node when HTCondor exits after an idle shutdown "
                "(`CLOUD_PLUGINS_POWEROFF_SCRIPT`). `none`: just stop HTCondor.", False),
    ContextKnob("CONTROL_PERIOD", "60", "duration",
                "How often the node reads the provisioner's ad for retire requests and "
                "the lease (`STARTD_CRON`, `CLOUD_PLUGINS_CONTROL_PERIOD`); at least 1 s.",
                False),
    ContextKnob("LEASE", "1800", "duration",
                "A node that has not seen the provisioner's ad renewed for this long "
                "retires by itself (no new job, running jobs finish, power-off): a dead "
                "provisioner leaves nothing running. At least 3 cycles.", True),
    ContextKnob("MAX_LIFETIME", "", "duration",
                "The node retires by itself this long after its startd started. Empty: "
                "the worker token's lifetime (`CLOUD_PLUGINS_WORKER_TOKEN_LIFETIME`), "
                "which it may not exceed.", True),
    ContextKnob("MAX_RETIRE_TIME", "86400", "duration",
                "Once a node retires, how long its running jobs may take to finish before "
                "they are vacated (`MAXJOBRETIREMENTTIME` on the node).", True),
    ContextKnob("PROTECT_METADATA", "true", "bool",
                "Firewall the cloud's metadata service (169.254.169.254, and over IPv6 "
                "fd00:ec2::254 and fe80::a9fe:a9fe; it serves the user data and so the "
                "node's token) from every process but root's and the condor user's (node "
                "control reads spot notices there), and from all forwarded traffic "
                "(containers on a bridge), so jobs cannot read it. Needs iptables (and "
                "ip6tables) on the image.", True),
    ContextKnob("WATCHDOG", "900", "duration",
                "The VM powers itself off (`POWEROFF_SCRIPT`) when `condor_master` has "
                "not run for this long, HTCondor or not: a VM whose HTCondor never starts, "
                "or died, is not billed for ever. A loop started by cloud-init; at least "
                "10 s, well above the time HTCondor takes to start. `0`: no watchdog (nor "
                "with `POWEROFF_SCRIPT = none`).", True),
    ContextKnob("CCB_ADDRESS", "", "str",
                "CCB broker of the nodes. Empty: the central manager (NAT-safe); `none`: "
                "no CCB (VMs with addresses the schedds can reach).", False),
)


# ------------------------------------------------------------------ docs

def knobs_markdown() -> str:
    """The knob table as Markdown (docs/knobs-contextualisation.md)."""
    lines = [
        "# Contextualisation knobs",
        "",
        "Generated from `condor_plugins/node/contextualize.py`",
        "(`python3 -m condor_plugins.node.contextualize > docs/knobs-contextualisation.md`);",
        "do not edit by hand. They shape the cloud-init user-data of each new VM of a",
        "provider entry. `<ENTRY>` is a name from `CLOUD_PLUGINS_PROVIDERS`. Each knob is",
        "read as `CLOUD_PLUGINS_<ENTRY>_<KNOB>`, then (scope *entry*) as",
        "`CLOUD_PLUGINS_<KNOB>`, then the default; scope *entry-only* has no global",
        "fallback (the global names are the node's own knobs, docs/knobs.md).",
        "An empty value counts as unset. Durations are seconds, or a number with",
        "`s`, `m`, `h` or `d`. The provider sees these knobs among its settings too.",
        "Bad values are errors naming the knob.",
        "",
        "The user-data (`#cloud-config`) writes, all owned by `root:root`:",
        f"`{CVMFS_LOCAL}` (0644); with a CMS site, `{SITECONF_BASE}/<site>/JobConfig/`",
        "`site-local-config.xml` (0644); the shipped worker fragment as",
        f"`{WORKER_CONF}` and the per-instance knobs as `{INSTANCE_CONF}` (0644);",
        f"the node's IDTOKEN as `{TOKEN_FILE}` (0600); the template files. Then it",
        "runs `cvmfs_config setup` and `systemctl enable --now condor`: the image must",
        "provide the CVMFS client and HTCondor.",
        "",
        "| Knob | Scope | Type | Default | Description |",
        "|---|---|---|---|---|",
    ]
    for k in KNOBS:
        scope, entry = ("entry", "[<ENTRY>_]") if k.global_fallback else ("entry-only",
                                                                            "<ENTRY>_")
        default = f"`{k.default}`" if k.default else "*(empty)*"
        lines.append(f"| `{PREFIX}{entry}{k.name}` | {scope} | {k.type} | {default} | "
                     f"{k.doc.replace('|', chr(92) + '|')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(knobs_markdown(), end="")
