#!/usr/bin/env bash
# h3moe s19 W2 (issue 5): EARLY_TMA (the kernel's top level loads masked_m before the barrier init and requests each
# program's first tile's first NUM_STAGES K blocks before warp_specialize; W1: first request at 1.23 us after entry,
# landing 2.58) and PF_DESC moved to the kernel entry. (1) per masked anchor case: checks, DIAG timelines of the
# default and of EARLY_TMA, interleaved GPU-clock A/B (100 rounds; default, A/A, EARLY_TMA, PF_DESC, both, DIAG,
# empty / K=128 / stamp-kernel probes, peer); (2) all gpu tests of grouped_gemm_ws (EARLY_TMA in the hypothesis
# configs, graph replays, bitwise vs default incl. WIDE / cooperative / 3 stages).
set -u
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
python benchmarks/probe_grouped_ws_timeline.py --out "$OUT" --reps 10 --ab 100 \
  --cases 1x1024@4096x7168 2x512@4096x7168 4x256@4096x7168 1x1024@7168x2048 2x512@7168x2048 4x256@7168x2048 \
  --ab-cfgs '{"EARLY_TMA": true}' '{"PF_DESC": true}' '{"EARLY_TMA": true, "PF_DESC": true}' \
  --timeline-cfgs '{}' '{"EARLY_TMA": true}'
TRITONSEEK_TEST_DEVICE=cuda python -m pytest -q -m gpu tests/kernels/test_grouped_gemm_ws.py 2>&1 | tail -15
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
echo "==== summary"
grep -h "^== \|^   \|  A/B\|EARLY\|PF_DESC\|A/A\|  default:" "$OUT/log.txt" 2>/dev/null | grep -v "calc_diff" | tail -120 || true
