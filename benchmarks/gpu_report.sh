#!/usr/bin/env bash
# Every GPU number docs/performance.md needs, as JSON lines under OUT_DIR (one file per benchmark):
#   train_step.jsonl    one train step at H 512 and 2048, per encoder scan, at --matmul_precision
#                       highest and default (each record's device.matmul_precision)
#   rollout.jsonl       rollout throughput, scan against DEER, forward and forward + backward
#   seed_scaling.jsonl  1, 4, 8, 16 and 64 seeds of the default model in one program
#   memory.jsonl        the epoch program's peak memory per seed, and the seeds that fit 80 GB
#   recipe_time.jsonl   experiments/blk445.flags' extrapolated wall time
# Planned for under 8 minutes on one H100-class GPU. With --quick every script runs its tiny
# preset (a smoke test on CPU for CI, not a measurement).
#
#   benchmarks/gpu_report.sh [--quick] OUT_DIR
set -euo pipefail
quick=()
if [[ "${1:-}" == "--quick" ]]; then
  quick=(--quick)
  shift
fi
if [[ $# -ne 1 ]]; then
  echo "usage: benchmarks/gpu_report.sh [--quick] OUT_DIR" >&2
  exit 2
fi
out="$(mkdir -p "$1" && cd "$1" && pwd)"
cd "$(dirname "$0")"

# bench NAME SCRIPT [FLAGS]: the full-size flags are given only without --quick, so the presets apply.
bench() {
  local name=$1 script=$2
  shift 2
  echo "gpu_report: $name ($script)" >&2
  if [[ ${#quick[@]} -gt 0 ]]; then
    python "$script" "${quick[@]}" "${QUICK_FLAGS[@]}" >> "$out/$name.jsonl"
  else
    python "$script" "$@" >> "$out/$name.jsonl"
  fi
}

scans=associative,sequential,chunked,fused,pallas
for precision in highest default; do
  QUICK_FLAGS=(--encoder_scan=associative,fused)
  JAX_DEFAULT_MATMUL_PRECISION=$precision bench train_step train_step.py --horizons=512,2048 \
    --encoder_scan=$scans --repeats=5
done
QUICK_FLAGS=(--backend=scan,deer --unrolls=1)
bench rollout rollout_throughput.py --backend=scan,deer --batches=64,512 --horizons=2048 --unrolls=1 --repeats=5
QUICK_FLAGS=()
bench seed_scaling seed_scaling.py --model=default --seeds=1,4,8,16,64 --horizon=512 --repeats=2
bench memory memory.py
bench recipe_time recipe_time.py
echo "gpu_report: done, $(cat "$out"/*.jsonl | wc -l) records in $out" >&2
