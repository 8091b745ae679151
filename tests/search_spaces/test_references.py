"""Every registered architecture: builds, runs, round-trips JSON, agrees on costs, exports to ONNX."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from search_spaces import ArchSpec, count, references
from search_spaces.builder import build_model
from search_spaces.export import export_onnx
from search_spaces.references.recipes import all_references

NAMES = references.names()

# Counted on randomly initialised models of the public implementations (timm's tf_mobilenetv3_* and
# semnasnet_100, torchvision's mobilenet_v2; TF width rule) with torch.utils.flop_counter.FlopCounterMode
# (MAdds = FLOPs / 2) and sum(p.numel()): params exact, MAdds in M.
PUBLISHED = {
    "mobilenetv3_large": (5_483_032, 216.6),
    "mobilenetv3_large_075": (3_993_528, 154.6),
    "mobilenetv3_large_minimal": (3_924_288, 209.1),
    "mobilenetv3_small": (2_542_856, 56.5),
    "mobilenetv3_small_075": (2_041_872, 43.4),
    "mobilenetv3_small_050": (1_593_224, 24.2),
    "mobilenetv3_small_minimal": (2_044_736, 52.3),
    "mnasnet_a1": (3_887_038, 311.6),
    "mobilenetv2": (3_504_872, 300.8),
    "mobilenetv2_035": (1_677_128, 59.3),
}


def test_registry_has_the_required_architectures():
    required = {"mobilenetv3_large", "mobilenetv3_small", "mnasnet_a1", "mobilenetv2", "mobilenetv2_035",
                "mobilenetv3_large_minimal", "mobilenetv3_small_minimal",
                "mobilenetv3_large_classic_last_stage", "mobilenetv3_large_stem32_relu"}
    for family in ("mobilenetv3_large", "mobilenetv3_small"):
        required |= {f"{family}_{w}" for w in ("035", "050", "075", "125")}
    assert required <= set(NAMES)


def test_shipped_json_matches_the_recipes():
    built = all_references()
    assert set(built) == set(NAMES)
    for name, spec in built.items():
        assert references.get(name) == spec, name


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_counts_match_the_public_implementations(name):
    params, madds_m = PUBLISHED[name]
    c = count(references.get(name))
    assert c.params == params
    assert abs(c.madds / 1e6 - madds_m) < 0.06


def test_paper_table9_widths_within_rounding():
    # MobileNetV3 paper (arXiv v5) Table 9: Large 0.75 = 155M / 4.0M, Small 0.75 = 44M / 2.0M, Small 1.25 = 91M / 3.6M.
    for name, madds_m, params_m in [("mobilenetv3_large_075", 155, 4.0), ("mobilenetv3_small_075", 44, 2.0),
                                    ("mobilenetv3_small_125", 91, 3.6), ("mobilenetv3_large_125", 356, None)]:
        c = count(references.get(name))
        assert round(c.madds / 1e6) == pytest.approx(madds_m, abs=1)
        if params_m is not None:
            assert round(c.params / 1e6, 1) == pytest.approx(params_m, abs=0.05)


def test_ablations_save_what_the_paper_says():
    large = count(references.get("mobilenetv3_large")).madds
    classic = count(references.get("mobilenetv3_large_classic_last_stage")).madds
    stem32 = count(references.get("mobilenetv3_large_stem32_relu")).madds
    # MobileNetV3 §5.1: the efficient last stage saves ~30M MAdds, the 16-filter stem ~10M.
    assert 28e6 < classic - large < 36e6
    assert 9e6 < stem32 - large < 12e6


@pytest.mark.parametrize("name", NAMES)
def test_json_round_trip_keeps_the_id(name):
    spec = references.get(name)
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec
    assert again.arch_id == spec.arch_id
    assert json.loads(again.to_json()) == json.loads(spec.to_json())


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and classifier weights, so output comparisons mean something."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        elif isinstance(m, torch.nn.Linear):
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)


@pytest.mark.parametrize("name", NAMES)
def test_builds_runs_counts_and_exports(name, tmp_path):
    spec = references.get(name).replace(num_classes=10)
    res = 64  # small resolution keeps the suite fast; costs are checked at the same resolution
    model = build_model(spec).eval()
    _randomize(model)
    x = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(1))

    flops = FlopCounterMode(display=False)
    with flops, torch.no_grad():
        y = model(x[:1])
    assert y.shape == (1, 10)
    cost = count(spec, resolution=res)
    assert sum(p.numel() for p in model.parameters()) == cost.params
    assert flops.get_total_flops() // 2 == cost.madds

    path = tmp_path / f"{name}.onnx"
    export_onnx(model, path, resolution=res)
    assert not list(tmp_path.glob("*.data")), "export must be a single file"
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 17
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model(x[:1]).numpy()
    out = sess.run(None, {sess.get_inputs()[0].name: x[:1].numpy()})[0]
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(out - ref).max() <= 1e-4 * scale
