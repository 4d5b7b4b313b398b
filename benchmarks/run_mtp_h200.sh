#!/usr/bin/env bash
# One H200 call (~2.5 min incl. compiles): real-shape + distribution GPU tests of the sampler and the
# speculative-verification kernels, then the spec_verify + sampler suites (sweep + torch peer) → $OUT.
#   run: TRITONSEEK_COMMIT=<sha> bash benchmarks/run_mtp_h200.sh      (then append $OUT/mtp_rows.jsonl
#   to benchmarks/results/h200.jsonl and copy the printed winners into sampling.STATS_CONFIGS)
set -o pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 TRITONSEEK_COMMIT="${TRITONSEEK_COMMIT:-unknown}"
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
timeout "${TEST_TIMEOUT:-80}" env TRITONSEEK_TEST_DEVICE=cuda \
  python -m pytest -q -x -m "" -k "gpu or distribution or philox_noise" -p no:warnings \
  tests/kernels/test_sampling.py tests/kernels/test_spec_verify.py 2>&1 | tail -30 | tee "$OUT/tests.txt"
timeout "${BENCH_TIMEOUT:-110}" python benchmarks/bench_mtp.py $([ -z "${NO_SWEEP:-}" ] && echo --sweep) --budget-s "${BUDGET_S:-95}" \
  --out "$OUT/mtp_rows.jsonl" 2>&1 | tee "$OUT/bench.txt"
