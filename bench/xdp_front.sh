#!/usr/bin/env bash
# Nanoseconds per packet of the XDP front program for each of its verdicts, measured by the
# kernel's BPF_PROG_TEST_RUN (the JITed program run REPEAT times on one frame; the median of
# RUNS runs). Needs root, clang, bpftool and a mounted bpffs; prints a Markdown table.
#
#   bench/xdp_front.sh [--repeat N] [--runs R] [--acl-rules K] [--build-dir DIR]
#
# Defaults: 1,000,000 repeats, 5 runs, 1000 IPv4 ACL rules, build dir `build` (configured
# with eBPF enabled). Details and the cases: bench/xdp_front.py.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=xdp_front.sh
BUILD=build
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD=$2; shift 2 ;;
    --repeat|--runs|--acl-rules) ARGS+=("$1" "$2"); shift 2 ;;
    *) echo "$NAME: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
source "$ROOT/bench/lib.sh"

[ "$(id -u)" = 0 ] || die "needs root (loading BPF programs)"
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || die "no bpffs at /sys/fs/bpf"
cd "$ROOT"
[ -f "$BUILD/build.ninja" ] || die "$BUILD is not configured (meson setup $BUILD)"
ninja -C "$BUILD" -j2 ebpf/xdp_front.bpf.o >/dev/null ||
  die "building $BUILD/ebpf/xdp_front.bpf.o failed; is eBPF enabled in $BUILD (clang, bpftool, libbpf)?"
echo "# commit $(commit_desc)"
/usr/bin/python3 "$ROOT/bench/xdp_front.py" --object "$ROOT/$BUILD/ebpf/xdp_front.bpf.o" "${ARGS[@]}"
