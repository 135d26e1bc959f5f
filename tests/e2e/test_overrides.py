"""End to end: operator overrides (drain, disable, set-weight) are kept in admin.state_file and
survive a restart of fulcrumd and a reload; overrides of servers removed from the configuration
are dropped; a corrupt state file is reported, fulcrumd starts without overrides, and the bad
file is kept (FILE.bad) at the first change."""
import json

import fulcrumlab
from conftest import SERVERS3, VIP, web_service

S1, S2, S3 = SERVERS3["s1"], SERVERS3["s2"], SERVERS3["s3"]


def key(addr):
    return f"web/{addr}:80"


def file_overrides(lab):
    doc = json.loads(lab.state_file.read_text())
    assert doc["format"] == "fulcrum-overrides" and doc["version"] == 1, doc
    return doc["servers"]


def wait_settled(lab, states):
    """Waits until the servers are in `states` (address -> state) and the dataplane runs it."""
    fulcrumlab.wait_for(lambda: {a: s["state"] for a, s in lab.servers_state("web").items()} == states, 20,
                        what=f"servers {states}; log:\n{lab.fulcrumd.log()}")
    lab.wait_published()


def new_flows_go_to(lab, n=30):
    names = set()
    for _ in range(n):
        names.add(fulcrumlab.connect_once(lab.client, VIP, 80))
    return names


def restart_fulcrumd(lab, cfg):
    assert lab.stop_fulcrumd() == 0
    lab.start_fulcrumd(cfg)


def test_drain_and_disable_survive_restart_and_reload(lab3):
    cfg = lab3.write_config(lab3.config([web_service(SERVERS3)]))
    lab3.start_fulcrumd(cfg)
    assert not lab3.state_file.exists()  # nothing to keep yet: nothing written
    lab3.ctl("drain", "web", S1, check=True)
    lab3.ctl("disable", "web", S2, check=True)
    lab3.ctl("set-weight", "web", S3, "5", check=True)
    assert file_overrides(lab3) == {key(S1): {"weight": 0}, key(S2): {"disabled": True}, key(S3): {"weight": 5}}

    restart_fulcrumd(lab3, cfg)
    wait_settled(lab3, {S1: "draining", S2: "disabled", S3: "up"})
    st = lab3.servers_state("web")
    assert st[S1]["weight"] == 0 and st[S1]["operator_weight"] == 0 and st[S1]["configured_weight"] == 1, st[S1]
    assert st[S2]["operator_disabled"] is True and st[S2]["operator_weight"] is None, st[S2]
    assert st[S3]["weight"] == 5 and st[S3]["operator_weight"] == 5, st[S3]
    assert new_flows_go_to(lab3) == {"s3"}
    log = lab3.fulcrumd.log()
    assert f"operator override of {key(S1)} from {lab3.state_file}: weight 0, enabled" in log, log
    table = lab3.ctl("servers", check=True).stdout
    s1_line = next(l for l in table.splitlines() if S1 in l)
    s2_line = next(l for l in table.splitlines() if S2 in l)
    assert "0 (operator; config 1)" in s1_line and "disabled (operator)" in s2_line, table
    status = lab3.admin({"command": "status"})["state_file"]
    assert status == {"path": str(lab3.state_file), "overrides": 3, "error": ""}, status

    # A reload keeps the overrides of servers that stay, drops those of removed servers.
    lab3.write_config(lab3.config([web_service({"s1": S1, "s3": S3})]))
    lab3.ctl("reload", check=True)
    fulcrumlab.wait_for(lambda: file_overrides(lab3) == {key(S1): {"weight": 0}, key(S3): {"weight": 5}}, 5,
                        what=f"the state file without {key(S2)}; log:\n{lab3.fulcrumd.log()}")
    assert f"operator override of {key(S2)} dropped" in lab3.fulcrumd.log()
    st = lab3.servers_state("web")
    assert st[S1]["state"] == "draining" and st[S1]["operator_weight"] == 0, st[S1]
    assert new_flows_go_to(lab3) == {"s3"}

    # ... and through the next restart; enable then clears the drain, in the file too.
    restart_fulcrumd(lab3, cfg)
    fulcrumlab.wait_for(lambda: lab3.servers_state("web")[S1]["state"] == "draining", 20,
                        what=f"{S1} draining after the restart; log:\n{lab3.fulcrumd.log()}")
    assert S2 not in lab3.servers_state("web")
    lab3.ctl("enable", "web", S1, check=True)
    assert file_overrides(lab3) == {key(S3): {"weight": 5}}
    assert lab3.servers_state("web")[S1]["operator_weight"] is None


def test_corrupt_state_file_starts_without_overrides_and_is_kept(lab3):
    garbage = '{"format": "fulcrum-overrides", "version": 1, "servers": {"web/198.18.0.11:80": {"weight": 0'
    lab3.state_file.write_text(garbage)
    cfg = lab3.write_config(lab3.config([web_service(SERVERS3)]))
    lab3.start_fulcrumd(cfg)
    wait_settled(lab3, {S1: "up", S2: "up", S3: "up"})
    log = lab3.fulcrumd.log()
    assert f"state file {lab3.state_file} is corrupt: not valid JSON" in log, log
    assert "starting without operator overrides" in log, log
    assert lab3.state_file.read_text() == garbage  # untouched until the first change
    status = lab3.admin({"command": "status"})["state_file"]
    assert "is corrupt" in status["error"], status

    lab3.ctl("drain", "web", S2, check=True)
    bad = lab3.state_file.with_name(lab3.state_file.name + ".bad")
    assert bad.read_text() == garbage
    assert file_overrides(lab3) == {key(S2): {"weight": 0}}
    assert lab3.admin({"command": "status"})["state_file"]["error"] == ""

    restart_fulcrumd(lab3, cfg)
    wait_settled(lab3, {S1: "up", S2: "draining", S3: "up"})
    assert "is corrupt" not in lab3.fulcrumd.log()


def test_unwritable_state_file_is_reported_and_the_change_still_applies(lab3):
    # The state file's directory is a regular file: every write fails.
    blocker = lab3.workdir / "not-a-dir"
    blocker.write_text("x")
    state = blocker / "overrides.json"
    cfg = lab3.config([web_service(SERVERS3)])
    cfg["admin"]["state_file"] = str(state)
    lab3.start_fulcrumd(lab3.write_config(cfg))
    r = lab3.admin({"command": "drain", "service": "web", "server": S1})
    assert r["ok"] is True and r["weight"] == 0, r
    assert "not saved, a restart of fulcrumd would lose it" in r["warning"] and str(state) in r["warning"], r
    out = lab3.ctl("drain", "web", S1, check=True).stdout
    assert "warning: the change applies but is not saved" in out, out
    assert lab3.servers_state("web")[S1]["state"] == "draining"
    assert str(state) in lab3.admin({"command": "status"})["state_file"]["error"]
