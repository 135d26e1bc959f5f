"""The real dataplane on a pcap uplink: every forwarding mode x IPv4/IPv6 x TCP/UDP, checked
field by field against what went in."""
import ipaddress

import pytest
from scapy.all import ICMP, IP, TCP, UDP, Ether, ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, Raw, raw
from scapy.layers.inet import in4_chksum
from scapy.layers.inet6 import in6_chksum

from pcaputil import run_pcap

CLIENT_MAC = "02:00:00:00:00:c1"
ENCAP4 = ipaddress.ip_network("198.18.255.0/24")
ENCAP6 = ipaddress.ip_network("2001:db8:ffff::/64")

SERVERS4 = ["198.18.2.1", "198.18.2.2", "198.18.2.3"]
SERVERS6 = ["2001:db8:2::1", "2001:db8:2::2", "2001:db8:2::3"]
VIPS = {"dsr": ("198.18.1.1", "2001:db8:1::1"),
        "ipip": ("198.18.1.2", "2001:db8:1::2"),
        "gue": ("198.18.1.3", "2001:db8:1::3")}


def server_mac(slot):
    return f"02:00:00:00:02:{slot:02x}"


def spec():
    services = []
    slot = 0
    sid = 1
    for mode, (v4, v6) in VIPS.items():
        for vip, servers in ((v4, SERVERS4), (v6, SERVERS6)):
            for proto, port in (("tcp", 80), ("udp", 53)):
                srv = []
                for a in servers:
                    srv.append({"slot": slot, "address": a, "mac": server_mac(slot)})
                    slot += 1
                services.append({"id": sid, "name": f"{mode}-{proto}-{'v6' if ':' in vip else 'v4'}",
                                 "vip": vip, "port": port, "protocol": proto, "forwarding": mode,
                                 "table_size": 251, "servers": srv})
                sid += 1
    return {"generation": 1, "hash_seed": 99,
            "encap": {"source_v4": str(ENCAP4), "source_v6": str(ENCAP6), "gue_port": 6080},
            "services": services}


def slot_of_mac(mac):
    return int(mac.split(":")[-1], 16)


def address_of_slot(s):
    return spec_servers()[s]


def spec_servers():
    out = {}
    for svc in spec()["services"]:
        for srv in svc["servers"]:
            out[srv["slot"]] = (srv["address"], svc["name"])
    return out


def client_packet(vip, proto, port, sport, flags="S", payload=b"hello"):
    l3 = IPv6(src="2001:db8::c1", dst=vip) if ":" in vip else IP(src="198.18.0.193", dst=vip)
    l4 = TCP(sport=sport, dport=port, flags=flags, seq=1000) if proto == "tcp" else UDP(sport=sport, dport=port)
    return Ether(src=CLIENT_MAC, dst="02:70:63:61:70:00") / l3 / l4 / Raw(payload)


CASES = [(mode, fam, proto) for mode in VIPS for fam in ("v4", "v6") for proto in ("tcp", "udp")]


@pytest.fixture(scope="module")
def forwarded(tmp_path_factory):
    """Two packets of each of three flows per case; all in one dataplane run."""
    workdir = tmp_path_factory.mktemp("fwd")
    inputs = []
    for mode, fam, proto in CASES:
        vip = VIPS[mode][0 if fam == "v4" else 1]
        port = 80 if proto == "tcp" else 53
        for flow in range(3):
            for i in range(2):
                flags = "S" if i == 0 else "A"
                inputs.append(((mode, fam, proto, flow), client_packet(vip, proto, port, 41000 + flow, flags,
                                                                        payload=bytes([flow, i]) * 20)))
    frames = [raw(p) for _, p in inputs]
    out, counters, health = run_pcap(workdir, frames, spec())
    return inputs, [Ether(f) for f in out], counters, health


def check_inner(inner_bytes, original):
    assert inner_bytes == raw(original[Ether].payload), "inner packet changed"


@pytest.mark.parametrize("mode,fam,proto", CASES)
def test_forwarding_field_by_field(forwarded, mode, fam, proto):
    inputs, outputs, counters, health = forwarded
    assert len(outputs) == len(inputs), f"{len(outputs)} frames out for {len(inputs)} in; counters {counters}"
    own_mac = health["uplink_mac"]
    flow_server = {}
    for (key, inp), out in zip(inputs, outputs):
        if key[:3] != (mode, fam, proto):
            continue
        slot = slot_of_mac(out[Ether].dst)
        addr, svc_name = spec_servers()[slot]
        assert svc_name == f"{mode}-{proto}-{fam}", "sent to a server of another service"
        assert out[Ether].src == own_mac
        # Every packet of a flow reaches the same server.
        assert flow_server.setdefault(key[3], slot) == slot
        if mode == "dsr":
            assert raw(out)[12:] == raw(inp)[12:], "DSR must change only the MAC addresses"
            continue
        if fam == "v4":
            outer = out[IP]
            assert outer.version == 4 and outer.ihl == 5
            assert ipaddress.ip_address(outer.src) in ENCAP4
            assert outer.dst == addr
            assert outer.ttl == 64
            assert outer.flags == inp[IP].flags  # DF copied from the inner packet
            assert outer.len == len(raw(inp[IP])) + (20 if mode == "ipip" else 28)
            check = IP(raw(outer)[:20])
            check.chksum = None
            assert IP(raw(check)).chksum == outer.chksum, "outer IPv4 checksum wrong"
            if mode == "ipip":
                assert outer.proto == 4
                check_inner(raw(outer)[20:], inp)
            else:
                assert outer.proto == 17
                udp = outer[UDP]
                assert udp.dport == 6080 and udp.sport >= 0xC000
                assert udp.len == 8 + len(raw(inp[IP]))
                assert udp.chksum == 0
                check_inner(raw(udp)[8:], inp)
        else:
            outer = out[IPv6]
            assert ipaddress.ip_address(outer.src) in ENCAP6
            assert outer.dst == addr
            assert outer.hlim == 64
            assert outer.plen == len(raw(inp[IPv6])) + (0 if mode == "ipip" else 8)
            if mode == "ipip":
                assert outer.nh == 41
                check_inner(raw(outer)[40:], inp)
            else:
                assert outer.nh == 17
                udp_bytes = raw(outer)[40:]
                assert int.from_bytes(udp_bytes[2:4], "big") == 6080
                # The UDP checksum over IPv6 is mandatory: recompute it over the pseudo-header.
                zeroed = udp_bytes[:6] + b"\0\0" + udp_bytes[8:]
                expect = in6_chksum(17, outer, zeroed)
                got = int.from_bytes(udp_bytes[6:8], "big")
                assert got == (expect if expect else 0xFFFF)
                check_inner(udp_bytes[8:], inp)
    assert flow_server, "no packets for this case"


def test_counters_match(forwarded):
    inputs, outputs, counters, _ = forwarded
    assert counters["rx"] == len(inputs)
    assert counters["forwarded"] == len(inputs)
    assert counters["dropped"] == 0
    per_service = {s["name"]: s for s in counters["services"]}
    for mode, fam, proto in CASES:
        s = per_service[f"{mode}-{proto}-{fam}"]
        assert s["packets"] == 6
        assert s["new_connections"] == 3
    assert sum(s["active_connections"] for s in counters["servers"]) == 3 * len(CASES)
