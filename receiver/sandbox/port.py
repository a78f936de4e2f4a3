"""What the sandbox's routes need from the ``Sandbox`` (``app.py``), so that ``api.py`` and
``admin.py`` depend on this small protocol and ``app.py`` on them, never the reverse."""

from __future__ import annotations

from typing import Any, Protocol

from .config import SandboxConfig
from .state import Analysis, SandboxState


class SandboxPort(Protocol):
    """The sandbox as its routes see it: config, state and the few actions they trigger."""

    config: SandboxConfig
    state: SandboxState

    def analysis_started(self, analysis: Analysis) -> None: ...

    def provider(self, session_id: str) -> dict[str, Any] | None: ...

    def end_call(self, session_id: str) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...

    def update_config(self, patch: dict[str, Any]) -> None: ...

    def reset(self) -> None: ...
