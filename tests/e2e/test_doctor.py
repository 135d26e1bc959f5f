"""End to end: fulcrumctl doctor on the lab finds the usual mistakes one by one (a VIP missing
from fl0, a server without a MAC, no_server drops rising, the dataplane gone) and says what to
do; on a healthy lab it finds none."""
import json
import threading

import fulcrumlab
from conftest import SERVERS3, VIP, web_service


def doctor(lab):
    r = lab.ctl("--json", "doctor")
    reply = json.loads(r.stdout)
    assert reply["ok"] is True, reply
    assert (r.returncode == 1) == (reply["errors"] > 0), (r.returncode, reply)
    return {c["check"]: c for c in reply["checks"]}, reply


def hugepages_total():
    for line in open("/proc/meminfo"):
        if line.startswith("HugePages_Total:"):
            return int(line.split()[1])
    return None


def test_doctor_finds_the_usual_mistakes(lab3):
    servers = dict(SERVERS3, ghost="198.18.0.50")  # nothing answers ARP for 198.18.0.50
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(servers)])))
    fulcrumlab.wait_for(lambda: all(s["mac"] for a, s in lab3.servers_state("web").items() if a != "198.18.0.50"), 20,
                        what="the real servers resolved")

    checks, reply = doctor(lab3)
    assert checks["dataplane"]["status"] == "ok", checks
    assert checks["vips"]["status"] == "ok" and "on fl0" in checks["vips"]["detail"], checks
    assert checks["no_server_drops"]["status"] == "ok", checks
    ghost = checks["servers_resolved"]
    assert ghost["status"] == "warning" and "1 servers have no MAC: web/198.18.0.50:80" in ghost["detail"], ghost
    assert "ip neigh" in ghost["fix"], ghost
    hp = hugepages_total()
    if hp is not None:
        assert checks["hugepages"]["status"] == ("warning" if hp == 0 else "ok"), checks["hugepages"]
    human = lab3.ctl("doctor").stdout
    assert "[WARN ] servers_resolved" in human and "what to do:" in human, human

    # A VIP missing from fl0.
    fulcrumlab.run("ip", "addr", "del", f"{VIP}/32", "dev", "fl0", netns=lab3.lb)
    checks, reply = doctor(lab3)
    assert checks["vips"]["status"] == "error" and f"VIPs not on fl0: {VIP}" in checks["vips"]["detail"], checks
    assert f"ip addr add VIP/32 dev fl0" in checks["vips"]["fix"], checks
    assert reply["errors"] == 1
    fulcrumlab.run("ip", "addr", "add", f"{VIP}/32", "dev", "fl0", netns=lab3.lb)

    # no_server drops rising: every server disabled while a client keeps trying.
    for addr in SERVERS3.values():
        lab3.ctl("disable", "web", addr, check=True)
    stop = threading.Event()

    def knock():
        for _ in range(200):  # bounded; stopped by the event much earlier
            if stop.is_set():
                return
            s = fulcrumlab.ns_socket(lab3.client)
            s.settimeout(0.1)
            try:
                s.connect((VIP, 80))
            except OSError:
                pass
            finally:
                s.close()

    t = threading.Thread(target=knock)
    t.start()
    try:
        fulcrumlab.wait_for(lambda: lab3.dataplane.counters()["drops"].get("no_server", 0) > 0, 10,
                            what="no_server drops")
        checks, _ = doctor(lab3)
    finally:
        stop.set()
        t.join(30)
    d = checks["no_server_drops"]
    assert d["status"] == "warning" and "because their service has no usable server" in d["detail"], d
    assert "fulcrumctl servers" in d["fix"], d

    # The dataplane gone.
    lab3.stop_dataplane()
    checks, reply = doctor(lab3)
    assert checks["dataplane"]["status"] == "error" and "is unreachable" in checks["dataplane"]["detail"], checks
    assert "--control-socket" in checks["dataplane"]["fix"], checks
    assert reply["errors"] >= 1
