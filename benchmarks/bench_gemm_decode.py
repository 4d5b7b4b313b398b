"""Suite ``fp8_gemm_decode``: the decode-path (M = 1..8) block-scaled FP8 GEMMs as weight streams.

    PYTHONPATH=. python benchmarks/bench_gemm_decode.py [--sweep] [--ms 1,2,4,8] [--models v3,v2lite]
        [--out rows.jsonl] [--sweep-out sweep.jsonl] [--winners winners.json] [--precompile I/N]

At decode the GEMM out = a @ bᵀ has M = batch tokens and the time is the weight stream: the figure
is GB/s = (N·K + M·K + 2·M·N + scale bytes) / us_graph against the H200's 4.27 TB/s copy figure.
* Shapes: DeepSeek-V3 (hidden 7168) q_a‖kv_a 2112×7168 (and unfused 1536×7168, 576×7168), q_b
  24576×1536, o_proj 7168×16384, dense gate‖up 36864×7168 (and 18432×7168), down 7168×18432,
  shared expert gate‖up 4096×7168 (and 2048×7168), down 7168×2048; ``--models v2lite`` adds
  DeepSeek-V2-Lite (hidden 2048): q_proj 3072×2048, kv_a 576×2048, o_proj 2048×2048, dense
  gate‖up 21888×2048, down 2048×10944, shared gate‖up 5632×2048, down 2048×2816.
* L2 never warm: every case rotates input sets (fresh torch.randn weights, quantized by the
  reference; fresh activations) whose total bytes are ≥ 4× the H200's 50 MB L2 (≥ 240 MB), in
  one CUDA graph holding one launch per set (benchmarks/timing.py); ``us_graph`` is the median
  replay time over the number of launches. ``us`` = eager (triton.testing.do_bench) median.
* Each row also carries, in the same run and on the same rotated bytes:
  - ``floor_us``: a plain Triton streaming read of the same weight bytes (what any kernel reading
    them costs on this GPU; ``vs_floor`` = floor_us / us_graph);
  - ``peer``: cuBLAS block-scaled FP8 (``torch.nn.functional.scaled_mm``, BlockWise1x128 ×
    BlockWise128x128; N zero-padded to a multiple of 128 where it rejects N, noted in the row);
  - ``peer2``: torch bf16 GEMV/GEMM (F.linear on bf16 weights: twice the bytes; its own GB/s);
  - ``prev_us``: the config committed before this suite (fp8_gemm_small at 4b6f62a), same run;
  - ``pair_us``/``prev_pair_us``: per-token quant + GEMM (the model's sequence, fp8_linear) per
    graph step with the chosen and the previous config (PDL overlap with the quant is seen here).
* ``--sweep``: candidates (tiles × pipeline depth × K splits, then PDL / L2-prefetch variants of
  the best three) are checked for correctness first (NaN-poisoned out, calc_diff < 1e-3 against
  the fp32 reference), then timed; winners go to ``--winners`` (copy into ``_TUNED_SMALL``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import signal
import sys
import time

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.timing import graph_replay_us  # noqa: E402

from tritonseek.benchrun import (git_commit, int_tuple_list, name_list, out_file, positive_float,  # noqa: E402
                                 positive_int, positive_int_list, require_cuda)
from tritonseek.kernels import fp8_gemm as G  # noqa: E402
from tritonseek.kernels import fp8_gemm_small as SMALL  # noqa: E402
from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8  # noqa: E402
from tritonseek.kernels.reference.fp8 import (  # noqa: E402
    fp8_gemm_nt_ref,
    per_block_quant_fp8_ref,
    per_token_group_quant_fp8_ref,
)

COPY_TBPS = 4.27
V3 = [(2112, 7168), (24576, 1536), (7168, 16384), (36864, 7168), (7168, 18432), (4096, 7168), (7168, 2048),
      (1536, 7168), (576, 7168), (18432, 7168), (2048, 7168)]
V2LITE = [(3072, 2048), (576, 2048), (2048, 2048), (21888, 2048), (2048, 10944), (5632, 2048), (2048, 2816)]
TINY = [(192, 1024), (130, 640)]  # CPU dry run only
MODEL_SHAPES = {"v3": V3, "v2lite": V2LITE, "tiny": TINY}

# The small-M table as committed before this suite (4b6f62a), keyed (N, K); M ≤ 8. Shapes not in it
# ran the heuristic of that commit (BLOCK_N 128, BLOCK_M 16, 4 warps, 6 stages, auto split at 2/SM).
PREV_TABLE = {
    (2112, 7168): dict(SWAP_AB=True, BLOCK_N=128, BLOCK_M=16, num_warps=4, num_stages=6, SPLIT_K=14, PDL=True, PREFETCH=2),
    (24576, 1536): dict(SWAP_AB=True, BLOCK_N=128, BLOCK_M=16, num_warps=4, num_stages=4, SPLIT_K=1),
    (7168, 16384): dict(SWAP_AB=True, BLOCK_N=128, BLOCK_M=16, num_warps=4, num_stages=4, SPLIT_K=4),
    (36864, 7168): dict(SWAP_AB=True, BLOCK_N=128, BLOCK_M=16, num_warps=4, num_stages=4, SPLIT_K=4),
    (7168, 18432): dict(SWAP_AB=True, BLOCK_N=128, BLOCK_M=16, num_warps=4, num_stages=4, SPLIT_K=7),
    (4096, 7168): dict(SWAP_AB=True, BLOCK_N=128, BLOCK_M=16, num_warps=4, num_stages=6, SPLIT_K=8, PDL=True, PREFETCH=2),
    (7168, 2048): dict(SWAP_AB=True, BLOCK_N=128, BLOCK_M=16, num_warps=4, num_stages=6, SPLIT_K=4, PDL=True, PREFETCH=2),
}


def prev_config(n: int, k: int, sms: int) -> dict:
    hit = PREV_TABLE.get((n, k))
    if hit is not None:
        return dict(hit)
    s = SMALL._auto_split(triton.cdiv(n, 128), triton.cdiv(k, 128), sms, 2)
    return dict(SWAP_AB=True, BLOCK_N=128, BLOCK_M=16, num_warps=4, num_stages=6, SPLIT_K=s)


# --- candidates ---------------------------------------------------------------------------------
# tile families (BLOCK_N, num_stages): shared memory per program = stages × (BLOCK_N + 16) × 128 B,
# so 128/4 → 3 programs per SM, 128/5 and 128/6 → 2-3, 64/6 → 3-4 (256-row tiles, two warpgroups'
# worth of weight rows per program, lost every shape in W1 by 10-100% and were dropped)
FAMILIES = [(128, 4), (128, 5), (128, 6), (64, 6)]
RESIDENT = {(128, 4): 3, (128, 5): 3, (128, 6): 2, (64, 6): 3}
# launch/prefetch variants tried on the three best plain candidates
VARIANTS = [dict(PDL=2), dict(PDL=2, PREFETCH=2), dict(PDL=2, PREFETCH=4), dict(AHEAD=4),
            dict(PDL=2, PREFETCH=2, AHEAD=4), dict(PDL=1, PREFETCH=2), dict(SPLIT_FAST=True),
            dict(SPLIT_FAST=True, PDL=2, PREFETCH=2)]


def _sw(bn, st, s, **kw):
    return dict(SWAP_AB=True, BLOCK_N=bn, BLOCK_M=16, num_warps=4, num_stages=st, SPLIT_K=s, **kw)


def _exact_split(kb: int, s: int) -> bool:
    return s == 1 or triton.cdiv(kb, triton.cdiv(kb, s)) == s


def plain_candidates(n: int, k: int, sms: int) -> list[dict]:
    kb = triton.cdiv(k, 128)
    out = []
    for bn, st in FAMILIES:
        tiles = triton.cdiv(n, bn)
        splits = {SMALL._auto_split(tiles, kb, sms, r) for r in (1, 2, 3, 4)}
        splits.add(SMALL._auto_split(tiles, kb, sms, RESIDENT[(bn, st)]))
        for s in sorted(splits):
            if _exact_split(kb, s):
                out.append(_sw(bn, st, s))
    return out


def confirm_candidates(n: int, k: int, sms: int) -> list[dict]:
    """--confirm: the committed choice, the previous config and its PDL / split-fast twins, and both
    tile families at the splits that fill 1-3 resident programs per SM, each with late PDL and with
    early PDL + split-fast order (the W1 winners' neighbourhood)."""
    kb = triton.cdiv(k, 128)
    prev = prev_config(n, k, sms)
    out = [SMALL.small_m_config(1, n, k, sms), SMALL.small_m_config(2, n, k, sms), prev,
           dict(prev, PDL=2, PREFETCH=2), dict(prev, SPLIT_FAST=True, PDL=2, PREFETCH=2)]
    for bn, st in ((64, 6), (128, 4)):
        for s in sorted({SMALL._auto_split(triton.cdiv(n, bn), kb, sms, r) for r in (1, 2, 3)}):
            if _exact_split(kb, s):
                out += [_sw(bn, st, s, PDL=1, PREFETCH=2), _sw(bn, st, s, SPLIT_FAST=True, PDL=2, PREFETCH=2)]
    if n * k <= 40e6:  # weights that fit in L2 (50 MB): the whole split prefetched before the PDL wait
        for c in (out[0], prev):
            out.append(dict(c, PDL=2, PREFETCH=64))  # the launcher caps PREFETCH at the split's K blocks
    uniq = []
    for c in out:
        if c not in uniq:
            uniq.append(c)
    return uniq


def all_candidates(n: int, k: int, sms: int) -> list[dict]:
    """Every config the sweep may time for (N, K) (for the parallel precompile)."""
    base = plain_candidates(n, k, sms)
    return base + [dict(c, **v) for c in base for v in VARIANTS] + [prev_config(n, k, sms),
                                                                   SMALL.small_m_config(1, n, k, sms)]


# --- helpers ------------------------------------------------------------------------------------
@triton.jit
def _stream_read_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    # x: int32 view of the weights, n elements; each program XOR-reduces ITERS × BLOCK of them
    base = tl.program_id(0).to(tl.int64) * (BLOCK * ITERS)
    acc = tl.zeros((BLOCK,), dtype=tl.int32)
    for i in tl.static_range(ITERS):
        offs = base + i * BLOCK + tl.arange(0, BLOCK)
        acc ^= tl.load(x_ptr + offs, mask=offs < n, other=0)
    tl.store(out_ptr + tl.program_id(0), tl.xor_sum(acc, 0))


def stream_read_fn(b: torch.Tensor, sink: torch.Tensor):
    x = b.view(torch.int32).reshape(-1) if b.numel() % 4 == 0 else b.view(torch.uint8).reshape(-1)[: b.numel() // 4 * 4].view(torch.int32)
    block, iters = 2048, 8
    grid = (triton.cdiv(x.numel(), block * iters),)
    assert grid[0] <= sink.numel()

    def f():
        _stream_read_kernel[grid](x, sink, x.numel(), BLOCK=block, ITERS=iters, num_warps=8)

    return f


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double(), y.double()
    return float(1 - 2 * (x * y).sum() / (x * x + y * y).sum())


def mn_major(a_s: torch.Tensor) -> torch.Tensor:
    """[M, KB] scales with strides (1, M) (also for M = 1, where .t().contiguous().t() keeps (KB, 1))."""
    m, kb = a_s.shape
    return torch.empty_strided((m, kb), (1, m), dtype=a_s.dtype, device=a_s.device).copy_(a_s)


class Case:
    """Rotated input sets for one (M, N, K): weights shared across M (built once per (N, K))."""

    def __init__(self, weights, m, k, dev):
        self.m = m
        self.w = weights
        self.xs = [torch.randn(m, k, device=dev, dtype=torch.bfloat16) for _ in weights]
        self.a = []
        for x in self.xs:
            q, s = per_token_group_quant_fp8_ref(x)
            self.a.append((q, mn_major(s)))
        n = weights[0][0].shape[0]
        self.outs = [torch.empty(m, n, dtype=torch.bfloat16, device=dev) for _ in weights]

    def gemm_fns(self, cfg):
        return [lambda i=i: G.fp8_gemm_nt(self.a[i][0], self.a[i][1], self.w[i][0], self.w[i][1], out=self.outs[i], config=cfg)
                for i in range(len(self.w))]

    def pair_fns(self, cfg):
        def f(i):
            q, s = per_token_group_quant_fp8(self.xs[i])
            G.fp8_gemm_nt(q, s, self.w[i][0], self.w[i][1], out=self.outs[i], config=cfg)
        return [lambda i=i: f(i) for i in range(len(self.w))]


def make_weights(n, k, dev, target_bytes, max_sets):
    n_sets = int(min(max_sets, max(2, math.ceil(target_bytes / (n * k)))))
    ws = []
    for _ in range(n_sets):
        q, s = per_block_quant_fp8_ref(torch.randn(n, k, device=dev) * 0.05)
        ws.append((q, s))
    return ws


def check(case: Case, cfg: dict, ref: torch.Tensor) -> tuple[bool, float]:
    m, n = case.outs[0].shape
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device=ref.device)
    G.fp8_gemm_nt(case.a[0][0], case.a[0][1], case.w[0][0], case.w[0][1], out=out, config=cfg)
    bad = bool(torch.isnan(out).any().item())
    d = calc_diff(out.float(), ref)
    return (not bad and d < 1e-3), d


def gemm_bytes(m, n, k):
    kb = triton.cdiv(k, 128)
    return n * k + m * k + 2 * m * n + 4 * (m * kb + triton.cdiv(n, 128) * kb)


def cublas_peer(case, weights, ref, n, k, timer, us_graph) -> dict:
    """cuBLAS block-scaled FP8 on the same rotated sets (fp8_gemm_timing.peer_fn: N padded to 128)."""
    from benchmarks.fp8_gemm_timing import peer_fn

    info = dict(peer="cublas_scaled_mm_blockwise", peer_us=None, ratio_vs_peer=None)
    try:
        made = [peer_fn(case.a[i][0], case.a[i][1], w[0], w[1], n) for i, w in enumerate(weights)]
        pad = made[0][1]
        info["peer_calc_diff"] = calc_diff(made[0][0]()[:, :n].float(), ref)
        t = timer([f for f, _ in made])
    except Exception as e:  # e.g. a layout this cuBLAS rejects
        info["peer_note"] = f"{type(e).__name__}: {str(e)[:160]}"
        return info
    info.update(peer_us=round(t, 2), peer_gbps=round(gemm_bytes(case.m, n + pad, k) / t / 1e3, 1),
                ratio_vs_peer=round(t / us_graph, 3))
    if pad:
        info["peer_note"] = f"b zero-padded to N={n + pad} for cuBLAS (rejects N={n})"
    return info


# --- the run ------------------------------------------------------------------------------------
def kernel_key(cfg: dict, k: int) -> tuple:
    """The constexprs a config compiles to at K, plus Triton's ==1 / %16 specialization of the K-block
    counts (M is launched at 1 and 2 for each key; decode N and K are multiples of 16)."""
    kb = triton.cdiv(k, 128)
    s = max(1, min(int(cfg.get("SPLIT_K", 1)), kb))
    kps = triton.cdiv(kb, s)
    s = triton.cdiv(kb, kps)
    return (cfg["BLOCK_N"], cfg["BLOCK_M"], cfg["num_warps"], cfg["num_stages"], s > 1,
            int(cfg.get("PDL", 0)), min(int(cfg.get("PREFETCH", 0)), kps), int(cfg.get("AHEAD", 0)),
            bool(cfg.get("SPLIT_FAST", False)), kb % 16 == 0, kps % 16 == 0, kps == 1, s % 16 == 0)


def precompile(args, shapes, sms):
    """Compile worker I's share (--precompile I/N) of the kernels the sweep may launch: one launch per
    distinct kernel (no two workers compile the same one), on uninitialised operands (never timed)."""
    me, nw = map(int, args.precompile.split("/"))
    dev = torch.device("cuda")
    jobs = {}
    for n, k in shapes:
        cands = [G.get_config(m, n, k, sms) for m in (1, 2, 16)] + [prev_config(n, k, sms)]
        if args.sweep:
            cands += all_candidates(n, k, sms)
        if args.confirm:
            cands += confirm_candidates(n, k, sms)
        for c in cands:
            jobs.setdefault(kernel_key(c, k), (n, k, c))
    committed = {kernel_key(G.get_config(16, n, k, sms), k) for n, k in shapes}
    keys = sorted(jobs, key=repr)[me::nw]
    for key in keys:
        n, k, c = jobs[key]
        b = torch.empty(n, k, dtype=torch.float8_e4m3fn, device=dev)
        bs = torch.ones(triton.cdiv(n, 128), triton.cdiv(k, 128), device=dev)
        # Triton specializes M == 1 and M % 16 == 0 (and the a_scale stride M); M = 16 (the tests' edge)
        # only for the library's choices
        for m in (1, 2, 16) if key in committed else (1, 2):
            a = torch.zeros(m, k, dtype=torch.float8_e4m3fn, device=dev)
            try:
                G.fp8_gemm_nt(a, mn_major(torch.ones(m, triton.cdiv(k, 128), device=dev)), b, bs, config=c)
            except Exception as e:  # reported again by the timed run
                print(f"  precompile FAIL {n}x{k} {c}: {type(e).__name__}: {str(e)[:120]}", flush=True)
    torch.cuda.synchronize()
    print(f"precompile {me}/{nw}: {len(keys)} of {len(jobs)} kernels", flush=True)


def sweep_case(case, ref, n, k, sms, ms_tag, sweep_rows, timer, pre_best=None):
    """Time candidates for one case; returns [(us, cfg, calc_diff)] sorted, fastest first."""
    results = []

    def run(cfg):
        try:
            ok, d = check(case, cfg, ref)
            if not ok:
                print(f"  REJECT {ms_tag} {cfg}: calc_diff={d:.3g}", flush=True)
                sweep_rows.append(dict(case=dict(M=case.m, N=n, K=k), config=cfg, rejected=True, calc_diff=d))
                return
            t = timer(case.gemm_fns(cfg))
            results.append((t, cfg, d))
            sweep_rows.append(dict(case=dict(M=case.m, N=n, K=k), config=cfg, us_graph=round(t, 2), calc_diff=d))
        except Exception as e:
            print(f"  FAIL {ms_tag} {cfg}: {type(e).__name__}: {str(e)[:200]}", flush=True)

    if pre_best is None:
        plain = plain_candidates(n, k, sms)
        for cfg in plain:
            run(cfg)
        results.sort(key=lambda r: r[0])
        top = [r[1] for r in results[:3]]
        for c in top:
            for v in VARIANTS:
                run(dict(c, **v))
    else:  # a short list (the best of other M at this shape)
        for cfg in pre_best:
            run(cfg)
    results.sort(key=lambda r: r[0])
    for t, cfg, _ in results[:4]:
        print(f"  {ms_tag} {t:8.2f} us {cfg}", flush=True)
    return results


def bench(args, env, rows, winners, sweep_rows):
    cpu = not torch.cuda.is_available()  # --models tiny: a CPU dry run of the script's logic (interpreter)
    dev = torch.device("cpu" if cpu else "cuda")
    sms = 4 if cpu else G._num_sms(0)
    ms = list(args.ms)
    if args.sweep:  # M = 1 and 8 first: M = 2 and 4 time the best of those
        ms = sorted(ms, key=lambda m: (m not in (1, 8), m))
    shapes = []
    for model in args.models:
        shapes += [(model, n, k) for n, k in MODEL_SHAPES[model]]
    if args.only_nk:
        keep = set(args.only_nk)
        shapes = [s for s in shapes if (s[1], s[2]) in keep]
    if args.precompile:
        return precompile(args, [(n, k) for _, n, k in shapes], sms)
    if cpu:
        def timer(fns):
            t = time.perf_counter()
            for f in fns:
                f()
            return (time.perf_counter() - t) * 1e6 / len(fns)
    else:
        def timer(fns):
            return graph_replay_us(fns, args.min_ms, max_reps=200)
    sink = torch.empty(1 << 16, dtype=torch.int32, device=dev)
    t0 = time.time()
    for model, n, k in shapes:
        weights = make_weights(n, k, dev, args.target_mb * 1e6, args.max_sets)
        floor_us = timer([stream_read_fn(w[0], sink) for w in weights])
        bf16_sets = None
        if args.bf16:
            nb = max(2, math.ceil(args.target_mb * 1e6 / (2 * n * k)))
            bf16_sets = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(nb)]
        best_by_m = {}
        for m in ms:
            case = Case(weights, m, k, dev)
            ref = fp8_gemm_nt_ref(case.a[0][0], case.a[0][1], weights[0][0], weights[0][1], out_dtype=torch.float32)
            tag = f"{m}x{n}x{k}"
            prev = prev_config(n, k, sms)
            if not cpu:  # a discarded timing first: the first one after building the sets ran ~10% slow in W2
                timer(case.gemm_fns(prev))
            chosen = G.get_config(m, n, k, sms)
            if args.confirm:
                res = sweep_case(case, ref, n, k, sms, tag, sweep_rows, timer, pre_best=confirm_candidates(n, k, sms))
                if res:
                    winners[f"{m},{n},{k}"] = res[0][1]
            elif args.sweep:
                if m in (1, 8) or not best_by_m:
                    res = sweep_case(case, ref, n, k, sms, tag, sweep_rows, timer)
                else:  # M = 2, 4: the five best of the swept M values at this shape
                    short = []
                    for r in sorted((r for rs in best_by_m.values() for r in rs[:5]), key=lambda r: r[0]):
                        if r[1] not in short:
                            short.append(r[1])
                    res = sweep_case(case, ref, n, k, sms, tag, sweep_rows, timer, pre_best=short[:6] + [chosen])
                best_by_m[m] = res
                if res:
                    winners[f"{m},{n},{k}"] = res[0][1]
                    chosen = res[0][1] if args.report == "best" else chosen
            ok, d = check(case, chosen, ref)
            okp, dp = check(case, prev, ref)
            if not ok:
                print(f"CHOSEN CONFIG WRONG {tag} {chosen} calc_diff={d}", flush=True)
                continue
            fns = case.gemm_fns(chosen)
            us_graph = timer(fns)
            prev_us = timer(case.gemm_fns(prev)) if okp else None
            us = timer(fns) if cpu else triton.testing.do_bench(
                lambda fns=fns: [f() for f in fns], warmup=5, rep=20, return_mode="median") * 1000.0 / len(fns)
            nbytes = gemm_bytes(m, n, k)
            row = dict(suite="fp8_gemm_decode", case=dict(model=model, M=m, N=n, K=k), us=round(us, 2),
                       us_graph=round(us_graph, 2), tflops=round(2 * m * n * k / us_graph / 1e6, 2),
                       gbps=round(nbytes / us_graph / 1e3, 1), target_gbps=COPY_TBPS * 1000,
                       roofline_us=round(nbytes / (COPY_TBPS * 1e6), 2), floor_us=round(floor_us, 2),
                       floor_gbps=round(n * k / floor_us / 1e3, 1), vs_floor=round(floor_us / us_graph, 3),
                       config=chosen, calc_diff=d, n_input_sets=len(weights),
                       set_bytes_total_mb=round(len(weights) * n * k / 1e6, 1), l2="rotated sets, total >= 4x L2",
                       prev_config=prev, prev_us=None if prev_us is None else round(prev_us, 2),
                       speedup_vs_prev=None if prev_us is None else round(prev_us / us_graph, 3))
            if args.pairs:
                pair = timer(case.pair_fns(chosen))
                prev_pair = timer(case.pair_fns(prev))
                row.update(pair_us=round(pair, 2), prev_pair_us=round(prev_pair, 2),
                           pair_note="per_token_group_quant_fp8 + fp8_gemm_nt per step (fp8_linear's sequence)")
            row.update(cublas_peer(case, weights, ref, n, k, timer, us_graph))
            if bf16_sets is not None:
                try:
                    xb = [torch.randn(m, k, device=dev, dtype=torch.bfloat16) for _ in bf16_sets]
                    p2 = timer([lambda x=x, w=w: torch.nn.functional.linear(x, w) for x, w in zip(xb, bf16_sets)])
                    row.update(peer2="torch_bf16_linear", peer2_us=round(p2, 2),
                               peer2_gbps=round((2 * n * k + 2 * m * k + 2 * m * n) / p2 / 1e3, 1))
                    del xb
                except Exception as e:
                    row.update(peer2="torch_bf16_linear", peer2_us=None, peer2_note=f"{type(e).__name__}: {str(e)[:160]}")
            row.update(env)
            rows.append(row)
            print(json.dumps(row), flush=True)
            print(f"[{time.time() - t0:6.1f}s] {tag}: {us_graph:.2f} us {row['gbps']} GB/s (prev {prev_us}, floor {floor_us:.2f}, "
                  f"cuBLAS {row.get('peer_us')}, bf16 {row.get('peer2_us')})", flush=True)
            del case, ref
        del weights, bf16_sets
        if not cpu:
            torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--confirm", action="store_true",
                   help="time the committed choice against its neighbourhood (confirm_candidates) at every M; "
                        "rows report the committed choice")
    p.add_argument("--report", default="best", choices=["best", "committed"],
                   help="with --sweep: rows report the sweep's winner (best) or the library's choice")
    p.add_argument("--ms", default="1,2,4,8", type=positive_int_list, help="comma list of M (tokens)")
    p.add_argument("--models", default="v3", type=name_list(("v3", "v2lite", "tiny")),
                   help="comma list of v3, v2lite, tiny (tiny: a CPU dry run)")
    p.add_argument("--only-nk", default=None, type=int_tuple_list(2),
                   help="N:K[,N:K...] to run, from the --models shapes (default: all)")
    p.add_argument("--pairs", action="store_true", help="also time quant + GEMM per step (chosen vs previous)")
    p.add_argument("--bf16", action="store_true", help="also time the torch bf16 peer")
    p.add_argument("--min-ms", type=positive_float, default=8.0)
    p.add_argument("--target-mb", type=positive_float, default=240.0)
    p.add_argument("--max-sets", type=positive_int, default=64)
    p.add_argument("--precompile", default="")
    p.add_argument("--out", default="decode_rows.jsonl", type=out_file,
                   help="JSON rows, appended when the run ends (also on an exception or SIGTERM): complete rows only")
    p.add_argument("--sweep-out", default="", type=out_file)
    p.add_argument("--winners", default="", type=out_file)
    args = p.parse_args()
    known = {nk for model in args.models for nk in MODEL_SHAPES[model]}
    off = [nk for nk in args.only_nk or () if nk not in known]
    if off:  # such a pair selected no shape: the run would time nothing and say nothing
        p.error(f"argument --only-nk: {off[0][0]}:{off[0][1]} is not an N:K shape of --models "
                f"{','.join(args.models)}: {', '.join(f'{n}:{k}' for n, k in sorted(known))}")
    if set(args.models) != {"tiny"}:  # only the tiny model has a CPU (interpreter) run
        require_cuda("bench_gemm_decode")
    elif not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        p.error("--models tiny without a CUDA GPU runs through Triton's interpreter: set TRITON_INTERPRET=1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # job-level timeout: still write rows
    env = dict(gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(), dry=not torch.cuda.is_available(),
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    rows, winners, sweep_rows = [], {}, []
    try:
        bench(args, env, rows, winners, sweep_rows)
    finally:
        if not args.precompile:  # files only with rows to add (a run that failed first left an empty OUT, s19)
            if rows:
                with open(args.out, "a") as f:
                    for r in rows:
                        f.write(json.dumps(r) + "\n")
            if args.sweep_out and sweep_rows:
                with open(args.sweep_out, "a") as f:
                    for r in sweep_rows:
                        f.write(json.dumps(dict(r, **env)) + "\n")
            if args.winners and winners:  # an empty dict would replace an old winners file
                with open(args.winners, "w") as f:
                    json.dump(winners, f, indent=1)
    if rows:
        print("\n%-7s %-6s %-6s %2s %8s %8s %7s %8s %8s %8s %8s" % (
            "model", "N", "K", "M", "us_graph", "GB/s", "floor", "prev_us", "cuBLAS", "bf16", "pair/prev"))
        for r in rows:
            c = r["case"]
            pair = f"{r['pair_us']}/{r['prev_pair_us']}" if "pair_us" in r else "-"
            print("%-7s %-6d %-6d %2d %8.2f %8.1f %7.2f %8s %8s %8s %s" % (
                c["model"], c["N"], c["K"], c["M"], r["us_graph"], r["gbps"], r["floor_us"], r["prev_us"],
                r.get("peer_us"), r.get("peer2_us"), pair))
    return 0


if __name__ == "__main__":
    sys.exit(main())
