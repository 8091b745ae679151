"""Recipes of the reference networks; the shipped JSON files are generated from these.

Sources:

* MobileNetV3: Howard et al., "Searching for MobileNetV3", ICCV 2019,
  https://arxiv.org/abs/1905.02244 (final version, v5), Tables 1–2, with the expansion ratios
  (relative to the input width) of the TF-slim reference
  (https://github.com/tensorflow/models/blob/master/research/slim/nets/mobilenet/mobilenet_v3.py)
  and its timm port (https://github.com/huggingface/pytorch-image-models, ``timm/models/mobilenetv3.py``);
* MnasNet-A1: Tan et al., "MnasNet: Platform-Aware Neural Architecture Search for Mobile", CVPR 2019,
  https://arxiv.org/abs/1807.11626, Fig. 7, and the official TPU code
  (https://github.com/tensorflow/tpu/tree/master/models/official/mnasnet, ported as timm's
  ``semnasnet_100``);
* MobileNetV2: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018,
  https://arxiv.org/abs/1801.04381, as torchvision's ``mobilenet_v2``.

Dense-prediction references (:func:`dense_references`, shipped under ``dense/``): MobileNetV3 with
the segmentation heads of the paper's Table 7 (LR-ASPP with F = 128 — the candidate rows 8 and 11 —
and R-ASPP with F = 256 — rows 5–6 — on the atrous backbone, with and without RF2, RF2 by DeepLab's
rule) and with SSDLite (Table 6, ± "†" by torchvision's ``reduced_tail`` rule, as its
``ssdlite320_mobilenet_v3_large``), each for the public benchmark (Cityscapes: 19 classes at 1024²;
COCO: 91 classes incl. background at 320²) and for the project's dense task (11 classes at 128²).
See :mod:`search_spaces.dense` for the two RF2 rules.

Regenerate the JSON files with ``python -m search_spaces.references.recipes``; a test checks they
agree.
"""

from __future__ import annotations

from pathlib import Path

from search_spaces.dense import attach_head, reduce_tail
from search_spaces.scaling import NetRecipe, StageRecipe, build_spec
from search_spaces.spec import Activation, ArchSpec, BlockKind, DenseHead, DenseKind, Gate, SEBase, SEConfig

RE, R6, HS = Activation.RELU, Activation.RELU6, Activation.HSWISH
IR, DS = BlockKind.MBCONV, BlockKind.DSCONV


def _st(kind, repeats, k, s, e, c, se=False, act=RE, residual=None):
    return StageRecipe(kind, repeats, k, s, e, c, se, act, residual)


# MobileNetV3-Large (the paper's Table 1); ratios as in TF-slim/timm (exp = in × ratio, rounded).
V3_LARGE_STAGES = (
    _st(DS, 1, 3, 1, 1, 16),
    _st(IR, 1, 3, 2, 4, 24),
    _st(IR, 1, 3, 1, 3, 24),
    _st(IR, 3, 5, 2, 3, 40, se=True),
    _st(IR, 1, 3, 2, 6, 80, act=HS),
    _st(IR, 1, 3, 1, 2.5, 80, act=HS),
    _st(IR, 2, 3, 1, 2.3, 80, act=HS),
    _st(IR, 2, 3, 1, 6, 112, se=True, act=HS),
    _st(IR, 3, 5, 2, 6, 160, se=True, act=HS),
)

# MobileNetV3-Small (the paper's Table 2; no SE on the last 1×1 conv, as in every implementation).
V3_SMALL_STAGES = (
    _st(DS, 1, 3, 2, 1, 16, se=True),
    _st(IR, 1, 3, 2, 4.5, 24),
    _st(IR, 1, 3, 1, 3.67, 24),
    _st(IR, 1, 5, 2, 4, 40, se=True, act=HS),
    _st(IR, 2, 5, 1, 6, 40, se=True, act=HS),
    _st(IR, 2, 5, 1, 3, 48, se=True, act=HS),
    _st(IR, 3, 5, 2, 6, 96, se=True, act=HS),
)


def _minimal(stages):
    """MobileNetV3 minimalistic: no SE, no h-swish, 3×3 kernels only."""
    return tuple(
        StageRecipe(s.kind, s.repeats, 3, s.stride, s.expand_ratio, s.out_channels, False, RE, s.residual)
        for s in stages
    )


V3_SE = SEConfig(ratio=0.25, base=SEBase.EXPAND, divisor=8, gate=Gate.HSIGMOID)


def v3_large(minimal: bool = False) -> NetRecipe:
    act = RE if minimal else HS
    return NetRecipe(
        stem_channels=16,
        stem_activation=act,
        stages=_minimal(V3_LARGE_STAGES) if minimal else V3_LARGE_STAGES,
        head_conv_channels=960,
        head_hidden_channels=1280,
        head_activation=act,
        se=V3_SE,
    )


def v3_small(minimal: bool = False) -> NetRecipe:
    act = RE if minimal else HS
    return NetRecipe(
        stem_channels=16,
        stem_activation=act,
        stages=_minimal(V3_SMALL_STAGES) if minimal else V3_SMALL_STAGES,
        head_conv_channels=576,
        head_hidden_channels=1024,
        head_activation=act,
        se=V3_SE,
    )


def v3_large_classic_last_stage() -> NetRecipe:
    """Ablation (MobileNetV3 §5.1, Fig. 5): the original last stage — one more bottleneck (960 → 320) and a
    1×1 conv to 1280 *before* pooling — instead of the efficient one."""
    base = v3_large()
    return NetRecipe(
        stem_channels=base.stem_channels,
        stem_activation=base.stem_activation,
        stages=V3_LARGE_STAGES + (_st(IR, 1, 3, 1, 6, 320, act=HS),),
        head_conv_channels=1280,
        head_hidden_channels=0,
        head_activation=HS,
        se=V3_SE,
    )


def v3_large_stem32_relu() -> NetRecipe:
    """Ablation (MobileNetV3 §5.1): the 32-filter ReLU stem that the 16-filter h-swish stem replaced."""
    base = v3_large()
    return NetRecipe(
        stem_channels=32,
        stem_activation=RE,
        stages=base.stages,
        head_conv_channels=base.head_conv_channels,
        head_hidden_channels=base.head_hidden_channels,
        head_activation=base.head_activation,
        se=V3_SE,
    )


def mnasnet_a1() -> NetRecipe:
    """MnasNet-A1 (Fig. 7; TPU ``mnasnet_a1`` / timm ``semnasnet_100``): ReLU, sigmoid SE of the input."""
    return NetRecipe(
        stem_channels=32,
        stem_activation=RE,
        stages=(
            _st(DS, 1, 3, 1, 1, 16, residual=False),
            _st(IR, 2, 3, 2, 6, 24),
            _st(IR, 3, 5, 2, 3, 40, se=True),
            _st(IR, 4, 3, 2, 6, 80),
            _st(IR, 2, 3, 1, 6, 112, se=True),
            _st(IR, 3, 5, 2, 6, 160, se=True),
            _st(IR, 1, 3, 1, 6, 320),
        ),
        head_conv_channels=1280,
        head_hidden_channels=0,
        head_activation=RE,
        se=SEConfig(ratio=0.25, base=SEBase.INPUT, divisor=1, gate=Gate.SIGMOID),
        fix_stem_below=0.0,
    )


def mobilenetv2() -> NetRecipe:
    """MobileNetV2 (torchvision): ReLU6, classic head of 1280 (never scaled below it)."""
    return NetRecipe(
        stem_channels=32,
        stem_activation=R6,
        stages=(
            _st(DS, 1, 3, 1, 1, 16, act=R6),
            _st(IR, 2, 3, 2, 6, 24, act=R6),
            _st(IR, 3, 3, 2, 6, 32, act=R6),
            _st(IR, 4, 3, 2, 6, 64, act=R6),
            _st(IR, 3, 3, 1, 6, 96, act=R6),
            _st(IR, 3, 3, 2, 6, 160, act=R6),
            _st(IR, 1, 3, 1, 6, 320, act=R6),
        ),
        head_conv_channels=1280,
        head_hidden_channels=0,
        head_activation=R6,
        fix_stem_below=0.0,
        head_conv_min_width=1.0,
    )


WIDTHS = {"035": 0.35, "050": 0.5, "075": 0.75, "": 1.0, "125": 1.25}


def all_references() -> dict[str, ArchSpec]:
    """Every registered reference network at 224², 1000 classes, by name."""
    out: dict[str, ArchSpec] = {}
    for suffix, w in WIDTHS.items():
        for family, recipe in (("mobilenetv3_large", v3_large()), ("mobilenetv3_small", v3_small())):
            name = f"{family}_{suffix}" if suffix else family
            out[name] = build_spec(recipe, w, name=name)
    out["mobilenetv3_large_minimal"] = build_spec(v3_large(minimal=True), name="mobilenetv3_large_minimal")
    out["mobilenetv3_small_minimal"] = build_spec(v3_small(minimal=True), name="mobilenetv3_small_minimal")
    out["mobilenetv3_large_classic_last_stage"] = build_spec(
        v3_large_classic_last_stage(), name="mobilenetv3_large_classic_last_stage"
    )
    out["mobilenetv3_large_stem32_relu"] = build_spec(v3_large_stem32_relu(), name="mobilenetv3_large_stem32_relu")
    out["mnasnet_a1"] = build_spec(mnasnet_a1(), name="mnasnet_a1")
    out["mobilenetv2"] = build_spec(mobilenetv2(), name="mobilenetv2")
    out["mobilenetv2_035"] = build_spec(mobilenetv2(), 0.35, name="mobilenetv2_035")
    return out


DENSE_FOLDER = "dense"
# task suffix → (segmentation classes, segmentation resolution, detection classes incl. background, detection res.)
DENSE_TASKS = {"paper": (19, 1024, 91, 320), "dense": (11, 128, 11, 128)}
SEGMENTATION_HEADS = {DenseKind.LRASPP: 128, DenseKind.RASPP: 256}  # F of the paper's Table 7 rows 8/11 and 5–6


def dense_spec(backbone: str, kind: DenseKind, *, rf2: bool, num_classes: int, resolution: int,
               filters: int | None = None, name: str = "") -> ArchSpec:
    """MobileNetV3-``backbone`` ("large" or "small") with a dense head, as the paper's Tables 6–7.

    Segmentation: atrous last stage (output stride 16), RF2 by DeepLab's rule. Detection: no dilation,
    "†" by torchvision's rule. The classification hidden layer is dropped; the last 1×1 conv stays.
    """
    recipe = {"large": v3_large, "small": v3_small}[backbone]()
    spec = build_spec(recipe, name=name, resolution=resolution)
    if kind is DenseKind.SSDLITE:
        return attach_head(reduce_tail(spec) if rf2 else spec, DenseHead(kind), num_classes=num_classes)
    spec = reduce_tail(spec, halve_first_expansion=True) if rf2 else spec
    head = DenseHead(kind, filters=SEGMENTATION_HEADS[kind] if filters is None else filters)
    return attach_head(spec, head, num_classes=num_classes)


def dense_references() -> dict[str, ArchSpec]:
    """Every registered dense reference, by name: ``mobilenetv3_{large,small}_{lraspp,raspp,ssdlite}[_rf2]_{task}``,
    task = ``cityscapes`` (segmentation) / ``coco`` (detection) for the paper's setting, or ``dense``."""
    out: dict[str, ArchSpec] = {}
    for task, (seg_classes, seg_res, det_classes, det_res) in DENSE_TASKS.items():
        for backbone in ("large", "small"):
            for kind in (DenseKind.LRASPP, DenseKind.RASPP, DenseKind.SSDLITE):
                for rf2 in (False, True):
                    seg = kind is not DenseKind.SSDLITE
                    suffix = ("cityscapes" if seg else "coco") if task == "paper" else task
                    name = f"mobilenetv3_{backbone}_{kind.value}{'_rf2' if rf2 else ''}_{suffix}"
                    out[name] = dense_spec(backbone, kind, rf2=rf2, num_classes=seg_classes if seg else det_classes,
                                           resolution=seg_res if seg else det_res, name=name)
    return out


def write_all(folder: Path = Path(__file__).parent) -> list[Path]:
    paths = []
    for name, spec in all_references().items():
        path = folder / f"{name}.json"
        spec.save(path)
        paths.append(path)
    (folder / DENSE_FOLDER).mkdir(exist_ok=True)
    for name, spec in dense_references().items():
        path = folder / DENSE_FOLDER / f"{name}.json"
        spec.save(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_all():
        print(p)
