"""Probe: the batch-1 decode step's small kernels under launch-config A/Bs (issue #8 follow-up).

    PYTHONPATH=. python benchmarks/probe_decode_small.py [--tokens 1,8,128] [--out rows.jsonl]
        [--only router,q,o,o16,norm] [--q-configs JSON] [--o-configs JSON] [--norm-warps 4,8,16,32]

DeepSeek-V3 widths. Each case is checked against its reference first, then timed as a CUDA graph of one call per
layer over rotating fresh random weights (enough layers that L2, 50 MB, does not hold them), median replay ÷ calls:
- ``absorb_q``: mla_absorb_q with the decode path's q_pe rope, per config;
- ``absorb_o_fp8`` / ``absorb_o``: the W_UV product with / without o_proj's FP8 quant, per config (BLOCK_C, STAGES,
  num_warps; default list: the previous BLOCK_C 64 and the current default);
- ``router``: [fused_add_rms_norm → router_gate_topk] pairs (the decode order; the router is a PDL dependent of the
  norm) minus a graph of the norms alone: the router's marginal time in the chain (its own profiler time overlaps
  the norm it waits for). Also the profiler's per-kernel device time of the chain;
- ``norm``: the decode step's RMSNorm launches at several num_warps (probe-only patch of norm._norm_config).
Rows: suites ``mla_absorb`` / ``moe_gate`` / ``fused_small`` with the config in the case, ``us_graph`` the per-call
replay time (each call in a chain of calls: it includes the launch gap between kernels).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_moe_layer import kernel_breakdown  # noqa: E402
from benchmarks.timing import graph_replay_us  # noqa: E402

from tritonseek.benchrun import git_commit, json_list, name_list, out_file, positive_int_list, require_cuda  # noqa: E402
from tritonseek.kernels import mla_absorb as MA  # noqa: E402
from tritonseek.kernels.mla_absorb import mla_absorb_o, mla_absorb_o_fp8, mla_absorb_q  # noqa: E402
from tritonseek.kernels.moe_gate import router_gate_topk  # noqa: E402
from tritonseek.kernels.norm import fused_add_rms_norm  # noqa: E402
from tritonseek.kernels.reference.mla_absorb import mla_absorb_q_ref  # noqa: E402
from tritonseek.kernels.reference.moe import router_gate_topk_ref  # noqa: E402
from tritonseek.kernels.reference.rope import cos_sin_cache_ref  # noqa: E402

H, NOPE, KV_LORA, ROPE, V_DIM, HIDDEN, E = 128, 128, 512, 64, 128, 7168, 256
ABSORB_LAYERS, ROUTER_LAYERS = 6, 16  # 6 × 16.8 MB, 16 × 3.7 MB: past L2
GATE_KW = dict(top_k=8, n_group=8, topk_group=4, scoring_func="sigmoid", topk_method="noaux_tc",
               norm_topk_prob=True, routed_scaling_factor=2.5)
Q_CONFIGS = [dict()]
O_CONFIGS = [dict(BLOCK_C=64, STAGES=4), dict()]  # the previous default, the current one


def _env():
    return dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
                commit=git_commit(),
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))


def _rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _absorb_row(case, ug, ok, nbytes, env):
    """One mla_absorb row (printed): GB/s over the bytes moved, floor = the weight (16.8 MB) at 4.27 TB/s."""
    row = dict(suite="mla_absorb", case=case, us=None, us_graph=round(ug, 2) if ug else None, tflops=None,
               gbps=round(nbytes / ug / 1e3, 1) if ug else None, peer=None, peer_us=None, ratio_vs_peer=None,
               correct=ok, floor_us=round(H * 128 * KV_LORA * 2 / 4.27e6, 2), **env)
    print(json.dumps(row), flush=True)
    return row


def probe_absorb_q(T, dev, env, configs):
    bf = torch.bfloat16
    w = [torch.randn(H, NOPE, KV_LORA, device=dev, dtype=bf) * 0.05 for _ in range(ABSORB_LAYERS)]
    q = torch.randn(T, H, NOPE + ROPE, device=dev, dtype=bf)
    inv = 1.0 / (10000.0 ** (torch.arange(0, ROPE, 2, dtype=torch.float32, device=dev) / ROPE))
    cs = cos_sin_cache_ref(inv, 8192)
    pos = torch.randint(0, 8192, (T,), device=dev)
    out = torch.full((T, H, KV_LORA + ROPE), float("nan"), device=dev, dtype=bf)
    # the first config's rotated q_pe (the rope path is the same in every config) and the fp32 reference product
    pe = mla_absorb_q(q[..., :NOPE], w[0], q[..., NOPE:], positions=pos, cos_sin_cache=cs, config=configs[0])[..., KV_LORA:]
    ref = mla_absorb_q_ref(q[..., :NOPE], w[0], q[..., NOPE:])[..., :KV_LORA]
    rows = []
    for cfg in configs:
        out.fill_(float("nan"))
        mla_absorb_q(q[..., :NOPE], w[0], q[..., NOPE:], out=out, positions=pos, cos_sin_cache=cs, config=cfg)
        # bf16 output of an fp32-accumulated product: 1e-2 relative to the fp32 reference
        ok = bool(torch.equal(out[..., KV_LORA:], pe)) and not out.isnan().any() and _rel(out[..., :KV_LORA], ref) < 1e-2
        ug = graph_replay_us([lambda wi=wi: mla_absorb_q(q[..., :NOPE], wi, q[..., NOPE:], out=out, positions=pos,
                                                          cos_sin_cache=cs, config=cfg) for wi in w], 15.0) if ok else None
        nbytes = H * NOPE * KV_LORA * 2 + T * H * (NOPE + 2 * ROPE) * 2 + T * H * (KV_LORA + ROPE) * 2
        rows.append(_absorb_row(dict(op="absorb_q", T=T, H=H, rope=True, config=cfg), ug, ok, nbytes, env))
    return rows


def probe_absorb_o_fp8(T, dev, env, configs, fp8: bool = True):
    bf = torch.bfloat16
    w = [torch.randn(H, V_DIM, KV_LORA, device=dev, dtype=bf) * 0.05 for _ in range(ABSORB_LAYERS)]
    o_lat = torch.randn(T, H, KV_LORA, device=dev, dtype=bf)
    ref = torch.einsum("thc,hdc->thd", o_lat.float(), w[0].float()).reshape(T, -1)
    rows = []
    for cfg in configs:
        if fp8:
            # dequantized (q·s per 128 group) against the fp32 product: e4m3 keeps 3 mantissa bits (≤ 6.25% per
            # element), 3% over the whole tensor (the bit-equality with mla_absorb_o + quant is the tests' job)
            q8, s8 = mla_absorb_o_fp8(o_lat, w[0], config=cfg)
            got = (q8.float().view(T, -1, 128) * s8[:, :, None]).reshape(T, -1)
            fn = mla_absorb_o_fp8
        else:  # bf16 output of an fp32-accumulated product: 1e-2
            got = mla_absorb_o(o_lat, w[0], config=cfg).reshape(T, -1)
            fn = mla_absorb_o
        ok = not got.isnan().any() and _rel(got, ref) < (3e-2 if fp8 else 1e-2)
        ug = graph_replay_us([lambda wi=wi: fn(o_lat, wi, config=cfg) for wi in w], 15.0) if ok else None
        nbytes = H * V_DIM * KV_LORA * 2 + T * H * KV_LORA * 2 + T * H * V_DIM * (1 if fp8 else 2) + T * H * 4 * fp8
        rows.append(_absorb_row(dict(op="absorb_o_fp8" if fp8 else "absorb_o", T=T, H=H, config=cfg), ug, ok, nbytes,
                                env))
    return rows


def probe_router(T, dev, env, configs):
    bf = torch.bfloat16
    ws = [(torch.randn(E, HIDDEN, device=dev) * 0.02).to(bf) for _ in range(ROUTER_LAYERS)]
    bias = torch.randn(E, device=dev) * 0.05
    a = [torch.randn(T, HIDDEN, device=dev).to(bf) for _ in range(ROUTER_LAYERS)]
    res = torch.randn(T, HIDDEN, device=dev).to(bf)
    nw = torch.rand(HIDDEN, device=dev).to(bf) + 0.5
    kw = dict(GATE_KW, shared_expert_id=E)
    norms = [lambda i=i: fused_add_rms_norm(a[i], res, nw, 1e-6) for i in range(ROUTER_LAYERS)]
    base = graph_replay_us(norms, 15.0)
    rows = []
    ref = None
    for cfg in configs:
        x, _ = fused_add_rms_norm(a[0], res, nw, 1e-6)
        w, ids = router_gate_topk(x, ws[0], bias, config=cfg, **kw)
        wr, idr = router_gate_topk_ref(x.cpu(), ws[0].cpu(), bias.cpu(), **kw)
        same = (ids.cpu().sort(1).values == idr.sort(1).values).all()
        if ref is None:
            ref = (w, ids)
        ok = bool(same) and bool(torch.equal(ids, ref[1])) and bool(torch.allclose(w, ref[0], rtol=1e-6, atol=0))

        def pair(i, cfg=cfg):
            y, _ = fused_add_rms_norm(a[i], res, nw, 1e-6)
            return router_gate_topk(y, ws[i], bias, config=cfg, **kw)

        chain = [lambda i=i: pair(i) for i in range(ROUTER_LAYERS)]
        ug = graph_replay_us(chain, 15.0) if ok else None
        alone = graph_replay_us([lambda i=i: router_gate_topk(a[i], ws[i], bias, config=cfg, **kw)
                                 for i in range(ROUTER_LAYERS)], 15.0) if ok else None
        bd = kernel_breakdown(lambda: [f() for f in chain]) if ok else None
        rows.append(dict(suite="moe_gate", case=dict(T=T, E=E, H=HIDDEN, op="router_gate_topk", config=cfg),
                         us=None, us_graph=round(alone, 2) if alone else None, tflops=None,
                         gbps=round(E * HIDDEN * 2 / alone / 1e3, 1) if alone else None, peer=None, peer_us=None,
                         ratio_vs_peer=None, correct=ok, norm_router_pair_us=round(ug, 2) if ug else None,
                         norm_alone_us=round(base, 2), router_marginal_us=round(ug - base, 2) if ug else None,
                         breakdown_us={k: round(v / ROUTER_LAYERS, 2) for k, v in (bd or {}).items()},
                         floor_us=round(E * HIDDEN * 2 / 4.27e6, 2), **env))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def probe_norm(T, dev, env, warps_list):
    """The decode step's RMSNorm launches (7168 wide) at num_warps ∈ warps_list (norm._norm_config patched for the
    probe only); every variant's outputs equal the default's (the row sum's order may differ: y within 1 bf16 ulp)."""
    import tritonseek.kernels.norm as N

    bf = torch.bfloat16
    xs = [torch.randn(T, HIDDEN, device=dev, dtype=bf) for _ in range(ROUTER_LAYERS)]
    rs = [torch.randn(T, HIDDEN, device=dev, dtype=bf) * 4 for _ in range(ROUTER_LAYERS)]
    w = torch.rand(HIDDEN, device=dev, dtype=bf) + 0.5
    ops = {"fused_add_rms_norm": lambda i: N.fused_add_rms_norm(xs[i], rs[i], w, 1e-6),
           "fused_add_rms_norm_quant_fp8": lambda i: N.fused_add_rms_norm_quant_fp8(xs[i], rs[i], w, 1e-6),
           "rms_norm_quant_fp8": lambda i: N.rms_norm_quant_fp8(xs[i], w, 1e-6)}
    default = N._norm_config
    rows = []
    try:
        for op, fn in ops.items():
            base = [t.float() for t in fn(0) if t is not None]
            for warps in warps_list:
                N._norm_config = lambda n, warps=warps: (default(n)[0], warps)
                got = [t.float() for t in fn(0) if t is not None]
                # y within 1 bf16 ulp (2^-7); an e4m3 code may then move by one step (2^-3); h exact
                ok = all(torch.allclose(a, b, rtol=2.0**-3 if "quant" in op else 2.0**-7, atol=1e-6)
                         for a, b in zip(got, base)) and not any(a.isnan().any() for a in got)
                ug = graph_replay_us([lambda i=i: fn(i) for i in range(ROUTER_LAYERS)], 10.0) if ok else None
                nbytes = T * HIDDEN * 2 * (2 if "add" in op else 1) + T * HIDDEN * (4 if op == "fused_add_rms_norm" else 3)
                row = dict(suite="fused_small", case=dict(op=op, tokens=T, hidden=HIDDEN, config=dict(num_warps=warps)), us=None,
                           us_graph=round(ug, 2) if ug else None, tflops=None,
                           gbps=round(nbytes / ug / 1e3, 1) if ug else None, peer=None, peer_us=None,
                           ratio_vs_peer=None, correct=ok, **env)
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        N._norm_config = default
    return rows


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", default="1", type=positive_int_list)
    p.add_argument("--only", default="q,o,router", type=name_list(("router", "q", "o", "o16", "norm")))
    p.add_argument("--norm-warps", default="4,8,16,32", type=positive_int_list)
    p.add_argument("--out", default="probe_decode_small.jsonl", type=out_file, help="JSON rows appended one by one")
    # each config checked by the launcher's own rules before any GPU work (tester 2, s19: raw json.loads, tracebacks)
    p.add_argument("--q-configs", default=None, help="JSON list of absorb_q configs (keys: PDL)",
                   type=json_list(lambda c: MA._options(c, dict(PDL=False)), "mla_absorb_q configs"))
    p.add_argument("--o-configs", default=None, help="JSON list of absorb_o / absorb_o_fp8 configs (keys: "
                   + ", ".join(MA._O_DEFAULTS) + "; BLOCK_D is absorb_o's only, so not with --only o)",
                   type=json_list(lambda c: MA._options(c, MA._O_DEFAULTS), "mla_absorb_o configs"))
    args = p.parse_args()
    only = set(args.only)
    if "o" in only and any("BLOCK_D" in c for c in args.o_configs or ()):
        p.error("argument --o-configs: BLOCK_D is not a key of mla_absorb_o_fp8 (--only o); use --only o16")
    require_cuda("probe_decode_small")
    dev, env = torch.device("cuda"), _env()
    qc = args.q_configs or Q_CONFIGS
    oc = args.o_configs or O_CONFIGS
    rows = []
    for T in args.tokens:
        for part, fn, cfgs in (("router", probe_router, [dict()]),
                               ("q", probe_absorb_q, qc), ("o", probe_absorb_o_fp8, oc),
                               ("o16", lambda T, dev, env, c: probe_absorb_o_fp8(T, dev, env, c, fp8=False), oc),
                               ("norm", probe_norm, list(args.norm_warps))):
            if part in only:
                new = fn(T, dev, env, cfgs)
                rows += new
                with open(args.out, "a") as f:  # row by row: a run stopped by its time limit keeps what it measured
                    for r in new:
                        f.write(json.dumps(r) + "\n")
    print("\n%-14s %4s %-58s %9s %8s %s" % ("op", "T", "config", "us_graph", "GB/s", "extra"))
    for r in rows:
        c = r["case"]
        c = dict(c, T=c.get("T", c.get("tokens")))
        extra = "" if c.get("op") != "router_gate_topk" else \
            f"pair {r['norm_router_pair_us']} norm {r['norm_alone_us']} marginal {r['router_marginal_us']}"
        print("%-14s %4d %-58s %9s %8s %s %s" % (c["op"], c["T"], json.dumps(c["config"]), r["us_graph"], r["gbps"],
                                                 "" if r["correct"] else "WRONG", extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
