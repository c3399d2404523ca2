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
# Then the loopback ring, for CPU-seconds with and without --verify-output
# side by side: an owner (--peers N) and RING_N (5) hand-wired peers, each
# downloading from the next, RING_MIB (256; 8 in smoke mode; 0 skips it)
# of the same kind of file, RING_REPEAT (3; 1 in smoke mode) runs per mode:
# the peers' CPU-seconds summed, the owner's, and the wall time.
#
# Environment: SMOKE=1, REPEAT, BASE_PORT (default 23000), SHM (default
# /dev/shm; any folder works, but then the disk is measured too),
# BASELINE_BIN, PERF=1 (also where the peer's CPU goes, by stage, from one
# more run per mode under perf; needs perf and kernel.perf_event_paranoid
# <= 1), CARGO_TARGET_DIR, PEER_LOG (the peer's RUST_LOG, default
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
# Below the ephemeral ports (32768 on), where a port may be some
# connection's local end, which a listener cannot take.
base=${BASE_PORT:-23000}
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
    # Peers of a ring run cut short by a failure (started under
    # /usr/bin/time, which does not pass a signal on): every process
    # working in this run's folder.
    pkill -f -- "$work/" 2>/dev/null || true
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

# The first port from $1 on that nothing on this machine listens on (other
# benches and tests may be running).
free_port() {
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

# The owner, warm: indexed and its chunk files written before the peer.
# The first start writes the chunk files, later ones find them in place.
start_owner() {
    if [[ -n $owner ]]; then
        kill "$owner" 2>/dev/null || true
        wait "$owner" 2>/dev/null || true
    fi
    owner_port=$(free_port $((owner_port + 1)))
    RUST_LOG=info "$bin" owner --port "$owner_port" --peers 1 --dir "$work/owner" "$work/input.bin" \
        2>"$work/owner.log" &
    owner=$!
    for ((i = 0; i < 1200; i++)); do
        grep -qs "chunk files under" "$work/owner.log" && return
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
        port=$(free_port $((port + 1)))
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

# PERF=1: one more run per mode under `perf record` (not timed), each
# sample of the peer's threads put in the first stage its call stack
# matches, as CPU-seconds (samples at 999 Hz).
stage_rows=()
if [[ ${PERF:-0} == 1 ]]; then
    command -v perf >/dev/null || die "PERF=1 needs perf (Debian: apt-get install linux-perf)"
    for mode in "${modes[@]}"; do
        start_owner
        port=$(free_port $((port + 1)))
        peer=("$bin" peer) flags=()
        case $mode in
            verify-output) flags=(--verify-output) ;;
            baseline) peer=("$BASELINE_BIN" peer) ;;
        esac
        rm -rf "$work/peer" "$work/peer.bin"
        RUST_LOG=$peer_log perf record -q -g -F 999 -o "$work/perf.data" -- \
            "${peer[@]}" --owner "127.0.0.1:$owner_port" --port "$port" --dir "$work/peer" \
            --out "$work/peer.bin" --linger 0 --wait 30 "${flags[@]}" 2>"$work/peer.log" ||
            die "$mode: the run under perf failed"
        cmp -s "$work/input.bin" "$work/peer.bin" || die "$mode: the copy under perf differs"
        perf script -i "$work/perf.data" -F comm,tid,ip,sym 2>/dev/null | awk -v mode="$mode" '
        function stage(s) {
            if (s ~ /sha2::|sha256/) return "SHA-256"
            if (s ~ /shmem_fallocate|ksys_fallocate/) return "output: allocate (fallocate, zeroed pages)"
            if (s ~ /__x64_sys_pwrite64/) return "output: write"
            if (s ~ /__x64_sys_pread64/) return "output: read back (whole-file hash)"
            if (s ~ /__x64_sys_linkat|__x64_sys_rename|__x64_sys_openat|__x64_sys_close|__x64_sys_unlink/) return "chunk files: create, link, close"
            if (s ~ /ksys_write|__x64_sys_write/) return "chunk files: write"
            if (s ~ /fsync|fdatasync|sync_file/) return "flush"
            if (s ~ /tcp_recvmsg|__x64_sys_recvfrom/) return "socket: receive"
            if (s ~ /tcp_sendmsg|sendfile/) return "socket: send"
            if (s ~ /futex|schedule|finish_task_switch|try_to_wake_up/) return "wake-ups (futex, scheduler)"
            if (s ~ /__x64_sys_/) return "other system calls"
            return "other user space (channels, coordinator, decoding)"
        }
        function flush() { if (seen) { n[stage(stack)]++; total++ } seen = 0; stack = "" }
        /^[^ \t]/ { flush(); seen = 1; next }
        /^[ \t]*$/ { flush(); next }
        { stack = stack " " $2 }
        END { flush(); for (c in n) printf "%s\t%s\t%.2f\n", mode, c, n[c] / 999; printf "%s\ttotal\t%.2f\n", mode, total / 999 }' \
            >>"$work/stages"
        rm -f "$work/perf.data"
    done
    mapfile -t stage_rows < <(awk -F '\t' -v modes="${modes[*]}" '
        { v[$2 "|" $1] = $3; if (!($2 in seen)) { seen[$2] = 1; order[++k] = $2 } }
        END {
            m = split(modes, ms, " ")
            for (i = 1; i <= k; i++) if (order[i] != "total") {
                row = "| " order[i] " |"
                for (j = 1; j <= m; j++) row = row " " ((order[i] "|" ms[j]) in v ? v[order[i] "|" ms[j]] : "0.00") " |"
                print row
            }
            row = "| **total** |"
            for (j = 1; j <= m; j++) row = row " **" v["total|" ms[j]] "** |"
            print row
        }' "$work/stages" | sort -t'|' -k3 -rn)
fi

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# The loopback ring, CPU-seconds with and without --verify-output: an
# owner (--peers N) and N hand-wired peers (peer i downloads from peer
# i+1) on the same tmpfs folder, RING_MIB of its own (default 256, 8 in
# smoke mode), RING_REPEAT runs per mode (3; 1 in smoke mode), modes in
# turn. Per run: every peer's user and system CPU-seconds
# (/usr/bin/time), summed, and the owner's from its ready line to the
# last peer's exit (/proc); every copy cmp-checked.
ring_n=${RING_N:-5}
if [[ $smoke == 1 ]]; then
    ring_mib=${RING_MIB:-8} ring_repeat=${RING_REPEAT:-1}
else
    ring_mib=${RING_MIB:-256} ring_repeat=${RING_REPEAT:-3}
fi
ring_rows=()
if ((ring_mib > 0)); then
    head -c $((ring_mib << 20)) "$work/input.bin" >"$work/ring.bin"
    ((ring_mib <= size)) || head -c $((ring_mib << 20)) /dev/urandom >"$work/ring.bin"
    declare -A ring_cpu=() ring_owner=() ring_wall=()
    for ((r = 1; r <= ring_repeat; r++)); do
        for mode in "${modes[@]}"; do
            peer=("$bin" peer) flags=()
            case $mode in
                verify-output) flags=(--verify-output) ;;
                baseline) peer=("$BASELINE_BIN" peer) ;;
            esac
            kill "$owner" 2>/dev/null || true
            wait "$owner" 2>/dev/null || true
            rm -rf "$work/ring"
            mkdir -p "$work/ring"
            owner_port=$(free_port $((owner_port + 1)))
            RUST_LOG=info "$bin" owner --port "$owner_port" --peers "$ring_n" --dir "$work/ring/owner" \
                "$work/ring.bin" 2>"$work/ring/owner.log" &
            owner=$!
            for ((i = 0; i < 1200; i++)); do
                grep -qs "chunk files under" "$work/ring/owner.log" && break
                sleep 0.05
            done
            grep -qs "chunk files under" "$work/ring/owner.log" ||
                die "ring: the owner did not finish indexing within 60 s"
            ports=()
            for ((i = 1; i <= ring_n; i++)); do
                port=$(free_port $((port + 1)))
                ports+=("$port")
            done
            before=$(owner_ticks)
            started=$EPOCHREALTIME
            pids=()
            for ((i = 0; i < ring_n; i++)); do
                RUST_LOG=warn /usr/bin/time -f "%U %S" -o "$work/ring/time$i" \
                    "${peer[@]}" --owner "127.0.0.1:$owner_port" --port "${ports[i]}" \
                    --download-neighbor "127.0.0.1:${ports[(i + 1) % ring_n]}" \
                    --dir "$work/ring/p$i" --out "$work/ring/p$i.bin" --linger 5 --wait 30 \
                    "${flags[@]}" 2>"$work/ring/p$i.log" &
                pids+=($!)
            done
            for p in "${pids[@]}"; do wait "$p" || die "ring $mode run $r: a peer failed"; done
            ring_wall[$mode]+="$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') "
            after=$(owner_ticks)
            for ((i = 0; i < ring_n; i++)); do
                cmp -s "$work/ring.bin" "$work/ring/p$i.bin" || die "ring $mode run $r: p$i's copy differs"
            done
            ring_cpu[$mode]+="$(cat "$work"/ring/time* | awk '{ s += $1 + $2 } END { printf "%.2f", s }') "
            ring_owner[$mode]+="$(awk -v t=$((after - before)) -v hz="$ticks" 'BEGIN { printf "%.2f", t / hz }') "
        done
    done
    for mode in "${modes[@]}"; do
        lo=$(tr ' ' '\n' <<<"${ring_cpu[$mode]}" | grep . | sort -g | head -n 1)
        hi=$(tr ' ' '\n' <<<"${ring_cpu[$mode]}" | grep . | sort -g | tail -n 1)
        ring_rows+=("$(printf '| %s | %.2f (%s-%s) | %.2f | %.2f |' "$mode" "$(median <<<"${ring_cpu[$mode]}")" \
            "$lo" "$hi" "$(median <<<"${ring_owner[$mode]}")" "$(median <<<"${ring_wall[$mode]}")")")
    done
fi

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
if ((${#stage_rows[@]})); then
    echo
    echo "Where the peer's CPU goes (PERF=1: one more run per mode under perf record -g, 999 Hz;"
    echo "each sample in the first stage its call stack matches), CPU-seconds:"
    echo
    printf '| stage |'; printf ' %s |' "${modes[@]}"; echo
    printf '|---|'; printf -- '---|%.0s' "${modes[@]}"; echo
    printf '%s\n' "${stage_rows[@]}"
fi
if ((${#ring_rows[@]})); then
    echo
    echo "Loopback ring, CPU-seconds with and without --verify-output: an owner and $ring_n hand-wired"
    echo "peers on tmpfs, $ring_mib MiB, $ring_repeat run(s) per mode; every copy cmp-checked."
    echo
    echo "| mode | peers' CPU s, all $ring_n: median (min-max) | owner CPU s | wall s |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ring_rows[@]}"
fi
