"""The bare baseline of the ingest benchmark: a Starlette app that only answers 202.

It runs on exactly the uvicorn options ``kallglot-receiver serve`` uses (see ``cmd_serve`` in
``receiver/cli.py``): one worker, uvicorn's automatic loop/http choice (uvloop + httptools with
uvicorn[standard]), no access log, no server/date headers. The request body is not read: the
baseline is "HTTP parsing + routing + a response", the floor any webhook endpoint pays.

    .venv/bin/python bench/bare_app.py --port 8081
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def webhook(request: Request) -> Response:
    return Response(status_code=202)


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(
    routes=[
        Route("/webhooks/kallglot", webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", healthz, methods=["GET"]),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    # Mirrors receiver.cli.cmd_serve: same options, nothing else (timeout_graceful_shutdown is the
    # receiver's default RECEIVER_SHUTDOWN_GRACE_SECONDS=20).
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
        server_header=False,
        date_header=False,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
