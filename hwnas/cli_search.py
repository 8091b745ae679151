"""``nas search``: parse options into a :class:`nas.search.SearchConfig` and run it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable


def cmd_search(args) -> int:
    from evaluation.dense_task import METRIC_LABELS
    from evaluation.evaluate import EvalConfig
    from hwnas.cli import latency_measure_options
    from hwnas.cli_task import task_options
    from nas.search import PRESETS, SearchConfig, run_search
    from nas.searchers import parse_options
    from search_spaces.table import format_table

    if args.resume:
        cfg = SearchConfig.load(args.resume)
        if args.trials is not None:
            cfg = SearchConfig.from_dict({**cfg.to_dict(), "trials": args.trials})
    else:
        preset = PRESETS.get(args.preset, {}) if args.preset else {}
        default = SearchConfig(run_dir="")
        shape = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}.get(args.reward) \
            or (preset.get("alpha", default.alpha), preset.get("beta", default.beta))
        alpha = args.alpha if args.alpha is not None else shape[0]
        beta = args.beta if args.beta is not None else shape[1]
        train = {"steps": args.steps, "batch_size": args.batch_size, "resolution_px": args.train_resolution,
                 "threads": args.cpus_per_trial, "device": args.device}
        eval_cfg = EvalConfig(dataset=args.dataset, data_dir=args.data_dir, holdout=args.holdout,
                              train_subset=args.train_subset, train=train, latency=args.latency, lut_path=args.lut,
                              deploy_resolution=args.deploy_resolution, split_seed=args.seed,
                              evaluator=args.evaluator, supernet=args.supernet,
                              measure=latency_measure_options(args), **task_options(args))
        run_dir = args.run_dir or f"runs/search-{time.strftime('%Y%m%d-%H%M%S')}"
        cfg = SearchConfig(
            run_dir=run_dir, space=args.space or preset.get("space", default.space), searcher=args.searcher,
            searcher_options=parse_options(args.searcher_option or []),
            trials=default.trials if args.trials is None else args.trials, target_ms=args.target_ms,
            target_like=args.target_like or (None if args.target_ms else preset.get("target_like")),
            alpha=alpha, beta=beta, seed=args.seed, seeds=not args.no_seeds, workers=args.workers,
            cpus_per_trial=args.cpus_per_trial, ray_address=args.ray_address, top_k=args.top_k, eval=eval_cfg,
            gpus_per_trial=args.gpus_per_trial,
        )
    echo = None if args.json else (lambda line: print(line, flush=True))
    outcome = run_search(cfg, resume=bool(args.resume), force=args.force, echo=echo)
    report = None if args.no_report else _write_report(outcome.run_dir, args.report_references, echo)
    if args.json:
        json.dump({"run_dir": str(outcome.run_dir), "found": outcome.found_metrics, "completed": outcome.completed,
                   "failed": outcome.failed, "wall_s": outcome.wall_s, "report": report and str(report)},
                  sys.stdout, indent=2)
        print()
        return 0 if outcome.found else 1
    # "N trials completed, ... in X min" was printed by run_search (and logged): the run's one wall time
    if outcome.found is None:
        print("no architecture found: every trial failed (see trials.csv)")
        return 1
    m = outcome.found_metrics
    label = METRIC_LABELS.get(m.get("metric"), "accuracy")
    print(f"found: trial {m['trial']} (id {m['arch_id']}): held-out {label} {m['accuracy']:.4f}, "
          f"measured {m['latency_measured_ms']:.3f} ms at {m['deploy_resolution']}² (target {m['target_ms']:.2f} ms), "
          f"{m['params']:,} params, {m['madds'] / 1e6:.1f}M MAdds")
    print(format_table(outcome.found))
    run = outcome.run_dir
    weights = " found.pt," if (run / "found.pt").exists() else ""
    print(f"\nwrote {run}/: found.json,{weights} found_metrics.json, trials.csv, pareto.csv, log.txt"
          + (", report/report.html" if report else ""))
    if m.get("task", "classification") != "classification":  # NetAdapt does not refine dense networks yet
        if m["task"] == "segmentation":
            print(f"next: python experiments/table7.py --run-dir {run}/table7 --searched {run}/found.json")
        return 0
    print(f"next: netadapt refine --arch {run}/found.json" + (f" --weights {run}/found.pt" if weights else "")
          + " --reduction 0.2")
    return 0


def _write_report(run_dir: Path, references: bool, echo: Callable[[str], None] | None) -> Path | None:
    """The run's report (see hwnas.report); a report that cannot be written is a warning, not a failed search."""
    from hwnas.report import write_report

    try:
        return write_report([run_dir], references=references, echo=echo)
    except (ValueError, OSError) as e:
        print(f"warning: report not written ({e}); try `nas report {run_dir}`", file=sys.stderr)
        return None


def add_search_command(sub: argparse._SubParsersAction) -> None:
    from evaluation.accel import DEFAULT_DEVICE, DEVICES
    from evaluation.evaluators import EVALUATORS
    from hwnas.cli import HelpFormatter, add_latency_backend_options
    from hwnas.cli_task import add_task_options
    from nas.search import LATENCY_MODES, SearchConfig
    from nas.searchers import BUDGET_RULE, SEARCHERS
    from search_spaces.spaces import SPACE_NAMES

    default = SearchConfig(run_dir="")  # every default below is the configuration's own
    ev = default.eval
    p = sub.add_parser("search", help="MnasNet-style search: accuracy and measured latency",
                       formatter_class=HelpFormatter)
    t = p.add_argument_group("target and reward")
    t.add_argument("--target-ms", type=float, help="latency target T in ms on this device")
    t.add_argument("--target-like", metavar="ARCH", help="target = this reference's latency on this device")
    t.add_argument("--preset", choices=("large", "small"),
                   help="large: MobileNetV3 space, w=-0.07, T=MnasNet-A1's latency; small: small space, w=-0.15, "
                        "T=MobileNetV3-Small's latency")
    t.add_argument("--reward", choices=("soft", "hard"), help="soft: α=β=-0.07 (MnasNet); hard: α=0, β=-1")
    t.add_argument("--alpha", type=float, help=f"reward exponent when latency ≤ T (default {default.alpha})")
    t.add_argument("--beta", type=float, help=f"reward exponent when latency > T (default {default.beta})")
    s = p.add_argument_group("search")
    s.add_argument("--space", choices=SPACE_NAMES, help=f"search space (default {default.space}, or the preset's)")
    s.add_argument("--searcher", choices=SEARCHERS, default=default.searcher,
                   help="how candidates are proposed; each searcher's random start-up is sized to --trials and the "
                        f"workers (budget rule: {BUDGET_RULE})")
    s.add_argument("--searcher-option", action="append", metavar="KEY=VALUE",
                   help="an option of the searcher's sampler, repeatable (e.g. population_size=8 for evolution, "
                        "model=rf for predictor); it overrides the budget rule; an unknown key is an error that "
                        "lists the searcher's options (new searches only: --resume keeps the saved ones)")
    s.add_argument("--trials", type=int, help=f"trials to run, seeds included (default {default.trials}; "
                                              "with --resume: the new total)")
    s.add_argument("--seed", type=int, default=default.seed,
                   help="seeds the searcher, the held-out split and every candidate's training")
    s.add_argument("--no-seeds", action="store_true", help="do not enqueue the space's known architectures first")
    s.add_argument("--top-k", type=int, default=default.top_k, help="best candidates re-measured whole at the end")
    d = p.add_argument_group("proxy task")
    d.add_argument("--dataset", default=ev.dataset, choices=("fashion-mnist", "cifar10", "imagefolder"),
                   help="proxy data set")
    d.add_argument("--data-dir", help="dataset folder (fashion-mnist: /usr/share/datasets/fashion-mnist if unset)")
    d.add_argument("--steps", type=int, default=ev.train["steps"], help="proxy training steps per candidate")
    d.add_argument("--batch-size", type=int, default=ev.train["batch_size"], help="training images per step")
    d.add_argument("--train-resolution", type=int, default=ev.train["resolution_px"], help="training input resolution")
    d.add_argument("--holdout", type=int, default=ev.holdout, help="held-out training images for accuracy")
    d.add_argument("--train-subset", type=int, help="train on at most this many images")
    e = p.add_argument_group("evaluator")
    e.add_argument("--evaluator", choices=EVALUATORS, default=ev.evaluator,
                   help="proxy: train each candidate from scratch (the proxy task options); supernet: score it as "
                        "a subnet of a trained weight-sharing supernet (see `nas supernet train`)")
    e.add_argument("--supernet", metavar="FILE",
                   help="supernet file (default: the space's in the cache, trained by `nas supernet train`)")
    e.add_argument("--device", choices=DEVICES, default=DEFAULT_DEVICE,
                   help="where trials compute: auto = a GPU when the trial has one (--gpus-per-trial), else the CPU")
    l = p.add_argument_group("latency")
    l.add_argument("--latency", choices=LATENCY_MODES, default=ev.latency,
                   help="calibrated lookup table, whole-network measurement per trial, or the analytic model "
                        "(MAdds and memory traffic; no device)")
    l.add_argument("--lut", help="latency table file (this device's in ~/.cache/hwnas/lut if unset; "
                                 "or one built on another device)")
    l.add_argument("--deploy-resolution", type=int, default=ev.deploy_resolution,
                   help="resolution at which latency is taken")
    add_latency_backend_options(l)
    add_task_options(p)
    r = p.add_argument_group("execution and output")
    r.add_argument("--run-dir", help="run directory (runs/search-<time> if unset)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped search")
    r.add_argument("--force", action="store_true", help="overwrite a non-empty --run-dir")
    r.add_argument("--ray-address", help="join a Ray cluster (e.g. auto) instead of a local one")
    r.add_argument("--workers", type=int, help="concurrent evaluations (CPUs / --cpus-per-trial if unset)")
    r.add_argument("--cpus-per-trial", type=int, default=default.cpus_per_trial,
                   help="CPUs (and torch threads) per evaluation")
    r.add_argument("--gpus-per-trial", type=float, default=default.gpus_per_trial,
                   help="GPUs per trial on Ray (fractions share one GPU, e.g. 0.25)")
    r.add_argument("--json", action="store_true", help="print only a JSON summary")
    r.add_argument("--no-report", action="store_true", help="do not write RUN_DIR/report/ at the end")
    r.add_argument("--report-references", action="store_true",
                   help="train the reference networks with the same proxy for the report (minutes at the default "
                        "budget; `nas report RUN_DIR` can add them later)")
    p.set_defaults(func=cmd_search)
