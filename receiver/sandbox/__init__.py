"""A faithful local Kallglot API emulator for the quick start, tests and benchmarks."""

from __future__ import annotations

from .app import Sandbox
from .config import DEV_API_KEY, DEV_WEBHOOK_SECRET, SandboxConfig

__all__ = ["DEV_API_KEY", "DEV_WEBHOOK_SECRET", "Sandbox", "SandboxConfig"]
