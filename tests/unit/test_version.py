"""The version comes from the package metadata; what cannot read it is checked against it."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import yaml

from receiver.openapi import document
from receiver.version import VERSION, package_version

ROOT = Path(__file__).resolve().parents[2]


def test_the_code_reads_the_installed_package_version() -> None:
    assert VERSION == package_version() == version("kallglot-receiver")
    assert document()["info"]["version"] == VERSION


def test_release_files_that_cannot_read_it_say_the_same() -> None:
    chart = yaml.safe_load((ROOT / "helm/kallglot-receiver/Chart.yaml").read_text())
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert chart["appVersion"] == VERSION
    assert re.findall(r"^ARG VERSION=(\S+)$", dockerfile, re.MULTILINE) == [VERSION]
