#!/usr/bin/env python
"""The kallglot-receiver benchmark (issue 2; PostgreSQL and replica variants of issue 4).

One command, one process tree, loopback only:

    .venv/bin/python bench/run.py [--quick] [--database sqlite|postgresql://…] [--replicas N]
                                  [--only ingest,pipeline,rss] [--repeat K]

(a) ingest:   wrk, 64 connections, pre-signed unique ``session.ended`` events, against the receiver
              and against ``bench/bare_app.py`` (bare Starlette, same uvicorn options); req/s, p50,
              p99, ratio, and "every accepted event is stored" (2xx counted by wrk vs rows).
(b) pipeline: the sandbox with zero analysis latency; ``session.ended`` -> analysis -> webhook ->
              file handler; calls/s and added latency (delivery line seen - event sent), at a
              steady offered rate and as a burst.
(c) rss:      10,000 calls pushed as fast as the receiver accepts them (the backlog grows in the
              database), receiver RSS sampled; RSS at 2k/5k/10k delivered and the peak.

Everything runs as subprocesses of this script and is stopped when it ends. Missed targets are
reported as MISS; the exit status is non-zero only when the harness itself fails.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BIN = ROOT / ".venv" / "bin"
PYTHON = BIN / "python"
RECEIVER = BIN / "kallglot-receiver"
LUA = BENCH / "wrk_post.lua"
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT))

import pgcluster  # noqa: E402  (bench/, next to this script)
import ratelimit  # noqa: E402

from receiver.commands.send import build_event  # noqa: E402  (the same events `kallglot-receiver send` builds)
from receiver.signing import sign_kallglot  # noqa: E402

SECRET = "bench_webhook_secret_0123456789"
API_KEY = "sk_test_bench"
HOST = "127.0.0.1"
CONNECTIONS = 64
SID_RE = re.compile(rb'"session_id":"(sess_[^"]+)"')

TARGETS = {
    "ingest_ratio": 0.25,  # receiver req/s >= 25% of bare Starlette
    "ingest_p99_ms": 50.0,  # at 64 connections
    "pipeline_calls_per_s": 100.0,
    "pipeline_p99_ms": 250.0,  # added latency
    "rss_peak_mb": 150.0,
    "rss_growth_mb": 15.0,  # "flat": RSS at the last checkpoint minus RSS at the first
    # receiver req/s over the minimal durable baseline's (bench/durable_app.py), same run
    "ingest_durable_ratio": {"sqlite": 1.0, "postgresql": 0.7},
}


class HarnessError(Exception):
    """The benchmark could not run (not a missed target)."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


# --- processes --------------------------------------------------------------------------------


class Procs:
    """The children of this run: started with a log file each, stopped by pid (TERM, then KILL)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str], cpus: str | None = None
    ) -> subprocess.Popen[bytes]:
        if cpus is not None:
            argv = ["taskset", "-c", cpus, *argv]
        logfile = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(argv, env=env, stdout=logfile, stderr=subprocess.STDOUT, cwd=self.workdir)
        logfile.close()
        self.children.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 8.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.children = [(n, p) for n, p in self.children if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.children)):
            self.stop(proc)

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_ready(
    procs: Procs, name: str, proc: subprocess.Popen[bytes], port: int, path: str, timeout: float = 40
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"{name} exited with {proc.returncode}:\n{procs.log_tail(name)}")
        with contextlib.suppress(OSError):
            status, _ = http_get(port, path, timeout=1)
            if status == 200:
                return
        time.sleep(0.1)
    raise HarnessError(f"{name} not ready on {path} after {timeout}s:\n{procs.log_tail(name)}")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in kB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Profiler:
    """``--profile``: py-spy (non-blocking, 100 Hz, per thread) on the receiver(s) during a measurement."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, pids: list[int], name: str, seconds: float) -> None:
        if self.directory is None:
            return
        spy = BIN / "py-spy"
        if not spy.exists():
            raise HarnessError("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.directory.mkdir(parents=True, exist_ok=True)
        for pid in pids:
            out = self.directory / f"{name}-{pid}.txt"
            argv = [
                str(spy),
                "record",
                "-p",
                str(pid),
                "-r",
                "100",
                "--nonblocking",
                "--threads",
                "-f",
                "raw",
                "-o",
                str(out),
                "-d",
                str(int(seconds) + 1),
            ]
            if os.environ.get("BENCH_PROFILE_GIL"):
                argv.append("--gil")  # only the thread holding the GIL: what the event loop waits for
            self.procs.append(
                (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out)
            )

    def stop(self) -> list[dict[str, Any]]:
        summaries = []
        for proc, out in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if out.exists():
                summaries.append(summarize_profile(out))
        self.procs = []
        return summaries


def _frame(frame: str) -> str:
    """``fn (path/to/file.py:123)`` -> ``fn (file.py)``: aggregate over lines."""
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    fn, path = match.groups()
    parts = path.split("/")
    short = "/".join(parts[-2:]) if parts[-1] in ("__init__.py", "app.py", "routing.py") else parts[-1]
    return f"{fn} ({short})"


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Top self and inclusive frames of a py-spy raw (collapsed) profile, per thread and overall."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], [_frame(f) for f in frames[1:]]
        total += count
        threads[thread] += count
        if frames:
            self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)] if total else []

    return {
        "file": str(path),
        "samples": total,
        "threads_pct": share(threads),
        "self_pct": share(self_time),
        "inclusive_pct": share(inclusive),
    }


def clean_env() -> dict[str, str]:
    """The parent environment minus anything that configures the receiver or Sentry."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("KALLGLOT_", "RECEIVER_", "SENTRY_"))}


# --- databases --------------------------------------------------------------------------------


class Database:
    """A fresh database per stack: a SQLite file in the work dir, or a new PostgreSQL database."""

    def __init__(self, spec: str, workdir: Path, label: str) -> None:
        self.spec = spec
        self.kind = "sqlite" if spec == "sqlite" or spec.startswith("sqlite:") else "postgresql"
        self.label = label
        self.workdir = workdir
        self.url = ""
        self.path: Path | None = None
        self.pg_name = ""

    def create(self) -> str:
        if self.kind == "sqlite":
            self.path = self.workdir / f"{self.label}.db"
            self.url = f"sqlite:///{self.path}"
            return self.url
        base = urllib.parse.urlsplit(self.spec)
        self.pg_name = f"bench_{os.getpid()}_{self.label}".lower().replace("-", "_")
        admin = self.spec
        self._psql(admin, f"DROP DATABASE IF EXISTS {self.pg_name}")
        self._psql(admin, f"CREATE DATABASE {self.pg_name}")
        self.url = urllib.parse.urlunsplit(base._replace(path=f"/{self.pg_name}"))
        return self.url

    def drop(self) -> None:
        if self.kind == "postgresql" and self.pg_name:
            with contextlib.suppress(HarnessError):
                self._psql(self.spec, f"DROP DATABASE IF EXISTS {self.pg_name} WITH (FORCE)")

    @staticmethod
    def _psql(url: str, sql: str) -> str:
        if not shutil.which("psql"):
            raise HarnessError(
                "psql is needed for --database postgresql://… (apt-get install postgresql-client)"
            )
        host = urllib.parse.urlsplit(url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise HarnessError("the benchmark only talks to loopback databases")
        done = subprocess.run(
            ["psql", url, "-v", "ON_ERROR_STOP=1", "-tAc", sql], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise HarnessError(f"psql failed ({sql}): {done.stderr.strip()}")
        return done.stdout.strip()

    def stages(self) -> dict[str, dict[str, float]]:
        """Per-stage seconds of the delivered calls, from the receiver's own timestamps (calls table)."""
        sql = (
            "SELECT started_at - received_at, finished_at - started_at, delivered_at - finished_at, delivered_at - received_at"
            " FROM calls WHERE delivered_at IS NOT NULL AND started_at IS NOT NULL AND finished_at IS NOT NULL"
        )
        try:
            if self.kind == "sqlite":
                assert self.path is not None
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
                try:
                    rows = [tuple(r) for r in conn.execute(sql).fetchall()]
                finally:
                    conn.close()
            else:
                text = self._psql(self.url, sql.replace(" FROM", " FROM", 1))
                rows = [tuple(float(x) for x in line.split("|")) for line in text.splitlines() if line]
        except (sqlite3.Error, HarnessError, ValueError) as exc:
            log(f"cannot read stage times: {exc}")
            return {}
        names = (
            "received_to_started",
            "started_to_finished",
            "finished_to_delivered",
            "received_to_delivered",
        )
        out = {}
        for i, name in enumerate(names):
            values = [1000 * float(r[i]) for r in rows if r[i] is not None]
            out[name] = {
                "p50_ms": round(pct(values, 50), 1),
                "p99_ms": round(pct(values, 99), 1),
                "n": len(values),
            }
        return out

    def count(self, table: str) -> int | None:
        try:
            if self.kind == "sqlite":
                assert self.path is not None
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
                try:
                    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
                finally:
                    conn.close()
            return int(self._psql(self.url, f"SELECT count(*) FROM {table}"))  # noqa: S608
        except (sqlite3.Error, HarnessError, ValueError) as exc:
            log(f"cannot count {table}: {exc}")
            return None


# --- the stack: sandbox + receiver replica(s) + database --------------------------------------


class Stack:
    def __init__(
        self,
        procs: Procs,
        database: str,
        replicas: int,
        label: str,
        *,
        credits: int,
        cpus: str | None = None,
        extra_env: dict[str, str] | None = None,
        sandbox_args: list[str] | None = None,
    ) -> None:
        self.procs = procs
        self.sandbox_args = sandbox_args or ["--rate-limit", "100000000"]
        self.db = Database(database, procs.workdir, label)
        self.replicas = replicas
        self.label = label
        self.credits = credits
        self.cpus = cpus
        self.extra_env = extra_env or {}
        self.ports = [free_port() for _ in range(replicas)]
        self.sandbox_port = free_port()
        self.delivery_files = [procs.workdir / f"{label}-deliveries-{i}.jsonl" for i in range(replicas)]
        self.receivers: list[subprocess.Popen[bytes]] = []
        self.sandbox: subprocess.Popen[bytes] | None = None

    def start(self) -> Stack:
        url = self.db.create()
        env = clean_env()
        self.sandbox = self.procs.start(
            f"{self.label}-sandbox",
            [
                str(RECEIVER),
                "sandbox",
                "--host",
                HOST,
                "--port",
                str(self.sandbox_port),
                "--webhook-url",
                f"http://{HOST}:{self.ports[0]}/webhooks/kallglot",
                "--webhook-secret",
                SECRET,
                "--analysis-latency",
                "0",
                *self.sandbox_args,
                "--credits",
                str(self.credits),
            ],
            env,
        )
        wait_ready(self.procs, f"{self.label}-sandbox", self.sandbox, self.sandbox_port, "/_sandbox/stats")
        for i, port in enumerate(self.ports):
            renv = (
                env
                | {
                    "KALLGLOT_API_KEY": API_KEY,
                    "KALLGLOT_WEBHOOK_SECRETS": SECRET,
                    "KALLGLOT_API_URL": f"http://{HOST}:{self.sandbox_port}/v1",
                    "RECEIVER_DATABASE_URL": url,
                    "RECEIVER_HANDLERS": json.dumps(
                        [{"name": "file", "type": "file", "path": str(self.delivery_files[i])}]
                    ),
                    "RECEIVER_LOG_LEVEL": "WARNING",
                }
                | self.extra_env
            )
            name = f"{self.label}-receiver{i}"
            proc = self.procs.start(
                name,
                [str(RECEIVER), "serve", "--host", HOST, "--port", str(port), "--admin-port", "0"],
                renv,
                self.cpus,
            )
            self.receivers.append(proc)
            # start replicas one after the other so that only one of them applies the migrations
            wait_ready(self.procs, name, proc, port, "/readyz")
        return self

    def sandbox_stats(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads(http_get(self.sandbox_port, "/_sandbox/stats")[1]))
        return {}

    def check_alive(self) -> None:
        for i, proc in enumerate(self.receivers):
            if proc.poll() is not None:
                raise HarnessError(
                    f"receiver {i} died ({proc.returncode}):\n{self.procs.log_tail(f'{self.label}-receiver{i}')}"
                )

    def stop(self) -> None:
        for proc in self.receivers:
            self.procs.stop(proc)
        if self.sandbox is not None:
            self.procs.stop(self.sandbox)
        self.db.drop()


# --- (a) ingest -------------------------------------------------------------------------------


def write_requests(path: Path, count: int, prefix: str) -> None:
    """``count`` signed session.ended events, unique event and session ids, t = now."""
    now = time.time()
    t = int(now)
    with open(path, "w") as out:
        for i in range(count):
            event = build_event("session.ended", f"sess_{prefix}{i:07d}", None, now)
            body = json.dumps(event, separators=(",", ":"))
            out.write(sign_kallglot(SECRET, t, body.encode()) + "\t" + body + "\n")


def run_wrk(
    ports: list[int], requests: Path, seconds: float, cpus: str | None, threads: int = 2
) -> dict[str, Any]:
    env = os.environ | {
        "BENCH_REQUESTS": str(requests),
        "BENCH_TARGETS": ",".join(f"{HOST}:{p}" for p in ports),
        "BENCH_THREADS": str(threads),
    }
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{CONNECTIONS}",
        f"-d{seconds:g}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(LUA),
        f"http://{HOST}:{ports[0]}/webhooks/kallglot",
    ]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            result: dict[str, Any] = json.loads(line[len("BENCHJSON ") :])
            dur = result["duration_us"] / 1e6
            result["ok"] = result["requests"] - result["err_status"]
            result["rps"] = result["requests"] / dur if dur else 0.0
            result["p50_ms"] = result["lat_p50_us"] / 1000
            result["p99_ms"] = result["lat_p99_us"] / 1000
            result["socket_errors"] = sum(
                result[k] for k in ("err_connect", "err_read", "err_write", "err_timeout")
            )
            return result
    raise HarnessError(
        f"wrk gave no result (exit {done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}"
    )


def measure_target(
    ports: list[int],
    pids: list[int],
    warm: Path,
    main: Path,
    args: argparse.Namespace,
    cpus: str | None,
    profile: str | None = None,
) -> dict[str, Any]:
    warmup = run_wrk(ports, warm, args.warmup, cpus)
    profiler = Profiler(args.profile if profile else None)
    profiler.start(pids, profile or "", args.duration)
    before = sum(cpu_seconds(p) for p in pids)
    cluster = getattr(args, "pg_cluster", None)
    pg_before = pg_cpu(cluster) if cluster is not None else {}
    t0 = time.monotonic()
    result = run_wrk(ports, main, args.duration, cpus)
    wall = time.monotonic() - t0
    if profile:
        result["profile"] = profiler.stop()
    result["server_cpu_cores"] = (sum(cpu_seconds(p) for p in pids) - before) / wall
    if cluster is not None:
        pg_after = pg_cpu(cluster)
        result["pg_cpu_cores"] = sum(v - pg_before.get(pid, 0.0) for pid, v in pg_after.items()) / wall
    result["warmup"] = {
        k: warmup[k] for k in ("requests", "ok", "sent", "wrapped", "rps", "err_status", "socket_errors")
    }
    return result


def pg_cpu(cluster: Any) -> dict[int, float]:
    """CPU seconds of every process of the private PostgreSQL cluster, by pid."""
    out = {}
    for pid in cluster.pids():
        with contextlib.suppress(OSError):
            out[pid] = cpu_seconds(pid)
    return out


def sized(seconds: float, rate_bound: float) -> int:
    """Unique requests for ``seconds`` at up to ``rate_bound`` req/s (with head room): wrk must never wrap."""
    return max(2000, int(seconds * rate_bound * 1.5) + CONNECTIONS)


def durable_once(
    procs: Procs,
    args: argparse.Namespace,
    tag: str,
    warm: Path,
    main: Path,
    server_cpus: str | None,
    wrk_cpus: str | None,
) -> dict[str, Any]:
    """The minimal durable baseline (bench/durable_app.py) on a fresh database of the same kind."""
    db = Database(args.database, procs.workdir, f"{tag}d")
    url = db.create()
    port = free_port()
    proc = procs.start(
        f"{tag}-durable",
        [str(PYTHON), str(BENCH / "durable_app.py"), "--host", HOST, "--port", str(port),
         "--database", url, "--secret", SECRET],
        clean_env(),
        server_cpus,
    )  # fmt: skip
    try:
        wait_ready(procs, f"{tag}-durable", proc, port, "/healthz")
        result = measure_target([port], [proc.pid], warm, main, args, wrk_cpus)
        stored = db.count("bench_events")
        accepted = result["ok"] + result["warmup"]["ok"]
        wrapped = result["wrapped"] + result["warmup"]["wrapped"]
        result["durability"] = {"accepted_2xx": accepted, "stored_events": stored, "ids_reused": wrapped}
    finally:
        procs.stop(proc)
        db.drop()
    return result


def ingest_once(procs: Procs, args: argparse.Namespace, replicas: int, pin: bool, tag: str) -> dict[str, Any]:
    server_cpus, wrk_cpus = ("0", "1") if pin else (None, None)
    warm, main = procs.workdir / f"{tag}-warm.txt", procs.workdir / f"{tag}-main.txt"
    # (1) the bare app, on its own request files (it does not care about ids)
    write_requests(warm, args.warm_requests, f"{tag}w")
    write_requests(main, args.main_requests, f"{tag}m")
    bare_ports = [free_port() for _ in range(replicas)]
    bare_procs = []
    for i, port in enumerate(bare_ports):
        p = procs.start(
            f"{tag}-bare{i}",
            [str(PYTHON), str(BENCH / "bare_app.py"), "--host", HOST, "--port", str(port)],
            clean_env(),
            server_cpus,
        )
        wait_ready(procs, f"{tag}-bare{i}", p, port, "/healthz")
        bare_procs.append(p)
    try:
        bare = measure_target(bare_ports, [p.pid for p in bare_procs], warm, main, args, wrk_cpus)
    finally:
        for p in bare_procs:
            procs.stop(p)
    # Nothing durable outruns bare Starlette: its rate bounds the others', so their request files
    # are sized from it and wrk never wraps around (a wrapped run is reported as invalid anyway).
    bound = max(bare["rps"], 1000.0)
    # (2) the minimal durable baseline, fresh ids signed now
    write_requests(warm, sized(args.warmup, bound), f"{tag}D")
    write_requests(main, sized(args.duration, bound), f"{tag}E")
    durable = durable_once(procs, args, tag, warm, main, server_cpus, wrk_cpus)
    # (3) the receiver, fresh ids signed now; the sandbox has no credits so the starter pauses
    # (pure ingest; the backlog waits in the database) unless --ingest-workers live.
    write_requests(warm, sized(args.warmup, bound), f"{tag}W")
    write_requests(main, sized(args.duration, bound), f"{tag}M")
    credits = 100_000_000 if args.ingest_workers == "live" else 0
    stack = Stack(
        procs, args.database, replicas, tag, credits=credits, cpus=server_cpus, extra_env=args.receiver_env
    ).start()
    try:
        recv = measure_target(
            stack.ports, [p.pid for p in stack.receivers], warm, main, args, wrk_cpus, profile=f"{tag}-ingest"
        )
        stack.check_alive()
        stored = stack.db.count("inbound_events")
        calls = stack.db.count("calls")
        accepted = recv["ok"] + recv["warmup"]["ok"]
        sent = recv["sent"] + recv["warmup"]["sent"]
        wrapped = recv["wrapped"] + recv["warmup"]["wrapped"]
        recv["durability"] = {
            "accepted_2xx": accepted,
            "stored_events": stored,
            "stored_calls": calls,
            "sent_upper_bound": sent,
            "ids_reused": wrapped,
            # A wrapped run re-sent ids (duplicates, correctly not stored twice): it proves nothing
            # either way, so it is invalid (None), never a durability failure.
            "valid": wrapped == 0,
            # every 2xx is a stored row; rows beyond the 2xx count are requests in flight when wrk stopped
            "ok": None if wrapped else (stored is not None and accepted <= stored <= sent),
        }
        recv["sandbox"] = stack.sandbox_stats()
    finally:
        stack.stop()
    for f in (warm, main):
        f.unlink(missing_ok=True)
    return {
        "bare": bare,
        "durable": durable,
        "receiver": recv,
        "ratio": recv["rps"] / bare["rps"] if bare["rps"] else float("nan"),
        "ratio_durable": recv["rps"] / durable["rps"] if durable["rps"] else float("nan"),
        "pinned": pin,
        "replicas": replicas,
    }


# --- (d) the Kallglot rate budget (bench/ratelimit.py) ------------------------------------------


def send_backlog(port: int, count: int, tag: str) -> None:
    """``count`` signed session.ended events over one keep-alive connection, each answered 2xx."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        for i in range(count):
            now = time.time()
            event = build_event("session.ended", f"sess_{tag}{i:07d}", None, now)
            body = json.dumps(event, separators=(",", ":")).encode()
            conn.request(
                "POST",
                "/webhooks/kallglot",
                body,
                {
                    "Content-Type": "application/json",
                    "Kallglot-Signature": sign_kallglot(SECRET, int(now), body),
                },
            )
            response = conn.getresponse()
            response.read()
            if response.status >= 300:
                raise HarnessError(f"backlog event answered {response.status}")
    finally:
        conn.close()


def ratelimit_once(
    procs: Procs, args: argparse.Namespace, shape: ratelimit.Shape, tag: str
) -> dict[str, Any]:
    sandbox_args = [
        "--rate-limit", str(shape.limit), "--rate-limit-window", f"{shape.window:g}",
        "--webhook-drop-rate", "0.5", "--analysis-latency", "0.5",
    ]  # fmt: skip
    env = args.receiver_env | {"RECEIVER_POLL_AFTER_SECONDS": "1"}
    stack = Stack(
        procs,
        args.database,
        args.replicas,
        tag,
        credits=100_000_000,
        extra_env=env,
        sandbox_args=sandbox_args,
    ).start()

    def spread(count: int) -> None:
        """The backlog split over the replicas, which share the organisation's limit between them."""
        with ThreadPoolExecutor(len(stack.ports)) as pool:
            parts = [
                pool.submit(send_backlog, port, count // len(stack.ports) + 1, f"{tag}r{i}")
                for i, port in enumerate(stack.ports)
            ]
            for part in parts:
                part.result()

    try:
        result = ratelimit.measure(shape, stack.sandbox_stats, spread)
        stack.check_alive()
    finally:
        stack.stop()
    return result | {"replicas": args.replicas}


# --- (b)/(c) pipeline -------------------------------------------------------------------------


def signed_request(session_id: str, port: int) -> bytes:
    now = time.time()
    body = json.dumps(build_event("session.ended", session_id, None, now), separators=(",", ":")).encode()
    signature = sign_kallglot(SECRET, int(now), body)
    head = (
        f"POST /webhooks/kallglot HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Kallglot-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Conn:
    """One HTTP/1.1 keep-alive connection (the receiver answers with Content-Length)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            return 0
        status = int(head[9:12])
        match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if match and int(match.group(1)):
            await self.reader.readexactly(int(match.group(1)))
        if re.search(rb"(?i)\r\nconnection:\s*close", head):
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Tailer:
    """Follows the file handlers' JSONL files; the first time a session id shows up is its delivery."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.files: dict[Path, Any] = {}
        self.partial: dict[Path, bytes] = dict.fromkeys(paths, b"")
        self.seen: dict[str, float] = {}
        self.lines = 0

    def poll(self) -> None:
        now = time.monotonic()
        for path in self.paths:
            f = self.files.get(path)
            if f is None:
                if not path.exists():
                    continue
                f = self.files[path] = open(path, "rb")  # noqa: SIM115
            chunk = f.read()
            if not chunk:
                continue
            data = self.partial[path] + chunk
            *lines, self.partial[path] = data.split(b"\n")
            for line in lines:
                self.lines += 1
                match = SID_RE.search(line)
                if match:
                    self.seen.setdefault(match.group(1).decode(), now)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


async def push_calls(
    stack: Stack,
    n: int,
    *,
    rate: float | None,
    connections: int,
    timeout: float,
    prefix: str,
    sampler: Any = None,
) -> dict[str, Any]:
    """Send ``n`` session.ended (at ``rate`` per second, or as fast as accepted) and wait for delivery."""
    sids = [f"sess_{prefix}{i:07d}" for i in range(n)]
    tailer = Tailer(stack.delivery_files)
    sent_at: dict[str, float] = {}
    statuses: Counter[int] = Counter()
    pools: list[asyncio.Queue[Conn]] = []
    per_replica = max(1, connections // stack.replicas)
    for port in stack.ports:
        q: asyncio.Queue[Conn] = asyncio.Queue()
        for _ in range(per_replica):
            q.put_nowait(Conn(port))
        pools.append(q)
    done = asyncio.Event()
    state = {"sent": 0}

    async def one(pool: asyncio.Queue[Conn], conn: Conn, sid: str) -> None:
        try:
            raw = signed_request(sid, conn.port)
            t = time.monotonic()
            status = await conn.post(raw)
            statuses[status] += 1
            if 200 <= status < 300:
                sent_at[sid] = t
            state["sent"] += 1
        finally:
            pool.put_nowait(conn)

    async def tail() -> None:
        while not done.is_set():
            tailer.poll()
            if sampler is not None:
                sampler(state["sent"], len(tailer.seen))
            await asyncio.sleep(0.005)
        tailer.poll()

    tail_task = asyncio.create_task(tail())
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: set[asyncio.Task[None]] = set()
    first_send = time.monotonic()
    for i, sid in enumerate(sids):
        if rate:
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        pool = pools[i % len(pools)]
        conn = await pool.get()  # bounded in-flight: one request per connection
        task = asyncio.create_task(one(pool, conn, sid))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if time.monotonic() - first_send > timeout:
            break
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    send_seconds = time.monotonic() - first_send
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len([s for s in sent_at if s in tailer.seen]) < len(sent_at):
        stack.check_alive()
        await asyncio.sleep(0.05)
    done.set()
    await tail_task
    tailer.close()
    for pool in pools:
        while not pool.empty():
            pool.get_nowait().close()
    delivered = {s: tailer.seen[s] for s in sent_at if s in tailer.seen}
    latencies = [(delivered[s] - sent_at[s]) * 1000 for s in delivered]
    last = max(delivered.values()) if delivered else first_send
    span = last - first_send
    return {
        "calls": n,
        "accepted": len(sent_at),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "delivered": len(delivered),
        "delivery_lines": tailer.lines,
        "send_seconds": send_seconds,
        "offered_rate": rate,
        "ingest_rate": len(sent_at) / send_seconds if send_seconds else 0.0,
        "calls_per_s": len(delivered) / span if span > 0 else 0.0,
        "span_seconds": span,
        "latency_ms": {
            "p50": pct(latencies, 50),
            "p90": pct(latencies, 90),
            "p99": pct(latencies, 99),
            "max": max(latencies) if latencies else float("nan"),
            "mean": statistics.fmean(latencies) if latencies else float("nan"),
        },
        "complete": len(delivered) == n,
    }


def pipeline_once(
    procs: Procs,
    args: argparse.Namespace,
    replicas: int,
    tag: str,
    *,
    n: int,
    rate: float | None,
    connections: int,
) -> dict[str, Any]:
    stack = Stack(
        procs, args.database, replicas, tag, credits=100_000_000, extra_env=args.receiver_env
    ).start()
    try:
        timeout = max(60.0, n / 20)
        profiler = Profiler(args.profile)
        profiler.start([p.pid for p in stack.receivers], f"{tag}-pipeline", timeout)
        assert stack.sandbox is not None
        pids = {
            "receiver": [p.pid for p in stack.receivers],
            "sandbox": [stack.sandbox.pid],
            "harness": [os.getpid()],
        }
        before = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
        cluster = getattr(args, "pg_cluster", None)
        pg_before = pg_cpu(cluster) if cluster is not None else {}
        t0 = time.monotonic()
        result = asyncio.run(
            push_calls(stack, n, rate=rate, connections=connections, timeout=timeout, prefix=tag)
        )
        wall = time.monotonic() - t0
        # CPU used per process group over the whole run (cores); with 2 cores, receiver ~1.0 = GIL-bound
        result["cpu_cores"] = {
            k: round((sum(cpu_seconds(p) for p in v) - before[k]) / wall, 2) for k, v in pids.items()
        }
        if cluster is not None:  # the private cluster's processes (the replica model's PostgreSQL side)
            pg_after = pg_cpu(cluster)
            used = sum(v - pg_before.get(pid, 0.0) for pid, v in pg_after.items())
            result["cpu_cores"]["postgresql"] = round(used / wall, 3)
        result["cpu_ms_per_call"] = {
            k: round(1000 * v * wall / max(1, result["delivered"]), 2) for k, v in result["cpu_cores"].items()
        }
        if args.profile:
            result["profile"] = profiler.stop()
        result["sandbox"] = stack.sandbox_stats()
        result["replicas"] = replicas
        result["stages"] = stack.db.stages()
        stack.check_alive()
    finally:
        stack.stop()
    return result


def rss_once(procs: Procs, args: argparse.Namespace, replicas: int, tag: str) -> dict[str, Any]:
    n = args.rss_calls
    checkpoints = sorted({max(1, n // 5), n // 2, n} if n != 10_000 else {2000, 5000, 10_000})
    stack = Stack(
        procs, args.database, replicas, tag, credits=100_000_000, extra_env=args.receiver_env
    ).start()
    pids = [p.pid for p in stack.receivers]
    samples: list[dict[str, Any]] = []
    at_checkpoint: dict[int, int] = {}
    baseline = max(proc_status(p)["VmRSS"] for p in pids)
    state = {"next": 0.0, "max_backlog": 0}

    def sampler(sent: int, delivered: int) -> None:
        now = time.monotonic()
        crossed = [c for c in checkpoints if delivered >= c and c not in at_checkpoint]
        if now < state["next"] and not crossed:
            return
        state["next"] = now + 0.1
        rss = max(proc_status(p)["VmRSS"] for p in pids)
        state["max_backlog"] = max(state["max_backlog"], sent - delivered)
        samples.append({"t": now, "sent": sent, "delivered": delivered, "rss_kb": rss})
        for c in crossed:
            at_checkpoint[c] = rss

    try:
        result = asyncio.run(
            push_calls(
                stack, n, rate=None, connections=16, timeout=max(120.0, n / 15), prefix=tag, sampler=sampler
            )
        )
        stack.check_alive()
        hwm = max(proc_status(p)["VmHWM"] for p in pids)
        rss_end = max(proc_status(p)["VmRSS"] for p in pids)
        result["sandbox"] = stack.sandbox_stats()
    finally:
        stack.stop()
    t0 = samples[0]["t"] if samples else 0.0
    return {
        "calls": n,
        "delivered": result["delivered"],
        "ingest_rate": result["ingest_rate"],
        "calls_per_s": result["calls_per_s"],
        "max_backlog": state["max_backlog"],
        "rss_start_mb": baseline / 1024,
        "rss_end_mb": rss_end / 1024,
        "peak_rss_mb": hwm / 1024,
        "rss_at_delivered_mb": {str(c): at_checkpoint[c] / 1024 for c in checkpoints if c in at_checkpoint},
        "rss_at_max_backlog_mb": max((s["rss_kb"] for s in samples), default=0) / 1024,
        "samples": [
            {
                "t": round(s["t"] - t0, 2),
                "sent": s["sent"],
                "delivered": s["delivered"],
                "rss_mb": round(s["rss_kb"] / 1024, 1),
            }
            for s in samples[:: max(1, len(samples) // 200)]
        ],
        "pipeline": {k: result[k] for k in ("accepted", "statuses", "delivered", "latency_ms", "complete")},
        "replicas": replicas,
    }


# --- report -----------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def summarize_ingest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "bare_rps": median([r["bare"]["rps"] for r in runs]),
        "bare_p50_ms": median([r["bare"]["p50_ms"] for r in runs]),
        "bare_p99_ms": median([r["bare"]["p99_ms"] for r in runs]),
        "receiver_rps": median([r["receiver"]["rps"] for r in runs]),
        "receiver_p50_ms": median([r["receiver"]["p50_ms"] for r in runs]),
        "receiver_p99_ms": median([r["receiver"]["p99_ms"] for r in runs]),
        "receiver_cpu_cores": median([r["receiver"]["server_cpu_cores"] for r in runs]),
        "bare_cpu_cores": median([r["bare"]["server_cpu_cores"] for r in runs]),
        "ratio": median([r["ratio"] for r in runs]),
        "durable_rps": median([r["durable"]["rps"] for r in runs]),
        "durable_p50_ms": median([r["durable"]["p50_ms"] for r in runs]),
        "durable_p99_ms": median([r["durable"]["p99_ms"] for r in runs]),
        "durable_cpu_cores": median([r["durable"]["server_cpu_cores"] for r in runs]),
        "ratio_durable": median([r["ratio_durable"] for r in runs]),
        "receiver_cpu_ms_per_event": median(
            [
                1000 * r["receiver"]["server_cpu_cores"] / r["receiver"]["rps"]
                for r in runs
                if r["receiver"]["rps"]
            ]
        ),
        "pg_cpu_ms_per_event": median(
            [
                1000 * r["receiver"]["pg_cpu_cores"] / r["receiver"]["rps"]
                for r in runs
                if "pg_cpu_cores" in r["receiver"]
            ]
        )
        if any("pg_cpu_cores" in r["receiver"] for r in runs)
        else None,
        "non_2xx": sum(r["receiver"]["err_status"] for r in runs),
        "socket_errors": sum(r["receiver"]["socket_errors"] for r in runs),
        "durable": all(
            r["receiver"]["durability"]["ok"] for r in runs if r["receiver"]["durability"]["valid"]
        ),
        "invalid_runs": sum(1 for r in runs if not r["receiver"]["durability"]["valid"]),
        "runs": len(runs),
    }


def summarize_pipeline(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "calls_per_s": median([r["calls_per_s"] for r in runs]),
        "p50_ms": median([r["latency_ms"]["p50"] for r in runs]),
        "p99_ms": median([r["latency_ms"]["p99"] for r in runs]),
        "ingest_rate": median([r["ingest_rate"] for r in runs]),
        "receiver_cpu_ms_per_call": median([r["cpu_ms_per_call"]["receiver"] for r in runs]),
        "sandbox_cpu_ms_per_call": median([r["cpu_ms_per_call"]["sandbox"] for r in runs]),
        "pg_cpu_ms_per_call": median([r["cpu_ms_per_call"]["postgresql"] for r in runs])
        if all("postgresql" in r["cpu_ms_per_call"] for r in runs)
        else None,
        "receiver_cpu_cores": median([r["cpu_cores"]["receiver"] for r in runs]),
        "complete": all(r["complete"] for r in runs),
        "runs": len(runs),
    }


def print_report(report: dict[str, Any]) -> None:
    out = []
    cfg = report["config"]
    out.append("")
    out.append(
        f"kallglot-receiver benchmark  {report['started']}  database={cfg['database_kind']} "
        f"replicas={cfg['replicas']} {'quick' if cfg['quick'] else 'full'} repeat={cfg['repeat']} "
        f"cores={report['machine']['cpus']} load={report['machine']['loadavg_start']}"
    )
    out.append("medians over the repeats; latencies in ms")
    for name, ing in report.get("ingest", {}).items():
        s = ing["summary"]
        out.append("")
        out.append(
            f"(a) ingest [{name}]  {CONNECTIONS} connections, {cfg['duration']:g}s after {cfg['warmup']:g}s warm-up, "
            f"pinned={ing['pinned']}, workers={cfg['ingest_workers']}"
        )
        out.append(f"    {'target':<22}{'req/s':>10}{'p50':>9}{'p99':>9}{'cpu(cores)':>12}")
        out.append(
            f"    {'bare Starlette':<22}{s['bare_rps']:>10.0f}{s['bare_p50_ms']:>9.2f}{s['bare_p99_ms']:>9.2f}{s['bare_cpu_cores']:>12.2f}"
        )
        out.append(
            f"    {'minimal durable':<22}{s['durable_rps']:>10.0f}{s['durable_p50_ms']:>9.2f}{s['durable_p99_ms']:>9.2f}{s['durable_cpu_cores']:>12.2f}"
        )
        out.append(
            f"    {'receiver':<22}{s['receiver_rps']:>10.0f}{s['receiver_p50_ms']:>9.2f}{s['receiver_p99_ms']:>9.2f}{s['receiver_cpu_cores']:>12.2f}"
        )
        out.append(
            f"    ratio receiver/minimal durable: {s['ratio_durable']:.2f}x   receiver/bare: {s['ratio']:.1%}   "
            f"non-2xx: {s['non_2xx']}   socket errors: {s['socket_errors']}   invalid (wrapped) runs: {s['invalid_runs']}"
        )
        pg_ms = s["pg_cpu_ms_per_event"]
        out.append(
            f"    CPU per event: receiver {s['receiver_cpu_ms_per_event']:.3f} ms"
            + (f", PostgreSQL {pg_ms:.3f} ms" if pg_ms is not None else "")
        )
        if pg_ms:
            per_replica, per_pg_core = 1000 / s["receiver_cpu_ms_per_event"], 1000 / pg_ms
            out.append(
                f"    replica model: one replica (one core) ingests {per_replica:,.0f} events/s, one PostgreSQL core "
                f"{per_pg_core:,.0f}; a PostgreSQL of N cores carries {per_pg_core / per_replica:.1f} x N replicas "
                "(CPU only: commit latency and disk are separate limits, see bench/README.md)"
            )
        for i, r in enumerate(ing["runs"]):
            d = r["receiver"]["durability"]
            out.append(
                f"    run {i + 1}: bare {r['bare']['rps']:.0f}/s, receiver {r['receiver']['rps']:.0f}/s "
                f"p99 {r['receiver']['p99_ms']:.1f} ms, ratio {r['ratio']:.1%}; accepted {d['accepted_2xx']} "
                f"<= stored {d['stored_events']} <= sent {d['sent_upper_bound']}: "
                + ("INVALID (wrk wrapped, ids reused)" if d["ok"] is None else "ok" if d["ok"] else "NOT OK")
            )
    for name, pipe in report.get("pipeline", {}).items():
        out.append("")
        out.append(f"(b) pipeline [{name}]  session.ended -> analysis (latency 0) -> webhook -> file handler")
        out.append(
            f"    {'mode':<30}{'calls':>7}{'calls/s':>9}{'p50':>9}{'p99':>9}{'ingest/s':>10}  complete"
            f"  receiver cpu (cores, ms/call)  sandbox ms/call"
        )
        for mode, label in (
            ("steady", f"steady {cfg['steady_rate']:g}/s offered"),
            ("burst", "burst (as fast as accepted)"),
        ):
            if mode not in pipe:
                continue
            s = pipe[mode]["summary"]
            out.append(
                f"    {label:<30}{pipe[mode]['runs'][0]['calls']:>7}{s['calls_per_s']:>9.1f}{s['p50_ms']:>9.1f}"
                f"{s['p99_ms']:>9.1f}{s['ingest_rate']:>10.0f}  {s['complete']!s:<8}"
                f"  {s['receiver_cpu_cores']:.2f}, {s['receiver_cpu_ms_per_call']:.1f}{'':>18}{s['sandbox_cpu_ms_per_call']:.1f}"
                + (
                    f"  PostgreSQL ms/call {s['pg_cpu_ms_per_call']:.2f}"
                    if s["pg_cpu_ms_per_call"] is not None
                    else ""
                )
            )
        for mode in ("steady", "burst"):
            for i, r in enumerate(pipe.get(mode, {}).get("runs", [])):
                st = r.get("stages") or {}
                out.append(
                    f"    {mode} run {i + 1}: {r['calls_per_s']:.1f} calls/s p99 {r['latency_ms']['p99']:.0f} ms; receiver stages p50/p99 ms: "
                    + ", ".join(
                        f"{k.replace('_to_', '->')} {v['p50_ms']:g}/{v['p99_ms']:g}" for k, v in st.items()
                    )
                )
    if "rss" in report:
        r = report["rss"]
        out.append("")
        out.append(
            f"(c) RSS  {r['calls']} calls pushed as fast as accepted; max backlog {r['max_backlog']} calls"
        )
        cps = "  ".join(f"{k} delivered: {v:.1f} MB" for k, v in r["rss_at_delivered_mb"].items())
        out.append(
            f"    start {r['rss_start_mb']:.1f} MB  {cps}  peak (VmHWM) {r['peak_rss_mb']:.1f} MB  end {r['rss_end_mb']:.1f} MB"
        )
        out.append(
            f"    drained at {r['calls_per_s']:.1f} calls/s, ingest {r['ingest_rate']:.0f}/s, delivered {r['delivered']}/{r['calls']}"
        )
    if "scaling" in report:
        out.append("")
        out.append("replica scaling (same database, unpinned)")
        for key, value in report["scaling"].items():
            out.append(f"    {key}: {value}")
    profiles = [
        (f"ingest [{n}] run {i + 1}", r["receiver"].get("profile"))
        for n, ing in report.get("ingest", {}).items()
        for i, r in enumerate(ing["runs"])
    ]
    profiles += [
        (f"pipeline [{n}] {m} run {i + 1}", r.get("profile"))
        for n, pipe in report.get("pipeline", {}).items()
        for m in ("steady", "burst")
        if m in pipe
        for i, r in enumerate(pipe[m]["runs"])
    ]
    for title, summaries in profiles:
        for prof in summaries or ():
            out.append("")
            out.append(f"profile {title}: {prof['samples']} samples, {prof['file']}")
            out.append("    threads: " + ", ".join(f"{t} {v}%" for t, v in prof["threads_pct"][:4]))
            out.append("    self (top 12):")
            out.extend(f"      {v:5.1f}%  {f}" for f, v in prof["self_pct"][:12])
            out.append("    inclusive (top 20):")
            out.extend(f"      {v:5.1f}%  {f}" for f, v in prof["inclusive_pct"][:20])
    out.append("")
    if report.get("ratelimit"):
        out.append("")
        out.append("(d) rate budget: backlog through a small sandbox limit, half the webhooks lost (polling)")
        out.extend(ratelimit.report_lines(report["ratelimit"]))
        out.append("")
    out.append("targets" + (" (judged on the 1-replica runs)" if "scaling" in report else ""))
    for t in report["targets"]:
        out.append(f"    {t['verdict']:<5} {t['name']:<48} {t['value']}")
    out.append("")
    print("\n".join(out), flush=True)


def evaluate(report: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []

    def add(name: str, ok: bool | None, value: str) -> None:
        targets.append({"name": name, "verdict": verdict(ok), "value": value})

    ing = report.get("ingest", {})
    main_ing = ing.get("primary") or (next(iter(ing.values())) if ing else None)  # else the 1-replica runs
    if main_ing:
        s = main_ing["summary"]
        add(
            "ingest >= 25% of bare Starlette req/s",
            s["ratio"] >= TARGETS["ingest_ratio"],
            f"{s['ratio']:.1%}",
        )
        kind = report["config"]["database_kind"]
        least = TARGETS["ingest_durable_ratio"][kind]
        add(
            f"ingest >= {least:.1f}x the minimal durable baseline ({kind})",
            s["ratio_durable"] >= least,
            f"{s['ratio_durable']:.2f}x",
        )
        add(
            "ingest p99 < 50 ms at 64 connections",
            s["receiver_p99_ms"] < TARGETS["ingest_p99_ms"],
            f"{s['receiver_p99_ms']:.1f} ms",
        )
        add(
            "every accepted event stored",
            s["durable"],
            "accepted <= stored <= sent in every run" if s["durable"] else "see runs",
        )
        add("no non-2xx under load", s["non_2xx"] == 0, str(s["non_2xx"]))
    pipe = report.get("pipeline", {})
    main_pipe = pipe.get("primary") or (next(iter(pipe.values())) if pipe else None)
    if main_pipe:
        if "burst" in main_pipe:
            s = main_pipe["burst"]["summary"]
            add(
                "pipeline >= 100 calls/s (burst)",
                s["calls_per_s"] >= TARGETS["pipeline_calls_per_s"],
                f"{s['calls_per_s']:.1f} calls/s",
            )
        if "steady" in main_pipe:
            s = main_pipe["steady"]["summary"]
            ok = s["p99_ms"] < TARGETS["pipeline_p99_ms"] and s["complete"]
            add(
                f"pipeline added latency p99 < 250 ms (steady {report['config']['steady_rate']:g}/s)",
                ok,
                f"{s['p99_ms']:.1f} ms (p50 {s['p50_ms']:.1f})",
            )
            add(
                "pipeline keeps up with the steady rate",
                s["calls_per_s"] >= 0.95 * report["config"]["steady_rate"],
                f"{s['calls_per_s']:.1f} calls/s",
            )
    for r in report.get("ratelimit", []):
        replicas = r.get("replicas", 1)
        add(
            f"rate budget {r['shape']}{f' ({replicas} replicas)' if replicas > 1 else ''}: >= 95% used, < 1% 429s",
            r["use"] >= ratelimit.TARGET_USE and r["share_429"] < ratelimit.TARGET_429,
            f"{r['use']:.1%} of {r['allowed_per_s']:.2f}/s, {r['share_429']:.2%} 429s, {r['starts_per_s']:.2f} starts/s",
        )
    if "rss" in report:
        r = report["rss"]
        add(
            f"peak RSS < 150 MB after {r['calls']} calls",
            r["peak_rss_mb"] < TARGETS["rss_peak_mb"],
            f"{r['peak_rss_mb']:.1f} MB",
        )
        values = list(r["rss_at_delivered_mb"].values())
        growth = values[-1] - values[0] if len(values) >= 2 else None
        add(
            "RSS flat as the backlog grows (growth <= 15 MB)",
            None if growth is None else growth <= TARGETS["rss_growth_mb"],
            "n/a"
            if growth is None
            else f"{growth:+.1f} MB from first to last checkpoint, backlog up to {r['max_backlog']}",
        )
    return targets


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short runs (smoke test, ~2 min)")
    p.add_argument(
        "--database",
        default="sqlite",
        help="sqlite (default) or postgresql://user@127.0.0.1:5432/db (a fresh database is created per stack)",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="receiver replicas on one database; >1 also runs 1 replica and reports the scaling factor",
    )
    p.add_argument(
        "--only",
        default="ingest,pipeline,rss,ratelimit",
        help="comma list of ingest, pipeline, rss, ratelimit",
    )
    p.add_argument(
        "--repeat", type=int, help="repetitions per measurement, median reported (default 3, quick 1)"
    )
    p.add_argument("--duration", type=float, help="ingest seconds per target (default 10, quick 5)")
    p.add_argument("--warmup", type=float, default=2.0, help="ingest warm-up seconds per target")
    p.add_argument("--pipeline-calls", type=int, help="calls per pipeline run (default 2000, quick 500)")
    p.add_argument(
        "--steady-rate", type=float, default=100.0, help="offered calls/s of the steady pipeline run"
    )
    p.add_argument("--rss-calls", type=int, help="calls of the RSS run (default 10000, quick 3000)")
    p.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin server to core 0 and wrk to core 1 during ingest",
    )
    p.add_argument(
        "--ingest-workers",
        choices=["paused", "live"],
        default="paused",
        help="paused: the sandbox has no credits so the receiver's starter pauses during ingest (default); live: the pipeline runs meanwhile",
    )
    p.add_argument(
        "--receiver-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra receiver setting (experiments), repeatable",
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run py-spy on the receiver(s) during each ingest and pipeline measurement, raw profiles to DIR, "
        "top frames in the JSON and on stdout (perturbs the numbers: profile and measure in separate runs)",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the work directory (logs, databases, delivery files)"
    )
    args = p.parse_args(argv)
    args.only = {x.strip() for x in args.only.split(",") if x.strip()}
    parts = {"ingest", "pipeline", "rss", "ratelimit"}
    if args.only - parts:
        p.error(f"--only: unknown {sorted(args.only - parts)}")
    if args.replicas < 1:
        p.error("--replicas must be >= 1")
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.duration = args.duration or (5.0 if args.quick else 10.0)
    args.pipeline_calls = args.pipeline_calls or (500 if args.quick else 2000)
    args.rss_calls = args.rss_calls or (3000 if args.quick else 10_000)
    # enough unique ids that no receiver run reuses one (checked: "ids_reused")
    args.warm_requests = 30_000
    args.main_requests = 40_000 if args.quick else 80_000
    env = {}
    for item in args.receiver_env:
        name, sep, value = item.partition("=")
        if not sep:
            p.error(f"--receiver-env {item!r}: NAME=VALUE")
        env[name] = value
    args.receiver_env = env
    if args.database not in ("sqlite", "pg") and not args.database.startswith(
        ("sqlite:", "postgresql://", "postgres://")
    ):
        p.error("--database: sqlite, pg (a private cluster, default durability) or postgresql://…")
    return args


def run(args: argparse.Namespace, procs: Procs) -> dict[str, Any]:
    kind = "sqlite" if args.database.startswith("sqlite") else "postgresql"
    if kind == "sqlite" and args.replicas > 1:
        raise HarnessError("SQLite serves one process: --replicas > 1 needs --database postgresql://…")
    if "ingest" in args.only and not shutil.which("wrk"):
        raise HarnessError("wrk is not installed: apt-get install -y wrk")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg()[0],
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        "config": {
            "database_kind": kind,
            "replicas": args.replicas,
            "quick": args.quick,
            "repeat": args.repeat,
            "duration": args.duration,
            "warmup": args.warmup,
            "connections": CONNECTIONS,
            "pipeline_calls": args.pipeline_calls,
            "steady_rate": args.steady_rate,
            "rss_calls": args.rss_calls,
            "pin": args.pin,
            "ingest_workers": args.ingest_workers,
            "receiver_env": args.receiver_env,
        },
    }
    # configurations: "primary" (the replicas asked for); with replicas > 1 also "1 replica" for the factor
    configs = [("primary", args.replicas)]
    if args.replicas > 1:
        configs = [("1 replica", 1), (f"{args.replicas} replicas", args.replicas)]
    if "ingest" in args.only:
        report["ingest"] = {}
        for name, replicas in configs:
            pin = args.pin and len(configs) == 1 and replicas == 1
            runs = []
            for k in range(args.repeat):
                log(f"ingest [{name}] run {k + 1}/{args.repeat}")
                runs.append(ingest_once(procs, args, replicas, pin, f"i{replicas}r{k}"))
                s = runs[-1]
                log(
                    f"  bare {s['bare']['rps']:.0f}/s p99 {s['bare']['p99_ms']:.1f} ms; receiver {s['receiver']['rps']:.0f}/s "
                    f"p99 {s['receiver']['p99_ms']:.1f} ms; ratio {s['ratio']:.1%}; durable {s['receiver']['durability']['ok']}"
                )
            report["ingest"][name] = {
                "pinned": pin,
                "replicas": replicas,
                "runs": runs,
                "summary": summarize_ingest(runs),
            }
    if "pipeline" in args.only:
        report["pipeline"] = {}
        for name, replicas in configs:
            entry: dict[str, Any] = {"replicas": replicas}
            for mode, rate, conns in (("steady", args.steady_rate, 16), ("burst", None, 32)):
                runs = []
                for k in range(args.repeat):
                    log(f"pipeline [{name}] {mode} run {k + 1}/{args.repeat} ({args.pipeline_calls} calls)")
                    runs.append(
                        pipeline_once(
                            procs,
                            args,
                            replicas,
                            f"p{replicas}{mode[0]}{k}",
                            n=args.pipeline_calls,
                            rate=rate,
                            connections=conns,
                        )
                    )
                    r = runs[-1]
                    log(
                        f"  {r['calls_per_s']:.1f} calls/s, p50 {r['latency_ms']['p50']:.1f} ms, p99 {r['latency_ms']['p99']:.1f} ms, "
                        f"delivered {r['delivered']}/{r['calls']}"
                    )
                entry[mode] = {"runs": runs, "summary": summarize_pipeline(runs)}
            report["pipeline"][name] = entry
    if "rss" in args.only:
        log(f"rss: {args.rss_calls} calls")
        report["rss"] = rss_once(procs, args, args.replicas, "rss")
    if "ratelimit" in args.only:
        report["ratelimit"] = []
        for k, shape in enumerate(ratelimit.shapes(args.quick)):
            log(f"rate budget: {shape.name}, {shape.seconds:g}s, backlog {shape.backlog()} calls")
            report["ratelimit"].append(ratelimit_once(procs, args, shape, f"rl{k}"))
            r = report["ratelimit"][-1]
            log(
                f"  {r['use']:.1%} of the allowed rate, {r['starts_per_s']:.2f} starts/s, 429s {r['share_429']:.2%}"
            )
    if len(configs) == 2:
        one, many = configs[0][0], configs[1][0]
        scaling: dict[str, Any] = {}
        if "ingest" in report:
            a, b = report["ingest"][one]["summary"], report["ingest"][many]["summary"]
            scaling["ingest req/s"] = (
                f"{a['receiver_rps']:.0f} -> {b['receiver_rps']:.0f} (x{b['receiver_rps'] / a['receiver_rps']:.2f})"
            )
        if "pipeline" in report:
            a, b = report["pipeline"][one]["burst"]["summary"], report["pipeline"][many]["burst"]["summary"]
            scaling["pipeline calls/s (burst)"] = (
                f"{a['calls_per_s']:.1f} -> {b['calls_per_s']:.1f} (x{b['calls_per_s'] / a['calls_per_s']:.2f})"
            )
        report["scaling"] = scaling
    report["machine"]["loadavg_end"] = os.getloadavg()[0]
    report["targets"] = evaluate(report)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="kallglot-bench-"))
    procs = Procs(workdir)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    log(f"work dir {workdir}")
    code = 0
    cluster = None
    try:
        if args.database == "pg":
            log("starting a private PostgreSQL cluster (fsync on, synchronous_commit on)")
            cluster = pgcluster.PrivateCluster().start()
            args.database, args.pg_cluster = cluster.url, cluster
        report = run(args, procs)
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps(report, indent=2, default=str))
        print_report(report)
        print(f"results: {out}")
    except HarnessError as exc:
        log(f"harness error: {exc}")
        code = 2
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    finally:
        procs.stop_all()
        if cluster is not None:
            cluster.stop()
        if args.keep or code:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
