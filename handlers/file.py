"""The ``file`` handler: JSON lines appended to a file, or one JSON file per delivery in a directory.

In directory mode the file is ``{delivery id}.json``, written atomically, so a retry or a replay
overwrites the same file. In JSON-lines mode delivery is at-least-once: a crash between the write
and the acknowledgement may repeat a line, which carries the delivery ``id`` to deduplicate on.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from receiver.delivery import (
    Delivery,
    HandlerContext,
    HandlerOptions,
    PermanentDeliveryError,
    TransientDeliveryError,
)


class Options(HandlerOptions):
    type: Literal["file"] = "file"
    path: str = Field(
        min_length=1, description="a .jsonl file, or a directory (ending in /) for one file each"
    )


class FileHandler:
    def __init__(self, options: Options) -> None:
        self.name = options.name
        self._path = Path(options.path)
        self._directory = options.path.endswith("/") or self._path.is_dir()
        self._lock = asyncio.Lock()

    async def deliver(self, delivery: Delivery) -> None:
        line = json.dumps(delivery.document, separators=(",", ":"), sort_keys=True)
        try:
            if self._directory:
                await asyncio.to_thread(self._write_file, delivery.id, line)
            else:
                async with self._lock:
                    await asyncio.to_thread(self._append, line)
        except PermissionError as exc:
            raise PermanentDeliveryError(f"cannot write {self._path}: permission denied") from exc
        except OSError as exc:
            raise TransientDeliveryError(f"cannot write {self._path}: {exc.strerror}") from exc

    def _append(self, line: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())

    def _write_file(self, delivery_id: str, content: str) -> None:
        self._path.mkdir(parents=True, exist_ok=True)
        target = self._path / f"{delivery_id}.json"
        temporary = target.with_suffix(".json.tmp")
        with temporary.open("w", encoding="utf-8") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)

    async def probe(self) -> None:
        folder = self._path if self._directory else self._path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermanentDeliveryError(f"cannot create {folder}: {exc.strerror}") from exc
        if not os.access(folder, os.W_OK):
            raise PermanentDeliveryError(f"{folder} is not writable")

    async def aclose(self) -> None:
        return None


def build(options: HandlerOptions, context: HandlerContext) -> FileHandler:
    assert isinstance(options, Options)
    return FileHandler(options)
