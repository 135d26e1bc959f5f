#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time: scripts/fuzz.sh TARGET SECONDS
#   TARGET: parse | snapshot | vrrp | admin_request | config | ctl_frame | admin_line | sync
# Builds the fuzzers with clang + ASan + UBSan into build-fuzz/ when needed. The corpus
# grows in build-fuzz/corpus-TARGET; crashes are written to build-fuzz/artifacts-TARGET/.
# The fuzz build keeps the control plane disabled: the configuration loader, the admin request
# decoder and the VRRP codec are built as libraries of their own.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-}"
seconds="${2:-}"
case "$target" in
  parse|snapshot|vrrp|admin_request|config|ctl_frame|admin_line|sync) ;;
  *) echo "usage: $0 {parse|snapshot|vrrp|admin_request|config|ctl_frame|admin_line|sync} SECONDS" >&2; exit 2 ;;
esac
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "fuzz.sh: SECONDS must be a positive integer, got '$seconds'" >&2
  exit 2
fi
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang CXX=clang++ meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined \
    -Db_lundef=false -Ddpdk=disabled -Dcontrol=disabled -Dbenchmarks=disabled >/dev/null
fi
ninja -C build-fuzz -j2 >/dev/null
corpus="build-fuzz/corpus-$target"
artifacts="build-fuzz/artifacts-$target"
mkdir -p "$corpus" "$artifacts" build-fuzz/corpus-parse build-fuzz/corpus-snapshot
build-fuzz/tests/fuzz/make-fuzz-seeds build-fuzz/corpus-parse build-fuzz/corpus-snapshot
# Checked-in seeds (tests/fuzz/corpus/TARGET) are read, never written: new inputs go to $corpus;
# a dictionary tests/fuzz/TARGET.dict is used when there is one.
extra=()
if [ -f "tests/fuzz/$target.dict" ]; then extra+=("-dict=tests/fuzz/$target.dict"); fi
if [ -d "tests/fuzz/corpus/$target" ]; then extra+=("tests/fuzz/corpus/$target"); fi
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1
exec "build-fuzz/tests/fuzz/fuzz-$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" ${extra[@]+"${extra[@]}"}
