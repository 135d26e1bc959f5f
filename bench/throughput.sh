#!/usr/bin/env bash
# Dataplane throughput on one worker core over a memif pair, against testpmd's macswap
# forwarder on the identical set-up (docs/benchmarks.md, "Dataplane throughput").
#
#   bench/throughput.sh [--runs N] [--seconds S] [--warmup W] [--cases a,b,c] [--quick]
#                       [--hugepages [--zero-copy]] [--conn-capacity N] [--build-dir DIR]
#                       [--keep DIR]
#
#   --runs N       runs per DUT and case, fulcrum and macswap alternating (default 5)
#   --seconds S    measurement window per run (default 20), after --warmup W seconds (default 5)
#   --cases LIST   established_dsr,established_ipip,established_dsr_74b,unique_syn (the default)
#                  and established_dsr_ts,established_ipip_ts; established_dsr_74b is
#                  established_dsr in 74-byte frames, the length an IPIP forward sends: what the
#                  longer frame alone costs on memif; the _ts cases are the established ones with
#                  the TCP timestamps option, as Linux sends them (66-byte frames)
#   --quick        smoke test: 1 run of 3 s (1 s warm-up) per DUT and case, 262,144-SYN pcap
#   --hugepages    both DUTs on 2 MiB hugepages instead of --no-huge (reserves 512 pages with
#                  scripts/hugepages.sh when fewer are free, and gives them back at exit)
#   --zero-copy    (with --hugepages) both DUTs' memif in zero-copy client mode: the generator
#                  copies frames into and out of the DUT's own buffers, so the DUT copies no
#                  frame bytes, as with a NIC's DMA; the DUTs' EAL runs --in-memory
#                  --single-file-segments, which that mode needs
#   --conn-capacity N  Fulcrum's connection table entries in the established cases (default
#                  1048576, the dataplane's default; the unique-SYN case keeps 131072)
#   --build-dir    release build with DPDK (default build-bench; configured and built if missing)
#   --keep DIR     keep the pcaps, logs and results.json in DIR (default: a temporary directory,
#                  removed at exit); bench/steady.py compares kept results within one speed
#                  state of the machine
#
# Needs: dpdk-testpmd and the net_memif, net_pcap and net_null drivers (Debian: dpdk),
# meson, ninja, /usr/bin/python3, timeout(1), root (DPDK with --no-huge still wants it).
# Uses CPUs 0 and 1: the generator forwards on CPU 0, the DUT on CPU 1. Every process it
# starts runs under timeout(1) and is stopped by PID on exit, also on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=5 SECONDS_=20 WARMUP=5 CASES=established_dsr,established_ipip,established_dsr_74b,unique_syn QUICK=0
BUILD=build-bench KEEP= HUGE=0 ZC=0 CAPACITY=1048576
SYNS=1048576 FLOWS=16384
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --seconds) SECONDS_=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --cases) CASES=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --hugepages) HUGE=1; shift ;;
    --zero-copy) ZC=1; shift ;;
    --conn-capacity) CAPACITY=$2; shift 2 ;;
    --build-dir) BUILD=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "throughput.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then RUNS=1 SECONDS_=3 WARMUP=1 SYNS=262144; fi
case "$RUNS" in ''|*[!0-9]*|0) echo "throughput.sh: --runs must be a positive integer" >&2; exit 2 ;; esac
case "$CAPACITY" in ''|*[!0-9]*|0) echo "throughput.sh: --conn-capacity must be a positive integer (entries), got '$CAPACITY'" >&2; exit 2 ;; esac
KNOWN_CASES=established_dsr,established_ipip,established_dsr_74b,established_dsr_ts,established_ipip_ts,unique_syn
IFS=, read -r -a CASE_LIST <<< "$CASES"
[ "${#CASE_LIST[@]}" -gt 0 ] || { echo "throughput.sh: --cases is empty; known cases: $KNOWN_CASES" >&2; exit 2; }
for c in "${CASE_LIST[@]}"; do
  case ",$KNOWN_CASES," in
    *",$c,"*) ;;
    *) echo "throughput.sh: unknown case '$c' in --cases '$CASES'; known cases: $KNOWN_CASES" >&2; exit 2 ;;
  esac
done
if [ "$ZC" = 1 ] && [ "$HUGE" = 0 ]; then
  echo "throughput.sh: --zero-copy needs --hugepages (memif's zero-copy client shares the DUT's hugepage memory with the generator)" >&2
  exit 2
fi

NAME=throughput.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
[ "$(id -u)" = 0 ] || die "run as root (DPDK needs it, even with --no-huge)"
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (generator and DUT on separate cores); this host has $(nproc)"
for t in dpdk-testpmd meson ninja timeout stdbuf /usr/bin/python3; do
  command -v "$t" >/dev/null || die "'$t' not found (Debian: apt-get install dpdk meson ninja-build python3)"
done
PMDS=$(pkg-config --variable=pmdsdir libdpdk 2>/dev/null || true)
[ -n "$PMDS" ] || PMDS=$(ls -d /usr/lib/*/dpdk/pmds-* 2>/dev/null | head -n1)
for drv in memif pcap null; do
  ls "$PMDS"/librte_net_"$drv".so* >/dev/null 2>&1 || die "DPDK driver net_$drv not found in '$PMDS' (Debian: apt-get install dpdk)"
done

build_dataplane

if [ -n "$KEEP" ]; then mkdir -p "$KEEP"; WORK=$(cd "$KEEP" && pwd); else WORK=$(mktemp -d /tmp/fulcrum-tput.XXXXXX); fi
if [ -n "$KEEP" ]; then WORK_KEEP=1; fi
trap bench_cleanup EXIT
trap 'exit 130' INT TERM HUP

HUGEOPT=
if [ "$HUGE" = 1 ]; then
  reserve_hugepages 512
  HUGEOPT=--hugepages
  if [ "$ZC" = 1 ]; then HUGEOPT="--hugepages --zero-copy"; fi
fi

echo "== writing pcaps ($FLOWS flows, $SYNS unique SYNs) and the snapshot into $WORK"
/usr/bin/python3 "$ROOT/bench/gen_pcap.py" "$WORK" --flows "$FLOWS" --syns "$SYNS"
"$SNAPTOOL" build "$WORK/spec.json" -o "$WORK/bench.snap" >/dev/null

echo "== $(date -u +%FT%TZ) commit $(commit_desc), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
SYNCAP=131072
[ "$QUICK" = 1 ] && SYNCAP=32768
# Frames in each case's pcap (gen_pcap.py): one per flow, one per SYN for unique_syn.
FRAMES=
for c in ${KNOWN_CASES//,/ }; do
  n=$FLOWS; [ "$c" = unique_syn ] && n=$SYNS
  FRAMES+="${FRAMES:+, }\"$c\": $n"
done
/usr/bin/python3 "$ROOT/bench/throughput.py" --workdir "$WORK" --dataplane "$DP" --snapshot "$WORK/bench.snap" \
  --cases "$CASES" --runs "$RUNS" --seconds "$SECONDS_" --warmup "$WARMUP" --syn-capacity "$SYNCAP" --capacity "$CAPACITY" \
  --frames "{$FRAMES}" \
  --json "$WORK/results.json" $HUGEOPT &
DRIVER=$!
RC=0
wait "$DRIVER" || RC=$?
DRIVER=
exit $RC
