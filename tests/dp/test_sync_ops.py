"""Connection sync through the real dataplane (docs/control-protocol.md, "Connection sync";
docs/architecture.md, "Connection sync"): sync_drain takes the records the workers export,
sync_install puts a peer's records into every worker's table, sync_dump lists the entries in a
sync state.

Two dataplanes, A and B, each on net_af_packet over a veth in a namespace of the test's own.
They serve the same services with the same servers, but their snapshots differ: A sends every
web flow to 198.18.2.1 (198.18.2.2 has weight 0), B to 198.18.2.2 (198.18.2.1 has weight 0,
and the slots are swapped). Flows opened through A and synced into B must keep going to
198.18.2.1 on B, while B's own new flows go to 198.18.2.2. Which server B sends a frame to is
read from its per-server counters."""
import json
import os
import pathlib
import socket
import struct
import subprocess

import pytest
from scapy.all import IP, TCP, UDP, Ether, raw

import fulcrumlab

OP_SYNC_DRAIN, OP_SYNC_INSTALL, OP_SYNC_DUMP = 7, 8, 9
REC = struct.Struct("<BBBBHHHHI16s16s16s")
assert REC.size == 64
ESTABLISHED, CLOSING, REMOVED = 1, 2, 3
TCP_P, UDP_P = 6, 17

CLIENT_MAC = "02:00:00:00:00:c1"
VIP = "198.18.1.1"
S1, S2, S9 = "198.18.2.1", "198.18.2.2", "198.18.2.9"
NO_REFRESH = {"refresh_ms": 3600000}

# Sends the hex frames given on stdin (one a line) on an interface.
SEND = ("import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((sys.argv[1], 0))\n"
        "for l in sys.stdin.read().split():\n"
        "    s.send(bytes.fromhex(l))")


def server(slot, addr, weight):
    return {"slot": slot, "address": addr, "mac": f"02:00:00:00:02:{slot:02x}", "weight": weight}


def spec(peer_b):
    """A: web on S1 (S2 weight 0); B: slots swapped, web on S2 (S1 weight 0)."""
    web = [server(0, S2, 1), server(1, S1, 0)] if peer_b else [server(0, S1, 1), server(1, S2, 0)]
    return {"generation": 1, "hash_seed": 5, "services": [
        {"id": 1, "name": "web", "vip": VIP, "port": 80, "table_size": 251, "servers": web},
        {"id": 2, "name": "dns", "vip": VIP, "port": 53, "protocol": "udp", "table_size": 251,
         "servers": [server(2, S9, 1)]}]}


def ip4(b):
    return ".".join(str(x) for x in b[:4])


def parse(body):
    assert len(body) % 64 == 0, len(body)
    out = []
    for i in range(0, len(body), 64):
        fam, proto, state, sfam, sport, dport, svc_port, srv_port, idle, src, dst, srv = REC.unpack_from(body, i)
        assert fam == 4 and sfam == 4, (fam, sfam)
        out.append({"proto": proto, "state": state, "src": ip4(src), "sport": sport, "dst": ip4(dst),
                    "dport": dport, "service_port": svc_port, "server": ip4(srv), "server_port": srv_port,
                    "idle_ms": idle, "raw": body[i:i + 64]})
    return out


def record(proto, state, src, sport, dport, srv, family=4):
    a = lambda s: bytes(int(x) for x in s.split(".")) + bytes(12)  # noqa: E731
    return REC.pack(family, proto, state, 4, sport, dport, dport, dport, 0, a(src), a(VIP), a(srv))


class Node:
    """One dataplane in its own namespace."""

    def __init__(self, ns, dp):
        self.ns, self.dp = ns, dp
        with dp.client() as c:
            self.own = c.health()["uplink_mac"]

    def op(self, op, body=b""):
        with self.dp.client() as c:
            return c.raw(op, body)

    def drain(self, req=None):
        st, body = self.op(OP_SYNC_DRAIN, json.dumps(req).encode() if req is not None else b"")
        assert st == 0, body
        return parse(body)

    def drain_all(self):
        out = []
        for _ in range(1000):
            got = self.drain({"max": 65536})
            if not got:
                return out
            out += got
        raise AssertionError("the export rings never emptied")

    def install(self, body):
        st, reply = self.op(OP_SYNC_INSTALL, body)
        return st, json.loads(reply)

    def dump(self):
        st, body = self.op(OP_SYNC_DUMP)
        assert st == 0, body
        return parse(body)

    def counters(self):
        return self.dp.counters()

    def server(self, addr, port=80):
        for s in self.counters()["servers"]:
            if s["address"] == addr and s["port"] == port:
                return s
        raise AssertionError(f"no server {addr}:{port} in the counters")

    def wait_counter(self, name, value):
        """Waits until the counter `name` (or the function of the counters) equals `value`."""
        get = name if callable(name) else (lambda c: c[name])
        return fulcrumlab.wait_for(lambda: (lambda c: c if get(c) == value else None)(self.counters()), 10,
                                   what=f"{name} == {value}")

    def wait_packets(self, addr, n):
        fulcrumlab.wait_for(lambda: self.server(addr)["packets"] == n, 10, what=f"{n} packets to {addr}")

    def send(self, frames):
        rx = self.counters()["rx"]
        subprocess.run(["ip", "netns", "exec", self.ns, "/usr/bin/python3", "-c", SEND, "wire0"],
                       input="\n".join(raw(f).hex() for f in frames), text=True, check=True, timeout=60)
        fulcrumlab.wait_for(lambda: self.counters()["rx"] >= rx + len(frames), 20,
                            what=f"{len(frames)} frames received")

    def tcp(self, sport, flags):
        return Ether(src=CLIENT_MAC, dst=self.own) / IP(src="198.18.0.7", dst=VIP) / TCP(sport=sport, dport=80,
                                                                                         flags=flags)

    def udp(self, sport):
        return Ether(src=CLIENT_MAC, dst=self.own) / IP(src="198.18.0.7", dst=VIP) / UDP(sport=sport, dport=53)


@pytest.fixture
def start(tmp_path):
    """start(name, peer_b, extra) -> Node; everything started is stopped afterwards."""
    stack = []

    def _start(name, peer_b=False, extra=()):
        cm = fulcrumlab.veth_namespace(name)
        ns = cm.__enter__()
        stack.append((cm, None))
        fulcrumlab.prepare_dataplane_uplink(ns, "up0")
        dp = fulcrumlab.Dataplane(tmp_path, ["net_af_packet0,iface=up0,qpairs=1"], "net_af_packet0", netns=ns,
                                  extra=list(extra))
        stack.append((None, dp))
        with dp.client() as c:
            assert c.load_snapshot(fulcrumlab.snapshot_bytes(spec(peer_b), tmp_path)) == 1
        return Node(ns, dp)

    try:
        yield _start
        for _, dp in stack:
            if dp is not None:
                assert dp.alive(), dp.log()
    finally:
        for cm, dp in reversed(stack):
            if dp is not None and dp.alive():
                dp.stop()
            if cm is not None:
                cm.__exit__(None, None, None)


def flows_through_a(a):
    """Opens flows through A: 20 TCP established (5 of them then closed with FIN), 3 TCP
    half-open, 4 UDP. Returns {(proto, sport): state} of what A's table holds in a sync state."""
    est = range(31000, 31020)
    closed = range(31000, 31005)
    half = range(31100, 31103)
    udp = range(5300, 5304)
    frames = [a.tcp(p, "S") for p in est] + [a.tcp(p, "A") for p in est] + [a.tcp(p, "FA") for p in closed]
    frames += [a.tcp(p, "S") for p in half] + [a.udp(p) for p in udp]
    a.send(frames)
    want = {(TCP_P, p): ESTABLISHED for p in est}
    want.update({(TCP_P, p): CLOSING for p in closed})
    want.update({(UDP_P, p): ESTABLISHED for p in udp})
    return want


def check_records(recs, want):
    """Every record names a wanted flow with the server A chose; returns {(proto, sport): state}
    of the last record per flow."""
    last = {}
    for r in recs:
        k = (r["proto"], r["sport"])
        assert k in want, r
        assert (r["src"], r["dst"]) == ("198.18.0.7", VIP), r
        if r["proto"] == TCP_P:
            assert (r["dport"], r["service_port"], r["server"], r["server_port"]) == (80, 80, S1, 80), r
        else:
            assert (r["dport"], r["service_port"], r["server"], r["server_port"]) == (53, 53, S9, 53), r
        last[k] = r["state"]
    return last


def test_drain_install_dump_keeps_flows_on_the_peers_server(start):
    a = start("flsa")
    b = start("flsb", peer_b=True)
    assert a.drain(NO_REFRESH) == [] and b.drain(NO_REFRESH) == []
    want = flows_through_a(a)

    a.wait_counter("sync_exported", 29)
    recs = a.drain_all()
    assert check_records(recs, want) == want
    # Transitions only (refresh is off): an ESTABLISHED per opened flow, a CLOSING per FIN.
    states = sorted(r["state"] for r in recs)
    assert states.count(ESTABLISHED) == 24 and states.count(CLOSING) == 5, states
    c = a.counters()
    assert c["sync_exported"] == len(recs) and c["sync_export_ring_full"] == 0, c

    # The dump is the set of entries in a sync state (the half-open flows are not).
    dump = a.dump()
    assert {(r["proto"], r["sport"]): r["state"] for r in dump} == want
    assert len(dump) == len(want)
    check_records(dump, want)

    # B's own scheduler sends web flows to S2.
    b.send([b.tcp(32000, "S")])
    b.wait_packets(S2, 1)

    # Install A's records into B, in the order A exported them.
    st, reply = b.install(b"".join(r["raw"] for r in recs))
    assert st == 0, reply
    assert reply == {"queued": len(recs), "invalid": 0, "unknown_server": 0, "ring_full": 0}
    b.wait_counter("sync_installed", len(recs))
    dump = b.dump()
    assert {(r["proto"], r["sport"]): r["state"] for r in dump} == want
    check_records(dump, want)
    # The per-server gauges count the installed entries: 15 established, 5 closing on S1.
    s1 = b.server(S1)
    assert (s1["active_connections"], s1["inactive_connections"]) == (15, 5), s1
    assert b.server(S9, 53)["active_connections"] == 4

    # The synced flows' next packets go to S1 on B, as on A; a new flow still goes to S2.
    s1_before, s2_before = s1["packets"], b.server(S2)["packets"]
    b.send([b.tcp(p, "PA") for p in range(31005, 31020)] + [b.tcp(32001, "S")])
    b.wait_packets(S1, s1_before + 15)
    b.wait_packets(S2, s2_before + 1)
    assert b.server(S1)["packets"] == s1_before + 15
    # Installing exported nothing back: B only exports its own transitions (none here: the
    # data packets move no state, the SYN is half-open).
    assert b.drain_all() == []

    # REMOVED takes entries out.
    rm = b"".join(record(TCP_P, REMOVED, "198.18.0.7", p, 80, S1) for p in range(31005, 31010))
    st, reply = b.install(rm)
    assert st == 0 and reply["queued"] == 5, reply
    b.wait_counter("sync_removed", 5)
    left = {(r["proto"], r["sport"]) for r in b.dump()}
    assert not any((TCP_P, p) in left for p in range(31005, 31010))
    assert (TCP_P, 31010) in left


def test_malformed_install_and_drain_are_refused_and_the_dataplane_keeps_running(start):
    b = start("flsm", peer_b=True)
    good = record(TCP_P, ESTABLISHED, "198.18.0.7", 40000, 80, S1)
    for body, what in ((good[:63], "not a whole number"), (good + b"x", "not a whole number")):
        st, reply = b.install(body)
        assert st == 1 and what in reply["error"], reply
    # More than 65536 records is refused on the frame's length, before the body is read.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(b.dp.socket))
        s.sendall(struct.pack("<IB", 1 + 64 * 65537, OP_SYNC_INSTALL))
        head = s.recv(5, socket.MSG_WAITALL)
        length, status = struct.unpack("<IB", head)
        err = json.loads(s.recv(length - 1, socket.MSG_WAITALL))["error"]
        assert status == 1 and "sync_install (8) is longer than the 4194305 bytes it may have" in err, err
    # Records that fail validation or name no known server are counted, not installed.
    bad_family = bytearray(good)
    bad_family[0] = 5
    bad_state = bytearray(good)
    bad_state[2] = 9
    udp_closing = record(UDP_P, CLOSING, "198.18.0.7", 40001, 53, S9)
    unknown = record(TCP_P, ESTABLISHED, "198.18.0.7", 40002, 80, "198.18.2.77")
    st, reply = b.install(bytes(bad_family) + bytes(bad_state) + udp_closing + unknown + good)
    assert st == 0, reply
    assert (reply["queued"], reply["invalid"], reply["unknown_server"], reply["ring_full"]) == (1, 3, 1, 0), reply
    assert "record 0" in reply["first_invalid"] and "bad_family" in reply["first_invalid"], reply
    c = b.wait_counter("sync_installed", 1)
    assert c["sync_install_invalid"] == 3 and c["sync_install_unknown"] == 1, c

    for body, what in ((b"{", "not a JSON object"), (b"[]", "not a JSON object"),
                       (b'{"max": 0}', "'max'"), (b'{"max": 65537}', "'max'"), (b'{"max": "1"}', "'max'"),
                       (b'{"refresh_ms": 99}', "'refresh_ms'"), (b'{"refresh_ms": 3600001}', "'refresh_ms'"),
                       (b'{"maxx": 1}', "unknown field")):
        st, reply = b.op(OP_SYNC_DRAIN, body)
        assert st == 1 and what in json.loads(reply)["error"], (body, reply)
    st, reply = b.op(OP_SYNC_DUMP)
    assert st == 0 and len(reply) == 64 and parse(reply)[0]["sport"] == 40000
    with b.dp.client() as c:
        assert c.health()["status"] == "running"


def test_install_without_snapshot_is_refused(tmp_path):
    with fulcrumlab.veth_namespace("flsn") as ns:
        fulcrumlab.prepare_dataplane_uplink(ns, "up0")
        dp = fulcrumlab.Dataplane(tmp_path, ["net_af_packet0,iface=up0,qpairs=1"], "net_af_packet0", netns=ns)
        try:
            with dp.client() as c:
                st, reply = c.raw(OP_SYNC_INSTALL, record(TCP_P, ESTABLISHED, "198.18.0.7", 1, 80, S1))
                assert st == 1 and "no snapshot loaded" in json.loads(reply)["error"]
                st, reply = c.raw(OP_SYNC_DUMP)
                assert st == 0 and reply == b""
        finally:
            assert dp.stop() == 0, dp.log()


def test_export_ring_full_is_counted_and_refresh_reexports(start):
    a = start("flsr", extra=["--sync-ring", "16"])
    assert a.drain(NO_REFRESH) == []
    a.send([a.udp(p) for p in range(6000, 6040)])  # each new UDP flow exports ESTABLISHED
    c = a.wait_counter(lambda c: c["sync_exported"] + c["sync_export_ring_full"] >= 40, True)
    assert c["sync_exported"] == 16, c  # nobody drained: the ring holds 16
    assert c["sync_export_ring_full"] >= 24, c
    recs = a.drain_all()
    assert len(recs) == 16 and all(r["proto"] == UDP_P and r["state"] == ESTABLISHED for r in recs)

    # A short refresh interval re-exports the established entries, with their idle time.
    a.drain({"refresh_ms": 100})
    seen = {}

    def refreshed():
        for r in a.drain({"max": 16}):
            seen[r["sport"]] = r
        return len(seen) == 40

    fulcrumlab.wait_for(refreshed, 20, interval=0.02, what="every flow refreshed")
    assert all(r["state"] == ESTABLISHED and r["server"] == S9 for r in seen.values())
    assert any(r["idle_ms"] > 0 for r in seen.values())
    with a.dp.client() as cl:
        assert cl.health()["sync"] == {"export_ring": 16, "refresh_ms": 100}


def test_sync_ring_must_be_a_power_of_two(tmp_path):
    with fulcrumlab.veth_namespace("flsp") as ns:
        fulcrumlab.prepare_dataplane_uplink(ns, "up0")
        with pytest.raises(RuntimeError, match="--sync-ring 1000 must be 0"):
            fulcrumlab.Dataplane(tmp_path, ["net_af_packet0,iface=up0,qpairs=1"], "net_af_packet0", netns=ns,
                                 extra=["--sync-ring", "1000"])


def test_sync_counters_are_in_dpdk_telemetry(start):
    from test_telemetry import telemetry  # skips when dpdk-telemetry.py is not installed
    a = start("flst", extra=["--sync-ring", "4"])
    assert a.drain(NO_REFRESH) == []
    a.send([a.udp(p) for p in range(7000, 7010)])
    c = a.wait_counter(lambda c: c["sync_exported"] + c["sync_export_ring_full"] >= 10, True)
    stats = telemetry(a.dp.prefix, "/fulcrum/stats")["/fulcrum/stats"]
    assert (stats["sync_exported"], stats["sync_export_ring_full"]) == (c["sync_exported"], c["sync_export_ring_full"])
    assert stats["sync_exported"] == 4 and stats["sync_installed"] == 0 and "sync_removed" in stats


class TwoWorkers(fulcrumlab.Dataplane):
    """fulcrum-dataplane with two workers on a null device (no traffic), whatever the number of
    CPUs: EAL --lcores puts lcores 1 and 2 (the workers) on CPU 1 or 0."""

    def __init__(self, workdir):
        self.workdir = pathlib.Path(workdir)
        self.prefix = fulcrumlab.unique("fl")
        self.socket = self.workdir / f"{self.prefix}.sock"
        cpu = min(1, (os.cpu_count() or 1) - 1)
        eal = ["--no-huge", "-m", "256", "--no-pci", "--file-prefix", self.prefix, "--lcores",
               f"0@0,1@{cpu},2@{cpu}", "--log-level", "*:warning", "--vdev", "net_null0,no-rx=1"]
        args = ["--uplink", "net_null0", "--control-socket", str(self.socket), "--conn-capacity", "65536",
                "--idle-sleep-us", "100", "--no-state-file"]
        fulcrumlab.Process.__init__(self, [str(fulcrumlab.DATAPLANE)] + eal + ["--"] + args,
                                    log=self.workdir / f"{self.prefix}.log")
        self.wait_ready()


def test_install_reaches_every_worker_and_the_dump_merges_the_copies(tmp_path):
    # Each worker gets its own copy of every installed entry; the dump lists each flow once,
    # with its freshest copy.
    dp = TwoWorkers(tmp_path)
    try:
        with dp.client() as c:
            assert c.health()["workers"] == 2
            assert c.load_snapshot(fulcrumlab.snapshot_bytes(spec(True), tmp_path)) == 1
            recs = [bytearray(record(TCP_P, ESTABLISHED, "198.18.0.7", 33000 + i, 80, S1)) for i in range(10)]
            for i, r in enumerate(recs):
                struct.pack_into("<I", r, 12, 1000 + i)  # idle_ms
            st, reply = c.raw(OP_SYNC_INSTALL, b"".join(bytes(r) for r in recs))
            assert st == 0 and json.loads(reply)["queued"] == 10, reply
            fulcrumlab.wait_for(lambda: c.counters()["sync_installed"] == 20, 10, what="both workers installed")
            # A second install of the first flow, fresher: every copy is overwritten.
            fresh = bytearray(recs[0])
            struct.pack_into("<I", fresh, 12, 5)
            st, reply = c.raw(OP_SYNC_INSTALL, bytes(fresh))
            assert st == 0, reply
            fulcrumlab.wait_for(lambda: c.counters()["sync_installed"] == 22, 10, what="overwrite installed")
            st, body = c.raw(OP_SYNC_DUMP)
            assert st == 0, body
            dump = parse(body)
            assert sorted(r["sport"] for r in dump) == list(range(33000, 33010))
            by_port = {r["sport"]: r for r in dump}
            assert by_port[33000]["idle_ms"] < 1000  # the overwritten copies, not older ones
            assert all(1000 + i <= by_port[33000 + i]["idle_ms"] < 60000 for i in range(1, 10))
            # Copies count once per worker in the server's gauge (as restored entries do).
            srv = next(s for s in c.counters()["servers"] if s["address"] == S1)
            assert srv["active_connections"] == 20
            assert parse(c.request(OP_SYNC_DRAIN)) == []  # installing exports nothing
    finally:
        assert dp.stop() == 0, dp.log()
