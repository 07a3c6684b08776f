#!/usr/bin/env bash
# Data-parallel throughput on this machine: MQAR at T = 256 (configs/ladder/mqar_n256.yaml: 2-layer attention, d 64,
# global batch 32) for STEPS steps as 1 rank x 1 thread, 1 rank x 2 threads and 2 ranks x 1 thread (16 rows each);
# prints training examples/s and the all-reduce time per step, then Gloo's all-reduce time per buffer size.
#   scripts/measure_distributed.sh [OUT_DIR=runs/dist] [STEPS=150]
set -euo pipefail
OUT=${1:-runs/dist}
STEPS=${2:-150}
B=${CEREBRA_BIN:-./build/cerebra}
C=(--config configs/ladder/mqar_n256.yaml --steps "$STEPS" --checkpoint_every 0 -q)
"$B" train "${C[@]}" --threads 1 --out "$OUT/1rank-1thread" > /dev/null
"$B" train "${C[@]}" --threads 2 --out "$OUT/1rank-2threads" > /dev/null
"$B" train "${C[@]}" --threads 1 --nproc 2 --out "$OUT/2ranks-1thread" > /dev/null
# the same with 128 KiB buckets (4 buckets: all-reduces start while backward still runs)
"$B" train "${C[@]}" --threads 1 --nproc 2 --bucket_mb 0.125 --out "$OUT/2ranks-1thread-b128k" > /dev/null
for r in 1rank-1thread 1rank-2threads 2ranks-1thread 2ranks-1thread-b128k; do
  python3 - "$OUT/$r/summary.json" "$r" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
t = s["time"]; d = s["training"].get("distributed")
line = f"{sys.argv[2]:<22} {t['examples_per_second']:8.1f} examples/s  {t['train_seconds_total']:7.1f} s training"
if d:
    line += (f"  all-reduce {d['allreduce_bytes_per_step'] / 2**20:.2f} MiB/step in {d['buckets']} buckets:"
             f" wait {1e3 * d['allreduce_wait_seconds_per_step']:.2f} ms/step,"
             f" first launch to done {1e3 * d['allreduce_window_seconds_per_step']:.2f} ms/step")
print(line)
PY
done
"$B" bench allreduce --nproc 2 --mib 0.0625,0.25,1,4,16 --repeats 20
