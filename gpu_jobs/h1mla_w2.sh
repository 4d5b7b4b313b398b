#!/usr/bin/env bash
# h1mla s19 W2: WSM kernel (issue 3) knobs across every compute-bound case (h_q·s_q = 128, 256) and the 64-row cases,
# b128 page 64, s_k 4096/8192 fixed/varlen: interleaved A/B on the GPU clock (8 calls per graph, 11 replays, the
# default first and last = A/A), each config checked against the fp32 reference first; then the wsm gpu tests
# (default + knobs); then a DIAG timeline of the best-guess candidate.
set -u
P=benchmarks/probe_mla_ws_timeline.py
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
python $P --out "$OUT" --reps 11 --cases 128x1@4096f 128x1@4096v 128x1@8192f 128x1@8192v 128x2@4096f 128x2@4096v \
  128x2@8192f 128x2@8192v 64x2@4096f 64x2@4096v 64x2@8192f 64x2@8192v 64x1@4096f 64x1@4096v 32x2@4096f 32x2@4096v \
  64x1@8192f 64x1@8192v 32x2@8192f 32x2@8192v --ab '{}' '{"QTMA": true}' '{"QTMA": true, "OVEC": 1}' \
  '{"QTMA": true, "OVEC": 2}' '{"QTMA": true, "OVEC": 2, "PART16": true}' '{}'
TRITONSEEK_TEST_DEVICE=cuda python -m pytest -q -m gpu tests/kernels/test_mla_decode_wsm.py 2>&1 | tail -15
python $P --out "$OUT" --reps 2 --cases 128x1@4096f --cfg '{"QTMA": true, "OVEC": 2}'
echo "==== summary (us per call; first '{}' is the reference, last '{}' the A/A)"
grep -h '^ab ' "$OUT/log.txt" 2>/dev/null || true
