"""Channel groups of a spec, and weight inheritance when a group shrinks.

A *channel group* is a set of widths in a spec that must stay equal for the network to be valid:

* a **bottleneck** group is one tensor width and everything that reads or writes it: the layer that
  produces it (the stem or a block's projection), every residual block on it (their input and output,
  since an identity skip adds the two), and every consumer's input (NetAdapt's "shrink the bottleneck
  of all blocks that share it, so residual connections stay valid", MobileNetV3 §4.2);
* an **expansion** group is one MBConv block's expanded width (MobileNetV3's "reduce the size of any
  expansion layer");
* a **head** group is the last stage's 1×1 conv or its hidden (NBN) layer.

Groups come from a union-find over the spec's width slots, so every tie the spec's rules imply is
found, not hard-coded: a depthwise-separable block's depthwise width is its input, a regular conv's
is its output, and an MBConv block without an expansion conv keeps exp == in.

Weight inheritance (NetAdapt: keep the filters with the largest L2 norm) maps every tensor of the
parent's state dict to the channel groups of its dimensions, picks the kept channels of each shrunk
group once, from the squared L2 norms of the filters that *write* the group, and slices every tensor
that reads or writes it: convs, batch norms, squeeze-and-excite and the next layer's input. The same
kept channels are used everywhere in a group, so residual sums stay aligned.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

import torch

from search_spaces.spec import ArchSpec, BlockKind
from search_spaces.walk import LayerKind, Role, walk

Slot = tuple  # ("stem",), ("in", i), ("exp", i), ("out", i), ("head_conv",), ("head_hidden",)


@dataclass(frozen=True)
class ChannelGroup:
    """Widths that must stay equal.

    Attributes:
        index: position in :func:`channel_groups` (stable for specs of the same structure).
        kind: ``"bottleneck"``, ``"expansion"`` or ``"head"``.
        slots: the spec fields tied together.
        width: their common width.
        blocks: indices of the blocks it touches (as producer, member or consumer).
    """

    index: int
    kind: str
    slots: tuple[Slot, ...]
    width: int
    blocks: tuple[int, ...]

    @property
    def name(self) -> str:
        if self.kind == "expansion":
            return f"blocks[{self.blocks[0]}].expand"
        if self.kind == "head":
            return "head." + ("conv" if self.slots[0] == ("head_conv",) else "hidden")
        produced = [s for s in self.slots if s[0] in ("stem", "out")]
        first = "stem" if produced[0][0] == "stem" else f"blocks[{produced[0][1]}]"
        consumed = any(s[0] == "in" for s in self.slots) and self.blocks[-1] != produced[0][-1]
        return f"bottleneck {first}.." + (f"blocks[{self.blocks[-1]}]" if consumed else "head")


def _slot_widths(spec: ArchSpec) -> dict[Slot, int]:
    widths: dict[Slot, int] = {("stem",): spec.stem.out_channels}
    for i, b in enumerate(spec.blocks):
        widths[("in", i)], widths[("exp", i)], widths[("out", i)] = b.in_channels, b.expand_channels, b.out_channels
    if spec.head.conv_channels:
        widths[("head_conv",)] = spec.head.conv_channels
    if spec.head.hidden_channels:
        widths[("head_hidden",)] = spec.head.hidden_channels
    return widths


def _ties(spec: ArchSpec) -> list[tuple[Slot, Slot]]:
    ties = []
    for i, b in enumerate(spec.blocks):
        ties.append((("in", i), ("stem",) if i == 0 else ("out", i - 1)))
        if b.residual:
            ties.append((("in", i), ("out", i)))
        if b.kind is BlockKind.CONV:
            ties.append((("exp", i), ("out", i)))
        elif b.kind is BlockKind.DSCONV or b.expand_channels == b.in_channels:
            ties.append((("exp", i), ("in", i)))
    return ties


def channel_groups(spec: ArchSpec) -> list[ChannelGroup]:
    """The spec's channel groups, in network order (by their first slot)."""
    widths = _slot_widths(spec)
    parent = {s: s for s in widths}

    def find(s: Slot) -> Slot:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    for a, b in _ties(spec):
        parent[find(a)] = find(b)
    members: dict[Slot, list[Slot]] = {}
    for s in widths:  # dict order = network order
        members.setdefault(find(s), []).append(s)
    groups = []
    for slots in members.values():
        head = slots[0][0] in ("head_conv", "head_hidden")
        bottleneck = any(s[0] in ("stem", "in", "out") for s in slots)
        kind = "head" if head else ("bottleneck" if bottleneck else "expansion")
        blocks = tuple(sorted({s[1] for s in slots if len(s) == 2}))
        groups.append(ChannelGroup(len(groups), kind, tuple(slots), widths[slots[0]], blocks))
    return groups


def with_widths(spec: ArchSpec, widths: Mapping[int, int]) -> ArchSpec:
    """``spec`` with channel group ``g`` set to ``widths[g]`` (groups as in :func:`channel_groups`).

    Raises :class:`search_spaces.SpecError` if the result is not a valid spec.
    """
    slot_width: dict[Slot, int] = {}
    for g in channel_groups(spec):
        for s in g.slots:
            slot_width[s] = widths.get(g.index, g.width)
    blocks = [
        dataclasses.replace(b, in_channels=slot_width[("in", i)], expand_channels=slot_width[("exp", i)],
                            out_channels=slot_width[("out", i)])
        for i, b in enumerate(spec.blocks)
    ]
    head = dataclasses.replace(spec.head, conv_channels=slot_width.get(("head_conv",), 0),
                               hidden_channels=slot_width.get(("head_hidden",), 0))
    stem = dataclasses.replace(spec.stem, out_channels=slot_width[("stem",)])
    return spec.replace(stem=stem, blocks=tuple(blocks), head=head)


def same_structure(a: ArchSpec, b: ArchSpec) -> bool:
    """Same layers and the same modules in each (widths may differ): weights can be inherited."""
    if len(a.blocks) != len(b.blocks) or a.stem.kernel_size != b.stem.kernel_size:
        return False
    if bool(a.head.conv_channels) != bool(b.head.conv_channels):
        return False
    if bool(a.head.hidden_channels) != bool(b.head.hidden_channels):
        return False
    for x, y in zip(a.blocks, b.blocks):
        if (x.kind, x.kernel_size, x.stride, x.se, x.residual, x.activation) != (
                y.kind, y.kernel_size, y.stride, y.se, y.residual, y.activation):
            return False
        if x.kind is BlockKind.MBCONV and (x.expand_channels == x.in_channels) != (y.expand_channels == y.in_channels):
            return False  # an MBConv's 1×1 expansion conv would appear or vanish
    return [g.slots for g in channel_groups(a)] == [g.slots for g in channel_groups(b)]


# --------------------------------------------------------------------------------------------
# Weight inheritance
# --------------------------------------------------------------------------------------------


def tensor_groups(spec: ArchSpec) -> dict[str, tuple]:
    """Each state-dict tensor name of ``build_model(spec)`` → the channel group of each dimension.

    Group ids are ``("g", index)`` for :func:`channel_groups`, ``("se", layer)`` for a layer's
    squeeze width, and None for dimensions that never change (kernel sizes, input image channels,
    classes, a depthwise conv's per-group input).
    """
    slot_group = {s: ("g", g.index) for g in channel_groups(spec) for s in g.slots}
    out: dict[str, tuple] = {}

    def conv(prefix: str, cout, cin) -> None:
        out[f"{prefix}.0.weight"] = (cout, cin, None, None)
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.1.{name}"] = (cout,)
        out[f"{prefix}.1.num_batches_tracked"] = ()

    def se(prefix: str, channels, squeeze) -> None:
        out[f"{prefix}.se.reduce.weight"] = (squeeze, channels, None, None)
        out[f"{prefix}.se.reduce.bias"] = (squeeze,)
        out[f"{prefix}.se.expand.weight"] = (channels, squeeze, None, None)
        out[f"{prefix}.se.expand.bias"] = (channels,)

    prev = None
    for layer in walk(spec):
        p, key = f"layers.{layer.index}", layer.key
        squeeze = ("se", layer.index)
        if layer.role is Role.STEM:
            prev = slot_group[("stem",)]
            conv(f"{p}.conv", prev, None)
        elif layer.role is Role.BLOCK:
            i = layer.block_index
            g_in, g_exp, g_out = (slot_group[(s, i)] for s in ("in", "exp", "out"))
            if key.kind is LayerKind.CONV:
                conv(f"{p}.conv", g_out, g_in)
                if key.se_channels:
                    se(p, g_out, squeeze)
            else:
                if key.expand_channels != key.in_channels:
                    conv(f"{p}.expand", g_exp, g_in)
                conv(f"{p}.depthwise", g_exp, None)
                if key.se_channels:
                    se(p, g_exp, squeeze)
                conv(f"{p}.project", g_out, g_exp)
            prev = g_out
        elif layer.role is Role.HEAD_CONV:
            g = slot_group[("head_conv",)]
            conv(f"{p}.conv", g, prev)
            prev = g
        elif layer.role is Role.HEAD_HIDDEN:
            g = slot_group[("head_hidden",)]
            out[f"{p}.fc.weight"], out[f"{p}.fc.bias"] = (g, prev), (g,)
            prev = g
        elif layer.role is Role.CLASSIFIER:
            out[f"{p}.fc.weight"], out[f"{p}.fc.bias"] = (None, prev), (None,)
    return out


def _is_writer(name: str, dims: tuple) -> bool:
    """A conv or linear weight (not SE's, not BN) whose output dimension is a channel group."""
    return (name.endswith(".0.weight") or name.endswith(".fc.weight")) and ".se." not in name


def _kept_channels(state: Mapping[str, torch.Tensor], groups: dict[str, tuple], group, width: int) -> torch.Tensor:
    """Indices (ascending) of the ``width`` channels of ``group`` whose writing filters have the largest L2 norm."""
    score = None
    for name, dims in groups.items():
        writes = _is_writer(name, dims) or group[0] == "se" and name.endswith("reduce.weight")
        if dims and dims[0] == group and writes:
            w = state[name].detach().float()
            s = w.reshape(w.shape[0], -1).pow(2).sum(dim=1)
            score = s if score is None else score + s
    if score is None:
        raise ValueError(f"no filter writes channel group {group}")
    keep = torch.topk(score, width, largest=True, sorted=False).indices
    return torch.sort(keep).values


def _group_widths(spec: ArchSpec) -> dict:
    widths = {("g", g.index): g.width for g in channel_groups(spec)}
    for layer in walk(spec):
        if layer.role is Role.BLOCK and layer.key.se_channels:
            widths[("se", layer.index)] = layer.key.se_channels
    return widths


def _shapes(spec: ArchSpec) -> dict[str, tuple]:
    """Tensor shapes of ``build_model(spec)``, without allocating its weights."""
    from search_spaces.builder import build_model

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()}


def inherit_weights(parent: ArchSpec, state: Mapping[str, torch.Tensor], child: ArchSpec) -> dict[str, torch.Tensor]:
    """The state dict of ``child`` cut from ``parent``'s ``state`` (largest-L2-norm filters kept).

    ``child`` must have the parent's structure with equal or smaller widths (a NetAdapt proposal or
    a width-multiplier baseline). A child equal to the parent gets the parent's tensors unchanged.
    """
    if not same_structure(parent, child):
        raise ValueError("the child network's layers differ from the parent's; weights cannot be inherited")
    groups = tensor_groups(parent)
    old, new = _group_widths(parent), _group_widths(child)
    if set(state) != set(groups):
        missing, extra = sorted(set(groups) - set(state)), sorted(set(state) - set(groups))
        raise ValueError(f"weights do not match the architecture: missing {missing[:3]}, unexpected {extra[:3]}")
    expected = _shapes(parent)
    wrong = [k for k in groups if tuple(state[k].shape) != expected[k]]
    if wrong:
        k = wrong[0]
        raise ValueError(f"weights do not match the architecture: {k} has shape {tuple(state[k].shape)}, "
                         f"the network needs {expected[k]}")
    keep = {}
    for g, w in new.items():
        if w > old[g]:
            raise ValueError(f"channel group {g} grows from {old[g]} to {w}; inheritance only removes channels")
        if w < old[g]:
            keep[g] = _kept_channels(state, groups, g, w)
    out = {}
    for name, dims in groups.items():
        t = state[name]
        for axis, g in enumerate(dims):
            if g in keep:
                t = t.index_select(axis, keep[g])
        out[name] = t.clone()
    return out


def scale_widths(spec: ArchSpec, multiplier: float, divisor: int = 8) -> ArchSpec:
    """Every channel group scaled by ``multiplier`` (rounded as the TF width rule; the classic
    width-multiplier baseline), never below ``divisor`` and never above the current width."""
    from search_spaces.scaling import make_divisible

    groups = channel_groups(spec)
    widths = {g.index: min(g.width, max(divisor, make_divisible(g.width * multiplier, divisor))) for g in groups}
    # An MBConv expansion rounded onto its (scaled) input would drop the 1×1 expansion conv: move it
    # one divisor up (or down), never above its original width.
    child = with_widths(spec, widths)
    for g in groups:
        if g.kind == "expansion":
            w_in = child.blocks[g.blocks[0]].in_channels
            if widths[g.index] == w_in:
                options = [w for w in (w_in + divisor, w_in - divisor, g.width)
                           if divisor <= w <= g.width and w != w_in]
                widths[g.index] = options[0] if options else widths[g.index]
    return with_widths(spec, widths)
