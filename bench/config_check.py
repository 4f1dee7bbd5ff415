"""Checking user-supplied parameter sections against the defaults that declare them."""

from __future__ import annotations

from bench.errors import BenchError


def type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def check_value(default: object, value: object, where: str) -> None:
    if default is None:  # optional setting without a fixed type (e.g. subset)
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, list)
        if ok and default:
            for i, item in enumerate(value):
                check_value(default[0], item, f"{where}[{i}]")
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        expected = "list" if isinstance(default, (list, tuple)) else type_name(default)
        raise BenchError(f"{where} must be {expected}, got {type_name(value)} {value!r}")


def key_path(where: str, key: object) -> str:
    """where.key for plain names; where[<repr>] for anything else (so messages stay on one line)."""
    return f"{where}.{key}" if isinstance(key, str) and key.isidentifier() else f"{where}[{key!r}]"


def check_section(defaults: dict, given: dict | None, where: str) -> dict:
    """Return defaults updated with `given`; unknown keys and wrong types are one-line errors."""
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise BenchError(f"{where} must be a mapping, got {type_name(given)} {given!r}")
    for key, value in given.items():
        if key not in defaults:
            raise BenchError(f"unknown parameter {key_path(where, key)}; valid keys: {', '.join(sorted(defaults)) or '(none)'}")
        check_value(defaults[key], value, f"{where}.{key}")
    return {**defaults, **given}
