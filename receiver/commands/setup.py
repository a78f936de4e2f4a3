"""``migrate`` and ``check-config`` (with ``--probe``: each destination's and Kallglot's credentials)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from receiver.commands.sandbox import sandbox_settings
from receiver.settings import Settings, load_settings


async def _with_store(fn: Any) -> Any:
    from receiver.store import open_store

    settings = load_settings()
    store = open_store(settings.database_url.get_secret_value())
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    from receiver.store import StoreError

    async def run(store: Any) -> int:
        count: int = await store.migrate()
        return count

    try:
        count = asyncio.run(_with_store(run))
    except StoreError as exc:
        print(f"kallglot-receiver: cannot migrate (RECEIVER_DATABASE_URL): {exc}", file=sys.stderr)
        return 1
    print(f"migrations applied: {count}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from receiver.registry import parse_handlers

    settings = sandbox_settings(8080) if args.sandbox else load_settings()
    settings.require_production_secrets()
    options = parse_handlers(settings.handlers)
    print(json.dumps(settings.masked(), indent=2, default=str))
    if args.probe:
        return asyncio.run(_probe(settings, options))
    return 0


async def _probe(settings: Settings, options: Sequence[Any]) -> int:
    from receiver.delivery import DeliveryError, HandlerContext
    from receiver.kallglot import HandlerReader, KallglotClient, KallglotError
    from receiver.metrics import Metrics
    from receiver.registry import build_handler

    key = settings.kallglot_api_key.get_secret_value() if settings.kallglot_api_key else ""
    client = KallglotClient(settings.kallglot_api_url, key, metrics=Metrics())
    context = HandlerContext(kallglot=HandlerReader(client), clock=time.time, sleep=asyncio.sleep)
    failed = 0
    try:
        for option in options:
            handler = build_handler(option, context)
            try:
                await handler.probe()
                print(f"probe {option.name} ({option.type}): ok")
            except DeliveryError as exc:
                failed += 1
                print(f"probe {option.name} ({option.type}): FAILED: {exc.reason}")
            finally:
                await handler.aclose()
        try:
            await client.get_session("sess_probe")
            print("probe kallglot: ok")
        except KallglotError as exc:
            ok = exc.status == 404
            failed += 0 if ok else 1
            print(f"probe kallglot: {'ok (key accepted)' if ok else 'FAILED: ' + exc.reason}")
    finally:
        await client.aclose()
    return 1 if failed else 0
