#!/usr/bin/env bash
# Fails if the core library includes DPDK or libbpf headers. Run by the build (meson
# custom target) so a forbidden include breaks the build, whatever the include paths.
set -euo pipefail
core="$1"
stamp="$2"
bad=$(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]((dpdk/)?rte_|(bpf|xdp)/|libbpf|libxdp|linux/bpf)' \
      "$core" --include='*.h' --include='*.hpp' --include='*.cpp' --include='*.c' || true)
if [ -n "$bad" ]; then
  echo "dataplane/core must stay free of DPDK and libbpf; these includes are not allowed there:" >&2
  echo "$bad" >&2
  echo "Move the code to dataplane/dpdk or ebpf/, or use a core abstraction." >&2
  exit 1
fi
touch "$stamp"
