#!/usr/bin/python3
"""Compares the DUTs of bench/throughput.sh within one speed state of the machine.

    bench/steady.py [--band LO-HI | --pct P] RESULTS.json [RESULTS.json ...]

Each RESULTS.json is the results.json of a `bench/throughput.sh --keep DIR` invocation. The
runs of a case alternate Fulcrum, macswap, Fulcrum, ...: run i of Fulcrum and run i of
macswap ran back to back, so they are a pair. On a machine whose speed changes (a busy VM
host: macswap's busy cycles per packet on the same frames can differ 2-3x between runs), a
run's medians may pair one DUT's fast runs with the other's slow ones. This tool pools every
file's pairs per case and keeps the pairs whose macswap run lies in one band of busy cycles
per packet: by default within --pct (10) percent of the median of the case's pooled macswap
runs, or the fixed --band LO-HI. It prints, per case, the pairs kept, Fulcrum's sorted busy
cycles, both medians and the capacity ratio (macswap's median over Fulcrum's), and the pairs
left out. Files from different commits or options should not be pooled.
"""
import argparse
import json
import math
import pathlib
import statistics
import sys

KEY = "dut_busy_cycles_per_pkt"


class Refused(ValueError):
    """A results file or option this tool cannot use; the message says which and why."""


def parse_band(text):
    """'LO-HI' in busy cycles per packet, as floats, LO < HI."""
    parts = text.split("-")
    try:
        if len(parts) != 2:
            raise ValueError
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise Refused(f"--band '{text}': expected LO-HI in busy cycles per packet, e.g. 150-185") from None
    if not 0 <= lo < hi:
        raise Refused(f"--band '{text}': LO must be at least 0 and below HI")
    return lo, hi


def pairs_of(results, source):
    """{case: [(fulcrum cycles, macswap cycles)]} of one results.json's content."""
    if not isinstance(results, dict) or not results:
        raise Refused(f"{source}: not a throughput.sh results.json (expected an object of one or more cases)")

    def cycles(r):
        v = r[KEY]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError
        return float(v)

    out = {}
    for case, rows in results.items():
        try:
            f = [cycles(r) for r in rows["fulcrum"]]
            m = [cycles(r) for r in rows["macswap"]]
        except (KeyError, TypeError, ValueError):
            raise Refused(f"{source}: case '{case}' lacks {KEY} (a finite number of cycles, 0 or more) "
                          "in its fulcrum and macswap runs (results of a throughput.sh older than the "
                          "capacity figures?)") from None
        if len(f) != len(m):
            raise Refused(f"{source}: case '{case}' has {len(f)} fulcrum runs and {len(m)} macswap runs; "
                          "pairs need as many of each")
        out[case] = list(zip(f, m))
    return out


def pool(named_results):
    """Pools [(source, results)] into {case: [(fulcrum, macswap)]}, in file then run order."""
    pooled = {}
    for source, results in named_results:
        for case, pairs in pairs_of(results, source).items():
            pooled.setdefault(case, []).extend(pairs)
    return pooled


def steady(pairs, band=None, pct=10.0):
    """(band used, kept pairs, left-out pairs). Pairs whose macswap run took 0 cycles (a DUT
    that reported none) never count."""
    valid = [p for p in pairs if p[0] > 0 and p[1] > 0]
    if band is None:
        if not valid:
            return None, [], list(pairs)
        mid = statistics.median(m for _, m in valid)
        band = (mid * (1 - pct / 100), mid * (1 + pct / 100))
    lo, hi = band
    kept, left = [], []
    for p in pairs:
        (kept if p[0] > 0 and p[1] > 0 and lo <= p[1] <= hi else left).append(p)
    return band, kept, left


def report(pooled, band=None, pct=10.0):
    lines = []
    for case, pairs in pooled.items():
        used, kept, left = steady(pairs, band, pct)
        lines.append(f"== {case}: {len(kept)} of {len(pairs)} pairs"
                     + (f" with macswap at {used[0]:.1f}-{used[1]:.1f} busy cycles per packet" if used else ""))
        if kept:
            fs = sorted(f for f, _ in kept)
            mf = statistics.median(fs)
            mm = statistics.median(m for _, m in kept)
            lines.append(f"   fulcrum, sorted: {' '.join(f'{x:.1f}' for x in fs)}")
            lines.append(f"   medians: fulcrum {mf:.1f}, macswap {mm:.1f}; capacity ratio {mm / mf:.3f}")
        if left:
            lines.append("   left out (fulcrum / macswap): " + ", ".join(f"{f:.1f} / {m:.1f}" for f, m in left))
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--band", help="keep pairs whose macswap run took LO-HI busy cycles per packet")
    g.add_argument("--pct", type=float, default=10.0,
                   help="keep pairs whose macswap run is within P percent of the case's median (default 10)")
    ap.add_argument("results", nargs="+", help="results.json of bench/throughput.sh --keep DIR")
    a = ap.parse_args(argv)
    try:
        band = parse_band(a.band) if a.band else None
        if not 0 < a.pct < 100:
            raise Refused(f"--pct {a.pct}: expected a percentage above 0 and below 100")
        named = []
        for name in a.results:
            try:
                named.append((name, json.loads(pathlib.Path(name).read_text())))
            except OSError as e:
                raise Refused(f"{name}: cannot read it ({e.strerror})") from None
            except json.JSONDecodeError as e:
                raise Refused(f"{name}: not JSON ({e.msg} at line {e.lineno})") from None
        for line in report(pool(named), band, a.pct):
            print(line)
    except Refused as e:
        print(f"steady.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
