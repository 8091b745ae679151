"""PyTorch modules built from the layer walk, exactly as the MobileNetV3 paper describes them.

* h-swish = x·ReLU6(x+3)/6 and hard-sigmoid = ReLU6(x+3)/6 (MobileNetV3 §5.2), as ``nn.Hardswish`` /
  ``nn.Hardsigmoid`` so that ONNX export emits the native ``HardSwish``/``HardSigmoid`` ops;
* squeeze-and-excite on the expanded representation: pool → 1×1 conv → ReLU → 1×1 conv → gate
  (MobileNetV3 §5.3; widths from the walk);
* inverted residual without the 1×1 expansion when exp == in; residual only when the spec says so
  (validated: stride 1 and in == out);
* batch norm with eps 1e-3 and momentum 0.01 (TF's decay 0.99), as the reference implementations.

Dense heads (``spec.dense``, layers defined in :func:`search_spaces.walk.dense_layers`) — the interface
the dense training code is written against:

* segmentation (``lraspp``/``raspp``): ``build_model(spec)(x)`` with ``x`` [N, C, H, W] returns logits
  [N, num_classes, H, W], bilinearly upsampled (align_corners=False) to the input size; every label,
  background included, is one of the ``num_classes``;
* detection (``ssdlite``): ``build_model(spec)(x)`` returns ``(cls_logits [N, A, num_classes],
  box_regression [N, A, 4])``, class 0 being the background (num_classes = foreground classes + 1, as
  torchvision), and :func:`anchors` ``(spec, resolution)`` gives the A default boxes [A, 4] as
  (cx, cy, w, h) normalized to [0, 1], in the same order (feature map, then row, column, anchor).
  The box coding (offsets against these boxes) is the training code's choice; torchvision's SSD uses
  ``BoxCoder(weights=(10, 10, 5, 5))``;
* in training mode R-ASPP's image-pooling branch has batch norm on a 1×1 map, so it needs batches of
  at least 2 (as torchvision's DeepLabV3).

Paper: Howard et al., "Searching for MobileNetV3", ICCV 2019, https://arxiv.org/abs/1905.02244
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.spec import Activation, ArchSpec, DenseKind, Gate, SpecError
from search_spaces.walk import (
    NETWORK_INPUT,
    SSDLITE_ASPECT_RATIOS,
    LayerKey,
    LayerKind,
    LayerShape,
    Point,
    Role,
    walk,
)

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def make_activation(act: Activation | None) -> nn.Module:
    if act is None:
        return nn.Identity()
    return {
        Activation.RELU: lambda: nn.ReLU(inplace=True),
        Activation.RELU6: lambda: nn.ReLU6(inplace=True),
        Activation.HSWISH: lambda: nn.Hardswish(inplace=True),
        Activation.SWISH: lambda: nn.SiLU(inplace=True),
    }[act]()


def conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                act: Activation | None = None, dilation: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, padding=dilation * (k // 2), dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM),
    ]
    if act is not None:
        layers.append(make_activation(act))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Channel attention: x · gate(W2 · ReLU(W1 · mean_hw(x) + b1) + b2)."""

    def __init__(self, channels: int, squeeze: int, gate: Gate):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(squeeze, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid() if gate is Gate.HSIGMOID else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.expand(self.act(self.reduce(self.pool(x)))))
        return x * s


class ConvBlock(nn.Module):
    """Regular k×k conv → BN → act [→ SE] [+ identity]: the stem, the head conv, MnasNet's 'conv'.

    A key without batch norm is a conv with a bias (dense heads' classifiers and predictors).
    """

    def __init__(self, key: LayerKey):
        super().__init__()
        if key.batchnorm:
            self.conv = conv_bn_act(key.in_channels, key.out_channels, key.kernel_size, key.stride,
                                    act=key.activation, dilation=key.dilation)
        else:
            self.conv = nn.Sequential(nn.Conv2d(key.in_channels, key.out_channels, key.kernel_size, key.stride,
                                                padding=key.dilation * (key.kernel_size // 2),
                                                dilation=key.dilation, bias=True),
                                      make_activation(key.activation))
        self.se = (
            SqueezeExcite(key.out_channels, key.se_channels, key.se_gate) if key.se_channels else nn.Identity()
        )
        self.residual = key.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.conv(x))
        return x + y if self.residual else y


class InvertedResidual(nn.Module):
    """MBConv / depthwise-separable: [1×1 expand] → k×k depthwise → [SE] → 1×1 linear projection."""

    def __init__(self, key: LayerKey):
        super().__init__()
        exp = key.expand_channels
        self.expand = (
            conv_bn_act(key.in_channels, exp, 1, act=key.activation) if exp != key.in_channels else nn.Identity()
        )
        self.depthwise = conv_bn_act(exp, exp, key.kernel_size, key.stride, groups=exp, act=key.activation,
                                     dilation=key.dilation)
        self.se = SqueezeExcite(exp, key.se_channels, key.se_gate) if key.se_channels else nn.Identity()
        self.project = conv_bn_act(exp, key.out_channels, 1, act=None)
        self.residual = key.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y

    def forward_with_expansion(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, output of the 1×1 expansion): SSDLite reads C4 inside a block."""
        e = self.expand(x)
        y = self.project(self.se(self.depthwise(e)))
        return (x + y if self.residual else y), e


class Linear(nn.Module):
    """Fully connected layer (the paper's 'conv2d 1×1, NBN' after pooling) [→ act], dropout first."""

    def __init__(self, key: LayerKey, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(key.in_channels, key.out_channels)
        self.act = make_activation(key.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(self.dropout(x)))


class GlobalPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(x), 1)


class Gate2d(nn.Module):
    """LR-ASPP's pooled branch: sigmoid(conv1×1(global average pool(x))), no bias; [N, C, 1, 1]."""

    def __init__(self, key: LayerKey):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(key.in_channels, key.out_channels, 1, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.conv(self.pool(x)))


class ImagePool(nn.Module):
    """R-ASPP's image-level branch: act(BN(conv1×1(global average pool(x)))), broadcast to x's size."""

    def __init__(self, key: LayerKey):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = conv_bn_act(key.in_channels, key.out_channels, 1, act=key.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.pool(x))
        return y.expand(-1, -1, x.shape[2], x.shape[3])


class Mul(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b


class Add(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class Concat(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class Upsample(nn.Module):
    """Bilinear resize (align_corners=False) of ``x`` to the spatial size of ``ref``."""

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class Predictions(nn.Module):
    """SSD's flattening: each [N, A·C, H, W] → [N, H·W·A, C] (torchvision's order), concatenated."""

    def __init__(self, columns: int):
        super().__init__()
        self.columns = columns

    def forward(self, *maps: torch.Tensor) -> torch.Tensor:
        out = []
        for m in maps:
            n, _, h, w = m.shape
            out.append(m.view(n, -1, self.columns, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, self.columns))
        return torch.cat(out, dim=1)


def build_layer(layer: LayerShape) -> nn.Module:
    """The module of one walked layer (also used alone to time a lookup-table entry)."""
    key = layer.key
    kind = key.kind
    if kind is LayerKind.CONV:
        return ConvBlock(key)
    if kind in (LayerKind.DSCONV, LayerKind.MBCONV):
        return InvertedResidual(key)
    if kind is LayerKind.POOL:
        return GlobalPool()
    if kind is LayerKind.DWCONV:
        return conv_bn_act(key.in_channels, key.out_channels, key.kernel_size, key.stride, groups=key.in_channels,
                           act=key.activation, dilation=key.dilation)
    if kind is LayerKind.GATE:
        return Gate2d(key)
    if kind is LayerKind.IMAGE_POOL:
        return ImagePool(key)
    if kind is LayerKind.MUL:
        return Mul()
    if kind is LayerKind.ADD:
        return Add()
    if kind is LayerKind.CONCAT:
        return Concat()
    if kind is LayerKind.UPSAMPLE:
        return Upsample()
    if kind is LayerKind.PREDICTIONS:
        return Predictions(key.out_channels)
    return Linear(key, layer.dropout)


class Network(nn.Module):
    """A network built from a spec: ``layers[i]`` is the module of ``walk(spec)[i]``.

    A classification spec runs the layers in sequence. A dense spec runs them as the walk's graph
    (each layer reads its :attr:`LayerShape.inputs`) and returns its ``OUTPUT`` layers: segmentation
    logits, or detection ``(scores, boxes)`` (see the module docstring).
    """

    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        walked = walk(spec)
        self.layers = nn.Sequential(*(build_layer(layer) for layer in walked))
        self._inputs = [tuple((t.index, t.point is Point.EXPAND) for t in layer.inputs) for layer in walked]
        self._expansion_taps = {t.index for layer in walked for t in layer.inputs if t.point is Point.EXPAND}
        self._outputs = [layer.index for layer in walked if layer.role is Role.OUTPUT]
        init_weights(self)

    def forward(self, x: torch.Tensor):
        if self.spec.dense is None:
            return self.layers(x)
        outs: list[torch.Tensor] = []
        expansions: dict[int, torch.Tensor] = {}
        for i, module in enumerate(self.layers):
            inputs = self._inputs[i]
            if not inputs:
                args = (outs[-1] if outs else x,)
            else:
                args = tuple(x if j == NETWORK_INPUT else (expansions[j] if expand else outs[j])
                             for j, expand in inputs)
            if i in self._expansion_taps:
                y, expansions[i] = module.forward_with_expansion(*args)
            else:
                y = module(*args)
            outs.append(y)
        result = tuple(outs[i] for i in self._outputs)
        return result[0] if len(result) == 1 else result


def anchors(spec: ArchSpec, resolution: int | None = None) -> torch.Tensor:
    """SSDLite's default boxes [A, 4] as (cx, cy, w, h) in [0, 1], in the order of the predictions.

    torchvision's ``DefaultBoxGenerator([[2, 3]] * m, min_ratio=0.2, max_ratio=0.95)`` (``clip=True``,
    no steps) for the m feature maps: scales s_k = 0.2 + 0.75·k/(m − 1) and s_m = 1; on map k the boxes
    are (s_k, s_k), (√(s_k s_{k+1}), same) and (s_k√r, s_k/√r), (s_k/√r, s_k√r) for r in 2, 3, widths
    and heights clipped to [0, 1], centred at ((j + 0.5)/W, (i + 0.5)/H); location-major, then anchor.
    """
    if spec.dense is None or spec.dense.kind is not DenseKind.SSDLITE:
        raise SpecError("dense", "anchors are defined for an ssdlite head only")
    sizes = [layer.out_resolution for layer in walk(spec, resolution)
             if layer.role is Role.DET_CLASS_HEAD and layer.key.kind is LayerKind.CONV]
    m = len(sizes)
    scales = [0.2 + (0.95 - 0.2) * k / (m - 1.0) for k in range(m)] if m > 1 else [0.2]
    scales.append(1.0)
    boxes = []
    for k, f in enumerate(sizes):
        s = scales[k]
        wh = [[s, s], [math.sqrt(s * scales[k + 1])] * 2]
        for r in SSDLITE_ASPECT_RATIOS:
            q = math.sqrt(r)
            wh.extend([[s * q, s / q], [s / q, s * q]])
        wh_t = torch.tensor(wh, dtype=torch.float32).clamp(0, 1)
        centres = (torch.arange(f, dtype=torch.float32) + 0.5) / f
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        xy = torch.stack((cx, cy), dim=-1).reshape(-1, 1, 2).expand(-1, len(wh), 2)
        boxes.append(torch.cat((xy, wh_t.expand(f * f, -1, -1)), dim=-1).reshape(-1, 4))
    return torch.cat(boxes, dim=0)


def init_weights(model: nn.Module) -> None:
    """torchvision's MobileNetV3 init: Kaiming-normal (fan-out) convs, N(0, 0.01) linears."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


MAX_PARAMS = 200_000_000
"""Largest network built (800 MB of fp32 weights): a valid spec at the size limits can ask for ~1.6G
parameters, which would exhaust memory instead of failing with a message."""


def build_model(spec: ArchSpec) -> Network:
    """Build the PyTorch module of ``spec`` (any input resolution works: the pool is global; a dense head
    needs an input of at least its deepest output stride)."""
    from search_spaces.cost import count

    params = count(spec).params
    if params > MAX_PARAMS:
        raise SpecError("", f"{spec.name or spec.arch_id} has {params:,} parameters; at most {MAX_PARAMS:,} are built")
    return Network(spec)
