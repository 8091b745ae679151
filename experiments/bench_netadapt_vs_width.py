"""NetAdapt against the uniform width multiplier, over seeds (issue 16): does layer-wise shrinking beat ×w?

For every start network (``--archs``), latency reduction (``--reductions``: fraction of the measured
start latency) and seed (``--seeds``), one ``netadapt refine`` run (:func:`netadapt.refine.run_refine`
with the command's defaults unless given here) shrinks the trained start network to the target and
trains the width-multiplier baseline at the result's latency with the same fine-tune budget
(``baseline=True``, the refinement's own comparison). The start network is trained once per
(architecture, seed) and shared by its reductions. Each run keeps its own directory under ``--out-dir``
and resumes there after a kill; finished runs are read back, not redone.

It reports, per architecture and reduction, the mean ± standard deviation over the seeds of the test
accuracy and the measured latency of NetAdapt's result and of the baseline, the paired difference
(NetAdapt − baseline, seed by seed) with its standard error, and the verdict: NetAdapt *beats* or *loses
to* the multiplier only when that difference exceeds two standard errors, otherwise it *ties*. It also
draws test accuracy against measured latency, both curves with error bars (``OUT/netadapt_vs_width.png``),
and writes ``OUT/runs.csv`` (one row per run) and ``OUT/summary.csv``.

Usage (from the repository root)::

    python experiments/bench_netadapt_vs_width.py [--archs mobilenetv3_small,mobilenetv3_large] \\
        [--reductions 0.2,0.4] [--seeds 0,1,2] [--steps 30] [--pretrain-epochs 3] [--final-epochs 1] \\
        [--out-dir runs/netadapt_vs_width]

On this 2-core machine one refinement of MobileNetV3-Small to −20 % took about 21 min (README), so the
default grid (2 × 2 × 3 runs) is several hours; ``--tiny`` runs a minute-long version end to end.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def start_network(arch: str, seed: int, out_dir: Path, args) -> tuple[Path, Path]:
    """The start network of ``arch`` for the data set (``ARCH.json``) and its weights trained at ``seed``
    (once, kept as ``start-ARCH-sSEED.pt``)."""
    from evaluation.data import load_dataset
    from evaluation.evaluate import train_task
    from netadapt.refine import RefineConfig
    from search_spaces import resolve_arch

    path, spec_path = out_dir / f"start-{arch}-s{seed}.pt", out_dir / f"{arch}.json"
    cfg = RefineConfig(run_dir="-", arch=arch, reduction=0.2, seed=seed, **_eval(args))
    data = load_dataset(cfg.eval.dataset, cfg.eval.data_dir)
    spec = resolve_arch(arch).replace(in_channels=data.channels, num_classes=data.num_classes)
    if not spec_path.exists():
        spec.save(spec_path)
    if path.exists():
        return spec_path, path
    print(f"training the start network {arch} (seed {seed}) for {args.pretrain_epochs:g} epochs", flush=True)
    res = train_task(spec.to_json(), cfg.eval, cfg.train_settings(epochs=args.pretrain_epochs, threads=args.threads),
                     seed)
    if res["error"]:
        raise SystemExit(f"training {arch} failed: {res['error']}")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(res["weights"])
    tmp.replace(path)
    return spec_path, path


def _eval(args) -> dict:
    """Overrides of RefineConfig's evaluation for ``--tiny`` (a small data subset and held-out split)."""
    if not args.tiny:
        return {}
    from evaluation.evaluate import EvalConfig

    return {"eval": EvalConfig(holdout=300, train_subset=600, train={"batch_size": 32, "resolution_px": 32})}


def run_one(arch: str, reduction: float, seed: int, out_dir: Path, args) -> dict:
    """One refinement with its baseline (resumed, or read back when finished); its final metrics."""
    from evaluation.rundir import FINAL_METRICS_FILE, STATE_FILE
    from netadapt.refine import RefineConfig, run_refine

    run_dir = out_dir / f"{arch}-r{round(reduction * 100):02d}-s{seed}"
    metrics_path = run_dir / FINAL_METRICS_FILE
    if not metrics_path.exists():
        spec_path, weights = start_network(arch, seed, out_dir, args)
        cfg = RefineConfig(run_dir=str(run_dir), arch=str(spec_path), weights=str(weights), reduction=reduction,
                           steps=args.steps, delta_ratio=args.delta_ratio, final_epochs=args.final_epochs,
                           max_iters=args.max_iters, baseline=True, seed=seed, cpus_per_trial=args.threads,
                           **_eval(args))
        resume = (run_dir / STATE_FILE).exists()
        print(f"{'resuming' if resume else 'running'} {run_dir.name}", flush=True)
        run_refine(cfg, resume=resume, force=not resume, echo=lambda line: print(f"  {line}", flush=True))
    m = json.loads(metrics_path.read_text())
    r, b = m["refined"], m["baseline"]
    return {"arch": arch, "reduction": reduction, "seed": seed, "iterations": m["iterations"],
            "target_met": m.get("target_met"), "start_test": m["start"]["test_accuracy"],
            "start_ms": m["start"]["latency_measured_ms"], "netadapt_test": r["test_accuracy"],
            "netadapt_ms": r["latency_measured_ms"], "width_test": b["test_accuracy"],
            "width_ms": b["latency_measured_ms"], "width_multiplier": b["width_multiplier"]}


def summarize(runs: list[dict]) -> list[dict]:
    """Per (arch, reduction): means ± SD over seeds and the paired verdict (two standard errors)."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["arch"], r["reduction"]), []).append(r)

    def mean_sd(values):
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)

    rows = []
    for (arch, red), rs in sorted(groups.items()):
        diffs = [100 * (r["netadapt_test"] - r["width_test"]) for r in rs]
        d, sd = mean_sd(diffs)
        se = sd / math.sqrt(len(diffs)) if sd is not None else None
        verdict = ("beats" if d > 0 else "loses to") if se is not None and abs(d) > 2 * se else "ties"
        na, na_sd = mean_sd([100 * r["netadapt_test"] for r in rs])
        w, w_sd = mean_sd([100 * r["width_test"] for r in rs])
        na_ms, na_ms_sd = mean_sd([r["netadapt_ms"] for r in rs])
        w_ms, w_ms_sd = mean_sd([r["width_ms"] for r in rs])
        rows.append({"arch": arch, "reduction": red, "seeds": len(rs), "netadapt_test": na, "netadapt_test_sd": na_sd,
                     "width_test": w, "width_test_sd": w_sd, "netadapt_ms": na_ms, "netadapt_ms_sd": na_ms_sd,
                     "width_ms": w_ms, "width_ms_sd": w_ms_sd, "diff_points": d, "diff_se": se, "verdict": verdict,
                     "start_ms": statistics.fmean(r["start_ms"] for r in rs)})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = sorted({r["arch"] for r in rows})
    fig, axes = plt.subplots(1, len(archs), figsize=(5.5 * len(archs), 4.2), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        rs = sorted((r for r in rows if r["arch"] == arch), key=lambda r: r["reduction"])
        for key, label, marker in (("netadapt", "NetAdapt", "o"), ("width", "width multiplier", "s")):
            ax.errorbar([r[f"{key}_ms"] for r in rs], [r[f"{key}_test"] for r in rs],
                        xerr=[r[f"{key}_ms_sd"] or 0 for r in rs], yerr=[r[f"{key}_test_sd"] or 0 for r in rs],
                        marker=marker, capsize=3, label=label)
        for r in rs:
            ax.annotate(f"−{r['reduction']:.0%}", (r["netadapt_ms"], r["netadapt_test"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
        ax.set_title(f"{arch} ({rs[0]['seeds']} seeds)")
        ax.set_xlabel("measured latency (ms)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="mobilenetv3_small,mobilenetv3_large")
    p.add_argument("--reductions", default="0.2,0.4")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=None, help="T: short-term fine-tune steps (default: the command's)")
    p.add_argument("--delta-ratio", type=float, default=None, help="δ as a fraction of L0 (default: the command's)")
    p.add_argument("--pretrain-epochs", type=float, default=3.0)
    p.add_argument("--final-epochs", type=float, default=1.0)
    p.add_argument("--max-iters", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="CPUs per training")
    p.add_argument("--tiny", action="store_true", help="a minute-long run on a data subset (proves the path)")
    p.add_argument("--out-dir", default="runs/netadapt_vs_width")
    args = p.parse_args()

    from netadapt.refine import RefineConfig

    defaults = RefineConfig(run_dir="-", arch="-", reduction=0.2)
    args.steps = args.steps or (2 if args.tiny else defaults.steps)
    args.delta_ratio = args.delta_ratio or (0.1 if args.tiny else defaults.delta_ratio)
    if args.tiny:
        args.pretrain_epochs, args.final_epochs, args.max_iters = 0.05, 0.05, 3
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [run_one(a, float(r), int(s), out_dir, args) for a in args.archs.split(",") if a
            for r in args.reductions.split(",") if r for s in args.seeds.split(",") if s]
    rows = summarize(runs)
    for name, data in (("runs.csv", runs), ("summary.csv", rows)):
        with open(out_dir / name, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(data[0]))
            w.writeheader()
            w.writerows(data)
    plot(rows, out_dir / "netadapt_vs_width.png")
    print("| start | reduction | seeds | NetAdapt test % | ms | width × test % | ms | NetAdapt − width (points) | |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    def pm(m, sd, f):
        return f"{m:{f}}" + (f" ± {sd:{f}}" if sd is not None else "")

    for r in rows:
        se = f" ± {r['diff_se']:.2f} (SE)" if r["diff_se"] is not None else ""
        cells = [r["arch"], f"−{r['reduction']:.0%}", str(r["seeds"]),
                 pm(r["netadapt_test"], r["netadapt_test_sd"], ".2f"), pm(r["netadapt_ms"], r["netadapt_ms_sd"], ".3f"),
                 pm(r["width_test"], r["width_test_sd"], ".2f"), pm(r["width_ms"], r["width_ms_sd"], ".3f"),
                 f"{r['diff_points']:+.2f}{se}", r["verdict"]]
        print("| " + " | ".join(cells) + " |")
    print(f"wrote {out_dir}/runs.csv, summary.csv, netadapt_vs_width.png")


if __name__ == "__main__":
    main()
