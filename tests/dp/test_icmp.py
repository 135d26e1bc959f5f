"""ICMP through the real dataplane: echo to a VIP, errors quoting a VIP flow, and what
happens when encapsulation would exceed the MTU."""
import ipaddress

from scapy.all import ICMP, IP, TCP, UDP, Ether, ICMPv6EchoRequest, ICMPv6PacketTooBig, IPv6, Raw, raw
from scapy.layers.inet import IPerror, TCPerror
from scapy.layers.inet6 import in6_chksum

from pcaputil import run_pcap

OWN = "02:70:63:61:70:00"
CLIENT = "02:00:00:00:00:c1"


def spec():
    def servers(base_slot, addrs):
        return [{"slot": base_slot + i, "address": a, "mac": f"02:00:00:00:02:{base_slot + i:02x}"}
                for i, a in enumerate(addrs)]
    return {"generation": 3, "hash_seed": 5,
            "encap": {"source_v4": "198.18.255.0/24", "source_v6": "2001:db8:ffff::/64"},
            "services": [
                {"id": 1, "name": "web", "vip": "198.18.1.1", "port": 80, "table_size": 251,
                 "servers": servers(0, ["198.18.2.1", "198.18.2.2", "198.18.2.3"])},
                {"id": 2, "name": "tunnel", "vip": "198.18.1.2", "port": 80, "forwarding": "ipip",
                 "table_size": 251, "servers": servers(10, ["198.18.3.1", "198.18.3.2"])},
                {"id": 3, "name": "tunnel6", "vip": "2001:db8:1::2", "port": 80, "forwarding": "ipip",
                 "table_size": 251, "servers": servers(20, ["2001:db8:3::1", "2001:db8:3::2"])},
                {"id": 4, "name": "web6", "vip": "2001:db8:1::1", "port": 80, "table_size": 251,
                 "servers": servers(30, ["2001:db8:2::1", "2001:db8:2::2"])},
                {"id": 5, "name": "tunnel-udp", "vip": "198.18.1.2", "port": 80, "protocol": "udp",
                 "forwarding": "ipip", "table_size": 251, "servers": servers(40, ["198.18.3.1", "198.18.3.2"])},
            ]}


def valid_ipv4_checksum(pkt):
    b = raw(pkt[IP])
    c = IP(b)
    c.chksum = None
    return IP(raw(c)).chksum == pkt[IP].chksum


def test_icmp_cases(tmp_path):
    frames = []
    # 0,1: echo to VIPs
    frames.append(Ether(src=CLIENT, dst=OWN) / IP(src="198.18.0.7", dst="198.18.1.1") / ICMP(id=7, seq=1) / Raw(b"x" * 56))
    frames.append(Ether(src=CLIENT, dst=OWN) / IPv6(src="2001:db8::7", dst="2001:db8:1::1") /
                  ICMPv6EchoRequest(id=7, seq=1, data=b"y" * 32))
    # 2..9: four connections to web, then for each a fragmentation-needed from a router on the
    # path back to the client, quoting the server's DSR reply (VIP -> client).
    for i in range(4):
        frames.append(Ether(src=CLIENT, dst=OWN) / IP(src="198.18.0.7", dst="198.18.1.1") /
                      TCP(sport=50000 + i, dport=80, flags="S"))
    for i in range(4):
        quoted = IP(src="198.18.1.1", dst="198.18.0.7") / TCP(sport=80, dport=50000 + i, flags="A") / Raw(b"z" * 1400)
        frames.append(Ether(src="02:00:00:00:00:99", dst=OWN) / IP(src="198.18.0.254", dst="198.18.1.1") /
                      ICMP(type=3, code=4, nexthopmtu=1400) / raw(quoted)[:28])
    # 10: IPIP service, 1500-byte packet with DF: too big after encapsulation
    big = Ether(src=CLIENT, dst=OWN) / IP(src="198.18.0.7", dst="198.18.1.2", flags="DF") / \
        TCP(sport=40000, dport=80, flags="A") / Raw(b"b" * 1460)
    assert len(big[IP]) == 1500
    frames.append(big)
    # 11: same without DF: encapsulated and fragmented
    nodf = Ether(src=CLIENT, dst=OWN) / IP(src="198.18.0.7", dst="198.18.1.2", flags=0, id=4242) / \
        UDP(sport=40001, dport=80) / Raw(b"u" * 1472)
    frames.append(nodf)
    # 12: IPv6 IPIP, 1500 bytes: packet too big
    big6 = Ether(src=CLIENT, dst=OWN) / IPv6(src="2001:db8::7", dst="2001:db8:1::2") / \
        TCP(sport=40002, dport=80, flags="A") / Raw(b"c" * 1440)
    frames.append(big6)
    out, counters, _ = run_pcap(tmp_path, [raw(f) for f in frames], spec())
    out = [Ether(o) for o in out]
    assert len(out) == 2 + 4 + 4 + 1 + 2 + 1, [o.summary() for o in out]

    # echo replies
    r = out[0]
    assert r[Ether].dst == CLIENT and r[Ether].src == OWN
    assert r[IP].src == "198.18.1.1" and r[IP].dst == "198.18.0.7"
    assert r[ICMP].type == 0 and r[ICMP].id == 7 and bytes(r[ICMP].payload) == b"x" * 56
    assert valid_ipv4_checksum(r)
    c = ICMP(raw(r[ICMP]))
    c.chksum = None
    assert ICMP(raw(c)).chksum == r[ICMP].chksum
    r6 = out[1]
    assert r6[IPv6].src == "2001:db8:1::1" and r6[IPv6].dst == "2001:db8::7"
    icmp6 = raw(r6[IPv6])[40:]
    assert icmp6[0] == 129
    assert in6_chksum(58, r6[IPv6], icmp6[:2] + b"\0\0" + icmp6[4:]) == int.from_bytes(icmp6[2:4], "big")

    # ICMP errors go to the server that owns the quoted flow
    conn_server = [out[2 + i][Ether].dst for i in range(4)]
    for i in range(4):
        e = out[6 + i]
        assert e[Ether].dst == conn_server[i], f"ICMP error {i} went elsewhere than its connection"
        assert raw(e)[12:] == raw(frames[6 + i])[12:]

    # too big with DF: fragmentation needed back to the client, from the VIP
    tb = out[10]
    assert tb[Ether].dst == CLIENT
    assert tb[IP].src == "198.18.1.2" and tb[IP].dst == "198.18.0.7"
    assert tb[ICMP].type == 3 and tb[ICMP].code == 4 and tb[ICMP].nexthopmtu == 1480
    assert len(tb[IP]) <= 576
    assert raw(tb[ICMP])[8:] == raw(big[IP])[:len(raw(tb[ICMP])) - 8]
    assert valid_ipv4_checksum(tb)

    # no DF: two outer fragments that reassemble to outer header + the original packet
    f1, f2 = out[11], out[12]
    for f in (f1, f2):
        assert f[IP].dst in ("198.18.3.1", "198.18.3.2") and f[IP].proto == 4
        assert len(f[IP]) <= 1500
        assert valid_ipv4_checksum(f)
    assert f1[IP].flags == "MF" and f1[IP].frag == 0
    assert f2[IP].flags == 0 and f2[IP].frag * 8 == len(f1[IP]) - 20
    assert f1[IP].id == f2[IP].id
    payload = raw(f1[IP])[20:] + raw(f2[IP])[20:]
    assert payload == raw(nodf[IP])

    # IPv6: packet too big
    p = out[13]
    assert p[IPv6].src == "2001:db8:1::2" and p[IPv6].dst == "2001:db8::7"
    assert p.haslayer(ICMPv6PacketTooBig) and p[ICMPv6PacketTooBig].mtu == 1460
    assert len(p[IPv6]) <= 1280

    assert counters["replied"] == 4
    assert counters["too_big_replies"] == 2
    assert counters["drops"]["too_big"] == 0
    assert counters["rx"] == counters["forwarded"] + counters["replied"] + counters["to_kernel"] + counters["dropped"]
    frag = sum(q["fragments"] for q in counters["queues"])
    assert frag == 1
