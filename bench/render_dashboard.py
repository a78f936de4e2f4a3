"""Draw the Grafana dashboard's panels from a running receiver's /metrics, with matplotlib.

Grafana cannot run here, so this scrapes the admin listener's /metrics every --interval seconds for
--duration seconds (optionally sending events to the public listener meanwhile, e.g. against
`serve --sandbox`) and draws every panel of helm/kallglot-receiver/dashboards/kallglot-receiver.json
where the dashboard puts it: the panels, titles, units and PromQL are read from that JSON, and the
small PromQL subset it uses is evaluated here (aggregations with `by`, rate over --window,
histogram_quantile, label matchers, arithmetic). A dashboard query outside that subset is an error.

    kallglot-receiver serve --sandbox &
    python bench/render_dashboard.py --url http://127.0.0.1:8080 --admin-url http://127.0.0.1:9090 \
        --duration 180 --drive 2 --save-samples bench/results/samples.json --out docs/images/dashboard.png
    python bench/render_dashboard.py --load-samples bench/results/samples.json --out docs/images/dashboard.png

--drive rotates `kallglot-receiver send` over session.ended, call-ended, twilio.completed and
telnyx.hangup (the sandbox's development credentials), with every 10th event malformed (a bad
session id) and every 7th a Twilio callback naming no session (it stays unmatched). Dead letters,
open circuits and orphaned deliveries come from the handlers the receiver runs with, e.g. a webhook
handler pointed at a closed port, and a handler removed from the configuration between two runs.

Needs matplotlib and prometheus-client (`pip install matplotlib prometheus-client`).
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import re
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[1] / "helm/kallglot-receiver/dashboards/kallglot-receiver.json"
#: One scrape: {metric sample name: {label set as sorted JSON: value}}
Scrape = dict[str, dict[str, float]]
Labels = tuple[tuple[str, str], ...]
#: A query's value at every scrape (an instant vector per scrape), or a number.
Timeline = list[dict[Labels, float]]
Value = Timeline | float
Series = dict[str, list[tuple[float, float]]]

TOKEN = re.compile(
    r'\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)|(?P<str>"(?:[^"\\]|\\.)*")'
    r"|(?P<range>\[\s*\d+(?:\.\d+)?[smh]\s*\])|(?P<op>=~|!~|!=|[-+*/(),{}=]))"
)
AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {"sum": sum, "min": min, "max": max, "count": len}
ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "=~": lambda value, pattern: re.fullmatch(pattern, value) is not None,
    "!~": lambda value, pattern: re.fullmatch(pattern, value) is None,
}
UNITS = {"s": "seconds", "ops": "per second", "reqps": "requests / s", "percentunit": "share", "short": ""}


def scrape(url: str, timeout: float = 5.0) -> Scrape:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as response:  # noqa: S310
        text = response.read().decode()
    out: Scrape = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = json.dumps(dict(sorted(sample.labels.items())))
            out[sample.name][key] = float(sample.value)
    return dict(out)


def drive_command(n: int, run: str, url: str, secret: str | None) -> list[str] | None:
    """The n-th `kallglot-receiver send` of --drive (sessions named after the run, so that another
    run's are new calls), or None for an unmatched Twilio callback."""
    if n % 7 == 6:
        return None
    kind = ("session.ended", "call-ended", "twilio.completed", "telnyx.hangup")[n % 4]
    session = "!malformed" if n % 10 == 9 else f"sess_dash{run}_{n:05d}"
    command = ["kallglot-receiver", "send", kind, f"--session={session}", "--to", url, "--wait", "0"]
    return [*command, "--secret", secret] if secret and kind == "session.ended" else command


def send_unmatched(url: str, n: int) -> None:
    """A signed Twilio status callback that names no session: kept unmatched by the receiver."""
    from receiver.carriers.dev import twilio_params, twilio_request

    target = url.rstrip("/") + "/events/twilio"
    body, headers = twilio_request(target, twilio_params(None, f"CAdash{time.time_ns():x}{n:05d}"))
    request = urllib.request.Request(target, data=body, headers=headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass


def collect(
    url: str, admin_url: str, duration: float, interval: float, drive: float, secret: str | None
) -> list[tuple[float, Scrape]]:
    samples: list[tuple[float, Scrape]] = []
    start = time.monotonic()
    next_event, run = start, f"{int(time.time()):x}"
    sent = 0
    while (now := time.monotonic()) - start <= duration:
        if drive > 0 and now >= next_event:
            command = drive_command(sent, run, url, secret)
            if command is None:
                send_unmatched(url, sent)
            else:
                subprocess.run(command, capture_output=True, timeout=10, check=False)
            sent += 1
            next_event = now + 1.0 / drive
        samples.append((now - start, scrape(admin_url)))
        time.sleep(max(0.0, interval - (time.monotonic() - now)))
    return samples


class Query:
    """One PromQL expression of the dashboard's subset, evaluated at every scrape."""

    def __init__(self, expr: str, samples: list[tuple[float, Scrape]], window: float) -> None:
        text = expr.replace("$__rate_interval", f"{window:g}s").replace("$namespace", ".*")
        self.tokens, position = [], 0
        while position < len(text.rstrip()):
            match = TOKEN.match(text, position)
            if match is None:
                raise ValueError(f"cannot read {text[position:]!r} in {expr!r}")
            self.tokens.append(match.group().strip())
            position = match.end()
        self.expr, self.samples, self.at = expr, samples, 0

    def evaluate(self) -> Value:
        value = self._sum()
        if self.at != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.at]!r} in {self.expr!r}")
        return value

    def _peek(self) -> str:
        return self.tokens[self.at] if self.at < len(self.tokens) else ""

    def _take(self, expected: str | None = None) -> str:
        token = self._peek()
        if not token or (expected is not None and token != expected):
            raise ValueError(f"expected {expected or 'more'}, found {token!r} in {self.expr!r}")
        self.at += 1
        return token

    def _sum(self) -> Value:
        value = self._product()
        while self._peek() in ("+", "-"):
            op = ARITHMETIC[self._take()]
            value = arithmetic(op, value, self._product())
        return value

    def _product(self) -> Value:
        value = self._atom()
        while self._peek() in ("*", "/"):
            op = ARITHMETIC[self._take()]
            value = arithmetic(op, value, self._atom())
        return value

    def _atom(self) -> Value:
        token = self._take()
        if token == "(":
            value = self._sum()
            self._take(")")
            return value
        if token[0].isdigit():
            return float(token)
        if token in AGGREGATIONS:
            by = self._labels() if self._peek() == "by" else ()
            self._take("(")
            inner = self._sum()
            self._take(")")
            return aggregate(_timeline(inner), by, AGGREGATIONS[token])
        if token == "rate":
            self._take("(")
            selected = self._selector(self._take())
            window = self._take()
            self._take(")")
            seconds = float(window.strip("[] smh")) * {"s": 1, "m": 60, "h": 3600}[window.strip("[] ")[-1]]
            return rate(self.samples, selected, seconds)
        if token == "histogram_quantile":
            self._take("(")
            q = float(self._take())
            self._take(",")
            inner = self._sum()
            self._take(")")
            return histogram_quantile(q, _timeline(inner))
        return self._selector(token)

    def _labels(self) -> tuple[str, ...]:
        self._take("by")
        self._take("(")
        names = [self._take()]
        while self._peek() == ",":
            self._take(",")
            names.append(self._take())
        self._take(")")
        return tuple(names)

    def _selector(self, name: str) -> Timeline:
        matchers: list[tuple[str, Callable[[str, str], bool], str]] = []
        if self._peek() == "{":
            self._take("{")
            while self._peek() != "}":
                label, op, value = self._take(), self._take(), json.loads(self._take())
                matchers.append((label, MATCHERS[op], value))
                if self._peek() == ",":
                    self._take(",")
            self._take("}")
        out: Timeline = []
        for _, data in self.samples:
            vector = {}
            for key, value in data.get(name, {}).items():
                labels: dict[str, str] = json.loads(key)
                if not math.isnan(value) and all(m(labels.get(k, ""), v) for k, m, v in matchers):
                    vector[tuple(sorted(labels.items()))] = value
            out.append(vector)
        return out


def _timeline(value: Value) -> Timeline:
    if isinstance(value, float):
        raise ValueError("a number where a vector is needed")
    return value


def arithmetic(op: Callable[[float, float], float], left: Value, right: Value) -> Value:
    """`left op right`: numbers, a number and a vector, or two vectors matched on equal label sets."""
    if isinstance(left, float) and isinstance(right, float):
        return op(left, right)
    out: Timeline = []
    for i in range(len(left) if isinstance(left, list) else len(_timeline(right))):
        a = left[i] if isinstance(left, list) else None
        b = right[i] if isinstance(right, list) else None
        keys = (a.keys() & b.keys()) if a is not None and b is not None else (a or b or {}).keys()
        vector = {}
        for key in keys:
            x = a[key] if a is not None else float(left)  # type: ignore[arg-type]
            y = b[key] if b is not None else float(right)  # type: ignore[arg-type]
            if not (op is operator.truediv and y == 0):
                vector[key] = op(x, y)
        out.append(vector)
    return out


def aggregate(timeline: Timeline, by: tuple[str, ...], agg: Callable[[list[float]], float]) -> Timeline:
    """`agg by (by) (timeline)`."""
    out: Timeline = []
    for vector in timeline:
        groups: dict[Labels, list[float]] = defaultdict(list)
        for labels, value in vector.items():
            found = dict(labels)
            groups[tuple((b, found[b]) for b in sorted(by) if b in found)].append(value)
        out.append({group: float(agg(values)) for group, values in groups.items()})
    return out


def rate(samples: list[tuple[float, Scrape]], timeline: Timeline, window: float) -> Timeline:
    """`rate(timeline[window])`: the increase over the oldest scrape within the window, per second
    (counter resets count as no increase: runs are short)."""
    out: Timeline = []
    for i, (t, _) in enumerate(samples):
        j = i
        while j > 0 and t - samples[j - 1][0] <= window:
            j -= 1
        before = timeline[j]
        out.append(
            {
                labels: max(0.0, value - before[labels]) / (t - samples[j][0])
                for labels, value in timeline[i].items()
                if j < i and labels in before
            }
        )
    return out


def histogram_quantile(q: float, timeline: Timeline) -> Timeline:
    """Prometheus's histogram_quantile: linear interpolation within the bucket holding rank q."""
    out: Timeline = []
    for vector in timeline:
        groups: dict[Labels, dict[float, float]] = defaultdict(dict)
        for labels, value in vector.items():
            found = dict(labels)
            le = float(found.pop("le"))
            groups[tuple(sorted(found.items()))][le] = value
        result = {}
        for group, counts in groups.items():
            les = sorted(counts)
            total = counts[les[-1]]
            if total <= 0 or not math.isinf(les[-1]):
                continue
            rank, lower, prev = q * total, 0.0, 0.0
            for k, le in enumerate(les):
                if counts[le] >= rank:
                    if math.isinf(le):
                        result[group] = les[-2] if k else 0.0
                    else:
                        width = counts[le] - prev
                        result[group] = lower + (le - lower) * ((rank - prev) / width if width else 1.0)
                    break
                lower, prev = le, counts[le]
        out.append(result)
    return out


def panel_series(panel: dict[str, Any], samples: list[tuple[float, Scrape]], window: float) -> Series:
    """Every target of a panel, one series per label set, named by its legendFormat."""
    out: Series = defaultdict(list)
    for target in panel.get("targets", []):
        value = Query(target["expr"], samples, window).evaluate()
        timeline: Timeline = [{(): value}] * len(samples) if isinstance(value, float) else value
        for (t, _), vector in zip(samples, timeline, strict=True):
            for labels, v in vector.items():
                out[legend(target.get("legendFormat"), dict(labels)) or target["expr"]].append((t, v))
    return dict(out)


def legend(template: str | None, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: `{{label}}` replaced by the label's value; no format, the values."""
    if not template:
        return " ".join(labels.values())
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template)


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The dashboard's panels in order, rows included, the panels of collapsed rows after their row."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def plot(samples: list[tuple[float, Scrape]], out: Path, window: float, dashboard: Path = DASHBOARD) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    layout = list(panels(json.loads(dashboard.read_text(encoding="utf-8"))))
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in layout)
    plt.style.use("dark_background")
    width, unit, top = 20.0, 0.36, 0.7  # inches: figure width, one grid row, the title above the grid
    fig = plt.figure(figsize=(width, top + height * unit + 0.2))
    fig_height = fig.get_figheight()
    fig.suptitle(
        "Kallglot receiver — sandbox run (x axis: seconds since start)", fontsize=16, fontweight="bold"
    )
    for panel in layout:
        x, y, w, h = (panel["gridPos"][k] for k in ("x", "y", "w", "h"))
        if panel["type"] == "row":
            fig.text(
                0.1 / width,
                1 - (top + (y + 0.6) * unit) / fig_height,
                panel["title"],
                fontsize=13,
                fontweight="bold",
            )
            continue
        # Grafana's grid cell, less room for the title above, the tick labels below and left
        left, right = x * width / 24 + (0.2 if panel["type"] == "stat" else 0.8), (x + w) * width / 24 - 0.15
        upper, lower = (
            top + y * unit + 0.3,
            top + (y + h) * unit - (0.15 if panel["type"] == "stat" else 0.35),
        )
        ax = fig.add_axes(
            (left / width, 1 - lower / fig_height, (right - left) / width, (lower - upper) / fig_height)
        )
        series = panel_series(panel, samples, window)
        kind = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        ax.set_title(panel["title"], loc="left", fontsize=11)
        if panel["type"] == "stat":
            ax.set_xticks([])
            ax.set_yticks([])
            lines = [f"{label}: {points[-1][1]:g}" for label, points in sorted(series.items()) if points]
            ax.text(
                0.5,
                0.5,
                "\n".join(lines) or "no data",
                ha="center",
                va="center",
                fontsize=15,
                transform=ax.transAxes,
                color="#73bf69",
            )
            continue
        ax.set_ylabel(UNITS.get(kind, kind))
        if kind == "percentunit":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(alpha=0.25)
        for label, points in sorted(series.items()):
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=label, linewidth=1.6)
        if series:
            ax.legend(fontsize=8, loc="upper left", framealpha=0.6)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, alpha=0.6)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the public listener, for --drive")
    parser.add_argument("--admin-url", default="http://127.0.0.1:9090", help="the admin listener (/metrics)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds to scrape")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes")
    parser.add_argument("--window", type=float, default=20.0, help="rate window in seconds")
    parser.add_argument("--drive", type=float, default=0.0, help="events per second to send meanwhile")
    parser.add_argument("--secret", help="signing secret of --drive's session.ended (default: the sandbox's)")
    parser.add_argument("--save-samples", type=Path, help="write the scrapes as JSON")
    parser.add_argument("--load-samples", type=Path, help="plot earlier scrapes instead of scraping")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD, help="the Grafana dashboard JSON")
    parser.add_argument("--out", type=Path, default=Path("docs/images/dashboard.png"))
    args = parser.parse_args(argv)

    if args.load_samples:
        samples: list[Any] = json.loads(args.load_samples.read_text(encoding="utf-8"))
        samples = [(t, data) for t, data in samples]
    else:
        samples = collect(args.url, args.admin_url, args.duration, args.interval, args.drive, args.secret)
    if args.save_samples:
        args.save_samples.parent.mkdir(parents=True, exist_ok=True)
        args.save_samples.write_text(json.dumps(samples), encoding="utf-8")
    plot(samples, args.out, args.window, args.dashboard)
    print(f"{len(samples)} scrapes -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
