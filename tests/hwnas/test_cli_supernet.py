"""`nas supernet train|eval` and the search's evaluator and device options through the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

NAS = str(Path(sys.executable).with_name("nas"))
FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package")


def nas(tmp_path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HWNAS_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("HWNAS_DEBUG", None)
    return subprocess.run([NAS, *args], capture_output=True, text=True, timeout=600, env=env)


def one_line_error(proc: subprocess.CompletedProcess, *hints: str) -> None:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("nas: error: "), proc.stderr[-2000:]
    for hint in hints:
        assert hint in proc.stderr, proc.stderr


@needs_fmnist
def test_train_then_eval_a_subnet_and_save_an_ordinary_checkpoint(tmp_path):
    tiny = ["--space", "mobilenetv3_small", "--steps", "2", "--batch-size", "8", "--resolution", "32",
            "--holdout", "500", "--train-subset", "600", "--n-random", "1", "--threads", "1"]
    trained = nas(tmp_path, "supernet", "train", *tiny, "--json")
    assert trained.returncode == 0, trained.stderr[-2000:]
    out = json.loads(trained.stdout)
    path = Path(out["path"])
    assert path.parent == tmp_path / "cache" / "supernet"
    assert path.name.startswith("mobilenetv3_small-fashion-mnist-32px-")
    assert out["meta"]["complete"] and out["meta"]["trained_steps"] == 2

    save = tmp_path / "sub.pt"
    ev = nas(tmp_path, "supernet", "eval", "--arch", "mobilenetv3_large_like_050", "--supernet", str(path),
             "--holdout", "500", "--bn-images", "64", "--max-eval", "200", "--save", str(save), "--json")
    assert ev.returncode == 0, ev.stderr[-2000:]
    info = json.loads(ev.stdout)
    assert 0 <= info["accuracy"] <= 1 and info["images"] == 200 and info["resolution"] == 32
    from evaluation.evaluate import load_weights
    from search_spaces import load
    from search_spaces.builder import build_model

    model = build_model(load(tmp_path / "sub.json"))
    model.load_state_dict(load_weights(save))
    assert model.eval()(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def test_a_supernet_search_without_a_trained_supernet_says_how_to_train_one(tmp_path):
    proc = nas(tmp_path, "search", "--evaluator", "supernet", "--space", "mnasnet", "--target-ms", "5",
               "--run-dir", str(tmp_path / "run"))
    one_line_error(proc, "no trained supernet for space mnasnet", "nas supernet train --space mnasnet")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_device_cuda_without_cuda_is_a_one_line_error(tmp_path):
    from evaluation.accel import DeviceError
    from evaluation.evaluate import EvalConfig
    from evaluation.supernet import train_supernet
    from nas.search import SearchConfig, SearchError, check_devices

    proc = nas(tmp_path, "search", "--device", "cuda", "--gpus-per-trial", "1", "--target-ms", "5",
               "--run-dir", str(tmp_path / "run"))
    one_line_error(proc, "--device cuda: CUDA is not available on this machine")
    assert not (tmp_path / "run").exists()
    with pytest.raises(SearchError, match="--device cuda needs --gpus-per-trial"):
        check_devices(SearchConfig(run_dir="r", eval=EvalConfig(train={"device": "cuda"})))
    with pytest.raises(SearchError, match="--gpus-per-trial must be 0 or more"):
        check_devices(SearchConfig(run_dir="r", gpus_per_trial=-1))
    with pytest.raises(DeviceError, match="CUDA is not available"):
        train_supernet("mnasnet", device="cuda", echo=None)


def test_gpus_per_trial_on_a_cluster_without_gpus_is_refused_and_gpus_bound_the_slots(monkeypatch):
    import ray

    from evaluation.execution import GPUUnavailableError, RayPool

    resources = {"CPU": 8.0}
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # a cluster already joined: only its resources matter
    monkeypatch.setattr(ray, "cluster_resources", lambda: resources)
    with pytest.raises(GPUUnavailableError, match="--gpus-per-trial 0.5: the Ray cluster has 0 GPU"):
        RayPool(address="auto", gpus_per_trial=0.5)
    assert RayPool(address="auto").slots == 8
    resources["GPU"] = 1.0
    assert RayPool(address="auto", gpus_per_trial=0.25).slots == 4
    assert RayPool(address="auto", gpus_per_trial=1).slots == 1


@needs_fmnist
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a Ray cluster without GPUs")
def test_gpus_per_trial_on_a_cluster_without_gpus_fails_before_any_trial(tmp_path):
    run = tmp_path / "run"
    proc = nas(tmp_path, "search", "--gpus-per-trial", "0.5", "--target-ms", "5", "--latency", "analytic",
               "--space", "mobilenetv3_small", "--deploy-resolution", "64", "--run-dir", str(run))
    one_line_error(proc, "--gpus-per-trial 0.5: the Ray cluster has 0 GPU(s)")
    assert not run.exists()  # nothing ran: the failed start removed its run directory
