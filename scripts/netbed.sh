#!/usr/bin/env bash
# netbed: a testbed of rate-limited "hosts" on this one machine.
#
#   scripts/netbed.sh up N RATE [DELAY]   build the bed (tears down leftovers first)
#   scripts/netbed.sh down                remove every namespace the bed made
#   scripts/netbed.sh exec HOST CMD...    run CMD inside HOST's namespace
#   scripts/netbed.sh ip HOST             print HOST's address
#   scripts/netbed.sh hosts               list hosts, namespaces and addresses
#   scripts/netbed.sh check [HOST]        time a transfer owner -> HOST (default p1)
#   scripts/netbed.sh rate HOST RATE      re-shape HOST's egress to RATE Mbit/s (after up)
#
# Hosts are `owner` and `p1`..`pN` (N <= 250). Each lives in its own network
# namespace (swb-owner, swb-p1, ...) with one interface, eth0, whose other
# end is plugged into a bridge that lives in a namespace of its own
# (swb-br), so the root namespace is never touched. Addresses come from
# 10.77.0.0/16 and exist only inside these namespaces: owner is 10.77.0.1,
# pI is 10.77.1.I. Each host's egress is limited to RATE Mbit/s with a token
# bucket (tc tbf); with NETBED_INGRESS=1 its ingress is limited too, like a
# full-duplex link (shaped on the bridge side of its cable). DELAY (e.g.
# 5ms) adds one-way delay on each host's egress and needs the kernel's
# netem qdisc (sch_netem). `rate` changes one host's egress token bucket in
# place (tc qdisc change, burst as at `up`; a DELAY stays), so one host can
# be made slower or faster than the rest; its ingress, when NETBED_INGRESS=1
# shaped it, stays at the bed's RATE.
#
# Needs root and iproute2 (ip, tc) with the tbf qdisc (sch_tbf). `check`
# needs the unicast example (cargo build --release --examples).
set -euo pipefail

PREFIX=swb-
BRNS=${PREFIX}br
SUBNET_PREFIX=10.77
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "netbed: $*" >&2; exit 1; }

usage() {
    sed -n '3,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 1
}

need_root() {
    [[ $EUID -eq 0 ]] || die "needs root (network namespaces and tc); run it with sudo"
    command -v ip >/dev/null || die "'ip' not found; install iproute2"
    command -v tc >/dev/null || die "'tc' not found; install iproute2"
}

# Namespace of a host name: owner -> swb-owner, p3 -> swb-p3.
ns_of() {
    [[ $1 == owner || $1 =~ ^p[1-9][0-9]*$ ]] || die "unknown host '$1' (use owner or p1..pN)"
    echo "$PREFIX$1"
}

# Address of a host name, without the prefix length.
ip_of() {
    case $1 in
        owner) echo "$SUBNET_PREFIX.0.1" ;;
        p*)
            local i=${1#p}
            [[ $i =~ ^[1-9][0-9]*$ ]] && ((i <= 250)) || die "unknown host '$1' (use owner or p1..p250)"
            echo "$SUBNET_PREFIX.1.$i"
            ;;
        *) die "unknown host '$1' (use owner or p1..pN)" ;;
    esac
}

# Our namespaces, one per line.
our_namespaces() {
    ip netns list 2>/dev/null | awk -v p="$PREFIX" 'index($1, p) == 1 { print $1 }'
}

down() {
    local ns pid
    for ns in $(our_namespaces); do
        # Anything still running in a bed namespace was started in the bed;
        # stop it so the namespace really goes away.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || true
    done
    local left
    left=$(our_namespaces)
    [[ -z $left ]] || die "could not remove namespaces: ${left//$'\n'/ }"
}

# The token bucket's burst at RATE Mbit/s, in BURST: about 4 ms of
# traffic, at least 32 KiB so a GSO packet fits.
burst_of() {
    BURST=$(($1 * 1000000 / 8 / 250))
    ((BURST >= 32768)) || BURST=32768
}

# Token bucket on DEV in NS at RATE Mbit/s, optionally with netem DELAY
# under it.
shape() {
    local ns=$1 dev=$2 rate=$3 delay=$4
    burst_of "$rate"
    tc -n "$ns" qdisc add dev "$dev" root handle 1: tbf rate "${rate}mbit" \
        burst "$BURST" latency 50ms 2>/dev/null ||
        die "tc cannot add a tbf qdisc; the kernel lacks sch_tbf (modprobe sch_tbf)"
    if [[ -n $delay ]]; then
        # netem's queue must hold a delay's worth of packets.
        tc -n "$ns" qdisc add dev "$dev" parent 1:1 handle 10: netem delay "$delay" \
            limit 100000 2>/dev/null ||
            die "tc cannot add a netem qdisc for DELAY; the kernel lacks sch_netem (modprobe sch_netem)"
    fi
}

up() {
    local n=${1:-} rate=${2:-} delay=${3:-}
    [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 250)) || die "N must be a whole number from 1 to 250"
    [[ $rate =~ ^[0-9]+$ ]] && ((rate >= 1)) || die "RATE must be a whole number of Mbit/s"
    [[ -z $delay || $delay =~ ^[0-9]+(\.[0-9]+)?(us|ms|s)$ ]] ||
        die "DELAY must look like 5ms, 500us or 0.1s"
    down
    # Until the bed is complete, any failure (or die) removes what was built.
    trap 'down >/dev/null 2>&1 || true' EXIT
    ip netns add "$BRNS"
    ip -n "$BRNS" link set lo up
    ip -n "$BRNS" link add br0 type bridge
    ip -n "$BRNS" link set br0 up
    local host ns i
    local hosts=(owner)
    for ((i = 1; i <= n; i++)); do hosts+=("p$i"); done
    for host in "${hosts[@]}"; do
        ns=$(ns_of "$host")
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # The cable: eth0 in the host, v-HOST on the bridge.
        ip -n "$BRNS" link add "v-$host" type veth peer name eth0 netns "$ns"
        ip -n "$BRNS" link set "v-$host" master br0
        ip -n "$BRNS" link set "v-$host" up
        ip -n "$ns" addr add "$(ip_of "$host")/16" dev eth0
        ip -n "$ns" link set eth0 up
        shape "$ns" eth0 "$rate" "$delay"
        if [[ ${NETBED_INGRESS:-0} == 1 ]]; then
            shape "$BRNS" "v-$host" "$rate" ""
        fi
    done
    trap - EXIT
    echo "netbed: up: owner and $n peers at $rate Mbit/s egress${delay:+, delay $delay}$([[ ${NETBED_INGRESS:-0} == 1 ]] && echo ", ingress limited too")"
    hosts
}

# rate HOST RATE: HOST's egress bucket changed to RATE Mbit/s in place
# (the netem DELAY under it, if any, is kept).
rate() {
    [[ $# -eq 2 ]] || die "usage: netbed.sh rate HOST RATE"
    local host=$1 rate=$2 ns
    ns=$(ns_of "$host")
    ip_of "$host" >/dev/null
    [[ $rate =~ ^[0-9]+$ ]] && ((rate >= 1)) || die "RATE must be a whole number of Mbit/s"
    ip netns list | grep -q "^$ns\b" || die "host $host is not up (run netbed.sh up first)"
    tc -n "$ns" qdisc show dev eth0 | grep -q '^qdisc tbf 1: root' ||
        die "host $host has no token bucket on eth0 (was the bed built by netbed.sh up?)"
    burst_of "$rate"
    tc -n "$ns" qdisc change dev eth0 root handle 1: tbf rate "${rate}mbit" \
        burst "$BURST" latency 50ms || die "tc could not change $host's token bucket"
    echo "netbed: $host: egress now $rate Mbit/s"
}

hosts() {
    local ns host
    for ns in $(our_namespaces); do
        host=${ns#"$PREFIX"}
        [[ $ns == "$BRNS" ]] && continue
        printf '%-6s %-10s %s\n' "$host" "$ns" "$(ip_of "$host")"
    done | sort -k1,1V
}

# Times a transfer of RATE Mbit/s x 3 s from owner to HOST with the unicast
# example and prints the achieved rate.
check() {
    local host=${1:-p1}
    local uni=$root/target/release/examples/unicast
    [[ -x $uni ]] || die "check needs $uni; run cargo build --release --examples"
    ip netns list | grep -q "^$(ns_of "$host")\b" || die "host $host is not up"
    ip netns list | grep -q "^${PREFIX}owner\b" || die "the bed is not up"
    local rate
    rate=$(tc -n "${PREFIX}owner" qdisc show dev eth0 | grep -o 'rate [0-9.]*[GMK]bit' | head -1 | awk '{print $2}')
    local tmp
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/netbed-check.XXXXXX")
    local bytes=$((${rate//[^0-9]/} * 3000000 / 8))
    [[ $rate == *Gbit ]] && bytes=$((bytes * 1000))
    [[ $rate == *Kbit ]] && bytes=$((bytes / 1000))
    head -c "$bytes" /dev/urandom >"$tmp/in"
    ip netns exec "${PREFIX}owner" timeout 60 "$uni" send --port 7000 --receivers 1 --wait 20 "$tmp/in" 2>/dev/null &
    local sender=$!
    local t0 t1
    t0=$(date +%s.%N)
    if ! ip netns exec "$(ns_of "$host")" timeout 60 "$uni" recv --from "$(ip_of owner):7000" \
        --out "$tmp/out" --wait 20 >/dev/null; then
        kill "$sender" 2>/dev/null || true
        rm -rf "$tmp"
        die "check: transfer owner -> $host failed"
    fi
    t1=$(date +%s.%N)
    wait "$sender" || true
    cmp -s "$tmp/in" "$tmp/out" || { rm -rf "$tmp"; die "check: the copy differs"; }
    rm -rf "$tmp"
    awk -v b="$bytes" -v s="$t0" -v e="$t1" -v r="$rate" -v h="$host" 'BEGIN {
        printf "netbed: owner -> %s: %d bytes in %.2f s = %.1f Mbit/s (limit %s)\n",
            h, b, e - s, b * 8 / (e - s) / 1e6, r }'
}

cmd=${1:-}
[[ -n $cmd ]] || usage
shift
case $cmd in
    up) need_root; up "$@" ;;
    down) need_root; down; echo "netbed: down" ;;
    exec)
        need_root
        [[ $# -ge 2 ]] || die "usage: netbed.sh exec HOST CMD..."
        ns=$(ns_of "$1")
        shift
        ip netns list | grep -q "^$ns\b" || die "host ${ns#"$PREFIX"} is not up (run netbed.sh up first)"
        exec ip netns exec "$ns" "$@"
        ;;
    ip) [[ $# -eq 1 ]] || die "usage: netbed.sh ip HOST"; ip_of "$1" ;;
    hosts) need_root; hosts ;;
    check) need_root; check "$@" ;;
    rate) need_root; rate "$@" ;;
    -h | --help | help) usage ;;
    *) die "unknown command '$cmd' (use up, down, exec, ip, hosts, check or rate)" ;;
esac
