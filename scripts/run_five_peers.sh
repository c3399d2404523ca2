#!/usr/bin/env bash
# The five-peer demo: one owner and five peers in a ring on this machine.
#
#   scripts/run_five_peers.sh [FILE]
#
# Builds the release binary if needed, makes a random file of a few MiB
# when FILE is not given, starts the owner on BASE_PORT (default 9000) and
# peers BASE_PORT+1..+5 (peer i downloads from peer i+1, peer 5 from peer
# 1), waits for every peer (at most TIMEOUT seconds, default 120), checks
# that all five copies are byte-identical to FILE, stops the owner and
# prints a summary. Exits 0 only if all five match. Logs and copies stay
# in the printed work folder when KEEP=1 or when something failed.
set -euo pipefail

BASE_PORT=${BASE_PORT:-9000}
TIMEOUT=${TIMEOUT:-120}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$root/target/release/swarm

die() { echo "run_five_peers: $*" >&2; exit 1; }

[[ $BASE_PORT =~ ^[0-9]+$ ]] && (( BASE_PORT >= 1 && BASE_PORT + 5 <= 65535 )) ||
    die "BASE_PORT must be a port number from 1 to 65530"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "TIMEOUT must be a whole number of seconds"
command -v cargo >/dev/null || die "cargo is not installed (see README)"

echo "building swarm (release)..."
cargo build --release --quiet --manifest-path "$root/Cargo.toml" ||
    die "cargo build failed"

work=$(mktemp -d "${TMPDIR:-/tmp}/swarm-demo.XXXXXX")
pids=()
ok=0
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ $ok == 1 && ${KEEP:-0} != 1 ]]; then
        rm -rf "$work"
    else
        echo "logs and copies kept in $work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $# -ge 1 ]]; then
    file=$1
    [[ -f $file && -r $file ]] || die "cannot read $file"
else
    file=$work/demo.bin
    head -c $((4 * 1024 * 1024 + 12345)) /dev/urandom >"$file"
    echo "made a random file of $(stat -c %s "$file") bytes: $file"
fi
name=$(basename "$file")
size=$(stat -c %s "$file")

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $(seq "$BASE_PORT" $((BASE_PORT + 5))); do
    port_open "$p" && die "port $p is already in use; set BASE_PORT to a free range"
done

start=$(date +%s.%N)
"$bin" owner --port "$BASE_PORT" --dir "$work/owner" "$file" 2>"$work/owner.log" &
owner=$!
pids+=("$owner")
for _ in $(seq 100); do
    port_open "$BASE_PORT" && break
    kill -0 "$owner" 2>/dev/null || { cat "$work/owner.log" >&2; die "the owner exited"; }
    sleep 0.1
done
echo "owner listening on $BASE_PORT; starting five peers on $((BASE_PORT + 1))..$((BASE_PORT + 5))"

declare -A peer_pid
for i in 1 2 3 4 5; do
    next=$((i % 5 + 1))
    "$bin" peer --owner "$BASE_PORT" --port $((BASE_PORT + i)) \
        --download-neighbor $((BASE_PORT + next)) --dir "$work/peer$i" \
        2>"$work/peer$i.log" &
    peer_pid[$i]=$!
    pids+=("$!")
done

deadline=$((SECONDS + TIMEOUT))
declare -A status
for i in 1 2 3 4 5; do
    while kill -0 "${peer_pid[$i]}" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if kill -0 "${peer_pid[$i]}" 2>/dev/null; then
        kill "${peer_pid[$i]}" 2>/dev/null || true
        status[$i]="timed out after ${TIMEOUT}s"
    fi
    code=0
    wait "${peer_pid[$i]}" || code=$?
    [[ -n ${status[$i]:-} ]] || status[$i]="exit $code"
done
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')
kill "$owner" 2>/dev/null || true

want=$(sha256sum "$file" | cut -d' ' -f1)
echo
printf '%-6s %-6s %-10s %-12s %s\n' peer port result "time (s)" "copy"
matched=0
for i in 1 2 3 4 5; do
    copy=$work/peer$i/$name
    if [[ -f $copy ]] && cmp -s "$file" "$copy"; then
        verdict="identical"
        matched=$((matched + 1))
    elif [[ -f $copy ]]; then
        verdict="DIFFERENT"
    else
        verdict="MISSING"
    fi
    took=$(grep -o 'complete in [0-9.]* s' "$work/peer$i.log" | grep -o '[0-9.]*' || echo "-")
    printf '%-6s %-6s %-10s %-12s %s\n' "$i" $((BASE_PORT + i)) "${status[$i]}" "$took" "$verdict"
done
echo
echo "file: $name, $size bytes, sha256 $want"
echo "wall time: ${elapsed} s for five peers"
if [[ $matched == 5 ]]; then
    ok=1
    echo "all five copies are byte-identical to the original"
else
    echo "only $matched of five copies match; see the logs" >&2
    exit 1
fi
