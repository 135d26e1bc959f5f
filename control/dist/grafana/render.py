#!/usr/bin/python3
"""Draws Fulcrum's Grafana dashboard from a live Prometheus, without Grafana.

Runs every panel's queries over a time range with Prometheus's /api/v1/query_range and draws
the panels where the dashboard places them (gridPos), as a PNG: time series as lines (stacked
where the panel stacks), stat panels as their last value, state timelines as coloured bands.
Used for the picture in docs/monitoring.md and by tests/e2e/test_prometheus.py; it needs only
Debian's python3 and python3-matplotlib.

    render.py --prometheus http://127.0.0.1:9090 --output dashboard.png [--dashboard FILE]
              [--range 10m] [--step 5s] [--scrape-interval 15s] [--var service=web]

Exit status: 0 when every query ran (panels without data say "No data"), 1 when a query
failed or Prometheus did not answer (the failures are listed on stderr and in the panels).
"""
import argparse
import datetime
import json
import math
import pathlib
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
BG, PANEL_BG, FG, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0", "#37872d",
           "#fade2a", "#3274d9", "#e0b400"]
NAMED_COLOURS = {"green": "#73bf69", "red": "#f2495c", "yellow": "#fade2a", "orange": "#ff9830", "blue": "#5794f2"}
SI = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
UNIT_SUFFIX = {"pps": " p/s", "bps": "b/s", "cps": " c/s", "ops": " ops/s", "s": "s", "short": "", "none": ""}


def parse_duration(text):
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 30s, 10m, 1h30m)")
    return total


def promql_duration(seconds):
    return f"{max(1, int(round(seconds)))}s"


class Unreachable(RuntimeError):
    """Prometheus did not answer at all: no point in running the other queries."""


class Prometheus:
    def __init__(self, url, timeout=30.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query_range(self, expr, start, end, step):
        params = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                         "step": promql_duration(step)})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{params}", timeout=self.timeout) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:  # Prometheus explains a bad query in the body
            try:
                body = json.load(e)
            except ValueError:
                raise RuntimeError(f"HTTP {e.code} from {self.url}") from None
        except (urllib.error.URLError, OSError) as e:
            raise Unreachable(f"cannot reach Prometheus at {self.url}: {e}") from None
        if body.get("status") != "success":
            raise RuntimeError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        return body["data"]["result"]


def substitute(expr, variables, rate_interval, interval):
    """Grafana's variables in a query: $__rate_interval / $__interval as durations, the
    dashboard's own variables as the regex given (match-all by default)."""
    def one(m):
        name = m.group(1) or m.group(2)
        if name == "__rate_interval":
            return promql_duration(rate_interval)
        if name in ("__interval", "__range"):
            return promql_duration(interval)
        return variables.get(name, ".*")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)


def legend(fmt, labels):
    if not fmt or fmt == "__auto":
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__") + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def human(value, unit):
    if value is None or math.isnan(value):
        return "-"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    suffix = UNIT_SUFFIX.get(unit, "")
    a = abs(value)
    for scale, prefix in SI:
        if a >= scale:
            return f"{value / scale:.3g}{prefix}{suffix}"
    return f"{value:.3g}{suffix}"


def mapped(value, mappings):
    """(text, colour) of a value mapping, or None."""
    for m in mappings or []:
        if m.get("type") == "value":
            key = f"{value:g}" if isinstance(value, float) else str(value)
            hit = m["options"].get(key)
            if hit:
                return hit.get("text", key), NAMED_COLOURS.get(hit.get("color"), hit.get("color"))
    return None


def threshold_colour(value, thresholds):
    colour = None
    for step in (thresholds or {}).get("steps", []):
        if step.get("value") is None or value >= step["value"]:
            colour = step["color"]
    return NAMED_COLOURS.get(colour, colour)


def run_panel(prom, panel, args, start, end):
    """[(legend, [t...], [v...])] over all targets, and the errors."""
    series, errors = [], []
    for t in panel.get("targets", []):
        expr = substitute(t.get("expr", ""), args.variables, args.rate_interval, args.step)
        try:
            result = prom.query_range(expr, start, end, args.step)
        except Unreachable:
            raise
        except RuntimeError as e:
            errors.append(f"{panel['title']} {t.get('refId', '')}: {e}")
            continue
        for r in result:
            ts = [mdates.date2num(_utc(float(p[0]))) for p in r["values"]]
            vs = [float(p[1]) for p in r["values"]]
            series.append((legend(t.get("legendFormat"), r["metric"]), ts, vs))
    return series, errors


def _utc(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


def style_axes(ax):
    ax.set_facecolor(PANEL_BG)
    for s in ax.spines.values():
        s.set_color(GRID)
    ax.tick_params(colors=FG, labelsize=7)
    ax.grid(True, color=GRID, linewidth=0.5)


def draw_timeseries(ax, panel, series):
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    custom = panel["fieldConfig"]["defaults"].get("custom", {})
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    step = custom.get("lineInterpolation") == "stepAfter"
    style_axes(ax)
    base = {}
    for i, (name, ts, vs) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        if stacked:
            low = [base.get(t, 0.0) for t in ts]
            high = [lo + v for lo, v in zip(low, vs)]
            ax.fill_between(ts, low, high, color=colour, alpha=0.35, linewidth=0, step="post" if step else None)
            ax.plot(ts, high, color=colour, linewidth=1, label=name, drawstyle="steps-post" if step else "default")
            base.update(zip(ts, high))
        else:
            ax.plot(ts, vs, color=colour, linewidth=1.2, label=name, drawstyle="steps-post" if step else "default")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.xaxis.set_major_locator(plt.MaxNLocator(4))
    ax.yaxis.set_major_locator(plt.MaxNLocator(4))
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: human(v, unit)))
    if panel["fieldConfig"]["defaults"].get("min") == 0:
        ax.set_ylim(bottom=0)
    if series:
        ax.legend(loc="upper left", fontsize=6, frameon=False, labelcolor=FG, ncol=2 if len(series) > 4 else 1)


def draw_stat(ax, panel, series):
    ax.set_facecolor(PANEL_BG)
    ax.set_xticks([])
    ax.set_yticks([])
    defaults = panel["fieldConfig"]["defaults"]
    last = [(name, next((v for v in reversed(vs) if not math.isnan(v)), float("nan"))) for name, _, vs in series]
    if not last:
        return
    width = 1.0 / len(last)
    for i, (name, v) in enumerate(last):
        m = mapped(v, defaults.get("mappings"))
        if m:
            text, colour = m
        else:
            text, colour = human(v, defaults.get("unit", "none")), threshold_colour(v, defaults.get("thresholds"))
        ax.add_patch(plt.Rectangle((i * width + 0.02, 0.05), width - 0.04, 0.9, color=colour or PALETTE[0], alpha=0.85,
                                   transform=ax.transAxes))
        ax.text(i * width + width / 2, 0.55, text, ha="center", va="center", fontsize=16, color="white",
                fontweight="bold", transform=ax.transAxes)
        ax.text(i * width + width / 2, 0.18, name, ha="center", va="center", fontsize=6, color="white",
                transform=ax.transAxes)


def draw_timeline(ax, panel, series):
    style_axes(ax)
    mappings = panel["fieldConfig"]["defaults"].get("mappings")
    thresholds = panel["fieldConfig"]["defaults"].get("thresholds")
    names = []
    for row, (name, ts, vs) in enumerate(series):
        names.append(name)
        width = (ts[1] - ts[0]) if len(ts) > 1 else 1 / 86400
        for t, v in zip(ts, vs):
            m = mapped(v, mappings)
            colour = m[1] if m else threshold_colour(v, thresholds)
            ax.broken_barh([(t, width)], (row + 0.1, 0.8), color=colour or PALETTE[0])
    ax.set_yticks([i + 0.5 for i in range(len(names))])
    ax.set_yticklabels(names, fontsize=6)
    ax.set_ylim(0, max(1, len(names)))
    ax.xaxis_date()
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.xaxis.set_major_locator(plt.MaxNLocator(4))


DRAW = {"timeseries": draw_timeseries, "stat": draw_stat, "state-timeline": draw_timeline}


def render(dashboard, prom, args):
    end = args.end if args.end else time.time()
    start = end - args.range
    panels = [p for p in dashboard["panels"] if p["type"] == "row" or p["type"] in DRAW]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_h = 0.32  # inches per grid row; 24 columns over the figure's width
    fig = plt.figure(figsize=(args.width, height * unit_h + 0.6), facecolor=BG)
    top = height * unit_h + 0.6
    title = f"{dashboard['title']}  ·  {_utc(start):%Y-%m-%d %H:%M:%S} – {_utc(end):%H:%M:%S} UTC"
    fig.text(0.01, 1 - 0.3 / top, title, color=FG, fontsize=12, fontweight="bold", va="center")
    errors, summary = [], {}

    def box(g, left_pad):
        """The axes of a panel, in figure fractions: room above for its title, below for the
        time axis, left for the value axis (or the state timeline's row names)."""
        ax_top = 0.6 + g["y"] * unit_h + 0.25
        ax_bottom = 0.6 + (g["y"] + g["h"]) * unit_h - 0.25
        left_in = g["x"] / 24 * args.width + left_pad
        width_in = g["w"] / 24 * args.width - left_pad - 0.15
        return [left_in / args.width, 1 - ax_bottom / top, width_in / args.width, (ax_bottom - ax_top) / top]

    for p in panels:
        g = p["gridPos"]
        if p["type"] == "row":
            y = 1 - (0.6 + (g["y"] + 0.5) * unit_h) / top
            fig.text(0.005, y, p["title"], color=FG, fontsize=11, fontweight="bold", va="center")
            continue
        series, errs = run_panel(prom, p, args, start, end)
        errors += errs
        summary[p["title"]] = len(series)
        ax = fig.add_axes(box(g, {"timeseries": 0.6, "state-timeline": 1.3}.get(p["type"], 0.1)))
        ax.set_title(p["title"], color=FG, fontsize=8, loc="left")
        DRAW[p["type"]](ax, p, series)
        if p["type"] != "stat":  # every panel over the same range, as Grafana shows them
            ax.set_xlim(mdates.date2num(_utc(start)), mdates.date2num(_utc(end)))
        if errs:
            ax.text(0.5, 0.5, "query failed", ha="center", va="center", color=NAMED_COLOURS["red"], fontsize=9,
                    transform=ax.transAxes)
        elif not series:
            ax.text(0.5, 0.5, "No data", ha="center", va="center", color=FG, alpha=0.6, fontsize=9,
                    transform=ax.transAxes)
    fig.savefig(args.output, dpi=args.dpi, facecolor=BG)
    plt.close(fig)
    return errors, summary


def main(argv=None):
    ap = argparse.ArgumentParser(description="Draw a Grafana dashboard's panels from Prometheus into a PNG.")
    ap.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--dashboard", default=str(HERE / "fulcrum-dashboard.json"), help="dashboard JSON")
    ap.add_argument("--output", required=True, help="PNG file to write")
    ap.add_argument("--range", type=parse_duration, default=parse_duration("10m"), help="time range (default 10m)")
    ap.add_argument("--end", type=float, help="end of the range, Unix seconds (default now)")
    ap.add_argument("--step", type=parse_duration, default=None,
                    help="query resolution (default range/200, 1s or more)")
    ap.add_argument("--scrape-interval", type=parse_duration, default=parse_duration("15s"),
                    help="Prometheus's scrape interval, for $__rate_interval (default 15s)")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=REGEX",
                    help="value of a dashboard variable (default: all)")
    ap.add_argument("--width", type=float, default=20.0, help="figure width in inches (default 20)")
    ap.add_argument("--dpi", type=int, default=80)
    ap.add_argument("--summary", help="write {panel title: number of series} as JSON to this file")
    args = ap.parse_args(argv)
    if args.step is None:
        args.step = max(1.0, args.range / 200)
    # Grafana's $__rate_interval: at least four scrapes, and at least one step plus a scrape.
    args.rate_interval = max(4 * args.scrape_interval, args.step + args.scrape_interval)
    args.variables = {}
    for v in args.var:
        name, sep, value = v.partition("=")
        if not sep or not name:
            ap.error(f"--var {v!r}: expected NAME=REGEX")
        args.variables[name] = value
    try:
        dashboard = json.loads(pathlib.Path(args.dashboard).read_text())
    except (OSError, ValueError) as e:
        print(f"render.py: cannot read the dashboard {args.dashboard}: {e}", file=sys.stderr)
        return 1
    try:
        errors, summary = render(dashboard, Prometheus(args.prometheus), args)
    except Unreachable as e:
        print(f"render.py: {e} (is --prometheus right, and is it running?)", file=sys.stderr)
        return 1
    if args.summary:
        pathlib.Path(args.summary).write_text(json.dumps(summary, indent=1))
    for e in errors:
        print(f"render.py: {e}", file=sys.stderr)
    print(f"render.py: wrote {args.output}: {sum(1 for n in summary.values() if n)} of {len(summary)} panels with data")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
