"""Every configuration shipped in docs/examples/ is accepted by `fulcrumd --check`, the files
converted from keepalived and HAProxy in docs/migration.md included."""
import pathlib
import subprocess

import pytest

import fulcrumlab

EXAMPLES = sorted((pathlib.Path(__file__).resolve().parents[2] / "docs" / "examples").glob("*.yaml"))


def test_the_examples_are_there():
    names = {p.name for p in EXAMPLES}
    assert {"fulcrum.yaml", "database-pair.yaml", "from-keepalived.yaml", "from-haproxy.yaml"} <= names, names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_fulcrumd_check_accepts_the_example(path):
    r = subprocess.run([str(fulcrumlab.FULCRUMD), "--check", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{path}: valid" in r.stdout + r.stderr, r.stdout + r.stderr


def test_check_prints_warnings_and_still_accepts():
    """A service without servers is valid (set up a VIP before its servers) but is dropped as
    no_server: `--check` says so, with the place, and exits 0."""
    path = [p for p in EXAMPLES if p.name == "fulcrum.yaml"][0]
    r = subprocess.run([str(fulcrumlab.FULCRUMD), "--check", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning: services[5] 'staging': no servers" in r.stderr, r.stderr
    assert "1 warning)" in r.stdout, r.stdout
