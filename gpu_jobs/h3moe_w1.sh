#!/usr/bin/env bash
# h3moe s19 W1 (issue 5): where the masked grouped GEMM's ~5 us fixed cost goes. (1) DIAG timeline (globaltimer /
# clock64 stamps per program: entry, barriers, producer schedule, first stage landed, each tile's K loop and
# epilogue, end; stamp kernels before/after in the same graph) at 1x1024 (4096,7168) / (7168,2048) and 4x256
# (4096,7168); (2) in the same process per case, interleaved GPU-clock A/B, 80 rounds: default, A/A, PF_DESC (TMA
# descriptor prefetch), the DIAG build, masked_m = 0 (empty kernel), K = 128, a bare stamp kernel, the peer;
# (3) gpu tests of DIAG / PF_DESC.
set -u
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
python benchmarks/probe_grouped_ws_timeline.py --out "$OUT" --reps 10 --ab 80 --ab-cfgs '{"PF_DESC": true}'
TRITONSEEK_TEST_DEVICE=cuda python -m pytest -q -m gpu tests/kernels/test_grouped_gemm_ws.py -k "diag_and_pf_desc" 2>&1 | tail -5
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
echo "==== summary"
grep -h "^== \|^   \|ratio" "$OUT/log.txt" 2>/dev/null | grep -v "^  *{" | tail -60 || true
