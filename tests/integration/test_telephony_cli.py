"""The README's one-minute try-out, as a user runs it: ``serve --sandbox`` then ``send twilio.completed``
and ``send telnyx.hangup`` with no other flag; the calls reach ``./data/deliveries.jsonl``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.test_cli import run
from tests.pg import free_port


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "serve --sandbox exited"
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("serve --sandbox did not become ready")


def test_serve_sandbox_then_send_each_carrier_preset(tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    url, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "KALLGLOT_"))}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "receiver",
            "serve",
            "--sandbox",
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(url, process)
        twilio = run(
            ["send", "twilio.completed", "--session", "sess_try_tw", "--to", url, "--admin-url", admin],
            cwd=tmp_path,
        )
        assert twilio.returncode == 0, twilio.stdout + twilio.stderr
        assert '"status":"accepted"' in twilio.stdout
        telnyx = run(
            ["send", "telnyx.hangup", "--session", "sess_try_tx", "--to", url, "--admin-url", admin],
            cwd=tmp_path,
        )
        assert telnyx.returncode == 0, telnyx.stdout + telnyx.stderr
        wrong = run(
            [
                "send",
                "twilio.completed",
                "--session",
                "sess_try_no",
                "--to",
                url,
                "--admin-url",
                admin,
                "--secret",
                "x" * 20,
            ],
            cwd=tmp_path,
        )
        assert wrong.returncode == 1
        assert "HTTP 401" in wrong.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    lines = (tmp_path / "data" / "deliveries.jsonl").read_text().splitlines()
    docs = {doc["session_id"]: doc for doc in map(json.loads, lines)}
    assert set(docs) == {"sess_try_tw", "sess_try_tx"}
    assert docs["sess_try_tw"]["call"]["carrier"] == "twilio"
    assert docs["sess_try_tx"]["call"]["carrier"] == "telnyx"
    assert docs["sess_try_tx"]["call"]["hangup_cause"] == "normal_clearing"
