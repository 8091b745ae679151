"""Backbone transforms of MobileNetV3's dense-prediction models, as pure functions from spec to spec.

* :func:`reduce_tail` — the paper's "RF2" (§6.4) and SSDLite "†" (§6.3): the last stage's channels
  divided by 2 (every block's output, the expansions, the final 1×1 conv and, for a classifier, the
  hidden layer). Two public rules differ in one width: torchvision's ``reduced_tail=True``
  (``models/mobilenetv3.py``, used by ``ssdlite320_mobilenet_v3_large``) keeps the expansion of the
  stage's first block (672 in V3-Large), which is SSDLite's C4 and so "not between C4 and C5";
  DeepLab's ``mobilenet_v3_large_seg``/``mobilenet_v3_small_seg`` (tensorflow/models
  ``research/deeplab/core/feature_extractor.py``), the paper's segmentation models, halve it too
  (672 → 336, 288 → 144). Only the latter reproduces the paper's Table 7 parameter counts;
* :func:`attach_head` — any classification spec with a dense head instead of its classifier;
* :func:`dilate_last_stage` — the atrous last block of the segmentation models (§6.4), torchvision's
  ``dilated=True``: the last stage's stride-2 block becomes stride 1 and the stage's depthwise convs
  get dilation 2, so the backbone ends at output stride 16 instead of 32.

The *last stage* is the blocks from the last stride-2 block to the end (for a spec already dilated,
the trailing dilated blocks). Channels are absolute in a spec, so the transforms produce a new spec;
dilation is a field of :class:`search_spaces.spec.Block` because it changes the kernels.
This module imports nothing beyond the standard library (and the spec).

Paper: Howard et al., "Searching for MobileNetV3", ICCV 2019, https://arxiv.org/abs/1905.02244;
torchvision ``models/mobilenetv3.py`` (``_mobilenet_v3_conf``).
"""

from __future__ import annotations

import dataclasses

from search_spaces.spec import ArchSpec, Block, BlockKind, DenseHead, SpecError

REDUCE_DIVIDER = 2  # torchvision's reduce_divider; the paper's "RF2"
DILATION = 2  # torchvision's dilation of the last stage


def last_stage(spec: ArchSpec) -> range:
    """Indices of the last stage's blocks (see the module docstring)."""
    n = len(spec.blocks)
    if spec.blocks[-1].dilation > 1:
        start = n - 1
        while start > 0 and spec.blocks[start - 1].dilation > 1:
            start -= 1
        return range(start, n)
    for i in range(n - 1, -1, -1):
        if spec.blocks[i].stride == 2:
            return range(i, n)
    raise SpecError("blocks", "no block has stride 2: the network has no last stage to reduce or dilate")


def _halve(value: int, field: str) -> int:
    if value // REDUCE_DIVIDER < 1:
        raise SpecError(field, f"cannot divide {value} channels by {REDUCE_DIVIDER}")
    return value // REDUCE_DIVIDER


def reduce_tail(spec: ArchSpec, *, halve_first_expansion: bool = False) -> ArchSpec:
    """``spec`` with its last stage's channels divided by 2.

    E.g. MobileNetV3-Large: 160 → 80 output channels, 960 → 480 expansions, final 1×1 conv 960 → 480,
    hidden layer 1280 → 640; the first block's expansion stays 672 (torchvision's ``reduced_tail=True``)
    or becomes 336 with ``halve_first_expansion`` (DeepLab's segmentation backbones, the paper's RF2).
    """
    stage = last_stage(spec)
    blocks: list[Block] = list(spec.blocks)
    prev = blocks[stage.start].in_channels
    for i in stage:
        b = blocks[i]
        out = _halve(b.out_channels, f"blocks[{i}].out_channels")
        if i == stage.start and not halve_first_expansion:
            expand = b.expand_channels
        elif b.expand_channels == b.in_channels:  # no expansion (dsconv / mbconv without 1×1 expand)
            expand = prev
        else:
            expand = _halve(b.expand_channels, f"blocks[{i}].expand_channels")
        if b.kind is BlockKind.CONV:
            expand = out
        blocks[i] = dataclasses.replace(b, in_channels=prev, expand_channels=expand, out_channels=out)
        prev = out
    head = spec.head
    head = dataclasses.replace(
        head,
        conv_channels=_halve(head.conv_channels, "head.conv_channels") if head.conv_channels else 0,
        hidden_channels=_halve(head.hidden_channels, "head.hidden_channels") if head.hidden_channels else 0,
    )
    return spec.replace(blocks=tuple(blocks), head=head)


def dilate_last_stage(spec: ArchSpec, dilation: int = DILATION) -> ArchSpec:
    """``spec`` with an atrous last stage: its stride-2 block at stride 1, its convs dilated by ``dilation``."""
    stage = last_stage(spec)
    blocks = list(spec.blocks)
    for i in stage:
        blocks[i] = dataclasses.replace(blocks[i], stride=1, dilation=dilation)
    return spec.replace(blocks=tuple(blocks))


def attach_head(spec: ArchSpec, head: DenseHead, *, num_classes: int, dilated: bool | None = None) -> ArchSpec:
    """A classification spec (a reference, or one decoded by a search space) with ``head`` instead of its classifier.

    The post-pool hidden layer is dropped (the last 1×1 conv stays), ``num_classes`` is set (SSDLite:
    foreground + 1 background), and the last stage is dilated when ``dilated`` — by default for the
    segmentation heads (output stride 16, as the paper), never for SSDLite (which reads 1/32 features).
    """
    dilated = head.is_segmentation if dilated is None else dilated
    out = spec.replace(dense=None, head=dataclasses.replace(spec.head, hidden_channels=0), num_classes=num_classes)
    if dilated and out.blocks[-1].dilation == 1:
        out = dilate_last_stage(out)
    return out.replace(dense=head)
