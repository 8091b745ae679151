"""``nas search --task segmentation|detection``: the backbone searched with the head attached, real data,
training, Ray and ONNX Runtime at tiny budgets; and the refusals."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.dense_task import TaskSpace
from evaluation.evaluate import EvalConfig
from nas.search import SearchConfig, SearchError, resolve_target, run_search
from search_spaces import load
from search_spaces.spaces import get_space
from search_spaces.spec import DenseKind

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_data = pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package")

FAST_MEASURE = {"warmup_min_s": 0.0, "min_runs": 10, "max_runs": 100, "time_cap_s": 0.1, "sessions": 2}
TINY_DENSE = {"mosaic": {"canvas_px": 64}, "splits": {"train_images": 64, "holdout_images": 16, "test_images": 16}}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))


def tiny(run_dir, task="segmentation", **changes) -> SearchConfig:
    eval_cfg = EvalConfig(task=task, dense=TINY_DENSE, latency="analytic", deploy_resolution=64,
                          measure=FAST_MEASURE,
                          train={"steps": 2, "batch_size": 8, "threads": 1, "eval_batch_size": 16})
    cfg = SearchConfig(run_dir=str(run_dir), space="mobilenetv3_small", searcher="random", trials=2, target_ms=5.0,
                       top_k=1, workers=1, eval=eval_cfg)
    eval_changes = changes.pop("eval", {})
    return SearchConfig.from_dict({**cfg.to_dict(), **changes, "eval": {**eval_cfg.to_dict(), **eval_changes}})


@needs_data
def test_a_segmentation_search_finds_a_backbone_with_its_head(tmp_path):
    run = tmp_path / "run"
    out = run_search(tiny(run), echo=None)
    assert out.completed == 2 and out.failed == 0
    found = load(run / "found.json")
    assert found.dense.kind is DenseKind.LRASPP and found.num_classes == 11 and found.in_channels == 1
    metrics = json.loads((run / "found_metrics.json").read_text())
    assert metrics["task"] == "segmentation" and metrics["metric"] == "miou" and metrics["train_resolution"] == 64
    assert 0 <= metrics["accuracy"] <= 1 and metrics["latency_measured_ms"] > 0  # the whole network, measured
    config = json.loads((run / "config.json").read_text())
    assert config["metric"] == "miou" and config["search"]["eval"]["task"] == "segmentation"
    assert SearchConfig.load(run).eval.dense == TINY_DENSE  # --resume reads it back
    with open(run / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(r["state"] == "COMPLETE" and 0 <= float(r["accuracy"]) <= 1 for r in rows)
    from hwnas.report import load_run, summary_rows

    assert summary_rows(load_run(run, "seg"))[0]["metric"] == "miou"  # the report's summary names the score


@needs_data
def test_target_like_takes_a_dense_reference_or_gives_a_backbone_the_head():
    space = TaskSpace(get_space("mobilenetv3_small", resolution=64, in_channels=1, num_classes=10),
                      tiny("x").eval)
    dense_ref = resolve_target(tiny("x", target_ms=None, target_like="mobilenetv3_small_lraspp_dense"), space)
    backbone = resolve_target(tiny("x", target_ms=None, target_like="mobilenetv3_small"), space)
    assert dense_ref > 0 and backbone > 0
    with pytest.raises(ValueError, match="ssdlite head, not a segmentation head"):
        resolve_target(tiny("x", target_ms=None, target_like="mobilenetv3_small_ssdlite_dense"), space)


@pytest.mark.parametrize("changes,message", [
    ({"eval": {"latency": "predicted"}}, "--latency predicted: the per-layer table does not cover dense heads yet"),
    ({"eval": {"evaluator": "supernet"}}, "--evaluator supernet: --task segmentation is not supported yet"),
    ({"eval": {"dense": {"head": "ssdlite"}}}, "--head ssdlite is not a segmentation head"),
    ({"eval": {"task": "classification", "dense": {}, "latency": "analytic"}, "target_ms": None,
      "target_like": "mobilenetv3_small_lraspp_dense"}, "is a dense network; give --task segmentation"),
])
def test_dense_searches_that_cannot_run_stop_before_writing(tmp_path, changes, message):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        run_search(tiny(run, **changes), echo=None)
    assert not run.exists()


def test_the_cli_refuses_predicted_latency_for_a_dense_task_in_one_line(tmp_path):
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "hwnas.cli", "search", "--task", "detection", "--target-ms", "5",
                        "--run-dir", str(run)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "use --latency measured (whole network) or --latency analytic" \
        in p.stderr
    assert not run.exists()


def test_search_error_is_a_value_error():  # the CLI's one-line boundary relies on it
    assert issubclass(SearchError, ValueError)
