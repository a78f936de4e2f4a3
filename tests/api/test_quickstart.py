"""The README's quick start with two listeners: serve --sandbox prints both, send follows the call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.api.live import Live


def test_serve_sandbox_prints_both_listeners_and_send_follows_a_call_to_delivered(tmp_path: Path) -> None:
    live = Live(f"sqlite:///{tmp_path}/receiver.db", tmp_path)
    try:
        sent = subprocess.run(
            [
                sys.executable,
                "-m",
                "receiver",
                "send",
                "session.ended",
                "--session",
                "sess_quick1",
                "--to",
                live.urls["public"],
                "--admin-url",
                live.urls["admin"],
                "--wait",
                "30",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        live.stop()
    banner = live.log.read_text()

    assert live.process.returncode == 0
    assert f"public (webhooks): {live.urls['public']}" in banner
    assert f"admin:             {live.urls['admin']}" in banner
    assert sent.returncode == 0, sent.stderr
    assert "state=delivered" in sent.stdout
    assert "sess_quick1" in (tmp_path / "data" / "deliveries.jsonl").read_text()
