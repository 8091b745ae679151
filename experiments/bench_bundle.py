"""Size of the device bundle (`nas latency export-bundle`): graphs without weights vs with them.

For a space, exports a random sample of its table entries (or all of them with ``--sample 0``) the way
``export_bundle`` does, and reports the bytes per entry with the weights stripped and inline, the
extrapolation to the whole space, and the size of the manifest for the whole space.

    python experiments/bench_bundle.py --space mobilenetv3 --sample 200
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="mobilenetv3")
    parser.add_argument("--sample", type=int, default=200, help="entries to export (0: all)")
    parser.add_argument("--calibrate", type=int, default=24, help="whole networks in the bundle (as the CLI)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from latency.lut import layer_onnx, strip_weights
    from latency.lut_store import canonical_key
    from search_spaces import walk
    from search_spaces.export import export_onnx
    from search_spaces.spaces import get_space

    space = get_space(args.space, resolution=224)
    keys = sorted(space.layer_keys(), key=lambda k: canonical_key(k.to_dict()))
    sample = keys if args.sample <= 0 else random.Random(args.seed).sample(keys, min(args.sample, len(keys)))
    t0 = time.perf_counter()
    stripped = inline = 0
    for key in sample:
        data = layer_onnx(key)
        graph, weights = strip_weights(data, "x.onnx.weights")
        stripped += len(graph)
        inline += len(data)
    per_entry_s = (time.perf_counter() - t0) / len(sample)
    rng = __import__("numpy").random.default_rng(args.seed)
    nets_stripped = nets_inline = 0
    n_nets = args.calibrate
    layer_keys = []
    for _ in range(min(n_nets, 4)):  # a few whole networks, extrapolated to --calibrate
        spec = space.decode(space.sample(rng))
        data = export_onnx(spec)
        nets_stripped += len(strip_weights(data, "n.onnx.weights")[0])
        nets_inline += len(data)
        layer_keys.append([canonical_key(layer.key.to_dict()) for layer in walk(spec)])
    scale_nets = n_nets / max(1, min(n_nets, 4))
    entry_json = sum(len(json.dumps({"key": k.to_dict(), "file": "entries/00000.onnx",
                                      "weights": {"file": "00000.onnx.weights", "bytes": 0,
                                                  "tensors": [{"name": "w", "offset": 0, "length": 0,
                                                               "data_type": 1, "dims": [0, 0, 0, 0]}] * 3}},
                                     separators=(",", ":"))) for k in keys)
    manifest = entry_json + int(scale_nets * sum(len(json.dumps(lk)) for lk in layer_keys))
    n = len(keys)
    total_stripped = stripped / len(sample) * n + nets_stripped * scale_nets + manifest
    total_inline = inline / len(sample) * n + nets_inline * scale_nets
    print(f"space {args.space}: {n} entries, {n_nets} networks; sample {len(sample)} entries "
          f"({per_entry_s * 1000:.0f} ms export each)")
    print(f"  entry graph without weights: {stripped / len(sample) / 1024:.1f} KiB mean; with weights "
          f"{inline / len(sample) / 1024:.1f} KiB")
    print(f"  network graph without weights: {nets_stripped / max(1, min(n_nets, 4)) / 1024:.1f} KiB mean; with "
          f"{nets_inline / max(1, min(n_nets, 4)) / 1e6:.1f} MB")
    print(f"  manifest (estimated, 3 tensors an entry): {manifest / 1e6:.2f} MB")
    print(f"  whole bundle without weights ≈ {total_stripped / 1e6:.1f} MB "
          f"(with weights ≈ {total_inline / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
