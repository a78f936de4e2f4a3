"""bench/render_dashboard.py's PromQL subset: what each dashboard query gives over a few scrapes."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "render_dashboard.py"
    spec = importlib.util.spec_from_file_location("render_dashboard", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rd = _load()


def _key(**labels: str) -> str:
    return json.dumps(dict(sorted(labels.items())))


def _scrape(counters: tuple[float, float], buckets: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "c_total": {_key(h="a"): counters[0], _key(h="b"): counters[1]},
        "g": {_key(h="a", stage="x"): 3.0, _key(h="a", stage="y"): 5.0, _key(h="b", stage="x"): float("nan")},
        "remaining": {_key(): 30.0},
        "limit": {_key(): 40.0},
        "info": {_key(version="1.0"): 1.0, _key(version="1.1"): 1.0},
        "d_bucket": {_key(le="1.0"): buckets[0], _key(le="2.0"): buckets[1], _key(le="+Inf"): buckets[2]},
    }


SAMPLES = [
    (0.0, _scrape((0.0, 100.0), (0.0, 0.0, 0.0))),
    (10.0, _scrape((10.0, 100.0), (5.0, 10.0, 10.0))),
    (20.0, _scrape((40.0, 120.0), (5.0, 10.0, 14.0))),
]


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return value
    return [{" ".join(v for _, v in labels): round(x, 6) for labels, x in vector.items()} for vector in value]


@pytest.mark.parametrize(
    ("expr", "window", "expected"),
    [
        ("sum(c_total)", 20, [{"": 100.0}, {"": 110.0}, {"": 160.0}]),
        ("max by (stage) (g)", 20, [{"x": 3.0, "y": 5.0}] * 3),  # NaN samples are left out
        ('sum(g{stage=~"x|z"})', 20, [{"": 3.0}] * 3),
        ("count by (version) (info)", 20, [{"1.0": 1.0, "1.1": 1.0}] * 3),
        (
            "sum by (h) (rate(c_total[$__rate_interval]))",
            20,
            [{}, {"a": 1.0, "b": 0.0}, {"a": 2.0, "b": 1.0}],
        ),
        ("sum by (h) (rate(c_total[10s]))", 20, [{}, {"a": 1.0, "b": 0.0}, {"a": 3.0, "b": 2.0}]),
        ('sum(rate(c_total{h!~"a.*",namespace=~"$namespace"}[1m]))', 20, [{}, {"": 0.0}, {"": 1.0}]),
        ("1 - min(remaining) / max(limit)", 20, [{"": 0.25}] * 3),
        ("(2 + 4) * 0.5 - 1", 20, 2.0),
        ("histogram_quantile(0.5, sum by (le) (rate(d_bucket[20s])))", 20, [{}, {"": 1.0}, {"": 1.4}]),
        ("histogram_quantile(0.75, sum by (le) (rate(d_bucket[20s])))", 20, [{}, {"": 1.5}, {"": 2.0}]),
        (
            "histogram_quantile(0.99, sum by (le) (rate(d_bucket[10s])))",
            20,
            [{}, {"": 1.98}, {"": 2.0}],
        ),  # +Inf: the highest bound
    ],
)
def test_query_evaluates_like_prometheus(expr: str, window: float, expected: Any) -> None:
    assert _plain(rd.Query(expr, SAMPLES, window).evaluate()) == expected


@pytest.mark.parametrize(
    "expr",
    ["topk(3, c_total)", "sum(c_total", "sum(c_total) or g", 'g{stage~"x"}', "c_total offset 5m"],
)
def test_queries_outside_the_subset_are_refused(expr: str) -> None:
    with pytest.raises((ValueError, KeyError)):
        rd.Query(expr, SAMPLES, 20).evaluate()


@pytest.mark.parametrize(
    ("template", "labels", "expected"),
    [
        ("{{status}} via {{via}}", {"status": "completed", "via": "webhook"}, "completed via webhook"),
        ("p95 {{ handler }}", {"handler": "crm"}, "p95 crm"),
        ("unmatched", {}, "unmatched"),
        ("{{missing}}x", {}, "x"),
        (None, {"handler": "crm", "outcome": "delivered"}, "crm delivered"),
        ("", {}, ""),
    ],
)
def test_legend_follows_grafanas_legend_format(
    template: str | None, labels: dict[str, str], expected: str
) -> None:
    assert rd.legend(template, labels) == expected


def test_panels_come_in_order_with_the_panels_of_collapsed_rows_after_their_row() -> None:
    dashboard = {
        "panels": [
            {"type": "row", "title": "A"},
            {"type": "stat", "title": "a1"},
            {
                "type": "row",
                "title": "B",
                "collapsed": True,
                "panels": [{"type": "timeseries", "title": "b1"}],
            },
            {"type": "timeseries", "title": "c1"},
        ]
    }
    assert [p["title"] for p in rd.panels(dashboard)] == ["A", "a1", "B", "b1", "c1"]


def test_every_query_of_the_dashboard_is_in_the_subset() -> None:
    dashboard = json.loads(rd.DASHBOARD.read_text(encoding="utf-8"))
    drawn = [p for p in rd.panels(dashboard) if p["type"] != "row"]
    titles = [p["title"] for p in drawn]
    assert all(titles)
    assert len(set(titles)) == len(titles)
    assert {"Orphaned deliveries", "Unmatched carrier events"} <= set(titles)
    for panel in drawn:
        assert panel["targets"]
        series = rd.panel_series(panel, SAMPLES, 20.0)  # none of these metrics: empty, never an error
        assert all(not math.isnan(v) for points in series.values() for _, v in points)
