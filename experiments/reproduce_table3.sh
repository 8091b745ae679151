#!/usr/bin/env bash
# MobileNetV3's Large/Small process and Table 3 at proxy scale, on this device and Fashion-MNIST:
#   bash experiments/reproduce_table3.sh [OUT]      (default OUT=runs; resumable: run it again after a stop)
# Each experiment, then the table, prints its wall time; the table is OUT/table3/table3.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs}
NAS=${NAS:-.venv/bin/nas}
for e in small large; do
  resume=()
  [ -f "$OUT/experiment-$e/experiment.json" ] && resume=(--resume)
  start=$(date +%s)
  "$NAS" experiment run "experiments/$e.toml" --run-dir "$OUT/experiment-$e" "${resume[@]}"
  echo "experiment $e: $(( $(date +%s) - start )) s"
done
start=$(date +%s)
"$NAS" experiment table "$OUT/experiment-large" "$OUT/experiment-small" --out "$OUT/table3" --remeasure
echo "table: $(( $(date +%s) - start )) s"
