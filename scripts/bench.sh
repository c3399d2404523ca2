#!/usr/bin/env bash
# bench: swarm against plain unicast (examples/unicast.rs), side by side.
#
#   scripts/bench.sh            the full benchmark, about 12 minutes
#   scripts/bench.sh --smoke    tiny files, seconds, no targets (CI); same as SMOKE=1
#
# Builds in release mode, then runs:
#   1. netbed (needs root; see scripts/netbed.sh): owner and N peers on their
#      own namespaces, each host's egress limited to RATE Mbit/s. N=5 at 100
#      Mbit/s with 64 MiB, N=20 at 25 Mbit/s with 32 MiB, N=20 at 100 Mbit/s
#      with 64 MiB. Swarm's and unicast's wall times as a ratio to the ideal
#      S/B (the owner's link must carry the file once), next to the floor: one
#      TCP stream carrying S owner -> p1, what the shaped link really gives.
#   2. loopback, N=5, 256 MiB: swarm against unicast.
#   3. scaling on loopback, N = 5, 10, 20, 40 at 32 MiB: wall time and time
#      per delivered GiB (N x S delivered).
#   4. peak resident memory of the owner and each peer, 1 GiB, N=5, loopback.
# A swarm time runs from the owner's start until every peer has exited and
# its copy matches the input byte for byte (cmp); a run that fails or times
# out shows as FAILED in the table and keeps its logs in bench-out/logs/.
#
# Writes bench-out/bench.md (the table, also printed), bench-out/bench.csv
# and bench-out/bench.svg (time / (S/B) against N). Temporary files (inputs,
# peer folders; about 12 GiB at the peak of the full run) live in a temp
# folder under $TMPDIR that is removed at the end; every process started is
# stopped and the netbed torn down on exit, even on Ctrl-C.
#
# Swarm runs (and unicast on loopback) are repeated REPEAT times (3; 1 in
# smoke mode) and the median is reported with the min–max spread; unicast
# on the netbed runs once (it takes N × S/B). `sync` runs between runs so
# one run's disk writeback does not slow the next.
#
# Environment: SMOKE=1 (as --smoke), REPEAT, ONLY=netbed,loopback,scaling,memory
# (sections to run), BASE_PORT (loopback ports, default 31000),
# BENCH_OUT (default bench-out), TMPDIR.
# Needs bash 5, cargo, cmp, awk; the netbed needs root and iproute2 (ip, tc);
# memory needs /usr/bin/time (package time).
set -euo pipefail
export LC_ALL=C

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$root/target/release/swarm
uni=$root/target/release/examples/unicast
chart=$root/target/release/examples/chart
netbed=$root/scripts/netbed.sh
out=${BENCH_OUT:-$root/bench-out}
smoke=${SMOKE:-0}
only=${ONLY:-netbed,loopback,scaling,memory}
BASE_PORT=${BASE_PORT:-31000}

die() { echo "bench: $*" >&2; exit 1; }
note() { echo "bench: $*" >&2; }

for arg in "$@"; do
    case $arg in
        --smoke) smoke=1 ;;
        -h | --help) sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$arg' (use --smoke or --help)" ;;
    esac
done

((BASH_VERSINFO[0] >= 5)) || die "needs bash 5 or newer (for EPOCHREALTIME)"
for tool in cargo cmp awk head; do
    command -v "$tool" >/dev/null || die "'$tool' not found; install it first"
done
[[ $BASE_PORT =~ ^[0-9]+$ ]] && ((BASE_PORT >= 1024 && BASE_PORT <= 60000)) ||
    die "BASE_PORT must be a port number from 1024 to 60000"
wants() { [[ ,$only, == *,$1,* ]]; }

# Case parameters: "N RATE_MBIT SIZE_MIB" for the netbed.
if [[ $smoke == 1 ]]; then
    bed_cases=("3 100 4")
    loop_n=3 loop_s=8
    scale_ns=(3 5) scale_s=4
    mem_n=3 mem_s=16
    repeat=${REPEAT:-1}
else
    bed_cases=("5 100 64" "20 25 32" "20 100 64")
    loop_n=5 loop_s=256
    scale_ns=(5 10 20 40) scale_s=32
    mem_n=5 mem_s=1024
    repeat=${REPEAT:-3}
fi
[[ $repeat =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive whole number"

can_bed=1
bed_why=""
if ((EUID != 0)); then
    can_bed=0 bed_why="needs root"
elif ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
    can_bed=0 bed_why="needs iproute2 (ip, tc)"
fi
can_mem=1
[[ -x /usr/bin/time ]] || can_mem=0

echo "bench: building swarm and the examples (release)..."
cargo build --release --quiet --bins --examples --manifest-path "$root/Cargo.toml" ||
    die "cargo build failed"
[[ -x $bin && -x $uni ]] || die "the build did not produce $bin and $uni"

# One bench at a time: a second one would tear down the first one's netbed.
if command -v flock >/dev/null; then
    exec {lock}>"${TMPDIR:-/tmp}/swarm-bench.lock"
    flock -n "$lock" || die "another scripts/bench.sh is running; wait for it to finish"
fi

mkdir -p "$out"
rm -rf "$out/logs" # logs of failed runs; only this run's
work=$(mktemp -d "${TMPDIR:-/tmp}/swarm-bench.XXXXXX")
declare -A live=() # processes started and not yet reaped
bed_up=0

# Every process this script started and has not reaped; /usr/bin/time's
# child first, since killing time alone would orphan it.
kill_tree() {
    local pid=$1 child
    # shellcheck disable=SC2013 # the file is one line of IDs
    for child in $(cat "/proc/$pid/task/$pid/children" 2>/dev/null); do
        kill -KILL "$child" 2>/dev/null || true
    done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    # Quiet: bash would report each job killed here as "Killed".
    exec 2>/dev/null
    for pid in "${!live[@]}"; do kill_tree "$pid"; done
    wait 2>/dev/null || true
    if ((bed_up)); then "$netbed" down >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
# The traps only take note: exiting from inside `read -t` (nap) makes bash
# 5.2 crash later ("longjmp causes uninitialized stack frame") before the
# cleanup is done. nap and each run check the note instead.
interrupted=0
trap 'interrupted=1' INT TERM
check_interrupt() { ((!interrupted)) || exit 130; }

# A pipe nobody writes to: `read -t` on it is a sleep without a fork.
mkfifo "$work/tick"
exec {tick}<>"$work/tick"
nap() {
    read -r -t "$1" -u "$tick" _ || true
    check_interrupt
}
now_us() { NOW=${EPOCHREALTIME/./}; }
secs() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1e6 }'; }

# input_file SIZE_MIB: a random file of that size, made once per size.
input_file() {
    INPUT=$work/input-$1M.bin
    if [[ ! -f $INPUT ]]; then
        head -c $(($1 << 20)) /dev/urandom >"$INPUT" || die "cannot write $INPUT (disk full?)"
    fi
}

# launch MODE HOST LOG MEMFILE CMD...: starts CMD in the background, inside
# HOST's namespace when MODE is bed, under /usr/bin/time when MEMFILE is
# set. Sets LAUNCHED to its process ID.
launch() {
    local mode=$1 host=$2 log=$3 mem=$4
    shift 4
    local pre=()
    [[ $mode == bed ]] && pre=(ip netns exec "swb-$host")
    [[ -n $mem ]] && pre+=(/usr/bin/time -f %M -o "$mem")
    RUST_LOG=warn "${pre[@]}" "$@" </dev/null >"$log" 2>&1 &
    LAUNCHED=$!
    live[$LAUNCHED]=1
}

# listening MODE HOST PORT: whether something listens on PORT on HOST.
listening() {
    local pre=()
    [[ $1 == bed ]] && pre=(ip netns exec "swb-$2")
    if command -v ss >/dev/null; then
        [[ -n $("${pre[@]}" ss -Hltn "sport = :$3" 2>/dev/null) ]]
    else
        "${pre[@]}" bash -c "exec 3<>/dev/tcp/127.0.0.1/$3" 2>/dev/null
    fi
}

# await_listen MODE HOST PORT PID: waits (10 s at most) until PID listens.
await_listen() {
    local deadline=$((${EPOCHREALTIME/./} + 10000000))
    until listening "$1" "$2" "$3"; do
        kill -0 "$4" 2>/dev/null || return 1
        ((${EPOCHREALTIME/./} < deadline)) || return 1
        nap 0.01
    done
}

# await DEADLINE_US PID...: waits until every PID has exited or the
# deadline passes, then kills what is left. Sets END (microseconds, when
# the last one exited) and CODE[pid] (exit status, or "timeout").
declare -A CODE=()
await() {
    local deadline=$1 pid code
    shift
    local left=("$@") still
    while ((${#left[@]})); do
        still=()
        for pid in "${left[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then
                still+=("$pid")
            else
                code=0
                wait "$pid" || code=$?
                CODE[$pid]=$code
                unset "live[$pid]"
            fi
        done
        left=("${still[@]}")
        ((${#left[@]})) || break
        if ((${EPOCHREALTIME/./} >= deadline)); then
            for pid in "${left[@]}"; do
                kill_tree "$pid"
                { wait "$pid"; } 2>/dev/null || true
                CODE[$pid]=timeout
                unset "live[$pid]"
            done
            break
        fi
        nap 0.01
    done
    now_us
    END=$NOW
}

# stop PID: SIGTERM, then SIGKILL after 5 s.
stop() {
    kill -TERM "$1" 2>/dev/null || true
    await $((${EPOCHREALTIME/./} + 5000000)) "$1"
}

run=0
# new_run LABEL: a fresh folder for one run (swarm resumes from old ones).
new_run() {
    run=$((run + 1))
    RUN_DIR=$work/run$run-$1
    mkdir -p "$RUN_DIR"
}

# keep_logs: saves a failed run's logs under bench-out/logs/.
keep_logs() {
    local dest
    dest=$out/logs/$(basename "$RUN_DIR")
    mkdir -p "$dest"
    cp "$RUN_DIR"/*.log "$dest"/ 2>/dev/null || true
    FAIL_LOGS=$dest
}

# free_base N: a loopback base port with BASE..BASE+N free.
free_base() {
    local n=$1 try base p busy
    for try in $(seq 0 19); do
        base=$((BASE_PORT + ((run + try) % 20) * 100))
        busy=0
        for ((p = base; p <= base + n; p++)); do
            if listening loop - "$p"; then busy=1; break; fi
        done
        ((busy)) || { BASE=$base; return 0; }
    done
    die "no free range of $((n + 1)) ports from $BASE_PORT; set BASE_PORT"
}

# Address of host HOST ("owner" or a peer number) and its port.
addr_of() {
    if [[ $1 == bed ]]; then
        if [[ $2 == owner ]]; then ADDR=10.77.0.1:9000; else ADDR=10.77.1.$2:9000; fi
    else
        if [[ $2 == owner ]]; then ADDR=127.0.0.1:$BASE; else ADDR=127.0.0.1:$((BASE + $2)); fi
    fi
    PORT=${ADDR##*:}
    BIND=${ADDR%:*}
}

# verify_copies N INPUT: checks each peer's exit (CODE[] of PEER_PIDS) and
# its copy against the input; sets STATUS to ok, or to how many failed and
# the first failure.
verify_copies() {
    local n=$1 input=$2 i code why first="" bad=0
    for ((i = 1; i <= n; i++)); do
        code=${CODE[${PEER_PIDS[$i]}]}
        why=""
        if [[ $code == timeout ]]; then
            why="p$i timed out"
        elif [[ $code != 0 ]]; then
            why="p$i exit $code"
        elif ! cmp -s "$input" "$RUN_DIR/p$i.bin"; then
            why="p$i copy differs"
        fi
        if [[ -n $why ]]; then
            bad=$((bad + 1))
            [[ -n $first ]] || first=$why
        fi
    done
    if ((bad)); then
        STATUS="FAILED: $bad of $n peers ($first)"
    else
        STATUS=ok
    fi
}

# cpu_ticks: busy and total CPU ticks so far, from /proc/stat (no fork).
cpu_ticks() {
    local _cpu user nice sys idle iowait irq softirq steal _rest
    read -r _cpu user nice sys idle iowait irq softirq steal _rest </proc/stat
    TICKS_TOTAL=$((user + nice + sys + idle + iowait + irq + softirq + steal))
    TICKS_BUSY=$((TICKS_TOTAL - idle - iowait))
}

# run_one TOOL MODE N SIZE_MIB TIMEOUT_S [MEM]: one distribution with swarm
# or unicast. Sets STATUS (ok or FAILED: why), SECS, CPU (percent of all
# cores busy during the run) and, with MEM=1, RSS[] in KiB: owner and pI
# for swarm, sender and receiver (the largest) for unicast.
declare -A RSS=()
run_one() {
    local tool=$1 mode=$2 n=$3 size=$4 timeout=$5 mem=${6:-0} i
    check_interrupt
    input_file "$size"
    new_run "$tool-$mode-n$n-${size}M"
    [[ $mode == bed ]] || free_base "$n"
    RSS=()
    SECS="" CPU=""
    local memfile=""
    [[ $mem == 1 ]] && memfile=$RUN_DIR/owner.rss
    cpu_ticks
    local busy0=$TICKS_BUSY total0=$TICKS_TOTAL
    now_us
    local t0=$NOW
    addr_of "$mode" owner
    local owner_addr=$ADDR owner_port=$PORT
    if [[ $tool == swarm ]]; then
        # The owner is killed at the end, so its peak comes from /proc.
        launch "$mode" owner "$RUN_DIR/owner.log" "" \
            "$bin" owner --port "$PORT" --bind "$BIND" --dir "$RUN_DIR/owner" --peers "$n" "$INPUT"
    else
        launch "$mode" owner "$RUN_DIR/owner.log" "$memfile" \
            "$uni" send --port "$PORT" --bind "$BIND" --receivers "$n" --wait 60 "$INPUT"
    fi
    local owner=$LAUNCHED
    if ! await_listen "$mode" owner "$owner_port" "$owner"; then
        stop "$owner"
        STATUS="FAILED: the $([[ $tool == swarm ]] && echo owner || echo sender) did not start"
        keep_logs
        rm -rf "$RUN_DIR"
        return
    fi
    PEER_PIDS=()
    for ((i = 1; i <= n; i++)); do
        [[ $mem == 1 ]] && memfile=$RUN_DIR/p$i.rss
        if [[ $tool == swarm ]]; then
            addr_of "$mode" $((i % n + 1))
            local next=$ADDR
            addr_of "$mode" "$i"
            launch "$mode" "p$i" "$RUN_DIR/p$i.log" "$memfile" \
                "$bin" peer --owner "$owner_addr" --port "$PORT" --bind "$BIND" \
                --download-neighbor "$next" --dir "$RUN_DIR/p$i" --out "$RUN_DIR/p$i.bin"
        else
            launch "$mode" "p$i" "$RUN_DIR/p$i.log" "$memfile" \
                "$uni" recv --from "$owner_addr" --out "$RUN_DIR/p$i.bin" --wait 60
        fi
        PEER_PIDS[i]=$LAUNCHED
    done
    await $((t0 + timeout * 1000000)) "${PEER_PIDS[@]}"
    local t1=$END
    cpu_ticks
    CPU=$(awk -v b=$((TICKS_BUSY - busy0)) -v t=$((TICKS_TOTAL - total0)) \
        'BEGIN { if (t > 0) printf "%.0f", 100 * b / t; else print "-" }')
    if [[ $tool == swarm ]]; then
        [[ $mem == 1 ]] &&
            RSS[owner]=$(awk '/^VmHWM:/ { print $2 }' "/proc/$owner/status" 2>/dev/null || true)
        kill -0 "$owner" 2>/dev/null || note "the swarm owner exited before it was stopped (see its log)"
        stop "$owner"
    else
        # The sender exits by itself once every receiver acknowledged.
        await $((${EPOCHREALTIME/./} + 10000000)) "$owner"
    fi
    verify_copies "$n" "$INPUT"
    if [[ $STATUS == ok && $tool == unicast && ${CODE[$owner]} != 0 ]]; then
        STATUS="FAILED: sender exit ${CODE[$owner]}"
    fi
    if [[ $mem == 1 ]]; then
        local v max=0
        for ((i = 1; i <= n; i++)); do
            v=$(tail -n 1 "$RUN_DIR/p$i.rss" 2>/dev/null || true)
            RSS[p$i]=$v
            [[ $v =~ ^[0-9]+$ ]] && ((v > max)) && max=$v
        done
        if [[ $tool == unicast ]]; then
            RSS[sender]=$(tail -n 1 "$RUN_DIR/owner.rss" 2>/dev/null || true)
            RSS[receiver]=$max
        fi
    fi
    if [[ $STATUS == ok ]]; then
        SECS=$(secs $((t1 - t0)))
    else
        keep_logs
        note "$tool $mode N=$n $size MiB: $STATUS (logs in $FAIL_LOGS)"
    fi
    rm -rf "$RUN_DIR"
    # Write back and discard this run's files now, not during the next one.
    sync
}

# measure TOOL MODE N SIZE_MIB TIMEOUT_S REPEATS: run_one REPEATS times.
# Sets STATUS (ok, or FAILED with how many runs failed and the first
# reason), SECS (the median), SPREAD ("min–max" when repeated), RUNS (every
# time, ";"-separated) and CPU (the median run's).
measure() {
    local tool=$1 mode=$2 n=$3 size=$4 timeout=$5 reps=$6 k failed=0 first=""
    local times=() cpus=()
    for ((k = 1; k <= reps; k++)); do
        run_one "$tool" "$mode" "$n" "$size" "$timeout"
        if [[ $STATUS == ok ]]; then
            times+=("$SECS")
            cpus+=("$SECS $CPU")
        else
            failed=$((failed + 1))
            [[ -n $first ]] || first=${STATUS#FAILED: }
        fi
    done
    RUNS=$(IFS=';'; echo "${times[*]}")
    SPREAD="" SECS="" CPU=""
    if ((failed)); then
        STATUS="FAILED"
        ((reps > 1)) && STATUS+=" $failed of $reps runs:"
        STATUS+=" $first"
        return
    fi
    STATUS=ok
    local sorted
    sorted=$(printf '%s\n' "${cpus[@]}" | sort -n)
    read -r SECS CPU < <(sed -n "$(((reps + 1) / 2))p" <<<"$sorted")
    if ((reps > 1)); then
        SPREAD="$(head -n 1 <<<"$sorted" | cut -d' ' -f1)–$(tail -n 1 <<<"$sorted" | cut -d' ' -f1)"
    fi
}

# --- results --------------------------------------------------------------

csv=$out/bench.csv
md=$out/bench.md
echo "section,case,n,rate_mbit,size_mib,tool,status,seconds,runs,cpu_pct,ideal_seconds,ratio,sec_per_gib,peak_rss_kib" >"$csv"
# csv_row SECTION CASE N RATE SIZE TOOL STATUS SECONDS RUNS CPU IDEAL RATIO SPG RSS
csv_row() {
    local IFS=,
    local row=("$@")
    row[6]=${row[6]//,/;}
    echo "${row[*]}" >>"$csv"
}
# ratio A B: A / B to two places, or "-" when either is missing.
ratio() {
    if [[ -n $1 && -n $2 && $1 != - && $2 != - ]]; then
        awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
    else
        echo -
    fi
}
# verdict VALUE LIMIT: "meets" or "MISSES" (or "-" in smoke mode or without a value).
verdict() {
    if [[ $smoke == 1 || -z $1 || $1 == - || -z $2 ]]; then
        echo -
    else
        awk -v v="$1" -v l="$2" 'BEGIN { print (v <= l ? "meets" : "MISSES") }'
    fi
}
# shown: the last measurement's time (with its spread), or its failure.
shown() {
    if [[ $STATUS != ok ]]; then
        echo "$STATUS"
    elif [[ -n ${SPREAD:-} ]]; then
        echo "$SECS ($SPREAD)"
    else
        echo "$SECS"
    fi
}

mode_text="full, swarm runs repeated $repeat× (median, min–max)"
[[ $smoke == 1 ]] && mode_text="smoke (tiny files, no targets)"
{
    echo "# swarm benchmark"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, Linux $(uname -r), mode: $mode_text,"
    echo "commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)')."
    echo "Times are wall seconds from the owner's (sender's) start until every peer has exited"
    echo "and its copy matched the input. CPU is the share of all cores busy during the run."
} >"$md"

started=$SECONDS

# 1. netbed
if wants netbed; then
    {
        echo
        echo "## 1. netbed: one host per namespace, egress limited to RATE"
        echo
        echo "S/B is the ideal: the owner's link carries the file once. Ratios are time ÷ S/B."
        echo "Floor: one TCP stream carrying S from the owner to p1 (unicast, N=1), what the link"
        echo "really delivers after headers and start-up; no distribution can beat it."
        echo
        echo "| N | RATE Mbit/s | S MiB | S/B s | floor ÷ S/B | swarm s | swarm ÷ S/B | CPU % | unicast s | unicast ÷ S/B | swarm target | |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    } >>"$md"
    for c in "${bed_cases[@]}"; do
        read -r n rate size <<<"$c"
        ideal=$(awk -v s="$size" -v r="$rate" 'BEGIN { printf "%.2f", s * 1048576 * 8 / (r * 1e6) }')
        target=""
        [[ $smoke == 0 && $n == 5 && $rate == 100 ]] && target=1.10
        [[ $smoke == 0 && $n == 20 && $rate == 25 ]] && target=1.15
        if ((!can_bed)); then
            note "netbed N=$n at $rate Mbit/s: skipped ($bed_why)"
            echo "| $n | $rate | $size | $ideal | - | SKIPPED ($bed_why) | - | - | - | - | ${target:--} | |" >>"$md"
            csv_row netbed "n$n-${rate}mbit" "$n" "$rate" "$size" swarm "skipped: $bed_why" "" "" "" "$ideal" "" "" ""
            continue
        fi
        echo "bench: netbed N=$n at $rate Mbit/s, $size MiB (S/B $ideal s)..."
        "$netbed" up "$n" "$rate" >"$work/netbed.log" 2>&1 || {
            cat "$work/netbed.log" >&2
            die "netbed up failed"
        }
        bed_up=1
        measure unicast bed 1 "$size" "$(awk -v i="$ideal" 'BEGIN { printf "%d", 2 * i + 60 }')" 1
        f_status=$STATUS f_secs=$SECS
        floor=$(ratio "$SECS" "$ideal")
        [[ $STATUS == ok ]] || floor="$STATUS"
        echo "bench:   floor (one stream) $(shown) s (× $floor)"
        measure swarm bed "$n" "$size" "$(awk -v i="$ideal" 'BEGIN { printf "%d", 4 * i + 60 }')" "$repeat"
        s_status=$STATUS s_secs=$SECS s_runs=$RUNS s_cpu=$CPU s_shown=$(shown)
        s_ratio=$(ratio "$s_secs" "$ideal")
        echo "bench:   swarm $s_shown s (× $s_ratio, CPU $s_cpu %)"
        # Unicast takes N × S/B here, so it runs once.
        measure unicast bed "$n" "$size" "$(awk -v i="$ideal" -v n="$n" 'BEGIN { printf "%d", 2 * n * i + 60 }')" 1
        u_ratio=$(ratio "$SECS" "$ideal")
        echo "bench:   unicast $(shown) s (× $u_ratio)"
        "$netbed" down >/dev/null 2>&1 || note "netbed down failed"
        bed_up=0
        echo "| $n | $rate | $size | $ideal | $floor | $s_shown | $s_ratio | $s_cpu | $(shown) | $u_ratio | ${target:+≤ $target} | $(verdict "$s_ratio" "$target") |" >>"$md"
        csv_row netbed "n$n-${rate}mbit" "$n" "$rate" "$size" swarm "$s_status" "$s_secs" "$s_runs" "$s_cpu" "$ideal" "$s_ratio" "" ""
        csv_row netbed "n$n-${rate}mbit" "$n" "$rate" "$size" unicast "$STATUS" "$SECS" "$RUNS" "$CPU" "$ideal" "$u_ratio" "" ""
        csv_row netbed "n$n-${rate}mbit" "$n" "$rate" "$size" floor "$f_status" "$f_secs" "$f_secs" "" "$ideal" "$(ratio "$f_secs" "$ideal")" "" ""
    done
fi

# 2. loopback, swarm against unicast
if wants loopback; then
    echo "bench: loopback N=$loop_n, $loop_s MiB..."
    to=$((60 + loop_n * loop_s / 8))
    measure swarm loop "$loop_n" "$loop_s" "$to" "$repeat"
    s_status=$STATUS s_secs=$SECS s_runs=$RUNS s_cpu=$CPU s_shown=$(shown)
    measure unicast loop "$loop_n" "$loop_s" "$to" "$repeat"
    r=$(ratio "$s_secs" "$SECS")
    echo "bench:   swarm $s_shown s, unicast $(shown) s (swarm ÷ unicast $r)"
    {
        echo
        echo "## 2. loopback, no rate limit"
        echo
        echo "| N | S MiB | swarm s | CPU % | unicast s | CPU % | swarm ÷ unicast | target | |"
        echo "|---|---|---|---|---|---|---|---|---|"
        echo "| $loop_n | $loop_s | $s_shown | $s_cpu | $(shown) | $CPU | $r | ≤ 1.3 | $(verdict "$r" 1.3) |"
    } >>"$md"
    csv_row loopback "n$loop_n" "$loop_n" "" "$loop_s" swarm "$s_status" "$s_secs" "$s_runs" "$s_cpu" "" "$r" "" ""
    csv_row loopback "n$loop_n" "$loop_n" "" "$loop_s" unicast "$STATUS" "$SECS" "$RUNS" "$CPU" "" "" "" ""
fi

# 3. scaling on loopback
if wants scaling; then
    {
        echo
        echo "## 3. scaling on loopback, S = $scale_s MiB"
        echo
        echo "Time per GiB delivered counts N × S bytes. Target: N=${scale_ns[-1]} within 1.5 × N=${scale_ns[0]}."
        echo
        echo "| N | swarm s | CPU % | GiB delivered | s per GiB | ÷ N=${scale_ns[0]} | |"
        echo "|---|---|---|---|---|---|---|"
    } >>"$md"
    base_spg=""
    for n in "${scale_ns[@]}"; do
        echo "bench: scaling N=$n, $scale_s MiB..."
        measure swarm loop "$n" "$scale_s" $((60 + n * scale_s / 4)) "$repeat"
        gib=$(awk -v n="$n" -v s="$scale_s" 'BEGIN { printf "%.3f", n * s / 1024 }')
        spg=-
        [[ $STATUS == ok ]] && spg=$(ratio "$SECS" "$gib")
        [[ -z $base_spg && $spg != - ]] && base_spg=$spg
        rel=$(ratio "$spg" "$base_spg")
        v=""
        [[ $n == "${scale_ns[-1]}" ]] && v=$(verdict "$rel" 1.5)
        echo "bench:   $(shown) s, $spg s per GiB"
        echo "| $n | $(shown) | $CPU | $gib | $spg | $rel | $v |" >>"$md"
        csv_row scaling "n$n" "$n" "" "$scale_s" swarm "$STATUS" "$SECS" "$RUNS" "$CPU" "" "$rel" "$spg" ""
    done
fi

# 4. peak memory
if wants memory; then
    {
        echo
        echo "## 4. peak resident memory, $mem_s MiB, N=$mem_n, loopback"
        echo
    } >>"$md"
    if ((!can_mem)); then
        note "memory: skipped (needs /usr/bin/time; apt-get install time)"
        echo "SKIPPED: needs /usr/bin/time (package time)." >>"$md"
    else
        echo "bench: memory, $mem_s MiB, N=$mem_n..."
        to=$((120 + mem_n * mem_s / 8))
        run_one swarm loop "$mem_n" "$mem_s" "$to" 1
        s_status=$STATUS s_secs=$SECS s_cpu=$CPU SPREAD="" s_shown=$(shown)
        declare -A s_rss=()
        for k in "${!RSS[@]}"; do s_rss[$k]=${RSS[$k]}; done
        run_one unicast loop "$mem_n" "$mem_s" "$to" 1
        SPREAD=""
        echo "bench:   swarm $s_shown s, unicast $(shown) s"
        {
            echo "Wall time: swarm $s_shown s (CPU $s_cpu %), unicast $(shown) s (CPU $CPU %). Target: every swarm process ≤ 32 MiB."
            echo
            echo "| process | peak RSS MiB | |"
            echo "|---|---|---|"
        } >>"$md"
        mib() { if [[ $1 =~ ^[0-9]+$ ]]; then awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; else echo -; fi; }
        for k in owner $(seq -f 'p%g' 1 "$mem_n"); do
            m=$(mib "${s_rss[$k]:-}")
            echo "| swarm $k | $m | $(verdict "$m" 32) |" >>"$md"
            csv_row memory "swarm-$k" "$mem_n" "" "$mem_s" "swarm-$k" "$s_status" "$s_secs" "$s_secs" "$s_cpu" "" "" "" "${s_rss[$k]:-}"
        done
        for k in sender receiver; do
            m=$(mib "${RSS[$k]:-}")
            label=$k
            [[ $k == receiver ]] && label="receiver (largest)"
            echo "| unicast $label | $m | |" >>"$md"
            csv_row memory "unicast-$k" "$mem_n" "" "$mem_s" "unicast-$k" "$STATUS" "$SECS" "$SECS" "$CPU" "" "" "" "${RSS[$k]:-}"
        done
    fi
fi

# The chart: time / (S/B) against N from the netbed rows.
svg=$out/bench.svg
if [[ -x $chart ]]; then
    "$chart" "$csv" "$svg" || note "the chart could not be drawn"
else
    note "no chart: $chart is missing"
fi

{
    echo
    echo "Total bench time: $((SECONDS - started)) s. CSV: bench.csv; chart: bench.svg."
} >>"$md"
echo
cat "$md"
