"""The node's metadata firewall (issue 16) with the real tools, as root.

The rulesets (condor_plugins.node.contextualize.metadata_ruleset) go through
``iptables-restore --test`` and ``ip6tables-restore --test`` (nf_tables and,
where installed, legacy); then the boot script itself runs in a fresh network
namespace laid out like a cloud VM: the metadata service (169.254.169.254,
EC2's fd00:ec2::254, OpenStack's fe80::a9fe:a9fe) is one hop away, as on a
cloud, and a "container" namespace sits behind a bridge-like link, forwarded
and masqueraded as Docker does.  Everything reaches the service before the
rules; after them a job's uid and the container cannot, root and condor can,
even once a container runtime puts its own ACCEPT at the top of FORWARD.

Root comes from pytest running as root, else from a test VM (dev/vmhost, the
sandbox's one sudo rule): the scenario runs there under ``unshare -n``.
"""

import os
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from condor_plugins.node.metadata_firewall import PROTECT_METADATA_SCRIPT, metadata_ruleset

pytestmark = pytest.mark.integration

V4, EC2_V6, OS_V6 = "169.254.169.254", "fd00:ec2::254", "fe80::a9fe:a9fe"

# A TCP connect to port 80: ok, or how it failed (a REJECT: ConnectionRefusedError).
PROBE = r"""import socket, sys
try:
    socket.create_connection((sys.argv[1], 80), timeout=2).close(); print("ok")
except TimeoutError:
    print("timeout")
except OSError as e:
    print(type(e).__name__)
"""

# Runs as root in a fresh network namespace (the node); prints "R key value".
SCENARIO = r"""
set -eu
D=$(mktemp -d); C=; K=; L=
cleanup() { for p in $L $C $K; do kill $p 2>/dev/null || true; done; rm -rf "$D"; }
trap cleanup EXIT
cat >"$D/boot.sh" <<'CP_EOF'
@BOOT@
CP_EOF
cat >"$D/v4" <<'CP_EOF'
@V4RULES@
CP_EOF
cat >"$D/v6" <<'CP_EOF'
@V6RULES@
CP_EOF
cat >"$D/probe.py" <<'CP_EOF'
@PROBE@
CP_EOF
chmod 755 "$D"; chmod 644 "$D"/*

# --- (a) the rulesets, parsed by the real tools
for b in nft legacy; do
  command -v iptables-$b-restore >/dev/null || { echo "R test-$b absent"; continue; }
  r4=0; iptables-$b-restore --test --noflush -w <"$D/v4" 2>"$D/err" || r4=$?
  r6=0; ip6tables-$b-restore --test --noflush -w <"$D/v6" 2>>"$D/err" || r6=$?
  bad=0; iptables-$b-restore --test --noflush -w <"$D/v6" 2>/dev/null || bad=$?
  echo "R test-$b $r4,$r6,$bad $(tr '\n' ' ' <"$D/err")"
done

# --- a cloud VM: the node (this namespace), the cloud one hop away, a container
for s in all default; do sysctl -qw net.ipv6.conf.$s.accept_dad=0; done
sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
ip link set lo up
unshare -n sleep 600 & C=$!    # the cloud's side of the link
unshare -n sleep 600 & K=$!    # a container
sleep 0.2
for n in $C $K; do
  nsenter -t $n -n sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
done
ip link add up0 type veth peer name eth0 netns $C
ip addr add 10.99.0.2/24 dev up0; ip -6 addr add fd99::2/64 dev up0; ip link set up0 up
ip route add $V4/32 via 10.99.0.1; ip -6 route add $EC2_V6/128 via fd99::1
nsenter -t $C -n sh -ec "ip link set lo up; ip link set eth0 up
  ip addr add 10.99.0.1/24 dev eth0; ip addr add $V4/32 dev eth0
  ip -6 addr add fd99::1/64 dev eth0; ip -6 addr add $EC2_V6/128 dev eth0
  ip -6 addr add $OS_V6/64 dev eth0"
ip link add ctr0 type veth peer name eth0 netns $K
ip addr add 10.98.0.1/24 dev ctr0; ip -6 addr add fd98::1/64 dev ctr0; ip link set ctr0 up
nsenter -t $K -n sh -ec "ip link set lo up; ip link set eth0 up
  ip addr add 10.98.0.2/24 dev eth0; ip -6 addr add fd98::2/64 dev eth0
  ip route add default via 10.98.0.1; ip -6 route add default via fd98::1"
iptables -t nat -A POSTROUTING -s 10.98.0.0/24 -o up0 -j MASQUERADE
ip6tables -t nat -A POSTROUTING -s fd98::/64 -o up0 -j MASQUERADE
nsenter -t $C -n python3 -c 'import socket, time
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 80)); s.listen(128); time.sleep(600)' &
L=$!
condor=$(id -u condor)
run_as() { u=$1; shift; setpriv --reuid=$u --regid=$u --clear-groups "$@"; }
probes() {
  for a in $V4 $EC2_V6 $OS_V6%up0; do
    echo "R $1:root:$a $(python3 "$D/probe.py" $a)"
    echo "R $1:condor:$a $(run_as $condor python3 "$D/probe.py" $a)"
    echo "R $1:job:$a $(run_as 65534 python3 "$D/probe.py" $a)"
  done
  for a in $V4 $EC2_V6; do
    echo "R $1:container:$a $(nsenter -t $K -n python3 "$D/probe.py" $a)"
  done
}
for i in $(seq 50); do   # the listener is up
  [ "$(python3 "$D/probe.py" $V4)" = ok ] && break; sleep 0.1
done

# --- (b) before, with the boot script, after a runtime's ACCEPT, after a re-run
probes before
echo "R boot-stderr $(sh "$D/boot.sh" 2>&1 | tr '\n' ' ')"
probes after
iptables -I FORWARD 1 -i ctr0 -j ACCEPT; ip6tables -I FORWARD 1 -i ctr0 -j ACCEPT
probes runtime
saved() { { iptables-save; ip6tables-save; } | grep -v '^#' | sed 's/ \[[0-9]*:[0-9]*\]$//'; }
s1=$(saved); sh "$D/boot.sh"; s2=$(saved)
[ "$s1" = "$s2" ] && echo "R rerun same" || echo "R rerun differs"
echo "R saved $(echo "$s2" | grep -c -e CP-METADATA -e ' -j DROP')"

# --- the legacy backend (Amazon Linux 2, EL7): -C must not wait for -restore's lock
if command -v iptables-legacy-restore >/dev/null; then
  sed -e 's/^f iptables /f iptables-legacy /' -e 's/^f ip6tables /f ip6tables-legacy /' \
    "$D/boot.sh" >"$D/legacy.sh"
  rc=0; unshare -n sh -c "timeout 20 sh $D/legacy.sh && timeout 20 sh $D/legacy.sh &&
    iptables-legacy-save && ip6tables-legacy-save" >"$D/legacy.out" 2>&1 || rc=$?
  echo "R legacy $rc $(grep -c -e '-j CP-METADATA' -e '-j DROP' "$D/legacy.out")"
else
  echo "R legacy absent"
fi
"""


def _scenario() -> str:
    text = SCENARIO
    for key, value in (("@BOOT@", PROTECT_METADATA_SCRIPT), ("@PROBE@", PROBE),
                       ("@V4RULES@", metadata_ruleset("iptables")),
                       ("@V6RULES@", metadata_ruleset("ip6tables"))):
        assert "CP_EOF" not in value
        text = text.replace(key, value.rstrip("\n"))
    return text.replace("$V4", V4).replace("$EC2_V6", EC2_V6).replace("$OS_V6", OS_V6)


def _as_root(script: str) -> str:
    """Output of ``script`` run by sh as root in a fresh network namespace."""
    if os.geteuid() == 0:
        res = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout
    from hypervisor import VM, VM_DISKS, require_vmhost
    require_vmhost()
    vm = VM(Path(tempfile.mkdtemp(prefix="mdg-", dir=VM_DISKS)), "mdguard",
            "#cloud-config\n{}\n", "i-mdguard", "mdguard").boot()
    try:
        deadline = time.time() + 30
        while True:
            try:
                vm.exec("true")
                break
            except RuntimeError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        # VM.exec fails on a non-zero status: the output says what went wrong.
        return vm.exec("sh", "-c", f"unshare -n sh -c {shlex.quote(script)} 2>&1; "
                       "echo \"R status $?\"")
    finally:
        vm.power_off()
        vm.clean()


@pytest.fixture(scope="module")
def results():
    out = _as_root(_scenario())
    found = {}
    for line in out.splitlines():
        if line.startswith("R "):
            key, _, value = line[2:].partition(" ")
            found[key] = value.strip()
    assert found.get("status", "0") == "0" and "saved" in found, out
    # Before the rules everyone reaches the service: what fails later, the rules did.
    before = {k: v for k, v in found.items() if k.startswith("before:")}
    assert len(before) == 11 and set(before.values()) == {"ok"}, out
    found["output"] = out
    return found


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_restore_test_accepts_both_rulesets(results, backend):
    value = results[f"test-{backend}"]
    if value == "absent":
        pytest.skip(f"no iptables-{backend}-restore here")
    codes, _, errors = value.partition(" ")
    r4, r6, swapped = codes.split(",")
    assert (r4, r6) == ("0", "0"), errors
    assert swapped != "0"   # --test does parse: IPv6 addresses are refused by iptables


ADDRESSES = [V4, EC2_V6, OS_V6 + "%up0"]


@pytest.mark.parametrize("address", ADDRESSES)
def test_a_jobs_uid_is_rejected_root_and_condor_are_not(results, address):
    assert results["boot-stderr"] == ""
    # REJECT's ICMP error reaches the socket, but not from a link-local one
    # (the kernel finds no route for it from OUTPUT): the connect times out.
    blocked = ("ConnectionRefusedError",) + (("timeout",) if "%" in address else ())
    assert results[f"after:job:{address}"] in blocked
    assert results[f"after:root:{address}"] == "ok"
    assert results[f"after:condor:{address}"] == "ok"


@pytest.mark.parametrize("address", [V4, EC2_V6])
def test_forwarded_container_traffic_is_rejected_even_behind_a_runtimes_accept(results,
                                                                               address):
    assert results[f"after:container:{address}"] in ("ConnectionRefusedError", "timeout")
    # Docker and CNI insert "-I FORWARD 1 ... -j ACCEPT" when they start.
    assert results[f"runtime:container:{address}"] == "timeout"
    assert results[f"runtime:job:{address}"] == "ConnectionRefusedError"


def test_a_second_run_changes_nothing(results):
    assert results["rerun"] == "same"
    # 2 chain declarations, 2 x 3 chain rules, 3 OUTPUT jumps, 3 mangle DROPs
    assert results["saved"] == "14"


def test_the_legacy_backend_applies_the_rules_too(results):
    if results["legacy"] == "absent":
        pytest.skip("no iptables-legacy here")
    rc, count = results["legacy"].split()
    assert rc == "0", results["output"]
    assert count == "6"   # 3 OUTPUT jumps, 3 mangle DROPs, no duplicate after two runs
