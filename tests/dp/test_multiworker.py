"""Two workers, one RX queue each (docs/architecture.md, "Workers and queues"): the real
dataplane on a net_pcap port with two queues, each queue's input a pcap of its own with a
disjoint set of flows (as RSS would spread them). Each worker must forward exactly its queue's
frames, out of its own TX queue, keep exactly its own flows in its connection table, and send
every flow where a single worker sends it."""
import os
import pathlib

from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw, raw

import fulcrumlab
from pcaputil import read_pcap, write_pcap

DUT_MAC = "02:70:63:61:70:00"  # net_pcap0's address
CLIENT_MAC = "02:00:00:00:00:c1"
SERVICES = {  # name: (vip, port, protocol, forwarding, server addresses)
    "dsr-tcp": ("198.18.1.1", 80, "tcp", "dsr", ["198.18.2.1", "198.18.2.2", "198.18.2.3"]),
    "ipip-udp": ("198.18.1.2", 53, "udp", "ipip", ["198.18.3.1", "198.18.3.2", "198.18.3.3"]),
    "dsr-tcp6": ("2001:db8:1::1", 443, "tcp", "dsr", ["2001:db8:2::1", "2001:db8:2::2"]),
}
FLOWS_PER_SERVICE = 24
PACKETS_PER_FLOW = 3


def spec():
    services, slot = [], 0
    for sid, (name, (vip, port, proto, fwd, addrs)) in enumerate(SERVICES.items(), start=1):
        srv = []
        for a in addrs:
            srv.append({"slot": slot, "address": a, "mac": f"02:00:00:00:02:{slot:02x}"})
            slot += 1
        services.append({"id": sid, "name": name, "vip": vip, "port": port, "protocol": proto,
                         "forwarding": fwd, "table_size": 251, "servers": srv})
    return {"generation": 1, "hash_seed": 77, "encap": {"source_v4": "198.18.255.0/24"}, "services": services}


def flows():
    """[(flow key, [frames])]: FLOWS_PER_SERVICE flows per service, from distinct clients."""
    out = []
    for name, (vip, port, proto, _, _) in SERVICES.items():
        for k in range(FLOWS_PER_SERVICE):
            sport = 20000 + k
            if ":" in vip:
                l3 = IPv6(src=f"2001:db8:c::{k + 1:x}", dst=vip)
            else:
                l3 = IP(src=f"198.18.0.{k + 10}", dst=vip)
            frames = []
            for i in range(PACKETS_PER_FLOW):
                l4 = (TCP(sport=sport, dport=port, flags="S" if i == 0 else "A", seq=1000 + i) if proto == "tcp"
                      else UDP(sport=sport, dport=port))
                frames.append(raw(Ether(src=CLIENT_MAC, dst=DUT_MAC) / l3 / l4 / Raw(bytes([k, i]) * 16)))
            out.append(((name, k), frames))
    return out


def flow_of(frame):
    """(client address, client port, VIP, protocol) of a frame: DSR keeps the client's packet,
    IPIP wraps it."""
    pkt = Ether(frame)
    ip = pkt[IP] if IP in pkt else pkt[IPv6]
    if IP in pkt and ip.proto == 4:  # IPIP: the client's packet is inside
        ip = IP(raw(ip)[ip.ihl * 4:])
    l4 = ip[TCP] if TCP in ip else ip[UDP]
    return ip.src, l4.sport, ip.dst, "tcp" if TCP in ip else "udp"


def key_of(frames):
    return flow_of(frames[0])


class Workers(fulcrumlab.Dataplane):
    """fulcrum-dataplane with `n` workers on a net_pcap port with one rx_pcap and one tx_pcap
    per queue, whatever the number of CPUs (EAL --lcores puts the lcores on the CPUs there are)."""

    def __init__(self, workdir, inputs, outputs, snapshot):
        self.workdir = pathlib.Path(workdir)
        self.prefix = fulcrumlab.unique("fl")
        self.socket = self.workdir / f"{self.prefix}.sock"
        ncpu = os.cpu_count() or 1
        lcores = ",".join(f"{i}@{i % ncpu}" for i in range(len(inputs) + 1))
        vdev = "net_pcap0," + ",".join([f"rx_pcap={p}" for p in inputs] + [f"tx_pcap={p}" for p in outputs])
        eal = ["--no-huge", "-m", "256", "--no-pci", "--file-prefix", self.prefix, "--lcores", lcores,
               "--log-level", "*:warning", "--vdev", vdev]
        args = ["--uplink", "net_pcap0", "--control-socket", str(self.socket), "--conn-capacity", "4096",
                "--idle-sleep-us", "100", "--no-state-file", "--snapshot", str(snapshot)]
        fulcrumlab.Process.__init__(self, [str(fulcrumlab.DATAPLANE)] + eal + ["--"] + args,
                                    log=self.workdir / f"{self.prefix}.log")
        self.wait_ready()


def run(workdir, queues, snapshot):
    """Runs the dataplane with one worker per element of `queues` (lists of frames); returns
    (frames out of each TX queue, counters)."""
    inputs, outputs = [], []
    for q, frames in enumerate(queues):
        inputs.append(workdir / f"in{len(queues)}.q{q}.pcap")
        outputs.append(workdir / f"out{len(queues)}.q{q}.pcap")
        write_pcap(inputs[-1], frames)
    dp = Workers(workdir, inputs, outputs, snapshot)
    try:
        assert dp.counters()["queues"] and len(dp.counters()["queues"]) == len(queues)
        total = sum(len(f) for f in queues)
        counters = dp.wait_rx(total, timeout=60)
        # The TX buffers are flushed every 100 us; wait until every frame left.
        fulcrumlab.wait_for(lambda: dp.counters()["ports"][0]["tx_packets"] >= counters["forwarded"], 10,
                            what="forwarded frames transmitted")
        counters = dp.counters()
    finally:
        rc = dp.stop()
    assert rc == 0, f"dataplane exited with {rc}:\n{dp.log()}"
    return [read_pcap(p) for p in outputs], counters


def destinations(frames):
    """{flow: set of (destination MAC, outer destination address)} over `frames`."""
    out = {}
    for f in frames:
        pkt = Ether(f)
        ip = pkt[IP] if IP in pkt else pkt[IPv6]
        out.setdefault(flow_of(f), set()).add((pkt.dst, ip.dst))
    return out


def test_two_workers_forward_their_own_queues_like_one_worker(tmp_path):
    snap = fulcrumlab.build_snapshot(spec(), tmp_path / "multi.snap")
    all_flows = flows()
    # Queue k mod 2 for the k-th flow: every flow's packets in one queue, in order.
    split = [[f for i, (_, fl) in enumerate(all_flows) if i % 2 == q for f in fl] for q in range(2)]
    flows_of_queue = [{key_of(fl) for i, (_, fl) in enumerate(all_flows) if i % 2 == q} for q in range(2)]
    n_flows = len(all_flows)
    per_flow = PACKETS_PER_FLOW

    out2, c2 = run(tmp_path, split, snap)
    one, c1 = run(tmp_path, [[f for _, fl in all_flows for f in fl]], snap)

    # Both workers worked, each on its own queue only, and counted every frame once.
    assert c2["rx"] == c2["forwarded"] == n_flows * per_flow, c2
    by_queue = sorted(c2["queues"], key=lambda q: q["queue"])
    for q in range(2):
        assert by_queue[q]["rx"] == by_queue[q]["forwarded"] == len(split[q]), by_queue
        assert by_queue[q]["uplink_tx"] == len(split[q]), by_queue
    # Each worker's table holds exactly the flows of its queue: no flow was seen by both.
    tables = sorted(c2["conntables"], key=lambda t: t["queue"])
    for q in range(2):
        assert tables[q]["inserts"] == tables[q]["entries"] == len(flows_of_queue[q]), tables

    # Each worker sent exactly its queue's flows, out of its own TX queue, every packet.
    for q in range(2):
        assert len(out2[q]) == len(split[q]), f"TX queue {q}: {len(out2[q])} frames for {len(split[q])}"
        got = destinations(out2[q])
        assert set(got) == flows_of_queue[q], f"TX queue {q} carries flows of the other queue"
    # Every flow goes to one server, the one a single worker picks for it.
    assert c1["forwarded"] == n_flows * per_flow, c1
    ref = destinations(one[0])
    two = {**destinations(out2[0]), **destinations(out2[1])}
    assert len(ref) == len(two) == n_flows
    for flow, dst in two.items():
        assert len(dst) == 1, f"flow {flow} sent to several servers: {dst}"
        assert dst == ref[flow], f"flow {flow}: two workers send it to {dst}, one worker to {ref[flow]}"
    # The servers are spread (the flows are not all on one server per service).
    assert len({d for s in two.values() for d in s}) >= len(SERVICES) * 2
