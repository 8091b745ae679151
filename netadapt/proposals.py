"""NetAdapt proposals: for each channel group, the widest cut that saves at least δ of latency.

NetAdapt (Yang et al. 2018, Algorithm 1) generates one proposal per layer in each iteration: the
largest number of filters whose (lookup-table) latency meets ``current − δ``. MobileNetV3 (§4.2)
used two kinds: shrink any expansion layer, or shrink a bottleneck shared by a chain of residual
blocks, all at once. Here every :class:`~netadapt.channels.ChannelGroup` of the network (expansion,
bottleneck or head layer) yields at most one proposal; widths move in steps of ``step`` channels
(8 by default, the width-rounding divisor of the MobileNets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from netadapt.channels import ChannelGroup, channel_groups, same_structure, with_widths
from search_spaces.spec import ArchSpec, SpecError


@dataclass(frozen=True)
class Proposal:
    """One candidate network of an iteration.

    Attributes:
        group: the channel group that shrinks.
        new_width: its width in ``spec``.
        spec: the candidate network.
        latency_ms: its predicted latency.
    """

    group: ChannelGroup
    new_width: int
    spec: ArchSpec
    latency_ms: float

    @property
    def kind(self) -> str:
        return self.group.kind

    @property
    def name(self) -> str:
        return self.group.name


def candidate_widths(group: ChannelGroup, step: int, min_width: int) -> list[int]:
    """Widths below the current one, multiples of ``step``, widest first, not below ``min_width``."""
    top = (group.width - 1) // step * step
    return list(range(top, min_width - 1, -step))


def _child(spec: ArchSpec, group: ChannelGroup, width: int) -> ArchSpec | None:
    try:
        child = with_widths(spec, {group.index: width})
    except SpecError:
        return None
    return child if same_structure(spec, child) else None


def make_proposals(spec: ArchSpec, predict: Callable[[ArchSpec], float], current_ms: float, delta_ms: float,
                   step: int = 8, min_width: int = 8) -> list[Proposal]:
    """One proposal per channel group that can cut ``delta_ms``: its widest width with
    ``predict(child) ≤ current_ms − delta_ms``. Groups that cannot reach the cut even at
    ``min_width`` (checked first, so hopeless groups cost one prediction) yield nothing."""
    goal = current_ms - delta_ms
    out = []
    for group in channel_groups(spec):
        widths = [w for w in candidate_widths(group, step, min_width) if _child(spec, group, w) is not None]
        if not widths or predict(_child(spec, group, widths[-1])) > goal:
            continue
        for w in widths:
            child = _child(spec, group, w)
            latency = predict(child)
            if latency <= goal:
                out.append(Proposal(group, w, child, latency))
                break
    return out


def smallest_network(spec: ArchSpec, min_width: int = 8) -> ArchSpec:
    """Every channel group at the narrowest width proposals may reach (the bound for a target)."""
    current = spec
    for group in channel_groups(spec):
        for w in reversed(candidate_widths(group, min_width, min_width)):
            child = _child(current, group, w)
            if child is not None:
                current = child
                break
    return current
