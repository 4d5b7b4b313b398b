#!/usr/bin/env bash
# h3moe s19 W3 (issue 5), <= 150 s: (1) bench_moe grouped_gemm_masked (anchors + decode) and grouped_gemm_contiguous
# suites of the committed default with torch._grouped_mm in the same process; (2) probe: STAGGER 500 / 1200 cycles
# (second consumer warpgroup starts later) interleaved GPU-clock A/B (60 rounds, A/A) + DIAG timelines of the default
# and STAGGER 1200 at 1x1024 (4096,7168), 1x1024 / 2x512 (7168,2048). EARLY_TMA / PF_DESC removed (W2 hang).
set -u
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
timeout 85 python benchmarks/bench_moe.py --suites grouped_gemm_masked,grouped_gemm_contiguous --budget-s 68 \
  --out "$OUT/moe_rows.jsonl" --winners "$OUT/moe_winners.json"
echo "bench_moe rc=$?"
timeout 55 python benchmarks/probe_grouped_ws_timeline.py --out "$OUT" --reps 6 --ab 60 \
  --cases 1x1024@4096x7168 1x1024@7168x2048 2x512@7168x2048 \
  --ab-cfgs '{"STAGGER": 500}' '{"STAGGER": 1200}' --timeline-cfgs '{}' '{"STAGGER": 1200}'
echo "probe rc=$?"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
