"""Paged absorbed-MLA decode split kernel for more than 32 query rows: queries on the wgmma M side, "seesaw"
schedule of two consumer warpgroups (Gluon, sm_90a).

out[b, i, h] = Σ_j softmax_j(q[b, i, h]·K[b, j]·scale) · K[b, j, :512],  j ≤ s_k − s_q + i

Same inputs, outputs, schedule (``get_mla_metadata``), partial slots and combine kernel as ``mla_decode``
(FlashMLA ``flash_mla_with_kvcache`` semantics); ``mla_decode`` runs this split kernel for config entries with
WSM=True (BLOCK_H 64, BLOCK_N 64, WS_WGS 2) on Hopper. ``mla_decode_ws`` puts the 64 keys of a tile on the
wgmma M side, so with 64 query rows on two warpgroups both of its matmuls run at N = 32 (bound by the shared
memory reads of the operands). Here a program owns 64 query rows (s·h_q + h, as ``mla_decode``'s head tiles),
the matmuls are S = Q·Kᵀ (M 64 rows, N 64 keys, K 576) and O += P·V, and O [64, 512] fp32 is split by columns:
warpgroup w holds O_w = O[:, 256w : 256w + 256] (128 registers per thread). The schedule follows the one
FlashMLA's SM90 dense decode kernel describes in its 2025-04 deep-dive ("seesaw"), written here from that
description. Tiles go in pairs (t0, t1); with m the running row maximum (base 2, the same in both warpgroups):

* warpgroup 0: S0 = Q·K_t0ᵀ; m0 = max(m, rowmax S0), P0 = exp2(S0 − m0); P0 (bf16) → the rope rows of t0's
  stage (dead once S0 is done) and m0 → shared memory, signal X1; O_0 = O_0·exp2(m − m0) + P0·V_t0[:, :256] (P0
  from registers). Then wait X2: O_0 = O_0·exp2(m0 − m1) + P1·V_t1[:, :256] (P1 from shared memory, already
  relative to m1).
* warpgroup 1: S1 = Q·K_t1ᵀ issued before it waits X1; O_1 = O_1·exp2(m − m0) + P0·V_t0[:, 256:] (P0 from shared
  memory); m1 = max(m0, rowmax S1), P1 = exp2(S1 − m1) → t1's rope rows, m1 → shared memory, signal X2;
  O_1 = O_1·exp2(m0 − m1) + P1·V_t1[:, 256:] (P1 from registers).

Every score matmul runs at N = 64 and one warpgroup's softmax overlaps the other's matmuls. Row sums are kept per
warpgroup under the same factors and added at the end of a sequence (through shared memory). A pair's second
tile may be missing (odd count): warpgroup 1 then issues its score matmul on the next stage without waiting
for it and discards the result (its signal and value matmul are skipped). One TMA producer warp walks the
schedule and loads each tile as 9 [64, 64] column blocks (8 latent = V, 1 rope), each completing its own
ready barrier, so a score matmul starts on the first block; a stage is released by both warpgroups after
their last read of it. Tail tiles (keys at or past cache_seqlens) are zeroed in shared memory by the
warpgroup that computes their scores, before its signal orders them before the other warpgroup's value
matmul: NaN in unused slots never reaches O. A sequence's query tile comes by TMA (QTMA, the default) or is
loaded by both warpgroups (32 rows each). No wgmma accumulator stays in flight across a branch or an mbarrier
wait: ptxas then serializes every wgmma of the kernel (C7512). Shared memory: 2 × 72 KB tiles + 72 KB query tile
+ 1 KB = 217 KB (+ ~4 KB of layout-conversion scratch with OVEC 2: 226.5 KB of 227); setmaxnreg 240 / 240 / 24
(consumers / TMA warp).

H200, b128 page 64, split + combine as one CUDA graph (W2 at eca038b, against the previous default mla_decode_ws in
the same run; every row in benchmarks/results/h200.jsonl): every case with h_q·s_q ≥ 64 faster, e.g. h128 s_q2 s_k
8192 fixed 1454.3 → 1081.0 µs (401.7 → 540.4 TFLOP/s), h128 s_q1 734.9 → 585.4, h64 s_q2 738.6 → 586.2; all correct
(cosine difference ≤ 1.8e-6 against fp32). Measured and slower (code at eca038b, config WSM_SYNC 2 / 1): the 64-key
tile split between the warpgroups by keys (each S at N = 32; row maxima and P exchanged through shared memory with 2
barriers per tile, or P read into registers with 1): h128 s_q2 s_k 4096 676.1 µs, s_k 8192 1236.3 vs 597.6 / 1081.0.

Sequence switches (session 19, DIAG stamps ``launch_split_wsm(diag=...)``, H200 W1 at d91fd0f, h128 s_q1 s_k 4096
fixed, ~2.0 µs per tile): the consumers' own query loads took 5.4-5.9 µs per sequence and an unsplit sequence's
epilogue 10-11 µs (2-byte ``st.global.b16`` out stores: out's strides are not specialized). Knobs on by default for
the WSM entries since W2 at e0bd947 (``mla_decode_config._WSM_KNOBS``, figures there): QTMA (the TMA warp loads the
next query tile once both warpgroups' last score matmul of the sequence completed: query wait 0.3 µs), OVEC 2 (out
strides in units of 8 elements, each warp's [16, 256] block re-laid out to 8 values per thread: 16-byte stores,
unsplit epilogue 4.4 µs), PART16 (16-bit partials). Measured and off: SEQPF (lengths and split counts loaded a
sequence ahead), neutral; OTMA (session 20, W1 at 1230905: out and 16-bit partials by TMA stores through the query
buffer: unsplit epilogue 4.4 → 2.05 µs, but the next query load no longer overlaps it; the whole op did not move).

Session 22 (benchmarks/probe_mla_wsm_intercept.py; GPU clock, 8 calls per graph, 11 interleaved reps, b128 page 64
fixed; rows in benchmarks/results/h200.jsonl). W1 at a6b26f2, h128 s_q2 s_k 4096: op 528.0 us (A/A 527.8) = split
516.0 + combine 12.0; the split's span 512.2 = start 5.0 + streaming 466.3 (248.2 tiles at 1.878 us) + epilogues 15.7
(4.79 segments × 3.25) + switches 10.4 + idle tail 11.3 (s_k 8192: idle 18.2). With every sequence on sequence 0's
pages (KV L2-resident) the per-tile time is 1.854 (four head tiles) / 1.857 (two: h128 s_q1, from 1.934; op -16 us):
the ring's loads are latency-bound, more so with two head tiles (half the programs share a tile's HBM fetch).
SM1 1 (W2 at 041b4a1): per tile 1.885 -> 2.048 us, op +44.5 / +77.2 us (s_k 4096 / 8192; A/A +0.2 / -5.2), but on
the L2-resident table -23.6 / -51.2: the order saves tensor-core idle time and exposes the next tile's load (stage
st0 is released a softmax later). L2PF, a bulk L2 prefetch of the KV tile 2-8 tiles ahead by the TMA warp (W3 at
da394eb, code at 5ede6d6): slower everywhere, +15..+85 us alone at distance 4, worse with distance; removed.
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from tritonseek.kernels._host import cdiv
from tritonseek.kernels.mla_decode_config import _WSM_KNOBS
from tritonseek.kernels.mla_decode_ws import _GL_DTYPES, _seq_range, _zero_tail, smem_layout
from tritonseek.kernels.mla_decode_ws_parts import _seq_tiles, _stamp
from tritonseek.kernels.mla_decode_wsm_parts import (D_LATENT, D_ROPE, HALF_V, ROWS, TILE_N, _L_SWAPPED, _Q_FREE,
                                                   _Q_READY, _Q_WRITTEN, _X1, _X2, _sync, _write_rows)

_TN = 64

# Launch knobs: ring depth (2: the 72 KB tiles and the 72 KB query tile fill the shared memory), the second
# consumer warpgroup's and the TMA warp's registers after setmaxnreg, registers per thread at entry (12 warps).
# Knobs read from the config (off here; mla_decode's WSM entries turn QTMA, OVEC 2 and PART16 on: module docstring;
# PART16 is read by mla_decode, which allocates the partials in q's dtype, and this kernel follows opart's dtype).
# QTMA: the TMA warp loads each sequence's query tile ([64, 576] rows of q viewed as
# [batch·s_q·h_q, 576], q contiguous) once both consumers' last score matmul of the previous sequence completed, so
# the load overlaps that sequence's last value matmuls and its output stores instead of following them (the
# consumers' own 32-row loads are ~18 dependent 16-byte loads per thread, then a barrier). SEQPF (measured neutral):
# the next sequence's length and this one's split count are loaded at the sequence's start, off the path between two
# sequences. OVEC 1 / 2: vectorized output stores (mla_decode_wsm_parts._store_vec). OTMA (with QTMA, rows_total % 64
# == 0, out contiguous): after the row-sum swap each warpgroup's O half goes through the query buffer by one TMA store
# (out, or 16-bit partials: PART_TMA), and the buffer is released (Q_FREE) once the stores have read it.
# SM1 (warpgroup 1's softmax of t1 against its P0·V; module docstring for figures): 0 after it completes (default),
# 1 before it (FlashMLA's order: warpgroup 0's P1·V no longer waits for a softmax run while the tensor cores idle,
# but stage st0 is released later), 2 while it runs (P0·V issued first, the softmax arithmetic overlapping it).
WSM_DEFAULTS = dict(WS_STAGES=2, PRODUCER_REGS=24, CONSUMER_REGS=240, QTMA=False, SEQPF=False, OVEC=0, OTMA=False,
                    SM1=0)
_MAXNREG = 168


def wsm_config(seqlen_q: int, num_heads: int) -> dict:
    """An ``mla_decode`` config that runs this split kernel (64 query rows per program, two consumer
    warpgroups, 64-key tiles, one program per SM, the default knobs ``mla_decode_config._WSM_KNOBS``); elsewhere
    (no Hopper GPU) it is a valid tl config."""
    del seqlen_q, num_heads  # every rows count > 32 uses 64-row head tiles
    return dict(BLOCK_H=64, BLOCK_N=64, num_warps=8, num_stages=2, PARTS_PER_SM=1, USE_TMA=True, GLUON=True,
                WS_WGS=2, WSM=True, **_WSM_KNOBS)


@gluon.jit
def _span(sched_ptr, pid):
    # program pid's part of the schedule: (first sequence, its first tile, last sequence, its end tile)
    return gl.load(sched_ptr + pid * 4), gl.load(sched_ptr + pid * 4 + 1), gl.load(sched_ptr + pid * 4 + 2), gl.load(
        sched_ptr + pid * 4 + 3)


@gluon.jit
def _row_setup(num_heads, rows_total, stride_qs, stride_qh, stride_os, stride_oh, stride_lh, srow_l: gl.constexpr,
               o_l: gl.constexpr, ld: gl.constexpr, W: gl.constexpr):
    # the program's 64 query rows (row = s·h_q + h) as the score / output layouts see them, warpgroup W's value
    # columns, and its 32 rows of the query tile in the load layout
    row0 = gl.program_id(0) * ROWS
    s_idx = (row0 + gl.arange(0, ROWS, layout=srow_l)) // num_heads
    rows_o = row0 + gl.arange(0, ROWS, layout=gl.SliceLayout(1, o_l))
    o_row = (rows_o // num_heads).to(gl.int64) * stride_os + (rows_o % num_heads).to(gl.int64) * stride_oh
    l_row = (rows_o % num_heads).to(gl.int64) * stride_lh + rows_o // num_heads
    cols = W * HALF_V + gl.arange(0, HALF_V, layout=gl.SliceLayout(0, o_l))
    rows_ld = row0 + W * 32 + gl.arange(0, 32, layout=gl.SliceLayout(1, ld))
    q_row = (rows_ld // num_heads).to(gl.int64) * stride_qs + (rows_ld % num_heads).to(gl.int64) * stride_qh
    return (s_idx, rows_o, o_row, l_row, cols, q_row, gl.expand_dims(rows_ld < rows_total, 1),
            gl.arange(0, 64, layout=gl.SliceLayout(0, ld)))


@gluon.jit
def _load_q_rows(q_seq, q_row, rows_ok, c64, q_lat, q_rope):
    # this warpgroup's query rows of one sequence → its rows of the shared query tile (masked rows: 0)
    qb = q_seq + gl.expand_dims(q_row, 1)
    for c in gl.static_range(D_LATENT // 64):
        q_lat.slice(c * 64, 64, dim=1).store(gl.load(qb + gl.expand_dims(c * 64 + c64, 0), mask=rows_ok, other=0.0))
    q_rope.store(gl.load(qb + gl.expand_dims(D_LATENT + c64, 0), mask=rows_ok, other=0.0))
    fence_async_shared()  # read next by the tensor cores


@gluon.jit
def _wsm_producer(c_desc, v_bufs, r_bufs, ready, empty, bt_ptr, seqlens_ptr, sched_ptr, stride_btb, batch, max_blocks,
                  page_shift, qd_lat, qd_rope, q_lat, q_rope, bars, rows_total, NUM_STAGES: gl.constexpr,
                  QTMA: gl.constexpr):
    # One warp walks the program's span as the consumers do and TMAs each 64-key tile (a tile lies inside one page
    # as page_size ≥ 64) into the ring once both consumers released the stage, as 9 [64, 64] column blocks (8
    # latent, 1 rope) that each complete their own ready barrier (9 per stage). QTMA: before a sequence's tiles,
    # its query tile (rows b·rows_total + 64·head tile, past the batch zero-filled by the TMA) once the consumers
    # freed the query buffer; rows past rows_total hold another sequence's queries and are never stored.
    b_begin, t_begin, b_end, t_end = _span(sched_ptr, gl.program_id(1))
    row0 = gl.program_id(0) * ROWS
    n = 0
    nq = 0  # QTMA: query tiles loaded (Q_FREE phase)
    for b in range(b_begin, b_end + 1):
        _, k_lo, k_hi = _seq_range(b, b_begin, t_begin, b_end, t_end, seqlens_ptr, batch, max_blocks, page_shift,
                                   TILE_N)
        if QTMA:
            if k_lo < k_hi:
                mbarrier.wait(bars.index(_Q_FREE), (nq & 1) ^ 1)  # a fresh buffer starts free
                qbar = bars.index(_Q_READY)
                mbarrier.expect(qbar, qd_lat.block_type.nbytes + qd_rope.block_type.nbytes)
                tma.async_copy_global_to_shared(qd_lat, [b * rows_total + row0, 0], qbar, q_lat)
                tma.async_copy_global_to_shared(qd_rope, [b * rows_total + row0, D_LATENT], qbar, q_rope)
                nq += 1
        table = bt_ptr + b.to(gl.int64) * stride_btb
        for k in range(k_lo, k_hi):
            slot = n % NUM_STAGES
            mbarrier.wait(empty.index(slot), ((n // NUM_STAGES) & 1) ^ 1)  # a fresh ring starts released
            key0 = k * TILE_N
            cache_row = (gl.load(table + (key0 >> page_shift)) << page_shift) + (key0 & ((1 << page_shift) - 1))
            for c in gl.static_range(D_LATENT // 64):
                mbarrier.expect(ready.index(slot * 9 + c), c_desc.block_type.nbytes)
                tma.async_copy_global_to_shared(c_desc, [cache_row, c * 64], ready.index(slot * 9 + c),
                                                v_bufs.index(slot).slice(c * 64, 64, dim=1))
            mbarrier.expect(ready.index(slot * 9 + 8), c_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(c_desc, [cache_row, D_LATENT], ready.index(slot * 9 + 8),
                                            r_bufs.index(slot))
            n += 1


@gluon.jit
def _tile_scores(vb, rb, q_lat, q_rope, ready, st, phase, first, seqlen, tail, live, s_zero, ld: gl.constexpr):
    # issue S = Q·Kᵀ of one 64-key tile (async), each 64-column block once its TMA has landed. tail: rows past
    # seqlen := 0 first (after all 9 blocks landed, so no TMA overwrites the zeros). live False: no waits (the
    # caller discards the result)
    if tail:
        for c in gl.static_range(9):
            mbarrier.wait(ready.index(st * 9 + c), phase)
        _zero_tail(vb, first, seqlen, D_LATENT, TILE_N, ld)
        fence_async_shared()
        gl.thread_barrier()
    s = s_zero
    for c in gl.static_range(D_LATENT // 64):
        mbarrier.wait(ready.index(st * 9 + c), phase, pred=live)
        s = warpgroup_mma(q_lat.slice(c * 64, 64, dim=1), vb.slice(c * 64, 64, dim=1).permute((1, 0)), s,
                          use_acc=c > 0, is_async=True)
    mbarrier.wait(ready.index(st * 9 + 8), phase, pred=live)
    return warpgroup_mma(q_rope, rb.permute((1, 0)), s, is_async=True)


@gluon.jit
def _softmax_tile(s, first, limit, m_ref, sm_scale_log2, skey_l: gl.constexpr):
    # scores of keys first .. first + 63 (masked past each row's limit, scaled to base 2) → (m = max(m_ref, row
    # max), exp2(m_ref − m), P = exp2(S − m)); a row with no key yet keeps m = −inf and P = 0
    keys = first + gl.arange(0, TILE_N, layout=skey_l)
    s = gl.where(gl.expand_dims(keys, 0) <= gl.expand_dims(limit, 1), s * sm_scale_log2, float("-inf"))
    m_new = gl.maximum(m_ref, gl.max(s, 1))
    m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
    return m_new, gl.exp2(m_ref - m_safe), gl.exp2(s - gl.expand_dims(m_safe, 1))


@gluon.jit
def _publish(p, m, rb, x_m, bars, i: gl.constexpr):
    # P (bf16) → the rope rows of its tile's stage, the row maxima → x_m; then signal the other warpgroup
    rb.store(p)
    x_m.store(m)
    fence_async_shared()  # P is read next by the other warpgroup's tensor cores (and the stage's next TMA)
    gl.thread_barrier()
    mbarrier.arrive(bars.index(i), count=1)


@gluon.jit
def _take_max(bars, i: gl.constexpr, phase, x_m, m_ref):
    # wait for the other warpgroup's signal i; its published row maxima m (≥ m_ref) and exp2(m_ref − m)
    mbarrier.wait(bars.index(i), phase)
    m = x_m.load(m_ref.type.layout)
    return m, gl.exp2(m_ref - gl.where(m == float("-inf"), 0.0, m))


@gluon.jit
def _scaled_pv(acc, scale, a, v, release):
    # O·scale + A·V (A: P in registers or shared memory), completed before returning (an accumulator in flight
    # across a branch or an mbarrier wait makes ptxas serialize every wgmma, C7512); then the stage released
    acc = acc * gl.expand_dims(gl.convert_layout(scale, gl.SliceLayout(1, acc.type.layout)), 1)
    acc = warpgroup_mma_wait(0, deps=[warpgroup_mma(a, v, acc, is_async=True)])
    mbarrier.arrive(release, count=1)
    return acc


@gluon.jit
def _wsm_consumer(q_ptr, v_bufs, r_bufs, q_lat, q_rope, x_m0, x_m1, x_mine, x_other, ready, empty, bars,
                  seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                  stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                  batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift, diag_ptr,
                  NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr, W: gl.constexpr, QTMA: gl.constexpr,
                  SEQPF: gl.constexpr, DIAG: gl.constexpr, OVEC: gl.constexpr, od_desc, pd_desc, OTMA: gl.constexpr,
                  PART_TMA: gl.constexpr, SM1: gl.constexpr):
    s_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 64, 16])
    o_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 256, 16])
    srow_l: gl.constexpr = gl.SliceLayout(1, s_l)
    skey_l: gl.constexpr = gl.SliceLayout(0, s_l)
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_l, k_width=2)  # P as the register A operand
    ld: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    dtype: gl.constexpr = q_lat.dtype
    STAMP: gl.constexpr = DIAG and W == 0  # DIAG: warpgroup 0 stamps (layout of mla_decode_ws's DIAG rows)

    pid = gl.program_id(1)
    rows_total = seqlen_q * num_heads
    if OVEC > 0:  # out strides arrive in units of 8 elements (16 bytes): the stores' alignment is known
        stride_ob = stride_ob * 8
        stride_os = stride_os * 8
        stride_oh = stride_oh * 8
    s_idx, rows_o, o_row, l_row, cols, q_row, rows_ld_ok, c64 = _row_setup(
        num_heads, rows_total, stride_qs, stride_qh, stride_os, stride_oh, stride_lh, srow_l, o_l, ld, W)
    s_zero = gl.zeros([ROWS, TILE_N], gl.float32, s_l)
    v_half: gl.constexpr = W * HALF_V  # this warpgroup's value columns
    b_begin, t_begin, b_end, t_end = _span(sched_ptr, pid)
    if STAMP:
        dg = diag_ptr + (gl.program_id(0) * gl.num_programs(1) + pid).to(gl.int64) * 128
        _stamp(dg, 0)
        smid = gl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r", [], dtype=gl.int32, is_pure=False, pack=1)
        gl.store(dg + 63, smid.to(gl.int64))
        seg = 0
    if SEQPF:
        sl_next = gl.load(seqlens_ptr + gl.minimum(b_begin, batch - 1))
    it = 0  # tiles consumed (ring position)
    n_seq = 0  # sequences (Q / L barrier phase)
    n_x1 = 0  # pairs (X1 phase)
    n_x2 = 0  # pairs with two tiles (X2 phase)
    for b in range(b_begin, b_end + 1):
        if SEQPF:
            seqlen, k_lo, k_hi = _seq_tiles(b, sl_next, b_begin, t_begin, b_end, t_end, batch, max_blocks,
                                            page_shift, TILE_N)
            sl_next = gl.load(seqlens_ptr + gl.minimum(b + 1, batch - 1))
        else:
            seqlen, k_lo, k_hi = _seq_range(b, b_begin, t_begin, b_end, t_end, seqlens_ptr, batch, max_blocks,
                                            page_shift, TILE_N)
        if k_lo < k_hi:
            if SEQPF:
                n_split = gl.load(split_ptr + b * 2 + 1)
            if STAMP:
                _stamp(dg, 2 + 5 * gl.minimum(seg, 7))
            if QTMA:
                mbarrier.wait(bars.index(_Q_READY), n_seq & 1)
            else:
                # both warpgroups' last score matmuls of the previous sequence completed before their last signal
                _load_q_rows(q_ptr + b.to(gl.int64) * stride_qb, q_row, rows_ld_ok, c64,
                             q_lat.slice(W * 32, 32, dim=0), q_rope.slice(W * 32, 32, dim=0))
                _sync(bars, _Q_WRITTEN, n_seq & 1)
            if STAMP:
                _stamp(dg, 3 + 5 * gl.minimum(seg, 7))
            diag = seqlen - seqlen_q if CAUSAL else seqlen - 1  # row i sees keys ≤ diag (+ i when causal)
            limit = diag + s_idx if CAUSAL else diag + s_idx * 0
            k_fast = gl.maximum(gl.minimum(k_hi, (diag + 1) // TILE_N), k_lo)
            m_i = gl.full([ROWS], float("-inf"), gl.float32, srow_l)
            l_i = gl.zeros([ROWS], gl.float32, srow_l)
            acc = gl.zeros([ROWS, HALF_V], gl.float32, o_l)
            for k0 in range(k_lo, k_hi, 2):
                has1 = k0 + 1 < k_hi
                st0 = it % NUM_STAGES
                st1 = (it + 1) % NUM_STAGES
                if W == 0:
                    s = _tile_scores(v_bufs.index(st0), r_bufs.index(st0), q_lat, q_rope, ready, st0,
                                     (it // NUM_STAGES) & 1, k0 * TILE_N, seqlen, k0 >= k_fast, True, s_zero, ld)
                    m0, a0, p = _softmax_tile(warpgroup_mma_wait(0, deps=[s]), k0 * TILE_N, limit, m_i, sm_scale_log2,
                                              skey_l)
                    if QTMA and not OTMA:  # this warpgroup's last score matmul of the sequence is done with the query
                        mbarrier.arrive(bars.index(_Q_FREE), count=1, pred=k0 + 2 >= k_hi)
                    l_i = l_i * a0 + gl.sum(p, 1)
                    p = p.to(dtype)
                    _publish(p, m0, r_bufs.index(st0), x_m0, bars, _X1)
                    acc = _scaled_pv(acc, a0, gl.convert_layout(p, a_l), v_bufs.index(st0).slice(v_half, HALF_V, dim=1),
                                     empty.index(st0))
                    m_i = m0
                    if has1:
                        m1, a1 = _take_max(bars, _X2, n_x2 & 1, x_m1, m0)
                        l_i = l_i * a1
                        acc = _scaled_pv(acc, a1, r_bufs.index(st1), v_bufs.index(st1).slice(v_half, HALF_V, dim=1),
                                         empty.index(st1))
                        m_i = m1
                else:
                    # S1 first (a missing tile: the next stage read without waiting, result discarded); it may
                    # stay in flight across the X1 wait (the 32-register S, unlike O, does not make ptxas serialize)
                    s = _tile_scores(v_bufs.index(st1), r_bufs.index(st1), q_lat, q_rope, ready, st1,
                                     ((it + 1) // NUM_STAGES) & 1, (k0 + 1) * TILE_N, seqlen,
                                     has1 & (k0 + 1 >= k_fast), has1, s_zero, ld)
                    m0, a0 = _take_max(bars, _X1, n_x1 & 1, x_m0, m_i)
                    s = warpgroup_mma_wait(0, deps=[s])
                    if QTMA and not OTMA:
                        mbarrier.arrive(bars.index(_Q_FREE), count=1, pred=k0 + 2 >= k_hi)
                    l_i = l_i * a0
                    if SM1 == 1:
                        # t1's softmax and signal X2 before this warpgroup's P0·V (FlashMLA's order): warpgroup 0's
                        # P1·V waits only for the softmax, but stage st0 is released a softmax later, so its next
                        # tile's load latency shows (module docstring: slower from HBM)
                        m1 = m0
                        a1 = gl.full([ROWS], 1.0, gl.float32, srow_l)
                        p = gl.zeros([ROWS, TILE_N], dtype, s_l)
                        if has1:
                            m1, a1, p32 = _softmax_tile(s, (k0 + 1) * TILE_N, limit, m0, sm_scale_log2, skey_l)
                            l_i = l_i * a1 + gl.sum(p32, 1)
                            p = p32.to(dtype)
                            _publish(p, m1, r_bufs.index(st1), x_m1, bars, _X2)
                        acc = _scaled_pv(acc, a0, r_bufs.index(st0), v_bufs.index(st0).slice(v_half, HALF_V, dim=1),
                                         empty.index(st0))
                        if has1:
                            acc = _scaled_pv(acc, a1, gl.convert_layout(p, a_l),
                                             v_bufs.index(st1).slice(v_half, HALF_V, dim=1), empty.index(st1))
                        m_i = m1
                    elif SM1 == 2:
                        # P0·V issued first (st0 released as early as by default), t1's softmax arithmetic while it
                        # runs (straight-line: no branch or wait with O in flight, C7512; on a missing tile's
                        # discarded scores it is computed and dropped), then the signal and P1·V
                        acc = acc * gl.expand_dims(gl.convert_layout(a0, gl.SliceLayout(1, o_l)), 1)
                        acc = warpgroup_mma(r_bufs.index(st0), v_bufs.index(st0).slice(v_half, HALF_V, dim=1), acc,
                                            is_async=True)
                        m1, a1, p32 = _softmax_tile(s, (k0 + 1) * TILE_N, limit, m0, sm_scale_log2, skey_l)
                        m1 = gl.where(has1, m1, m0)
                        a1 = gl.where(has1, a1, 1.0)
                        l_i = l_i * a1 + gl.where(has1, gl.sum(p32, 1), 0.0)
                        p = p32.to(dtype)
                        acc = warpgroup_mma_wait(0, deps=[acc])
                        mbarrier.arrive(empty.index(st0), count=1)
                        if has1:
                            _publish(p, m1, r_bufs.index(st1), x_m1, bars, _X2)
                            acc = _scaled_pv(acc, a1, gl.convert_layout(p, a_l),
                                             v_bufs.index(st1).slice(v_half, HALF_V, dim=1), empty.index(st1))
                        m_i = m1
                    else:
                        acc = _scaled_pv(acc, a0, r_bufs.index(st0), v_bufs.index(st0).slice(v_half, HALF_V, dim=1),
                                         empty.index(st0))
                        m_i = m0
                        if has1:
                            m1, a1, p = _softmax_tile(s, (k0 + 1) * TILE_N, limit, m0, sm_scale_log2, skey_l)
                            l_i = l_i * a1 + gl.sum(p, 1)
                            p = p.to(dtype)
                            _publish(p, m1, r_bufs.index(st1), x_m1, bars, _X2)
                            acc = _scaled_pv(acc, a1, gl.convert_layout(p, a_l),
                                             v_bufs.index(st1).slice(v_half, HALF_V, dim=1), empty.index(st1))
                            m_i = m1
                if has1:
                    n_x2 += 1
                    it += 2
                else:
                    it += 1
                n_x1 += 1
            if STAMP:
                _stamp(dg, 4 + 5 * gl.minimum(seg, 7))
            if not SEQPF:
                n_split = gl.load(split_ptr + b * 2 + 1)
            _write_rows(acc, m_i, l_i, x_mine, x_other, bars, n_seq & 1, b, pid, rows_total, rows_o, o_row, l_row,
                        cols, n_split, out_ptr, lse_ptr, opart_ptr, lpart_ptr, stride_ob, stride_lb, num_heads,
                        stride_os, stride_oh, W, OVEC, q_lat, od_desc, pd_desc, OTMA, PART_TMA)
            if STAMP:
                _stamp(dg, 5 + 5 * gl.minimum(seg, 7))
                gl.store(dg + 6 + 5 * gl.minimum(seg, 7), b.to(gl.int64))
                seg += 1
            n_seq += 1
    if STAMP:
        _stamp(dg, 1)


# Runtime sizes and strides are not specialized on (one compile per config).
@gluon.jit(do_not_specialize=["stride_qb", "stride_qs", "stride_qh", "stride_btb", "stride_ob", "stride_os",
                              "stride_oh", "stride_lb", "stride_lh", "batch", "max_blocks", "num_heads", "seqlen_q",
                              "page_shift"])
def _mla_decode_wsm_kernel(
    q_ptr, c_desc, bt_ptr, seqlens_ptr, sched_ptr, split_ptr,
    out_ptr, lse_ptr, opart_ptr, lpart_ptr,
    stride_qb, stride_qs, stride_qh, stride_btb,
    stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
    batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
    NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr, PRODUCER_REGS: gl.constexpr, CONSUMER_REGS: gl.constexpr,
    qd_lat=None, qd_rope=None, QTMA: gl.constexpr = False, SEQPF: gl.constexpr = False, diag_ptr=None,
    DIAG: gl.constexpr = False, OVEC: gl.constexpr = 0, od_desc=None, pd_desc=None, OTMA: gl.constexpr = False,
    PART_TMA: gl.constexpr = False, SM1: gl.constexpr = 0,
):
    # q        [batch, seqlen_q, num_heads, 576] (stride_qb, stride_qs, stride_qh, 1)
    # c_desc   TMA over the cache as [num_blocks·page_size, 576] rows, box [64, 64] (9 blocks per 64-key tile)
    # block_table [batch, max_blocks] int32 (stride_btb, 1); cache_seqlens [batch] int32
    # sched [num_parts, 4] / split [batch, 2] int32: get_mla_metadata's schedule (BLOCK_N = 64)
    # out [batch, seqlen_q, num_heads, 512] (stride_ob, stride_os, stride_oh, 1); lse [batch, num_heads, seqlen_q]
    # opart [num_parts + batch, rows, 512] fp32 (or q's dtype: PART16); lpart [num_parts + batch, rows] fp32
    # qd_lat / qd_rope (QTMA): TMA over q as [batch·seqlen_q·num_heads, 576] rows, boxes [64, 512] / [64, 64]
    # od_desc (OTMA): TMA over out as [batch·seqlen_q·num_heads, 512] rows, box [64, 256]; pd_desc (PART_TMA): over
    #          the 16-bit opart as [(num_parts + batch)·rows, 512], box [64, 256]
    # diag (DIAG) [head tiles · num_parts, 128] int64: warpgroup 0's %globaltimer / %clock64 stamps, row
    #          program_id(0)·num_parts + program_id(1): [0] start, [1] end, per sequence j < 8 (the 8th and later
    #          share j = 7) [2 + 5j] start, [3 + 5j] query tile ready, [4 + 5j] tiles done, [5 + 5j] rows
    #          written, [6 + 5j] sequence id; [63] SM id; clocks at [64 + i]
    # grid (64-row head tiles, parts)
    dtype: gl.constexpr = c_desc.dtype
    v_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES, TILE_N, D_LATENT], c_desc.layout)
    r_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES, TILE_N, D_ROPE], c_desc.layout)
    q_lat = gl.allocate_shared_memory(dtype, [ROWS, D_LATENT], gl.NVMMASharedLayout.get_default_for([ROWS, D_LATENT],
                                                                                                   dtype))
    q_rope = gl.allocate_shared_memory(dtype, [ROWS, D_ROPE],
                                       gl.NVMMASharedLayout.get_default_for([ROWS, D_ROPE], dtype))
    xl: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[0])
    x_m0 = gl.allocate_shared_memory(gl.float32, [ROWS], xl)
    x_m1 = gl.allocate_shared_memory(gl.float32, [ROWS], xl)
    x_l0 = gl.allocate_shared_memory(gl.float32, [ROWS], xl)
    x_l1 = gl.allocate_shared_memory(gl.float32, [ROWS], xl)
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES * 9, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    bars = gl.allocate_shared_memory(gl.int64, [6, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES * 9):
        mbarrier.init(ready.index(i), count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(empty.index(i), count=2)  # released by both consumer warpgroups
    mbarrier.init(bars.index(_Q_WRITTEN), count=2)
    mbarrier.init(bars.index(_L_SWAPPED), count=2)
    mbarrier.init(bars.index(_X1), count=1)
    mbarrier.init(bars.index(_X2), count=1)
    mbarrier.init(bars.index(_Q_READY), count=1)
    mbarrier.init(bars.index(_Q_FREE), count=2)
    gl.warp_specialize([
        (_wsm_consumer, (q_ptr, v_bufs, r_bufs, q_lat, q_rope, x_m0, x_m1, x_l0, x_l1, ready, empty, bars,
                         seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                         stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                         batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift, diag_ptr, NUM_STAGES,
                         CAUSAL, 0, QTMA, SEQPF, DIAG, OVEC, od_desc, pd_desc, OTMA, PART_TMA, SM1)),
        (_wsm_consumer, (q_ptr, v_bufs, r_bufs, q_lat, q_rope, x_m0, x_m1, x_l1, x_l0, ready, empty, bars,
                         seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                         stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                         batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift, diag_ptr, NUM_STAGES,
                         CAUSAL, 1, QTMA, SEQPF, DIAG, OVEC, od_desc, pd_desc, OTMA, PART_TMA, SM1)),
        (_wsm_producer, (c_desc, v_bufs, r_bufs, ready, empty, bt_ptr, seqlens_ptr, sched_ptr, stride_btb, batch,
                         max_blocks, page_shift, qd_lat, qd_rope, q_lat, q_rope, bars, seqlen_q * num_heads,
                         NUM_STAGES, QTMA)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


def launch_split_wsm(q, kv_cache, block_table, cache_seqlens, scale, causal, metadata, out, lse, opart, lpart,
                     diag=None):
    """Launch this split kernel on inputs validated by ``mla_decode`` (layout checked by
    ``mla_decode_ws.ws_layout_ok``; metadata cut with BLOCK_N 64 and BLOCK_H 64); partials go to opart/lpart for
    ``mla_decode``'s combine kernel. Config keys read: WS_STAGES, PRODUCER_REGS, CONSUMER_REGS, QTMA (taken only
    for a contiguous 16-byte-aligned q; else the consumers load the queries), OTMA (out, and 16-bit partials, by TMA
    stores through the query buffer; taken only with QTMA, s_q·h_q a multiple of 64 and a contiguous 16-byte-aligned
    out of q's dtype; else OVEC's register stores), SEQPF, OVEC (vectorized output stores,
    taken only when out's strides are multiples of 8; mla_decode has refused an out with overlapping elements, whose
    stride 0 would pass that test). PART16 is not read here: mla_decode allocates opart in q's dtype with it and the
    kernel stores in opart's dtype. diag (diagnostics): a
    [head tiles · num_parts, 128] int64 CUDA buffer for the kernel's DIAG stamps (layout in the kernel's
    comment). Raises ValueError for another BLOCK_H / BLOCK_N or a diag of another shape / dtype."""
    cfg = dict(WSM_DEFAULTS)
    cfg.update({k: metadata.config[k] for k in WSM_DEFAULTS if k in metadata.config})
    if metadata.config["BLOCK_H"] != 64 or metadata.config["BLOCK_N"] != _TN:
        raise ValueError(f"config WSM runs 64-row head tiles of 64-key tiles: BLOCK_H and BLOCK_N must be 64, got "
                         f"{metadata.config['BLOCK_H']} / {metadata.config['BLOCK_N']}")
    batch, seqlen_q, num_heads, _ = q.shape
    num_blocks, page_size, _, d_qk = kv_cache.shape
    head_tiles = cdiv(seqlen_q * num_heads, 64)
    if diag is not None and (diag.dtype != torch.int64 or tuple(diag.shape) != (head_tiles * metadata.num_parts, 128)):
        raise ValueError(f"diag must be int64 [{head_tiles * metadata.num_parts}, 128] (head tiles · num_parts, 128), "
                         f"got {diag.dtype} {tuple(diag.shape)}")
    gdt = _GL_DTYPES[q.dtype]
    flat = kv_cache.view(num_blocks * page_size, d_qk)
    c_desc = TensorDescriptor(flat, list(flat.shape), [d_qk, 1], [64, 64], smem_layout([64, 64], gdt))
    qtma = bool(cfg["QTMA"]) and q.is_contiguous() and q.data_ptr() % 16 == 0
    qd_lat = qd_rope = None
    if qtma:
        q2d = q.view(batch * seqlen_q * num_heads, d_qk)
        qd_lat = TensorDescriptor(q2d, list(q2d.shape), [d_qk, 1], [64, 512], smem_layout([64, 512], gdt))
        qd_rope = TensorDescriptor(q2d, list(q2d.shape), [d_qk, 1], [64, 64], smem_layout([64, 64], gdt))
    # OVEC: out strides passed in units of 8 elements when they are multiples of 8 (else the 2-byte store path)
    ovec = int(cfg["OVEC"]) if all(out.stride(i) % 8 == 0 for i in range(3)) else 0
    # OTMA (with QTMA): whole 64-row tiles (rows_total % 64 == 0, so a tile's rows are all its sequence's own) of a
    # contiguous 16-byte-aligned out; else the register stores above
    rows_total = seqlen_q * num_heads
    otma = (bool(cfg["OTMA"]) and qtma and rows_total % 64 == 0 and out.is_contiguous() and out.data_ptr() % 16 == 0
            and out.dtype == q.dtype)
    od_desc = pd_desc = None
    part_tma = False
    if otma:
        o2d = out.view(batch * rows_total, 512)
        od_desc = TensorDescriptor(o2d, list(o2d.shape), [512, 1], [64, 256], smem_layout([64, 256], gdt))
        part_tma = opart.dtype == q.dtype and opart.is_contiguous() and opart.data_ptr() % 16 == 0
        if part_tma:
            p2d = opart.view(-1, 512)
            pd_desc = TensorDescriptor(p2d, list(p2d.shape), [512, 1], [64, 256], smem_layout([64, 256], gdt))
    o_div = 8 if ovec else 1
    _mla_decode_wsm_kernel[(head_tiles, metadata.num_parts)](
        q, c_desc, block_table, cache_seqlens, metadata.sched, metadata.split,
        out, lse, opart, lpart,
        q.stride(0), q.stride(1), q.stride(2), block_table.stride(0),
        out.stride(0) // o_div, out.stride(1) // o_div, out.stride(2) // o_div, lse.stride(0), lse.stride(1),
        batch, block_table.shape[1], num_heads, seqlen_q, scale * 1.4426950408889634, page_size.bit_length() - 1,
        NUM_STAGES=int(cfg["WS_STAGES"]), CAUSAL=bool(causal), PRODUCER_REGS=int(cfg["PRODUCER_REGS"]),
        CONSUMER_REGS=int(cfg["CONSUMER_REGS"]), qd_lat=qd_lat, qd_rope=qd_rope, QTMA=qtma,
        SEQPF=bool(cfg["SEQPF"]), diag_ptr=diag, DIAG=diag is not None, OVEC=ovec, od_desc=od_desc, pd_desc=pd_desc,
        OTMA=otma, PART_TMA=part_tma, SM1=int(cfg["SM1"]), num_warps=4,
        maxnreg=_MAXNREG,
    )
