#!/usr/bin/env bash
# Instructions per forwarded packet, noise-free (callgrind): fulcrum-dataplane's worker and
# testpmd's macswap forwarding lcore on the same input (docs/benchmarks.md, "Dataplane
# throughput").
#
#   bench/instructions.sh [--short S] [--long L] [--cases a,b,c] [--build-dir DIR] [--keep DIR] [--quick]
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
# figure "excl. sweep".
#
# Cases (pcaps from bench/gen_pcap.py): established_dsr, established_ipip (16,384 flows, ACKs)
# and unique_syn (131,072 unique SYNs, --conn-capacity 8192, so every packet is a new flow that
# evicts another new one; checked with the counters); macswap on established_dsr.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHORT=20 LONG=60 CASES=established_dsr,established_ipip,unique_syn,macswap BUILD=build-bench KEEP=
while [ $# -gt 0 ]; do
  case "$1" in
    --short) SHORT=$2; shift 2 ;;
    --long) LONG=$2; shift 2 ;;
    --cases) CASES=$2; shift 2 ;;
    --build-dir) BUILD=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    --quick) SHORT=5 LONG=10; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "instructions.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
NAME=instructions.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
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
  exec 3>&- 2>/dev/null || true
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

/usr/bin/python3 "$ROOT/bench/gen_pcap.py" "$WORK" --flows 16384 --syns 131072 >/dev/null
"$SNAPTOOL" build "$WORK/spec.json" -o "$WORK/bench.snap" >/dev/null
LIMIT=$((LONG + 400))
VG=(valgrind --tool=callgrind --separate-threads=yes --fair-sched=yes)
EAL_COMMON=(-l 0-1 --no-huge -m 1024 --no-pci --iova-mode=va --log-level '*:warning')

counters() {  # counters of the dataplane at socket $1 as "rx polls busy_polls inserts evictions"
  /usr/bin/python3 - "$1" "$ROOT/tests/lib" <<'EOF'
import sys
sys.path.insert(0, sys.argv[2])
from fulcrumlab import DpClient
with DpClient(sys.argv[1], timeout=60) as client:
    c = client.counters()
q, t = c["queues"][0], c["conntables"][0]
print(c["rx"], q["polls"], q["busy_polls"], t["inserts"], t["evictions"])
EOF
}

# run_fulcrum CASE SECONDS OUT: prints "Ir packets sweep_ir sweep_calls process_burst_incl
# new/pkt evict/pkt" (called with stdout to a file, not in a subshell, so the traps see the
# child)
run_fulcrum() {
  local case=$1 secs=$2 out=$3 cap=1048576 pcapn=16384
  if [ "$case" = unique_syn ]; then cap=8192 pcapn=131072; fi
  PREFIX="fbcg$$${case:0:3}$secs"
  local sock="$WORK/$PREFIX.sock"
  timeout --kill-after=300 "$LIMIT" "${VG[@]}" --callgrind-out-file="$out" "$DP" "${EAL_COMMON[@]}" --file-prefix "$PREFIX" \
    --vdev "net_pcap0,rx_pcap=$WORK/$case.pcap,infinite_rx=1" -- --uplink net_pcap0 --snapshot "$WORK/bench.snap" \
    --control-socket "$sock" --conn-capacity "$cap" --mbufs $((pcapn + 16383)) --idle-sleep-us 0 \
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
  local rx polls busy ins evi f ir
  read -r rx polls busy ins evi <"$out.counters"
  /usr/bin/python3 "$ROOT/bench/cgstats.py" thread "$out" >"$out.thread"
  read -r f ir <"$out.thread"
  /usr/bin/python3 - "$f" "$ir" "$rx" "$polls" "$busy" "$ins" "$evi" "$case" "$ROOT" <<'EOF'
import json, subprocess, sys
f, ir, rx, polls, busy, ins, evi, case, root = sys.argv[1:]
ir, rx, polls, busy, ins, evi = map(int, (ir, rx, polls, busy, ins, evi))
fn = json.loads(subprocess.run(["/usr/bin/python3", root + "/bench/cgstats.py", "funcs", f, "Worker::process_burst",
                                "ConnTable::sweep"], capture_output=True, text=True, check=True).stdout)
pb, sw = fn["Worker::process_burst"], fn["ConnTable::sweep"]
# Every poll must have been a full burst of 32 for packets = 32 x calls to hold. (The counters
# are read while the worker runs: rx counts per packet, polls and busy_polls per burst.)
if polls - busy > 1 or abs(rx - 32 * busy) > 32:
    sys.exit(f"{case}: not every poll was a full burst (rx {rx}, polls {polls}, busy {busy})")
if case == "unique_syn" and (ins < 0.99 * rx or evi < 0.98 * rx):
    sys.exit(f"unique_syn: only {ins / rx:.3f} inserts and {evi / rx:.3f} evictions per packet")
print(ir, 32 * pb["calls"], sw["inclusive"], sw["calls"], pb["inclusive"], f"{ins / rx:.4f}", f"{evi / rx:.4f}")
EOF
}

# run_macswap SECONDS OUT: writes OUT.result: "Ir packets"
run_macswap() {
  local secs=$1 out=$2
  PREFIX="fbcg$$mac$secs"
  local fifo="$WORK/$PREFIX.fifo"
  mkfifo "$fifo"
  timeout --kill-after=300 "$LIMIT" stdbuf -o0 "${VG[@]}" --callgrind-out-file="$out" dpdk-testpmd "${EAL_COMMON[@]}" --file-prefix "$PREFIX" \
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

echo "== $(date -u +%FT%TZ) commit $(commit_desc); forwarding for $SHORT s and $LONG s under callgrind per configuration"
printf '%-18s %14s %12s %14s %12s %10s %12s %12s %12s\n' case Ir_short pkts_short Ir_long pkts_long "Ir/pkt" "excl.sweep" "burst_incl" "new,evict"
IFS=, read -r -a LIST <<<"$CASES"
for c in "${LIST[@]}"; do
  if [ "$c" = macswap ]; then
    run_macswap "$SHORT" "$WORK/cg.macswap.s"
    run_macswap "$LONG" "$WORK/cg.macswap.l"
    read -r i1 p1 <"$WORK/cg.macswap.s.result"
    read -r i2 p2 <"$WORK/cg.macswap.l.result"
    /usr/bin/python3 -c "
i1,p1,i2,p2=$i1,$p1,$i2,$p2
print(f'{\"macswap\":18s} {i1:14d} {p1:12d} {i2:14d} {p2:12d} {(i2-i1)/(p2-p1):10.1f} {\"-\":>12s} {\"-\":>12s} {\"-\":>12s}')"
  else
    run_fulcrum "$c" "$SHORT" "$WORK/cg.$c.s" >"$WORK/cg.$c.s.result"
    run_fulcrum "$c" "$LONG" "$WORK/cg.$c.l" >"$WORK/cg.$c.l.result"
    read -r i1 p1 s1 n1 b1 ni1 ev1 <"$WORK/cg.$c.s.result"
    read -r i2 p2 s2 n2 b2 ni2 ev2 <"$WORK/cg.$c.l.result"
    /usr/bin/python3 -c "
i1,p1,s1,n1,b1,i2,p2,s2,n2,b2=$i1,$p1,$s1,$n1,$b1,$i2,$p2,$s2,$n2,$b2
print(f'{\"$c\":18s} {i1:14d} {p1:12d} {i2:14d} {p2:12d} {(i2-i1)/(p2-p1):10.1f} {((i2-s2)-(i1-s1))/(p2-p1):12.1f} {(b2-b1)/(p2-p1):12.1f} {\"$ni2,$ev2\":>12s}')
print(f'{\"\":18s} sweep: {s2/n2:.0f} Ir per call ({n2} calls in the long run, one per {p2/n2:.0f} packets under callgrind)')"
    echo "   top functions of the long run (self Ir per packet):"
    /usr/bin/python3 "$ROOT/bench/cgstats.py" top "$(/usr/bin/python3 "$ROOT/bench/cgstats.py" thread "$WORK/cg.$c.l" | cut -d' ' -f1)" "$p2" 14 | sed 's/^/   /'
  fi
done
