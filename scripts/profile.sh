#!/usr/bin/env bash
# profile: where swarm's CPU goes, by category, on one loopback run.
#
#   scripts/profile.sh [SIZE_MIB] [N]     default 256 MiB, 5 peers
#
# Builds swarm (release), starts an owner and N hand-wired peers on
# loopback under `perf record -g` (the software clock, so it works in a
# VM without hardware counters), waits for every peer, checks every copy
# with cmp, and prints the share of the samples of swarm's own threads in
# each category below, first match wins, from each sample's call stack:
#
#   hashing          SHA-256 (sha2)
#   chunk file: create, link, open   O_TMPFILE open, linkat, other opens
#   file writes      write(2)/pwrite(2) into ext4 (chunk files, output)
#   socket send      sendfile(2) of chunks, send(2) of small frames
#   socket receive   recv(2)
#   wake-ups         futex(2) and the scheduler
#   ...              fsync, file reads, memory, logging, other syscalls
#
# plus each thread's share and the run's wall and CPU seconds (getrusage
# of the children). Needs perf (Debian: linux-perf) and root or
# kernel.perf_event_paranoid <= 1 for kernel stacks. Environment:
# BASE_PORT (default 35000), TMPDIR (where the run's files go: the file
# system matters, see the README), KEEP=1 keeps perf.data, and
# CARGO_TARGET_DIR (the build profiled, e.g. another checkout's).
set -euo pipefail
export LC_ALL=C

size=${1:-256}
n=${2:-5}
base=${BASE_PORT:-35000}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$root/target}/release/swarm

die() { echo "profile: $*" >&2; exit 1; }
command -v perf >/dev/null || die "perf is not installed (Debian: apt-get install linux-perf)"
[[ $size =~ ^[0-9]+$ && $n =~ ^[0-9]+$ && $n -ge 1 ]] || die "usage: scripts/profile.sh [SIZE_MIB] [N]"

(cd "$root" && cargo build --release --quiet) || die "cargo build failed"

work=$(mktemp -d "${TMPDIR:-/tmp}/swarm-profile.XXXXXX")
cleanup() {
    jobs -p | xargs -r kill 2>/dev/null || true
    [[ ${KEEP:-0} == 1 ]] || rm -rf "$work"
}
trap cleanup EXIT
head -c $((size << 20)) /dev/urandom >"$work/input.bin"
sync

# The run perf watches: the owner and the peers, nothing else.
cat >"$work/run.sh" <<EOF
#!/usr/bin/env bash
set -e
RUST_LOG=warn "$bin" owner --port $base --dir "$work/owner" --peers $n "$work/input.bin" 2>"$work/owner.log" &
owner=\$!
until (exec 3<>/dev/tcp/127.0.0.1/$base) 2>/dev/null; do sleep 0.01; done
pids=()
for ((i = 1; i <= $n; i++)); do
    RUST_LOG=warn "$bin" peer --owner 127.0.0.1:$base --port \$(($base + i)) \\
        --download-neighbor 127.0.0.1:\$(($base + i % $n + 1)) \\
        --dir "$work/p\$i" --out "$work/p\$i.bin" 2>"$work/p\$i.log" &
    pids+=(\$!)
done
for p in "\${pids[@]}"; do wait "\$p"; done
kill \$owner
wait \$owner || true
times >"$work/times"
EOF
chmod +x "$work/run.sh"

started=$EPOCHREALTIME
perf record -q -g -F 499 -o "$work/perf.data" -- "$work/run.sh" >/dev/null 2>"$work/perf.err" ||
    { cat "$work/perf.err" >&2; die "the run failed (logs in $work; KEEP=1 keeps them)"; }
wall=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
for ((i = 1; i <= n; i++)); do
    cmp -s "$work/input.bin" "$work/p$i.bin" || die "p$i's copy differs from the input"
done
cpu=$(tail -n 1 "$work/times" | awk '{
    for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); v[i] = p[1] * 60 + p[2] }
    printf "user %.2f s, system %.2f s, total %.2f s", v[1], v[2], v[1] + v[2] }')
echo "profile: $n peers, $size MiB, loopback, files under ${TMPDIR:-/tmp}: wall $wall s (with perf), CPU $cpu"
echo

perf script -i "$work/perf.data" -F comm,tid,ip,sym 2>/dev/null | awk '
function classify(s) {
    if (s ~ /sha2::|sha256/) return "hashing (SHA-256)"
    if (s ~ /env_logger|log::/) return "logging"
    if (s ~ /__ext4_new_inode|ext4_create|ext4_tmpfile/) return "chunk file: new inode"
    if (s ~ /__x64_sys_linkat|__x64_sys_rename/) return "chunk file: link into place"
    if (s ~ /__x64_sys_openat|__x64_sys_close/) return "chunk file: other open and close"
    if (s ~ /fsync|fdatasync|ext4_sync_file/) return "flush (fdatasync)"
    if (s ~ /ext4_buffered_write_iter|ext4_file_write_iter/) return "file writes (chunk files, output)"
    if (s ~ /__x64_sys_pread64|__x64_sys_read |ext4_file_read_iter|filemap_read/) return "file reads"
    if (s ~ /do_sendfile|__x64_sys_sendfile/) return "socket send: chunks (sendfile)"
    if (s ~ /tcp_sendmsg/) return "socket send: small frames"
    if (s ~ /tcp_recvmsg/) return "socket receive"
    if (s ~ /futex|schedule|finish_task_switch|try_to_wake_up/) return "wake-ups (futex, scheduler)"
    if (s ~ /asm_exc_page_fault|malloc|cfree|__munmap|mmap|memset/) return "memory"
    if (s ~ /__x64_sys_/) return "other system calls"
    return "other (user space)"
}
function flush() {
    if (comm != "" && comm !~ /^(run\.sh|bash|sleep|kill|swapper)$/) {
        total++
        cat[classify(stack)]++
        thread[comm]++
    }
    comm = ""; stack = ""
}
/^[^ \t]/ { flush(); comm = $0; sub(/[ \t]+[0-9]+[ \t]*$/, "", comm); sub(/^[ \t]+/, "", comm); next }
/^[ \t]*$/ { flush(); next }
{ stack = stack " " $2 }
END {
    flush()
    printf "%d samples of swarm threads\n\n| share | category |\n|---|---|\n", total
    for (c in cat) printf "| %5.1f %% | %s |\n", 100 * cat[c] / total, c | "sort -t\"|\" -k2 -rn"
    close("sort -t\"|\" -k2 -rn")
    printf "\n| share | thread |\n|---|---|\n"
    for (t in thread) printf "| %5.1f %% | %s |\n", 100 * thread[t] / total, t | "sort -t\"|\" -k2 -rn | head -n 8"
    close("sort -t\"|\" -k2 -rn | head -n 8")
}'
