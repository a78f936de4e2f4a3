"""NATS with JetStream for tests: ``nats_url`` is a server that tests may create streams on.

``RECEIVER_TEST_NATS_URL`` when set; else the server on 127.0.0.1:4222 when one answers there (these
machines run one); else a private ``nats-server -js`` on a free port in a temporary directory, stopped
at the end of the session (installed with apt-get first when the binary is missing and we are root).
A NATS test never skips: if no server can be had, it fails loudly.

``tests/conftest.py`` makes the fixture available to every test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

ENV = "RECEIVER_TEST_NATS_URL"
DEFAULT = ("127.0.0.1", 4222)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            return sock.recv(4).startswith(b"INFO")
    except OSError:
        return False


def _binary() -> str:
    found = shutil.which("nats-server")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        command = ["apt-get", "install", "-y", "--no-install-recommends", "nats-server"]
        if subprocess.run(command, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
            subprocess.run(command, env=env, capture_output=True, check=False)
        found = shutil.which("nats-server")
    if found is None:
        pytest.fail(f"no NATS server: install nats-server, run one on 127.0.0.1:4222, or set {ENV}")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    if os.environ.get(ENV):
        yield os.environ[ENV]
        return
    if _answers(*DEFAULT):
        yield "nats://{}:{}".format(*DEFAULT)
        return
    binary = _binary()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="kr-nats-") as store:
        log = open(os.path.join(store, "nats.log"), "wb")  # noqa: SIM115 (closed below)
        process = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store], stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 20
            while not _answers("127.0.0.1", port):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"nats-server did not start: see {store}/nats.log")
                time.sleep(0.05)
            yield f"nats://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=10)
            log.close()
