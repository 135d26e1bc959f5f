#!/usr/bin/env bash
# Connection sync of a Fulcrum pair, end to end through real processes on the two-balancer
# topology in network namespaces (tests/lib/halab.py; docs/benchmarks.md, "Connection sync").
#
#   bench/sync.sh [--records N] [--bulk-trials N] [--rates R1,R2] [--lag-seconds S]
#                 [--rate N] [--refresh D] [--build-dir DIR] [--keep DIR] [--quick]
#
#   --records N      entries in balancer a's table for the bulk case (default 30000; at most
#                    45000: the lab's dataplanes hold 65536 connections in buckets)
#   --bulk-trials N  bulk resyncs of b from a, each a restart of b's fulcrumd (default 5)
#   --rates          new connections a second from the client for the lag case, one run
#                    each (default 200,500)
#   --lag-seconds S  length of each lag run (default 10)
#   --rate N         fulcrumd's sync rate cap, records/s (default 1000000; the product's
#                    default is 100000)
#   --refresh D      fulcrumd's sync refresh interval (default 1h: no refresh records)
#   --build-dir      build with fulcrumd, fulcrumctl and the dataplane (default build)
#   --keep DIR       keep logs and results.json in DIR (default: temporary, removed)
#   --quick          smoke test: 20000 records, 1 bulk trial, one 3 s lag run at 100/s
#
# bulk: records/s from b's first installed record to the last (a's dataplane dump, both
# fulcrumds, UDP, b's dataplane install), every record accounted for. lag: how long after a's
# dataplane exported a record b's dataplane had installed it, p50/p99/max, from both
# dataplanes' counters sampled every 2 ms. The summary goes to stdout as JSON. Needs root and
# /usr/bin/python3; every process it starts is stopped by PID and every namespace deleted on
# exit, also on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=sync.sh
source "$ROOT/bench/lib.sh"
BUILD=build
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --records|--bulk-trials|--rates|--lag-seconds|--rate|--refresh|--keep) ARGS+=("$1" "$2"); shift 2 ;;
    --build-dir) BUILD=$2; shift 2 ;;
    --quick) ARGS+=(--records 20000 --bulk-trials 1 --rates 100 --lag-seconds 3); shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "sync.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "sync.sh: run as root (it creates network namespaces)" >&2
  exit 1
fi
cd "$ROOT"
if [ ! -f "$BUILD/build.ninja" ]; then
  echo "== configuring $BUILD" >&2
  meson setup "$BUILD" >/dev/null
fi
echo "== building fulcrum-dataplane, fulcrumd and fulcrumctl in $BUILD" >&2
ninja -C "$BUILD" -j2 dataplane/app/fulcrum-dataplane control/fulcrumd control/fulcrumctl dataplane/fulcrum-snapshot >/dev/null ||
  { echo "sync.sh: build failed (run: ninja -C $BUILD -j2 control/fulcrumd)" >&2; exit 1; }
export SYNC_COMMIT="$(commit_desc)"
export FULCRUM_BUILD_DIR="$ROOT/$BUILD"
exec /usr/bin/python3 bench/sync.py "${ARGS[@]}"
