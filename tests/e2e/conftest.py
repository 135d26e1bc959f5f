import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "lib"))

import fulcrumlab  # noqa: E402


def pytest_configure(config):
    for tool in (fulcrumlab.DATAPLANE, fulcrumlab.FULCRUMD, fulcrumlab.FULCRUMCTL):
        if not tool.exists():
            raise pytest.UsageError(f"{tool} is missing: build first (ninja -C build)")


SERVERS3 = {"s1": "198.18.0.11", "s2": "198.18.0.12", "s3": "198.18.0.13"}
VIP = "198.18.0.100"


def web_service(servers, weights=None, scheduler="maglev", backups=(), name="web", port=80, protocol="tcp",
                vip=VIP, health=None):
    svc = {"name": name, "vip": vip, "port": port, "protocol": protocol, "scheduler": scheduler,
           "table_size": 65537, "servers": []}
    for i, (host, addr) in enumerate(servers.items()):
        s = {"address": addr, "weight": (weights or {}).get(host, 1)}
        if host in backups:
            s["backup"] = True
        svc["servers"].append(s)
    if health:
        svc["health_check"] = health
    return svc


@pytest.fixture
def lab3(tmp_path):
    with fulcrumlab.Lab(tmp_path, SERVERS3, vips=[VIP], tag="e2e") as lab:
        yield lab
