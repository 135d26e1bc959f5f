"""Bad admin requests and bad configurations get clear errors; the daemon stays up."""
import json
import socket
import subprocess

import fulcrumlab
from conftest import SERVERS3, web_service


def test_bad_admin_requests(lab3):
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(SERVERS3)])))
    cases = [
        (["set-weight", "web", "198.18.0.99", "3"], "has no server '198.18.0.99'"),
        (["drain", "nosuch", "198.18.0.11"], "no service named 'nosuch'"),
        (["servers", "nosuch"], "no service named 'nosuch'"),
    ]
    for args, text in cases:
        r = lab3.ctl(*args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert text in r.stderr, r.stderr
    r = lab3.ctl("set-weight", "web", "198.18.0.11", "70000")
    assert r.returncode != 0 and "70000" in r.stderr
    for raw, text in ((b"{nope\n", "not valid JSON"), (b"[]\n", "JSON object"),
                      (b'{"command": "explode"}\n', "unknown command 'explode'"),
                      (b'{"command": "set-weight", "service": "web", "server": "198.18.0.11", "weight": "x"}\n',
                       "integer from 0 to 65535"),
                      (b'{"nocommand": 1}\n', 'missing "command"')):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(lab3.admin_socket))
            s.sendall(raw)
            reply = json.loads(s.makefile().readline())
        assert reply["ok"] is False and text in reply["error"], reply
    assert lab3.fulcrumd.alive()
    assert lab3.status()["ok"] is True
    # fulcrumctl without a daemon: a clear message.
    r = fulcrumlab.run(str(fulcrumlab.FULCRUMCTL), "--socket", "/tmp/nonexistent-fulcrum.sock", "status",
                       check=False)
    assert r.returncode == 2 and "is fulcrumd running?" in r.stderr


def test_fulcrumctl_views(lab3):
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(SERVERS3)])))
    for _ in range(10):
        fulcrumlab.connect_once(lab3.client, "198.18.0.100", 80)
    r = lab3.ctl("status", check=True)
    assert "dataplane       connected" in r.stdout
    r = lab3.ctl("services", check=True)
    assert "web" in r.stdout and "198.18.0.100:80/tcp" in r.stdout
    r = lab3.ctl("servers", "web", check=True)
    assert r.stdout.count("up") >= 3
    r = lab3.ctl("--json", "servers", check=True)
    data = json.loads(r.stdout)
    assert {s["address"] for s in data["servers"]} == set(SERVERS3.values())
    r = lab3.ctl("set-weight", "web", "198.18.0.12", "5", check=True)
    assert "weight 5" in r.stdout
    r = lab3.ctl("disable", "web", "198.18.0.13", check=True)
    assert "disabled" in r.stdout
    assert lab3.servers_state("web")["198.18.0.13"]["reason"] == "disabled by the operator"


def test_fulcrumd_check_and_bad_startup(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text('services:\n  - name: web\n    vip: 198.18.0.100\n    port: 80\n    servers:\n'
                    '      - address: 198.18.0.11\n')
    r = subprocess.run([str(fulcrumlab.FULCRUMD), "--check", str(good)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text('services:\n  - name: web\n    vip: 198.18.0.100\n    port: 99999\n    servers:\n'
                   '      - address: 198.18.0.11\n        wieght: 2\n')
    r = subprocess.run([str(fulcrumlab.FULCRUMD), "--check", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{bad}:4:" in r.stderr and "99999" in r.stderr
    assert f"{bad}:7:" in r.stderr and "did you mean 'weight'" in r.stderr
    r = subprocess.run([str(fulcrumlab.FULCRUMD), "--config", str(bad)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "not starting" in r.stderr
    r = subprocess.run([str(fulcrumlab.FULCRUMD), "--check", str(tmp_path / "missing.yaml")], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "cannot read" in r.stderr


def test_versions_help_and_log_levels(tmp_path):
    """Every binary says its version; the dataplane's --help shows Fulcrum's own options and
    their defaults without starting DPDK; an unknown log level is refused, not silent."""
    for binary, name in ((fulcrumlab.FULCRUMD, "fulcrumd"), (fulcrumlab.FULCRUMCTL, "fulcrumctl"),
                         (fulcrumlab.DATAPLANE, "fulcrum-dataplane")):
        r = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(name + " ") and len(r.stdout.split()) == 2, r.stdout
    # Before '--' the EAL would print its own usage: Fulcrum's options come either way.
    for argv in (["--help"], ["-l", "0-1", "--", "--help"]):
        r = subprocess.run([str(fulcrumlab.DATAPLANE)] + argv, capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        assert "--uplink" in r.stdout and "--conn-capacity" in r.stdout and "=1048576" in r.stdout, r.stdout
        assert "EAL: " not in r.stdout + r.stderr, "DPDK was started for --help"
    good = tmp_path / "good.yaml"
    good.write_text("services: []\n")
    r = subprocess.run([str(fulcrumlab.FULCRUMD), "--log-level", "bogus", "--check", str(good)], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode != 0 and "--log-level: bogus not in" in r.stderr, r.stderr
    r = subprocess.run([str(fulcrumlab.FULCRUMD), "--log-level", "WARN", "--check", str(good)], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    # A configuration cut short after "services:" is refused, not loaded as "no services".
    cut = tmp_path / "cut.yaml"
    cut.write_text("admin: {socket: /run/fulcrum/admin.sock}\nservices:\n")
    r = subprocess.run([str(fulcrumlab.FULCRUMD), "--check", str(cut)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "is the file cut short?" in r.stderr, r.stderr


def test_fulcrumctl_reads_integers_exactly(tmp_path):
    """An integer option is a whole decimal number in its range, or refused while the command
    line is parsed (exit 105), before anything is sent: hex would have been read as its leading 0
    (set-weight 0xffff draining the server) and a cursor beyond 2^64-1 aborted fulcrumctl. No
    fulcrumd is needed: nothing reaches a socket."""
    sock = str(tmp_path / "none.sock")
    for argv, message in ((["set-weight", "web", "198.18.0.1", "0xffff"], "'0xffff' is not a decimal integer from 0 to 65535"),
                          (["connections", "--cursor", "18446744073709551616"], "'18446744073709551616' is not a decimal"),
                          (["connections", "--cursor", "-1"], "'-1' is not a decimal integer"),
                          (["connections", "--limit", "0x20"], "'0x20' is not a decimal integer from 1 to 10000")):
        r = subprocess.run([str(fulcrumlab.FULCRUMCTL), "--socket", sock] + argv, capture_output=True, text=True,
                           timeout=20)
        assert r.returncode == 105, (argv, r.returncode, r.stderr)
        assert message in r.stderr, (argv, r.stderr)
    # A good value gets as far as the (missing) socket.
    r = subprocess.run([str(fulcrumlab.FULCRUMCTL), "--socket", sock, "set-weight", "web", "198.18.0.1", "65535"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "cannot connect" in r.stderr, r.stderr
