#!/usr/bin/env bash
# One H200 call: GPU tests for the FP8 kernels, then the fp8_gemm suite (sweep + peer) → $OUT.
# SWEEP=1: sweep candidates; EXTRA=1: off-table shapes; AB=1: M = 64/128 entries against the session-15 ones.
set -o pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 TRITONSEEK_COMMIT="${TRITONSEEK_COMMIT:-unknown}"
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw --format=csv 2>&1 | tee "$OUT/gpu.txt"
timeout "${TEST_TIMEOUT:-150}" env TRITONSEEK_TEST_DEVICE=cuda HYPOTHESIS_PROFILE=gpu \
  python -m pytest -q -m gpu -p no:warnings tests/kernels/test_fp8_gemm.py tests/kernels/test_fp8_quant.py 2>&1 \
  | tail -40 | tee "$OUT/tests.txt"
timeout "${BENCH_TIMEOUT:-330}" python benchmarks/bench_fp8_gemm.py ${SWEEP:+--sweep} ${EXTRA:+--extra} ${AB:+--ab-prev} \
  --out "$OUT/rows.jsonl" --winners "$OUT/winners.json" 2>&1 | tee "$OUT/bench.txt"
