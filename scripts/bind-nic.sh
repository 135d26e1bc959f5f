#!/usr/bin/env bash
# Binds a NIC to vfio-pci for the DPDK dataplane, or gives it back to its kernel driver.
#   scripts/bind-nic.sh PCI_ADDRESS             bind to vfio-pci (e.g. 0000:01:00.0)
#   scripts/bind-nic.sh --unbind PCI_ADDRESS DRIVER   back to DRIVER (e.g. ixgbe, i40e, mlx5_core)
#   scripts/bind-nic.sh --status
# Binding removes the interface from the kernel: do not bind the NIC you are logged in through.
# Mellanox/NVIDIA (mlx5) NICs stay on their kernel driver: DPDK drives them through it.
set -euo pipefail
devbind=$(command -v dpdk-devbind.py || true)
[ -n "$devbind" ] || { echo "bind-nic.sh: dpdk-devbind.py not found (apt install dpdk)" >&2; exit 1; }
case "${1:-}" in
  --status) exec "$devbind" --status-dev net ;;
  --unbind)
    [ $# -eq 3 ] || { echo "usage: $0 --unbind PCI_ADDRESS DRIVER" >&2; exit 2; }
    exec "$devbind" -b "$3" "$2" ;;
  ""|-h|--help) sed -n '2,7p' "$0"; exit 2 ;;
esac
pci="$1"
[ "$(id -u)" -eq 0 ] || { echo "bind-nic.sh: run as root" >&2; exit 1; }
if ! [ -e "/sys/bus/pci/devices/$pci" ]; then
  echo "bind-nic.sh: no PCI device $pci; see: $0 --status" >&2
  exit 1
fi
# Refuse to take away an interface that carries a route (likely the management link).
for net in /sys/bus/pci/devices/"$pci"/net/*; do
  [ -e "$net" ] || continue
  ifc=$(basename "$net")
  if ip route show dev "$ifc" 2>/dev/null | grep -q .; then
    echo "bind-nic.sh: $ifc ($pci) has routes; unbinding it would cut that traffic. Remove its addresses first." >&2
    exit 1
  fi
  ip link set "$ifc" down || true
done
modprobe vfio-pci
if [ ! -e /sys/kernel/iommu_groups/0 ]; then
  echo "bind-nic.sh: no IOMMU groups: enable VT-d/AMD-Vi and boot with intel_iommu=on iommu=pt" >&2
  exit 1
fi
"$devbind" -b vfio-pci "$pci"
"$devbind" --status-dev net | grep -F "$pci"
