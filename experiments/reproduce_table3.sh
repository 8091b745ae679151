#!/usr/bin/env bash
# MobileNetV3's Large/Small process and Table 3 at proxy scale, on this device and Fashion-MNIST:
#   bash experiments/reproduce_table3.sh [OUT]      (default OUT=runs; resumable: run it again after a stop)
# 1. both experiments (search, train, NetAdapt, final), 2. the table (each network with the recipe at
# 3 seeds, OUT/table3/table3.md), 3. NetAdapt against the width multiplier from MobileNetV3-Large and
# -Small at -20 % and -40 % latency, 3 seeds (OUT/netadapt_vs_width/: summary.csv and the plot;
# NETADAPT_VS_WIDTH=0 leaves it out). Each step prints its wall time; every step resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs}
NAS=${NAS:-.venv/bin/nas}
PY=${PY:-.venv/bin/python}
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
if [ "${NETADAPT_VS_WIDTH:-1}" != 0 ]; then
  start=$(date +%s)
  "$PY" experiments/bench_netadapt_vs_width.py --out-dir "$OUT/netadapt_vs_width"
  echo "netadapt vs width: $(( $(date +%s) - start )) s"
fi
