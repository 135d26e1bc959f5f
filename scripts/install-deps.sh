#!/usr/bin/env bash
# Install everything Fulcrum needs to build, test, benchmark and demo.
# Idempotent and quiet: apt packages only; `apt-get update` runs once, only
# when something is missing and the package lists cannot provide it.
set -euo pipefail

PKGS=(
  # build
  build-essential meson ninja-build pkg-config clang llvm lld
  libclang-rt-14-dev
  # dataplane
  dpdk dpdk-dev libdpdk-dev libpcap-dev libnuma-dev libhwloc-dev
  # eBPF
  libbpf-dev libxdp-dev xdp-tools bpftool libelf-dev zlib1g-dev gcc-multilib
  # control plane
  libyaml-cpp-dev prometheus-cpp-dev libcurl4-openssl-dev libcli11-dev
  libspdlog-dev libfmt-dev libnl-3-dev libnl-route-3-dev libssl-dev nlohmann-json3-dev
  # tests, benchmarks, demo
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  python3-scapy python3-pytest iproute2 iputils-ping curl
  procps psmisc util-linux tcpdump tshark tcpreplay wrk valgrind nftables ethtool
  keepalived haproxy
  # operations: packaging, man pages, monitoring (Prometheus rules, dashboard picture)
  debhelper lintian scdoc bash-completion prometheus python3-matplotlib
  systemd   # systemd-analyze verify of the units; a build dependency of the package
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer no without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections 2>/dev/null || true

install() {
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/fulcrum-apt.log 2>&1
}
if ! install; then
  $SUDO apt-get update -qq >/dev/null 2>&1
  if ! install; then
    echo "install-deps: apt-get install failed for: ${missing[*]}" >&2
    tail -n 20 /tmp/fulcrum-apt.log >&2
    exit 1
  fi
fi
# keepalived, haproxy and prometheus are started by tests on their own, never as services.
for svc in keepalived haproxy prometheus; do
  if command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done
exit 0
