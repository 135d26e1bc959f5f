#!/usr/bin/python3
"""Driver of bench/throughput.sh: fulcrum-dataplane vs. testpmd macswap over a memif pair.

Run it through bench/throughput.sh, which builds the tools, writes the pcaps and cleans up.

Set-up per measurement (one generator per case, the device under test (DUT) restarted per run):

  generator: dpdk-testpmd, io forwarding on one lcore (CPU 0), ports chained:
      net_pcap0 (rx_pcap=CASE.pcap, infinite_rx=1) -> net_memif0 (role=server)
      net_memif0 (what the DUT sends back)          -> net_null0 (no-rx=1: a sink)
  DUT, one forwarding lcore (CPU 1), memif role=client on the same socket, sending back out of
  the port it received on:
      fulcrum-dataplane --uplink net_memif0 --snapshot ...      (A)
      dpdk-testpmd --forward-mode=macswap --port-topology=loop  (B: the baseline)
  Main lcores sleep; the generator's sits on CPU 1, the DUT's on CPU 0.

The rate of a run is the generator's memif RX rate (packets the DUT sent back) over a window of
--seconds after --warmup seconds: testpmd's "Rx-pps" between two "show port stats 1", which
it computes from the TSC between the two commands. A and B alternate run by run. Each DUT also
reports its busy TSC cycles per packet, over the polls that received frames (macswap:
--record-core-cycles, its forwarding call; Fulcrum: its queue's busy_cycles counter, the whole
loop iteration, so slightly more for the same work): the closing "capacity" table
compares what each would forward if never starved, also in runs where the generator was the
limit.
Every child is started under timeout(1) as a backstop and stopped by its PID.
"""
import argparse
import json
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "lib"))
from fulcrumlab import ControlError, DpClient, remove_dpdk_runtime_dir  # noqa: E402

CHILDREN = []


def log(msg):
    print(msg, flush=True)


class Child:
    """A process in its own session, stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, argv, logfile, limit, stdin=None):
        self.logfile = pathlib.Path(logfile)
        self.out = open(self.logfile, "wb")
        # timeout(1) is a backstop if this driver dies without cleaning up.
        self.proc = subprocess.Popen(["timeout", "--kill-after=30", str(int(limit))] + [str(a) for a in argv],
                                     stdin=stdin, stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        CHILDREN.append(self)

    def alive(self):
        return self.proc.poll() is None

    def text(self):
        return self.logfile.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, wait=15):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self.out.close()
        if self in CHILDREN:
            CHILDREN.remove(self)
        return self.proc.returncode


def stop_all(*_):
    for c in list(CHILDREN):
        c.stop(wait=5)


class Testpmd(Child):
    """An interactive testpmd fed through a pipe; its output goes to a log file."""

    def __init__(self, eal, app, logfile, limit):
        super().__init__(["stdbuf", "-o0", "-e0", "dpdk-testpmd"] + eal + ["--", "-i"] + app, logfile, limit, stdin=subprocess.PIPE)

    def cmd(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def wait_for(self, pattern, count, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            t = self.text()
            if len(re.findall(pattern, t)) >= count:
                return t
            if not self.alive():
                raise RuntimeError(f"{what}: testpmd exited ({self.proc.returncode}); log {self.logfile}:\n{t[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"{what}: no '{pattern}' after {timeout}s; log {self.logfile}:\n{self.text()[-3000:]}")

    def port_stats(self, port, timeout=30):
        marker = f"NIC statistics for port {port} "
        n = self.text().count(marker)
        self.cmd(f"show port stats {port}")
        deadline = time.time() + timeout
        while time.time() < deadline:
            t = self.text()
            if t.count(marker) > n:
                block = t[t.rindex(marker):]
                m_pps = re.search(r"Rx-pps:\s+(\d+)", block)
                m_tx = re.search(r"Tx-pps:\s+(\d+)", block)
                if m_pps and m_tx:
                    return {"rx_packets": int(re.search(r"RX-packets:\s+(\d+)", block).group(1)),
                            "tx_packets": int(re.search(r"TX-packets:\s+(\d+)", block).group(1)),
                            "rx_pps": int(m_pps.group(1)), "tx_pps": int(m_tx.group(1)), "t": time.time()}
            if not self.alive():
                raise RuntimeError(f"testpmd exited; log {self.logfile}")
            time.sleep(0.02)
        raise RuntimeError(f"no port stats from testpmd after {timeout}s; log {self.logfile}")

    def quit(self):
        if self.alive():
            try:
                self.cmd("stop")
                self.cmd("quit")
                self.proc.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                pass
        return self.stop()


def fulcrum_counters(path):
    with DpClient(path) as client:
        c = client.counters()
    q = c["queues"][0]
    ct = c["conntables"][0]
    return {"rx": c["rx"], "forwarded": c["forwarded"], "dropped": c["dropped"], "polls": q["polls"],
            "busy_polls": q["busy_polls"], "busy_cycles": q["busy_cycles"], "tsc_hz": c["tsc_hz"], "inserts": ct["inserts"], "evictions": ct["evictions"],
            "drops": {k: v for k, v in c["drops"].items() if v}}


def median(xs):
    return statistics.median(xs) if xs else float("nan")


class MemifNotConnected(RuntimeError):
    """A DUT's memif did not connect to the generator in any attempt (start_memif_client)."""


# How a memif client's start fails when it did not connect to the listener: testpmd's "Failed
# to connect socket", a link that stays down, or fulcrum-dataplane's port start failing with
# EPERM (its log has memif_connect_client's "Failed to connect socket" just before).
MEMIF_NOT_CONNECTED = ("Failed to connect socket", "memif link not up",
                       "(net_memif): start failed: Operation not permitted")


def start_memif_client(start, what, attempts, pause, pause_max):
    """start() (a DUT that connects to a memif listener) until it connects: the client
    occasionally fails right after the previous one left (the listener is still tearing that
    connection down). Retried after pauses doubling from `pause` up to `pause_max` seconds;
    after `attempts` failures, MemifNotConnected. Other failures are raised at once."""
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except RuntimeError as e:
            msg = str(e)
            if not any(t in msg for t in MEMIF_NOT_CONNECTED):
                raise
            if attempt == attempts:
                raise MemifNotConnected(msg) from e
            log(f"  ({what} did not connect to the generator's memif, attempt {attempt} of {attempts}; "
                f"retrying in {pause} s)")
            time.sleep(pause)
            pause = min(2 * pause, pause_max)


class Bench:
    def __init__(self, a):
        self.a = a
        self.work = pathlib.Path(a.workdir)
        self.tag = f"{os.getpid()}"
        self.seq = 0

    def eal(self, lcores, mem, prefix, vdevs, huge=False):
        # --huge-unlink: no hugepage files stay behind, whatever happens to the process. A DUT
        # whose memif shares its memory (zero-copy) needs all of it in one file per memory type
        # (--single-file-segments, which --huge-unlink excludes); --in-memory keeps that file
        # off the file system.
        if not huge:
            mem_opts = ["--no-huge"]
        elif self.a.zero_copy:
            mem_opts = ["--in-memory", "--single-file-segments"]
        else:
            mem_opts = ["--huge-unlink"]
        e = ["--lcores", lcores] + mem_opts + ["-m", str(mem), "--no-pci", "--file-prefix", prefix,
             "--log-level", "*:warning"]
        for v in vdevs:
            e += ["--vdev", v]
        return e

    def table_capacity(self, case):
        """Fulcrum's --conn-capacity for a case."""
        return self.a.syn_capacity if case == "unique_syn" else self.a.capacity

    def memif_socket(self, case):
        return self.work / f"memif-{case}.sock"

    def memif(self, role, case):
        # The DUT is the client: its MAC, and zero-copy (a client-side mode) when asked for.
        own = ""
        if role == "client":
            own = f",mac={self.a.dut_mac}" + (",zero-copy=yes" if self.a.zero_copy else "")
        return (f"net_memif0,role={role},id=0,socket={self.memif_socket(case)},socket-abstract=no,"
                f"rsize={self.a.rsize}{own}")

    def start_generator(self, case, pcap, frames):
        mbufs = frames + 65536
        mem = max(512, (mbufs * 640 >> 20) + 256)  # 256-byte data rooms: ~640 B per mbuf with overheads
        prefix = f"fbgen{self.tag}{case[:3]}"
        # A generator stopped for a restart leaves its memif socket file behind (DPDK 22.11's
        # memif server does not unlink it at close), and the new one's bind would then fail
        # with EADDRINUSE: the file is this script's own, in its work directory.
        self.memif_socket(case).unlink(missing_ok=True)
        g = Testpmd(self.eal(f"0@{self.a.gen_main_cpu},1@{self.a.gen_cpu}", mem, prefix,
                             [f"net_pcap0,rx_pcap={pcap},infinite_rx=1", self.memif("server", case), "net_null0,no-rx=1"]),
                    ["--forward-mode=io", "--port-topology=chained", "--nb-cores=1", f"--burst={self.a.gen_burst}",
                     f"--total-num-mbufs={mbufs}", "--mbuf-size=256"],
                    self.work / f"gen-{case}.log", self.a.limit)
        g.prefix = prefix
        g.wait_for(r"testpmd> ", 1, 180, f"generator for {case}")
        return g

    @staticmethod
    def stop_generator(g):
        g.quit()
        remove_dpdk_runtime_dir(g.prefix)

    def start_dut(self, kind, case):
        self.seq += 1
        prefix = f"fbdut{self.tag}x{self.seq}"
        eal = self.eal(f"0@{self.a.dut_main_cpu},1@{self.a.dut_cpu}", self.a.dut_mem, prefix, [self.memif("client", case)],
                       huge=self.a.hugepages)
        logf = self.work / f"dut-{case}-{kind}-{self.seq}.log"
        if kind == "fulcrum":
            sock = self.work / f"{prefix}.sock"
            cap = self.table_capacity(case)
            d = Child([self.a.dataplane] + eal + ["--", "--uplink", "net_memif0", "--snapshot", self.a.snapshot,
                                                  "--control-socket", sock, "--conn-capacity", cap,
                                                  "--idle-sleep-us", "0"],
                      logf, self.a.limit)
            d.sock = sock
        else:
            d = Testpmd(eal, ["--forward-mode=macswap", "--port-topology=loop", "--nb-cores=1",
                              "--total-num-mbufs=16384", "--record-burst-stats", "--record-core-cycles"], logf, self.a.limit)
        d.prefix = prefix
        try:
            self.wait_dut_ready(d, kind)
        except BaseException:
            d.stop()
            remove_dpdk_runtime_dir(prefix)
            raise
        return d

    def wait_dut_ready(self, d, kind):
        deadline = time.time() + 60
        if kind == "fulcrum":
            while True:
                if not d.alive():
                    raise RuntimeError(f"fulcrum-dataplane exited ({d.proc.returncode}):\n{d.text()[-3000:]}")
                try:
                    with DpClient(d.sock) as client:
                        h = client.health()
                    if h.get("status") == "running" and h.get("snapshot_loaded") and h.get("uplink_link_up"):
                        return
                except (OSError, ControlError, ValueError):
                    pass
                if time.time() > deadline:
                    raise RuntimeError(f"fulcrum-dataplane not forwarding with its memif link up after 60 s:\n{d.text()[-3000:]}")
                time.sleep(0.1)
        d.wait_for(r"testpmd> ", 1, 60, "macswap testpmd")
        d.cmd("start")
        while True:
            d.cmd("show port info 0")
            t = d.wait_for(r"Link status: ", 1, 30, "macswap link")
            if t.rstrip().count("Link status: up") >= 1:
                return
            if time.time() > deadline:
                raise RuntimeError("macswap testpmd: memif link not up after 60 s")
            time.sleep(0.3)

    # Attempts at starting a DUT whose memif did not connect, and the pause before each retry
    # (seconds): doubling, at most RETRY_PAUSE_MAX. After the last, run_case restarts the
    # generator once.
    ATTEMPTS = 3
    RETRY_PAUSE = 2
    RETRY_PAUSE_MAX = 10

    def start_dut_retrying(self, kind, case):
        # Sometimes the generator's listener takes no connection at all any more (five
        # attempts over 24 s all failed, in a run at d5d499f): then MemifNotConnected, and
        # run_case restarts the generator.
        return start_memif_client(lambda: self.start_dut(kind, case), kind, self.ATTEMPTS, self.RETRY_PAUSE,
                                  self.RETRY_PAUSE_MAX)

    def run_one_restarting(self, g, case, pcap, frames, kind):
        """run_one; if the DUT's memif never connected, once more against a fresh generator.
        Returns (the run's result, the generator now in use)."""
        try:
            return self.run_one(g, case, kind), g
        except MemifNotConnected:
            log(f"  ({kind} did not connect in {self.ATTEMPTS} attempts: restarting the generator)")
            self.stop_generator(g)
            g = self.start_generator(case, pcap, frames)
            try:
                return self.run_one(g, case, kind), g
            except BaseException:
                # The caller still holds the generator it passed (stopped above): this one ends here.
                self.stop_generator(g)
                raise

    def run_one(self, g, case, kind):
        d = self.start_dut_retrying(kind, case)
        try:
            g.cmd("start")
            time.sleep(self.a.warmup)
            if kind == "fulcrum":
                c0 = fulcrum_counters(d.sock)
            else:
                d.cmd("clear fwd stats all")
            s0 = g.port_stats(1)
            g.port_stats(0)
            time.sleep(self.a.seconds)
            s1 = g.port_stats(1)
            p1 = g.port_stats(0)
            # Rx-pps of port 1 (memif): what the DUT sent back, over exactly the window (TSC).
            # Rx-pps of port 0 (pcap): what the generator produced; beyond what the memif ring
            # took it is dropped at the generator's memif TX, so offered > returned means the
            # DUT was the bottleneck, offered == returned that the generator was.
            res = {"mpps": s1["rx_pps"] / 1e6,
                   "mpps_check": (s1["rx_packets"] - s0["rx_packets"]) / (s1["t"] - s0["t"]) / 1e6,
                   "offered_mpps": p1["rx_pps"] / 1e6}
            if kind == "fulcrum":
                c1 = fulcrum_counters(d.sock)
                rx = c1["rx"] - c0["rx"]
                busy = c1["busy_polls"] - c0["busy_polls"]
                polls = c1["polls"] - c0["polls"]
                res.update({"dut_rx": rx, "dut_burst": rx / busy if busy else 0.0,
                            "dut_busy": busy / polls if polls else 0.0,
                            "dut_dropped": c1["dropped"] - c0["dropped"],
                            "new_per_pkt": (c1["inserts"] - c0["inserts"]) / rx if rx else 0.0,
                            "evict_per_pkt": (c1["evictions"] - c0["evictions"]) / rx if rx else 0.0,
                            "drops": c1["drops"]})
                # The worker's busy_cycles: the TSC cycles of the polls that received frames (whole
                # iterations; macswap's --record-core-cycles below times its forwarding call);
                # per frame, and the rate if never starved.
                cyc = (c1["busy_cycles"] - c0["busy_cycles"]) / rx if rx else 0.0
                res["dut_busy_cycles_per_pkt"] = cyc
                res["dut_capacity_mpps"] = c1["tsc_hz"] / 1e6 / cyc if cyc else 0.0
            else:
                marker = "Forward statistics for port 0"
                n = d.text().count("CPU cycles/packet")  # the last line of "show fwd stats"
                d.cmd("show fwd stats all")
                t = d.wait_for(r"CPU cycles/packet=[\d.]+ \(.*MHz Clock", n + 1, 30, "macswap fwd stats")
                block = t[t.rindex(marker):]
                m = re.search(r"RX-packets:\s+(\d+)", block)
                b = re.search(r"RX-bursts : (\d+) \[([^\]]*)\]", block)
                res.update({"dut_rx": int(m.group(1)) if m else 0, "dut_bursts": b.group(2) if b else "?"})
                # --record-core-cycles: TSC cycles of the polls that received packets, per packet;
                # the TSC rate over it is what macswap could forward if never starved.
                cyc = re.search(r"CPU cycles/packet=([\d.]+).*?at (\d+) MHz", t[t.rindex(marker):], re.S)
                res["dut_busy_cycles_per_pkt"] = float(cyc.group(1)) if cyc else 0.0
                res["dut_capacity_mpps"] = int(cyc.group(2)) / float(cyc.group(1)) if cyc and float(cyc.group(1)) else 0.0
                td = re.search(r"TX-dropped:\s+(\d+)", block)
                res["dut_dropped"] = int(td.group(1)) if td else 0
            g.cmd("stop")
            return res
        finally:
            if kind == "fulcrum":
                d.stop()
            else:
                d.quit()
            remove_dpdk_runtime_dir(d.prefix)

    def run_case(self, case, pcap, frames):
        cap = self.table_capacity(case)
        log(f"\n== case {case}: {frames} frames in {pcap.name}, {self.a.runs} runs of {self.a.seconds} s "
            f"(warm-up {self.a.warmup} s) per DUT, alternating fulcrum / macswap; Fulcrum's table "
            f"{cap} entries; DUT memory {'hugepages' if self.a.hugepages else '--no-huge'}"
            f"{', memif zero-copy' if self.a.zero_copy else ''}")
        g = self.start_generator(case, pcap, frames)
        rows = {"fulcrum": [], "macswap": []}
        try:
            for r in range(self.a.runs):
                for kind in ("fulcrum", "macswap"):
                    res, g = self.run_one_restarting(g, case, pcap, frames, kind)
                    rows[kind].append(res)
                    extra = ""
                    if kind == "fulcrum":
                        extra = (f"DUT rx/busy poll {res['dut_burst']:.1f}, new/pkt {res['new_per_pkt']:.3f}, "
                                 f"evict/pkt {res['evict_per_pkt']:.3f}, DUT drops {res['dut_dropped']}, "
                                 f"busy cycles/pkt {res['dut_busy_cycles_per_pkt']:.1f} "
                                 f"(= {res['dut_capacity_mpps']:.2f} Mpps if never starved)")
                    else:
                        extra = (f"DUT RX bursts [{res['dut_bursts']}], DUT tx drops {res['dut_dropped']}, "
                                 f"busy cycles/pkt {res['dut_busy_cycles_per_pkt']:.1f} "
                                 f"(= {res['dut_capacity_mpps']:.2f} Mpps if never starved)")
                    log(f"  run {r + 1} {kind:8s} {res['mpps']:7.3f} Mpps (counter check {res['mpps_check']:.3f}, "
                        f"generator produced {res['offered_mpps']:.3f})  {extra}")
        finally:
            self.stop_generator(g)
        return rows


def summary(results):
    """The closing tables of a run, from its results ({case: {"fulcrum": [run], "macswap": [run]}}).

    First what came back to the generator, then each DUT's capacity: the TSC rate over its busy
    cycles per packet, what it would forward if never starved. The second tells the DUTs apart
    also when the generator, not the DUT, set the rate of a run."""
    def ratio(x, y):
        return x / y if y else float("nan")

    out = ["", "== summary (Mpps = packets the generator received back per second; median of the runs)",
           f"{'case':20s} {'fulcrum runs':40s} {'macswap runs':40s} {'fulcrum':>8s} {'macswap':>8s} {'ratio':>6s}"]
    for case, rows in results.items():
        f = [r["mpps"] for r in rows["fulcrum"]]
        m = [r["mpps"] for r in rows["macswap"]]
        mf, mm = median(f), median(m)
        out.append(f"{case:20s} {' '.join(f'{x:.3f}' for x in f):40s} {' '.join(f'{x:.3f}' for x in m):40s} "
                   f"{mf:8.3f} {mm:8.3f} {ratio(mf, mm):6.3f}")
    out += ["", "== capacity (busy TSC cycles per packet in the polls that received frames, and the Mpps "
            "that makes if never starved; median of the runs)",
            f"{'case':20s} {'fulcrum cycles/pkt':>18s} {'macswap cycles/pkt':>18s} {'fulcrum':>8s} {'macswap':>8s} "
            f"{'ratio':>6s}"]
    for case, rows in results.items():
        cf = median([r.get("dut_busy_cycles_per_pkt", 0.0) for r in rows["fulcrum"]])
        cm = median([r.get("dut_busy_cycles_per_pkt", 0.0) for r in rows["macswap"]])
        kf = median([r.get("dut_capacity_mpps", 0.0) for r in rows["fulcrum"]])
        km = median([r.get("dut_capacity_mpps", 0.0) for r in rows["macswap"]])
        out.append(f"{case:20s} {cf:18.1f} {cm:18.1f} {kf:8.3f} {km:8.3f} {ratio(kf, km):6.3f}")
    return out


def main():
    ap = argparse.ArgumentParser(description="see bench/throughput.sh")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--dataplane", required=True)
    ap.add_argument("--snapshot", required=True)
    ap.add_argument("--cases", default="established_dsr,established_ipip,established_dsr_74b,unique_syn")
    ap.add_argument("--frames", type=json.loads, required=True, help='{"case": frames in its pcap}')
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--capacity", type=int, default=1 << 20,
                    help="Fulcrum's --conn-capacity in the established cases")
    ap.add_argument("--syn-capacity", type=int, default=131072)
    ap.add_argument("--dut-mac", default="02:00:00:00:00:01")
    ap.add_argument("--rsize", type=int, default=10)
    ap.add_argument("--gen-burst", type=int, default=32)
    ap.add_argument("--dut-mem", type=int, default=512)
    ap.add_argument("--gen-cpu", type=int, default=0)
    ap.add_argument("--dut-cpu", type=int, default=1)
    ap.add_argument("--hugepages", action="store_true",
                    help="run both DUTs on 2 MiB hugepages (reserved by throughput.sh) instead of --no-huge")
    ap.add_argument("--zero-copy", action="store_true",
                    help="the DUTs' memif in zero-copy client mode (needs --hugepages)")
    ap.add_argument("--json", help="write all results here")
    a = ap.parse_args()
    if a.zero_copy and not a.hugepages:
        ap.error("--zero-copy needs --hugepages: memif's zero-copy client shares the DUT's hugepage memory")
    unknown = [c for c in a.cases.split(",") if c not in a.frames]
    if unknown:
        ap.error(f"--cases: no pcap for {', '.join(repr(c) for c in unknown)} (--frames names "
                 f"{', '.join(sorted(a.frames)) or 'none'}; bench/throughput.sh lists the cases)")
    a.gen_main_cpu = a.dut_cpu
    a.dut_main_cpu = a.gen_cpu
    # Backstop per process: every run of a case, with up to 3 start attempts of 90 s per DUT.
    a.limit = int(a.runs * 2 * (a.seconds + a.warmup + 40 + 3 * 90) + 300)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: (stop_all(), sys.exit(130)))
    b = Bench(a)
    results = {}
    try:
        for case in a.cases.split(","):
            pcap = pathlib.Path(a.workdir) / f"{case}.pcap"
            results[case] = b.run_case(case, pcap, a.frames[case])
    finally:
        stop_all()
    for line in summary(results):
        log(line)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
