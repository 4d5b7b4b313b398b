#!/usr/bin/env bash
# h1mla s19 W3: the new WSM default (QTMA + OVEC 2 + PART16, mla_decode_config._WSM_KNOBS) as the default: wsm gpu
# tests and the packed-schedule b128 gpu tests (h64 s_q1 on it); then interleaved A/B on the GPU clock (8 calls per
# graph, 11 replays; new default first and last = A/A) vs the session-18 default and combine variants, every
# compute-bound case + the 64-row ones, each config checked against the fp32 reference first.
set -u
P=benchmarks/probe_mla_ws_timeline.py
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
TRITONSEEK_TEST_DEVICE=cuda python -m pytest -q -m gpu tests/kernels/test_mla_decode_wsm.py 2>&1 | tail -6
TRITONSEEK_TEST_DEVICE=cuda python -m pytest -q -m gpu tests/kernels/test_mla_schedule.py -k packed_real_shapes 2>&1 | tail -4
python $P --out "$OUT" --reps 11 --cases 128x1@4096f 128x1@4096v 128x1@8192f 128x1@8192v 128x2@4096f 128x2@4096v \
  128x2@8192f 128x2@8192v 64x2@4096f 64x2@4096v 64x2@8192f 64x2@8192v 64x1@4096f 64x1@4096v 32x2@4096f 32x2@4096v \
  64x1@8192f 64x1@8192v 32x2@8192f 32x2@8192v --ab '{}' '{"QTMA": false, "OVEC": 0, "PART16": false}' \
  '{"COMBINE_ROWS": 8}' '{"COMBINE_ROWS": 16}' '{"COMBINE_PDL": true}' '{"OVEC": 1}' '{}'
echo "==== summary (us per call; first '{}' = the new default, last '{}' its A/A)"
grep -h '^ab ' "$OUT/log.txt" 2>/dev/null || true
