"""Fulcrum's XDP front (ebpf/xdp_front.bpf.o) on a kernel interface: the dataplane runs on
net_af_xdp with `xdp_prog=`, DPDK attaches the program to the veth and puts its AF_XDP socket
into xsks_map; the test fills the program's maps with bpftool the way fulcrumd does (by the
map names of the program attached to the interface) and checks that admitted VIP traffic is
forwarded, denied and flooding sources are cut, and the host keeps its own traffic."""
import json
import struct
import time

import pytest
from scapy.all import ICMP, IP, TCP, Ether, raw

import fulcrumlab
from test_exception_path import Capture

XDP_PROG = fulcrumlab.BUILD / "ebpf" / "xdp_front.bpf.o"
BPFTOOL = "/usr/sbin/bpftool"
VIP = "198.18.1.1"
SERVER_MAC = "02:00:00:00:02:01"
CLIENT_MAC = "02:00:00:00:00:c1"

# enum fl_xdp_reason (ebpf/include/fulcrum_xdp.h)
PASS_NON_IP, PASS_NON_VIP, PASS_NO_SOCKET, REDIRECT, DROP_ACL_DENY, DROP_ACL_DEFAULT, \
    DROP_SYN_RATE, DROP_MALFORMED = range(8)
ACL_ALLOW, ACL_DENY = 1, 2
ABI_VERSION = 1

SEND_MANY = ("import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); "
             "s.bind((sys.argv[1], 0)); [s.send(bytes.fromhex(h)) for h in sys.argv[2:]]")


def send_frames(ns, iface, frames):
    """Sends the frames in order from one process (fast enough that a 1/s bucket barely refills)."""
    fulcrumlab.run("/usr/bin/python3", "-c", SEND_MANY, iface, *[raw(f).hex() for f in frames], netns=ns)


def bpftool(*args, netns=None):
    out = fulcrumlab.run(BPFTOOL, "-j", *args, netns=netns).stdout
    return json.loads(out) if out.strip() else None


def hexbytes(b):
    return [f"{x:02x}" for x in b]


class FrontMaps:
    """The maps of the XDP program attached to `ifname` in `ns`, by name."""

    def __init__(self, ns, ifname):
        net = bpftool("net", "show", "dev", ifname, netns=ns)
        progs = [p for entry in net for p in entry.get("xdp", [])]
        assert len(progs) == 1, f"expected one XDP program on {ifname}, found {net}"
        self.prog_id = progs[0]["id"]
        prog = bpftool("prog", "show", "id", str(self.prog_id))
        assert prog["name"] == "fl_xdp_front", f"{ifname} runs {prog['name']}, not the XDP front"
        self.ids = {}
        for map_id in prog["map_ids"]:
            m = bpftool("map", "show", "id", str(map_id))
            self.ids[m["name"]] = map_id
        for name in ("xsks_map", "fl_cfg", "fl_vip4", "fl_acl4", "fl_syn", "fl_stats"):
            assert name in self.ids, f"map {name} missing from the attached program: {self.ids}"

    def update(self, name, key, value):
        fulcrumlab.run(BPFTOOL, "map", "update", "id", str(self.ids[name]), "key", "hex", *hexbytes(key),
                       "value", "hex", *hexbytes(value))

    def config(self, acl_default=ACL_ALLOW, syn_rate=0, syn_burst=0, v6_prefix=64):
        self.update("fl_cfg", struct.pack("<I", 0),
                    struct.pack("<IIQQII", ABI_VERSION, acl_default, syn_rate, syn_burst, v6_prefix, 0))

    def add_vip4(self, addr):
        self.update("fl_vip4", bytes(map(int, addr.split("."))), struct.pack("<I", 1))

    def add_acl4(self, addr, prefixlen, action, rule_id=1):
        self.update("fl_acl4", struct.pack("<I", prefixlen) + bytes(map(int, addr.split("."))),
                    struct.pack("<II", action, rule_id))

    def stats(self):
        """fl_stats summed over the CPUs, indexed by reason."""
        out = [0] * 8
        for e in bpftool("map", "dump", "id", str(self.ids["fl_stats"])):
            key = int.from_bytes(bytes(int(x, 16) for x in e["key"]), "little")
            for v in e["values"]:
                out[key] += int.from_bytes(bytes(int(x, 16) for x in v["value"]), "little")
        return out

    def sockets(self):
        return bpftool("map", "dump", "id", str(self.ids["xsks_map"]))


def syn(src, sport, dst_mac):
    return Ether(src=CLIENT_MAC, dst=dst_mac) / IP(src=src, dst=VIP) / TCP(sport=sport, dport=80, flags="S")


@pytest.fixture
def front(tmp_path):
    if not XDP_PROG.exists():
        pytest.fail(f"{XDP_PROG} is missing: build it (ninja -C build ebpf/xdp_front.bpf.o; needs clang and bpftool)")
    with fulcrumlab.veth_namespace("flxf") as ns:
        spec = {"generation": 1, "services": [
            {"id": 1, "name": "web", "vip": VIP, "port": 80, "table_size": 251,
             "servers": [{"slot": 0, "address": "198.18.2.1", "mac": SERVER_MAC}]}]}
        snap = fulcrumlab.build_snapshot(spec, tmp_path / "s.snap")
        dp = fulcrumlab.Dataplane(tmp_path, [f"net_af_xdp0,iface=up0,start_queue=0,queue_count=1,xdp_prog={XDP_PROG}"],
                                  "net_af_xdp0", netns=ns, snapshot=snap, memory=512)
        try:
            maps = FrontMaps(ns, "up0")
            fulcrumlab.wait_for(maps.sockets, 10, what="DPDK's AF_XDP socket in xsks_map")
            with dp.client() as c:
                own = c.health()["uplink_mac"]
            yield ns, dp, maps, own
        finally:
            assert dp.stop() == 0, dp.log()


def wait_stats(maps, reasons, n, timeout=15):
    """Waits until the counters `reasons` add up to n; returns the counters."""
    return fulcrumlab.wait_for(lambda: (lambda s: s if sum(s[r] for r in reasons) >= n else None)(maps.stats()),
                               timeout, what=f"{n} frames counted as {reasons}")


def test_allowed_source_is_forwarded(front, tmp_path):
    ns, dp, maps, own = front
    maps.config(acl_default=ACL_DENY)
    maps.add_acl4("198.18.0.0", 24, ACL_ALLOW)
    maps.add_vip4(VIP)
    cap = Capture(ns, "wire0", tmp_path / "wire.pcap", f"ether dst {SERVER_MAC}", count=5)
    syns = [syn("198.18.0.7", 40000 + i, own) for i in range(5)]
    send_frames(ns, "wire0", syns)
    frames = cap.frames()
    assert len(frames) == 5
    for f, s in zip(sorted(frames, key=lambda b: b[34:36]), syns):
        assert f[:6] == bytes.fromhex(SERVER_MAC.replace(":", ""))
        assert f[12:] == raw(s)[12:]
    st = maps.stats()
    assert st[REDIRECT] == 5 and st[PASS_NO_SOCKET] == 0
    assert dp.counters()["forwarded"] == 5


def test_denied_source_is_dropped_in_xdp(front, tmp_path):
    ns, dp, maps, own = front
    maps.config(acl_default=ACL_ALLOW)
    maps.add_acl4("198.18.9.0", 24, ACL_DENY)
    maps.add_vip4(VIP)
    cap = Capture(ns, "wire0", tmp_path / "wire.pcap", f"ether dst {SERVER_MAC}", count=1)
    send_frames(ns, "wire0", [syn("198.18.9.5", 40000 + i, own) for i in range(5)] +
                [syn("198.18.0.7", 41000, own)])
    # The allowed SYN sent last is forwarded: the denied ones before it were decided already.
    frames = cap.frames()
    assert len(frames) == 1 and frames[0][26:30] == bytes([198, 18, 0, 7])
    st = wait_stats(maps, [DROP_ACL_DENY], 5)
    assert st[DROP_ACL_DENY] == 5 and st[REDIRECT] == 1
    c = dp.counters()
    assert c["rx"] == 1 and c["forwarded"] == 1, "denied frames must never reach the dataplane"


def test_host_keeps_its_own_traffic(front, tmp_path):
    ns, dp, maps, own = front
    maps.add_vip4(VIP)
    # The kernel side of the uplink has an address; a peer pings it through the veth.
    fulcrumlab.run("ip", "addr", "add", "198.18.0.2/24", "dev", "up0", netns=ns)
    fulcrumlab.run("ip", "neigh", "replace", "198.18.0.50", "lladdr", CLIENT_MAC, "dev", "up0", netns=ns)
    before = maps.stats()
    cap = Capture(ns, "wire0", tmp_path / "reply.pcap", "icmp and icmp[icmptype] == icmp-echoreply", count=3)
    send_frames(ns, "wire0", [Ether(src=CLIENT_MAC, dst=own) / IP(src="198.18.0.50", dst="198.18.0.2") /
                              ICMP(type=8, id=7, seq=i) for i in range(3)])
    replies = cap.frames()
    assert len(replies) == 3, "the kernel did not answer pings to its own address"
    assert all(r[30:34] == bytes([198, 18, 0, 50]) for r in replies)
    st = maps.stats()
    assert st[PASS_NON_VIP] - before[PASS_NON_VIP] == 3
    assert dp.counters()["rx"] == 0, "host traffic must not reach the dataplane"


def test_syn_flood_is_cut_to_rate_and_burst(front, tmp_path):
    ns, dp, maps, own = front
    rate, burst, flood = 1, 5, 60
    maps.config(syn_rate=rate, syn_burst=burst)
    maps.add_vip4(VIP)
    t0 = time.monotonic()
    send_frames(ns, "wire0", [syn("198.18.0.7", 20000 + i, own) for i in range(flood)])
    st = wait_stats(maps, [REDIRECT, DROP_SYN_RATE], flood)
    elapsed = time.monotonic() - t0
    assert burst <= st[REDIRECT] <= burst + rate * (int(elapsed) + 1)
    assert st[REDIRECT] + st[DROP_SYN_RATE] == flood
    # Another source still gets through, and the dataplane forwarded what the front admitted.
    admitted = st[REDIRECT]
    cap = Capture(ns, "wire0", tmp_path / "other.pcap", f"ether dst {SERVER_MAC} and src host 198.18.0.8", count=1)
    send_frames(ns, "wire0", [syn("198.18.0.8", 30000, own)])
    frames = cap.frames()
    assert len(frames) == 1
    st = maps.stats()
    assert st[REDIRECT] == admitted + 1
    fulcrumlab.wait_for(lambda: dp.counters()["forwarded"] == admitted + 1, 10,
                        what=f"{admitted + 1} frames forwarded")
