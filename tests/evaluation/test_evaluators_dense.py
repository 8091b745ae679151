"""Dense tasks through the evaluator seam: the candidate with its head, trained on real mosaics, scored by
mIoU / mAP; and the refusals (unknown task, a head of the other task, the supernet, bad mosaic options)."""

import json
from pathlib import Path

import pytest

from evaluation.dense_task import DenseTaskConfig, TaskError, TaskSpace, check_task, metric_label, with_head
from evaluation.evaluate import EvalConfig, evaluate_candidate
from evaluation.evaluators import scoring_resolution
from search_spaces import references, resolve_arch
from search_spaces.spaces import get_space
from search_spaces.spec import DenseKind

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_data = pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package")

TINY = {"mosaic": {"canvas_px": 64}, "splits": {"train_images": 64, "holdout_images": 16, "test_images": 16}}


def dense_cfg(task="segmentation", **dense) -> EvalConfig:
    return EvalConfig(task=task, dense={**TINY, **dense}, latency="analytic", deploy_resolution=64,
                      train={"steps": 2, "batch_size": 8, "threads": 1, "eval_batch_size": 16})


def backbone():
    return references.get("mobilenetv3_small").replace(in_channels=1, num_classes=10)


@needs_data
@pytest.mark.parametrize("task,metric", [("segmentation", "miou"), ("detection", "map")])
def test_a_dense_candidate_is_trained_on_mosaics_and_scored_by_its_metric(task, metric):
    cfg = dense_cfg(task)
    spec = with_head(backbone(), cfg, num_classes=10)
    assert spec.dense.kind is (DenseKind.LRASPP if task == "segmentation" else DenseKind.SSDLITE)
    assert spec.num_classes == 11  # ten Fashion-MNIST classes + background
    res = evaluate_candidate(spec.to_json(), cfg, seed=0)
    assert res.error is None, res.error
    assert 0.0 <= res.accuracy <= 1.0 and res.steps == 2
    assert res.latency_predicted_ms > 0 and res.params > 0
    assert metric_label(task) == {"miou": "mIoU", "map": "mAP"}[metric]


@needs_data
def test_the_same_seed_gives_the_same_score():
    cfg = dense_cfg()
    spec = with_head(backbone(), cfg, num_classes=10).to_json()
    a, b = (evaluate_candidate(spec, cfg, seed=3).accuracy for _ in range(2))
    assert a == b


@needs_data
def test_a_network_of_other_input_channels_than_the_mosaics_stops_the_search_in_one_line():
    cfg = dense_cfg()
    spec = with_head(backbone(), cfg, num_classes=10).replace(in_channels=2)
    with pytest.raises(TaskError, match="2-channel input, the mosaics give 1") as e:
        evaluate_candidate(spec.to_json(), cfg, seed=0)
    assert "\n" not in str(e.value)


def test_head_options_shape_the_network():
    plain = with_head(backbone(), dense_cfg(), 10)
    rf2 = with_head(backbone(), dense_cfg(reduced_tail=True, filters=64, head="raspp"), 10)
    assert plain.blocks[-1].dilation == 2 and plain.dense.filters == 128
    assert rf2.dense.kind is DenseKind.RASPP and rf2.dense.filters == 64
    assert rf2.blocks[-1].out_channels == plain.blocks[-1].out_channels // 2
    det = with_head(backbone(), dense_cfg("detection"), 10)
    assert det.blocks[-1].dilation == 1  # SSDLite reads 1/32 features
    assert with_head(backbone(), EvalConfig(), 10) == backbone()


def test_a_space_decodes_candidates_with_the_head():
    space = TaskSpace(get_space("mobilenetv3_small", resolution=64, in_channels=1, num_classes=10), dense_cfg())
    spec = space.decode(next(iter(space.seeds().values())))
    assert spec.dense.kind is DenseKind.LRASPP and spec.num_classes == 11 and spec.in_channels == 1
    assert space.size == space.space.size  # the same decisions
    ref = space.with_head(references.get("mobilenetv3_small_lraspp_dense"))  # a dense reference keeps its head
    assert ref.dense.filters == 128 and ref.in_channels == 1 and ref.num_classes == 11
    with pytest.raises(TaskError, match="ssdlite head, not a segmentation head"):
        space.with_head(references.get("mobilenetv3_small_ssdlite_dense"))


def test_dense_references_resolve_by_name():
    assert resolve_arch("mobilenetv3_large_lraspp_rf2_dense").dense.kind is DenseKind.LRASPP
    with pytest.raises(ValueError, match="did you mean.*mobilenetv3_small_lraspp_dense"):
        resolve_arch("mobilenetv3_small_lraspp_dens")


def test_scoring_resolution_is_the_canvas():
    assert scoring_resolution(dense_cfg(mosaic={"canvas_px": 96})) == 96


@pytest.mark.parametrize("cfg,message", [
    (EvalConfig(task="depth"), "--task must be one of classification, segmentation, detection"),
    (EvalConfig(dense={"head": "lraspp"}), "dense task options \\(head\\) need --task segmentation"),
    (EvalConfig(task="segmentation", dense={"head": "ssdlite"}), "--head ssdlite is not a segmentation head"),
    (EvalConfig(task="detection", dense={"head": "lraspp"}), "--head lraspp is not a detection head"),
    (EvalConfig(task="segmentation", dense={"filters": 0}), "--head-filters must be an int >= 1"),
    (EvalConfig(task="segmentation", dense={"colour": 1}), "unknown key 'colour'"),
    (EvalConfig(task="segmentation", dense={"mosaic": {"canvas": 64}}), "dense mosaic options: unknown key 'canvas'"),
    (EvalConfig(task="segmentation", dense={"mosaic": {"canvas_px": 0}}), "MosaicConfig.canvas_px must be"),
    (EvalConfig(task="segmentation", dense={"splits": {"train_images": 0}}), "train_images must be an int >= 1"),
    (EvalConfig(task="detection", dense={"scoring": {"nms_iou": 2}}), "DenseConfig.nms_iou must be"),
    (EvalConfig(task="segmentation", evaluator="supernet"), "--evaluator supernet: --task segmentation is not "
                                                            "supported yet"),
])
def test_bad_task_options_are_one_line_errors(cfg, message):
    with pytest.raises(TaskError, match=message) as e:
        check_task(cfg)
    assert "\n" not in str(e.value)


def test_task_options_round_trip_through_config_json():
    cfg = dense_cfg(reduced_tail=True)
    back = EvalConfig(**json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and DenseTaskConfig.of(back).reduced_tail
