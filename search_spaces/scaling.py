"""Channel rounding and width multipliers: the one place where relative widths become integers.

Reference networks and search spaces describe stages *relatively* (a base channel count, an
expansion ratio, a width multiplier). :func:`stage_blocks` expands one stage into blocks with
absolute, rounded channels; :func:`build_spec` uses it to resolve a whole recipe (the reference
networks) into an :class:`ArchSpec`, and ``search_spaces.spaces`` uses it to decode every stage of a
sampled architecture (rounding its stem and head with :func:`make_divisible`). Nothing downstream
(costs, builder, lookup tables) rounds again; NetAdapt's width-multiplier baseline
(``netadapt.channels.scale_widths``) rounds with :func:`make_divisible`, and its proposals move widths
in steps of the same divisor.

The rounding rule is the TF/torchvision ``make_divisible`` (round to the nearest multiple of the
divisor, never below it, and never more than 10 % below the exact value). The width rule is the TF
reference's (ported as timm's ``tf_mobilenetv3_*``), which reproduces the MobileNetV3 paper's
Table 9: every block's input/output width is scaled, the expansion width is
``make_divisible(scaled_input × expansion_ratio)``, the stem stays at its base width below 0.75, and
the post-pool hidden layer is never shrunk (``finegrain_classification_mode``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from search_spaces.spec import (
    Activation,
    ArchSpec,
    Block,
    BlockKind,
    Head,
    SEConfig,
    Stem,
)

DIVISOR = 8


def make_divisible(value: float, divisor: int = DIVISOR, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor`` (TF/torchvision rule).

    Args:
        value: the exact channel count, e.g. ``base × width``.
        divisor: the multiple to round to (8 in the reference implementations).
        min_value: lower bound; defaults to ``divisor``.

    Returns:
        The rounded channel count, never below ``min_value`` and never more than 10 % below ``value``.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def se_channels(spec_se: SEConfig, in_channels: int, expand_channels: int) -> int:
    """Squeeze width of an SE layer under the network's SE rule."""
    base = expand_channels if spec_se.base.value == "expand" else in_channels
    return make_divisible(base * spec_se.ratio, spec_se.divisor, min_value=1 if spec_se.divisor == 1 else None)


@dataclass(frozen=True)
class StageRecipe:
    """``repeats`` identical layers, the first with ``stride``; widths are relative (pre-multiplier).

    ``expand_ratio`` multiplies the (scaled) input width of each layer; ``out_channels`` is the
    unscaled output width (fractional when a search space scales a baseline width by a filter
    ratio). ``residual`` None means "whenever shapes allow" (stride 1, in == out). Expanded into
    blocks by :func:`stage_blocks`.
    """

    kind: BlockKind
    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: float
    out_channels: float
    se: bool = False
    activation: Activation = Activation.RELU
    residual: bool | None = None


def stage_blocks(stage: StageRecipe, in_channels: int, width: float = 1.0) -> list[Block]:
    """The blocks of one stage, with absolute (rounded) widths.

    Args:
        stage: the stage, its widths relative.
        in_channels: absolute width entering the stage (the previous stage's output).
        width: multiplier on ``stage.out_channels``; the output width is
            ``make_divisible(stage.out_channels * width)`` (evaluated in that order).

    Returns:
        ``stage.repeats`` blocks (none for 0): only the first strides; each MBConv expands its own
        input width by ``expand_ratio`` (rounded), a depthwise-separable block keeps its input width,
        a regular conv has no expansion (``expand_channels == out_channels``); a block has a residual
        when ``stage.residual`` allows it (None: always) and its stride is 1 and in == out.
    """
    out = make_divisible(stage.out_channels * width)
    blocks: list[Block] = []
    prev = in_channels
    for r in range(stage.repeats):
        stride = stage.stride if r == 0 else 1
        if stage.kind is BlockKind.DSCONV:
            expand = prev
        elif stage.kind is BlockKind.CONV:
            expand = out
        else:
            expand = make_divisible(prev * stage.expand_ratio)
        can_skip = stride == 1 and prev == out
        residual = can_skip if stage.residual is None else (stage.residual and can_skip)
        blocks.append(
            Block(
                kind=stage.kind,
                in_channels=prev,
                expand_channels=expand,
                out_channels=out,
                kernel_size=stage.kernel_size,
                stride=stride,
                se=stage.se,
                activation=stage.activation,
                residual=residual,
            )
        )
        prev = out
    return blocks


@dataclass(frozen=True)
class NetRecipe:
    """A network before width rounding. See :func:`build_spec`."""

    stem_channels: int
    stem_activation: Activation
    stages: Sequence[StageRecipe]
    head_conv_channels: int  # scaled with the width (0 = none)
    head_hidden_channels: int  # kept at its base value for widths ≤ 1 (0 = none)
    head_activation: Activation
    dropout: float = 0.2
    se: SEConfig = SEConfig()
    fix_stem_below: float = 0.75  # stem keeps its base width when width < this
    head_conv_min_width: float = 0.0  # head conv is never scaled below this width (MobileNetV2: 1.0)


def scaled_stem(channels: int, width: float, fix_below: float = 0.75) -> int:
    """The stem's width at a width multiplier: its base width below ``fix_below``, else scaled."""
    return channels if width < fix_below else make_divisible(channels * width)


def scaled_head(conv: int, hidden: int, width: float, conv_min_width: float = 0.0) -> tuple[int, int]:
    """The last stage's (pre-pool conv, post-pool hidden) widths at a width multiplier (0 = none): the
    conv is scaled (never below ``conv_min_width``), the hidden layer only above width 1."""
    head_conv = make_divisible(conv * max(width, conv_min_width)) if conv else 0
    return head_conv, make_divisible(hidden * width) if hidden and width > 1.0 else hidden


def build_spec(
    recipe: NetRecipe,
    width: float = 1.0,
    *,
    name: str = "",
    resolution: int = 224,
    in_channels: int = 3,
    num_classes: int = 1000,
) -> ArchSpec:
    """Resolve a recipe at a width multiplier into an :class:`ArchSpec` with absolute channels."""
    if not 0.0 < width <= 8.0:
        raise ValueError(f"width multiplier must be in (0, 8], got {width}")
    stem_out = scaled_stem(recipe.stem_channels, width, recipe.fix_stem_below)
    blocks: list[Block] = []
    prev = stem_out
    for stage in recipe.stages:
        blocks.extend(stage_blocks(stage, prev, width))
        prev = blocks[-1].out_channels if blocks else prev
    head_conv, hidden = scaled_head(recipe.head_conv_channels, recipe.head_hidden_channels, width,
                                    recipe.head_conv_min_width)
    return ArchSpec(
        stem=Stem(out_channels=stem_out, kernel_size=3, stride=2, activation=recipe.stem_activation),
        blocks=tuple(blocks),
        head=Head(
            conv_channels=head_conv,
            hidden_channels=hidden,
            activation=recipe.head_activation,
            dropout=recipe.dropout,
        ),
        resolution=resolution,
        in_channels=in_channels,
        num_classes=num_classes,
        se=recipe.se,
        name=name,
    )
