"""The conn_list control op (docs/control-protocol.md, "conn_list"): the workers' connection
entries, read the way sync_dump reads them, filtered and paged by the control thread. Entries are
put into the table with sync_install (no traffic needed); malformed queries are refused with the
key at fault and the dataplane keeps running."""
import json
import struct

import pytest

import fulcrumlab

OP_SYNC_INSTALL, OP_CONN_LIST = 8, 10
REC = struct.Struct("<BBBBHHHHI16s16s16s")
ESTABLISHED, CLOSING = 1, 2
TCP_P, UDP_P = 6, 17
VIP = "198.18.1.1"
S1, S2, S9 = "198.18.2.1", "198.18.2.2", "198.18.2.9"


def server(slot, addr):
    return {"slot": slot, "address": addr, "mac": f"02:00:00:00:02:{slot:02x}", "weight": 1}


SPEC = {"generation": 1, "hash_seed": 5, "services": [
    {"id": 1, "name": "web", "vip": VIP, "port": 80, "table_size": 251, "servers": [server(0, S1), server(1, S2)]},
    {"id": 2, "name": "dns", "vip": VIP, "port": 53, "protocol": "udp", "table_size": 251,
     "servers": [server(2, S9)]}]}


def a4(s):
    return bytes(int(x) for x in s.split(".")) + bytes(12)


def record(proto, state, client, sport, dport, srv, idle=0):
    return REC.pack(4, proto, state, 4, sport, dport, dport, dport, idle, a4(client), a4(VIP), a4(srv))


@pytest.fixture
def dp(tmp_path):
    with fulcrumlab.veth_namespace("flcl") as ns:
        fulcrumlab.prepare_dataplane_uplink(ns, "up0")
        d = fulcrumlab.Dataplane(tmp_path, ["net_af_packet0,iface=up0,qpairs=1"], "net_af_packet0", netns=ns)
        try:
            with d.client() as c:
                assert c.load_snapshot(fulcrumlab.snapshot_bytes(SPEC, tmp_path)) == 1
            yield d
            assert d.alive(), d.log()
        finally:
            d.stop()


def conn_list(c, query=None):
    st, body = c.raw(OP_CONN_LIST, json.dumps(query).encode() if query is not None else b"")
    return st, json.loads(body)


def test_conn_list_filters_and_pages_the_installed_entries(dp):
    recs = [record(TCP_P, ESTABLISHED, "198.18.0.7", 40000 + i, 80, S1, idle=100) for i in range(12)]
    recs += [record(TCP_P, CLOSING, "198.18.0.8", 41000 + i, 80, S2) for i in range(5)]
    recs += [record(UDP_P, ESTABLISHED, "198.18.0.8", 5300 + i, 53, S9) for i in range(3)]
    with dp.client() as c:
        st, reply = c.raw(OP_SYNC_INSTALL, b"".join(recs))
        assert st == 0 and json.loads(reply)["queued"] == 20, reply
        fulcrumlab.wait_for(lambda: c.counters()["sync_installed"] == 20, 10, what="the entries installed")

        st, r = conn_list(c)
        assert st == 0, r
        assert r["total"] == 20 and r["next_cursor"] is None and r["skipped"] == 0, r
        got = {(e["proto"], e["client"], e["client_port"]): e for e in r["entries"]}
        e = got[("tcp", "198.18.0.7", 40003)]
        assert (e["vip"], e["port"], e["state"], e["server"], e["server_port"]) == (VIP, 80, "established", S1, 80), e
        assert 100 <= e["idle_ms"] < 60000, e
        assert got[("tcp", "198.18.0.8", 41000)]["state"] == "closing"
        assert got[("udp", "198.18.0.8", 5301)]["state"] == "udp"
        assert got[("udp", "198.18.0.8", 5301)]["server"] == S9

        assert conn_list(c, {"server": S2})[1]["total"] == 5
        assert conn_list(c, {"vip": VIP, "port": 53, "proto": "udp"})[1]["total"] == 3
        assert conn_list(c, {"client": "198.18.0.8", "proto": "tcp"})[1]["total"] == 5
        one = conn_list(c, {"client": "198.18.0.7", "client_port": 40007, "vip": VIP, "port": 80, "proto": "tcp"})[1]
        assert one["total"] == 1 and one["entries"][0]["server"] == S1, one
        assert conn_list(c, {"client": "198.18.0.9"})[1]["total"] == 0

        # Pages of 5 over the 12 entries to S1: each entry once, then a null next_cursor.
        seen, cursor = [], 0
        for _ in range(10):
            st, p = conn_list(c, {"server": S1, "limit": 5, "cursor": cursor})
            assert st == 0 and p["total"] == 12 and len(p["entries"]) <= 5, p
            seen += [e["client_port"] for e in p["entries"]]
            if p["next_cursor"] is None:
                break
            cursor = p["next_cursor"]
        assert sorted(seen) == list(range(40000, 40012)), seen


def test_conn_list_refuses_malformed_queries(dp):
    with dp.client() as c:
        for body, want in [(b"[1]", "not a JSON object"), (b"{", "not a JSON object"),
                           (b'{"limit": 0}', '"limit" must be an integer from 1 to 10000'),
                           (b'{"limit": 10001}', '"limit" must be an integer from 1 to 10000'),
                           (b'{"vip": "198.18.1.300"}', '"vip" must be an IPv4 or IPv6 address'),
                           (b'{"proto": "sctp"}', '"proto" must be "tcp" or "udp"'),
                           (b'{"bogus": 1}', 'unknown key "bogus"')]:
            st, reply = c.raw(OP_CONN_LIST, body)
            assert st == 1, (body, reply)
            assert want in json.loads(reply)["error"], (body, reply)
        st, r = conn_list(c)
        assert st == 0 and r["total"] == 0 and r["entries"] == [], r
