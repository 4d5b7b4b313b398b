"""Suite ``moe_layer`` of bench_moe.py (split out of it): one DeepSeek-V3 MoE layer, triton backend vs the
reference backend, plus a per-kernel breakdown of the CUDA-graph replay at decode sizes.

* ``us`` eager, ``us_graph`` CUDA-graph replay (T ≤ 64); TFLOP/s = 2·T·(k+1)·3·H·I / t (+ the router GEMM),
  GB/s = FP8 weights of the touched experts + shared expert + fp32 router weight / t.
* ``breakdown_us`` (T ≤ 64, GPU): device time of each kernel in one replay of the layer's graph, from
  torch.profiler over several replays (kernel name → µs per replay); ``gaps_us`` = replay time − Σ kernels
  (launch gaps and idle SMs between the graph's kernels).
* ``us_graph_prev_masked_cfg`` / ``breakdown_prev_masked_cfg_us`` (T ≤ 16): the same layer with the masked
  GEMMs forced to the previous decode config (64×128 tiles, 3 stages), so before/after shows in one run.
"""

from __future__ import annotations

import collections

import torch

from tritonseek.kernels import grouped_gemm as GG
from tritonseek.kernels.reference.moe import calc_diff


def _set_ops(module, ops):
    for m in module.modules():
        if hasattr(m, "ops"):
            m.ops = ops


def _v3_moe_layer(dev, dry):
    """One DeepSeek-V3 MoE layer (hidden 7168, 256 experts, k 8, moe_intermediate 2048, 1 shared expert;
    tiny widths with --dry) with random FP8 weights and random non-zero block scales."""
    from tritonseek.model.config import ModelConfig
    from tritonseek.model.moe import MoE
    from tritonseek.model.ops import Ops

    H, E, I, ng, tg = (256, 16, 128, 4, 2) if dry else (7168, 256, 2048, 8, 4)
    cfg = ModelConfig.from_dict(dict(
        model_type="deepseek_v3", vocab_size=1024, hidden_size=H, intermediate_size=4 * I, num_hidden_layers=4,
        num_attention_heads=8, kv_lora_rank=64, q_lora_rank=None, qk_nope_head_dim=32, qk_rope_head_dim=16,
        v_head_dim=32, max_position_embeddings=4096, n_routed_experts=E, n_shared_experts=1, num_experts_per_tok=8,
        moe_intermediate_size=I, n_group=ng, topk_group=tg, topk_method="noaux_tc", scoring_func="sigmoid",
        norm_topk_prob=True, routed_scaling_factor=2.5, first_k_dense_replace=0))
    with torch.device(dev):
        moe = MoE(cfg, fp8=True, dtype=torch.bfloat16, ops=Ops("triton"))
    gen = torch.Generator(device=dev).manual_seed(1)
    with torch.no_grad():
        for name, p in moe.named_parameters():
            if p.dtype == torch.float8_e4m3fn:
                flat = p.view(-1, p.shape[-2], p.shape[-1])
                for i in range(flat.shape[0]):  # one matrix at a time: no fp32 temporary of the whole stack
                    flat[i] = (torch.randn(flat.shape[1:], generator=gen, device=dev) * 0.5).to(torch.float8_e4m3fn)
            elif "scale_inv" in name:
                p.copy_(torch.rand(p.shape, generator=gen, device=dev) * 0.01 + 0.002)  # never zero
            elif "bias" in name:
                p.copy_(torch.randn(p.shape, generator=gen, device=dev) * 0.01)
            else:  # router gate weight
                p.copy_(torch.randn(p.shape, generator=gen, device=dev) * 0.02)
    return moe, cfg


def kernel_breakdown(fn, reps: int = 20) -> dict[str, float] | None:
    """Device µs per kernel name in one CUDA-graph replay of fn (torch.profiler over ``reps`` replays)."""
    try:
        from torch.profiler import ProfilerActivity, profile

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        g.replay()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                g.replay()
            torch.cuda.synchronize()
        per: dict[str, float] = collections.defaultdict(float)
        for e in prof.key_averages():
            t = getattr(e, "device_time_total", None)
            if t is None:
                t = getattr(e, "cuda_time_total", 0.0)
            if t and e.key and not e.key.startswith(("cudaGraph", "cuda", "ProfilerStep")):
                per[e.key[:70]] += t / reps
        del g
        return {k: round(v, 2) for k, v in sorted(per.items(), key=lambda kv: -kv[1])}
    except Exception as e:  # a profiler failure is reported, not fatal
        print(f"  kernel breakdown failed: {type(e).__name__}: {e}")
        return None


PREV_MASKED_DECODE = dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3, GROUP_M=8)


class _MaskedConfig:
    """Context: get_config returns ``cfg`` for masked calls with ≤ 16 rows per group."""

    def __init__(self, cfg: dict):
        self.cfg, self.orig = cfg, GG.get_config

    def _patched(self, layout, m_per_group, n, k):
        if layout == "masked" and m_per_group <= 16:
            return dict(self.cfg)
        return self.orig(layout, m_per_group, n, k)

    def __enter__(self):
        GG.get_config = self._patched

    def __exit__(self, *exc):
        GG.get_config = self.orig


def bench_layer(cx):
    from tritonseek.model.moe_triton import choose_layout
    from tritonseek.model.ops import Ops

    moe, cfg = _v3_moe_layer(cx.dev, cx.dry)
    H, I, k = cfg.hidden_size, cfg.moe_intermediate_size, cfg.num_experts_per_tok
    tri_ops, ref_ops = Ops("triton"), Ops("reference", fp8_activations=True)
    for T in ([1, 5, 40] if cx.dry else [int(t) for t in cx.args.layer_tokens.split(",")]):
        if cx.time_left() < 10:
            print("skip (budget) moe_layer T", T)
            continue
        x = torch.randn(T, H, device=cx.dev).to(torch.bfloat16)
        extra = {}
        with torch.no_grad():
            _set_ops(moe, tri_ops)
            y = moe(x)
            _, ids = moe.route(x)
            _set_ops(moe, ref_ops)
            y_ref = moe(x)
            _, ids_ref = moe.route(x)
            cx.sync()
            same_routing = bool(torch.equal(ids.sort(1).values, ids_ref.sort(1).values))
            d = calc_diff(y.float(), y_ref.float())
            ok = bool(torch.isfinite(y).all()) and d < 1e-3
            print(f"moe_layer T={T}: calc_diff vs reference layer {d:.2e}, same routing {same_routing}")
            pus = cx.eager_us(lambda: moe(x))  # reference layer: Python loop over experts (host syncs)
            _set_ops(moe, tri_ops)
            us = cx.eager_us(lambda: moe(x))
            ug = cx.graph_us(lambda: moe(x)) if T <= 64 else None
            if T <= 64 and not cx.dry:
                extra["breakdown_us"] = kernel_breakdown(lambda: moe(x))
                if extra["breakdown_us"]:
                    extra["gaps_us"] = round(ug - sum(extra["breakdown_us"].values()), 2) if ug else None
                    for name, t in extra["breakdown_us"].items():
                        print(f"    {t:9.2f} us  {name}")
                if T <= 16:
                    with _MaskedConfig(PREV_MASKED_DECODE):
                        y2 = moe(x)
                        d2 = calc_diff(y2.float(), y_ref.float())
                        extra.update(prev_masked_cfg=PREV_MASKED_DECODE, prev_masked_cfg_calc_diff=d2,
                                     us_graph_prev_masked_cfg=round(cx.graph_us(lambda: moe(x)), 2),
                                     breakdown_prev_masked_cfg_us=kernel_breakdown(lambda: moe(x)))
                        print(f"  with the previous masked decode config: calc_diff {d2:.2e}, "
                              f"graph {extra['us_graph_prev_masked_cfg']} us")
        active = int(ids.unique().numel())
        w_bytes = (active + 1) * 3 * H * I + cfg.n_routed_experts * H * 4  # fp8 experts + shared + fp32 router
        flops = 2 * T * (k + 1) * 3 * H * I + 2 * T * H * cfg.n_routed_experts
        r = cx.row("moe_layer", dict(T=T, H=H, E=cfg.n_routed_experts, k=k, I=I, shared=1), us, ug,
                   tflops=lambda t: flops / t / 1e6, gbps=lambda t: w_bytes / t / 1e3,
                   peer="reference layer (Ops('reference', fp8_activations=True), expert loop)", peer_us=pus,
                   correct=ok, calc_diff=d, layout=choose_layout(T), active_experts=active, **extra)
        r["meets_target"] = bool(ok and (r["ratio_vs_peer"] or 0) > 1)
    del moe
    if not cx.dry:
        torch.cuda.empty_cache()
