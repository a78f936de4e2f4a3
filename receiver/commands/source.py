"""Where operator commands get their answers: the admin API of a running service (``--url`` or
``RECEIVER_ADMIN_URL``, token from ``RECEIVER_ADMIN_TOKEN``) or the local database.

Both return the admin API's JSON shapes, so printing does not care which one answered. The local
database is opened read-only for reads (SQLite ``mode=ro``, PostgreSQL read-only transactions):
a command run beside a live ``serve`` cannot take, release or change its work.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
from starlette.exceptions import HTTPException

from receiver.commands.errors import FAILED, USAGE, CommandFailed
from receiver.settings import ConfigError, Settings, load_settings
from receiver.store import Store, StoreError, StoreUnavailable

T = TypeVar("T")


class Source(Protocol):
    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET an admin path; None when it is not found."""

    def post(self, path: str, body: dict[str, Any]) -> Any: ...


def choose(url: str | None) -> Source:
    base = url or os.environ.get("RECEIVER_ADMIN_URL")
    if base:
        token = os.environ.get("RECEIVER_ADMIN_TOKEN")
        if not token:
            raise CommandFailed("RECEIVER_ADMIN_TOKEN must be set to use --url / RECEIVER_ADMIN_URL", USAGE)
        return HttpSource(base, token)
    return LocalSource()


class HttpSource:
    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base}{path}"
        try:
            response = httpx.request(method, url, headers=self._headers, timeout=30, **kwargs)
        except httpx.HTTPError as exc:
            raise CommandFailed(f"cannot reach {self.base}: {type(exc).__name__}") from None
        if response.status_code == 404 and method == "GET" and path.startswith("/admin/calls/"):
            return None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            code = USAGE if response.status_code in (400, 401, 403, 404, 422) else FAILED
            raise CommandFailed(f"{url}: HTTP {response.status_code}: {message}", code)
        return response.json()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._send("GET", path, params={k: v for k, v in (params or {}).items() if v is not None})

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._send("POST", path, json=body)


class LocalSource:
    """The admin API's answers computed from the database named by RECEIVER_DATABASE_URL."""

    def __init__(self) -> None:
        try:
            self.settings: Settings = load_settings()
        except ConfigError as exc:
            raise CommandFailed(str(exc), USAGE) from None

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        from receiver.commands import local

        return self.run(lambda store: local.get(self, store, path, params or {}), write=False)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        from receiver.commands import local

        return self.run(lambda store: local.post(self, store, path, body), write=True)

    def run(self, fn: Callable[[Store], Awaitable[T]], *, write: bool) -> T:
        url = self.settings.database_url.get_secret_value()
        # A read never creates the database: a wrong directory must not leave an empty file.
        if not write and url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
            path = url.removeprefix("sqlite:///")
            hint = "run from the service's directory, or use --url"
            raise CommandFailed(f"no database at {path} (RECEIVER_DATABASE_URL; {hint})", USAGE)
        return asyncio.run(with_store(self.settings, fn, read_only=not write))


async def with_store(settings: Settings, fn: Callable[[Store], Awaitable[T]], *, read_only: bool) -> T:
    """Open the database (never creating a missing SQLite file unless writing), run ``fn``, close;
    every database problem becomes one line."""
    from receiver.store import open_store

    url = settings.database_url.get_secret_value()
    try:
        store = open_store(url, read_only=read_only)
    except StoreError as exc:
        raise CommandFailed(str(exc), USAGE) from None
    try:
        await store.open()
        if not await store.ready():
            raise CommandFailed("the database is not migrated: run 'kallglot-receiver migrate'", USAGE)
        return await fn(store)
    except StoreUnavailable as exc:
        raise CommandFailed(f"the database is unavailable (RECEIVER_DATABASE_URL): {exc}") from None
    except StoreError as exc:
        raise CommandFailed(f"database error (RECEIVER_DATABASE_URL): {exc}") from None
    except HTTPException as exc:  # the admin API's own validation, reused locally
        raise CommandFailed(str(exc.detail), USAGE if exc.status_code != 404 else FAILED) from None
    finally:
        await store.close()
