"""Edge filtering through the real dataplane (docs/architecture.md, "Edge filtering"): VIP
traffic that no host sends (TTL 0, martian or VIP sources, impossible TCP flags, malformed
IPv4 options, ICMP MTUs below the minimum) is dropped and counted under its reason; no ICMP
leaves toward a broadcast, multicast, loopback, unspecified or own address, nor in answer to a
link-layer broadcast; and every frame counts exactly once, with and without an exception
port."""
import ipaddress
import socket
import struct

import pytest
from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, ICMPv6EchoRequest, ICMPv6PacketTooBig, IPv6, Raw, raw
from scapy.utils import checksum

import fulcrumlab
from pcaputil import counter_balance, run_pcap

OWN = "02:70:63:61:70:00"  # the net_pcap port's MAC
CLIENT_MAC = "02:00:00:00:00:c1"
CLIENT4, CLIENT6 = "198.18.0.7", "2001:db8::7"
VIP4, TUNNEL4 = "198.18.1.1", "198.18.1.2"
VIP6, TUNNEL6 = "2001:db8:1::1", "2001:db8:1::2"
VIPS = {VIP4, TUNNEL4, VIP6, TUNNEL6}
SERVER_MAC_PREFIX = "02:00:00:00:02:"


def spec():
    def servers(slot, addr):
        return [{"slot": slot, "address": addr, "mac": f"{SERVER_MAC_PREFIX}{slot:02x}"}]
    return {"generation": 1, "encap": {"source_v4": "198.18.255.0/24", "source_v6": "2001:db8:ffff::/64"},
            "services": [
                {"id": 1, "name": "web", "vip": VIP4, "port": 80, "table_size": 251,
                 "servers": servers(0, "198.18.2.1")},
                {"id": 2, "name": "tunnel", "vip": TUNNEL4, "port": 80, "forwarding": "ipip",
                 "table_size": 251, "servers": servers(1, "198.18.3.1")},
                {"id": 3, "name": "web6", "vip": VIP6, "port": 80, "table_size": 251,
                 "servers": servers(2, "2001:db8:2::1")},
                {"id": 4, "name": "tunnel6", "vip": TUNNEL6, "port": 80, "forwarding": "ipip",
                 "table_size": 251, "servers": servers(3, "2001:db8:3::1")}]}


def eth(l3, dst=OWN):
    return Ether(src=CLIENT_MAC, dst=dst) / l3


def ip_of(addr, **kw):
    return IPv6(src=addr, dst=kw.pop("dst"), **kw) if ":" in addr else IP(src=addr, **kw)


def syn(src, dst=None, flags="S", **kw):
    dst = dst or (VIP6 if ":" in src else VIP4)
    return eth(ip_of(src, dst=dst, **kw) / TCP(sport=40000, dport=80, flags=flags))


def echo(src, dst=None, l2=OWN):
    if ":" in src:
        return eth(IPv6(src=src, dst=dst or VIP6) / ICMPv6EchoRequest(id=7, seq=1, data=b"e" * 32), l2)
    return eth(IP(src=src, dst=dst or VIP4) / ICMP(id=7, seq=1) / Raw(b"e" * 32), l2)


def too_big(src, l2=OWN):
    """A DF packet that no longer fits once encapsulated: it draws an ICMP too-big answer."""
    if ":" in src:
        return eth(IPv6(src=src, dst=TUNNEL6) / TCP(sport=40001, dport=80, flags="A") / Raw(b"b" * 1440), l2)
    return eth(IP(src=src, dst=TUNNEL4, flags="DF") / TCP(sport=40001, dport=80, flags="A") / Raw(b"b" * 1460), l2)


def mtu_error(vip, mtu):
    """A router's fragmentation needed / packet too big about the DSR reply VIP:80 -> client."""
    if ":" in vip:
        quoted = raw(IPv6(src=vip, dst=CLIENT6) / TCP(sport=80, dport=40000, flags="A") / Raw(b"q" * 100))
        return eth(IPv6(src="2001:db8:9::1", dst=vip) / ICMPv6PacketTooBig(mtu=mtu) / Raw(quoted))
    quoted = raw(IP(src=vip, dst=CLIENT4) / TCP(sport=80, dport=40000, flags="A"))[:28]
    return eth(IP(src="198.18.9.1", dst=vip) / ICMP(type=3, code=4, nexthopmtu=mtu) / Raw(quoted))


def with_options(options):
    """A SYN to VIP4 whose IPv4 header carries `options` verbatim (scapy would fix them up)."""
    ihl = 5 + len(options) // 4
    tcp = raw(TCP(sport=40002, dport=80, flags="S"))
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(tcp), 1, 0x4000, 64, 6, 0,
                      socket.inet_aton(CLIENT4), socket.inet_aton(VIP4)) + options
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    # The TCP checksum is not checked by the dataplane; it is irrelevant here.
    return Ether(src=CLIENT_MAC, dst=OWN, type=0x0800) / Raw(hdr + tcp)


def filtered_cases():
    """(reason, frame) for every filtered case."""
    c = []
    c += [("ttl_exceeded", syn(CLIENT4, ttl=0)), ("ttl_exceeded", syn(CLIENT6, hlim=0))]
    for src in ("255.255.255.255", "224.0.0.1", "0.0.0.0", "127.0.0.1", "::", "::1", "ff02::1"):
        c += [("martian_source", echo(src)), ("martian_source", too_big(src)), ("martian_source", syn(src))]
    for src in VIPS:
        c += [("vip_source", echo(src)), ("vip_source", too_big(src)), ("vip_source", syn(src))]
    for flags in ("SF", "SR", "", "FSRPAUEC"):
        c.append(("tcp_bad_flags", syn(CLIENT4, flags=flags)))
    c.append(("tcp_bad_flags", syn(CLIENT6, flags="SF")))
    c.append(("ipv4_bad_options", with_options(b"\x07\x0b\x04\x00\x00\x00\x00\x00")))  # past the header
    c.append(("ipv4_bad_options", with_options(b"\x07\x00\x00\x00")))                  # length 0
    c += [("icmp_bad_mtu", mtu_error(VIP4, 0)), ("icmp_bad_mtu", mtu_error(VIP4, 67)),
          ("icmp_bad_mtu", mtu_error(VIP6, 1279))]
    for bcast in ("ff:ff:ff:ff:ff:ff", "33:33:00:00:00:01"):
        c += [("l2_broadcast_no_reply", echo(CLIENT4, l2=bcast)), ("l2_broadcast_no_reply", echo(CLIENT6, l2=bcast)),
              ("l2_broadcast_no_reply", too_big(CLIENT4, l2=bcast))]
    return c


def passing_cases():
    """(verdict, frame) for the closest cases that pass: the filters stop where they should."""
    return [("forwarded", syn(CLIENT4)), ("forwarded", syn(CLIENT6)), ("forwarded", syn(CLIENT4, ttl=1)),
            ("forwarded", syn("198.18.1.3")), ("forwarded", with_options(b"\x94\x04\x00\x00")),
            ("forwarded", mtu_error(VIP4, 68)), ("forwarded", mtu_error(VIP6, 1280)),
            ("replied", echo(CLIENT4)), ("replied", echo(CLIENT6)),
            ("replied", too_big(CLIENT4)), ("replied", too_big(CLIENT6))]


def kernel_cases():
    """Not VIP traffic: to the kernel, whatever its source."""
    return [eth(ARP(op=1, hwsrc=CLIENT_MAC, psrc=CLIENT4, pdst="198.18.0.1"), "ff:ff:ff:ff:ff:ff"),
            eth(IP(src=CLIENT4, dst="198.18.0.1") / UDP(sport=9, dport=9) / Raw(b"k")),
            eth(IP(src="127.0.0.1", dst="198.18.0.1") / UDP(sport=9, dport=9) / Raw(b"k"))]


def forbidden(addr):
    a = ipaddress.ip_address(addr)
    return a.is_multicast or a.is_loopback or a.is_unspecified or addr in VIPS or \
        (a.version == 4 and (a == ipaddress.ip_address("255.255.255.255") or a in ipaddress.ip_network("0.0.0.0/8")))


def icmp_generated(out):
    """(destination MAC, destination address) of every ICMP / ICMPv6 frame in `out` that the
    dataplane made, i.e. all but those it forwarded to a server (ICMP errors about a VIP flow
    go to the server that owns it, unchanged above layer 2)."""
    res = []
    for f in out:
        e = Ether(f)
        if e.dst.startswith(SERVER_MAC_PREFIX):
            continue
        if e.haslayer(IP) and e[IP].proto == 1:
            res.append((e.dst, e[IP].dst))
        elif e.haslayer(IPv6) and e[IPv6].nh == 58:
            res.append((e.dst, e[IPv6].dst))
    return res


def run_corpus(workdir, **dp_args):
    filtered, passing, kernel = filtered_cases(), passing_cases(), kernel_cases()
    frames = [raw(f) for _, f in filtered] + [raw(f) for _, f in passing] + [raw(f) for f in kernel]
    out, counters, health = run_pcap(workdir, frames, spec(), **dp_args)
    assert health["status"] == "running"
    assert counters["rx"] == len(frames)

    expected = {}
    for reason, _ in filtered:
        expected[reason] = expected.get(reason, 0) + 1
    for reason, n in expected.items():
        assert counters["drops"][reason] == n, f"{reason}: counted {counters['drops'][reason]}, sent {n}"
    assert counters["forwarded"] == sum(1 for v, _ in passing if v == "forwarded")
    assert counters["replied"] == sum(1 for v, _ in passing if v == "replied")
    assert counters["too_big_replies"] == 2

    icmp = icmp_generated(out)
    for mac, dst in icmp:
        assert not forbidden(dst), f"ICMP sent toward {dst}"
        assert not int(mac.split(":")[0], 16) & 1, f"ICMP sent to link-layer group {mac}"
    # Exactly the four answers of the passing cases, all to the clients.
    assert sorted(d for _, d in icmp) == sorted([CLIENT4, CLIENT4, CLIENT6, CLIENT6])

    assert counter_balance(counters) == []
    kernel_rx = sum(q["kernel_rx"] for q in counters["queues"])
    assert len(out) == counters["forwarded"] + counters["replied"] + kernel_rx
    return counters, len(kernel)


def test_filtered_without_exception_port(tmp_path):
    counters, kernel = run_corpus(tmp_path)
    # No exception port: frames for the kernel are one drop each, not also to_kernel.
    assert counters["to_kernel"] == 0
    assert counters["drops"]["no_exception_port"] == kernel
    assert counters["dropped"] == sum(1 for _ in filtered_cases()) + kernel


@pytest.fixture
def netns():
    """A namespace of our own for the exception port (a TAP), with IPv6 off so that the kernel
    sends nothing of its own (router solicitations, MLD) through it."""
    with fulcrumlab.own_namespace("flef") as ns:
        fulcrumlab.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1", netns=ns)
        yield ns


def test_filtered_with_exception_port(tmp_path, netns):
    counters, kernel = run_corpus(tmp_path, netns=netns, exception="fl0")
    assert counters["to_kernel"] == kernel
    assert sum(q["kernel_tx"] for q in counters["queues"]) == kernel
    assert counters["drops"]["no_exception_port"] == 0
    assert counters["dropped"] == sum(1 for _ in filtered_cases())
