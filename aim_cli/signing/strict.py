"""Strict reading of a bundle's JSON, where every byte may be hostile: the one error a malformed
bundle or payload raises, typed field access and bounded JSON parsing."""

from __future__ import annotations

import json

from aim_cli.errors import IntegrityError


def malformed(why: str) -> IntegrityError:
    return IntegrityError(
        f"malformed signature bundle: {why}",
        "the bundle is damaged or not a model_signing bundle; sign the version again",
    )


def field(obj, name: str, kind: type, where: str):
    if not isinstance(obj, dict):
        raise malformed(f"{where} is not an object")
    value = obj.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise malformed(f"{where}.{name} is missing or not a {kind.__name__}")
    return value


def load_json(data: bytes, where: str):
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise malformed(f"{where} is not JSON") from None
