"""Paged absorbed-MLA decode split kernel for more than 32 query rows, queries on the wgmma M side (Gluon).

out[b, i, h] = Σ_j softmax_j(q[b, i, h]·K[b, j]·scale) · K[b, j, :512],  j ≤ s_k − s_q + i

Same inputs, outputs, schedule (``get_mla_metadata``), partial slots and combine kernel as ``mla_decode``
(FlashMLA ``flash_mla_with_kvcache`` semantics); ``mla_decode`` runs this split kernel for config entries
with WSM=True (BLOCK_H 64, WS_WGS 2) on Hopper. ``mla_decode_ws`` puts the keys on the wgmma M side, so
with 64 query rows both of its matmuls run at N = 32 (shared-memory bound on the operand reads). Here:

* **queries on the M side.** One program owns 64 query rows (s_q·h_q rows flattened, as the head tiles of
  ``mla_decode``) and two consumer warpgroups. For each 64-key cache tile, warpgroup w computes
  S_w = Q·K_wᵀ for its half of the keys (M = 64 rows, N = 32 keys, K = 576); the two exchange their row
  maxima through shared memory, each writes its P_w = exp2(S_w − m) (bf16) to shared memory, and then
  each computes its half of the value columns: O_w[64, 256] += [P_0 ‖ P_1]·V[64 keys, 256w : 256w + 256]
  (M = 64, N = 256, K = 64: the value matmul reads the tile once per warpgroup at N = 256). O is 128 fp32
  registers per thread; the query tile [64, 576] is one shared buffer both warpgroups read.
* **one TMA producer warp** walks the same schedule span (2-stage ring of 64-key tiles, latent [64, 512] +
  rope [64, 64] boxes, as ``mla_decode_ws``); a stage is released by both warpgroups.
* **masking**: warpgroup w zeroes its key rows at or past cache_seqlens in shared memory before its dot
  (NaN in unused slots never reaches O; the exchange barrier orders the zeroing before the other
  warpgroup's value matmul) and masks S to −inf past each row's causal limit.
* per sequence, the query rows are loaded by both warpgroups (32 rows each) between two barriers, and the
  per-warpgroup row sums are added through shared memory at the end.

Cross-warpgroup barriers are mbarriers of count 2 (one arrive per warpgroup after a warpgroup barrier).
Shared memory: 2 × 72 KB tiles + 72 KB query + 8 KB P + 1.5 KB exchange = 225.5 KB.
Gluon compiles only for CUDA sm_90a; there is no interpreter path.
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

from tritonseek.kernels.mla_decode_ws import _GL_DTYPES, _seq_range, _zero_tail, smem_layout

D_LATENT = gl.constexpr(512)
D_ROPE = gl.constexpr(64)
TILE_N = gl.constexpr(64)  # keys per cache tile
HALF_N = gl.constexpr(32)  # keys per warpgroup (S's N)
HALF_V = gl.constexpr(256)  # value columns per warpgroup (O's N)
ROWS = gl.constexpr(64)  # query rows per program (wgmma M)
_DV, _DR, _DQK, _TN = 512, 64, 576, 64

# Launch knobs: ring depth (2: the 72 KB tiles and the 72 KB query tile fill the shared memory), the
# producer warp's and the second consumer warpgroup's registers after setmaxnreg, registers at entry.
# WSM_SYNC: cross-warpgroup barriers per tile: 2 (row maxima, then P, through shared memory; both warpgroups
# use the common maximum) or 1 (each writes P with its own maximum and reads the other's P into registers,
# rescaled to the common maximum: one barrier, both value matmuls take P from registers); 0: the seesaw
# schedule instead (mla_decode_seesaw: whole tiles per warpgroup at N = 64, alternating).
WSM_DEFAULTS = dict(WS_STAGES=2, PRODUCER_REGS=24, CONSUMER_REGS=240, WSM_SYNC=2)
_MAXNREG = 168
# index of each cross-warpgroup barrier in the sync array
_Q_WRITTEN = gl.constexpr(0)
_MAX_SWAPPED = gl.constexpr(1)
_P_WRITTEN = gl.constexpr(2)
_L_SWAPPED = gl.constexpr(3)


def wsm_config(seqlen_q: int, num_heads: int) -> dict:
    """An ``mla_decode`` config that runs this split kernel (64 query rows per program, two consumer
    warpgroups, 64-key tiles, one program per SM); elsewhere (no Hopper GPU) it is a valid tl config."""
    del seqlen_q, num_heads  # every rows count > 32 uses 64-row head tiles
    return dict(BLOCK_H=64, BLOCK_N=64, num_warps=8, num_stages=2, PARTS_PER_SM=1, USE_TMA=True, GLUON=True,
                WS_WGS=2, WSM=True)


@gluon.jit
def _sync(bars, i: gl.constexpr, phase):
    # both consumer warpgroups reach this point (this warpgroup's shared stores done before it arrives)
    gl.thread_barrier()
    mbarrier.arrive(bars.index(i), count=1)
    mbarrier.wait(bars.index(i), phase)


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
def _write_rows(acc, m_i, l_i, x_mine, x_other, bars, phase, b, pid, rows_total, rows_o, o_row, l_row, cols,
                split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr, stride_ob, stride_lb, W: gl.constexpr):
    # l = this warpgroup's row sums + the other's (through x_mine / x_other); O_W / l (and lse, base-2 maxima →
    # natural log) → out / lse for an unsplit sequence, else its partial slot
    orow_l: gl.constexpr = rows_o.type.layout
    x_mine.store(l_i)
    _sync(bars, _L_SWAPPED, phase)
    l_all = l_i + x_other.load(l_i.type.layout)
    has = l_all > 0.0
    inv_l = gl.where(has, 1.0 / gl.where(has, l_all, 1.0), 0.0)
    lse = gl.where(has, (m_i + gl.log2(gl.where(has, l_all, 1.0))) * 0.6931471805599453, float("-inf"))
    o = acc * gl.expand_dims(gl.convert_layout(inv_l, orow_l), 1)
    lse = gl.convert_layout(lse, orow_l)
    row_ok = rows_o < rows_total
    if gl.load(split_ptr + b * 2 + 1) == 1:
        o_ptrs = out_ptr + b.to(gl.int64) * stride_ob + (gl.expand_dims(o_row, 1) + gl.expand_dims(cols, 0))
        gl.store(o_ptrs, o.to(out_ptr.dtype.element_ty), mask=gl.expand_dims(row_ok, 1))
        if W == 0:
            gl.store(lse_ptr + b.to(gl.int64) * stride_lb + l_row, lse, mask=row_ok)
    else:
        slot = (pid + b).to(gl.int64) * rows_total
        p_ptrs = opart_ptr + slot * D_LATENT + (gl.expand_dims(rows_o * D_LATENT, 1) + gl.expand_dims(cols, 0))
        gl.store(p_ptrs, o, mask=gl.expand_dims(row_ok, 1))
        if W == 0:
            gl.store(lpart_ptr + slot + rows_o, lse, mask=row_ok)


@gluon.jit
def _wsm_producer(v_desc, r_desc, v_bufs, r_bufs, ready, empty, bt_ptr, seqlens_ptr, sched_ptr, stride_btb, batch,
                  max_blocks, page_shift, NUM_STAGES: gl.constexpr, CHUNKED: gl.constexpr = False):
    # One warp walks the program's span as the consumers do and TMAs each 64-key tile (latent + rope boxes; a
    # tile lies inside one page as page_size ≥ 64) into the ring once both consumers released the stage.
    # CHUNKED (mla_decode_seesaw): v_desc's box is [64, 64] and each of a tile's 9 column blocks completes its own
    # ready barrier (9 per stage), so the score matmul starts on the first block.
    b_begin, t_begin, b_end, t_end = _span(sched_ptr, gl.program_id(1))
    nbytes: gl.constexpr = v_desc.block_type.nbytes + r_desc.block_type.nbytes
    n = 0
    for b in range(b_begin, b_end + 1):
        _, k_lo, k_hi = _seq_range(b, b_begin, t_begin, b_end, t_end, seqlens_ptr, batch, max_blocks, page_shift,
                                   TILE_N)
        table = bt_ptr + b.to(gl.int64) * stride_btb
        for k in range(k_lo, k_hi):
            slot = n % NUM_STAGES
            mbarrier.wait(empty.index(slot), ((n // NUM_STAGES) & 1) ^ 1)  # a fresh ring starts released
            key0 = k * TILE_N
            cache_row = (gl.load(table + (key0 >> page_shift)) << page_shift) + (key0 & ((1 << page_shift) - 1))
            if CHUNKED:
                for c in gl.static_range(D_LATENT // 64):
                    mbarrier.expect(ready.index(slot * 9 + c), v_desc.block_type.nbytes)
                    tma.async_copy_global_to_shared(v_desc, [cache_row, c * 64], ready.index(slot * 9 + c),
                                                    v_bufs.index(slot).slice(c * 64, 64, dim=1))
                mbarrier.expect(ready.index(slot * 9 + 8), v_desc.block_type.nbytes)
                tma.async_copy_global_to_shared(v_desc, [cache_row, D_LATENT], ready.index(slot * 9 + 8),
                                                r_bufs.index(slot))
            else:
                mbarrier.expect(ready.index(slot), nbytes)
                tma.async_copy_global_to_shared(v_desc, [cache_row, 0], ready.index(slot), v_bufs.index(slot))
                tma.async_copy_global_to_shared(r_desc, [cache_row, D_LATENT], ready.index(slot), r_bufs.index(slot))
            n += 1


@gluon.jit
def _wsm_consumer(q_ptr, v_bufs, r_bufs, q_lat, q_rope, p_bufs, p_slots, x_mine, x_other, x_mine_odd, x_other_odd,
                  ready, empty, bars,
                  seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                  stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                  batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
                  NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr, ONE_SYNC: gl.constexpr, W: gl.constexpr):
    # Consumer warpgroup W: keys W·32 .. W·32 + 31 of every tile for S, value columns W·256 .. W·256 + 255 for O.
    s_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 32, 16])
    o_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 256, 16])
    srow_l: gl.constexpr = gl.SliceLayout(1, s_l)
    skey_l: gl.constexpr = gl.SliceLayout(0, s_l)
    orow_l: gl.constexpr = gl.SliceLayout(1, o_l)
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_l, k_width=2)  # P as the register A operand
    ld: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])  # 16-byte pieces of 64 columns

    pid = gl.program_id(1)
    rows_total = seqlen_q * num_heads
    s_idx, rows_o, o_row, l_row, cols, q_row, rows_ld_ok, c64 = _row_setup(
        num_heads, rows_total, stride_qs, stride_qh, stride_os, stride_oh, stride_lh, srow_l, o_l, ld, W)
    my_q_lat = q_lat.slice(W * 32, 32, dim=0)
    my_q_rope = q_rope.slice(W * 32, 32, dim=0)

    s_zero = gl.zeros([ROWS, HALF_N], gl.float32, s_l)
    b_begin, t_begin, b_end, t_end = _span(sched_ptr, pid)
    it = 0  # tiles consumed (ring position; also the per-tile barriers' phase)
    n_seq = 0  # sequences consumed (the per-sequence barriers' phase)
    for b in range(b_begin, b_end + 1):
        seqlen, k_lo, k_hi = _seq_range(b, b_begin, t_begin, b_end, t_end, seqlens_ptr, batch, max_blocks,
                                        page_shift, TILE_N)
        if k_lo < k_hi:
            # query rows → shared memory. The other warpgroup's last S of the previous sequence completed
            # before it arrived at that tile's max exchange, which this one passed: the buffer is free.
            _load_q_rows(q_ptr + b.to(gl.int64) * stride_qb, q_row, rows_ld_ok, c64, my_q_lat, my_q_rope)
            _sync(bars, _Q_WRITTEN, n_seq & 1)
            # row i sees keys ≤ diag + i (causal, bottom-right aligned), else every key ≤ diag; tiles from k_fast on
            # hold a masked key or one past seqlen
            diag = seqlen - seqlen_q if CAUSAL else seqlen - 1
            limit = diag + s_idx if CAUSAL else diag + s_idx * 0
            k_fast = gl.maximum(gl.minimum(k_hi, (diag + 1) // TILE_N), k_lo)
            m_i = gl.full([ROWS], float("-inf"), gl.float32, srow_l)
            l_i = gl.zeros([ROWS], gl.float32, srow_l)
            acc = gl.zeros([ROWS, HALF_V], gl.float32, o_l)
            for k in range(k_lo, k_hi):
                st = it % NUM_STAGES
                vb = v_bufs.index(st)
                kv = vb.slice(W * HALF_N, HALF_N, dim=0)
                mbarrier.wait(ready.index(st), (it // NUM_STAGES) & 1)
                if k >= k_fast:  # tail tile: rows past seqlen := 0 (the value matmul must not see NaN)
                    _zero_tail(kv, k * TILE_N + W * HALF_N, seqlen, D_LATENT, HALF_N, ld)
                    fence_async_shared()
                    gl.thread_barrier()
                s = warpgroup_mma(q_lat, kv.permute((1, 0)), s_zero, use_acc=False, is_async=True)
                s = warpgroup_mma(q_rope, r_bufs.index(st).slice(W * HALF_N, HALF_N, dim=0).permute((1, 0)), s,
                                  is_async=True)
                s = warpgroup_mma_wait(0, deps=[s])
                keys = k * TILE_N + W * HALF_N + gl.arange(0, HALF_N, layout=skey_l)
                s = gl.where(gl.expand_dims(keys, 0) <= gl.expand_dims(limit, 1), s * sm_scale_log2, float("-inf"))
                m_loc = gl.maximum(m_i, gl.max(s, 1))
                if ONE_SYNC:
                    # P_W with this warpgroup's own maximum → its rope rows of the stage (its score matmul, the
                    # only reader, has completed; the stage is reloaded only after both released it); the
                    # maximum → the exchange buffer of this tile's parity (the other warpgroup read the one of
                    # tile k − 2 before it arrived at tile k − 1's barrier)
                    m_loc_safe = gl.where(m_loc == float("-inf"), 0.0, m_loc)
                    p_slots.index(st * 2 + W).store(gl.exp2(s - gl.expand_dims(m_loc_safe, 1)).to(p_slots.dtype))
                    if (it & 1) == 0:
                        x_mine.store(m_loc)
                    else:
                        x_mine_odd.store(m_loc)
                    fence_async_shared()  # generic writes to a slot the stage's next TMA overwrites
                    _sync(bars, _MAX_SWAPPED, it & 1)
                    if (it & 1) == 0:
                        m_oth = x_other.load(srow_l)
                    else:
                        m_oth = x_other_odd.load(srow_l)
                    m_new = gl.maximum(m_loc, m_oth)
                    m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
                    alpha = gl.exp2(m_i - m_safe)
                    p = gl.exp2(s - gl.expand_dims(m_safe, 1))
                    l_i = l_i * alpha + gl.sum(p, 1)
                    m_i = m_new
                    # the other warpgroup's P, rescaled from its maximum to the common one (a factor ≤ 1)
                    p_oth = p_slots.index(st * 2 + 1 - W).load(s_l).to(gl.float32) * gl.expand_dims(
                        gl.exp2(m_oth - m_safe), 1)
                    acc = acc * gl.expand_dims(gl.convert_layout(alpha, orow_l), 1)
                    acc = warpgroup_mma(gl.convert_layout(p.to(p_slots.dtype), a_l),
                                        vb.slice(W * HALF_N, HALF_N, dim=0).slice(W * HALF_V, HALF_V, dim=1),
                                        acc, is_async=True)
                    acc = warpgroup_mma(gl.convert_layout(p_oth.to(p_slots.dtype), a_l),
                                        vb.slice((1 - W) * HALF_N, HALF_N, dim=0).slice(W * HALF_V, HALF_V, dim=1),
                                        acc, is_async=True)
                else:
                    x_mine.store(m_loc)
                    _sync(bars, _MAX_SWAPPED, it & 1)
                    m_new = gl.maximum(m_loc, x_other.load(srow_l))
                    m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
                    alpha = gl.exp2(m_i - m_safe)
                    p = gl.exp2(s - gl.expand_dims(m_safe, 1))
                    l_i = l_i * alpha + gl.sum(p, 1)
                    m_i = m_new
                    # P_W → shared memory. The other warpgroup's value matmul of the previous tile (reading
                    # p_bufs) completed before it arrived at this tile's max exchange.
                    p_bufs.index(W).store(p.to(p_bufs.dtype))
                    fence_async_shared()
                    _sync(bars, _P_WRITTEN, it & 1)
                    acc = acc * gl.expand_dims(gl.convert_layout(alpha, orow_l), 1)
                    acc = warpgroup_mma(p_bufs.index(0), vb.slice(0, HALF_N, dim=0).slice(W * HALF_V, HALF_V, dim=1),
                                        acc, is_async=True)
                    acc = warpgroup_mma(p_bufs.index(1),
                                        vb.slice(HALF_N, HALF_N, dim=0).slice(W * HALF_V, HALF_V, dim=1),
                                        acc, is_async=True)
                acc = warpgroup_mma_wait(0, deps=[acc])
                mbarrier.arrive(empty.index(st), count=1)
                it += 1
            # row sums: this warpgroup's keys + the other's. ONE_SYNC: through the buffer of the next tile's
            # parity (the other warpgroup may still be reading the last tile's maximum from the other one)
            if ONE_SYNC and (it & 1) == 1:
                _write_rows(acc, m_i, l_i, x_mine_odd, x_other_odd, bars, n_seq & 1, b, pid, rows_total, rows_o, o_row,
                            l_row, cols, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr, stride_ob, stride_lb, W)
            else:
                _write_rows(acc, m_i, l_i, x_mine, x_other, bars, n_seq & 1, b, pid, rows_total, rows_o, o_row, l_row,
                            cols, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr, stride_ob, stride_lb, W)
            n_seq += 1


# Runtime sizes and strides are not specialized on (one compile per config; batch 3 and batch 128 share it).
@gluon.jit(do_not_specialize=["stride_qb", "stride_qs", "stride_qh", "stride_btb", "stride_ob", "stride_os",
                              "stride_oh", "stride_lb", "stride_lh", "batch", "max_blocks", "num_heads", "seqlen_q",
                              "page_shift"])
def _mla_decode_wsm_kernel(
    q_ptr, v_desc, r_desc, bt_ptr, seqlens_ptr, sched_ptr, split_ptr,
    out_ptr, lse_ptr, opart_ptr, lpart_ptr,
    stride_qb, stride_qs, stride_qh, stride_btb,
    stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
    batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
    NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr, PRODUCER_REGS: gl.constexpr, CONSUMER_REGS: gl.constexpr,
    ONE_SYNC: gl.constexpr,
):
    # q        [batch, seqlen_q, num_heads, 576] (stride_qb, stride_qs, stride_qh, 1)
    # v_desc   TMA over the cache as [num_blocks·page_size, 576] rows, box [64, 512] (latent = V)
    # r_desc   the same rows, box [64, 64] at column 512 (rope)
    # block_table [batch, max_blocks] int32 (stride_btb, 1); cache_seqlens [batch] int32
    # sched [num_parts, 4] / split [batch, 2] int32: get_mla_metadata's schedule (BLOCK_N = 64)
    # out [batch, seqlen_q, num_heads, 512] (stride_ob, stride_os, stride_oh, 1); lse [batch, num_heads, seqlen_q]
    # opart [num_parts + batch, rows, 512] fp32; lpart [num_parts + batch, rows] fp32
    # grid (64-row head tiles, parts)
    dtype: gl.constexpr = v_desc.dtype
    v_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + v_desc.block_type.shape, v_desc.layout)
    r_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + r_desc.block_type.shape, r_desc.layout)
    q_lat = gl.allocate_shared_memory(dtype, [ROWS, D_LATENT], gl.NVMMASharedLayout.get_default_for([ROWS, D_LATENT],
                                                                                                   dtype))
    q_rope = gl.allocate_shared_memory(dtype, [ROWS, D_ROPE], gl.NVMMASharedLayout.get_default_for([ROWS, D_ROPE], dtype))
    p_bufs = gl.allocate_shared_memory(dtype, [2, ROWS, HALF_N], gl.NVMMASharedLayout.get_default_for([ROWS, HALF_N],
                                                                                                     dtype))
    # warpgroup 0's / 1's row maxima of the current tile, or its row sums at a sequence's end
    x0 = gl.allocate_shared_memory(gl.float32, [ROWS], gl.SwizzledSharedLayout(1, 1, 1, order=[0]))
    x1 = gl.allocate_shared_memory(gl.float32, [ROWS], gl.SwizzledSharedLayout(1, 1, 1, order=[0]))
    # ONE_SYNC: the same for odd tiles; P_w of stage s lives in that stage's rope rows 32w .. 32w + 31 (4 KB)
    x2 = gl.allocate_shared_memory(gl.float32, [ROWS], gl.SwizzledSharedLayout(1, 1, 1, order=[0]))
    x3 = gl.allocate_shared_memory(gl.float32, [ROWS], gl.SwizzledSharedLayout(1, 1, 1, order=[0]))
    p_slots = r_bufs._reinterpret(dtype, [NUM_STAGES * 2, ROWS, HALF_N],
                                  gl.NVMMASharedLayout.get_default_for([ROWS, HALF_N], dtype))
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    bars = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)  # released by both consumer warpgroups
    for i in gl.static_range(4):
        mbarrier.init(bars.index(i), count=2)
    gl.warp_specialize([
        (_wsm_consumer, (q_ptr, v_bufs, r_bufs, q_lat, q_rope, p_bufs, p_slots, x0, x1, x2, x3, ready, empty, bars,
                          seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                          stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                          batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift, NUM_STAGES, CAUSAL,
                          ONE_SYNC, 0)),
        (_wsm_consumer, (q_ptr, v_bufs, r_bufs, q_lat, q_rope, p_bufs, p_slots, x1, x0, x3, x2, ready, empty, bars,
                          seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                          stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                          batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift, NUM_STAGES, CAUSAL,
                          ONE_SYNC, 1)),
        (_wsm_producer, (v_desc, r_desc, v_bufs, r_bufs, ready, empty, bt_ptr, seqlens_ptr, sched_ptr, stride_btb,
                         batch, max_blocks, page_shift, NUM_STAGES)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


def launch_split_wsm(q, kv_cache, block_table, cache_seqlens, scale, causal, metadata, out, lse, opart, lpart):
    """Launch this split kernel on inputs validated by ``mla_decode`` (layout checked by
    ``mla_decode_ws.ws_layout_ok``; metadata cut with BLOCK_N 64 and BLOCK_H 64); partials go to
    opart/lpart for ``mla_decode``'s combine kernel. Raises ValueError for another BLOCK_H / BLOCK_N."""
    cfg = dict(WSM_DEFAULTS)
    cfg.update({k: metadata.config[k] for k in WSM_DEFAULTS if k in metadata.config})
    if metadata.config["BLOCK_H"] != 64 or metadata.config["BLOCK_N"] != _TN:
        raise ValueError(f"config WSM runs 64-row head tiles of 64-key tiles: BLOCK_H and BLOCK_N must be 64, got "
                         f"{metadata.config['BLOCK_H']} / {metadata.config['BLOCK_N']}")
    if int(cfg["WSM_SYNC"]) == 0:
        from tritonseek.kernels.mla_decode_seesaw import launch_split_seesaw

        return launch_split_seesaw(q, kv_cache, block_table, cache_seqlens, scale, causal, metadata, out, lse, opart,
                                   lpart, cfg)
    batch, seqlen_q, num_heads, _ = q.shape
    num_blocks, page_size = kv_cache.shape[:2]
    gdt = _GL_DTYPES[q.dtype]
    flat = kv_cache.view(num_blocks * page_size, _DQK)
    shape = [num_blocks * page_size, _DQK]
    v_desc = TensorDescriptor(flat, shape, [_DQK, 1], [_TN, _DV], smem_layout([_TN, _DV], gdt))
    r_desc = TensorDescriptor(flat, shape, [_DQK, 1], [_TN, _DR], smem_layout([_TN, _DR], gdt))
    grid = (triton.cdiv(seqlen_q * num_heads, 64), metadata.num_parts)
    _mla_decode_wsm_kernel[grid](
        q, v_desc, r_desc, block_table, cache_seqlens, metadata.sched, metadata.split,
        out, lse, opart, lpart,
        q.stride(0), q.stride(1), q.stride(2), block_table.stride(0),
        out.stride(0), out.stride(1), out.stride(2), lse.stride(0), lse.stride(1),
        batch, block_table.shape[1], num_heads, seqlen_q, scale * 1.4426950408889634, page_size.bit_length() - 1,
        NUM_STAGES=int(cfg["WS_STAGES"]), CAUSAL=bool(causal), PRODUCER_REGS=int(cfg["PRODUCER_REGS"]),
        CONSUMER_REGS=int(cfg["CONSUMER_REGS"]), ONE_SYNC=int(cfg["WSM_SYNC"]) == 1, num_warps=4, maxnreg=_MAXNREG,
    )

