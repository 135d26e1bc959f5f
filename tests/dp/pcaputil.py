"""Fast raw pcap reading and writing (no scapy per packet) for large test inputs, and a
helper that runs the dataplane over a pcap file."""

import fulcrumlab
from fulcrumlab import read_pcap, write_pcap  # noqa: F401 (re-exported for the tests)


def run_pcap(workdir, frames, spec, extra=(), timeout=120, **dp_args):
    """Runs fulcrum-dataplane with a pcap uplink over `frames` and the snapshot `spec`.

    Returns (output frames, counters, health). The dataplane is stopped with SIGTERM once it
    has received every frame, which also checks that it shuts down cleanly."""
    inp = workdir / "in.pcap"
    out = workdir / "out.pcap"
    write_pcap(inp, frames)
    snap = fulcrumlab.build_snapshot(spec, workdir / "run.snap") if spec else None
    dp = fulcrumlab.Dataplane(workdir, [f"net_pcap0,rx_pcap={inp},tx_pcap={out}"], "net_pcap0",
                              snapshot=snap, extra=extra, **dp_args)
    try:
        counters = dp.wait_rx(len(frames), timeout=timeout)
        with dp.client() as c:
            health = c.health()
    finally:
        rc = dp.stop()
    assert rc == 0, f"dataplane exited with {rc}:\n{dp.log()}"
    return read_pcap(out), counters, health


def counter_balance(counters):
    """The counting invariant of docs/architecture.md ("Counters"): every received frame counted
    once, in exactly one of forwarded, replied, to_kernel and dropped, and dropped the sum of
    the drops by reason. Returns a list of what does not hold (empty when all does)."""
    problems = []
    c = counters
    total = c["forwarded"] + c["replied"] + c["to_kernel"] + c["dropped"]
    if c["rx"] != total:
        problems.append(f"rx {c['rx']} != forwarded {c['forwarded']} + replied {c['replied']} + "
                        f"to_kernel {c['to_kernel']} + dropped {c['dropped']} = {total}")
    by_reason = sum(c["drops"].values())
    if by_reason != c["dropped"]:
        problems.append(f"dropped {c['dropped']} != sum of drops by reason {by_reason}: {c['drops']}")
    return problems
