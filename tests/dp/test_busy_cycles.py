"""A worker's busy cycles (docs/control-protocol.md, `counters`): the TSC cycles of the poll
iterations that received something, close to what testpmd's --record-core-cycles counts. Idle
iterations, sleeping or not, add nothing; a worker that receives in every poll counts about
all of its time, and never more than the time that passed."""
import time

import fulcrumlab
from pcaputil import write_pcap

FRAME = bytes.fromhex("027063617000" "0200000000c1" "0800") + bytes(46)  # 60 bytes; dropped (no snapshot)


def queue0(c):
    return c["queues"][0]


def wait_polls(d, past, timeout=30):
    """Counters once the worker has polled more than `past` times."""
    deadline = time.time() + timeout
    while True:
        c = d.counters()
        if queue0(c)["polls"] > past:
            return c
        assert time.time() < deadline, f"the worker stopped polling at {queue0(c)['polls']} (waiting for {past})"
        time.sleep(0.05)


def test_only_iterations_that_received_count(tmp_path):
    write_pcap(tmp_path / "in.pcap", [FRAME] * 2000)
    d = fulcrumlab.Dataplane(tmp_path, [f"net_pcap0,rx_pcap={tmp_path}/in.pcap,tx_pcap={tmp_path}/out.pcap"],
                             "net_pcap0")
    try:
        c = d.wait_rx(2000)
        # An iteration's cycles are added when the next one starts: two polls later, the last
        # one that received frames is in.
        c = wait_polls(d, queue0(c)["polls"] + 2)
        assert c["tsc_hz"] > 0 and c["rx"] == 2000
        q = queue0(c)
        # Each poll that received frames took its rx_burst and the core's work on them: far
        # more than 100 cycles.
        assert q["busy_polls"] > 0 and q["busy_cycles"] >= 100 * q["busy_polls"], q
        # The pcap is used up: from here every iteration is idle (and sleeps 100 us), so the
        # busy cycles stay as they are while the polls go on.
        later = wait_polls(d, q["polls"] + 1000)
        assert queue0(later)["busy_cycles"] == q["busy_cycles"], (q, queue0(later))
        assert queue0(later)["busy_polls"] == q["busy_polls"]
        assert later["rx"] == 2000
    finally:
        assert d.stop() == 0, d.log()


def test_a_worker_that_always_receives_counts_its_time(tmp_path):
    write_pcap(tmp_path / "in.pcap", [FRAME] * 64)
    d = fulcrumlab.Dataplane(tmp_path, [f"net_pcap0,rx_pcap={tmp_path}/in.pcap,infinite_rx=1,"
                                        f"tx_pcap={tmp_path}/out.pcap"], "net_pcap0", idle_sleep_us=0)
    try:
        d.wait_rx(100000)
        t0 = time.monotonic()
        c0 = d.counters()
        time.sleep(1.0)
        c1 = d.counters()
        wall = time.monotonic() - t0
        hz = c1["tsc_hz"]
        cycles = queue0(c1)["busy_cycles"] - queue0(c0)["busy_cycles"]
        rx = c1["rx"] - c0["rx"]
        assert rx > 0
        # Never more than the time between the two reads, give or take the one iteration
        # running at each read (it counts whole, though it began before t0; a worker
        # descheduled there makes it long) and DPDK's TSC rate rounded to 10 MHz ...
        assert cycles <= wall * hz * 1.05, (cycles, wall, hz)
        # ... and, as every poll of an infinite pcap receives a burst, most of it.
        assert cycles >= 0.5 * wall * hz, (cycles, wall, hz, c1["queues"])
    finally:
        assert d.stop() == 0, d.log()
