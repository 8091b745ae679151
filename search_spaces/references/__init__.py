"""Reference architectures, shipped as JSON files beside this module and registered by name.

:func:`names` lists the classification networks (224², 1000 classes); :func:`dense_names` the dense
ones (MobileNetV3 with LR-ASPP, R-ASPP or SSDLite, in ``dense/``). :func:`get` reads either.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from search_spaces.spec import ArchSpec, SpecError, load
from search_spaces.suggest import unknown_name

_FOLDER = Path(__file__).parent
_DENSE_FOLDER = _FOLDER / "dense"


@lru_cache(maxsize=None)
def names() -> tuple[str, ...]:
    """Registered reference names, sorted."""
    return tuple(sorted(p.stem for p in _FOLDER.glob("*.json")))


@lru_cache(maxsize=None)
def dense_names() -> tuple[str, ...]:
    """Registered dense-prediction reference names, sorted."""
    return tuple(sorted(p.stem for p in _DENSE_FOLDER.glob("*.json")))


@lru_cache(maxsize=None)
def get(name: str) -> ArchSpec:
    """The reference architecture ``name``: a classification network (224², 1000 classes) or a dense one."""
    if name in names():
        return load(_FOLDER / f"{name}.json")
    if name in dense_names():
        return load(_DENSE_FOLDER / f"{name}.json")
    raise SpecError("", unknown_name("architecture", name, names() + dense_names()))
