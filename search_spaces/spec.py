"""The architecture spec: a typed, frozen, JSON round-tripping description of a network.

Every other part of the framework reads architectures through this one type: search spaces decode
decisions into an :class:`ArchSpec`, NetAdapt edits one, the layer walk (:mod:`search_spaces.walk`)
turns one into per-layer shapes for costs, lookup-table keys and the torch builder.

Channel counts are **absolute** (already rounded): a spec never carries a width multiplier, so that
NetAdapt can change one expansion layer and costs can be computed from the spec alone. Width
multipliers are applied once, in :mod:`search_spaces.scaling`, when a spec is made.

This module imports nothing beyond the standard library, so specs can be read and checked on a
machine without torch (e.g. the device that builds a latency table).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

SCHEMA_VERSION = 1

# Bounds that stop a hostile or broken file from exhausting memory or time before anything is built.
MAX_CHANNELS = 4096
MAX_BLOCKS = 64
MAX_RESOLUTION = 1024
MAX_CLASSES = 100_000
MAX_INPUT_CHANNELS = 16
KERNEL_SIZES = (1, 3, 5, 7, 9, 11)
STRIDES = (1, 2)
DILATIONS = (1, 2, 4)
MAX_EXTRA_LAYERS = 8
MAX_SPEC_BYTES = 1_000_000
MAX_JSON_DEPTH = 8


class SpecError(ValueError):
    """A spec that fails validation. ``path`` names the offending field, e.g. ``blocks[3].stride``."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class Activation(str, enum.Enum):
    """Nonlinearities. ``hswish`` is x·ReLU6(x+3)/6 (MobileNetV3 §5.2)."""

    RELU = "relu"
    RELU6 = "relu6"
    HSWISH = "hswish"
    SWISH = "swish"


class BlockKind(str, enum.Enum):
    """Block operators of the MnasNet/MobileNetV3 spaces.

    * ``mbconv``: inverted residual (1×1 expand → k×k depthwise → [SE] → 1×1 linear projection); the
      expansion conv is omitted when ``expand_channels == in_channels``.
    * ``dsconv``: depthwise-separable (k×k depthwise → [SE] → 1×1 linear projection), i.e. an mbconv
      without expansion; requires ``expand_channels == in_channels``.
    * ``conv``: regular k×k conv → BN → activation [→ SE]; requires ``expand_channels == out_channels``.
    """

    MBCONV = "mbconv"
    DSCONV = "dsconv"
    CONV = "conv"


class SEBase(str, enum.Enum):
    """What the squeeze-and-excite width is a fraction of."""

    EXPAND = "expand"  # MobileNetV3 §5.3: 1/4 of the expansion layer
    INPUT = "input"  # MnasNet (TPU code): 1/4 of the block's input filters


class Gate(str, enum.Enum):
    HSIGMOID = "hsigmoid"  # ReLU6(x+3)/6
    SIGMOID = "sigmoid"


@dataclass(frozen=True)
class SEConfig:
    """Network-wide rule for squeeze-and-excite layers (blocks only say on/off).

    squeeze channels = make_divisible(ratio · base_channels, divisor), gate as given, inner ReLU.
    MobileNetV3: ratio 0.25 of the expansion, divisor 8, hard-sigmoid. MnasNet: 0.25 of the input,
    divisor 1, sigmoid.
    """

    ratio: float = 0.25
    base: SEBase = SEBase.EXPAND
    divisor: int = 8
    gate: Gate = Gate.HSIGMOID


@dataclass(frozen=True)
class Stem:
    """First conv: k×k, stride s, BN, activation."""

    out_channels: int
    kernel_size: int = 3
    stride: int = 2
    activation: Activation = Activation.HSWISH


@dataclass(frozen=True)
class Block:
    """One searched layer with absolute channel counts.

    Attributes:
        kind: the operator, see :class:`BlockKind`.
        in_channels: input channels; must equal the previous block's (or the stem's) output.
        expand_channels: width of the expanded (depthwise) representation; NetAdapt shrinks this.
        out_channels: output channels.
        kernel_size: depthwise (or regular conv) kernel, odd.
        stride: 1 or 2, on the depthwise (or regular) conv.
        se: squeeze-and-excite on the expanded representation, sized by the spec's :class:`SEConfig`.
        activation: nonlinearity of the block.
        residual: identity skip; only allowed when stride is 1 and in == out.
        dilation: dilation of the depthwise (or regular) conv, 1 = none. A dilated conv keeps stride 1:
            the atrous last stage of MobileNetV3's segmentation models (torchvision's ``dilated=True``)
            turns the stage's stride-2 block into stride 1 and dilates its depthwise convs by 2.
            Serialized only when it is not 1, so every undilated spec keeps its JSON and ``arch_id``.
    """

    kind: BlockKind
    in_channels: int
    expand_channels: int
    out_channels: int
    kernel_size: int = 3
    stride: int = 1
    se: bool = False
    activation: Activation = Activation.RELU
    residual: bool = False
    dilation: int = 1


@dataclass(frozen=True)
class Head:
    """The last stage.

    ``conv_channels`` > 0 adds a 1×1 conv + BN + activation *before* global pooling; ``hidden_channels``
    > 0 adds a 1×1 conv without BN (a linear layer with bias) + activation *after* pooling. MobileNetV3's
    efficient last stage is (960, 1280); the classic MnasNet/MobileNetV2 head is (1280, 0).
    Dropout sits before the classifier.
    """

    conv_channels: int
    hidden_channels: int = 0
    activation: Activation = Activation.HSWISH
    dropout: float = 0.2


class DenseKind(str, enum.Enum):
    """Dense-prediction heads (MobileNetV3 §6.3–6.4). The layers are defined in :mod:`search_spaces.walk`."""

    LRASPP = "lraspp"  # segmentation, Lite R-ASPP (the paper's Fig. 10)
    RASPP = "raspp"  # segmentation, reduced ASPP (the paper's Table 7 ablation, "SH ×")
    SSDLITE = "ssdlite"  # detection, SSDLite (MobileNetV2 §6.2, MobileNetV3 §6.3)


SEGMENTATION_KINDS = (DenseKind.LRASPP, DenseKind.RASPP)
SSDLITE_EXTRA_CHANNELS = (512, 256, 256, 128)  # torchvision ssdlite.py's extra layers at width 1.0
SEGMENTATION_FILTERS = 128  # the paper's F for its candidate models (Table 7 rows 8 and 11)


@dataclass(frozen=True)
class DenseHead:
    """A dense-prediction head that replaces the classification head (pool, hidden layer, classifier).

    The backbone keeps its last 1×1 conv (``head.conv_channels``), as torchvision's ``features`` does;
    ``head.hidden_channels`` must be 0 and ``head.dropout`` is unused. ``ArchSpec.num_classes`` counts
    the predicted classes: for segmentation every label (19 for Cityscapes), for SSDLite the foreground
    classes **plus one background class** (torchvision's convention, 91 for COCO).

    Attributes:
        kind: see :class:`DenseKind`.
        filters: F, the width of the segmentation head (LR-ASPP and R-ASPP only; not serialized for SSDLite).
        extra_channels: output widths of SSDLite's extra feature layers after C5 (SSDLite only; not
            serialized for segmentation).
    """

    kind: DenseKind
    filters: int = SEGMENTATION_FILTERS
    extra_channels: tuple[int, ...] = SSDLITE_EXTRA_CHANNELS

    def __post_init__(self):
        if not isinstance(self.extra_channels, tuple):
            object.__setattr__(self, "extra_channels", tuple(self.extra_channels))

    @property
    def is_segmentation(self) -> bool:
        return self.kind in SEGMENTATION_KINDS

    def to_dict(self) -> dict[str, Any]:
        if self.is_segmentation:
            return {"kind": self.kind.value, "filters": self.filters}
        return {"kind": self.kind.value, "extra_channels": list(self.extra_channels)}


@dataclass(frozen=True)
class ArchSpec:
    """A whole network. See the module docstring."""

    stem: Stem
    blocks: tuple[Block, ...]
    head: Head
    resolution: int = 224
    in_channels: int = 3
    num_classes: int = 1000
    se: SEConfig = SEConfig()
    name: str = ""
    schema_version: int = SCHEMA_VERSION
    dense: DenseHead | None = None  # None = classification; serialized only when set

    def __post_init__(self):
        if not isinstance(self.blocks, tuple):
            object.__setattr__(self, "blocks", tuple(self.blocks))
        validate(self)

    # -- identity ---------------------------------------------------------------------------
    @property
    def arch_id(self) -> str:
        """Stable id: sha256 of the canonical JSON (sorted keys, no whitespace), without ``name``."""
        data = self.to_dict()
        data.pop("name", None)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def replace(self, **changes) -> "ArchSpec":
        return dataclasses.replace(self, **changes)

    def with_block(self, index: int, **changes) -> "ArchSpec":
        blocks = list(self.blocks)
        blocks[index] = dataclasses.replace(blocks[index], **changes)
        return self.replace(blocks=tuple(blocks))

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema_version": self.schema_version,
            "name": self.name,
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "se": _plain(self.se),
            "stem": _plain(self.stem),
            "blocks": [_block_dict(b) for b in self.blocks],
            "head": _plain(self.head),
        }
        if self.dense is not None:
            out["dense"] = self.dense.to_dict()
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> "ArchSpec":
        return parse_spec(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ArchSpec":
        return loads(text)

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file + rename), so a crash never leaves half a spec."""
        from search_spaces.files import atomic_write_text

        atomic_write_text(Path(path), self.to_json() + "\n")


def _block_dict(block: Block) -> dict[str, Any]:
    out = _plain(block)
    if block.dilation == 1:  # the default is left out, so undilated specs keep their JSON and arch_id
        del out["dilation"]
    return out


def _plain(obj) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = v.value if isinstance(v, enum.Enum) else v
    return out


# ------------------------------------------------------------------------------------------------
# Parsing: every field is checked; errors name the field path and the allowed values.
# ------------------------------------------------------------------------------------------------


def loads(text: str | bytes) -> ArchSpec:
    """Parse a spec from JSON text, bounded in size and nesting before parsing."""
    if isinstance(text, bytes):
        if len(text) > MAX_SPEC_BYTES:
            raise SpecError("", f"spec is {len(text)} bytes; at most {MAX_SPEC_BYTES} allowed")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SpecError("", f"spec is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError("", f"spec is {len(text)} characters; at most {MAX_SPEC_BYTES} allowed")
    _check_nesting(text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError("", f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (RecursionError, ValueError) as e:
        raise SpecError("", f"malformed JSON: {e}") from None
    return parse_spec(data)


def load(path: str | Path) -> ArchSpec:
    """Read a spec file. Missing/unreadable files and bad contents raise :class:`SpecError`."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError("", f"{p}: file is {size} bytes; a spec is at most {MAX_SPEC_BYTES}")
        with open(p, "rb") as f:  # bounded: /dev/zero or a growing file reports a small st_size
            raw = f.read(MAX_SPEC_BYTES + 1)
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError("", f"{p}: more than {MAX_SPEC_BYTES} bytes; a spec is at most {MAX_SPEC_BYTES}")
    except FileNotFoundError:
        raise SpecError("", f"{p}: no such file") from None
    except IsADirectoryError:
        raise SpecError("", f"{p}: is a directory, not a spec file") from None
    except OSError as e:
        raise SpecError("", f"{p}: cannot read ({e.strerror})") from None
    try:
        return loads(raw)
    except SpecError as e:
        where = f"{p}: {e.path}" if e.path else str(p)
        raise SpecError(where, e.message) from None


def _check_nesting(text: str) -> None:
    """Reject deeply nested JSON cheaply, before json.loads can recurse on it."""
    depth = 0
    in_string = False
    escape = False
    for ch in text:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise SpecError("", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        elif ch in "]}":
            depth -= 1


def _obj(data: Any, path: str, required: set[str], optional: set[str]) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise SpecError(path, f"expected an object, got {_typename(data)}")
    unknown = sorted(set(data) - required - optional, key=_show)  # keys of any type (from_dict)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise SpecError(path, f"unknown field(s) {', '.join(map(_show, unknown))}; allowed: {allowed}"[:300])
    missing = sorted(required - set(data))
    if missing:
        raise SpecError(path, f"missing required field(s) {', '.join(map(repr, missing))}")
    return data


def _typename(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), type(v).__name__
    )


def _show(v: Any) -> str:
    """A value for an error message, bounded: repr() of a huge integer raises, a huge string floods."""
    if isinstance(v, int) and not isinstance(v, bool) and not -10**30 < v < 10**30:
        return f"an integer of {v.bit_length()} bits"
    try:
        text = repr(v)
    except ValueError:  # e.g. a list holding a huge integer
        return "(too large to show)"
    return text if len(text) <= 80 else text[:77] + "..."


def _int(v: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(path, f"expected an integer in {lo}..{hi}, got {_typename(v)} {_show(v)}"[:200])
    if not lo <= v <= hi:
        raise SpecError(path, f"must be in {lo}..{hi}, got {_show(v)}")
    return v


def _choice(v: Any, path: str, allowed: tuple) -> Any:
    if isinstance(v, bool) or v not in allowed:
        shown = ", ".join(map(str, allowed))
        raise SpecError(path, f"must be one of {shown}, got {_show(v)}"[:200])
    return v


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise SpecError(path, f"expected true or false, got {_typename(v)} {_show(v)}"[:200])
    return v


def _float(v: Any, path: str, lo: float, hi: float, hi_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
        raise SpecError(path, f"expected a number in [{lo}, {hi}{')' if hi_open else ']'}, got {_show(v)}"[:200])
    if not (lo <= v < hi if hi_open else lo <= v <= hi):  # exact for ints of any size (no float overflow)
        raise SpecError(path, f"must be in [{lo}, {hi}{')' if hi_open else ']'}, got {_show(v)}")
    return float(v)


def _enum(cls: type[enum.Enum], v: Any, path: str):
    return cls(_choice(v, path, tuple(m.value for m in cls)))


def parse_spec(data: Any) -> ArchSpec:
    """Build an :class:`ArchSpec` from parsed JSON, checking every field."""
    top = _obj(
        data,
        "",
        {"stem", "blocks", "head"},
        {"schema_version", "name", "resolution", "in_channels", "num_classes", "se", "dense"},
    )
    version = top.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise SpecError("schema_version", f"this version reads schema {SCHEMA_VERSION}, got {_show(version)}")
    name = top.get("name", "")
    if not isinstance(name, str) or len(name) > 200:
        raise SpecError("name", "expected a string of at most 200 characters")

    se_data = _obj(top.get("se", {}), "se", set(), {"ratio", "base", "divisor", "gate"})
    se = SEConfig(
        ratio=_float(se_data.get("ratio", 0.25), "se.ratio", 0.0, 1.0),
        base=_enum(SEBase, se_data.get("base", "expand"), "se.base"),
        divisor=_int(se_data.get("divisor", 8), "se.divisor", 1, 64),
        gate=_enum(Gate, se_data.get("gate", "hsigmoid"), "se.gate"),
    )

    st = _obj(top["stem"], "stem", {"out_channels"}, {"kernel_size", "stride", "activation"})
    stem = Stem(
        out_channels=_int(st["out_channels"], "stem.out_channels", 1, MAX_CHANNELS),
        kernel_size=_choice(st.get("kernel_size", 3), "stem.kernel_size", KERNEL_SIZES),
        stride=_choice(st.get("stride", 2), "stem.stride", STRIDES),
        activation=_enum(Activation, st.get("activation", "hswish"), "stem.activation"),
    )

    raw_blocks = top["blocks"]
    if not isinstance(raw_blocks, list):
        raise SpecError("blocks", f"expected an array, got {_typename(raw_blocks)}")
    if not 1 <= len(raw_blocks) <= MAX_BLOCKS:
        raise SpecError("blocks", f"must hold 1..{MAX_BLOCKS} blocks, got {len(raw_blocks)}")
    blocks = []
    for i, b in enumerate(raw_blocks):
        p = f"blocks[{i}]"
        b = _obj(
            b,
            p,
            {"kind", "in_channels", "expand_channels", "out_channels"},
            {"kernel_size", "stride", "se", "activation", "residual", "dilation"},
        )
        blocks.append(
            Block(
                kind=_enum(BlockKind, b["kind"], f"{p}.kind"),
                in_channels=_int(b["in_channels"], f"{p}.in_channels", 1, MAX_CHANNELS),
                expand_channels=_int(b["expand_channels"], f"{p}.expand_channels", 1, MAX_CHANNELS),
                out_channels=_int(b["out_channels"], f"{p}.out_channels", 1, MAX_CHANNELS),
                kernel_size=_choice(b.get("kernel_size", 3), f"{p}.kernel_size", KERNEL_SIZES),
                stride=_choice(b.get("stride", 1), f"{p}.stride", STRIDES),
                se=_bool(b.get("se", False), f"{p}.se"),
                activation=_enum(Activation, b.get("activation", "relu"), f"{p}.activation"),
                residual=_bool(b.get("residual", False), f"{p}.residual"),
                dilation=_choice(b.get("dilation", 1), f"{p}.dilation", DILATIONS),
            )
        )

    hd = _obj(top["head"], "head", {"conv_channels"}, {"hidden_channels", "activation", "dropout"})
    head = Head(
        conv_channels=_int(hd["conv_channels"], "head.conv_channels", 0, MAX_CHANNELS),
        hidden_channels=_int(hd.get("hidden_channels", 0), "head.hidden_channels", 0, MAX_CHANNELS),
        activation=_enum(Activation, hd.get("activation", "hswish"), "head.activation"),
        dropout=_float(hd.get("dropout", 0.2), "head.dropout", 0.0, 1.0, hi_open=True),
    )

    dense = _parse_dense(top["dense"]) if "dense" in top else None

    return ArchSpec(
        stem=stem,
        blocks=tuple(blocks),
        head=head,
        dense=dense,
        resolution=_int(top.get("resolution", 224), "resolution", 8, MAX_RESOLUTION),
        in_channels=_int(top.get("in_channels", 3), "in_channels", 1, MAX_INPUT_CHANNELS),
        num_classes=_int(top.get("num_classes", 1000), "num_classes", 2, MAX_CLASSES),
        se=se,
        name=name,
        schema_version=version,
    )


def _parse_dense(data: Any) -> DenseHead:
    kind_raw = _obj(data, "dense", {"kind"}, {"filters", "extra_channels"})["kind"]
    kind = _enum(DenseKind, kind_raw, "dense.kind")
    if kind in SEGMENTATION_KINDS:
        d = _obj(data, "dense", {"kind"}, {"filters"})
        return DenseHead(kind, filters=_int(d.get("filters", SEGMENTATION_FILTERS), "dense.filters", 1, MAX_CHANNELS))
    d = _obj(data, "dense", {"kind"}, {"extra_channels"})
    raw = d.get("extra_channels", list(SSDLITE_EXTRA_CHANNELS))
    if not isinstance(raw, list) or len(raw) > MAX_EXTRA_LAYERS:
        raise SpecError("dense.extra_channels", f"expected an array of at most {MAX_EXTRA_LAYERS} integers")
    extra = tuple(_int(c, f"dense.extra_channels[{i}]", 2, MAX_CHANNELS) for i, c in enumerate(raw))
    return DenseHead(kind, extra_channels=extra)


# ------------------------------------------------------------------------------------------------
# Semantic validation (runs on every ArchSpec, whether parsed or built in code).
# ------------------------------------------------------------------------------------------------


def validate(spec: ArchSpec) -> None:
    """Check cross-field rules; raise :class:`SpecError` naming the field."""
    _check_ranges(spec)
    prev = spec.stem.out_channels
    for i, b in enumerate(spec.blocks):
        p = f"blocks[{i}]"
        if b.in_channels != prev:
            raise SpecError(
                f"{p}.in_channels",
                f"must equal the previous layer's out_channels ({prev}), got {b.in_channels}",
            )
        if b.kind is BlockKind.DSCONV and b.expand_channels != b.in_channels:
            raise SpecError(
                f"{p}.expand_channels",
                f"a dsconv block has no expansion: must equal in_channels ({b.in_channels}), "
                f"got {b.expand_channels}",
            )
        if b.kind is BlockKind.CONV and b.expand_channels != b.out_channels:
            raise SpecError(
                f"{p}.expand_channels",
                f"a regular conv block's width is its output: must equal out_channels "
                f"({b.out_channels}), got {b.expand_channels}",
            )
        if b.residual and (b.stride != 1 or b.in_channels != b.out_channels):
            raise SpecError(
                f"{p}.residual",
                "an identity residual needs stride 1 and in_channels == out_channels "
                f"(got stride {b.stride}, {b.in_channels} -> {b.out_channels})",
            )
        if b.dilation != 1 and b.stride != 1:
            raise SpecError(f"{p}.dilation",
                            f"a dilated conv keeps the resolution: needs stride 1, got stride {b.stride}")
        prev = b.out_channels
    if spec.dense is not None:
        _check_dense(spec)


def output_strides(spec: ArchSpec) -> list[int]:
    """Output stride (input size / feature size) after the stem and after each block."""
    strides = [spec.stem.stride]
    for b in spec.blocks:
        strides.append(strides[-1] * b.stride)
    return strides


def _check_dense(spec: ArchSpec) -> None:
    """A dense head needs feature maps that exist: rules of :mod:`search_spaces.walk`'s dense layers."""
    dense = spec.dense
    if not isinstance(dense, DenseHead) or not isinstance(dense.kind, DenseKind):
        raise SpecError("dense", "must be a DenseHead with a DenseKind")
    if spec.head.hidden_channels:
        raise SpecError("head.hidden_channels", "a dense head replaces the classifier: must be 0, "
                                                f"got {spec.head.hidden_channels}")
    strides = output_strides(spec)
    deepest = strides[-1]
    if dense.is_segmentation:
        _int(dense.filters, "dense.filters", 1, MAX_CHANNELS)
        if 8 not in strides:
            raise SpecError("blocks", f"{dense.kind.value} reads 1/8 features: no layer has output stride 8 "
                                      f"(output strides {sorted(set(strides))})")
        if deepest < 16:
            raise SpecError("blocks", f"{dense.kind.value} reads 1/16 or 1/32 features: the backbone ends at "
                                      f"output stride {deepest}")
    else:
        if not 1 <= len(dense.extra_channels) <= MAX_EXTRA_LAYERS:
            raise SpecError("dense.extra_channels", f"must hold 1..{MAX_EXTRA_LAYERS} widths")
        for i, c in enumerate(dense.extra_channels):
            _int(c, f"dense.extra_channels[{i}]", 2, MAX_CHANNELS)
        for i, b in enumerate(spec.blocks):
            if b.dilation != 1:
                raise SpecError(f"blocks[{i}].dilation", "ssdlite reads stride-16 and stride-32 features: "
                                                         "its backbone is not dilated")
        c4 = c4_block(spec)
        if c4 is None:
            raise SpecError("blocks", "ssdlite's C4 is missing: it is the expansion of the block that goes from "
                                      "output stride 16 to 32, and no block does")
        if spec.blocks[c4].expand_channels == spec.blocks[c4].in_channels:
            raise SpecError(f"blocks[{c4}].expand_channels", "ssdlite's C4 is this block's 1×1 expansion, "
                                                             "but the block has none (expand == in)")
    if spec.resolution < deepest:
        raise SpecError("resolution", f"{dense.kind.value} reads 1/{deepest} features: the input must be at least "
                                      f"{deepest} px, got {spec.resolution}")


def c4_block(spec: ArchSpec) -> int | None:
    """Index of the block whose expansion is SSDLite's C4 (the block from output stride 16 to 32), or None."""
    strides = output_strides(spec)
    for i, b in enumerate(spec.blocks):
        if b.stride == 2 and strides[i] == 16:
            return i
    return None


def _check_ranges(spec: ArchSpec) -> None:
    """Re-check bounds for specs built in code (parse_spec already checked parsed ones)."""
    _int(spec.resolution, "resolution", 8, MAX_RESOLUTION)
    _int(spec.in_channels, "in_channels", 1, MAX_INPUT_CHANNELS)
    _int(spec.num_classes, "num_classes", 2, MAX_CLASSES)
    if not 1 <= len(spec.blocks) <= MAX_BLOCKS:
        raise SpecError("blocks", f"must hold 1..{MAX_BLOCKS} blocks, got {len(spec.blocks)}")
    _int(spec.stem.out_channels, "stem.out_channels", 1, MAX_CHANNELS)
    _choice(spec.stem.kernel_size, "stem.kernel_size", KERNEL_SIZES)
    _choice(spec.stem.stride, "stem.stride", STRIDES)
    for i, b in enumerate(spec.blocks):
        p = f"blocks[{i}]"
        if not isinstance(b.kind, BlockKind) or not isinstance(b.activation, Activation):
            raise SpecError(p, "kind and activation must be BlockKind/Activation members")
        for f in ("in_channels", "expand_channels", "out_channels"):
            _int(getattr(b, f), f"{p}.{f}", 1, MAX_CHANNELS)
        _choice(b.kernel_size, f"{p}.kernel_size", KERNEL_SIZES)
        _choice(b.stride, f"{p}.stride", STRIDES)
        _choice(b.dilation, f"{p}.dilation", DILATIONS)
    _int(spec.head.conv_channels, "head.conv_channels", 0, MAX_CHANNELS)
    _int(spec.head.hidden_channels, "head.hidden_channels", 0, MAX_CHANNELS)
