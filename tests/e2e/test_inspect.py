"""End to end: fulcrumctl connections lists the flows opened through the lab with the servers
that answered them, and fulcrumctl lookup agrees: an open flow is pinned by its entry, and for a
flow not yet opened it names the server that then answers it (Maglev)."""
import contextlib
import json

import fulcrumlab
from conftest import SERVERS3, VIP, web_service

CLIENT = fulcrumlab.Lab.CLIENT
NAME_OF = {addr: name for name, addr in SERVERS3.items()}


def ctl_json(lab, *args):
    r = lab.ctl("--json", *args)
    assert r.returncode == 0, r.stderr + r.stdout
    return json.loads(r.stdout)


def connect_from(lab, port):
    """A connection from the client's `port` to the VIP; returns (socket, the answering server)."""
    s = fulcrumlab.ns_socket(lab.client)
    s.settimeout(5)
    s.bind((CLIENT, port))
    s.connect((VIP, 80))
    name = s.makefile("rb").readline().decode().strip()
    return s, name


def test_connections_and_lookup_agree_with_the_flows_opened(lab3):
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(SERVERS3)])))
    conns = []
    try:
        conns = [fulcrumlab.HeldConnection(lab3.client, VIP, 80) for _ in range(20)]
        opened = {c.sock.getsockname()[1]: SERVERS3[c.server] for c in conns}
        assert len(set(opened.values())) > 1, opened

        # Every opened flow is listed, with the server that answered it.
        listed = {}
        cursor = 0
        for _ in range(20):  # pages of 7
            page = ctl_json(lab3, "connections", "--service", "web", "--limit", "7", "--cursor", str(cursor))
            for e in page["entries"]:
                assert (e["service"], e["vip"], e["port"], e["proto"]) == ("web", VIP, 80, "tcp"), e
                if e["client"] == CLIENT:
                    listed[e["client_port"]] = e
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        for port, addr in opened.items():
            assert port in listed, f"flow from port {port} not listed: {sorted(listed)}"
            assert listed[port]["server"] == addr and listed[port]["state"] == "established", listed[port]

        # Filters: one server's flows; one client port.
        some = next(iter(opened.values()))
        by_server = ctl_json(lab3, "connections", "--server", some, "--limit", "100")
        assert {e["client_port"] for e in by_server["entries"] if e["client"] == CLIENT} == \
            {p for p, a in opened.items() if a == some}
        port, addr = next(iter(opened.items()))
        one = ctl_json(lab3, "connections", "--client", f"{CLIENT}:{port}")
        assert one["total"] == 1 and one["entries"][0]["server"] == addr, one
        table = lab3.ctl("connections", "--client", f"{CLIENT}:{port}", check=True).stdout
        assert f"{CLIENT}:{port}" in table and f"{addr}:80" in table and "1 of 1 matching" in table, table

        # lookup of an open flow: its entry.
        r = ctl_json(lab3, "lookup", f"{CLIENT}:{port}", f"{VIP}:80/tcp")
        assert r["verdict"] == "entry" and r["server"] == f"{addr}:80" and r["service"] == "web", r
        assert r["entry"]["state"] == "established", r
        human = lab3.ctl("lookup", f"{CLIENT}:{port}", f"{VIP}:80", check=True).stdout
        assert f"{addr}:80" in human and "existing connection entry" in human, human

        # lookup of flows not opened yet: the Maglev choice, which the flow then follows.
        predicted = {}
        for p in range(47000, 47012):
            r = ctl_json(lab3, "lookup", f"{CLIENT}:{p}", f"{VIP}:80")
            assert r["verdict"] == "scheduler" and r["choice"]["scheduler"] == "maglev", r
            assert r["choice"]["server_has_mac"] is True, r
            predicted[p] = r["server"]
        assert len(set(predicted.values())) > 1, predicted
        for p, want in predicted.items():
            s, name = connect_from(lab3, p)
            with contextlib.closing(s):
                assert f"{SERVERS3[name]}:80" == want, f"port {p}: lookup said {want}, {name} answered"

        # Not a service: not balanced.
        r = ctl_json(lab3, "lookup", f"{CLIENT}:1234", f"{VIP}:443/tcp")
        assert r["verdict"] == "not_balanced" and r["server"] is None and "goes to the kernel" in r["reason"], r
        # Refusals say what is wrong.
        bad = lab3.ctl("lookup", f"{CLIENT}", f"{VIP}:80")
        assert bad.returncode == 1 and \
            f"lookup: \"client\" must be ADDRESS:PORT or [IPV6]:PORT, not '{CLIENT}'" in bad.stderr, bad.stderr
        bad = lab3.ctl("connections", "--service", "nope")
        assert bad.returncode == 1 and "no service named 'nope'" in bad.stderr, bad.stderr
    finally:
        for c in conns:
            c.close()
