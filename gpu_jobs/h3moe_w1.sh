#!/usr/bin/env bash
# h3moe s20 W1 (issue 5): (1) what limits the 128x128 K loop: probe_kloop_traffic.py (resident / barrier handshake /
# TMA traffic unread / ring / + scales / + 16 KB TMA / + 16 KB ld.shared, PIPE and chain), SM cycles per K block from
# clock64; (2) SCALE_AHEAD for the grouped kernel (knob, off): masked A/B on the GPU clock with A/A + DIAG timelines
# (K loop per tile) at 1x1024 / 2x512 x (4096,7168) / (7168,2048); (3) contiguous 4x8192 (4096,7168) A/B.
set -u
T0=$(date +%s)
el() { echo "[h3moe_w1 +$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
el "probe_kloop_traffic"
timeout 75 python benchmarks/probe_kloop_traffic.py --jobs 12 --iters 4000 --out "$OUT" 2>&1 | tail -n 45
el "masked A/B + timelines"
timeout 95 python benchmarks/probe_grouped_ws_timeline.py --cases 1x1024@4096x7168 1x1024@7168x2048 2x512@4096x7168 \
    2x512@7168x2048 --ab 40 --reps 5 --ab-cfgs '{"SCALE_AHEAD": true}' --timeline-cfgs '{}' '{"SCALE_AHEAD": true}' \
    --out "$OUT" 2>&1 | grep -v "^{" | tail -n 90
el "contiguous A/B"
timeout $(( 205 - ($(date +%s) - T0) )) python benchmarks/bench_grouped_ws.py --cases contiguous --no-tl --ab 20 \
    --budget-s $(( 190 - ($(date +%s) - T0) )) --warm-s 0.3 \
    --cands-json '[{}, {"SCALE_AHEAD": true}, {"SCALE_AHEAD": false}]' --out "$OUT/contig_rows.jsonl" 2>&1 \
    | grep -v "^{" | grep -i "A/B-gpu\|calc_diff\|contiguous\|skip\|fail\|error" | tail -n 40
el "done"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
