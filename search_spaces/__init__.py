"""Architectures as data: the spec, the layer walk, costs, reference networks, search spaces.

Importing this package does not import torch; the torch builder and ONNX export live in
:mod:`search_spaces.builder` and :mod:`search_spaces.export`.
"""

from __future__ import annotations

from pathlib import Path

from search_spaces import references
from search_spaces.cost import Cost, CostReport, count, layer_cost
from search_spaces.scaling import make_divisible
from search_spaces.spec import (
    Activation,
    ArchSpec,
    Block,
    BlockKind,
    Gate,
    Head,
    SEBase,
    SEConfig,
    SpecError,
    Stem,
    load,
    loads,
)
from search_spaces.suggest import did_you_mean
from search_spaces.walk import LayerKey, LayerKind, LayerShape, Role, walk


def resolve_arch(name_or_path: str | Path) -> ArchSpec:
    """A registered reference name (classification or dense), or the path of a spec JSON file."""
    text = str(name_or_path)
    known = references.names() + references.dense_names()
    if text in known:
        return references.get(text)
    path = Path(text)
    if path.suffix == ".json" or path.exists() or "/" in text:
        return load(path)
    raise SpecError(
        "", f"{text!r} is neither a registered architecture nor a spec file{did_you_mean(text, known)}; "
            f"known: {', '.join(known)}"
    )


__all__ = [
    "Activation", "ArchSpec", "Block", "BlockKind", "Cost", "CostReport", "Gate", "Head", "LayerKey",
    "LayerKind", "LayerShape", "Role", "SEBase", "SEConfig", "SpecError", "Stem", "count", "layer_cost",
    "load", "loads", "make_divisible", "references", "resolve_arch", "walk",
]
