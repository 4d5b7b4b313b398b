#!/bin/bash
# h4fix W1 (session 24 engine fixes, embedded default model, triton backend, CUDA graphs): (1) generate re-entry from
# on_text / another thread in graph mode (committed lock vs the old always-granted control, run last), (2) seeded
# sampled MTP batch invariance with draft_groups vs the old one-K rule, greedy MTP identity, (3) wall time of a
# 16-prompt sampled MTP generate, draft_groups vs old rule vs A/A, 5 interleaved rotated rounds, mtp 1 and 3.
set -x
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv
timeout 185 python benchmarks/probe_engine_fixes.py --rounds 5 --out "$OUT/h4fix_w1_rows.jsonl"
echo "probe rc=$?"
