#!/usr/bin/env bash
# Prepares this host for one Fulcrum balancer on one kernel interface driven through DPDK's
# net_af_packet (default) or net_af_xdp, writes a starter configuration, and prints the
# commands to start fulcrum-dataplane and fulcrumd (docs/deployment.md, "Quick start").
#
#   scripts/setup-host.sh --interface IF --vip ADDR --server ADDR [--server ADDR ...]
#                         --host-address ADDR/LEN [options]
#   scripts/setup-host.sh --interface IF --undo [--run-dir DIR]
#
# Options:
#   --interface IF        the uplink (required); no other interface is touched
#   --vip ADDR            the service's virtual IP (config only)
#   --port N              the service's port (default 80)
#   --protocol tcp|udp    (default tcp)
#   --server ADDR         a DSR server on IF's segment; repeat for each server
#   --host-address A/LEN  this host's address; fulcrumd keeps it (and the VIP) on fl0
#   --config PATH         configuration to write if absent (default /etc/fulcrum/fulcrum.yaml)
#   --run-dir DIR         sockets and this script's state (default /run/fulcrum)
#   --hugepages N         reserve N 2 MiB pages per NUMA node if fewer are reserved (default 512)
#   --no-huge             reserve none; the dataplane then runs with --no-huge -m 512
#   --af-xdp              print a net_af_xdp command (DPDK's own XDP program takes all traffic
#                         of the interface's queues, so no nftables drop is installed)
#   --undo                remove what an earlier run added (nftables table, promisc, IPv6
#                         and offload settings, as they were before); the config file stays
#   --dry-run             print the commands that would change something, change nothing
#
# Running it twice changes nothing the second time. Run it in a namespace with
# `ip netns exec NS scripts/setup-host.sh ...`.
set -euo pipefail

prog=setup-host.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "$prog: $*" >&2; exit 1; }
usage() { sed -n '2,28p' "$0" >&2; exit 2; }

iface="" vip="" port=80 protocol=tcp host_address="" config=/etc/fulcrum/fulcrum.yaml
run_dir=/run/fulcrum hugepages=512 no_huge=0 af_xdp=0 undo=0 dry_run=0
servers=()
need_arg() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi; }
while [ $# -gt 0 ]; do
  case "$1" in
    --interface) need_arg "$@"; iface="$2"; shift 2 ;;
    --vip) need_arg "$@"; vip="$2"; shift 2 ;;
    --port) need_arg "$@"; port="$2"; shift 2 ;;
    --protocol) need_arg "$@"; protocol="$2"; shift 2 ;;
    --server) need_arg "$@"; servers+=("$2"); shift 2 ;;
    --host-address) need_arg "$@"; host_address="$2"; shift 2 ;;
    --config) need_arg "$@"; config="$2"; shift 2 ;;
    --run-dir) need_arg "$@"; run_dir="$2"; shift 2 ;;
    --hugepages) need_arg "$@"; hugepages="$2"; shift 2 ;;
    --no-huge) no_huge=1; shift ;;
    --af-xdp) af_xdp=1; shift ;;
    --undo) undo=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

# ---- checks -------------------------------------------------------------------------------
[ -n "$iface" ] || die "--interface is required: the kernel interface the dataplane will drive (e.g. --interface eth1)"
[ "$(id -u)" -eq 0 ] || [ "$dry_run" -eq 1 ] || die "run as root (it changes $iface, nftables and sysctls), or add --dry-run to see the commands"
[ -e "/sys/class/net/$iface" ] || die "no interface '$iface' in this network namespace; 'ip -br link' lists them"
case "$iface" in fl0) die "$iface is the dataplane's exception TAP; name the uplink it drives instead" ;; esac
for tool in ip nft sysctl; do
  command -v "$tool" >/dev/null || die "'$tool' not found; install it (apt install iproute2 nftables procps)"
done
state="$run_dir/setup-host.$iface.state"

# Runs a command that changes something, or only prints it with --dry-run.
changed=0
act() {
  changed=1
  if [ "$dry_run" -eq 1 ]; then
    printf '  %s\n' "$*"
  else
    printf '  + %s\n' "$*"
    "$@"
  fi
}

link_flag() { ip -o link show dev "$iface" | grep -q "[<,]$1[,>]"; }
ipv6_file="/proc/sys/net/ipv6/conf/$iface/disable_ipv6"
ipv6_disabled() { [ ! -e "$ipv6_file" ] || [ "$(cat "$ipv6_file")" = 1 ]; }
# ethtool feature state: on | off | "" (no ethtool, or the feature is fixed / unknown).
feature() {
  command -v ethtool >/dev/null || return 0
  ethtool -k "$iface" 2>/dev/null | awk -v f="$1:" '$1 == f && $3 != "[fixed]" {print $2}'
}
# The one chain this script installs, and the device it is bound to (empty if none).
nft_chain_device() {
  nft list chain netdev fulcrum uplink 2>/dev/null | grep -oE 'devices? (= \{ )?"[^"]+"' | cut -d'"' -f2 | head -n1 || true
}

# ---- undo ---------------------------------------------------------------------------------
if [ "$undo" -eq 1 ]; then
  echo "$prog: undoing the setup of $iface"
  dev=$(nft_chain_device)
  if [ -n "$dev" ] && [ "$dev" != "$iface" ]; then
    echo "  nft table netdev fulcrum belongs to $dev, not $iface: left alone"
  elif nft list table netdev fulcrum >/dev/null 2>&1; then
    act nft delete table netdev fulcrum
  fi
  # What was there before the first run (written by it); without the file, the defaults.
  was_promisc=0 was_ipv6_disabled=0 was_gro="" was_lro=""
  if [ -f "$state" ]; then
    # shellcheck disable=SC1090
    . "$state"
  else
    echo "  no state file $state: restoring the kernel defaults (promisc off, IPv6 on)"
  fi
  if [ "$was_promisc" = 0 ] && link_flag PROMISC; then act ip link set "$iface" promisc off; fi
  if [ "$was_ipv6_disabled" = 0 ] && ipv6_disabled && [ -e "$ipv6_file" ]; then
    act sysctl -q -w "net.ipv6.conf.$iface.disable_ipv6=0"
  fi
  if [ "$was_gro" = on ] && [ "$(feature generic-receive-offload)" = off ]; then act ethtool -K "$iface" gro on; fi
  if [ "$was_lro" = on ] && [ "$(feature large-receive-offload)" = off ]; then act ethtool -K "$iface" lro on; fi
  if [ -f "$state" ]; then act rm -f "$state"; fi
  [ "$changed" -eq 1 ] || echo "  nothing to undo"
  [ -f "$config" ] && echo "  $config is kept (remove it yourself if you no longer want it)"
  exit 0
fi

# ---- arguments of the configuration -------------------------------------------------------
if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
  die "--port $port: give a port from 1 to 65535"
fi
case "$protocol" in tcp|udp) ;; *) die "--protocol $protocol: give tcp or udp" ;; esac
[[ "$hugepages" =~ ^[0-9]+$ ]] || die "--hugepages $hugepages: give a number of 2 MiB pages (or --no-huge)"
if [ ! -e "$config" ]; then
  [ -n "$vip" ] || die "--vip is required to write $config (it does not exist yet)"
  [ "${#servers[@]}" -gt 0 ] || die "give at least one --server to write $config (it does not exist yet)"
  [ -n "$host_address" ] || die "--host-address ADDR/LEN is required to write $config: the address this host keeps on fl0 (e.g. the one $iface had)"
  [[ "$host_address" == */* ]] || die "--host-address $host_address: add the prefix length (e.g. $host_address/24)"
fi

# The kernel would keep answering for addresses on the uplink (or lose them to the drop below,
# cutting e.g. an SSH session over it): they belong on fl0, which fulcrumd keeps.
addrs=$(ip -o addr show dev "$iface" scope global | awk '{print $4}' | tr '\n' ' ')
if [ -n "$addrs" ] && [ "$af_xdp" -eq 0 ] && ! nft list table netdev fulcrum >/dev/null 2>&1; then
  die "$iface still has the address(es) ${addrs% }: once the dataplane drives it, the kernel no longer sees its traffic (an SSH session over $iface would be cut). Give the host address to --host-address (fulcrumd puts it on fl0), remove them from a console or another interface (ip addr flush dev $iface scope global) and run this again"
fi
dev=$(nft_chain_device)
if [ -n "$dev" ] && [ "$dev" != "$iface" ]; then
  die "nftables chain netdev fulcrum uplink already drops ingress on $dev: this sets up one balancer on one interface; run '$prog --interface $dev --undo' first"
fi

echo "$prog: preparing $iface for fulcrum-dataplane ($([ "$af_xdp" -eq 1 ] && echo net_af_xdp || echo net_af_packet))$([ "$dry_run" -eq 1 ] && echo ', dry run: commands that would run')"

# ---- remember what was there (first run only), for --undo ---------------------------------
if [ ! -f "$state" ]; then
  was_promisc=0; link_flag PROMISC && was_promisc=1
  was_ipv6_disabled=0; ipv6_disabled && was_ipv6_disabled=1
  content="was_promisc=$was_promisc
was_ipv6_disabled=$was_ipv6_disabled
was_gro=$(feature generic-receive-offload)
was_lro=$(feature large-receive-offload)"
  [ -d "$run_dir" ] || act mkdir -p "$run_dir"
  if [ "$dry_run" -eq 1 ]; then
    printf '  (record the current settings of %s in %s)\n' "$iface" "$state"
  else
    printf '%s\n' "$content" >"$state"
  fi
fi

# ---- hugepages ----------------------------------------------------------------------------
if [ "$no_huge" -eq 0 ]; then
  total=$(awk '/HugePages_Total/ {print $2}' /proc/meminfo)
  if [ "${total:-0}" -lt "$hugepages" ]; then
    act "$here/hugepages.sh" "$hugepages"
  fi
fi

# ---- the uplink ---------------------------------------------------------------------------
link_flag UP || act ip link set "$iface" up
link_flag PROMISC || act ip link set "$iface" promisc on
# No IPv6 autoconfiguration or link-local address on the uplink: the host's IPv6 lives on fl0.
ipv6_disabled || act sysctl -q -w "net.ipv6.conf.$iface.disable_ipv6=1"
# A packet socket sees frames after GRO/LRO: merged super-frames would reach the dataplane.
[ "$(feature generic-receive-offload)" != on ] || act ethtool -K "$iface" gro off
[ "$(feature large-receive-offload)" != on ] || act ethtool -K "$iface" lro off
if [ "$af_xdp" -eq 0 ] && [ -z "$(nft_chain_device)" ]; then
  # Hide the uplink's frames from the kernel's stack (it would answer ARP and reset TCP for
  # the VIPs); packet sockets see frames before the netdev ingress hook.
  act nft add table netdev fulcrum
  act nft add chain netdev fulcrum uplink "{ type filter hook ingress device $iface priority 0; policy drop; }"
fi
[ "$changed" -eq 1 ] || echo "  $iface is already prepared: nothing to change"
if command -v ethtool >/dev/null && ethtool -i "$iface" 2>/dev/null | grep -q '^driver: veth$'; then
  echo "  note: $iface is a veth: hosts sending into this segment from veth/bridge links need 'ethtool -K IF tx off' on their side (their partially checksummed frames would reach the servers unfinished)"
fi

# ---- the starter configuration ------------------------------------------------------------
if [ -e "$config" ]; then
  echo "  $config exists: left as it is"
else
  srv=""
  for s in "${servers[@]}"; do srv+="
      - address: $s"; done
  body="# Written by scripts/setup-host.sh: one DSR service. Edit freely; it is never overwritten.
# Reference: docs/configuration.md. Check with: fulcrumd --check $config
dataplane:
  control_socket: $run_dir/dataplane.sock
admin:
  socket: $run_dir/admin.sock
# fulcrumd keeps the host address and the VIPs on fl0, also across dataplane restarts.
interface:
  name: fl0
  addresses: [$host_address]
services:
  - name: web
    vip: $vip
    port: $port
    protocol: $protocol
    servers:$srv"
  [ -d "$(dirname "$config")" ] || act mkdir -p "$(dirname "$config")"
  if [ "$dry_run" -eq 1 ]; then
    printf '  (write %s:)\n%s\n' "$config" "$body"
  else
    printf '%s\n' "$body" >"$config"
    echo "  wrote $config"
  fi
fi

# ---- what to run next ---------------------------------------------------------------------
eal="--no-pci --file-prefix fulcrum"
[ "$no_huge" -eq 0 ] || eal="--no-pci --no-huge -m 512 --file-prefix fulcrum"
if [ "$af_xdp" -eq 1 ]; then
  queues=1
  if command -v ethtool >/dev/null; then
    q=$(ethtool -l "$iface" 2>/dev/null | awk '/Current hardware settings/ {c=1} c && /^Combined:/ {print $2; exit}')
    [[ "${q:-}" =~ ^[1-9][0-9]*$ ]] && queues=$q
  fi
  vdev="net_af_xdp0,iface=$iface,start_queue=0,queue_count=$queues"
  uplink=net_af_xdp0
  lcores="0-$queues"
else
  vdev="net_af_packet0,iface=$iface,qpairs=1"
  uplink=net_af_packet0
  lcores="0-1"
fi
cat <<EOF

Next, as root, each in its own terminal or service:
  fulcrum-dataplane -l $lcores $eal --vdev $vdev -- \\
      --uplink $uplink --exception fl0 --control-socket $run_dir/dataplane.sock
  fulcrumd --config $config
Then: fulcrumctl$([ "$run_dir" = /run/fulcrum ] || echo " --socket $run_dir/admin.sock") servers
EOF
if [ "$af_xdp" -eq 1 ]; then
  echo "(net_af_xdp: one worker per queue of $iface, $queues queue(s): -l 0-$queues)"
fi
