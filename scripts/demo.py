#!/usr/bin/python3
"""Fulcrum demo (run through scripts/demo.sh): one balancer, then an active-passive pair.

Topology, all in network namespaces on one virtual L2 segment (198.18.0.0/24):

    client 198.18.0.1 ──┐
                        ├── switch ──┬── balancer: fulcrum-dataplane (AF_PACKET on eth0,
    web1 198.18.0.11 ───┤            │   TAP fl0 = 198.18.0.2 + VIP 198.18.0.100) + fulcrumd
    web2 198.18.0.12 ───┤
    web3 198.18.0.13 ───┘   servers hold the VIP on lo and answer clients directly (DSR)
"""
import collections
import pathlib
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "lib"))
import fulcrumlab  # noqa: E402
import halab  # noqa: E402

VIP = "198.18.0.100"
SERVERS = {"web1": "198.18.0.11", "web2": "198.18.0.12", "web3": "198.18.0.13"}
WEIGHTS = {"web1": 1, "web2": 2, "web3": 3}
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def step(text):
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


def show_distribution(counts, total):
    for name in SERVERS:
        n = counts.get(name, 0)
        bar = "#" * round(40 * n / max(1, total))
        print(f"   {name} (weight {WEIGHTS[name]})  {n:5d}  {100 * n / max(1, total):5.1f}%  {bar}")


def connections(lab, n):
    c = collections.Counter()
    for _ in range(n):
        c[fulcrumlab.connect_once(lab.client, VIP, 80)] += 1
    return c


class Traffic:
    """Background clients: one new connection every few milliseconds, failures counted."""

    def __init__(self, lab):
        self.lab = lab
        self.ok = collections.Counter()
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                self.ok[fulcrumlab.connect_once(self.lab.client, VIP, 80, timeout=2)] += 1
            except OSError:
                self.failed += 1
            time.sleep(0.005)

    def close(self):
        self.stop.set()
        self.thread.join()


def main():
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="fulcrum-demo-"))
    step("building the topology: a client, a balancer and three web servers in network namespaces")
    with fulcrumlab.Lab(workdir, SERVERS, vips=[VIP], tag="demo") as lab:
        print(f"   dataplane: {lab.dataplane.counters()['ports'][0]['name']} on the balancer's eth0, "
              f"exception path fl0 ({lab.LB}, VIP {VIP})")
        services = [{"name": "web", "vip": VIP, "port": 80, "scheduler": "maglev", "forwarding": "dsr",
                     "servers": [{"address": a, "weight": WEIGHTS[n]} for n, a in SERVERS.items()]}]
        cfg = lab.config(services, health={"type": "http", "port": 8080, "path": "/health", "interval": "500ms",
                                           "timeout": "300ms", "rise": 2, "fall": 2})
        path = lab.write_config(cfg)
        print(f"   fulcrumd configuration: {path}")
        lab.start_fulcrumd(path)
        print(lab.ctl("servers", check=True).stdout.rstrip())

        step("1. 1200 TCP connections to the VIP: Maglev spreads them by weight 1:2:3")
        t0 = time.monotonic()
        c = connections(lab, 1200)
        print(f"   {sum(c.values())} connections in {time.monotonic() - t0:.1f}s, per server:")
        show_distribution(c, 1200)

        step("2. web2 stops while clients keep connecting: the health check takes it out")
        traffic = Traffic(lab)
        time.sleep(1.0)
        lab.stop_backend("web2")
        t0 = time.monotonic()
        print(f"   {time.strftime('%H:%M:%S')} web2's server process stopped")
        fulcrumlab.wait_for(lambda: lab.servers_state("web")[SERVERS["web2"]]["state"] == "down", 10, 0.05)
        took = time.monotonic() - t0
        reason = lab.servers_state("web")[SERVERS["web2"]]["reason"]
        print(f"   {time.strftime('%H:%M:%S')} fulcrumd: web2 down after {took:.2f}s ({reason}); "
              f"new snapshot published")
        before = dict(traffic.ok)
        time.sleep(3.0)
        during = {k: traffic.ok[k] - before.get(k, 0) for k in SERVERS}
        print(f"   next 3 s of traffic: {during}; failed connections while web2 was going down: {traffic.failed}")
        print(f"   {DIM}(connections that reached web2 between its death and fall x interval fail: "
              f"that is the health check's detection window){RESET}")

        step("3. web2 comes back: after `rise` good checks it takes new connections again")
        failed_before = traffic.failed
        lab.start_backend("web2")
        t0 = time.monotonic()
        fulcrumlab.wait_for(lambda: lab.servers_state("web")[SERVERS["web2"]]["state"] == "up", 10, 0.05)
        print(f"   web2 up again after {time.monotonic() - t0:.2f}s")
        before = dict(traffic.ok)
        time.sleep(3.0)
        traffic.close()
        after = {k: traffic.ok[k] - before.get(k, 0) for k in SERVERS}
        print(f"   next 3 s of traffic: {after}; failures since web2 returned: {traffic.failed - failed_before}")

        step("4. operators drain web3: established connections stay, new ones go elsewhere")
        held = [fulcrumlab.HeldConnection(lab.client, VIP, 80) for _ in range(12)]
        on3 = [h for h in held if h.server == "web3"]
        print("   " + lab.ctl("drain", "web", SERVERS["web3"], check=True).stdout.strip())
        lab.wait_published()
        c = connections(lab, 300)
        alive = sum(h.alive() for h in on3)
        print(f"   300 new connections: {dict(c)}; the {len(on3)} open connections on web3 still answer: "
              f"{alive}/{len(on3)}")
        for h in held:
            h.close()
        lab.ctl("enable", "web", SERVERS["web3"], check=True)

        step("5. fulcrumctl")
        for args in (("status",), ("services",), ("servers",)):
            print(f"   $ fulcrumctl {' '.join(args)}")
            for line in lab.ctl(*args, check=True).stdout.rstrip().splitlines():
                print(f"   {line}")

        step(f"6. Prometheus metrics (curl http://127.0.0.1:{lab.metrics_port}/metrics on the balancer)")
        time.sleep(1.2)
        wanted = ("fulcrum_server_up{", "fulcrum_server_new_connections_total{", "fulcrum_server_active_connections{",
                  "fulcrum_snapshot_generation ", "fulcrum_dataplane_forwarded_packets_total{")
        for line in lab.metrics().splitlines():
            if line.startswith(wanted):
                print(f"   {line}")

        step("cleaning up: stopping fulcrumd, the dataplane and the servers, removing the namespaces")
    pair_demo(workdir / "pair")
    print("done.")


def ha_line(node):
    h = node.ha() or {}
    t = h.get("last_transition") or {}
    line = f"{node.name}: {h.get('state', '?')}, priority {h.get('priority', '?')}"
    if t:
        line += f"; last transition {t['from']} -> {t['to']}: {t['reason']}"
    return line


def pair_demo(workdir):
    """Part two: two balancers, a (priority 150) and b (100), VRRPv3 between them and connection
    sync; a wrr service, whose flows only sync can carry over to the other balancer."""
    workdir.mkdir(parents=True, exist_ok=True)
    step("7. an active-passive pair: balancers a (priority 150) and b (100), VRRPv3 over fl0, "
         "connection sync, a wrr service")
    with halab.PairLab(workdir, tag="dpair") as pair:
        service = halab.web_service()
        service["scheduler"] = "wrr"
        del service["table_size"]
        peer = {"a": halab.NODE_ADDR["b"], "b": halab.NODE_ADDR["a"]}
        for name in ("a", "b"):
            getattr(pair, name).start("fulcrum", services=[service],
                                      ha_overrides={"sync": {"peer": peer[name], "refresh": "1s"}})
            pair.wait_state(name, "master" if name == "a" else "backup")
        pair.wait_owner({"a"})
        for node in (pair.a, pair.b):
            print(f"   {ha_line(node)}")
        conns = 200
        load = pair.start_load(conns=conns, duration=40)
        fulcrumlab.wait_for(lambda: pair.b.ha()["sync"]["installed"] >= conns, 20, 0.1,
                            what="b to hold a's connections")
        print(f"   {conns} client connections exchange data every 100 ms through a; "
              f"b has installed {pair.b.ha()['sync']['installed']} synced connection records")

        step("8. kill -9 of balancer a (fulcrumd and dataplane): b takes over")
        t0 = time.monotonic()
        pair.a.kill()
        pair.wait_state("b", "master")
        print(f"   b is master after {time.monotonic() - t0:.2f}s: {ha_line(pair.b)}")
        fulcrumlab.wait_for(lambda: pair.client_neigh() == "b", 15, 0.02, what="the client to follow b")
        print(f"   the client's ARP entry for the VIP points at b after {time.monotonic() - t0:.2f}s "
              f"(b's gratuitous ARP)")

        step("9. a comes back: it asks b for the whole connection table, then takes the VIP back")
        pair.a.restart()
        fulcrumlab.wait_for(lambda: (pair.a.ha() or {}).get("sync", {}).get("bulk_complete"), 20, 0.05,
                            what="a's bulk sync")
        print(f"   a's bulk sync complete: {pair.a.ha()['sync']['bulk_records_received']} records from b")
        pair.wait_state("a", "master")
        pair.wait_state("b", "backup")
        fulcrumlab.wait_for(lambda: pair.client_neigh() == "a", 15, 0.02, what="the client to follow a")
        for node in (pair.a, pair.b):
            print(f"   {ha_line(node)}")
        r = pair.load_result(load)
        held = r["held"]
        print(f"   the {conns} connections through both failovers: {conns - len(held['broken'])} alive, "
              f"{len(held['broken'])} broken; longest pause {held['max_gap_ms']:.0f} ms; new connections "
              f"{r['new']['ok']}/{r['new']['attempted']} ok")
        print(f"   $ fulcrumctl ha   (on a)")
        for line in pair.a.ctl("ha").stdout.rstrip().splitlines():
            print(f"   {line}")
        step("cleaning up the pair")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo made has been removed")
        sys.exit(130)
