"""PyTorch modules built from the layer walk, exactly as the MobileNetV3 paper describes them.

* h-swish = x·ReLU6(x+3)/6 and hard-sigmoid = ReLU6(x+3)/6 (MobileNetV3 §5.2), as ``nn.Hardswish`` /
  ``nn.Hardsigmoid`` so that ONNX export emits the native ``HardSwish``/``HardSigmoid`` ops;
* squeeze-and-excite on the expanded representation: pool → 1×1 conv → ReLU → 1×1 conv → gate
  (MobileNetV3 §5.3; widths from the walk);
* inverted residual without the 1×1 expansion when exp == in; residual only when the spec says so
  (validated: stride 1 and in == out);
* batch norm with eps 1e-3 and momentum 0.01 (TF's decay 0.99), as the reference implementations.

Paper: Howard et al., "Searching for MobileNetV3", ICCV 2019, https://arxiv.org/abs/1905.02244
"""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.spec import Activation, ArchSpec, Gate, SpecError
from search_spaces.walk import LayerKey, LayerKind, LayerShape, walk

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
                act: Activation | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False),
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
    """Regular k×k conv → BN → act [→ SE] [+ identity]: the stem, the head conv, MnasNet's 'conv'."""

    def __init__(self, key: LayerKey):
        super().__init__()
        self.conv = conv_bn_act(key.in_channels, key.out_channels, key.kernel_size, key.stride, act=key.activation)
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
        self.depthwise = conv_bn_act(exp, exp, key.kernel_size, key.stride, groups=exp, act=key.activation)
        self.se = SqueezeExcite(exp, key.se_channels, key.se_gate) if key.se_channels else nn.Identity()
        self.project = conv_bn_act(exp, key.out_channels, 1, act=None)
        self.residual = key.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


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


def build_layer(layer: LayerShape) -> nn.Module:
    """The module of one walked layer (also used alone to time a lookup-table entry)."""
    key = layer.key
    if key.kind is LayerKind.CONV:
        return ConvBlock(key)
    if key.kind in (LayerKind.DSCONV, LayerKind.MBCONV):
        return InvertedResidual(key)
    if key.kind is LayerKind.POOL:
        return GlobalPool()
    return Linear(key, layer.dropout)


class Network(nn.Module):
    """A network built from a spec: ``layers[i]`` is the module of ``walk(spec)[i]``."""

    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        self.layers = nn.Sequential(*(build_layer(layer) for layer in walk(spec)))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


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
    """Build the PyTorch module of ``spec`` (any input resolution works: the pool is global)."""
    from search_spaces.cost import count

    params = count(spec).params
    if params > MAX_PARAMS:
        raise SpecError("", f"{spec.name or spec.arch_id} has {params:,} parameters; at most {MAX_PARAMS:,} are built")
    return Network(spec)
