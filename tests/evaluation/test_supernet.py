"""The weight-sharing supernet: coverage of each space, subnet extraction, BN recalibration, the sandwich
step, the cache key, checkpoints and resume, bad checkpoints, and the evaluator seam of the search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation import supernet as sn
from evaluation.evaluate import EvalConfig
from evaluation.supernet import (
    SUPERNET_RESOLUTION,
    DynamicConv,
    SuperNet,
    SupernetError,
    SupernetRecipe,
    cache_key,
    cache_path,
    fold_batchnorm,
    partial_path,
    read_checkpoint,
    recalibrate_bn,
    sandwich_step,
    score_indices,
    train_supernet,
)
from evaluation.training import TrainConfig, channel_stats
from search_spaces.spaces import SPACE_NAMES, get_space
from search_spaces.walk import Role, walk

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package")

# A supernet small enough to train a few steps in seconds: small space, 32² input, 8 images, 1 random subnet.
TINY = SupernetRecipe(steps=4, batch_size=8, n_random=1, resolution_px=32, holdout=500, train_subset=1000)


@pytest.fixture(autouse=True)
def threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def perturbed(space_name: str) -> SuperNet:
    """A supernet whose BN statistics and kernel transforms are not the trivial ones (so that a wrong
    slice or a skipped transform shows up as a difference)."""
    torch.manual_seed(0)
    net = SuperNet(get_space(space_name, in_channels=1, num_classes=10))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
        for name, p in net.named_parameters():
            if ".transforms." in name:
                p.add_(0.2 * torch.randn_like(p))
    return net.eval()


def corners(space) -> dict[str, dict]:
    """Vectors that reach every op family with and without skips, both kernels, SE on and off, both depth
    extremes."""
    rng = np.random.default_rng(3)
    out = {}
    for op, kernel, se, filters, layers, skip in (
            ("conv", 3, 0.25, 1.25, 1, "identity"), ("conv", 5, 0.0, 1.0, 1, "none"),
            ("dsconv", 5, 0.25, 0.75, -1, "identity"), ("dsconv", 3, 0.25, 1.25, 1, "none"),
            ("mbconv3", 3, 0.0, 1.0, 0, "identity"), ("mbconv6", 3, 0.25, 1.25, 1, "identity"),
            ("mbconv6", 5, 0.25, 1.25, 1, "none")):
        v = space.sample(rng)
        fixed = {"op": op, "kernel": kernel, "se": se, "filters": filters, "layers": layers, "skip": skip}
        for d in space.decisions():
            v[d.name] = fixed.get(d.name.split(".", 1)[1], v[d.name])
        out[f"all-{op}-k{kernel}-{skip}"] = v
    out["random"] = space.sample(rng)
    return out


# -- resolution -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_the_supernet_resolution_runs_every_searched_block_on_3x3_maps_or_more(name):
    space = get_space(name)
    assert sn.min_resolution(space) == SUPERNET_RESOLUTION == 72
    assert min(sn.block_maps(space, 32)) == 1  # the proxy's 32²: the last stages see 2×2 and 1×1
    spec = space.decode(space.sample(np.random.default_rng(0)))
    blocks = [layer for layer in walk(spec, SUPERNET_RESOLUTION) if layer.role is Role.BLOCK]
    assert min(min(layer.key.resolution, layer.out_resolution) for layer in blocks) >= 3


# -- the supernet and subnet extraction -------------------------------------------------------------


def test_a_smaller_kernel_is_the_transformed_centre_crop():
    conv = DynamicConv(4, 6, (3, 5))
    torch.nn.init.normal_(conv.weight)
    assert torch.equal(conv.kernel_weight(6, 4, 5), conv.weight)
    assert torch.equal(conv.kernel_weight(5, 3, 3), conv.weight[:5, :3, 1:4, 1:4])  # identity transform at start
    with torch.no_grad():
        conv.transforms[0].copy_(torch.eye(9).flip(0))  # a learned transform mixes the 9 taps
    assert torch.equal(conv.kernel_weight(5, 3, 3), conv.weight[:5, :3, 1:4, 1:4].flip(2, 3))


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_an_extracted_subnet_computes_what_the_supernet_computes(name):
    net = perturbed(name)
    space = net.space
    x = torch.randn(2, 1, 40, 40)
    vectors = {"largest": net.largest(), "smallest": net.smallest(), **corners(space),
               **{k: v for k, v in space.seeds().items()}}
    for label, params in vectors.items():
        spec = space.decode(params)
        model = net.extract(spec).eval()
        assert type(model).__name__ == "Network" and len(model.layers) == len(walk(spec))
        with torch.no_grad():
            want = net(x, net.subnet(params))
            got = model(x)
            again = net(x, net.subnet_of(spec))  # the same subnet, found from the spec alone
        assert want.std() > 0
        assert float((want - got).abs().max()) < 1e-5, label
        assert torch.equal(want, again), label


def test_the_largest_and_smallest_subnets_are_the_corners_of_the_space():
    net = SuperNet(get_space("mobilenetv3_small", in_channels=1, num_classes=10))
    big, small = (net.space.decode(v) for v in (net.largest(), net.smallest()))
    assert {b.kind.value for b in big.blocks} == {"mbconv"} and {b.kind.value for b in small.blocks} == {"dsconv"}
    assert all(b.kernel_size == 5 and b.se for b in big.blocks) and not any(b.se for b in small.blocks)
    assert len(big.blocks) == 23 and len(small.blocks) == 9
    # every slot holds the widest channels of any subnet that reaches it
    assert net.stages[6][1]["mbconv"].project.weight.shape[0] == big.blocks[-1].out_channels


def test_the_forward_pass_is_the_stem_the_stages_and_the_head_and_reports_each_stages_output():
    net = perturbed("mobilenetv3_small")
    subnet = net.subnet(net.smallest())
    assert subnet[0] == ()  # stage 0 (stride 1, one layer) removed by "layers -1"
    x = torch.randn(2, 1, 32, 32)
    feats: list = []
    with torch.no_grad():
        logits = net(x, subnet, feats)
        y = net.stem(x)
        for i, blocks in enumerate(subnet):
            y = net.run_stage(i, y, blocks)
        assert torch.equal(net.head(y), logits)
    assert len(feats) == 1 + len(subnet) and feats[1] is None and feats[-1] is None
    kept = [f for f in feats if f is not None]
    assert torch.equal(kept[-1], y) and [f.shape[1] for f in kept[1:]] == [s[-1].out_channels for s in subnet if s]


def test_a_spec_outside_the_space_or_of_other_classes_is_refused():
    from search_spaces import references
    from search_spaces.spec import SpecError

    net = SuperNet(get_space("mobilenetv3_small", in_channels=1, num_classes=10))
    with pytest.raises(SpecError, match="not in search space mobilenetv3_small"):
        net.subnet_of(references.get("mobilenetv3_small").replace(in_channels=1, num_classes=10))
    with pytest.raises(SupernetError, match="7 classes; the supernet has 1 and 10"):
        net.subnet_of(net.space.decode(net.largest()).replace(num_classes=7))


# -- BatchNorm recalibration ------------------------------------------------------------------------


def test_bn_recalibration_recomputes_the_statistics_of_the_sample():
    net = perturbed("mobilenetv3_small")
    model = net.extract(net.space.decode(net.smallest()))
    images = torch.randint(0, 256, (12, 1, 28, 28), dtype=torch.uint8)
    cfg = TrainConfig(resolution_px=32, in_channels=1)
    stats = channel_stats(images)
    stem_bn = model.layers[0].conv[1]
    seen = {}
    hook = model.layers[0].conv[0].register_forward_hook(lambda m, i, o: seen.setdefault("x", o.detach().clone()))
    recalibrate_bn(model, images, cfg, stats, batch_size=12)  # one batch: the statistics are the batch's
    hook.remove()
    x = seen["x"]
    assert torch.allclose(stem_bn.running_mean, x.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(stem_bn.running_var, x.var((0, 2, 3), unbiased=True), rtol=1e-4)
    assert not model.training and stem_bn.momentum == 0.01  # eval mode, the builder's momentum restored
    first = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    recalibrate_bn(model, images, cfg, stats, batch_size=12)  # reset, not accumulated
    assert all(torch.allclose(v, model.state_dict()[k]) for k, v in first.items())


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_folding_batchnorm_keeps_the_outputs_and_leaves_the_model_alone(name):
    net = perturbed(name)
    spec = net.space.decode(corners(net.space)["all-mbconv6-k3-identity"])
    model = net.extract(spec).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    norms = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not norms  # every BatchNorm of the builder follows a convolution
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4, rtol=1e-4)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the original is untouched
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_the_score_sample_is_seeded_spread_over_the_held_out_images_and_apart_from_the_calibration_sample():
    val = np.arange(10_000, 20_000)
    a, b = score_indices(val, 2000, 0), score_indices(val, 2000, 0)
    assert len(a) == 2000 and np.array_equal(a, b) and set(a) <= set(val)
    assert a.min() < 10_500 and a.max() > 19_500  # a sample of the whole split, not its first images
    assert not np.array_equal(a, score_indices(val, 2000, 1))
    assert np.array_equal(score_indices(val, None, 0), val) and np.array_equal(score_indices(val, 20_000, 0), val)
    assert not np.array_equal(np.sort(sn.calibration_indices(val, 2000, 0)), a)


# -- training: the sandwich step, the cache key, checkpoints ----------------------------------------


def test_the_sandwich_step_trains_the_largest_on_labels_and_the_others_on_its_predictions():
    torch.manual_seed(0)
    net = SuperNet(get_space("mobilenetv3_small", in_channels=1, num_classes=10)).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    x, y = torch.randn(4, 1, 32, 32), torch.randint(0, 10, (4,))
    subnets = [net.largest(), net.smallest()]
    dev = torch.device("cpu")
    largest, distilled = sandwich_step(net, opt, sn.accel.grad_scaler(dev), x, y, subnets,
                                       torch.nn.CrossEntropyLoss(), dev)
    assert largest > 0 and distilled > 0
    changed = {k for k, v in net.named_parameters() if not torch.equal(v, before[k])}
    assert "stages.0.0.mbconv.expand.weight" in changed  # the largest (MBConv6)
    assert "stages.1.0.dsconv.depthwise.weight" in changed  # the smallest (depthwise-separable; no stage 0)
    assert "stages.1.0.dsconv.depthwise.transforms.0" in changed  # its 3×3 kernel goes through the transform
    assert "stages.0.0.dsconv.depthwise.weight" not in changed  # the smallest has no layer in stage 0
    assert not any(".conv." in k and k.startswith("stages.") for k in changed)  # no subnet used a regular conv


def test_the_cache_key_names_space_dataset_resolution_recipe_and_seed(monkeypatch, tmp_path):
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path))
    base = cache_key("mobilenetv3", "fashion-mnist", SupernetRecipe())
    assert base == cache_key("mobilenetv3", "fashion-mnist", SupernetRecipe()) and len(base) == 16
    others = [cache_key("mnasnet", "fashion-mnist", SupernetRecipe()),
              cache_key("mobilenetv3", "cifar10", SupernetRecipe()),
              cache_key("mobilenetv3", "fashion-mnist", SupernetRecipe(resolution_px=96)),
              cache_key("mobilenetv3", "fashion-mnist", SupernetRecipe(epochs=3)),
              cache_key("mobilenetv3", "fashion-mnist", SupernetRecipe(seed=1))]
    assert len({base, *others}) == 6
    path = cache_path("mobilenetv3", "fashion-mnist", SupernetRecipe())
    assert path.parent == tmp_path / "supernet" and path.name == f"mobilenetv3-fashion-mnist-72px-{base}.pt"
    assert partial_path(path).name.endswith(f"{base}.partial.pt")


@needs_fmnist
def test_a_stopped_training_resumes_to_the_same_supernet(module_cache):
    straight = train_supernet("mobilenetv3_small", TINY, path=module_cache / "a.pt", checkpoint_every=2, echo=None)
    assert straight.meta["complete"] and straight.meta["steps"] == 4 and straight.meta["trained_steps"] == 4
    stopped = train_supernet("mobilenetv3_small", TINY, path=module_cache / "b.pt", checkpoint_every=2, echo=None,
                             stop_after=3)
    assert stopped.path == partial_path(module_cache / "b.pt") and not (module_cache / "b.pt").exists()
    assert read_checkpoint(stopped.path)["step"] == 3
    lines: list[str] = []
    resumed = train_supernet("mobilenetv3_small", TINY, path=module_cache / "b.pt", checkpoint_every=2,
                             echo=lines.append)
    assert resumed.resumed_from == 3 and resumed.meta["trained_steps"] == 4 and not stopped.path.exists()
    assert any("resuming supernet training from step 3/4" in line for line in lines)
    a, b = (read_checkpoint(p)["model"] for p in (straight.path, resumed.path))
    assert all(torch.equal(a[k], b[k]) for k in a)  # every draw is a function of (seed, step)
    again = train_supernet("mobilenetv3_small", TINY, path=module_cache / "a.pt", echo=lines.append)
    assert again.resumed_from is None and "trained already" in lines[-1]


@needs_fmnist
def test_bad_checkpoints_are_errors_never_retrained_over(module_cache):
    path = module_cache / "bad.pt"
    partial = partial_path(path)
    good = module_cache / "a.pt" if (module_cache / "a.pt").exists() else \
        train_supernet("mobilenetv3_small", TINY, path=module_cache / "a.pt", echo=None).path
    blob = good.read_bytes()
    partial.write_bytes(blob[: len(blob) // 2])  # truncated
    with pytest.raises(SupernetError, match="corrupt or truncated.*delete it"):
        train_supernet("mobilenetv3_small", TINY, path=path, echo=None)
    assert partial.read_bytes() == blob[: len(blob) // 2]  # left as it was
    with pytest.raises(SupernetError, match="corrupt or truncated"):
        sn.load_supernet(partial)
    data = read_checkpoint(good)
    for change, words in (({"space": "mnasnet"}, "another space: 'mnasnet', not 'mobilenetv3_small'"),
                          ({"dataset": "cifar10"}, "another dataset"),
                          ({"version": 0}, "supernet code version 0")):
        other = module_cache / f"other-{next(iter(change))}.pt"
        torch.save({**data, "meta": {**data["meta"], **change}}, other)
        with pytest.raises(SupernetError, match=words):
            sn.load_supernet(other, space="mobilenetv3_small", dataset="fashion-mnist")
    with pytest.raises(SupernetError, match="another resolution: 32, not 72"):
        sn.load_supernet(good, resolution=72)
    with pytest.raises(SupernetError, match="held-out images: 500, not 10000.*overlap"):
        sn.load_supernet(good, holdout=10_000)
    with pytest.raises(SupernetError, match="not a supernet checkpoint"):
        torch.save({"weight": torch.zeros(1)}, module_cache / "plain.pt")
        sn.load_supernet(module_cache / "plain.pt")


def test_no_trained_supernet_names_the_command_that_trains_one(monkeypatch, tmp_path):
    from evaluation.evaluators import resolve_evaluator

    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path))
    words = "no trained supernet for space mnasnet.*`nas supernet train --space mnasnet"
    with pytest.raises(SupernetError, match=words):
        resolve_evaluator(EvalConfig(evaluator="supernet"), "mnasnet")
    with pytest.raises(ValueError, match="only with --evaluator supernet"):
        resolve_evaluator(EvalConfig(supernet="x.pt"), "mnasnet")
    with pytest.raises(ValueError, match="unknown evaluator 'oracle'"):
        resolve_evaluator(EvalConfig(evaluator="oracle"), "mnasnet")


# -- the evaluator seam ------------------------------------------------------------------------------


def test_old_configs_without_the_evaluator_keys_load_as_the_proxy():
    from nas.search import SearchConfig

    d = SearchConfig(run_dir="r").to_dict()
    for key in ("evaluator", "supernet"):
        d["eval"].pop(key)
    cfg = SearchConfig.from_dict(d)
    assert cfg.eval.evaluator == "proxy" and cfg.eval.supernet is None


@needs_fmnist
@pytest.mark.parametrize("evaluator", [pytest.param("proxy", marks=pytest.mark.slow), "supernet"])
def test_a_search_end_to_end_with_each_evaluator(module_cache, evaluator):
    """(The proxy's default-run end-to-end tests are in tests/nas/test_search.py; they go through the
    same seam, evaluation.evaluators.score.)"""
    from evaluation.evaluate import score_task
    from nas.search import SearchConfig, run_search
    from search_spaces import load
    from search_spaces.builder import build_model

    trained = module_cache / "a.pt"
    if evaluator == "supernet" and not trained.exists():
        train_supernet("mobilenetv3_small", TINY, path=trained, echo=None)
    eval_cfg = EvalConfig(holdout=500, train_subset=1000, train={"steps": 4, "batch_size": 32, "threads": 1},
                          deploy_resolution=64, latency="analytic", evaluator=evaluator,
                          supernet=str(trained) if evaluator == "supernet" else None,
                          measure={"warmup_min_s": 0.0, "min_runs": 10, "max_runs": 200, "time_cap_s": 0.2,
                                   "sessions": 1})
    run = module_cache / f"search-{evaluator}"
    lines: list[str] = []
    out = run_search(SearchConfig(run_dir=str(run), space="mobilenetv3_small", searcher="random", trials=3,
                                  target_ms=5.0, top_k=1, eval=eval_cfg), echo=lines.append)
    assert out.completed == 3 and out.failed == 0
    assert any(line.startswith("evaluator: supernet") for line in lines) == (evaluator == "supernet")
    config = json.loads((run / "config.json").read_text())
    assert config["search"]["eval"]["evaluator"] == evaluator
    assert config["search"]["eval"]["supernet"] == (str(trained) if evaluator == "supernet" else None)
    assert out.found_metrics["evaluator"] == evaluator and out.found_metrics["train_resolution"] == 32
    # found.pt is an ordinary checkpoint of found.json (for the supernet: the subnet with its recalibrated
    # BatchNorm statistics), scored again by the ordinary scoring path to the same accuracy
    found = load(run / "found.json")
    build_model(found).load_state_dict(torch.load(run / "found.pt", weights_only=True))
    again = score_task(found.to_json(), (run / "found.pt").read_bytes(), eval_cfg, {"resolution_px": 32})
    assert again["accuracy"] == pytest.approx(out.found_metrics["accuracy"], abs=1e-9)


def test_experiment_files_take_the_evaluator_in_their_search_section():
    from hwnas.experiment import ExperimentConfig, ExperimentError

    base = {"name": "x", "search": {"target_ms": 5.0}, "netadapt": {"reduction": 0.1}}
    old = ExperimentConfig.from_dict(base)
    assert (old.search["evaluator"], old.search["supernet"]) == ("proxy", None)
    search = {"target_ms": 5.0, "evaluator": "supernet", "supernet": "s.pt"}
    new = ExperimentConfig.from_dict({**base, "search": search})
    assert (new.search["evaluator"], new.search["supernet"]) == ("supernet", "s.pt")
    with pytest.raises(ExperimentError, match="evaluator must be one of proxy, supernet, got 'oracle'"):
        ExperimentConfig.from_dict({**base, "search": {"target_ms": 5.0, "evaluator": "oracle"}})
    # an experiment.json written before the keys existed still names the same configuration
    stored = old.to_dict()
    for key in ("evaluator", "supernet"):
        stored["search"].pop(key)
    assert ExperimentConfig.from_dict(stored).to_dict() == old.to_dict()
