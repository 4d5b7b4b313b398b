#!/usr/bin/env bash
# h1mla s19 W1: compute-bound MLA decode (issue 3), WSM kernel. (1) interleaved A/B (GPU clock, 8 calls per graph,
# 15 replays, default first and last = A/A) of the new knobs QTMA / SEQPF / PART16 and the packed schedule at 128
# rows; each config checked against the fp32 reference first (16 sequences); (2) varlen with OVERHEAD variants;
# (3) DIAG timeline of the default (and the knobs) at h128 s_q1/s_q2; (4) gpu tests of the new knobs.
set -u
P=benchmarks/probe_mla_ws_timeline.py
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
python $P --out "$OUT" --reps 15 --cases 128x1@4096f 128x2@4096f 64x2@4096f 128x1@8192f 128x2@8192f --ab '{}' \
  '{"QTMA": true}' '{"QTMA": true, "SEQPF": true}' '{"PART16": true}' '{"SCHED": "packed", "FILL_TOL": 3}' \
  '{"QTMA": true, "SEQPF": true, "SCHED": "packed", "FILL_TOL": 3}' '{"QTMA": true, "SEQPF": true, "PART16": true}' '{}'
python $P --out "$OUT" --reps 15 --cases 128x1@4096v 128x2@4096v 64x2@4096v --ab '{}' \
  '{"QTMA": true, "SEQPF": true, "PART16": true}' '{"QTMA": true, "SEQPF": true, "PART16": true, "OVERHEAD": 2}' \
  '{"QTMA": true, "SEQPF": true, "PART16": true, "OVERHEAD": 10}' '{"OVERHEAD": 10}' '{}'
python $P --out "$OUT" --reps 3 --cases 128x1@4096f 128x2@4096f 128x1@8192f
python $P --out "$OUT" --reps 3 --cases 128x1@4096f 128x2@4096f --cfg '{"QTMA": true, "SEQPF": true, "PART16": true}'
python -m pytest -q -m gpu tests/kernels/test_mla_decode_wsm.py -k "knobs or qtma or diag" 2>&1 | tail -8
echo "==== summary (us per call; first '{}' is the reference, last '{}' the A/A)"
grep -h '^ab ' "$OUT/log.txt" 2>/dev/null || true
