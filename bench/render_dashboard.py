"""Draw the Grafana dashboard's panels from a running receiver's /metrics, with matplotlib.

Grafana cannot run here, so this scrapes /metrics every --interval seconds for --duration seconds
(optionally sending call-ended events to it meanwhile, e.g. against `serve --sandbox`) and plots the
same panels as helm/kallglot-receiver/dashboards/kallglot-receiver.json, with the same PromQL
semantics (rate over a window, histogram_quantile from bucket deltas):

    kallglot-receiver serve --sandbox &
    python bench/render_dashboard.py --url http://127.0.0.1:8080 --duration 180 --drive 2 \
        --save-samples bench/results/samples.json --out docs/images/dashboard.png
    python bench/render_dashboard.py --load-samples bench/results/samples.json --out docs/images/dashboard.png

Needs matplotlib and prometheus-client (`pip install matplotlib prometheus-client`).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One scrape: {metric sample name: {frozen label string: value}}
Scrape = dict[str, dict[str, float]]
Series = dict[str, list[tuple[float, float]]]


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


def collect(
    url: str, duration: float, interval: float, drive: float, secret: str | None
) -> list[tuple[float, Scrape]]:
    samples: list[tuple[float, Scrape]] = []
    start = time.monotonic()
    next_event = start
    sent = 0
    while (now := time.monotonic()) - start <= duration:
        if drive > 0 and now >= next_event:
            command = [
                "kallglot-receiver",
                "send",
                "session.ended",
                "--session",
                f"sess_dash{sent:05d}",
                "--to",
                url,
                "--wait",
                "0",
            ]
            if secret:
                command += ["--secret", secret]
            subprocess.run(command, capture_output=True, timeout=10, check=False)
            sent += 1
            next_event = now + 1.0 / drive
        samples.append((now - start, scrape(url)))
        time.sleep(max(0.0, interval - (time.monotonic() - now)))
    return samples


def _labels(key: str) -> dict[str, str]:
    loaded: dict[str, str] = json.loads(key)
    return loaded


def gauge(
    samples: list[tuple[float, Scrape]],
    name: str,
    by: tuple[str, ...] = (),
    agg: Callable[[list[float]], float] = sum,
    where: Callable[[dict[str, str]], bool] = lambda labels: True,
) -> Series:
    """`agg by (by) (name{where})` at every scrape."""
    out: Series = defaultdict(list)
    for t, data in samples:
        groups: dict[str, list[float]] = defaultdict(list)
        for key, value in data.get(name, {}).items():
            labels = _labels(key)
            if not where(labels):
                continue
            groups[" ".join(labels.get(b, "") for b in by) or name].append(value)
        for group, values in groups.items():
            out[group].append((t, agg(values)))
    return dict(out)


def rate(
    samples: list[tuple[float, Scrape]],
    name: str,
    by: tuple[str, ...],
    window: float,
    where: Callable[[dict[str, str]], bool] = lambda labels: True,
) -> Series:
    """`sum by (by) (rate(name{where}[window]))`, counter resets ignored (short runs)."""
    totals = gauge(samples, name, by, where=where)
    out: Series = {}
    for group, points in totals.items():
        series = []
        for i, (t, v) in enumerate(points):
            j = i
            while j > 0 and t - points[j - 1][0] <= window:
                j -= 1
            if j < i:
                series.append((t, max(0.0, v - points[j][1]) / (t - points[j][0])))
        out[group] = series
    return out


def quantile(
    samples: list[tuple[float, Scrape]], name: str, q: float, by: tuple[str, ...], window: float
) -> Series:
    """`histogram_quantile(q, sum by (le, by) (rate(name_bucket[window])))`."""
    bucket = name + "_bucket"
    out: Series = defaultdict(list)
    for i, (t, data) in enumerate(samples):
        j = i
        while j > 0 and t - samples[j - 1][0] <= window:
            j -= 1
        if j == i:
            continue
        before = samples[j][1].get(bucket, {})
        groups: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        for key, value in data.get(bucket, {}).items():
            labels = _labels(key)
            le = float(labels["le"])
            group = " ".join(labels.get(b, "") for b in by) or name
            groups[group][le] += value - before.get(key, 0.0)
        for group, counts in groups.items():
            les = sorted(counts)
            total = counts[les[-1]] if les else 0.0
            if total <= 0:
                continue
            rank, lower, prev = q * total, 0.0, 0.0
            for le in les:
                if counts[le] >= rank:
                    upper = les[-2] if math.isinf(le) and len(les) > 1 else le
                    if math.isinf(le):
                        value = upper
                    else:
                        width = counts[le] - prev
                        value = lower + (upper - lower) * ((rank - prev) / width if width else 1.0)
                    out[group].append((t, value))
                    break
                lower, prev = le, counts[le]
    return dict(out)


def plot(samples: list[tuple[float, Scrape]], out: Path, window: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, str, Series]] = [
        (
            "Credits remaining and used",
            "credits",
            {
                **_only("remaining", gauge(samples, "kallglot_api_credits_remaining", agg=min)),
                **_only("used", gauge(samples, "kallglot_api_credits_used", agg=max)),
            },
        ),
        (
            "Rate-limit headroom",
            "remaining / limit",
            _ratio(
                gauge(samples, "kallglot_api_ratelimit_remaining", agg=min),
                gauge(samples, "kallglot_api_ratelimit_limit", agg=max),
            ),
        ),
        # Store-wide gauges: every replica reads the same store, so max over replicas, never sum.
        ("Calls by state (backlog per stage)", "calls", gauge(samples, "receiver_backlog", ("stage",), max)),
        (
            "Analyses started and finished",
            "per second",
            {
                **_only("started", rate(samples, "receiver_analyses_started_total", (), window)),
                **rate(samples, "receiver_analyses_finished_total", ("status", "via"), window),
            },
        ),
        (
            "Stage latencies (p50 / p95)",
            "seconds",
            {
                **{
                    f"analysis p{int(q * 100)}": v
                    for q in (0.5, 0.95)
                    for v in quantile(samples, "receiver_analysis_duration_seconds", q, (), window).values()
                },
                **{
                    f"call to delivery p95 {k}": v
                    for k, v in quantile(
                        samples, "receiver_call_to_delivery_seconds", 0.95, ("handler",), window
                    ).items()
                },
            },
        ),
        (
            "Deliveries by handler and outcome",
            "per second",
            rate(samples, "receiver_deliveries_total", ("handler", "outcome"), window),
        ),
        ("Dead letters", "deliveries", gauge(samples, "receiver_dead_letters", ("handler",), max)),
        (
            "Oldest pending call per stage",
            "seconds",
            gauge(samples, "receiver_oldest_pending_seconds", ("stage",), max),
        ),
        (
            "Store up",
            "1 = up",
            {
                **_only("min", gauge(samples, "receiver_store_up", agg=min)),
                **_only("max", gauge(samples, "receiver_store_up", agg=max)),
            },
        ),
        (
            "Kallglot errors by code",
            "per second",
            rate(
                samples,
                "kallglot_api_requests_total",
                ("operation", "status"),
                window,
                where=lambda labels: not labels.get("status", "").startswith("2"),
            ),
        ),
        (
            "Malformed inbound events",
            "per second",
            rate(
                samples,
                "receiver_events_total",
                ("source",),
                window,
                where=lambda labels: labels.get("outcome") == "malformed",
            ),
        ),
        (
            "Rate-limit use",
            "used share",
            {
                "used": [
                    (t, 1.0 - v)
                    for t, v in _ratio(
                        gauge(samples, "kallglot_api_ratelimit_remaining", agg=min),
                        gauge(samples, "kallglot_api_ratelimit_limit", agg=max),
                    )["remaining / limit"]
                ]
            },
        ),
    ]
    plt.style.use("dark_background")
    fig, axes = plt.subplots(6, 2, figsize=(16, 20), constrained_layout=True)
    fig.suptitle("Kallglot receiver — sandbox run", fontsize=16, fontweight="bold")
    for ax, (title, unit, series) in zip(axes.flat, panels, strict=True):
        ax.set_title(title, loc="left", fontsize=11)
        ax.set_ylabel(unit)
        ax.set_xlabel("seconds since start")
        ax.grid(alpha=0.25)
        for label, points in sorted(series.items()):
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=label.strip() or title, linewidth=1.6)
        if any(series.values()):
            ax.legend(fontsize=8, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, alpha=0.6)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def _only(name: str, series: Series) -> Series:
    """The single series of an aggregation without `by`, renamed."""
    return {name: next(iter(series.values()))} if series else {}


def _ratio(numerator: Series, denominator: Series) -> Series:
    num = next(iter(numerator.values()), [])
    den = dict(next(iter(denominator.values()), []))
    return {"remaining / limit": [(t, v / den[t]) for t, v in num if den.get(t)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the receiver's base URL")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds to scrape")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes")
    parser.add_argument("--window", type=float, default=20.0, help="rate window in seconds")
    parser.add_argument(
        "--drive", type=float, default=0.0, help="call-ended events per second to send meanwhile"
    )
    parser.add_argument("--secret", help="signing secret for --drive (default: the sandbox's)")
    parser.add_argument("--save-samples", type=Path, help="write the scrapes as JSON")
    parser.add_argument("--load-samples", type=Path, help="plot earlier scrapes instead of scraping")
    parser.add_argument("--out", type=Path, default=Path("docs/images/dashboard.png"))
    args = parser.parse_args(argv)

    if args.load_samples:
        samples: list[Any] = json.loads(args.load_samples.read_text(encoding="utf-8"))
        samples = [(t, data) for t, data in samples]
    else:
        samples = collect(args.url, args.duration, args.interval, args.drive, args.secret)
    if args.save_samples:
        args.save_samples.parent.mkdir(parents=True, exist_ok=True)
        args.save_samples.write_text(json.dumps(samples), encoding="utf-8")
    plot(samples, args.out, args.window)
    print(f"{len(samples)} scrapes -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
