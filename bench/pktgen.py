#!/usr/bin/python3
"""Driver of bench/pktgen.sh: Pktgen-DPDK against fulcrum-dataplane, with testpmd macswap as the
baseline, RFC 2544 style (zero-loss throughput by binary search, fixed offered loads, latency).

Run it through bench/pktgen.sh, which finds pktgen, builds the dataplane and the snapshot and
cleans up. The logic that does not need traffic (arguments, the generated pktgen scripts, the
parsing of pktgen's output, the search, the JSON) is unit-tested in tests/bench/test_pktgen.py.

How pktgen is driven. pktgen runs two generated files given with -f, in order:
  setup.pkt    pktgen CLI commands: the range (traffic) stream of one traffic kind, the single
               packet that pktgen copies for its latency packets (UDP to the latency VIP), and
               `enable 0 latency`.
  control.lua  a loop that waits for trial scripts trial-N.lua that this driver writes into the
               control directory, runs each (dofile) and appends one line per trial to
               results.txt ("FPG trial key=value ..."), then quits pktgen on "FPG quit" or after
               an idle deadline. A trial clears nothing: it reads the cumulative port counters
               before and after (pktgen refreshes them once per second, so it waits
               --settle-ms on each side), and records latency with pktgen's latency sampler
               (samples of pktgen's timestamped latency packets, written to a file on stop).
               pktgen's own latency counters in the line (lat_pkts, lat_min_us, ...) are
               cumulative since pktgen started: kept for reference, the per-trial latency
               comes from the sampler's file.
One pktgen process serves one traffic kind; the device under test (DUT) restarts for every
(packet size, run, DUT) and fulcrum and macswap alternate, as bench/throughput.py does.

The verdict of a trial. pktgen retries a TX burst until the port takes it, so on memif a DUT
that cannot keep up does not lose packets at the generator: it slows the generator down
(back-pressure). A trial therefore fails when either
  loss      = 1 - rx / tx                        > --loss-tolerance  (lost in or after the DUT)
  shortfall = 1 - tx / (requested pps x seconds) > --rate-slack      (offered load not taken)
On a real NIC the DUT's RX ring overflows instead and shows as loss.
"""
import argparse
import json
import math
import os
import pathlib
import re
import signal
import statistics
import sys
import time

SIZES = (64, 128, 256, 512, 1024, 1280, 1518)
KINDS = ("tcp4", "syn4", "tcp6", "syn6", "synpcap4")
PCAP_KINDS = ("synpcap4",)  # replayed from a pcap (pktgen -s): 64-byte frames only
RECORD = "FPG"  # prefix of every machine-readable line the generated Lua prints

# Addresses of the generated snapshot (bench/pktgen.sh writes it with snapshot_spec()).
VIP4, VIP6, VIP_LAT = "198.18.1.1", "2001:db8:1::1", "198.18.1.3"
PORT, LAT_PORT = 80, 5001
CLIENT4, CLIENT6 = "198.19.0.1", "2001:db8:19::1"
GEN_MAC = "02:00:00:00:00:02"


class ArgError(ValueError):
    """A bad option value; the message says which option and what is allowed."""


def int_list(text, what, allowed=None):
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ArgError(f"{what}: '{text}' is not a comma-separated list of integers") from None
    if not vals:
        raise ArgError(f"{what}: empty list")
    if allowed is not None:
        bad = [v for v in vals if v not in allowed]
        if bad:
            raise ArgError(f"{what}: {bad} not allowed; use some of {','.join(map(str, allowed))}")
    return vals


def float_list(text, what, lo, hi):
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ArgError(f"{what}: '{text}' is not a comma-separated list of numbers") from None
    bad = [v for v in vals if not lo < v <= hi]
    if bad:
        raise ArgError(f"{what}: {bad} outside ({lo}, {hi}]")
    return vals


def build_parser():
    ap = argparse.ArgumentParser(prog="pktgen.py", description="see bench/pktgen.sh")
    ap.add_argument("--pktgen", required=True, help="the pktgen binary")
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("--snapshot", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--mode", default="memif", choices=("memif", "nic"))
    ap.add_argument("--kinds", default="tcp4,syn4,tcp6,syn6")
    ap.add_argument("--sizes", default="64,128,256,512,1024,1280,1518")
    ap.add_argument("--flows", type=int, default=4096, help="TCP flows (distinct sources) of tcp4/tcp6")
    ap.add_argument("--duts", default="fulcrum,macswap")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--trial-seconds", type=float, default=5.0)
    ap.add_argument("--settle-ms", type=int, default=1200,
                    help="wait before and after a trial (pktgen refreshes its counters every second)")
    ap.add_argument("--loss-tolerance", type=float, default=0.0, help="fraction of packets, 0 = zero loss")
    ap.add_argument("--rate-slack", type=float, default=0.02,
                    help="fraction of the requested rate the generator may fall short by")
    ap.add_argument("--max-iterations", type=int, default=8)
    ap.add_argument("--resolution", type=float, default=None,
                    help="search stops when hi - lo <= this, percent of the link (memif 0.05, nic 0.5)")
    ap.add_argument("--max-rate", type=float, default=None,
                    help="search upper bound, percent of the link (memif 10: memif says 100G; nic 100)")
    ap.add_argument("--warmup-seconds", type=float, default=3.0,
                    help="an uncounted trial at a low rate before each search (pktgen builds its packets)")
    ap.add_argument("--loads", default="", help="fixed offered loads, percent of the link (e.g. 1,5,10)")
    ap.add_argument("--search-seconds", type=float, default=600.0, help="bound of one binary search")
    ap.add_argument("--total-seconds", type=float, default=3600.0, help="bound of the whole run")
    ap.add_argument("--dut-mac", default="02:00:00:00:00:01")
    ap.add_argument("--gen-lcores", default="0@1,1@0",
                    help="pktgen EAL --lcores: main, then one lcore for the port's RX and TX, or two (RX, TX)")
    ap.add_argument("--rsize", type=int, default=14, help="memif log2 ring size (both ends)")
    ap.add_argument("--dut-lcores", default="0@0,1@1", help="DUT EAL --lcores: main, then the worker")
    ap.add_argument("--gen-mem", type=int, default=2048, help="MiB; pktgen makes 6 pools of 24,576 mbufs per port")
    ap.add_argument("--dut-mem", type=int, default=512)
    ap.add_argument("--gen-pci", default="", help="nic mode: PCI address of pktgen's port (-a)")
    ap.add_argument("--dut-pci", default="", help="nic mode: PCI address of the DUT's port (-a)")
    ap.add_argument("--hugepages", action="store_true")
    ap.add_argument("--conn-capacity", type=int, default=1 << 20)
    ap.add_argument("--pcap-syns", type=int, default=1 << 20, help="unique SYNs in synpcap4's pcap")
    ap.add_argument("--syn-capacity", type=int, default=131072,
                    help="DUT --conn-capacity for synpcap4: below --pcap-syns, so every SYN evicts an entry")
    ap.add_argument("--commit", default="unknown", help="recorded in the JSON")
    ap.add_argument("--json", required=True)
    ap.add_argument("--plot", default="", help="PNG (default: the JSON path with .png)")
    return ap


def parse_args(argv):
    """Parses and checks the options; raises ArgError with what was wrong."""
    a = build_parser().parse_args(argv)
    a.kinds = [k for k in a.kinds.split(",") if k]
    bad = [k for k in a.kinds if k not in KINDS]
    if bad or not a.kinds:
        raise ArgError(f"--kinds: {bad or 'empty'} not known; use some of {','.join(KINDS)}")
    a.sizes = int_list(a.sizes, "--sizes", SIZES)
    if any(k in PCAP_KINDS for k in a.kinds) and a.sizes != [64]:
        raise ArgError(f"--kinds {','.join(k for k in a.kinds if k in PCAP_KINDS)} replays 64-byte frames "
                       "from a pcap: use --sizes 64 (run other kinds separately)")
    a.duts = [d for d in a.duts.split(",") if d]
    if not a.duts or any(d not in ("fulcrum", "macswap") for d in a.duts):
        raise ArgError(f"--duts: '{','.join(a.duts)}'; use fulcrum, macswap or both")
    a.loads = float_list(a.loads, "--loads", 0.0, 100.0) if a.loads else []
    if a.max_rate is None:
        a.max_rate = 10.0 if a.mode == "memif" else 100.0
    if a.resolution is None:
        a.resolution = 0.05 if a.mode == "memif" else 0.5
    checks = [
        (1 <= a.flows <= 65536, "--flows must be in 1..65536 (one source address each)"),
        (1024 <= a.pcap_syns <= 1 << 22, "--pcap-syns must be in 1024..4194304"),
        (1 <= a.runs <= 100, "--runs must be in 1..100"),
        (0.5 <= a.trial_seconds <= 600, "--trial-seconds must be in 0.5..600"),
        (1000 <= a.settle_ms <= 10000, "--settle-ms must be in 1000..10000 (pktgen's counters tick once a second)"),
        (0.0 <= a.loss_tolerance < 1.0, "--loss-tolerance is a fraction in [0, 1)"),
        (0.0 <= a.rate_slack < 1.0, "--rate-slack is a fraction in [0, 1)"),
        (1 <= a.max_iterations <= 64, "--max-iterations must be in 1..64"),
        (0.0 < a.resolution <= 50.0, "--resolution must be in (0, 50] percent"),
        (0.0 < a.max_rate <= 100.0, "--max-rate must be in (0, 100] percent"),
        (a.search_seconds > 0 and a.total_seconds > 0, "--search-seconds and --total-seconds must be positive"),
        (0.0 <= a.warmup_seconds <= 60, "--warmup-seconds must be in 0..60"),
        (re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", a.dut_mac) is not None, "--dut-mac must be a MAC address"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ArgError(msg)
    if a.mode == "nic" and not (a.gen_pci and a.dut_pci):
        raise ArgError("--mode nic needs --gen-pci and --dut-pci (the two ports cabled back to back)")
    if a.mode == "memif" and (a.gen_pci or a.dut_pci):
        raise ArgError("--gen-pci/--dut-pci are for --mode nic only")
    if len(a.dut_lcores.split(",")) != 2:
        raise ArgError("--dut-lcores needs two lcores, 'MAIN@CPU,WORKER@CPU' (e.g. 0@0,1@1)")
    if len(a.gen_lcores.split(",")) not in (2, 3):
        raise ArgError("--gen-lcores needs 'MAIN@CPU,RX@CPU,TX@CPU' or 'MAIN@CPU,RXTX@CPU' (e.g. 0@1,1@0,2@0)")
    if not 8 <= a.rsize <= 15:
        raise ArgError("--rsize must be in 8..15 (memif log2 ring size)")
    if not a.plot:
        a.plot = str(pathlib.Path(a.json).with_suffix(".png"))
    return a


def port_matrix(gen_lcores):
    """pktgen's -m for port 0 from --gen-lcores: "1.0" (one lcore does RX and TX) or "[1:2].0".

    With one lcore, pktgen retries a full TX ring without receiving meanwhile, so on memif the
    DUT's transmit ring back to it can fill and the DUT drops (tx_full); separate lcores avoid
    that when each has a CPU of its own (on 2 CPUs they do worse: the RX lcore starves)."""
    ids = [x.split("@")[0] for x in gen_lcores.split(",")[1:]]
    return f"{ids[0]}.0" if len(ids) == 1 else f"[{ids[0]}:{ids[1]}].0"


# ---- generated pktgen scripts --------------------------------------------------------------

def snapshot_spec(servers=16):
    """fulcrum-snapshot input: DSR TCP services on an IPv4 and an IPv6 VIP, and a DSR UDP service
    for pktgen's latency packets (UDP/IPv4, copied from the single packet)."""
    def srv(base, v6=False):
        return [{"slot": base + i, "address": (f"2001:db8:2::{i + 1:x}" if v6 else f"198.18.2.{base + i + 1}"),
                 "mac": f"02:00:00:00:{2 + base // 16:02x}:{i + 1:02x}", "weight": 1} for i in range(servers)]
    return {"generation": 1, "hash_seed": 2024, "mtu": 1500,
            "services": [
                {"id": 1, "name": "tcp4", "vip": VIP4, "port": PORT, "protocol": "tcp", "scheduler": "maglev",
                 "forwarding": "dsr", "table_size": 65537, "servers": srv(0)},
                {"id": 2, "name": "tcp6", "vip": VIP6, "port": PORT, "protocol": "tcp", "scheduler": "maglev",
                 "forwarding": "dsr", "table_size": 65537, "servers": srv(16, v6=True)},
                {"id": 3, "name": "latency", "vip": VIP_LAT, "port": LAT_PORT, "protocol": "udp",
                 "scheduler": "maglev", "forwarding": "dsr", "table_size": 251, "servers": srv(32)}]}


def v6_plus(base, n):
    """2001:db8:19::1 + n, as text pktgen parses."""
    import ipaddress
    return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address(base)) + n))


def v4_plus(base, n):
    import ipaddress
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address(base)) + n))


def setup_commands(kind, flows, dut_mac, size=64):
    """pktgen CLI lines that set up port 0 for one traffic kind.

    tcpN: TCP ACKs of `flows` established flows (sources CLIENT + 0..flows-1, source port 1024)
    to the VIP, the balancer's steady state. synN: bare SYNs whose source address (65,535
    values) and source port (64,511 values) both step every packet; the counts are coprime, so
    the pairs would repeat only after 65,535 x 64,511 packets. pktgen 23.03 writes the range
    fields into each of its 24,576 range mbufs once and recycles them, though: its stream
    repeats after 24,576 SYNs, which are new connections only once per idle timeout."""
    if kind not in KINDS:
        raise ArgError(f"traffic kind '{kind}' not known; use one of {','.join(KINDS)}")
    latency = [
        # The single packet is what pktgen copies for its latency packets (always UDP/IPv4).
        "set 0 type ipv4",
        "set 0 proto udp",
        f"set 0 dst mac {dut_mac}",
        f"set 0 src ip {CLIENT4}/16",
        f"set 0 dst ip {VIP_LAT}",
        "set 0 sport 1024",
        f"set 0 dport {LAT_PORT}",
        f"set 0 size {size}",
    ]
    if kind in PCAP_KINDS:
        # pktgen -s 0:FILE loaded the pcap and turned pcap mode on by itself.
        return ["# generated by bench/pktgen.py: traffic kind " + kind + " (pcap given with -s)", *latency,
                "enable 0 latency"]
    v6 = kind.endswith("6")
    syn = kind.startswith("syn")
    vip = VIP6 if v6 else VIP4
    plus = v6_plus if v6 else v4_plus
    src0 = CLIENT6 if v6 else CLIENT4
    nsrc = 65535 if syn else flows
    inc_ip = "::1" if v6 else "0.0.0.1"
    zero_ip = "::" if v6 else "0.0.0.0"
    c = [
        "# generated by bench/pktgen.py: traffic kind " + kind,
        *latency,
        # The range stream is the traffic.
        f"range 0 type {'ipv6' if v6 else 'ipv4'}",
        "range 0 proto tcp",
        f"range 0 dst mac start {dut_mac}",
        f"range 0 dst mac min {dut_mac}",
        f"range 0 dst mac max {dut_mac}",
        "range 0 dst mac inc 00:00:00:00:00:00",
        f"range 0 src mac start {GEN_MAC}",
        f"range 0 src mac min {GEN_MAC}",
        f"range 0 src mac max {GEN_MAC}",
        "range 0 src mac inc 00:00:00:00:00:00",
        f"range 0 dst ip start {vip}",
        f"range 0 dst ip min {vip}",
        f"range 0 dst ip max {vip}",
        f"range 0 dst ip inc {zero_ip}",
        f"range 0 src ip start {src0}",
        f"range 0 src ip min {src0}",
        f"range 0 src ip max {plus(src0, nsrc - 1)}",
        f"range 0 src ip inc {inc_ip if nsrc > 1 else zero_ip}",
        f"range 0 dst port start {PORT}",
        f"range 0 dst port min {PORT}",
        f"range 0 dst port max {PORT}",
        "range 0 dst port inc 0",
        "range 0 src port start 1024",
        "range 0 src port min 1024",
        f"range 0 src port max {65534 if syn else 1024}",
        f"range 0 src port inc {1 if syn else 0}",
        f"range 0 size start {size}",
        f"range 0 size min {size}",
        f"range 0 size max {size}",
        "range 0 size inc 0",
        "range 0 tcp flag clr all",
        f"range 0 tcp flag set {'syn' if syn else 'ack'}",
        "enable 0 range",
        "enable 0 latency",
    ]
    return c


def lua_str(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def control_lua(ctl_dir, results, idle_ms, max_trials):
    """The Lua loop pktgen runs (-f control.lua): runs trial-1.lua, trial-2.lua, ... as the
    driver writes them, bounded in count and in idle time."""
    return f"""-- generated by bench/pktgen.py: runs the trial scripts the driver drops into the
-- control directory, one at a time; every result is one line "{RECORD} ..." in the results file.
local ctl, results = {lua_str(ctl_dir)}, {lua_str(results)}
function fpg_emit(s)
  local f = assert(io.open(results, "a"))
  f:write(s, "\\n")
  f:close()
  print(s)
end
local function exists(p)
  local f = io.open(p, "r")
  if f then f:close() return true end
  return false
end
-- Seconds since boot, 10 ms resolution: pktgen.delay() can oversleep on a loaded host, so the
-- window is measured, not assumed.
local function now()
  local f = assert(io.open("/proc/uptime", "r"))
  local t = f:read("n")
  f:close()
  return t
end
function fpg_trial(id, size, rate, ms, settle, latfile, nsamples)
  pktgen.stop("0")
  if size ~= fpg_size then
    -- A new size makes pktgen rebuild all its range mbufs at the next start (slow): only then.
    pktgen.set("0", "size", size)
    pktgen.range.pkt_size("0", "start", size)
    pktgen.range.pkt_size("0", "min", size)
    pktgen.range.pkt_size("0", "max", size)
    fpg_size = size
  end
  -- pktgen refreshes the port's link state (and so its rate pacing) only while it draws its
  -- screen, which is off otherwise to keep the log small.
  pktgen.screen("on")
  pktgen.delay(settle)
  pktgen.screen("off")
  pktgen.set("0", "rate", rate)
  local s0 = pktgen.portStats("0", "port")[0]
  pktgen.latsampler_params("0", "simple", nsamples, 1000, latfile)
  pktgen.latsampler("0", "on")
  local t0 = now()
  pktgen.start("0")
  pktgen.delay(ms)
  pktgen.stop("0")
  local t1 = now()
  pktgen.latsampler("0", "off")
  pktgen.delay(settle)
  local s1 = pktgen.portStats("0", "port")[0]
  local p = pktgen.pktStats("0")[0]
  local lat = p.latency
  fpg_emit(string.format("{RECORD} trial id=%d link=%s size=%d rate=%s ms=%d secs=%.2f tx=%d rx=%d ierrors=%d imissed=%d oerrors=%d rx_nombuf=%d lat_pkts=%d lat_skipped=%d lat_min_us=%.3f lat_max_us=%.3f latfile=%s",
    id, tostring(pktgen.linkState("0")[0]), size, tostring(rate), ms, t1 - t0, s1.opackets - s0.opackets, s1.ipackets - s0.ipackets,
    s1.ierrors - s0.ierrors, s1.imissed - s0.imissed, s1.oerrors - s0.oerrors, s1.rx_nombuf - s0.rx_nombuf,
    lat.num_pkts, lat.num_skipped, lat.min_us, lat.max_us, latfile))
end
pktgen.screen("off")
fpg_emit("{RECORD} ready link=" .. tostring(pktgen.linkState("0")[0]))
local n, idle = 1, 0
while n <= {int(max_trials)} do
  local path = ctl .. "/trial-" .. n .. ".lua"
  if exists(path) then
    idle = 0
    local ok, err = pcall(dofile, path)
    if not ok then fpg_emit("{RECORD} error id=" .. n .. " msg=" .. tostring(err):gsub("%s", "_")) end
    if exists(ctl .. "/quit") then break end
    n = n + 1
  else
    if exists(ctl .. "/quit") then break end
    pktgen.delay(50)
    idle = idle + 50
    if idle > {int(idle_ms)} then fpg_emit("{RECORD} error id=" .. n .. " msg=idle_timeout") break end
  end
end
fpg_emit("{RECORD} quit")
pktgen.quit()
"""


def trial_lua(tid, size, rate, ms, settle_ms, latfile, nsamples=4000):
    """One trial: `size` bytes on the wire (with the FCS), `rate` percent of the link, `ms`."""
    if size not in SIZES:
        raise ArgError(f"packet size {size} not one of {SIZES}")
    if not 0.0 < rate <= 100.0:
        raise ArgError(f"rate {rate} outside (0, 100] percent")
    return (f"-- generated by bench/pktgen.py\n"
            f"fpg_trial({int(tid)}, {int(size)}, {lua_str(f'{rate:.4f}')}, {int(ms)}, {int(settle_ms)}, "
            f"{lua_str(latfile)}, {int(nsamples)})\n")


def write_syn_pcap(path, n, dut_mac):
    """n TCP SYNs to VIP4:80, each from its own (198.19.x.y, port), made as bench/gen_pcap.py
    makes them (60-byte frames with valid checksums: 64 bytes on the wire)."""
    import gen_pcap
    from fulcrumlab import write_pcap
    mac = gen_pcap.mac_bytes(dut_mac)
    vip = bytes(int(x) for x in VIP4.split("."))
    write_pcap(path, (gen_pcap.frame(mac, gen_pcap.client(i)[0], vip, gen_pcap.client(i)[1], 0x02, i)
                      for i in range(n)))


# ---- parsing ---------------------------------------------------------------------------------

def parse_records(text):
    """The "FPG kind key=value ..." lines of pktgen's output or results file, as dicts (numbers
    converted); other lines (pktgen's own output, screen codes) are ignored."""
    out = []
    for line in text.splitlines():
        i = line.find(RECORD + " ")
        if i < 0:
            continue
        parts = line[i:].split()
        if len(parts) < 2:
            continue
        rec = {"record": parts[1]}
        for p in parts[2:]:
            k, sep, v = p.partition("=")
            if not sep:
                continue
            try:
                rec[k] = int(v)
            except ValueError:
                try:
                    rec[k] = float(v)
                except ValueError:
                    rec[k] = v
        out.append(rec)
    return out


def link_mbps(ready):
    """Link speed from the ready record's link state, "<UP-10000-FD>"; None when down."""
    m = re.search(r"UP-(\d+)-", str(ready.get("link", "")))
    return int(m.group(1)) if m else None


def parse_latency_file(text):
    """Latency sampler output: a "Latency" header, then one sample in nanoseconds per line."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    if not lines or lines[0] != "Latency":
        raise ValueError("not a pktgen latency sampler file (first line is not 'Latency')")
    try:
        return [int(x) for x in lines[1:]]
    except ValueError as e:
        raise ValueError(f"bad latency sample: {e}") from None


def percentile(xs, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(xs)
    k = max(1, math.ceil(p / 100.0 * len(s)))
    return s[k - 1]


def latency_summary(samples_ns):
    if not samples_ns:
        return {"samples": 0, "min_us": None, "mean_us": None, "p99_us": None, "max_us": None}
    return {"samples": len(samples_ns), "min_us": min(samples_ns) / 1e3,
            "mean_us": statistics.fmean(samples_ns) / 1e3, "p99_us": percentile(samples_ns, 99) / 1e3,
            "max_us": max(samples_ns) / 1e3}


def requested_pps(link, rate_pct, size):
    """Packets per second pktgen aims at: `rate_pct` of `link` Mbit/s, with 20 bytes of preamble
    and inter-frame gap per frame (`size` includes the FCS)."""
    return link * 1e6 / ((size + 20) * 8) * rate_pct / 100.0


def judge(rec, link, loss_tol, slack):
    """The verdict of one trial record (see the module doc)."""
    tx, rx = rec["tx"], rec["rx"]
    # The measured window (start to stop) when the record has it, else the requested one.
    secs = rec.get("secs") or rec["ms"] / 1000.0
    want = requested_pps(link, float(rec["rate"]), rec["size"]) * secs
    loss = 1.0 - rx / tx if tx else 1.0
    shortfall = 1.0 - tx / want if want else 1.0
    return {"rate_pct": float(rec["rate"]), "size": rec["size"], "seconds": secs, "tx": tx, "rx": rx,
            "offered_mpps": want / secs / 1e6, "tx_mpps": tx / secs / 1e6, "rx_mpps": rx / secs / 1e6,
            "loss": max(0.0, loss), "shortfall": max(0.0, shortfall),
            "passed": loss <= loss_tol and shortfall <= slack}


def zero_loss_search(trial, max_rate, resolution, max_iterations, deadline_s, clock=time.monotonic):
    """RFC 2544 throughput: the highest rate (percent) at which trial(rate) passes.

    trial(rate) returns a dict with "passed". First the maximum rate; if it fails, a binary
    search between 0 and it, stopping when hi - lo <= resolution, after max_iterations trials
    in all, or when deadline_s has passed. Returns {"rate_pct": best passing rate or 0.0,
    "best": its trial or None, "trials": [...], "stopped": why}."""
    t0 = clock()
    trials = []
    lo, hi, best = 0.0, max_rate, None
    rate = max_rate
    stopped = "resolution"
    while True:
        if len(trials) >= max_iterations:
            stopped = "max_iterations"
            break
        if clock() - t0 > deadline_s:
            stopped = "deadline"
            break
        r = trial(rate)
        r = dict(r, rate_pct=rate)
        trials.append(r)
        if r["passed"]:
            lo, best = rate, r
            if rate >= max_rate:
                stopped = "max_rate_passed"
                break
        else:
            hi = rate
        if hi - lo <= resolution:
            break
        rate = round((lo + hi) / 2.0, 4)
    return {"rate_pct": lo, "best": best, "trials": trials, "stopped": stopped}


def summarise(results):
    """Per kind, size and DUT: the median over runs of the zero-loss Mpps (received), latency
    at that rate, and the ratio fulcrum / macswap."""
    rows = []
    for kind, by_size in results.items():
        for size, by_dut in by_size.items():
            row = {"kind": kind, "size": int(size)}
            for dut, runs in by_dut.items():
                mpps = [r["search"]["best"]["rx_mpps"] if r["search"]["best"] else 0.0 for r in runs]
                row[dut] = {"zero_loss_mpps": statistics.median(mpps), "runs_mpps": mpps,
                            "zero_loss_rate_pct": statistics.median(r["search"]["rate_pct"] for r in runs)}
                # Fixed offered loads: per load, the medians over the runs.
                loads = sorted({f["rate_pct"] for r in runs for f in r["fixed"]})
                row[dut]["fixed"] = [
                    {"rate_pct": load,
                     "offered_mpps": statistics.median(f["offered_mpps"] for r in runs for f in r["fixed"]
                                                       if f["rate_pct"] == load),
                     "rx_mpps": statistics.median(f["rx_mpps"] for r in runs for f in r["fixed"]
                                                  if f["rate_pct"] == load),
                     "loss": statistics.median(f["loss"] for r in runs for f in r["fixed"] if f["rate_pct"] == load)}
                    for load in loads]
                lats = [r["search"]["best"]["latency"] for r in runs
                        if r["search"]["best"] and r["search"]["best"].get("latency", {}).get("samples")]
                for key in ("min_us", "mean_us", "p99_us"):
                    row[dut][key] = statistics.median(l[key] for l in lats) if lats else None
            if "fulcrum" in row and "macswap" in row and row["macswap"]["zero_loss_mpps"]:
                row["ratio"] = row["fulcrum"]["zero_loss_mpps"] / row["macswap"]["zero_loss_mpps"]
            rows.append(row)
    return rows


def plot(summary, png):
    """Zero-loss throughput and latency (mean, p99) against frame size: one colour per traffic
    kind, solid for fulcrum and dashed for macswap."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    series = {}
    for row in summary:
        for dut in ("fulcrum", "macswap"):
            if dut in row:
                series.setdefault((row["kind"], dut), []).append((row["size"], row[dut]))
    colours = {k: f"C{i}" for i, k in enumerate(KINDS)}
    for (kind, dut), pts in sorted(series.items()):
        pts.sort()
        style = dict(color=colours[kind], linestyle="-" if dut == "fulcrum" else "--")
        ax1.plot([p[0] for p in pts], [p[1]["zero_loss_mpps"] for p in pts], marker="o", label=f"{dut} {kind}",
                 **style)
        lat = [p for p in pts if p[1]["p99_us"] is not None]
        if lat:
            ax2.plot([p[0] for p in lat], [p[1]["p99_us"] for p in lat], marker="x", label=f"{dut} {kind} p99",
                     **style)
            ax2.plot([p[0] for p in lat], [p[1]["mean_us"] for p in lat], marker="o", markersize=3, linewidth=0.8,
                     label=f"{dut} {kind} mean", **style)
    ax1.set(xlabel="frame size (bytes)", ylabel="zero-loss throughput (Mpps)", title="Throughput (RFC 2544)")
    ax2.set(xlabel="frame size (bytes)", ylabel="round trip (µs, log)", title="Latency at the zero-loss rate",
            yscale="log")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def result_document(args, summary, results, meta):
    return {"tool": "bench/pktgen.sh", "meta": meta,
            "settings": {k: getattr(args, k) for k in (
                "mode", "kinds", "sizes", "flows", "duts", "runs", "trial_seconds", "loss_tolerance",
                "rate_slack", "max_iterations", "resolution", "max_rate", "loads", "warmup_seconds")},
            "summary": summary, "results": results}


# ---- processes -------------------------------------------------------------------------------

def log(msg):
    print(msg, flush=True)


class Pktgen:
    """One pktgen process (one traffic kind), driven through trial scripts in its control dir."""

    def __init__(self, a, kind, tag, child_cls):
        self.a = a
        self.dir = pathlib.Path(a.workdir) / f"pktgen-{kind}"
        self.dir.mkdir(parents=True, exist_ok=True)
        for f in self.dir.iterdir():
            f.unlink()
        self.results = self.dir / "results.txt"
        self.results.touch()
        self.n = 0
        (self.dir / "setup.pkt").write_text("\n".join(setup_commands(kind, a.flows, a.dut_mac)) + "\n")
        idle_ms = int(a.total_seconds * 1000)
        (self.dir / "control.lua").write_text(control_lua(str(self.dir), str(self.results), idle_ms, 100000))
        self.prefix = f"fpgen{tag}{kind}"
        if a.mode == "memif":
            sock = pathlib.Path(a.workdir) / f"memif-{kind}.sock"
            if sock.exists():  # left by a pktgen that was killed: memif would refuse to listen
                sock.unlink()
            dev = ["--no-pci", "--vdev", f"net_memif0,role=server,id=0,socket={a.workdir}/memif-{kind}.sock,"
                   f"socket-abstract=no,rsize={a.rsize}"]
        else:
            dev = ["-a", a.gen_pci]
        mem = ["--huge-unlink"] if a.hugepages else ["--no-huge"]
        eal = ["--lcores", a.gen_lcores, *mem, "-m", str(a.gen_mem), "--file-prefix", self.prefix,
               "--log-level", "*:warning", *dev]
        pcap = []
        if kind in PCAP_KINDS:
            pcap_path = self.dir / "syns.pcap"
            write_syn_pcap(pcap_path, a.pcap_syns, a.dut_mac)
            pcap = ["-s", f"0:{pcap_path}"]
        argv = [a.pktgen, *eal, "--", "-P", "-m", port_matrix(a.gen_lcores), *pcap,
                "-f", str(self.dir / "setup.pkt"), "-f", str(self.dir / "control.lua")]
        self.child = child_cls(argv, self.dir / "pktgen.log", a.total_seconds + 120, stdin=None)
        self.ready = self.wait_record(lambda r: r["record"] == "ready", 120, "pktgen start")

    def records(self):
        return parse_records(self.results.read_text(errors="replace"))

    def wait_record(self, pred, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for r in self.records():
                if r["record"] == "error":
                    raise RuntimeError(f"{what}: pktgen reported {r}; log {self.child.logfile}")
                if pred(r):
                    return r
            if not self.child.alive():
                raise RuntimeError(f"{what}: pktgen exited ({self.child.proc.returncode}); log "
                                   f"{self.child.logfile}:\n{self.child.text()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{what}: nothing from pktgen after {timeout} s; log {self.child.logfile}")

    def trial(self, size, rate, seconds=None):
        self.n += 1
        latfile = self.dir / f"lat-{self.n}.txt"
        ms = int((seconds or self.a.trial_seconds) * 1000)
        tmp = self.dir / f".trial-{self.n}.lua"
        tmp.write_text(trial_lua(self.n, size, rate, ms, self.a.settle_ms, str(latfile)))
        tmp.rename(self.dir / f"trial-{self.n}.lua")  # atomic: pktgen never sees half a script
        n = self.n
        rec = self.wait_record(lambda r: r["record"] == "trial" and r.get("id") == n,
                               ms / 1000 + 2 * self.a.settle_ms / 1000 + 60, f"trial {n}")
        link = link_mbps(rec)
        if link is None:
            raise RuntimeError(f"trial {n}: pktgen's port was down ({rec.get('link')}); log {self.child.logfile}")
        v = judge(rec, link, self.a.loss_tolerance, self.a.rate_slack)
        v["link_mbps"] = link
        try:
            v["latency"] = latency_summary(parse_latency_file(latfile.read_text()))
        except (OSError, ValueError) as e:
            v["latency"] = latency_summary([])
            v["latency_error"] = str(e)
        v["pktgen"] = {k: rec[k] for k in ("ierrors", "imissed", "oerrors", "rx_nombuf", "lat_pkts",
                                           "lat_skipped", "lat_min_us", "lat_max_us") if k in rec}
        log(f"    {'warm-up' if seconds else 'trial'} {n} {size} B {rate:.3f} % offered {v['offered_mpps']:.3f} Mpps: tx {v['tx']} rx {v['rx']} "
            f"loss {v['loss']:.5f} shortfall {v['shortfall']:.4f} {'pass' if v['passed'] else 'fail'}")
        return v

    def quit(self):
        (self.dir / "quit").touch()
        try:
            self.wait_record(lambda r: r["record"] == "quit", 10, "pktgen quit")
        except RuntimeError:
            pass
        self.child.stop()


class Duts:
    """Starts the device under test: fulcrum-dataplane or testpmd macswap, one worker lcore,
    sending every packet back out of the port it came in on (memif client, or the PCI port)."""

    def __init__(self, a, tag, tp):
        self.a, self.tag, self.tp, self.seq = a, tag, tp, 0

    def eal(self, prefix, kind):
        a = self.a
        mem = ["--huge-unlink"] if a.hugepages else ["--no-huge"]
        if a.mode == "memif":
            dev = ["--no-pci", "--vdev", f"net_memif0,role=client,id=0,socket={a.workdir}/memif-{kind}.sock,"
                   f"socket-abstract=no,rsize={a.rsize},mac={a.dut_mac}"]
        else:
            dev = ["-a", a.dut_pci]
        return ["--lcores", a.dut_lcores, *mem, "-m", str(a.dut_mem), "--file-prefix", prefix,
                "--log-level", "*:warning", *dev]

    def start_once(self, dut, kind):
        a, tp = self.a, self.tp
        self.seq += 1
        prefix = f"fpdut{self.tag}x{self.seq}"
        logf = pathlib.Path(a.workdir) / f"dut-{kind}-{dut}-{self.seq}.log"
        eal = self.eal(prefix, kind)
        if dut == "fulcrum":
            sock = pathlib.Path(a.workdir) / f"{prefix}.sock"
            uplink = "net_memif0" if a.mode == "memif" else a.dut_pci
            d = tp.Child([a.dataplane, *eal, "--", "--uplink", uplink, "--snapshot", a.snapshot,
                          "--control-socket", sock, "--conn-capacity",
                          a.syn_capacity if kind in PCAP_KINDS else a.conn_capacity, "--idle-sleep-us", "0"],
                         logf, a.total_seconds + 300)
            d.sock = sock
        else:
            d = tp.Testpmd(eal, ["--forward-mode=macswap", "--port-topology=loop", "--nb-cores=1",
                                 "--total-num-mbufs=16384"], logf, a.total_seconds + 300)
        d.prefix = prefix
        try:
            tp.Bench.wait_dut_ready(None, d, dut)
        except BaseException:
            d.stop()
            tp.remove_dpdk_runtime_dir(prefix)
            raise
        return d

    def start(self, dut, kind):
        # A memif client sometimes fails to connect right after the previous one left.
        return self.tp.start_memif_client(lambda: self.start_once(dut, kind), dut, 3, 2, 2)

    def stop(self, d, dut):
        if dut == "fulcrum":
            d.stop()
        else:
            d.quit()
        self.tp.remove_dpdk_runtime_dir(d.prefix)


def main(argv=None):
    try:
        a = parse_args(sys.argv[1:] if argv is None else argv)
    except ArgError as e:
        print(f"pktgen.py: {e}", file=sys.stderr)
        return 2
    # bench/throughput.py holds the process handling both benchmarks share.
    import throughput as tp
    t_end = time.monotonic() + a.total_seconds
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: (tp.stop_all(), sys.exit(130)))
    tag = str(os.getpid())
    duts = Duts(a, tag, tp)
    def measured(g, d, dut, size, rate):
        """A trial, with the dataplane's own counters over it: where the losses happened."""
        def checked_trial():
            v = g.trial(size, rate)
            if not d.alive():  # a DUT that died would otherwise read as 100 % loss
                raise RuntimeError(f"{dut} exited ({d.proc.returncode}) during a trial; log {d.logfile}:\n"
                                   f"{d.text()[-3000:]}")
            return v
        if dut != "fulcrum":
            return checked_trial()
        c0 = tp.fulcrum_counters(d.sock)
        v = checked_trial()
        c1 = tp.fulcrum_counters(d.sock)
        v["dut"] = {"rx": c1["rx"] - c0["rx"], "forwarded": c1["forwarded"] - c0["forwarded"],
                    "dropped": c1["dropped"] - c0["dropped"], "inserts": c1["inserts"] - c0["inserts"],
                    "drops_total": c1["drops"]}
        log(f"      dataplane: rx {v['dut']['rx']} forwarded {v['dut']['forwarded']} dropped {v['dut']['dropped']} "
            f"new flows {v['dut']['inserts']}; drops so far {c1['drops']}")
        return v

    results = {}
    meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": a.commit,
            "pktgen": a.pktgen, "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()}
    try:
        for kind in a.kinds:
            g = Pktgen(a, kind, tag, tp.Child)
            log(f"\n== {kind}: pktgen ready (setup {g.dir / 'setup.pkt'}, control {g.dir / 'control.lua'})")
            results[kind] = {}
            try:
                for size in a.sizes:
                    results[kind][size] = {d: [] for d in a.duts}
                    for run in range(a.runs):
                        for dut in a.duts:
                            if time.monotonic() > t_end:
                                raise RuntimeError(f"--total-seconds {a.total_seconds} reached")
                            d = duts.start(dut, kind)
                            try:
                                if a.warmup_seconds:
                                    # The first start after the DUT connects also builds pktgen's
                                    # packets and primes the DUT: not a measurement.
                                    g.trial(size, min(a.max_rate, a.resolution * 4), a.warmup_seconds)
                                deadline = min(a.search_seconds, t_end - time.monotonic())
                                s = zero_loss_search(lambda r: measured(g, d, dut, size, r), a.max_rate,
                                                     a.resolution, a.max_iterations, deadline)
                                fixed = [measured(g, d, dut, size, load) for load in a.loads]
                            finally:
                                duts.stop(d, dut)
                            results[kind][size][dut].append({"search": s, "fixed": fixed})
                            best = s["best"]
                            lat = best["latency"] if best else {}
                            log(f"  {kind} {size:5d} B run {run + 1} {dut:8s} zero-loss {s['rate_pct']:7.3f} % "
                                f"= {best['rx_mpps'] if best else 0:.3f} Mpps ({len(s['trials'])} trials, "
                                f"{s['stopped']}); latency min/mean/p99 {lat.get('min_us')}/{lat.get('mean_us')}/"
                                f"{lat.get('p99_us')} us")
            finally:
                g.quit()
                tp.remove_dpdk_runtime_dir(g.prefix)
    finally:
        tp.stop_all()
    summary = summarise(results)
    log("\n== summary (zero-loss Mpps received, median of runs)")
    for row in summary:
        f = row.get("fulcrum", {}).get("zero_loss_mpps")
        m = row.get("macswap", {}).get("zero_loss_mpps")
        log(f"{row['kind']:5s} {row['size']:5d} B  fulcrum {f if f is not None else '-'}  macswap "
            f"{m if m is not None else '-'}  ratio {row.get('ratio', '-')}")
        for dut in ("fulcrum", "macswap"):
            for f in row.get(dut, {}).get("fixed", []):
                log(f"      {dut} at {f['rate_pct']} % ({f['offered_mpps']:.3f} Mpps offered): "
                    f"{f['rx_mpps']:.3f} Mpps received, loss {f['loss']:.5f}")
    doc = result_document(a, summary, {k: {str(s): v for s, v in d.items()} for k, d in results.items()}, meta)
    pathlib.Path(a.json).write_text(json.dumps(doc, indent=1))
    plot(summary, a.plot)
    log(f"\n== wrote {a.json} and {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
