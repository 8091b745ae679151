"""MobileNetV3's Table 3 at proxy scale: every network trained with one recipe, measured fp32 and int8.

``nas experiment table EXP_DIR...`` takes the searched networks of finished experiments
(:mod:`hwnas.experiment`) and the reference networks, trains each from scratch with the first
experiment's recipe (``[final]``) and ``seeds`` training seeds (the recipe's seed, then the next ones;
the held-out split stays the recipe's) as parallel Ray tasks, measures each network once, and adds a
paired latency ratio of each searched network to its MobileNetV3 counterpart with its confidence
interval. Test accuracy is reported as mean ± standard deviation over the seeds, and each searched
network is compared with every reference: it *beats* or *loses to* one only when the difference of the
means exceeds two standard errors (Welch's, from the seeds), otherwise it *ties*.

Rows are kept in ``OUT/rows/`` — ``NAME.json`` for the recipe's seed (with the latency),
``NAME.sSEED.json`` for each further seed (accuracy only) — and reused only when their recipe key and
arch_id match, so the table resumes row by row and seed by seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Callable, Sequence

from evaluation import rundir
from evaluation.rundir import EXPERIMENT_FILE as STATE_FILE
from evaluation.rundir import atomic_write_text, read_json
from hwnas.experiment import (
    ExperimentError,
    Recipe,
    measure_row,
    paired_ratio,
    trained_row,
)
from search_spaces import ArchSpec, references
from search_spaces.spec import load as load_spec
from search_spaces.suggest import unknown_name

TABLE_FILE = "table3"
TABLE_REFERENCES = ("mobilenetv3_large", "mobilenetv3_large_075", "mnasnet_a1", "mobilenetv2",
                    "mobilenetv3_small", "mobilenetv3_small_075", "mobilenetv2_035")
COUNTERPART = {"mobilenetv3": "mobilenetv3_large", "mnasnet": "mobilenetv3_large",
               "mobilenetv3_small": "mobilenetv3_small"}
TABLE_SEEDS = 3  # training seeds per network: the recipe's seed and the next ones
TABLE_COLUMNS = ("name", "test_accuracy", "test_accuracy_sd", "seeds", "madds", "params", "latency_fp32_ms",
                 "latency_int8_ms", "vs", "paired_ratio", "paired_ratio_low", "paired_ratio_high",
                 "heldout_accuracy", "train_s", "arch_id")


def table_rows(experiments: Sequence[str | Path], out_dir: str | Path, *, recipe: Recipe | None = None,
               reference_names: Sequence[str] = TABLE_REFERENCES, dataset: str = "fashion-mnist",
               data_dir: str | None = None, deploy_resolution: int = 224, int8: bool = True,
               measure: dict | None = None, remeasure: bool = False, ray_address: str | None = None,
               seeds: int = TABLE_SEEDS, echo: Callable[[str], None] | None = print) -> list[dict]:
    """Train every network with one recipe and ``seeds`` seeds (in parallel, one CPU each), measure each
    network once; resumable per row and seed.

    The searched networks are the ``final/model.json`` of each experiment directory (their
    ``final/row.json`` is reused as the recipe seed's row when it was made with the same recipe). Rows
    are written to ``OUT/rows/`` as they finish, then ``OUT/table3.csv`` and ``table3.md``. Returns one
    row per network: the recipe seed's row with ``test_accuracy`` the mean over the seeds, and
    ``test_accuracy_sd``, ``test_accuracies`` and ``seeds`` added (see :func:`aggregate`).
    """
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ExperimentError(f"seeds must be a whole number >= 1, got {seeds!r}")
    from evaluation.data import load_dataset
    from evaluation.evaluate import EvalConfig, train_task
    from evaluation.execution import RayPool

    out = Path(out_dir)
    exps = []
    for e in experiments:
        e = Path(e)
        if not (e / STATE_FILE).is_file():
            raise ExperimentError(f"{e} is not an experiment directory (no {STATE_FILE})")
        st = read_json(e / STATE_FILE, ExperimentError)
        if not st.get("stages", {}).get("final", {}).get("done"):
            raise ExperimentError(f"{e}: the experiment has not finished its final stage; "
                                  f"resume it with `nas experiment run CONFIG --run-dir {e} --resume`")
        exps.append((e, st))
    if recipe is None:
        recipe = Recipe(**exps[0][1]["config"]["final"]) if exps else Recipe()
    unknown = [n for n in reference_names if n not in references.names()]
    if unknown:
        raise ExperimentError(unknown_name("reference architecture", unknown[0], references.names()))
    data = load_dataset(dataset, data_dir)
    (out / "rows").mkdir(parents=True, exist_ok=True)
    eval_cfg = EvalConfig(dataset=dataset, data_dir=data_dir, holdout=recipe.holdout,
                          train_subset=recipe.train_subset, deploy_resolution=deploy_resolution,
                          measure=measure or {}, split_seed=recipe.seed)
    todo: dict[str, tuple[ArchSpec, str | None]] = {}
    rows: dict[str, dict] = {}
    for e, st in exps:
        spec = load_spec(e / rundir.FINAL_DIR / rundir.MODEL_FILE)
        space = st["config"]["search"]["space"]
        todo[spec.name] = (spec, COUNTERPART.get(space))
        row_path = e / rundir.FINAL_DIR / rundir.ROW_FILE
        if row_path.exists() and not (out / "rows" / f"{spec.name}.json").exists():  # the table's own copy wins
            row = json.loads(row_path.read_text())
            if row.get("recipe_key") == recipe.key() and (row.get("latency_int8_ms") is not None or not int8):
                rows[spec.name] = row
    for name in reference_names:
        todo[name] = (references.get(name).replace(in_channels=data.channels, num_classes=data.num_classes), None)
    seed_list = [recipe.seed + i for i in range(seeds)]
    extra: dict[tuple[str, int], dict] = {}  # (name, seed) -> the row of a further seed (accuracy only)
    for name in todo:
        for seed in seed_list:
            path = _row_path(out, name, seed, recipe)
            if (name in rows if seed == recipe.seed else (name, seed) in extra) or not path.exists():
                continue
            row = json.loads(path.read_text())
            if row.get("recipe_key") == _seeded(recipe, seed).key() and row.get("arch_id") == todo[name][0].arch_id:
                if seed == recipe.seed:
                    rows[name] = row
                else:
                    extra[(name, seed)] = row
    pending = [(n, s) for n in todo for s in seed_list
               if (n not in rows if s == recipe.seed else (n, s) not in extra)]
    if echo:
        echo(f"table: {len(todo)} networks × {seeds} seed(s), {len(todo) * seeds - len(pending)} already trained with "
             f"this recipe ({recipe.epochs:g} epochs, batch {recipe.batch_size}, lr {recipe.lr}, "
             f"{recipe.resolution_px}² input); training {len(pending)}")
    if pending:
        pool = RayPool(address=ray_address, cpus_per_trial=1)
        try:
            refs = {pool.call(train_task, todo[n][0].to_json(), eval_cfg, recipe.train(1), s, True): (n, s)
                    for n, s in pending}
            waiting = list(refs)
            while waiting:
                ready = pool.wait(waiting, timeout_s=30.0)
                for ref in ready:
                    waiting.remove(ref)
                    name, seed = refs[ref]
                    seeded = _seeded(recipe, seed)
                    row = trained_row(name, todo[name][0], pool.result(ref), seeded, eval_cfg, int8,
                                      measure=seed == recipe.seed)
                    atomic_write_text(_row_path(out, name, seed, recipe), json.dumps(row, indent=2))
                    if seed == recipe.seed:
                        rows[name] = row
                    else:
                        extra[(name, seed)] = row
                    if echo:
                        timed = f", {row['latency_fp32_ms']:.3f} ms fp32" if seed == recipe.seed else ""
                        echo(f"table: {name} (seed {seed}): test accuracy {row['test_accuracy']:.4f}{timed} "
                             f"({len(todo) * seeds - len(waiting)}/{len(todo) * seeds})")
        finally:
            pool.shutdown()
    if remeasure:  # every latency again, back to back: rows trained hours apart were timed under other loads
        for name, (spec, _) in todo.items():
            rows[name].update(measure_row(spec, eval_cfg, int8), paired_vs=None, paired_ratio=None,
                              paired_ratio_low=None, paired_ratio_high=None)
            atomic_write_text(out / "rows" / f"{name}.json", json.dumps(rows[name], indent=2))
        if echo:
            echo(f"table: re-measured {len(todo)} networks fp32" + (" and int8" if int8 else ""))
    # searched networks against their MobileNetV3 counterpart, measured interleaved
    for name, (spec, vs) in todo.items():
        row = rows[name]
        if vs and vs in todo and (row.get("paired_vs") != vs or row.get("paired_ratio_low") is None):
            row.update(paired_vs=vs, **paired_ratio(spec, todo[vs][0], eval_cfg))
            atomic_write_text(out / "rows" / f"{name}.json", json.dumps(row, indent=2))
    ordered = [aggregate(rows[n], [rows[n]] + [extra[(n, s)] for s in seed_list[1:]]) for n in todo]
    write_table(ordered, out, recipe, data.name, searched=[n for n in todo if todo[n][1]])
    return ordered


def _seeded(recipe: Recipe, seed: int) -> Recipe:
    return dataclasses.replace(recipe, seed=seed)


def _row_path(out: Path, name: str, seed: int, recipe: Recipe) -> Path:
    """``NAME.json`` for the recipe's own seed (as the table always kept it), ``NAME.sSEED.json`` beyond."""
    return out / "rows" / (f"{name}.json" if seed == recipe.seed else f"{name}.s{seed}.json")


def aggregate(row: dict, seed_rows: list[dict]) -> dict:
    """One network's table row: ``row`` (the recipe seed's, with the latency) with the test accuracy
    averaged over ``seed_rows`` (``row`` included), its sample standard deviation and the seeds' values."""
    accs = [r["test_accuracy"] for r in seed_rows]
    held = [r["heldout_accuracy"] for r in seed_rows if r.get("heldout_accuracy") is not None]
    return {**row, "test_accuracy": statistics.fmean(accs),
            "test_accuracy_sd": statistics.stdev(accs) if len(accs) > 1 else None,
            "test_accuracies": accs, "seeds": len(accs),
            "heldout_accuracy": statistics.fmean(held) if held else row.get("heldout_accuracy")}


def compare(a: dict, b: dict) -> dict:
    """Test accuracy of table row ``a`` against row ``b``: the difference of the means (points), its
    standard error (Welch's, from each row's seeds) and the verdict — ``beats``/``loses`` only when the
    difference exceeds two standard errors, else ``ties`` (also whenever either row has a single seed)."""
    diff = 100 * (a["test_accuracy"] - b["test_accuracy"])
    if a.get("seeds", 1) < 2 or b.get("seeds", 1) < 2:
        return {"diff": diff, "se": None, "verdict": "ties"}
    se = 100 * math.sqrt(a["test_accuracy_sd"] ** 2 / a["seeds"] + b["test_accuracy_sd"] ** 2 / b["seeds"])
    verdict = ("beats" if diff > 0 else "loses to") if abs(diff) > 2 * se else "ties"
    return {"diff": diff, "se": se, "verdict": verdict}


def write_table(rows: list[dict], out: Path, recipe: Recipe, dataset: str, searched: Sequence[str] = ()) -> None:
    import pandas as pd

    df = pd.DataFrame([{**r, "vs": r.get("paired_vs"), "paired_ratio": r.get("paired_ratio")} for r in rows])
    for c in TABLE_COLUMNS:
        if c not in df:
            df[c] = None
    atomic_write_text(out / f"{TABLE_FILE}.csv", df[list(TABLE_COLUMNS)].to_csv(index=False))
    atomic_write_text(out / f"{TABLE_FILE}.md", table_markdown(rows, recipe, dataset, searched))


def table_markdown(rows: list[dict], recipe: Recipe, dataset: str, searched: Sequence[str] = ()) -> str:
    device = rows[0].get("device", "") if rows else ""
    res = rows[0].get("deploy_resolution", 224) if rows else 224
    n_seeds = sorted({r.get("seeds", 1) for r in rows})
    seeds = (f"seed {recipe.seed}" if n_seeds == [1] else
             f"{'/'.join(map(str, n_seeds))} seeds from {recipe.seed}, test accuracy mean ± standard deviation")
    head = (f"Table 3 at proxy scale: {dataset}, every network trained from scratch with one recipe "
            f"({recipe.epochs:g} epochs, batch {recipe.batch_size}, SGD lr {recipe.lr} cosine, {recipe.resolution_px}² "
            f"input, {seeds}); latency at {res}², batch 1, on {device}.\n\n")
    lines = ["| Network | Top-1 (test) | MAdds (M) | Params | fp32 ms | int8 ms | vs counterpart (paired, 95 % CI) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        vs = ""
        if r.get("paired_ratio"):
            ci = (f" [{r['paired_ratio_low']:.3f}–{r['paired_ratio_high']:.3f}]"
                  if r.get("paired_ratio_low") is not None else "")
            vs = f"{r['paired_ratio']:.3f}×{ci} {r['paired_vs']}"
        int8 = f"{r['latency_int8_ms']:.2f}" if r.get("latency_int8_ms") else "–"
        sd = f" ± {100 * r['test_accuracy_sd']:.2f}" if r.get("test_accuracy_sd") is not None else ""
        lines.append(f"| {r['name']} | {100 * r['test_accuracy']:.2f}{sd} | {r['madds'] / 1e6:.1f} | "
                     f"{r['params'] / 1e6:.2f}M | {r['latency_fp32_ms']:.2f} | {int8} | {vs} |")
    text = head + "\n".join(lines) + "\n"
    by_name = {r["name"]: r for r in rows}
    verdicts = []
    for name in searched:
        for other in rows:
            if other["name"] in searched:
                continue
            c = compare(by_name[name], other)
            se = f" ± {c['se']:.2f} (SE)" if c["se"] is not None else " (one seed: no error bar)"
            lat = by_name[name]["latency_fp32_ms"] / other["latency_fp32_ms"]
            verdicts.append(f"- {name} {c['verdict']} {other['name']}: {c['diff']:+.2f}{se} points, "
                            f"at {lat:.2f}× its fp32 latency")
    if verdicts:
        text += ("\nTest accuracy of each searched network against each reference: \"beats\" or \"loses to\" only "
                 "beyond two standard errors of the difference of the means, otherwise \"ties\".\n\n"
                 + "\n".join(verdicts) + "\n")
    return text
