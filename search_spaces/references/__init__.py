"""Reference architectures, shipped as JSON files beside this module and registered by name."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from search_spaces.spec import ArchSpec, SpecError, load
from search_spaces.suggest import unknown_name

_FOLDER = Path(__file__).parent


@lru_cache(maxsize=None)
def names() -> tuple[str, ...]:
    """Registered reference names, sorted."""
    return tuple(sorted(p.stem for p in _FOLDER.glob("*.json")))


@lru_cache(maxsize=None)
def get(name: str) -> ArchSpec:
    """The reference architecture ``name`` (224², 1000 classes)."""
    if name not in names():
        raise SpecError("", unknown_name("architecture", name, names()))
    return load(_FOLDER / f"{name}.json")
