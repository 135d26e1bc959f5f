#!/usr/bin/python3
"""Failover time of a Fulcrum pair against a keepalived pair on the same topology
(tests/lib/halab.py). Run through bench/failover.sh; see there for the options.

Per trial: balancer a (priority 150) is master, b (100) backup; a connection-holding load
runs from the client (held connections exchanging every 100 ms plus new connections); then
the case is applied to a:
  kill9    kill -9 of a's VRRP speaker (fulcrumd or keepalived) and its dataplane together,
           as when the host dies;
  sigterm  SIGTERM of a's VRRP speaker alone (its dataplane keeps running): a clean stop with
           a priority-0 advert.
Measured: from the first signal to the first gratuitous ARP for the VIP from b, as captured in
the client namespace (kernel receive timestamps); the longest gap a held connection saw
between two answered exchanges (this includes the 100 ms exchange interval), connections
broken, and the longest gap between two completed new connections. Then a is restarted and
takes the VIP back (preemption) for the next trial. Trials alternate the Fulcrum pair and the
keepalived pair. The summary (medians and worst per pair, case and advert interval) is
printed as JSON.
"""
import argparse
import json
import os
import pathlib
import signal
import statistics
import sys
import tempfile
import time
import traceback

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "lib"))

import fulcrumlab  # noqa: E402
import halab  # noqa: E402
from halab import NODE_ADDR, VIP  # noqa: E402


def interval_label(s):
    return f"{int(round(s * 1000))}ms"


class Bench:
    def __init__(self, lab, args):
        self.lab, self.args = lab, args
        self.setup = None  # (pair kind, advert interval) the nodes run now

    def start_pair(self, kind, interval):
        lab = self.lab
        for n in lab.nodes.values():
            n.stop()
        for name in ("a", "b"):
            node = lab.nodes[name]
            ms = int(round(interval * 1000))
            node.start(kind, ha_overrides={"advert_interval": f"{ms}ms", "lease": f"{3 * ms}ms"},
                       keepalived={"advert_interval": interval})
            lab.wait_state(name, "master" if name == "a" else "backup", timeout=30 + 5 * interval)
        self.setup = (kind, interval)
        self.settle(interval)

    def settle(self, interval):
        """a master, b backup, a answering for the VIP and the client's ARP entry (if any) on a."""
        lab = self.lab
        lab.wait_state("a", "master", timeout=30 + 5 * interval)
        lab.wait_state("b", "backup", timeout=30 + 5 * interval)
        lab.wait_owner({"a"}, timeout=20)
        # No entry yet is as good: the load's first connection resolves the VIP afresh.
        fulcrumlab.wait_for(lambda: lab.client_neigh() in (None, "a"), 20 + 3 * interval, 0.02,
                            what="the client's ARP entry to point at a")

    def restore(self, kind, interval):
        if self.setup != (kind, interval):
            self.start_pair(kind, interval)
            return
        self.lab.a.restart()
        self.settle(interval)

    def trial(self, kind, case, interval):
        lab, a = self.lab, self.args
        self.restore(kind, interval)
        cap = lab.start_capture(duration=120)
        duration = max(6.0, 4.0 + 8 * interval)
        load = lab.start_load(conns=a.conns, duration=duration, new_rate=a.new_rate, timeout=duration)
        # Steady state first: two more adverts from a after the load is up.
        t_ready = time.time()
        fulcrumlab.wait_for(lambda: sum(1 for f in lab.captured(cap) if f["kind"] == "vrrp" and f["t"] >= t_ready
                                        and f["src"] == NODE_ADDR["a"] and f["priority"] > 0) >= 2,
                            10 + 3 * interval, 0.01, what="two adverts from a")
        node = lab.a
        speaker = node.keepalived if kind == "keepalived" else node.fulcrumd
        t_kill = time.time()
        if case == "fence":
            # kill -9 of the VRRP speaker alone: a's dataplane (and the VIP on its fl0) live on.
            # The client asks for the VIP every 10 ms: how long do a and b both answer?
            if kind == "keepalived":
                os.killpg(speaker.pid, signal.SIGKILL)
                node.kill_keepalived()
            else:
                os.kill(speaker.pid, signal.SIGKILL)
                node.kill_fulcrumd()
            window = 2.0 + 6 * interval
            answers = lab.arp_answers(window)
            r = lab.load_result(load)
            cap.stop(5)
            a_times = [t for t, n in answers if n == "a"]
            b_times = [t for t, n in answers if n == "b"]
            a_last = a_times[-1] if a_times else None
            b_first = b_times[0] if b_times else None
            both = max(0.0, a_last - b_first) if a_last and b_first else 0.0
            return {"pair": kind, "case": case, "interval": interval_label(interval),
                    "a_answers_until_ms": round((a_last - t_kill) * 1000, 1) if a_last else None,
                    "b_answers_from_ms": round((b_first - t_kill) * 1000, 1) if b_first else None,
                    "both_answer_ms": round(both * 1000, 1),
                    "a_still_answering_at_end": bool(a_times) and a_last > t_kill + window - 0.2,
                    "window_ms": round(window * 1000), "held_broken": len(r["held"]["broken"]),
                    "held": r["held"]["established"], "held_max_gap_ms": r["held"]["max_gap_ms"],
                    "new_failed": sum(r["new"]["failed"].values()), "new_attempted": r["new"]["attempted"],
                    "garp_ms": None, "first_advert_ms": None, "new_max_gap_ms": r["new"]["max_gap_ms"]}
        if case == "kill9":
            if kind == "keepalived":
                os.killpg(speaker.pid, signal.SIGKILL)
            else:
                os.kill(speaker.pid, signal.SIGKILL)
            os.kill(node.dataplane.pid, signal.SIGKILL)
            node.kill()  # reaps them and cleans up
        else:
            speaker.proc.send_signal(signal.SIGTERM)
        lab.wait_state("b", "master", timeout=20 + 5 * interval)
        lab.wait_owner({"b"}, timeout=20)
        if case == "sigterm":
            rc = node.stop_keepalived() if kind == "keepalived" else node.stop_fulcrumd()
            if rc != 0:
                raise RuntimeError(f"{kind} exited with {rc} on SIGTERM")
        r = lab.load_result(load)
        cap.stop(5)
        frames = lab.captured(cap)
        garps = [f for f in frames if f["kind"] == "arp" and f["gratuitous"] and f["psrc"] == VIP
                 and f["hwsrc"] == lab.b.mac and f["t"] >= t_kill]
        adverts = [f for f in frames if f["kind"] == "vrrp" and f["src"] == NODE_ADDR["b"] and f["t"] >= t_kill]
        return {"pair": kind, "case": case, "interval": interval_label(interval),
                "garp_ms": round((garps[0]["t"] - t_kill) * 1000, 1) if garps else None,
                "first_advert_ms": round((adverts[0]["t"] - t_kill) * 1000, 1) if adverts else None,
                "held_max_gap_ms": r["held"]["max_gap_ms"], "held_broken": len(r["held"]["broken"]),
                "held": r["held"]["established"], "new_max_gap_ms": r["new"]["max_gap_ms"],
                "new_failed": sum(r["new"]["failed"].values()), "new_attempted": r["new"]["attempted"]}


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": round(statistics.median(v), 1), "worst": round(max(v), 1), "n": len(v)}


def summarize(trials):
    out = {}
    for t in trials:
        key = (t["pair"], t["case"], t["interval"])
        out.setdefault(key, []).append(t)
    summary = {}
    for (pair, case, interval), ts in sorted(out.items()):
        ok = [t for t in ts if "error" not in t]
        summary.setdefault(pair, {}).setdefault(case, {})[interval] = {
            "trials": len(ts), "failed_trials": len(ts) - len(ok),
            "kill_to_garp_ms": stats(t["garp_ms"] for t in ok),
            "kill_to_first_advert_ms": stats(t["first_advert_ms"] for t in ok),
            "held_max_gap_ms": stats(t["held_max_gap_ms"] for t in ok),
            "new_conn_max_gap_ms": stats(t["new_max_gap_ms"] for t in ok),
            "held_broken_total": sum(t["held_broken"] for t in ok),
            "new_failed_total": sum(t["new_failed"] for t in ok),
            "no_garp_trials": sum(1 for t in ok if t["garp_ms"] is None)}
        if case == "fence":
            summary[pair][case][interval] = {
                "trials": len(ts), "failed_trials": len(ts) - len(ok),
                "both_answer_ms": stats(t["both_answer_ms"] for t in ok),
                "a_answers_until_ms": stats(t["a_answers_until_ms"] for t in ok),
                "b_answers_from_ms": stats(t["b_answers_from_ms"] for t in ok),
                "a_still_answering_at_window_end": sum(1 for t in ok if t["a_still_answering_at_end"]),
                "held_broken_total": sum(t["held_broken"] for t in ok)}
    return summary


def main():
    ap = argparse.ArgumentParser(description="Failover benchmark: Fulcrum pair vs keepalived pair")
    ap.add_argument("--trials", type=int, default=20, help="trials per pair, case and interval")
    ap.add_argument("--cases", default="kill9,sigterm")
    ap.add_argument("--intervals", default="0.1,1", help="advert intervals in seconds")
    ap.add_argument("--pairs", default="fulcrum,keepalived")
    ap.add_argument("--conns", type=int, default=100, help="held connections")
    ap.add_argument("--new-rate", type=float, default=20.0, help="new connections per second")
    ap.add_argument("--keep", help="directory for logs and results.json (default: temporary, removed)")
    a = ap.parse_args()
    cases = a.cases.split(",")
    pairs = a.pairs.split(",")
    intervals = [float(x) for x in a.intervals.split(",")]
    if not 1 <= a.trials <= 1000 or not set(cases) <= {"kill9", "sigterm", "fence"} or \
            not set(pairs) <= {"fulcrum", "keepalived"} or not all(0.01 <= i <= 40.95 for i in intervals):
        ap.error("--trials 1..1000, --cases from kill9,sigterm,fence, --pairs from fulcrum,keepalived, "
                 "--intervals 0.01..40.95 s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = pathlib.Path(a.keep) if a.keep else pathlib.Path(tempfile.mkdtemp(prefix="fulcrum-failover-"))
    workdir.mkdir(parents=True, exist_ok=True)
    trials = []
    started = time.time()
    try:
        with halab.PairLab(workdir / "lab", tag="fo") as lab:
            b = Bench(lab, a)
            for interval in intervals:
                for case in cases:
                    for i in range(a.trials):
                        for kind in pairs:  # alternating, so drift in the host's load hits both
                            try:
                                t = b.trial(kind, case, interval)
                            except Exception as e:  # one failed trial is recorded, the pair rebuilt
                                t = {"pair": kind, "case": case, "interval": interval_label(interval),
                                     "error": f"{type(e).__name__}: {str(e)[:4000]}"}
                                traceback.print_exc()
                                b.setup = None
                            t["trial"] = i
                            trials.append(t)
                            print(json.dumps(t), file=sys.stderr, flush=True)
    finally:
        result = {"bench": "failover", "commit": os.environ.get("FAILOVER_COMMIT", "unknown"),
                  "trials_per_cell": a.trials, "held_connections": a.conns, "new_rate": a.new_rate,
                  "seconds": round(time.time() - started, 1), "summary": summarize(trials), "trials": trials}
        (workdir / "results.json").write_text(json.dumps(result, indent=2))
        print(json.dumps({k: v for k, v in result.items() if k != "trials"}, indent=2))
        if not a.keep:
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
