"""Benchmark suite ``fp8_gemm``: block-scaled FP8 GEMM on DeepGEMM's 18 shapes, plus FP8 quant GB/s.

    PYTHONPATH=. python benchmarks/bench_fp8_gemm.py [--sweep | --variants JSON] [--out rows.jsonl] [--winners tuned.json]

* Inputs: fresh random fp8 operands (torch.randn, quantized by the reference), rotated over
  enough sets that their bytes exceed ~4× the 50 MB L2, so memory-bound shapes are not flattered.
* Timing: ``us`` = eager median (triton.testing.do_bench), ``us_graph`` = median CUDA-graph replay
  of one launch per input set (the way the decode step runs it); TFLOP/s = 2MNK / us_graph and
  GB/s = (MK + NK + 2MN) / us_graph (DeepGEMM's formulas).
* ``us_kernel`` / ``tflops_kernel`` / ``ratio_vs_peer_kernel`` (and the peer's ``peer_*_kernel``): profiler kernel
  durations (benchmarks.timing.kernel_time_us), a second view that is not trusted on its own (rows carry
  ``kernel_time_unverified: true``); the graph-replay fields are the measurement.
* Peer in the same run: cuBLAS block-scaled FP8, ``torch.nn.functional.scaled_mm`` with
  BlockWise1x128 × BlockWise128x128 scaling. It rejects N = 2112, so there b is zero-padded to
  N = 2176 for the peer (3% more work for cuBLAS; rows carry ``peer_note``).
  ``ratio_vs_peer`` = peer_us_graph / us_graph (> 1: ours is faster).
* ``--variants JSON``: M > 128 only — the committed config and each variant ("tl" = the entry's tl config,
  a dict = Gluon overrides, e.g. {"WGS": 2}) checked, then timed in two passes (the better kept); rows
  report the committed config with every candidate's time in ``variants_us_graph``.
* ``--ab-prev``: 16 < M ≤ 128, the committed entry and the session-15 one (S15_MID) timed side by side (rows:
  ``prev_us_graph``); ``--sweep --explore`` there times the committed entry's neighbours (explore_mid).
* ``--sweep``: every candidate config is first checked for correctness (NaN-poisoned output,
  calc_diff < 1e-3 against the fp32 reference), then timed; the fastest correct one is reported and
  written to ``--winners`` (copy into ``tritonseek/kernels/fp8_gemm.py::_TUNED``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import signal
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# timing / input / peer helpers, kept under their old names here (probe_fp8_gemm_ab.py imports them from this module)
from benchmarks.fp8_gemm_timing import (calc_diff, eager_time_us, graph_time_us, kernel_fields,  # noqa: E402,F401
                                        make_sets, peer_fn)
# the activation-quant part of the suite (rows "fp8_quant"), kept in its own module (this one passed 600 lines)
from benchmarks.bench_fp8_quant_suite import QUANT_CASES, QUANT_ROWS, bench_quant, print_quant  # noqa: E402,F401

from tritonseek.benchrun import (StagedRows, git_commit, int_tuple_list, json_list, out_file, positive_int_list,
                                 require_cuda)
from tritonseek.kernels import fp8_gemm as G
from tritonseek.kernels import fp8_gemm_small as SMALL
from tritonseek.kernels.reference.fp8 import fp8_gemm_nt_ref, per_block_quant_fp8_ref, per_token_group_quant_fp8_ref

NK = [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)]
MS = [64, 128, 4096]
# Graph-replay TFLOP/s measured on our H200 (issue 4), in NK order.
ANCHOR_DEEPGEMM = {4096: [956, 890, 576, 1122, 1165, 938], 128: [223, 422, 256, 629, 358, 272],
                   64: [127, 228, 146, 328, 188, 142]}
ANCHOR_CUBLAS = {4096: [1059, 1019, 788, 1047, 1155, 1086], 128: [150, 445, 305, 550, 283, 276],
                 64: [76, 222, 156, 274, 143, 141]}

def _c(bm, bn, w, st, gm, **kw):
    return dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=st, GRID_MULT=gm, **kw)


# M > 128 (compute-bound): tile shape × pipeline depth × programs per SM (GRID_MULT: several
# co-resident programs, so one's promotion/epilogue overlaps another's tensor-core work) × TMA
# store. (An in-program PINGPONG overlap was swept at 69ee3f4/4a8249d, never won, and was removed.)
LARGE_CANDIDATES = [
    _c(64, 128, 4, 3, 3), _c(64, 128, 4, 4, 2), _c(64, 128, 4, 3, 3, TMA_STORE=True), _c(64, 128, 4, 3, 0),
    _c(128, 128, 8, 5, 1), _c(128, 128, 8, 4, 1, TMA_STORE=True),
    _c(128, 64, 4, 4, 2), _c(64, 64, 4, 3, 4, TMA_STORE=True),
    _c(64, 128, 4, 3, 3, GROUP_M=16),
    # flattened tile × K loop: the next tile's loads are issued during the current tile's last
    # K blocks, so the pipeline never drains between tiles (matters at small K)
    _c(64, 128, 4, 3, 3, FLATTEN=True), _c(64, 128, 4, 4, 2, FLATTEN=True), _c(128, 128, 8, 4, 1, FLATTEN=True),
]


# M > 128, the warp-specialized Gluon kernel (fp8_gemm_ws; fp8_gemm_nt runs it for a config with a
# GLUON key on a Hopper GPU): split warpgroups + unrolled K loop (the W1/W2 winner) × pipeline
# depth × tile order, 64-wide tiles (N = 2112 = 33 × 64 fills 8 waves of 132 SMs exactly), and the
# one-product-set loop for reference.
GLUON_CANDIDATES = [
    dict(SPLIT=True, UNROLL2=True), dict(SPLIT=True, UNROLL2=True, NUM_STAGES=5, GROUP_M=16),
    dict(SPLIT=True, UNROLL2=True, NUM_STAGES=6), dict(SPLIT=True, UNROLL2=True, BLOCK_N=64, NUM_STAGES=6),
    dict(SPLIT=True, UNROLL2=False),
]


# --explore: the committed entry plus neighbours of the two winning M > 128 families (L2 tile
# order, pipeline depth), and other K splits for M ≤ 128
EXPLORE_LARGE = [
    _c(128, 128, 8, 4, 1, TMA_STORE=True, GROUP_M=16), _c(128, 128, 8, 4, 1, TMA_STORE=True, GROUP_M=4),
    _c(128, 128, 8, 3, 1, TMA_STORE=True), _c(64, 128, 4, 3, 3, GROUP_M=32),
    _c(64, 128, 4, 3, 3, GROUP_M=16, FLATTEN=True), _c(64, 128, 4, 3, 3, GROUP_M=16),
]


# The V3-width slice's dense FP8 GEMMs at decode (--small): fused q_a‖kv_a, q_b, o_proj, dense
# gate‖up and down, shared-expert gate‖up and down.
SLICE_NK = [(2112, 7168), (24576, 1536), (7168, 16384), (36864, 7168), (7168, 18432), (4096, 7168), (7168, 2048)]
# the same projections unfused (q_a and kv_a, gate and up as separate GEMMs)
SLICE_NK_UNFUSED = [(1536, 7168), (576, 7168), (18432, 7168), (2048, 7168)]


def _sw(bn, bm, st, s, w=4):
    return dict(SWAP_AB=True, BLOCK_N=bn, BLOCK_M=bm, num_warps=w, num_stages=st, SPLIT_K=s)


def small_candidates(m: int, n: int, k: int, sms: int) -> list[dict]:
    """M ≤ SMALL_M_MAX: the committed choice, the general kernel's M ≤ 64 config (the path used
    before the swap-AB kernel), and swap-AB tiles × pipeline depth × K splits sized for 1–4
    resident programs per SM."""
    kb = triton.cdiv(k, 128)
    bm = 16 if m <= 16 else 32
    out = [G.get_config(m, n, k, sms), SMALL.small_m_config(m, n, k, sms),
           G._TUNED.get(("64", n, k)) or G._default_config(m, n, k, sms)]
    for bn, st in ((128, 4), (128, 6), (128, 8), (64, 6), (64, 8)):
        tiles = triton.cdiv(n, bn)
        splits = {SMALL._auto_split(tiles, kb, sms, r) for r in (1, 2, 3, 4)}
        out += [_sw(bn, bm, st, s) for s in sorted(splits)]
    s2 = SMALL._auto_split(triton.cdiv(n, 128), kb, sms, 2)
    if m <= 8:
        out.append(_sw(128, 8, 6, s2))  # mma.sync (no wgmma at N=8)
    # programmatic dependent launch (prologue overlaps the previous kernel's tail), and with the
    # first 2 weight K blocks prefetched into L2 before the grid-dependency wait
    out += [dict(_sw(128, bm, 6, s2), PDL=True), dict(_sw(128, bm, 6, s2), PDL=True, PREFETCH=2)]
    out.append(_sw(128, bm, 6, s2, w=8))  # two warpgroups (m64 each) per 128-row tile
    return out


# 16 < M ≤ 128: the session-15 _TUNED entries (64×128 tl tiles, two programs per SM; K splits per shape) for --ab-prev
S15_MID = {(cls, n, k): _c(64, 128, 4, 4, 2, GROUP_M=8, SPLIT_K=s)
           for cls, splits in (("64", (7, 1, 1, 4, 6, 1)), ("128", (7, 1, 1, 2, 4, 1))) for (n, k), s in zip(NK, splits)}


def _wave_splits(tiles: int, kb: int, slots: int, count: int) -> list[int]:
    """The `count` K splits with the lowest modelled time: waves of tiles·s items over `slots` programs × K blocks
    per item, + 2 blocks for a split's partial write and reduce (fp8_gemm._auto_split_k's model); ≥ 4 blocks each, ≤ 16 splits."""
    cost = {s: triton.cdiv(tiles * s, slots) * triton.cdiv(kb, s) + (2 if s > 1 else 0)
            for s in range(1, min(16, max(1, kb // 4)) + 1) if triton.cdiv(kb, triton.cdiv(kb, s)) == s}
    return sorted(cost, key=lambda s: (cost[s], s))[:count]


def mid_candidates(m: int, n: int, k: int, sms: int) -> list[dict]:
    """16 < M ≤ 128: the committed entry and its epilogue / pipeline / tile / K-split twins (tl kernel), the
    swap-AB kernel with 64 or 128 token columns (split-K reduced in-kernel by the last program, no second
    launch), and, where 64-column tiles alone fill the GPU, the warp-specialized Gluon kernel (128-row tiles,
    TMA producer warp + two consumer warpgroups; pinned WGS = 2) at two widths and pipeline depths."""
    kb = triton.cdiv(k, 128)
    base = G._TUNED.get((G._m_class(m), n, k)) or G._default_config(m, n, k, sms)
    base = {key: v for key, v in base.items() if key != "GLUON"}
    sk = base.get("SPLIT_K", 1)
    out = [dict(base), dict(base, TMA_STORE=True), dict(base, num_stages=3, GRID_MULT=3),
           dict(base, FLATTEN=True, TMA_STORE=True)]
    if m > 64:
        out += [_c(128, 128, 8, 3, 1, SPLIT_K=sk, TMA_STORE=True), _c(128, 64, 4, 4, 2, SPLIT_K=sk)]
    tiles = triton.cdiv(m, base["BLOCK_M"]) * triton.cdiv(n, base["BLOCK_N"])
    out += [dict(base, SPLIT_K=s) for s in _wave_splits(tiles, kb, sms * base.get("GRID_MULT", 1), 3) if s != sk]
    # swap-AB: weights on the wgmma M side; 128 token columns with 64 weight rows (128 × 128 on 4 warps spills)
    bm = 64 if m <= 64 else 128
    for bn in (64, 128) if bm == 64 else (64,):
        n_tiles = triton.cdiv(n, bn) * triton.cdiv(m, bm)
        for s in sorted({SMALL._auto_split(n_tiles, kb, sms, r) for r in (1, 2)}):
            out.append(_sw(bn, bm, 4, s))
    if m > 64:  # two 64-token tiles per weight tile
        s = SMALL._auto_split(triton.cdiv(n, 128) * 2, kb, sms, 2)
        out.append(_sw(128, 64, 4, s))
    if triton.cdiv(n, 64) >= 100:
        for bn, st in ((128, 4), (128, 6), (64, 6), (64, 8)):
            out.append(dict(base, GLUON=dict(BLOCK_N=bn, NUM_STAGES=st, WGS=2)))
        out.append(dict(base, GLUON=dict(BLOCK_N=64, NUM_STAGES=8, WGS=2, PIPE=False)))
    return out


def explore_mid(m: int, base: dict) -> list[dict]:
    """16 < M ≤ 128 with --explore: the committed entry and its neighbours — Gluon pipeline depth ±1, the other
    column width, masked-store epilogue; deeper tl pipelines at one program per SM (more bytes in flight per SM
    where the tiles do not fill the GPU); swap-AB with deeper pipelines where the entry does not split K."""
    tl_cfg = {key: v for key, v in base.items() if key != "GLUON"}
    out = [dict(base)]
    g = base.get("GLUON")
    if g is not None:
        st, bn = g.get("NUM_STAGES", 4), g.get("BLOCK_N", 128)
        out += [dict(tl_cfg, GLUON=dict(g, NUM_STAGES=st + d)) for d in (-1, 1)]
        out += [dict(tl_cfg, GLUON=dict(g, BLOCK_N=192 - bn)), dict(tl_cfg, GLUON=dict(g, TMA_STORE=False))]
    else:
        out += [dict(tl_cfg, GLUON=dict(BLOCK_N=bn, NUM_STAGES=6, WGS=2)) for bn in (64, 128)]
    out += [dict(tl_cfg, num_stages=st, GRID_MULT=1) for st in (6, 8)]
    return out + [_sw(64, 64 if m <= 64 else 128, st, s) for st in (6, 8) for s in (1, 2) if tl_cfg["SPLIT_K"] == 1]


def candidates(m: int, n: int | None = None, k: int | None = None, explore: bool = False) -> list[dict]:
    """Sweep candidates per M class; for M ≤ 128 the committed entry, its FLATTEN twin, a deeper
    pipeline and two other tile shapes at the same K split."""
    if m <= SMALL.SMALL_M_MAX:
        return small_candidates(m, n, k, G._num_sms(0))
    if explore:
        base = dict(G.get_config(m, n, k, G._num_sms(0)))
        if m > 128:
            return [base] + [dict(c, SPLIT_K=1) for c in EXPLORE_LARGE]
        return explore_mid(m, base)
    if m <= 128:
        return mid_candidates(m, n, k, G._num_sms(0))
    tl_base = dict(G.get_config(m, n, k, G._num_sms(0)))
    tl_base.pop("GLUON", None)
    return [dict(c, SPLIT_K=1) for c in LARGE_CANDIDATES] + [dict(tl_base, GLUON=g) for g in GLUON_CANDIDATES]


def resolve(cfg: dict, m: int, n: int, k: int, sms: int) -> dict | None:
    cfg = dict(cfg)
    kb = triton.cdiv(k, 128)
    if cfg.get("SWAP_AB"):
        s = int(cfg.get("SPLIT_K", 1))
        return cfg if s == 1 or triton.cdiv(kb, triton.cdiv(kb, s)) == s else None
    s = cfg.get("SPLIT_K", 1)
    if s == "auto":
        s = G._auto_split_k(m, n, k, cfg["BLOCK_M"], cfg["BLOCK_N"], sms)
    s = int(s)
    if s > 1 and (kb // s < 2 or triton.cdiv(kb, triton.cdiv(kb, s)) != s):
        return None  # fewer than 2 K blocks per split, or not an exact split count
    cfg["SPLIT_K"] = s
    cfg.setdefault("GROUP_M", 8)
    cfg.setdefault("FLATTEN", False)
    cfg.setdefault("GRID_MULT", 1)
    cfg.setdefault("TMA_STORE", False)
    cfg.setdefault("WS", 0)
    return cfg


# Off-table DeepSeek-V3 shapes (untuned: the heuristic default config), with --extra:
# decode M=1/16, kv_a_proj N=576, fused gate‖up N=36864, dense down K=18432, M=333 (odd).
EXTRA = [(1, 2112, 7168), (16, 576, 7168), (1, 7168, 18432), (333, 36864, 7168), (16, 4096, 7168), (333, 7168, 18432)]


def precompile(args, shapes, sms):
    """Compile this worker's share (--precompile I/N) of the sweep's kernels into Triton's disk
    cache by one launch each at the real shape (same specialization as the timed run)."""
    me, nw = map(int, args.precompile.split("/"))
    jobs = []
    for m, _, n, k in shapes:
        cands = ([resolve(c, m, n, k, sms) for c in candidates(m, n, k, args.explore)] if args.sweep
                     else [G.get_config(m, n, k, sms)])
        if args.confirm and m <= SMALL.SMALL_M_MAX:
            cands.append(G._TUNED.get(("64", n, k)) or G._default_config(m, n, k, sms))
        if args.variants and m > 128:
            cands = [resolve(c, m, n, k, sms) for c in
                     [G.get_config(m, n, k, sms)] + [variant_config(v, m, n, k, sms) for v in args.variants]]
        for c in cands:
            if c is not None and (m, n, k, c) not in jobs:
                jobs.append((m, n, k, c))
    mine = jobs[me::nw]
    made = {}
    for m, n, k, c in mine:
        if (m, n, k) not in made:
            made.clear()
            made[(m, n, k)] = make_sets(m, n, k, torch.device("cuda"), target_bytes=0, max_sets=1)[0]
        s = made[(m, n, k)]
        try:
            G.fp8_gemm_nt(s[0], s[1], s[2], s[3], out=s[4], config=c)
        except Exception as e:  # reported again (and skipped) by the timed run
            print(f"  precompile FAIL {m}x{n}x{k} {c}: {type(e).__name__}: {str(e)[:120]}", flush=True)
    torch.cuda.synchronize()
    print(f"precompile {me}/{nw}: {len(mine)} kernels", flush=True)


def variant_config(v, m: int, n: int, k: int, sms: int) -> dict:
    """--variants entry → launch config: "tl" = the committed entry's tl config (no Gluon), a dict = the
    Gluon kernel with these overrides of ws_config (over the committed entry's tl keys, used off Hopper)."""
    tl_base = dict(G.get_config(m, n, k, sms))
    tl_base.pop("GLUON", None)
    if tl_base.get("SWAP_AB") or "BLOCK_M" not in tl_base:
        tl_base = G._default_config(max(m, 129), n, k, sms)
        tl_base.pop("GLUON", None)
    return tl_base if v == "tl" else dict(tl_base, GLUON=dict(v))


def check_gluon_variant(v) -> None:
    """A --variants entry (also probe_fp8_gemm_ab's --b / --variant): "tl", or a dict of Gluon overrides whose keys
    and values follow the ws_config rules (``fp8_gemm_ws.WS_CONFIG_SPEC`` + WGS 2/3, MIN_M, WIDE), or with
    STREAM_K true ``fp8_gemm_ws_sk.SK_CONFIG_SPEC`` + MIN_M. Per key only: combinations depend on the committed
    entry each override lands on and are checked by the launcher (the smoke test). TypeError / ValueError naming the
    key otherwise."""
    from tritonseek.kernels._utils import check_config
    from tritonseek.kernels.fp8_gemm_ws import WS_CONFIG_SPEC
    from tritonseek.kernels.fp8_gemm_ws_sk import SK_CONFIG_SPEC

    if v == "tl":
        return
    if not isinstance(v, dict):
        raise TypeError(f'a variant must be "tl" or a dict of Gluon overrides, got {v!r}')
    extra = dict(MIN_M=range(0, 1 << 31), STREAM_K=bool)
    if v.get("STREAM_K") is True:
        check_config("GLUON", v, dict(SK_CONFIG_SPEC, **extra))
    else:
        check_config("GLUON", v, dict(WS_CONFIG_SPEC, WGS=(2, 3), WIDE=bool, **extra))


def smoke_ws(variants) -> list:
    """Edge shapes of the Gluon kernel for each variant before anything is timed: one tile per CTA and one K
    block, M/N/K tails, a row-padded fp32 out (masked-store epilogue). Returns the variants that passed (a wrong
    or failing variant is reported and dropped, never timed)."""
    dev = torch.device("cuda")
    passed = []
    for v in variants:
        if v == "tl" or _smoke_one(v, dev):
            passed.append(v)
    return passed


def _smoke_one(v, dev) -> bool:
    from tritonseek.kernels.fp8_gemm_ws import fp8_gemm_nt_ws

    try:
        for m, n, k, pad, dt in [(200, 256, 128, 0, torch.bfloat16), (333, 2112, 1152, 0, torch.bfloat16),
                                 (257, 300, 1040, 3, torch.float32)]:
            a_q, a_s = per_token_group_quant_fp8_ref(torch.randn(m, k, device=dev))
            b_q, b_s = per_block_quant_fp8_ref(torch.randn(n, k, device=dev) * 0.05)
            base = torch.full((m, n + pad), float("nan"), dtype=dt, device=dev)
            fp8_gemm_nt_ws(a_q, a_s.t().contiguous().t(), b_q, b_s, out=base[:, :n], out_dtype=dt, config=dict(v))
            torch.cuda.synchronize()
            d = calc_diff(base[:, :n].float(), fp8_gemm_nt_ref(a_q, a_s, b_q, b_s, out_dtype=torch.float32))
            ok = not torch.isnan(base[:, :n]).any().item() and (pad == 0 or torch.isnan(base[:, n:]).all().item())
            print(f"smoke {v} {m}x{n}x{k} pad={pad} {dt}: calc_diff={d:.2e} {'ok' if ok and d < 1e-3 else 'FAIL'}",
                  flush=True)
            if not (ok and d < 1e-3):
                return False
    except Exception as e:  # a variant that fails to compile or launch (e.g. shared memory) is dropped
        print(f"smoke {v} FAIL {type(e).__name__}: {str(e)[:200]}", flush=True)
        return False
    return True


def bench_gemm(args, env, rows, winners, sweep_rows):
    dev = torch.device("cuda")
    sms = G._num_sms(0)
    variants = list(args.variants or [])
    if variants and not args.precompile and not os.environ.get("BENCH_NO_SMOKE"):  # =1: real-shape check only
        variants = smoke_ws(variants)
    ms = list(args.only_m) if args.only_m else ([1, 8] if args.small else MS)
    nks = set(args.only_nk) if args.only_nk else set(NK)
    shapes = [(m, j, n, k) for m in ms for j, (n, k) in enumerate(NK) if (n, k) in nks]
    if args.small:  # the slice's decode shapes (no DeepGEMM anchors: j = None)
        shapes = [(m, None, n, k) for nk_list in (SLICE_NK, SLICE_NK_UNFUSED) for m in ms for n, k in nk_list
                  if not args.only_nk or (n, k) in nks]
    if args.extra:
        shapes += [(m, None, n, k) for m, n, k in EXTRA]
    if args.precompile:
        return precompile(args, shapes, sms)
    for m, j, n, k in shapes:
        if True:
            sets = make_sets(m, n, k, dev)
            a_q, a_s, b_q, b_s, _ = sets[0]
            ref = fp8_gemm_nt_ref(a_q, a_s, b_q, b_s, out_dtype=torch.float32)
            cands = ([resolve(c, m, n, k, sms) for c in candidates(m, n, k, args.explore)] if args.sweep
                     else [G.get_config(m, n, k, sms)])
            if args.confirm and m <= SMALL.SMALL_M_MAX:  # the committed choice and the general kernel's
                cands = [resolve(c, m, n, k, sms) for c in
                         (G.get_config(m, n, k, sms), G._TUNED.get(("64", n, k)) or G._default_config(m, n, k, sms))]
            if variants and m > 128:  # the committed choice and the variants, side by side (large-M class)
                cands = [resolve(G.get_config(m, n, k, sms), m, n, k, sms)] + [
                    resolve(variant_config(v, m, n, k, sms), m, n, k, sms) for v in variants]
            prev = S15_MID.get((G._m_class(m), n, k)) if args.ab_prev and SMALL.SMALL_M_MAX < m <= 128 else None
            if prev is not None:  # the committed choice and the session-15 entry, same run, two passes each
                cands = [resolve(G.get_config(m, n, k, sms), m, n, k, sms), resolve(prev, m, n, k, sms)]
            two_pass = bool(variants and m > 128) or (m <= 128 and (args.sweep or prev is not None))
            uniq, pending = [], []
            for c in cands:
                if c is not None and c not in uniq:
                    uniq.append(c)
            results = []
            for cfg in uniq:
                try:
                    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device=dev)
                    G.fp8_gemm_nt(a_q, a_s, b_q, b_s, out=out, config=cfg)
                    torch.cuda.synchronize()
                    bad = torch.isnan(out).any().item()
                    d = calc_diff(out.float(), ref)
                    if bad or not d < 1e-3:
                        print(f"  REJECT {m}x{n}x{k} {cfg}: nan={bad} calc_diff={d:.3g}", flush=True)
                        sweep_rows.append(dict(case=dict(M=m, N=n, K=k), config=cfg, rejected=True, nan=bad, calc_diff=d))
                        continue
                    fns = [lambda s=s, c=cfg: G.fp8_gemm_nt(s[0], s[1], s[2], s[3], out=s[4], config=c) for s in sets]
                    t = graph_time_us(fns, 10.0)
                    if two_pass:  # a second pass after the others (the first one timed ran 5-10% slow in W1)
                        pending.append(fns)
                    results.append((t, cfg, d))
                    if args.sweep or variants:
                        print(f"  cand {m}x{n}x{k} {t:9.2f} us {2 * m * n * k / t / 1e6:7.1f} TFLOP/s {cfg}", flush=True)
                        sweep_rows.append(dict(case=dict(M=m, N=n, K=k), config=cfg, us_graph=round(t, 2),
                                               tflops=round(2 * m * n * k / t / 1e6, 1), calc_diff=d))
                except Exception as e:  # a config that fails to compile or launch is skipped
                    print(f"  FAIL {m}x{n}x{k} {cfg}: {type(e).__name__}: {str(e)[:200]}", flush=True)
            if not results:
                print(f"NO CORRECT CONFIG for {m}x{n}x{k}", flush=True)
                continue
            for i, fns in enumerate(pending):  # variants: each candidate's time = the better of two passes
                t2 = graph_time_us(fns, 10.0)
                t, cfg, d = results[i]
                print(f"  cand {m}x{n}x{k} pass 2 {t2:9.2f} us {cfg.get('GLUON', 'tl') if m > 128 else cfg}", flush=True)
                results[i] = (min(t, t2), cfg, d)
                if args.sweep:
                    sweep_rows.append(dict(case=dict(M=m, N=n, K=k), config=cfg, us_graph=round(t2, 2), timing_pass=2))
            results.sort(key=lambda r: r[0])
            if args.sweep:
                for t, cfg, _ in results[:6]:
                    print(f"  {m}x{n}x{k} {t:9.2f} us {cfg}", flush=True)
            _, best, d = results[0]
            if args.confirm or variants or prev is not None:  # report the committed config whether or not it won
                committed = resolve(G.get_config(m, n, k, sms), m, n, k, sms)
                _, best, d = next((r for r in results if r[1] == committed), results[0])
            mkey = SMALL._small_m_class(m) if m <= SMALL.SMALL_M_MAX else G._m_class(m)
            winners[f"{mkey},{n},{k}"] = best
            old_cfg = G._TUNED.get(("64", n, k)) or G._default_config(m, n, k, sms)
            base = [t for t, c, _ in results if c == resolve(old_cfg, m, n, k, sms)] if m <= SMALL.SMALL_M_MAX else []
            fns = [lambda s=s, c=best: G.fp8_gemm_nt(s[0], s[1], s[2], s[3], out=s[4], config=c) for s in sets]
            us_graph = graph_time_us(fns)
            us = eager_time_us(fns)
            row = dict(suite="fp8_gemm", case=dict(M=m, N=n, K=k), us=round(us, 2), us_graph=round(us_graph, 2),
                       kernel=(("gluon_sk" if best["GLUON"].get("STREAM_K") else "gluon_ws") if best.get("GLUON") is not None
                               else ("swap_ab" if best.get("SWAP_AB") else "tl")),
                       tflops=round(2 * m * n * k / us_graph / 1e6, 1),
                       gbps=round((m * k + n * k + 2 * m * n) / us_graph / 1e3, 1),
                       calc_diff=d, config=best, n_input_sets=len(sets),
                       tuned=(G._m_class(m), n, k) in G._TUNED)
            if variants:  # every candidate's graph time in this run (committed first)
                row["variants_us_graph"] = {json.dumps(c.get("GLUON", "tl"), sort_keys=True): round(t, 2)
                                            for t, c, _ in results}
            if prev is not None:  # the session-15 entry, timed in the same run (better of two passes each)
                row.update(prev_config=prev, prev_us_graph=next((round(t, 2) for t, c, _ in results
                                                                 if c == resolve(prev, m, n, k, sms)), None))
            if base:  # the general kernel's M ≤ 64 config, timed in the same sweep
                row.update(baseline="fp8_gemm_nt general kernel (M<=64 config)", baseline_us_graph=round(base[0], 2),
                           baseline_gbps=round((m * k + n * k + 2 * m * n) / base[0] / 1e3, 1))
            if m <= SMALL.SMALL_M_MAX:
                row["target_gbps"] = 3600.0
                row["meets_target"] = row["gbps"] >= 3600.0
            if j is not None and m in ANCHOR_DEEPGEMM:
                row.update(anchor_deepgemm_tflops=ANCHOR_DEEPGEMM[m][j], anchor_cublas_tflops=ANCHOR_CUBLAS[m][j])
                row["target_tflops"] = max(row["anchor_deepgemm_tflops"], row["anchor_cublas_tflops"])
                row["meets_target"] = row["tflops"] >= row["target_tflops"]
            pfns, pad = [], 0
            try:
                for s in sets:
                    f, pad = peer_fn(s[0], s[1], s[2], s[3], n)
                    pfns.append(f)
                pd = calc_diff(pfns[0]()[:, :n].float(), ref)
                peer_us = graph_time_us(pfns)
                row.update(peer="cublas_scaled_mm_blockwise", peer_us=round(peer_us, 2),
                           peer_tflops=round(2 * m * n * k / peer_us / 1e6, 1),
                           ratio_vs_peer=round(peer_us / us_graph, 3), peer_calc_diff=pd)
                if pad:
                    row["peer_note"] = f"b zero-padded to N={n + pad} for cuBLAS (rejects N={n}); peer timed on the padded GEMM"
            except Exception as e:
                row.update(peer="cublas_scaled_mm_blockwise", peer_us=None, ratio_vs_peer=None,
                           peer_note=f"{type(e).__name__}: {str(e)[:200]}")
            row.update(kernel_fields(fns, pfns if row.get("peer_us") else [], 2 * m * n * k))
            row.update(env)
            rows.append(row)
            print(json.dumps(row), flush=True)
            del sets, ref
            torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Rows: us_graph / tflops / ratio_vs_peer "
                                "are CUDA-graph replay times; the *_kernel fields are profiler kernel times, not "
                                "trusted on their own (kernel_time_unverified: true).")
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--out", default="fp8_gemm_rows.jsonl", type=out_file,
                   help="JSON rows, written when the run ends; an interrupted or failed run keeps an existing OUT and "
                        "writes its rows to OUT.partial")
    p.add_argument("--winners", default="fp8_gemm_winners.json", type=out_file)
    p.add_argument("--skip-quant", action="store_true")
    p.add_argument("--extra", action="store_true", help="also time off-table DeepSeek-V3 shapes (untuned)")
    p.add_argument("--precompile", default="", help="I/N: only compile worker I's share of the kernels, then exit")
    p.add_argument("--sweep-out", default="", help="write every sweep candidate's timing here (jsonl)")
    p.add_argument("--only-m", default=None, type=positive_int_list,
                   help="comma-separated M values to run (default: 64,128,4096)")
    p.add_argument("--skip-gemm", action="store_true")
    p.add_argument("--explore", action="store_true", help="with --sweep: the committed config and its neighbours only")
    p.add_argument("--only-nk", default=None, type=int_tuple_list(2), help="N:K[,N:K...] to run (default: all six)")
    p.add_argument("--small", action="store_true", help="decode M (1, 8 unless --only-m) on the V3 slice's shapes")
    p.add_argument("--variants", default=None, type=json_list(check_gluon_variant, '"tl" or Gluon override dicts'),
                   help='M > 128: JSON list of variants timed next to the committed config ("tl" or Gluon overrides)')
    p.add_argument("--ab-prev", action="store_true",
                   help="16 < M <= 128: time the committed config and the session-15 entry (S15_MID) side by side")
    p.add_argument("--confirm", action="store_true",
                   help="M <= 16: time the committed config and the general kernel's (baseline) only; rows report the committed one")
    args = p.parse_args()
    known = set(SLICE_NK + SLICE_NK_UNFUSED) if args.small else set(NK)
    off = [nk for nk in args.only_nk or () if nk not in known]
    if off:  # such a pair selected no shape: the run timed nothing and said nothing (tester 2, s19)
        p.error(f"argument --only-nk: {off[0][0]}:{off[0][1]} is not one of the {'--small slice' if args.small else 'six'} "
                f"N:K shapes: {', '.join(f'{n}:{k}' for n, k in sorted(known))}")
    require_cuda("bench_fp8_gemm")
    # a job-level `timeout` sends SIGTERM: leave through the finally below so rows already
    # measured are still written
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
               commit=git_commit(),
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    rows, winners, sweep_rows = [], {}, []
    if args.precompile:
        bench_gemm(args, env, rows, winners, sweep_rows)
        return 0
    finished = False
    try:
        if not args.skip_gemm:
            bench_gemm(args, env, rows, winners, sweep_rows)
        if not args.skip_quant:
            bench_quant(args, env, rows)
        finished = True
    finally:
        # files only with something to write: a run that failed first keeps old ones. A finished run replaces them;
        # after an exception, Ctrl-C or SIGTERM (sys.exit above) an existing file stays as it was and what was
        # measured goes to FILE.partial (session 18: this finally wrote partial rows over the old files with "w");
        # a file that did not exist gets it directly
        for path, text in ((args.sweep_out, "".join(json.dumps(dict(r, **env)) + "\n" for r in sweep_rows)),
                           (args.out, "".join(json.dumps(r) + "\n" for r in rows)),
                           (args.winners, json.dumps(winners, indent=1) if winners else "")):
            if path and text:
                with StagedRows(path) as f:
                    f.write(text)
                    if not finished:
                        f.fail("run did not finish")
    print("\n%-6s %-6s %-6s %9s %9s %8s %8s %8s %7s %6s %9s %9s" % ("M", "N", "K", "us_graph", "TFLOP/s", "GB/s", "cuBLAS",
                                                              "target", "ratio", "met", "kern_TF", "cuBLAS_k"))
    ratios = []
    for r in rows:
        if r["suite"] != "fp8_gemm":
            continue
        c = r["case"]
        if r.get("ratio_vs_peer") and "target_tflops" in r:
            ratios.append(r["ratio_vs_peer"])
        print("%-6d %-6d %-6d %9.2f %9.1f %8.1f %8s %8s %7s %6s %9s %9s" % (
            c["M"], c["N"], c["K"], r["us_graph"], r["tflops"], r["gbps"], r.get("peer_tflops"),
            r.get("target_tflops", "-"), r.get("ratio_vs_peer"), r.get("meets_target", "-"), r.get("tflops_kernel", "-"),
            r.get("peer_tflops_kernel", "-")))
    if ratios:
        print("geomean ratio vs cuBLAS (peer_us/us) over the DeepGEMM shapes: %.3f over %d shapes" % (math.exp(sum(map(math.log, ratios)) / len(ratios)), len(ratios)))
    kr = [r["ratio_vs_peer_kernel"] for r in rows if r["suite"] == "fp8_gemm" and r.get("ratio_vs_peer_kernel")]
    if kr:
        print("geomean ratio vs cuBLAS, profiler kernel times: %.3f over %d shapes" % (
            math.exp(sum(map(math.log, kr)) / len(kr)), len(kr)))
    print_quant(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
