"""Two uvicorn servers in one event loop: the public listener and the admin listener.

One lifespan (the public app's: store, client, workers), one signal handling, one drain. On
SIGTERM/SIGINT a single deadline, ``RECEIVER_SHUTDOWN_GRACE_SECONDS`` from the signal, bounds
everything: both listeners stop accepting and finish their in-flight requests while the workers
finish theirs, all at the same time; what is still running near the deadline is cancelled (the
workers give their claims back), and then the resources close. A second signal stops waiting for
in-flight requests.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from receiver.settings import ConfigError, Settings
from receiver.slowclients import guarded_protocol

log = logging.getLogger("receiver")
T = TypeVar("T")


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    setting: str  # named when the port cannot be bound
    host_setting: str = "--host"  # named when the host is not an address of this machine


def bind(address: Address) -> socket.socket:
    """Listen on ``address`` now (before the lifespan), so a busy port stops start-up with one line."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        sock = socket.create_server((address.host, address.port), family=family, backlog=2048)
    except socket.gaierror as exc:
        raise ConfigError(
            f"invalid setting {address.host_setting}: cannot resolve {address.host!r}: {exc.strerror}"
        ) from None
    except OSError as exc:
        # create_server re-raises a failed name lookup (negative EAI_* errno) as a plain OSError
        host_problem = exc.errno == errno.EADDRNOTAVAIL or (exc.errno or 0) < 0
        setting = address.host_setting if host_problem else address.setting
        raise ConfigError(
            f"invalid setting {setting}: cannot listen on {address.host}:{address.port}: "
            f"{exc.strerror or exc}"
        ) from None
    sock.set_inheritable(True)
    return sock


def make_server(
    app: Any,
    settings: Settings,
    *,
    lifespan: Literal["on", "off"] = "off",
    protocol: type[asyncio.Protocol] = AutoHTTPProtocol,
) -> uvicorn.Server:
    """A uvicorn server for one listener, with the slow-client guards around uvicorn's HTTP
    ``protocol`` (httptools when installed, else h11); start it with
    ``await server.startup(sockets=[bind(...)])`` (tests do the same on port 0)."""
    guarded = guarded_protocol(
        protocol,
        timeout=settings.body_timeout_seconds,
        max_connections=settings.max_connections,
    )
    config = uvicorn.Config(
        app,
        http=guarded,
        ws="none",
        lifespan=lifespan,
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
        # The guard answers a JSON 503 beyond max_connections; uvicorn's own (plain-text) check
        # counts ">=", so it sits one above to stay behind the guard.
        limit_concurrency=settings.max_connections + 1,
        timeout_graceful_shutdown=0,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    return server


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on the event loop ``uvicorn.run`` would choose: uvloop when installed (it is, with
    ``uvicorn[standard]``), else asyncio's, on which ingest measured about a quarter of the rate."""
    loop_factory = uvicorn.Config(app="", loop="auto").get_loop_factory()  # app is never loaded here
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


async def serve(
    public_app: Starlette,
    admin_app: Starlette,
    settings: Settings,
    sockets: tuple[socket.socket, socket.socket],
) -> int:
    """Run both listeners until SIGTERM/SIGINT; return the exit code (0 after a drained shutdown)."""
    from receiver.app import Runtime

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    servers = [make_server(public_app, settings), make_server(admin_app, settings)]

    def on_signal() -> None:
        if stop.is_set():  # a second signal: stop waiting for in-flight requests
            for server in servers:
                server.force_exit = True
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        async with public_app.router.lifespan_context(public_app):
            for server, sock in zip(servers, sockets, strict=True):
                await server.startup(sockets=[sock])
            log.info("listeners.started", extra={"public": _name(sockets[0]), "admin": _name(sockets[1])})
            await stop.wait()
            deadline = time.monotonic() + settings.shutdown_grace_seconds
            runtime: Runtime = public_app.state.runtime
            await asyncio.gather(
                runtime.drain(deadline), *(_drain_http(s, deadline, settings) for s in servers)
            )
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


async def _drain_http(server: uvicorn.Server, deadline: float, settings: Settings) -> None:
    """Stop accepting, let in-flight requests finish until the deadline, cancel the rest."""
    reserve = min(2.0, 0.2 * settings.shutdown_grace_seconds)
    # uvicorn reads its drain timeout from the config when it shuts down: the shared deadline sets it.
    server.config.timeout_graceful_shutdown = max(0.0, deadline - reserve - time.monotonic())  # type: ignore[assignment]
    await server.shutdown()


def _name(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"
