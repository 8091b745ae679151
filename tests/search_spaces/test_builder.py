"""Blocks as the paper describes them; the walk and the builder agree layer by layer."""

import onnx
import pytest
import torch
from torch import nn

from search_spaces import Gate, LayerKind, Role, count, references, walk
from search_spaces.builder import BN_EPS, InvertedResidual, SqueezeExcite, build_model
from search_spaces.export import export_onnx
from search_spaces.scaling import make_divisible


def test_activations_are_the_papers_formulas():
    x = torch.linspace(-6, 6, 1001)
    relu6 = lambda v: torch.clamp(v, 0, 6)  # noqa: E731
    assert torch.allclose(nn.Hardswish()(x), x * relu6(x + 3) / 6, atol=1e-6)
    assert torch.allclose(nn.Hardsigmoid()(x), relu6(x + 3) / 6, atol=1e-6)


@pytest.mark.parametrize("v,expected", [(16 * 0.35, 8), (24 * 0.75, 24), (80 * 0.75, 64), (960 * 0.75, 720),
                                        (88.08, 88), (12, 16), (20, 24), (1.0, 8), (100, 104)])
def test_make_divisible_matches_the_reference_rule(v, expected):
    assert make_divisible(v) == expected


def test_layers_match_the_walk_and_the_paper_table():
    spec = references.get("mobilenetv3_large")
    layers = walk(spec)
    model = build_model(spec)
    assert len(model.layers) == len(layers)
    roles = [l.role for l in layers]
    assert roles[0] is Role.STEM and roles[-1] is Role.CLASSIFIER
    assert roles[-4:] == [Role.HEAD_CONV, Role.POOL, Role.HEAD_HIDDEN, Role.CLASSIFIER]
    # Table 1 input resolutions of the 15 bnecks.
    res = [l.key.resolution for l in layers if l.role is Role.BLOCK]
    assert res == [112, 112, 56, 56, 28, 28, 28, 14, 14, 14, 14, 14, 14, 7, 7]
    # SE squeeze = make_divisible(exp / 4, 8): Table 1's derived column.
    se = [l.key.se_channels for l in layers if l.role is Role.BLOCK]
    assert se == [0, 0, 0, 24, 32, 32, 0, 0, 0, 0, 120, 168, 168, 240, 240]
    assert all(l.key.se_gate is Gate.HSIGMOID for l in layers if l.key.se_channels)


def test_no_expansion_conv_when_exp_equals_in():
    model = build_model(references.get("mobilenetv3_large"))
    first, second = model.layers[1], model.layers[2]
    assert isinstance(first, InvertedResidual) and isinstance(first.expand, nn.Identity)
    assert isinstance(second.expand, nn.Sequential)


def test_residual_only_where_the_spec_says():
    spec = references.get("mobilenetv3_small")
    model = build_model(spec)
    for layer, module in zip(walk(spec), model.layers):
        if layer.role is Role.BLOCK:
            assert module.residual == layer.key.residual
            assert module.residual == (layer.key.stride == 1 and layer.key.in_channels == layer.key.out_channels)


def test_batchnorm_eps_and_se_structure():
    model = build_model(references.get("mobilenetv3_small"))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == BN_EPS == 1e-3 for m in bns)
    se = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert se[0].reduce.in_channels == 16 and se[0].reduce.out_channels == 8  # bneck 1 of Small
    assert isinstance(se[0].gate, nn.Hardsigmoid) and isinstance(se[0].act, nn.ReLU)


def test_mnasnet_se_is_sized_from_the_input_with_a_sigmoid():
    spec = references.get("mnasnet_a1")
    se_layers = [l for l in walk(spec) if l.key.se_channels]
    first = se_layers[0].key
    assert (first.in_channels, first.expand_channels, first.se_channels) == (24, 72, 6)
    model = build_model(spec)
    assert all(isinstance(m.gate, nn.Sigmoid) for m in model.modules() if isinstance(m, SqueezeExcite))


def test_regular_conv_block_with_se_and_residual_builds_and_counts():
    base = references.get("mobilenetv3_small")
    spec = base.with_block(2, kind=base.blocks[2].kind.__class__("conv"), expand_channels=24, se=True)
    assert walk(spec)[3].key.kind is LayerKind.CONV
    model = build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == count(spec).params
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_same_seed_same_weights():
    torch.manual_seed(0)
    a = build_model(references.get("mobilenetv3_small")).state_dict()
    torch.manual_seed(0)
    b = build_model(references.get("mobilenetv3_small")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_exported_graph_is_lean():
    data = export_onnx(references.get("mobilenetv3_large"), resolution=224)
    ops = [n.op_type for n in onnx.load_from_string(data).graph.node]
    assert set(ops) == {"Conv", "HardSwish", "Relu", "Add", "GlobalAveragePool", "HardSigmoid", "Mul",
                        "Flatten", "Gemm"}
    # One Conv per conv layer: BN is folded into the convs, nothing else is added.
    spec = references.get("mobilenetv3_large")
    convs = sum(1 + (l.key.expand_channels != l.key.in_channels) + 1 + 2 * bool(l.key.se_channels)
                for l in walk(spec) if l.key.kind is LayerKind.MBCONV or l.key.kind is LayerKind.DSCONV)
    convs += sum(1 for l in walk(spec) if l.key.kind is LayerKind.CONV)
    assert ops.count("Conv") == convs
    assert ops.count("HardSigmoid") == ops.count("Mul") == sum(1 for l in walk(spec) if l.key.se_channels)


def test_a_valid_spec_too_large_to_build_is_refused_with_its_parameter_count():
    """4096 hidden channels × 100,000 classes is a valid spec (each size within its limit) of 410M params."""
    import pytest

    from search_spaces import references
    from search_spaces.builder import build_model
    from search_spaces.spec import SpecError

    spec = references.get("mobilenetv3_small")
    huge = spec.replace(num_classes=100_000, head=spec.head.__class__(**{**spec.to_dict()["head"],
                                                                        "hidden_channels": 4096}))
    with pytest.raises(SpecError, match=r"parameters; at most 200,000,000 are built"):
        build_model(huge)
    build_model(spec)  # a normal network builds
