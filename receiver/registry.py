"""Handler types by name: built-ins are named by import string, so ``receiver`` never imports ``handlers``.

A ``type`` that is not a built-in name may be the import path of a third-party module that follows
the same convention (``Options`` + ``build``), e.g. ``type: mycompany.kallglot_teams``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any, cast

from pydantic import ValidationError

from receiver.delivery import Handler, HandlerContext, HandlerOptions
from receiver.fanout import Subscription, SubscriptionError
from receiver.settings import ConfigError

BUILTIN = {
    "file": "handlers.file",
    "webhook": "handlers.webhook",
    "slack": "handlers.slack",
    "hubspot": "handlers.hubspot",
    "salesforce": "handlers.salesforce",
    "s3": "handlers.s3",
    "nats": "handlers.nats_jetstream",
}


def _module(handler_type: str) -> ModuleType:
    path = BUILTIN.get(handler_type, handler_type)
    if handler_type not in BUILTIN and "." not in handler_type:
        raise ConfigError(f"unknown handler type {handler_type!r}; built-in types: {', '.join(BUILTIN)}")
    try:
        module = importlib.import_module(path)
    except ImportError as exc:
        raise ConfigError(f"handler type {handler_type!r} cannot be imported: {exc}") from None
    if not hasattr(module, "Options") or not hasattr(module, "build"):
        raise ConfigError(f"handler type {handler_type!r} does not define Options and build()")
    return module


def parse_subscriptions(raw: Sequence[Any]) -> list[Subscription]:
    """Validate the ``handlers`` list into each handler's subscription (its options, ``when``
    compiled); ConfigError names the handler and the option."""
    parsed: list[Subscription] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        label = f"handlers[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"invalid setting {label}: must be a mapping with name and type")
        name, handler_type = entry.get("name"), entry.get("type")
        if isinstance(name, str):
            label = f"handlers[{index}] ({name})"
        if not isinstance(handler_type, str) or not handler_type:
            raise ConfigError(f"invalid setting {label}.type: required (one of {', '.join(BUILTIN)})")
        options_cls = cast(type[HandlerOptions], _module(handler_type).Options)
        try:
            options = options_cls.model_validate(entry)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "options"
            raise ConfigError(f"invalid setting {label}.{where}: {error['msg']}") from None
        if options.name in seen:
            raise ConfigError(f"invalid setting {label}.name: {options.name!r} is used twice")
        seen.add(options.name)
        try:
            parsed.append(Subscription(options))
        except SubscriptionError as exc:
            raise ConfigError(f"invalid setting {label}: {exc}") from None
    return parsed


def parse_handlers(raw: Sequence[Any]) -> list[HandlerOptions]:
    """The validated options of each handler (see ``parse_subscriptions``)."""
    return [subscription.options for subscription in parse_subscriptions(raw)]


def build_handler(options: HandlerOptions, context: HandlerContext) -> Handler:
    module = _module(options.type)
    return cast(Handler, module.build(options, context))
