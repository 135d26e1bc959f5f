#!/usr/bin/env bash
# Runs every Fulcrum test suite and ends with one line: "N passed, N failed, N skipped".
# Installs what is missing, builds into build/ (ninja -j2), exits non-zero on any failure.
#
#   scripts/test.sh            all suites
#   FULCRUM_FUZZ_SECONDS=N     time per fuzz target (default 30)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
RESULTS="$ROOT/build/test-results"
FUZZ_SECONDS="${FULCRUM_FUZZ_SECONDS:-30}"
PY=/usr/bin/python3

die_early() {
  echo "test.sh: $*" >&2
  echo "0 passed, 1 failed, 0 skipped"
  exit 1
}

# A JUnit file with one test case, for suites that are a single command.
record() {  # record SUITE NAME STATUS(pass|fail|skip) [MESSAGE]
  local suite="$1" name="$2" status="$3" msg="${4:-}"
  msg="${msg//&/&amp;}"; msg="${msg//</&lt;}"; msg="${msg//\"/&quot;}"
  local body=""
  case "$status" in
    fail) body="<failure message=\"$msg\"/>" ;;
    skip) body="<skipped message=\"$msg\"/>" ;;
  esac
  cat >"$RESULTS/$suite.xml" <<XML
<?xml version="1.0"?>
<testsuites><testsuite name="$suite"><testcase classname="$suite" name="$name">$body</testcase></testsuite></testsuites>
XML
}

# Runs a command that writes JUnit XML to $RESULTS/SUITE.xml; a crash without results counts
# as one failure.
run_junit() {  # run_junit SUITE TIMEOUT_SECONDS CMD...
  local suite="$1" limit="$2"
  shift 2
  echo "== $suite"
  local start=$SECONDS
  timeout --kill-after=30 "$limit" "$@" >"$RESULTS/$suite.log" 2>&1
  local rc=$?
  echo "   exit $rc in $((SECONDS - start)) s (log: build/test-results/$suite.log)"
  if [ ! -s "$RESULTS/$suite.xml" ]; then
    tail -n 30 "$RESULTS/$suite.log"
    record "$suite" "$suite" fail "exited with $rc before writing results"
  elif [ $rc -ne 0 ] && ! grep -q "<failure" "$RESULTS/$suite.xml"; then
    tail -n 30 "$RESULTS/$suite.log"
    mv "$RESULTS/$suite.xml" "$RESULTS/$suite.partial"
    record "$suite" "$suite" fail "exited with $rc (timeout or crash after results)"
  fi
}

echo "== install dependencies"
scripts/install-deps.sh || die_early "scripts/install-deps.sh failed"

echo "== build (build/)"
if [ ! -f build/build.ninja ]; then
  meson setup build -Dwerror=true >/dev/null || die_early "meson setup build failed"
fi
ninja -C build -j2 >build/ninja.log 2>&1 || { tail -n 60 build/ninja.log; die_early "build failed"; }
rm -rf "$RESULTS"
mkdir -p "$RESULTS"

# 1. Core library unit tests.
run_junit unit 900 build/tests/unit-tests --gtest_output="xml:$RESULTS/unit.xml"

# 2. The same tests under AddressSanitizer + UndefinedBehaviorSanitizer (core only).
echo "== build (build-asan/)"
if [ ! -f build-asan/build.ninja ]; then
  meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Ddpdk=disabled \
    -Dcontrol=disabled -Dbenchmarks=disabled >/dev/null || die_early "meson setup build-asan failed"
fi
if ninja -C build-asan -j2 tests/unit-tests >build-asan/ninja.log 2>&1; then
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    run_junit unit-asan 1800 build-asan/tests/unit-tests --gtest_output="xml:$RESULTS/unit-asan.xml"
else
  tail -n 40 build-asan/ninja.log
  record unit-asan build fail "sanitizer build failed"
fi

# 3. The real dataplane on virtual devices: in process on net_ring, then the binary on pcap,
#    af_packet + TAP in network namespaces (pytest + scapy from Debian's packages).
if [ -x build/tests/dp-live-update ]; then
  run_junit dp-live 600 build/tests/dp-live-update --gtest_output="xml:$RESULTS/dp-live.xml"
  run_junit dp 1800 $PY -m pytest tests/dp -q -p no:cacheprovider --junitxml="$RESULTS/dp.xml"
else
  record dp dataplane skip "DPDK not found: the dataplane was not built"
fi

# 4. Control plane: configuration, health checks, neighbour resolution, publishing, admin API
#    (the neighbour tests enter a network namespace of their own).
if [ -x build/tests/control-tests ]; then
  run_junit control 900 build/tests/control-tests --gtest_output="xml:$RESULTS/control.xml"
else
  record control control-plane skip "a control-plane dependency is missing: fulcrumd was not built"
fi

# 4b. eBPF programs through BPF_PROG_TEST_RUN (the XDP front; the servers' decap program).
if [ -x build/tests/bpf-tests ]; then
  run_junit bpf 600 build/tests/bpf-tests --gtest_output="xml:$RESULTS/bpf.xml"
else
  record bpf ebpf skip "clang, bpftool or libbpf is missing: the eBPF programs were not built"
fi

# 5. End to end: clients, balancer (dataplane + fulcrumd) and servers in network namespaces.
if [ -x build/control/fulcrumd ] && [ -x build/dataplane/app/fulcrum-dataplane ]; then
  run_junit e2e 2400 $PY -m pytest tests/e2e -q -p no:cacheprovider --junitxml="$RESULTS/e2e.xml"
else
  record e2e end-to-end skip "fulcrumd or fulcrum-dataplane was not built"
fi

# 5b. Operations: the package, systemd units, man pages, completion and monitoring assets
#     checked against the built binaries and their metrics (tests/ops).
if [ -x build/control/fulcrumd ]; then
  run_junit ops 1800 $PY -m pytest tests/ops -q -p no:cacheprovider --junitxml="$RESULTS/ops.xml"
else
  record ops operations skip "fulcrumd was not built"
fi

# 5c. The benchmark scripts' own logic on recorded tool output (tests/bench).
run_junit bench-scripts 300 $PY -m pytest tests/bench -q -p no:cacheprovider --junitxml="$RESULTS/bench-scripts.xml"

# 6. Benchmarks still run (not timed: a short smoke run of each kind, figures ignored).
if [ -x build/bench/core-bench ]; then
  echo "== bench-core (smoke)"
  if timeout --kill-after=30 600 build/bench/core-bench --benchmark_min_time=0.01 \
       --benchmark_filter='^(Parse/ipv4_tcp|Pipeline/established_dsr|Pipeline/established_dsr_table32k|Pipeline/unique_syn)$' \
       >"$RESULTS/bench-core.log" 2>&1 && [ "$(grep -cE '^Pipeline/.* fwd=1 ' "$RESULTS/bench-core.log")" = 3 ] &&
     grep -qE '^Pipeline/established_dsr_table32k .* table_mib=1\.76599' "$RESULTS/bench-core.log"; then
    record bench-core "core-bench runs and forwards" pass
  else
    tail -n 30 "$RESULTS/bench-core.log"
    record bench-core "core-bench runs and forwards" fail "core-bench failed (log: build/test-results/bench-core.log)"
  fi
fi
if [ "$(id -u)" != 0 ] || [ "$(nproc)" -lt 2 ]; then
  record bench-throughput "throughput.sh runs both DUTs" skip "needs root and 2 CPUs"
elif [ -x build/dataplane/app/fulcrum-dataplane ] && command -v dpdk-testpmd >/dev/null; then
  echo "== bench-throughput (smoke: bench/throughput.sh --quick, one case)"
  if timeout --kill-after=30 900 bench/throughput.sh --quick --cases established_dsr --build-dir build \
       >"$RESULTS/bench-throughput.log" 2>&1 &&
     grep -Eq '^established_dsr +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+$' "$RESULTS/bench-throughput.log"; then
    record bench-throughput "throughput.sh runs both DUTs" pass
  else
    tail -n 30 "$RESULTS/bench-throughput.log"
    record bench-throughput "throughput.sh runs both DUTs" fail "bench/throughput.sh --quick failed (log: build/test-results/bench-throughput.log)"
  fi
fi
PKTGEN_BIN=${PKTGEN:-$(command -v pktgen || true)}
if [ -z "$PKTGEN_BIN" ] || [ ! -x "$PKTGEN_BIN" ]; then
  record bench-pktgen "pktgen.sh smoke" skip "no pktgen binary (PKTGEN=... or PATH); see docs/benchmarks.md"
elif [ "$(id -u)" != 0 ] || [ "$(nproc)" -lt 2 ]; then
  record bench-pktgen "pktgen.sh smoke" skip "needs root and 2 CPUs"
elif [ -x build/dataplane/app/fulcrum-dataplane ] && command -v dpdk-testpmd >/dev/null; then
  echo "== bench-pktgen (smoke: bench/pktgen.sh --quick with $PKTGEN_BIN)"
  # Passes when traffic went through the dataplane and back (a trial received packets) and
  # the summary was written; the figures themselves are not checked.
  if PKTGEN="$PKTGEN_BIN" timeout --kill-after=30 600 bench/pktgen.sh --quick --build-dir build \
       >"$RESULTS/bench-pktgen.log" 2>&1 &&
     grep -Eq '^ +trial .* rx [1-9][0-9]* ' "$RESULTS/bench-pktgen.log" &&
     grep -Eq '^tcp4 +64 B +fulcrum [0-9.]+' "$RESULTS/bench-pktgen.log"; then
    record bench-pktgen "pktgen.sh smoke" pass
  else
    tail -n 30 "$RESULTS/bench-pktgen.log"
    record bench-pktgen "pktgen.sh smoke" fail "bench/pktgen.sh --quick failed (log: build/test-results/bench-pktgen.log)"
  fi
fi

# 7. Fuzzers, each for a bounded time.
for target in parse snapshot config vrrp admin_request ctl_frame admin_line sync; do
  echo "== fuzz-$target (${FUZZ_SECONDS}s)"
  if timeout --kill-after=30 $((FUZZ_SECONDS + 600)) scripts/fuzz.sh "$target" "$FUZZ_SECONDS" \
       >"$RESULTS/fuzz-$target.log" 2>&1; then
    record "fuzz-$target" "no crash in ${FUZZ_SECONDS}s" pass
  else
    tail -n 30 "$RESULTS/fuzz-$target.log"
    record "fuzz-$target" "no crash in ${FUZZ_SECONDS}s" fail "fuzzer found a crash or failed to build"
  fi
done

echo "== summary"
$PY scripts/summarize.py "$RESULTS"
