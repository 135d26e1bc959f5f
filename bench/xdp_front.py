"""Nanoseconds per packet of the XDP front (ebpf/xdp_front.bpf.o) for each verdict, measured
by the kernel itself: `bpftool prog run ... repeat N` (BPF_PROG_TEST_RUN) runs the JITed
program N times on one frame and reports the average time per run. Driven by
bench/xdp_front.sh; needs root and a mounted bpffs (/sys/fs/bpf).

Each case sets up the maps, checks the program's verdict (return value and the fl_stats
counter moved by exactly the run count), then takes the median of --runs runs.
In test-run mode no AF_XDP socket sits in xsks_map, so the admitted cases end in the
PASS_NO_SOCKET fallback of bpf_redirect_map instead of a redirect; the program's work up to
that call is the same.
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile

from scapy.all import ARP, IP, IPv6, TCP, UDP, Dot1Q, Ether, raw

BPFTOOL = "/usr/sbin/bpftool"
REASONS = ["PASS_NON_IP", "PASS_NON_VIP", "PASS_NO_SOCKET", "REDIRECT", "DROP_ACL_DENY",
           "DROP_ACL_DEFAULT", "DROP_SYN_RATE", "DROP_MALFORMED"]
XDP_DROP, XDP_PASS = 1, 2
ACL_ALLOW, ACL_DENY = 1, 2
VIP4, VIP6 = "198.18.1.1", "2001:db8:1::1"
OWN = "02:00:00:00:00:02"


def bpftool(*args):
    r = subprocess.run([BPFTOOL, "-j", *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bpftool {' '.join(map(str, args))} failed: {r.stdout} {r.stderr}")
    return json.loads(r.stdout) if r.stdout.strip() else None


def hexb(b):
    return [f"{x:02x}" for x in b]


class Front:
    def __init__(self, obj, pin):
        self.pin = pin
        bpftool("prog", "load", obj, pin / "prog", "type", "xdp", "pinmaps", pin / "maps")

    def update(self, name, key, value):
        bpftool("map", "update", "pinned", self.pin / "maps" / name, "key", "hex", *hexb(key),
                "value", "hex", *hexb(value))

    def config(self, acl_default=ACL_ALLOW, rate=0, burst=0):
        self.update("fl_cfg", struct.pack("<I", 0), struct.pack("<IIQQII", 1, acl_default, rate, burst, 64, 0))

    def stats(self):
        out = [0] * len(REASONS)
        for e in bpftool("map", "dump", "pinned", self.pin / "maps" / "fl_stats"):
            k = int.from_bytes(bytes(int(x, 16) for x in e["key"]), "little")
            out[k] += sum(int.from_bytes(bytes(int(x, 16) for x in v["value"]), "little") for v in e["values"])
        return out

    def run(self, frame_file, repeat):
        r = bpftool("prog", "run", "pinned", self.pin / "prog", "data_in", frame_file, "repeat", repeat)
        return r["retval"], r["duration"]


def ip4(a):
    return bytes(map(int, a.split(".")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--object", required=True)
    ap.add_argument("--repeat", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--acl-rules", type=int, default=1000, help="IPv4 ACL size (random /24 and /32 rules)")
    args = ap.parse_args()

    pin = pathlib.Path("/sys/fs/bpf") / f"fulcrum-bench-{os.getpid()}"
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="fl-xdp-bench-"))
    pin.mkdir()
    try:
        f = Front(args.object, pin)
        f.update("fl_vip4", ip4(VIP4), struct.pack("<I", 1))
        f.update("fl_vip6", bytes(IPv6(dst=VIP6))[24:40], struct.pack("<I", 1))
        # A realistic ACL: many prefixes in 198.19.0.0/16 (never the test sources), plus the
        # rules the cases hit.
        batch = tmp / "acl.batch"
        with open(batch, "w") as out:
            for i in range(args.acl_rules):
                plen = 24 if i % 2 else 32
                key = struct.pack("<I", plen) + bytes([198, 19, (i // 251) % 256, i % 251 + 1 if plen == 32 else 0])
                out.write(f"map update pinned {pin / 'maps' / 'fl_acl4'} key hex {' '.join(hexb(key))} "
                          f"value hex {' '.join(hexb(struct.pack('<II', ACL_DENY, i)))}\n")
        subprocess.run([BPFTOOL, "batch", "file", str(batch)], check=True, capture_output=True)
        f.update("fl_acl4", struct.pack("<I", 16) + ip4("198.18.0.0"), struct.pack("<II", ACL_ALLOW, 90001))
        f.update("fl_acl4", struct.pack("<I", 24) + ip4("198.18.9.0"), struct.pack("<II", ACL_DENY, 90002))

        def syn(src, dst=VIP4, flags="S"):
            return Ether(dst=OWN) / IP(src=src, dst=dst) / TCP(sport=40000, dport=80, flags=flags)

        v6syn = Ether(dst=OWN) / IPv6(src="2001:db8::7", dst=VIP6) / TCP(sport=40000, dport=80, flags="S")
        cases = [
            # name, frame, fl_cfg (acl_default, syn_rate, syn_burst; None: allow, no limit), action, reason
            ("non-IP (ARP)", Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="198.18.0.2"), None, XDP_PASS, "PASS_NON_IP"),
            ("IPv4 non-VIP", syn("198.18.0.7", "198.18.0.2"), None, XDP_PASS, "PASS_NON_VIP"),
            ("IPv4 malformed (ihl 4)", None, None, XDP_DROP, "DROP_MALFORMED"),
            ("IPv4 ACL deny (/24)", syn("198.18.9.5"), None, XDP_DROP, "DROP_ACL_DENY"),
            ("IPv4 ACL default deny", syn("198.20.0.5"), (ACL_DENY, 0, 0), XDP_DROP, "DROP_ACL_DEFAULT"),
            ("IPv4 ACK admitted", syn("198.18.0.7", flags="A"), (ACL_ALLOW, 0, 0), XDP_PASS, "PASS_NO_SOCKET"),
            ("IPv4 UDP admitted", Ether(dst=OWN) / IP(src="198.18.0.7", dst=VIP4) / UDP(sport=5000, dport=53),
             None, XDP_PASS, "PASS_NO_SOCKET"),
            ("IPv4 802.1Q ACK admitted", Ether(dst=OWN) / Dot1Q(vlan=10) / IP(src="198.18.0.7", dst=VIP4) /
             TCP(flags="A"), None, XDP_PASS, "PASS_NO_SOCKET"),
            ("IPv4 SYN admitted, no limit", syn("198.18.0.8"), None, XDP_PASS, "PASS_NO_SOCKET"),
            ("IPv4 SYN admitted by limiter", syn("198.18.0.9"), (ACL_ALLOW, 1000000, 0xFFFFFFFF), XDP_PASS,
             "PASS_NO_SOCKET"),
            ("IPv4 SYN over rate", syn("198.18.0.10"), (ACL_ALLOW, 1, 1), XDP_DROP, "DROP_SYN_RATE"),
            ("IPv6 SYN admitted by limiter", v6syn, (ACL_ALLOW, 1000000, 0xFFFFFFFF), XDP_PASS, "PASS_NO_SOCKET"),
        ]
        print(f"# xdp_front.bpf.o, BPF_PROG_TEST_RUN repeat {args.repeat}, {args.runs} rounds over the cases "
              f"(interleaved, so machine noise spreads over all of them); {args.acl_rules + 2} IPv4 ACL rules; "
              f"kernel {os.uname().release}")
        durations = {name: [] for name, *_ in cases}
        for _ in range(args.runs):
            for name, frame, cfg, action, reason in cases:
                if frame is None:  # IPv4 header with ihl 4
                    b = bytearray(raw(syn("198.18.0.7")))
                    b[14] = 0x44
                else:
                    b = raw(frame)
                path = tmp / "frame.bin"
                path.write_bytes(b)
                f.config(*(cfg or (ACL_ALLOW, 0, 0)))
                before = f.stats()
                ret, ns = f.run(path, args.repeat)
                after = f.stats()
                moved = {REASONS[i]: after[i] - before[i] for i in range(len(REASONS)) if after[i] != before[i]}
                # The over-rate case admits a SYN whenever its 1/s bucket has refilled a token.
                want = {reason: args.repeat}
                if reason == "DROP_SYN_RATE" and "PASS_NO_SOCKET" in moved:
                    want = {"PASS_NO_SOCKET": 1, reason: args.repeat - 1}
                if ret != action or moved != want:
                    sys.exit(f"{name}: verdict {ret} with counters {moved}, expected {action} with {want}")
                durations[name].append(ns)
        print(f"| {'case':32} | {'verdict':16} | ns/packet median | min |")
        print(f"|{'-' * 34}|{'-' * 18}|------------------|-----|")
        for name, frame, cfg, action, reason in cases:
            d = durations[name]
            print(f"| {name:32} | {reason:16} | {statistics.median(d):16} | {min(d):3} |")
    finally:
        shutil.rmtree(pin, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
