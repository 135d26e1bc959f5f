"""docs/deployment.md "Quick start: one balancer on one interface", run as written.

The commands come from the section's code blocks marked `<!-- quickstart:NAME -->`, so the
test and the documentation cannot drift apart. Only these substitutions are made:

- paths: /etc/fulcrum/fulcrum.yaml and /run/fulcrum go to the test's temporary directory;
  scripts/setup-host.sh, fulcrum-dataplane, fulcrumd and fulcrumctl to the checkout and build
  tree (fulcrumctl with --socket, the default admin socket's path moved like the others);
- memory: the documented hugepages become DPDK's `--no-huge -m 512` (setup-host.sh's
  `--hugepages 512` becomes `--no-huge`, so the host's hugepages are never touched), and
  the dataplane's `--file-prefix` is unique to the test.

The interface keeps its documented name: the balancer's namespace has `eth1`. The documented
addresses are the test's: client 198.18.0.1, balancer 198.18.0.2, servers .11 and .12 with
the VIP 198.18.0.100, all on one bridge in network namespaces.
"""
import os
import pathlib
import re
import shlex
import subprocess

import fulcrumlab
from fulcrumlab import run

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deployment.md"
SETUP = ROOT / "scripts" / "setup-host.sh"
BLOCKS = ("setup", "dataplane", "fulcrumd", "server", "check")
SERVERS = {"s1": "198.18.0.11", "s2": "198.18.0.12"}
VIP = "198.18.0.100"


def doc_blocks():
    """{name: [command, ...]} from the quick start's marked ```sh blocks: continuation lines
    joined, comments and blank lines dropped."""
    text = DOC.read_text()
    blocks = {}
    for m in re.finditer(r"<!-- quickstart:(\w+) -->\s*\n\s*```sh\n(.*?)\n\s*```", text, re.S):
        commands, cur = [], ""
        for line in m.group(2).splitlines():
            line = line.strip()
            if line.endswith("\\"):
                cur += line[:-1] + " "
                continue
            line = (cur + line).split("  #")[0].strip()
            cur = ""
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
        assert m.group(1) not in blocks, f"two quickstart:{m.group(1)} blocks in {DOC}"
        blocks[m.group(1)] = commands
    assert sorted(blocks) == sorted(BLOCKS), f"{DOC}: quickstart blocks {sorted(blocks)}, expected {sorted(BLOCKS)}"
    return blocks


class Substitution:
    def __init__(self, tmp):
        self.config = tmp / "etc" / "fulcrum.yaml"
        self.run_dir = tmp / "run"
        self.prefix = fulcrumlab.unique("flqs")

    def paths(self, cmd):
        return cmd.replace("/etc/fulcrum/fulcrum.yaml", str(self.config)).replace("/run/fulcrum", str(self.run_dir))

    def memory(self, cmd, prefix=None):
        cmd = cmd.replace("--hugepages 512", "--no-huge")
        return cmd.replace("--file-prefix fulcrum", f"--no-huge -m 512 --file-prefix {prefix or self.prefix}")

    def argv(self, cmd):
        argv = shlex.split(self.memory(self.paths(cmd)))
        tools = {"scripts/setup-host.sh": [str(SETUP)], "fulcrum-dataplane": [str(fulcrumlab.DATAPLANE)],
                 "fulcrumd": [str(fulcrumlab.FULCRUMD)],
                 "fulcrumctl": [str(fulcrumlab.FULCRUMCTL), "--socket", str(self.run_dir / "admin.sock")]}
        return tools.get(argv[0], [argv[0]]) + argv[1:]


def uplink_state(ns):
    """What setup-host.sh may change on the balancer: nftables, eth1's flags, IPv6 and GRO."""
    return (run("nft", "list", "ruleset", netns=ns).stdout,
            run("ip", "-o", "link", "show", "eth1", netns=ns).stdout.split(">")[0],
            run("cat", "/proc/sys/net/ipv6/conf/eth1/disable_ipv6", netns=ns).stdout,
            run("ethtool", "-k", "eth1", netns=ns).stdout)


def server_states(ctl_output):
    states = {}
    for line in ctl_output.splitlines():
        f = line.split()
        if len(f) >= 3 and f[0] == "web":
            states[f[1]] = f[2]
    return states


def dataplane_running(dp, socket):
    if not dp.alive():
        raise AssertionError(f"fulcrum-dataplane exited with {dp.proc.returncode}:\n{dp.log()}")
    try:
        with fulcrumlab.DpClient(socket, timeout=2) as c:
            return c.health()["status"] == "running"
    except (OSError, fulcrumlab.ControlError):
        return False


def test_quickstart_as_documented(tmp_path):
    blocks = doc_blocks()
    sub = Substitution(tmp_path)
    procs = []
    topo = fulcrumlab.Topology("qs")
    try:
        client = topo.add_host("client", ["198.18.0.1/24"], ipv6=False)
        lb = topo.add_host("lb", [], ifname="eth1")  # IPv6 left on: setup-host.sh turns it off
        before = uplink_state(lb)

        # Step 5 first (the order does not matter to the balancer): the servers' DSR setup.
        for name, addr in SERVERS.items():
            ns = topo.add_host(name, [f"{addr}/24"], ipv6=False)
            for cmd in blocks["server"]:
                run(*sub.argv(cmd), netns=ns)
            p = fulcrumlab.Process(["/usr/bin/python3", str(fulcrumlab.TESTSERVER), name, "--tcp", "80"],
                                   netns=ns, log=tmp_path / f"{name}.log")
            procs.append(p)
            fulcrumlab.wait_for(lambda: "ready" in p.log(), 10, what=f"test server {name}")

        # Step 2: prepare the host; writes the configuration and prints steps 3 and 4.
        (setup,) = blocks["setup"]
        r = run(*sub.argv(setup), netns=lb, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"wrote {sub.config}" in r.stdout, r.stdout
        prepared = uplink_state(lb)
        assert "hook ingress device \"eth1\"" in prepared[0] and "policy drop" in prepared[0], prepared[0]
        assert "PROMISC" in prepared[1] and ",UP" in prepared[1], prepared[1]
        assert prepared[2].strip() == "1"
        config = sub.config.read_text()
        assert "interface:" in config and "198.18.0.2/24" in config, config
        # The commands it prints are the documented ones (with --no-huge, as substituted here).
        printed = " ".join(r.stdout.split("Next, as root")[1].replace("\\\n", " ").split())
        for cmd in blocks["dataplane"] + [blocks["fulcrumd"][-1]]:
            assert sub.memory(sub.paths(cmd), prefix="fulcrum") in printed, (cmd, r.stdout)

        # Running it again changes nothing.
        r = run(*sub.argv(setup), netns=lb, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "nothing to change" in r.stdout and "left as it is" in r.stdout, r.stdout
        assert uplink_state(lb) == prepared
        assert sub.config.read_text() == config

        # Step 3: the dataplane.
        (dp_cmd,) = blocks["dataplane"]
        dp = fulcrumlab.Process(sub.argv(dp_cmd), netns=lb, log=tmp_path / "dataplane.log")
        procs.append(dp)
        dp_socket = sub.run_dir / "dataplane.sock"
        fulcrumlab.wait_for(lambda: dataplane_running(dp, dp_socket), 30, 0.1, what="the dataplane to run")

        # Step 4: fulcrumd (the check runs to completion, the daemon stays).
        check_cmd, daemon_cmd = blocks["fulcrumd"]
        r = run(*sub.argv(check_cmd), netns=lb, check=False)
        assert r.returncode == 0 and "valid" in r.stdout + r.stderr, r.stdout + r.stderr
        fd = fulcrumlab.Process(sub.argv(daemon_cmd), netns=lb, log=tmp_path / "fulcrumd.log")
        procs.append(fd)

        # Step 6: both servers up, the host address and the VIP on fl0, clients served.
        ctl = sub.argv("fulcrumctl servers")

        def both_up():
            if not fd.alive():
                raise AssertionError(f"fulcrumd exited:\n{fd.log()}")
            out = run(*ctl, netns=lb, check=False).stdout
            return server_states(out) == {f"{a}:80": "up" for a in SERVERS.values()}
        fulcrumlab.wait_for(both_up, 30, 0.2, what=f"both servers up; fulcrumd log:\n{fd.log()}")
        outputs = {}
        for cmd in blocks["check"]:
            r = run(*sub.argv(cmd), netns=lb, check=False)
            assert r.returncode == 0, (cmd, r.stdout, r.stderr)
            outputs[cmd.split()[-1]] = r.stdout
        assert server_states(outputs["servers"]) == {f"{a}:80": "up" for a in SERVERS.values()}, outputs["servers"]
        assert "198.18.0.2/24" in outputs["fl0"] and f"{VIP}/32" in outputs["fl0"], outputs["fl0"]

        seen = {}
        for i in range(64):
            name = fulcrumlab.connect_once(client, VIP, 80)
            seen[name] = seen.get(name, 0) + 1
            if len(seen) == len(SERVERS):
                break
        assert set(seen) == set(SERVERS), f"answers from {seen} in {i + 1} connections"

        # Undo (after the dataplane and fulcrumd stopped): the uplink is as it was.
        assert fd.stop() == 0, fd.log()
        assert dp.stop() == 0, dp.log()
        r = run(str(SETUP), "--interface", "eth1", "--undo", "--run-dir", str(sub.run_dir), netns=lb, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        after = uplink_state(lb)
        assert "fulcrum" not in after[0] and "PROMISC" not in after[1], after
        assert after == before, (before, after)
        assert sub.config.exists(), "--undo keeps the configuration file"
        r = run(str(SETUP), "--interface", "eth1", "--undo", "--run-dir", str(sub.run_dir), netns=lb, check=False)
        assert r.returncode == 0 and "nothing to undo" in r.stdout, r.stdout + r.stderr
    finally:
        for p in reversed(procs):
            p.stop()
        fulcrumlab.remove_dpdk_runtime_dir(sub.prefix)
        topo.close()


def test_setup_refuses_what_it_must_not_touch(tmp_path):
    """Clear errors, and nothing changed: an unknown interface, an uplink that still carries
    an address (an SSH session over it would be cut), a second interface while one is set up."""
    with fulcrumlab.veth_namespace("flqsr") as ns:
        args = ["--vip", VIP, "--server", "198.18.0.11", "--host-address", "198.18.0.2/24",
                "--config", str(tmp_path / "fulcrum.yaml"), "--run-dir", str(tmp_path / "run"), "--no-huge"]
        r = run(str(SETUP), "--interface", "eth9", *args, netns=ns, check=False)
        assert r.returncode == 1 and "no interface 'eth9'" in r.stderr, r.stderr

        run("ip", "addr", "add", "198.18.0.2/24", "dev", "up0", netns=ns)
        r = run(str(SETUP), "--interface", "up0", *args, netns=ns, check=False)
        assert r.returncode == 1 and "still has the address(es) 198.18.0.2/24" in r.stderr, r.stderr
        assert "ip addr flush dev up0" in r.stderr, r.stderr
        assert run("nft", "list", "ruleset", netns=ns).stdout.strip() == ""
        assert not (tmp_path / "fulcrum.yaml").exists() and not (tmp_path / "run").exists()

        run("ip", "addr", "flush", "dev", "up0", netns=ns)
        r = run(str(SETUP), "--interface", "up0", *args, netns=ns, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        r = run(str(SETUP), "--interface", "wire0", *args, netns=ns, check=False)
        assert r.returncode == 1 and "already drops ingress on up0" in r.stderr, r.stderr
        assert "device \"wire0\"" not in run("nft", "list", "ruleset", netns=ns).stdout
        assert "PROMISC" not in run("ip", "-o", "link", "show", "wire0", netns=ns).stdout

        # --undo for the other interface leaves up0's table alone.
        r = run(str(SETUP), "--interface", "wire0", "--undo", "--run-dir", str(tmp_path / "run"), netns=ns, check=False)
        assert r.returncode == 0 and "left alone" in r.stdout, r.stdout
        assert "device \"up0\"" in run("nft", "list", "ruleset", netns=ns).stdout

        r = run(str(SETUP), "--interface", "up0", "--undo", "--run-dir", str(tmp_path / "run"), netns=ns, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert run("nft", "list", "ruleset", netns=ns).stdout.strip() == ""


def test_setup_dry_run_changes_nothing(tmp_path):
    with fulcrumlab.veth_namespace("flqsd") as ns:
        state = (run("nft", "list", "ruleset", netns=ns).stdout, run("ip", "-o", "link", "show", "up0", netns=ns).stdout)
        r = run(str(SETUP), "--interface", "up0", "--vip", VIP, "--server", "198.18.0.11",
                "--host-address", "198.18.0.2/24", "--config", str(tmp_path / "f.yaml"),
                "--run-dir", str(tmp_path / "run"), "--hugepages", "512", "--dry-run", netns=ns, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "nft add chain netdev fulcrum uplink" in r.stdout and "ip link set up0 promisc on" in r.stdout, r.stdout
        assert "fulcrum-dataplane -l 0-1 --no-pci --file-prefix fulcrum" in r.stdout, r.stdout
        assert (run("nft", "list", "ruleset", netns=ns).stdout,
                run("ip", "-o", "link", "show", "up0", netns=ns).stdout) == state
        assert not (tmp_path / "f.yaml").exists() and not (tmp_path / "run").exists()
