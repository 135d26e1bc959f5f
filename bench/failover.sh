#!/usr/bin/env bash
# Failover time: a Fulcrum pair (VRRPv3 in fulcrumd, dataplane fencing lease) against a
# keepalived pair (keepalived 2.2.7 on each balancer's fl0 over standalone dataplanes) on the
# same two-balancer topology in network namespaces (tests/lib/halab.py; docs/benchmarks.md).
#
#   bench/failover.sh [--trials N] [--cases kill9,sigterm,fence] [--intervals 0.1,1]
#                     [--pairs fulcrum,keepalived] [--conns N] [--new-rate R]
#                     [--build-dir DIR] [--keep DIR] [--quick]
#
#   --trials N     trials per pair, case and advert interval (default 20); the pairs alternate
#   --cases        kill9: kill -9 of the master's VRRP speaker and dataplane at once (host
#                  death); sigterm: SIGTERM of the master's VRRP speaker; fence: kill -9 of
#                  the VRRP speaker alone, the client asking for the VIP every 10 ms: how long
#                  both balancers answer (default: kill9,sigterm)
#   --intervals    advert intervals in seconds (default 0.1,1)
#   --conns N      held connections, one exchange every 100 ms each (default 100)
#   --new-rate R   new connections a second during each trial (default 20)
#   --build-dir    build with fulcrumd, fulcrumctl and the dataplane (default build)
#   --keep DIR     keep logs, captures and results.json in DIR (default: temporary, removed)
#   --quick        smoke test: 2 trials, 100 ms interval only
#
# Per trial it reports the time from the signal to the new master's first gratuitous ARP as
# captured on the client, and the client-observed gaps; the summary (medians, worst) goes to
# stdout as JSON, one line per trial to stderr. Takes 15 to 20 s per trial (the default, 160
# trials: about 50 minutes). Needs root, keepalived, /usr/bin/python3; every process it
# starts is stopped by PID and every namespace deleted on exit, also on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=failover.sh
source "$ROOT/bench/lib.sh"
BUILD=build
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --trials|--cases|--intervals|--pairs|--conns|--new-rate|--keep) ARGS+=("$1" "$2"); shift 2 ;;
    --build-dir) BUILD=$2; shift 2 ;;
    --quick) ARGS+=(--trials 2 --intervals 0.1); shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "failover.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "failover.sh: run as root (it creates network namespaces)" >&2
  exit 1
fi
command -v keepalived >/dev/null || { echo "failover.sh: keepalived is missing (apt-get install keepalived)" >&2; exit 1; }
cd "$ROOT"
if [ ! -f "$BUILD/build.ninja" ]; then
  echo "== configuring $BUILD" >&2
  meson setup "$BUILD" >/dev/null
fi
echo "== building fulcrum-dataplane, fulcrumd and fulcrumctl in $BUILD" >&2
ninja -C "$BUILD" -j2 dataplane/app/fulcrum-dataplane control/fulcrumd control/fulcrumctl >/dev/null ||
  { echo "failover.sh: build failed (run: ninja -C $BUILD -j2 control/fulcrumd)" >&2; exit 1; }
export FAILOVER_COMMIT="$(commit_desc)"
export FULCRUM_BUILD_DIR="$ROOT/$BUILD"
exec /usr/bin/python3 bench/failover.py "${ARGS[@]}"
