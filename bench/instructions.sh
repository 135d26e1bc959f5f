#!/usr/bin/env bash
# Instructions per forwarded packet, noise-free (callgrind): fulcrum-dataplane's worker and
# testpmd's macswap forwarding lcore on the same input (docs/benchmarks.md, "Dataplane
# throughput").
#
#   bench/instructions.sh [--short S] [--long L] [--cases a,b,c] [--workers N] [--build-dir DIR] [--keep DIR] [--quick]
#
# The DUT reads a net_pcap port with infinite_rx=1 (the pcap's frames replayed from memory
# for ever, so every RX burst is a full 32) and transmits back out of it (no tx_pcap: the
# driver frees the mbufs). Each configuration runs twice under callgrind
# (--separate-threads=yes), forwarding for S and for L seconds (defaults 20 and 60); for the
# forwarding thread (the one with the most instructions)
#     instructions/packet = (Ir_long - Ir_short) / (packets_long - packets_short)
# so start-up, the first pass over the flows (connection-table misses) and thread set-up
# cancel. Packets: fulcrum: 32 x calls of Worker::process_burst (every poll is a full burst of
# 32; checked against the dataplane's counters); testpmd: RX-packets of its forward
# statistics. Fulcrum's worker also runs time-driven work (every --tx-drain-us, 100 us: a TX
# flush and a connection-table sweep of 64 buckets); under callgrind an iteration takes longer
# than 100 us, so the sweep runs on every poll, far more often per packet than at native
# speed. It is therefore reported apart (Ir per sweep call) and left out of the per-packet
# figure "excl. sweep". "excl. idle" also leaves out the rest of Worker::idle (the sync refresh,
# which re-exports each established entry once per refresh interval of wall time): all the
# time-driven work, so that runs whose workers get different shares of the CPU under callgrind
# (several workers on fewer CPUs) compare.
#
# Cases (pcaps from bench/gen_pcap.py): established_dsr, established_ipip (16,384 flows, ACKs)
# and unique_syn (131,072 unique SYNs, --conn-capacity 8192, so every packet is a new flow that
# evicts another new one; checked with the counters); macswap on established_dsr.
#
# --workers N (default 1): fulcrum-dataplane runs N workers (EAL lcores 0-N, spread over the
# CPUs there are: on a small host some share one, which changes the time under callgrind but
# not the instructions) on a net_pcap port with N RX queues, one rx_pcap per queue: the case's
# flows split over N files (gen_pcap.py --queues N), each flow in one queue as RSS would place
# it. Each worker thread is reported on its own row ("case wI": the threads that ran
# Worker::process_burst, in creation order, which is lcore and so queue order), its packets
# counted from its own process_burst calls and checked against its queue's counters. macswap
# stays testpmd with one forwarding core, the single-core baseline.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHORT=20 LONG=60 CASES=established_dsr,established_ipip,unique_syn,macswap BUILD=build-bench KEEP= WORKERS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --short) SHORT=$2; shift 2 ;;
    --long) LONG=$2; shift 2 ;;
    --cases) CASES=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --build-dir) BUILD=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    --quick) SHORT=5 LONG=10; shift ;;
    -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
    *) echo "instructions.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
NAME=instructions.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
case "$WORKERS" in
  [1-8]) ;;
  *) die "--workers '$WORKERS' must be a number of workers from 1 to 8" ;;
esac
[ "$(id -u)" = 0 ] || die "run as root (DPDK needs it, even with --no-huge)"
for t in valgrind callgrind_annotate dpdk-testpmd meson ninja timeout /usr/bin/python3; do
  command -v "$t" >/dev/null || die "'$t' not found (Debian: apt-get install valgrind dpdk meson ninja-build python3)"
done
build_dataplane

if [ -n "$KEEP" ]; then mkdir -p "$KEEP"; WORK=$(cd "$KEEP" && pwd); else WORK=$(mktemp -d /tmp/fulcrum-instr.XXXXXX); fi
PID= PREFIX=
stop_child() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 600); do kill -0 "$PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  PID=
  { exec 3>&-; } 2>/dev/null || true  # (a bare "exec 3>&- 2>/dev/null" would silence the script's stderr for good)
  [ -n "$PREFIX" ] && rm -rf "/var/run/dpdk/$PREFIX"
  PREFIX=
}
cleanup() {
  stop_child
  rm -f "$WORK"/*.sock "$WORK"/*.fifo
  [ -n "$KEEP" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

/usr/bin/python3 "$ROOT/bench/gen_pcap.py" "$WORK" --flows 16384 --syns 131072 --queues "$WORKERS" >/dev/null
"$SNAPTOOL" build "$WORK/spec.json" -o "$WORK/bench.snap" >/dev/null
LIMIT=$((LONG + 400))
# lcores 0..N (the main lcore and N workers) on the CPUs there are, shared when there are fewer
NCPU=$(nproc)
LCORES=0@0
for i in $(seq 1 "$WORKERS"); do LCORES+=",$i@$((i % NCPU))"; done
VG=(valgrind --tool=callgrind --separate-threads=yes --fair-sched=yes)
EAL_COMMON=(--no-huge -m 1024 --no-pci --iova-mode=va --log-level '*:warning')

counters() {  # counters of the dataplane at socket $1: "inserts evictions capacity" (all tables), then "rx polls busy_polls" per queue
  /usr/bin/python3 - "$1" "$ROOT/tests/lib" <<'EOF'
import sys
sys.path.insert(0, sys.argv[2])
from fulcrumlab import DpClient
with DpClient(sys.argv[1], timeout=60) as client:
    c = client.counters()
t = c["conntables"]
print(sum(x["inserts"] for x in t), sum(x["evictions"] for x in t), sum(x["capacity"] for x in t))
for q in sorted(c["queues"], key=lambda q: q["queue"]):
    print(q["rx"], q["polls"], q["busy_polls"])
EOF
}

# run_fulcrum CASE SECONDS OUT: prints one line per worker, "Ir packets sweep_ir sweep_calls
# process_burst_incl new/pkt evict/pkt idle_incl" (new and evict: all workers together) (called with
# stdout to a file, not in a subshell, so the traps see the child)
run_fulcrum() {
  local case=$1 secs=$2 out=$3 cap=1048576 pcapn=16384 rx q
  if [ "$case" = unique_syn ]; then cap=8192 pcapn=131072; fi
  PREFIX="fbcg$$${case:0:3}$secs"
  local sock="$WORK/$PREFIX.sock"
  if [ "$WORKERS" = 1 ]; then
    rx="rx_pcap=$WORK/$case.pcap"
  else
    rx=
    for q in $(seq 0 $((WORKERS - 1))); do rx+="rx_pcap=$WORK/$case.q$q.pcap,"; done
    rx=${rx%,}
  fi
  timeout --kill-after=300 "$LIMIT" "${VG[@]}" --callgrind-out-file="$out" "$DP" --lcores "$LCORES" "${EAL_COMMON[@]}" \
    --file-prefix "$PREFIX" --vdev "net_pcap0,$rx,infinite_rx=1" -- --uplink net_pcap0 --snapshot "$WORK/bench.snap" \
    --control-socket "$sock" --conn-capacity "$cap" --mbufs $((pcapn + 16383 * WORKERS)) --idle-sleep-us 0 \
    >"$out.log" 2>&1 &
  PID=$!
  local t0=$SECONDS
  until grep -q "forwarding; stop" "$out.log" 2>/dev/null; do
    kill -0 "$PID" 2>/dev/null || die "fulcrum-dataplane under valgrind exited: $(tail -5 "$out.log")"
    [ $((SECONDS - t0)) -lt 300 ] || die "fulcrum-dataplane under valgrind did not start in 300 s"
    sleep 0.5
  done
  sleep "$secs"
  counters "$sock" >"$out.counters"
  stop_child
  /usr/bin/python3 "$ROOT/bench/cgstats.py" threads "$out" "$WORKERS" >"$out.threads"
  /usr/bin/python3 - "$out.threads" "$out.counters" "$case" "$ROOT" <<'EOF'
import json, subprocess, sys
threads, counters, case, root = sys.argv[1:]
threads = [line.split() for line in open(threads)]
lines = open(counters).read().split("\n")
ins, evi, cap = map(int, lines[0].split())
queues = [tuple(map(int, line.split())) for line in lines[1:] if line.strip()]
if len(queues) != len(threads):
    sys.exit(f"{case}: {len(queues)} queues in the counters but {len(threads)} worker threads")
rx_all = sum(q[0] for q in queues)
for i, (rx, polls, busy) in enumerate(queues):
    # Every poll must have been a full burst of 32 for packets = 32 x calls to hold. (The
    # counters are read while the worker runs: rx counts per packet, polls and busy_polls per
    # burst.)
    if rx == 0 or polls - busy > 1 or abs(rx - 32 * busy) > 32:
        sys.exit(f"{case}: queue {i}: not every poll was a full burst (rx {rx}, polls {polls}, busy {busy})")
# Every SYN is a new flow; once the tables are full (the first `cap` inserts evict nothing),
# every insert evicts another new one.
if case == "unique_syn" and (ins < 0.99 * rx_all or evi < 0.98 * (rx_all - cap)):
    sys.exit(f"unique_syn: only {ins / rx_all:.3f} inserts per packet and {evi / max(1, rx_all - cap):.3f} "
             f"evictions per packet after the tables filled ({cap} entries)")
for i, (f, ir) in enumerate(threads):
    fn = json.loads(subprocess.run(["/usr/bin/python3", root + "/bench/cgstats.py", "funcs", f, "Worker::process_burst",
                                    "ConnTable::sweep", "Worker::idle"], capture_output=True, text=True,
                                   check=True).stdout)
    pb, sw, idle = fn["Worker::process_burst"], fn["ConnTable::sweep"], fn["Worker::idle"]
    # The thread is this queue's worker: its packets (counted until the dataplane stopped) are
    # at least what the counters saw while it ran.
    if 32 * pb["calls"] < queues[i][0]:
        sys.exit(f"{case}: worker thread {f} forwarded {32 * pb['calls']} packets, fewer than queue {i}'s "
                 f"{queues[i][0]}: the threads are not in queue order")
    print(ir, 32 * pb["calls"], sw["inclusive"], sw["calls"], pb["inclusive"], f"{ins / rx_all:.4f}", f"{evi / rx_all:.4f}",
          idle["inclusive"])
EOF
}

# run_macswap SECONDS OUT: writes OUT.result: "Ir packets"
run_macswap() {
  local secs=$1 out=$2
  PREFIX="fbcg$$mac$secs"
  local fifo="$WORK/$PREFIX.fifo"
  mkfifo "$fifo"
  timeout --kill-after=300 "$LIMIT" stdbuf -o0 "${VG[@]}" --callgrind-out-file="$out" dpdk-testpmd -l 0-1 "${EAL_COMMON[@]}" --file-prefix "$PREFIX" \
    --vdev "net_pcap0,rx_pcap=$WORK/established_dsr.pcap,infinite_rx=1" -- -i --forward-mode=macswap \
    --port-topology=loop --nb-cores=1 --total-num-mbufs=32768 <"$fifo" >"$out.log" 2>&1 &
  PID=$!
  exec 3>"$fifo"
  local t0=$SECONDS
  until grep -q "testpmd> " "$out.log" 2>/dev/null; do  # stdout unbuffered by stdbuf
    kill -0 "$PID" 2>/dev/null || die "testpmd under valgrind exited: $(tail -5 "$out.log")"
    [ $((SECONDS - t0)) -lt 300 ] || die "testpmd under valgrind did not start in 300 s"
    sleep 0.5
  done
  echo "start" >&3
  sleep "$secs"
  echo "stop" >&3
  echo "quit" >&3
  for _ in $(seq 1 480); do kill -0 "$PID" 2>/dev/null || break; sleep 0.5; done
  stop_child
  local f ir pk
  /usr/bin/python3 "$ROOT/bench/cgstats.py" thread "$out" >"$out.thread"
  read -r f ir <"$out.thread"
  pk=$(grep -A1 "Forward statistics for port 0" "$out.log" | sed -n 's/.*RX-packets: *\([0-9]*\).*/\1/p' | tail -n1)
  [ -n "$pk" ] || die "no forward statistics in $out.log"
  echo "$ir $pk" >"$out.result"
}

echo "== $(date -u +%FT%TZ) commit $(commit_desc); $WORKERS worker(s); forwarding for $SHORT s and $LONG s under callgrind per configuration"
printf '%-18s %14s %12s %14s %12s %10s %12s %10s %12s %12s\n' case Ir_short pkts_short Ir_long pkts_long "Ir/pkt" "excl.sweep" "excl.idle" "burst_incl" "new,evict"
# The difference of the two runs is the figure: the long one must have forwarded more.
check_runs() {  # LABEL PACKETS_SHORT PACKETS_LONG
  [ "$3" -gt "$2" ] || die "$1: the ${LONG} s run forwarded $3 packets, the ${SHORT} s run $2: no difference to divide by (machine too loaded or runs too short: raise --long)"
}
IFS=, read -r -a LIST <<<"$CASES"
for c in "${LIST[@]}"; do
  if [ "$c" = macswap ]; then
    run_macswap "$SHORT" "$WORK/cg.macswap.s"
    run_macswap "$LONG" "$WORK/cg.macswap.l"
    read -r i1 p1 <"$WORK/cg.macswap.s.result"
    read -r i2 p2 <"$WORK/cg.macswap.l.result"
    check_runs macswap "$p1" "$p2"
    /usr/bin/python3 -c "
i1,p1,i2,p2=$i1,$p1,$i2,$p2
print(f'{\"macswap\":18s} {i1:14d} {p1:12d} {i2:14d} {p2:12d} {(i2-i1)/(p2-p1):10.1f} {\"-\":>12s} {\"-\":>10s} {\"-\":>12s} {\"-\":>12s}')"
  else
    run_fulcrum "$c" "$SHORT" "$WORK/cg.$c.s" >"$WORK/cg.$c.s.result"
    run_fulcrum "$c" "$LONG" "$WORK/cg.$c.l" >"$WORK/cg.$c.l.result"
    for w in $(seq 1 "$WORKERS"); do
      read -r i1 p1 s1 n1 b1 ni1 ev1 d1 < <(sed -n "${w}p" "$WORK/cg.$c.s.result")
      read -r i2 p2 s2 n2 b2 ni2 ev2 d2 < <(sed -n "${w}p" "$WORK/cg.$c.l.result")
      label=$c
      [ "$WORKERS" = 1 ] || label="$c w$((w - 1))"
      check_runs "$label" "$p1" "$p2"
      /usr/bin/python3 -c "
i1,p1,s1,n1,b1,d1,i2,p2,s2,n2,b2,d2=$i1,$p1,$s1,$n1,$b1,$d1,$i2,$p2,$s2,$n2,$b2,$d2
print(f'{\"$label\":18s} {i1:14d} {p1:12d} {i2:14d} {p2:12d} {(i2-i1)/(p2-p1):10.1f} {((i2-s2)-(i1-s1))/(p2-p1):12.1f} {((i2-d2)-(i1-d1))/(p2-p1):10.1f} {(b2-b1)/(p2-p1):12.1f} {\"$ni2,$ev2\":>12s}')
print(f'{\"\":18s} sweep: {s2/n2:.0f} Ir per call ({n2} calls in the long run, one per {p2/n2:.0f} packets under callgrind)')"
      echo "   top functions of the long run (self Ir per packet):"
      /usr/bin/python3 "$ROOT/bench/cgstats.py" top "$(sed -n "${w}p" "$WORK/cg.$c.l.threads" | cut -d' ' -f1)" "$p2" 14 | sed 's/^/   /'
    done
  fi
done
