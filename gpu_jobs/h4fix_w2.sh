#!/bin/bash
# h4fix W2 (answers the lead's W1 note: draft_groups ran 68 vs 53 decode steps at mtp=3): same probe, now with the
# LLM.mtp_draft_masks knob (one masked verify batch per step, off by default) as a fourth variant: batch invariance
# (groups / masks / old), greedy MTP identity, 16-prompt sampled MTP generate time groups / old / masks / groups A/A,
# 7 interleaved rotated rounds, mtp 1 and 3; re-entry with the lock and the old control.
set -x
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv
timeout 185 python benchmarks/probe_engine_fixes.py --rounds 7 --out "$OUT/h4fix_w2_rows.jsonl"
echo "probe rc=$?"
