"""The dataplane on a kernel interface through AF_XDP (net_af_xdp on a veth): a SYN to the
VIP arrives through the XDP socket and leaves rewritten for its server."""
import pytest
from scapy.all import IP, TCP, Ether, raw

import fulcrumlab
from test_exception_path import Capture, send_frame


@pytest.fixture
def xdp_lab(tmp_path):
    with fulcrumlab.veth_namespace("flxdp") as ns:
        spec = {"generation": 1, "services": [
            {"id": 1, "name": "web", "vip": "198.18.1.1", "port": 80, "table_size": 251,
             "servers": [{"slot": 0, "address": "198.18.2.1", "mac": "02:00:00:00:02:01"}]}]}
        snap = fulcrumlab.build_snapshot(spec, tmp_path / "s.snap")
        dp = fulcrumlab.Dataplane(tmp_path, ["net_af_xdp0,iface=up0,start_queue=0,queue_count=1"], "net_af_xdp0",
                                  netns=ns, snapshot=snap, memory=512)
        yield ns, dp
        assert dp.stop() == 0, dp.log()


def test_vip_traffic_through_af_xdp(xdp_lab, tmp_path):
    ns, dp = xdp_lab
    with dp.client() as c:
        own = c.health()["uplink_mac"]
    cap = Capture(ns, "wire0", tmp_path / "wire.pcap", "ether dst 02:00:00:00:02:01", count=5)
    syns = [Ether(src="02:00:00:00:00:c1", dst=own) / IP(src="198.18.0.7", dst="198.18.1.1") /
            TCP(sport=40000 + i, dport=80, flags="S") for i in range(5)]
    for s in syns:
        send_frame(ns, "wire0", s)
    frames = cap.frames()
    assert len(frames) == 5
    for f, s in zip(sorted(frames, key=lambda b: b[34:36]), syns):
        assert f[:6] == bytes.fromhex("020000000201")
        assert f[6:12] == bytes.fromhex(own.replace(":", ""))
        assert f[12:] == raw(s)[12:]
    c = dp.counters()
    assert c["forwarded"] == 5 and c["ports"][0]["name"] == "net_af_xdp0"
