#!/usr/bin/env bash
# Pktgen-DPDK against fulcrum-dataplane, RFC 2544 style, with testpmd macswap as the baseline
# (docs/benchmarks.md, "Pktgen-DPDK (RFC 2544)"; how to build pktgen: "Building Pktgen-DPDK").
#
#   PKTGEN=/path/to/pktgen bench/pktgen.sh [options]      (or pktgen on PATH)
#
#   --kinds LIST        tcp4,syn4,tcp6,syn6 (default all): TCP ACKs of --flows established flows
#                       to the VIP, or SYNs stepping source address and port (pktgen's range
#                       mode repeats after 24,576 of them); synpcap4 (64 B only): a pcap of
#                       --pcap-syns unique SYNs (default 1,048,576) replayed with pktgen -s, the
#                       DUT with --syn-capacity connections (default 131,072): every SYN is new
#   --sizes LIST        frame sizes with FCS, from 64,128,256,512,1024,1280,1518 (default all)
#   --flows N           flows of tcp4/tcp6 (default 4096)
#   --duts LIST         fulcrum,macswap (default both, alternating)
#   --runs N            runs per kind, size and DUT (default 1)
#   --trial-seconds S   traffic per trial (default 5)
#   --loss-tolerance F  fraction of packets a passing trial may lose (default 0: zero loss)
#   --rate-slack F      fraction of the requested rate the generator may fall short by (0.02)
#   --max-iterations N  trials per binary search (default 8)
#   --max-rate P        upper bound of the search, percent of the link (memif 10, nic 100: memif
#                       reports 100 Gbit/s); --resolution P: the search's step (memif 0.05, nic 0.5)
#   --warmup-seconds S  uncounted trial before each search (default 3)
#   --loads LIST        also measure at these fixed offered loads, percent of the link
#   --search-seconds S  bound of one search (600); --total-seconds S: bound of the run (3600)
#   --quick             smoke test: tcp4, 64 B, fulcrum only, a warm-up and 2 trials of 1 s from 1 %
#   --mode memif|nic    memif pair on this host (default), or two NIC ports cabled back to back:
#   --gen-pci ADDR --dut-pci ADDR   (nic) PCI addresses of pktgen's and the DUT's port
#   --gen-lcores L --dut-lcores L   EAL --lcores (defaults 0@1,1@0: pktgen main, RX+TX (or
#                       MAIN,RX,TX for separate RX and TX lcores);
#                       and 0@0,1@1: DUT main, worker)
#   --rsize N           memif log2 ring size, both ends (default 14)
#   --hugepages         2 MiB hugepages instead of --no-huge (reserves 1536 with
#                       scripts/hugepages.sh when fewer are free, gives them back at exit)
#   --build-dir DIR     release build with DPDK (default build-bench)
#   --out DIR           where results.json, results.png, logs and scripts go (default: a
#                       temporary directory, removed at exit unless --keep)
#   --keep              keep --out's temporary directory
#
# Needs: pktgen (docs/benchmarks.md says how to build it), dpdk-testpmd and net_memif (Debian:
# dpdk), meson, ninja, /usr/bin/python3 with matplotlib, timeout(1), root. Every process runs
# under timeout(1) and is stopped by PID on exit, also on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=pktgen.sh
BUILD=build-bench OUT='' KEEP=0 HUGE=0 QUICK=0 MODE=memif
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --kinds|--sizes|--flows|--duts|--runs|--trial-seconds|--loss-tolerance|--rate-slack|--max-iterations|\
    --resolution|--max-rate|--warmup-seconds|--loads|--search-seconds|--total-seconds|--gen-pci|--dut-pci|--gen-lcores|--dut-lcores|--rsize|--pcap-syns|--syn-capacity)
      [ $# -ge 2 ] || { echo "$NAME: $1 needs a value (see --help)" >&2; exit 2; }
      PASS+=("$1" "$2"); shift 2 ;;
    --mode) MODE=$2; PASS+=("$1" "$2"); shift 2 ;;
    --quick) QUICK=1; shift ;;
    --hugepages) HUGE=1; shift ;;
    --build-dir) BUILD=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
    *) echo "$NAME: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then
  PASS=(--kinds tcp4 --sizes 64 --duts fulcrum --trial-seconds 1 --max-rate 1 --max-iterations 2 --total-seconds 300 "${PASS[@]}")
fi

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
if [ -n "${PKTGEN:-}" ] && [ ! -x "$PKTGEN" ]; then
  die "PKTGEN=$PKTGEN is not an executable file (docs/benchmarks.md, \"Building Pktgen-DPDK\")"
fi
PKTGEN=${PKTGEN:-$(command -v pktgen || true)}
if [ -z "$PKTGEN" ]; then
  die "no pktgen binary: set PKTGEN=/path/to/pktgen or put pktgen on PATH (docs/benchmarks.md, \"Building Pktgen-DPDK\")"
fi
[ "$(id -u)" = 0 ] || die "run as root (DPDK needs it, even with --no-huge)"
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (generator and DUT on separate cores); this host has $(nproc)"
for t in dpdk-testpmd meson ninja timeout stdbuf /usr/bin/python3; do
  command -v "$t" >/dev/null || die "'$t' not found (Debian: apt-get install dpdk meson ninja-build python3)"
done
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || die "matplotlib missing (Debian: apt-get install python3-matplotlib)"
if [ "$MODE" = memif ]; then
  PMDS=$(pkg-config --variable=pmdsdir libdpdk 2>/dev/null || true)
  [ -n "$PMDS" ] || PMDS=$(ls -d /usr/lib/*/dpdk/pmds-* 2>/dev/null | head -n1)
  ls "$PMDS"/librte_net_memif.so* >/dev/null 2>&1 || die "DPDK driver net_memif not found in '$PMDS' (Debian: apt-get install dpdk)"
fi

build_dataplane

if [ -n "$OUT" ]; then mkdir -p "$OUT"; WORK=$(cd "$OUT" && pwd); KEEP=1; else WORK=$(mktemp -d /tmp/fulcrum-pktgen.XXXXXX); fi
WORK_KEEP=$KEEP
trap bench_cleanup EXIT
trap 'exit 130' INT TERM HUP

if [ "$HUGE" = 1 ]; then
  # pktgen (2 GiB) and the DUT (512 MiB): 1280 pages of 2 MiB, with headroom.
  reserve_hugepages 1536
  PASS+=(--hugepages)
fi

/usr/bin/python3 -c "import sys, json; sys.path.insert(0, '$ROOT/bench'); import pktgen; print(json.dumps(pktgen.snapshot_spec(), indent=1))" >"$WORK/spec.json"
"$SNAPTOOL" build "$WORK/spec.json" -o "$WORK/bench.snap" >/dev/null

echo "== $(date -u +%FT%TZ) commit $(commit_desc), pktgen $PKTGEN, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== work directory $WORK"
PYTHONPATH="$ROOT/bench" /usr/bin/python3 "$ROOT/bench/pktgen.py" --pktgen "$PKTGEN" --dataplane "$DP" \
  --snapshot "$WORK/bench.snap" --workdir "$WORK" --json "$WORK/results.json" \
  --commit "$(commit_desc)" "${PASS[@]}" &
DRIVER=$!
RC=0
wait "$DRIVER" || RC=$?
DRIVER=''
exit $RC
