"""Paged absorbed-MLA decode with a TMA producer warp and a wgmma consumer warpgroup, written in Gluon.

out[b, i, h] = Σ_j softmax_j(q[b, i, h]·K[b, j]·scale) · K[b, j, :512],  j ≤ s_k − s_q + i

Same inputs, outputs, schedule and combine as ``mla_decode`` (FlashMLA ``flash_mla_with_kvcache``
semantics); this file holds the split kernel ``mla_decode`` runs on Hopper. The ``tl`` kernel is bound
by shared-memory traffic there: every one of its warps re-reads the whole 32×576 query tile from shared
memory for every 64-key step (``tl`` gives no control over which warp holds which operand). Design:

* **keys on the wgmma M side.** One consumer warpgroup computes Sᵀ = K·Qᵀ (M = 64 keys of the cache
  tile, N = BLOCK_H query rows, K = 576) and Oᵀ += Vᵀ·Pᵀ (M = 512 value columns, N = BLOCK_H rows,
  K = 64 keys). The query tile is written to shared memory once per sequence and is the wgmma's B
  operand: the tensor core reads it, not 8 warps through ldmatrix. Oᵀ [512, BLOCK_H] fp32 is
  4·BLOCK_H registers per thread (128 at 32 rows). V is the first 512 columns of the same shared
  tile as K (a transposed view; never a copy).
* **one TMA producer warp** walks the same split-KV schedule as the consumer (``get_mla_metadata``:
  sched/split, the combine kernel and the partial slots p + b are the ``tl`` kernel's) and loads each
  64-key tile (latent [64, 512] + rope [64, 64] boxes; page_size ≥ 64, so a tile is inside one page)
  into a NUM_STAGES ring guarded by ready (TMA transaction bytes) / empty (consumer release) mbarriers.
* **masking.** The last tiles of a sequence (cache tail, causal diagonal) have their key rows at or
  past cache_seqlens zeroed in shared memory before the dots (NaN in unused slots never reaches
  out), and Sᵀ is masked to −inf there.
* online softmax in base 2 on Sᵀ's columns (a reduction across the warpgroup's 4 warps).
* **more than 32 rows**: 64-row head tiles on two consumer warpgroups (32 rows each) that stream the same
  cache tiles (a stage is released by both); setmaxnreg gives them the TMA warp's registers.
* **query prefetch (QTMA, one warpgroup)**: the TMA warp also loads each sequence's query rows, into one of
  two buffers, before that sequence's tiles, so a program that moves on to its next sequence does not stall
  on global query loads (H200: a balanced-schedule program's second segment had cost several µs).

* **sequence switches** (a program moving to its next sequence; the balanced cut gives ~2 per program on varied
  lengths): an H200 globaltimer probe (benchmarks/probe_mla_ws_timeline.py, 228ceaf) measured ~10 µs per switch
  at 32 rows: 4-7 µs storing O (128 scalar stores per thread), 1.5 µs loading the next length, 2 µs to the first
  tile. Now (mla_decode's batch ≥ 64 default): OTMA writes O through the finished query buffer with TMA stores
  (16-bit partials with PART16), SEQPF loads lengths / split counts one sequence ahead, BTPF block ids one tile
  ahead (probe at ab2154b: ~6 µs per switch). COMBINE_SPIN (the combine as a dependent launch waiting per
  sequence) is a knob, off (no gain seen; never with TMA-stored partials: its release would not order their
  async-proxy writes).
* **fused combine (config FUSE, with OTMA and PART16; off: H200 W1 slower on varlen, see mla_decode_config)**: no
  combine kernel. A program that finishes a piece of a
  split sequence stores it as a 16-bit partial (coalesced generic stores from the finished query buffer), then each
  of its 128 threads counts itself on the sequence's counter (atom.acq_rel.gpu) and, after a barrier, re-reads it
  (ld.acquire.gpu): every thread of the program holding the last increment reads the full count and merges its
  own elements of the sequence's pieces (no barrier in the merge, so a thread of another program that also reads the
  full count just writes the same values); the last incrementer zeroes the counter for the next call. Empty
  sequences get out 0 / lse −inf from the split kernel (program 0 also walks those before its span). A CTA-wide
  election by one thread's atomic and a reduction made ptxas spill in the per-tile loop (sm_90a, 32 rows).

H200, b128 page 64, split + combine as one CUDA graph (benchmarks/results/h200.jsonl, h1mla s17 W2 at b33d927: the
knob default before COMBINE_ROWS 8; torch peer same run): memory-bound (s_q·h_q ≤ 32) s_k 4096 fixed 4049 / 3935 /
3979 GB/s (h16 s_q1 / h16 s_q2 / h32 s_q1), varlen 3864 / 3633 / 3672 (3889 / 3654 / 3685 on the GPU clock, without
the host's graph launch), s_k 8192 fixed 4238 / 4182 / 4196, varlen 4125 / 4040 / 4009; compute-bound:
mla_decode_wsm / h4mla.

Gluon compiles only for CUDA (sm_90a): there is no interpreter path, so ``mla_decode_ws`` raises on a
non-Hopper or non-CUDA device; ``mla_decode`` dispatches here only on Hopper for config entries with
GLUON=True and falls back to the ``tl`` kernel elsewhere.
"""

from __future__ import annotations

import dataclasses

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from tritonseek.kernels import mla_decode as _tl
from tritonseek.kernels.fp8_gemm_ws import gluon_ws_supported  # noqa: F401 (re-exported: same device rule)
from tritonseek.kernels.mla_decode_ws_parts import (  # noqa: F401 (D_QK, _zero_tail: re-exported, mla_decode_wsm)
    D_LATENT,
    D_QK,
    D_ROPE,
    TILE_N,
    _producer,
    _scores,
    _seq_range,
    _seq_tiles,
    _stamp,
    _store_o,
    _store_o_tma,
    _merge_parts,
    _part_release,
    _write_empty,
    _zero_count,
    _zero_tail,
)

# The cache layout this kernel takes (DeepSeek MLA): 512 latent (= V) columns ‖ 64 rope columns.
_DV, _DR, _DQK, _TN = 512, 64, 576, 64  # D_LATENT, D_ROPE, D_QK, TILE_N (mla_decode_ws_parts) as host ints

# Launch knobs of the Gluon kernel inside an mla_decode config: WS_STAGES (ring depth; 2 × 72 KB tiles fill
# the shared memory next to the query tile), PRODUCER_REGS (the TMA warp's register budget), DEFER_L (keep
# per-key partial row sums and reduce them across the warpgroup once per sequence instead of every tile;
# H200: equal at 16 rows, 1-2 µs faster at 32, 16 µs at 64 rows, so the default).
# WS_WGS: consumer warpgroups per program (2: each owns BLOCK_H/2 rows of the same cache tiles; CONSUMER_REGS
# is then the second one's register budget after setmaxnreg).
# PIPE: issue the next tile's scores (Sᵀ wgmma) before this tile's softmax, so the softmax runs under the
# tensor core's work (the next tile must have arrived). H200 final run (55ea38b): 13-42% SLOWER in every class
# (b128 s_k 4096: 16 rows 160 -> 191 µs, 32 rows 176 -> 236, h64 s_q1 228 -> 323, h128 s_q2 773 -> 1101), so off;
# kept only as a measured negative result (the wait for tile k+1 before tile k's softmax holds stage k longer).
# Measured on the H200 and dropped (slower or equal; code in git history at 1e9801a): an L2 prefetch of the tile
# after the ring's (cp.async.bulk.prefetch, 2-3 tiles ahead: 6-40 µs slower at b128 s_k 4096) and splitting
# each tile's value columns over two rings of 3 + 2 half-tiles (within ±1.5 µs).
# Also dropped (code at 172c19d, config PREF): the TMA warp loading the next sequence's length and first block id
# while issuing this one's tiles, the split count loaded before the tiles: H200 b128 page 64, all 12 memory-bound
# cases within -0.3..+1.3% of the default (s_k 4096 varlen 166.5 / 175.0 / 180.8 vs 165.6 / 174.6 / 180.1 µs).
# QTMA: the producer warp also TMAs each sequence's query rows, into two buffers, ahead of its tiles (one consumer
# warpgroup; 32 rows: 225 KB of shared memory), instead of the consumer loading them between sequences.
# SEQPF: the consumer loads the next sequence's cache_seqlens one sequence ahead and the split count before the
# tiles (no dependent global load at a sequence switch). BTPF: the TMA warp loads each tile's block id one tile
# ahead (see _producer). OTMA (with QTMA, one head tile of exactly BLOCK_H rows, contiguous out): a sequence's
# output goes through its finished query buffer and one TMA store instead of 128 scalar stores per thread (H200,
# diag probe at 228ceaf: those took 4-7 µs per sequence switch, the largest part of its ~10 µs); config PART16
# (mla_decode) makes the partials 16-bit so that they go the same way.
_DEFAULT_WS = dict(WS_STAGES=2, PRODUCER_REGS=40, DEFER_L=True, WS_WGS=1, CONSUMER_REGS=232, PIPE=False, QTMA=False,
                   SEQPF=False, BTPF=False, OTMA=False)
# registers per thread at entry with two consumer warpgroups (12 warps incl. the producer's warpgroup)
_MAXNREG_2WG = 168


def ws_config(seqlen_q: int, num_heads: int) -> dict:
    """An ``mla_decode`` config that runs this kernel for s_q·h_q query rows: 16 or 32 rows on one consumer
    warpgroup; more than 32 rows as 64-row head tiles on two warpgroups (32 rows each, sharing the cache
    tiles); 64-key schedule tiles, one program per SM (the tile ring takes the shared memory). On a device
    where the Gluon kernel does not run, the tl kernel runs this config (BLOCK_H rows × 64-key steps)."""
    rows = seqlen_q * num_heads
    if rows <= 32:
        block_h = 16 if rows <= 16 else 32
        return dict(BLOCK_H=block_h, BLOCK_N=64, num_warps=4 if block_h == 16 else 8,
                    num_stages=3 if block_h == 16 else 5, PARTS_PER_SM=1, USE_TMA=True, GLUON=True, **_DEFAULT_WS)
    # two warpgroups: 240 registers each and 24 for the TMA warp (232/40 left local-memory accesses in the loop)
    return dict(BLOCK_H=64, BLOCK_N=64, num_warps=8, num_stages=2, PARTS_PER_SM=1, USE_TMA=True, GLUON=True,
                **dict(_DEFAULT_WS, WS_WGS=2, CONSUMER_REGS=240, PRODUCER_REGS=24))


@gluon.jit
def _consumer(q_ptr, v_bufs, r_bufs, q_lat_all, q_rope_all, p_smem, ready, empty, q_ready, q_empty,
              seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
              stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
              batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
              BLOCK_H: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr,
              DEFER_L: gl.constexpr, ROW0: gl.constexpr, ROWS: gl.constexpr, PIPE: gl.constexpr,
              QTMA: gl.constexpr, WG: gl.constexpr, SEQPF: gl.constexpr, cnt_ptr, COUNT: gl.constexpr, od_desc,
              pd_desc, OTMA: gl.constexpr, PART_TMA: gl.constexpr, diag_ptr, DIAG: gl.constexpr,
              FUSE: gl.constexpr = False):
    # One warpgroup: Sᵀ = K·Qᵀ, online softmax over keys (Sᵀ's rows), Oᵀ += Vᵀ·Pᵀ. q_lat_all/q_rope_all:
    # [2, ROWS, ·] query buffers filled by the producer (QTMA), else buffer WG (this warpgroup's) written here.
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                  instr_shape=[16, ROWS, 16])
    row_l: gl.constexpr = gl.SliceLayout(0, mma)  # query rows (N side)
    col_l: gl.constexpr = gl.SliceLayout(1, mma)  # keys / value columns (M side)
    ld: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])  # 16-byte row pieces of 64 columns
    ld_rows: gl.constexpr = gl.SliceLayout(1, ld)
    ld_cols: gl.constexpr = gl.SliceLayout(0, ld)

    tile_h = gl.program_id(0)
    pid = gl.program_id(1)
    rows_total = seqlen_q * num_heads
    rows = tile_h * BLOCK_H + ROW0 + gl.arange(0, ROWS, layout=row_l)
    row_ok = rows < rows_total
    s_idx = rows // num_heads
    h_idx = rows % num_heads
    o_row = s_idx.to(gl.int64) * stride_os + h_idx.to(gl.int64) * stride_oh
    l_row = h_idx.to(gl.int64) * stride_lh + s_idx
    cols = gl.arange(0, D_LATENT, layout=col_l)
    # query rows in the load layout
    rows_ld = tile_h * BLOCK_H + ROW0 + gl.arange(0, ROWS, layout=ld_rows)
    rows_ld_ok = gl.expand_dims(rows_ld < rows_total, 1)
    q_row = (rows_ld // num_heads).to(gl.int64) * stride_qs + (rows_ld % num_heads).to(gl.int64) * stride_qh
    c64 = gl.arange(0, 64, layout=ld_cols)

    s_zero = gl.zeros([BLOCK_N, ROWS], gl.float32, mma)
    b_begin = gl.load(sched_ptr + pid * 4 + 0)
    t_begin = gl.load(sched_ptr + pid * 4 + 1)
    b_end = gl.load(sched_ptr + pid * 4 + 2)
    t_end = gl.load(sched_ptr + pid * 4 + 3)
    if FUSE:  # program 0 also walks the empty sequences before its span (no combine kernel writes them)
        b_begin = gl.where(pid == 0, 0, b_begin)
    it = 0
    qn0 = 0  # sequences that used query buffer 0 / 1 (QTMA: buffer (b − b_begin) % 2, the producer's choice)
    qn1 = 0
    seg = 0  # DIAG: segments done; row[2 + 5j ...]: start, first tile ready, tiles done, stored, sequence id
    if DIAG:
        dg = diag_ptr + pid.to(gl.int64) * 128
        _stamp(dg, 0)
        smid = gl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r", [], dtype=gl.int32, is_pure=False, pack=1)
        gl.store(dg + 63, smid.to(gl.int64))
    UNROLL: gl.constexpr = 2 if QTMA else 1  # QTMA: two copies of the body, one per query buffer
    if SEQPF:  # cache_seqlens of the next sequence loaded one sequence ahead
        len_next = gl.load(seqlens_ptr + gl.minimum(b_begin, batch - 1))
    for bb in range(b_begin, b_end + 1, UNROLL):
        for u in gl.static_range(UNROLL):
            b = bb + u
            if SEQPF:
                seqlen, k_lo, k_hi = _seq_tiles(b, len_next, b_begin, t_begin, b_end, t_end, batch, max_blocks,
                                                page_shift, BLOCK_N)
                len_next = gl.load(seqlens_ptr + gl.minimum(b + 1, batch - 1))
                n_split = gl.load(split_ptr + gl.minimum(b, batch - 1) * 2 + 1)  # used after the tiles
            else:
                seqlen, k_lo, k_hi = _seq_range(b, b_begin, t_begin, b_end, t_end, seqlens_ptr, batch, max_blocks,
                                                page_shift, BLOCK_N)
            if (b <= b_end) & (k_lo < k_hi):
                if DIAG:
                    dj = 2 + 5 * gl.minimum(seg, 7)
                    _stamp(dg, dj)
                if QTMA:  # the producer's TMA of this sequence's query rows (rows past rows_total: other
                    # sequences' or zero-filled rows; each is its own Sᵀ/Oᵀ column and is never stored)
                    if u == 0:
                        mbarrier.wait(q_ready.index(0), qn0 & 1)
                    else:
                        mbarrier.wait(q_ready.index(1), qn1 & 1)
                    q_lat = q_lat_all.index(u)  # a constant buffer: the wgmma descriptors stay immediates
                    q_rope = q_rope_all.index(u)
                else:
                    # query tile of sequence b → shared memory (the previous sequence's wgmmas have completed)
                    q_lat = q_lat_all.index(WG)
                    q_rope = q_rope_all.index(WG)
                    gl.thread_barrier()
                    qb = q_ptr + b.to(gl.int64) * stride_qb + gl.expand_dims(q_row, 1)
                    for c in gl.static_range(D_LATENT // 64):
                        x = gl.load(qb + gl.expand_dims(c * 64 + c64, 0), mask=rows_ld_ok, other=0.0)
                        q_lat.slice(c * 64, 64, dim=1).store(x)
                    q_rope.store(gl.load(qb + gl.expand_dims(D_LATENT + c64, 0), mask=rows_ld_ok, other=0.0))
                    fence_async_shared()
                    gl.thread_barrier()
                if CAUSAL:
                    limit = seqlen - seqlen_q + s_idx  # last visible key per row
                    first_masked = seqlen - seqlen_q + 1
                else:
                    limit = s_idx * 0 + seqlen - 1
                    first_masked = seqlen
                k_fast = gl.maximum(gl.minimum(k_hi, first_masked // BLOCK_N), k_lo)
                m_i = gl.full([ROWS], float("-inf"), gl.float32, row_l)
                l_i = gl.zeros([ROWS], gl.float32, row_l)
                l_acc = gl.zeros([BLOCK_N, ROWS], gl.float32, mma)  # DEFER_L: per-key partial sums
                acc = gl.zeros([D_LATENT, ROWS], gl.float32, mma)
                if PIPE:  # scores of the sequence's first tile; the loop issues tile k + 1's before tile k's softmax
                    mbarrier.wait(ready.index(it % NUM_STAGES), (it // NUM_STAGES) & 1)
                    s_next = _scores(v_bufs.index(it % NUM_STAGES), r_bufs.index(it % NUM_STAGES), q_lat, q_rope, s_zero,
                                     k_lo, k_lo >= k_fast, seqlen, BLOCK_N, ld)
                    s_next = warpgroup_mma_wait(0, deps=[s_next])
                for k in range(k_lo, k_hi):
                    st = it % NUM_STAGES
                    vb = v_bufs.index(st)
                    if PIPE:
                        s = s_next
                        # tile k + 1's scores go to the tensor core before tile k's softmax; on the last tile a
                        # throw-away repeat of tile k's (its ready phase is complete: no wait, no tail zeroing)
                        nxt = gl.where(k + 1 < k_hi, it + 1, it)
                        mbarrier.wait(ready.index(nxt % NUM_STAGES), (nxt // NUM_STAGES) & 1)
                        s_next = _scores(v_bufs.index(nxt % NUM_STAGES), r_bufs.index(nxt % NUM_STAGES), q_lat, q_rope,
                                         s_zero, k + 1, (k + 1 >= k_fast) & (k + 1 < k_hi), seqlen, BLOCK_N, ld)
                    else:
                        mbarrier.wait(ready.index(st), (it // NUM_STAGES) & 1)
                        if DIAG:
                            if k == k_lo:
                                _stamp(dg, dj + 1)
                        s = _scores(vb, r_bufs.index(st), q_lat, q_rope, s_zero, k, k >= k_fast, seqlen, BLOCK_N, ld)
                        s = warpgroup_mma_wait(0, deps=[s])
                    keys = k * BLOCK_N + gl.arange(0, BLOCK_N, layout=col_l)
                    s = gl.where(gl.expand_dims(keys, 1) <= gl.expand_dims(limit, 0), s * sm_scale_log2, float("-inf"))
                    m_new = gl.maximum(m_i, gl.max(s, 0))
                    m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
                    alpha = gl.exp2(m_i - m_safe)
                    p = gl.exp2(s - gl.expand_dims(m_safe, 0))
                    if DEFER_L:  # the row sum is linear: reduce across the warps once, after the last tile
                        l_acc = l_acc * gl.expand_dims(alpha, 0) + p
                    else:
                        l_i = l_i * alpha + gl.sum(p, 0)
                    m_i = m_new
                    p_smem.store(gl.permute(p.to(p_smem.dtype), (1, 0)))
                    fence_async_shared()
                    gl.thread_barrier()
                    acc = warpgroup_mma(vb.permute((1, 0)), p_smem.permute((1, 0)), acc * gl.expand_dims(alpha, 0),
                                        is_async=True)
                    if PIPE:
                        acc, s_next = warpgroup_mma_wait(0, deps=[acc, s_next])
                    else:
                        acc = warpgroup_mma_wait(0, deps=[acc])
                    mbarrier.arrive(empty.index(st), count=1)
                    it += 1
                if DIAG:
                    _stamp(dg, dj + 2)
                if QTMA:  # every wgmma reading this query buffer has completed (OTMA: it holds O first)
                    if not OTMA:
                        mbarrier.arrive(q_empty.index(u), count=1)
                    if u == 0:
                        qn0 += 1
                    else:
                        qn1 += 1
                if DEFER_L:
                    l_i = gl.sum(l_acc, 0)
                has = l_i > 0.0
                inv_l = gl.where(has, 1.0 / gl.where(has, l_i, 1.0), 0.0)
                lse = gl.where(has, (m_i + gl.log2(gl.where(has, l_i, 1.0))) * 0.6931471805599453, float("-inf"))
                if not SEQPF:
                    n_split = gl.load(split_ptr + b * 2 + 1)
                slot = (pid + b).to(gl.int64) * rows_total
                merge = n_split < 0  # FUSE (per thread): merge the sequence's pieces / zero its piece counter
                zero = merge
                if OTMA:
                    if FUSE:
                        if n_split > 1:
                            merge, zero = _part_release(acc * gl.expand_dims(inv_l, 0), lse, b, n_split, slot,
                                                        tile_h * BLOCK_H + ROW0, q_lat, opart_ptr, lpart_ptr,
                                                        cnt_ptr, rows, row_ok, ROWS)
                        else:
                            _store_o_tma(acc * gl.expand_dims(inv_l, 0), n_split, b, slot, tile_h * BLOCK_H + ROW0,
                                         rows_total, q_lat, od_desc, pd_desc, cols, rows, row_ok, opart_ptr, False)
                    else:
                        _store_o_tma(acc * gl.expand_dims(inv_l, 0), n_split, b, slot, tile_h * BLOCK_H + ROW0,
                                     rows_total, q_lat, od_desc, pd_desc, cols, rows, row_ok, opart_ptr, PART_TMA)
                    mbarrier.arrive(q_empty.index(u), count=1)
                else:
                    _store_o(acc * gl.expand_dims(inv_l, 0), n_split, b, slot, rows, row_ok, o_row, cols, out_ptr,
                             opart_ptr, stride_ob)
                if n_split == 1:
                    gl.store(lse_ptr + b.to(gl.int64) * stride_lb + l_row, lse, mask=row_ok)
                elif FUSE:
                    if merge:
                        _merge_parts(b, n_split, tile_h * BLOCK_H + ROW0, rows_total, split_ptr, opart_ptr, lpart_ptr,
                                     out_ptr, lse_ptr, stride_lb, stride_lh, num_heads, ROWS)
                    if zero:
                        _zero_count(cnt_ptr, b)
                else:
                    gl.store(lpart_ptr + slot + rows, lse, mask=row_ok)
                    if COUNT:  # each thread releases its own partial stores to the combine (COMBINE_SPIN)
                        gl.inline_asm_elementwise("red.release.gpu.global.add.s32 [$1], 1; // $0", "=r,l", [cnt_ptr + b],
                                                  dtype=gl.int32, is_pure=False, pack=1)
                if DIAG:
                    _stamp(dg, dj + 3)
                    gl.store(dg + dj + 4, b.to(gl.int64))
                    seg += 1
            if FUSE:
                if (b <= b_end) & (b < batch) & (seqlen == 0):
                    _write_empty(b, tile_h * BLOCK_H + ROW0, rows_total, out_ptr, lse_ptr, stride_lb, stride_lh,
                                 num_heads, ROWS)
    if DIAG:
        _stamp(dg, 1)


# Runtime sizes and strides are not specialized on (one compile per config; batch 3 and batch 128 share it).
@gluon.jit(do_not_specialize=["stride_qb", "stride_qs", "stride_qh", "stride_btb", "stride_ob", "stride_os",
                              "stride_oh", "stride_lb", "stride_lh", "batch", "max_blocks", "num_heads", "seqlen_q",
                              "page_shift"])
def _mla_decode_ws_kernel(
    q_ptr, v_desc, r_desc, qd_lat, qd_rope, bt_ptr, seqlens_ptr, sched_ptr, split_ptr,
    out_ptr, lse_ptr, opart_ptr, lpart_ptr,
    stride_qb, stride_qs, stride_qh, stride_btb,
    stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
    batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
    BLOCK_H: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr, PRODUCER_REGS: gl.constexpr,
    DEFER_L: gl.constexpr, WGS: gl.constexpr, CONSUMER_REGS: gl.constexpr, PIPE: gl.constexpr,
    QTMA: gl.constexpr, TRIGGER: gl.constexpr = False, SEQPF: gl.constexpr = False, BTPF: gl.constexpr = False,
    cnt_ptr=None, COUNT: gl.constexpr = False, od_desc=None, pd_desc=None, OTMA: gl.constexpr = False,
    PART_TMA: gl.constexpr = False, diag_ptr=None,
    DIAG: gl.constexpr = False, FUSE: gl.constexpr = False,
):
    # q        [batch, seqlen_q, num_heads, 576] (stride_qb, stride_qs, stride_qh, 1)
    # v_desc   TMA over the cache as [num_blocks·page_size, 576] rows, box [64, 512] (latent = V)
    # r_desc   the same rows, box [64, 64] at column 512 (rope)
    # qd_lat / qd_rope (QTMA, one warpgroup): TMA over q as [batch·seqlen_q·num_heads, 576] rows (q contiguous),
    #          boxes [BLOCK_H, 512] / [BLOCK_H, 64]; None otherwise
    # block_table [batch, max_blocks] int32 (stride_btb, 1); cache_seqlens [batch] int32
    # sched [num_parts, 4] / split [batch, 2] int32: get_mla_metadata's schedule (BLOCK_N = 64)
    # out [batch, seqlen_q, num_heads, 512] (stride_ob, stride_os, stride_oh, 1); lse [batch, num_heads, seqlen_q]
    # opart [num_parts + batch, rows, 512] fp32; lpart [num_parts + batch, rows] fp32
    # grid (head tiles, parts), as the tl kernel.
    if TRIGGER:  # launched with a programmatic dependent (the combine): let it launch now; it waits for us
        gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // dummy $0", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)
    BLOCK_N: gl.constexpr = TILE_N
    dtype: gl.constexpr = v_desc.dtype
    v_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + v_desc.block_type.shape, v_desc.layout)
    r_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + r_desc.block_type.shape, r_desc.layout)
    ROWS: gl.constexpr = BLOCK_H // WGS  # query rows per consumer warpgroup
    QBUF: gl.constexpr = 2 if QTMA else WGS  # QTMA (one warpgroup): two query buffers, else one per warpgroup
    q_lat = gl.allocate_shared_memory(dtype, [QBUF, ROWS, D_LATENT],
                                      gl.NVMMASharedLayout.get_default_for([ROWS, D_LATENT], dtype))
    q_rope = gl.allocate_shared_memory(dtype, [QBUF, ROWS, D_ROPE],
                                       gl.NVMMASharedLayout.get_default_for([ROWS, D_ROPE], dtype))
    p_smem = gl.allocate_shared_memory(dtype, [WGS, ROWS, BLOCK_N],
                                       gl.NVMMASharedLayout.get_default_for([ROWS, BLOCK_N], dtype))
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    q_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=WGS)  # released by every consumer warpgroup
    for i in gl.static_range(2):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=1)
    rows_total = seqlen_q * num_heads
    row0 = gl.program_id(0) * BLOCK_H
    if WGS == 1:
        gl.warp_specialize([
            (_consumer, (q_ptr, v_bufs, r_bufs, q_lat, q_rope, p_smem.index(0), ready, empty, q_ready, q_empty,
                         seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                         stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                         batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
                         BLOCK_H, BLOCK_N, NUM_STAGES, CAUSAL, DEFER_L, 0, ROWS, PIPE, QTMA, 0, SEQPF, cnt_ptr, COUNT,
                         od_desc, pd_desc, OTMA, PART_TMA, diag_ptr, DIAG, FUSE)),
            (_producer, (v_desc, r_desc, v_bufs, r_bufs, ready, empty, bt_ptr, seqlens_ptr, sched_ptr,
                         stride_btb, batch, max_blocks, page_shift,
                         qd_lat, qd_rope, q_lat, q_rope, q_ready, q_empty, rows_total, row0,
                         BLOCK_N, NUM_STAGES, QTMA, BTPF, diag_ptr, DIAG, FUSE)),
        ], [1], [PRODUCER_REGS])
    else:
        # two consumer warpgroups (default partition + worker 0), each owning ROWS of the BLOCK_H rows and
        # streaming the same cache tiles (a stage is free once both released it); worker 1 = TMA warp
        gl.warp_specialize([
            (_consumer, (q_ptr, v_bufs, r_bufs, q_lat, q_rope, p_smem.index(0), ready,
                         empty, q_ready, q_empty,
                         seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                         stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                         batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
                         BLOCK_H, BLOCK_N, NUM_STAGES, CAUSAL, DEFER_L, 0, ROWS, PIPE, False, 0, SEQPF, cnt_ptr, False,
                         od_desc, pd_desc, False, False, diag_ptr, False)),
            (_consumer, (q_ptr, v_bufs, r_bufs, q_lat, q_rope, p_smem.index(1), ready,
                         empty, q_ready, q_empty,
                         seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                         stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                         batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
                         BLOCK_H, BLOCK_N, NUM_STAGES, CAUSAL, DEFER_L, ROWS, ROWS, PIPE, False, 1, SEQPF, cnt_ptr, False,
                         od_desc, pd_desc, False, False, diag_ptr, False)),
            (_producer, (v_desc, r_desc, v_bufs, r_bufs, ready, empty, bt_ptr, seqlens_ptr, sched_ptr,
                         stride_btb, batch, max_blocks, page_shift,
                         None, None, q_lat, q_rope, q_ready, q_empty, rows_total, row0,
                         BLOCK_N, NUM_STAGES, False, BTPF, diag_ptr, False)),
        ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


_GL_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}


def smem_layout(block_shape: list[int], dtype) -> gl.NVMMASharedLayout:
    """The NVMMA shared layout of a cache-tile box (also used by the compile tests)."""
    return gl.NVMMASharedLayout.get_default_for(block_shape, dtype)


def ws_layout_ok(q: torch.Tensor, kv_cache: torch.Tensor, head_dim_v: int, block_h: int, wgs: int = 1) -> bool:
    """True when the Gluon kernel handles this layout: d_qk 576 / head_dim_v 512, page_size ≥ 64,
    a contiguous 16-byte-aligned cache of fewer than 2^31 rows, 16 or 32 rows per consumer warpgroup."""
    if wgs not in (1, 2) or block_h % wgs or block_h // wgs not in (16, 32):
        return False
    num_blocks, page_size, _, d_qk = kv_cache.shape
    return (d_qk == _DQK and head_dim_v == _DV and page_size >= _TN and block_h in (16, 32, 64)
            and q.dtype in _GL_DTYPES and kv_cache.is_contiguous() and kv_cache.data_ptr() % 16 == 0
            and num_blocks * page_size < 2**31)


def check_ws_device(t: torch.Tensor) -> None:
    """Raise ValueError unless t is on a CUDA Hopper GPU (Gluon has no interpreter path)."""
    if t.device.type != "cuda":
        raise ValueError(f"q is on {t.device}: mla_decode_ws is a Gluon kernel that runs only on CUDA (sm_90 "
                         "Hopper); Gluon has no interpreter path — use mla_decode (interpreter) or the reference "
                         "on CPU")
    major = torch.cuda.get_device_capability(t.device)[0]
    if major != 9:
        raise ValueError(f"mla_decode_ws needs a Hopper GPU (compute capability 9.x), got {major}.x")


def combine_spin(metadata, wgs: int | None = None) -> bool:
    """True when this schedule's combine waits per sequence (config COMBINE_SPIN, one consumer warpgroup of 128
    threads releasing each piece, counters allocated by get_mla_metadata): see _mla_combine_kernel's SPIN."""
    if wgs is None:
        wgs = int(metadata.config.get("WS_WGS", 1))
    return (bool(metadata.config.get("COMBINE_SPIN", False)) and wgs == 1 and not metadata.config.get("WSM")
            and metadata.counters is not None)


def fuse_combine(metadata, q: torch.Tensor, out: torch.Tensor, opart: torch.Tensor | None = None) -> bool:
    """True when this call's Gluon split kernel merges the split sequences itself (config FUSE, PART16): one
    consumer warpgroup with the query and output TMA paths (QTMA, OTMA: q and out contiguous, one head tile of
    exactly BLOCK_H rows), 16-bit partials, the metadata's piece counters, no COMBINE_SPIN; ``mla_decode`` then
    launches no combine kernel."""
    cfg = metadata.config
    if not (cfg.get("FUSE") and cfg.get("QTMA") and cfg.get("OTMA") and cfg.get("PART16")) or cfg.get("WSM"):
        return False
    block_h = int(cfg["BLOCK_H"])
    return (int(cfg.get("WS_WGS", 1)) == 1 and metadata.counters is not None and not combine_spin(metadata, 1)
            and q.is_contiguous() and q.data_ptr() % 16 == 0 and q.shape[1] * q.shape[2] == block_h
            and out.is_contiguous() and out.data_ptr() % 16 == 0 and (opart is None or opart.dtype == q.dtype))


def launch_split_ws(q, kv_cache, block_table, cache_seqlens, scale, causal, metadata, out, lse, opart, lpart,
                    diag=None):
    """Launch the warp-specialized split kernel on inputs validated by ``mla_decode`` (its layout checked
    by ``ws_layout_ok``, metadata cut with BLOCK_N 64); partials go to opart/lpart for the combine kernel.
    diag (diagnostics, one consumer warpgroup): a [num_parts, 128] int64 buffer that receives per-program
    %globaltimer stamps at [0..63] and %clock64 at [64..127] (see _consumer / _producer)."""
    cfg = dict(_DEFAULT_WS)
    cfg.update({k: metadata.config[k] for k in _DEFAULT_WS if k in metadata.config})
    batch, seqlen_q, num_heads, _ = q.shape
    num_blocks, page_size = kv_cache.shape[:2]
    block_h = metadata.config["BLOCK_H"]
    gdt = _GL_DTYPES[q.dtype]
    flat = kv_cache.view(num_blocks * page_size, _DQK)
    rows = num_blocks * page_size
    v_desc = TensorDescriptor(flat, [rows, _DQK], [_DQK, 1], [_TN, _DV], smem_layout([_TN, _DV], gdt))
    r_desc = TensorDescriptor(flat, [rows, _DQK], [_DQK, 1], [_TN, _DR], smem_layout([_TN, _DR], gdt))
    wgs = int(cfg["WS_WGS"])
    # QTMA: query rows by TMA from the producer into two buffers (one consumer warpgroup, q contiguous)
    qtma = bool(cfg["QTMA"]) and wgs == 1 and q.is_contiguous() and q.data_ptr() % 16 == 0
    qd_lat = qd_rope = None
    if qtma:
        q2d = q.view(batch * seqlen_q * num_heads, _DQK)
        qd_lat = TensorDescriptor(q2d, list(q2d.shape), [_DQK, 1], [block_h, _DV], smem_layout([block_h, _DV], gdt))
        qd_rope = TensorDescriptor(q2d, list(q2d.shape), [_DQK, 1], [block_h, _DR], smem_layout([block_h, _DR], gdt))
    grid = (triton.cdiv(seqlen_q * num_heads, block_h), metadata.num_parts)
    extra = dict(maxnreg=_MAXNREG_2WG) if wgs == 2 else {}
    spin = combine_spin(metadata, wgs)
    # OTMA: out (and 16-bit partials) by TMA stores from the finished query buffer (rows_total == BLOCK_H)
    otma = (bool(cfg["OTMA"]) and qtma and seqlen_q * num_heads == block_h and out.is_contiguous()
            and out.data_ptr() % 16 == 0)
    fuse = otma and fuse_combine(metadata, q, out, opart)
    od_desc = pd_desc = None
    if otma:
        o2d = out.view(batch * seqlen_q * num_heads, _DV)
        od_desc = TensorDescriptor(o2d, list(o2d.shape), [_DV, 1], [block_h, _DV], smem_layout([block_h, _DV], gdt))
        pd_desc = od_desc  # never used unless the partials are 16-bit (PART_TMA)
        # not with COMBINE_SPIN: its release (generic proxy) would not order the TMA's (async proxy) partial writes
        # before a spinning combine reads them; through the stream's kernel boundary they are complete
        if opart.dtype == q.dtype and not spin:
            p2d = opart.view(-1, _DV)
            pd_desc = TensorDescriptor(p2d, list(p2d.shape), [_DV, 1], [block_h, _DV],
                                       smem_layout([block_h, _DV], gdt))
    _mla_decode_ws_kernel[grid](
        q, v_desc, r_desc, qd_lat, qd_rope, block_table, cache_seqlens, metadata.sched, metadata.split,
        out, lse, opart, lpart,
        q.stride(0), q.stride(1), q.stride(2), block_table.stride(0),
        out.stride(0), out.stride(1), out.stride(2), lse.stride(0), lse.stride(1),
        batch, block_table.shape[1], num_heads, seqlen_q, scale * 1.4426950408889634, page_size.bit_length() - 1,
        BLOCK_H=block_h, NUM_STAGES=int(cfg["WS_STAGES"]), CAUSAL=bool(causal),
        PRODUCER_REGS=int(cfg["PRODUCER_REGS"]), DEFER_L=bool(cfg["DEFER_L"]), WGS=wgs,
        CONSUMER_REGS=int(cfg["CONSUMER_REGS"]), PIPE=bool(cfg["PIPE"]), QTMA=qtma,
        TRIGGER=bool(metadata.config.get("COMBINE_PDL", False)) or spin, SEQPF=bool(cfg["SEQPF"]),
        BTPF=bool(cfg["BTPF"]), cnt_ptr=metadata.counters if spin or fuse else None, COUNT=spin, od_desc=od_desc,
        pd_desc=pd_desc, OTMA=otma, PART_TMA=otma and opart.dtype == q.dtype and not spin, diag_ptr=diag,
        DIAG=diag is not None, FUSE=fuse,
        num_warps=4, **extra,
    )


def mla_decode_ws(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_table: torch.Tensor,
    cache_seqlens: torch.Tensor,
    softmax_scale: float | None = None,
    causal: bool = True,
    head_dim_v: int = 512,
    metadata: _tl.MLAMetadata | None = None,
    out: torch.Tensor | None = None,
    *,
    check_ids: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """out = softmax(q·Kᵀ·scale, causal bottom-right)·V over the paged latent cache, V = K[..., :512], on the
    warp-specialized Gluon split kernel (always; ``mla_decode`` picks it by config where it is faster).

    Same arguments (check_ids included), results and errors as ``mla_decode``, restricted to its layout: q [batch, seqlen_q,
    num_heads, 576] bf16/fp16 (last dim contiguous); kv_cache [num_blocks, page_size ≥ 64 (power of two), 1,
    576] contiguous, same dtype; block_table [batch, max_blocks] int32; cache_seqlens [batch] int32 (0
    allowed: out 0, lse −inf); head_dim_v 512; metadata from ``get_mla_metadata`` with a config whose
    BLOCK_N is 64 and BLOCK_H 16 or 32 (default: ``ws_config(seqlen_q, num_heads)``; more than 32 rows run
    as several 32-row head tiles). Returns out [batch, seqlen_q, num_heads, 512] q.dtype and lse [batch,
    num_heads, seqlen_q] fp32 (natural log).
    Raises ValueError on a non-CUDA or non-Hopper device (Gluon has no interpreter path; there is no
    fallback here) or a layout the kernel does not take, and everything ``mla_decode`` raises.
    Semantics: FlashMLA ``flash_mla_with_kvcache``.
    """
    if isinstance(q, torch.Tensor):
        check_ws_device(q)
    if metadata is None and isinstance(q, torch.Tensor) and q.dim() == 4 and isinstance(cache_seqlens, torch.Tensor):
        metadata = _tl.get_mla_metadata(cache_seqlens, q.shape[1], q.shape[2], config=ws_config(q.shape[1], q.shape[2]))
    if isinstance(metadata, _tl.MLAMetadata):
        metadata = dataclasses.replace(metadata, config=dict(metadata.config, GLUON="force"))
    return _tl.mla_decode(q, kv_cache, block_table, cache_seqlens, softmax_scale, causal, head_dim_v, metadata, out,
                          check_ids=check_ids)
