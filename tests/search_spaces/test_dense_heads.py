"""Dense heads (LR-ASPP, R-ASPP, SSDLite) and the reduced-tail / dilated backbones as spec data."""

import json
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from search_spaces import ArchSpec, SpecError, count, references, walk
from search_spaces.builder import anchors, build_model
from search_spaces.dense import attach_head, dilate_last_stage, reduce_tail
from search_spaces.export import export_onnx
from search_spaces.references.recipes import dense_references, dense_spec
from search_spaces.spec import DenseHead, DenseKind, Head, output_strides
from search_spaces.walk import NETWORK_INPUT, LayerKind, Point, Role

LRASPP, RASPP, SSDLITE = DenseKind.LRASPP, DenseKind.RASPP, DenseKind.SSDLITE


# -- exact counts -------------------------------------------------------------------------------------

def test_params_equal_torchvisions_published_counts():
    # torchvision LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1: 3,221,538 params, 21 classes,
    # backbone mobilenet_v3_large(dilated=True) without reduced tail (segmentation/lraspp.py).
    seg = dense_spec("large", LRASPP, rf2=False, num_classes=21, resolution=520)
    assert count(seg).params == 3_221_538
    # torchvision SSDLite320_MobileNet_V3_Large_Weights.COCO_V1: 3,440,060 params, 0.583 "GFLOPS" (torchvision's
    # _ops count multiply-adds: mobilenet_v3_large's 0.217 is 216.6M MAdds), 91 classes with background,
    # reduced_tail=True (detection/ssdlite.py sets it when no pretrained backbone is used, as for these weights).
    det = dense_spec("large", SSDLITE, rf2=True, num_classes=91, resolution=320)
    c = count(det)
    assert c.params == 3_440_060
    assert round(c.madds / 1e9, 3) == 0.583
    assert anchors(det).shape == (3234, 4)  # torchvision's SSDLite320 anchor count


@pytest.mark.parametrize("backbone,kind,rf2,filters,params_m", [
    ("large", RASPP, False, 256, 3.60),  # MobileNetV3 paper Table 7, row 5
    ("large", RASPP, True, 256, 1.76),  # row 6
    ("large", LRASPP, True, 256, 1.63),  # row 7
    ("large", LRASPP, True, 128, 1.51),  # row 8
    ("small", LRASPP, True, 128, 0.47),  # row 11
])
def test_paper_table7_params_within_rounding(backbone, kind, rf2, filters, params_m):
    spec = dense_spec(backbone, kind, rf2=rf2, num_classes=19, resolution=1024, filters=filters)
    assert round(count(spec).params / 1e6, 2) == params_m


def test_reference_files_match_the_recipes_and_round_trip():
    built = dense_references()
    assert set(built) == set(references.dense_names())
    assert not set(built) & set(references.names())  # classification registry unchanged
    for name, spec in built.items():
        assert references.get(name) == spec, name
        again = ArchSpec.from_json(spec.to_json())
        assert again == spec and again.arch_id == spec.arch_id


# -- arch_id stability ----------------------------------------------------------------------------

def test_defaults_are_not_serialized():
    spec = references.get("mobilenetv3_large")
    data = spec.to_dict()
    assert "dense" not in data and all("dilation" not in b for b in data["blocks"])
    keys = [layer.key.to_dict() for layer in walk(spec)]
    assert all("dilation" not in k and "out_size" not in k for k in keys)  # lookup-table keys unchanged
    seg = references.get("mobilenetv3_large_lraspp_rf2_cityscapes").to_dict()
    assert [b.get("dilation", 1) for b in seg["blocks"]][-3:] == [2, 2, 2]
    assert seg["dense"] == {"kind": "lraspp", "filters": 128}
    det = references.get("mobilenetv3_large_ssdlite_coco").to_dict()
    assert det["dense"] == {"kind": "ssdlite", "extra_channels": [512, 256, 256, 128]}


# -- backbone transforms ---------------------------------------------------------------------------

def test_reduce_tail_and_dilation_follow_the_reference_implementations():
    large = references.get("mobilenetv3_large")
    tv = reduce_tail(large)  # torchvision reduced_tail=True
    assert [(b.expand_channels, b.out_channels) for b in tv.blocks[-3:]] == [(672, 80), (480, 80), (480, 80)]
    assert (tv.head.conv_channels, tv.head.hidden_channels) == (480, 640)
    dl = reduce_tail(large, halve_first_expansion=True)  # DeepLab mobilenet_v3_large_seg
    assert dl.blocks[-3].expand_channels == 336
    small = reduce_tail(references.get("mobilenetv3_small"), halve_first_expansion=True)
    assert [(b.expand_channels, b.out_channels) for b in small.blocks[-3:]] == [(144, 48), (288, 48), (288, 48)]
    assert small.head.conv_channels == 288
    dil = dilate_last_stage(large)
    assert [(b.stride, b.dilation) for b in dil.blocks[-3:]] == [(1, 2)] * 3
    assert output_strides(dil)[-1] == 16 and output_strides(large)[-1] == 32


# -- validation -----------------------------------------------------------------------------------

def _seg_json(**top):
    data = references.get("mobilenetv3_small_lraspp_rf2_dense").to_dict()
    data.update(top)
    return data


@pytest.mark.parametrize("edit,path", [
    (lambda d: d.update(resolution=8), "resolution"),
    (lambda d: d.update(num_classes=0), "num_classes"),
    (lambda d: d["dense"].update(filters=0), "dense.filters"),
    (lambda d: d["dense"].update(kind="fcn"), "dense.kind"),
    (lambda d: d["dense"].update(extra_channels=[64]), "dense"),  # not a segmentation field
    (lambda d: d["blocks"][8].update(stride=2), "blocks[8].dilation"),  # dilated and strided
    (lambda d: d["blocks"][8].update(dilation=3), "blocks[8].dilation"),
    (lambda d: d["head"].update(hidden_channels=1024), "head.hidden_channels"),
    (lambda d: d.update(dense={"kind": "ssdlite"}), "blocks[8].dilation"),  # ssdlite on a dilated backbone
    (lambda d: d.update(dense={"kind": "ssdlite", "extra_channels": [1]}), "dense.extra_channels[0]"),
])
def test_bad_dense_specs_name_the_field(edit, path):
    data = _seg_json()
    edit(data)
    with pytest.raises(SpecError) as e:
        ArchSpec.from_dict(data)
    assert e.value.path == path


def test_missing_feature_maps_are_rejected():
    det = references.get("mobilenetv3_small_ssdlite_dense")
    with pytest.raises(SpecError) as e:  # C4 = the expansion of blocks[8]; without one there is no C4
        det.with_block(8, expand_channels=48, se=False)
    assert e.value.path == "blocks[8].expand_channels"
    no_os32 = det.replace(dense=None).with_block(8, stride=1)  # no block goes from 1/16 to 1/32
    with pytest.raises(SpecError, match="C4 is missing"):
        no_os32.replace(dense=DenseHead(SSDLITE))
    shallow = det.replace(dense=None, blocks=det.blocks[:3], head=Head(conv_channels=0))  # ends at 1/8
    with pytest.raises(SpecError) as e:
        shallow.replace(dense=DenseHead(LRASPP))
    assert e.value.path == "blocks"
    with pytest.raises(SpecError) as e:  # walking at a training resolution below the deepest stride
        walk(references.get("mobilenetv3_small_lraspp_dense"), 8)
    assert e.value.path == "resolution"


# -- walk, builder, costs ---------------------------------------------------------------------------

SMALL = {kind: dense_spec("small", kind, rf2=rf2, num_classes=11, resolution=64)
         for kind, rf2 in ((LRASPP, True), (RASPP, False), (SSDLITE, True))}


def test_walk_keeps_the_backbone_and_reads_only_earlier_layers():
    spec = SMALL[SSDLITE]
    layers = walk(spec)
    classifier = walk(reduce_tail(references.get("mobilenetv3_small")).replace(resolution=64))
    n = 1 + len(spec.blocks) + 1  # stem, blocks, last 1×1 conv
    assert [layer.key for layer in layers[:n]] == [layer.key for layer in classifier[:n]]
    assert len(classifier) - 3 == n  # pool, hidden, classifier replaced by the head
    for layer in layers[n:]:
        assert layer.inputs and all(t.index < layer.index for t in layer.inputs)
    c4 = [t for layer in layers for t in layer.inputs if t.point is Point.EXPAND]
    assert {t.index for t in c4} == {9}  # blocks[8] (the stem is layer 0)
    assert [layer.role for layer in layers if layer.role is Role.OUTPUT] == [Role.OUTPUT] * 2
    seg = walk(SMALL[LRASPP])
    assert seg[-1].inputs[-1].index == NETWORK_INPUT and seg[-1].out_resolution == 64
    low = [layer for layer in seg if layer.role is Role.SEG_CLASSIFIER][1]
    assert low.inputs[0].index == 2 and low.key.in_channels == 24  # the 1/8 features of blocks[1]


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("kind", [LRASPP, RASPP, SSDLITE])
def test_builds_counts_and_exports_every_head(kind, tmp_path):
    spec = SMALL[kind]
    model = build_model(spec)
    assert len(model.layers) == len(walk(spec))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    outputs = model.train()(x)  # every parameter is used and trains
    sum(o.square().mean() for o in (outputs if kind is SSDLITE else (outputs,))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in model.parameters())
    model.eval()
    _randomize(model)
    flops = FlopCounterMode(display=False)
    with flops, torch.no_grad():
        model(x[:1])
    with torch.no_grad():
        out = model(x)
    cost = count(spec)
    assert sum(p.numel() for p in model.parameters()) == cost.params
    assert flops.get_total_flops() // 2 == cost.madds
    if kind is SSDLITE:
        scores, boxes = out
        a = anchors(spec, 64).shape[0]
        assert scores.shape == (2, a, 11) and boxes.shape == (2, a, 4)
        refs = (scores[:1].numpy(), boxes[:1].numpy())
    else:
        assert out.shape == (2, 11, 64, 64)
        refs = (out[:1].numpy(),)
    path = tmp_path / "dense.onnx"
    export_onnx(model, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x[:1].numpy()})
    assert [o.name for o in sess.get_outputs()] == (["logits", "boxes"] if kind is SSDLITE else ["logits"])
    for ref, onnx_out in zip(refs, got):
        assert np.abs(onnx_out - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.slow
def test_whole_network_export_from_a_spec():
    data = export_onnx(references.get("mobilenetv3_small_lraspp_rf2_dense").replace(resolution=64))
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"input": np.zeros((1, 3, 64, 64), np.float32)})
    assert out.shape == (1, 11, 64, 64)


def test_segmentation_logits_depend_on_the_skip():
    model = build_model(SMALL[LRASPP]).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = model(x)
        low = [m for layer, m in zip(walk(SMALL[LRASPP]), model.layers) if layer.role is Role.SEG_CLASSIFIER][1]
        low.conv[0].weight.zero_()
        low.conv[0].bias.zero_()
        assert not torch.allclose(model(x), base)


def test_anchors_match_torchvisions_default_boxes():
    spec = references.get("mobilenetv3_large_ssdlite_rf2_coco")
    boxes = anchors(spec)
    sizes = [layer.out_resolution for layer in walk(spec)
             if layer.role is Role.DET_CLASS_HEAD and layer.key.kind is LayerKind.CONV]
    assert sizes == [20, 10, 5, 3, 2, 1]
    assert boxes.shape == (6 * sum(s * s for s in sizes), 4)
    first = boxes[:6]
    s0, s1 = 0.2, 0.2 + 0.75 / 5
    expected = [[s0, s0], [math.sqrt(s0 * s1)] * 2, [s0 * math.sqrt(2), s0 / math.sqrt(2)],
                [s0 / math.sqrt(2), s0 * math.sqrt(2)], [s0 * math.sqrt(3), s0 / math.sqrt(3)],
                [s0 / math.sqrt(3), s0 * math.sqrt(3)]]
    assert torch.allclose(first[:, :2], torch.tensor([0.025, 0.025]))
    assert torch.allclose(first[:, 2:], torch.tensor(expected))
    assert torch.allclose(boxes[6, :2], torch.tensor([0.075, 0.025]))  # next column, same row
    last = boxes[-6:]
    assert torch.allclose(last[:, :2], torch.tensor([0.5, 0.5]))
    assert torch.allclose(last[:2, 2:], torch.tensor([[0.95, 0.95], [math.sqrt(0.95)] * 2]))
    assert float(last[2:, 2:].max()) == 1.0  # clipped, as DefaultBoxGenerator(clip=True)
    with pytest.raises(SpecError):
        anchors(SMALL[LRASPP])


def test_dense_json_is_plain_data():
    text = references.get("mobilenetv3_small_ssdlite_dense").to_json()
    assert json.loads(text)["dense"]["kind"] == "ssdlite"


@pytest.mark.parametrize("name", ["mnasnet_a1", "mobilenetv2"])
def test_attach_head_to_any_backbone(name):
    base = references.get(name)
    seg = attach_head(base, DenseHead(LRASPP, filters=64), num_classes=11)
    assert output_strides(seg)[-1] == 16 and output_strides(base)[-1] == 32
    assert seg.head.hidden_channels == 0 and seg.num_classes == 11
    det = attach_head(base, DenseHead(SSDLITE), num_classes=11)
    assert [b.dilation for b in det.blocks] == [1] * len(base.blocks)
    n = 1 + len(base.blocks) + 1
    assert [layer.key for layer in walk(det)[:n]] == [layer.key for layer in walk(base)[:n]]
    assert anchors(det).shape == (6 * (14 * 14 + 7 * 7 + 4 * 4 + 2 * 2 + 1 + 1), 4)  # 224²: maps 14, 7, 4, 2, 1, 1


def _madds_1024x2048(spec: ArchSpec) -> float:
    """Exact for inputs whose sides are multiples of 32: per-pixel work is a·pixels, the 1×1-map convs (SE,
    gate, image pooling) a constant b; two square walks give a and b."""
    m1, m2 = count(spec, 1024).madds, count(spec, 512).madds
    a = (m1 - m2) / (1024 ** 2 - 512 ** 2)
    return a * 2 * 1024 ** 2 + (m1 - a * 1024 ** 2)


@pytest.mark.parametrize("name,ours_b,paper_b", [
    ("mobilenetv3_large_raspp_cityscapes", 17.79, 18.43),  # Table 7 row 5
    ("mobilenetv3_large_raspp_rf2_cityscapes", 10.83, 11.24),  # row 6
    ("mobilenetv3_large_lraspp_rf2_cityscapes", 9.32, 9.74),  # row 8
    ("mobilenetv3_small_lraspp_rf2_cityscapes", 2.69, 2.90),  # row 11
])
def test_table7_madds_as_the_readme_reports(name, ours_b, paper_b):
    madds = _madds_1024x2048(references.get(name)) / 1e9
    assert round(madds, 2) == ours_b
    assert 0.92 < madds / paper_b < 0.97  # below the paper's by 3.5–7 %: see the README ("Dense heads")
