#!/usr/bin/env bash
# bench_pipeline: one peer's own pipeline, an owner and one peer on tmpfs.
#
#   scripts/bench_pipeline.sh [SIZE_MIB]      default 1024 MiB
#   scripts/bench_pipeline.sh --smoke         16 MiB, one run (CI); same as SMOKE=1
#
# Builds swarm and examples/sha256_rate.rs (release), writes SIZE_MIB of
# random bytes to a folder on tmpfs (/dev/shm, so no disk is involved),
# starts an owner on it and waits until it has indexed the file and written
# its chunk files. Then, REPEAT times (default 5; 1 in smoke mode), it runs
# one peer (owner-wired, --linger 0) from a fresh folder, in each mode in
# turn so the modes share the machine's noise:
#
#   default          the file verified chunk by chunk
#   verify-output    `--verify-output`: also the whole-file SHA-256 re-hash
#   baseline         BASELINE_BIN, if set: another build of swarm (say, the
#                    one before a change), run without flags
#
# For each run it takes the peer's wall time (start to exit, the file
# renamed into place and cmp-checked afterwards), its user and system
# CPU-seconds (/usr/bin/time) and the owner's CPU-seconds for the run
# (/proc). Before and after the runs it measures SHA-256 on one core with
# the implementation swarm uses (examples/sha256_rate.rs over the same
# file, 100 KiB pieces); the table gives each mode's median MB/s with the
# min-max spread, its ratio to that SHA-256 rate, and the median CPU
# seconds. MB/s is 10^6 bytes per second of the peer's wall time.
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
    [[ -n $owner ]] && kill "$owner" 2>/dev/null && wait "$owner" 2>/dev/null
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

# The owner, warm: indexed and its chunk files written before any peer.
RUST_LOG=info "$bin" owner --port "$base" --dir "$work/owner" "$work/input.bin" 2>"$work/owner.log" &
owner=$!
for ((i = 0; i < 600; i++)); do
    grep -q "chunk files under" "$work/owner.log" && break
    kill -0 "$owner" 2>/dev/null || { cat "$work/owner.log" >&2; die "the owner stopped"; }
    sleep 0.1
done
grep -q "chunk files under" "$work/owner.log" || die "the owner did not finish indexing within 60 s"

ticks=$(getconf CLK_TCK)
owner_ticks() { awk '{ print $14 + $15 }' "/proc/$owner/stat"; }

modes=(default verify-output)
[[ -n ${BASELINE_BIN:-} ]] && modes+=(baseline)
declare -A walls=() cpus=() users=() syss=() owners=()
port=$base
for ((r = 1; r <= repeat; r++)); do
    for mode in "${modes[@]}"; do
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
            "${peer[@]}" --owner "127.0.0.1:$base" --port "$port" --dir "$dir" --out "$out" \
            --linger 0 --wait 30 "${flags[@]}" 2>"$work/peer.log" ||
            { tail -n 5 "$work/peer.log" >&2; die "$mode run $r failed"; }
        after=$(owner_ticks)
        cmp -s "$work/input.bin" "$out" || die "$mode run $r: the copy differs from the input"
        read -r wall user sys <"$work/time"
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
echo "| mode | MB/s median (min-max) | ÷ SHA-256 one core | peer user s | peer sys s | peer CPU s (min-max) | owner CPU s |"
echo "|---|---|---|---|---|---|---|"
for mode in "${modes[@]}"; do
    rates=$(for w in ${walls[$mode]}; do awk -v b="$bytes" -v w="$w" 'BEGIN { printf "%.0f ", b / w / 1e6 }'; done)
    rate=$(median <<<"$rates")
    lo=$(tr ' ' '\n' <<<"$rates" | grep . | sort -g | head -n 1)
    hi=$(tr ' ' '\n' <<<"$rates" | grep . | sort -g | tail -n 1)
    clo=$(tr ' ' '\n' <<<"${cpus[$mode]}" | grep . | sort -g | head -n 1)
    chi=$(tr ' ' '\n' <<<"${cpus[$mode]}" | grep . | sort -g | tail -n 1)
    printf '| %s | %.0f (%s-%s) | %.2f | %.2f | %.2f | %.2f (%s-%s) | %.2f |\n' "$mode" "$rate" "$lo" "$hi" \
        "$(awk -v r="$rate" -v s="$sha" 'BEGIN { print r / s }')" \
        "$(median <<<"${users[$mode]}")" "$(median <<<"${syss[$mode]}")" \
        "$(median <<<"${cpus[$mode]}")" "$clo" "$chi" "$(median <<<"${owners[$mode]}")"
done
