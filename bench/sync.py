#!/usr/bin/python3
"""Connection sync of a Fulcrum pair, end to end through real processes (tests/lib/halab.py
topology: client, balancers a and b with fulcrum-dataplane + fulcrumd, three DSR servers).
Run through bench/sync.sh; see there for the options.

bulk  Records/s through the whole path: balancer a's table holds N synced entries (queued into
      its dataplane with the sync_install op); b's fulcrumd starts, asks a for a bulk resync, and
      a's fulcrumd dumps its dataplane's table (sync_dump) and sends it over UDP; b's fulcrumd
      checks and installs every record into b's dataplane (sync_install). Measured from the
      first bulk record b's fulcrumd received to its bulk resync completing (every record
      counted and acknowledged by b's dataplane, no sequence gap), from b's `ha` view sampled
      every few milliseconds.
lag   Sync lag under a load of new connections from the client (each connection: connect,
      one request, close): how long after a's dataplane exported a record b's dataplane had
      installed it. Both dataplanes' counters (a: sync_exported; b: records installed,
      removed or refused) are sampled together every few milliseconds; as records travel in
      order, the lag of the k-th record is the time between a's count reaching k and b's
      count reaching k (the horizontal distance of the two cumulative curves, to within one
      sampling period). fulcrumd's own figures (drain-to-send lag, install time) are
      reported next to it.

The summary is printed as JSON; results.json (with the samples) is kept with --keep.
"""
import argparse
import bisect
import json
import os
import pathlib
import signal
import statistics
import struct
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "lib"))

import fulcrumlab  # noqa: E402
import halab  # noqa: E402
from halab import NODE_ADDR, SERVERS3, VIP  # noqa: E402

OP_SYNC_INSTALL = 8
# fl_sync_record (dataplane/core/include/fulcrum/sync_abi.h): family, proto, state,
# server_family, src_port, dst_port, service_port, server_port, idle_ms, src, dst, server.
REC = struct.Struct("<BBBBHHHHI16s16s16s")
ESTABLISHED, TCP = 1, 6
INSTALL_BATCH = 8192


def ip4(s):
    return bytes(int(x) for x in s.split(".")) + bytes(12)


def records(n):
    """n established TCP flows to the VIP from clients in 198.19.0.0/16, over the three servers."""
    servers = [ip4(a) for a in SERVERS3.values()]
    out = bytearray()
    for i in range(n):
        src = ip4(f"198.19.{(i >> 8) & 255}.{i & 255}")
        sport = 1024 + (i >> 16)
        out += REC.pack(4, TCP, ESTABLISHED, 4, sport, 80, 80, 80, 0, src, ip4(VIP), servers[i % 3])
    return bytes(out)


def handled_by_b(c):
    """Every record b's dataplane has dealt with, whatever the outcome."""
    return (c["sync_installed"] + c["sync_removed"] + c["sync_install_expired"] + c["sync_install_table_full"] +
            c.get("sync_install_invalid", 0) + c.get("sync_install_unknown", 0))


def losses(c):
    """Where a dataplane lost frames: its queues (drops, kernel path) and its ports."""
    out = {"dropped": 0, "kernel_rx_dropped": 0, "rx_missed": 0, "tx_errors": 0, "rx_nombuf": 0}
    for q in c.get("queues", []):
        out["dropped"] += q.get("dropped", 0)
        out["kernel_rx_dropped"] += q.get("kernel_rx_dropped", 0)
    for p in c.get("ports", []):
        for k in ("rx_missed", "tx_errors", "rx_nombuf"):
            out[k] += p.get(k, 0)
    return out


def kernel_drops(node):
    """fl0's drop counters on the node's kernel side (the TAP between fulcrumd and the dataplane)."""
    r = fulcrumlab.run("ip", "-s", "-j", "link", "show", "fl0", netns=node.ns, check=False)
    try:
        st = json.loads(r.stdout)[0]["stats64"]
    except (ValueError, IndexError, KeyError):
        return {"fl0_tx_dropped": 0, "fl0_rx_dropped": 0}
    return {"fl0_tx_dropped": st["tx"]["dropped"], "fl0_rx_dropped": st["rx"]["dropped"]}


def diff(after, before):
    return {k: after[k] - before[k] for k in after}


def quantile(v, q):
    v = sorted(v)
    if not v:
        return None
    return v[min(len(v) - 1, int(q * len(v)))]


def sync_overrides(node, rate, refresh):
    return {"sync": {"peer": NODE_ADDR["b" if node == "a" else "a"], "port": 8450, "refresh": refresh,
                     "rate": rate}}


class Bench:
    def __init__(self, lab, args):
        self.lab, self.args = lab, args

    def start(self, name):
        node = self.lab.nodes[name]
        node.start("fulcrum", ha_overrides=sync_overrides(name, self.args.rate, self.args.refresh))
        self.lab.wait_state(name, "master" if name == "a" else "backup", timeout=60)

    def fill_a(self, n):
        """Queues n entries into a's dataplane (as a peer's records) and waits until installed."""
        a = self.lab.a.dataplane
        body = records(n)
        with a.client() as c:
            c0 = c.counters()

            def done(k):
                now = c.counters()
                if now["sync_install_table_full"] != c0["sync_install_table_full"]:
                    raise RuntimeError("a's connection table is full: give fewer --records")
                return now["sync_installed"] - c0["sync_installed"] >= k

            for off in range(0, len(body), INSTALL_BATCH * REC.size):
                st, reply = c.raw(OP_SYNC_INSTALL, body[off:off + INSTALL_BATCH * REC.size])
                r = json.loads(reply)
                if st != 0 or r.get("invalid") or r.get("unknown_server") or r.get("ring_full"):
                    raise RuntimeError(f"sync_install on a refused records: {r}")
                # Let the worker empty its install ring before the next batch.
                fulcrumlab.wait_for(lambda: done(off // REC.size), 30, 0.01, what="a's worker to install the batch")
            fulcrumlab.wait_for(lambda: done(n), 60, 0.01, what="a's worker to install every record")

    def bulk_trial(self, n):
        """Restarts b's fulcrumd (a new boot: it asks for a bulk resync) and times the answer,
        from the first bulk record b's fulcrumd received to its BULK_END, which it handles only
        after b's dataplane acknowledged the install of every record before it."""
        lab = self.lab
        b = lab.b
        with lab.a.dataplane.client() as c:
            a0 = losses(c.counters()) | kernel_drops(lab.a)
        with b.dataplane.client() as c:
            b0 = losses(c.counters()) | kernel_drops(b)
        b.kill_fulcrumd()
        b.start_fulcrumd(wait_published=False)
        samples = []  # (time, bulk records received, bulk complete)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            sync = ((b.ha() or {}).get("sync") or {})
            samples.append((time.monotonic(), sync.get("bulk_records_received", 0), sync.get("bulk_complete", False)))
            if samples[-1][2]:
                break
            time.sleep(0.002)
        lab.wait_state("b", "backup", timeout=60)
        sync = (b.ha() or {}).get("sync", {})
        with b.dataplane.client() as c:
            counters = c.counters()
        with lab.a.dataplane.client() as c:
            a1 = losses(c.counters()) | kernel_drops(lab.a)
        result = {"a_losses": diff(a1, a0), "b_losses": diff(losses(counters) | kernel_drops(b), b0),
                  "receive_overflows": sync.get("receive_overflows"), "records": n, "bulk_records_received": sync.get("bulk_records_received"),
                  "bulk_complete": sync.get("bulk_complete"), "install_ring_full": sync.get("install_ring_full"),
                  "install_failed": sync.get("install_failed"), "refused": sync.get("refused"),
                  "seq_gaps": sync.get("seq_gaps"), "b_table_full": counters["sync_install_table_full"],
                  "b_expired": counters["sync_install_expired"]}
        first = next((t for t, k, _ in samples if k > 0), None)
        if first is None or not samples[-1][2] or sync.get("bulk_records_received", 0) < n:
            result["error"] = f"the bulk resync did not complete with {n} records within the deadline"
            return result
        secs = samples[-1][0] - first
        result["seconds"] = round(secs, 4)
        result["records_per_second"] = round(sync["bulk_records_received"] / secs) if secs > 0 else None
        return result

    def lag_trial(self, rate, seconds):
        lab = self.lab
        a, b = lab.a.dataplane, lab.b.dataplane
        samples = []  # (t_a, exported_a, t_b, handled_b)
        with a.client() as ca, b.client() as cb:
            # The baseline: both counters at rest (b has everything a exported so far), so
            # that a's k-th record from here on is b's k-th from here on.
            last, still = None, 0
            settle = time.monotonic() + 15
            while still < 3 and time.monotonic() < settle:
                now = (ca.counters()["sync_exported"], handled_by_b(cb.counters()))
                still = still + 1 if now == last else 0
                last = now
                time.sleep(0.05)
            if still < 3:
                raise RuntimeError("the sync counters never came to rest before the lag run")
            base_a, base_b = last
            load = lab.start_load(conns=10, duration=seconds, new_rate=rate)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t0 = time.monotonic()
                ea = ca.counters()["sync_exported"]
                t1 = time.monotonic()
                hb = handled_by_b(cb.counters())
                t2 = time.monotonic()
                samples.append(((t0 + t1) / 2, ea, (t1 + t2) / 2, hb))
                time.sleep(self.args.sample_every)
            # Let b catch up with what a exported in the window (bounded).
            last_a = samples[-1][1]
            settle = time.monotonic() + 10
            while time.monotonic() < settle:
                t1 = time.monotonic()
                hb = handled_by_b(cb.counters())
                samples.append((t1, ca.counters()["sync_exported"], time.monotonic(), hb))
                if hb - base_b >= last_a - base_a:
                    break
                time.sleep(self.args.sample_every)
        res = lab.load_result(load)
        ta = [s[0] for s in samples]
        ka = [s[1] - base_a for s in samples]
        tb = [s[2] for s in samples]
        kb = [s[3] - base_b for s in samples]
        lags = []
        for k in range(1, last_a - base_a + 1):
            ia = bisect.bisect_left(ka, k)
            ib = bisect.bisect_left(kb, k)
            if ia < len(ka) and ib < len(kb):
                lags.append(max(0.0, tb[ib] - ta[ia]))
        periods = [ta[i + 1] - ta[i] for i in range(len(ta) - 1)]
        sync = (lab.a.ha() or {}).get("sync", {})
        sync_b = (lab.b.ha() or {}).get("sync", {})
        return {"new_rate": rate, "seconds": seconds, "records": len(lags),
                "connections_opened": res["new"]["ok"], "connections_failed": res["new"]["attempted"] - res["new"]["ok"],
                "lag_ms": {"p50": ms(quantile(lags, 0.5)), "p99": ms(quantile(lags, 0.99)),
                           "max": ms(max(lags) if lags else None)},
                "sampling_period_ms": {"median": ms(statistics.median(periods) if periods else None),
                                       "max": ms(max(periods) if periods else None)},
                "fulcrumd_a_send_lag_us": sync.get("send_lag"),
                "fulcrumd_b_install_time_us": sync_b.get("install_time"),
                "samples": [[round(x, 5) if isinstance(x, float) else x for x in smp] for smp in samples]}


def ms(x):
    return None if x is None else round(x * 1000, 2)


def main():
    ap = argparse.ArgumentParser(description="Connection sync benchmark of a Fulcrum pair")
    ap.add_argument("--records", type=int, default=30000,
                    help="entries in a's table for the bulk case (the lab's dataplanes hold 65536 in buckets: keep it under 70 %)")
    ap.add_argument("--bulk-trials", type=int, default=5)
    ap.add_argument("--rates", default="200,500", help="new connections per second for the lag case")
    ap.add_argument("--lag-seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=1000000, help="fulcrumd's sync rate cap (records/s)")
    ap.add_argument("--refresh", default="1h", help="fulcrumd's sync refresh interval")
    ap.add_argument("--sample-every", type=float, default=0.002, help="seconds between counter samples")
    ap.add_argument("--keep", help="directory for logs and results.json (default: temporary, removed)")
    a = ap.parse_args()
    rates = [float(x) for x in a.rates.split(",") if x]
    if not 1 <= a.records <= 45000 or not 0 <= a.bulk_trials <= 100 or \
            not all(0 < r <= 5000 for r in rates) or not 1 <= a.lag_seconds <= 600:
        ap.error("--records 1..45000, --bulk-trials 0..100, --rates in (0, 5000], --lag-seconds 1..600")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = pathlib.Path(a.keep) if a.keep else pathlib.Path(tempfile.mkdtemp(prefix="fulcrum-sync-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    bulk, lag = [], []
    try:
        with halab.PairLab(workdir / "lab", tag="sy") as lab:
            b = Bench(lab, a)
            b.start("a")
            b.start("b")
            if a.bulk_trials:
                b.fill_a(a.records)
                for i in range(a.bulk_trials):
                    t = b.bulk_trial(a.records)
                    t["trial"] = i
                    bulk.append(t)
                    print(json.dumps(t), file=sys.stderr, flush=True)
            for r in rates:
                t = b.lag_trial(r, a.lag_seconds)
                lag.append(t)
                print(json.dumps({k: v for k, v in t.items() if k != "samples"}), file=sys.stderr, flush=True)
    finally:
        rps = [t["records_per_second"] for t in bulk if t.get("records_per_second")]
        result = {"bench": "sync", "commit": os.environ.get("SYNC_COMMIT", "unknown"),
                  "seconds": round(time.time() - started, 1),
                  "bulk": {"records": a.records, "trials": len(bulk),
                           "failed": sum(1 for t in bulk if "error" in t),
                           "records_per_second_median": statistics.median(rps) if rps else None,
                           "records_per_second_min": min(rps) if rps else None,
                           "runs": bulk},
                  "lag": lag}
        (workdir / "results.json").write_text(json.dumps(result, indent=2))
        print(json.dumps({**result, "lag": [{k: v for k, v in t.items() if k != "samples"} for t in lag]}, indent=2))
        if not a.keep:
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
