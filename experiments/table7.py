"""Table 7 of the MobileNetV3 paper at proxy scale: segmentation heads on the Fashion-MNIST mosaic task.

Howard et al., "Searching for MobileNetV3", ICCV 2019, https://arxiv.org/abs/1905.02244, Table 7 (§6.4):
MobileNetV3-Large and -Small with R-ASPP or LR-ASPP, with and without RF2 (the last stage halved). Here every
network is trained with one recipe on the mosaic segmentation task (:mod:`evaluation.dense_data`; items from
the training IDX split, scored on mosaics of the test split), ``--seeds`` times, and the table gives the mean
± std of test mIoU, parameters and MAdds at the deployment resolution, and the latency measured whole on this
machine (ONNX Runtime, the project's measurement protocol). ``--searched FILE`` adds a row for a searched
network (a ``found.json`` of ``nas search --task segmentation``, or a backbone, which gets LR-ASPP).

Resumable: every (network, seed) training is one line of ``RUN_DIR/trainings.csv`` and every latency one
line of ``RUN_DIR/latency.csv``; a rerun skips what is there. The table is ``RUN_DIR/table7.csv`` and
``table7.md``.

    python experiments/table7.py --run-dir runs/table7                       # the full table
    python experiments/table7.py --run-dir /tmp/t7 --tiny                    # a minute: proves it runs
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from evaluation.dense_task import with_head
from evaluation.evaluate import EvalConfig, latency_model, train_task
from search_spaces import count, load, references

ROWS = [f"mobilenetv3_{b}_{h}{rf2}_dense" for b in ("large", "small") for h in ("raspp", "lraspp")
        for rf2 in ("", "_rf2")]
TRAININGS = "trainings.csv"
LATENCY = "latency.csv"
TRAIN_FIELDS = ("name", "arch_id", "seed", "heldout_miou", "test_miou", "steps", "train_s", "error")
LATENCY_FIELDS = ("name", "arch_id", "latency_ms", "params", "madds", "deploy_resolution")
TINY = {"seeds": 1, "steps": 2, "batch_size": 4, "canvas": 64, "train_images": 64, "holdout_images": 8,
        "test_images": 8, "rows": 2}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--seeds", type=int, default=3, help="trainings per network (mean ± std)")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps per training (the one recipe)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--canvas", type=int, default=64, help="mosaic side = training resolution")
    p.add_argument("--deploy-resolution", type=int, help="resolution of latency, MAdds (default: the canvas)")
    p.add_argument("--train-images", type=int, default=50_000)
    p.add_argument("--holdout-images", type=int, default=1_000)
    p.add_argument("--test-images", type=int, default=2_000)
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    p.add_argument("--searched", metavar="FILE", help="a searched network's spec (found.json) as one more row")
    p.add_argument("--rows", type=int, help="only the first N reference rows (tests of the script)")
    p.add_argument("--tiny", action="store_true", help="a tiny run that proves the script works: "
                   + ", ".join(f"{k}={v}" for k, v in TINY.items()))
    args = p.parse_args(argv)
    if args.tiny:
        for k, v in TINY.items():
            setattr(args, k, v)
    return args


def eval_config(args) -> EvalConfig:
    dense = {"mosaic": {"canvas_px": args.canvas},
             "splits": {"train_images": args.train_images, "holdout_images": args.holdout_images,
                        "test_images": args.test_images}}
    return EvalConfig(task="segmentation", dense=dense, latency="measured",
                      deploy_resolution=args.deploy_resolution or args.canvas,
                      measure={"intra_op_threads": args.threads},
                      train={"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                             "threads": args.threads, "eval_batch_size": 100})


def networks(args, cfg: EvalConfig) -> dict:
    from evaluation.data import load_dataset

    data = load_dataset(cfg.dataset, cfg.data_dir)
    names = ROWS[: args.rows] if args.rows else ROWS
    out = {name: with_head(references.get(name).replace(in_channels=data.channels), cfg, data.num_classes)
           for name in names}
    if args.searched:
        spec = load(args.searched)
        out[f"searched ({Path(args.searched).parent.name or spec.name})"] = with_head(
            spec.replace(in_channels=data.channels), cfg, data.num_classes)
    return out


def read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def append(path: Path, fields, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k) for k in fields})


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def main(argv=None) -> int:
    args = parse(argv)
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    cfg = eval_config(args)
    nets = networks(args, cfg)
    settings = {"args": vars(args), "eval": cfg.to_dict(), "uptime": _uptime(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (run / "settings.json").write_text(json.dumps(settings, indent=2, default=str))
    done = {(r["name"], r["arch_id"], int(r["seed"])) for r in read(run / TRAININGS)}
    todo = [(n, s, seed) for n, s in nets.items() for seed in range(args.seeds) if (n, s.arch_id, seed) not in done]
    t0 = time.perf_counter()
    for i, (name, spec, seed) in enumerate(todo):
        res = train_task(spec.to_json(), cfg, cfg.train, seed, test=True)
        append(run / TRAININGS, TRAIN_FIELDS, {"name": name, "arch_id": spec.arch_id, "seed": seed,
                                               "heldout_miou": res["accuracy"], "test_miou": res["test_accuracy"],
                                               "steps": res.get("steps"), "train_s": res.get("train_s"),
                                               "error": res["error"]})
        elapsed = time.perf_counter() - t0
        print(f"[{i + 1}/{len(todo)}] {name} seed {seed}: test mIoU {res['test_accuracy']}, "
              f"{res.get('train_s') or 0:.1f} s training; ETA {elapsed / (i + 1) * (len(todo) - i - 1) / 60:.1f} min",
              flush=True)
    measured = {(r["name"], r["arch_id"]) for r in read(run / LATENCY)}
    model = latency_model(cfg, "measured")
    for name, spec in nets.items():
        if (name, spec.arch_id) in measured:
            continue
        deploy = spec.replace(resolution=cfg.deploy_resolution)
        c = count(deploy)
        append(run / LATENCY, LATENCY_FIELDS, {"name": name, "arch_id": spec.arch_id, "params": c.params,
                                               "madds": c.madds, "latency_ms": model.latency_ms(deploy),
                                               "deploy_resolution": cfg.deploy_resolution})
        print(f"measured {name}", flush=True)
    write_table(run, nets)
    print((run / "table7.md").read_text())
    return 0


def write_table(run: Path, nets: dict) -> None:
    trainings, latency = read(run / TRAININGS), {r["name"]: r for r in read(run / LATENCY)}
    rows = []
    for name, spec in nets.items():
        ok = [r for r in trainings if r["name"] == name and r["arch_id"] == spec.arch_id and not r["error"]]
        test = [float(r["test_miou"]) for r in ok]
        lat = latency.get(name, {})
        rows.append({"name": name, "head": spec.dense.kind.value, "filters": spec.dense.filters,
                     "rf2": "_rf2" in name, "seeds": len(test),
                     "test_miou_mean": statistics.mean(test) if test else None,
                     "test_miou_std": statistics.stdev(test) if len(test) > 1 else None,
                     "test_miou": mean_std(test), "params": lat.get("params"), "madds": lat.get("madds"),
                     "latency_ms": lat.get("latency_ms"), "deploy_resolution": lat.get("deploy_resolution")})
    with open(run / "table7.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["| network | head | RF2 | test mIoU (%) | params | MAdds (M) | latency (ms) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        madds = f"{int(r['madds']) / 1e6:.1f}" if r["madds"] else "—"
        lat = f"{float(r['latency_ms']):.3f}" if r["latency_ms"] else "—"
        params = f"{int(r['params']):,}" if r["params"] else "—"
        lines.append(f"| {r['name']} | {r['head']} F={r['filters']} | {'yes' if r['rf2'] else 'no'} | "
                     f"{r['test_miou']} (n={r['seeds']}) | {params} | {madds} | {lat} |")
    (run / "table7.md").write_text("\n".join(lines) + "\n")


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
