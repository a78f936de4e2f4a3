"""What ``serve`` tells the operator at start beside the listeners' banner: a loud warning when no
handler is configured (every call would spend a Kallglot credit for nothing)."""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("receiver")


def warn_without_handlers(handlers: list[dict[str, Any]]) -> None:
    if handlers:
        return
    message = (
        "WARNING: no handler is configured (RECEIVER_HANDLERS / handlers: in RECEIVER_CONFIG_FILE):"
        " every ended call spends a Kallglot credit and its result is delivered nowhere"
    )
    print(f"\n{'!' * 100}\n{message}\n{'!' * 100}\n", file=sys.stderr, flush=True)
    log.warning("receiver.no_handlers")
