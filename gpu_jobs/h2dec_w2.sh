#!/bin/bash
# h2dec W2 (issue 5, masked decode): (1) probe, one process, warmed 8 s, 300 interleaved rounds (order rotated), three
# clocks, A/A twin, read floor: T=1 launch bisection + layout/stage variants (tiled weights, two K blocks per stage),
# T=8/64/256 default vs tiled vs k2s3; (2) the suite rows (bench_moe decode, the committed default); (3) gpu tests.
set -x
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv
python benchmarks/probe_masked_decode.py --budget-s 120 --rounds 300 --warm-s 8 --tokens 1,8,64,256 \
  --variants def,def_aa,n64s4r128,tiled,k2s2,k2s3,k2n64s2r96,k2n64s3r128,read,read_desc,k0,k0s1,empty,empty_desc \
  --variants-multi def,def_aa,tiled,k2s3,read --out "$OUT/h2dec_w2_rows.jsonl"
echo "probe rc=$?"
timeout 45 python benchmarks/bench_moe.py --suites grouped_gemm_masked --masked-kinds decode --budget-s 40 \
  --out "$OUT/h2dec_w2_bench_rows.jsonl" --winners "$OUT/h2dec_w2_winners.json"
echo "bench rc=$?"
TRITONSEEK_TEST_DEVICE=cuda timeout 45 python -m pytest -q -m gpu tests/kernels/test_grouped_gemm_masked_decode.py \
  tests/kernels/test_grouped_gemm_masked.py 2>&1 | tail -15
echo "tests rc=${PIPESTATUS[0]}"
