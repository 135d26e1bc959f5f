#!/usr/bin/env bash
# Throughput of fulcrum-dataplane on an AF_XDP uplink (a veth in a namespace of its own) with
# Fulcrum's XDP front against DPDK's default XDP program, alternating runs, tcpreplay at top
# speed as the sender. Prints JSON: forwarded frames/s per setup (medians) and the ratio
# front/default per pair of runs. Needs root, tcpreplay and the eBPF build. Details:
# bench/xdp_throughput.py.
#
#   bench/xdp_throughput.sh [--runs N] [--loops L] [--build-dir DIR]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=xdp_throughput.sh
source "$ROOT/bench/lib.sh"
BUILD=build
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD=$2; shift 2 ;;
    --runs|--loops) ARGS+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "xdp_throughput.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "xdp_throughput.sh: run as root" >&2; exit 1; }
command -v tcpreplay >/dev/null || { echo "xdp_throughput.sh: tcpreplay is missing (apt-get install tcpreplay)" >&2; exit 1; }
cd "$ROOT"
[ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" >/dev/null
ninja -C "$BUILD" -j2 ebpf/xdp_front.bpf.o dataplane/app/fulcrum-dataplane dataplane/fulcrum-snapshot >/dev/null ||
  { echo "xdp_throughput.sh: build failed; is eBPF enabled in $BUILD (clang, bpftool, libbpf)?" >&2; exit 1; }
export BENCH_COMMIT="$(commit_desc)"
export FULCRUM_BUILD_DIR="$ROOT/$BUILD"
exec /usr/bin/python3 bench/xdp_throughput.py --prog "$ROOT/$BUILD/ebpf/xdp_front.bpf.o" "${ARGS[@]}"
