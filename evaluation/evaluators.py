"""The evaluator seam: how a candidate's held-out accuracy is obtained (``EvalConfig.evaluator``).

* ``proxy`` — MnasNet's proxy task: train the candidate from scratch for a few hundred steps and score
  it on held-out training images (:func:`evaluation.evaluate.train_candidate`).
* a dense task (``EvalConfig.task`` = ``segmentation`` | ``detection``, proxy evaluator only): the
  candidate carries its head and is trained on mosaics (:mod:`evaluation.dense_task`); its "accuracy" is
  the held-out mIoU or mAP.
* ``supernet`` — the candidate as a subnet of a trained weight-sharing supernet: its weights copied
  out, BatchNorm recalibrated, held-out images scored (:func:`evaluation.supernet.score_subnet`); no
  training per candidate.

Both return a stand-alone model of ``search_spaces.builder.build_model(spec)`` and a
:class:`evaluation.training.TrainResult`, so the search's records, its weights files and ``found.pt``
are the same whichever evaluator ran. Searchers, rewards, latency and run directories do not change.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from search_spaces import ArchSpec

EVALUATORS = ("proxy", "supernet")


class EvaluatorError(ValueError):
    """An evaluator that cannot be used as configured (unknown name, a supernet option without it)."""


def check_evaluator(cfg) -> None:
    """Cheap checks of ``cfg.evaluator`` and ``cfg.supernet`` (an :class:`evaluation.evaluate.EvalConfig`),
    and of its task (:func:`evaluation.dense_task.check_task`: the supernet scores classification only)."""
    from evaluation.dense_task import check_task

    if cfg.evaluator not in EVALUATORS:
        raise EvaluatorError(f"unknown evaluator {cfg.evaluator!r}; known: {', '.join(EVALUATORS)}")
    if cfg.supernet and cfg.evaluator != "supernet":
        raise EvaluatorError("--supernet FILE is used only with --evaluator supernet")
    check_task(cfg)


def resolve_evaluator(cfg, space: str, echo: Callable[[str], None] | None = None):
    """``cfg`` with its supernet file resolved and checked before a search starts (proxy: unchanged).

    The file given (``cfg.supernet``) must be a finished supernet of ``space`` and of the search's data
    set and held-out split (a one-line error names the mismatch); without one, the cache's supernet
    for them is used (:func:`evaluation.supernet.find_supernet`), or the error says how to train one.
    """
    check_evaluator(cfg)
    if cfg.evaluator != "supernet":
        return cfg
    from evaluation.supernet import find_supernet, load_supernet

    path = cfg.supernet or find_supernet(space, cfg.dataset, holdout=cfg.holdout, split_seed=cfg.split_seed)
    sn = load_supernet(path, space=space, dataset=cfg.dataset, holdout=cfg.holdout, split_seed=cfg.split_seed)
    if echo:
        echo(f"evaluator: supernet {path} ({sn.meta['steps']} steps at {sn.resolution}², "
             f"BatchNorm recalibrated per candidate)")
    return dataclasses.replace(cfg, supernet=str(path))


def scoring_resolution(cfg) -> int:
    """The input resolution ``cfg``'s evaluator scores candidates at: the proxy's training resolution
    (``cfg.train["resolution_px"]``, else TrainConfig's), or the supernet's own."""
    if cfg.evaluator == "supernet" and cfg.supernet:
        from evaluation.supernet import load_supernet

        return load_supernet(cfg.supernet).resolution
    if cfg.task != "classification":  # dense tasks train and score on whole mosaics
        from evaluation.dense_task import canvas_px

        return canvas_px(cfg)
    from evaluation.configs import default
    from evaluation.training import TrainConfig

    return cfg.train.get("resolution_px", default(TrainConfig, "resolution_px"))


def score(spec: ArchSpec, cfg, seed: int, init: Callable[[Any], None] | None = None):
    """``(model, TrainResult)`` of ``spec`` by ``cfg.evaluator``; ``init`` (fault injection, weights)
    acts on the model before it is scored. Failures raise as the training path's do."""
    check_evaluator(cfg)
    if cfg.evaluator == "supernet":
        from evaluation.supernet import score_subnet

        return score_subnet(spec, cfg, init=init)
    if cfg.task != "classification":  # segmentation / detection: the spec carries its head
        from evaluation.dense_task import train_dense_candidate

        model, result, _ = train_dense_candidate(spec, cfg, cfg.train, seed, init=init)
        return model, result
    from evaluation.evaluate import train_candidate

    model, result, _ = train_candidate(spec, cfg, cfg.train, seed, init=init)
    return model, result
