"""The one layer walk: an :class:`ArchSpec` in, one :class:`LayerShape` per layer out.

Everything that needs to know how a network is laid out reads this walk and nothing else:
cost counting (:mod:`search_spaces.cost`), latency lookup-table keys (:mod:`latency.lut`), the torch
builder (:mod:`search_spaces.builder`) and the paper-style tables of the CLI and reports. A layer is
the unit the MobileNetV3 paper's Tables 1–2 have a row for: the stem, each block, the head's 1×1 conv,
the pool, the hidden 1×1 (NBN) layer and the classifier.

A spec with a dense head (``spec.dense``) walks the backbone (stem, blocks, the last 1×1 conv) and then
the head's layers instead of the pool/hidden/classifier (see :func:`dense_layers`). Backbone layers read
the previous layer's output; head layers name what they read in :attr:`LayerShape.inputs` — an
earlier layer's output, the 1×1 expansion inside an earlier block (SSDLite's C4), or the network input
(:data:`NETWORK_INPUT`, the size the logits are upsampled to). An upsample's output size is in its key
(``LayerKey.out_size``), so keys still determine every layer's work. Costs, the builder and ONNX export all
follow these edges, so they cannot disagree.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields, replace

from search_spaces.scaling import se_channels
from search_spaces.spec import (
    Activation,
    ArchSpec,
    Block,
    DenseKind,
    Gate,
    Head,
    SEConfig,
    SpecError,
    c4_block,
    output_strides,
)

SSDLITE_ASPECT_RATIOS = (2, 3)
"""Aspect ratios of SSDLite's anchors on every feature map (torchvision's ``DefaultBoxGenerator([[2, 3]] * 6)``):
boxes of ratio 1 at two scales plus ratio r and 1/r for each, i.e. 6 anchors per location."""
SSDLITE_ANCHORS_PER_LOCATION = 2 + 2 * len(SSDLITE_ASPECT_RATIOS)
NETWORK_INPUT = -1
"""Index of :class:`Tap` that means the network's input image (used only as a target size)."""


class LayerKind(str, enum.Enum):
    CONV = "conv"  # k×k conv, BN, activation [, SE] [, residual]
    DSCONV = "dsconv"  # depthwise k×k, BN, act [, SE], 1×1 projection, BN [, residual]
    MBCONV = "mbconv"  # [1×1 expand, BN, act], depthwise k×k, BN, act [, SE], 1×1 projection, BN
    POOL = "pool"  # global average pool
    LINEAR = "linear"  # 1×1 conv with bias on a 1×1 map (= fully connected), optional activation
    # Dense heads. A CONV key with batchnorm False is a conv with a bias and no BN (a classifier/predictor).
    DWCONV = "dwconv"  # depthwise k×k, BN, activation
    GATE = "gate"  # global average pool → 1×1 conv (no bias) → sigmoid; output 1×1 (LR-ASPP)
    IMAGE_POOL = "image_pool"  # global average pool → 1×1 conv → BN → act, broadcast to the input size (R-ASPP)
    MUL = "mul"  # product of two inputs (broadcast)
    ADD = "add"  # sum of two inputs
    CONCAT = "concat"  # channel concatenation of the inputs
    UPSAMPLE = "upsample"  # bilinear (align_corners=False) resize of input 0 to the size of input 1
    PREDICTIONS = "predictions"  # each input [N, A·C, H, W] → [N, H·W·A, C], concatenated along anchors


class Role(str, enum.Enum):
    STEM = "stem"
    BLOCK = "block"
    HEAD_CONV = "head_conv"
    POOL = "pool"
    HEAD_HIDDEN = "head_hidden"
    CLASSIFIER = "classifier"
    SEG_HEAD = "seg_head"  # segmentation head layers other than classifiers
    SEG_CLASSIFIER = "seg_classifier"  # 1×1 convs to the class logits
    DET_EXTRA = "det_extra"  # SSDLite's extra feature layers after C5
    DET_CLASS_HEAD = "det_class_head"  # SSDLite's class predictors (depthwise 3×3 + 1×1)
    DET_BOX_HEAD = "det_box_head"  # SSDLite's box predictors (depthwise 3×3 + 1×1)
    OUTPUT = "output"  # what the network returns: segmentation logits; detection scores, then boxes


class Point(str, enum.Enum):
    OUT = "out"  # a layer's output
    EXPAND = "expand"  # the output of a block's 1×1 expansion (after BN and activation)


@dataclass(frozen=True)
class Tap:
    """Where a layer reads one input: ``index`` of an earlier layer (or :data:`NETWORK_INPUT`), and which point."""

    index: int
    point: Point = Point.OUT


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
    dilation: int = 1  # of the depthwise (or regular) conv
    out_size: int = 0  # output height = width where the stride does not imply it (an upsample's target); 0 = implied

    def to_dict(self) -> dict:
        """Plain fields; ``dilation`` and ``out_size`` only when not default (existing lookup-table keys unchanged)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.value if isinstance(v, enum.Enum) else v
        if self.dilation == 1:
            del out["dilation"]
        if self.out_size == 0:
            del out["out_size"]
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
        inputs: what the layer reads (dense heads); empty = the previous layer's output.
    """

    index: int
    role: Role
    block_index: int | None
    key: LayerKey
    dropout: float = 0.0
    inputs: tuple[Tap, ...] = ()

    @property
    def out_resolution(self) -> int:
        """Output height = width ('same' padding, so ⌈in / stride⌉; 1 after pooling; an upsample's target)."""
        if self.key.out_size:
            return self.key.out_size
        if self.key.kind in (LayerKind.POOL, LayerKind.LINEAR, LayerKind.GATE):
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
        dilation=block.dilation,
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
    if spec.dense is not None:
        return dense_layers(spec, layers, resolution)
    for role, key, dropout in head_layers(spec.head, channels, size, spec.num_classes):
        layers.append(LayerShape(len(layers), role, None, key, dropout))
    return layers


# ------------------------------------------------------------------------------------------------
# Dense heads
# ------------------------------------------------------------------------------------------------


def _key(kind: LayerKind, resolution: int, cin: int, cout: int, kernel: int = 1, stride: int = 1,
         activation: Activation | None = None, batchnorm: bool = False) -> LayerKey:
    return _plain_key(kind, resolution, cin, cout, kernel, stride, activation, batchnorm)


class _Builder:
    """Appends dense-head layers to a walk; each ``add`` returns the new layer's index."""

    def __init__(self, layers: list[LayerShape]):
        self.layers = layers

    def add(self, role: Role, key: LayerKey, *inputs: Tap | int, size: int = 0) -> int:
        taps = tuple(t if isinstance(t, Tap) else Tap(t) for t in inputs)
        key = replace(key, out_size=size) if size else key
        self.layers.append(LayerShape(len(self.layers), role, None, key, inputs=taps))
        return len(self.layers) - 1

    def res(self, index: int) -> int:
        return self.layers[index].out_resolution

    def channels(self, index: int) -> int:
        return self.layers[index].key.out_channels


def dense_layers(spec: ArchSpec, backbone: list[LayerShape], resolution: int | None = None) -> list[LayerShape]:
    """Append ``spec.dense``'s layers to the backbone part of a walk (stem and blocks).

    The backbone's last 1×1 conv (``spec.head.conv_channels``, if any) is added first, as torchvision's
    ``features`` ends with it; the classification layers (pool, hidden, classifier) are not walked.

    **LR-ASPP** (MobileNetV3 §6.4, Fig. 10; torchvision ``segmentation/lraspp.py``), F = ``dense.filters``,
    K = ``num_classes``. *high* = the backbone's last output (1/16 with an atrous last stage, else 1/32);
    *low* = the output of the first layer that reaches output stride 8 (torchvision's
    ``stage_indices[-4]``: for MobileNetV3 the stride-2 block of the 1/8 stage, 40 channels in Large):

        branch = ReLU(BN(conv1×1(high → F)));  gate = sigmoid(conv1×1(avgpool(high) → F), no bias)
        logits = conv1×1(upsample(branch · gate → size of low) → K) + conv1×1(low → K)   (both with bias)
        output = upsample(logits → input size)

    The gate pools globally (torchvision); the paper's figure pools with a 49×49 kernel and stride
    (16, 20) at 1024×2048 inputs, which has the same weights.

    **R-ASPP** (the paper's Table 7 ablation, "SH ×"; MobileNetV2 §6.3's reduced ASPP as in DeepLabv3
    with only the 1×1 and image-pooling branches, no low-level skip):

        a = ReLU(BN(conv1×1(high → F)));  p = broadcast(ReLU(BN(conv1×1(avgpool(high) → F))))
        logits = conv1×1(ReLU(BN(conv1×1(concat(a, p) → F))) → K, bias);  output = upsample(logits → input size)

    With F = 256 this reproduces the paper's Table 7 parameter counts (rows 5–6: 3.60M / 1.76M).

    **SSDLite** (MobileNetV2 §6.2, MobileNetV3 §6.3; torchvision ``detection/ssdlite.py``): feature maps
    C4 = the 1×1 expansion output of the block going from output stride 16 to 32, C5 = the backbone's
    last output, then per ``dense.extra_channels`` width e an extra layer
    ReLU6(BN(conv1×1 → e/2)) → ReLU6(BN(dw3×3 stride 2)) → ReLU6(BN(conv1×1 → e)). On each feature map
    with c channels: a class predictor ReLU6(BN(dw3×3(c))) → conv1×1(c → A·K, bias) and a box predictor
    ReLU6(BN(dw3×3(c))) → conv1×1(c → A·4, bias), A = :data:`SSDLITE_ANCHORS_PER_LOCATION`. The two
    ``OUTPUT`` layers flatten and concatenate them (location-major, then anchor) into scores
    [N, ΣHWA, K] and box regressions [N, ΣHWA, 4].
    """
    dense = spec.dense
    size = spec.resolution if resolution is None else resolution
    strides = output_strides(spec)
    deepest = strides[-1]
    if size < deepest:
        raise SpecError("resolution", f"{dense.kind.value} reads 1/{deepest} features: the input must be at least "
                                      f"{deepest} px, got {size}")
    layers = list(backbone)
    b = _Builder(layers)
    last = len(layers) - 1
    if spec.head.conv_channels:
        last = b.add(Role.HEAD_CONV, _key(LayerKind.CONV, b.res(last), b.channels(last), spec.head.conv_channels,
                                          activation=spec.head.activation, batchnorm=True), last)
    k = spec.num_classes
    if dense.kind is DenseKind.SSDLITE:
        _ssdlite(spec, b, last)
        return layers
    f = dense.filters
    high, high_ch, high_res = last, b.channels(last), b.res(last)
    relu = Activation.RELU
    a = b.add(Role.SEG_HEAD, _key(LayerKind.CONV, high_res, high_ch, f, activation=relu, batchnorm=True), high)
    if dense.kind is DenseKind.LRASPP:
        low = strides.index(8)  # layer index == position in output_strides (stem = 0)
        low_res, low_ch = b.res(low), b.channels(low)
        g = b.add(Role.SEG_HEAD, _key(LayerKind.GATE, high_res, high_ch, f), high)
        m = b.add(Role.SEG_HEAD, _key(LayerKind.MUL, high_res, f, f), a, g)
        u = b.add(Role.SEG_HEAD, _key(LayerKind.UPSAMPLE, high_res, f, f), m, low, size=low_res)
        c_high = b.add(Role.SEG_CLASSIFIER, _key(LayerKind.CONV, low_res, f, k), u)
        c_low = b.add(Role.SEG_CLASSIFIER, _key(LayerKind.CONV, low_res, low_ch, k), low)
        logits = b.add(Role.SEG_HEAD, _key(LayerKind.ADD, low_res, k, k), c_high, c_low)
    else:
        p = b.add(Role.SEG_HEAD, _key(LayerKind.IMAGE_POOL, high_res, high_ch, f, activation=relu, batchnorm=True),
                  high)
        c = b.add(Role.SEG_HEAD, _key(LayerKind.CONCAT, high_res, 2 * f, 2 * f), a, p)
        j = b.add(Role.SEG_HEAD, _key(LayerKind.CONV, high_res, 2 * f, f, activation=relu, batchnorm=True), c)
        logits = b.add(Role.SEG_CLASSIFIER, _key(LayerKind.CONV, high_res, f, k), j)
    b.add(Role.OUTPUT, _key(LayerKind.UPSAMPLE, b.res(logits), k, k), logits, Tap(NETWORK_INPUT), size=size)
    return layers


def _ssdlite(spec: ArchSpec, b: _Builder, c5: int) -> None:
    relu6 = Activation.RELU6
    c4 = c4_block(spec)
    c4_layer = c4 + 1  # the stem is layer 0
    c4_key = b.layers[c4_layer].key
    features: list[tuple[Tap, int, int]] = [  # (tap, channels, resolution)
        (Tap(c4_layer, Point.EXPAND), c4_key.expand_channels, c4_key.resolution),
        (Tap(c5), b.channels(c5), b.res(c5)),
    ]
    prev = c5
    for e in spec.dense.extra_channels:
        mid = e // 2
        x = b.add(Role.DET_EXTRA, _key(LayerKind.CONV, b.res(prev), b.channels(prev), mid, activation=relu6,
                                       batchnorm=True), prev)
        x = b.add(Role.DET_EXTRA, _key(LayerKind.DWCONV, b.res(x), mid, mid, 3, 2, relu6, True), x)
        prev = b.add(Role.DET_EXTRA, _key(LayerKind.CONV, b.res(x), mid, e, activation=relu6, batchnorm=True), x)
        features.append((Tap(prev), e, b.res(prev)))
    a, k = SSDLITE_ANCHORS_PER_LOCATION, spec.num_classes
    scores, boxes = [], []
    for tap, ch, res in features:
        for role, width, out in ((Role.DET_CLASS_HEAD, k, scores), (Role.DET_BOX_HEAD, 4, boxes)):
            dw = b.add(role, _key(LayerKind.DWCONV, res, ch, ch, 3, 1, relu6, True), tap)
            out.append(b.add(role, _key(LayerKind.CONV, res, ch, a * width), dw))
    b.add(Role.OUTPUT, _key(LayerKind.PREDICTIONS, b.res(scores[0]), a * k, k), *scores)
    b.add(Role.OUTPUT, _key(LayerKind.PREDICTIONS, b.res(boxes[0]), a * 4, 4), *boxes)
