"""Secret settings: the minimum key length, and ``NAME_FILE`` for every secret (CONTRACT §9 "Secrets").

An empty HMAC key verifies whatever anyone signs with an empty key, and a short one is guessed:
every secret that authenticates a request (inbound signing secrets, the admin token, the outbound
webhook secret, the telephony tokens) must hold at least ``MIN_KEY_BYTES`` bytes of key, checked
when the settings are read so a bad one stops start-up with one line naming the setting.

- ``SigningSecret``: a ``SecretStr`` whose UTF-8 bytes are the key (Kallglot webhook secrets, the
  admin token, carrier auth tokens). Use it as a field type; the check comes with it.
- ``StandardWebhooksSecret``: ``whsec_<base64>``, whose decoded bytes are the key.
- ``SecretFileSource``: for every field typed ``SecretStr`` (alone, optional or in a list), the
  environment variable ``NAME_FILE`` names a file holding the value (trailing newline stripped),
  as Kubernetes and Docker mount secrets. ``NAME`` and ``NAME_FILE`` together are an error.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

MIN_KEY_BYTES = 16


class SecretFileError(Exception):
    """``NAME_FILE`` cannot be used; the message is one line naming it (never the secret)."""


def check_key(key: bytes) -> None:
    """ValueError unless ``key`` holds at least MIN_KEY_BYTES bytes (the message never holds it)."""
    if not key:
        raise ValueError("is empty")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"is shorter than {MIN_KEY_BYTES} bytes of key")


def signing_secret(value: SecretStr) -> SecretStr:
    """The check of ``SigningSecret``: the UTF-8 bytes of the value are the key."""
    check_key(value.get_secret_value().encode("utf-8", "surrogatepass"))
    return value


def standard_webhooks_secret(value: SecretStr) -> SecretStr:
    """The check of ``StandardWebhooksSecret``: ``whsec_`` + base64 of at least 16 bytes."""
    from receiver.signing import standard_webhooks_key

    check_key(standard_webhooks_key(value.get_secret_value()))
    return value


SigningSecret = Annotated[SecretStr, AfterValidator(signing_secret)]
StandardWebhooksSecret = Annotated[SecretStr, AfterValidator(standard_webhooks_secret)]


def is_secret(annotation: Any) -> bool:
    """True when a field's type is SecretStr, optionally, annotated or as list items."""
    if isinstance(annotation, type) and issubclass(annotation, SecretStr):
        return True
    if typing.get_origin(annotation) is None and not isinstance(annotation, types.UnionType):
        return False
    return any(is_secret(arg) for arg in typing.get_args(annotation))


def read_secret_file(variable: str, path: str) -> str:
    """The secret held in ``path`` without its trailing newline; SecretFileError naming ``variable``."""
    try:
        return Path(path).read_bytes().decode("utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SecretFileError(f"invalid setting {variable}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SecretFileError(f"invalid setting {variable}: {path} is not UTF-8 text") from None


class SecretFileSource(PydanticBaseSettingsSource):
    """``NAME_FILE`` for every secret field; ranks just below the variable ``NAME`` itself."""

    def __init__(self, settings_cls: type[BaseSettings], env_name: Callable[[str, FieldInfo], str]) -> None:
        super().__init__(settings_cls)
        self._env_name = env_name

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, info in self.settings_cls.model_fields.items():
            if not is_secret(info.annotation):
                continue
            variable = self._env_name(name, info)
            path = os.environ.get(f"{variable}_FILE")
            if path is None:
                continue
            if variable in os.environ:
                raise SecretFileError(
                    f"invalid setting {variable}_FILE: set {variable} or {variable}_FILE, not both"
                )
            out[name] = read_secret_file(f"{variable}_FILE", path)
        return out


def secret_from_env(variable: str) -> str | None:
    """``variable`` from the environment, or the content of ``variable_FILE`` (for CLI commands
    that read one secret without loading every setting); SecretFileError when both are set."""
    path = os.environ.get(f"{variable}_FILE")
    if path is None:
        return os.environ.get(variable)
    if variable in os.environ:
        raise SecretFileError(f"invalid setting {variable}_FILE: set {variable} or {variable}_FILE, not both")
    return read_secret_file(f"{variable}_FILE", path)


def file_variable_set(variable: str) -> bool:
    """True when ``variable`` or ``variable_FILE`` is in the environment (the sandbox's defaults yield)."""
    return variable in os.environ or f"{variable}_FILE" in os.environ
