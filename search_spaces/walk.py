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
from search_spaces.spec import Activation, ArchSpec, Block, Gate, Head, SEConfig


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


def block_key(se: SEConfig, block: Block, resolution: int) -> LayerKey:
    """The key of one block at an input resolution, under the network's SE rule."""
    return LayerKey(
        kind=LayerKind(block.kind.value),
        resolution=resolution,
        in_channels=block.in_channels,
        expand_channels=block.expand_channels,
        out_channels=block.out_channels,
        kernel_size=block.kernel_size,
        stride=block.stride,
        se_channels=se_channels(se, block.in_channels, block.expand_channels) if block.se else 0,
        se_gate=se.gate if block.se else None,
        activation=block.activation,
        residual=block.residual,
        batchnorm=True,
    )


def _plain_key(kind: LayerKind, resolution: int, cin: int, cout: int, kernel: int, stride: int,
               activation: Activation | None, batchnorm: bool) -> LayerKey:
    return LayerKey(kind=kind, resolution=resolution, in_channels=cin, expand_channels=cout, out_channels=cout,
                    kernel_size=kernel, stride=stride, se_channels=0, se_gate=None, activation=activation,
                    residual=False, batchnorm=batchnorm)


def stem_key(spec: ArchSpec, resolution: int) -> LayerKey:
    stem = spec.stem
    return _plain_key(LayerKind.CONV, resolution, spec.in_channels, stem.out_channels, stem.kernel_size,
                      stem.stride, stem.activation, True)


def head_layers(head: Head, channels: int, resolution: int, num_classes: int) -> list[tuple[Role, LayerKey, float]]:
    """(role, key, dropout) of the head's layers, given the last block's output channels and size."""
    out: list[tuple[Role, LayerKey, float]] = []
    if head.conv_channels:
        out.append((Role.HEAD_CONV, _plain_key(LayerKind.CONV, resolution, channels, head.conv_channels, 1, 1,
                                               head.activation, True), 0.0))
        channels = head.conv_channels
    out.append((Role.POOL, _plain_key(LayerKind.POOL, resolution, channels, channels, resolution, 1, None, False),
                0.0))
    if head.hidden_channels:
        out.append((Role.HEAD_HIDDEN, _plain_key(LayerKind.LINEAR, 1, channels, head.hidden_channels, 1, 1,
                                                 head.activation, False), 0.0))
        channels = head.hidden_channels
    out.append((Role.CLASSIFIER, _plain_key(LayerKind.LINEAR, 1, channels, num_classes, 1, 1, None, False),
                head.dropout))
    return out


def walk(spec: ArchSpec, resolution: int | None = None) -> list[LayerShape]:
    """Resolve ``spec`` into its layers, in order.

    Args:
        spec: the architecture.
        resolution: input height = width in pixels; defaults to ``spec.resolution`` (the
            deployment resolution). Training may walk the same spec at a smaller one.
    """
    size = spec.resolution if resolution is None else resolution
    layers = [LayerShape(0, Role.STEM, None, stem_key(spec, size))]
    size = layers[-1].out_resolution
    channels = spec.stem.out_channels
    for i, b in enumerate(spec.blocks):
        layers.append(LayerShape(len(layers), Role.BLOCK, i, block_key(spec.se, b, size)))
        size = layers[-1].out_resolution
        channels = b.out_channels
    for role, key, dropout in head_layers(spec.head, channels, size, spec.num_classes):
        layers.append(LayerShape(len(layers), role, None, key, dropout))
    return layers
