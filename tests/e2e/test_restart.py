"""End to end: a planned dataplane restart (SIGTERM, new process) with a weight change made just
before it breaks none of a few hundred long-lived TCP connections: the old process hands its
connection tables to the new one. Without the handover, the same restart breaks many."""
import collections
import re
import time

import fulcrumlab
from conftest import SERVERS3, VIP, web_service

CONNECTIONS = 300


def open_connections(lab, n):
    conns = []
    for _ in range(n):
        conns.append(fulcrumlab.HeldConnection(lab.client, VIP, 80))
    return conns


def broken(conns):
    return [c for c in conns if not c.alive()]


def settle(lab, quiet=1.0, timeout=20):
    """Waits until fulcrumd, after a dataplane restart, sees every server up with a MAC and the
    dataplane has run its latest publish unchanged for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    stable_since, last = None, None
    while time.monotonic() < deadline:
        servers = lab.servers_state("web").values()
        st = lab.status()
        gen = lab.dataplane.counters()["generation"]
        ok = (all(s["state"] == "up" and s["mac"] for s in servers) and st and not st["publish_pending"]
              and gen == st["published_generation"])
        if ok and gen == last:
            if time.monotonic() - stable_since >= quiet:
                return
        else:
            stable_since, last = time.monotonic(), gen if ok else None
        time.sleep(0.05)
    raise AssertionError(f"fulcrumd did not settle after the restart in {timeout}s:\n{lab.fulcrumd.log()}")


def test_planned_restart_with_a_weight_change_breaks_no_connection(lab3):
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(SERVERS3)])))
    conns = []
    try:
        conns = open_connections(lab3, CONNECTIONS)
        spread = collections.Counter(c.server for c in conns)
        assert set(spread) == set(SERVERS3), spread
        assert not broken(conns)

        # The weight change that, without the handover, moves many of these connections.
        lab3.ctl("set-weight", "web", SERVERS3["s3"], "10", check=True)
        lab3.wait_published()
        gen = lab3.dataplane.counters()["generation"]
        assert not broken(conns), "the weight change alone broke connections"

        dp = fulcrumlab.restart_dataplane(lab3)
        # The new process started with the handed-over snapshot (fulcrumd may have published
        # a newer one since).
        assert f"snapshot generation {gen} loaded" in dp.log(), dp.log()
        m = re.search(r"restored: (\d+) of (\d+) connection", dp.log())
        assert m and int(m.group(1)) == int(m.group(2)) >= CONNECTIONS, dp.log()

        # Every connection talks at once, before fulcrumd has even noticed the new process: the
        # restored entries carry them.
        lost = broken(conns)
        assert not lost, f"{len(lost)} of {CONNECTIONS} connections broken by the restart"
        # fulcrumd notices the new process and publishes again, with the same server slots, and
        # with every server as it was (health and MACs are held while the dataplane was away):
        # the connections keep talking through its publishes.
        fulcrumlab.wait_for(lambda: dp.counters()["generation"] > gen and not broken(conns), 15, 0.1,
                            what=f"fulcrumd to publish to the new dataplane; log:\n{lab3.fulcrumd.log()}")
        settle(lab3)
        lost = broken(conns)
        assert not lost, f"{len(lost)} of {CONNECTIONS} connections broken after fulcrumd's publishes"
        published = [l for l in lab3.fulcrumd.log().splitlines() if "published generation" in l]
        assert all(" 3 of 3 servers up" in l for l in published), published

        # New connections follow the new weights.
        new = collections.Counter(fulcrumlab.connect_once(lab3.client, VIP, 80) for _ in range(120))
        assert new["s3"] > 120 * 0.6, f"weight 10 of 12: {dict(new)}"

        # Control: the same restart without the handover breaks connections (the bug this
        # handover fixes), so the checks above can fail.
        dp = fulcrumlab.restart_dataplane(lab3, handover=False)
        # (Until fulcrumd publishes, an empty dataplane sends VIP traffic to the kernel, which
        # would reset every connection: measure once it forwards again.)
        fulcrumlab.wait_for(lambda: dp.counters()["generation"] > 0, 15, 0.1, what="fulcrumd's publish")
        settle(lab3)
        lost = broken(conns)
        assert len(lost) > CONNECTIONS // 5, \
            f"only {len(lost)} connections broken without the handover: the test proves nothing"
    finally:
        for c in conns:
            c.close()
