"""NetAdapt on this machine: MobileNetV3-Small (and optionally a searched network) to −20 % latency.

    python experiments/bench_netadapt.py [--arch mobilenetv3_small] [--weights FILE.pt] [--reduction 0.2]
                                         [--steps 100] [--out bench_netadapt.json]

Runs :func:`netadapt.refine.run_refine` with the CLI's defaults (Fashion-MNIST proxy at 32², latency
predicted by this device's calibrated table at 224², δ = 1 % of the start latency, T = ``--steps``,
slope metric, 1 final epoch, the width-multiplier baseline) and prints what issue 5 asks for:
iterations, wall time, held-out and test accuracy before/after, measured latency before/after, and
the baseline's accuracy at its measured latency. Without ``--weights`` the start network is first
trained for ``--pretrain-epochs`` (not counted in the refinement's own time, reported apart).
Run it on a quiet machine: the wall time and the latency measurements share the CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="mobilenetv3_small")
    ap.add_argument("--weights")
    ap.add_argument("--reduction", type=float, default=0.2)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--pretrain-epochs", type=float, default=3.0)
    ap.add_argument("--final-epochs", type=float, default=1.0)
    ap.add_argument("--run-dir")
    ap.add_argument("--out", default="bench_netadapt.json")
    args = ap.parse_args()

    from netadapt.refine import DEFAULT_STEPS, RefineConfig, run_refine

    run_dir = args.run_dir or tempfile.mkdtemp(prefix="bench_netadapt_")
    cfg = RefineConfig(run_dir=run_dir, arch=args.arch, weights=args.weights, reduction=args.reduction,
                       steps=args.steps or DEFAULT_STEPS, pretrain_epochs=args.pretrain_epochs,
                       final_epochs=args.final_epochs)
    t0 = time.perf_counter()
    out = run_refine(cfg, force=True, echo=lambda line: print(line, flush=True))
    wall = time.perf_counter() - t0
    m = out.metrics
    log = (Path(run_dir) / "log.txt").read_text()
    pretrain_s = _pretrain_seconds(log)
    result = {"arch": args.arch, "reduction": args.reduction, "steps": cfg.steps, "iterations": m["iterations"],
              "wall_s": wall, "pretrain_s": pretrain_s, "refine_wall_s": wall - (pretrain_s or 0.0),
              "target_met": m["target_met"], "start": m["start"], "refined": m["refined"],
              "baseline": m.get("baseline"), "run_dir": run_dir}
    Path(args.out).write_text(json.dumps(result, indent=2))
    s, r, b = m["start"], m["refined"], m.get("baseline")
    print(f"\n{args.arch}: {m['iterations']} iterations, {result['refine_wall_s'] / 60:.1f} min "
          f"(+ {(pretrain_s or 0) / 60:.1f} min pre-training), target met: {m['target_met']}")
    print(f"{'':<22}{'held-out acc':>13}{'test acc':>10}{'measured ms':>13}{'predicted ms':>14}{'MAdds':>9}")
    rows = [("start", s), ("NetAdapt", r)] + ([(f"width x{b['width_multiplier']:.3f}", b)] if b else [])
    for name, x in rows:
        print(f"{name:<22}{x['accuracy']:>13.4f}{x['test_accuracy']:>10.4f}{x['latency_measured_ms']:>13.3f}"
              f"{x['latency_pred_ms']:>14.3f}{x['madds'] / 1e6:>8.1f}M")
    print(f"wrote {args.out}")


def _pretrain_seconds(log: str) -> float | None:
    for line in log.splitlines():
        if "start network trained" in line and "(" in line:
            return float(line.rsplit("(", 1)[1].split(" s)")[0])
    return None


if __name__ == "__main__":
    main()
