#!/usr/bin/env bash
# bench: swarm against plain unicast (examples/unicast.rs), side by side.
#
#   scripts/bench.sh            the full benchmark, about 45 minutes
#   scripts/bench.sh --smoke    tiny files, seconds, no targets (CI); same as SMOKE=1
#
# Builds in release mode, then runs:
#   1. netbed (needs root; see scripts/netbed.sh): owner and N peers on their
#      own namespaces, each host's egress limited to RATE Mbit/s. N=5 at 100
#      Mbit/s with 64 MiB, N=20 at 25 Mbit/s with 32 MiB, N=20 at 100 Mbit/s
#      with 64 MiB. Swarm's and unicast's wall times as a ratio to the ideal
#      S/B (the owner's link must carry the file once), next to the floor: one
#      TCP stream carrying S owner -> p1, what the shaped link really gives.
#      Swarm runs twice per case: hand-wired (every peer given
#      --download-neighbor, pI downloads from pI+1) and owner-wired (no
#      --download-neighbor: the owner, a tracker, wires them in join order).
#      Beside each case, the simulator (examples/simulate) on the same case
#      (owner-wired, --peers N, egress shaped) and its ratio to the bed's
#      owner-wired median; target: within 10 %.
#   2. repair (needs root): a dead peer on the netbed, N=20 at 25 Mbit/s,
#      32 MiB, four variants in the same run: (a) owner-wired, no failure;
#      (b) owner-wired, the peer that joined 10th killed (SIGKILL) at half;
#      (a') hand-wired, no failure; (c) hand-wired, p10 killed at half, so
#      its upload neighbour (p9) falls back to the owner after
#      --stall-timeout. "Half": the first moment the owner's registry
#      (`swarm status --json`, asked every 0.25 s from inside the owner's
#      namespace, so off the shaped link) shows the peers holding
#      REPAIR_KILL_AT (50) % of N × chunks; the registry lags up to a
#      second (peers report once a second). Variants without a kill poll
#      too. A survivor's time runs from the owner's start to its exit; rows
#      show the slowest survivor's, its ratio to (a)'s median and to the
#      same wiring's, and what the owner sent in all as a multiple of S.
#      Targets for (b): survivors within 1.25 × (a), owner sent ≤ 1.25 × S.
#      Logs of every repair run are kept in bench-out/logs/ (owner at info
#      with every chunk, peers at info without). In smoke mode: N=4 at 25
#      Mbit/s, 8 MiB (long enough for the registry to see half), (a) and
#      (b) only.
#   3. loopback, N=5, 256 MiB: swarm against unicast.
#   4. scaling on loopback, N = 5, 10, 20, 40 at 32 MiB: wall time and time
#      per delivered GiB (N x S delivered).
#   5. peak resident memory of the owner and each peer, 1 GiB, N=5, loopback.
#   6. versions: the owner following its file (the default) while N=5
#      peers started with --follow take up each new version, on loopback
#      and on the netbed at 100 Mbit/s (owner-wired), 1 GiB, one series
#      per chunking: fixed, and content (--chunking content) when `swarm
#      owner --help` offers it. A series: v1, the whole file; v2, 1 % of
#      its 100 KiB chunks rewritten in place at random (dd conv=notrunc);
#      v3, v2 with 1 MiB of random bytes inserted at 10 % (written beside
#      the file, then mv'd over it). Times (from the logs' timestamps) run
#      from the owner's start (v1) or the end of the change (v2, v3; also
#      from the owner's "now sharing version N") to the last peer's line
#      for that version. Per version: what each peer received from the
#      network (its own count: chunks, manifest, protocol) as % of the
#      file's size, largest and median; chunk bytes from the owner and the
#      ring; the chunks the owner kept; CPU-seconds of the owner and the
#      peers (/proc); every copy checked with cmp. Peak RSS of every
#      process over the series (/usr/bin/time). Targets: in v2 with fixed
#      chunks (the default) each peer receives ≤ 2 % of S (content
#      chunking is reported: a rewritten 100 KiB block touches about 2.6
#      content chunks) and, on the netbed, v2 takes ≤ 5 % of v1's
#      time; in v3 with content chunking ≤ 3 % of S; every process ≤ 32
#      MiB. Each series runs once, whatever REPEAT says (v1 alone is
#      about 100 s on the netbed); the section takes about 15 minutes.
#      Logs of every series are kept in bench-out/logs/. In smoke mode:
#      loopback, N=3, 8 MiB, no targets.
#   7. sources (needs root): sources per peer (issue 11), `swarm peer
#      --sources K` for each K of SOURCES_K (1 and 2) side by side in the
#      same run, owner-wired on the netbed; K=1 passes --sources 1 (the
#      card's ring; without the flag the owner chooses, which below 16
#      peers is the same), and a K ≥ 2
#      that `swarm peer --help` does not offer shows as SKIPPED. Four
#      cases, each K REPEAT times (K=1 first): (floor) N=10 at 25 Mbit/s,
#      16 MiB, every link at the bed's rate: the slow case's bed without
#      its slow peer, what the slow case is compared with; (a) slow: the
#      same with one peer's egress (p3) re-shaped to 5 Mbit/s (netbed.sh
#      rate): the slowest peer's time ÷ S/B at 25 Mbit/s and ÷ the same
#      K's floor, and what the owner sent ÷ S;
#      (b) equal: N=20 at 25 Mbit/s, 32 MiB (the repair case): each K's
#      median ÷ K=1's; (c) kill: the same with the peer that joined 10th
#      killed at half as in section 2, the slowest survivor ÷ the same K's
#      median in (b) (so kill runs (b) too). Targets for K=2: (a) ≤ 1.3 ×
#      S/B and ≤ 1.3 × S, (b) ≤ 1.0, (c) ≤ 1.1. Runs poll the registry
#      until half and keep their logs as in section 2; (a)'s median runs'
#      timelines are kept (timeline-sources-slow-kK.csv). About 8 minutes
#      (a K=1 run of (a) takes about 25 s, of (floor) about 7 s). In smoke
#      mode: (a) only, N=4 at 25 Mbit/s, 4 MiB, no targets.
#   8. pipeline: one peer's own pipeline (scripts/bench_pipeline.sh): an
#      owner and one peer on tmpfs (/dev/shm), 1 GiB, the owner warm and
#      started with --peers 1 before each run; the peer's MB/s (over its
#      wall time and over its receive phase, median and spread of 5 runs)
#      and its user and system CPU-seconds, by default and with
#      --verify-output side by side, beside SHA-256's one-core rate
#      measured in the same run (examples/sha256_rate.rs). Smoke: 16 MiB,
#      one run.
#   9. many (scripts/run_many_peers.sh): MANY_N (1000; 20 in smoke mode)
#      peers as processes on this machine, 4 MiB, owner-wired, on loopback:
#      what the owner sent ÷ S (target ≤ 1.3) and every copy checked; then
#      (needs root) the same with the owner's uplink shaped to
#      MANY_RATE_MBIT (1; 10 in smoke mode) in a namespace of its own and the peers in
#      another: the last completion ÷ S/B at the owner's rate. About 3
#      minutes.
# A swarm time runs from the owner's start until every peer has exited and
# its copy matches the input byte for byte (cmp); a run that fails or times
# out shows as FAILED in the table and keeps its logs in bench-out/logs/.
# "Owner sent ÷ S" is the owner's own count of chunk bytes sent
# (owner_sent_bytes of `swarm status --json`, asked once every peer has
# exited, before the owner is stopped) divided by the file's size.
#
# Per-peer timeline: during every swarm run of sections 1 and 3 (and of
# section 7's slow case) the bench
# counts, every 0.25 s, the chunk IDs in each peer's DIR/summary.txt, and
# keeps the median run's samples (of the first failed run, if one failed)
# of each netbed case and wiring and of the loopback case as
# bench-out/timeline-CASE.csv (e.g. timeline-n5-100mbit-hand.csv,
# timeline-loopback-n5.csv; columns seconds since the owner's start, peer,
# held, total; named in bench.csv's timeline column). The repair, scaling
# and memory runs, and section 7's equal and kill runs, are not sampled.
#
# Writes bench-out/bench.md (the table, also printed), bench-out/bench.csv
# and bench-out/bench.svg (time / (S/B) against N, and below it a panel per
# timeline: each peer's share of the chunks against time, S/B and the
# run's end marked, the tail between them shaded). Temporary files (inputs,
# peer folders; about 19 GiB at the peak of the versions section, whose
# peers each hold the chunks, their copy and the next version's) live in a temp
# folder under $TMPDIR that is removed at the end; every process started is
# stopped and the netbed torn down on exit, even on Ctrl-C.
#
# Swarm runs (and unicast on loopback) are repeated REPEAT times (3; 1 in
# smoke mode) and the median is reported with the min–max spread; unicast
# on the netbed runs once (it takes N × S/B). `sync` runs between runs so
# one run's disk writeback does not slow the next.
#
# Environment: SMOKE=1 (as --smoke), REPEAT, ONLY=netbed,repair,loopback,
# scaling,memory,versions,sources,pipeline,many (sections to run; ONLY=repair runs the
# dead-peer case alone), WIRING=hand,owner (the netbed section's swarm variants),
# BED_CASES (the netbed section's cases, e.g. '5 100 64;20 25 32'),
# REPAIR_KILL_AT (percent of N × chunks held at "half", default 50), BASE_PORT
# (loopback ports, default 31000), BENCH_OUT (default bench-out), TMPDIR,
# CARGO_TARGET_DIR (where the build goes and the binaries are taken from),
# VERSIONS_BEDS=loopback,netbed (the versions section's beds),
# VERSIONS_CHUNKING=fixed,content (fixed alone leaves content out), VERSIONS_SIZE
# (its file, MiB; default 1024, 8 in smoke mode), SOURCES_CASES=floor,slow,equal,kill
# (section 7's cases; slow alone in smoke mode), SOURCES_K (its K values, 1
# to 4, or auto: no --sources, the owner's choice, run last; default "1 2"), SOURCES_SLOW_HOST (the slow case's slow peer, default
# p3), SOURCES_SLOW_RATE (its egress, Mbit/s; default 5), SOURCES_PEER_LOG (RUST_LOG of the section's peers; default info,swarm::chunk=warn).
# Needs bash 5, cargo, cmp, awk; the netbed needs root and iproute2 (ip, tc);
# memory needs /usr/bin/time (package time); repair and versions need GNU
# date; versions needs dd, shuf, stat, sort; sources needs what repair does.
#
# The logic lives in examples/bench/ (a Rust runner: one module per ported
# section, shared helpers beside them); this script builds it and runs it
# with the same flags and environment. Ported: 3 loopback, 4 scaling, 5
# memory, 8 pipeline, 9 many. Not yet: 1 netbed, 2 repair, 6 versions and
# 7 sources, which the runner hands to scripts/bench_legacy.sh (bash); it
# appends to the same bench.md and bench.csv.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for arg in "$@"; do
    case $arg in
        -h | --help) sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    esac
done
command -v cargo >/dev/null || { echo "bench: 'cargo' not found; install it first" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$PWD/$target
echo "bench: building swarm and the examples (release)..."
cargo build --release --quiet --bins --examples --manifest-path "$root/Cargo.toml" ||
    { echo "bench: cargo build failed" >&2; exit 1; }
BENCH_ROOT=$root exec "$target/release/examples/bench" "$@"
