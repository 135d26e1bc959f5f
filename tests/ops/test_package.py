"""The Debian package: scripts/package.sh builds it, then its contents, metadata, lintian's
verdict and an unpacked copy (dpkg -x into a temporary root; nothing is installed on this
host) are checked against what the build installs and what docs/deployment.md promises."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import test_systemd as units_lib  # noqa: E402  (module import: its tests are not collected twice)

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "build-deb"
STAGE_BUILD = OUT / "fulcrum" / "obj-x86_64-linux-gnu"
UNIT_DIRS = ("lib/systemd/system", "usr/lib/systemd/system")


def run(*argv, timeout=120, **kw):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def package():
    """scripts/package.sh, run once for this module: the .deb's path."""
    if not shutil.which("dpkg-buildpackage"):
        pytest.skip("dpkg-buildpackage is missing: scripts/install-deps.sh installs dpkg-dev and debhelper")
    r = run(ROOT / "scripts" / "package.sh", timeout=3600, cwd=ROOT)
    assert r.returncode == 0, f"package.sh failed:\n{r.stdout}\n{r.stderr}"
    deb = pathlib.Path(r.stdout.strip().splitlines()[-1])
    assert deb.is_file(), f"package.sh's last line is not the .deb: {r.stdout}"
    return deb


@pytest.fixture(scope="module")
def version():
    r = run(ROOT / "scripts" / "package.sh", "--version", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture(scope="module")
def contents(package):
    """Paths in the package, without the leading '.'."""
    r = run("dpkg-deb", "-c", package)
    assert r.returncode == 0, r.stderr
    return {line.split(None, 5)[5].split(" -> ")[0].lstrip(".").rstrip("/") for line in r.stdout.splitlines()}


@pytest.fixture(scope="module")
def unpacked(package, tmp_path_factory):
    root = tmp_path_factory.mktemp("pkgroot")
    r = run("dpkg", "-x", package, root)
    assert r.returncode == 0, r.stderr
    return root


def field(deb, name):
    r = run("dpkg-deb", "-f", deb, name)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def unit_path(contents, name):
    found = [f"/{d}/{name}" for d in UNIT_DIRS if f"/{d}/{name}" in contents]
    assert len(found) == 1, f"{name}: in {found} (expected in one of {UNIT_DIRS})"
    return found[0]


def test_name_and_version(package, version):
    assert package == OUT / f"fulcrum_{version}_amd64.deb"
    assert run("dpkg", "--validate-version", version).returncode == 0
    assert field(package, "Version") == version
    assert field(package, "Architecture") == "amd64"
    head = run("git", "-C", ROOT, "rev-parse", "--short=7", "HEAD").stdout.strip()
    tagged = run("git", "-C", ROOT, "describe", "--tags", "--exact-match", "--match", "v[0-9]*").returncode == 0
    assert tagged or f"g{head}" in version, (version, head)


def test_contents(package, contents):
    expected = {
        "/usr/bin/fulcrum-dataplane", "/usr/bin/fulcrumd", "/usr/bin/fulcrumctl", "/usr/bin/fulcrum-snapshot",
        "/usr/sbin/fulcrum-decap",
        "/usr/lib/x86_64-linux-gnu/fulcrum/bpf/xdp_front.bpf.o",
        "/usr/lib/x86_64-linux-gnu/fulcrum/bpf/decap.bpf.o",
        "/usr/lib/fulcrum/fulcrum-dataplane-prepare", "/usr/lib/fulcrum/fulcrum-hugepages",
        "/usr/lib/fulcrum/fulcrum-bind-nic",
        "/etc/fulcrum/fulcrum.yaml", "/etc/default/fulcrum-dataplane",
        "/usr/share/doc/fulcrum/copyright",
    }
    expected |= {f"/usr/share/doc/fulcrum/examples/{p.name}" for p in (ROOT / "docs" / "examples").glob("*.yaml")}
    assert expected - contents == set()
    for unit in units_lib.UNITS:
        unit_path(contents, unit)


def test_ships_everything_meson_installs(package, contents):
    """The package takes `meson install` whole, so assets other parts of the build install
    (man pages, completion, monitoring files) are in it without packaging changes."""
    r = run("meson", "introspect", "--installed", STAGE_BUILD)
    assert r.returncode == 0, r.stderr
    installed = set(json.loads(r.stdout).values())
    assert installed, "meson installs nothing?"
    # dh_compress gzips man pages and larger documents.
    missing = {p for p in installed if p not in contents and f"{p}.gz" not in contents}
    assert missing == set()


def test_conffiles(package, tmp_path):
    r = run("dpkg-deb", "-e", package, tmp_path / "DEBIAN")
    assert r.returncode == 0, r.stderr
    conffiles = (tmp_path / "DEBIAN" / "conffiles").read_text().split()
    assert {"/etc/fulcrum/fulcrum.yaml", "/etc/default/fulcrum-dataplane"} <= set(conffiles)
    # Installing or upgrading neither enables nor (re)starts the services; removing stops
    # them (docs/deployment.md, "Installing the Debian package").
    script = {s: (tmp_path / "DEBIAN" / s).read_text() for s in ("postinst", "prerm", "postrm")}
    everything = "".join(script.values())
    for unit in units_lib.UNITS:
        assert unit in script["postinst"] and unit in script["postrm"], f"no maintainer script handles {unit}"
    assert not re.search(r"deb-systemd-invoke\s+(\$_dh_action|start|restart|try-restart)", everything)
    lines = script["postinst"].splitlines()
    for i, line in enumerate(lines):
        if "deb-systemd-helper enable" in line:  # only to keep an operator's enabled state
            assert any("was-enabled" in l for l in lines[max(0, i - 3):i]), line
    stop = re.search(r'if \[ "\$1" = remove \].*\n\s*deb-systemd-invoke stop ([^>]*)', script["prerm"])
    assert stop and stop.group(1).split() == ["fulcrumd.service", "fulcrum-dataplane.service"], script["prerm"]


def test_depends_are_real_packages(package):
    depends = field(package, "Depends")
    assert "${" not in depends, depends
    names = [re.split(r"[\s(]", alt.strip())[0] for dep in depends.split(",") for alt in dep.split("|")]
    for name in names:
        r = run("dpkg-query", "-W", "-f", "${Status}", name)
        assert r.returncode == 0 and r.stdout.endswith("installed"), f"Depends names {name}, which is not installed here"
    # What the binaries link (dpkg-shlibdeps) and the DPDK plugins they load.
    for prefix in ("libc6", "librte-eal", "librte-ethdev", "libyaml-cpp", "libbpf", "librte-mempool-ring",
                   "librte-net-tap"):
        assert any(n.startswith(prefix) for n in names), f"Depends has no {prefix}*: {depends}"


def test_lintian_has_no_errors_and_every_warning_is_documented(package):
    if not shutil.which("lintian"):
        pytest.fail("lintian is missing: scripts/install-deps.sh installs it")
    changes = package.with_name(package.name.replace(".deb", ".changes"))
    r = run("lintian", "--no-cfg", changes, timeout=600)
    lines = r.stdout.splitlines()
    assert [l for l in lines if l.startswith("E:")] == []
    docs = (ROOT / "docs" / "deployment.md").read_text()
    tags = {l.split()[2] for l in lines if l.startswith("W:")}
    assert {t for t in tags if t not in docs} == set(), "explain new lintian warnings in docs/deployment.md"


def test_unpacked_package_works(unpacked, contents, version):
    """The programs run from the unpacked tree (their libraries are this host's) and name the
    commit the package was built from, the conffile is the packaged example and valid, and
    the units verify against the package's own files."""
    head = run("git", "-C", ROOT, "rev-parse", "--short=7", "HEAD").stdout.strip()
    for prog in ("usr/bin/fulcrumd", "usr/bin/fulcrumctl", "usr/bin/fulcrum-dataplane", "usr/sbin/fulcrum-decap"):
        r = run(unpacked / prog, "--version")
        assert r.returncode == 0, (prog, r.stderr)
        assert head in r.stdout or version.split("+")[0] in r.stdout, (prog, r.stdout, version)
    for helper in ("fulcrum-dataplane-prepare", "fulcrum-hugepages", "fulcrum-bind-nic"):
        assert os.access(unpacked / "usr/lib/fulcrum" / helper, os.X_OK), helper
    conf = unpacked / "etc/fulcrum/fulcrum.yaml"
    assert conf.read_text() == (ROOT / "scripts/debian/fulcrum.yaml").read_text()
    r = run(unpacked / "usr/bin/fulcrumd", "--check", conf)
    assert r.returncode == 0, r.stderr
    shipped = units_lib.env_assignments((unpacked / "etc/default/fulcrum-dataplane").read_text().splitlines())
    assert shipped["FULCRUM_EAL_ARGS"] == "" and shipped["FULCRUM_DATAPLANE_ARGS"] == ""

    # systemd-analyze verify inside the unpacked tree: the programs the units run must be the
    # package's (plus the host's targets and kill, which the package does not ship).
    paths = [unpacked / unit_path(contents, u).lstrip("/") for u in units_lib.UNITS]
    dataplane = units_lib.parse_unit(paths[0].read_text())
    assert units_lib.one(dataplane, "EnvironmentFile") == "/etc/default/fulcrum-dataplane"
    for text in (p.read_text() for p in paths):
        for _, key, value in units_lib.parse_unit(text):
            if key in units_lib.EXEC_KEYS and not value.startswith("/bin/kill"):
                assert (unpacked / units_lib.command(value)[0].lstrip("/")).exists(), value
    for d in UNIT_DIRS:
        host = pathlib.Path("/") / d
        if host.is_dir() and not host.is_symlink():
            shutil.copytree(host, unpacked / d, symlinks=True, dirs_exist_ok=True)
    kill = unpacked / "bin" / "kill"
    kill.parent.mkdir(exist_ok=True)
    shutil.copy2(shutil.which("kill"), kill)
    assert units_lib.verify(unpacked, paths) == []
