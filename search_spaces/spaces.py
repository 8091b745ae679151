"""Search spaces: decode a vector of named decisions into an :class:`ArchSpec`.

The MnasNet factorized hierarchical space (MnasNet §4.1, Fig. 4): the network is a stem, then 7
blocks, each repeating one searched layer N_i times (only the first layer strides), then a head.
Per block the search picks

* ConvOp: regular conv, depthwise-separable conv, MBConv with expansion 3 or 6;
* kernel size 3 or 5; squeeze-and-excite ratio 0 or 0.25; skip: identity residual or none;
* output filters 0.75 / 1.0 / 1.25 × the baseline width of the block;
* layers −1 / 0 / +1 relative to the baseline repeats (a stride-2 block keeps at least one layer;
  a stride-1 block may disappear, as MnasNet-A1's 320-filter block does in MobileNetV3-Large).

The baseline widths and repeats are MnasNet-A1's (16, 24, 40, 80, 112, 160, 320 × 1, 2, 3, 4, 2, 3, 1),
so A1 is the centre of the space and is encoded exactly. (The paper states the filter choice relative
to MobileNetV2's widths; A1's 40/80/112 are not reachable from V2's 32/64/96 with those ratios, so we
centre the space on the architecture the search actually produced.) The MobileNetV3 variant adds an
activation choice {relu, hswish} per block, SE on the expansion (¼, hard-sigmoid), the 16-filter
h-swish stem and the efficient last stage. A base width multiplier scales every baseline width for
searches of small models. Paper: Tan et al., "MnasNet", CVPR 2019, https://arxiv.org/abs/1807.11626
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from search_spaces.scaling import StageRecipe, scaled_head, scaled_stem, stage_blocks
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
)
from search_spaces.suggest import unknown_name
from search_spaces.walk import LayerKey, block_key, head_layers, stem_key

CONV_OPS = ("conv", "dsconv", "mbconv3", "mbconv6")
KERNELS = (3, 5)
SE_RATIOS = (0.0, 0.25)
SKIPS = ("identity", "none")
FILTER_RATIOS = (0.75, 1.0, 1.25)
LAYER_DELTAS = (-1, 0, 1)
ACTIVATIONS = ("relu", "hswish")

_OP_KINDS = {"conv": BlockKind.CONV, "dsconv": BlockKind.DSCONV, "mbconv3": BlockKind.MBCONV,
             "mbconv6": BlockKind.MBCONV}
_OP_EXPANSIONS = {"mbconv3": 3, "mbconv6": 6}  # of each layer's input width; the others have none


@dataclass(frozen=True)
class Decision:
    """One categorical decision: a name like ``b3.kernel`` and its allowed values, in order."""

    name: str
    choices: tuple


@dataclass(frozen=True)
class BlockBaseline:
    out_channels: int
    repeats: int
    stride: int


# MnasNet-A1's blocks after the stem (Fig. 7).
A1_BASELINE = (
    BlockBaseline(16, 1, 1),
    BlockBaseline(24, 2, 2),
    BlockBaseline(40, 3, 2),
    BlockBaseline(80, 4, 2),
    BlockBaseline(112, 2, 1),
    BlockBaseline(160, 3, 2),
    BlockBaseline(320, 1, 1),
)


class FactorizedSpace:
    """An MnasNet-style factorized hierarchical space (see the module docstring).

    Args:
        name: registry name.
        baseline: per-block baseline width, repeats and stride.
        variant: ``"mnasnet"`` (ReLU, 32-filter stem, SE of the input with a sigmoid, classic
            1×1-conv-1280-then-pool head) or ``"mobilenetv3"`` (activation searched, 16-filter
            h-swish stem, SE of the expansion with a hard sigmoid, efficient last stage 960/1280).
        base_width: multiplier on every baseline width (e.g. 0.5 for small models).
        resolution, in_channels, num_classes: input and output of the decoded networks.
    """

    def __init__(
        self,
        name: str,
        baseline: Sequence[BlockBaseline] = A1_BASELINE,
        variant: str = "mnasnet",
        base_width: float = 1.0,
        resolution: int = 224,
        in_channels: int = 3,
        num_classes: int = 1000,
    ):
        if variant not in ("mnasnet", "mobilenetv3"):
            raise ValueError(f"variant must be 'mnasnet' or 'mobilenetv3', got {variant!r}")
        if not 0.1 <= base_width <= 4.0:
            raise ValueError(f"base_width must be in [0.1, 4], got {base_width}")
        self.name = name
        self.baseline = tuple(baseline)
        self.variant = variant
        self.base_width = base_width
        self.resolution = resolution
        self.in_channels = in_channels
        self.num_classes = num_classes
        per_block = [
            ("op", CONV_OPS),
            ("kernel", KERNELS),
            ("se", SE_RATIOS),
            ("skip", SKIPS),
            ("filters", FILTER_RATIOS),
            ("layers", LAYER_DELTAS),
        ]
        if variant == "mobilenetv3":
            per_block.append(("act", ACTIVATIONS))
        self._per_block = tuple(per_block)
        self._decisions = tuple(
            Decision(f"b{i}.{field}", choices) for i in range(len(self.baseline)) for field, choices in per_block
        )

    # -- the interface ----------------------------------------------------------------------
    def decisions(self) -> tuple[Decision, ...]:
        """All decisions in a fixed order (the RL controller emits one token per decision)."""
        return self._decisions

    @property
    def size(self) -> int:
        """Number of decision vectors (architectures, counting duplicates of removed blocks)."""
        return math.prod(len(d.choices) for d in self._decisions)

    def with_io(self, *, resolution: int | None = None, in_channels: int | None = None,
                num_classes: int | None = None) -> "FactorizedSpace":
        """The same space for another input/output (e.g. a dataset's channels and classes)."""
        return FactorizedSpace(
            self.name, self.baseline, self.variant, self.base_width,
            resolution or self.resolution, in_channels or self.in_channels, num_classes or self.num_classes,
        )

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """A uniformly random decision vector."""
        return {d.name: d.choices[int(rng.integers(len(d.choices)))] for d in self._decisions}

    def decode(self, params: Mapping[str, Any]) -> ArchSpec:
        """Turn a full decision vector into a spec. Unknown or missing decisions raise SpecError."""
        self._check(params)
        v3 = self.variant == "mobilenetv3"
        # stem and last stage by the reference networks' width rule (search_spaces.scaling): V3's
        # 16-filter stem stays at 16 below width 0.75 (MobileNetV3 §5.2, Table 9), MnasNet's 32 scales
        stem_out = scaled_stem(16, self.base_width) if v3 else scaled_stem(32, self.base_width, fix_below=0.0)
        stem = Stem(out_channels=stem_out, kernel_size=3, stride=2,
                    activation=Activation.HSWISH if v3 else Activation.RELU)
        blocks: list[Block] = []
        prev = stem_out
        for i, base in enumerate(self.baseline):
            d = {f: params[f"b{i}.{f}"] for f in ("op", "kernel", "se", "skip", "filters", "layers")}
            blocks_here = self._stage_blocks(
                prev, base, d["op"], d["kernel"], d["se"], d["skip"], d["filters"], d["layers"],
                params[f"b{i}.act"] if v3 else "relu",
            )
            blocks.extend(blocks_here)
            if blocks_here:
                prev = blocks_here[-1].out_channels
        if not blocks:
            raise SpecError("", "decoded architecture has no blocks")
        if v3:
            conv, hidden = scaled_head(960, 1280, self.base_width)
            head = Head(conv_channels=conv, hidden_channels=hidden, activation=Activation.HSWISH, dropout=0.2)
            se = SEConfig(ratio=0.25, base=SEBase.EXPAND, divisor=8, gate=Gate.HSIGMOID)
        else:
            conv, hidden = scaled_head(1280, 0, self.base_width)
            head = Head(conv_channels=conv, hidden_channels=hidden, activation=Activation.RELU, dropout=0.2)
            se = SEConfig(ratio=0.25, base=SEBase.INPUT, divisor=1, gate=Gate.SIGMOID)
        return ArchSpec(stem=stem, blocks=tuple(blocks), head=head, resolution=self.resolution,
                        in_channels=self.in_channels, num_classes=self.num_classes, se=se, name="")

    def encode(self, spec: ArchSpec) -> dict[str, Any]:
        """The decision vector that decodes to exactly ``spec`` (name aside); SpecError if none does."""
        fields = [f for f, _ in self._per_block]
        choice_lists = [c for _, c in self._per_block]
        target = spec.blocks
        stem_out = self.decode(self._first_vector()).stem.out_channels

        memo: dict[tuple[int, int, int], list[dict] | None] = {}

        def search(i: int, pos: int, prev: int) -> list[dict] | None:
            if i == len(self.baseline):
                return [] if pos == len(target) else None
            if (i, pos, prev) in memo:
                return memo[(i, pos, prev)]
            memo[(i, pos, prev)] = None
            for combo in itertools.product(*choice_lists):
                values = dict(zip(fields, combo))
                blocks = self._stage_blocks(prev, self.baseline[i], values["op"], values["kernel"], values["se"],
                                            values["skip"], values["filters"], values["layers"],
                                            values.get("act", "relu"))
                if tuple(target[pos:pos + len(blocks)]) != tuple(blocks):
                    continue
                rest = search(i + 1, pos + len(blocks), blocks[-1].out_channels if blocks else prev)
                if rest is not None:
                    memo[(i, pos, prev)] = [values] + rest
                    break
            return memo[(i, pos, prev)]

        found = search(0, 0, stem_out)
        if found is None:
            raise SpecError("blocks", f"architecture {spec.name or spec.arch_id} is not in search space {self.name}")
        params = {f"b{i}.{k}": v for i, values in enumerate(found) for k, v in values.items()}
        decoded = self.decode(params)
        if decoded.replace(name=spec.name) != spec:
            raise SpecError("", f"architecture {spec.name or spec.arch_id} differs from space {self.name} "
                                "outside the searched blocks (stem, head, SE rule or input/output)")
        return params

    def layer_keys(self, resolution: int | None = None) -> set[LayerKey]:
        """Every layer key any architecture of this space can have (what a full latency table holds).

        A dynamic programme over blocks: the keys of block i depend only on its input channels and
        resolution, so the enumeration is linear in the number of blocks, not exponential.
        """
        size = resolution or self.resolution
        ref = self.decode(self._first_vector())
        keys = {stem_key(ref, size)}
        size = (size - 1) // ref.stem.stride + 1
        states = {(ref.stem.out_channels, size)}
        fields = [f for f, _ in self._per_block]
        choice_lists = [c for _, c in self._per_block]
        for base in self.baseline:
            reached = set()
            for prev, size in states:
                for combo in itertools.product(*choice_lists):
                    v = dict(zip(fields, combo))
                    blocks = self._stage_blocks(prev, base, v["op"], v["kernel"], v["se"], v["skip"], v["filters"],
                                                v["layers"], v.get("act", "relu"))
                    s = size
                    for b in blocks:
                        keys.add(block_key(ref.se, b, s))
                        s = (s - 1) // b.stride + 1
                    reached.add((blocks[-1].out_channels, s) if blocks else (prev, size))
            states = reached
        for channels, size in states:
            keys.update(key for _, key, _ in head_layers(ref.head, channels, size, self.num_classes))
        return keys

    def seeds(self) -> dict[str, dict[str, Any]]:
        """Known architectures of this space, as decision vectors (enqueued first by a search)."""
        return dict(self._seeds)

    def stage(self, index: int, in_channels: int, values: Mapping[str, Any]) -> list[Block]:
        """The layers searched block ``index`` decodes to, given its input width and its decisions
        (``values`` without the ``b{index}.`` prefix: ``{"op": "mbconv6", "kernel": 5, ...}``); what
        :meth:`decode` does for one block (the supernet reads the space through this)."""
        v = values
        return self._stage_blocks(in_channels, self.baseline[index], v["op"], v["kernel"], v["se"], v["skip"],
                                  v["filters"], v["layers"], v.get("act", "relu"))

    # -- internals --------------------------------------------------------------------------
    def _first_vector(self) -> dict[str, Any]:
        return {d.name: d.choices[0] for d in self._decisions}

    def _check(self, params: Mapping[str, Any]) -> None:
        names = {d.name for d in self._decisions}
        unknown = sorted(set(params) - names)
        if unknown:
            raise SpecError(unknown[0], f"unknown decision for space {self.name}")
        for d in self._decisions:
            if d.name not in params:
                raise SpecError(d.name, "missing decision")
            if params[d.name] not in d.choices or isinstance(params[d.name], bool):
                raise SpecError(d.name, f"must be one of {', '.join(map(str, d.choices))}, got {params[d.name]!r}")

    def _stage_blocks(self, prev, base, op, kernel, se, skip, filters, layers, act) -> list[Block]:
        """One searched block (MnasNet's "block": a stage of repeated layers) of the decisions given."""
        stage = StageRecipe(
            kind=_OP_KINDS[op],
            repeats=max(1 if base.stride > 1 else 0, base.repeats + layers),
            kernel_size=kernel,
            stride=base.stride,
            expand_ratio=_OP_EXPANSIONS.get(op, 1),
            out_channels=base.out_channels * filters,  # × base_width below: the product's order is fixed
            se=se > 0,
            activation=Activation(act),
            residual=skip == "identity",
        )
        return stage_blocks(stage, prev, self.base_width)

    @property
    def _seeds(self) -> dict[str, dict[str, Any]]:
        def vector(rows):
            fields = [f for f, _ in self._per_block]
            return {f"b{i}.{f}": v for i, row in enumerate(rows) for f, v in zip(fields, row)}

        if self.variant == "mnasnet":
            # MnasNet-A1 (Fig. 7): op, kernel, se, skip, filters, layers.
            return {"mnasnet_a1": vector([
                ("dsconv", 3, 0.0, "none", 1.0, 0),
                ("mbconv6", 3, 0.0, "identity", 1.0, 0),
                ("mbconv3", 5, 0.25, "identity", 1.0, 0),
                ("mbconv6", 3, 0.0, "identity", 1.0, 0),
                ("mbconv6", 3, 0.25, "identity", 1.0, 0),
                ("mbconv6", 5, 0.25, "identity", 1.0, 0),
                ("mbconv6", 3, 0.0, "identity", 1.0, 0),
            ])}
        # The MobileNetV3-Large-like point: MnasNet-A1's layout (Fig. 7) in the MobileNetV3 variant:
        # V3-Large's activations, SE placement, 16-filter stem with a residual first layer, efficient
        # last stage and no 320 block. Every layer has V3-Large's kind, kernel, stride and widths, and
        # an expansion at least V3-Large's (A1's ×6 where V3-Large has 64/72, 240/200/184/184), so
        # NetAdapt, which only shrinks, can reach MobileNetV3-Large from it.
        large_like = vector([
            ("dsconv", 3, 0.0, "identity", 1.0, 0, "relu"),
            ("mbconv6", 3, 0.0, "identity", 1.0, 0, "relu"),
            ("mbconv3", 5, 0.25, "identity", 1.0, 0, "relu"),
            ("mbconv6", 3, 0.0, "identity", 1.0, 0, "hswish"),
            ("mbconv6", 3, 0.25, "identity", 1.0, 0, "hswish"),
            ("mbconv6", 5, 0.25, "identity", 1.0, 0, "hswish"),
            ("mbconv6", 3, 0.0, "identity", 1.0, -1, "hswish"),
        ][: len(self.baseline)])
        if len(self.baseline) != 7:
            return {}
        # at another base width the same decisions are that layout at that width multiplier (the small
        # space: ×0.5, as mobilenetv3_large_050 scales MobileNetV3-Large)
        suffix = "" if self.base_width == 1.0 else f"_{round(self.base_width * 100):03d}"
        return {f"mobilenetv3_large_like{suffix}": large_like}


_SPACES = {
    "mnasnet": lambda: FactorizedSpace("mnasnet", variant="mnasnet"),
    "mobilenetv3": lambda: FactorizedSpace("mobilenetv3", variant="mobilenetv3"),
    "mobilenetv3_small": lambda: FactorizedSpace("mobilenetv3_small", variant="mobilenetv3", base_width=0.5),
}
SPACE_NAMES = tuple(_SPACES)


def get_space(name: str, **io) -> FactorizedSpace:
    """A registered space by name; ``io`` may set resolution, in_channels, num_classes."""
    if name not in _SPACES:
        raise SpecError("", unknown_name("search space", name, SPACE_NAMES))
    space = _SPACES[name]()
    return space.with_io(**io) if io else space
