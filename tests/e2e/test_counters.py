"""End to end: fulcrumctl counters --reset (ipvsadm --zero). The views count from the reset,
while /metrics stays monotonic; a dataplane restart after the reset never shows negative (or
wrapped) counts, and fulcrumctl counters says the dataplane's counters restarted."""
import json
import re

import fulcrumlab
from conftest import SERVERS3, VIP, web_service

METRIC = 'fulcrum_service_new_connections_total{service="web"}'


def ctl_json(lab, *args):
    r = lab.ctl("--json", *args)
    assert r.returncode == 0, r.stderr + r.stdout
    return json.loads(r.stdout)


def web(lab):
    return next(s for s in lab.admin({"command": "services"})["services"] if s["name"] == "web")


def metric(lab):
    m = re.search(r"^" + re.escape(METRIC) + r" (\S+)$", lab.metrics(), re.M)
    return float(m.group(1)) if m else None


def settled(lab, what):
    """Waits until the service's packet count stops moving (the last FINs and ACKs are in)."""
    seen = []

    def still():
        seen.append(web(lab)["packets"])
        return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]
    fulcrumlab.wait_for(still, 10, 0.2, what=what)


def test_reset_zeroes_the_views_and_not_the_metrics(lab3):
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(SERVERS3)])))
    assert ctl_json(lab3, "counters")["last_reset"] is None
    assert web(lab3)["counters_reset_ago_ms"] is None
    for _ in range(10):
        fulcrumlab.connect_once(lab3.client, VIP, 80)
    fulcrumlab.wait_for(lambda: web(lab3)["new_connections"] == 10, 10, what="10 connections counted")
    fulcrumlab.wait_for(lambda: (metric(lab3) or 0) >= 10, 10, what="/metrics to count the 10 connections")
    settled(lab3, "the traffic to settle")
    before = metric(lab3)

    r = lab3.ctl("counters", "--reset", check=True).stdout
    assert "zeroed" in r and "/metrics is not reset" in r, r
    w = web(lab3)
    assert (w["new_connections"], w["packets"], w["bytes"]) == (0, 0, 0), w
    assert w["counters_reset_ago_ms"] is not None and w["active_connections"] == 0, w
    servers = lab3.admin({"command": "servers", "service": "web"})["servers"]
    assert all(s["new_connections"] == 0 and s["packets"] == 0 for s in servers), servers
    shown = ctl_json(lab3, "counters")
    assert shown["last_reset"]["scope"] == "all" and shown["all"] is not None, shown
    assert "last reset      all counters" in lab3.ctl("counters", check=True).stdout
    assert "counters reset (fulcrumctl counters): web" in lab3.ctl("services", check=True).stdout
    # /metrics is never reset.
    assert metric(lab3) >= before

    # New traffic counts from the reset.
    for _ in range(5):
        fulcrumlab.connect_once(lab3.client, VIP, 80)
    fulcrumlab.wait_for(lambda: web(lab3)["new_connections"] == 5, 10, what="5 connections counted since the reset")
    servers = lab3.admin({"command": "servers", "service": "web"})["servers"]
    assert sum(s["new_connections"] for s in servers) == 5, servers
    fulcrumlab.wait_for(lambda: metric(lab3) >= before + 5, 10, what="/metrics to count on from its total")

    # One service's reset; refusals.
    one = ctl_json(lab3, "counters", "--reset", "--service", "web")
    assert one["scope"] == "service" and one["service"] == "web" and one["counters"] > 0, one
    assert web(lab3)["new_connections"] == 0
    r = lab3.ctl("counters", "--reset", "--service", "nosuch")
    assert r.returncode == 1 and "no service named 'nosuch'" in r.stderr, r.stderr
    r = lab3.ctl("counters", "--service", "web")
    assert r.returncode == 1 and "--service goes with --reset" in r.stderr, r.stderr
    for service in (5, ""):  # "" is not "every service" (a script's unset variable)
        bad = lab3.admin({"command": "counters-reset", "service": service})
        assert bad["ok"] is False and '"service" must be a non-empty string' in bad["error"], bad
    bad = lab3.admin({"command": "counters-reset", "scope": "all"})
    assert bad["ok"] is False and 'unknown key "scope"' in bad["error"], bad
    assert lab3.fulcrumd.alive()


def test_dataplane_restart_after_a_reset_counts_from_zero(lab3):
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(SERVERS3)])))
    for _ in range(8):
        fulcrumlab.connect_once(lab3.client, VIP, 80)
    fulcrumlab.wait_for(lambda: web(lab3)["new_connections"] == 8, 10, what="8 connections counted")
    settled(lab3, "the traffic to settle")
    ctl_json(lab3, "counters", "--reset")
    for _ in range(4):
        fulcrumlab.connect_once(lab3.client, VIP, 80)
    fulcrumlab.wait_for(lambda: web(lab3)["new_connections"] == 4, 10, what="4 connections since the reset")
    old_pid = lab3.status()["dataplane"]["pid"]

    dp = fulcrumlab.restart_dataplane(lab3, handover=False)
    fulcrumlab.wait_for(lambda: lab3.status().get("dataplane", {}).get("pid") not in (None, old_pid) and
                        dp.counters()["generation"] > 0, 20, 0.1, what="fulcrumd to publish to the new dataplane")
    for _ in range(3):
        fulcrumlab.connect_once(lab3.client, VIP, 80)
    # The new dataplane counts from zero: the view shows its 3, not 3 - 12 (negative or wrapped).
    fulcrumlab.wait_for(lambda: web(lab3)["new_connections"] == 3, 10, what="3 connections on the new dataplane")
    restarted = ctl_json(lab3, "counters")["restarted"]
    assert "dataplane" in restarted and restarted["dataplane"]["counters"] > 0, restarted
    assert "restarted" in restarted["dataplane"]["why"], restarted
    assert "restarted       dataplane" in lab3.ctl("counters", check=True).stdout
