// XdpFront in a build without the eBPF programs (meson option ebpf disabled, or clang,
// bpftool or libbpf missing): there is no front program to fill, so an `xdp:` section is
// refused when fulcrumd starts. No XdpFront object can exist in such a build.
#include <stdexcept>

#include "fulcrum/control/xdp_front.hpp"

namespace fulcrum::control {

struct XdpFront::Impl {};

XdpFront::XdpFront(std::string interface) {
    throw std::runtime_error(
        "xdp: this fulcrumd was built without the eBPF programs, so it cannot fill the XDP "
        "front on " +
        interface +
        " (build with meson -Debpf=enabled: clang, bpftool and "
        "libbpf); remove the 'xdp:' section or use a build with them");
}

XdpFront::~XdpFront() = default;
void XdpFront::set_desired(XdpDesired) {}
bool XdpFront::sync() {
    return false;
}
XdpStatus XdpFront::status(bool) const {
    return {};
}

}  // namespace fulcrum::control
