# Shared by the bench/*.sh scripts (sourced; ROOT, BUILD and NAME set).

die() { echo "$NAME: $*" >&2; exit 1; }

commit_desc() {  # "abc1234", "abc1234 (modified)" or "unknown (not a git checkout)"
  local c
  c=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) || { echo "unknown (not a git checkout)"; return; }
  git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null && echo "$c" || echo "$c (modified)"
}

# Configures $BUILD (release, DPDK, no control plane) if needed and builds the dataplane and
# the snapshot tool; sets DP and SNAPTOOL.
build_dataplane() {
  cd "$ROOT"
  if [ ! -f "$BUILD/build.ninja" ]; then
    echo "== configuring $BUILD (release, DPDK)"
    meson setup "$BUILD" --buildtype=release -Dcontrol=disabled >/dev/null
  fi
  echo "== building fulcrum-dataplane and fulcrum-snapshot in $BUILD"
  ninja -C "$BUILD" -j2 dataplane/app/fulcrum-dataplane dataplane/fulcrum-snapshot >/dev/null ||
    die "build failed (run: ninja -C $BUILD -j2 dataplane/app/fulcrum-dataplane); is DPDK enabled in $BUILD?"
  DP="$ROOT/$BUILD/dataplane/app/fulcrum-dataplane"
  SNAPTOOL="$ROOT/$BUILD/dataplane/fulcrum-snapshot"
  [ -x "$DP" ] || die "$DP missing: $BUILD was configured without DPDK (meson configure $BUILD -Ddpdk=enabled)"
}

# The DPDK benchmarks' work directory, their Python driver and the hugepages they reserve.
# A script sets WORK and WORK_KEEP (1: keep WORK), starts its driver with DRIVER=$!, calls
# reserve_hugepages N when asked to, and installs `trap bench_cleanup EXIT`.
DRIVER= HUGE_BEFORE= HUGE_MOUNTED=0 WORK_KEEP=0
bench_cleanup() {
  if [ -n "$DRIVER" ] && kill -0 "$DRIVER" 2>/dev/null; then
    kill -TERM "$DRIVER" 2>/dev/null || true
    # The driver stops its DPDK processes (up to 15 s each) before it exits.
    for _ in $(seq 1 150); do kill -0 "$DRIVER" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$DRIVER" 2>/dev/null || true
  fi
  rm -f "$WORK"/*.sock
  [ "$WORK_KEEP" = 1 ] || rm -rf "$WORK"
  if [ -n "$HUGE_BEFORE" ]; then echo "$HUGE_BEFORE" >/proc/sys/vm/nr_hugepages || true; fi
  if [ "$HUGE_MOUNTED" = 1 ]; then umount /dev/hugepages 2>/dev/null || true; fi
}

reserve_hugepages() {  # N: at least N free 2 MiB pages; bench_cleanup gives them back
  local want=$1
  [ "$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)" -ge "$want" ] && return 0
  HUGE_BEFORE=$(cat /proc/sys/vm/nr_hugepages)
  mountpoint -q /dev/hugepages || HUGE_MOUNTED=1
  "$ROOT/scripts/hugepages.sh" $((HUGE_BEFORE + want)) >/dev/null
  [ "$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)" -ge "$want" ] || die "could not reserve $want free 2 MiB hugepages"
}
