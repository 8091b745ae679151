"""Parameter and multiply-add counts as pure functions of the layer walk.

Conventions (those of torchvision's ``_ops`` and ``torch.utils.flop_counter``, whose FLOPs are
2 × MAdds): MAdds count the multiply-accumulates of convolutions and fully connected layers only;
biases, batch norm, activations, pooling, the SE channel-wise product and residual additions are not
counted. Parameters are trainable tensors (BN weight and bias count, running statistics do not).
Dense heads follow the same rules: upsampling, the gate's product, sums and concatenations cost no
MAdds; the 1×1 convs of LR-ASPP's gate and R-ASPP's image pooling run on a 1×1 map.
"""

from __future__ import annotations

from dataclasses import dataclass

from search_spaces.spec import ArchSpec
from search_spaces.walk import LayerKey, LayerKind, LayerShape, walk


@dataclass(frozen=True)
class Cost:
    params: int
    madds: int

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.madds + other.madds)


ZERO = Cost(0, 0)


def _conv(cin: int, cout: int, k: int, out_res: int, groups: int = 1, bias: bool = False, bn: bool = True) -> Cost:
    weights = cout * (cin // groups) * k * k
    params = weights + (cout if bias else 0) + (2 * cout if bn else 0)
    return Cost(params, weights * out_res * out_res)


def _se(channels: int, squeeze: int) -> Cost:
    # pool → 1×1 conv (bias) → ReLU → 1×1 conv (bias) → gate; both convs run on a 1×1 map.
    return _conv(channels, squeeze, 1, 1, bias=True, bn=False) + _conv(squeeze, channels, 1, 1, bias=True, bn=False)


def layer_cost(key: LayerKey) -> Cost:
    """Parameters and MAdds of one layer."""
    k = key
    out_res = (k.resolution - 1) // k.stride + 1
    if k.kind in (LayerKind.POOL, LayerKind.MUL, LayerKind.ADD, LayerKind.CONCAT, LayerKind.UPSAMPLE,
                  LayerKind.PREDICTIONS):
        return ZERO
    if k.kind is LayerKind.LINEAR:
        return _conv(k.in_channels, k.out_channels, 1, 1, bias=True, bn=False)
    if k.kind is LayerKind.GATE:
        return _conv(k.in_channels, k.out_channels, 1, 1, bias=False, bn=False)
    if k.kind is LayerKind.IMAGE_POOL:
        return _conv(k.in_channels, k.out_channels, 1, 1)
    if k.kind is LayerKind.DWCONV:
        return _conv(k.in_channels, k.out_channels, k.kernel_size, out_res, groups=k.in_channels)
    if k.kind is LayerKind.CONV:  # with BN, or (a classifier/predictor) with a bias and no BN
        cost = _conv(k.in_channels, k.out_channels, k.kernel_size, out_res, bias=not k.batchnorm, bn=k.batchnorm)
        if k.se_channels:
            cost += _se(k.out_channels, k.se_channels)
        return cost
    # dsconv / mbconv
    exp = k.expand_channels
    cost = ZERO
    if exp != k.in_channels:
        cost += _conv(k.in_channels, exp, 1, k.resolution)
    cost += _conv(exp, exp, k.kernel_size, out_res, groups=exp)
    if k.se_channels:
        cost += _se(exp, k.se_channels)
    cost += _conv(exp, k.out_channels, 1, out_res)
    return cost


@dataclass(frozen=True)
class CostReport:
    """Per-layer and total costs of a network at one resolution."""

    layers: tuple[tuple[LayerShape, Cost], ...]
    total: Cost

    @property
    def params(self) -> int:
        return self.total.params

    @property
    def madds(self) -> int:
        return self.total.madds


def count(spec: ArchSpec, resolution: int | None = None) -> CostReport:
    """Walk ``spec`` once and cost every layer (``resolution`` defaults to the spec's)."""
    rows = tuple((layer, layer_cost(layer.key)) for layer in walk(spec, resolution))
    total = ZERO
    for _, c in rows:
        total += c
    return CostReport(rows, total)
