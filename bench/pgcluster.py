"""A private PostgreSQL cluster for the benchmark, with the DEFAULT durability settings.

``--database pg`` starts one (initdb + pg_ctl in a temp dir, on a free loopback port; as the
``postgres`` OS user when run as root) and stops it at the end. Unlike the test cluster
(``tests/pg.py``: fsync off) it keeps ``fsync=on`` and ``synchronous_commit=on``: a COMMIT costs
what it costs in production, which is what group commit and batching are about. Being private,
its processes are ours alone, so their CPU (from ``/proc``) is PostgreSQL's CPU for the replica
model, untouched by other work on a shared server.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
        if not found:
            raise RuntimeError("--database pg needs initdb (apt-get install postgresql)")
        self.bindir = Path(found[0]).parent
        self.root = Path(tempfile.mkdtemp(prefix="kr-bench-pg-"))
        self.datadir = self.root / "data"
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PrivateCluster:
        subprocess.run(
            [*self.as_user, str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-instructions"],
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-o", options,
             "-l", str(self.datadir / "server.log"), "-w", "start"],
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        return self

    def postmaster_pid(self) -> int:
        return int((self.datadir / "postmaster.pid").read_text().split()[0])

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, WAL writer, checkpointer …)."""
        root = self.postmaster_pid()
        out = [root]
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == root:
                out.append(int(entry))
        return out

    def stop(self) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"],
            capture_output=True, check=False, timeout=120,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
