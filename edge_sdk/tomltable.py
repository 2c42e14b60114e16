"""Strict reading of TOML data files (target profiles, calibration recipes): typed reads, and any
unknown, missing or ill-typed key is one error naming the file and the key."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any

from edge_sdk.errors import EdgeSdkError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list", dict: "a table"}


def read_toml(path: Path, error: type[EdgeSdkError]) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc}); fix the file") from None
    except FileNotFoundError:
        raise error(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory; pass the .toml file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise error(f"{path}: cannot be read ({reason}); check the file") from None


class Table:
    """One TOML table of `path`. Reads check types and remember the key; `done()` then refuses
    every key nobody read. Errors are `error(...)` and end with 'see <hint>'."""

    def __init__(self, data: Any, where: str, path: Path, *, error: type[EdgeSdkError], hint: str):
        self.error, self.hint = error, hint
        if not isinstance(data, dict):
            raise error(f"{path}: '{where}' must be a table; see {hint}")
        self.data, self.where, self.path = data, where, path
        self.seen: set[str] = set()

    def fail(self, key: str, what: str) -> EdgeSdkError:
        name = f"{self.where}.{key}" if self.where else key
        return self.error(f"{self.path}: key '{name}' {what}; see {self.hint}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, *, required: bool = False) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise self.fail(key, "is missing")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"must be {_names(kinds)}, not a boolean")
        if not isinstance(value, kinds):
            raise self.fail(key, f"must be {_names(kinds)}, got {type(value).__name__}")
        return value

    def get_list(self, key: str, item: type | tuple[type, ...], *, required: bool = False) -> tuple:
        values = self.get(key, list, [], required=required)
        items = item if isinstance(item, tuple) else (item,)
        for value in values:
            if isinstance(value, bool) or not isinstance(value, items):
                raise self.fail(key, f"must be a list of {_names(items)}")
        return tuple(values)

    def numbers(self, key: str, default: tuple[float, ...]) -> tuple[float, ...]:
        values = self.get(key, list, list(default))
        if not values or any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
            raise self.fail(key, "must be a non-empty list of numbers")
        return tuple(float(v) for v in values)

    def choice(
        self, key: str, choices: Iterable[str | Enum], default: str | None = None, *, required: bool = False
    ) -> str | None:
        value = self.get(key, str, default, required=required)
        allowed = [c.value if isinstance(c, Enum) else c for c in choices]
        if value is not None and value not in allowed:
            raise self.fail(key, f"is '{value}', expected one of: {', '.join(allowed)}")
        return value

    def pair(self, key: str) -> tuple[int, int] | None:
        values = self.get_list(key, int)
        if not values:
            return None
        if len(values) != 2:
            raise self.fail(key, "must be a list of two integers [h, w]")
        return (values[0], values[1])

    def sub(self, key: str, *, required: bool = True) -> Table:
        self.seen.add(key)
        name = f"{self.where}.{key}" if self.where else key
        if key not in self.data:
            if required:
                raise self.fail(key, "is missing (a table)")
            return Table({}, name, self.path, error=self.error, hint=self.hint)
        return Table(self.data[key], name, self.path, error=self.error, hint=self.hint)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.fail(unknown[0], "is not a known key")


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(_NAMES.get(k, k.__name__) for k in kinds)
