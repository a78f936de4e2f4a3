"""The event loop ``serve`` runs on: the one uvicorn.run would pick (uvloop with uvicorn[standard])."""

from __future__ import annotations

import asyncio

import uvloop

from receiver.listeners import run


def test_serve_runs_on_uvloop_when_installed() -> None:
    # On asyncio's own loop the receiver ingests at about a quarter of the rate (bench/README.md):
    # the loop `serve` runs on must be uvicorn's choice, not asyncio.run's default.
    async def loop_type() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert issubclass(run(loop_type()), uvloop.Loop)


def test_run_returns_the_coroutines_result_and_closes_its_loop() -> None:
    async def main() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    loop = run(main())
    assert loop.is_closed()
