#!/usr/bin/python3
"""Writes the input pcaps and snapshot specs of bench/throughput.sh and bench/instructions.sh.

    gen_pcap.py OUTDIR [--flows 16384] [--syns 1048576] [--dut-mac 02:00:00:00:00:01] [--queues N]

Makes, in OUTDIR:
  established_dsr.pcap   one TCP ACK of each of --flows flows (198.19.0.0/16 clients, ports
                         from 1024) to the DSR service 198.18.1.1:80, in a shuffled order
  established_ipip.pcap  the same flows to the IPIP service 198.18.1.2:80
  established_dsr_74b.pcap
                         established_dsr.pcap's frames with 14 more bytes of Ethernet padding:
                         74 bytes, the length Fulcrum sends for an established_ipip frame (its
                         54 bytes of headers plus a 20-byte outer IPv4 header). A control for
                         the transport: what a longer frame alone costs a forwarder on memif
  established_dsr_ts.pcap, established_ipip_ts.pcap
                         the same flows' ACKs with the TCP timestamps option (NOP, NOP,
                         timestamps: 12 bytes), as Linux sends every segment of a connection
                         that negotiated it (net.ipv4.tcp_timestamps, on by default): 66-byte
                         frames, which Fulcrum sends as 66 (DSR) and 86 (IPIP) bytes
  unique_syn.pcap        --syns TCP SYNs, each from a distinct (source address, port), to
                         198.18.1.1:80
  spec.json              fulcrum-snapshot build input: both services, 16 servers each
With --queues N (N > 1), also NAME.q0.pcap .. NAME.q{N-1}.pcap for each of them: the
same frames split over N inputs by flow, the k-th flow of NAME.pcap's order into queue k mod N,
so every flow is in exactly one queue file (what RSS does for a device with N queues), in the
order it has in NAME.pcap.
Frames are 60 bytes (Ethernet II + IPv4 + TCP, no payload, zero padded: 64 bytes on the wire
with the FCS; established_dsr_74b's 74, the _ts cases' 66) with valid IPv4 and TCP checksums,
addressed to --dut-mac. Raw struct
packing, no scapy: a million frames take a few seconds.
"""
import argparse
import json
import pathlib
import random
import struct
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "lib"))
from fulcrumlab import write_pcap  # noqa: E402

VIP_DSR = bytes([198, 18, 1, 1])
VIP_IPIP = bytes([198, 18, 1, 2])
PORT = 80
CLIENT_MAC = bytes.fromhex("020000000002")
SERVERS = 16
# An established_ipip frame as Fulcrum sends it: Ethernet, outer IPv4, inner IPv4 and TCP
# (its Ethernet padding trimmed): the length of established_dsr_74b's frames.
IPIP_OUT_LEN = 14 + 20 + 20 + 20
# TCP options of the _ts cases: NOP, NOP, timestamps (kind 8, length 10, TSval, TSecr), the
# layout Linux uses.
def ts_option(tsval, tsecr):
    return struct.pack("!BBBBII", 1, 1, 8, 10, tsval, tsecr)


def mac_bytes(s):
    return bytes(int(x, 16) for x in s.split(":"))


def fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def sum16(b):
    return sum(struct.unpack(f"!{len(b) // 2}H", b))


def frame(dut_mac, src, dst, sport, flags, seq, options=b""):
    """Ethernet + IPv4 + TCP with `options` (a multiple of 4 bytes), zero padded to 60 bytes."""
    tcp_len = 20 + len(options)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len, 1, 0x4000, 64, 6, 0, src, dst))
    struct.pack_into("!H", ip, 10, (~fold(sum16(ip))) & 0xFFFF)
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, PORT, seq, 1 if flags & 0x10 else 0,
                                (tcp_len // 4) << 4, flags, 65535, 0, 0) + options)
    pseudo = sum16(src) + sum16(dst) + 6 + tcp_len
    struct.pack_into("!H", tcp, 16, (~fold(pseudo + sum16(tcp))) & 0xFFFF)
    f = dut_mac + CLIENT_MAC + b"\x08\x00" + bytes(ip) + bytes(tcp)
    return f + bytes(max(0, 60 - len(f)))


def client(i):
    """Flow i: client 198.19.x.y (256 flows per address), source port 1024 + i % 256."""
    a = i >> 8
    return bytes([198, 19, (a >> 8) & 0xFF, a & 0xFF]), 1024 + (i & 0xFF)


def spec():
    def servers(base):
        return [{"slot": base + i, "address": f"198.18.{2 + base // 16}.{i + 1}",
                 "mac": f"02:00:00:00:{2 + base // 16:02x}:{i + 1:02x}", "weight": 1}
                for i in range(SERVERS)]
    return {"generation": 1, "hash_seed": 2024, "mtu": 1500,
            "encap": {"source_v4": "198.18.255.0/24", "ttl": 64},
            "services": [
                {"id": 1, "name": "dsr", "vip": "198.18.1.1", "port": PORT, "protocol": "tcp",
                 "scheduler": "maglev", "forwarding": "dsr", "table_size": 65537,
                 "servers": servers(0)},
                {"id": 2, "name": "ipip", "vip": "198.18.1.2", "port": PORT, "protocol": "tcp",
                 "scheduler": "maglev", "forwarding": "ipip", "table_size": 65537,
                 "servers": servers(SERVERS)}]}


def inputs(mac, flows, syns):
    """The frames of every pcap, by name (the module docstring lists them)."""
    order = list(range(flows))
    random.Random(1).shuffle(order)
    out = {}
    for name, vip in (("established_dsr", VIP_DSR), ("established_ipip", VIP_IPIP)):
        out[name] = [frame(mac, client(i)[0], vip, client(i)[1], 0x10, 1000 + i) for i in order]
    out["established_dsr_74b"] = [f + bytes(IPIP_OUT_LEN - len(f)) for f in out["established_dsr"]]
    for name, vip in (("established_dsr_ts", VIP_DSR), ("established_ipip_ts", VIP_IPIP)):
        out[name] = [frame(mac, client(i)[0], vip, client(i)[1], 0x10, 1000 + i,
                           ts_option(7000 + i, 5000 + i)) for i in order]
    out["unique_syn"] = [frame(mac, client(i)[0], VIP_DSR, client(i)[1], 0x02, i) for i in range(syns)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--flows", type=int, default=16384)
    ap.add_argument("--syns", type=int, default=1 << 20)
    ap.add_argument("--dut-mac", default="02:00:00:00:00:01")
    ap.add_argument("--queues", type=int, default=1)
    a = ap.parse_args()
    if not 1 <= a.flows <= 1 << 24 or not 1 <= a.syns <= 1 << 24:
        ap.error("--flows and --syns must be in 1..16777216 (198.19.0.0/16 x 256 ports)")
    if not 1 <= a.queues <= 64 or a.queues > min(a.flows, a.syns):
        ap.error("--queues must be in 1..64 and at most --flows and --syns (every queue gets a flow)")
    out = pathlib.Path(a.outdir)
    out.mkdir(parents=True, exist_ok=True)
    mac = mac_bytes(a.dut_mac)
    for name, frames in inputs(mac, a.flows, a.syns).items():
        write_pcap(out / f"{name}.pcap", frames)
        if a.queues > 1:  # one frame per flow in every file: the k-th frame is the k-th flow
            for q in range(a.queues):
                write_pcap(out / f"{name}.q{q}.pcap", frames[q::a.queues])
    (out / "spec.json").write_text(json.dumps(spec(), indent=1))


if __name__ == "__main__":
    main()
