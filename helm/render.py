"""Render or lint the chart through Helm's own Go library (helm-python-sdk), like `helm template`.

Used by .ci/chart-checks and tests/test_chart.py, so both see exactly what Helm would render:

    python helm/render.py template CHART [-f values.yaml]... [--set k=v]... [--set-json k=JSON]... [-o out.yaml]
    python helm/render.py lint CHART [--kube-version v1.31.0]   # strict, once per ci/*-values.yaml

`template` validates the values against values.schema.json first, then renders every template,
drops NOTES.txt and empty documents, and writes one multi-document YAML stream. On failure it
prints Helm's message on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

import helm_python as helm


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def user_values(files: list[str], sets: list[str], set_json: list[str] | None = None) -> dict[str, Any]:
    """Values the way `helm -f a.yaml --set x=y --set-json k=JSON` composes them (later wins)."""
    values: dict[str, Any] = {}
    for path in files:
        values = _merge(values, helm.values_from_yaml(pathlib.Path(path).read_text()))
    for expression in sets:
        values = _merge(values, helm.parse_set_string(expression))
    for expression in set_json or []:
        key, _, raw = expression.partition("=")
        value: Any = json.loads(raw)
        for part in reversed(key.split(".")):
            value = {part: value}
        values = _merge(values, value)
    return values


def render(
    chart_dir: str, values: dict[str, Any], *, name: str = "kallglot-receiver", namespace: str = "kallglot"
) -> str:
    with helm.Chart.load(chart_dir) as chart:
        chart.validate_schema(chart.merge_values(values))
        manifests = chart.render(values, name=name, namespace=namespace, is_install=True)
    documents = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        for doc in manifests[path].split("\n---"):
            body = doc.strip().removeprefix("---").strip()
            if body and any(not line.lstrip().startswith("#") for line in body.splitlines()):
                documents.append(f"# Source: {path}\n{body}\n")
    return "---\n" + "---\n".join(documents)


def lint(chart_dir: str, kube_version: str | None) -> int:
    values_sets = sorted(pathlib.Path(chart_dir, "ci").glob("*-values.yaml")) or [None]
    worst = 0
    for values_file in values_sets:
        values = user_values([str(values_file)], []) if values_file else None
        report = helm.lint(chart_dir, values, strict=True, namespace="kallglot", kube_version=kube_version)
        label = values_file.name if values_file else "defaults"
        for message in report["messages"]:
            severity = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(message["severity"], "UNKNOWN")
            print(f"[{label}] {severity} {message['path']}: {message['error']}")
        for error in report["errors"]:
            print(f"[{label}] ERROR {error}")
        # strict lint: a warning or an error fails; info-level advice does not
        if report["errors"] or any(m["severity"] >= 2 for m in report["messages"]):
            worst = 1
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tpl = sub.add_parser("template", help="render the chart to a YAML stream")
    tpl.add_argument("chart")
    tpl.add_argument("-f", "--values", action="append", default=[])
    tpl.add_argument("--set", action="append", default=[])
    tpl.add_argument("--set-json", action="append", default=[])
    tpl.add_argument("--name", default="kallglot-receiver")
    tpl.add_argument("--namespace", default="kallglot")
    tpl.add_argument("-o", "--output")
    lnt = sub.add_parser("lint", help="helm lint --strict for every ci/*-values.yaml")
    lnt.add_argument("chart")
    lnt.add_argument("--kube-version")
    args = parser.parse_args(argv)

    if args.command == "lint":
        return lint(args.chart, args.kube_version)
    try:
        stream = render(
            args.chart,
            user_values(args.values, args.set, args.set_json),
            name=args.name,
            namespace=args.namespace,
        )
    except helm.HelmError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if args.output:
        pathlib.Path(args.output).write_text(stream)
    else:
        sys.stdout.write(stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
