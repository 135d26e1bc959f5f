"""End to end: real clients and servers in network namespaces, the DPDK dataplane on a
veth, fulcrumd health-checking and publishing."""
import collections
import contextlib
import json
import os
import signal
import socket
import threading
import time

import pytest

import fulcrumlab
from conftest import SERVERS3, VIP, web_service

NAMES = {v: k for k, v in SERVERS3.items()}


def distribution(lab, n, port=80):
    c = collections.Counter()
    for _ in range(n):
        c[fulcrumlab.connect_once(lab.client, VIP, port)] += 1
    return c


def wait_state(lab, service, address, state, timeout):
    """Waits until fulcrumd shows the server in `state` and the dataplane runs a snapshot
    published after that."""
    fulcrumlab.wait_for(lambda: lab.servers_state(service)[address]["state"] == state, timeout, 0.05,
                        what=f"{address} to be {state}")
    lab.wait_published(timeout)


@pytest.mark.parametrize("scheduler", ["maglev", "wrr"])
def test_distribution_follows_the_weights(lab3, scheduler):
    weights = {"s1": 1, "s2": 2, "s3": 3}
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(SERVERS3, weights, scheduler)])))
    n = 3000
    c = distribution(lab3, n)
    total = sum(weights.values())
    for host, w in weights.items():
        share = c[host] / n
        assert abs(share - w / total) <= 0.05, f"{scheduler}: {dict(c)} over {n} connections"
    if scheduler == "wrr":  # smooth WRR is exact over every window of sum(weights)
        for host, w in weights.items():
            assert abs(c[host] - n * w / total) <= total


def test_stopped_server_leaves_within_fall_interval_and_comes_back_after_rise(lab3):
    health = {"type": "tcp", "interval": "500ms", "timeout": "300ms", "rise": 3, "fall": 2}
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(SERVERS3)], health=health)))
    assert set(distribution(lab3, 60)) == set(SERVERS3)
    lab3.stop_backend("s2")
    t0 = time.monotonic()
    wait_state(lab3, "web", SERVERS3["s2"], "down", 5)
    took = time.monotonic() - t0
    assert took <= 2 * 0.5 + 1.0, f"s2 taken out after {took:.2f}s (fall x interval + 1 s = 2.0 s)"
    assert lab3.servers_state("web")[SERVERS3["s2"]]["reason"] == "connection refused"
    # Published at once: no new connection reaches s2 (it is not even listening; a
    # connection sent there would fail).
    c = distribution(lab3, 200)
    assert "s2" not in c and sum(c.values()) == 200
    lab3.start_backend("s2")
    t0 = time.monotonic()
    wait_state(lab3, "web", SERVERS3["s2"], "up", 5)
    took = time.monotonic() - t0
    assert 2 * 0.5 - 0.3 <= took <= 3 * 0.5 + 1.0, f"s2 back after {took:.2f}s (rise x interval = 1.5 s)"
    assert "s2" in distribution(lab3, 200)


def test_backups_serve_only_while_every_primary_is_down(lab3):
    health = {"type": "http", "path": "/health", "port": 8080, "interval": "500ms", "timeout": "300ms",
              "rise": 1, "fall": 1}
    svc = web_service(SERVERS3, backups=("s3",), health=health)
    lab3.start_fulcrumd(lab3.write_config(lab3.config([svc])))
    assert set(distribution(lab3, 100)) == {"s1", "s2"}
    lab3.set_unhealthy("s1")
    wait_state(lab3, "web", SERVERS3["s1"], "down", 5)
    assert set(distribution(lab3, 60)) == {"s2"}
    lab3.set_unhealthy("s2")
    wait_state(lab3, "web", SERVERS3["s2"], "down", 5)
    assert set(distribution(lab3, 60)) == {"s3"}, "the backup takes over only now"
    assert "HTTP status 503" in lab3.servers_state("web")[SERVERS3["s1"]]["reason"]
    lab3.set_unhealthy("s1", False)
    wait_state(lab3, "web", SERVERS3["s1"], "up", 5)
    assert set(distribution(lab3, 60)) == {"s1"}, "the backup stops as soon as a primary is back"


def test_drain_keeps_long_lived_connections_and_moves_new_ones(lab3):
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(SERVERS3)])))
    held = [fulcrumlab.HeldConnection(lab3.client, VIP, 80) for _ in range(30)]
    try:
        on_s1 = [h for h in held if h.server == "s1"]
        assert on_s1, "no connection landed on s1"
        r = lab3.ctl("drain", "web", SERVERS3["s1"])
        assert r.returncode == 0, r.stderr
        assert "draining" in r.stdout and "applied in generation" in r.stdout, r.stdout
        # Acknowledged means applied: new connections right after the reply avoid s1.
        c = distribution(lab3, 200)
        assert "s1" not in c
        assert all(h.alive() for h in held), "a long-lived connection broke during the drain"
        assert lab3.servers_state("web")[SERVERS3["s1"]]["active_connections"] >= len(on_s1)
        r = lab3.admin({"command": "enable", "service": "web", "server": SERVERS3["s1"]})
        assert r["ok"], r
        assert lab3.dataplane.counters()["generation"] >= r["generation"]
        assert "s1" in distribution(lab3, 200)
    finally:
        for h in held:
            h.close()


def test_set_weight_zero_applies_before_the_reply(lab3):
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(SERVERS3)])))
    for name in ("s2", "s3"):
        r = lab3.admin({"command": "set-weight", "service": "web", "server": SERVERS3[name], "weight": 0})
        assert r["ok"], r
        assert r["state"] == "draining" and r["weight"] == 0
        assert lab3.dataplane.counters()["generation"] >= r["generation"]
        st = lab3.status()
        assert st["published_generation"] >= r["generation"]
    # At once, without waiting for anything: every new connection goes to s1.
    assert set(distribution(lab3, 100)) == {"s1"}
    st = lab3.status()
    assert st["publish"]["state"] == "idle" and not st["publish_pending"], st


def test_publish_in_flight_is_visible_in_status(lab3):
    """While the dataplane has not acknowledged a generation, status says it is in flight (here
    the dataplane is stopped with SIGSTOP, so the publish cannot finish until SIGCONT)."""
    cfg = lab3.write_config(lab3.config([web_service(SERVERS3)]))
    lab3.start_fulcrumd(cfg)
    gen0 = lab3.status()["published_generation"]
    assert lab3.status()["publish"]["state"] == "idle"
    lab3.write_config(lab3.config([web_service(SERVERS3, {"s1": 7})]))
    os.kill(lab3.dataplane.proc.pid, signal.SIGSTOP)
    try:
        lab3.fulcrumd.proc.send_signal(signal.SIGHUP)  # reload and publish run in fulcrumd's loop
        fulcrumlab.wait_for(lambda: lab3.status()["publish"]["state"] == "in_flight", 4, 0.01,
                            what="status to show the publish in flight")
        st = lab3.status()
        assert st["publish"]["in_flight_generation"] > st["published_generation"] == gen0, st
        assert st["publish_pending"]
    finally:
        os.kill(lab3.dataplane.proc.pid, signal.SIGCONT)
    fulcrumlab.wait_for(lambda: lab3.status()["publish"]["state"] == "idle", 10, 0.02,
                        what="the publish to finish after SIGCONT")
    st = lab3.status()
    assert st["published_generation"] > gen0
    assert lab3.dataplane.counters()["generation"] == st["published_generation"]


def test_reload_with_changed_pool_keeps_connections_and_refuses_invalid(lab3):
    two = {k: SERVERS3[k] for k in ("s1", "s2")}
    cfg_path = lab3.write_config(lab3.config([web_service(SERVERS3)]))
    lab3.start_fulcrumd(cfg_path)
    held = [fulcrumlab.HeldConnection(lab3.client, VIP, 80) for _ in range(30)]
    try:
        assert any(h.server == "s3" for h in held)
        gen0 = lab3.status()["published_generation"]
        # s3 leaves the pool: its connections stay, new ones avoid it.
        lab3.write_config(lab3.config([web_service(two, {"s1": 1, "s2": 3})]))
        r = lab3.admin({"command": "reload"})
        assert r["ok"], r
        # The reply comes once the dataplane runs the new pool: no waiting needed.
        assert r["generation"] > gen0
        assert lab3.dataplane.counters()["generation"] >= r["generation"]
        assert lab3.servers_state("web")[SERVERS3["s3"]]["state"] == "retired"
        assert all(h.alive() for h in held), "a connection broke on reload"
        c = distribution(lab3, 200)
        assert set(c) <= {"s1", "s2"}
        # An invalid file is refused with its messages; nothing changes.
        gen1 = lab3.status()["published_generation"]
        cfg_path.write_text("services:\n  - name: web\n    vip: 198.18.0.300\n    port: 80\n")
        r = lab3.ctl("reload")
        assert r.returncode != 0
        assert "fulcrum.yaml:3:" in r.stderr and "198.18.0.300" in r.stderr, r.stderr
        st = lab3.status()
        assert st["published_generation"] == gen1
        assert st["reload_errors"] == 1
        assert set(lab3.servers_state("web")) == set(SERVERS3.values())
        assert all(h.alive() for h in held)
        # SIGHUP reloads too (here: the valid two-server file again).
        lab3.write_config(lab3.config([web_service(two)]))
        lab3.fulcrumd.proc.send_signal(1)
        fulcrumlab.wait_for(lambda: lab3.status()["reloads"] == 2, 5, what="SIGHUP reload")
    finally:
        for h in held:
            h.close()


def test_restarting_fulcrumd_does_not_interrupt_forwarding(lab3):
    cfg = lab3.write_config(lab3.config([web_service(SERVERS3)]))
    lab3.start_fulcrumd(cfg)
    gen = lab3.status()["published_generation"]
    held = [fulcrumlab.HeldConnection(lab3.client, VIP, 80) for _ in range(20)]
    failures = []
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            try:
                fulcrumlab.connect_once(lab3.client, VIP, 80, timeout=3)
            except OSError as e:
                failures.append(str(e))
            time.sleep(0.01)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        lab3.stop_fulcrumd()
        time.sleep(1.0)  # nothing manages the dataplane now
        lab3.start_fulcrumd(cfg)
        time.sleep(1.0)
    finally:
        stop.set()
        t.join()
    try:
        assert not failures, failures[:3]
        assert all(h.alive() for h in held)
        st = lab3.status()
        assert st["published_generation"] > gen
        assert st["dataplane"]["connected"]
    finally:
        for h in held:
            h.close()


def test_restarted_dataplane_gets_the_snapshot_again(lab3):
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(SERVERS3)])))
    assert set(distribution(lab3, 30)) == set(SERVERS3)
    held = [fulcrumlab.HeldConnection(lab3.client, VIP, 80) for _ in range(10)]
    try:
        old_pid = lab3.status()["dataplane"]["pid"]
        assert lab3.stop_dataplane() == 0
        lab3.start_dataplane()
        fulcrumlab.wait_for(lambda: lab3.status()["dataplane"].get("pid", old_pid) != old_pid and
                            lab3.dataplane.counters()["generation"] > 0, 10, what="re-publish to the new dataplane")
        assert set(distribution(lab3, 30)) == set(SERVERS3)
        # The new dataplane has no connection table, but the Maglev table is the same: the
        # established connections are picked up mid-stream on the same servers.
        assert all(h.alive() for h in held)
    finally:
        for h in held:
            h.close()


def test_udp_service_end_to_end(lab3):
    svc = web_service(SERVERS3, name="dns", port=53, protocol="udp", health={"type": "tcp", "port": 80})
    lab3.start_fulcrumd(lab3.write_config(lab3.config([svc])))
    seen = collections.Counter()
    for i in range(60):
        seen[fulcrumlab.udp_once(lab3.client, VIP, 53, payload=f"q{i}".encode(), sport=40000 + i)] += 1
    assert set(seen) == set(SERVERS3), dict(seen)
    c = lab3.dataplane.counters()
    assert sum(s["new_connections"] for s in c["servers"]) >= 60


def test_metrics_endpoint(lab3):
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(SERVERS3)])))
    distribution(lab3, 30)
    # An admin request over the 1 MiB line limit is refused and counted.
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(lab3.admin_socket))
        with contextlib.suppress(OSError):
            s.sendall(b"x" * (1 << 20 | 4096))
            s.recv(4096)

    def value(text, prefix):
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(lines[0].split()[-1]) if lines else None

    # Metrics follow the dataplane once a second: wait for the traffic to show.
    fulcrumlab.wait_for(lambda: (value(lab3.metrics(), "fulcrum_service_new_connections_total") or 0) >= 30, 10, 0.2,
                        what="the connections in /metrics")
    fulcrumlab.wait_for(lambda: value(lab3.metrics(), 'fulcrum_admin_refusals_total{reason="request_too_long"}') == 1,
                        10, 0.2, what="the admin refusal in /metrics")
    text = lab3.metrics()
    for name in ("fulcrum_server_up", "fulcrum_server_active_connections", "fulcrum_server_new_connections_total",
                 "fulcrum_service_packets_total", "fulcrum_dataplane_drops_total", "fulcrum_snapshot_generation",
                 "fulcrum_publish_errors_total", "fulcrum_server_check_latency_seconds", "fulcrum_dataplane_up",
                 "fulcrum_admin_clients", 'fulcrum_dataplane_control_refusals_total{reason="too_many_clients"} 0'):
        assert name in text, f"{name} missing from /metrics"
    assert f'fulcrum_server_up{{server="{SERVERS3["s1"]}:80",service="web"}} 1' in text


def test_dataplane_outage_does_not_mark_servers_down(lab3):
    """Health checks travel through the dataplane's fl0: while it is away they fail, but that is
    our own path missing, not the servers. fulcrumd holds their state and the restarted
    dataplane gets every server in rotation."""
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(SERVERS3)])))
    fulcrumlab.wait_for(lambda: lab3.status()["servers_up"] == 3, 10, what="three servers up")
    old_pid = lab3.status()["dataplane"]["pid"]
    log_before = len(lab3.fulcrumd.log())
    assert lab3.stop_dataplane() == 0
    fulcrumlab.wait_for(lambda: not lab3.status()["dataplane"]["connected"], 10, what="fulcrumd to see the outage")
    # fall (2) checks at 500 ms fail while fl0 is gone: every server is held, none goes down.
    fulcrumlab.wait_for(lambda: all(s["health_held"] for s in lab3.servers_state("web").values()), 10, 0.05,
                        what="the failing checks to be held")
    assert lab3.status()["servers_up"] == 3
    lab3.start_dataplane()
    fulcrumlab.wait_for(lambda: lab3.status()["dataplane"].get("pid", old_pid) != old_pid and
                        lab3.status()["publish"]["state"] == "idle", 15, what="re-publish to the new dataplane")
    assert all(s["in_rotation"] for s in lab3.dataplane.counters()["servers"]), lab3.dataplane.counters()["servers"]
    assert set(distribution(lab3, 30)) == set(SERVERS3)
    # The checks pass again through the new fl0: the hold ends without a down in between.
    fulcrumlab.wait_for(lambda: not any(s["health_held"] for s in lab3.servers_state("web").values()), 15, 0.05,
                        what="the hold to end")
    published = [l for l in lab3.fulcrumd.log()[log_before:].splitlines() if "published generation" in l]
    assert published and all(" 3 of 3 servers up" in l for l in published), published
