"""MobileNetV3's Table 3 at proxy scale: every network trained with one recipe, measured fp32 and int8.

``nas experiment table EXP_DIR...`` takes the searched networks of finished experiments
(:mod:`hwnas.experiment`) and the reference networks, trains each from scratch with the first
experiment's recipe (``[final]``) as parallel Ray tasks, measures each, and adds a paired latency
ratio of each searched network to its MobileNetV3 counterpart. Rows are kept in ``OUT/rows/`` and
reused only when their recipe key and arch_id match, so the table resumes row by row.
"""

from __future__ import annotations

import json
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
TABLE_COLUMNS = ("name", "test_accuracy", "madds", "params", "latency_fp32_ms", "latency_int8_ms", "vs", "paired_ratio",
                 "heldout_accuracy", "train_s", "arch_id")


def table_rows(experiments: Sequence[str | Path], out_dir: str | Path, *, recipe: Recipe | None = None,
               reference_names: Sequence[str] = TABLE_REFERENCES, dataset: str = "fashion-mnist",
               data_dir: str | None = None, deploy_resolution: int = 224, int8: bool = True,
               measure: dict | None = None, remeasure: bool = False, ray_address: str | None = None,
               echo: Callable[[str], None] | None = print) -> list[dict]:
    """Train every network with one recipe (in parallel, one CPU each), measure each; resumable per row.

    The searched networks are the ``final/model.json`` of each experiment directory (their
    ``final/row.json`` is reused when it was made with the same recipe). Rows are written to
    ``OUT/rows/NAME.json`` as they finish, then ``OUT/table3.csv`` and ``table3.md``.
    """
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
    for name in todo:
        path = out / "rows" / f"{name}.json"
        if name not in rows and path.exists():
            row = json.loads(path.read_text())
            if row.get("recipe_key") == recipe.key() and row.get("arch_id") == todo[name][0].arch_id:
                rows[name] = row
    pending = [n for n in todo if n not in rows]
    if echo:
        echo(f"table: {len(todo)} networks, {len(todo) - len(pending)} already trained with this recipe "
             f"({recipe.epochs:g} epochs, batch {recipe.batch_size}, lr {recipe.lr}, {recipe.resolution_px}² input); "
             f"training {len(pending)}")
    if pending:
        pool = RayPool(address=ray_address, cpus_per_trial=1)
        try:
            refs = {pool.call(train_task, todo[n][0].to_json(), eval_cfg, recipe.train(1), recipe.seed,
                              True): n for n in pending}
            waiting = list(refs)
            while waiting:
                ready = pool.wait(waiting, timeout_s=30.0)
                for ref in ready:
                    waiting.remove(ref)
                    name = refs[ref]
                    row = trained_row(name, todo[name][0], pool.result(ref), recipe, eval_cfg, int8)
                    atomic_write_text(out / "rows" / f"{name}.json", json.dumps(row, indent=2))
                    rows[name] = row
                    if echo:
                        echo(f"table: {name}: test accuracy {row['test_accuracy']:.4f}, "
                             f"{row['latency_fp32_ms']:.3f} ms fp32 ({len(rows)}/{len(todo)})")
        finally:
            pool.shutdown()
    if remeasure:  # every latency again, back to back: rows trained hours apart were timed under other loads
        for name, (spec, _) in todo.items():
            rows[name].update(measure_row(spec, eval_cfg, int8), paired_vs=None, paired_ratio=None)
            atomic_write_text(out / "rows" / f"{name}.json", json.dumps(rows[name], indent=2))
        if echo:
            echo(f"table: re-measured {len(todo)} networks fp32" + (" and int8" if int8 else ""))
    # searched networks against their MobileNetV3 counterpart, measured interleaved
    for name, (spec, vs) in todo.items():
        row = rows[name]
        if vs and vs in todo and row.get("paired_vs") != vs:
            row["paired_vs"], row["paired_ratio"] = vs, paired_ratio(spec, todo[vs][0], eval_cfg)
            atomic_write_text(out / "rows" / f"{name}.json", json.dumps(row, indent=2))
    ordered = [rows[n] for n in todo]
    write_table(ordered, out, recipe, data.name)
    return ordered


def write_table(rows: list[dict], out: Path, recipe: Recipe, dataset: str) -> None:
    import pandas as pd

    df = pd.DataFrame([{**r, "vs": r.get("paired_vs"), "paired_ratio": r.get("paired_ratio")} for r in rows])
    for c in TABLE_COLUMNS:
        if c not in df:
            df[c] = None
    atomic_write_text(out / f"{TABLE_FILE}.csv", df[list(TABLE_COLUMNS)].to_csv(index=False))
    atomic_write_text(out / f"{TABLE_FILE}.md", table_markdown(rows, recipe, dataset))


def table_markdown(rows: list[dict], recipe: Recipe, dataset: str) -> str:
    device = rows[0].get("device", "") if rows else ""
    res = rows[0].get("deploy_resolution", 224) if rows else 224
    head = (f"Table 3 at proxy scale: {dataset}, every network trained from scratch with one recipe "
            f"({recipe.epochs:g} epochs, batch {recipe.batch_size}, SGD lr {recipe.lr} cosine, {recipe.resolution_px}² "
            f"input, seed {recipe.seed}); latency at {res}², batch 1, on {device}.\n\n")
    lines = ["| Network | Top-1 (test) | MAdds (M) | Params | fp32 ms | int8 ms | vs counterpart (paired) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        vs = (f"{r['paired_ratio']:.3f}× {r['paired_vs']}" if r.get("paired_ratio") else "")
        int8 = f"{r['latency_int8_ms']:.2f}" if r.get("latency_int8_ms") else "–"
        lines.append(f"| {r['name']} | {100 * r['test_accuracy']:.2f} | {r['madds'] / 1e6:.1f} | "
                     f"{r['params'] / 1e6:.2f}M | {r['latency_fp32_ms']:.2f} | {int8} | {vs} |")
    return head + "\n".join(lines) + "\n"
