#!/usr/bin/env bash
# Fulcrum demo: the balancer, then an active-passive pair failing over, on a virtual topology
# with real servers and traffic, about 90 s. Builds what is missing, then runs scripts/demo.py, which removes everything it made
# (namespaces, links, processes), also on Ctrl-C or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root (it creates network namespaces)" >&2
  exit 1
fi
scripts/install-deps.sh
if [ ! -f build/build.ninja ]; then
  meson setup build >/dev/null
fi
echo "== building (ninja -C build -j2)"
ninja -C build -j2 dataplane/app/fulcrum-dataplane control/fulcrumd control/fulcrumctl >/dev/null
exec /usr/bin/python3 scripts/demo.py "$@"
