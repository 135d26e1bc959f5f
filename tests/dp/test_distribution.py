"""100 000 new flows over servers weighted 1:2:3:4 through the real dataplane: shares within
2% of the weights, and every packet of a flow reaches the same server."""
import struct

from pcaputil import run_pcap

OWN = bytes.fromhex("027063617000")
WEIGHTS = [1, 2, 3, 4]


def ip_checksum(h):
    s = sum(struct.unpack("!10H", h))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def frame(src_ip, sport, flags):
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0x4000, 64, 6, 0,
                               src_ip.to_bytes(4, "big"), bytes([198, 18, 1, 1])))
    struct.pack_into("!H", ip, 10, ip_checksum(bytes(ip)))
    tcp = struct.pack("!HHIIBBHHH", sport, 80, 1, 0, 0x50, flags, 65535, 0, 0)
    return OWN + bytes.fromhex("0200000000c1") + b"\x08\x00" + bytes(ip) + tcp


def test_weighted_distribution_and_stickiness(tmp_path):
    spec = {"generation": 1, "hash_seed": 2024, "services": [
        {"id": 1, "name": "web", "vip": "198.18.1.1", "port": 80, "table_size": 65537,
         "servers": [{"slot": i, "address": f"198.18.2.{i + 1}", "mac": f"02:00:00:00:02:{i:02x}",
                      "weight": w} for i, w in enumerate(WEIGHTS)]}]}
    flows = 100_000
    frames = []
    for i in range(flows):
        src = (198 << 24) | (19 << 16) | (i >> 10)          # 98 clients in 198.19.0.0/16
        sport = 1024 + (i & 1023)
        frames.append(frame(src, sport, 0x02))              # SYN
    for i in range(flows):                                 # then an ACK of every flow
        src = (198 << 24) | (19 << 16) | (i >> 10)
        frames.append(frame(src, 1024 + (i & 1023), 0x10))
    out, counters, _ = run_pcap(tmp_path, frames, spec, conn_capacity=262144, timeout=300)
    assert len(out) == 2 * flows, f"{len(out)} frames out of {2 * flows}; drops {counters['drops']}"
    first = {}
    counts = [0] * len(WEIGHTS)
    for k, f in enumerate(out):
        server = f[5]
        key = f[26:30] + f[34:36]
        if k < flows:
            first[key] = server
            counts[server] += 1
        else:
            assert first[key] == server, "a flow's packets reached two servers"
    total = sum(WEIGHTS)
    for i, w in enumerate(WEIGHTS):
        share = counts[i] / flows
        assert abs(share - w / total) <= 0.02 * (w / total) + 1e-9, \
            f"server {i} weight {w}: share {share:.4f}, expected {w / total:.4f} within 2%"
