#!/usr/bin/env bash
# bench_pipeline: one peer's own pipeline, an owner and one peer on tmpfs.
#
#   scripts/bench_pipeline.sh [SIZE_MIB]      default 1024 MiB
#   scripts/bench_pipeline.sh --smoke         16 MiB, one run (CI); same as SMOKE=1
#
# Builds swarm and examples/sha256_rate.rs (release), writes SIZE_MIB of
# random bytes to a folder on tmpfs (/dev/shm, so no disk is involved) and
# has an owner index it once. Then, REPEAT times (default 5; 1 in smoke
# mode), it runs one peer (owner-wired, --linger 0) from a fresh folder, in
# each mode in turn so the modes share the machine's noise. Before each
# peer the owner is started afresh with `--peers 1` on its warm folder (it
# re-checks its chunk files, and the bench waits for that), so it seeds
# this peer the whole file at once, as it would the first of one peer:
#
#   default          the file verified chunk by chunk
#   verify-output    `--verify-output`: also the whole-file SHA-256 re-hash
#   baseline         BASELINE_BIN, if set: another build of swarm (say, the
#                    one before a change), run without flags
#
# For each run it takes the peer's wall time (start to exit, the file
# renamed into place and cmp-checked afterwards), the receive phase from
# its log (from its registration with the owner, after the output's blocks
# are allocated, to "complete"), its user and system CPU-seconds
# (/usr/bin/time) and the owner's CPU-seconds for the run (/proc). Before
# and after the runs it measures SHA-256 on one core with the
# implementation swarm uses (examples/sha256_rate.rs over the same file,
# 100 KiB pieces). The table gives each mode's median MB/s with the
# min-max spread, over the peer's wall time and over its receive phase,
# the receive phase's ratio to that SHA-256 rate, and the median CPU
# seconds. MB/s is 10^6 bytes per second.
#
# Environment: SMOKE=1, REPEAT, BASE_PORT (default 36000), SHM (default
# /dev/shm; any folder works, but then the disk is measured too),
# BASELINE_BIN, CARGO_TARGET_DIR, PEER_LOG (the peer's RUST_LOG, default
# info,swarm::chunk=warn: no line per chunk). Prints a Markdown table;
# exits non-zero if a run fails or a copy differs. Needs /usr/bin/time
# (package time), cmp, awk, head.
set -euo pipefail
export LC_ALL=C

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$PWD/$target
bin=$target/release/swarm
rate_bin=$target/release/examples/sha256_rate
smoke=${SMOKE:-0}
size=""
for arg in "$@"; do
    case $arg in
        --smoke) smoke=1 ;;
        -h | --help) sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) size=$arg ;;
    esac
done
die() { echo "bench_pipeline: $*" >&2; exit 1; }
if [[ $smoke == 1 ]]; then
    size=${size:-16} repeat=${REPEAT:-1}
else
    size=${size:-1024} repeat=${REPEAT:-5}
fi
[[ $size =~ ^[1-9][0-9]*$ ]] || die "SIZE_MIB must be a positive whole number"
[[ $repeat =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive whole number"
base=${BASE_PORT:-36000}
shm=${SHM:-/dev/shm}
peer_log=${PEER_LOG:-info,swarm::chunk=warn}
[[ -d $shm ]] || die "$shm does not exist; set SHM to a folder on tmpfs"
[[ -x /usr/bin/time ]] || die "needs /usr/bin/time (Debian: apt-get install time)"
if [[ -n ${BASELINE_BIN:-} ]]; then
    [[ -x $BASELINE_BIN ]] || die "BASELINE_BIN=$BASELINE_BIN is not an executable"
fi

cargo build --release --quiet --bin swarm --example sha256_rate --manifest-path "$root/Cargo.toml" ||
    die "cargo build failed"

work=$(mktemp -d "$shm/swarm-pipeline.XXXXXX")
owner=""
cleanup() {
    if [[ -n $owner ]]; then
        kill "$owner" 2>/dev/null || true
        wait "$owner" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

head -c $((size << 20)) /dev/urandom >"$work/input.bin"
bytes=$((size << 20))

# SHA-256 on one core, the same file, the same pieces as the chunks.
sha_rates=()
sha_rate() {
    local line
    line=$("$rate_bin" "$work/input.bin") || die "sha256_rate failed"
    sha_rates+=("$(awk '{ for (i = 1; i < NF; i++) if ($(i + 1) == "MB/s") print $i }' <<<"$line")")
}
sha_rate

# The owner, warm: indexed and its chunk files written before the peer.
# The first start writes the chunk files, later ones find them in place.
start_owner() {
    if [[ -n $owner ]]; then
        kill "$owner" 2>/dev/null || true
        wait "$owner" 2>/dev/null || true
    fi
    owner_port=$((owner_port + 1))
    RUST_LOG=info "$bin" owner --port "$owner_port" --peers 1 --dir "$work/owner" "$work/input.bin" \
        2>"$work/owner.log" &
    owner=$!
    for ((i = 0; i < 1200; i++)); do
        grep -q "chunk files under" "$work/owner.log" && return
        kill -0 "$owner" 2>/dev/null || { cat "$work/owner.log" >&2; die "the owner stopped"; }
        sleep 0.05
    done
    die "the owner did not finish indexing within 60 s"
}
owner_port=$base
start_owner

ticks=$(getconf CLK_TCK)
owner_ticks() { awk '{ print $14 + $15 }' "/proc/$owner/stat"; }
# Milliseconds since midnight of a log line's timestamp.
stamp_ms() {
    awk -v want="$1" 'index($0, want) {
        split(substr($1, 13, 12), t, "[:.]"); print ((t[1] * 60 + t[2]) * 60 + t[3]) * 1000 + t[4]; exit }' "$2"
}

modes=(default verify-output)
[[ -n ${BASELINE_BIN:-} ]] && modes+=(baseline)
declare -A walls=() cpus=() users=() syss=() owners=() phases=()
port=$((base + 500))
for ((r = 1; r <= repeat; r++)); do
    for mode in "${modes[@]}"; do
        [[ $r == 1 && $mode == default ]] || start_owner
        port=$((port + 1))
        peer=("$bin" peer)
        flags=()
        case $mode in
            verify-output) flags=(--verify-output) ;;
            baseline) peer=("$BASELINE_BIN" peer) ;;
        esac
        dir=$work/peer out=$work/peer.bin
        rm -rf "$dir" "$out"
        before=$(owner_ticks)
        RUST_LOG=$peer_log /usr/bin/time -f "%e %U %S" -o "$work/time" \
            "${peer[@]}" --owner "127.0.0.1:$owner_port" --port "$port" --dir "$dir" --out "$out" \
            --linger 0 --wait 30 "${flags[@]}" 2>"$work/peer.log" ||
            { tail -n 5 "$work/peer.log" >&2; die "$mode run $r failed"; }
        after=$(owner_ticks)
        cmp -s "$work/input.bin" "$out" || die "$mode run $r: the copy differs from the input"
        read -r wall user sys <"$work/time"
        from=$(stamp_ms "sent chunk-ID list to the owner" "$work/peer.log")
        to=$(stamp_ms ": complete in " "$work/peer.log")
        [[ -n $from && -n $to ]] || die "$mode run $r: no registration or completion line in the peer's log"
        phases[$mode]+="$(awk -v a="$from" -v b="$to" 'BEGIN { d = b - a; if (d < 0) d += 86400000; printf "%.3f", d / 1000 }') "
        walls[$mode]+="$wall " users[$mode]+="$user " syss[$mode]+="$sys "
        cpus[$mode]+="$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }') "
        owners[$mode]+="$(awk -v t=$((after - before)) -v hz="$ticks" 'BEGIN { printf "%.2f", t / hz }') "
        rm -rf "$dir" "$out"
    done
done
sha_rate

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
sha=$(printf '%s ' "${sha_rates[@]}" | median)
echo "One peer's pipeline: owner and one peer on tmpfs ($shm), $size MiB, owner warm, $repeat run(s) per mode"
echo "SHA-256 on one core (sha2, 100 KiB pieces), before and after the runs: ${sha_rates[*]} MB/s"
echo
echo "| mode | MB/s, peer's wall: median (min-max) | MB/s, receive phase: median (min-max) | receive ÷ SHA-256 one core | peer user s | peer sys s | peer CPU s: median (min-max) | owner CPU s |"
echo "|---|---|---|---|---|---|---|---|"
# "median (min-max)" of the rates 10^-6 x bytes / each of $1's seconds.
rate_of() {
    local rates med lo hi
    rates=$(for w in $1; do awk -v b="$bytes" -v w="$w" 'BEGIN { if (w > 0) printf "%.0f ", b / w / 1e6; else printf "0 " }'; done)
    med=$(median <<<"$rates")
    lo=$(tr ' ' '\n' <<<"$rates" | grep . | sort -g | head -n 1)
    hi=$(tr ' ' '\n' <<<"$rates" | grep . | sort -g | tail -n 1)
    printf '%.0f (%s-%s)' "$med" "$lo" "$hi"
}
for mode in "${modes[@]}"; do
    phase=$(rate_of "${phases[$mode]}")
    clo=$(tr ' ' '\n' <<<"${cpus[$mode]}" | grep . | sort -g | head -n 1)
    chi=$(tr ' ' '\n' <<<"${cpus[$mode]}" | grep . | sort -g | tail -n 1)
    printf '| %s | %s | %s | %.2f | %.2f | %.2f | %.2f (%s-%s) | %.2f |\n' "$mode" \
        "$(rate_of "${walls[$mode]}")" "$phase" \
        "$(awk -v r="${phase%% *}" -v s="$sha" 'BEGIN { print r / s }')" \
        "$(median <<<"${users[$mode]}")" "$(median <<<"${syss[$mode]}")" \
        "$(median <<<"${cpus[$mode]}")" "$clo" "$chi" "$(median <<<"${owners[$mode]}")"
done
