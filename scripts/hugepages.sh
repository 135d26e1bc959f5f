#!/usr/bin/env bash
# Reserves 2 MiB hugepages for DPDK and mounts hugetlbfs (bare metal).
#   scripts/hugepages.sh [COUNT]     default 1024 pages (2 GiB), on every NUMA node
#   scripts/hugepages.sh --status
# Tests and CI do not need this: they run DPDK with --no-huge.
set -euo pipefail
if [ "${1:-}" = "--status" ]; then
  grep -E 'HugePages_(Total|Free)|Hugepagesize' /proc/meminfo
  mount -t hugetlbfs 2>/dev/null || true
  exit 0
fi
count="${1:-1024}"
if ! [[ "$count" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 [COUNT] | --status   (COUNT of 2 MiB pages per NUMA node)" >&2
  exit 2
fi
[ "$(id -u)" -eq 0 ] || { echo "hugepages.sh: run as root" >&2; exit 1; }
nodes=(/sys/devices/system/node/node*)
if [ -e "${nodes[0]}" ]; then
  for n in "${nodes[@]}"; do
    f="$n/hugepages/hugepages-2048kB/nr_hugepages"
    [ -w "$f" ] && echo "$count" >"$f"
  done
else
  echo "$count" >/proc/sys/vm/nr_hugepages
fi
mkdir -p /dev/hugepages
mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages
got=$(awk '/HugePages_Total/ {print $2}' /proc/meminfo)
echo "hugepages: $got pages of 2 MiB reserved, hugetlbfs on /dev/hugepages"
if [ "$got" -lt "$count" ]; then
  echo "hugepages: fewer pages than asked ($got < $count): memory is fragmented; reserve at boot (hugepages=$count on the kernel command line)" >&2
fi
