"""End to end: Debian's Prometheus scrapes fulcrumd in the lab with our rules loaded.

Prometheus runs in the balancer's namespace next to fulcrumd (on 127.0.0.1, a free port, its
own TSDB in the test's directory, scrape and rule evaluation every second). Traffic goes
through the lab; the test asks Prometheus's HTTP API for the series, the rates and the rules,
checks that every label the rules and the dashboard match on is on the real series, and draws
the dashboard with control/dist/grafana/render.py (FULCRUM_DASHBOARD_PNG=path keeps a copy:
docs/images/dashboard.png is made that way)."""
import json
import os
import pathlib
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

import fulcrumlab
from conftest import SERVERS3, VIP, web_service

ROOT = pathlib.Path(__file__).resolve().parents[2]
RULES = ROOT / "control" / "dist" / "prometheus" / "fulcrum-rules.yml"
DASHBOARD = ROOT / "control" / "dist" / "grafana" / "fulcrum-dashboard.json"
RENDER = ROOT / "control" / "dist" / "grafana" / "render.py"
PROMETHEUS = shutil.which("prometheus")

sys.path.insert(0, str(ROOT / "tests" / "ops"))
import test_monitoring as checker  # noqa: E402  (the PromQL reader of the ops tests)


class PrometheusInLab:
    """Debian's prometheus in namespace `ns`, scraping fulcrumd's metrics endpoint."""

    def __init__(self, ns, workdir, metrics_port):
        self.ns = ns
        self.port = self._free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "fulcrum",
                                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }
        cfg = pathlib.Path(workdir) / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        self.proc = fulcrumlab.Process(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={pathlib.Path(workdir) / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            netns=ns, log=pathlib.Path(workdir) / "prometheus.log")
        self.started = time.time()

    def _free_port(self):
        with fulcrumlab.in_netns(self.ns):
            s = socket.socket()
        with s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def get(self, path, **params):
        """A GET on Prometheus's HTTP API from inside the namespace: the JSON body's data."""
        url = f"{self.url}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        with fulcrumlab.in_netns(self.ns):
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def ready(self):
        if not self.proc.alive():
            raise AssertionError(f"prometheus exited:\n{self.proc.log()}")
        try:
            with fulcrumlab.in_netns(self.ns):
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def query(self, expr):
        """Instant query: {frozenset(labels.items()): value}."""
        data = self.get("/api/v1/query", query=expr)
        return {frozenset(r["metric"].items()): float(r["value"][1]) for r in data["result"]}

    def wait_value(self, expr, pred, timeout, what):
        last = {}

        def check():
            nonlocal last
            last = self.query(expr)
            return last and all(pred(v) for v in last.values())
        try:
            fulcrumlab.wait_for(check, timeout, 0.25, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}; {expr} = {last}") from None
        return last

    def stop(self):
        return self.proc.stop()


def traffic(lab, rounds, per_round, deadline_s):
    """Bounded TCP connections through the VIP, and UDP datagrams to a port with no service
    (dropped by the dataplane as no_service), spread over a few seconds."""
    deadline = time.monotonic() + deadline_s
    served = 0
    for i in range(rounds):
        if time.monotonic() > deadline:
            break
        for _ in range(per_round):
            fulcrumlab.connect_once(lab.client, VIP, 80)
            served += 1
        s = fulcrumlab.ns_socket(lab.client, socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            for _ in range(5):
                s.sendto(b"nobody listens", (VIP, 9))
        time.sleep(0.2)  # pacing the load so the rates show a shape, not a synchronisation
    return served


def live_labels(prom):
    """{metric name: set of label names} of every series Prometheus holds from fulcrumd."""
    data = prom.get("/api/v1/series", **{"match[]": ['{job="fulcrum"}']})
    out = {}
    for s in data:
        out.setdefault(s["__name__"], set()).update(k for k in s if k != "__name__")
    return out


def label_problems(expr, where, live, records):
    """Labels matched or grouped on that the real series do not carry (metrics without series
    in this lab, such as HA and sync, are checked by the ops tests' vocabulary only)."""
    metrics, grouping, _ = checker.promql_references(expr)
    problems, available, any_live = [], set(checker.TARGET_LABELS), False
    for name, matched in metrics:
        labels = records.get(name) or live.get(name)
        if labels is None:
            continue
        any_live = True
        available |= labels
        for label in sorted(matched - labels):
            problems.append(f"{where}: {name} has no label {label!r} in the scraped series ({sorted(labels)})")
    if any_live:
        for label in sorted(grouping - available):
            problems.append(f"{where}: by/on label {label!r} is on none of the scraped series of {expr!r}")
    return problems


def test_prometheus_scrapes_fulcrumd_with_our_rules(lab3, tmp_path):
    if PROMETHEUS is None:
        pytest.fail("prometheus is missing: install Debian's prometheus package (scripts/install-deps.sh)")
    health = {"type": "tcp", "interval": "500ms", "timeout": "300ms", "rise": 2, "fall": 2}
    lab3.start_fulcrumd(lab3.write_config(lab3.config([web_service(SERVERS3)], health=health)))
    fulcrumlab.wait_for(lambda: lab3.status().get("servers_up") == 3, 15, what="three servers up")
    prom = PrometheusInLab(lab3.lb, tmp_path, lab3.metrics_port)
    try:
        fulcrumlab.wait_for(prom.ready, 30, 0.2, what=f"prometheus ready; log:\n{prom.proc.log()}")
        prom.wait_value('up{job="fulcrum"}', lambda v: v == 1, 20, "fulcrumd's target up")
        prom.wait_value("fulcrum_dataplane_up", lambda v: v == 1, 10, "the dataplane reachable")

        # Traffic, a server that fails its checks for a while, then traffic again.
        served = traffic(lab3, rounds=10, per_round=6, deadline_s=30)
        assert served == 60
        lab3.stop_backend("s3")
        prom.wait_value(f'fulcrum_server_healthy{{server="{SERVERS3["s3"]}:80"}}', lambda v: v == 0, 15,
                        "s3's failing checks in Prometheus")
        served += traffic(lab3, rounds=8, per_round=6, deadline_s=30)
        lab3.start_backend("s3")
        prom.wait_value(f'fulcrum_server_healthy{{server="{SERVERS3["s3"]}:80"}}', lambda v: v == 1, 15,
                        "s3 healthy again in Prometheus")

        # The series: per service, per server, per port, drops, and rates above 0.
        served += traffic(lab3, rounds=8, per_round=6, deadline_s=30)
        rates = prom.wait_value('rate(fulcrum_service_packets_total{service="web"}[10s])', lambda v: v > 0, 15,
                                "a packet rate for web")
        assert len(rates) == 1
        servers = prom.query("fulcrum_server_healthy")
        assert {dict(k)["server"] for k in servers} == {f"{a}:80" for a in SERVERS3.values()}
        assert all(dict(k)["service"] == "web" for k in servers)
        prom.wait_value('sum(fulcrum_server_up{service="web"})', lambda v: v == 3, 15, "three servers up")
        prom.wait_value('sum(fulcrum_server_new_connections_total{service="web"})', lambda v: v >= served, 10,
                        f"the {served} connections counted")
        assert prom.query('fulcrum_port_received_packets_total{role="uplink"}'), "no uplink port counters"
        # The worker's busy time: its polls received frames (the traffic above, and whatever
        # the exception path carried), so it rose above zero.
        prom.wait_value('sum(fulcrum_dataplane_busy_seconds_total)', lambda v: v > 0, 15,
                        "the worker's busy time counted")
        prom.wait_value('increase(fulcrum_dataplane_drops_total{reason="no_service"}[5m])', lambda v: v >= 100, 15,
                        "the datagrams to a port with no service counted as no_service drops")

        # The rules: both groups loaded, every rule evaluated without error; the recording
        # rules carry the traffic, and no alert fires on a healthy lab.
        def rules_evaluated():
            groups = prom.get("/api/v1/rules")["groups"]
            return groups if all(r["health"] == "ok" for g in groups for r in g["rules"]) else None
        groups = fulcrumlab.wait_for(rules_evaluated, 15, 0.25, what="every rule evaluated")
        assert {g["name"] for g in groups} == {"fulcrum.recording", "fulcrum.alerts"}
        assert {g["file"] for g in groups} == {str(RULES)}
        loaded = {r["name"] for g in groups for r in g["rules"]}
        defined = {r.get("alert") or r.get("record") for g in yaml.safe_load(RULES.read_text())["groups"]
                   for r in g["rules"]}
        assert loaded == defined
        for g in groups:
            for r in g["rules"]:
                assert not r.get("lastError"), f"{r['name']}: {r['lastError']}"
        prom.wait_value('instance_service:fulcrum_service_packets:rate1m{service="web"}', lambda v: v > 0, 15,
                        "the per-service packet rate recorded")
        prom.wait_value('instance_service:fulcrum_server_up:count{service="web"}', lambda v: v == 3, 15,
                        "three servers counted")
        firing = [a for a in prom.get("/api/v1/alerts")["alerts"] if a["state"] == "firing"]
        assert firing == [], firing

        # Labels: what the rules and the dashboard match and group on is on the real series.
        live = live_labels(prom)
        assert {"fulcrum_service_packets_total", "fulcrum_server_up", "fulcrum_port_errors_total",
                "fulcrum_dataplane_drops_total", "fulcrum_conntable_entries"} <= set(live)
        rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
        records = {r["record"]: live.get(r["record"]) for r in rules if "record" in r}
        records = {k: v for k, v in records.items() if v}
        problems = []
        for r in rules:
            problems += label_problems(r["expr"], r.get("alert") or r.get("record"), live, records)
        dashboard = json.loads(DASHBOARD.read_text())
        for where, q in checker.dashboard_queries(dashboard):
            if not q.startswith("label_values("):
                problems += label_problems(checker.grafana_to_promql(q), where, live, records)
        assert problems == []
        # ... and the check sees a label a real series lacks, in a matcher and in a by() list.
        assert label_problems('fulcrum_server_up{reason="x"}', "q", live, records) != []
        assert label_problems("sum by (port) (rate(fulcrum_service_packets_total[1m]))", "q", live, records) != []

        picture = os.environ.get("FULCRUM_DASHBOARD_PNG")
        if picture:  # for the docs: a minute more of traffic, so the 1m rates settle
            traffic(lab3, rounds=200, per_round=3, deadline_s=75)

        # The dashboard drawn from this Prometheus: every query runs, the lab's panels have data.
        png, summary = tmp_path / "dashboard.png", tmp_path / "summary.json"
        r = fulcrumlab.run("/usr/bin/python3", RENDER, "--prometheus", prom.url, "--dashboard", DASHBOARD,
                           "--output", png, "--summary", summary, "--scrape-interval", "1s",
                           "--range", f"{int(time.time() - prom.started) + 5}s", "--step", "1s",
                           netns=lab3.lb, check=False, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with_data = json.loads(summary.read_text())
        for title in ("Packets/s by service", "Server takes new connections", "Health check state",
                      "Health checks/s by result", "Dataplane frames/s", "Drops/s by reason", "Snapshot generation",
                      "Port packets/s", "Open connections by server", "Servers up"):
            assert with_data[title] > 0, f"panel {title!r} drew no series"
        if picture:
            shutil.copy(png, picture)
    finally:
        rc = prom.stop()
    assert rc == 0, f"prometheus exited with {rc} on SIGTERM:\n{prom.proc.log()}"
