#!/usr/bin/env bash
# h3moe s20 W2 (issue 5): QUARTERS (WIDE 128x256 tiles through the n64 two-in-flight K loop; fewer TMA bytes per FLOP,
# W1: the 128x128 loop is bound by the ~50 B/clk TMA fill) -- (1) its GPU edge tests, (2) kloop probe on 1/2 and 1/4 of
# the SMs (aggregate vs per-SM fill limit: would 2-CTA multicast help), (3) masked A/B at all 6 DeepGEMM shapes:
# default / A/A / QUARTERS / WIDE (old loop) + peer, GPU clock, + QUARTERS timelines, (4) contiguous A/B at the 4
# shapes (default / QUARTERS / A/A) + peer, (5) the rest of the grouped_gemm_ws gpu tests.
set -u
T0=$(date +%s)
el() { echo "[h3moe_w2 +$(( $(date +%s) - T0 ))s] $*"; }
export TRITONSEEK_TEST_DEVICE=cuda
Q='{"BLOCK_N": 256, "NUM_STAGES": 4, "QUARTERS": true}'
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
el "QUARTERS gpu tests"
timeout 90 python -m pytest -q -m gpu -p no:cacheprovider tests/kernels/test_grouped_gemm_ws.py \
    -k "(wide_tiles_gpu and (config2 or config3 or config4)) or (graph_replay and config3)" 2>&1 | tail -n 15
el "kloop probe"
timeout 40 python benchmarks/probe_kloop_traffic.py --jobs 8 --iters 4000 --out "$OUT" 2>&1 | tail -n 22
el "masked A/B"
timeout 80 python benchmarks/probe_grouped_ws_timeline.py --cases 1x1024@4096x7168 2x512@4096x7168 4x256@4096x7168 \
    1x1024@7168x2048 2x512@7168x2048 4x256@7168x2048 --ab 40 --reps 5 --ab-cfgs "$Q" '{"BLOCK_N": 256, "NUM_STAGES": 3, "QUARTERS": true}' '{"BLOCK_N": 256, "NUM_STAGES": 4}' \
    --timeline-cfgs "$Q" --out "$OUT" 2>&1 | grep -v "^{" | grep -v "DIAG out ==\|: calc_diff .* ok$" | tail -n 110
el "contiguous A/B"
timeout $(( 190 - ($(date +%s) - T0) )) python benchmarks/bench_grouped_ws.py --cases contiguous --no-tl --ab 15 \
    --budget-s $(( 175 - ($(date +%s) - T0) )) --warm-s 0.3 \
    --cands-json "[{}, $Q, {\"GROUP_M\": 8}]" --out "$OUT/contig_rows.jsonl" 2>&1 \
    | grep -v "^{\|^   {" | grep -i "A/B-gpu\|WRONG\|fail\|error\|skip\|^contiguous" | tail -n 40
el "rest of the grouped_gemm_ws gpu tests"
timeout $(( 215 - ($(date +%s) - T0) )) python -m pytest -q -m gpu -p no:cacheprovider tests/kernels/test_grouped_gemm_ws.py \
    -k "not ((wide_tiles_gpu and (config2 or config3 or config4)) or (graph_replay and config3))" 2>&1 | tail -n 12
el "done"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
