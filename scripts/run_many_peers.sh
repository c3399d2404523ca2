#!/usr/bin/env bash
# Many peers on this machine, wired into a ring by the owner.
#
#   scripts/run_many_peers.sh N [FILE]
#
# Builds the release binary if needed, makes a random file of SIZE_MIB MiB
# (default 16) when FILE is not given, starts the owner on BASE_PORT
# (default 20000) and N peers on BASE_PORT+1..BASE_PORT+N, none of them
# given a download neighbour: the owner places each in its ring as it
# registers. Waits for every peer to exit (at most TIMEOUT seconds in all,
# default 600), checks every copy against FILE, reads the owner's peak
# memory and what it sent, stops it and prints a summary. Exits 0 only if
# every peer exited 0 with an identical copy.
#
# The default ports lie below the kernel's ephemeral range (32768 and up
# on Linux): a peer's outgoing connection can take an ephemeral port
# before the peer meant to listen on it has bound it.
#
# Environment: BASE_PORT, TIMEOUT, SIZE_MIB; PEER_LOG (RUST_LOG for the
# peers, default warn; the owner logs at info); PEER_ARGS (extra flags
# for every peer, default "--wait 300": a thousand peers on one 2-core
# machine share two cores, and a peer far down the ring from the nearest
# seed point can wait more than the default minute for its first chunk
# from the ring, where each peer on a machine of its own would not); KEEP=1 keeps the work folder, which
# is also kept when something failed.
#
# OWNER_RATE_MBIT=R (needs root, ip and tc) shapes the owner's uplink: the
# owner runs in a network namespace of its own (swm-owner-PID, 10.78.0.1)
# whose egress is limited to R Mbit/s by a token bucket (tc tbf), the
# peers in another (swm-peers-PID, 10.78.0.2), joined by one veth pair. Only
# what the owner sends crosses the shaped link; what peers send each other
# stays inside theirs. The summary adds S/B at R and the last completion
# as a multiple of it. Both namespaces are removed on exit.
set -euo pipefail

BASE_PORT=${BASE_PORT:-20000}
TIMEOUT=${TIMEOUT:-600}
SIZE_MIB=${SIZE_MIB:-16}
PEER_LOG=${PEER_LOG:-warn}
read -r -a peer_args <<<"${PEER_ARGS---wait 300}"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$root/target}/release/swarm

die() { echo "run_many_peers: $*" >&2; exit 1; }
say() { echo "run_many_peers: $*"; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: scripts/run_many_peers.sh N [FILE]"
n=$1
[[ $n =~ ^[0-9]+$ ]] && (( n >= 1 )) || die "N must be a whole number of peers, at least 1"
[[ $BASE_PORT =~ ^[0-9]+$ ]] && (( BASE_PORT >= 1 && BASE_PORT + n <= 65535 )) ||
    die "BASE_PORT must be a port number from 1 to $((65535 - n))"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "TIMEOUT must be a whole number of seconds"
[[ $SIZE_MIB =~ ^[0-9]+$ ]] || die "SIZE_MIB must be a whole number of MiB"
command -v cargo >/dev/null || die "cargo is not installed (see README)"
owner_rate=${OWNER_RATE_MBIT:-}
if [[ -n $owner_rate ]]; then
    [[ $owner_rate =~ ^[0-9]+$ ]] && (( owner_rate >= 1 )) ||
        die "OWNER_RATE_MBIT must be a whole number of Mbit/s, at least 1"
    [[ $EUID -eq 0 ]] || die "OWNER_RATE_MBIT needs root (network namespaces and tc)"
    command -v ip >/dev/null && command -v tc >/dev/null || die "OWNER_RATE_MBIT needs iproute2 (ip, tc)"
fi

read -r eph_lo eph_hi </proc/sys/net/ipv4/ip_local_port_range
if (( BASE_PORT <= eph_hi && BASE_PORT + n >= eph_lo )); then
    say "warning: ports $BASE_PORT..$((BASE_PORT + n)) overlap the ephemeral range" \
        "$eph_lo..$eph_hi; a peer may find its port taken by an outgoing connection"
fi

# Each peer is a process of its own, but the owner holds one connection
# per peer, and this shell's children inherit its limit.
want_fds=$((2 * n + 256))
if (( $(ulimit -n) < want_fds )); then
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    (( $(ulimit -n) >= want_fds )) ||
        say "warning: open files limited to $(ulimit -n); the owner may need $want_fds"
fi

echo "building swarm (release)..."
cargo build --release --quiet --manifest-path "$root/Cargo.toml" ||
    die "cargo build failed"

# Where the owner and the peers run and listen: loopback, or with
# OWNER_RATE_MBIT two namespaces, the owner's uplink shaped.
in_owner=() in_peers=() owner_ip=127.0.0.1 peer_ip=127.0.0.1
ns_owner=swm-owner-$$ ns_peers=swm-peers-$$
nets_down() {
    local ns pid
    for ns in "$ns_owner" "$ns_peers"; do
        ip netns list 2>/dev/null | grep -q "^$ns\b" || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
}
if [[ -n $owner_rate ]]; then
    # Removed however this script ends (cleanup, set below, does it too).
    trap nets_down EXIT
    trap 'exit 130' INT TERM
    ip netns add "$ns_owner" && ip netns add "$ns_peers" || die "cannot make network namespaces"
    ip -n "$ns_owner" link add eth0 type veth peer name eth0 netns "$ns_peers" ||
        die "cannot make a veth pair"
    ip -n "$ns_owner" addr add 10.78.0.1/30 dev eth0 && ip -n "$ns_peers" addr add 10.78.0.2/30 dev eth0 ||
        die "cannot address the veth pair"
    for ns in "$ns_owner" "$ns_peers"; do
        ip -n "$ns" link set lo up && ip -n "$ns" link set eth0 up || die "cannot bring up $ns"
    done
    # About 4 ms of traffic, at least 32 KiB so a GSO packet fits (as
    # netbed.sh does).
    burst=$(( owner_rate * 1000000 / 8 / 250 )); (( burst >= 32768 )) || burst=32768
    tc -n "$ns_owner" qdisc add dev eth0 root tbf rate "${owner_rate}mbit" burst "$burst" latency 50ms ||
        die "tc cannot add a tbf qdisc (modprobe sch_tbf)"
    in_owner=(ip netns exec "$ns_owner") in_peers=(ip netns exec "$ns_peers")
    owner_ip=10.78.0.1 peer_ip=10.78.0.2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/swarm-many.XXXXXX")
mkdir -p "$work/logs" "$work/peers"
owner=
declare -A peer_pid=() code=()
ok=0
cleanup() {
    # Only processes not yet reaped: a reaped one's id may be reused.
    for i in "${!peer_pid[@]}"; do
        [[ -n ${code[$i]:-} ]] || kill "${peer_pid[$i]}" 2>/dev/null || true
    done
    [[ -z $owner ]] || kill "$owner" 2>/dev/null || true
    wait 2>/dev/null || true
    [[ -z $owner_rate ]] || nets_down
    if [[ $ok == 1 && ${KEEP:-0} != 1 ]]; then
        rm -rf "$work"
    else
        echo "logs and copies kept in $work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $# -ge 2 ]]; then
    file=$2
    [[ -f $file && -r $file ]] || die "cannot read $file"
else
    file=$work/many.bin
    head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$file"
    say "made a random file of $(stat -c %s "$file") bytes: $file"
fi
name=$(basename "$file")
size=$(stat -c %s "$file")

# One look at the listening sockets instead of a connect per port.
if [[ -z $owner_rate ]] && command -v ss >/dev/null; then
    busy=$(ss -Htln | awk '{ n = split($4, a, ":"); print a[n] }' |
        awk -v lo="$BASE_PORT" -v hi=$((BASE_PORT + n)) '$1 >= lo && $1 <= hi' | head -3 || true)
    [[ -z $busy ]] || die "port(s) $(echo $busy) in $BASE_PORT..$((BASE_PORT + n)) already in use; set BASE_PORT"
fi

start=$(date +%s.%N)
RUST_LOG=info "${in_owner[@]}" "$bin" owner --port "$BASE_PORT" --bind "$owner_ip" --dir "$work/owner" "$file" \
    2>"$work/logs/owner.log" &
owner=$!
# Its log says when it listens (a test connection would log a warning).
for _ in $(seq 300); do
    grep -q 'owner: listening on' "$work/logs/owner.log" && break
    kill -0 "$owner" 2>/dev/null || { cat "$work/logs/owner.log" >&2; die "the owner exited"; }
    sleep 0.1
done
grep -q 'owner: listening on' "$work/logs/owner.log" ||
    die "the owner is not listening on $BASE_PORT after 30 s"
say "owner listening on $BASE_PORT; starting $n peers on $((BASE_PORT + 1))..$((BASE_PORT + n))"

for i in $(seq "$n"); do
    RUST_LOG=$PEER_LOG "${in_peers[@]}" "$bin" peer --owner "$owner_ip:$BASE_PORT" --port $((BASE_PORT + i)) \
        --bind "$peer_ip" --dir "$work/peers/$i" "${peer_args[@]}" \
        2>"$work/logs/peer$i.log" &
    peer_pid[$i]=$!
done
say "all $n peers started in $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s"

# Poll the peers still running; reap each as it exits.
deadline=$((SECONDS + TIMEOUT))
running=$n
next_report=$((SECONDS + 10))
next_sample=0
last_exit=$start
owner_threads=0
peer_threads=0
threads_of() { awk '/^Threads:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
while (( running > 0 && SECONDS < deadline )); do
    # Threads: the owner's on every pass, all peers' together now and then
    # (a process's threads count against pid_max).
    t=$(threads_of "$owner")
    (( t > owner_threads )) && owner_threads=$t
    if (( SECONDS >= next_sample )); then
        sum=0
        for i in "${!peer_pid[@]}"; do
            [[ -n ${code[$i]:-} ]] || sum=$((sum + $(threads_of "${peer_pid[$i]}")))
        done
        (( sum > peer_threads )) && peer_threads=$sum
        next_sample=$((SECONDS + 2))
    fi
    for i in "${!peer_pid[@]}"; do
        [[ -z ${code[$i]:-} ]] || continue
        kill -0 "${peer_pid[$i]}" 2>/dev/null && continue
        rc=0
        wait "${peer_pid[$i]}" || rc=$?
        code[$i]=$rc
        last_exit=$(date +%s.%N)
        running=$((running - 1))
    done
    if (( SECONDS >= next_report && running > 0 )); then
        say "$((n - running)) of $n peers have exited"
        next_report=$((SECONDS + 10))
    fi
    (( running == 0 )) || sleep 0.2
done
# With peers still running, the wall time runs to the deadline.
(( running == 0 )) || last_exit=$(date +%s.%N)
elapsed=$(awk -v s="$start" -v e="$last_exit" 'BEGIN { printf "%.2f", e - s }')
# When the last peer completed, by the owner's clock: the last to exit may
# have waited out its --linger after that.
done_at=$(grep ' is complete (' "$work/logs/owner.log" | tail -1 | sed -E 's/^\[([^ ]*) .*/\1/' || true)
completed=-
[[ -z $done_at ]] || completed=$(awk -v s="$start" -v e="$(date -d "$done_at" +%s.%N)" \
    'BEGIN { printf "%.2f", e - s }')

late=()
for i in $(seq "$n"); do
    if [[ -z ${code[$i]:-} ]]; then
        late+=("$i")
        kill "${peer_pid[$i]}" 2>/dev/null || true
        wait "${peer_pid[$i]}" 2>/dev/null || true
        code[$i]=timeout
    fi
done

# What the owner sent and its peak memory, before it stops.
hwm_kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$owner/status" 2>/dev/null || echo 0)
json=$("${in_owner[@]}" "$bin" status --owner "$owner_ip:$BASE_PORT" --json 2>"$work/logs/status.err") || json=
sent=$(grep -o '"owner_sent_bytes":[0-9]*' <<<"$json" | cut -d: -f2 || true)
totals=$(grep -o '"total":{[^}]*}' <<<"$json" || true)
kill "$owner" 2>/dev/null || true
wait "$owner" 2>/dev/null || true
owner=

matched=0
failed=()
for i in $(seq "$n"); do
    copy=$work/peers/$i/$name
    if [[ -n ${code[$i]:-} && ${code[$i]} == 0 && -f $copy ]] && cmp -s "$file" "$copy"; then
        matched=$((matched + 1))
    elif [[ ${code[$i]} != timeout ]]; then
        if [[ ! -f $copy ]]; then why=MISSING; elif ! cmp -s "$file" "$copy"; then why=DIFFERENT; else why=ok; fi
        failed+=("peer $i (port $((BASE_PORT + i))): exit ${code[$i]}, copy $why")
    fi
done

echo
echo "warnings and errors in the logs (numbers as N):"
grep -h -E '^\[[^]]* (WARN|ERROR) ?\]' "$work"/logs/*.log |
    sed -E 's/^\[[^]]*\] //; s/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -20 || true
[[ -n $(grep -l -E '(WARN|ERROR) ?\]' "$work"/logs/*.log 2>/dev/null | head -1) ]] || echo "  none"
if grep -q -l panicked "$work"/logs/*.log 2>/dev/null; then
    echo "PANICS in: $(grep -l panicked "$work"/logs/*.log | xargs -n1 basename | head -10 | tr '\n' ' ')"
fi
echo "owner registry: ${totals:-unavailable ($(head -1 "$work/logs/status.err"))}"
echo

ratio=$(awk -v s="${sent:-0}" -v f="$size" 'BEGIN { if (f > 0) printf "%.2f", s / f; else print "-" }')
hwm_mib=$(awk -v k="$hwm_kib" 'BEGIN { printf "%.1f", k / 1024 }')
echo "summary: N=$n file=$size bytes ($name) wall=${elapsed} s last_complete=${completed} s owner_peak_rss=${hwm_mib} MiB" \
    "owner_peak_threads=$owner_threads peers_peak_threads=$peer_threads owner_sent=${sent:-?} bytes (${ratio} x the file)" \
    "verified=$matched/$n"
if [[ -n $owner_rate ]]; then
    awk -v s="$size" -v r="$owner_rate" -v c="$completed" 'BEGIN {
        sb = s * 8 / (r * 1000000)
        printf "shaped: owner_rate=%s Mbit/s S/B=%.2f s last_complete=%s s (%s x S/B)\n", r, sb, c,
            (c == "-" ? "-" : sprintf("%.2f", c / sb))
    }'
fi

if (( ${#late[@]} > 0 )); then
    echo "${#late[@]} peer(s) did not finish within ${TIMEOUT} s: $(
        for i in "${late[@]:0:20}"; do printf 'peer %s (port %s) ' "$i" $((BASE_PORT + i)); done
    )$( (( ${#late[@]} > 20 )) && echo "...")" >&2
fi
for line in "${failed[@]:0:20}"; do echo "$line" >&2; done
(( ${#failed[@]} <= 20 )) || echo "... and $((${#failed[@]} - 20)) more failed" >&2
if (( matched == n )); then
    ok=1
    echo "all $n copies are byte-identical to the original"
else
    echo "only $matched of $n copies match; see the logs" >&2
    exit 1
fi
