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
