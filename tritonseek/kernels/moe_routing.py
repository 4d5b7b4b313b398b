"""MoE routing in Triton: token permute to expert-grouped rows (the weighted unpermute lives in moe_combine.py,
the gate top-k kernels in moe_gate.py; ``moe_unpermute``, ``gate_topk`` and ``router_gate_topk`` are importable
from here too).

Everything stays on the device: per-expert counts, segment offsets and row maps are computed by
kernels, so ``graph_safe=True`` paths never synchronize with the host and can be captured in a
CUDA graph. Specification: ``tritonseek.kernels.reference.moe``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonseek.kernels._utils import check_bool, check_int, interpreter_active
from tritonseek.kernels._host import cdiv, next_pow2
from tritonseek.kernels.fp8_quant import (AMAX_EPS, FP8_E4M3_MAX, _div_rn, _pdl_capable, _recip_rn, _round_to_e4m3,
                                          _scale_from_amax)
from tritonseek.kernels.moe_gate import gate_topk, router_gate_topk  # noqa: F401  (public here too)
from tritonseek.kernels.moe_routing_checks import check_permute_inputs
from tritonseek.kernels.moe_combine import moe_unpermute  # noqa: F401  (public here too)

# Entries (token, slot) handled per program by the count/rank kernels; the rank kernel builds a
# [BLOCK, BLOCK] comparison tile, so this stays small.
_ROUTE_BLOCK = 128
# Blocks scanned per step by each per-expert prefix-scan program.
_SCAN_CHUNK = 256
# Contiguous permute of e4m3 rows: their scales stored by the row-copy kernel (True) or gathered by a
# destination-ordered kernel after it (False; coalesced MN-major stores, one launch more). A/B in bench_moe.
FUSED_SCALE_COPY = True
# The multi-kernel permute (route count → scan → rank → row copy) as programmatic dependent launches
# on sm_90+ (each kernel waits for the one before at entry; A/B in bench_moe_routing).
PDL_CHAIN = True
# Contiguous permute, by row element size: a destination-ordered gather (True: rows stored in address order, token
# rows read from L2) or a token-ordered scatter (False: each token row read once, stored to its k rows).
# H200 A/B (W2 at e9e2f1c, T=4096 k=8 H=7168 fp8 + scales, permute+unpermute in one graph, 3 alternated rounds):
# gather 230.1-231.0 µs against scatter 240.5-241.4. bf16 rows were not measured: they keep the scatter.
PERMUTE_GATHER = {1: True, 2: False, 4: False}
# Tokens per row-copy program (each program loads ROWS rows of BLOCK_H columns before its k·ROWS stores).
COPY_ROWS = {1: 1, 2: 1}  # by element size in bytes (fp8, bf16)


def _copy_config(H: int, elem_bytes: int) -> tuple[int, int]:
    """(BLOCK_H, num_warps) for the permute row copies (scatter, gather; moe_unpermute sizes its own blocks).

    FP8 rows: 1024 elements / 4 warps (H200, T=4096, k=8, H=7168, graph replay: permute 112.7 µs against
    121.7 µs with 8192-element / 8-warp programs). Wider rows keep ~8 KiB per program (bf16 permute 165 µs
    against 182 µs with 1024 / 4; unpermute 136.7 against 134.5, within noise). Commits 03b7b8e / 36ecc83.
    """
    if elem_bytes == 1:
        return min(next_pow2(H), 1024), 4
    block_h = min(next_pow2(H), max(256, 8192 // elem_bytes))
    return block_h, 4 if block_h * elem_bytes <= 4096 else 8


@triton.jit
def _pdl_entry(PDL: tl.constexpr):
    # programmatic dependent launch: release the next kernel (it waits for our completion before reading what we
    # write, so it may start now: its launch latency and any weight prefetch overlap us), then wait for the
    # previous kernel (its writes visible) before anything is read
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()


@triton.jit
def _route_count_kernel(ids_ptr, counts_ptr, n_entries, E, E_BINS: tl.constexpr, BLOCK: tl.constexpr,
                        PDL: tl.constexpr = False):
    # ids: [T*k] int32 flat (token-major), −1 = no expert; counts: [num_blocks, E_BINS] int32
    # PDL (this kernel and every later one of moe_permute): a programmatic dependent launch that lets the next one
    # launch at entry and waits for the kernel before it (the chain's gaps shrink to the wait's latency)
    _pdl_entry(PDL)
    b = tl.program_id(0)
    offs = b * BLOCK + tl.arange(0, BLOCK)
    ids = tl.load(ids_ptr + offs, mask=offs < n_entries, other=-1)
    ok = (offs < n_entries) & (ids >= 0) & (ids < E)
    h = tl.histogram(tl.where(ok, ids, 0), E_BINS, mask=ok)
    tl.store(counts_ptr + b * E_BINS + tl.arange(0, E_BINS), h)


@triton.jit
def _route_scan_kernel(
    counts_ptr, offsets_ptr, totals_ptr, num_blocks,
    E_BINS: tl.constexpr, BE: tl.constexpr, CHUNK: tl.constexpr, PDL: tl.constexpr = False,
):
    _pdl_entry(PDL)
    # counts:  [num_blocks, E_BINS] int32 per-block histograms
    # offsets: [num_blocks, E_BINS] int32 out: entries of expert e in blocks before b (exclusive prefix)
    # totals:  [E_BINS] int32 out. One program per BE experts (experts scan independently).
    ev = tl.program_id(0) * BE + tl.arange(0, BE)
    rows = tl.arange(0, CHUNK)[:, None]
    run = tl.zeros([BE], dtype=tl.int32)
    for c in range(0, num_blocks, CHUNK):
        blk = c + rows
        m = blk < num_blocks
        cnt = tl.load(counts_ptr + blk * E_BINS + ev[None, :], mask=m, other=0)
        incl = tl.cumsum(cnt, axis=0)
        tl.store(offsets_ptr + blk * E_BINS + ev[None, :], run[None, :] + incl - cnt, mask=m)
        run += tl.sum(cnt, axis=0)
    tl.store(totals_ptr + ev, run)


@triton.jit
def _segment_starts(totals_ptr, seg_ptr, E, block_m, max_m, write, E_BINS: tl.constexpr, MASKED: tl.constexpr):
    # from the per-expert totals: each expert's first row (contiguous: exclusive cumsum of the counts padded to
    # block_m; masked: e·max_m) as an [E_BINS] vector; when ``write``, seg is stored: contiguous → each padded
    # segment's end (cumsum), masked → min(total, max_m) (masked_m)
    ev = tl.arange(0, E_BINS)
    total = tl.load(totals_ptr + ev)
    if MASKED:
        start = ev * max_m
        seg = tl.minimum(total, max_m)
    else:
        padded = tl.where(ev < E, (total + block_m - 1) // block_m * block_m, 0)
        seg = tl.cumsum(padded, axis=0)
        start = seg - padded
    if write:
        tl.store(seg_ptr + ev, seg)
    return start


@triton.jit
def _route_rank_kernel(
    ids_ptr, offsets_ptr, totals_ptr, seg_ptr, row_map_ptr, m_indices_ptr, src_ptr, n_entries, E, max_m, block_m,
    E_BINS: tl.constexpr, BLOCK: tl.constexpr, TOP_K: tl.constexpr, MASKED: tl.constexpr, SINGLE: tl.constexpr,
    PDL: tl.constexpr = False,
):
    _pdl_entry(PDL)
    # ids: [T*k] int32 flat; offsets: [num_blocks, E_BINS]; totals: [E_BINS] entries per expert (the scan's)
    # row_map: [T*k] int32 out; m_indices: [M_bound] int32 (pre-filled −1; contiguous layout only)
    # src: [M_bound] int32 out: source token of each written destination row
    # SINGLE (masked layout, one block holds every entry — decode): no cross-block offsets, expert e's slab
    #   starts at e*max_m, and this program writes seg[e] = min(count_e, max_m) from its own histogram.
    # Otherwise every program derives the segment starts from the totals (_segment_starts: 1 KiB read, one
    #   cumsum) and program 0 writes seg: no segments kernel between the scan and this one (H200 at 3f5f5e2, T=4096
    #   k=8 fp8 permute+unpermute graph, 3 alternated runs each: 238.2-240.2 µs either way, one launch fewer)
    b = tl.program_id(0)
    i = tl.arange(0, BLOCK)
    offs = b * BLOCK + i
    inb = offs < n_entries
    ids = tl.load(ids_ptr + offs, mask=inb, other=-1)
    ok = inb & (ids >= 0) & (ids < E)
    ids = tl.where(ok, ids, -1)
    same = (ids[:, None] == ids[None, :]) & (i[None, :] < i[:, None])
    rank = tl.sum(same.to(tl.int32), axis=1)
    if SINGLE:
        h = tl.histogram(tl.where(ok, ids, 0), E_BINS, mask=ok)
        tl.store(seg_ptr + tl.arange(0, E_BINS), tl.minimum(h, max_m))
    else:
        rank += tl.load(offsets_ptr + b * E_BINS + tl.where(ok, ids, 0), mask=ok, other=0)
    if MASKED:
        ok = ok & (rank < max_m)
    if SINGLE:
        row = tl.where(ok, ids, 0) * max_m + rank
    else:
        start = _segment_starts(totals_ptr, seg_ptr, E, block_m, max_m, b == 0, E_BINS, MASKED)
        row = tl.gather(start, tl.where(ok, ids, 0), 0) + rank
    tl.store(row_map_ptr + offs, tl.where(ok, row, -1), mask=inb)
    tl.store(src_ptr + row, offs // TOP_K, mask=ok)
    if not MASKED:
        tl.store(m_indices_ptr + row, ids, mask=ok)


@triton.jit
def _permute_masked_decode_kernel(
    ids_ptr, x_ptr, xs_ptr, out_ptr, outs_ptr, row_map_ptr, seg_ptr,
    n_entries, E, max_m, H, HS, stride_xt, stride_o, stride_st, stride_sc, stride_osg, stride_osr, stride_osc,
    eps, fp8_max,
    E_BINS: tl.constexpr, BLOCK: tl.constexpr, TOP_K: tl.constexpr, BLOCK_H: tl.constexpr, SC_PER: tl.constexpr,
    HAS_SCALE: tl.constexpr, QUANT: tl.constexpr, EXACT_ROUND: tl.constexpr, FAST_DIV: tl.constexpr,
    PDL: tl.constexpr = False, UE8M0: tl.constexpr = False,
):
    # PDL: launched as a programmatic dependent launch: let the next one (the masked GEMM, which waits for us in
    # turn) launch and prefetch its weights, then wait for the previous kernel before reading anything
    _pdl_entry(PDL)
    # Masked permute in one launch when every (token, slot) entry fits one block (decode): each program
    # (token t, column block) ranks all entries itself (as _route_rank_kernel with SINGLE), then copies its
    # columns of x[t] — and the scale groups they hold — to the rows of t's entries.
    # QUANT: x is bf16/fp16/fp32 and each 128-column group is quantized here to e4m3 exactly as
    #   fp8_quant.per_token_group_quant_fp8 does (same helpers, UE8M0: power-of-two scales); its scales go to outs
    #   (BLOCK_H = SC_PER·128).
    # ids: [n_entries] int32 flat (token-major); x: [T, H] (stride_xt); xs: [T, HS] fp32 (stride_st, stride_sc)
    # out: [E*max_m, H] (stride_o); outs: row r = g*max_m + i at g*stride_osg + i*stride_osr + c*stride_osc
    # row_map: [n_entries] int32 out; seg: [E_BINS] int32 out (masked_m), both written by program (0, 0)
    t = tl.program_id(0)
    cb = tl.program_id(1)
    i = tl.arange(0, BLOCK)
    inb = i < n_entries
    ids = tl.load(ids_ptr + i, mask=inb, other=-1)
    ok = inb & (ids >= 0) & (ids < E)
    ids = tl.where(ok, ids, -1)
    same = (ids[:, None] == ids[None, :]) & (i[None, :] < i[:, None])
    rank = tl.sum(same.to(tl.int32), axis=1)
    ok = ok & (rank < max_m)
    row = tl.where(ok, ids * max_m + rank, -1)
    if (t == 0) & (cb == 0):
        tl.store(row_map_ptr + i, row, mask=inb)
        h = tl.histogram(tl.where(ok, ids, 0), E_BINS, mask=ok)
        tl.store(seg_ptr + tl.arange(0, E_BINS), h)
    cols = cb * BLOCK_H + tl.arange(0, BLOCK_H)
    cm = cols < H
    sc = (cb * BLOCK_H) // 128 + tl.arange(0, SC_PER)
    scm = (sc < HS) & ((cb * BLOCK_H) % 128 == 0)
    if QUANT:
        xv = tl.reshape(tl.load(x_ptr + t.to(tl.int64) * stride_xt + cols, mask=cm, other=0.0).to(tl.float32),
                        [SC_PER, 128])
        sv = _scale_from_amax(tl.max(tl.abs(xv), axis=1), eps, fp8_max, UE8M0)
        q = _div_rn(xv, sv[:, None], _recip_rn(sv)[:, None], FAST_DIV)
        if EXACT_ROUND:  # interpreter: clamp and round onto the e4m3 grid here (its cast rounds wrongly)
            q = _round_to_e4m3(tl.minimum(tl.maximum(q, -fp8_max), fp8_max))
        v = tl.reshape(q, [BLOCK_H]).to(out_ptr.dtype.element_ty)
    else:
        v = tl.load(x_ptr + t.to(tl.int64) * stride_xt + cols, mask=cm)
        if HAS_SCALE:
            sv = tl.load(xs_ptr + t.to(tl.int64) * stride_st + sc * stride_sc, mask=scm)
    for j in tl.static_range(TOP_K):
        r = tl.sum(tl.where(i == t * TOP_K + j, row, 0), axis=0)
        if r >= 0:
            tl.store(out_ptr + r.to(tl.int64) * stride_o + cols, v, mask=cm)
            if HAS_SCALE:
                g = r // max_m
                tl.store(outs_ptr + g.to(tl.int64) * stride_osg + (r - g * max_m) * stride_osr + sc * stride_osc, sv,
                         mask=scm)


@triton.jit
def _permute_scale_kernel(
    xs_ptr, src_ptr, valid_ptr, seg_ptr, outs_ptr, n_rows, HS, stride_st, stride_sc, rows_per_group,
    stride_osg, stride_osr, stride_osc,
    BLOCK_R: tl.constexpr, HS_PAD: tl.constexpr, MASKED: tl.constexpr, PDL: tl.constexpr = False,
):
    _pdl_entry(PDL)
    # Destination-ordered scale gather: consecutive programs write consecutive rows, so MN-major
    # output scales (stride_osr = 1) are stored coalesced.
    # xs: [T, HS] fp32 (stride_st, stride_sc); src: [n_rows] int32 source token per row
    # contiguous: valid_ptr = m_indices (row valid iff ≥ 0); masked: row r valid iff r % rows_per_group < seg[g]
    # outs: row r = g*rows_per_group + i at g*stride_osg + i*stride_osr + c*stride_osc
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    inb = r < n_rows
    grp = r // rows_per_group
    ri = r - grp * rows_per_group
    if MASKED:
        ok = inb & (ri < tl.load(seg_ptr + grp, mask=inb, other=0))
    else:
        ok = inb & (tl.load(valid_ptr + r, mask=inb, other=-1) >= 0)
    t = tl.load(src_ptr + r, mask=ok, other=0).to(tl.int64)
    c = tl.arange(0, HS_PAD)[None, :]
    m = ok[:, None] & (c < HS)
    v = tl.load(xs_ptr + t[:, None] * stride_st + c * stride_sc, mask=m)
    tl.store(outs_ptr + grp.to(tl.int64)[:, None] * stride_osg + ri[:, None] * stride_osr + c * stride_osc, v, mask=m)


@triton.jit
def _permute_copy_kernel(
    x_ptr, row_map_ptr, out_ptr, xs_ptr, outs_ptr, T, H, HS, stride_xt, stride_o, stride_st, stride_sc, stride_osr,
    stride_osc,
    TOP_K: tl.constexpr, BLOCK_H: tl.constexpr, HAS_SCALE: tl.constexpr, SC_PER: tl.constexpr, ROWS: tl.constexpr,
    PDL: tl.constexpr = False,
):
    # x: [T, H] (row stride stride_xt, unit column stride); row_map: [T, TOP_K] int32 flat destination rows
    # out: [M, H] (row stride stride_o). Each token row is read once and written to its k rows; a program
    # copies ROWS tokens × BLOCK_H columns (all ROWS loads in flight before the stores).
    # HAS_SCALE: the SC_PER = BLOCK_H/128 scale groups of these columns move along: xs [T, HS] (stride_st,
    #   stride_sc) → outs row r at r*stride_osr + c*stride_osc (any layout; MN-major in moe_permute)
    _pdl_entry(PDL)
    t = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    tm = t < T
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    m2 = tm[:, None] & (cols < H)[None, :]
    v = tl.load(x_ptr + t[:, None] * stride_xt + cols[None, :], mask=m2)
    if HAS_SCALE:
        sc = tl.program_id(1) * SC_PER + tl.arange(0, SC_PER)
        sm2 = tm[:, None] & (sc < HS)[None, :]
        sv = tl.load(xs_ptr + t[:, None] * stride_st + sc[None, :] * stride_sc, mask=sm2)
    for j in tl.static_range(TOP_K):
        r = tl.load(row_map_ptr + t * TOP_K + j, mask=tm, other=-1).to(tl.int64)
        ok = (r >= 0)[:, None]
        tl.store(out_ptr + r[:, None] * stride_o + cols[None, :], v, mask=m2 & ok)
        if HAS_SCALE:
            tl.store(outs_ptr + r[:, None] * stride_osr + sc[None, :] * stride_osc, sv, mask=sm2 & ok)


@triton.jit
def _permute_gather_kernel(
    x_ptr, xs_ptr, src_ptr, valid_ptr, out_ptr, outs_ptr, n_rows, H, HS, stride_xt, stride_o, stride_st, stride_sc,
    stride_osr, stride_osc,
    ROWS: tl.constexpr, BLOCK_H: tl.constexpr, HAS_SCALE: tl.constexpr, SC_PER: tl.constexpr,
    PDL: tl.constexpr = False,
):
    # Destination-ordered permute (contiguous layout): a program fills ROWS consecutive destination rows × BLOCK_H
    # columns (and the SC_PER scale groups of those columns) from their source tokens, so the T·k·H bytes are
    # stored in address order and the T·H token bytes (small enough to stay in L2) are gathered.
    # x: [T, H] (stride_xt); xs: [T, HS] fp32 (stride_st, stride_sc); src: [n_rows] int32 source token per row
    # valid: m_indices [n_rows] (row written iff ≥ 0; padding rows are skipped); out: [n_rows, H] (stride_o)
    # outs: row r at r*stride_osr + c*stride_osc
    _pdl_entry(PDL)
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    ok = r < n_rows
    ok = ok & (tl.load(valid_ptr + r, mask=ok, other=-1) >= 0)
    t = tl.load(src_ptr + r, mask=ok, other=0).to(tl.int64)
    r64 = r.to(tl.int64)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    m2 = ok[:, None] & (cols < H)[None, :]
    v = tl.load(x_ptr + t[:, None] * stride_xt + cols[None, :], mask=m2)
    tl.store(out_ptr + r64[:, None] * stride_o + cols[None, :], v, mask=m2)
    if HAS_SCALE:
        sc = tl.program_id(1) * SC_PER + tl.arange(0, SC_PER)
        sm2 = ok[:, None] & (sc < HS)[None, :]
        sv = tl.load(xs_ptr + t[:, None] * stride_st + sc[None, :] * stride_sc, mask=sm2)
        tl.store(outs_ptr + r64[:, None] * stride_osr + sc[None, :] * stride_osc, sv, mask=sm2)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def _route(topk_ids, num_experts, block_m, max_m, masked, m_bound):
    """count → per-expert scan → rank (segment starts from the scan's totals).

    Returns (row_map [T, k], seg [E_BINS], m_indices [m_bound] or None, src [rows] int32 source token per row).
    """
    dev = topk_ids.device
    pdl = PDL_CHAIN and _pdl_capable(dev)
    T, k = topk_ids.shape
    n = T * k
    ids = topk_ids.reshape(-1).to(torch.int32).contiguous()
    e_bins = next_pow2(num_experts)
    nb = cdiv(n, _ROUTE_BLOCK)
    counts = torch.empty(max(nb, 1), e_bins, dtype=torch.int32, device=dev)
    offsets = torch.empty_like(counts)
    totals = torch.empty(e_bins, dtype=torch.int32, device=dev)
    seg = torch.empty(e_bins, dtype=torch.int32, device=dev)
    row_map = torch.empty(T, k, dtype=torch.int32, device=dev)
    n_rows = num_experts * max_m if masked else m_bound
    src = torch.empty(max(n_rows, 1), dtype=torch.int32, device=dev)
    m_indices = None if masked else torch.full((m_bound,), -1, dtype=torch.int32, device=dev)
    if n == 0:
        seg.zero_()
        return row_map, seg, m_indices, src
    if masked and nb == 1:  # decode: one launch does the whole routing
        _route_rank_kernel[(1,)](ids, ids, ids, seg, row_map, ids, src, n, num_experts, max_m, block_m, E_BINS=e_bins,
                                 BLOCK=_ROUTE_BLOCK, TOP_K=k, MASKED=True, SINGLE=True, num_warps=4)
        return row_map, seg, m_indices, src
    _route_count_kernel[(nb,)](ids, counts, n, num_experts, E_BINS=e_bins, BLOCK=_ROUTE_BLOCK, PDL=pdl, num_warps=4,
                               launch_pdl=pdl)
    be = min(e_bins, 32)
    _route_scan_kernel[(e_bins // be,)](counts, offsets, totals, nb, E_BINS=e_bins, BE=be,
                                        CHUNK=min(_SCAN_CHUNK, next_pow2(nb)), PDL=pdl, num_warps=4,
                                        launch_pdl=pdl)
    _route_rank_kernel[(nb,)](ids, offsets, totals, seg, row_map, m_indices if m_indices is not None else ids, src,
                              n, num_experts, max_m, block_m, E_BINS=e_bins, BLOCK=_ROUTE_BLOCK, TOP_K=k,
                              MASKED=masked, SINGLE=False, PDL=pdl, num_warps=4, launch_pdl=pdl)
    return row_map, seg, m_indices, src


def _copy_rows(hidden, row_map, out, hidden_scale=None, out_scale=None):
    """out[row_map[t, j]] = hidden[t] (and out_scale[row] = hidden_scale[t] when given: out_scale [M, HS])."""
    T, H = hidden.shape
    if T == 0:
        return
    pdl = PDL_CHAIN and _pdl_capable(hidden.device)
    block_h, warps = _copy_config(H, hidden.element_size())
    rows = COPY_ROWS.get(hidden.element_size(), 1)
    sc = hidden_scale is not None
    if sc:
        block_h = max(block_h, 128)  # whole scale groups per program
    _permute_copy_kernel[(cdiv(T, rows), cdiv(H, block_h))](
        hidden, row_map, out, hidden_scale if sc else hidden, out_scale if sc else out, T, H,
        hidden_scale.shape[1] if sc else 0, hidden.stride(0), out.stride(0),
        *(hidden_scale.stride() if sc else (0, 0)), *(out_scale.stride() if sc else (0, 0)),
        TOP_K=row_map.shape[1], BLOCK_H=block_h, HAS_SCALE=sc, SC_PER=max(block_h // 128, 1), ROWS=rows, PDL=pdl,
        num_warps=warps, launch_pdl=pdl,
    )


def _gather_rows(hidden, src, m_indices, out, hidden_scale=None, out_scale=None):
    """Contiguous layout, destination order: out[r] = hidden[src[r]] (and out_scale[r] = hidden_scale[src[r]]) for
    every row r with m_indices[r] ≥ 0 (out_scale [M, HS], any strides)."""
    n_rows, H = out.shape
    if n_rows == 0 or hidden.shape[0] == 0:
        return
    pdl = PDL_CHAIN and _pdl_capable(hidden.device)
    block_h, warps = _copy_config(H, hidden.element_size())
    sc = hidden_scale is not None
    if sc:
        block_h = max(block_h, 128)  # whole scale groups per program
    rows = max(1, min(16, 8192 // (block_h * hidden.element_size())))  # ~8 KiB per program
    _permute_gather_kernel[(cdiv(n_rows, rows), cdiv(H, block_h))](
        hidden, hidden_scale if sc else hidden, src, m_indices, out, out_scale if sc else out, n_rows, H,
        hidden_scale.shape[1] if sc else 0, hidden.stride(0), out.stride(0),
        *(hidden_scale.stride() if sc else (0, 0)), *(out_scale.stride() if sc else (0, 0)),
        ROWS=rows, BLOCK_H=block_h, HAS_SCALE=sc, SC_PER=max(block_h // 128, 1), PDL=pdl, num_warps=warps,
        launch_pdl=pdl,
    )


def _gather_scales(hidden_scale, src, valid, seg, out_scale, n_rows, rows_per_group, masked):
    """out_scale [G, rows, HS] (any strides) ← hidden_scale[src[row]] for every valid destination row."""
    if n_rows == 0 or hidden_scale.shape[0] == 0:
        return
    hs = hidden_scale.shape[1]
    hs_pad = next_pow2(hs)
    block_r = max(16, min(128, 4096 // hs_pad))
    pdl = PDL_CHAIN and _pdl_capable(hidden_scale.device)
    _permute_scale_kernel[(cdiv(n_rows, block_r),)](
        hidden_scale, src, valid, seg, out_scale, n_rows, hs, hidden_scale.stride(0), hidden_scale.stride(1),
        max(rows_per_group, 1), *out_scale.stride(), BLOCK_R=block_r, HS_PAD=hs_pad, MASKED=masked, PDL=pdl,
        num_warps=4, launch_pdl=pdl,
    )


def moe_permute_bound(num_tokens: int, top_k: int, num_experts: int, block_m: int) -> int:
    """Row bound of the graph-safe contiguous layout (``moe_permute(graph_safe=True)``): T·k + E·(block_m − 1).

    num_tokens T ≥ 0, top_k k ≥ 0, num_experts E ≥ 1, block_m ≥ 1: ints (bools rejected), else TypeError /
    ValueError naming the argument. Returns an int (rows). Source: the issue's bound for DeepGEMM's contiguous
    layout (each expert's segment padded to block_m)."""
    num_tokens = check_int("num_tokens", num_tokens, 0)
    top_k = check_int("top_k", top_k, 0)
    num_experts = check_int("num_experts", num_experts, 1)
    block_m = check_int("block_m", block_m, 1)
    return num_tokens * top_k + num_experts * (block_m - 1)


def moe_permute(
    hidden: torch.Tensor,
    topk_ids: torch.Tensor,
    num_experts: int,
    block_m: int,
    hidden_scale: torch.Tensor | None = None,
    *,
    graph_safe: bool = False,
    check_ids: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Group token rows by expert: permuted[row_map[t, j]] = hidden[t] (and its scales) for topk_ids[t, j] ≥ 0.

    hidden: [T, H ≥ 1] bf16/fp16/fp32 or float8_e4m3fn (unit column stride).
    topk_ids: [T, k] int32/int64 expert ids, −1 = no expert (row_map −1, nothing copied).
    num_experts: E; block_m: segment alignment (the contiguous grouped GEMM's block M, 128 by default there).
    hidden_scale: [T, ceil(H/128)] fp32 per-token-group scales (any strides), required for e4m3 ``hidden`` and
        rejected for other dtypes.
    Returns (permuted_hidden [M, H], permuted_scale [M, ceil(H/128)] fp32 MN-major (stride (1, M_bound)) or
    None, m_indices [M] int32, row_map [T, k] int32): segments in expert order, token-then-slot order inside a segment, each padded
    to a multiple of block_m; m_indices −1 on padding rows. Padding rows of permuted_hidden/scale are
    NOT written (unspecified values; the grouped GEMM never lets them reach a valid output row).
    With graph_safe=False, M = Σ_e ceil(count_e/block_m)·block_m exactly as ``moe_permute_ref`` (one
    host sync reads M). With graph_safe=True nothing syncs: M = T·k + E·(block_m − 1) (the bound),
    rows past the real end have m_indices −1.
    topk_ids must lie in [−1, E), else ValueError naming the entry (as the reference): always on CPU tensors, on
    CUDA when check_ids (default; one device→host sync, skipped during CUDA-graph capture). With check_ids=False
    (the model: ids from its own gate) out-of-range CUDA ids are undefined behaviour.
    Raises TypeError/ValueError naming the argument for bad dtypes/shapes/devices, num_experts / block_m not
    a positive int (bools rejected), graph_safe / check_ids not a bool.
    Layout: DeepGEMM m_grouped contiguous (as produced by DeepEP + moe_align_block_size in SGLang/vLLM).
    """
    num_experts = check_permute_inputs(hidden, topk_ids, num_experts, hidden_scale, check_ids)
    block_m = check_int("block_m", block_m, 1)
    graph_safe = check_bool("graph_safe", graph_safe)
    T, H = hidden.shape
    k = topk_ids.shape[1]
    bound = moe_permute_bound(T, k, num_experts, block_m)
    row_map, seg, m_indices, src = _route(topk_ids, num_experts, block_m, 0, False, bound)
    out = torch.empty(bound, H, dtype=hidden.dtype, device=hidden.device)
    out_scale = None
    if hidden_scale is not None:  # MN-major (stride (1, M)), the layout the grouped GEMM reads fastest
        out_scale = torch.empty(hidden_scale.shape[1], bound, dtype=torch.float32, device=hidden.device).t()
    if PERMUTE_GATHER.get(hidden.element_size(), False):
        _gather_rows(hidden, src, m_indices, out, hidden_scale, out_scale)
    elif hidden_scale is not None and FUSED_SCALE_COPY:  # scales stored by the row copy (one launch fewer)
        _copy_rows(hidden, row_map, out, hidden_scale, out_scale)
    else:
        _copy_rows(hidden, row_map, out)
        if hidden_scale is not None:
            _gather_scales(hidden_scale, src, m_indices, seg, out_scale.unsqueeze(0), bound, bound, False)
    if not graph_safe:
        m_pad = int(seg[num_experts - 1].item()) if T * k else 0
        out, m_indices = out[:m_pad], m_indices[:m_pad]
        out_scale = out_scale[:m_pad] if out_scale is not None else None
    return out, out_scale, m_indices, row_map


def moe_permute_masked(
    hidden: torch.Tensor,
    topk_ids: torch.Tensor,
    num_experts: int,
    max_m: int,
    hidden_scale: torch.Tensor | None = None,
    *,
    quantize: bool = False,
    pdl: bool = False,
    check_ids: bool = True,
    scale_ue8m0: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Scatter token rows into per-expert slabs: permuted[e, r] = hidden[t] for the r-th (token, slot) routed to e.

    hidden: [T, H] (bf16/fp16/fp32 or e4m3 with hidden_scale [T, ceil(H/128)] fp32); topk_ids: [T, k], −1 skipped.
    max_m: rows per expert slab (T suffices when no token repeats an expert); entries past it are dropped
    (row_map −1) and masked_m is clamped to max_m.
    quantize: hidden (bf16/fp16/fp32, no hidden_scale) is quantized on the way exactly as
        ``per_token_group_quant_fp8(hidden, 128)`` would (e4m3 rows, 1×128 scales); at decode sizes
        (T·k ≤ 128) inside the same single launch as the routing and the copies.
    scale_ue8m0: with quantize, round each scale up to a power of two first, as
        ``per_token_group_quant_fp8(hidden, 128, scale_ue8m0=True)`` (DeepSeek-V3.1's ``scale_fmt: "ue8m0"``);
        a bool, off by default (True without quantize is a ValueError: there is nothing to round).
    pdl: that single decode launch (T·k ≤ 128; CUDA sm_90+, ignored elsewhere) is a programmatic dependent
        launch: it lets the next kernel launch at once and waits for the previous kernel before reading anything
        (griddepcontrol), so a PDL-launched masked GEMM after it can start early.
    Returns (permuted [E, max_m, H], permuted_scale [E, max_m, ceil(H/128)] fp32 (MN-major per expert) or None,
    masked_m [E] int32,
    row_map [T, k] int32 flat row e·max_m + r into permuted.view(E·max_m, H)). Rows ≥ masked_m[e] are not
    written. Never syncs with the host (CUDA-graph safe); feeds ``grouped_fp8_gemm_masked`` and, with the
    GEMM output viewed as [E·max_m, N], ``moe_unpermute``.
    topk_ids must lie in [−1, E), else ValueError naming the entry (as ``moe_permute_ref``): always on CPU
    tensors, on CUDA when check_ids (default; one device→host sync, skipped during CUDA-graph capture). With
    check_ids=False (the model's graph-captured decode) out-of-range CUDA ids are undefined behaviour.
    Raises TypeError/ValueError naming the argument for bad dtypes/shapes/devices, num_experts / max_m not a
    positive int (bools rejected), quantize / pdl / check_ids / scale_ue8m0 not a bool, quantize with e4m3 hidden
    or with hidden_scale, scale_ue8m0 without quantize.
    Layout: DeepGEMM m_grouped masked (DeepEP low-latency dispatch).
    """
    num_experts = check_permute_inputs(hidden, topk_ids, num_experts, hidden_scale, check_ids)
    max_m = check_int("max_m", max_m, 1)
    quantize = check_bool("quantize", quantize)
    if quantize and (hidden_scale is not None or hidden.dtype not in (torch.bfloat16, torch.float16, torch.float32)):
        raise ValueError(f"quantize=True takes bf16/fp16/fp32 hidden without hidden_scale, got {hidden.dtype}")
    ue8m0 = check_bool("scale_ue8m0", scale_ue8m0)
    if ue8m0 and not quantize:
        raise ValueError("scale_ue8m0=True needs quantize=True (it rounds the scales the permute computes)")
    pdl = check_bool("pdl", pdl)
    use_pdl = pdl and _pdl_capable(hidden.device)
    T, H = hidden.shape
    k = topk_ids.shape[1]
    dev = hidden.device
    fast = 0 < T * k <= _ROUTE_BLOCK and H > 0  # decode: routing, (quant,) row and scale copies in one launch
    if quantize and not fast:
        from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8

        hidden, hidden_scale = per_token_group_quant_fp8(hidden, 128, ue8m0)
        quantize = False
    out_dtype = torch.float8_e4m3fn if quantize else hidden.dtype
    out = torch.empty(num_experts, max_m, H, dtype=out_dtype, device=dev)
    out_scale = None
    hs = hidden_scale.shape[1] if hidden_scale is not None else cdiv(H, 128)
    if hidden_scale is not None or quantize:
        out_scale = torch.empty(num_experts, hs, max_m, dtype=torch.float32,
                                device=dev).transpose(1, 2)  # MN-major per expert
    if fast:
        e_bins = next_pow2(num_experts)
        row_map = torch.empty(T, k, dtype=torch.int32, device=dev)
        seg = torch.empty(e_bins, dtype=torch.int32, device=dev)
        ids = topk_ids.reshape(-1).to(torch.int32).contiguous()
        block_h, warps = _copy_config(H, 1 if quantize else hidden.element_size())
        if quantize:
            block_h = max(block_h, 128)  # whole 1×128 groups per program
        xs = hidden_scale if hidden_scale is not None else ids  # never read without scales
        os_ = out_scale if out_scale is not None else out
        _permute_masked_decode_kernel[(T, cdiv(H, block_h))](
            ids, hidden, xs, out, os_, row_map, seg,
            T * k, num_experts, max_m, H, hs if out_scale is not None else 0, hidden.stride(0),
            out.stride(1), xs.stride(0) if hidden_scale is not None else 0,
            xs.stride(1) if hidden_scale is not None else 0, *(os_.stride() if out_scale is not None else (0, 0, 0)),
            AMAX_EPS, FP8_E4M3_MAX,
            E_BINS=e_bins, BLOCK=next_pow2(T * k), TOP_K=k, BLOCK_H=block_h,
            SC_PER=max(block_h // 128, 1), HAS_SCALE=out_scale is not None, QUANT=quantize,
            EXACT_ROUND=interpreter_active(), FAST_DIV=not interpreter_active(), PDL=use_pdl, num_warps=warps,
            launch_pdl=use_pdl, **({"UE8M0": True} if quantize and ue8m0 else {}),  # off: the launch of before
        )
        return out, out_scale, seg[:num_experts], row_map  # seg counts only entries with rank < max_m
    row_map, seg, _, src = _route(topk_ids, num_experts, 1, max_m, True, 0)
    _copy_rows(hidden, row_map, out.view(-1, H))
    if hidden_scale is not None:
        _gather_scales(hidden_scale, src, src, seg, out_scale, num_experts * max_m, max_m, True)
    return out, out_scale, seg[:num_experts], row_map


__all__ = ["gate_topk", "router_gate_topk", "moe_permute", "moe_permute_masked", "moe_permute_bound", "moe_unpermute"]
