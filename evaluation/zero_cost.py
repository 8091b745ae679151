"""Zero-cost scores: an architecture scored at initialization from one batch, with no training.

Three scores from the literature, each a plain function of an untrained model and a batch:

* :func:`naswot` — Mellor et al., "Neural Architecture Search without Training" (ICML 2021,
  arXiv:2006.04647): the log-determinant of the kernel ``K[i, j] = N_A − Hamming(c_i, c_j)`` of the binary
  codes ``c_i`` (which rectified units are on) that the images of a batch induce. Here a unit is "on"
  where the input of an activation module (ReLU, ReLU6, hard-swish, swish) is positive; the kernel is
  accumulated layer by layer, so no code vector is ever held whole.
* :func:`synflow` — Tanaka et al., "Pruning neural networks without any data by iteratively conserving
  synaptic flow" (NeurIPS 2020, arXiv:2006.05467), as Abdelfattah et al., "Zero-Cost Proxies for
  Lightweight NAS" (ICLR 2021, arXiv:2101.08134) use it to rank architectures: every weight replaced by
  its absolute value, BatchNorm removed, an all-ones input in float64, ``R = Σ output``, score
  ``Σ |θ · ∂R/∂θ|`` over conv and linear weights. Returned as its natural logarithm (the raw sum
  reaches 1e30 and more in deep networks).
* :func:`snip` — Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity" (ICLR
  2019, arXiv:1810.02340), as Abdelfattah et al. rank with it: ``Σ |θ · ∂L/∂θ|`` of the cross-entropy of
  one labelled batch, over conv and linear weights, BatchNorm in training mode.

Whether any of them ranks this project's spaces like the final recipe is measured in
``experiments/bench_fidelity.py`` (kinds ``zc-naswot``, ``zc-synflow``, ``zc-snip``), against the free
baselines (multiply-adds, parameters) they must beat. None of them touches the model passed in: each
works on a deep copy.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU)
"""The modules whose input signs make NASWOT's binary codes (the builder's activations)."""

SCORES = ("naswot", "synflow", "snip")


def _saliency(model: nn.Module) -> float:
    """``Σ |θ · ∂/∂θ|`` over the convolution and linear weights after a backward pass (SynFlow's and SNIP's sum)."""
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return sum(float((w.detach() * w.grad).abs().sum()) for w in weights if w.grad is not None)


def naswot(model: nn.Module, images: torch.Tensor) -> float:
    """NASWOT's score of ``model`` on ``images`` (a batch of N ≥ 2 network inputs): ``log |K_H|``.

    BatchNorm runs in training mode (batch statistics), as in the paper's code. Raises ValueError when
    the network has no activation module or the kernel is singular (all images give the same code)."""
    if images.ndim != 4 or len(images) < 2:
        raise ValueError(f"naswot needs a batch of at least 2 images N×C×H×W, got {tuple(images.shape)}")
    net = copy.deepcopy(model).train()
    n = len(images)
    kernel = torch.zeros(n, n, dtype=torch.float64)
    hooks = []

    def accumulate(_module, inputs, _output) -> None:
        codes = (inputs[0].detach().reshape(n, -1) > 0).to(torch.float64)
        kernel.add_(codes @ codes.T).add_((1.0 - codes) @ (1.0 - codes).T)

    for module in net.modules():
        if isinstance(module, ACTIVATIONS):
            module.inplace = False  # the hook reads the input after the module ran
            hooks.append(module.register_forward_hook(accumulate))
    if not hooks:
        raise ValueError("naswot needs a network with ReLU, ReLU6, hard-swish or swish activations")
    with torch.no_grad():
        net(images)
    sign, logdet = torch.linalg.slogdet(kernel)
    if sign <= 0 or not math.isfinite(float(logdet)):
        raise ValueError("naswot: the codes' kernel is singular (the batch's images give identical codes)")
    return float(logdet)


def synflow(model: nn.Module, input_shape: tuple[int, int, int]) -> float:
    """SynFlow's score of ``model`` for inputs of ``input_shape`` (C, H, W): ``ln Σ |θ · ∂R/∂θ|``.

    Data-free: the input is all ones. BatchNorm layers are replaced by identities (the ``bn=False``
    variant Abdelfattah et al. rank with); dropout is off."""
    net = copy.deepcopy(model).double().eval()
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
            setattr(parent, name.rpartition(".")[2], nn.Identity())
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    out = net(torch.ones((1, *input_shape), dtype=torch.float64))
    torch.sum(out).backward()
    total = _saliency(net)
    if not total > 0 or not math.isfinite(total):
        raise ValueError(f"synflow: the score is {total} (no path from input to output, or overflow)")
    return math.log(total)


def snip(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """SNIP's score of ``model`` on a labelled batch: ``Σ |θ · ∂L/∂θ|`` of the cross-entropy ``L``."""
    if images.ndim != 4 or len(images) != len(labels) or not len(images):
        raise ValueError(f"snip needs N×C×H×W images and N labels, got {tuple(images.shape)} and {tuple(labels.shape)}")
    net = copy.deepcopy(model).train()
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(images), labels).backward()
    total = _saliency(net)
    if not math.isfinite(total):
        raise ValueError(f"snip: the score is {total} (the loss or its gradient is not finite)")
    return total


def score(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The zero-cost score ``name`` (one of :data:`SCORES`) of ``model`` on a labelled batch."""
    if name == "naswot":
        return naswot(model, images)
    if name == "synflow":
        return synflow(model, tuple(images.shape[1:]))
    if name == "snip":
        return snip(model, images, labels)
    raise ValueError(f"unknown zero-cost score {name!r}; choose one of {', '.join(SCORES)}")
