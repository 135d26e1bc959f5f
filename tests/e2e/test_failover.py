"""Active-passive failover end to end (tests/lib/halab.py): two balancers on one segment with
a client and three DSR servers. Balancer a has priority 150, b 100; VRRPv3 runs over each
balancer's fl0 (fulcrumd's `ha:`, or keepalived 2.2.7 as the peer), advert interval 100 ms.

The service is Maglev with the same servers and hash seed on both balancers, so either one
sends a flow to the same server: established connections survive a failover even without
connection sync, once the client's ARP cache follows the new master's gratuitous ARP. The IPv6 tests use the dual-stack lab (PairLab(ipv6=True)): an IPv6 VIP
with its own virtual router, alone or next to the IPv4 one; the client's neighbour entry
follows the new master's unsolicited neighbour advertisements.

Every test asserts states and connection outcomes, never how long something took; each wait
is on a state, with a bounded deadline."""
import os
import time

import pytest

import fulcrumlab
import halab
from halab import NODE_ADDR, VIP, VIP6

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

HELD = 300          # long-lived connections, one exchange every 100 ms each
LOAD_SECONDS = 20   # the load's run time: covers the failover and several seconds after it


@pytest.fixture
def pair(tmp_path):
    with halab.PairLab(tmp_path) as lab:
        yield lab


def needs_keepalived():
    if not os.access(halab.KEEPALIVED, os.X_OK):
        pytest.skip(f"{halab.KEEPALIVED} is missing (Debian: apt-get install keepalived)")


def start_pair(lab, a="fulcrum", b="fulcrum", ha=None, keepalived=None):
    """Starts a, waits until it is master and owns the VIPs, then starts b and waits until it
    is backup (in fulcrum mode: following a)."""
    lab.a.start(a, ha_overrides=ha, keepalived=keepalived)
    lab.wait_state("a", "master")
    lab.b.start(b, ha_overrides=ha, keepalived=keepalived)
    lab.wait_state("b", "backup")
    if b == "fulcrum":
        # The `ha` view shows the IPv4 router when there is one; the IPv6 router's master is
        # named by its link-local address.
        master = NODE_ADDR["a"] if lab.vips else lab.a.link_local()
        fulcrumlab.wait_for(lambda: (lab.b.ha() or {}).get("master") == master, 10,
                            what=f"b to follow a ({master}) as master: {lab.b.ha()}")
    for vip in lab.vips + lab.vips6:
        lab.wait_owner({"a"}, vip)
        assert vip not in lab.b.fl0_addresses(), f"the backup holds the VIP {vip} on fl0"


def wait_client_follows(lab, node, vip=VIP):
    """Waits until the client's ARP / neighbour cache sends `vip` traffic to `node` (the new
    master's gratuitous ARP / unsolicited NA arrived); returns the time (monotonic, as the
    load's report)."""
    fulcrumlab.wait_for(lambda: lab.client_neigh(vip) == node, 15, 0.02,
                        what=f"the client's neighbour entry for {vip} to point at {node} "
                             f"(now {lab.client_neigh(vip)})\n{lab.logs()}")
    return time.monotonic()


def assert_connections_survived(lab, load, since, conns=HELD):
    """Every held connection (`conns` of them) is still alive and exchanged data after
    `since`; new connections begun after `since` all succeeded (and there were some)."""
    r = lab.load_result(load)
    held = r["held"]
    assert held["established"] == conns, held["setup_failed"]
    assert not held["broken"], f"{len(held['broken'])} connections broke: {held['broken'][:5]}\n{lab.logs()}"
    assert held["last_ok_min"] > since, (
        f"a connection made no exchange after the takeover (worst gaps {held['worst']})\n{lab.logs()}")
    after = [c for c in r["new"]["connections"] if c[0] > since]
    assert after, f"no new connection was begun after the takeover: the load ({LOAD_SECONDS} s) ended first"
    bad = [c for c in after if c[2] != "ok"]
    assert not bad, f"new connections after the takeover failed: {bad[:5]}"
    print(f"held max gap {held['max_gap_ms']} ms, new connections {r['new']['ok']}/{r['new']['attempted']} ok, "
          f"failures {r['new']['failed']}")
    return r


def test_kill9_of_the_master_moves_the_vip_and_keeps_connections(pair):
    start_pair(pair)
    load = pair.start_load(conns=HELD, duration=LOAD_SECONDS)
    pair.a.kill()  # fulcrumd and dataplane at once: the host is gone
    pair.wait_state("b", "master")
    pair.wait_owner({"b"})
    since = wait_client_follows(pair, "b")
    assert VIP in pair.b.fl0_addresses()
    assert pair.b.dp_health()["ha"]["active"]
    t = pair.b.ha()["last_transition"]
    assert (t["from"], t["to"]) == ("backup", "master") and NODE_ADDR["a"] in t["reason"], t
    assert_connections_survived(pair, load, since)


def test_kill9_of_fulcrumd_alone_fences_its_dataplane(pair):
    """fulcrumd dies, its dataplane lives on: the lease it no longer renews runs out and the
    dataplane stops answering ARP for the VIP, although the VIP is still on its fl0 (nobody
    removed it). After that window exactly one MAC answers: b's."""
    start_pair(pair)
    load = pair.start_load(conns=HELD, duration=LOAD_SECONDS)
    pair.a.kill_fulcrumd()
    pair.wait_state("b", "master")
    fulcrumlab.wait_for(lambda: not pair.a.dp_health()["ha"]["active"], 10,
                        what="a's dataplane to go inactive when its lease ran out")
    assert VIP in pair.a.fl0_addresses(), "a's VIP was removed: this test no longer shows the fence"
    pair.wait_owner({"b"})
    for _ in range(5):
        assert pair.owner_of(window=0.3) == {"b"}, "split brain: a still answers for the VIP"
    since = wait_client_follows(pair, "b")
    assert pair.a.dataplane.alive()
    assert_connections_survived(pair, load, since)
    assert pair.a.dp_health()["ha"]["active"] is False


def test_sigterm_of_the_master_hands_over_with_a_priority_0_advert(pair):
    start_pair(pair)
    cap = pair.start_capture()
    load = pair.start_load(conns=HELD, duration=LOAD_SECONDS)
    t_stop = time.time()
    assert pair.a.stop_fulcrumd() == 0, "fulcrumd did not exit cleanly on SIGTERM"
    pair.wait_state("b", "master")
    pair.wait_owner({"b"})
    since = wait_client_follows(pair, "b")
    adverts = [f for f in pair.captured(cap) if f["kind"] == "vrrp" and f["t"] >= t_stop]
    resign = [f for f in adverts if f["src"] == NODE_ADDR["a"] and f["priority"] == 0]
    assert resign, f"no priority-0 advert from a after SIGTERM: {adverts[:5]}"
    assert resign[0]["vrid"] == halab.VRID and resign[0]["ttl"] == 255 and resign[0]["version"] == 3
    # b took over on the resignation (after its skew time), not on the master-down timer.
    hb = pair.b.ha()
    assert "priority 0" in hb["last_transition"]["reason"], hb["last_transition"]
    assert hb["counters"]["priority_zero_received"] >= 1, hb["counters"]
    # a released what it held: the VIP is off its fl0 and its dataplane is inactive.
    assert VIP not in pair.a.fl0_addresses()
    fulcrumlab.wait_for(lambda: not pair.a.dp_health()["ha"]["active"], 10, what="a's dataplane to go inactive")
    # b announced the VIP after the stop, and the last word is b's (a keeps forwarding until b's
    # advert arrives, but announces nothing after its resignation).
    garps = [f for f in pair.captured(cap)
             if f["kind"] == "arp" and f["gratuitous"] and f["psrc"] == VIP and f["t"] >= t_stop]
    assert garps and garps[-1]["hwsrc"] == pair.b.mac, garps[-5:]
    assert any(f["hwsrc"] == pair.b.mac for f in garps), garps[-5:]
    assert_connections_survived(pair, load, since)


@pytest.mark.parametrize("preempt", [True, False], ids=["preempt", "nopreempt"])
def test_restarted_master_takes_back_only_with_preempt(pair, preempt):
    start_pair(pair, ha={"preempt": preempt})
    load = pair.start_load(conns=HELD, duration=LOAD_SECONDS + 10)
    pair.a.kill()
    pair.wait_state("b", "master")
    pair.wait_owner({"b"})
    wait_client_follows(pair, "b")
    cap = pair.start_capture()
    t_restart = time.time()
    pair.a.restart()
    if preempt:
        pair.wait_state("a", "master")
        pair.wait_state("b", "backup")
        pair.wait_owner({"a"})
        since = wait_client_follows(pair, "a")
        assert "preempt" in pair.a.ha()["last_transition"]["reason"], pair.a.ha()["last_transition"]
        assert VIP not in pair.b.fl0_addresses()
        fulcrumlab.wait_for(lambda: not pair.b.dp_health()["ha"]["active"], 10, what="b's dataplane to go inactive")
    else:
        pair.wait_state("a", "backup")
        fulcrumlab.wait_for(lambda: (pair.a.ha() or {}).get("master") == NODE_ADDR["b"], 10,
                            what="a to follow b as master")
        # b keeps the VIP: while 20 more of b's adverts go by (2 s at 100 ms), a sends none.
        fulcrumlab.wait_for(lambda: sum(1 for f in pair.captured(cap) if f["kind"] == "vrrp" and f["t"] >= t_restart
                                        and f["src"] == NODE_ADDR["b"] and f["priority"] == 100) >= 20, 20,
                            what="20 adverts from b")
        from_a = [f for f in pair.captured(cap) if f["kind"] == "vrrp" and f["src"] == NODE_ADDR["a"]]
        assert not from_a, f"a advertised although preemption is off: {from_a[:3]}"
        assert pair.ha_state("a") == "backup" and pair.ha_state("b") == "master"
        assert pair.owner_of() == {"b"}
        since = time.monotonic()
    assert_connections_survived(pair, load, since)


@pytest.mark.parametrize("keepalived_role", ["backup", "master"])
def test_keepalived_peer(pair, keepalived_role):
    """keepalived 2.2.7 (vrrp_version 3, same VRID and VIP) on the other balancer's fl0, over
    a standalone dataplane: it follows Fulcrum as backup and Fulcrum follows it, and either
    takes over when the other's host dies and hands back by preemption when it returns."""
    needs_keepalived()
    if keepalived_role == "backup":
        start_pair(pair, a="fulcrum", b="keepalived")
    else:
        start_pair(pair, a="keepalived", b="fulcrum")
    load = pair.start_load(conns=HELD, duration=LOAD_SECONDS + 10)
    pair.a.kill()
    pair.wait_state("b", "master")
    pair.wait_owner({"b"})
    wait_client_follows(pair, "b")
    assert VIP in pair.b.fl0_addresses()
    pair.a.restart()
    pair.wait_state("a", "master")  # a has the higher priority and both preempt
    pair.wait_state("b", "backup")
    pair.wait_owner({"a"})
    since = wait_client_follows(pair, "a")
    fulcrumlab.wait_for(lambda: VIP not in pair.b.fl0_addresses(), 10, what="b to remove the VIP from fl0")
    if keepalived_role == "master":
        fulcrumlab.wait_for(lambda: (pair.b.ha() or {}).get("master") == NODE_ADDR["a"], 10,
                            what="fulcrumd to follow keepalived as master")
    assert_connections_survived(pair, load, since)


def test_operator_release_and_takeover_through_fulcrumctl(pair):
    """`fulcrumctl ha release` on the master hands the VIP to the peer (and holds it off
    master), `takeover` takes it back, `resume` returns to the configured behaviour."""
    start_pair(pair)
    load = pair.start_load(conns=HELD, duration=LOAD_SECONDS + 10)
    r = pair.a.ctl("ha", "release")
    assert r.returncode == 0, r.stderr
    pair.wait_state("b", "master")
    pair.wait_owner({"b"})
    wait_client_follows(pair, "b")
    ha = pair.a.ha()
    assert ha["state"] in ("backup", "fault") and ha["operator"] == "release" and ha["faults"], ha
    assert not pair.a.dp_health()["ha"]["active"]
    r = pair.a.ctl("ha", "takeover")
    assert r.returncode == 0, r.stderr
    pair.wait_state("a", "master")
    pair.wait_state("b", "backup")
    pair.wait_owner({"a"})
    since = wait_client_follows(pair, "a")
    r = pair.a.ctl("ha")
    assert r.returncode == 0 and "master" in r.stdout, r.stdout + r.stderr
    r = pair.a.ctl("ha", "resume")
    assert r.returncode == 0, r.stderr
    ha = pair.a.ha()
    assert ha["operator"] == "" and ha["priority"] == 150, ha
    assert pair.ha_state("a") == "master" and pair.owner_of() == {"a"}  # a has the higher priority
    assert_connections_survived(pair, load, since)


# ---- IPv6 ----------------------------------------------------------------------------------

HELD_EACH = HELD // 2  # held connections per family when both run at once


@pytest.fixture
def pair6(tmp_path):
    """The dual-stack lab: the IPv4 VIP ("web") and the IPv6 VIP ("web6") at once."""
    with halab.PairLab(tmp_path, ipv6=True) as lab:
        yield lab


@pytest.fixture
def pair6only(tmp_path):
    """IPv6 VIP only: fulcrumd runs the IPv6 virtual router alone."""
    with halab.PairLab(tmp_path, ipv6=True, vips=()) as lab:
        yield lab


def wait_router(node, family, state):
    fulcrumlab.wait_for(lambda: node.router_state(family) == state, 20,
                        what=f"{node.name}'s IPv{family} router to be {state} (now {node.router_state(family)})\n"
                             f"{node.logs()}")


def adverts6(lab, cap, src, since, priority=None):
    return [f for f in lab.captured(cap) if f["kind"] == "vrrp6" and f["src"] == src and f["t"] >= since
            and (priority is None or f["priority"] == priority)]


def assert_announced6(lab, cap, node, since):
    """`node` sent unsolicited neighbour advertisements for the IPv6 VIP after `since` (a
    wall-clock time), each to all nodes, from its link-local address, hop limit 255, override
    set, with its own MAC; and the last one anybody sent is `node`'s."""
    ll = node.link_local()
    nas = [f for f in lab.captured(cap) if f["kind"] == "na" and f["target"] == VIP6 and f["t"] >= since
           and not f["solicited"]]
    mine = [f for f in nas if f["src_mac"] == node.mac]
    assert mine, f"no unsolicited neighbour advertisement for {VIP6} from {node.name}: {nas[-5:]}\n{lab.logs()}"
    for f in mine:
        assert (f["tlla"], f["src"], f["dst"], f["hop_limit"], f["override"]) == (node.mac, ll, "ff02::1", 255, True), f
    assert nas[-1]["src_mac"] == node.mac, nas[-5:]


def test_kill9_fails_over_ipv4_and_ipv6_together(pair6):
    """kill -9 of the master with an IPv4 and an IPv6 VIP: both of b's routers take over, the
    client's ARP and neighbour entries follow b (gratuitous ARP, unsolicited NA), every held
    connection of either family survives; a returns and takes both back by preemption, and b
    removes both VIPs from fl0."""
    lab = pair6
    start_pair(lab)
    a_ll, b_ll = lab.a.link_local(), lab.b.link_local()
    assert a_ll and b_ll and a_ll != b_ll, (a_ll, b_ll)
    for fam in (4, 6):
        assert (lab.a.router_state(fam), lab.b.router_state(fam)) == ("master", "backup"), fam
    cap = lab.start_capture()
    # b follows a's IPv6 adverts too: a sends them at its priority from its link-local address.
    fulcrumlab.wait_for(lambda: len(adverts6(lab, cap, a_ll, 0, 150)) >= 3, 10, what="IPv6 adverts from a")
    assert not adverts6(lab, cap, b_ll, 0), "the IPv6 backup advertises"
    loads = {vip: lab.start_load(conns=HELD_EACH, duration=LOAD_SECONDS + 10, vip=vip) for vip in (VIP, VIP6)}
    for vip in (VIP, VIP6):
        assert lab.client_neigh(vip) == "a", vip
    t_kill = time.time()
    lab.a.kill()
    lab.wait_state("b", "master")
    wait_router(lab.b, 6, "master")
    wait_router(lab.b, 4, "master")
    for vip in (VIP, VIP6):
        lab.wait_owner({"b"}, vip)
    for vip in (VIP, VIP6):
        wait_client_follows(lab, "b", vip)
        assert vip in lab.b.fl0_addresses(), vip
    assert lab.b.dp_health()["ha"]["active"]
    # The VIP on fl0 is never the source of b's own traffic (its health checks to the
    # servers): a /128 would otherwise win source selection over the /64 host address.
    assert lab.b.source_for(halab.SERVERS3_6["s1"]) == halab.NODE_ADDR6["b"]
    assert lab.b.source_for(halab.SERVERS3["s1"]) == NODE_ADDR["b"]
    assert_announced6(lab, cap, lab.b, t_kill)
    fulcrumlab.wait_for(lambda: adverts6(lab, cap, b_ll, t_kill, 100), 5, what="IPv6 adverts from b")
    assert lab.b.ha()["counters"]["na_sent"] >= 1, lab.b.ha()

    t_back = time.time()
    lab.a.restart()
    lab.wait_state("a", "master")
    lab.wait_state("b", "backup")
    wait_router(lab.a, 6, "master")
    wait_router(lab.b, 6, "backup")
    for vip in (VIP, VIP6):
        lab.wait_owner({"a"}, vip)
    since = max(wait_client_follows(lab, "a", vip) for vip in (VIP, VIP6))
    for vip in (VIP, VIP6):
        fulcrumlab.wait_for(lambda: vip not in lab.b.fl0_addresses(), 10, what=f"b to remove {vip} from fl0")
    fulcrumlab.wait_for(lambda: not lab.b.dp_health()["ha"]["active"], 10, what="b's dataplane to go inactive")
    assert lab.a.link_local() == a_ll  # the recreated fl0 has the same MAC, so the same address
    assert_announced6(lab, cap, lab.a, t_back)
    assert adverts6(lab, cap, a_ll, t_back, 150), "a took back the IPv6 VIP without advertising"
    for vip, load in loads.items():
        assert_connections_survived(lab, load, since, conns=HELD_EACH)


def test_kill9_of_the_master_moves_an_ipv6_only_vip(pair6only):
    """With IPv6 VIPs only, the IPv6 router is the one the `ha` view shows: its master is
    named by its link-local address. kill -9 of a: b takes over on a's silence, the client's
    neighbour entry follows b's unsolicited NA and every held connection survives."""
    lab = pair6only
    start_pair(lab)
    a_ll = lab.a.link_local()
    assert lab.a.ha()["master"] == a_ll and lab.b.router_state(4) is None
    assert VIP not in lab.a.fl0_addresses()
    cap = lab.start_capture()
    load = lab.start_load(conns=HELD, duration=LOAD_SECONDS, vip=VIP6)
    assert lab.client_neigh(VIP6) == "a"
    t_kill = time.time()
    lab.a.kill()
    lab.wait_state("b", "master")
    lab.wait_owner({"b"}, VIP6)
    since = wait_client_follows(lab, "b", VIP6)
    assert VIP6 in lab.b.fl0_addresses()
    assert lab.b.dp_health()["ha"]["active"]
    hb = lab.b.ha()
    t = hb["last_transition"]
    assert (t["from"], t["to"]) == ("backup", "master") and a_ll in t["reason"], t
    assert hb["master"] == lab.b.link_local(), hb
    assert_announced6(lab, cap, lab.b, t_kill)
    assert_connections_survived(lab, load, since)


# ---- connection sync ----------------------------------------------------------------------

def wrr_service():
    """Weighted round-robin: each balancer deals new flows out in its own order, so a flow the
    backup first sees mid-stream (after a failover) lands on a server of its own choosing."""
    s = halab.web_service()
    s["scheduler"] = "wrr"
    del s["table_size"]
    for i, server in enumerate(s["servers"]):
        server["weight"] = i + 1
    return s


def sync_overrides(node):
    return {"sync": {"peer": NODE_ADDR["b" if node == "a" else "a"], "port": 8450, "refresh": "1s"}}


def active_connections(node, server=None):
    if server is None:
        return sum(s["active_connections"] for s in (node.admin({"command": "services"}) or {}).get("services", []))
    servers = (node.admin({"command": "servers", "service": "web"}) or {}).get("servers", [])
    return sum(s["active_connections"] for s in servers if s["address"] == server)


@pytest.mark.parametrize("case", ["wrr", "drained"])
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "nosync"])
def test_connections_only_sync_can_keep(pair, case, sync):
    """The connections that identical Maglev tables cannot carry over: a wrr service, and
    connections on a server drained since they began. kill -9 of the master: with connection
    sync every one survives; without it some break (the test shows both)."""
    services = [wrr_service() if case == "wrr" else halab.web_service()]
    for name in ("a", "b"):
        node = getattr(pair, name)
        node.start("fulcrum", ha_overrides=sync_overrides(name) if sync else {}, services=services)
        pair.wait_state(name, "master" if name == "a" else "backup")
    pair.wait_owner({"a"})
    if sync:
        # b asked a for its whole table on start; preemption was held until it completed.
        fulcrumlab.wait_for(lambda: pair.b.ha()["sync"]["bulk_complete"], 15, what=f"b's bulk sync: {pair.b.ha()}")
    load = pair.start_load(conns=HELD, duration=LOAD_SECONDS)
    fulcrumlab.wait_for(lambda: active_connections(pair.a) >= HELD, 15,
                        what=f"a to carry the held connections ({active_connections(pair.a)})")
    drained = halab.SERVERS3["s1"]
    if case == "drained":
        assert active_connections(pair.a, drained) > 0, "no held connection on the server to drain"
        for node in (pair.a, pair.b):
            r = node.admin({"command": "drain", "service": "web", "server": drained}, timeout=15)
            assert r and r["ok"], r
    if sync:
        fulcrumlab.wait_for(lambda: pair.b.ha()["sync"]["installed"] >= HELD, 15,
                            what=f"b to install a's connections: {pair.b.ha()['sync']}")
    pair.a.kill()
    pair.wait_state("b", "master")
    since = wait_client_follows(pair, "b")
    if case == "drained":
        # While the load runs: with sync, b carries the drained server's connections on;
        # without, b has none there (their packets were sent to other servers).
        on_drained = active_connections(pair.b, drained)
        assert (on_drained > 0) if sync else (on_drained == 0), on_drained
    if sync:
        r = assert_connections_survived(pair, load, since)
        s = pair.b.ha()["sync"]
        assert s["refused"] == {}, s
    else:
        r = pair.load_result(load)
        broken = r["held"]["broken"]
        assert broken, "without sync no connection broke: this test no longer shows what sync is for"
        print(f"without sync {len(broken)} of {HELD} held connections broke")


def test_restarted_master_resyncs_from_the_backup_before_taking_back(pair):
    """kill -9 of the master of a synced pair (a wrr service), then its restart: it waits for its
    first publish, asks b for the whole table, takes the VIP back once that completes, and every
    held connection survives both failovers. Nothing goes out before the first publish, so b
    refuses none of the restarted a's datagrams (they carry the configuration digest) and a's
    dataplane is never asked to install records before it runs a snapshot."""
    services = [wrr_service()]
    for name in ("a", "b"):
        getattr(pair, name).start("fulcrum", ha_overrides=sync_overrides(name), services=services)
        pair.wait_state(name, "master" if name == "a" else "backup")
    pair.wait_owner({"a"})
    fulcrumlab.wait_for(lambda: pair.b.ha()["sync"]["bulk_complete"], 15, what=f"b's bulk sync: {pair.b.ha()}")
    load = pair.start_load(conns=HELD, duration=LOAD_SECONDS + 10)
    fulcrumlab.wait_for(lambda: pair.b.ha()["sync"]["installed"] >= HELD, 15,
                        what=f"b to install a's connections: {pair.b.ha()['sync']}")
    pair.a.kill()
    pair.wait_state("b", "master")
    wait_client_follows(pair, "b")
    refused_before = dict(pair.b.ha()["sync"]["refused"])
    pair.a.restart()
    fulcrumlab.wait_for(lambda: (pair.a.ha() or {}).get("sync", {}).get("bulk_complete"), 20,
                        what=f"a's bulk sync from b: {(pair.a.ha() or {}).get('sync')}\n{pair.logs()}")
    pair.wait_state("a", "master")
    pair.wait_state("b", "backup")
    since = wait_client_follows(pair, "a")
    assert_connections_survived(pair, load, since)
    sa, sb = pair.a.ha()["sync"], pair.b.ha()["sync"]
    assert sa["install_failed"] == 0 and sa["dataplane_errors"] == 0, sa
    assert sa["bulk_records_received"] >= HELD, sa
    assert sb["refused"] == refused_before, f"b refused datagrams of the restarted a: {sb['refused']}"


def test_track_services_follows_a_reload(pair):
    """ha.track_services is applied by a reload: a service dropped from both the services and
    the tracked list no longer counts (before, the old list stayed in force and the node faulted
    on the removed service at once: "no server up in api"), and a tracked service that loses
    its servers still faults the node."""
    web, api = halab.web_service(), halab.web_service(name="api", port=8080)
    pair.a.start("fulcrum", services=[web, api], ha_overrides={"track_services": ["web", "api"]})
    pair.wait_state("a", "master")
    cfg = pair.a.config(services=[web], ha_overrides={"track_services": ["web"]})
    pair.a.write_config(cfg)
    r = pair.a.admin({"command": "reload"}, timeout=15)
    assert r and r["ok"], r
    assert not any("ha or interface settings changed" in w for w in r.get("warnings", [])), r
    # Positive evidence that the faults were computed after the reload: web without servers.
    for address in halab.SERVERS3.values():
        r = pair.a.admin({"command": "disable", "service": "web", "server": address}, timeout=15)
        assert r and r["ok"], r
    fulcrumlab.wait_for(lambda: "no server up in web" in pair.a.ha()["faults"], 15, what=f"web's fault: {pair.a.ha()}")
    assert "no server up in api" not in pair.a.ha()["faults"], pair.a.ha()
    for address in halab.SERVERS3.values():
        r = pair.a.admin({"command": "enable", "service": "web", "server": address}, timeout=15)
        assert r and r["ok"], r
    fulcrumlab.wait_for(lambda: not pair.a.ha()["faults"], 15, what=f"no fault: {pair.a.ha()}")
    pair.wait_state("a", "master")
