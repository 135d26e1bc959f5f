"""The adapter loop's fallbacks (dataplane/dpdk/src/worker_loop.cpp): the common case takes
and forwards whole groups of eight frames; a group with a frame the core must not get (a
multi-segment frame, dropped by the adapter) or a verdict other than forward (a drop here)
falls back to the per-frame loops. Frames must still leave in order, each counted once."""
from scapy.all import IP, TCP, Ether, Raw, raw

from pcaputil import counter_balance, run_pcap

OWN = "02:70:63:61:70:00"


def spec():
    return {"generation": 1, "services": [
        {"id": 1, "name": "web", "vip": "198.18.1.1", "port": 80, "table_size": 251,
         "servers": [{"slot": 0, "address": "198.18.2.1", "mac": "02:00:00:00:02:01"}]}]}


def syn(sport, pad=0):
    return raw(Ether(dst=OWN) / IP(src="198.18.0.7", dst="198.18.1.1") /
               TCP(sport=sport, dport=80, flags="S") / Raw(b"x" * pad))


def test_multi_segment_and_dropped_frames_inside_groups(tmp_path):
    # 70 frames: full groups of eight and a tail; frames larger than an mbuf (net_pcap chains
    # them: multi-segment) at a group's start, middle and end, two in a row, and in the tail;
    # two frames for a port without a service (a drop verdict) in other groups.
    frames, expect, big = [], [], 0
    for i in range(70):
        if i in (3, 10, 11, 31, 40, 66):
            frames.append(syn(5000 + i, pad=3000))
            big += 1
        elif i in (20, 50):
            frames.append(raw(Ether(dst=OWN) / IP(src="198.18.0.7", dst="198.18.1.1") / TCP(sport=6000 + i, dport=81)))
        else:
            frames.append(syn(1000 + i))
            expect.append(1000 + i)
    out, c, _ = run_pcap(tmp_path, frames, spec())
    assert [Ether(f)[TCP].sport for f in out] == expect
    assert c["drops"]["multi_segment"] == big, c["drops"]
    assert c["drops"]["no_service"] == 2
    assert c["forwarded"] == len(expect)
    assert not counter_balance(c)
    assert sum(q["uplink_tx"] for q in c["queues"]) == len(expect), c["queues"]
