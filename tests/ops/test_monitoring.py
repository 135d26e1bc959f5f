"""The monitoring assets (control/dist/prometheus, control/dist/grafana) against fulcrumd's metrics.

promtool checks and unit-tests the rules; every metric name and label that a rule, a rule test
or a dashboard query uses must be one fulcrumd exports (`fulcrumd --metrics-reference`, the
labels its code sets), so a renamed metric breaks this test instead of an alert going quiet.
tests/e2e/test_prometheus.py checks the same against a real Prometheus scraping a lab.
"""
import copy
import json
import re
import shutil
import subprocess

import pytest
import yaml

PROMTOOL = shutil.which("promtool")
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series

# PromQL as of Prometheus 2.42: what may stand before "(".
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                "quantile"}
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "avg_over_time", "ceil",
    "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh", "count_over_time", "day_of_month", "day_of_week",
    "day_of_year", "days_in_month", "deg", "delta", "deriv", "exp", "floor", "histogram_quantile", "holt_winters",
    "hour", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear", "present_over_time",
    "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_desc",
    "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp", "vector",
    "year",
    "label_values",  # Grafana's template-variable query, checked like a function call
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
OPERATOR_WORDS = {"and", "or", "unless", "bool", "offset", "atan2"}

TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<dur>(?:\d+(?:ms|s|m|h|d|w|y))+(?![a-zA-Z0-9_:]))
  | (?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<id>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@:])
""", re.X)

GRAFANA_VARIABLE = re.compile(r"\$\{?(\w+)(?::\w+)?\}?")
GRAFANA_DURATIONS = {"__rate_interval", "__interval", "__range"}


def grafana_to_promql(expr):
    """A dashboard query as Prometheus sees it: interval variables become a duration, the
    others (only used inside label-matcher strings) a match-all regex."""
    return GRAFANA_VARIABLE.sub(lambda m: "1m" if m.group(1) in GRAFANA_DURATIONS else ".*", expr)


def tokenize(expr):
    pos, out = 0, []
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 20]!r} in {expr!r}")
        pos = m.end()
        if m.lastgroup not in ("ws", "comment"):
            out.append((m.lastgroup, m.group()))
    return out


def promql_references(expr):
    """(metrics, grouping, problems): metrics as [(name, {label names matched})], the label
    names of by/without/on/ignoring/group_* lists, and what could not be read."""
    toks = tokenize(expr)
    metrics, grouping, problems = [], set(), []

    def matchers(i):
        """Reads {a="x", b=~"y"} from toks[i] == "{"; returns (labels, __name__ value, next index)."""
        labels, name = set(), None
        i += 1
        while i < len(toks) and toks[i][1] != "}":
            kind, val = toks[i]
            if kind != "id" or i + 2 >= len(toks) or toks[i + 1][1] not in ("=", "!=", "=~", "!~") \
                    or toks[i + 2][0] != "str":
                problems.append(f"malformed label matcher near {val!r} in {expr!r}")
                return labels, name, len(toks)
            if val == "__name__" and toks[i + 1][1] == "=":
                name = toks[i + 2][1][1:-1]
            else:
                labels.add(val)
            i += 3
            if i < len(toks) and toks[i][1] == ",":
                i += 1
        return labels, name, i + 1

    i = 0
    while i < len(toks):
        kind, val = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "op" and val == "[":  # range or subquery: durations only
            while i < len(toks) and toks[i][1] != "]":
                i += 1
            i += 1
        elif kind == "op" and val == "{":
            labels, name, i = matchers(i)
            if name:
                metrics.append((name, labels))
            else:
                problems.append(f"a selector without a metric name in {expr!r}")
        elif kind != "id":
            i += 1
        elif val in GROUPING:
            i += 1
            if nxt == "(":
                i += 1
                while i < len(toks) and toks[i][1] != ")":
                    if toks[i][0] == "id":
                        grouping.add(toks[i][1])
                    i += 1
                i += 1
        elif val in OPERATOR_WORDS or val in ("Inf", "NaN", "inf", "nan"):
            i += 1
        elif nxt == "(" or (val in AGGREGATIONS and nxt in ("by", "without")):
            if val not in FUNCTIONS and val not in AGGREGATIONS:
                problems.append(f"unknown function {val}() in {expr!r}")
            i += 1
        else:
            labels = set()
            i += 1
            if nxt == "{":
                labels, _, i = matchers(i)
            metrics.append((val, labels))
    return metrics, grouping, problems


def label_values_references(query):
    """Grafana's label_values(selector, label): the selector's references plus the label."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_]\w*)\s*\)\s*", query, re.S)
    if not m:
        return promql_references(query)
    metrics, grouping, problems = promql_references(grafana_to_promql(m.group(1)))
    return metrics, grouping | {m.group(2)}, problems


# ---- what fulcrumd exports -----------------------------------------------------------------

def parse_reference(markdown):
    """{name: (type, labels or None)} from `fulcrumd --metrics-reference`'s table; labels
    only if the table has a `labels` column."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()
            if line.strip().startswith("|")]
    header = [h.lower() for h in rows[0]]
    name_col, type_col = header.index("metric"), header.index("type")
    label_col = header.index("labels") if "labels" in header else None
    out = {}
    for r in rows[1:]:
        if set("".join(r)) <= set("-: "):
            continue
        labels = None
        if label_col is not None:
            labels = {x.strip(" `") for x in r[label_col].split(",") if x.strip(" `-")}
        out[r[name_col].strip("`")] = (r[type_col], labels)
    return out


def code_label_names(metrics_cpp):
    """Every label name Metrics::update() sets: the vocabulary when the reference lists no
    labels per metric (the per-metric check runs against live series in the e2e test)."""
    body = metrics_cpp[metrics_cpp.index("void Metrics::update("):]
    return set(re.findall(r'\{"([a-z_]+)",', body)) | set(re.findall(r'\w+\["([a-z_]+)"\]\s*=', body))


class Exported:
    """The metrics and labels a query may use."""

    def __init__(self, reference, vocabulary, rules=()):
        self.reference = reference
        self.vocabulary = vocabulary
        self.records = {}  # recording rule -> the labels its expression keeps
        for r in rules:
            _, grouping, _ = promql_references(r["expr"])
            self.records[r["record"]] = grouping | TARGET_LABELS

    def base(self, name):
        """The reference entry a name belongs to (histogram/summary parts included), or None."""
        if name in self.reference:
            return name
        for suffix, types in (("_bucket", {"histogram"}), ("_sum", {"histogram", "summary"}),
                              ("_count", {"histogram", "summary"})):
            if name.endswith(suffix) and self.reference.get(name[:-len(suffix)], ("",))[0] in types:
                return name[:-len(suffix)]
        return None

    def labels(self, name):
        if name == "up":
            return set(TARGET_LABELS)
        if name in self.records:
            return self.records[name]
        base = self.base(name)
        typ, labels = self.reference[base]
        extra = {"le"} if name.endswith("_bucket") else {"quantile"} if typ == "summary" and name == base else set()
        return (labels if labels is not None else self.vocabulary) | TARGET_LABELS | extra

    def known(self, name):
        return name == "up" or name in self.records or self.base(name) is not None

    def check(self, expr, where, references=promql_references):
        try:
            metrics, grouping, problems = references(expr)
        except ValueError as e:
            return [f"{where}: {e}"]
        problems = [f"{where}: {p}" for p in problems]
        if not metrics:
            problems.append(f"{where}: no metric in {expr!r}")
        available = set(TARGET_LABELS)
        for name, matched in metrics:
            if not self.known(name):
                problems.append(f"{where}: metric {name} is not exported by fulcrumd (see docs/metrics.md)")
                continue
            labels = self.labels(name)
            available |= labels
            for label in sorted(matched - labels):
                problems.append(f"{where}: {name} has no label {label!r} (it has {sorted(labels)})")
        for label in sorted(grouping - available - {"__name__"}):
            problems.append(f"{where}: label {label!r} of a by/on list is on none of the metrics of {expr!r}")
        return problems


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dist(root):
    return root / "control" / "dist"


@pytest.fixture(scope="module")
def rules(dist):
    return yaml.safe_load((dist / "prometheus" / "fulcrum-rules.yml").read_text())


@pytest.fixture(scope="module")
def dashboard(dist):
    return json.loads((dist / "grafana" / "fulcrum-dashboard.json").read_text())


@pytest.fixture(scope="module")
def reference_md(build):
    fulcrumd = build / "control" / "fulcrumd"
    if not fulcrumd.exists():
        pytest.fail(f"{fulcrumd} is missing: ninja -C {build} control/fulcrumd")
    return subprocess.run([str(fulcrumd), "--metrics-reference"], check=True, capture_output=True, text=True,
                          timeout=30).stdout


@pytest.fixture(scope="module")
def vocabulary(root):
    return code_label_names((root / "control" / "src" / "metrics.cpp").read_text())


@pytest.fixture(scope="module")
def exported(reference_md, vocabulary, rules):
    recording = [r for g in rules["groups"] for r in g["rules"] if "record" in r]
    return Exported(parse_reference(reference_md), vocabulary, recording)


def all_rules(rules):
    return [r for g in rules["groups"] for r in g["rules"]]


def dashboard_queries(dashboard):
    """(where, query) of every panel target and template variable."""
    out = []
    for p in dashboard["panels"]:
        for sub in [p] + p.get("panels", []):
            for t in sub.get("targets", []):
                out.append((f"panel {sub['title']!r} {t.get('refId')}", t.get("expr", "")))
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f"variable {v['name']}", q))
    return out


def check_dashboard(dashboard, exported):
    problems = []
    for where, q in dashboard_queries(dashboard):
        if q.strip().startswith("label_values("):
            problems += exported.check(q, where, label_values_references)
        else:
            problems += exported.check(grafana_to_promql(q), where)
    return problems


# ---- promtool --------------------------------------------------------------------------------

def promtool(*args, cwd=None):
    if not PROMTOOL:
        pytest.fail("promtool is missing: install Debian's prometheus package (scripts/install-deps.sh)")
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_checks_the_rules(dist):
    r = promtool("check", "rules", dist / "prometheus" / "fulcrum-rules.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_unit_tests_pass(dist):
    r = promtool("test", "rules", "fulcrum-rules.test.yml", cwd=dist / "prometheus")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_is_tested_firing_and_quiet(dist, rules):
    tests = yaml.safe_load((dist / "prometheus" / "fulcrum-rules.test.yml").read_text())
    firing, quiet = set(), set()
    for case in tests["tests"]:
        for t in case.get("alert_rule_test", []):
            (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    alerts = {r["alert"] for r in all_rules(rules) if "alert" in r}
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet"
    assert (firing | quiet) - alerts == set(), "tests of alerts that do not exist"
    records = {r["record"] for r in all_rules(rules) if "record" in r}
    tested = {t["expr"] for case in tests["tests"] for t in case.get("promql_expr_test", [])}
    assert records - tested == set(), "recording rules without a promql_expr_test"


def test_the_unit_tests_fail_when_an_alert_never_fires(dist, rules, tmp_path):
    """Each alert's firing expectation is real: with its expression replaced by one that
    matches nothing, promtool's unit tests fail."""
    tests = yaml.safe_load((dist / "prometheus" / "fulcrum-rules.test.yml").read_text())
    for name in [r["alert"] for r in all_rules(rules) if "alert" in r]:
        # Only the cases about this alert, so that each promtool run stays short.
        mine = [c for c in tests["tests"] if any(t["alertname"] == name for t in c.get("alert_rule_test", []))]
        (tmp_path / "fulcrum-rules.test.yml").write_text(yaml.safe_dump(dict(tests, tests=mine)))
        broken = copy.deepcopy(rules)
        for r in all_rules(broken):
            if r.get("alert") == name:
                r["expr"] = "vector(1) == 2"
        (tmp_path / "fulcrum-rules.yml").write_text(yaml.safe_dump(broken))
        r = promtool("test", "rules", "fulcrum-rules.test.yml", cwd=tmp_path)
        assert r.returncode != 0 and f"alertname: {name}" in r.stdout + r.stderr, \
            f"{name} silenced, yet the unit tests pass:\n{r.stdout}{r.stderr}"


def test_every_alert_says_what_to_do(rules):
    for r in all_rules(rules):
        if "alert" not in r:
            continue
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"].strip(), r["alert"]
        assert len(r["annotations"]["description"]) > 80, f"{r['alert']}: the description should say what to do"
        assert "for" in r or r["labels"]["severity"] == "info", f"{r['alert']}: a page without `for:` flaps"


# ---- metric names and labels -----------------------------------------------------------------

def test_rule_expressions_use_exported_metrics(rules, exported):
    problems = []
    for r in all_rules(rules):
        problems += exported.check(r["expr"], r.get("alert") or r.get("record"))
    assert problems == []


def test_rule_tests_feed_exported_metrics(dist, exported):
    tests = yaml.safe_load((dist / "prometheus" / "fulcrum-rules.test.yml").read_text())
    problems = []
    for case in tests["tests"]:
        for s in case["input_series"]:
            problems += exported.check(s["series"], f"input series {s['series']}")
    assert problems == []


def test_dashboard_queries_use_exported_metrics(dashboard, exported):
    assert check_dashboard(dashboard, exported) == []


def test_the_reference_is_read(exported, vocabulary):
    """The checker would pass vacuously on an empty reference or vocabulary."""
    assert len(exported.reference) >= 50
    assert {"fulcrum_dataplane_up", "fulcrum_service_packets_total", "fulcrum_port_missed_packets_total"} <= \
        set(exported.reference)
    assert {"service", "server", "reason", "result", "port", "role", "direction", "queue", "state", "to"} <= vocabulary


# ---- the checker itself ----------------------------------------------------------------------

def test_checker_reports_a_bogus_metric_in_the_rules(rules, exported):
    bad = copy.deepcopy(rules)
    for r in all_rules(bad):
        if r.get("alert") == "FulcrumDataplaneDown":
            r["expr"] = "fulcrum_dataplane_is_up == 0"
    problems = [p for r in all_rules(bad) for p in exported.check(r["expr"], r.get("alert") or r.get("record"))]
    assert problems == ["FulcrumDataplaneDown: metric fulcrum_dataplane_is_up is not exported by fulcrumd "
                        "(see docs/metrics.md)"]


def test_checker_reports_a_bogus_metric_in_the_dashboard(dashboard, exported):
    bad = copy.deepcopy(dashboard)
    panel = next(p for p in bad["panels"] if p["title"] == "Port missed and errors/s")
    panel["targets"][0]["expr"] = 'rate(fulcrum_port_rx_missed_total{instance=~"$instance"}[$__rate_interval])'
    problems = check_dashboard(bad, exported)
    assert len(problems) == 1 and "fulcrum_port_rx_missed_total is not exported" in problems[0], problems


@pytest.mark.parametrize("expr, complaint", [
    ('fulcrum_server_up{servce="web"}', "has no label 'servce'"),
    ("sum by (srv) (fulcrum_server_up)", "label 'srv' of a by/on list"),
    ("sum without (reasn) (rate(fulcrum_dataplane_drops_total[5m]))", "label 'reasn' of a by/on list"),
    ("rated(fulcrum_dataplane_drops_total[5m])", "unknown function rated()"),
    ('{__name__="fulcrum_nothing"}', "metric fulcrum_nothing is not exported"),
    ("fulcrum_service_packets_total_bucket", "fulcrum_service_packets_total_bucket is not exported"),
    ("1 + 2", "no metric"),
    ('fulcrum_server_up{service="web}', "cannot read PromQL"),
])
def test_checker_reports_bad_queries(exported, expr, complaint):
    problems = exported.check(expr, "q")
    assert any(complaint in p for p in problems), problems


@pytest.mark.parametrize("expr", [
    'sum by (job, instance, service) (rate(fulcrum_service_packets_total{service=~"web|db"}[5m])) > 0',
    "fulcrum_snapshot_generation > on (job, instance) fulcrum_dataplane_snapshot_generation "
    "and on (job, instance) fulcrum_dataplane_up == 1",
    'increase(fulcrum_ha_transitions_total{to="master"}[15m] offset 1h)',
    "max_over_time(fulcrum_server_weight[10m:1m])",
    'up{job=~"fulcrum.*"} == 0',
    "instance_service:fulcrum_service_packets:rate1m",
])
def test_checker_accepts_good_queries(exported, expr):
    assert exported.check(expr, "q") == []


def test_checker_uses_per_metric_labels_when_the_reference_lists_them(vocabulary):
    md = ("| metric | type | labels | meaning |\n|---|---|---|---|\n"
          "| `x_requests_total` | counter | `service`, `result` | requests |\n"
          "| `x_latency_seconds` | histogram | `service` | latency |\n"
          "| `x_lag_seconds` | summary | | lag |\n")
    ex = Exported(parse_reference(md), vocabulary)
    assert ex.check('sum by (result) (rate(x_requests_total{service="a"}[1m]))', "q") == []
    assert ex.check('x_requests_total{server="a"}', "q") == \
        ["q: x_requests_total has no label 'server' (it has ['instance', 'job', 'result', 'service'])"]
    assert ex.check("histogram_quantile(0.9, sum by (le) (rate(x_latency_seconds_bucket[5m])))", "q") == []
    assert ex.check('x_latency_seconds_bucket{result="ok"}', "q") != []
    assert ex.check('x_lag_seconds{quantile="0.99"} + x_lag_seconds_sum / x_lag_seconds_count', "q") == []
    assert ex.check("x_requests_total_count", "q") != []  # a counter has no _count


def test_grafana_variables_become_promql():
    assert grafana_to_promql('rate(m{s=~"$service",i=~"${instance}"}[$__rate_interval])') == \
        'rate(m{s=~".*",i=~".*"}[1m])'


# ---- the dashboard ---------------------------------------------------------------------------

EXPECTED_ROWS = {"Overview", "Services", "Servers", "Health checks", "Traffic", "Drops", "Snapshots and configuration",
                 "Dataplane ports", "High availability"}


def test_dashboard_is_importable(dashboard):
    assert 36 <= dashboard["schemaVersion"] <= 39
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "service" in variables and variables["service"]["includeAll"]
    for v in variables.values():
        assert v["datasource"]["uid"] == "${DS_PROMETHEUS}", v["name"]
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    assert {r["title"] for r in rows} == EXPECTED_ROWS
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_every_panel_has_a_query_on_the_datasource(dashboard):
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 30
    for p in panels:
        assert p["type"] in ("timeseries", "stat", "state-timeline"), p["title"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), f"panel {p['title']!r} target {t['refId']} is empty"
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p.get("description"), f"panel {p['title']!r} says nothing about what it shows"


def test_panels_tile_the_grid(dashboard):
    taken = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"panel {p['title']!r} overlaps another"
        taken |= cells


# ---- installation ----------------------------------------------------------------------------

def test_meson_installs_the_rules_and_the_dashboard(build, root):
    r = subprocess.run(["meson", "introspect", "--installed", str(build)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    installed = {str(src): dst for src, dst in json.loads(r.stdout).items()}
    rules_src = str(root / "control" / "dist" / "prometheus" / "fulcrum-rules.yml")
    dash_src = str(root / "control" / "dist" / "grafana" / "fulcrum-dashboard.json")
    assert installed.get(rules_src, "").endswith("/share/fulcrum/prometheus/fulcrum-rules.yml"), installed
    assert installed.get(dash_src, "").endswith("/share/fulcrum/grafana/fulcrum-dashboard.json"), installed


# ---- render.py -------------------------------------------------------------------------------

class FakePrometheus:
    """/api/v1/query_range answering one series per query (none for HA queries), recording
    the queries it got; a query with "fail" in it gets Prometheus's bad_data error."""

    def __init__(self):
        import http.server
        import threading
        self.queries = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                import urllib.parse
                url = urllib.parse.urlparse(self.path)
                q = urllib.parse.parse_qs(url.query)
                outer.queries.append(q["query"][0])
                start, end, step = float(q["start"][0]), float(q["end"][0]), float(q["step"][0].rstrip("s"))
                if "fail" in q["query"][0]:
                    code, body = 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}
                else:
                    n = int((end - start) / step) + 1
                    result = [] if "fulcrum_ha_" in q["query"][0] else [
                        {"metric": {"instance": "lb1:9310", "service": "web", "server": "198.18.0.11:80"},
                         "values": [[start + i * step, str(i % 2)] for i in range(n)]}]
                    code, body = 200, {"status": "success", "data": {"resultType": "matrix", "result": result}}
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_prometheus():
    p = FakePrometheus()
    try:
        yield p
    finally:
        p.close()


def render(dist, *args):
    return subprocess.run(["/usr/bin/python3", str(dist / "grafana" / "render.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_render_draws_every_panel(dist, dashboard, fake_prometheus, tmp_path):
    png, summary = tmp_path / "d.png", tmp_path / "s.json"
    r = render(dist, "--prometheus", fake_prometheus.url, "--output", png, "--summary", summary,
               "--range", "5m", "--step", "5s", "--scrape-interval", "1s", "--var", "service=web|db")
    assert r.returncode == 0, r.stdout + r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = json.loads(summary.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert set(drawn) == {p["title"] for p in panels}
    assert drawn["Packets/s by service"] == 1 and drawn["HA transitions"] == 0
    assert len(fake_prometheus.queries) == sum(len(p["targets"]) for p in panels)
    for q in fake_prometheus.queries:
        assert "$" not in q, q
    # $__rate_interval: four 1 s scrapes, but at least a 5 s step and a scrape.
    assert any("[6s]" in q for q in fake_prometheus.queries)
    assert any('service=~"web|db"' in q for q in fake_prometheus.queries)


def test_render_fails_on_a_failing_query(dist, dashboard, fake_prometheus, tmp_path):
    bad = copy.deepcopy(dashboard)
    bad["panels"] = [p for p in bad["panels"] if p["title"] in ("Drops", "Drops/s by reason", "Connection table fill")]
    panel = bad["panels"][1]
    panel["targets"][0]["expr"] = "fail_this(" + panel["targets"][0]["expr"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    r = render(dist, "--prometheus", fake_prometheus.url, "--dashboard", tmp_path / "bad.json",
               "--output", tmp_path / "d.png", "--range", "1m")
    assert r.returncode == 1
    assert "Drops/s by reason A: bad_data: parse error" in r.stderr


def test_render_says_when_prometheus_is_unreachable(dist, tmp_path):
    with socket_port() as port:
        r = render(dist, "--prometheus", f"http://127.0.0.1:{port}", "--output", tmp_path / "d.png", "--range", "1m")
    assert r.returncode == 1
    assert f"cannot reach Prometheus at http://127.0.0.1:{port}" in r.stderr


def socket_port():
    """A port nothing listens on (bound, not listening, for the duration)."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def held():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            yield s.getsockname()[1]
    return held()
