"""The one layer walk: an :class:`ArchSpec` in, one :class:`LayerShape` per layer out.

Everything that needs to know how a network is laid out reads this walk and nothing else:
cost counting (:mod:`search_spaces.cost`), latency lookup-table keys (:mod:`latency.lut`), the torch
builder (:mod:`search_spaces.builder`) and the paper-style tables of the CLI and reports. A layer is
the unit the MobileNetV3 paper's Tables 1–2 have a row for: the stem, each block, the head's 1×1 conv,
the pool, the hidden 1×1 (NBN) layer and the classifier.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

from search_spaces.scaling import se_channels
from search_spaces.spec import Activation, ArchSpec, BlockKind, Gate


class LayerKind(str, enum.Enum):
    CONV = "conv"  # k×k conv, BN, activation [, SE] [, residual]
    DSCONV = "dsconv"  # depthwise k×k, BN, act [, SE], 1×1 projection, BN [, residual]
    MBCONV = "mbconv"  # [1×1 expand, BN, act], depthwise k×k, BN, act [, SE], 1×1 projection, BN
    POOL = "pool"  # global average pool
    LINEAR = "linear"  # 1×1 conv with bias on a 1×1 map (= fully connected), optional activation


class Role(str, enum.Enum):
    STEM = "stem"
    BLOCK = "block"
    HEAD_CONV = "head_conv"
    POOL = "pool"
    HEAD_HIDDEN = "head_hidden"
    CLASSIFIER = "classifier"


@dataclass(frozen=True)
class LayerKey:
    """Everything about a layer that changes its kernels, hence its latency (a lookup-table key)."""

    kind: LayerKind
    resolution: int  # input height = width, pixels
    in_channels: int
    expand_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    se_channels: int  # 0 = no squeeze-and-excite
    se_gate: Gate | None
    activation: Activation | None  # None = linear output (pool, classifier)
    residual: bool
    batchnorm: bool

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.value if isinstance(v, enum.Enum) else v
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "LayerKey":
        d = dict(d)
        d["kind"] = LayerKind(d["kind"])
        d["se_gate"] = Gate(d["se_gate"]) if d.get("se_gate") else None
        d["activation"] = Activation(d["activation"]) if d.get("activation") else None
        return cls(**d)


@dataclass(frozen=True)
class LayerShape:
    """One layer of a resolved network, with where it came from.

    Attributes:
        index: position in the walk (0 = stem).
        role: what part of the network this is.
        block_index: index into ``spec.blocks`` for block layers, else None.
        key: the shape and operator (see :class:`LayerKey`).
        dropout: dropout probability applied before this layer (classifier only).
    """

    index: int
    role: Role
    block_index: int | None
    key: LayerKey
    dropout: float = 0.0

    @property
    def out_resolution(self) -> int:
        """Output height = width ('same' padding, so ⌈in / stride⌉; 1 after pooling)."""
        if self.key.kind in (LayerKind.POOL, LayerKind.LINEAR):
            return 1
        return (self.key.resolution - 1) // self.key.stride + 1


def walk(spec: ArchSpec, resolution: int | None = None) -> list[LayerShape]:
    """Resolve ``spec`` into its layers, in order.

    Args:
        spec: the architecture.
        resolution: input height = width in pixels; defaults to ``spec.resolution`` (the
            deployment resolution). Training may walk the same spec at a smaller one.
    """
    size = spec.resolution if resolution is None else resolution
    layers: list[LayerShape] = []

    def add(role, block_index, dropout=0.0, **key):
        layers.append(LayerShape(len(layers), role, block_index, LayerKey(**key), dropout))

    stem = spec.stem
    add(
        Role.STEM,
        None,
        kind=LayerKind.CONV,
        resolution=size,
        in_channels=spec.in_channels,
        expand_channels=stem.out_channels,
        out_channels=stem.out_channels,
        kernel_size=stem.kernel_size,
        stride=stem.stride,
        se_channels=0,
        se_gate=None,
        activation=stem.activation,
        residual=False,
        batchnorm=True,
    )
    size = layers[-1].out_resolution
    channels = stem.out_channels
    for i, b in enumerate(spec.blocks):
        se_ch = se_channels(spec.se, b.in_channels, b.expand_channels) if b.se else 0
        add(
            Role.BLOCK,
            i,
            kind=LayerKind(b.kind.value),
            resolution=size,
            in_channels=b.in_channels,
            expand_channels=b.expand_channels,
            out_channels=b.out_channels,
            kernel_size=b.kernel_size,
            stride=b.stride,
            se_channels=se_ch,
            se_gate=spec.se.gate if b.se else None,
            activation=b.activation,
            residual=b.residual,
            batchnorm=True,
        )
        size = layers[-1].out_resolution
        channels = b.out_channels

    head = spec.head
    if head.conv_channels:
        add(
            Role.HEAD_CONV,
            None,
            kind=LayerKind.CONV,
            resolution=size,
            in_channels=channels,
            expand_channels=head.conv_channels,
            out_channels=head.conv_channels,
            kernel_size=1,
            stride=1,
            se_channels=0,
            se_gate=None,
            activation=head.activation,
            residual=False,
            batchnorm=True,
        )
        channels = head.conv_channels
    add(
        Role.POOL,
        None,
        kind=LayerKind.POOL,
        resolution=size,
        in_channels=channels,
        expand_channels=channels,
        out_channels=channels,
        kernel_size=size,
        stride=1,
        se_channels=0,
        se_gate=None,
        activation=None,
        residual=False,
        batchnorm=False,
    )
    if head.hidden_channels:
        add(
            Role.HEAD_HIDDEN,
            None,
            kind=LayerKind.LINEAR,
            resolution=1,
            in_channels=channels,
            expand_channels=head.hidden_channels,
            out_channels=head.hidden_channels,
            kernel_size=1,
            stride=1,
            se_channels=0,
            se_gate=None,
            activation=head.activation,
            residual=False,
            batchnorm=False,
        )
        channels = head.hidden_channels
    add(
        Role.CLASSIFIER,
        None,
        dropout=head.dropout,
        kind=LayerKind.LINEAR,
        resolution=1,
        in_channels=channels,
        expand_channels=spec.num_classes,
        out_channels=spec.num_classes,
        kernel_size=1,
        stride=1,
        se_channels=0,
        se_gate=None,
        activation=None,
        residual=False,
        batchnorm=False,
    )
    return layers
