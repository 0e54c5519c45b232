"""Typed, validated config sections, declared by the component that reads them.

A component declares its settings as a dataclass deriving from :class:`Section`, each field made
with :func:`option`, which stores its help text (shown by ``fastad config``) and its allowed
values. Constructing a section validates it: :func:`coerce` turns each raw YAML / ``--set`` /
keyword value into the field's type or raises a one-line :class:`UserError` that names the key,
the value and what is allowed. ``fastad.config`` composes the sections into one ``Config``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Sequence

from fastad.errors import UserError


def option(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    length: int | None = None,
) -> Any:
    """A dataclass field with help text and bounds (bounds apply to numbers and list items)."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "length": length}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Section:
    """Base of a config section: a dataclass whose fields are :func:`option` s.

    ``section`` (a class attribute) is the YAML section name, used in error messages. Every value is
    checked and converted when the dataclass is constructed, whether from a YAML file or in Python.
    """

    section: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            key = f"{self.section}.{f.name}" if self.section else f.name
            setattr(self, f.name, coerce(key, getattr(self, f.name), f, hints[f.name]))


def describe(field: dataclasses.Field, tp: Any) -> str:
    """Human description of what a field allows, e.g. 'a float > 0' or 'one of: cosine, step'."""
    m = field.metadata
    if m.get("choices") is not None:
        return "one of: " + ", ".join(str(c) for c in m["choices"])
    base, optional = _unwrap_optional(tp)
    origin = typing.get_origin(base)
    if origin is list:
        (item,) = typing.get_args(base)
        n = f"{m['length']} " if m.get("length") else ""
        text = f"a list of {n}{_type_name(item)}s{_bounds(m)}"
    else:
        text = f"{_article(_type_name(base))} {_type_name(base)}{_bounds(m)}"
    return text + (" or null" if optional else "")


ECHO_LIMIT = 80  # characters of a user's value that an error message repeats


def shown(value: Any, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` for an error message, shortened to about ``limit`` characters (a 100,000-character
    value must not become a 100,000-character message); line breaks never survive (one line per error)."""
    text = value if isinstance(value, str) else None
    r = repr(value)
    if len(r) <= limit:
        return r
    if text is not None:
        return repr(text[: limit - 10]) + f"... ({len(text):,} characters)"
    return r[: limit - 3] + "..."


def coerce(key: str, value: Any, field: dataclasses.Field, tp: Any) -> Any:
    """Return ``value`` converted to the field's type, or raise a one-line UserError."""

    def fail() -> UserError:
        items = value if isinstance(value, (list, tuple)) else [value]
        note = " (not a finite number)" if any(_non_finite(v) for v in items) else ""
        return UserError(f"config key '{key}': got {shown(value)}{note}; expected {describe(field, tp)}")

    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise fail()
    if typing.get_origin(base) is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise fail()
        (item_tp,) = typing.get_args(base)
        out = [_scalar(v, item_tp) for v in value]
        if any(v is _BAD for v in out) or not all(_in_bounds(v, field.metadata) for v in out):
            raise fail()
        if field.metadata.get("length") and len(out) != field.metadata["length"]:
            raise fail()
        return out
    out = _scalar(value, base)
    if out is _BAD or not _in_bounds(out, field.metadata):
        raise fail()
    choices = field.metadata.get("choices")
    if choices is not None and out not in choices:
        raise fail()
    return out


_BAD = object()


def _non_finite(v: Any) -> bool:
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, str):
        try:
            return not math.isfinite(float(v))
        except ValueError:
            return False
    return False


def _scalar(value: Any, tp: Any) -> Any:
    if tp is bool:
        return value if isinstance(value, bool) else _BAD
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if tp is float:
        if isinstance(value, bool):
            return _BAD
        if isinstance(value, (int, float)):
            out = float(value)
            return out if math.isfinite(out) else _BAD
        if isinstance(value, str):
            # PyYAML reads '1e-6' (no dot) as a string; the paper's config file has such values.
            try:
                out = float(value)
            except ValueError:
                return _BAD
            return out if math.isfinite(out) else _BAD
        return _BAD
    if tp is str:
        return value if isinstance(value, str) else _BAD
    raise TypeError(f"unsupported config field type {tp!r}")


def _in_bounds(v: Any, m: dict) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return True
    return not (
        (m.get("ge") is not None and v < m["ge"])
        or (m.get("gt") is not None and v <= m["gt"])
        or (m.get("le") is not None and v > m["le"])
        or (m.get("lt") is not None and v >= m["lt"])
    )


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string"}.get(tp, str(tp))


def _article(name: str) -> str:
    return "an" if name[0] in "aeiou" else "a"


def _bounds(m: dict) -> str:
    parts = [f"{op} {m[k]:g}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if m.get(k) is not None]
    return (" " + " and ".join(parts)) if parts else ""
