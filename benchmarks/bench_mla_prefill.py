"""Suite ``mla_prefill`` of ``benchmarks/bench_mla.py`` (moved here from it: module size; run it through bench_mla.py,
whose CLI and row fields are unchanged).

Varlen causal attention, 128 heads, d_qk 192, d_v 128, {tokens, seqs} with equal lengths; FLOPs = Σ len²·h·(192+128)
(causal half of 2·len²·h·(d_qk+d_v)). Target: ≥ 60% of the bf16 matrix rate (677 TFLOP/s measured by torch GEMM on
our H200 → 406) at 8k-token prompts. Peer in the same run: ``torch.nn.functional.scaled_dot_product_attention`` per
sequence. Correctness: rel. error ≤ 1e-2 on 8 heads against the fp32 reference. The timers are bench_mla's
(``graph_time_us``, ``eager_time_us``, set by it; its --dry replaces them and DEVICE / PREFILL_CASES / PREFILL_HEADS).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # a module of another script, not a benchmark of its own
    print("bench_mla_prefill.py holds bench_mla.py's mla_prefill suite: run"
          "  PYTHONPATH=. python benchmarks/bench_mla.py --suite mla_prefill [--dry]")
    sys.exit(0 if {"-h", "--help"} & set(sys.argv[1:]) else 2)

import json
import time

import torch

from tritonseek.kernels import mla_prefill as P
from tritonseek.kernels.reference.mla import mla_prefill_ref

DEVICE = "cuda"
graph_time_us = eager_time_us = None  # bench_mla's timers (set there at import)

# Runs 1-3: 128×128 tiles, 8 warps, 2 stages won; warp_specialize variants were slower. Run 4 (e1423bb,
# key/value loads now 16-byte cp.async, pipelined): 128×128/2 stages 464 TFLOP/s, 128×64/3 467, 128×64/4 460
# at 8192 tokens. Run 5 adds USE_TMA (tiles by TMA descriptors).
# s21 (h6prefill W1, e3478a4): the Gluon kernel (GLUON, mla_prefill_ws; 128-key blocks, 2 stages, PIPE) 644 TFLOP/s at
# 8192 tokens vs 414 for the tl default, and the default since; the tl candidates name GLUON=False (the default
# config they merge into has GLUON=True).
PREFILL_CANDIDATES = [
    dict(GLUON=True, WS_BLOCK_N=128, WS_STAGES=2, PIPE=True),
    dict(GLUON=True, WS_BLOCK_N=128, WS_STAGES=2, PIPE=False),
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=2, GLUON=False),
    dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3, GLUON=False),
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=2, USE_TMA=True, GLUON=False),
    dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3, USE_TMA=True, GLUON=False),
]
# s23: 24 × 341 and 13 × 630 tokens too (odd query-block counts, 3 / 5 per sequence: the persistent kernel's PAIR_MID)
PREFILL_CASES = [(4096, 1), (8192, 1), (8192, 2), (8192, 8), (16384, 4), (8184, 24), (8190, 13)]
PREFILL_HEADS = 128


def make_prefill(tokens: int, seqs: int, heads: int = PREFILL_HEADS):
    lens = [tokens // seqs] * seqs
    q = torch.randn(tokens, heads, 192, device=DEVICE, dtype=torch.bfloat16)
    k = torch.randn(tokens, heads, 192, device=DEVICE, dtype=torch.bfloat16)
    v = torch.randn(tokens, heads, 128, device=DEVICE, dtype=torch.bfloat16)
    cu = torch.tensor([0] + [sum(lens[: i + 1]) for i in range(seqs)], dtype=torch.int32, device=DEVICE)
    return lens, q, k, v, cu


def check_prefill(o, q, k, v, cu, scale, heads=8):
    ref = mla_prefill_ref(q[:, :heads].float(), k[:, :heads].float(), v[:, :heads].float(), cu, scale)
    ob = o[:, :heads].float()
    rel = ((ob - ref).norm() / ref.norm()).item()
    return rel, (rel <= 1e-2 and not torch.isnan(o).any().item())


def sweep_prefill(winners, deadline):
    lens, q, k, v, cu = make_prefill(*PREFILL_CASES[1])
    scale = 192**-0.5
    best = None
    for cfg in PREFILL_CANDIDATES:
        if time.time() > deadline:
            break
        try:
            fn = lambda cfg=cfg: P.mla_prefill(q, k, v, cu, max(lens), scale, config=cfg, check_ids=False)  # noqa: E731
            rel, ok = check_prefill(fn(), q, k, v, cu, scale)
            t = graph_time_us(fn, 20.0) if ok else float("nan")
        except Exception as e:  # noqa: BLE001
            print(f"  prefill {cfg}: {type(e).__name__} {str(e)[:120]}", flush=True)
            continue
        flops = sum(n * n for n in lens) * PREFILL_HEADS * (192 + 128)
        print(f"  prefill {cfg}: rel {rel:.1e} ok {ok} {t:.1f} us {flops / t / 1e6:.0f} TFLOP/s", flush=True)
        if ok and (best is None or t < best[0]):
            best = (t, cfg)
    if best:
        winners["prefill_192x128"] = best[1]


def sdpa_peer(q, k, v, lens, scale):
    outs, s = [], 0
    for n in lens:
        qs, ks, vs = (x[s:s + n].transpose(0, 1).unsqueeze(0) for x in (q, k, v))
        outs.append(torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale))
        s += n
    return outs


def bench_prefill(env, rows, out_f, winners, deadline):
    cfg = winners.get("prefill_192x128")
    for tokens, seqs in PREFILL_CASES:
        if time.time() > deadline:
            print(f"prefill: out of time at {tokens}/{seqs}", flush=True)
            return
        lens, q, k, v, cu = make_prefill(tokens, seqs)
        scale = 192**-0.5
        fn = lambda: P.mla_prefill(q, k, v, cu, max(lens), scale, config=cfg, check_ids=False)  # noqa: E731
        rel, ok = check_prefill(fn(), q, k, v, cu, scale)
        us = eager_time_us(fn)
        us_g = graph_time_us(fn)
        peer = lambda: sdpa_peer(q, k, v, lens, scale)  # noqa: E731
        try:
            peer_us = graph_time_us(peer)
        except Exception as e:  # noqa: BLE001
            print(f"  sdpa peer not graph-capturable ({type(e).__name__}); timing eagerly", flush=True)
            try:
                peer_us = eager_time_us(peer)
            except Exception as e2:  # noqa: BLE001
                print(f"  sdpa peer failed: {type(e2).__name__} {str(e2)[:160]}", flush=True)
                peer_us = float("nan")
        flops = sum(n * n for n in lens) * PREFILL_HEADS * (192 + 128)
        row = dict(suite="mla_prefill", case=dict(tokens=tokens, seqs=seqs), heads=PREFILL_HEADS, us=round(us, 2),
                   us_graph=round(us_g, 2), tflops=round(flops / us_g / 1e6, 1), gbps=None, peer="torch_sdpa",
                   peer_us=round(peer_us, 2), ratio_vs_peer=round(peer_us / us_g, 3), rel_err=rel, correct=ok,
                   config=cfg or P.default_config(192, 128), **env)
        rows.append(row)
        out_f.write(json.dumps(row) + "\n")
        out_f.flush()
        print(f"prefill {tokens}/{seqs}: {us_g:.0f} us {row['tflops']} TFLOP/s peer {peer_us:.0f} us ok {ok}",
              flush=True)
        del q, k, v
        torch.cuda.empty_cache()
