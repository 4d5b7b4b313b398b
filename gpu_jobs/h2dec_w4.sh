#!/bin/bash
# h2dec W4 (issue 5; optional, short: run it only if device time allows): config K2 in the fused SiLU·quant GEMM1
# kernel (the model's w13 GEMM, 2I = 4096, K = 7168; knob off by default) against its default config, one process,
# warmed, 300 rotated interleaved rounds, three clocks, A/A twin (silu_aa), T=1/8/64; then the gpu tests of my test
# file (silu K2 bit-identical to the default at real size).
set -x
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv
python benchmarks/probe_masked_decode.py --budget-s 60 --rounds 300 --warm-s 6 --tokens 1,8,64 --nk 4096x7168 \
  --variants silu,silu_aa,silu_k2,def,read --variants-multi silu,silu_aa,silu_k2,def,read \
  --out "$OUT/h2dec_w4_rows.jsonl"
echo "probe rc=$?"
TRITONSEEK_TEST_DEVICE=cuda timeout 60 python -m pytest -q -m gpu tests/kernels/test_grouped_gemm_masked_decode.py \
  2>&1 | tail -8
echo "tests rc=${PIPESTATUS[0]}"
