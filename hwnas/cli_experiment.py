"""``nas experiment run CONFIG`` and ``nas experiment table EXP_DIR...`` (thin over :mod:`hwnas.experiment`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def cmd_run(args) -> int:
    from hwnas.experiment import ExperimentConfig, run_experiment, summary_markdown

    cfg = ExperimentConfig.load(args.config)
    run_dir = args.run_dir or f"runs/experiment-{cfg.name}"
    echo = None if args.json else (lambda line: print(line, flush=True))
    outcome = run_experiment(cfg, run_dir, resume=args.resume, force=args.force, echo=echo)
    if args.json:
        json.dump({"run_dir": str(outcome.run_dir), "wall_s": outcome.wall_s, "stages": outcome.state["stages"]},
                  sys.stdout, indent=2, default=str)
        print()
    else:
        print()
        print(summary_markdown(cfg, outcome.state), end="")
        print(f"\nwrote {outcome.run_dir}/ (report: {outcome.run_dir}/report/report.html; "
              f"next: nas experiment table {outcome.run_dir} ...)")
    return 0


def cmd_table(args) -> int:
    from evaluation.rundir import EXPERIMENT_FILE
    from hwnas.experiment import Recipe
    from hwnas.table3 import TABLE_FILE, TABLE_REFERENCES, table_rows

    recipe = None
    if args.epochs is not None:
        base = Recipe()
        if args.experiments:
            state = Path(args.experiments[0]) / EXPERIMENT_FILE
            if state.exists():
                base = Recipe(**json.loads(state.read_text())["config"]["final"])
        recipe = dataclasses.replace(base, epochs=float(args.epochs))
    names = TABLE_REFERENCES if args.references is None else tuple(n for n in args.references.split(",") if n)
    echo = None if args.json else (lambda line: print(line, flush=True))
    rows = table_rows(args.experiments, args.out, recipe=recipe, reference_names=names, dataset=args.dataset,
                      data_dir=args.data_dir, deploy_resolution=args.deploy_resolution, int8=not args.no_int8,
                      remeasure=args.remeasure, ray_address=args.ray_address, seeds=args.seeds, echo=echo)
    if args.json:
        json.dump(rows, sys.stdout, indent=2, default=str)
        print()
    else:
        print()
        print((Path(args.out) / f"{TABLE_FILE}.md").read_text(), end="")
        print(f"\nwrote {args.out}/{TABLE_FILE}.csv and {TABLE_FILE}.md")
    return 0


def add_experiment_commands(sub: argparse._SubParsersAction) -> None:
    from evaluation.evaluate import EvalConfig
    from hwnas.cli import HelpFormatter
    from hwnas.table3 import TABLE_SEEDS

    ev = EvalConfig()
    p = sub.add_parser("experiment", help="the whole MobileNetV3 process, and the reproduction table")
    esub = p.add_subparsers(dest="experiment_command", required=True, metavar="{run,table}")

    r = esub.add_parser("run", help="search → training of the winner → NetAdapt → final training → report",
                        formatter_class=HelpFormatter)
    r.add_argument("config", metavar="CONFIG.toml", help="experiment file (e.g. experiments/small.toml)")
    r.add_argument("--run-dir", help="experiment directory (default runs/experiment-<name>)")
    r.add_argument("--resume", action="store_true", help="continue a stopped experiment in --run-dir")
    r.add_argument("--force", action="store_true", help="overwrite a non-empty --run-dir")
    r.add_argument("--json", action="store_true", help="print only a JSON summary")
    r.set_defaults(func=cmd_run)

    t = esub.add_parser("table", help="train the searched networks and the references with one recipe; "
                                      "write MobileNetV3's Table 3 at proxy scale",
                        formatter_class=HelpFormatter)
    t.add_argument("experiments", nargs="*", metavar="EXP_DIR", help="finished experiment directories")
    t.add_argument("--out", default="runs/table3", help="output folder (rows are kept there: re-running resumes)")
    t.add_argument("--epochs", type=float, help="training epochs (default: the first experiment's [final] recipe)")
    t.add_argument("--references", help="comma-separated reference names (default: V3-Large 1.0/0.75, MnasNet-A1, "
                                        "V2 1.0, V3-Small 1.0/0.75, V2 0.35; empty: none)")
    t.add_argument("--seeds", type=int, default=TABLE_SEEDS,
                   help="training seeds per network (the recipe's seed and the next ones): accuracy as mean ± "
                        "standard deviation, and 'beats'/'loses to' only beyond two standard errors")
    t.add_argument("--no-int8", action="store_true", help="skip the int8 latency column")
    t.add_argument("--remeasure", action="store_true",
                   help="measure every network's latency again, back to back (rows trained at different times "
                        "were timed under different host loads); run it on a quiet machine")
    t.add_argument("--dataset", default=ev.dataset, choices=("fashion-mnist", "cifar10", "imagefolder"),
                   help="data set every network is trained on")
    t.add_argument("--data-dir", help="dataset folder (fashion-mnist: /usr/share/datasets/fashion-mnist if unset)")
    t.add_argument("--deploy-resolution", type=int, default=ev.deploy_resolution,
                   help="resolution at which latency is taken")
    t.add_argument("--ray-address", help="join a Ray cluster instead of a local one")
    t.add_argument("--json", action="store_true", help="print only the rows as JSON")
    t.set_defaults(func=cmd_table)
