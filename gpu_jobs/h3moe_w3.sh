#!/usr/bin/env bash
# h3moe s20 W3 (issue 5, diagnostic, <= 60 s): W2 showed the TMA fill of the 128x128 K loop is an aggregate limit on all
# SMs (tma-unread 637-652 cycles per K block, 524-526 on half the SMs) but the real ring still takes 612 on half / a
# quarter of the SMs: is that the TMA latency the ring's stages cannot cover (then more stages help, fewer hurt)?
# The answer sizes what 2-CTA multicast could buy (aggregate relief only: ~650 -> ~612 cycles, or more).
set -u
T0=$(date +%s)
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
timeout 55 python benchmarks/probe_kloop_traffic.py --jobs 8 --iters 4000 --out "$OUT" --variants ring tma-unread \
    "ring ns3" "ring ns2" ring/2 tma-unread/2 "ring/2 ns3" "ring/2 ns2" "tma-unread/2 ns2" chain-ring/2 chain-ring 2>&1 | tail -n 40
echo "[h3moe_w3 +$(( $(date +%s) - T0 ))s] done"
