"""A weight-sharing supernet for every factorized search space, and the evaluator that scores its subnets.

One network holds the weights that every architecture of a space (:mod:`search_spaces.spaces`) shares,
in the manner of Once-for-All (Cai et al. 2020, https://arxiv.org/abs/1908.09791) and BigNAS (Yu et al.
2020, https://arxiv.org/abs/2003.11142). It covers exactly the decisions the space decodes, read through
the space's own :meth:`search_spaces.spaces.FactorizedSpace.stage` (so nothing about the decoding is
copied here):

* **op type per block** — a layer slot holds one set of weights per *family*: ``conv`` (regular k×k
  conv), ``dsconv`` (depthwise k×k + 1×1 projection) and ``mbconv`` (1×1 expansion + depthwise +
  projection). A regular conv and a depthwise conv have differently shaped kernels, and a separable
  block's depthwise runs on the block input while an MBConv's runs on the expansion, so these cannot
  share weights sensibly; each family has its own per slot (as in the single-path supernets of the
  papers above). ``mbconv3`` and ``mbconv6`` share the MBConv weights: the expansion width is a
  channel slice, as OFA's expansion ratios are.
* **kernel size** — the 5×5 kernel is the stored one; a 3×3 kernel is its centre crop times a learned
  9×9 *kernel transform matrix* per layer, shared by its channels (OFA §3.2, initialised to identity).
* **widths** — the filter multipliers (the block's output width) and the expansion (MBConv3/6 of each
  layer's input) are the first channels of the widest weights (channel slicing); SE widths follow.
* **depth** — ``layers −1/0/+1`` keeps the first layers of a stage: trailing layers are dropped.
* **SE on/off, skip and activation** — SE weights are used or not; the identity skip is added when the
  decoded block has it; ReLU / h-swish are weight-free choices.

Training (:func:`train_supernet`) follows the *sandwich rule* with *in-place distillation* (BigNAS §3.1):
each step trains the largest subnet on the labels, then the smallest and ``n_random`` random ones on the
largest's soft predictions, and takes one optimizer step on the summed gradients. It checkpoints every
N steps atomically, resumes a killed run from its last checkpoint (every random draw is a function of
the seed and the step, so a resumed run ends with the same number of steps and the same weights), and
keeps the result in the cache directory under a key of (space, dataset, resolution, recipe, seed), so
that the next search reuses it.

A subnet is scored (:func:`score_subnet`) by copying its weights into a stand-alone model of the
ordinary builder (:meth:`SuperNet.extract`: ``search_spaces.builder.build_model`` of the spec, so the
weights are an ordinary checkpoint for NetAdapt, export and fine-tuning), recalibrating its BatchNorm
statistics on a fixed sample of training images (:func:`recalibrate_bn`) and measuring accuracy on the
held-out images the supernet never trained on.

**Resolution.** Subnets are trained and scored at :data:`SUPERNET_RESOLUTION` (72²): the smallest
multiple of 8 at which every searched block of the three spaces runs on maps of at least 3×3
(:func:`min_resolution`), the smallest size on which a 5×5 kernel computes something a 3×3 one cannot.
At the proxy's 32² the last two stages run on 2×2 and 1×1 maps and their kernel choices get no signal.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evaluation import accel
from evaluation.supernet_recipe import (  # noqa: F401 - re-exported: the supernet's names in one place
    BN_IMAGES,
    FORMAT,
    MAX_CHECKPOINT_BYTES,
    MIN_MAP,
    SCORE_IMAGES,
    SUPERNET_RESOLUTION,
    SUPERNET_VERSION,
    SupernetError,
    SupernetRecipe,
    cache_key,
    cache_path,
    partial_path,
    supernet_dir,
    train_command,
)
from search_spaces.builder import BN_EPS, ConvBlock, Linear, build_model, init_weights
from search_spaces.files import atomic_write_bytes
from search_spaces.scaling import se_channels
from search_spaces.spaces import SPACE_NAMES, FactorizedSpace, get_space
from search_spaces.spec import Activation, ArchSpec, Block, Gate, SpecError
from search_spaces.walk import Role, head_layers, stem_key, walk

# ------------------------------------------------------------------------------------------------
# Resolution: every searched block on maps of at least MIN_MAP × MIN_MAP
# ------------------------------------------------------------------------------------------------


def block_maps(space: FactorizedSpace, resolution: int) -> list[int]:
    """Output map size (pixels per side) of each searched stage's strided layer, in order.

    Every stage's first layer carries its stride; the maps a stage's later layers run on are its
    output size, so the smallest of these is the smallest map any searched layer sees.
    """
    size = (resolution - 1) // 2 + 1  # the stem (stride 2 in every space)
    out = []
    for base in space.baseline:
        size = (size - 1) // base.stride + 1
        out.append(size)
    return out


def min_resolution(space: FactorizedSpace, min_map: int = MIN_MAP, multiple: int = 8) -> int:
    """The smallest input resolution (a multiple of ``multiple``) at which every searched block runs
    on maps of at least ``min_map`` × ``min_map``."""
    r = multiple
    while min(block_maps(space, r)) < min_map:
        r += multiple
    return r


# ------------------------------------------------------------------------------------------------
# Dynamic layers: weights at the widest, sliced per subnet
# ------------------------------------------------------------------------------------------------


def _act(x: torch.Tensor, act: Activation | None) -> torch.Tensor:
    if act is None:
        return x
    return {Activation.RELU: F.relu, Activation.RELU6: F.relu6, Activation.HSWISH: F.hardswish,
            Activation.SWISH: F.silu}[act](x)


def _gate(x: torch.Tensor, gate: Gate) -> torch.Tensor:
    return F.hardsigmoid(x) if gate is Gate.HSIGMOID else torch.sigmoid(x)


class DynamicConv(nn.Module):
    """A k×k conv (regular or depthwise) stored at its widest and largest kernel.

    ``kernel_weight(cout, cin, k)`` is the subnet's kernel: the first ``cout`` (and ``cin``) channels,
    and for a smaller kernel the centre crop passed through the learned transform matrices of every
    kernel size on the way down (OFA's elastic kernel: 5×5 → 3×3 by a 9×9 matrix).
    """

    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...], depthwise: bool = False):
        super().__init__()
        self.kernels = tuple(sorted(set(kernels), reverse=True))
        self.depthwise = depthwise
        k = self.kernels[0]
        self.weight = nn.Parameter(torch.empty(cout, 1 if depthwise else cin, k, k))
        self.transforms = nn.ParameterList([nn.Parameter(torch.eye(s * s)) for s in self.kernels[1:]])

    def kernel_weight(self, cout: int, cin: int, k: int) -> torch.Tensor:
        w = self.weight[:cout] if self.depthwise else self.weight[:cout, :cin]
        size = self.kernels[0]
        for s, matrix in zip(self.kernels[1:], self.transforms):
            if s < k:
                break
            lo = (size - s) // 2
            w = w[:, :, lo:lo + s, lo:lo + s]
            w = F.linear(w.reshape(-1, s * s), matrix).reshape(w.shape[0], w.shape[1], s, s)
            size = s
        if size != k:
            raise SpecError("kernel_size", f"the supernet has kernels {self.kernels}, not {k}")
        return w

    def forward(self, x: torch.Tensor, cout: int, k: int, stride: int = 1) -> torch.Tensor:
        cin = x.shape[1]
        w = self.kernel_weight(cout, cin, k)
        return F.conv2d(x, w, None, stride, k // 2, 1, cin if self.depthwise else 1)


class DynamicBN(nn.BatchNorm2d):
    """BatchNorm over the first channels of its input (the statistics of a slice are a slice)."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=BN_EPS, momentum=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            self.training, self.momentum, self.eps)

    def export(self, c: int) -> dict[str, torch.Tensor]:
        return {"weight": self.weight[:c], "bias": self.bias[:c], "running_mean": self.running_mean[:c],
                "running_var": self.running_var[:c], "num_batches_tracked": self.num_batches_tracked}


class DynamicSE(nn.Module):
    """Squeeze-and-excite at its widest: pool → 1×1 (first ``se`` of ``c``) → ReLU → 1×1 → gate."""

    def __init__(self, channels: int, squeeze: int, gate: Gate):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1, bias=True)
        self.expand = nn.Conv2d(squeeze, channels, 1, bias=True)
        self.gate = gate

    def weights(self, c: int, se: int) -> dict[str, torch.Tensor]:
        return {"reduce.weight": self.reduce.weight[:se, :c], "reduce.bias": self.reduce.bias[:se],
                "expand.weight": self.expand.weight[:c, :se], "expand.bias": self.expand.bias[:c]}

    def forward(self, x: torch.Tensor, se: int) -> torch.Tensor:
        w = self.weights(x.shape[1], se)
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.relu(F.conv2d(s, w["reduce.weight"], w["reduce.bias"]))
        s = F.conv2d(s, w["expand.weight"], w["expand.bias"])
        return x * _gate(s, self.gate)


@dataclass
class SlotDims:
    """The widest channels a layer slot's family ever sees (over every reachable input width)."""

    cin: int = 0
    exp: int = 0
    cout: int = 0
    se: int = 0

    def grow(self, cin: int, exp: int, cout: int, se: int) -> None:
        self.cin, self.exp, self.cout, self.se = max(self.cin, cin), max(self.exp, exp), max(self.cout, cout), \
            max(self.se, se)


class ConvSlot(nn.Module):
    """MnasNet's regular-conv block: k×k conv → BN → act [→ SE] [+ identity]; as builder.ConvBlock."""

    def __init__(self, d: SlotDims, kernels: tuple[int, ...], gate: Gate):
        super().__init__()
        self.conv = DynamicConv(d.cin, d.cout, kernels)
        self.bn = DynamicBN(d.cout)
        self.se = DynamicSE(d.cout, d.se, gate) if d.se else None

    def forward(self, x: torch.Tensor, b: Block, se: int) -> torch.Tensor:
        y = _act(self.bn(self.conv(x, b.out_channels, b.kernel_size, b.stride)), b.activation)
        if b.se:
            y = self.se(y, se)
        return x + y if b.residual else y

    def export(self, b: Block, se: int) -> dict[str, torch.Tensor]:
        out = {"conv.0.weight": self.conv.kernel_weight(b.out_channels, b.in_channels, b.kernel_size)}
        out.update({f"conv.1.{k}": v for k, v in self.bn.export(b.out_channels).items()})
        if b.se:
            out.update({f"se.{k}": v for k, v in self.se.weights(b.out_channels, se).items()})
        return out


class InvertedSlot(nn.Module):
    """MBConv (with the 1×1 expansion) or depthwise-separable (without): as builder.InvertedResidual."""

    def __init__(self, d: SlotDims, kernels: tuple[int, ...], gate: Gate, expand: bool):
        super().__init__()
        width = d.exp if expand else d.cin
        self.expand = DynamicConv(d.cin, d.exp, (1,)) if expand else None
        self.expand_bn = DynamicBN(d.exp) if expand else None
        self.depthwise = DynamicConv(width, width, kernels, depthwise=True)
        self.depthwise_bn = DynamicBN(width)
        self.se = DynamicSE(width, d.se, gate) if d.se else None
        self.project = DynamicConv(width, d.cout, (1,))
        self.project_bn = DynamicBN(d.cout)

    def forward(self, x: torch.Tensor, b: Block, se: int) -> torch.Tensor:
        y = x
        if b.expand_channels != b.in_channels:
            y = _act(self.expand_bn(self.expand(y, b.expand_channels, 1)), b.activation)
        y = _act(self.depthwise_bn(self.depthwise(y, b.expand_channels, b.kernel_size, b.stride)), b.activation)
        if b.se:
            y = self.se(y, se)
        y = self.project_bn(self.project(y, b.out_channels, 1))
        return x + y if b.residual else y

    def export(self, b: Block, se: int) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        exp = b.expand_channels
        if exp != b.in_channels:
            out["expand.0.weight"] = self.expand.kernel_weight(exp, b.in_channels, 1)
            out.update({f"expand.1.{k}": v for k, v in self.expand_bn.export(exp).items()})
        out["depthwise.0.weight"] = self.depthwise.kernel_weight(exp, exp, b.kernel_size)
        out.update({f"depthwise.1.{k}": v for k, v in self.depthwise_bn.export(exp).items()})
        if b.se:
            out.update({f"se.{k}": v for k, v in self.se.weights(exp, se).items()})
        out["project.0.weight"] = self.project.kernel_weight(b.out_channels, exp, 1)
        out.update({f"project.1.{k}": v for k, v in self.project_bn.export(b.out_channels).items()})
        return out


# ------------------------------------------------------------------------------------------------
# The supernet
# ------------------------------------------------------------------------------------------------

Subnet = tuple[tuple[Block, ...], ...]
"""A subnet: the decoded layers of each searched stage (an empty tuple for a stage that was removed)."""


def _fixed_values(space: FactorizedSpace, **changes) -> dict[str, Any]:
    """Per-stage decision values (without the ``b{i}.`` prefix) with the first choice of each, changed."""
    values = {d.name.split(".", 1)[1]: d.choices[0] for d in space.decisions() if d.name.startswith("b0.")}
    values.update(changes)
    return values


def _choices(space: FactorizedSpace, field: str) -> tuple:
    return next(d.choices for d in space.decisions() if d.name == f"b0.{field}")


class SuperNet(nn.Module):
    """The weights every architecture of ``space`` shares; ``forward(x, subnet)`` runs one of them.

    Attributes:
        space: the search space (its input channels and classes are the network's).
        stem, head_conv, hidden, classifier: the fixed parts (the head conv's input is sliced).
        stages: ``stages[i][j]`` is the slot of layer j of searched stage i: a ModuleDict with one
            module per op family that can reach it (``conv``, ``dsconv``, ``mbconv``).
    """

    def __init__(self, space: FactorizedSpace):
        super().__init__()
        self.space = space
        self.reference = space.decode(space.sample(np.random.default_rng(0)))
        ref = self.reference
        self.kernels = tuple(sorted(_choices(space, "kernel")))
        dims, head_in = self._dims()
        self.dims = dims
        self.stem = ConvBlock(stem_key(ref, space.resolution))
        self.stages = nn.ModuleList()
        for stage in dims:
            slots = nn.ModuleList()
            for families in stage:
                slot = nn.ModuleDict()
                for family, d in families.items():
                    if family == "conv":
                        slot[family] = ConvSlot(d, self.kernels, ref.se.gate)
                    else:
                        slot[family] = InvertedSlot(d, self.kernels, ref.se.gate, expand=family == "mbconv")
                slots.append(slot)
            self.stages.append(slots)
        self.head_in = head_in
        heads = {role: (key, dropout) for role, key, dropout in head_layers(ref.head, head_in, 1, space.num_classes)}
        self.head_conv = self.head_bn = None
        if Role.HEAD_CONV in heads:
            self.head_conv = DynamicConv(head_in, ref.head.conv_channels, (1,))
            self.head_bn = DynamicBN(ref.head.conv_channels)
        self.hidden = Linear(*heads[Role.HEAD_HIDDEN]) if Role.HEAD_HIDDEN in heads else None
        self.classifier = Linear(*heads[Role.CLASSIFIER])
        init_weights(self)
        for m in self.modules():  # init_weights leaves these alone: identity kernel transforms
            if isinstance(m, DynamicConv):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                for t in m.transforms:
                    nn.init.eye_(t)

    def _dims(self) -> tuple[list[list[dict[str, SlotDims]]], int]:
        """Widest channels per (stage, layer, family), by a walk over every reachable input width."""
        space, ref = self.space, self.reference
        ops, filters, layers = (_choices(space, f) for f in ("op", "filters", "layers"))
        states = {ref.stem.out_channels}
        dims: list[list[dict[str, SlotDims]]] = []
        for i in range(len(space.baseline)):
            stage: list[dict[str, SlotDims]] = []
            reached = set()
            for prev in sorted(states):
                for op, f, n in itertools.product(ops, filters, layers):
                    blocks = space.stage(i, prev, _fixed_values(space, op=op, filters=f, layers=n,
                                                                 se=max(_choices(space, "se"))))
                    for j, b in enumerate(blocks):
                        while len(stage) <= j:
                            stage.append({})
                        d = stage[j].setdefault(b.kind.value, SlotDims())
                        d.grow(b.in_channels, b.expand_channels, b.out_channels,
                               se_channels(ref.se, b.in_channels, b.expand_channels))
                    reached.add(blocks[-1].out_channels if blocks else prev)
            dims.append(stage)
            states = reached
        return dims, max(states)

    # -- subnets -----------------------------------------------------------------------------
    def subnet(self, params: Mapping[str, Any]) -> Subnet:
        """The subnet of a full decision vector (decoded by the space, stage by stage)."""
        stages, prev = [], self.reference.stem.out_channels
        for i in range(len(self.space.baseline)):
            values = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(f"b{i}.")}
            blocks = tuple(self.space.stage(i, prev, values))
            stages.append(blocks)
            if blocks:
                prev = blocks[-1].out_channels
        return tuple(stages)

    def subnet_of(self, spec: ArchSpec) -> Subnet:
        """The subnet of an architecture of the space (SpecError naming the space if it is not one)."""
        if (spec.in_channels, spec.num_classes) != (self.space.in_channels, self.space.num_classes):
            raise SupernetError(f"architecture {spec.name or spec.arch_id} has {spec.in_channels} input channels and "
                                f"{spec.num_classes} classes; the supernet has {self.space.in_channels} and "
                                f"{self.space.num_classes}")
        params = self.space.with_io(resolution=spec.resolution).encode(spec)
        return self.subnet(params)

    def largest(self) -> dict[str, Any]:
        """The sandwich rule's largest subnet: MBConv6, 5×5, SE, widest, deepest, h-swish, with skips."""
        return self._corner(max)

    def smallest(self) -> dict[str, Any]:
        """The smallest: depthwise-separable, 3×3, no SE, narrowest, shallowest, ReLU, with skips."""
        return self._corner(min)

    def _corner(self, pick) -> dict[str, Any]:
        big = pick is max
        out = {}
        for d in self.space.decisions():
            field = d.name.split(".", 1)[1]
            if field == "op":
                out[d.name] = "mbconv6" if big else "dsconv"
            elif field == "act":
                out[d.name] = "hswish" if big else "relu"
            elif field == "skip":
                out[d.name] = "identity"
            else:
                out[d.name] = pick(d.choices)
        return out

    def _se(self, b: Block) -> int:
        return se_channels(self.reference.se, b.in_channels, b.expand_channels)

    # -- forward and extraction --------------------------------------------------------------------
    def forward(self, x: torch.Tensor, subnet: Subnet, features: list | None = None) -> torch.Tensor:
        """Logits of ``subnet`` on ``x``; ``features``, when given, receives the stem's output and then
        each searched stage's output (None for a stage the subnet removed)."""
        x = self.stem(x)
        if features is not None:
            features.append(x)
        for i, blocks in enumerate(subnet):
            x = self.run_stage(i, x, blocks)
            if features is not None:
                features.append(x if blocks else None)
        return self.head(x)

    def run_stage(self, i: int, x: torch.Tensor, blocks: tuple[Block, ...]) -> torch.Tensor:
        """Searched stage ``i`` of a subnet (its decoded ``blocks``) on ``x``."""
        for slot, b in zip(self.stages[i], blocks):
            x = slot[b.kind.value](x, b, self._se(b))
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed head (its conv's input sliced to ``x``'s width) on the last stage's output."""
        if self.head_conv is not None:
            x = _act(self.head_bn(self.head_conv(x, self.reference.head.conv_channels, 1)),
                     self.reference.head.activation)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        if self.hidden is not None:
            x = self.hidden(x)
        return self.classifier(x)

    def extract(self, spec: ArchSpec) -> nn.Module:
        """A stand-alone ``build_model(spec)`` holding this subnet's weights (and BN statistics).

        The extracted model computes what ``forward(x, subnet_of(spec))`` computes (eval mode); its
        ``state_dict()`` is an ordinary checkpoint of the spec.
        """
        subnet = self.subnet_of(spec)
        model = build_model(spec)
        blocks = [(self.stages[i][j], b) for i, stage in enumerate(subnet) for j, b in enumerate(stage)]
        state: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for layer in walk(spec):
                prefix = f"layers.{layer.index}."
                if layer.role is Role.STEM:
                    part = self.stem.state_dict()
                elif layer.role is Role.BLOCK:
                    slot, b = blocks[layer.block_index]
                    part = slot[b.kind.value].export(b, self._se(b))
                elif layer.role is Role.HEAD_CONV:
                    c = self.reference.head.conv_channels
                    part = {"conv.0.weight": self.head_conv.kernel_weight(c, layer.key.in_channels, 1),
                            **{f"conv.1.{k}": v for k, v in self.head_bn.export(c).items()}}
                elif layer.role is Role.HEAD_HIDDEN:
                    part = self.hidden.state_dict()
                elif layer.role is Role.CLASSIFIER:
                    part = self.classifier.state_dict()
                else:
                    part = {}
                state.update({prefix + k: v.detach().clone().contiguous() for k, v in part.items()})
        model.load_state_dict(state, strict=True)
        return model


def build_supernet(space: str | FactorizedSpace, in_channels: int = 3, num_classes: int = 1000) -> SuperNet:
    """The supernet of a registered space (by name) or of a space object, for the given input and classes."""
    if isinstance(space, str):
        space = get_space(space, in_channels=in_channels, num_classes=num_classes)
    return SuperNet(space)


# ------------------------------------------------------------------------------------------------
# BatchNorm recalibration
# ------------------------------------------------------------------------------------------------


def recalibrate_bn(model: nn.Module, images: torch.Tensor, cfg, stats, batch_size: int = 250) -> None:
    """Reset every BatchNorm's running statistics and recompute them on ``images`` (uint8 N×C×H×W).

    The statistics are the exact average over equal batches of ``batch_size`` (momentum None: a
    cumulative average, the last partial batch dropped unless it is the only one); only BN layers
    run in training mode (dropout stays off). ``cfg`` (a :class:`evaluation.training.TrainConfig`)
    gives the preprocessing and the device; the model is left in eval mode.
    """
    from evaluation.training import preprocess

    dev = accel.device(cfg.device)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    model.to(dev, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    n = len(images)
    step = min(batch_size, n)
    try:
        with torch.inference_mode(), accel.autocast(dev):
            for start in range(0, max(n - step + 1, 1), step):
                model(preprocess(accel.to_device(images[start:start + step], dev), cfg, stats))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()


# ------------------------------------------------------------------------------------------------
# Training: the sandwich rule with in-place distillation
# ------------------------------------------------------------------------------------------------



@dataclass
class SupernetOutcome:
    path: Path
    meta: dict
    resumed_from: int | None
    wall_s: float
    images_per_s: float | None


PROGRESS_EVERY_S = 10.0
"""Longest silence of a supernet training between progress lines (a line also every ``log_every`` steps)."""


def _planned_steps(recipe: SupernetRecipe, n_train: int) -> int:
    if recipe.steps is not None:
        return recipe.steps
    return max(1, round(recipe.epochs * (n_train // recipe.batch_size)))


def _batch(train_idx: torch.Tensor, step: int, batch_size: int, seed: int) -> torch.Tensor:
    """The training indices of ``step``: a fresh seeded shuffle per epoch, a function of (seed, step)."""
    per_epoch = max(1, len(train_idx) // batch_size)
    epoch, k = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = train_idx[torch.randperm(len(train_idx), generator=g)]
    return order[k * batch_size:(k + 1) * batch_size]


def _param_groups(net: SuperNet, weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, p in net.named_parameters():
        (plain if p.ndim <= 1 or ".transforms." in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def _soft_ce(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return -(target_probs * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def _torch_save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _contiguous(state: dict) -> dict:
    return {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def sandwich_step(net: SuperNet, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, x: torch.Tensor,
                  y: torch.Tensor, subnets: list[Mapping[str, Any]], criterion: nn.Module,
                  dev: torch.device) -> tuple[float, float]:
    """One optimizer step of the sandwich rule with in-place distillation (BigNAS §3.1).

    ``subnets[0]`` (the largest) learns the labels through ``criterion``; every other subnet learns the
    largest's soft predictions on the same batch (cross-entropy to its softmax, detached). Gradients of
    all subnets are summed into one step of ``opt`` (through ``scaler``: loss scaling on CUDA, a
    pass-through on the CPU). Returns (largest's loss, mean distillation loss of the others).
    """
    from evaluation.training import TrainingDiverged

    opt.zero_grad(set_to_none=True)
    teacher = None
    out = [0.0, 0.0]
    for k, params in enumerate(subnets):
        with accel.autocast(dev):
            logits = net(x, net.subnet(params))
            loss = criterion(logits, y) if k == 0 else _soft_ce(logits, teacher)
        value = float(loss.detach())
        if not math.isfinite(value) or value > 100:
            raise TrainingDiverged(0, value, what=f"supernet loss of subnet {k}")
        scaler.scale(loss).backward()
        if k == 0:
            teacher = F.softmax(logits.detach().float(), dim=1)
            out[0] = value
        else:
            out[1] += value / (len(subnets) - 1)
    scaler.step(opt)
    scaler.update()
    return out[0], out[1]


def read_checkpoint(path: Path) -> dict:
    """A supernet file's content (``weights_only``: no pickled code runs); SupernetError if it is not one."""
    from evaluation.evaluate import WeightsError, read_weights_only

    try:
        data = read_weights_only(path, limit=MAX_CHECKPOINT_BYTES, what="supernet")
    except WeightsError as e:
        if not e.unpickling:
            raise SupernetError(str(e)) from None
        # a truncated or foreign file: say so, never retrain over it
        raise SupernetError(f"supernet checkpoint {path} is corrupt or truncated ({e.unpickling}); delete it to start "
                            "over, it is never overwritten silently") from None
    if not isinstance(data, dict) or not isinstance(data.get("meta"), dict) or data["meta"].get("format") != FORMAT:
        raise SupernetError(f"{path} is not a supernet checkpoint of this framework")
    if not isinstance(data.get("model"), dict):
        raise SupernetError(f"supernet checkpoint {path} holds no weights; delete it to start over")
    return data


def check_meta(meta: dict, path: Path, *, space: str | None = None, dataset: str | None = None,
               resolution: int | None = None, holdout: int | None = None, split_seed: int | None = None) -> None:
    """SupernetError naming the first mismatch between a checkpoint and what is expected of it."""
    if meta.get("version") != SUPERNET_VERSION:
        raise SupernetError(f"supernet {path} was made by supernet code version {meta.get('version')}; this is "
                            f"version {SUPERNET_VERSION}: train a new one ({train_command(meta.get('space', '?'))})")
    recipe = meta.get("recipe", {})
    for what, want, have in (("space", space, meta.get("space")), ("dataset", dataset, meta.get("dataset")),
                             ("resolution", resolution, recipe.get("resolution_px")),
                             ("held-out images", holdout, recipe.get("holdout")),
                             ("held-out split seed", split_seed, recipe.get("split_seed"))):
        if want is not None and want != have:
            raise SupernetError(f"supernet {path} is of another {what}: {have!r}, not {want!r}"
                                + (" (its training images would overlap the held-out ones)" if "held-out" in what
                                   else ""))


def _lock(path: Path):
    """An exclusive lock on training ``path`` (two trainers of one supernet would overwrite each other)."""
    import fcntl

    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SupernetError(f"another process is training this supernet ({path}); wait for it to finish") from None
    return fd


def train_supernet(space: str, recipe: SupernetRecipe | None = None, *, dataset: str = "fashion-mnist",
                   data_dir: str | None = None, device: str = "auto", threads: int | None = None,
                   checkpoint_every: int = 200, log_every: int = 20, path: str | Path | None = None,
                   force: bool = False, echo: Callable[[str], None] | None = print,
                   stop_after: int | None = None) -> SupernetOutcome:
    """Train (or finish, or reuse) the supernet of ``space`` on ``dataset``; returns its file.

    ``recipe`` defaults to ``SupernetRecipe()``. The file is :func:`cache_path` unless ``path`` is given.
    A finished file is reused as it is (``force`` retrains); a checkpoint in progress (``*.partial.pt``,
    written atomically every ``checkpoint_every`` steps) is resumed; an unreadable one is an error, never
    silently overwritten (``force`` discards it). ``stop_after`` ends the run after that many steps in
    total, leaving a checkpoint (for tests).
    """
    from evaluation.evaluate import EvalConfig, dataset_split
    from evaluation.training import TrainConfig, TrainingDiverged, channel_stats, learning_rate, preprocess

    if space not in SPACE_NAMES:
        raise SupernetError(f"unknown search space {space!r}; known: {', '.join(SPACE_NAMES)}")
    recipe = recipe or SupernetRecipe()
    dev = accel.device(device)
    data, train_idx, _ = dataset_split(EvalConfig(dataset=dataset, data_dir=data_dir, holdout=recipe.holdout,
                                                  train_subset=recipe.train_subset, split_seed=recipe.split_seed))
    final = Path(path) if path else cache_path(space, data.name, recipe)
    partial = partial_path(final)
    fd = _lock(final)
    try:
        if force:
            final.unlink(missing_ok=True)
            partial.unlink(missing_ok=True)
        if final.exists():
            meta = read_checkpoint(final)["meta"]
            check_meta(meta, final, space=space, dataset=data.name, resolution=recipe.resolution_px)
            if meta.get("recipe") != recipe.to_dict():
                raise SupernetError(f"supernet {final} was trained with another recipe; choose another file")
            if echo:
                echo(f"supernet {final} is trained already ({meta['steps']} steps); reusing it")
            return SupernetOutcome(final, meta, None, 0.0, None)
        train_idx = torch.as_tensor(np.asarray(train_idx), dtype=torch.int64)
        stats = channel_stats(data.train_images[train_idx])
        total = _planned_steps(recipe, len(train_idx))
        batch_size = min(recipe.batch_size, len(train_idx))
        space_obj = get_space(space, in_channels=data.channels, num_classes=data.num_classes)
        torch.manual_seed(recipe.seed)
        net = SuperNet(space_obj)
        meta = {"format": FORMAT, "version": SUPERNET_VERSION, "space": space, "dataset": data.name,
                "source": data.source, "classes": data.num_classes, "in_channels": data.channels,
                "recipe": recipe.to_dict(), "key": cache_key(space, data.name, recipe), "steps": total,
                "train_images": len(train_idx), "stats": {"mean": list(stats.mean), "std": list(stats.std)},
                "params": sum(p.numel() for p in net.parameters()), "torch": str(torch.__version__), "complete": False}
        previous_threads = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        memory_format = torch.channels_last
        net.to(dev, memory_format=memory_format)
        opt = torch.optim.SGD(_param_groups(net, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum,
                              nesterov=recipe.momentum > 0)
        scaler = accel.grad_scaler(dev)
        step, elapsed_before, resumed_from = 0, 0.0, None
        if partial.exists():
            ck = read_checkpoint(partial)
            check_meta(ck["meta"], partial, space=space, dataset=data.name, resolution=recipe.resolution_px)
            if ck["meta"].get("key") != meta["key"]:
                raise SupernetError(f"checkpoint {partial} belongs to another recipe; delete it to start over")
            try:
                net.load_state_dict(ck["model"])
                opt.load_state_dict(ck["optimizer"])
                if ck.get("scaler"):
                    scaler.load_state_dict(ck["scaler"])
            except (RuntimeError, KeyError, ValueError) as e:
                raise SupernetError(f"checkpoint {partial} does not fit this supernet ({str(e).splitlines()[0][:160]});"
                                    " delete it to start over") from None
            step, elapsed_before, resumed_from = int(ck["step"]), float(ck.get("elapsed_s", 0.0)), int(ck["step"])
            if echo:
                echo(f"resuming supernet training from step {step}/{total} ({partial})")
        tcfg = TrainConfig(batch_size=batch_size, lr=recipe.lr, warmup_fraction=recipe.warmup_fraction,
                           resolution_px=recipe.resolution_px, in_channels=data.channels, device=str(dev))
        if echo and resumed_from is None:
            echo(f"training the {space} supernet ({meta['params']:,} parameters) on {data.name} at "
                 f"{recipe.resolution_px}², {total} steps of {batch_size} images × {2 + recipe.n_random} subnets "
                 f"(sandwich rule, in-place distillation), on {accel.describe(dev)}; file {final}")

        def save(path_: Path, with_state: bool) -> None:
            blob = {"meta": {**meta, "complete": not with_state, "trained_steps": step,
                             "train_s": elapsed_before + (time.perf_counter() - started)},
                    "model": _contiguous({k: v.detach().cpu() for k, v in net.state_dict().items()})}
            if with_state:
                blob.update(optimizer=opt.state_dict(), scaler=scaler.state_dict(), step=step,
                            elapsed_s=elapsed_before + (time.perf_counter() - started))
            atomic_write_bytes(path_, _torch_save(blob))

        started = time.perf_counter()
        window_t, window_steps, losses = time.perf_counter(), 0, [0.0, 0.0]
        net.train()
        criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        first = step
        try:
            while step < total and (stop_after is None or step < stop_after):
                lr = learning_rate(step, total, tcfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                idx = _batch(train_idx, step, batch_size, recipe.seed)
                gen = torch.Generator().manual_seed(recipe.seed * 7_919 + step)
                x = preprocess(accel.to_device(data.train_images[idx], dev), tcfg, stats, gen)
                y = accel.to_device(data.train_labels[idx], dev)
                rng = np.random.default_rng([recipe.seed, step])
                subnets = [net.largest(), net.smallest()] + [space_obj.sample(rng) for _ in range(recipe.n_random)]
                torch.manual_seed(recipe.seed * 1_000_033 + step)
                try:
                    largest, distilled = sandwich_step(net, opt, scaler, x, y, subnets, criterion, dev)
                except TrainingDiverged as e:
                    raise TrainingDiverged(step, e.loss, what="supernet loss") from None
                losses[0] += largest
                losses[1] += distilled
                step += 1
                window_steps += 1
                if checkpoint_every and step % checkpoint_every == 0 and step < total:
                    save(partial, True)
                if echo and (window_steps == log_every or step == total
                             or time.perf_counter() - window_t >= PROGRESS_EVERY_S):
                    accel.synchronize(dev)
                    now = time.perf_counter()
                    rate = window_steps * batch_size / (now - window_t)
                    eta = (total - step) * (now - started) / max(step - first, 1)
                    echo(f"[{step}/{total}] loss {losses[0] / window_steps:.3f} (largest), "
                         f"{losses[1] / window_steps:.3f} (distilled) | lr {lr:.4f} | {rate:.0f} images/s | "
                         f"ETA {int(eta // 3600)}h{int(eta % 3600 // 60):02d}m{int(eta % 60):02d}s")
                    window_t, window_steps, losses = now, 0, [0.0, 0.0]
        finally:
            if threads:
                torch.set_num_threads(previous_threads)
        wall = time.perf_counter() - started
        rate = (step - first) * batch_size / wall if step > first and wall > 0 else None
        if step < total:  # stopped early on request: leave a checkpoint to resume from
            save(partial, True)
            return SupernetOutcome(partial, {**meta, "trained_steps": step}, resumed_from, wall, rate)
        save(final, False)
        partial.unlink(missing_ok=True)
        meta = read_checkpoint(final)["meta"]
        if echo:
            echo(f"supernet trained: {final} ({step} steps, {meta['train_s'] / 60:.1f} min in all)")
        return SupernetOutcome(final, meta, resumed_from, wall, rate)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------
# Loading, finding, and scoring subnets
# ------------------------------------------------------------------------------------------------

_LOADED: dict[tuple, "TrainedSupernet"] = {}


@dataclass
class TrainedSupernet:
    """A finished supernet file, loaded: the network (eval mode, CPU) and its metadata."""

    path: Path
    meta: dict
    net: SuperNet

    @property
    def resolution(self) -> int:
        return self.meta["recipe"]["resolution_px"]

    def stats(self):
        from evaluation.training import ChannelStats

        return ChannelStats(tuple(self.meta["stats"]["mean"]), tuple(self.meta["stats"]["std"]))


def load_supernet(path: str | Path, **expect) -> TrainedSupernet:
    """Load a finished supernet (kept per process), checking it against ``expect`` (see :func:`check_meta`)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise SupernetError(f"no supernet at {path}") from None
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _LOADED:
        data = read_checkpoint(path)
        meta = data["meta"]
        check_meta(meta, path, **expect)
        if not meta.get("complete"):
            raise SupernetError(f"{path} is a supernet training in progress, not a finished supernet; finish it "
                                f"with `{train_command(meta.get('space', '?'), meta.get('dataset', 'fashion-mnist'))}`")
        space = get_space(meta["space"], in_channels=meta["in_channels"], num_classes=meta["classes"])
        net = SuperNet(space)
        try:
            net.load_state_dict(data["model"])
        except RuntimeError as e:
            raise SupernetError(f"supernet {path} does not fit this code's {meta['space']} supernet "
                                f"({str(e).splitlines()[0][:160]}); train a new one") from None
        net.eval()
        _LOADED.clear()
        _LOADED[key] = TrainedSupernet(path, meta, net)
    sn = _LOADED[key]
    check_meta(sn.meta, path, **expect)
    return sn


def find_supernet(space: str, dataset: str, *, holdout: int, split_seed: int, resolution: int | None = None) -> Path:
    """The cached supernet a search of ``space`` on ``dataset`` uses: the default recipe's (with this
    held-out split) if it is trained, else the newest finished one in the cache of the same space, data
    set and held-out split (and ``resolution``, if given). SupernetError with the command that trains
    one if there is none."""
    recipe = SupernetRecipe(holdout=holdout, split_seed=split_seed,
                            **({"resolution_px": resolution} if resolution else {}))
    exact = cache_path(space, dataset, recipe)
    if exact.exists():
        return exact
    pattern = f"{space}-{dataset}-{resolution}px-*.pt" if resolution else f"{space}-{dataset}-*px-*.pt"
    candidates = sorted((p for p in supernet_dir().glob(pattern) if not p.name.endswith(".partial.pt")),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    for p in candidates:
        try:
            meta = read_checkpoint(p)["meta"]
            check_meta(meta, p, space=space, dataset=dataset, resolution=resolution, holdout=holdout,
                       split_seed=split_seed)
        except SupernetError:
            continue
        if meta.get("complete"):
            return p
    options = "".join([f" --dataset {dataset}" if dataset != "fashion-mnist" else "",
                       f" --holdout {holdout}" if holdout != SupernetRecipe.holdout else "",
                       f" --split-seed {split_seed}" if split_seed != SupernetRecipe.split_seed else "",
                       f" --resolution {resolution}" if resolution else ""])
    raise SupernetError(f"no trained supernet for space {space} on {dataset} (held-out {holdout} images, split seed "
                        f"{split_seed}" + (f", {resolution}²" if resolution else "") + f") in {supernet_dir()}; "
                        f"train one with `nas supernet train --space {space}{options}`, or pass --supernet FILE")


def calibration_indices(train_idx, n: int, seed: int) -> np.ndarray:
    """The fixed sample of training images that recalibrates BatchNorm (the same for every subnet)."""
    train_idx = np.asarray(train_idx)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(train_idx, size=min(n, len(train_idx)), replace=False))


def score_indices(val_idx, n: int | None, seed: int) -> np.ndarray:
    """The fixed, seeded sample of ``n`` held-out images that scores every subnet (all of them when
    ``n`` is None or not smaller). A random sample, never the first ``n``: the held-out indices are
    sorted, and an image folder lists its classes in order."""
    val_idx = np.asarray(val_idx)
    if n is None or n >= len(val_idx):
        return val_idx
    rng = np.random.default_rng([seed, 1])  # a stream of its own: not the calibration sample's
    return np.sort(rng.choice(val_idx, size=n, replace=False))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference with every BatchNorm that directly follows a convolution (in
    an ``nn.Sequential``, as :func:`search_spaces.builder.conv_bn_act` lays them out) folded into the
    convolution's weights and bias, using the running statistics. Outputs equal the model's in eval
    mode up to float rounding (≈1e-6); a held-out pass runs 10–45 % faster on a CPU (BN is ≈ 27 % of
    an unfolded subnet's time at 72²). The original is not touched."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            conv, norm = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                module._modules[a] = fuse_conv_bn_eval(conv, norm)
                module._modules[b] = nn.Identity()
    return folded


def score_subnet(spec: ArchSpec, cfg, bn_images: int = BN_IMAGES, init: Callable[[nn.Module], None] | None = None,
                 score_images: int | None = SCORE_IMAGES):
    """Held-out accuracy of ``spec`` as a subnet of the supernet ``cfg.supernet`` (an
    :class:`evaluation.evaluate.EvalConfig`): extract it into a stand-alone model, recalibrate its
    BatchNorm statistics on a fixed sample of ``bn_images`` training images, fold BatchNorm into the
    convolutions, and score a fixed, seeded sample of ``score_images`` held-out images (None: all;
    ``max_batches_eval`` of ``cfg.train`` caps it further) at the supernet's resolution. ``init``
    acts on the extracted model first (fault injection in tests).
    Returns ``(model, TrainResult)`` like the proxy's training; a non-finite held-out loss raises
    :class:`evaluation.training.TrainingDiverged`."""
    from evaluation.evaluate import dataset_split
    from evaluation.training import TrainConfig, TrainingDiverged, TrainResult, evaluate

    if not cfg.supernet:
        raise SupernetError("the supernet evaluator needs a trained supernet (EvalConfig.supernet); "
                            "train one with `nas supernet train --space SPACE`")
    sn = load_supernet(cfg.supernet, dataset=cfg.dataset, holdout=cfg.holdout, split_seed=cfg.split_seed)
    data, train_idx, val_idx = dataset_split(cfg)
    tcfg = TrainConfig(**{**cfg.train, "resolution_px": sn.resolution, "in_channels": spec.in_channels})
    dev = accel.device(tcfg.device)
    previous_threads = torch.get_num_threads()
    if tcfg.threads is not None:
        torch.set_num_threads(tcfg.threads)
    try:
        t0 = time.perf_counter()
        model = sn.net.extract(spec)
        if init is not None:
            init(model)
        calib = torch.as_tensor(calibration_indices(train_idx, bn_images, cfg.split_seed))
        stats = sn.stats()
        recalibrate_bn(model, data.train_images[calib], tcfg, stats)
        accel.synchronize(dev)
        t1 = time.perf_counter()
        val = torch.as_tensor(score_indices(val_idx, score_images, cfg.split_seed))
        acc, loss = evaluate(fold_batchnorm(model), data.train_images[val], data.train_labels[val], tcfg,
                             stats=stats)
        t2 = time.perf_counter()
    finally:
        torch.set_num_threads(previous_threads)
    model.to("cpu")
    if not math.isfinite(loss):
        raise TrainingDiverged(0, loss, what="held-out loss of the subnet")
    count = min(len(val), (tcfg.max_batches_eval or len(val)) * tcfg.eval_batch_size)
    return model, TrainResult(val_accuracy=acc, val_loss=loss, val_count=count, train_loss_curve=(), steps=0,
                              planned_steps=0, epochs=0.0, images_per_s=count / (t2 - t1) if t2 > t1 else 0.0,
                              train_time_s=t1 - t0, eval_time_s=t2 - t1, stopped_early=False, input_stats=stats)

