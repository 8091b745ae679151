"""Is a trained supernet elastic (issue 13)? Held-out accuracy of its subnets as the supernet evaluator
scores them: the largest and the smallest (the two the sandwich rule trains every step), random
subnets, and the largest with one block's decision set to the smallest's value (one row per decision
family: which choices the shared weights did not learn).

A supernet whose subnets between the two ends score near chance ranks candidates by how close they are
to an end, not by how good they would be trained alone: read this before the ranking studies
(``bench_fidelity.py``, ``bench_supernet_scoring.py``).

Usage (from the repository root)::

    python experiments/bench_supernet_elasticity.py SUPERNET.pt [--random 8] [--bn 500] [--held-out 1000] \\
        [--threads 2] [--out bench_supernet_elasticity.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAMILIES = ("op", "kernel", "layers", "filters", "se", "skip", "act")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("supernet")
    p.add_argument("--random", type=int, default=8, help="random subnets (seeded)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bn", type=int, default=500, help="BatchNorm recalibration images")
    p.add_argument("--held-out", type=int, default=1000, help="held-out images scored")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench_supernet_elasticity.json")
    args = p.parse_args()

    import numpy as np

    from evaluation.evaluate import EvalConfig
    from evaluation.supernet import load_supernet, score_subnet
    from search_spaces.files import atomic_write_text

    sn = load_supernet(args.supernet)
    meta = sn.meta
    recipe = meta["recipe"]
    cfg = EvalConfig(dataset=meta["dataset"], holdout=recipe["holdout"], split_seed=recipe["split_seed"],
                     evaluator="supernet", supernet=str(args.supernet), train={"threads": args.threads},
                     keep_weights=False)
    space, net = sn.net.space, sn.net
    largest, smallest = net.largest(), net.smallest()
    rng = np.random.default_rng(args.seed)
    subnets = {"largest": largest, "smallest": smallest}
    subnets.update({f"random{i}": space.sample(rng) for i in range(args.random)})
    blocks = sorted({k.split(".")[0] for k in largest if "." in k}, key=lambda b: int(b[1:]))
    for fam in FAMILIES:
        for b in blocks:
            key = f"{b}.{fam}"
            if key in largest and largest[key] != smallest[key]:
                subnets[f"largest, {key}={smallest[key]}"] = {**largest, key: smallest[key]}
    out = Path(args.out)
    res = json.loads(out.read_text()) if out.exists() else {"supernet": str(args.supernet), "steps": meta.get("steps"),
                                                             "bn": args.bn, "held_out": args.held_out, "rows": {}}
    for name, vec in subnets.items():
        if name in res["rows"]:
            continue
        t0 = time.perf_counter()
        _, r = score_subnet(space.decode(vec), cfg, bn_images=args.bn, score_images=args.held_out)
        res["rows"][name] = {"accuracy": r.val_accuracy, "s": time.perf_counter() - t0, "load": os.getloadavg()[0]}
        atomic_write_text(out, json.dumps(res, indent=2))
        print(f"{name}: {r.val_accuracy:.4f}", flush=True)
    rows = res["rows"]
    rand = [v["accuracy"] for k, v in rows.items() if k.startswith("random")]
    summary = {"largest": rows["largest"]["accuracy"], "smallest": rows["smallest"]["accuracy"],
               "random_mean": float(np.mean(rand)), "random_min": float(np.min(rand)),
               "random_max": float(np.max(rand)),
               "one_change": {}}
    for fam in FAMILIES:
        accs = [v["accuracy"] for k, v in rows.items()
                if k.startswith("largest, ") and k.split(".")[1].startswith(fam + "=")]
        if accs:
            summary["one_change"][fam] = {"n": len(accs), "median": float(np.median(accs)), "min": float(np.min(accs))}
    res["summary"] = summary
    atomic_write_text(out, json.dumps(res, indent=2))
    print(f"largest {summary['largest']:.4f}, smallest {summary['smallest']:.4f}, {len(rand)} random subnets "
          f"{summary['random_mean']:.4f} (min {summary['random_min']:.4f}, max {summary['random_max']:.4f})")
    for fam, s in summary["one_change"].items():
        print(f"largest with one block's {fam} set to the smallest's ({s['n']} blocks): median {s['median']:.4f}, "
              f"min {s['min']:.4f}")


if __name__ == "__main__":
    main()
