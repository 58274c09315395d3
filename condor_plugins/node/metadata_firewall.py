"""The node's metadata firewall (knob PROTECT_METADATA): the iptables and
ip6tables rules that keep jobs and containers from the cloud's metadata
service, and ``PROTECT_METADATA_SCRIPT``, the bootcmd that applies them.
"""

from __future__ import annotations

#: The metadata services (they serve the user data, so the token): EC2's IMDS
#: (IPv6 on Nitro) and OpenStack's (Nova: fe80::a9fe:a9fe since Victoria).
METADATA_ADDRESSES = {"iptables": ("169.254.169.254",),
                      "ip6tables": ("fd00:ec2::254", "fe80::a9fe:a9fe")}
METADATA_CHAIN = "CP-METADATA"
# Root (cloud-init) and condor (node control reads spot notices, control.py)
# may reach it; any other uid (jobs) is rejected.  Every packet forwarded to it
# (containers on a bridge, NATed or not) is dropped in mangle FORWARD, which
# comes before filter FORWARD, where container runtimes (Docker, CNI) insert
# their ACCEPTs on top of our REJECT when they start.  On OpenStack this is
# the only guard (EC2 also has the IMDSv2 hop limit of 1, providers/ec2.py).
_CHAIN_RULES = ("-m owner --uid-owner 0 -j RETURN", "-m owner --uid-owner condor -j RETURN",
                "-j REJECT")
_HOOKS = {"filter": (("OUTPUT", "-j " + METADATA_CHAIN), ("FORWARD", "-j REJECT")),
          "mangle": (("FORWARD", "-j DROP"),)}


def metadata_ruleset(tool: str, present=()) -> str:
    """The ``iptables-restore --noflush`` input that the boot script feeds
    ``tool``-restore (``tool``: a key of METADATA_ADDRESSES): the chain is
    (re)declared, so flushed and refilled; a hook rule in ``present``, as
    (table, chain, rule), is already there and not inserted again."""
    out = [f"*filter\n:{METADATA_CHAIN} - [0:0]"]
    out += [f"-A {METADATA_CHAIN} {r}" for r in _CHAIN_RULES]
    for table, hooks in _HOOKS.items():
        if table != "filter":
            out += ["COMMIT", f"*{table}"]
        out += [f"-I {chain} 1 -d {a} {target}" for a in METADATA_ADDRESSES[tool]
                for chain, target in hooks if (table, chain, f"-d {a} {target}") not in present]
    return "\n".join(out + ["COMMIT"]) + "\n"


def _protect_metadata_script() -> str:
    """sh for bootcmd (root, every boot, before any service).  Per family: the
    tool must work (else its error), then metadata_ruleset() goes through
    ``-restore --noflush``, one transaction; a hook rule that ``-C`` finds is
    left out, so a re-run adds nothing.  The input is built before -restore
    runs (legacy -restore holds the xtables lock that -C waits for).  A family
    that fails (no ip6tables, IPv6 off) is named with its error on the console
    and in cloud-init-output.log, the other is applied, and the node joins the
    pool all the same: the boot never fails on it (the policy since the first
    release)."""
    loops = []
    for table, hooks in _HOOKS.items():
        if table != "filter":
            loops.append(f"echo 'COMMIT\n*{table}'")
        loops.append("for a;do " + ";".join(f'j {table} {c} "-d $a {t}"' for c, t in hooks)
                     + ";done")
    head = metadata_ruleset("iptables").split("\n-I ")[0]   # *filter and the chain
    return "\n".join([
        'j(){ $t -w -t $1 -C $2 $3 2>/dev/null||echo "-I $2 1 $3";}',
        f"r(){{ echo '{head}';" + ";".join(loops) + ";echo COMMIT;}",
        'f(){ t=$1;shift;e=$($t -w -S OUTPUT 2>&1 >/dev/null)&&i=$(r "$@")&&e=$(printf '
        '"%s\\n" "$i"|$t-restore -w --noflush 2>&1)||echo "condor_plugins: cannot '
        'firewall the metadata service with $t (jobs may read the user data): $e" >&2;}']
        + [f"f {tool} {' '.join(a)}" for tool, a in METADATA_ADDRESSES.items()])


PROTECT_METADATA_SCRIPT = _protect_metadata_script()
