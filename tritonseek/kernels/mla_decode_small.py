"""Small-batch paged MLA decode (batch 1-4, many heads): a latency-first split kernel for ``mla_decode``.

out[b, i, h] = Σ_j softmax_j(q[b, i, h]·K[b, j]·scale) · K[b, j, :head_dim_v],  j ≤ s_k − s_q + i

At batch 1-4 the cache is small (1024 keys × 576 × 2 B = 1.2 MB per sequence) and the op is bound by
latency, not bandwidth: every dependent step (schedule, cache tile, partial, combine launch) shows. This
path differs from ``mla_decode``'s scheduled split kernel in two ways:

* **no schedule kernel.** The grid is (head tiles, NUM_SPLITS, batch). Program (t, s, b) reads
  cache_seqlens[b] itself and takes tiles [s·tps, (s+1)·tps) of its sequence, tps = max(⌈tiles /
  NUM_SPLITS⌉, MIN_TILES): an even cut of each sequence into pieces, decided on the device (graph-safe;
  programs past the last tile exit). A sequence cut into one piece is written straight to ``out``;
  otherwise each piece writes its fp32 partial (o/l, lse) to slot b·NUM_SPLITS + s, the program (0, 0, b)
  writes split[b] = (b·(NUM_SPLITS − 1), pieces), and ``mla_decode_tiles._mla_combine_kernel`` merges
  slots split[b, 0] + i + b, as for the scheduled path (an empty sequence: out = 0, lse = −inf there).
* **programmatic dependent launch (sm_90+).** The split kernel may be launched as a dependent of the
  previous kernel (PDL) and may let the next one launch early (TRIGGER); the combine may be launched as
  a dependent of the split (COMBINE_PDL), so its launch overlaps the split.

The cache tiles, the masking (rows past cache_seqlens zeroed before the dots, causal bottom-right diagonal
peeled) and the dots are ``mla_decode_tiles._tile_step``, the same as the scheduled kernel.

Config keys (``mla_decode.default_config``'s small-batch entries, SMALL=True): BLOCK_H, BLOCK_N, num_warps,
num_stages, NUM_SPLITS, MIN_TILES, USE_TMA, COMBINE_ROWS (rows per combine program), PDL, TRIGGER (0/1/2,
see the kernel), COMBINE_PDL; every key is checked by ``check_mla_config``. H200 (W1, session 14): merging
the partials in the last-arriving split program instead of a combine kernel (an arrival counter per sequence
and head tile) was slower at every small-batch case (b1 s_k 1024: 19.2-23.8 µs vs 14.0 for the combine
kernel; the one merging program reads all pieces of its 16 rows), so it was removed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonseek.kernels._utils import check_config, interpreter_active
from tritonseek.kernels._host import cdiv
from tritonseek.kernels.fp8_quant import _pdl_capable
from tritonseek.kernels.mla_decode_tiles import _mla_combine_kernel, _tile_step, cache_tiles


@triton.jit
def _attend_span(
    q_ptr, kv_ptr, kn_desc, kr_desc, bt_ptr, b, rows, k_lo, k_hi, seqlen,
    stride_qb, stride_qs, stride_qh, stride_kvb, stride_kvt, stride_btb,
    num_heads, seqlen_q, d_qk, head_dim_v, sm_scale_log2, page_shift,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_DV2: tl.constexpr, BLOCK_R: tl.constexpr,
    CAUSAL: tl.constexpr, USE_TMA: tl.constexpr, DOT_FP32: tl.constexpr, NUM_STAGES: tl.constexpr,
    EVEN_D: tl.constexpr, WARP_SPECIALIZE: tl.constexpr = False,
):
    # Attention of BLOCK_H query rows of sequence b over its cache tiles [k_lo, k_hi): normalized
    # (o0, o1) = the two halves of o/l in fp32 and lse (natural log; −inf where no key is visible).
    row_ok = rows < seqlen_q * num_heads
    s_idx = rows // num_heads
    h_idx = rows % num_heads
    c = tl.arange(0, BLOCK_DV2)
    cr_mem = head_dim_v + tl.arange(0, BLOCK_R)
    if EVEN_D:
        qm0 = row_ok[:, None]
        qm1 = row_ok[:, None]
        qmr = row_ok[:, None]
    else:
        qm0 = row_ok[:, None] & (c < head_dim_v)[None, :]
        qm1 = row_ok[:, None] & ((c + BLOCK_DV2) < head_dim_v)[None, :]
        qmr = row_ok[:, None] & (cr_mem < d_qk)[None, :]
    qb = q_ptr + b.to(tl.int64) * stride_qb + s_idx.to(tl.int64) * stride_qs + h_idx.to(tl.int64) * stride_qh
    q0 = tl.load(qb[:, None] + c[None, :], mask=qm0, other=0.0)
    q1 = tl.load(qb[:, None] + (c + BLOCK_DV2)[None, :], mask=qm1, other=0.0)
    qr = tl.load(qb[:, None] + cr_mem[None, :], mask=qmr, other=0.0)
    if DOT_FP32:
        q0 = q0.to(tl.float32)
        q1 = q1.to(tl.float32)
        qr = qr.to(tl.float32)
    if CAUSAL:
        limit = seqlen - seqlen_q + s_idx  # last visible key per row
        first_masked = seqlen - seqlen_q + 1
    else:
        limit = s_idx * 0 + seqlen - 1
        first_masked = seqlen
    k_fast = tl.maximum(tl.minimum(k_hi, first_masked // BLOCK_N), k_lo)
    bt_row = bt_ptr + b.to(tl.int64) * stride_btb
    m_i = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc0 = tl.zeros([BLOCK_H, BLOCK_DV2], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_H, BLOCK_DV2], dtype=tl.float32)
    for k in tl.range(k_lo, k_fast, num_stages=NUM_STAGES, warp_specialize=WARP_SPECIALIZE):
        acc0, acc1, m_i, l_i = _tile_step(
            q0, q1, qr, acc0, acc1, m_i, l_i, kv_ptr, kn_desc, kr_desc, bt_row, k, seqlen, limit,
            stride_kvb, stride_kvt, head_dim_v, d_qk, sm_scale_log2, page_shift,
            BLOCK_N, BLOCK_DV2, BLOCK_R, False, USE_TMA, DOT_FP32, EVEN_D)
    for k in tl.range(k_fast, k_hi, num_stages=1):  # ≤ 2 tail tiles (cache end, causal diagonal)
        acc0, acc1, m_i, l_i = _tile_step(
            q0, q1, qr, acc0, acc1, m_i, l_i, kv_ptr, kn_desc, kr_desc, bt_row, k, seqlen, limit,
            stride_kvb, stride_kvt, head_dim_v, d_qk, sm_scale_log2, page_shift,
            BLOCK_N, BLOCK_DV2, BLOCK_R, True, USE_TMA, DOT_FP32, EVEN_D)
    has = l_i != 0.0  # l_i = 0: no visible key (out 0, lse −inf); NaN scores give l_i NaN: out, lse NaN
    inv_l = tl.where(has, 1.0 / tl.where(has, l_i, 1.0), 0.0)
    lse = tl.where(has, (m_i + tl.math.log2(tl.where(has, l_i, 1.0))) * 0.6931471805599453, float("-inf"))
    return acc0 * inv_l[:, None], acc1 * inv_l[:, None], lse


@triton.jit
def _store_rows(out_ptr, lse_ptr, b, rows, o0, o1, lse, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                num_heads, seqlen_q, head_dim_v, BLOCK_DV2: tl.constexpr, EVEN_D: tl.constexpr):
    # out[b, s, h, :head_dim_v] = (o0 ‖ o1) in out's dtype, lse[b, h, s] = lse for rows = s·num_heads + h.
    # EVEN_D (head_dim_v = 2·BLOCK_DV2): row masks only, so the stores are 16-byte vectors.
    row_ok = rows < seqlen_q * num_heads
    s_idx = rows // num_heads
    h_idx = rows % num_heads
    c = tl.arange(0, BLOCK_DV2)
    if EVEN_D:
        m0 = row_ok[:, None]
        m1 = row_ok[:, None]
    else:
        m0 = row_ok[:, None] & (c < head_dim_v)[None, :]
        m1 = row_ok[:, None] & ((c + BLOCK_DV2) < head_dim_v)[None, :]
    ob = out_ptr + b.to(tl.int64) * stride_ob + s_idx.to(tl.int64) * stride_os + h_idx.to(tl.int64) * stride_oh
    tl.store(ob[:, None] + c[None, :], o0.to(out_ptr.dtype.element_ty), mask=m0)
    tl.store(ob[:, None] + (c + BLOCK_DV2)[None, :], o1.to(out_ptr.dtype.element_ty), mask=m1)
    tl.store(lse_ptr + b.to(tl.int64) * stride_lb + h_idx.to(tl.int64) * stride_lh + s_idx, lse, mask=row_ok)


@triton.jit(do_not_specialize=["stride_btb", "stride_lb", "stride_lh", "max_blocks", "num_heads", "seqlen_q",
                               "d_qk", "head_dim_v", "page_shift", "num_splits", "min_tiles"])
def _mla_decode_small_kernel(
    q_ptr, kv_ptr, kn_desc, kr_desc, bt_ptr, seqlens_ptr, split_ptr,
    out_ptr, lse_ptr, opart_ptr, lpart_ptr,
    stride_qb, stride_qs, stride_qh,
    stride_kvb, stride_kvt, stride_btb,
    stride_ob, stride_os, stride_oh,
    stride_lb, stride_lh,
    max_blocks, num_heads, seqlen_q, d_qk, head_dim_v, sm_scale_log2, page_shift, num_splits, min_tiles,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_DV2: tl.constexpr, BLOCK_R: tl.constexpr,
    CAUSAL: tl.constexpr, USE_TMA: tl.constexpr, DOT_FP32: tl.constexpr, NUM_STAGES: tl.constexpr,
    EVEN_D: tl.constexpr, PDL: tl.constexpr = False, TRIGGER: tl.constexpr = 0,
):
    # q [batch, seqlen_q, num_heads, d_qk]; kv_cache [num_blocks, 2^page_shift, 1, d_qk] (strides as
    # in mla_decode._mla_decode_kernel); block_table [batch, max_blocks] int32; cache_seqlens [batch] int32
    # split    [batch, 2] int32, written here: (b·(num_splits − 1), pieces of sequence b) for the combine
    # out      [batch, seqlen_q, num_heads, head_dim_v]; lse [batch, num_heads, seqlen_q] fp32
    # opart    [batch · num_splits, rows, 2·BLOCK_DV2] fp32; lpart [batch · num_splits, rows] fp32
    # grid (head tiles, num_splits, batch): the head tiles of one split run side by side and share
    # the cache span through L2.
    # PDL: launched as a programmatic dependent: nothing is read before waiting for the previous kernel
    # (q, the cache and its lengths may all come from this step). TRIGGER: the next kernel (the combine,
    # or mla_absorb_o, which prefetches its weights meanwhile) may launch once every program is past its
    # attention loop (1) or at once (2), else at our end (0); it waits for this grid's completion anyway.
    if TRIGGER == 2:
        tl.extra.cuda.gdc_launch_dependents()
    if PDL:
        tl.extra.cuda.gdc_wait()
    tile_h = tl.program_id(0)
    split = tl.program_id(1)
    b = tl.program_id(2)
    rows_total = seqlen_q * num_heads
    rows = tile_h * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok = rows < rows_total
    seqlen = tl.load(seqlens_ptr + b)
    seqlen = tl.maximum(tl.minimum(seqlen, max_blocks << page_shift), 0)  # never read past the block table
    n_tiles = tl.cdiv(seqlen, BLOCK_N)
    tps = tl.maximum(tl.cdiv(n_tiles, num_splits), min_tiles)
    pieces = tl.cdiv(n_tiles, tps)
    k_lo = split * tps
    k_hi = tl.minimum(k_lo + tps, n_tiles)
    if (tile_h == 0) & (split == 0):
        tl.store(split_ptr + b * 2, b * (num_splits - 1))
        tl.store(split_ptr + b * 2 + 1, pieces)
    if k_lo < k_hi:
        o0, o1, lse = _attend_span(
            q_ptr, kv_ptr, kn_desc, kr_desc, bt_ptr, b, rows, k_lo, k_hi, seqlen,
            stride_qb, stride_qs, stride_qh, stride_kvb, stride_kvt, stride_btb,
            num_heads, seqlen_q, d_qk, head_dim_v, sm_scale_log2, page_shift,
            BLOCK_N, BLOCK_H, BLOCK_DV2, BLOCK_R, CAUSAL, USE_TMA, DOT_FP32, NUM_STAGES, EVEN_D)
        if TRIGGER == 1:
            tl.extra.cuda.gdc_launch_dependents()
        if pieces == 1:
            _store_rows(out_ptr, lse_ptr, b, rows, o0, o1, lse, stride_ob, stride_os, stride_oh, stride_lb,
                        stride_lh, num_heads, seqlen_q, head_dim_v, BLOCK_DV2, EVEN_D)
        else:
            dvp = 2 * BLOCK_DV2
            c = tl.arange(0, BLOCK_DV2)
            slot = b.to(tl.int64) * num_splits + split
            pb = opart_ptr + (slot * rows_total + rows)[:, None] * dvp
            tl.store(pb + c[None, :], o0, mask=row_ok[:, None])
            tl.store(pb + (c + BLOCK_DV2)[None, :], o1, mask=row_ok[:, None])
            tl.store(lpart_ptr + slot * rows_total + rows, lse, mask=row_ok)
    # an empty sequence (pieces 0) is written by the combine: out = 0, lse = −inf


# Every config key that mla_decode, mla_decode_small and mla_decode_ws read → its rule (_utils.check_config;
# the tables are mla_decode_config._TUNED / _TUNED_WS / _SMALL_TABLE / _PACKED_DEFAULT, mla_decode_ws._DEFAULT_WS).
_P2 = (1, 2, 4, 8, 16, 32, 64, 128)
MLA_CONFIG_SPEC: dict = dict(
    BLOCK_H=(16, 32, 64), BLOCK_N=(16, 32, 64), num_warps=(1, 2, 4, 8, 16), num_stages=range(1, 9),
    PARTS_PER_SM=float, USE_TMA=bool, WARP_SPECIALIZE=bool, COMBINE_ROWS=_P2, COMBINE_PDL=bool,
    SCHED=("balanced", "packed"), OVERHEAD=range(0, 4097), MIN_SPAN=range(1, 2**20 + 1),  # schedule (both kinds)
    SEG_COST=range(0, 4097), SPLIT_COST=range(0, 4097), MIN_PIECE=range(1, 2**30),  # SCHED="packed" only
    MIN_FIT=range(1, 2**30), FILL_TOL=range(-(2**20), 2**20),
    GLUON=(False, True, "force"), WS_WGS=(1, 2), WS_STAGES=range(1, 9), DEFER_L=bool, PIPE=bool, QTMA=bool,
    SEQPF=bool, BTPF=bool, COMBINE_SPIN=bool, OTMA=bool, PART16=bool,  # PART16: split partials in q's dtype
    FUSE=bool,  # Gluon split kernel merges the split sequences itself (mla_decode_ws.fuse_combine)
    STEAL=range(0, 4097), STEAL_PCT=range(0, 100), STEAL_WAVE=bool,
    ROTATE=bool,  # mla_decode_ws: a span's last sequence piece first (with FUSE: split sequences merged early)  # tail spans taken dynamically (get_mla_metadata, mla_decode_ws)
    PRODUCER_REGS=range(24, 257, 8), CONSUMER_REGS=range(24, 257, 8),  # Gluon split kernel (setmaxnreg)
    WSM=bool,  # > 32 rows: mla_decode_wsm's split kernel (BLOCK_H 64, WS_WGS 2)
    OVEC=(0, 1, 2),  # mla_decode_wsm: output stores with known 16-byte alignment (1) and 8 values per thread (2)
    SM1=(0, 1, 2),  # mla_decode_wsm: warpgroup 1's softmax after / before / during its P0·V
    SMALL=bool, NUM_SPLITS=range(1, 2**16), MIN_TILES=range(1, 2**20), PDL=bool, TRIGGER=(0, 1, 2),  # SMALL
)


def check_mla_config(cfg: object) -> dict:
    """A checked copy of an ``mla_decode`` launch config (``get_mla_metadata(config=...)``): TypeError unless a
    dict; ValueError naming the key for an unknown key, a missing BLOCK_H / BLOCK_N / num_warps / num_stages
    (and NUM_SPLITS when SMALL) or a value outside ``MLA_CONFIG_SPEC`` (MIN_FIT ≥ MIN_PIECE is checked by
    mla_decode_config._packed_args)."""
    small = isinstance(cfg, dict) and cfg.get("SMALL") is True
    return check_config("config", cfg, MLA_CONFIG_SPEC,
                        ("BLOCK_H", "BLOCK_N", "num_warps", "num_stages") + (("NUM_SPLITS",) if small else ()))


def small_launches(q, kv_cache, block_table, cache_seqlens, scale, causal, head_dim_v, metadata, out, lse):
    """``mla_decode``'s two launches for a SMALL config on validated inputs: (split launch, combine launch).
    Workspaces are allocated here."""
    dev = q.device
    batch, seqlen_q, num_heads, d_qk = q.shape
    page_size = kv_cache.shape[1]
    cfg = metadata.config
    block_n, block_h = int(cfg["BLOCK_N"]), int(cfg["BLOCK_H"])
    num_splits, min_tiles = int(cfg["NUM_SPLITS"]), int(cfg.get("MIN_TILES", 1))
    hopper = _pdl_capable(dev)  # griddepcontrol: sm_90+, never under the interpreter
    pdl = bool(cfg.get("PDL", False)) and hopper
    trigger = int(cfg.get("TRIGGER", 0)) if hopper else 0
    combine_pdl = bool(cfg.get("COMBINE_PDL", False)) and hopper
    block_dv2, block_r, even_d, kn_desc, kr_desc = cache_tiles(q, kv_cache, head_dim_v, block_n,
                                                                 cfg.get("USE_TMA", True))
    use_tma = kn_desc is not None
    rows = seqlen_q * num_heads
    opart = torch.empty(batch * num_splits, rows, 2 * block_dv2, dtype=torch.float32, device=dev)
    lpart = torch.empty(batch * num_splits, rows, dtype=torch.float32, device=dev)
    args = (
        q, kv_cache, kn_desc, kr_desc, block_table, cache_seqlens, metadata.split,
        out, lse, opart, lpart,
        q.stride(0), q.stride(1), q.stride(2),
        kv_cache.stride(0), kv_cache.stride(1), block_table.stride(0),
        out.stride(0), out.stride(1), out.stride(2),
        lse.stride(0), lse.stride(1),
        block_table.shape[1], num_heads, seqlen_q, d_qk, head_dim_v, scale * 1.4426950408889634,
        page_size.bit_length() - 1, num_splits, min_tiles)
    meta = dict(BLOCK_N=block_n, BLOCK_H=block_h, BLOCK_DV2=block_dv2, BLOCK_R=block_r, CAUSAL=bool(causal),
                USE_TMA=use_tma, DOT_FP32=interpreter_active(), NUM_STAGES=int(cfg["num_stages"]), EVEN_D=even_d,
                PDL=pdl, TRIGGER=trigger, num_warps=int(cfg["num_warps"]), launch_pdl=pdl)
    grid = (cdiv(rows, block_h), num_splits, batch)
    block_rows = int(cfg.get("COMBINE_ROWS", 1))
    combine_args = (metadata.split, out, lse, opart, lpart, out.stride(0), out.stride(1), out.stride(2),
                    lse.stride(0), lse.stride(1), num_heads, seqlen_q, head_dim_v)

    def split_launch():
        _mla_decode_small_kernel[grid](*args, **meta)

    def combine_launch():
        _mla_combine_kernel[(batch, cdiv(rows, block_rows))](
            *combine_args, BLOCK_ROWS=block_rows, BLOCK_DVP=2 * block_dv2, NUM_STAGES=3, PDL=combine_pdl,
            num_warps=4, launch_pdl=combine_pdl)

    return split_launch, combine_launch
