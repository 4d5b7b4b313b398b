#!/bin/bash
# h2dec W3 (issue 5, masked decode; asked for after W2 — the lead's note said device time is plentiful): the new plain-
# launcher default K2 (two K blocks per stage from 56 K blocks, i.e. (4096, 7168)) against the config the launcher
# chose before ("old") in one process, warmed, 300 rotated interleaved rounds, three clocks, A/A twin, read floor,
# T=1/8/64/256 at both decode shapes ((7168, 2048) must be unchanged: def == old there); then the suite rows of the
# new default and the gpu tests of my files (the K2 default bit-identical to the old config at real shapes).
set -x
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv
python benchmarks/probe_masked_decode.py --budget-s 75 --rounds 300 --warm-s 8 --tokens 1,8,64,256 \
  --variants def,old,def_aa,tiled,read --variants-multi def,old,def_aa,tiled,read --out "$OUT/h2dec_w3_rows.jsonl"
echo "probe rc=$?"
timeout 50 python benchmarks/bench_moe.py --suites grouped_gemm_masked --masked-kinds decode --budget-s 45 \
  --out "$OUT/h2dec_w3_bench_rows.jsonl" --winners "$OUT/h2dec_w3_winners.json"
echo "bench rc=$?"
TRITONSEEK_TEST_DEVICE=cuda timeout 80 python -m pytest -q -m gpu tests/kernels/test_grouped_gemm_masked_decode.py \
  tests/kernels/test_grouped_gemm_masked.py 2>&1 | tail -15
echo "tests rc=${PIPESTATUS[0]}"
