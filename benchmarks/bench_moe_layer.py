"""Suite ``moe_layer`` of bench_moe.py (split out of it): one DeepSeek-V3 MoE layer, triton backend vs the
reference backend, plus a per-kernel breakdown of the CUDA-graph replay at decode sizes.

* ``us`` eager, ``us_graph`` CUDA-graph replay (T ≤ 128); TFLOP/s = 2·T·(k+1)·3·H·I / t (+ the router GEMM),
  GB/s = FP8 weights of the touched experts + shared expert + router weight (bf16 when fused, fp32 otherwise)
  / t; ``floor_us`` = those bytes / 4.27 TB/s.
* ``variant`` (VARIANTS): the decode fusions timed against each other in the same run, each checked against
  the reference layer first (calc_diff < 1e-3 and the same expert sets).
* ``breakdown_us`` (T ≤ --layer-breakdown-max-t, GPU): device time of each kernel in one replay of the layer's
  graph, from torch.profiler over several replays (kernel name → µs per replay); ``gaps_us`` = replay time −
  Σ kernels (launch gaps and idle SMs between the graph's kernels).
* ``us_graph_device`` (GPU): the same graph replay timed device side only (graph_device_us: the host's submission
  latency excluded, as in a decode step whose single graph holds every layer).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # a module of another script, not a benchmark of its own
    print("bench_moe_layer.py holds bench_moe.py's moe_layer suite: run"
          "  PYTHONPATH=. python benchmarks/bench_moe.py --suites moe_layer [--dry]")
    sys.exit(0 if {"-h", "--help"} & set(sys.argv[1:]) else 2)

import collections
import statistics
import time

import torch

from benchmarks.bench_mtp import capture
from tritonseek.kernels.reference.moe import calc_diff


def _set_ops(module, ops):
    for m in module.modules():
        if hasattr(m, "ops"):
            m.ops = ops


def _v3_moe_layer(dev, dry):
    """One DeepSeek-V3 MoE layer (hidden 7168, 256 experts, k 8, moe_intermediate 2048, 1 shared expert;
    tiny widths with --dry) with random FP8 weights and random non-zero block scales."""
    from tritonseek.model.ops import Ops

    H, E, I, ng, tg = (256, 16, 128, 4, 2) if dry else (7168, 256, 2048, 8, 4)
    return random_moe_layer(dev, H, E, I, ng, tg, Ops("triton"), seed=1, router_std=0.02)


def random_moe_layer(dev, H, E, I, n_group, topk_group, ops, *, seed=1, router_std=0.02):
    """A DeepSeek-V3-style MoE module (sigmoid, noaux_tc, k 8, 1 shared expert) on ``dev`` with random FP8
    weights (drawn one matrix at a time: no fp32 temporary of the whole stack), random non-zero block scales,
    a small random fp32 selection bias and a bf16-valued router weight (a DeepSeek checkpoint stores it
    bf16; the module holds it in fp32). Returns (moe, cfg). Shared with tests/model/test_moe_triton.py."""
    from tritonseek.model.config import ModelConfig
    from tritonseek.model.moe import MoE

    cfg = ModelConfig.from_dict(dict(
        model_type="deepseek_v3", vocab_size=1024, hidden_size=H, intermediate_size=4 * I, num_hidden_layers=4,
        num_attention_heads=8, kv_lora_rank=64, q_lora_rank=None, qk_nope_head_dim=32, qk_rope_head_dim=16,
        v_head_dim=32, max_position_embeddings=4096, n_routed_experts=E, n_shared_experts=1, num_experts_per_tok=8,
        moe_intermediate_size=I, n_group=n_group, topk_group=topk_group, topk_method="noaux_tc",
        scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5, first_k_dense_replace=0))
    with torch.device(dev):
        moe = MoE(cfg, fp8=True, dtype=torch.bfloat16, ops=ops)
    gen = torch.Generator(device=dev).manual_seed(seed)
    with torch.no_grad():
        for name, p in moe.named_parameters():
            if p.dtype == torch.float8_e4m3fn:
                flat = p.view(-1, p.shape[-2], p.shape[-1])
                for i in range(flat.shape[0]):
                    flat[i] = (torch.randn(flat.shape[1:], generator=gen, device=dev) * 0.5).to(torch.float8_e4m3fn)
            elif "scale_inv" in name:
                p.copy_(torch.rand(p.shape, generator=gen, device=dev) * 0.01 + 0.002)  # never zero
            elif "bias" in name:
                p.copy_(torch.randn(p.shape, generator=gen, device=dev) * 0.01)
            else:  # router gate weight
                p.copy_((torch.randn(p.shape, generator=gen, device=dev) * router_std).to(torch.bfloat16).float())
    return moe.eval(), cfg  # inference mode, as load_model returns it (training keeps the unfused decode path)


def capture_graph(fn) -> torch.cuda.CUDAGraph:
    """bench_mtp.capture (fn warmed up on a side stream, then captured), replayed once; raises if it failed."""
    g = capture(fn)
    if g is None:
        raise RuntimeError("CUDA graph capture failed")
    g.replay()
    torch.cuda.synchronize()
    return g


def graph_device_us(fn, reps: int = 25, busy_cycles: int = 200_000) -> float | None:
    """Median µs of one replay of fn's CUDA graph, device side only: before each timed replay a sleep kernel
    (~100 µs) keeps the GPU busy while the host queues the start event, the replay and the end event, so the
    events bracket the graph's device-side launch and kernels but not the host's submission latency (which
    benchmarks/timing.graph_replay_us includes: there the GPU idles until the replay arrives). A decode step
    submits one graph for all its kernels, so that host latency is paid once per step, not per kernel."""
    try:
        g = capture_graph(fn)
        st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(reps):
            torch.cuda._sleep(busy_cycles)
            st.record()
            g.replay()
            en.record()
            en.synchronize()
            times.append(st.elapsed_time(en) * 1000.0)
        del g
        return statistics.median(times)
    except Exception as e:  # a capture failure is reported, not fatal
        print(f"  device-side graph timing failed: {type(e).__name__}: {e}")
        return None


def kernel_breakdown(fn, reps: int = 20) -> dict[str, float] | None:
    """Device µs per kernel name in one CUDA-graph replay of fn (torch.profiler over ``reps`` replays)."""
    try:
        from torch.profiler import ProfilerActivity, profile

        g = capture_graph(fn)
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


# Decode fusions of the MoE module timed against each other in one run (MoE.fused_router_max_t,
# MoE.shared_group_max_t, MoE.decode_pdl, MoE.decode_configs): "unfused" = fp32 router GEMV + gate_topk + the
# shared expert as its own MLP, plain launches; "router" = router GEMV + top-k in one kernel over the bf16 gate
# weight; "router+shared" = that, plus the shared expert as group E of the masked GEMMs (its weight 1 in a (k+1)-th
# slot). Suffixes: "/pdl0" plain launches, "/pdl1" the permute → GEMM1 → down → unpermute chain as programmatic
# dependent launches without L2 prefetch; "/pfN" GEMM1 prefetching N K blocks of the shared expert (default 16);
# "/dpfN" the down GEMM prefetching N K blocks of its own groups; "/stN", "/dstN" GEMM1's / the down GEMM's pipeline
# stages; no suffix = the module's defaults (its per-shape table moe_triton.DECODE_CONFIGS included). In --layer-variants a prefix "T1+T2:" times a variant only at those token counts.
_BASE_VARIANTS = {"unfused": (0, 0), "router": (16, 0), "router+shared": (16, 16)}


def _variant(name):
    """name → (fused_router_max_t, shared_group_max_t, decode_pdl, decode_configs)."""
    base, *opts = name.split("/")
    fr, sg = _BASE_VARIANTS[base]
    pdl, c1, c2 = (0 if base == "unfused" else 2), {}, {}
    for o in opts:
        if o.startswith("pdl"):
            pdl = int(o[3:])
        elif o.startswith("dpf"):
            c2["PREFETCH"] = int(o[3:])
        elif o.startswith("pf"):
            c1["PREFETCH"] = int(o[2:])
        elif o.startswith("dst"):
            c2["num_stages"] = int(o[3:])
        elif o.startswith("st"):
            c1["num_stages"] = int(o[2:])
        else:
            raise ValueError(f"unknown moe_layer variant option {o!r} in {name!r}")
    return fr, sg, pdl, ((c1 or None, c2 or None) if c1 or c2 else None)  # None: the module's per-shape table


VARIANTS = {n: _variant(n) for n in ("unfused", "router", "router+shared", "router+shared/pdl0", "router+shared/pdl1")}


def _set_variant(moe, name):
    moe.fused_router_max_t, moe.shared_group_max_t, moe.decode_pdl, moe.decode_configs = _variant(name)


def bench_layer(cx):
    from tritonseek.model.moe_triton import choose_layout
    from tritonseek.model.ops import Ops

    moe, cfg = _v3_moe_layer(cx.dev, cx.dry)
    H, I, k = cfg.hidden_size, cfg.moe_intermediate_size, cfg.num_experts_per_tok
    tri_ops, ref_ops = Ops("triton"), Ops("reference", fp8_activations=True)
    all_variants = [v for v in cx.args.layer_variants.split(",") if v] if not cx.dry else ["unfused"]
    default = (moe.fused_router_max_t, moe.shared_group_max_t, moe.decode_pdl, moe.decode_configs)
    mlp_calls = []
    moe.shared_experts.register_forward_hook(lambda *a: mlp_calls.append(1))
    for T in ([1, 5, 40] if cx.dry else [int(t) for t in cx.args.layer_tokens.split(",")]):
        if cx.time_left() < 3:
            print("skip (budget) moe_layer T", T)
            continue
        variants = [v.split(":")[-1] for v in all_variants if ":" not in v or str(T) in v.split(":")[0].split("+")]
        x = torch.randn(T, H, device=cx.dev).to(torch.bfloat16)
        with torch.no_grad():
            _set_ops(moe, ref_ops)
            y_ref = moe(x)
            _, ids_ref = moe.route(x)
            pus = cx.eager_us(lambda: moe(x)) if cx.args.layer_peer else None  # reference layer (host syncs)
            _set_ops(moe, tri_ops)
            if not cx.dry:  # ~0.1 s of untimed calls first: the first case timed after a pause ran slower before
                _set_variant(moe, variants[0])
                t_warm = time.time() + 0.1
                while time.time() < t_warm:
                    moe(x)
                cx.sync()
            for var in variants:
                if cx.time_left() < 1.5:
                    print("skip (budget) moe_layer", T, var)
                    continue
                _set_variant(moe, var)
                extra = {}
                mlp_calls.clear()
                y = moe(x)
                extra["shared_as_group"] = not mlp_calls  # the shared MLP did not run on its own
                _, ids = moe.route(x)
                cx.sync()
                same_routing = bool(torch.equal(ids.sort(1).values, ids_ref.sort(1).values))
                d = calc_diff(y.float(), y_ref.float())
                ok = bool(torch.isfinite(y).all()) and d < 1e-3
                print(f"moe_layer T={T} {var}: calc_diff vs reference layer {d:.2e}, same routing {same_routing}")
                us = cx.eager_us(lambda: moe(x))
                ug = cx.graph_us(lambda: moe(x)) if T <= 128 else None
                if ug and not cx.dry:
                    ud = graph_device_us(lambda: moe(x))
                    extra["us_graph_device"] = round(ud, 2) if ud else None
                bd_vars = [v for v in getattr(cx.args, "layer_breakdown_variants", "").split(",") if v]
                if T <= cx.args.layer_breakdown_max_t and not cx.dry and (not bd_vars or var in bd_vars):
                    extra["breakdown_us"] = kernel_breakdown(lambda: moe(x))
                    if extra["breakdown_us"]:
                        extra["gaps_us"] = round(ug - sum(extra["breakdown_us"].values()), 2) if ug else None
                        for name, t in extra["breakdown_us"].items():
                            print(f"    {t:9.2f} us  {name}")
                active = int(ids_ref.unique().numel())
                router_bytes = cfg.n_routed_experts * H * (2 if var != "unfused" else 4)
                w_bytes = (active + 1) * 3 * H * I + router_bytes  # fp8 experts + shared + router weight
                flops = 2 * T * (k + 1) * 3 * H * I + 2 * T * H * cfg.n_routed_experts
                r = cx.row("moe_layer", dict(T=T, H=H, E=cfg.n_routed_experts, k=k, I=I, shared=1), us, ug,
                           tflops=lambda t: flops / t / 1e6, gbps=lambda t: w_bytes / t / 1e3,
                           peer="reference layer (Ops('reference', fp8_activations=True), expert loop)" if pus else None,
                           peer_us=pus, correct=ok, calc_diff=d, same_routing=same_routing, layout=choose_layout(T),
                           active_experts=active, variant=var, floor_us=round(w_bytes / 4.27e6, 2), **extra)
                r["meets_target"] = bool(ok and same_routing)
    moe.fused_router_max_t, moe.shared_group_max_t, moe.decode_pdl, moe.decode_configs = default
    del moe
    if not cx.dry:
        torch.cuda.empty_cache()
