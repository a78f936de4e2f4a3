"""``kallglot-receiver serve --sandbox`` as a real child process with both listeners, on free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Live:
    """``kallglot-receiver serve --sandbox`` as a child process with both listeners."""

    def __init__(self, database: str, root: Path) -> None:
        self.public_port, self.admin_port = _free_port(), _free_port()
        self.urls = {
            "public": f"http://127.0.0.1:{self.public_port}",
            "admin": f"http://127.0.0.1:{self.admin_port}",
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "KALLGLOT_", "SENTRY_"))}
        env |= {"RECEIVER_DATABASE_URL": database, "RECEIVER_LOG_LEVEL": "ERROR", "PYTHONUNBUFFERED": "1"}
        self.log = root / "serve.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "receiver",
                    "serve",
                    "--sandbox",
                    "--port",
                    str(self.public_port),
                    "--admin-port",
                    str(self.admin_port),
                ],
                cwd=root,
                env=env,
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited: {self.log.read_text()[-2000:]}")
            try:
                if all(httpx.get(f"{url}/readyz").status_code == 200 for url in self.urls.values()):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("serve did not become ready")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
