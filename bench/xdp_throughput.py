#!/usr/bin/python3
"""Throughput of fulcrum-dataplane on an AF_XDP uplink with Fulcrum's XDP front against the
same dataplane with DPDK's default XDP program, alternating runs. Driven by
bench/xdp_throughput.sh; needs root.

A namespace of its own holds a veth pair: the dataplane on up0 (net_af_xdp, one queue, with
or without `xdp_prog=xdp_front.bpf.o`), tcpreplay --topspeed on wire0 replaying TCP ACKs of
16384 established DSR flows to the VIP (bench/gen_pcap.py; the first pass, untimed, puts the
flows into the connection table). With the front, the VIP is in its map and nothing else is
configured (no ACL rule, no SYN limit), so every frame takes the VIP path: parse, VIP lookup,
ACL lookup, redirect. Measured per run: frames the dataplane forwarded per second of replay,
and what the front counted. veth is kernel-bound (the sender and the veth's NAPI share the
host's two CPUs with the dataplane's worker), so the figure that carries over to other hosts
is the ratio of the two setups measured in the same run.
"""
import argparse
import json
import os
import pathlib
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lib"))

import fulcrumlab  # noqa: E402

BPFTOOL = "/usr/sbin/bpftool"
VIP = "198.18.1.1"


def bpftool(*args, netns=None):
    out = fulcrumlab.run(BPFTOOL, "-j", *map(str, args), netns=netns).stdout
    return json.loads(out) if out.strip() else None


def fill_front(ns):
    """Puts the VIP into the map fl_vip4 of the front attached to up0 (as fulcrumd would)."""
    net = bpftool("net", "show", "dev", "up0", netns=ns)
    progs = [p for entry in net for p in entry.get("xdp", [])]
    if len(progs) != 1:
        raise RuntimeError(f"expected one XDP program on up0, found {net}")
    prog = bpftool("prog", "show", "id", progs[0]["id"])
    if prog["name"] != "fl_xdp_front":
        raise RuntimeError(f"up0 runs {prog['name']}, not the XDP front")
    maps = {bpftool("map", "show", "id", m)["name"]: m for m in prog["map_ids"]}
    key = [f"{b}" for b in bytes(int(x) for x in VIP.split("."))]
    fulcrumlab.run(BPFTOOL, "map", "update", "id", str(maps["fl_vip4"]), "key", *key,
                   "value", *[str(b) for b in struct.pack("<I", 1)], netns=ns)
    return maps


def front_stats(maps):
    out = bpftool("map", "dump", "id", maps["fl_stats"])
    names = ["pass_non_ip", "pass_non_vip", "pass_no_socket", "redirect", "acl_deny", "acl_default",
             "syn_rate", "malformed"]
    totals = {}
    for e in out:
        k = e["key"] if isinstance(e["key"], int) else int.from_bytes(bytes(int(x, 16) for x in e["key"]), "little")
        vals = e.get("values") or []
        tot = 0
        for v in vals:
            val = v["value"]
            tot += val if isinstance(val, int) else int.from_bytes(bytes(int(x, 16) for x in val), "little")
        if k < len(names):
            totals[names[k]] = tot
    return totals


def replay(ns, pcap, loops):
    r = fulcrumlab.run("tcpreplay", "--topspeed", f"--loop={loops}", "-i", "wire0", str(pcap), netns=ns, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"tcpreplay failed: {r.stdout}{r.stderr}")
    return r.stdout


def one_run(ns, workdir, snap, pcap, front, loops, prog):
    vdev = "net_af_xdp0,iface=up0,start_queue=0,queue_count=1" + (f",xdp_prog={prog}" if front else "")
    dp = fulcrumlab.Dataplane(workdir, [vdev], "net_af_xdp0", netns=ns, snapshot=snap, memory=512,
                              extra=["--no-state-file"])
    try:
        maps = fill_front(ns) if front else None
        replay(ns, pcap, 1)  # untimed: the flows enter the table
        c0 = dp.counters()["forwarded"]
        s0 = front_stats(maps) if front else None
        t0 = time.monotonic()
        out = replay(ns, pcap, loops)
        secs = time.monotonic() - t0
        c1 = dp.counters()
        res = {"setup": "front" if front else "default", "seconds": round(secs, 3),
               "forwarded": c1["forwarded"] - c0, "forwarded_pps": round((c1["forwarded"] - c0) / secs),
               "tcpreplay": [l.strip() for l in out.splitlines() if "Rated" in l or "Actual" in l]}
        if front:
            s1 = front_stats(maps)
            res["front"] = {k: s1[k] - s0.get(k, 0) for k in s1}
        return res
    finally:
        rc = dp.stop()
        if rc != 0:
            print(dp.log(), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description="AF_XDP dataplane with and without the XDP front")
    ap.add_argument("--runs", type=int, default=5, help="runs per setup, alternating")
    ap.add_argument("--loops", type=int, default=20, help="passes over the 16384-frame pcap per run")
    ap.add_argument("--prog", required=True, help="xdp_front.bpf.o")
    a = ap.parse_args()
    if not 1 <= a.runs <= 50 or not 1 <= a.loops <= 1000:
        ap.error("--runs 1..50, --loops 1..1000")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="fulcrum-xdptp-"))
    runs = []
    try:
        with fulcrumlab.veth_namespace("flxt") as ns:
            mac = fulcrumlab.run("cat", "/sys/class/net/up0/address", netns=ns).stdout.strip()
            fulcrumlab.run("ethtool", "-K", "wire0", "tx", "off", netns=ns)
            subprocess.run(["/usr/bin/python3", str(ROOT / "bench" / "gen_pcap.py"), str(workdir), "--flows", "16384",
                            "--syns", "16", "--dut-mac", mac], check=True, capture_output=True)
            snap = fulcrumlab.build_snapshot(json.loads((workdir / "spec.json").read_text()), workdir / "s.snap")
            pcap = workdir / "established_dsr.pcap"
            for i in range(a.runs):
                for front in ((True, False) if i % 2 == 0 else (False, True)):
                    r = one_run(ns, workdir, snap, pcap, front, a.loops, a.prog)
                    r["run"] = i
                    runs.append(r)
                    print(json.dumps(r), file=sys.stderr, flush=True)
    finally:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
    med = {s: statistics.median(r["forwarded_pps"] for r in runs if r["setup"] == s) for s in ("front", "default")}
    ratios = [f["forwarded_pps"] / d["forwarded_pps"]
              for f, d in zip([r for r in runs if r["setup"] == "front"], [r for r in runs if r["setup"] == "default"])]
    print(json.dumps({"bench": "xdp_throughput", "commit": os.environ.get("BENCH_COMMIT", "unknown"),
                      "runs_per_setup": a.runs, "frames_per_run": 16384 * a.loops,
                      "median_forwarded_pps": med, "ratio_front_to_default_median": round(statistics.median(ratios), 3),
                      "ratios": [round(x, 3) for x in ratios], "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
