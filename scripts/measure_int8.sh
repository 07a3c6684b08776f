#!/usr/bin/env bash
# int8 vs fp32 on CPS1988: trains the transformer and Cerebra with and without QAT (short schedules), exports each
# run to int8 (ONEDNN, dynamic activations) and prints test RMSE and inference examples/s (median of alternating
# fp32/int8 passes over the test split, one thread). Also static activations and QNNPACK for the QAT runs.
#   scripts/measure_int8.sh [OUT_DIR=runs/quant] [REPEATS=21]
set -euo pipefail
OUT=${1:-runs/quant}
REPEATS=${2:-21}
B=${CEREBRA_BIN:-./build/cerebra}
mkdir -p "$OUT"
train() { local name=$1; shift; [ -f "$OUT/$name/summary.json" ] || "$B" train "$@" --threads 1 --out "$OUT/$name" -q; }
train transformer-fp32 --config configs/cps1988.yaml --model transformer --epochs 6
train transformer-qat --config configs/cps1988.yaml --model transformer --epochs 6 --qat true --qat_start_epoch 4
train cerebra-fp32 --config configs/cerebra_tabular.yaml --epochs 8 --warm_epochs 2 --lambda_ramp_epochs 3
train cerebra-qat --config configs/cerebra_qat.yaml --epochs 8 --warm_epochs 2 --lambda_ramp_epochs 3 --qat_start_epoch 6
for m in transformer-fp32 transformer-qat cerebra-fp32 cerebra-qat; do
  "$B" export --run "$OUT/$m" --int8 --threads 1 --repeats "$REPEATS" -q
done
for m in transformer-qat cerebra-qat; do
  "$B" export --run "$OUT/$m" --int8 --activations static --out "$OUT/$m-int8-static" --threads 1 --repeats "$REPEATS" -q
  "$B" export --run "$OUT/$m" --int8 --engine qnnpack --out "$OUT/$m-int8-qnnpack" --threads 1 --repeats "$REPEATS" -q
done
