#!/bin/bash
# h2dec W1 (issue 5, T = 1 masked decode): launch-gap bisection + in-kernel config variants, one process,
# interleaved three clocks, A/A twin (def_aa), read floor in the same run. Correctness checked first inside.
set -x
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv
python benchmarks/probe_masked_decode.py --budget-s 165 --rounds 40 --out "$OUT/h2dec_w1_rows.jsonl"
echo "rc=$?"
