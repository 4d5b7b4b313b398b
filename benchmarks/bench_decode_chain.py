"""Suite ``decode_chain``: the batch-1 decode step's small launches, timed inside CUDA graphs as chains (so PDL
edges and launch gaps count as they do in the step), variants side by side in one run.

    PYTHONPATH=. python benchmarks/bench_decode_chain.py [--tokens 1,8] [--out rows.jsonl]

Ops at DeepSeek-V3 widths (hidden 7168, 256 experts top-8 in 8 groups, 128 heads, nope 128, rope 64,
kv_lora 512, q_lora 1536, page 64); SETS distinct weights/inputs per chain so L2 (50 MB) does not hold them:
- ``router``: fused_add_rms_norm → router_gate_topk (shared slot), minus the norm-only chain: the router's
  share of the step, per launch variant (PDL on/off, num_warps, BLOCK_E). floor = 3.67 MB / 4.27 TB/s.
- ``absorb_o``: mla_absorb_o at BLOCK_D 32 / 64 / 128, PDL on/off (W_UV 16.8 MB per call); ``absorb_o_quant``:
  mla_absorb_o_fp8 (o_proj's input quant fused) vs mla_absorb_o + per_token_group_quant_fp8.
- ``absorb_q``: mla_absorb_q rotating q_pe (the new decode path) vs copying a roped q_pe, PDL on/off.
- ``prologue``: mla_prologue_fp8 vs rms_norm_quant_fp8 + mla_rope_cache (the two launches it replaces).
Every variant is checked against its default (ids/bits) before it is timed; a wrong one is reported, not timed.
``us_graph`` = graph replay µs per chain element (benchmarks/timing.py); gbps from the bytes the op must read.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tritonseek without PYTHONPATH
from timing import graph_replay_us  # noqa: E402

from tritonseek.benchrun import git_commit, name_list, out_file, positive_int_list, require_cuda  # noqa: E402
from tritonseek.kernels.mla_absorb import mla_absorb_o, mla_absorb_o_fp8, mla_absorb_q  # noqa: E402
from tritonseek.kernels.moe_gate import router_gate_topk  # noqa: E402
from tritonseek.kernels.norm import fused_add_rms_norm, rms_norm_quant_fp8  # noqa: E402
from tritonseek.kernels.reference.rope import cos_sin_cache_ref  # noqa: E402
from tritonseek.kernels.rope_cache import mla_prologue_fp8, mla_rope_cache  # noqa: E402

HIDDEN, E, HEADS, NOPE, ROPE, KV_LORA, Q_LORA, PAGE, V_DIM = 7168, 256, 128, 128, 64, 512, 1536, 64, 128
SETS = 16
GATE = dict(top_k=8, n_group=8, topk_group=4, scoring_func="sigmoid", topk_method="noaux_tc", norm_topk_prob=True,
            routed_scaling_factor=2.5)
ROUTER_VARIANTS = [dict(), dict(PDL=False), dict(num_warps=1, BLOCK_E=2), dict(num_warps=2, BLOCK_E=4),
                   dict(num_warps=4, BLOCK_E=4), dict(num_warps=8, BLOCK_E=16)]
ABSORB_O_VARIANTS = [dict(BLOCK_D=32), dict(BLOCK_D=32, PDL=False), dict(BLOCK_D=64), dict(BLOCK_D=128)]


def _bf(*shape, dev, scale=1.0):
    return (torch.randn(*shape, device=dev) * scale).to(torch.bfloat16)


def bench_router(T, dev, row):
    sets = [dict(a=_bf(T, HIDDEN, dev=dev), r=_bf(T, HIDDEN, dev=dev), nw=_bf(HIDDEN, dev=dev, scale=0.1) + 1,
                 w=_bf(E, HIDDEN, dev=dev, scale=0.02), b=torch.randn(E, device=dev) * 0.05) for _ in range(SETS)]
    norm_only = [lambda s=s: fused_add_rms_norm(s["a"], s["r"], s["nw"], 1e-6) for s in sets]
    t_norm = graph_replay_us(norm_only)
    y0, _ = fused_add_rms_norm(sets[0]["a"], sets[0]["r"], sets[0]["nw"], 1e-6)
    ref = router_gate_topk(y0, sets[0]["w"], sets[0]["b"], shared_expert_id=E, **GATE)
    for cfg in ROUTER_VARIANTS:
        got = router_gate_topk(y0, sets[0]["w"], sets[0]["b"], shared_expert_id=E, config=cfg or None, **GATE)
        # num_warps / BLOCK_E change the in-slice summation order: same experts, weights within fp32 rounding
        ok = torch.equal(got[1].sort(1).values, ref[1].sort(1).values) and torch.allclose(got[0].sort(1).values,
                                                                                         ref[0].sort(1).values, rtol=1e-5)
        us = None
        if ok:
            chain = [lambda s=s: router_gate_topk(fused_add_rms_norm(s["a"], s["r"], s["nw"], 1e-6)[0], s["w"], s["b"],
                                                  shared_expert_id=E, config=cfg or None, **GATE) for s in sets]
            us = graph_replay_us(chain) - t_norm
        row("router", dict(T=T, E=E, H=HIDDEN, **cfg), us, E * HIDDEN * 2, correct=ok, norm_us=round(t_norm, 2))


def bench_absorb(T, dev, row):
    w_uv = [_bf(HEADS, V_DIM, KV_LORA, dev=dev, scale=0.05) for _ in range(SETS)]
    o_lat = [_bf(T, HEADS, KV_LORA, dev=dev) for _ in range(SETS)]
    ref = mla_absorb_o(o_lat[0], w_uv[0])
    for cfg in ABSORB_O_VARIANTS:
        got = mla_absorb_o(o_lat[0], w_uv[0], config=cfg)
        err = ((got.float() - ref.float()).norm() / ref.float().norm()).item()
        ok = err < 1e-2
        us = graph_replay_us([lambda i=i: mla_absorb_o(o_lat[i], w_uv[i], config=cfg) for i in range(SETS)]) if ok else None
        row("absorb_o", dict(T=T, **cfg), us, w_uv[0].numel() * 2, correct=ok, rel_err=err)
    # the fused o_proj input quant vs the two launches it replaces (absorb_o at the default tile, then the quant)
    from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8

    q8, s8 = mla_absorb_o_fp8(o_lat[0], w_uv[0])
    qr, sr = per_token_group_quant_fp8(mla_absorb_o(o_lat[0], w_uv[0], config=dict(BLOCK_D=128)).reshape(T, -1), 128)
    ok = torch.equal(q8.view(torch.uint8), qr.view(torch.uint8)) and torch.equal(s8, sr)
    for name, fn in (("absorb_o_fp8", lambda i: mla_absorb_o_fp8(o_lat[i], w_uv[i])),
                     ("absorb_o+group_quant", lambda i: per_token_group_quant_fp8(
                         mla_absorb_o(o_lat[i], w_uv[i]).reshape(T, -1), 128))):
        us = graph_replay_us([lambda i=i: fn(i) for i in range(SETS)]) if ok else None
        row("absorb_o_quant", dict(T=T, impl=name), us, w_uv[0].numel() * 2, correct=ok)
    w_uk = [_bf(HEADS, NOPE, KV_LORA, dev=dev, scale=0.05) for _ in range(SETS)]
    q = [_bf(T, HEADS, NOPE + ROPE, dev=dev) for _ in range(SETS)]
    pos = torch.randint(0, 4096, (T,), device=dev)
    cs = cos_sin_cache_ref(1.0 / (10000 ** (torch.arange(0, ROPE, 2, dtype=torch.float32) / ROPE)), 4096).to(dev)
    kv = _bf(T, KV_LORA + ROPE, dev=dev)
    q_pe, _ = mla_rope_cache(q[0], kv, pos, cs, torch.ones(KV_LORA, device=dev), 1e-6, None, None)
    ref = mla_absorb_q(q[0][..., :NOPE], w_uk[0], q_pe)
    for rope, pdl in ((True, True), (True, False), (False, False)):
        kw = dict(positions=pos, cos_sin_cache=cs) if rope else {}
        ok = True
        if rope:
            ok = torch.equal(mla_absorb_q(q[0][..., :NOPE], w_uk[0], q[0][..., NOPE:], config=dict(PDL=pdl), **kw), ref)
        us = graph_replay_us([lambda i=i: mla_absorb_q(q[i][..., :NOPE], w_uk[i], q[i][..., NOPE:], config=dict(PDL=pdl),
                                                       **kw) for i in range(SETS)]) if ok else None
        row("absorb_q", dict(T=T, rope=rope, PDL=pdl), us, w_uk[0].numel() * 2, correct=ok)


def bench_prologue(T, dev, row):
    fused = [_bf(T, Q_LORA + KV_LORA + ROPE, dev=dev) for _ in range(SETS)]
    qw, kw_ = _bf(Q_LORA, dev=dev, scale=0.1) + 1, _bf(KV_LORA, dev=dev, scale=0.1) + 1
    pos = torch.randint(0, 4096, (T,), device=dev)
    cs = cos_sin_cache_ref(1.0 / (10000 ** (torch.arange(0, ROPE, 2, dtype=torch.float32) / ROPE)), 4096).to(dev)
    cache = torch.zeros(64, PAGE, 1, KV_LORA + ROPE, dtype=torch.bfloat16, device=dev)
    slots = torch.randperm(64 * PAGE, device=dev)[:T]
    q_heads = _bf(T, HEADS, NOPE + ROPE, dev=dev)  # the unfused path also rotates q_pe of 128 heads

    def fused_call(f):
        return mla_prologue_fp8(f[:, :Q_LORA], f[:, Q_LORA:], qw, 1e-6, pos, cs, kw_, 1e-6, cache, slots)

    def unfused_call(f):
        q, s = rms_norm_quant_fp8(f[:, :Q_LORA], qw, 1e-6)
        _, lat = mla_rope_cache(q_heads, f[:, Q_LORA:], pos, cs, kw_, 1e-6, cache, slots)
        return q, s, lat

    a, b = fused_call(fused[0]), unfused_call(fused[0])
    ok = torch.equal(a[0].view(torch.uint8), b[0].view(torch.uint8)) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    nbytes = T * (Q_LORA + KV_LORA + ROPE) * 2
    for name, fn in (("prologue_fp8", fused_call), ("rms_norm_quant+mla_rope_cache", unfused_call)):
        us = graph_replay_us([lambda f=f: fn(f) for f in fused]) if ok else None
        row("prologue", dict(T=T, impl=name), us, nbytes, correct=ok)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", default="1,8", type=positive_int_list)
    p.add_argument("--ops", default="router,absorb,prologue", type=name_list(("router", "absorb", "prologue")))
    p.add_argument("--out", default=None, type=out_file, help="append JSON rows here")
    p.add_argument("--commit", default=None, help="commit the rows carry (default: TRITONSEEK_COMMIT, else git HEAD)")
    a = p.parse_args(argv)
    require_cuda("bench_decode_chain")
    import triton

    dev = torch.device("cuda")
    torch.manual_seed(0)
    env = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__, commit=a.commit or git_commit(),
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    rows = []

    def row(op, case, us, nbytes, correct, **extra):
        r = dict(suite="decode_chain", case=dict(op=op, **case), us=None if us is None else round(us, 2),
                 us_graph=None if us is None else round(us, 2), tflops=None,
                 gbps=None if not us else round(nbytes / us / 1e3, 1), floor_us=round(nbytes / 4.27e6, 2),
                 peer=None, peer_us=None, ratio_vs_peer=None, correct=bool(correct), **extra, **env)
        rows.append(r)
        print(f"{op:10s} {json.dumps(case):70s} {'WRONG' if not correct else f'{us:8.2f} us'}  floor {r['floor_us']} us",
              flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(r) + "\n")

    ops = a.ops
    for T in a.tokens:
        if "router" in ops:
            bench_router(T, dev, row)
        if "absorb" in ops:
            bench_absorb(T, dev, row)
        if "prologue" in ops:
            bench_prologue(T, dev, row)
    return rows


if __name__ == "__main__":
    main()
