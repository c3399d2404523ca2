#!/usr/bin/env bash
# bench_legacy: the sections of the benchmark not yet ported to the Rust
# runner (examples/bench/): 1 netbed, 2 repair, 6 versions, 7 sources.
# scripts/bench.sh documents every section, flag and variable; it runs
# examples/bench, which calls this script with BENCH_PART=1, ONLY set to
# the sections wanted (netbed and repair before its own 3-5, versions and
# sources after) and BENCH_RUN0 (the runs so far, so run folders and kept
# logs are numbered as before). In part mode this script appends its rows
# to the bench.md and bench.csv the runner has begun, writes its run count
# to BENCH_RUN_FILE, and leaves the build, the lock, clearing the last
# run's logs, the chart, the footer and the other sections to the runner.
# BENCH_CHECK=1 only checks the flags and variables.
#
# Run alone (without BENCH_PART) it runs these four sections with bench.md's
# header and footer and the chart.
set -euo pipefail
export LC_ALL=C

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Cargo's build folder: CARGO_TARGET_DIR when set (relative to here, as
# cargo takes it), else target/ beside the sources.
target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$PWD/$target
bin=$target/release/swarm
# (`target` is reused below for the netbed's targets; section 8 needs the
# build folder.)
build_dir=$target
uni=$target/release/examples/unicast
sim=$target/release/examples/simulate
chart=$target/release/examples/chart
netbed=$root/scripts/netbed.sh
out=${BENCH_OUT:-$root/bench-out}
smoke=${SMOKE:-0}
only=${ONLY:-netbed,repair,versions,sources}
wirings=${WIRING:-hand,owner}
kill_at=${REPAIR_KILL_AT:-50}
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
[[ ,$wirings, =~ ^(,(hand|owner))+,$ ]] || die "WIRING must list hand and/or owner, e.g. hand,owner"
[[ $kill_at =~ ^[0-9]+$ ]] && ((kill_at >= 1 && kill_at <= 99)) ||
    die "REPAIR_KILL_AT must be a percentage from 1 to 99"

# Case parameters: "N RATE_MBIT SIZE_MIB" for the netbed.
if [[ $smoke == 1 ]]; then
    bed_cases=("3 100 4")
    # The dead-peer case: N RATE SIZE, the join rank of the peer killed,
    # and the variants (owner- and hand-wired, each with and without a
    # kill). Smoke skips the hand-wired ones: the survivors of a kill wait
    # out --stall-timeout and --linger (about 40 s).
    repair_case="4 25 8" repair_rank=2 repair_variants=(nofail-owner kill-owner)
    loop_n=3 loop_s=8
    scale_ns=(3 5) scale_s=4
    mem_n=3 mem_s=16
    ver_n=3 ver_s=${VERSIONS_SIZE:-8} ver_bed_list=${VERSIONS_BEDS:-loopback}
    # Sources per peer: the slow-uplink case's N RATE SIZE, and the cases
    # run (equal and kill take the repair case's N RATE SIZE).
    src_slow="4 25 4" src_case_list=${SOURCES_CASES:-slow}
    repeat=${REPEAT:-1}
else
    bed_cases=("5 100 64" "20 25 32" "20 100 64")
    repair_case="20 25 32" repair_rank=10 repair_variants=(nofail-owner kill-owner nofail-hand kill-hand)
    loop_n=5 loop_s=256
    scale_ns=(5 10 20 40) scale_s=32
    mem_n=5 mem_s=1024
    ver_n=5 ver_s=${VERSIONS_SIZE:-1024} ver_bed_list=${VERSIONS_BEDS:-loopback,netbed}
    src_slow="10 25 16" src_case_list=${SOURCES_CASES:-floor,slow,equal,kill}
    repeat=${REPEAT:-3}
fi
[[ $repeat =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive whole number"
# The versions section: N --follow peers at ver_rate Mbit/s on the netbed,
# its beds in order, its log levels (the owner's and peers' info lines,
# without one per chunk).
ver_rate=100 ver_log=info,swarm::chunk=warn
[[ ,$ver_bed_list, =~ ^(,(loopback|netbed))+,$ ]] ||
    die "VERSIONS_BEDS must list loopback and/or netbed, e.g. loopback,netbed"
IFS=, read -r -a ver_beds <<<"$ver_bed_list"
[[ $ver_s =~ ^[1-9][0-9]*$ ]] || die "VERSIONS_SIZE must be a whole number of MiB"
# The sources section: its K values (sorted, so K=1, every ratio's
# baseline, runs first), and the slow case's host and its egress.
[[ ,$src_case_list, =~ ^(,(floor|slow|equal|kill))+,$ ]] ||
    die "SOURCES_CASES must list floor, slow, equal and/or kill, e.g. floor,slow,equal,kill"
src_k_list=${SOURCES_K:-1 2}
read -r -a src_ks <<<"${src_k_list//,/ }"
((${#src_ks[@]})) || die "SOURCES_K must list at least one K from 1 to 4 or auto, e.g. '1 2'"
for k in "${src_ks[@]}"; do
    [[ $k =~ ^([1-4]|auto)$ ]] || die "SOURCES_K must list K values from 1 to 4 or auto, e.g. '1 2' (got '$k')"
done
# auto (no --sources: the owner's choice) runs last.
mapfile -t src_ks < <(printf '%s\n' "${src_ks[@]}" | grep -v auto | sort -nu
    printf '%s\n' "${src_ks[@]}" | grep -x auto | head -1)
src_slow_host=${SOURCES_SLOW_HOST:-p3} src_slow_rate=${SOURCES_SLOW_RATE:-5}
[[ $src_slow_host =~ ^p([1-9][0-9]*)$ ]] && ((BASH_REMATCH[1] <= ${src_slow%% *})) ||
    die "SOURCES_SLOW_HOST must be one of p1..p${src_slow%% *} (the slow case's peers)"
[[ $src_slow_rate =~ ^[1-9][0-9]*$ ]] || die "SOURCES_SLOW_RATE must be a whole number of Mbit/s"
if [[ -n ${BED_CASES:-} ]]; then
    IFS=';' read -r -a bed_cases <<<"$BED_CASES"
    for c in "${bed_cases[@]}"; do
        [[ $c =~ ^[0-9]+\ [0-9]+\ [0-9]+$ ]] || die "BED_CASES must look like '5 100 64;20 25 32' (N RATE SIZE_MIB)"
    done
fi

# BENCH_CHECK=1: the runner asks whether the flags and variables are valid.
[[ ${BENCH_CHECK:-0} == 1 ]] && exit 0
can_bed=1
bed_why=""
if ((EUID != 0)); then
    can_bed=0 bed_why="needs root"
elif ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
    can_bed=0 bed_why="needs iproute2 (ip, tc)"
fi
can_mem=1
[[ -x /usr/bin/time ]] || can_mem=0

part=${BENCH_PART:-0}
((part)) || echo "bench: building swarm and the examples (release)..."
((part)) || cargo build --release --quiet --bins --examples --manifest-path "$root/Cargo.toml" ||
    die "cargo build failed"
[[ -x $bin && -x $uni ]] || die "the build did not produce $bin and $uni"

# One bench at a time: a second one would tear down the first one's netbed.
if ((!part)) && command -v flock >/dev/null; then
    exec {lock}>"${TMPDIR:-/tmp}/swarm-bench.lock"
    flock -n "$lock" || die "another scripts/bench.sh is running; wait for it to finish"
fi

mkdir -p "$out"
if ((!part)); then # the runner clears them in part mode
    rm -rf "$out/logs" # logs of failed runs; only this run's
    rm -f "$out"/timeline-*.csv # timelines, too
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/swarm-bench.XXXXXX")
mkdir -p "$work/trash"
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
# set. Logs at LOG_LEVEL (RUST_LOG syntax; warn unless set). Sets LAUNCHED
# to its process ID.
launch() {
    local mode=$1 host=$2 log=$3 mem=$4
    shift 4
    local pre=()
    [[ $mode == bed ]] && pre=(ip netns exec "swb-$host")
    [[ -n $mem ]] && pre+=(/usr/bin/time -f %M -o "$mem")
    # Without the bench's lock: a child left behind must not keep the next
    # bench out.
    if [[ -n ${lock:-} ]]; then
        RUST_LOG=${LOG_LEVEL:-warn} "${pre[@]}" "$@" </dev/null >"$log" 2>&1 {lock}>&- &
    else
        RUST_LOG=${LOG_LEVEL:-warn} "${pre[@]}" "$@" </dev/null >"$log" 2>&1 &
    fi
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

# exited PID: whether child PID has exited, a zombie included. bash 5.2 can
# be left with SIGCHLD blocked for good (seen here: a `read -t` timeout
# that fires while its SIGCHLD handler runs, then longjmps), after which it
# no longer reaps children by itself: `kill -0` then succeeds on a child
# that has long exited. `wait` still reaps it.
exited() {
    local stat
    kill -0 "$1" 2>/dev/null || return 0
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 0
    stat=${stat##*) }
    [[ $stat == Z* ]]
}

# await_listen MODE HOST PORT PID: waits (10 s at most) until PID listens.
await_listen() {
    local deadline=$((${EPOCHREALTIME/./} + 10000000))
    until listening "$1" "$2" "$3"; do
        ! exited "$4" || return 1
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
            if ! exited "$pid"; then
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
        if ((TL_ON)); then tl_sample; fi
        if ((${EPOCHREALTIME/./} >= deadline)); then
            for pid in "${left[@]}"; do
                kill_tree "$pid"
                { wait "$pid"; } 2>/dev/null || true
                CODE[$pid]=timeout
                unset "live[$pid]"
            done
            break
        fi
        # Every 30 ms: at every 10 ms, checking twenty peers cost this
        # shell about 10 % of a core, taken from CPU-bound runs.
        nap 0.03
    done
    now_us
    END=$NOW
}

# stop PID: SIGTERM, then SIGKILL after 5 s.
stop() {
    kill -TERM "$1" 2>/dev/null || true
    await $((${EPOCHREALTIME/./} + 5000000)) "$1"
}

# --- per-peer timeline ---------------------------------------------------
# A swarm run with TIMELINE=1 records, for each peer, how many chunks it
# held over time: tl_start (once the peers are launched), then tl_sample
# from await's wait loop (and watch_half's) at most every TL_EVERY_US,
# then one last sample once every peer has exited. A sample counts the
# lines of each peer's DIR/summary.txt (its chunk IDs, rewritten by rename
# at most every 200 ms while chunks arrive and at least once a second, so
# it lags by up to 0.2 s, 1 s when chunks are sparse) with `mapfile`: no
# process is forked, the files are on the host's file system even when the
# peers are in netbed namespaces, and a peer seen holding every chunk is
# not read again. Cost, measured with `times` on this 2-core VM (under
# load): about 4 ms of the bench shell's CPU per sample of 20 files of 656
# lines (64 MiB, all complete) or of 5 of 2622 (256 MiB), less while they
# fill: under 2 % of one core at 4 samples a second. One `wc -l` of all
# the files cost about 7 ms a sample, mostly in the fork. In a real run
# (loopback, N=5, 48 MiB, three runs) the bench shell used 1.4 CPU-s with
# sampling and 1.7 without: less than the noise, which is mostly the wait
# loop's own polling.
# Samples go to TL_ROWS ("seconds,peer,held,total", seconds since the
# owner's start); tl_save writes them to a file of their own and sets
# RUN_TL to its path.
CHUNK_BYTES=102400 # swarm's default --chunk-size, which the bench uses
TIMELINE=0 TL_ON=0 TL_EVERY_US=250000 RUN_TL=""
declare -a TL_HELD=()
# tl_start N SIZE_MIB T0_US: starts sampling the peers of the current run.
tl_start() {
    TL_ON=1 TL_N=$1 TL_T0=$3 TL_NEXT=0 TL_ROWS="" TL_HELD=()
    TL_TOTAL=$(((($2 << 20) + CHUNK_BYTES - 1) / CHUNK_BYTES))
    tl_sample
}
# tl_sample [now]: one sample, if TL_EVERY_US has passed since the last
# one (or "now" is given).
tl_sample() {
    local i held d secs now=${EPOCHREALTIME/./}
    local -a ids
    (($# || now >= TL_NEXT)) || return 0
    TL_NEXT=$((now + TL_EVERY_US))
    d=$((now - TL_T0))
    printf -v secs '%d.%03d' $((d / 1000000)) $((d / 1000 % 1000))
    for ((i = 1; i <= TL_N; i++)); do
        held=${TL_HELD[i]:-0}
        if ((held < TL_TOTAL)); then
            ids=()
            # No summary yet counts as none held.
            { mapfile -t ids <"$RUN_DIR/p$i/summary.txt"; } 2>/dev/null || true
            held=${#ids[@]}
            TL_HELD[i]=$held
        fi
        TL_ROWS+="$secs,$i,$held,$TL_TOTAL"$'\n'
    done
}
# tl_save: the last sample, then the run's samples to a file (RUN_TL).
tl_save() {
    tl_sample now
    TL_ON=0
    RUN_TL=$work/timeline-run$run.csv
    printf 'seconds,peer,held,total\n%s' "$TL_ROWS" >"$RUN_TL"
    TL_ROWS=""
}

# In part mode the runner numbers runs on from the last part (BENCH_RUN0).
run=${BENCH_RUN0:-0}
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
        # 15 ranges of 100 from 31000 stay below the ephemeral ports (32768 on).
        base=$((BASE_PORT + ((run + try) % 15) * 100))
        busy=0
        for ((p = base; p <= base + n; p++)); do
            if listening loop - "$p"; then busy=1; break; fi
        done
        ((busy)) || { BASE=$base; return 0; }
    done
    die "no free range of $((n + 1)) ports from $BASE_PORT; set BASE_PORT"
}

# Address of host HOST ("owner" or a peer number) and its port. On the
# netbed, peer I listens on port 9000+I, so its name in logs ("peer
# 9007") says which it is.
addr_of() {
    if [[ $1 == bed ]]; then
        if [[ $2 == owner ]]; then ADDR=10.77.0.1:9000; else ADDR=10.77.1.$2:$((9000 + $2)); fi
    else
        if [[ $2 == owner ]]; then ADDR=127.0.0.1:$BASE; else ADDR=127.0.0.1:$((BASE + $2)); fi
    fi
    PORT=${ADDR##*:}
    BIND=${ADDR%:*}
}

# verify_copies N INPUT: checks each peer's exit (CODE[] of PEER_PIDS) and
# its copy against the input, but for peer KILLED (killed on purpose); sets
# STATUS to ok, or to how many failed and the first failure.
verify_copies() {
    local n=$1 input=$2 i code why first="" bad=0
    for ((i = 1; i <= n; i++)); do
        [[ $i == "${KILLED:-}" ]] && continue
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
        # Not `[[ ]] && ...`: without a kill that would be this function's
        # status, and set -e would end the bench at its first failed run.
        if [[ -n ${KILLED:-} ]]; then STATUS="FAILED: $bad of $((n - 1)) survivors ($first)"; fi
    else
        STATUS=ok
    fi
}

# child_cpu: sets CHILD_USER and CHILD_SYS to the user and system CPU
# seconds of every child this shell has reaped so far (getrusage's
# RUSAGE_CHILDREN, through the `times` builtin; a process killed by a
# signal counts too). Not in a subshell: a fork starts its own count.
child_cpu() {
    local f=$work/times.txt shell_line child_line
    times >"$f"
    { read -r shell_line; read -r child_line; } <"$f"
    read -r CHILD_USER CHILD_SYS < <(awk '{
        for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); v[i] = p[1] * 60 + p[2] }
        printf "%.3f %.3f\n", v[1], v[2] }' <<<"$child_line")
}

# cpu_ticks: busy and total CPU ticks so far, from /proc/stat (no fork).
cpu_ticks() {
    local _cpu user nice sys idle iowait irq softirq steal _rest
    read -r _cpu user nice sys idle iowait irq softirq steal _rest </proc/stat
    TICKS_TOTAL=$((user + nice + sys + idle + iowait + irq + softirq + steal))
    TICKS_BUSY=$((TICKS_TOTAL - idle - iowait))
}

# owner_status MODE ADDR: the owner's registry (`swarm status --json`) in
# STATUS_JSON, or "" when it cannot be had within 10 s.
owner_status() {
    local pre=()
    [[ $1 == bed ]] && pre=(ip netns exec swb-owner)
    STATUS_JSON=$("${pre[@]}" timeout 10 "$bin" status --owner "$2" --json 2>/dev/null) || STATUS_JSON=""
}
# json_nums JSON KEY: every whole number given for "KEY" in JSON, in order.
json_nums() { grep -o "\"$2\":[0-9]*" <<<"$1" | cut -d: -f2 || true; }

# stamp_of US: epoch microseconds as the logs' UTC timestamp (to the ms).
stamp_of() {
    date -u -d "@$(($1 / 1000000)).$(printf %06d $(($1 % 1000000)))" +%Y-%m-%dT%H:%M:%S.%3NZ
}
# first_after FILE STAMP REGEX: the first line of log FILE stamped at or
# after STAMP that matches REGEX (awk); sets LINE to it (or "") and
# AFTER_MS to how many ms after STAMP it was logged.
first_after() {
    LINE=$(awk -v s="$2" -v re="$3" 'substr($1, 2) >= s && $0 ~ re { print; exit }' "$1" 2>/dev/null || true)
    AFTER_MS=""
    [[ -n $LINE ]] || return 0
    local t=${LINE#\[}
    t=${t%% *}
    AFTER_MS=$(($(date -u -d "$t" +%s%3N) - $(date -u -d "$2" +%s%3N)))
}
# ordinal K: 1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st, ...
ordinal() {
    case $(($1 % 100)) in
        11 | 12 | 13) echo "${1}th" ;;
        *) case $(($1 % 10)) in 1) echo "${1}st" ;; 2) echo "${1}nd" ;; 3) echo "${1}rd" ;; *) echo "${1}th" ;; esac ;;
    esac
}
# fx A B: A / B to two places.
fx() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# analyse_logs MODE N SIZE_MIB T0_US: reads a finished run's logs into X[]
# (numbers; a key is missing when its log line is): complete (the slowest
# survivor's "complete in" time after the owner's start, s), from_owner_x
# (MiB the survivors say came from the owner ÷ S), and with the owner
# logging every chunk: seed_x (initial seeds), reseed_x (chunks the
# registry saw on no live peer, pushed when a peer died or left), req_x (chunks peers asked the owner
# for: end game and stall fallback), all ÷ the file's chunk count. After
# a kill: gone_ms (owner declares the victim gone; GONE_HOW says why),
# rewire_ms (owner re-wires its upload neighbour), reconnect_ms (that
# neighbour connects to its new download neighbour), fallback_ms (the
# first survivor fetching missing chunks from the owner), each in ms after
# the kill, and reseed_kill_x (the part of reseed_x pushed for the death).
declare -A X=()
GONE_HOW=""
analyse_logs() {
    local mode=$1 n=$2 size=$3 t0=$4 i line c mib max="" from=0 base
    X=() GONE_HOW=""
    if [[ $mode == bed ]]; then base=9000; else base=$BASE; fi
    for ((i = 1; i <= n; i++)); do
        [[ $i == "${KILLED:-}" ]] && continue
        line=$(grep -o 'complete in [0-9.]* s: [0-9.]* MiB from the owner' "$RUN_DIR/p$i.log" | tail -n 1 || true)
        [[ $line =~ complete\ in\ ([0-9.]+)\ s:\ ([0-9.]+)\ MiB ]] || continue
        c=${BASH_REMATCH[1]} mib=${BASH_REMATCH[2]}
        c=$(awk -v c="$c" -v l=$((LAUNCH_US[i] - t0)) 'BEGIN { printf "%.2f", c + l / 1e6 }')
        max=$(awk -v a="$c" -v b="${max:-0}" 'BEGIN { print (a > b ? a : b) }')
        from=$(awk -v a="$from" -v b="$mib" 'BEGIN { print a + b }')
    done
    [[ -n $max ]] && X[complete]=$max X[from_owner_x]=$(fx "$from" "$size")
    local olog=$RUN_DIR/owner.log count
    count=$(grep -o 'bytes, [0-9]* chunks of' "$olog" | head -n 1 | grep -o '[0-9]* chunks' | cut -d' ' -f1 || true)
    if [[ -n $count ]] && grep -q 'received request for chunk\|sent chunk' "$olog"; then
        X[seed_x]=$(fx "$(grep -oE 'seeding [0-9]+ chunks to' "$olog" | awk '{ s += $2 } END { print s + 0 }')" "$count")
        X[reseed_x]=$(fx "$(grep -oE '[0-9]+ chunks are held by no live peer' "$olog" | awk '{ s += $1 } END { print s + 0 }')" "$count")
        X[req_x]=$(fx "$(grep -c 'received request for chunk' "$olog" || true)" "$count")
    fi
    [[ -n ${KILLED:-} ]] || return 0
    first_after "$olog" "$KILL_STAMP" 'it is gone'
    if [[ -n $AFTER_MS ]]; then
        X[gone_ms]=$AFTER_MS
        GONE_HOW=grace
        [[ $LINE == *"cannot reach"* ]] && GONE_HOW=unreachable
        # The reseed the death called for: logged with it, at most a few
        # lines on (the rest of reseed_x comes from complete peers leaving).
        c=$(awk -v g="$LINE" '$0 == g { n = 1; next }
            n && n++ <= 5 && / chunks are held by no live peer/ { print $5; exit }' "$olog" || true)
        [[ -n $count && $c =~ ^[0-9]+$ ]] && X[reseed_kill_x]=$(fx "$c" "$count")
    fi
    first_after "$olog" "$KILL_STAMP" 're-wired '
    if [[ -n $AFTER_MS ]]; then
        X[rewire_ms]=$AFTER_MS
        # "re-wired HOST:PORT: it now downloads from ..."
        if [[ $LINE =~ re-wired\ [^\ ]*:([0-9]+): ]]; then
            local u=$((BASH_REMATCH[1] - base))
            first_after "$RUN_DIR/p$u.log" "$KILL_STAMP" 'connected to download neighbour'
            [[ -n $AFTER_MS ]] && X[reconnect_ms]=$AFTER_MS
        fi
    fi
    local best=""
    for ((i = 1; i <= n; i++)); do
        [[ $i == "$KILLED" ]] && continue
        first_after "$RUN_DIR/p$i.log" "$KILL_STAMP" 'fetching missing chunks from the owner'
        [[ -n $AFTER_MS ]] && { [[ -z $best ]] || ((AFTER_MS < best)); } && best=$AFTER_MS
    done
    [[ -n $best ]] && X[fallback_ms]=$best
    return 0
}

# held_share MODE OWNER_ADDR N: the share (percent, whole) of N × chunks the
# peers hold by the owner's registry, in HELD_PCT ("" when the owner does
# not answer). The registry lags: peers report what they gain once a
# second. Asked from inside the owner's namespace, so the manifest the
# owner sends the status client stays off the shaped link.
held_share() {
    local nums total=0 count h
    owner_status "$1" "$2"
    nums=$(json_nums "$STATUS_JSON" chunks)
    count=$(head -n 1 <<<"$nums")
    HELD_PCT=""
    [[ -n $count ]] || return 0
    for h in $(tail -n +2 <<<"$nums"); do total=$((total + h)); done
    HELD_PCT=$(awk -v t="$total" -v c="$count" -v n="$3" 'BEGIN { printf "%.0f", (c > 0 ? 100 * t / (c * n) : 0) }')
}

# watch_half MODE N T0_US OWNER_ADDR DEADLINE_US: asks the owner's
# registry every 0.25 s until the peers hold WATCH_PCT % of N × chunks
# (or every peer has exited, or the deadline passes). Sets X_HALF_S (when,
# in s after T0) and X_HALF_PCT (the share then); both "" if never. Then,
# with KILL_RANK set, kills (SIGKILL) a peer: with WIRED=owner the one that
# joined KILL_RANK-th (from the owner's log), else pKILL_RANK, and sets
# KILLED and KILL_STAMP, or STATUS to why it could not. Variants without a
# kill poll too, so every variant pays the same for the polling.
watch_half() {
    local mode=$1 n=$2 t0=$3 owner_addr=$4 deadline=$5 v=$KILL_RANK line base i alive
    X_HALF_S="" X_HALF_PCT=""
    while :; do
        held_share "$mode" "$owner_addr" "$n"
        if ((TL_ON)); then tl_sample; fi
        now_us
        if [[ -n $HELD_PCT ]] && ((HELD_PCT >= WATCH_PCT)); then
            X_HALF_S=$(secs $((NOW - t0))) X_HALF_PCT=$HELD_PCT
            break
        fi
        alive=0
        for ((i = 1; i <= n; i++)); do exited "${PEER_PIDS[$i]}" || alive=1; done
        ((alive && NOW < deadline)) || break
        nap 0.25
    done
    [[ -n $KILL_RANK ]] || return 0
    if [[ -z $X_HALF_S ]]; then
        STATUS="FAILED: the peers never held $WATCH_PCT % of N × chunks by the registry; no kill"
        return
    fi
    if [[ $mode == bed ]]; then base=9000; else base=$BASE; fi
    if [[ $WIRED == owner ]]; then
        line=$(grep -oE '[0-9.]+:[0-9]+ joined \(' "$RUN_DIR/owner.log" | sed -n "${KILL_RANK}p" || true)
        if [[ $line =~ :([0-9]+)\ joined ]]; then
            v=$((BASH_REMATCH[1] - base))
        else
            note "the owner's log does not say who joined $(ordinal "$KILL_RANK"); killing p$v"
        fi
    fi
    local pid=${PEER_PIDS[$v]}
    if exited "$pid"; then
        STATUS="FAILED: p$v had exited before the kill"
        return
    fi
    # Disowned, so bash does not report it as "Killed"; its zombie is
    # reaped with the next child bash waits for.
    disown "$pid" 2>/dev/null || true
    now_us
    local killed_at=$NOW
    kill -KILL "$pid" 2>/dev/null || true
    unset "live[$pid]"
    KILLED=$v
    KILL_STAMP=$(stamp_of "$killed_at")
    X_HALF_S=$(secs $((killed_at - t0)))
    note "  killed p$KILLED at $X_HALF_S s; the registry showed $X_HALF_PCT % of N × chunks held"
}

# run_one TOOL MODE N SIZE_MIB TIMEOUT_S [MEM]: one distribution with swarm
# or unicast. Sets STATUS (ok or FAILED: why), SECS, CPU (percent of all
# cores busy during the run), CPU_S, CPU_USER and CPU_SYS (CPU-seconds
# used by the run's own processes, from getrusage of the reaped children:
# the owner or sender and every peer or receiver) and, with MEM=1, RSS[] in KiB: owner and pI
# for swarm, sender and receiver (the largest) for unicast. For swarm also
# SENT_X (what the owner sent ÷ S, or "") and X[] (see analyse_logs).
# Swarm runs follow these settings: WIRED (hand: every peer given
# --download-neighbor; owner: none, the owner wires them), WATCH_PCT and
# KILL_RANK (watch the owner's registry until the peers hold WATCH_PCT % of
# N × chunks, then kill a peer; see watch_half), OWNER_LOG and PEER_LOG (RUST_LOG of each; warn),
# KEEP_LOGS=1 (keep the logs of a run that went well too), TIMELINE=1
# (sample each peer's chunks held into RUN_TL; see tl_start) and
# PEER_SOURCES (K: every peer given --sources K, 1 included, since
# without the flag the owner chooses, 3 from 16 peers on; "" passes no
# flag and leaves it out of the run's label as well).
WIRED=hand WATCH_PCT="" KILL_RANK="" OWNER_LOG=warn PEER_LOG=warn KEEP_LOGS=0 PEER_SOURCES=""
declare -A RSS=()
declare -a LAUNCH_US=()
run_one() {
    local tool=$1 mode=$2 n=$3 size=$4 timeout=$5 mem=${6:-0} i
    check_interrupt
    input_file "$size"
    local label=$tool-$mode
    [[ $tool == swarm ]] && label+=-$WIRED${PEER_SOURCES:+-k$PEER_SOURCES}${KILL_RANK:+-kill}
    new_run "$label-n$n-${size}M"
    [[ $mode == bed ]] || free_base "$n"
    RSS=() X=() LAUNCH_US=()
    SECS="" CPU="" CPU_S="" CPU_USER="" CPU_SYS="" SENT_X="" KILLED="" KILL_STAMP="" X_HALF_S="" X_HALF_PCT="" GONE_HOW=""
    RUN_TL=""
    STATUS=ok
    local memfile=""
    [[ $mem == 1 ]] && memfile=$RUN_DIR/owner.rss
    cpu_ticks
    local busy0=$TICKS_BUSY total0=$TICKS_TOTAL
    child_cpu
    local user0=$CHILD_USER sys0=$CHILD_SYS
    now_us
    local t0=$NOW
    addr_of "$mode" owner
    local owner_addr=$ADDR owner_port=$PORT
    if [[ $tool == swarm ]]; then
        # The owner is killed at the end, so its peak comes from /proc.
        LOG_LEVEL=$OWNER_LOG launch "$mode" owner "$RUN_DIR/owner.log" "" \
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
    local neighbour=() sources=()
    [[ -n $PEER_SOURCES ]] && sources=(--sources "$PEER_SOURCES")
    for ((i = 1; i <= n; i++)); do
        [[ $mem == 1 ]] && memfile=$RUN_DIR/p$i.rss
        now_us
        LAUNCH_US[i]=$NOW
        if [[ $tool == swarm ]]; then
            neighbour=()
            if [[ $WIRED == hand ]]; then
                addr_of "$mode" $((i % n + 1))
                neighbour=(--download-neighbor "$ADDR")
            fi
            addr_of "$mode" "$i"
            LOG_LEVEL=$PEER_LOG launch "$mode" "p$i" "$RUN_DIR/p$i.log" "$memfile" \
                "$bin" peer --owner "$owner_addr" --port "$PORT" --bind "$BIND" \
                "${neighbour[@]}" "${sources[@]}" --dir "$RUN_DIR/p$i" --out "$RUN_DIR/p$i.bin"
        else
            launch "$mode" "p$i" "$RUN_DIR/p$i.log" "$memfile" \
                "$uni" recv --from "$owner_addr" --out "$RUN_DIR/p$i.bin" --wait 60
        fi
        PEER_PIDS[i]=$LAUNCHED
    done
    if [[ $tool == swarm ]] && ((TIMELINE)); then tl_start "$n" "$size" "$t0"; fi
    [[ $tool == swarm && -n $WATCH_PCT ]] && watch_half "$mode" "$n" "$t0" "$owner_addr" $((t0 + timeout * 1000000))
    local waiting=()
    for ((i = 1; i <= n; i++)); do
        [[ $i == "$KILLED" ]] || waiting+=("${PEER_PIDS[$i]}")
    done
    await $((t0 + timeout * 1000000)) "${waiting[@]}"
    local t1=$END
    if ((TL_ON)); then tl_save; fi
    cpu_ticks
    CPU=$(awk -v b=$((TICKS_BUSY - busy0)) -v t=$((TICKS_TOTAL - total0)) \
        'BEGIN { if (t > 0) printf "%.0f", 100 * b / t; else print "-" }')
    if [[ $tool == swarm ]]; then
        [[ $mem == 1 ]] &&
            RSS[owner]=$(awk '/^VmHWM:/ { print $2 }' "/proc/$owner/status" 2>/dev/null || true)
        if ! exited "$owner"; then
            # What the owner sent in all, by its own count.
            owner_status "$mode" "$owner_addr"
            local sent
            sent=$(json_nums "$STATUS_JSON" owner_sent_bytes | head -n 1)
            [[ -n $sent ]] && SENT_X=$(fx "$sent" $((size << 20)))
        else
            note "the swarm owner exited before it was stopped (see its log)"
        fi
        stop "$owner"
    else
        # The sender exits by itself once every receiver acknowledged.
        await $((${EPOCHREALTIME/./} + 10000000)) "$owner"
    fi
    # Before cmp: its reading of every copy is not the run's.
    child_cpu
    CPU_USER=$(awk -v a="$CHILD_USER" -v b="$user0" 'BEGIN { printf "%.2f", a - b }')
    CPU_SYS=$(awk -v a="$CHILD_SYS" -v b="$sys0" 'BEGIN { printf "%.2f", a - b }')
    CPU_S=$(awk -v a="$CPU_USER" -v b="$CPU_SYS" 'BEGIN { printf "%.2f", a + b }')
    local why=""
    [[ $STATUS == ok ]] || why=$STATUS
    verify_copies "$n" "$INPUT"
    [[ -z $why ]] || STATUS=$why
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
    if [[ $tool == swarm ]]; then
        analyse_logs "$mode" "$n" "$size" "$t0"
        [[ -n $X_HALF_PCT ]] && X[half_pct]=$X_HALF_PCT
        [[ -n $X_HALF_S ]] && X[half_s]=$X_HALF_S
    fi
    if [[ $STATUS == ok ]]; then
        SECS=$(secs $((t1 - t0)))
        ((KEEP_LOGS)) && keep_logs
    else
        keep_logs
        note "$tool $mode N=$n $size MiB: $STATUS (logs in $FAIL_LOGS)"
    fi
    # Kept until every run of this case is done (see empty_trash).
    mv "$RUN_DIR" "$work/trash/" 2>/dev/null || rm -rf "$RUN_DIR"
    # Write back this run's files now, not during the next one.
    sync
}

# empty_trash: deletes the folders of the runs measured so far. Not
# between runs of one case: ext4 without a journal (this VM's root file
# system) skips, on every file it creates, each inode freed in the last
# minutes, one by one, and deleting a run's 15,000 chunk files right
# before the next run made that run's CPU time swing from 12 to 18
# seconds (loopback, 256 MiB).
empty_trash() {
    rm -rf "$work/trash"
    mkdir -p "$work/trash"
    sync
}

# spread_of VALUES...: sets MED (the median) and SPR ("min–max", or "" for
# one value) of numbers; both "" for none.
spread_of() {
    MED="" SPR=""
    (($#)) || return 0
    local sorted
    sorted=$(printf '%s\n' "$@" | sort -g)
    MED=$(sed -n "$((($# + 1) / 2))p" <<<"$sorted")
    (($# > 1)) && SPR="$(head -n 1 <<<"$sorted")–$(tail -n 1 <<<"$sorted")"
    return 0
}

# measure TOOL MODE N SIZE_MIB TIMEOUT_S REPEATS: run_one REPEATS times.
# Sets STATUS (ok, or FAILED with how many runs failed and the first
# reason), SECS (the median), SPREAD ("min–max" when repeated), RUNS (every
# time, ";"-separated), CPU (the median run's), CPU_S (median CPU-seconds,
# with CPU_S_SPREAD), CPU_USER and CPU_SYS (medians); for swarm also SENT
# (median owner sent ÷ S, "min–max" in SENT_SPREAD, every run's in
# SENT_RUNS), XS[key] (every successful run's X[key], space-separated),
# VICTIMS (who was killed in each run) and GONE_HOWS. With TIMELINE=1,
# TL_PICK is the timeline of the median run (of the first failed one when
# a run failed; "" when it has none) and TL_RUN says which ("2/3").
declare -A XS=()
measure() {
    local tool=$1 mode=$2 n=$3 size=$4 timeout=$5 reps=$6 k key failed=0 first="" first_k=""
    local times=() cpus=() sents=() cpu_s=() cpu_user=() cpu_sys=() tls=()
    XS=() VICTIMS="" GONE_HOWS="" TL_PICK="" TL_RUN=""
    for ((k = 1; k <= reps; k++)); do
        run_one "$tool" "$mode" "$n" "$size" "$timeout"
        tls[k]=$RUN_TL
        [[ -n $KILLED ]] && VICTIMS+="${VICTIMS:+ }p$KILLED"
        [[ -n $GONE_HOW ]] && GONE_HOWS+="${GONE_HOWS:+ }$GONE_HOW"
        if [[ $STATUS == ok ]]; then
            [[ -n $SENT_X ]] && sents+=("$SENT_X")
            times+=("$SECS")
            cpus+=("$SECS $CPU $k")
            cpu_s+=("$CPU_S") cpu_user+=("$CPU_USER") cpu_sys+=("$CPU_SYS")
            for key in "${!X[@]}"; do XS[$key]+="${XS[$key]:+ }${X[$key]}"; done
        else
            failed=$((failed + 1))
            [[ -n $first ]] || first=${STATUS#FAILED: } first_k=$k
        fi
    done
    empty_trash
    RUNS=$(IFS=';'; echo "${times[*]}")
    SENT_RUNS=$(IFS=';'; echo "${sents[*]}")
    spread_of "${sents[@]}"
    SENT=$MED SENT_SPREAD=$SPR
    spread_of "${cpu_s[@]}"
    CPU_S=$MED CPU_S_SPREAD=$SPR
    spread_of "${cpu_user[@]}"
    CPU_USER=$MED
    spread_of "${cpu_sys[@]}"
    CPU_SYS=$MED
    SPREAD="" SECS="" CPU=""
    if ((failed)); then
        STATUS="FAILED"
        ((reps > 1)) && STATUS+=" $failed of $reps runs:"
        STATUS+=" $first"
        TL_PICK=${tls[first_k]} TL_RUN=$first_k/$reps
        return
    fi
    STATUS=ok
    local sorted
    sorted=$(printf '%s\n' "${cpus[@]}" | sort -n)
    read -r SECS CPU k < <(sed -n "$(((reps + 1) / 2))p" <<<"$sorted")
    TL_PICK=${tls[k]} TL_RUN=$k/$reps
    if ((reps > 1)); then
        SPREAD="$(head -n 1 <<<"$sorted" | cut -d' ' -f1)–$(tail -n 1 <<<"$sorted" | cut -d' ' -f1)"
    fi
}

# ideal_of SIZE_MIB RATE_MBIT: S/B in seconds, the owner's link carrying
# the file once.
ideal_of() { awk -v s="$1" -v r="$2" 'BEGIN { printf "%.2f", s * 1048576 * 8 / (r * 1e6) }'; }

# netbed_up N RATE: the testbed with N peers at RATE Mbit/s, or the bench
# stops with netbed.sh's output.
netbed_up() {
    "$netbed" up "$1" "$2" >"$work/netbed.log" 2>&1 || {
        cat "$work/netbed.log" >&2
        die "netbed up failed"
    }
    bed_up=1
}
# netbed_down: the testbed torn down (a failure is only noted).
netbed_down() {
    "$netbed" down >/dev/null 2>&1 || note "netbed down failed"
    bed_up=0
}

# --- new versions (section 6) ----------------------------------------------
# A series: the owner and VER_N --follow peers stay up through three
# versions of one file; every number comes from their logs (timestamps
# included), /proc and /usr/bin/time.
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
declare -a V_PIDS=() V_INNER=()
declare -A VRSS=()
declare -a VSTATUS=() VS=() VSHARE=() VRMAX=() VRMED=() VOWN=() VRING=() VKEPT=() VCHUNKS=() VSIZE=()
declare -a VCPU_OWN=() VCPU_PEERS=() VCPU_ALL=() VCPU_USER=() VCPU_SYS=() VCPU_PCT=()

# ver_inner I: the process doing V_PIDS[I]'s work, in V_INNER[I]: under
# /usr/bin/time, its child (once it has one); else the process itself.
ver_inner() {
    local pid=${V_PIDS[$1]} kids=""
    [[ -z ${V_INNER[$1]:-} ]] || return 0
    if ((can_mem)); then
        { read -r kids <"/proc/$pid/task/$pid/children" || true; } 2>/dev/null
        [[ -n $kids ]] && V_INNER[$1]=${kids%% *}
    else
        V_INNER[$1]=$pid
    fi
    return 0
}
# ver_cpu: clock ticks used so far (from /proc, no fork) by the owner
# (C_OWN_U, C_OWN_S) and by all peers (C_PEERS_U, C_PEERS_S).
ver_cpu() {
    local i stat rest f
    C_OWN_U=0 C_OWN_S=0 C_PEERS_U=0 C_PEERS_S=0
    for i in "${!V_PIDS[@]}"; do
        ver_inner "$i"
        [[ -n ${V_INNER[i]:-} ]] || continue
        { read -r stat <"/proc/${V_INNER[i]}/stat"; } 2>/dev/null || continue
        rest=${stat##*) }
        read -r -a f <<<"$rest"
        # Fields 14 and 15 of stat(5): utime, stime.
        if ((i == 0)); then
            C_OWN_U=${f[11]} C_OWN_S=${f[12]}
        else
            C_PEERS_U=$((C_PEERS_U + f[11])) C_PEERS_S=$((C_PEERS_S + f[12]))
        fi
    done
}
# ver_alive: whether every process of the series still runs; else WHY.
ver_alive() {
    local i
    for i in "${!V_PIDS[@]}"; do
        if exited "${V_PIDS[i]}"; then
            if ((i == 0)); then WHY="the owner exited"; else WHY="p$i exited"; fi
            return 1
        fi
    done
    return 0
}
# ver_grep FILE PATTERN: the first line of FILE holding PATTERN (fixed
# text) in LINE, or "" (status 1).
ver_grep() {
    LINE=$(grep -m 1 -F -- "$2" "$1" 2>/dev/null) || { LINE=""; return 1; }
}
# ver_await_owner DEADLINE_US PATTERN: waits for the owner's log line
# holding PATTERN (in LINE); status 1 with WHY when the deadline passes or
# a process of the series exits first.
ver_await_owner() {
    until ver_grep "$RUN_DIR/owner.log" "$2"; do
        ver_alive || return 1
        if ((${EPOCHREALTIME/./} >= $1)); then
            WHY="the owner never logged \"$2\""
            return 1
        fi
        nap 0.1
    done
}
# ver_await_peers DEADLINE_US ID: waits until every peer has logged its
# line for version ID; their lines, in peer order, in PLINES[]. Status 1
# with WHY when the deadline passes or a process exits first.
declare -a PLINES=()
ver_await_peers() {
    local deadline=$1 id=$2 i out line f missing
    local logs=()
    PLINES=()
    for ((i = 1; i <= ver_n; i++)); do logs+=("$RUN_DIR/p$i.log"); done
    while :; do
        # One grep a poll for all the logs; -m 1 counts per file.
        out=$(grep -H -m 1 -F -- ": version $id in " "${logs[@]}" 2>/dev/null || true)
        while IFS= read -r line; do
            [[ -n $line ]] || continue
            f=${line%%:*}
            f=${f##*/p}
            PLINES[${f%.log}]=${line#*:}
        done <<<"$out"
        ((${#PLINES[@]} < ver_n)) || return 0
        if ! ver_alive; then return 1; fi
        if ((${EPOCHREALTIME/./} >= deadline)); then
            missing=""
            for ((i = 1; i <= ver_n; i++)); do [[ -n ${PLINES[i]:-} ]] || missing+="${missing:+, }p$i"; done
            WHY="$missing never logged version $id"
            return 1
        fi
        nap 0.25
    done
}
# ver_ms STAMP...: each log timestamp (2026-01-02T03:04:05.678Z) as epoch
# milliseconds, in MS[], with one date.
declare -a MS=()
ver_ms() {
    mapfile -t MS < <(printf '%s\n' "$@" | date -u -f - +%s%3N)
}
# stamp_in LINE: a log line's timestamp.
stamp_in() { STAMP=${1#\[}; STAMP=${STAMP%% *}; }
ver_rss_mib() { if [[ $1 =~ ^[0-9]+$ ]]; then awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; else echo -; fi; }

# ver_rewrite FILE COUNT: COUNT whole chunks of FILE, at random, rewritten
# in place with random bytes, each with one dd.
ver_rewrite() {
    local file=$1 count=$2 whole p
    whole=$(($(stat -c %s "$file") / CHUNK_BYTES))
    for p in $(shuf -i "0-$((whole - 1))" -n "$count"); do
        dd if=/dev/urandom of="$file" bs="$CHUNK_BYTES" seek="$p" count=1 conv=notrunc iflag=fullblock status=none ||
            return 1
    done
}
# ver_insert FILE: FILE with 1 MiB of random bytes inserted at 10 % of its
# size, written beside it and synced (untimed), then moved over it. The
# move is the change.
ver_insert() {
    local file=$1 size at
    size=$(stat -c %s "$file")
    at=$((size / 10))
    {
        head -c "$at" "$file"
        head -c 1048576 /dev/urandom
        tail -c "+$((at + 1))" "$file"
    } >"$file.new" || return 1
    (($(stat -c %s "$file.new") == size + 1048576)) || return 1
    sync
    mv "$file.new" "$file"
}

# versions_series MODE CHUNKING: one series on loopback (loop) or the
# netbed (bed, already up), with fixed or content chunking. Sets, per
# version K (1..3) reached: VSTATUS[K] (ok, or FAILED: why; unset when not
# run), VS[K] (s from the owner's start or the change to the last peer's
# line), VSHARE[K] (s from "now sharing" to it), VRMAX[K] and VRMED[K]
# (bytes received, % of the version's size: largest peer's, median),
# VOWN[K] and VRING[K] (chunk bytes all peers took from the owner and the
# ring), VKEPT[K] and VCHUNKS[K] (the owner's "S of its C chunks"),
# VSIZE[K] (bytes), VCPU_OWN[K] and VCPU_PEERS[K] (CPU-s), VCPU_ALL[K],
# VCPU_USER[K], VCPU_SYS[K] (all processes), VCPU_PCT[K] (share of all
# cores busy); VRSS[owner], VRSS[pI] (peak KiB over the series) and
# VSERIES (ok, or the first failure).
versions_series() {
    local mode=$1 chunking=$2 n=$ver_n i k
    local bedname=loopback
    [[ $mode == bed ]] && bedname="n$n-${ver_rate}mbit"
    check_interrupt
    new_run "versions-$bedname-$chunking"
    [[ $mode == bed ]] || free_base "$n"
    VSTATUS=() VS=() VSHARE=() VRMAX=() VRMED=() VOWN=() VRING=() VKEPT=() VCHUNKS=() VSIZE=()
    VCPU_OWN=() VCPU_PEERS=() VCPU_ALL=() VCPU_USER=() VCPU_SYS=() VCPU_PCT=()
    VRSS=() V_PIDS=() V_INNER=() VSERIES=ok
    input_file "$ver_s"
    mkdir -p "$RUN_DIR/src"
    local file=$RUN_DIR/src/data.bin
    cp "$INPUT" "$file" || die "cannot copy $INPUT (disk full?)"
    sync
    local timeout
    if [[ $mode == bed ]]; then
        timeout=$(awk -v i="$(ideal_of "$ver_s" "$ver_rate")" 'BEGIN { printf "%d", 4 * i + 60 }')
    else
        timeout=$((120 + n * ver_s / 8))
    fi
    local chunk_opt=() memfile=""
    [[ $chunking == content ]] && chunk_opt=(--chunking content)
    ((can_mem)) && memfile=$RUN_DIR/owner.rss
    addr_of "$mode" owner
    local owner_addr=$ADDR
    # v1's CPU counts from here: the owner's first indexing is part of it.
    cpu_ticks
    local busy1=$TICKS_BUSY total1=$TICKS_TOTAL
    now_us
    local t0=$NOW
    LOG_LEVEL=$ver_log launch "$mode" owner "$RUN_DIR/owner.log" "$memfile" \
        "$bin" owner --port "$PORT" --bind "$BIND" --dir "$RUN_DIR/owner" --peers "$n" \
        "${chunk_opt[@]}" "$file"
    V_PIDS[0]=$LAUNCHED
    WHY=""
    if ver_await_owner $((t0 + timeout * 1000000)) "owner: listening on "; then
        for ((i = 1; i <= n; i++)); do
            ((can_mem)) && memfile=$RUN_DIR/p$i.rss
            addr_of "$mode" "$i"
            LOG_LEVEL=$ver_log launch "$mode" "p$i" "$RUN_DIR/p$i.log" "$memfile" \
                "$bin" peer --owner "$owner_addr" --port "$PORT" --bind "$BIND" \
                --dir "$RUN_DIR/p$i" --follow
            V_PIDS[i]=$LAUNCHED
        done
    fi
    local change_ms id line busy0 total0 ou0 os0 pu0 ps0 stamps
    local -a recv
    for k in 1 2 3; do
        if [[ -n $WHY ]]; then
            ((k > 1)) || VSTATUS[1]="FAILED: $WHY"
            break
        fi
        check_interrupt
        if ((k == 1)); then
            busy0=$busy1 total0=$total1 ou0=0 os0=0 pu0=0 ps0=0
        else
            cpu_ticks
            busy0=$TICKS_BUSY total0=$TICKS_TOTAL
            ver_cpu
            ou0=$C_OWN_U os0=$C_OWN_S pu0=$C_PEERS_U ps0=$C_PEERS_S
        fi
        case $k in
            1) change_ms=$((t0 / 1000)) ;;
            2)
                ver_rewrite "$file" "$ver_k" || die "cannot rewrite chunks of $file"
                now_us
                change_ms=$((NOW / 1000))
                ;;
            3)
                ver_insert "$file" || die "cannot write $file.new (disk full?)"
                now_us
                change_ms=$((NOW / 1000))
                ;;
        esac
        VSTATUS[k]=ok
        VSIZE[k]=$(stat -c %s "$file")
        local deadline=$((change_ms * 1000 + timeout * 1000000))
        if ! ver_await_owner "$deadline" "owner: version $k: file ID "; then
            VSTATUS[k]="FAILED: $WHY"
            break
        fi
        # owner: version 2: file ID 3787793e, 82 chunks; 80 of its 82 chunks were in the version before
        [[ $LINE =~ file\ ID\ ([0-9a-f]+),\ ([0-9]+)\ chunks(\;\ ([0-9]+)\ of\ its)? ]] ||
            { WHY="cannot read the owner's line: $LINE"; VSTATUS[k]="FAILED: $WHY"; break; }
        id=${BASH_REMATCH[1]} VCHUNKS[k]=${BASH_REMATCH[2]} VKEPT[k]=${BASH_REMATCH[4]}
        local share_line=""
        if ((k > 1)); then
            if ! ver_await_owner "$deadline" "owner: now sharing version $k;"; then
                VSTATUS[k]="FAILED: $WHY"
                break
            fi
            share_line=$LINE
        fi
        if ! ver_await_peers "$deadline" "$id"; then
            VSTATUS[k]="FAILED: $WHY"
            break
        fi
        cpu_ticks
        ver_cpu
        VCPU_PCT[k]=$(awk -v b=$((TICKS_BUSY - busy0)) -v t=$((TICKS_TOTAL - total0)) \
            'BEGIN { if (t > 0) printf "%.0f", 100 * b / t; else print "-" }')
        VCPU_OWN[k]=$(awk -v u=$((C_OWN_U - ou0)) -v s=$((C_OWN_S - os0)) -v h="$CLK_TCK" 'BEGIN { printf "%.2f", (u + s) / h }')
        VCPU_PEERS[k]=$(awk -v u=$((C_PEERS_U - pu0)) -v s=$((C_PEERS_S - ps0)) -v h="$CLK_TCK" 'BEGIN { printf "%.2f", (u + s) / h }')
        VCPU_USER[k]=$(awk -v u=$((C_OWN_U - ou0 + C_PEERS_U - pu0)) -v h="$CLK_TCK" 'BEGIN { printf "%.2f", u / h }')
        VCPU_SYS[k]=$(awk -v s=$((C_OWN_S - os0 + C_PEERS_S - ps0)) -v h="$CLK_TCK" 'BEGIN { printf "%.2f", s / h }')
        VCPU_ALL[k]=$(awk -v a="${VCPU_USER[k]}" -v b="${VCPU_SYS[k]}" 'BEGIN { printf "%.2f", a + b }')
        # peer 31001: version 3787793e in 0.11 s: chunk bytes 204800 from the owner, 0 from the ring, 8183808 reused; 210528 bytes received from the network
        stamps=()
        recv=()
        VOWN[k]=0 VRING[k]=0
        for ((i = 1; i <= n; i++)); do
            line=${PLINES[i]}
            stamp_in "$line"
            stamps+=("$STAMP")
            if [[ $line =~ chunk\ bytes\ ([0-9]+)\ from\ the\ owner,\ ([0-9]+)\ from\ the\ ring,\ ([0-9]+)\ reused\;\ ([0-9]+)\ bytes\ received ]]; then
                VOWN[k]=$((VOWN[k] + BASH_REMATCH[1])) VRING[k]=$((VRING[k] + BASH_REMATCH[2]))
                recv+=("$(ver_pct "${BASH_REMATCH[4]}" "${VSIZE[k]}")")
            else
                VSTATUS[k]="FAILED: cannot read p$i's line: $line"
            fi
        done
        [[ -n $share_line ]] && { stamp_in "$share_line"; stamps+=("$STAMP"); }
        ver_ms "${stamps[@]}"
        local last=0
        for ((i = 0; i < n; i++)); do ((MS[i] > last)) && last=${MS[i]}; done
        VS[k]=$(secs $(((last - change_ms) * 1000)))
        [[ -n $share_line ]] && VSHARE[k]=$(secs $(((last - MS[n]) * 1000)))
        spread_of "${recv[@]}"
        VRMED[k]=$MED
        VRMAX[k]=$(printf '%s\n' "${recv[@]}" | sort -g | tail -n 1)
        # The copies, renamed into place before the peers' lines.
        for ((i = 1; i <= n; i++)); do
            if ! cmp -s "$file" "$RUN_DIR/p$i/data.bin"; then
                VSTATUS[k]="FAILED: p$i's copy of v$k differs"
                break
            fi
        done
        [[ ${VSTATUS[k]} == ok ]] || { WHY=${VSTATUS[k]#FAILED: }; break; }
        echo "bench:   v$k: ${VS[k]} s${VSHARE[k]:+ (${VSHARE[k]} s after sharing)}, received max ${VRMAX[k]} % of S (median ${VRMED[k]}), ${VKEPT[k]:+${VKEPT[k]} of }${VCHUNKS[k]} chunks${VKEPT[k]:+ kept}"
        # Write back this version's files before the next change.
        sync
    done
    [[ -z $WHY ]] || { VSERIES="FAILED: $WHY"; note "versions $bedname $chunking: $WHY (logs in bench-out/logs/)"; }
    # They follow forever: SIGTERM to the processes under time, which then
    # writes their peaks; SIGKILL after 10 s.
    for ((i = n; i >= 0; i--)); do
        [[ -n ${V_PIDS[i]:-} ]] || continue
        ver_inner "$i"
        kill -TERM "${V_INNER[i]:-${V_PIDS[i]}}" 2>/dev/null || true
    done
    await $((${EPOCHREALTIME/./} + 10000000)) "${V_PIDS[@]}"
    if ((can_mem)); then
        VRSS[owner]=$(tail -n 1 "$RUN_DIR/owner.rss" 2>/dev/null || true)
        for ((i = 1; i <= n; i++)); do
            VRSS[p$i]=$(tail -n 1 "$RUN_DIR/p$i.rss" 2>/dev/null || true)
        done
    fi
    keep_logs
    mv "$RUN_DIR" "$work/trash/" 2>/dev/null || rm -rf "$RUN_DIR"
    # A series leaves about 13 GiB behind: gone before the next one.
    empty_trash
}

# --- results --------------------------------------------------------------

csv=$out/bench.csv
md=$out/bench.md
csv_head=section,case,n,rate_mbit,size_mib,tool,status,seconds,runs,cpu_pct,ideal_seconds,ratio,sec_per_gib,peak_rss_kib
csv_head+=,owner_sent_x_s,owner_sent_runs,half_seconds,half_held_pct,complete_seconds,gone_ms,rewire_ms,fallback_ms,killed
csv_head+=,cpu_seconds,cpu_user,cpu_sys,cpu_s_per_gib,timeline,timeline_run
csv_head+=,received_max_pct,received_median_pct,after_sharing_seconds,chunks_kept,chunks_total,owner_cpu_seconds
((part)) || echo "$csv_head" >"$csv"
# csv_row SECTION CASE N RATE SIZE TOOL STATUS SECONDS RUNS CPU IDEAL RATIO SPG RSS
#   [SENT_X SENT_RUNS HALF_S HALF_PCT COMPLETE GONE_MS REWIRE_MS FALLBACK_MS KILLED]
# (for the repair section: seconds are the slowest survivor's, ratio is to
# the no-failure median). Missing fields are left empty. The CPU columns
# come from CSV_CPU ("seconds,user,sys,per GiB"; see cpu_cols), the
# timeline columns from CSV_TL ("file,run"; see keep_timeline), the
# versions section's last six from CSV_VER, empty unless set.
csv_row() {
    local IFS=,
    local row=("$@")
    row[6]=${row[6]//,/;}
    while ((${#row[@]} < 23)); do row+=(""); done
    echo "${row[*]},${CSV_CPU:-,,,},${CSV_TL:-,},${CSV_VER:-,,,,,}" >>"$csv"
}
# keep_timeline NAME: the last measurement's timeline (TL_PICK), kept as
# bench-out/timeline-NAME.csv, and CSV_TL for csv_row; a missing one is
# only noted (the chart then leaves its panel out).
keep_timeline() {
    CSV_TL=""
    if [[ -s $TL_PICK ]] && cp "$TL_PICK" "$out/timeline-$1.csv"; then
        CSV_TL=timeline-$1.csv,$TL_RUN
    else
        note "no timeline for $1"
    fi
}
# cpu_cols N SIZE_MIB: the last measurement's CPU columns for csv_row, and
# CPU_GIB: its CPU-seconds per delivered GiB (N x S delivered), or "-".
cpu_cols() {
    CPU_GIB=-
    if [[ $STATUS == ok && -n $CPU_S ]]; then
        CPU_GIB=$(awk -v c="$CPU_S" -v n="$1" -v s="$2" 'BEGIN { printf "%.2f", c * 1024 / (n * s) }')
    fi
    CSV_CPU="${CPU_S},${CPU_USER},${CPU_SYS},${CPU_GIB/-/}"
}
# cpu_shown: the last measurement's CPU-seconds, with spread and user/sys.
cpu_shown() {
    if [[ $STATUS != ok || -z $CPU_S ]]; then
        echo -
    else
        echo "$CPU_S${CPU_S_SPREAD:+ ($CPU_S_SPREAD)}, user $CPU_USER, sys $CPU_SYS"
    fi
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

# x_cells: table cells from the last measurement's XS (see measure and
# analyse_logs), each a median with its min–max or "-": HALF_CELL (half
# at s), COMP_CELL (slowest complete s), PARTS_CELL (what the owner sent
# split by its log: seeds / reseeded / asked, in files' worth of chunks)
# and AFTER_CELL (after a kill in an owner-wired run: ms to the owner's
# gone and re-wired lines and to the upload neighbour's reconnect; in any
# run, ms to the first stall fallback to the owner).
x_cells() {
    local parts after=-
    spread_of ${XS[half_s]:-}
    HALF_CELL="${MED:--}${SPR:+ ($SPR)}"
    spread_of ${XS[complete]:-}
    COMP_CELL=${MED:--}${SPR:+ ($SPR)}
    spread_of ${XS[seed_x]:-}
    parts=${MED:+seeds $MED}
    spread_of ${XS[reseed_x]:-}
    parts+=${MED:+, reseeded $MED}
    spread_of ${XS[reseed_kill_x]:-}
    parts+=${MED:+ ($MED at the death)}
    spread_of ${XS[req_x]:-}
    parts+=${MED:+, asked $MED}
    PARTS_CELL=${parts:--}
    if [[ -n $KILL_RANK && $WIRED == owner ]]; then
        spread_of ${XS[gone_ms]:-}
        after="gone ${MED:-?} ms${GONE_HOWS:+ (${GONE_HOWS// /, })}"
        spread_of ${XS[rewire_ms]:-}
        after+=", re-wired ${MED:-?} ms"
        spread_of ${XS[reconnect_ms]:-}
        after+=", its upload neighbour reconnected ${MED:-?} ms${SPR:+ ($SPR)}"
    fi
    spread_of ${XS[fallback_ms]:-}
    if [[ -n $MED ]]; then
        [[ $after == - ]] && after="" || after+="; "
        after+="first stall fallback to the owner after $MED ms"
    fi
    AFTER_CELL=$after
}
# xs_med KEY: the median of the last measurement's XS[KEY], or "".
xs_med() {
    spread_of ${XS[$1]:-}
    echo "$MED"
}
# x_fields: the last measurement's csv_row fields from SENT_X to KILLED,
# in XF[] (medians of its runs; every victim).
x_fields() {
    XF=("${SENT:-}" "${SENT_RUNS:-}" "$(xs_med half_s)" "$(xs_med half_pct)" "$(xs_med complete)"
        "$(xs_med gone_ms)" "$(xs_med rewire_ms)" "$(xs_med fallback_ms)" "${VICTIMS// /;}")
}

((part)) || {
mode_text="full, swarm runs repeated $repeat× (median, min–max)"
[[ $smoke == 1 ]] && mode_text="smoke (tiny files, no targets)"
{
    echo "# swarm benchmark"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, Linux $(uname -r), mode: $mode_text,"
    echo "commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)')."
    echo "Times are wall seconds from the owner's (sender's) start until every peer has exited"
    echo "and its copy matched the input. CPU is the share of all cores busy during the run"
    echo "(anything else running counts too; load average at the start: $(cut -d' ' -f1-3 /proc/loadavg))."
} >"$md"
}

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
        echo "Wiring: hand = every peer given --download-neighbor (pI downloads from pI+1);"
        echo "owner = none given, the owner wires the ring in join order. Owner sent ÷ S: chunk"
        echo "bytes the owner sent in all (swarm status), median run's, ÷ the file's size."
        echo
        echo "| N | RATE Mbit/s | S MiB | S/B s | floor ÷ S/B | wiring | swarm s | swarm ÷ S/B | owner sent ÷ S | CPU % | CPU-s per GiB | unicast s | unicast ÷ S/B | unicast CPU-s per GiB | swarm target | |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    } >>"$md"
    for c in "${bed_cases[@]}"; do
        read -r n rate size <<<"$c"
        ideal=$(ideal_of "$size" "$rate")
        target=""
        [[ $smoke == 0 && $n == 5 && $rate == 100 ]] && target=1.10
        [[ $smoke == 0 && $n == 20 && $rate == 25 ]] && target=1.15
        [[ $smoke == 0 && $n == 20 && $rate == 100 ]] && target=1.3
        if ((!can_bed)); then
            note "netbed N=$n at $rate Mbit/s: skipped ($bed_why)"
            echo "| $n | $rate | $size | $ideal | - | - | SKIPPED ($bed_why) | - | - | - | - | - | - | - | ${target:--} | |" >>"$md"
            csv_row netbed "n$n-${rate}mbit" "$n" "$rate" "$size" swarm "skipped: $bed_why" "" "" "" "$ideal" "" "" ""
            continue
        fi
        echo "bench: netbed N=$n at $rate Mbit/s, $size MiB (S/B $ideal s)..."
        netbed_up "$n" "$rate"
        measure unicast bed 1 "$size" "$(awk -v i="$ideal" 'BEGIN { printf "%d", 2 * i + 60 }')" 1
        f_status=$STATUS f_secs=$SECS
        floor=$(ratio "$SECS" "$ideal")
        [[ $STATUS == ok ]] || floor="$STATUS"
        echo "bench:   floor (one stream) $(shown) s (× $floor)"
        rows=()
        for w in hand owner; do
            [[ ,$wirings, == *,$w,* ]] || continue
            WIRED=$w TIMELINE=1
            measure swarm bed "$n" "$size" "$(awk -v i="$ideal" 'BEGIN { printf "%d", 4 * i + 60 }')" "$repeat"
            WIRED=hand TIMELINE=0
            keep_timeline "n$n-${rate}mbit-$w"
            s_ratio=$(ratio "$SECS" "$ideal")
            cpu_cols "$n" "$size"
            echo "bench:   swarm, $w-wired $(shown) s (× $s_ratio, CPU $CPU %, $CPU_GIB CPU-s per GiB, owner sent ${SENT:--} × S)"
            rows+=("$w|$(shown)|$s_ratio|${SENT:--}${SENT_SPREAD:+ ($SENT_SPREAD)}|$CPU|$CPU_GIB|$(verdict "$s_ratio" "$target")")
            tool=swarm
            [[ $w == owner ]] && tool=swarm-owner-wired
            csv_row netbed "n$n-${rate}mbit" "$n" "$rate" "$size" "$tool" "$STATUS" "$SECS" "$RUNS" "$CPU" "$ideal" "$s_ratio" "" "" "$SENT" "$SENT_RUNS"
            CSV_CPU="" CSV_TL=""
        done
        # Unicast takes N × S/B here, so it runs once.
        measure unicast bed "$n" "$size" "$(awk -v i="$ideal" -v n="$n" 'BEGIN { printf "%d", 2 * n * i + 60 }')" 1
        u_ratio=$(ratio "$SECS" "$ideal")
        cpu_cols "$n" "$size"
        u_gib=$CPU_GIB u_csv_cpu=$CSV_CPU
        CSV_CPU=""
        echo "bench:   unicast $(shown) s (× $u_ratio, $u_gib CPU-s per GiB)"
        netbed_down
        u_cells="$(shown) | $u_ratio | $u_gib"
        for r in "${rows[@]}"; do
            IFS='|' read -r w s_shown s_ratio s_sent s_cpu s_gib v <<<"$r"
            echo "| $n | $rate | $size | $ideal | $floor | $w | $s_shown | $s_ratio | $s_sent | $s_cpu | $s_gib | $u_cells | ${target:+≤ $target} | $v |" >>"$md"
            u_cells="〃 | 〃 | 〃"
        done
        CSV_CPU=$u_csv_cpu csv_row netbed "n$n-${rate}mbit" "$n" "$rate" "$size" unicast "$STATUS" "$SECS" "$RUNS" "$CPU" "$ideal" "$u_ratio" "" ""
        csv_row netbed "n$n-${rate}mbit" "$n" "$rate" "$size" floor "$f_status" "$f_secs" "$f_secs" "" "$ideal" "$(ratio "$f_secs" "$ideal")" "" ""
        # The simulator on the same case, beside the bed: the same owner
        # (--peers N), owner-wired, egress shaped and ingress not.
        sim_json=$("$sim" --peers "$n" --rate-mbit "$rate" --size-mib "$size" --down-mbit 100000 \
            --owner-peers "$n" --json 2>/dev/null || true)
        sim_max=$(grep -o '"max":[0-9.]*' <<<"$sim_json" | cut -d: -f2 || true)
        sim_sent=$(grep -o '"owner_sent":[0-9.]*' <<<"$sim_json" | cut -d: -f2 || true)
        bed_owner=$(for r in "${rows[@]}"; do IFS='|' read -r w _ s_ratio _ <<<"$r"; [[ $w == owner ]] && echo "$s_ratio"; done)
        sim_x=$(awk -v b="${bed_owner:-}" -v s="${sim_max:-}" 'BEGIN { if (b + 0 > 0 && s + 0 > 0) printf "%.2f", s / b; else print "-" }')
        echo "bench:   simulator max × ${sim_max:-?} S/B, owner sent ${sim_sent:-?} × S; ÷ the bed's owner-wired: $sim_x"
        sim_target="" sim_verdict=""
        if [[ $smoke == 0 ]]; then
            sim_target="within 10 % of the bed"
            sim_verdict=$(awk -v x="$sim_x" 'BEGIN { if (x == "-") print ""; else if (x >= 0.9 && x <= 1.1) print "met"; else print "missed" }')
        fi
        echo "| $n | $rate | $size | $ideal | - | simulator | - | ${sim_max:--} (÷ owner-wired bed: $sim_x) | ${sim_sent:--} | - | - | - | - | - | $sim_target | $sim_verdict |" >>"$md"
        csv_row netbed "n$n-${rate}mbit" "$n" "$rate" "$size" simulator "${sim_max:+ok}" "" "" "" "$ideal" "${sim_max:-}" "" "" "${sim_sent:-}"
    done
fi

# 2. a dead peer on the netbed: the owner's repair against the
# hand-wired fallback, beside the no-failure runs.
if wants repair; then
    read -r n rate size <<<"$repair_case"
    ideal=$(ideal_of "$size" "$rate")
    ctext="N=$n @$rate Mbit/s"
    {
        echo
        echo "## 2. netbed: a dead peer, $ctext, $size MiB (S/B $ideal s)"
        echo
    } >>"$md"
    if ((!can_bed)); then
        note "repair: skipped ($bed_why)"
        echo "SKIPPED ($bed_why)." >>"$md"
        csv_row repair "n$n-${rate}mbit" "$n" "$rate" "$size" swarm "skipped: $bed_why" "" "" "" "$ideal" "" "" ""
    else
        echo "bench: dead peer, netbed $ctext, $size MiB (S/B $ideal s)..."
        netbed_up "$n" "$rate"
        to=$(awk -v i="$ideal" 'BEGIN { printf "%d", 4 * i + 90 }')
        OWNER_LOG=info PEER_LOG=info,swarm::chunk=warn KEEP_LOGS=1 WATCH_PCT=$kill_at
        declare -A base=()
        rep_rows=() k_victims="" k_halves=()
        for variant in "${repair_variants[@]}"; do
            KILL_RANK=""
            case $variant in
                nofail-owner) WIRED=owner label="$ctext, no failure: owner-wired" ;;
                kill-owner) WIRED=owner KILL_RANK=$repair_rank label="$ctext, peer killed at half: owner-wired repair" ;;
                nofail-hand) WIRED=hand label="$ctext, no failure: hand-wired" ;;
                kill-hand) WIRED=hand KILL_RANK=$repair_rank label="$ctext, peer killed at half: hand-wired fallback" ;;
            esac
            echo "bench:   $label..."
            measure swarm bed "$n" "$size" "$to" "$repeat"
            [[ $variant == nofail-* && $STATUS == ok ]] && base[$WIRED]=$SECS
            # Ratios: to the owner-wired no-failure median (the requirement's
            # baseline), and to the same wiring's.
            r=$(ratio "$SECS" "${base[owner]:-}") r_same=$(ratio "$SECS" "${base[$WIRED]:-}") worst=-
            if [[ $STATUS == ok && -n ${base[owner]:-} ]]; then
                worst=$(tr ';' '\n' <<<"$RUNS" | sort -g | tail -n 1)
                worst=$(ratio "$worst" "${base[owner]}")
            fi
            [[ -n $KILL_RANK ]] && k_halves+=(${XS[half_pct]:-})
            x_cells
            sent_cell="${SENT:--}${SENT_SPREAD:+ ($SENT_SPREAD)}"
            tv="" vv=""
            if [[ $variant == kill-owner ]]; then
                tv="≤ 1.25 × / ≤ 1.25 × S"
                vv="$(verdict "$r" 1.25) / $(verdict "${SENT:-}" 1.25)"
            fi
            echo "bench:     $(shown) s (× $r of owner-wired no failure, × $r_same of the same wiring's, worst run × $worst), half at $HALF_CELL s, owner sent ${SENT:--} × S${VICTIMS:+, killed $VICTIMS}"
            [[ $AFTER_CELL != - ]] && echo "bench:     $AFTER_CELL"
            rep_rows+=("| $label | $(shown) | $r | $r_same | $worst | $HALF_CELL | $COMP_CELL | ${CPU:--} | $sent_cell | $PARTS_CELL | $AFTER_CELL | $tv | $vv |")
            x_fields
            csv_row repair "n$n-${rate}mbit-$variant" "$n" "$rate" "$size" "swarm-$variant" "$STATUS" "$SECS" "$RUNS" "$CPU" "$ideal" "$r" "" "" "${XF[@]}"
            [[ $variant == kill-owner ]] && k_victims=$VICTIMS
        done
        WIRED=hand WATCH_PCT="" KILL_RANK="" OWNER_LOG=warn PEER_LOG=warn KEEP_LOGS=0
        netbed_down
        spread_of "${k_halves[@]}"
        {
            echo "Each variant ran $repeat× in this run. \"Half\": the first moment the owner's registry (asked every"
            echo "0.25 s with \`swarm status\`; peers report what they gain once a second, so it lags) showed the"
            echo "peers holding $kill_at % of N × chunks; the kill variants kill one peer (SIGKILL) then (the"
            echo "registry showed ${MED:-?} %${SPR:+, $SPR}), the others only watch, so all pay the same for the polling."
            echo "Owner-wired: the $(ordinal "$repair_rank") peer to join is killed (${k_victims:-?}); the owner re-wires"
            echo "the ring around it. Hand-wired: p$repair_rank is killed; its upload neighbour p$((repair_rank - 1)) waits"
            echo "--stall-timeout (10 s), then fetches what it lacks from the owner."
            echo "Survivors s: the slowest survivor's time from the owner's start to its exit (every survivor"
            echo "exits 0 with an identical copy), ÷ the owner-wired no-failure median (the requirement's"
            echo "baseline) and ÷ the same wiring's; \"slowest complete\": when it had verified the file (its"
            echo "log), before any --linger. Owner sent ÷ S: the owner's own count (swarm status); seeds /"
            echo "reseeded / asked split it by the owner's log, in files' worth of chunks (reseeded: chunks"
            echo "the registry saw on no live peer, pushed when a peer died or a complete one left). After the"
            echo "kill: ms from the kill to the owner's log lines (gone, re-wired) and to the upload"
            echo "neighbour's connect to its new download neighbour, or to a survivor's stall fallback."
            echo
            echo "| case | survivors s | ÷ owner-wired no failure | ÷ same wiring no failure | worst run ÷ owner-wired | half at s | slowest complete s | CPU % | owner sent ÷ S | seeds / reseeded / asked ÷ S | after the kill | target | |"
            echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
            printf '%s\n' "${rep_rows[@]}"
        } >>"$md"
    fi
fi
# Sections 3 (loopback), 4 (scaling) and 5 (memory) are the runner's
# (examples/bench/).

# 6. new versions: the owner following its file, --follow peers taking up
# each version.
if wants versions; then
    ver_help=$("$bin" owner --help 2>&1 || true)
    ver_chunkings=(fixed)
    if [[ $ver_help != *--chunking* ]]; then
        note "versions: this swarm has no --chunking; the content-chunking series is left out"
    elif [[ ${VERSIONS_CHUNKING:-fixed,content} == *content* ]]; then
        ver_chunkings+=(content)
    fi
    # v2 rewrites 1 % of the chunks (at least one).
    ver_k=$(((((ver_s << 20) + CHUNK_BYTES - 1) / CHUNK_BYTES + 50) / 100))
    ((ver_k >= 1)) || ver_k=1
    ver_pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", 100 * a / b }'; }
    ver_mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
    {
        echo
        echo "## 6. new versions: N=$ver_n --follow peers, $ver_s MiB, owner-wired"
        echo
        echo "The owner follows its file (the default); each series starts it and $ver_n peers with --follow"
        echo "on v1, the whole file (time from the owner's start), then makes v2: $ver_k of its"
        echo "$(((ver_s << 20) / CHUNK_BYTES)) whole 100 KiB chunks, at random, rewritten in place with random bytes"
        echo "(dd conv=notrunc), and v3: v2 with 1 MiB of random bytes inserted at 10 % (written beside"
        echo "the file, then mv'd over it). Times for v2 and v3 run from the end of the change (the owner"
        echo "waits for 1 s without change before it indexes again) to the last peer's line for that"
        echo "version (all from the logs' timestamps); \"after sharing\" from the owner's \"now sharing"
        echo "version N\". Received: each peer's own count of bytes read from sockets since it verified"
        echo "the version before (chunks, manifest and protocol), as % of that version's size, the"
        echo "largest peer's (the median's). Kept: the owner's count of the new version's chunks that"
        echo "were in the version before. Fetched: chunk bytes all peers took from the owner + from"
        echo "the ring. CPU-s: the owner's / all peers' (from /proc) during that version. Every peer's"
        echo "copy matched the file after each version (cmp). One series per bed and chunking, not"
        echo "repeated. Content chunking: --chunking content (average 100 KiB), the same changes; a"
        echo "rewritten 100 KiB block there also moves the content boundaries around it, so v2 changes"
        echo "more chunks than blocks were rewritten (see kept chunks)."
        echo
        echo "| bed | chunking | version | kept chunks | s | ÷ v1 | target | | s after sharing | received, max % of S (median) | target | | fetched MiB, owner + ring | CPU-s owner / peers |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    } >>"$md"
    ver_rss_rows=() ver_failed=0
    ver_secs_total=$SECONDS
    for ver_bed in "${ver_beds[@]}"; do
        if [[ $ver_bed == netbed ]]; then
            mode=bed bedname="n$ver_n-${ver_rate}mbit" bedtext="netbed $ver_rate Mbit/s"
            if ((!can_bed)); then
                note "versions on the netbed: skipped ($bed_why)"
                echo "| $bedtext | - | SKIPPED ($bed_why) | | | | | | | | | | | |" >>"$md"
                csv_row versions "$bedname" "$ver_n" "$ver_rate" "$ver_s" swarm "skipped: $bed_why" "" "" "" "" "" "" ""
                continue
            fi
            netbed_up "$ver_n" "$ver_rate"
        else
            mode=loop bedname=loopback bedtext=loopback
        fi
        for chunking in "${ver_chunkings[@]}"; do
            echo "bench: versions, $bedtext, N=$ver_n, $ver_s MiB, $chunking chunking..."
            versions_series "$mode" "$chunking"
            [[ $VSERIES == ok ]] || ver_failed=1
            v1=${VS[1]:-}
            for k in 1 2 3; do
                if [[ -z ${VSTATUS[k]:-} ]]; then
                    echo "| $bedtext | $chunking | v$k | - | not run | | | | | | | | | |" >>"$md"
                    continue
                fi
                size_k=${VSIZE[k]}
                r=- t="" v=""
                [[ $k -gt 1 && -n ${VS[k]:-} && ${VSTATUS[k]} == ok ]] && r=$(ratio "${VS[k]}" "$v1")
                if [[ $k == 2 && $mode == bed ]]; then t="≤ 0.05" v=$(verdict "$r" 0.05); fi
                rt="" rv=""
                ok_max=""
                [[ ${VSTATUS[k]} == ok ]] && ok_max=${VRMAX[k]:-}
                if [[ $k == 2 && $chunking == fixed ]]; then rt="≤ 2 %" rv=$(verdict "$ok_max" 2); fi
                if [[ $k == 3 && $chunking == content ]]; then rt="≤ 3 %" rv=$(verdict "$ok_max" 3); fi
                kept=-
                [[ -n ${VKEPT[k]:-} ]] && kept="${VKEPT[k]} of ${VCHUNKS[k]}"
                [[ $k == 1 ]] && kept="${VCHUNKS[k]:--} chunks"
                secs_cell=${VS[k]:--}
                [[ ${VSTATUS[k]} == ok ]] || secs_cell=${VSTATUS[k]}
                fetched=-
                [[ -n ${VOWN[k]:-} ]] && fetched="$(ver_mib "${VOWN[k]}") + $(ver_mib "${VRING[k]}")"
                recv_cell=-
                [[ -n ${VRMAX[k]:-} ]] && recv_cell="${VRMAX[k]} (${VRMED[k]})"
                echo "| $bedtext | $chunking | v$k | $kept | $secs_cell | $r | $t | $v | ${VSHARE[k]:--} | $recv_cell | $rt | $rv | $fetched | ${VCPU_OWN[k]:--} / ${VCPU_PEERS[k]:--} |" >>"$md"
                sent_x=""
                [[ -n ${VOWN[k]:-} ]] && sent_x=$(fx "${VOWN[k]}" "$size_k")
                ideal=""
                [[ $mode == bed ]] && ideal=$(ideal_of "$ver_s" "$ver_rate")
                rate_col=""
                [[ $mode == bed ]] && rate_col=$ver_rate
                CSV_CPU="${VCPU_ALL[k]:-},${VCPU_USER[k]:-},${VCPU_SYS[k]:-},"
                CSV_VER="${VRMAX[k]:-},${VRMED[k]:-},${VSHARE[k]:-},${VKEPT[k]:-},${VCHUNKS[k]:-},${VCPU_OWN[k]:-}"
                csv_row versions "$bedname-$chunking-v$k" "$ver_n" "$rate_col" "$ver_s" "swarm-$chunking" "${VSTATUS[k]}" "${VS[k]:-}" "${VS[k]:-}" "${VCPU_PCT[k]:-}" "$ideal" "${r/-/}" "" "" "$sent_x"
                CSV_CPU="" CSV_VER=""
            done
            peers_rss="" largest=""
            for key in owner $(seq -f 'p%g' 1 "$ver_n"); do
                m=${VRSS[$key]:-}
                [[ $key == owner ]] || peers_rss+="${peers_rss:+, }$(ver_rss_mib "$m")"
                [[ $m =~ ^[0-9]+$ ]] && { [[ -z $largest ]] || ((m > largest)); } && largest=$m
            done
            o=$(ver_rss_mib "${VRSS[owner]:-}") big=$(ver_rss_mib "$largest")
            ver_rss_rows+=("| $bedtext | $chunking | $o | $peers_rss | $big | ≤ 32 | $(verdict "$big" 32) |")
            csv_row versions "$bedname-$chunking-rss" "$ver_n" "" "$ver_s" swarm-owner "$VSERIES" "" "" "" "" "" "" "${VRSS[owner]:-}"
            for ((i = 1; i <= ver_n; i++)); do
                csv_row versions "$bedname-$chunking-rss" "$ver_n" "" "$ver_s" "swarm-p$i" "$VSERIES" "" "" "" "" "" "" "${VRSS[p$i]:-}"
            done
        done
        if [[ $mode == bed ]]; then
            netbed_down
        fi
    done
    {
        echo
        if ((can_mem)); then
            echo "Peak RSS over each whole series (/usr/bin/time), MiB. Target: every process ≤ 32 MiB."
            echo
            echo "| bed | chunking | owner | p1 … p$ver_n | largest | target | |"
            echo "|---|---|---|---|---|---|---|"
            printf '%s\n' "${ver_rss_rows[@]}"
        else
            echo "Peak RSS: not measured (needs /usr/bin/time; apt-get install time)."
        fi
        echo
        echo "Section time: $((SECONDS - ver_secs_total)) s. Logs of every series: bench-out/logs/."
    } >>"$md"
fi

# 7. sources per peer (issue 11): `swarm peer --sources K`, K side by
# side, owner-wired on the netbed: one slow uplink, every link equal, and
# a peer killed at half (the repair section's case and machinery).
if wants sources; then
    {
        echo
        echo "## 7. netbed: sources per peer (--sources K), owner-wired"
        echo
    } >>"$md"
    if ((!can_bed)); then
        note "sources: skipped ($bed_why)"
        echo "SKIPPED ($bed_why)." >>"$md"
        csv_row sources all "" "" "" swarm "skipped: $bed_why" "" "" "" "" "" "" ""
    else
        src_has=1
        [[ $("$bin" peer --help 2>&1 || true) == *--sources* ]] || src_has=0
        src_top=$(printf '%s\n' "${src_ks[@]}" | grep -v auto | tail -1)
        ((src_has || ${src_top:-1} < 2)) || note "sources: this swarm peer has no --sources; K ≥ 2 is left out"
        # The kill case is measured against the same K's undisturbed runs:
        # those of the equal case, so kill brings equal along.
        src_run=()
        [[ ,$src_case_list, == *,floor,* ]] && src_run+=(floor)
        [[ ,$src_case_list, == *,slow,* ]] && src_run+=(slow)
        [[ ,$src_case_list, == *,equal,* || ,$src_case_list, == *,kill,* ]] && src_run+=(equal)
        [[ ,$src_case_list, == *,kill,* ]] && src_run+=(kill)
        # As the repair section: logs kept, and every run polls the
        # registry until half, so all pay the same for the polling.
        OWNER_LOG=info PEER_LOG=${SOURCES_PEER_LOG:-info,swarm::chunk=warn} KEEP_LOGS=1 WATCH_PCT=$kill_at WIRED=owner
        declare -A src_base=() # "CASE-K": the median s of that case's runs with K
        src_rows=() src_halves=()
        for c in "${src_run[@]}"; do
            if [[ $c == floor || $c == slow ]]; then read -r n rate size <<<"$src_slow"; else read -r n rate size <<<"$repair_case"; fi
            ideal=$(ideal_of "$size" "$rate")
            # A slow peer's downstream may take S at its rate: up to 5 × S/B.
            to=$(awk -v i="$ideal" -v f="$([[ $c == slow ]] && echo 8 || echo 4)" 'BEGIN { printf "%d", f * i + 90 }')
            case $c in
                floor) cname="floor-n$n-${rate}mbit" ctext="floor: N=$n @$rate Mbit/s, no slow peer" ;;
                slow)
                    cname="slow-n$n-${rate}mbit-$src_slow_host-${src_slow_rate}mbit"
                    ctext="slow: N=$n @$rate Mbit/s, $src_slow_host's egress @$src_slow_rate"
                    ;;
                equal) cname="equal-n$n-${rate}mbit" ctext="equal: N=$n @$rate Mbit/s" ;;
                kill) cname="kill-n$n-${rate}mbit" ctext="kill: N=$n @$rate Mbit/s, the $(ordinal "$repair_rank") to join killed at half" ;;
            esac
            echo "bench: sources, $ctext, $size MiB (S/B $ideal s)..."
            # The slow case has a bed of its own; kill runs on equal's.
            if [[ $c != kill ]]; then
                netbed_up "$n" "$rate"
                if [[ $c == slow ]]; then
                    "$netbed" rate "$src_slow_host" "$src_slow_rate" >>"$work/netbed.log" 2>&1 || {
                        cat "$work/netbed.log" >&2
                        die "netbed rate failed"
                    }
                fi
            fi
            for k in "${src_ks[@]}"; do
                if [[ $k != auto ]] && ((k >= 2 && !src_has)); then
                    src_rows+=("| $ctext | $k | SKIPPED (this swarm has no --sources) | - | - | - | - | - | - | - | - | - | - | | |")
                    csv_row sources "$cname" "$n" "$rate" "$size" "swarm-owner-wired-k$k" "skipped: no --sources" "" "" "" "$ideal" "" "" ""
                    continue
                fi
                PEER_SOURCES=$k KILL_RANK=""
                [[ $k == auto ]] && PEER_SOURCES=""
                [[ $c == kill ]] && KILL_RANK=$repair_rank
                [[ $c == slow ]] && TIMELINE=1
                echo "bench:   K=$k..."
                measure swarm bed "$n" "$size" "$to" "$repeat"
                TIMELINE=0
                CSV_TL=""
                [[ $c == slow ]] && keep_timeline "sources-slow-k$k"
                [[ $STATUS == ok ]] && src_base[$c-$k]=$SECS
                cpu_cols "$n" "$size"
                x_cells
                [[ -n $KILL_RANK ]] && src_halves+=(${XS[half_pct]:-})
                r_ideal=$(ratio "$SECS" "$ideal")
                r_k1=$(ratio "$SECS" "${src_base[$c-1]:-}")
                r_und=- und_cell=-
                if [[ $c == slow ]]; then
                    r_und=$(ratio "$SECS" "${src_base[floor-$k]:-}")
                    und_cell="$r_und of floor"
                    [[ $r_und == - ]] && und_cell=-
                fi
                if [[ $c == kill ]]; then
                    r_und=$(ratio "$SECS" "${src_base[equal-$k]:-}")
                    und_cell=$r_und
                    if [[ $STATUS == ok && $r_und != - ]]; then
                        und_cell+=" (worst run $(ratio "$(tr ';' '\n' <<<"$RUNS" | sort -g | tail -n 1)" "${src_base[equal-$k]}"))"
                    fi
                fi
                # Targets: K=2's, in full mode only.
                tv="" vv=""
                if [[ $smoke == 0 && $k == 2 ]]; then
                    case $c in
                        slow) tv="≤ 1.3 × S/B / ≤ 1.3 × S" vv="$(verdict "$r_ideal" 1.3) / $(verdict "${SENT:-}" 1.3)" ;;
                        equal) tv="÷ K=1 ≤ 1.0" vv=$(verdict "$r_k1" 1.0) ;;
                        kill) tv="÷ undisturbed ≤ 1.1" vv=$(verdict "$r_und" 1.1) ;;
                    esac
                fi
                echo "bench:     $(shown)${SECS:+ s} (× $r_ideal S/B, × $r_k1 K=1's$([[ $c == kill ]] && echo ", × $r_und K=$k undisturbed")$([[ $c == slow && $r_und != - ]] && echo ", × $r_und K=$k floor")), owner sent ${SENT:--} × S${VICTIMS:+, killed $VICTIMS}"
                echo "bench:     CPU-seconds $(cpu_shown)"
                [[ $AFTER_CELL != - ]] && echo "bench:     $AFTER_CELL"
                src_rows+=("| $ctext${VICTIMS:+ (killed ${VICTIMS// /, })} | $k | $(shown) | $r_ideal | $r_k1 | $und_cell | $COMP_CELL | $HALF_CELL | ${CPU:--} | $(cpu_shown) | ${SENT:--}${SENT_SPREAD:+ ($SENT_SPREAD)} | $PARTS_CELL | $AFTER_CELL | $tv | $vv |")
                # The CSV's ratio: the case's own (slow ÷ S/B, equal ÷ K=1,
                # kill ÷ the same K undisturbed).
                case $c in floor | slow) r=$r_ideal ;; equal) r=$r_k1 ;; kill) r=$r_und ;; esac
                x_fields
                csv_row sources "$cname" "$n" "$rate" "$size" "swarm-owner-wired-k$k" "$STATUS" "$SECS" "$RUNS" "$CPU" "$ideal" "${r/-/}" "" "" "${XF[@]}"
                CSV_CPU="" CSV_TL=""
            done
        done
        WIRED=hand WATCH_PCT="" KILL_RANK="" OWNER_LOG=warn PEER_LOG=warn KEEP_LOGS=0 PEER_SOURCES=""
        netbed_down
        spread_of "${src_halves[@]}"
        {
            echo "K: every peer started with --sources K (K=1: the card's ring), owner-wired (no"
            echo "--download-neighbor). Each case and K ran $repeat× in this run, K=1 first; median (min–max)."
            echo "Slowest peer s: from the owner's start to the last peer's exit (of the survivors, after a"
            echo "kill); every copy was checked with cmp. S/B: the file at the bed's rate, ÷ K=1: each K's"
            echo "median ÷ K=1's in the same case. Every run polls the owner's registry until half, so all"
            echo "pay the same for it; half at, slowest complete, seeds / reseeded / asked and after the kill"
            echo "are as in section 2."
            if [[ ,${src_run[*]}, == *floor* ]]; then
                echo "floor: the slow case's bed with every link at the bed's rate, to show what the slow"
                echo "peer costs: the slow case's ÷ undisturbed is its median ÷ the same K's floor median."
            fi
            if [[ ,${src_run[*]}, == *slow* ]]; then
                echo "slow: $src_slow_host's egress re-shaped to $src_slow_rate Mbit/s once the bed is up (\`netbed.sh rate\`;"
                echo "its ingress stays at the bed's rate)."
            fi
            [[ ,${src_run[*]}, == *equal* ]] && echo "equal: every link at the bed's rate."
            if [[ ,${src_run[*]}, == *kill* ]]; then
                echo "kill: as in section 2, the $(ordinal "$repair_rank") peer to join killed (SIGKILL) when the registry"
                echo "showed $kill_at % of N × chunks held (it showed ${MED:-?} %${SPR:+, $SPR}); ÷ undisturbed is ÷ the same"
                echo "K's median in equal (worst run: its slowest ÷ that median)."
            fi
            if [[ $smoke == 0 ]]; then
                echo "Targets for K=2: slow, the slowest peer ≤ 1.3 × S/B and the owner sent ≤ 1.3 × S; equal,"
                echo "no slower than K=1 (≤ 1.0); kill, ≤ 1.1 × undisturbed."
            fi
            echo "Logs of every run: bench-out/logs/."
            echo
            echo "| case | K | slowest peer s | ÷ S/B | ÷ K=1 | ÷ undisturbed | slowest complete s | half at s | CPU % | CPU-s | owner sent ÷ S | seeds / reseeded / asked ÷ S | after the kill | target | |"
            echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
            printf '%s\n' "${src_rows[@]}"
        } >>"$md"
    fi
fi

# Sections 8 (pipeline) and 9 (many) are the runner's (examples/bench/).

# The chart: time / (S/B) against N from the netbed rows, then a panel
# per timeline named in the CSV.
svg=$out/bench.svg
if ((part)); then
    : # the runner draws the chart and writes the footer
elif [[ -x $chart ]]; then
    "$chart" "$csv" "$svg" || note "the chart could not be drawn"
else
    note "no chart: $chart is missing"
fi

((part)) || {
    echo
    echo "Total bench time: $((SECONDS - started)) s. CSV: bench.csv; chart: bench.svg, with each"
    echo "peer's chunks held over time below it (timeline-*.csv: the median run of each netbed"
    echo "case and wiring and of loopback, sampled from the peers' summary.txt every 0.25 s)."
} >>"$md"
((part)) || { echo; cat "$md"; }
# The run count, for the runner to number on from.
if ((part)) && [[ -n ${BENCH_RUN_FILE:-} ]]; then echo "$run" >"$BENCH_RUN_FILE"; fi
# Smoke mode (CI) asserts that every peer took up every version intact;
# in part mode the runner reports it (exit 3) after its own sections.
if ((part)) && [[ $smoke == 1 && ${ver_failed:-0} == 1 ]]; then
    exit 3
fi
if [[ $smoke == 1 && ${ver_failed:-0} == 1 ]]; then
    die "versions: a series failed (see the table and bench-out/logs/)"
fi
