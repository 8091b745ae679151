"""Configuration dataclasses from plain data: strict (an unknown key is an error naming it), each
default defined once on the dataclass and read from there by the CLIs and experiment files."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["default", "from_dict"]


def default(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls`` (a factory is called); KeyError if it has none."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def from_dict(cls: type[T], d: Any, *, where: str, error: type[Exception] = ValueError,
              nested: dict[str, type] | None = None) -> T:
    """``cls(**d)``, refusing what is not a dict and any key that is not a field of ``cls``.

    ``nested`` maps field names to dataclasses whose values arrive as dicts (read with the same rules).
    ``where`` names the source in messages (a file, or a file and a section).
    """
    if not isinstance(d, dict):
        raise error(f"{where}: expected an object of {cls.__name__} fields, got {type(d).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(known), key=str)
    if unknown:
        raise error(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(known)}")
    values = dict(d)
    for name, sub in (nested or {}).items():
        if name in values:
            values[name] = from_dict(sub, values[name], where=f"{where}: {name}", error=error)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(f"{where}: missing key {missing[0]!r}")
    return cls(**values)
