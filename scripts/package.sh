#!/usr/bin/env bash
# Builds the Debian package of this checkout: build-deb/fulcrum_VERSION_amd64.deb.
#
#   scripts/package.sh            build it; the last line printed is the .deb's path
#   scripts/package.sh --version  print the package version only
#
# The packaging files live in scripts/debian (the repository has no top-level debian/): this
# copies the source tree (tracked and untracked files git does not ignore, so uncommitted
# changes are included) to build-deb/fulcrum, puts scripts/debian there as debian/, and runs
# dpkg-buildpackage -b -us -uc in it. The build reuses ccache (the staging path is always the
# same; meson uses ccache when it is installed) and builds only what the package installs; DEB_BUILD_OPTIONS=parallel=N sets the jobs
# (default 2). Then it runs lintian on the result and fails on any error (E:).
#
# Version: from `git describe` (tags vX.Y.Z): X.Y.Z on a tag, X.Y.Z+gitN.gHASH N commits
# after it; without a tag, meson.build's version with the commit count since the first
# commit. "+dirty" marks a build with uncommitted changes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
OUT="$ROOT/build-deb"
STAGE="$OUT/fulcrum"

die() { echo "package.sh: $*" >&2; exit 1; }

package_version() {
  local desc base count hash v
  git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 || die "$ROOT is not a git checkout: the version comes from git describe"
  hash=$(git -C "$ROOT" rev-parse --short=7 HEAD)
  if desc=$(git -C "$ROOT" describe --tags --long --match 'v[0-9]*' 2>/dev/null); then
    # v1.2.0-5-gabc1234 (the tag may itself contain hyphens: v1.2.0-rc1-5-gabc1234)
    count=${desc%-g*}; count=${count##*-}
    base=${desc%-*-g*}; base=${base#v}
  else
    base=$(sed -n "s/^[[:space:]]*version[[:space:]]*:[[:space:]]*'\([^']*\)'.*/\1/p" "$ROOT/meson.build" | head -n 1)
    [ -n "$base" ] || die "no vX.Y.Z tag and no version in meson.build's project()"
    count=$(git -C "$ROOT" rev-list --count HEAD)
  fi
  # Debian-safe: pre-releases (1.2.0-rc1) sort before the release (1.2.0~rc1); any other
  # character Debian versions do not allow becomes '.'.
  base=$(printf '%s' "$base" | sed -E 's/-(rc|alpha|beta|pre)/~\1/g; s/[^A-Za-z0-9.+~]/./g')
  v="$base"
  [ "$count" = 0 ] || v="$base+git$count.g$hash"
  [ -z "$(git -C "$ROOT" status --porcelain)" ] || v="$v+dirty"
  dpkg --validate-version "$v" >/dev/null 2>&1 || die "computed version '$v' is not a valid Debian version (from '$desc')"
  printf '%s\n' "$v"
}

if [ "${1:-}" = "--version" ]; then
  package_version
  exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [--version]"

for tool in dpkg-buildpackage dh meson ninja lintian; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-deps.sh (debhelper, meson, lintian)"
done
[ "$(dpkg-architecture -qDEB_HOST_ARCH)" = amd64 ] || die "the package is built for amd64 only (the BPF objects target x86)"

version=$(package_version)
echo "package.sh: fulcrum $version"

# Staging copy, made afresh (dpkg-buildpackage's clean step removes the build directory in it
# anyway; ccache makes the recompilation cheap, as the staging path stays the same).
# build-deb/ is ignored by git (/build*/), so it never copies itself.
rm -rf "$STAGE"
mkdir -p "$STAGE"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar -C "$ROOT" --null -T - -cf - | tar -C "$STAGE" -xf -
cp -a "$ROOT/scripts/debian" "$STAGE/debian"

# The changelog names the version built: a snapshot entry on top of scripts/debian/changelog
# unless that already describes this version (a release).
top=$(dpkg-parsechangelog -l "$ROOT/scripts/debian/changelog" -S Version)
if [ "$top" != "$version" ]; then
  signer=$(sed -n 's/^Maintainer: //p' "$ROOT/scripts/debian/control")
  if [ -n "${DEBFULLNAME:-}" ] && [ -n "${DEBEMAIL:-}" ]; then signer="$DEBFULLNAME <$DEBEMAIL>"; fi
  # Dated by the commit (the same commit gives the same changelog), but never before the
  # entry below it.
  when=$(git -C "$ROOT" log -1 --format=%ct HEAD)
  after=$(( $(dpkg-parsechangelog -l "$ROOT/scripts/debian/changelog" -S Timestamp) + 1 ))
  [ "$when" -ge "$after" ] || when=$after
  {
    printf 'fulcrum (%s) unstable; urgency=medium\n\n' "$version"
    printf '  * Snapshot of commit %s.\n\n' "$(git -C "$ROOT" rev-parse HEAD)"
    printf ' -- %s  %s\n\n' "$signer" "$(date -u -R -d "@$when")"
    cat "$ROOT/scripts/debian/changelog"
  } >"$STAGE/debian/changelog"
fi
rm -f "$OUT"/fulcrum_*.deb "$OUT"/fulcrum-dbgsym_*.deb "$OUT"/fulcrum_*.changes "$OUT"/fulcrum_*.buildinfo

export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=2}"
case " $DEB_BUILD_OPTIONS " in *" parallel="*) ;; *) DEB_BUILD_OPTIONS="$DEB_BUILD_OPTIONS parallel=2" ;; esac

log="$OUT/dpkg-buildpackage.log"
echo "package.sh: building in $STAGE (log: $log)"
if ! (cd "$STAGE" && dpkg-buildpackage -b -us -uc) >"$log" 2>&1; then
  tail -n 60 "$log" >&2
  die "dpkg-buildpackage failed; the whole log is $log"
fi

deb="$OUT/fulcrum_${version}_amd64.deb"
changes="$OUT/fulcrum_${version}_amd64.changes"
[ -f "$deb" ] || die "dpkg-buildpackage did not produce $deb (see $log)"

# lintian: errors fail the build; warnings are listed (docs/deployment.md explains them).
lintian_out=$(lintian --no-cfg "$changes" 2>&1) || true
[ -z "$lintian_out" ] || printf '%s\n' "$lintian_out" | sed 's/^/lintian: /'
if printf '%s\n' "$lintian_out" | grep -q '^E: '; then
  die "lintian found errors in $changes"
fi
echo "$deb"
