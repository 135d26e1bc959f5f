"""A corpus of malformed frames through the real dataplane: every one is dropped and counted
under its reason, nothing is transmitted for them, and the process keeps forwarding."""
import struct

from scapy.all import ICMP, IP, TCP, UDP, Ether, IPv6, IPv6ExtHdrDestOpt, Raw, raw

from pcaputil import run_pcap

OWN = "02:70:63:61:70:00"


def spec():
    return {"generation": 1, "services": [
        {"id": 1, "name": "web", "vip": "198.18.1.1", "port": 80, "table_size": 251,
         "servers": [{"slot": 0, "address": "198.18.2.1", "mac": "02:00:00:00:02:01"}]},
        {"id": 2, "name": "web6", "vip": "2001:db8:1::1", "port": 80, "table_size": 251,
         "servers": [{"slot": 1, "address": "2001:db8:2::1", "mac": "02:00:00:00:02:02"}]}]}


def eth(payload, ethertype=0x0800):
    return bytes.fromhex(OWN.replace(":", "")) + bytes.fromhex("0200000000c1") + struct.pack("!H", ethertype) + payload


def v4(**kw):
    return raw(IP(src="198.18.0.7", dst="198.18.1.1", **kw) / TCP(sport=1234, dport=80, flags="S"))


def corpus():
    good4 = v4()
    good6 = raw(IPv6(src="2001:db8::7", dst="2001:db8:1::1") / TCP(sport=1234, dport=80))
    cases = []
    cases.append(("eth_truncated", eth(b"")[:13]))
    cases.append(("vlan_truncated", eth(b"\x00", 0x8100)))
    cases.append(("vlan_too_many", eth(b"\x00\x01\x81\x00\x00\x02\x81\x00\x00\x03\x08\x00" + good4, 0x8100)))
    cases.append(("arp_truncated", eth(b"\x00" * 20, 0x0806)))
    cases.append(("ipv4_truncated", eth(good4[:19])))
    cases.append(("ipv4_bad_version", eth(b"\x55" + good4[1:])))
    cases.append(("ipv4_bad_ihl", eth(b"\x44" + good4[1:])))
    cases.append(("ipv4_bad_length", eth(good4[:2] + struct.pack("!H", 400) + good4[4:])))
    cases.append(("ipv4_bad_checksum", eth(good4[:10] + b"\x12\x34" + good4[12:])))
    frag = raw(IP(src="198.18.0.7", dst="198.18.1.1", frag=8190, flags=0) / Raw(b"x" * 100))
    cases.append(("ipv4_bad_fragment", eth(frag)))
    cases.append(("ipv6_truncated", eth(good6[:39], 0x86DD)))
    cases.append(("ipv6_bad_version", eth(b"\x45" + good6[1:], 0x86DD)))
    cases.append(("ipv6_bad_length", eth(good6[:4] + struct.pack("!H", 999) + good6[6:], 0x86DD)))
    ext = raw(IPv6(src="2001:db8::7", dst="2001:db8:1::1") / IPv6ExtHdrDestOpt(len=30) / TCP(dport=80))
    cases.append(("ipv6_ext_truncated", eth(ext[:80], 0x86DD)))
    many = IPv6(src="2001:db8::7", dst="2001:db8:1::1")
    for _ in range(10):
        many = many / IPv6ExtHdrDestOpt()
    cases.append(("ipv6_ext_too_many", eth(raw(many / TCP(dport=80)), 0x86DD)))
    short_tcp = raw(IP(src="198.18.0.7", dst="198.18.1.1", proto=6) / Raw(b"\x00" * 10))
    cases.append(("tcp_truncated", eth(short_tcp)))
    bad_off = raw(IP(src="198.18.0.7", dst="198.18.1.1") / TCP(dport=80, dataofs=3))
    cases.append(("tcp_bad_offset", eth(bad_off)))
    short_udp = raw(IP(src="198.18.0.7", dst="198.18.1.1", proto=17) / Raw(b"\x00" * 5))
    cases.append(("udp_truncated", eth(short_udp)))
    bad_ulen = raw(IP(src="198.18.0.7", dst="198.18.1.1") / UDP(dport=80, len=200) / Raw(b"x" * 10))
    cases.append(("udp_bad_length", eth(bad_ulen)))
    short_icmp = raw(IP(src="198.18.0.7", dst="198.18.1.1", proto=1) / Raw(b"\x08\x00\x00"))
    cases.append(("icmp_truncated", eth(short_icmp)))
    inner_short = raw(IP(src="198.18.0.9", dst="198.18.1.1") / ICMP(type=3, code=4) / Raw(b"\x45" + b"\x00" * 10))
    cases.append(("icmp_inner_truncated", eth(inner_short)))
    inner_bad = raw(IP(src="198.18.0.9", dst="198.18.1.1") / ICMP(type=3, code=4) / Raw(b"\x65" + b"\x00" * 40))
    cases.append(("icmp_inner_bad", eth(inner_bad)))
    cases.append(("no_service", eth(raw(IP(src="198.18.0.7", dst="198.18.1.1") / TCP(dport=81)))))
    return cases


def test_malformed_corpus_is_dropped_and_counted(tmp_path):
    cases = corpus()
    valid = raw(Ether(dst=OWN) / IP(src="198.18.0.7", dst="198.18.1.1") / TCP(sport=999, dport=80, flags="S"))
    frames = [f for _, f in cases] + [valid]
    out, counters, health = run_pcap(tmp_path, frames, spec())
    assert health["status"] == "running"
    assert len(out) == 1, "only the valid frame after the corpus may leave"
    assert Ether(out[0])[TCP].sport == 999
    expected = {}
    for reason, _ in cases:
        expected[reason] = expected.get(reason, 0) + 1
    for reason, n in expected.items():
        assert counters["drops"][reason] == n, f"{reason}: counted {counters['drops'][reason]}, sent {n}"
    assert counters["dropped"] == len(cases)
    assert counters["forwarded"] == 1
