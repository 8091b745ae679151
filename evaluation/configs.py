"""Configuration dataclasses from plain data: strict (an unknown key is an error naming it), each
default defined once on the dataclass and read from there by the CLIs and experiment files."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")

__all__ = ["RunConfig", "default", "from_dict"]


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


class RunConfig:
    """Saving and loading for the configuration dataclass of a run directory (search, NetAdapt).

    A subclass sets ``SECTION`` (its key in ``config.json``), ``WHAT`` (the run's name in messages),
    ``ERROR`` (the exception it raises) and ``NESTED`` (dataclass fields stored as dicts).
    """

    SECTION: ClassVar[str]
    WHAT: ClassVar[str]
    ERROR: ClassVar[type[Exception]] = ValueError
    NESTED: ClassVar[dict[str, type]] = {}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str | None = None):
        """From :meth:`to_dict`'s form; an unknown key (here or in a nested section) is ``ERROR``."""
        return from_dict(cls, d, where=where or f"{cls.SECTION} config", error=cls.ERROR, nested=cls.NESTED)

    @classmethod
    def load(cls, run_dir):
        """The configuration a run directory was started with (what ``--resume`` continues)."""
        from evaluation.rundir import CONFIG_FILE, load_config

        where = f"{run_dir}/{CONFIG_FILE}"
        return cls.from_dict(load_config(run_dir, cls.SECTION, cls.WHAT, cls.ERROR), where)
