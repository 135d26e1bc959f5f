"""Exception path: frames that are not VIP traffic go up to the kernel through the TAP
interface, and everything the kernel sends on the TAP leaves through the uplink."""
import subprocess
import time

import pytest
from scapy.all import ARP, Ether, IP, UDP, Raw, raw

import fulcrumlab
from pcaputil import read_pcap

SEND = ("import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); "
        "s.bind((sys.argv[1], 0)); s.send(bytes.fromhex(sys.argv[2]))")


def send_frame(ns, iface, frame):
    fulcrumlab.run("/usr/bin/python3", "-c", SEND, iface, raw(frame).hex(), netns=ns)


class Capture:
    """tcpdump in a namespace, bounded in time and count."""

    def __init__(self, ns, iface, path, bpf, count=1, seconds=15):
        self.path = path
        self.log = path.with_suffix(".log")
        self.proc = fulcrumlab.Process(["timeout", str(seconds), "tcpdump", "-U", "-n", "-i", iface, "-c", str(count),
                                        "-w", str(path), bpf], netns=ns, log=self.log)
        fulcrumlab.wait_for(lambda: "listening on" in self.log.read_text(errors="replace"), 10,
                            what=f"tcpdump on {iface}")

    def frames(self, timeout=10):
        try:
            self.proc.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.proc.stop()
        return read_pcap(self.path) if self.path.exists() else []


@pytest.fixture
def lab(tmp_path):
    with fulcrumlab.veth_namespace("flex") as ns:
        fulcrumlab.prepare_dataplane_uplink(ns, "up0")
        dp = fulcrumlab.Dataplane(tmp_path, ["net_af_packet0,iface=up0,qpairs=1"], "net_af_packet0",
                                  netns=ns, exception="fl0")
        fulcrumlab.sh("echo 1 > /proc/sys/net/ipv6/conf/fl0/disable_ipv6", netns=ns)
        fulcrumlab.wait_for(lambda: "UP" in fulcrumlab.run("ip", "link", "show", "fl0", netns=ns).stdout, 10,
                            what="fl0 up")
        yield ns, dp
        assert dp.stop() == 0, dp.log()


def test_tap_carries_the_uplink_mac(lab):
    ns, dp = lab
    with dp.client() as c:
        mac = c.health()["uplink_mac"]
    assert fulcrumlab.run("cat", "/sys/class/net/fl0/address", netns=ns).stdout.strip() == mac
    assert fulcrumlab.run("cat", "/sys/class/net/up0/address", netns=ns).stdout.strip() == mac


def test_tap_queues_bursts_from_the_host(lab):
    """The kernel side of the TAP holds 8192 frames (not tun's 1000), so a burst of sync
    datagrams or answers survives a delayed poll of the dataplane."""
    ns, _ = lab
    assert fulcrumlab.run("cat", "/sys/class/net/fl0/tx_queue_len", netns=ns).stdout.strip() == "8192"


def test_arp_on_the_uplink_reaches_the_kernel(lab, tmp_path):
    ns, dp = lab
    cap = Capture(ns, "fl0", tmp_path / "tap.pcap", "arp")
    arp = Ether(src="02:00:00:00:00:c1", dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc="02:00:00:00:00:c1",
                                                                        psrc="198.18.0.1", pdst="198.18.0.2")
    send_frame(ns, "wire0", arp)
    frames = cap.frames()
    assert len(frames) == 1
    assert frames[0][:42] == raw(arp)[:42], "the ARP request must reach the kernel unchanged"
    c = dp.counters()
    assert c["to_kernel"] >= 1
    assert sum(q["kernel_tx"] for q in c["queues"]) >= 1


def test_kernel_frames_leave_through_the_uplink(lab, tmp_path):
    ns, dp = lab
    cap = Capture(ns, "wire0", tmp_path / "wire.pcap", "ether src 02:00:00:00:00:77")
    frame = Ether(src="02:00:00:00:00:77", dst="02:00:00:00:00:c1") / IP(src="198.18.0.2", dst="198.18.0.1") / \
        UDP(sport=9, dport=9) / Raw(b"from the kernel side")
    send_frame(ns, "fl0", frame)
    frames = cap.frames()
    assert len(frames) == 1
    assert frames[0] == raw(frame)
    assert sum(q["kernel_rx"] for q in dp.counters()["queues"]) >= 1
