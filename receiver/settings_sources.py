"""Where settings come from besides the environment: the YAML file (``${VAR}`` substituted) and
``NAME_FILE`` secret files; how a field is named as an environment variable; ``ConfigError``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from receiver.secret_settings import SecretFileError, SecretFileSource

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A setting is wrong or missing; the message is one line that names it."""


def field_env_name(field_name: str, info: FieldInfo | None) -> str:
    """The environment variable of a field: the first of its alias choices, else its name."""
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        if isinstance(first, str):
            return first
    return field_name


def aliases(settings_cls: type[BaseSettings]) -> dict[str, str]:
    """Field name by every accepted spelling (field name or environment variable), lower-cased."""
    out: dict[str, str] = {}
    for name, info in settings_cls.model_fields.items():
        out[name.lower()] = name
        out[field_env_name(name, info).lower()] = name
    return out


def substitute_env(value: Any, environ: Mapping[str, str]) -> Any:
    """Replace ``${VAR}`` in every string of a parsed YAML value; an unset variable is an error.

    Substituting into the parsed values, not the text, keeps a value verbatim whatever it holds
    (`` #``, ``: ``, a newline, a leading ``*``, ``&`` or ``!`` would otherwise change the file).
    """
    memo: dict[int, Any] = {}

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return _VAR.sub(repl, item)
        if not isinstance(item, list | dict):
            return item
        if id(item) in memo:  # YAML anchors share (and may nest) one object
            return memo[id(item)]
        if isinstance(item, list):
            out_list: list[Any] = []
            memo[id(item)] = out_list
            out_list.extend(walk(element) for element in item)
            return out_list
        out_dict: dict[Any, Any] = {}
        memo[id(item)] = out_dict
        for key, element in item.items():
            out_dict[key] = walk(element)
        return out_dict

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ConfigError(f"RECEIVER_CONFIG_FILE refers to ${{{name}}}, which is not set")
        return environ[name]

    return walk(value)


class SecretFiles(SecretFileSource):
    """``NAME_FILE`` for every secret setting (receiver/secret_settings.py), errors as ConfigError."""

    def __call__(self) -> dict[str, Any]:
        try:
            return super().__call__()
        except SecretFileError as exc:
            raise ConfigError(str(exc)) from None


class YamlFileSource(PydanticBaseSettingsSource):
    """The YAML file named by RECEIVER_CONFIG_FILE, lowest priority above the defaults."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("RECEIVER_CONFIG_FILE")
        if not path:
            return {}
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"invalid setting RECEIVER_CONFIG_FILE: cannot read {path}: {exc.strerror}"
            ) from None
        try:
            data = substitute_env(yaml.safe_load(text), os.environ)
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"invalid setting RECEIVER_CONFIG_FILE: {path} is not valid YAML ({one_line(exc)})"
            ) from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"invalid setting RECEIVER_CONFIG_FILE: {path} must hold a mapping")
        names = aliases(self.settings_cls)
        out: dict[str, Any] = {}
        for key, value in data.items():
            name = names.get(str(key).lower())
            if name is None:
                raise ConfigError(f"invalid setting RECEIVER_CONFIG_FILE: unknown key {key!r} in {path}")
            out[name] = value
        return out


def one_line(error: Exception) -> str:
    return " ".join(str(error).split())
