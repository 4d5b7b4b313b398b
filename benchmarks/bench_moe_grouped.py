"""The ``grouped_gemm_contiguous`` suite of bench_moe.py (issue 5) and the grouped-GEMM helpers both of its grouped
suites share (weights, the check-then-time sweep, GPU-clock anchor timing). Run through bench_moe.py:

    PYTHONPATH=. python benchmarks/bench_moe.py --suites grouped_gemm_contiguous [--budget-s 80] [--gpu-rounds 40]

* Kernels: the primary row times the contiguous GEMM the model runs on this device
  (``model.moe_triton._contiguous_gemm``: the Gluon warp-specialized kernel ``grouped_gemm_ws`` where
  ``fp8_gemm_ws.gluon_ws_supported`` holds, the plain-Triton ``grouped_gemm`` launcher elsewhere);
  ``kernel`` = "ws" / "tl" names the kernel that ran, ``launcher_kernel`` = "model" (called through the model's
  choice) or the kernel asked for explicitly. Where the Gluon kernel runs, the other kernel is timed too, as a
  second row. (Before s20 the suite timed only the tl launcher: its rows carry no ``kernel`` field.)
  ``winner_key`` (tl rows, from s23; None on ws rows): the case's label in ``--winners``, with the expert count.
* Each kernel is checked at the timed shape first: out NaN-poisoned, sampled rows of every group against
  ``grouped_fp8_gemm_contiguous_ref`` (calc_diff < 1e-3), every valid row finite, every padding row (m_indices
  = −1, routed layout) exactly 0 as both kernels promise. A kernel that fails is not timed.
* ``us`` = eager median, ``us_graph`` = median CUDA-graph replay (host launch latency included);
  ``tflops_gpu`` = one-call graphs of both kernels and the ``torch._grouped_mm`` bf16 peer replayed
  ``--gpu-rounds`` times interleaved, timed on the GPU clock (``gpu_ratio_vs``: < 1 = faster than the other).
  TFLOP/s = 2·(valid rows)·N·K / t. The peer runs only on the DeepGEMM shapes (not on the routed layout).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # a module of another script, not a benchmark of its own
    print("bench_moe_grouped.py holds bench_moe.py's grouped_gemm_contiguous suite: run"
          "  PYTHONPATH=. python benchmarks/bench_moe.py --suites grouped_gemm_contiguous [--dry]")
    sys.exit(0 if {"-h", "--help"} & set(sys.argv[1:]) else 2)

import torch  # noqa: E402
import triton  # noqa: E402

from benchmarks.bench_grouped_ws import _interleaved_gpu_us, _median  # noqa: E402
from benchmarks.bench_moe_layer import graph_device_us  # noqa: E402
from tritonseek.kernels import grouped_gemm as GG  # noqa: E402
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_contiguous_ref  # noqa: E402

NK = [(4096, 7168), (7168, 2048)]
# issue 5 targets (TFLOP/s)
CONTIG_TARGET = {(4096, 7168): 1230, (7168, 2048): 1000}

# GRID_MULT: persistent programs per SM (contiguous only; the masked grid is one program per tile, so
# its occupancy follows from shared memory). Several small CTAs per SM overlap one CTA's fp32 promotion
# with another's tensor-core work (the dense fp8_gemm's winners use 64×128 tiles, 4 warps, 3 per SM).
CANDIDATES_LARGE = [
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=4, GROUP_M=8),
    dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3, GROUP_M=8, GRID_MULT=3),
    dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=4, GROUP_M=8, GRID_MULT=2),
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3, GROUP_M=8, GRID_MULT=2),
    dict(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=4, GROUP_M=8, GRID_MULT=3),
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=4, GROUP_M=8, WS=True),  # contiguous only
]
CANDIDATES_SMALL = [
    dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3, GROUP_M=8),  # the committed decode config
    dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=4, GROUP_M=8),
    dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=4, GROUP_M=8),
    dict(BLOCK_M=64, BLOCK_N=256, num_warps=8, num_stages=3, GROUP_M=8),
]


def _rand_fp8(shape, dev):
    """Random e4m3 bytes (no NaN patterns): wide dynamic range, never zeros."""
    b = torch.randint(0, 256, shape, dtype=torch.uint8, device=dev)
    b[(b & 0x7F) == 0x7F] = 0x38  # NaN patterns → 1.0
    return b.view(torch.float8_e4m3fn)


def _weights(E, N, K, dev):
    b = (torch.randn(E, N, K, device=dev) * 0.5).to(torch.float8_e4m3fn) if E * N * K <= 2**28 else _rand_fp8((E, N, K), dev)
    bs = torch.rand(E, triton.cdiv(N, 128), triton.cdiv(K, 128), device=dev) * 1e-2 + 1e-3
    return b, bs

def _sweep(cx, cands, run, check, key, device_time: bool = False):
    """Check every candidate, time the correct ones; return (best cfg, eager us, graph us, all timings).
    device_time: rank by the device-side graph time (graph_device_us: no host submission latency) and append it
    to each timing (cfg, us, ug, ud)."""
    best = None
    timings = []
    for cfg in cands:
        if cx.time_left() < 4 + cx.args.reserve_s:
            print("  (time budget: stop sweeping)")
            break
        try:
            good, diff = check(cfg)
        except Exception as e:
            print(f"  cfg {cfg}: failed: {type(e).__name__}: {str(e)[:200]}")
            continue
        if not good:
            print(f"  cfg {cfg}: WRONG (calc_diff {diff:.2e}), not timed")
            continue
        us = cx.eager_us(lambda: run(cfg))
        # short kernels are launch-bound when timed eagerly: rank those by CUDA-graph replay time
        ug = cx.graph_us(lambda: run(cfg)) if us < 400 else None
        ud = graph_device_us(lambda: run(cfg)) if device_time and not cx.dry else None
        rank = ud if ud is not None else (ug if ug is not None else us)
        timings.append((cfg, us, ug, ud) if device_time else (cfg, us, ug))
        print(f"  cfg {cfg}: calc_diff {diff:.2e}, {us:.1f} us eager, graph {ug}, device-side graph {ud}")
        if best is None or rank < best[3]:
            best = (cfg, us, ug, rank)
    if best is None:
        return None
    ug = best[2] if best[2] is not None else cx.graph_us(lambda: run(best[0]))
    if key is not None:  # (the ws kernel's timing names no tl winner)
        cx.winners[key] = best[0]
    return best[0], best[1], ug, timings


def _anchor_gpu_clock(cx, fns: dict, peer_fn, flops: int) -> dict:
    """Anchor cases: one-call graphs of each kernel (fns: kernel → fn, its timed config) and of the peer replayed
    ``--gpu-rounds`` times interleaved, timed on the GPU clock (bench_grouped_ws._interleaved_gpu_us: the host's
    launch latency, inside ``us_graph``, is left out; the 700 W cap's clock swings fall on every kernel alike).
    -> kernel → row fields: us_graph_gpu, tflops_gpu, peer_us_graph_gpu, ratio_vs_peer_gpu, and gpu_ratio_vs
    (this kernel's median per-round time ratio to each other kernel: < 1 = faster)."""
    if not cx.args.gpu_rounds:
        return {}
    timed = dict(fns, **({"peer": peer_fn} if peer_fn is not None else {}))
    try:
        res = _interleaved_gpu_us(timed, cx.args.gpu_rounds)
    except Exception as e:  # a capture failure is a finding, not a crash
        print(f"  GPU-clock timing failed: {type(e).__name__}: {e}")
        return {}
    peer = _median(res["peer"]) if "peer" in res else None
    fields = {}
    for k in fns:
        t = _median(res[k])
        fields[k] = dict(us_graph_gpu=round(t, 2), tflops_gpu=round(flops / t / 1e6, 1),
                         peer_us_graph_gpu=round(peer, 2) if peer else None,
                         ratio_vs_peer_gpu=round(peer / t, 3) if peer else None, gpu_rounds=cx.args.gpu_rounds,
                         gpu_ratio_vs={o: round(_median([x / y for x, y in zip(res[k], res[o])]), 4)
                                       for o in fns if o != k})
        print(f"  GPU clock {k}: {t:.2f} us = {flops / t / 1e6:.0f} TFLOP/s, ratios {fields[k]['gpu_ratio_vs']}"
              + (f", peer {peer:.2f} us" if peer else ""))
    return fields

# The model's prefill layout: T tokens routed top-8 over 256 experts, each segment padded to 128 rows
# (~1.5× padding rows at T=4096); BLOCK_M=64 tiles skip the all-padding half tiles, 128-row tiles do not.
ROUTED_CANDIDATES = [None, dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=4, GROUP_M=8, GRID_MULT=2)]


def _routed_layout(T, G, align, dev, gen):
    picks = torch.stack([torch.randperm(G, generator=gen)[:8] for _ in range(T)])
    counts = torch.bincount(picks.flatten(), minlength=G)
    parts = []
    for g in range(G):
        c = int(counts[g])
        parts += [torch.full((c,), g), torch.full(((-c) % align,), -1)]
    return torch.cat(parts).to(torch.int32).to(dev)


def _contiguous_kernels(dev: torch.device) -> tuple[str, dict]:
    """-> (the kernel the model runs on dev, kernel → launcher), the other kernel included only on a GPU where the
    Gluon kernel runs (never in --dry). The model's choice comes from model.moe_triton._contiguous_gemm itself."""
    from tritonseek.model.moe_triton import _contiguous_gemm

    model_fn = _contiguous_gemm(dev)
    launchers = {"tl": GG.grouped_fp8_gemm_contiguous}
    if dev.type == "cuda":
        from tritonseek.kernels.fp8_gemm_ws import gluon_ws_supported

        if gluon_ws_supported(dev):
            from tritonseek.kernels.grouped_gemm_ws import grouped_fp8_gemm_contiguous_ws

            launchers["ws"] = grouped_fp8_gemm_contiguous_ws
    model_k = next((k for k, f in launchers.items() if f is model_fn), None)
    if model_k is None:
        raise RuntimeError(f"model.moe_triton._contiguous_gemm({dev}) returned {model_fn!r}, which is neither "
                           "grouped_gemm's nor grouped_gemm_ws's contiguous launcher: extend this suite")
    return model_k, launchers


def contiguous_key(groups: int, m_per_group: int, n: int, k: int) -> str:
    """The contiguous sweep's label in --winners (and a tl row's ``winner_key``): layout, N, K, M class, then the
    expert count — 4×8192 and 8×4096 share N, K and the "large" class, so without it the second case's winner
    replaced the first's (s22). The first four parts are grouped_gemm._TUNED's key."""
    return f"contiguous,{n},{k},{GG._m_class(m_per_group)},G{groups}"


def bench_contiguous(cx):
    """The contiguous suite (module docstring): DeepGEMM's shapes and V3's routed 4k-token prefill layout; rows
    per kernel (the model's first), checked against the reference, then timed eagerly, as graphs and on the GPU clock."""
    shapes = [(2, 64), (8, "routed")] if cx.dry else [(4, 8192), (8, 4096), (256, "routed")]
    nks = [(256, 384)] if cx.dry else NK
    gen = torch.Generator().manual_seed(5)
    model_k, launchers = _contiguous_kernels(cx.dev)
    kernels = [model_k] + [k for k in launchers if k != model_k]
    for G, shape_m in shapes:
        for N, K in nks:
            m = shape_m  # the routed case sets m to its mean rows per group below
            if cx.time_left() < 8:
                print("skip (budget)", G, m, N, K)
                continue
            routed = m == "routed"
            if routed:
                T_routed = 16 if cx.dry else 4096
                mi = _routed_layout(T_routed, G, GG.M_ALIGNMENT, cx.dev, gen)
                M = mi.numel()
                valid_rows = T_routed * 8
                rows = torch.arange(0, min(512, M), device=cx.dev)  # the first experts' segments (padding included)
                m = M // G
            else:
                M = G * m
                valid_rows = M
                mi = torch.arange(G, device=cx.dev, dtype=torch.int32).repeat_interleave(m)
                # reference on a slice of rows of every group (the full fp32 product would cost more than the timing)
                rows = torch.cat([torch.arange(g * m, g * m + min(m, 256), device=cx.dev) for g in range(G)])
            a = (torch.randn(M, K, device=cx.dev)).to(torch.float8_e4m3fn)
            a_s = (torch.rand(K // 128, M, device=cx.dev) * 1e-2 + 1e-3).t()
            b, bs = _weights(G, N, K, cx.dev)
            ref = grouped_fp8_gemm_contiguous_ref(a[rows], a_s[rows], b, bs, mi[rows], out_dtype=torch.float32)
            out = torch.empty(M, N, device=cx.dev, dtype=torch.bfloat16)
            pad = mi < 0

            def run(cfg, kern):
                return launchers[kern](a, a_s, b, bs, mi, out=out, config=cfg)

            def check(cfg, kern):
                out.fill_(float("nan"))
                run(cfg, kern)
                cx.sync()
                d = calc_diff(out[rows].float(), ref)
                # padding rows: 0 (both kernels store 0 there); every other row written and finite
                good = bool(torch.isfinite(out[~pad]).all()) and bool((out[pad] == 0).all())
                return good and d < 1e-3, d

            cands = CANDIDATES_SMALL[:1] if cx.dry else (CANDIDATES_LARGE if cx.args.sweep else [None])
            if routed:
                cands = ROUTED_CANDIDATES
            print(f"contiguous {G}x{m} N={N} K={K}" + (f" (routed T={T_routed}, M_pad {M})" if routed else "")
                  + f": kernels {kernels} (the model's: {model_k})")
            results = {}
            for kern in kernels:  # the ws kernel: its own default config only (the tl candidates' keys are not its)
                res = _sweep(cx, [None] if kern == "ws" else cands, lambda c, k=kern: run(c, k),
                             lambda c, k=kern: check(c, k), contiguous_key(G, m, N, K) if kern == "tl" else None)
                if res is not None:
                    results[kern] = res
            if not results:
                continue
            flops = 2 * valid_rows * N * K
            peer_us = peer_ug = gpu = None
            peer_fn = None
            if not cx.dry:
                if not routed:
                    a16 = a.to(torch.bfloat16)
                    b16 = b.to(torch.bfloat16).transpose(1, 2)
                    offs = (torch.arange(1, G + 1, device=cx.dev, dtype=torch.int32) * m)
                    try:
                        peer_us = cx.eager_us(lambda: torch._grouped_mm(a16, b16, offs=offs))
                        peer_ug = cx.graph_us(lambda: torch._grouped_mm(a16, b16, offs=offs))
                        peer_fn = lambda: torch._grouped_mm(a16, b16, offs=offs)  # noqa: E731
                    except Exception as e:
                        print("  peer failed:", e)
                gpu = _anchor_gpu_clock(cx, {k: (lambda k=k, c=r[0]: run(c, k)) for k, r in results.items()},
                                        peer_fn, flops)
                peer_fn = a16 = b16 = None
            case = dict(groups=G, m_per_group=m, N=N, K=K)
            if routed:
                case = dict(groups=G, m_per_group=round(valid_rows / G, 1), N=N, K=K, T=T_routed, M_pad=M)
            for kern, (cfg, us, ug, timings) in results.items():
                if kern == "ws":
                    from tritonseek.kernels.grouped_gemm_ws import _num_sms, grouped_ws_config

                    # the launcher's own call (experts = G): DENSE_FORM depends on the rows per expert
                    cfg_used = dict(grouped_ws_config("contiguous", M, N, K, num_sms=_num_sms(cx.dev.index or 0),
                                                      experts=G))
                else:
                    cfg_used = cfg or GG.get_config("contiguous", m, N, K)
                r = cx.row("grouped_gemm_contiguous", case, us, ug,
                           tflops=lambda t: flops / t / 1e6, gbps=lambda t: (M * K + G * N * K + 2 * M * N) / t / 1e3,
                           peer=None if routed else "torch._grouped_mm bf16",
                           peer_us=(peer_ug if (peer_ug and ug) else peer_us), kernel=kern,
                           launcher_kernel="model" if kern == model_k else kern, launcher=launchers[kern].__name__,
                           config=cfg_used, winner_key=contiguous_key(G, m, N, K) if kern == "tl" else None,
                           candidates_us=[[c or "default", round(u, 1)] for c, u, _ in timings] if routed else None,
                           target_tflops=None if routed else CONTIG_TARGET.get((N, K)), correct=True,
                           **(gpu or {}).get(kern, {}))
                if not routed:
                    r["meets_target"] = bool(r["tflops"] and r["tflops"] >= CONTIG_TARGET.get((N, K), 0)
                                             and (r["ratio_vs_peer"] or 0) >= 1.8)
                    if r.get("tflops_gpu"):  # the same test on the GPU-clock figures (launch latency left out)
                        r["meets_target_gpu"] = bool(r["tflops_gpu"] >= CONTIG_TARGET.get((N, K), 0)
                                                     and (r.get("ratio_vs_peer_gpu") or 0) >= 1.8)
            del a, b, out
            torch.cuda.empty_cache() if not cx.dry else None
