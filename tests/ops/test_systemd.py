"""The systemd units (control/dist/systemd) as meson configures them into the build.

`systemd-analyze verify` checks them in a temporary root holding copies of the programs they
run (so a unit naming a program the build does not make fails), and a deliberately broken copy
must fail the same check. Their commands are then run for real: fulcrumd's ExecStartPre,
ExecStart and both ExecReload steps against the packaged /etc/fulcrum/fulcrum.yaml, and the
dataplane's ExecStart with the AF_PACKET example of /etc/default/fulcrum-dataplane, each in a
network namespace of the test's own.
"""
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "lib"))

import fulcrumlab  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
UNITS = ("fulcrum-dataplane.service", "fulcrumd.service")
DIST = ROOT / "control" / "dist" / "systemd"
ENV_FILE = DIST / "fulcrum-dataplane.default"
CONFFILE = ROOT / "scripts" / "debian" / "fulcrum.yaml"
EXEC_KEYS = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost")


# ---- helpers shared with test_package.py ------------------------------------------------

def parse_unit(text):
    """A unit file as [(section, key, value)], in order (keys may repeat)."""
    entries, section = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        entries.append((section, key.strip(), value.strip()))
    return entries


def values(entries, key, section="Service"):
    return [v for s, k, v in entries if s == section and k == key]


def one(entries, key, section="Service"):
    v = values(entries, key, section)
    assert len(v) == 1, f"{section}.{key}: expected one value, found {v}"
    return v[0]


def command(value):
    """An Exec*= value without systemd's prefixes (- @ : + !), split into argv."""
    argv = shlex.split(value)
    argv[0] = argv[0].lstrip("-@:+!")
    return argv


def env_assignments(lines):
    """KEY="value" lines (systemd EnvironmentFile= syntax, as the file uses it)."""
    env = {}
    for line in lines:
        m = re.fullmatch(r'([A-Z_][A-Z0-9_]*)="([^"]*)"', line.strip())
        if m:
            env[m.group(1)] = m.group(2)
    return env


def env_examples(text=None):
    """The commented example groups of the environment file: {heading: {KEY: value}}."""
    text = text if text is not None else ENV_FILE.read_text()
    groups, heading = {}, None
    for line in text.splitlines():
        if re.fullmatch(r"# \S.*:", line):
            heading = line[2:-1]
        elif line.startswith("#FULCRUM_") and heading:
            groups.setdefault(heading, {}).update(env_assignments([line[1:]]))
    return groups


def expand(argv, env):
    """systemd's expansion of unquoted $VAR words: split at whitespace; an empty one vanishes."""
    out = []
    for a in argv:
        m = re.fullmatch(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", a)
        out += env.get(m.group(1), "").split() if m else [a]
    return out


def unit_root(tmp, units, programs):
    """A root for systemd-analyze --root: the host's unit directory (targets the units name),
    the units under test, and a copy of every program their Exec*= lines name, taken from
    `programs` (installed path -> file). A program missing there is left out, so verify
    reports it."""
    root = pathlib.Path(tmp) / "root"
    for d in ("lib/systemd/system", "usr/lib/systemd/system"):
        host = pathlib.Path("/") / d
        if host.is_dir() and not host.is_symlink():
            shutil.copytree(host, root / d, symlinks=True, dirs_exist_ok=True)
    unit_dir = root / "lib/systemd/system"
    unit_dir.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        (unit_dir / name).write_text(text)
    for text in units.values():
        for _, key, value in parse_unit(text):
            if key in EXEC_KEYS:
                path = command(value)[0]
                if path in programs and pathlib.Path(programs[path]).exists():
                    dest = root / path.lstrip("/")
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(programs[path], dest)
    return root, [unit_dir / n for n in units]


def verify(root, paths):
    """Problems systemd-analyze verify reports about the given units (empty: none)."""
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.fail("systemd-analyze is missing: scripts/install-deps.sh installs systemd")
    r = subprocess.run([tool, "verify", f"--root={root}", "--man=no", *map(str, paths)],
                       capture_output=True, text=True, timeout=120)
    names = [p.name for p in paths]
    problems = [l for l in (r.stdout + r.stderr).splitlines() if any(n in l for n in names)]
    if r.returncode != 0 and not problems:
        problems = [f"exit status {r.returncode}: {r.stdout}{r.stderr}"]
    return problems


# ---- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def units(build):
    """The units meson configured into the build, by name."""
    out = {}
    for name in UNITS:
        p = build / "control" / "dist" / "systemd" / name
        if not p.exists():
            pytest.fail(f"{p} is missing: run ninja -C {build} (it reconfigures) with the dataplane and "
                        "control plane enabled")
        out[name] = p.read_text()
    return out


@pytest.fixture(scope="module")
def programs(build, units):
    """Installed path of every program the units run -> the file that provides it."""
    provides = {
        "fulcrum-dataplane": build / "dataplane" / "app" / "fulcrum-dataplane",
        "fulcrumd": build / "control" / "fulcrumd",
        "fulcrum-dataplane-prepare": DIST / "fulcrum-dataplane-prepare",
        "kill": pathlib.Path(shutil.which("kill") or "/bin/kill"),
    }
    out = {}
    for text in units.values():
        for _, key, value in parse_unit(text):
            if key in EXEC_KEYS:
                path = command(value)[0]
                name = pathlib.PurePath(path).name
                assert name in provides, f"a unit runs {path}, which neither the build nor the host provides"
                assert provides[name].exists(), f"{provides[name]} is missing: build it first"
                out[path] = provides[name]
    return out


# ---- systemd-analyze verify -------------------------------------------------------------

def test_units_have_no_unconfigured_placeholders(units):
    for name, text in units.items():
        assert not re.findall(r"@[A-Z_]+@", text), f"{name} still has meson placeholders"


def test_units_verify(units, programs, tmp_path):
    root, paths = unit_root(tmp_path, units, programs)
    assert verify(root, paths) == []


@pytest.mark.parametrize("breakage, expect", [
    (("Restart=on-failure", "Restrt=on-failure"), "Unknown key"),
    (("ProtectSystem=strict", "ProtectSystem=stricter"), "Failed to parse"),
    (("ExecStart=", "ExecStart=/nonexistent"), "not executable"),
])
def test_verify_catches_a_broken_unit(units, programs, tmp_path, breakage, expect):
    """The check above can fail: a misspelt key, a bad value, a program that is not there."""
    old, new = breakage
    for name, text in units.items():
        assert old in text, f"{name} has no {old!r} to break"
        broken = dict(units)
        broken[name] = text.replace(old, new, 1)
        root, paths = unit_root(tmp_path / name, broken, programs)
        problems = verify(root, paths)
        assert any(expect in p and name in p for p in problems), (name, problems)


# ---- what the units say -----------------------------------------------------------------

def test_fulcrumd_follows_the_dataplane_without_being_bound_to_it(units):
    u = parse_unit(units["fulcrumd.service"])
    assert "fulcrum-dataplane.service" in " ".join(values(u, "After", "Unit")).split()
    assert "fulcrum-dataplane.service" in " ".join(values(u, "Wants", "Unit")).split()
    # Requires/BindsTo/PartOf would stop or restart fulcrumd with the dataplane: a failover on
    # a pair, for what fulcrumd survives by reconnecting.
    for key in ("Requires", "BindsTo", "PartOf", "Requisite"):
        assert not values(u, key, "Unit"), f"fulcrumd.service: {key}= ties it to the dataplane"


def test_handover_file_survives_a_stop(units):
    """The dataplane writes its handover file next to the control socket in /run/fulcrum; a
    stop must not delete that directory, or `systemctl stop; upgrade; start` loses it."""
    socket = "/run/fulcrum/dataplane.sock"
    for name, text in units.items():
        u = parse_unit(text)
        dirs = " ".join(values(u, "RuntimeDirectory")).split()
        assert "fulcrum" in dirs, f"{name}: no RuntimeDirectory=fulcrum"
        assert one(u, "RuntimeDirectoryPreserve") == "yes", name
    for heading, env in env_examples().items():
        args = env["FULCRUM_DATAPLANE_ARGS"].split()
        assert args[args.index("--control-socket") + 1] == socket, heading
    assert f"control_socket: {socket}" in CONFFILE.read_text()


def test_environment_file_examples_name_their_uplink(build):
    """Every example group: options the dataplane knows, the uplink the EAL is given, and the
    NIC to bind the one the EAL uses."""
    help_text = subprocess.run([str(build / "dataplane" / "app" / "fulcrum-dataplane"), "--help"],
                               capture_output=True, text=True, check=True, timeout=30).stdout
    known = set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text))
    groups = env_examples()
    assert len(groups) >= 3, groups
    shipped = env_assignments(ENV_FILE.read_text().splitlines())
    assert set(shipped) == {"FULCRUM_EAL_ARGS", "FULCRUM_DATAPLANE_ARGS", "FULCRUM_HUGEPAGES",
                            "FULCRUM_BIND_NIC"}
    for heading, env in groups.items():
        assert set(env) <= set(shipped), heading
        dp_args, eal = env["FULCRUM_DATAPLANE_ARGS"].split(), env["FULCRUM_EAL_ARGS"].split()
        for opt in (a for a in dp_args if a.startswith("--")):
            assert opt in known, f"{heading}: fulcrum-dataplane has no {opt}"
        uplink = dp_args[dp_args.index("--uplink") + 1]
        devices = [eal[i + 1].split(",")[0] for i, a in enumerate(eal) if a in ("-a", "--vdev")]
        assert devices == [uplink], f"{heading}: --uplink {uplink} but EAL devices {devices}"
        assert "--file-prefix" in eal and eal[eal.index("--file-prefix") + 1] == "fulcrum", heading
        if env.get("FULCRUM_BIND_NIC"):
            assert env["FULCRUM_BIND_NIC"].split() == devices, heading
        if env.get("FULCRUM_HUGEPAGES"):
            assert env["FULCRUM_HUGEPAGES"].isdigit(), heading


# ---- the commands, run ------------------------------------------------------------------

def conffile_for_test(tmp_path, text=None):
    """The packaged /etc/fulcrum/fulcrum.yaml with its paths moved into tmp_path and the
    metrics endpoint off (no port shared with other tests)."""
    text = text if text is not None else CONFFILE.read_text()
    for old, new in (("/run/fulcrum/dataplane.sock", tmp_path / "dataplane.sock"),
                     ("/run/fulcrum/admin.sock", tmp_path / "admin.sock"),
                     ("/var/lib/fulcrum/overrides.json", tmp_path / "overrides.json"),
                     ("listen: 127.0.0.1:9310", 'listen: ""')):
        assert text.count(old) == 1, f"{CONFFILE}: expected {old!r} once"
        text = text.replace(old, str(new))
    path = tmp_path / "fulcrum.yaml"
    path.write_text(text)
    return path


def uncomment_examples(text):
    """The conffile with its commented `interface:` and `services:` examples switched on."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if re.fullmatch(r"# [a-z_]+:\s*", lines[i]):
            out.append(lines[i][2:])
            i += 1
            while i < len(lines) and lines[i].startswith("#   "):
                out.append(lines[i][2:])
                i += 1
        elif lines[i] == "services: []":
            i += 1
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out) + "\n"


def fulcrumd_argv(value, programs, config):
    argv = command(value)
    argv[0] = str(programs[argv[0]])
    return [str(config) if a.endswith("/fulcrum/fulcrum.yaml") else a for a in argv]


def test_fulcrumd_unit_commands_run(units, programs, build, tmp_path):
    """ExecStartPre, ExecStart and ExecReload as written, with the packaged configuration:
    the check passes, the daemon starts and answers on its admin socket, and the reload
    (check, then SIGHUP) applies an edited file: the conffile's commented example service."""
    u = parse_unit(units["fulcrumd.service"])
    config = conffile_for_test(tmp_path)
    for pre in values(u, "ExecStartPre"):
        r = subprocess.run(fulcrumd_argv(pre, programs, config), capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    start = fulcrumd_argv(one(u, "ExecStart"), programs, config)
    assert "--config" in start
    with fulcrumlab.own_namespace("flops") as ns:
        d = fulcrumlab.Process(start, netns=ns, log=tmp_path / "fulcrumd.log")
        try:
            fulcrumlab.wait_for(lambda: (tmp_path / "admin.sock").exists() or not d.alive(), timeout=30,
                                what="fulcrumd's admin socket")
            assert d.alive(), d.log()
            status = fulcrumlab.admin_request(tmp_path / "admin.sock", {"command": "status"})
            assert "error" not in status, status

            conffile_for_test(tmp_path, uncomment_examples(CONFFILE.read_text()))
            reload = values(u, "ExecReload")
            assert len(reload) == 2 and command(reload[1])[:2] == ["/bin/kill", "-HUP"], reload
            r = subprocess.run(fulcrumd_argv(reload[0], programs, config), capture_output=True, text=True,
                               timeout=30)
            assert r.returncode == 0, r.stderr
            kill = [a.replace("$MAINPID", str(d.pid)) for a in command(reload[1])]
            subprocess.run(kill, check=True, timeout=10)
            reloaded = lambda: "reloaded: 1 services" in d.log() or not d.alive()
            fulcrumlab.wait_for(reloaded, timeout=30, what="fulcrumd's reload")
            assert d.alive(), d.log()
        finally:
            rc = d.stop()
    assert rc == 0, d.log()


def test_dataplane_unit_command_runs(units, programs, tmp_path):
    """ExecStart with the AF_PACKET example of the environment file, in a namespace with a
    veth pair: the dataplane starts, serves its control socket, and stops cleanly on SIGTERM.
    Only what a test host needs is changed: the interface, the file prefix, the socket's
    directory, and --no-huge (the unit's prepare step reserves hugepages on a real host)."""
    u = parse_unit(units["fulcrum-dataplane.service"])
    example = next(env for heading, env in env_examples().items() if "AF_PACKET" in heading)
    prefix = fulcrumlab.unique("flops")
    sock = tmp_path / "dataplane.sock"
    env = dict(example)
    for key, old, new in (("FULCRUM_EAL_ARGS", "iface=eth1", "iface=up0"),
                          ("FULCRUM_EAL_ARGS", "--file-prefix fulcrum", f"--file-prefix {prefix}"),
                          ("FULCRUM_DATAPLANE_ARGS", "/run/fulcrum/dataplane.sock", str(sock))):
        assert old in env[key], f"{ENV_FILE}: the AF_PACKET example has no {old!r}"
        env[key] = env[key].replace(old, new)
    env["FULCRUM_EAL_ARGS"] += " --no-huge -m 512 --log-level *:warning"
    argv = expand(command(one(u, "ExecStart")), env)
    argv[0] = str(programs[argv[0]])
    assert "--" in argv and argv.index("--uplink") > argv.index("--")
    with fulcrumlab.veth_namespace("flops") as ns:
        d = fulcrumlab.Process(argv, netns=ns, log=tmp_path / "dataplane.log")
        try:
            def running():
                if not d.alive():
                    return True
                try:
                    with fulcrumlab.DpClient(sock, timeout=2) as c:
                        return c.health()["status"] == "running"
                except (OSError, fulcrumlab.ControlError):
                    return False
            fulcrumlab.wait_for(running, timeout=60, interval=0.1, what="the dataplane's control socket")
            assert d.alive(), d.log()
            assert fulcrumlab.run("ip", "link", "show", "fl0", netns=ns, check=False).returncode == 0, \
                "no exception interface fl0"
        finally:
            rc = d.stop(timeout=30)
            fulcrumlab.remove_dpdk_runtime_dir(prefix)
    assert rc == 0, d.log()


# ---- the prepare step -------------------------------------------------------------------

@pytest.fixture
def prepare(tmp_path):
    """fulcrum-dataplane-prepare next to stand-ins for the helpers it runs, which record
    their arguments (FAIL_BIND=1 makes the bind helper fail)."""
    d = tmp_path / "lib"
    d.mkdir()
    shutil.copy2(DIST / "fulcrum-dataplane-prepare", d)
    for helper in ("fulcrum-hugepages", "fulcrum-bind-nic"):
        (d / helper).write_text(f'#!/bin/sh\necho "{helper} $*" >>"{tmp_path}/calls"\n'
                                f'[ "{helper}" != fulcrum-bind-nic ] || [ -z "${{FAIL_BIND:-}}" ]\n')
        (d / helper).chmod(0o755)

    def run(**env):
        base = {"PATH": os.environ["PATH"]}
        r = subprocess.run([str(d / "fulcrum-dataplane-prepare")], env={**base, **env},
                           capture_output=True, text=True, timeout=30)
        calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
        (tmp_path / "calls").unlink(missing_ok=True)
        return r, calls
    return run


ARGS = {"FULCRUM_EAL_ARGS": "-l 0-1", "FULCRUM_DATAPLANE_ARGS": "--uplink 0"}


def test_prepare_refuses_an_unconfigured_environment_file(prepare):
    """As shipped, the environment file is empty: the service must say what to set."""
    shipped = env_assignments(ENV_FILE.read_text().splitlines())
    r, calls = prepare(**shipped, FULCRUM_ENV_FILE="/etc/default/fulcrum-dataplane")
    assert r.returncode == 1 and calls == []
    assert "FULCRUM_EAL_ARGS and FULCRUM_DATAPLANE_ARGS" in r.stderr
    assert "/etc/default/fulcrum-dataplane" in r.stderr and "fulcrumctl topology" in r.stderr


def test_prepare_runs_only_the_helpers_asked_for(prepare):
    r, calls = prepare(**ARGS, FULCRUM_HUGEPAGES="", FULCRUM_BIND_NIC="")
    assert (r.returncode, calls) == (0, []), r.stderr
    r, calls = prepare(**ARGS, FULCRUM_HUGEPAGES="512", FULCRUM_BIND_NIC="0000:01:00.0 0000:01:00.1")
    assert r.returncode == 0, r.stderr
    assert calls == ["fulcrum-hugepages 512", "fulcrum-bind-nic 0000:01:00.0", "fulcrum-bind-nic 0000:01:00.1"]


def test_prepare_refuses_a_bad_page_count_and_a_failed_bind(prepare):
    r, calls = prepare(**ARGS, FULCRUM_HUGEPAGES="2G")
    assert r.returncode == 1 and calls == [] and 'FULCRUM_HUGEPAGES="2G"' in r.stderr
    r, calls = prepare(**ARGS, FULCRUM_BIND_NIC="0000:01:00.0", FAIL_BIND="1")
    assert r.returncode != 0 and calls == ["fulcrum-bind-nic 0000:01:00.0"]
