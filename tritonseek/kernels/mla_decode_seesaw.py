"""mla_decode's WSM split kernel, "seesaw" schedule (WSM_SYNC=0): queries on the wgmma M side, each 64-key
score tile computed at N = 64 by one warpgroup, the two warpgroups' softmaxes interleaved (Gluon, sm_90a).

out[b, i, h] = Σ_j softmax_j(q[b, i, h]·K[b, j]·scale) · K[b, j, :512],  j ≤ s_k − s_q + i

Same inputs, outputs, schedule, partial slots and combine as ``mla_decode`` (FlashMLA ``flash_mla_with_kvcache``
semantics); ``mla_decode_wsm.launch_split_wsm`` runs this kernel for WSM_SYNC=0. The schedule follows the
one FlashMLA's SM90 dense decode kernel describes (its 2025-04 deep-dive, "seesaw"); written here from that
description. A program owns 64 query rows; warpgroup w holds O_w = O[:, 256w : 256w + 256] (fp32 registers).
Tiles go in pairs (t0, t1); with m the running row maximum (base 2, shared by both):

* warpgroup 0: S0 = Q·K_t0ᵀ (M 64 rows, N 64 keys, K 576); m0 = max(m, rowmax S0), P0 = exp2(S0 − m0);
  P0 → the rope rows of t0's stage (dead after S0) and m0 → shared memory, signal X1; O_0 = O_0·exp2(m − m0)
  + P0·V_t0[:, :256] (P0 from registers). Then wait X2: O_0 = O_0·exp2(m0 − m1) + P1·V_t1[:, :256] (P1 from
  shared memory, already relative to m1).
* warpgroup 1: S1 = Q·K_t1ᵀ, issued before it waits X1; then O_1 = O_1·exp2(m − m0) + P0·V_t0[:, 256:] (P0
  from shared memory) while it finishes S1; m1 = max(m0, rowmax S1), P1 = exp2(S1 − m1) → t1's rope rows,
  m1 → shared memory, signal X2; O_1 = O_1·exp2(m0 − m1) + P1·V_t1[:, 256:] (P1 from registers).

So every score matmul runs at N = 64 and each warpgroup's softmax overlaps the other's matmuls. Row sums are
kept per warpgroup under the same scale factors and added at the end of a sequence. A pair's last tile may
be missing (odd count): warpgroup 1 then issues its score matmul on the next stage without waiting for it
and discards it (its barriers and value matmul are skipped). The TMA warp (mla_decode_wsm's, CHUNKED) loads
each tile as 9 column blocks with one ready barrier each, so a score matmul starts on the first block.
Tail tiles (keys past cache_seqlens) are zeroed in shared memory by the warpgroup that computes their scores,
before its signal orders them before the other warpgroup's value matmul; NaN in unused slots never reaches O.
Shared memory: 2 × 72 KB tiles + 72 KB query tile + 1 KB exchange = 217 KB.
"""

from __future__ import annotations

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

from tritonseek.kernels.mla_decode_ws import _GL_DTYPES, _seq_range, _zero_tail, smem_layout
from tritonseek.kernels.mla_decode_wsm import (
    _L_SWAPPED,
    _Q_WRITTEN,
    D_LATENT,
    D_ROPE,
    HALF_V,
    ROWS,
    TILE_N,
    _load_q_rows,
    _row_setup,
    _span,
    _sync,
    _write_rows,
    _wsm_producer,
)

_X1 = gl.constexpr(1)  # warpgroup 0 → 1: m0 and P0 published (count 1); mla_decode_wsm uses 0 and 3
_X2 = gl.constexpr(2)  # warpgroup 1 → 0: m1 and P1 published (count 1)
_MAXNREG = 168


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
def _scaled_pv(acc, scale, a, v, release):
    # O·scale + A·V (A: P in registers or shared memory), completed before returning (an accumulator in flight
    # across a branch or an mbarrier wait makes ptxas serialize every wgmma, C7512); then the stage released
    acc = acc * gl.expand_dims(gl.convert_layout(scale, gl.SliceLayout(1, acc.type.layout)), 1)
    acc = warpgroup_mma_wait(0, deps=[warpgroup_mma(a, v, acc, is_async=True)])
    mbarrier.arrive(release, count=1)
    return acc


@gluon.jit
def _seesaw_consumer(q_ptr, v_bufs, r_bufs, q_lat, q_rope, x_m0, x_m1, x_mine, x_other, ready, empty, bars,
                     seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                     stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                     batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
                     NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr, EARLY: gl.constexpr, W: gl.constexpr):
    s_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 64, 16])
    o_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 256, 16])
    srow_l: gl.constexpr = gl.SliceLayout(1, s_l)
    skey_l: gl.constexpr = gl.SliceLayout(0, s_l)
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_l, k_width=2)  # P as the register A operand
    ld: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    dtype: gl.constexpr = q_lat.dtype

    pid = gl.program_id(1)
    rows_total = seqlen_q * num_heads
    s_idx, rows_o, o_row, l_row, cols, q_row, rows_ld_ok, c64 = _row_setup(
        num_heads, rows_total, stride_qs, stride_qh, stride_os, stride_oh, stride_lh, srow_l, o_l, ld, W)
    s_zero = gl.zeros([ROWS, TILE_N], gl.float32, s_l)
    v_half: gl.constexpr = W * HALF_V  # this warpgroup's value columns
    b_begin, t_begin, b_end, t_end = _span(sched_ptr, pid)
    it = 0  # tiles consumed (ring position)
    n_seq = 0  # sequences (Q / L barrier phase)
    n_x1 = 0  # pairs (X1 phase)
    n_x2 = 0  # pairs with two tiles (X2 phase)
    for b in range(b_begin, b_end + 1):
        seqlen, k_lo, k_hi = _seq_range(b, b_begin, t_begin, b_end, t_end, seqlens_ptr, batch, max_blocks,
                                        page_shift, TILE_N)
        if k_lo < k_hi:
            # both warpgroups' last score matmuls of the previous sequence completed before their last signal
            _load_q_rows(q_ptr + b.to(gl.int64) * stride_qb, q_row, rows_ld_ok, c64, q_lat.slice(W * 32, 32, dim=0),
                         q_rope.slice(W * 32, 32, dim=0))
            _sync(bars, _Q_WRITTEN, n_seq & 1)
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
                    l_i = l_i * a0 + gl.sum(p, 1)
                    p = p.to(dtype)
                    _publish(p, m0, r_bufs.index(st0), x_m0, bars, _X1)
                    acc = _scaled_pv(acc, a0, gl.convert_layout(p, a_l), v_bufs.index(st0).slice(v_half, HALF_V, dim=1),
                                     empty.index(st0))
                    m_i = m0
                    if has1:
                        mbarrier.wait(bars.index(_X2), n_x2 & 1)
                        m1 = x_m1.load(srow_l)
                        a1 = gl.exp2(m0 - gl.where(m1 == float("-inf"), 0.0, m1))
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
                    mbarrier.wait(bars.index(_X1), n_x1 & 1)
                    s = warpgroup_mma_wait(0, deps=[s])
                    m0 = x_m0.load(srow_l)
                    a0 = gl.exp2(m_i - gl.where(m0 == float("-inf"), 0.0, m0))
                    if EARLY:
                        # S1's softmax first (a missing tile: every key masked, P1 = 0, m1 = m0), X2 as early as
                        # possible; then P0 (relative to m0) read into registers × exp2(m0 − m1) and both value
                        # matmuls back to back: O_1 = O_1·exp2(m − m1) + (P0·a1)·V0 + P1·V1
                        m1, a1, p = _softmax_tile(s, (k0 + 1) * TILE_N, gl.where(has1, limit, -1), m0, sm_scale_log2,
                                                  skey_l)
                        l_i = l_i * (a0 * a1) + gl.sum(p, 1)
                        p = p.to(dtype)
                        if has1:
                            _publish(p, m1, r_bufs.index(st1), x_m1, bars, _X2)
                        p0 = r_bufs.index(st0).load(s_l).to(gl.float32) * gl.expand_dims(a1, 1)
                        p0 = gl.convert_layout(p0.to(dtype), a_l)
                        acc = acc * gl.expand_dims(gl.convert_layout(a0 * a1, gl.SliceLayout(1, o_l)), 1)
                        if has1:
                            acc = warpgroup_mma(p0, v_bufs.index(st0).slice(v_half, HALF_V, dim=1), acc, is_async=True)
                            acc = warpgroup_mma(gl.convert_layout(p, a_l), v_bufs.index(st1).slice(v_half, HALF_V, dim=1),
                                                acc, is_async=True)
                            acc = warpgroup_mma_wait(0, deps=[acc])
                            mbarrier.arrive(empty.index(st1), count=1)
                        else:
                            acc = warpgroup_mma_wait(0, deps=[warpgroup_mma(p0, v_bufs.index(st0).slice(
                                v_half, HALF_V, dim=1), acc, is_async=True)])
                        mbarrier.arrive(empty.index(st0), count=1)
                        m_i = m1
                    else:
                        l_i = l_i * a0
                        acc = _scaled_pv(acc, a0, r_bufs.index(st0), v_bufs.index(st0).slice(v_half, HALF_V, dim=1),
                                         empty.index(st0))
                        m_i = m0
                    if has1 and not EARLY:
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
            _write_rows(acc, m_i, l_i, x_mine, x_other, bars, n_seq & 1, b, pid, rows_total, rows_o, o_row, l_row,
                        cols, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr, stride_ob, stride_lb, W)
            n_seq += 1


# Runtime sizes and strides are not specialized on (one compile per config).
@gluon.jit(do_not_specialize=["stride_qb", "stride_qs", "stride_qh", "stride_btb", "stride_ob", "stride_os",
                              "stride_oh", "stride_lb", "stride_lh", "batch", "max_blocks", "num_heads", "seqlen_q",
                              "page_shift"])
def _mla_decode_seesaw_kernel(
    q_ptr, c_desc, bt_ptr, seqlens_ptr, sched_ptr, split_ptr,
    out_ptr, lse_ptr, opart_ptr, lpart_ptr,
    stride_qb, stride_qs, stride_qh, stride_btb,
    stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
    batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
    NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr, PRODUCER_REGS: gl.constexpr, CONSUMER_REGS: gl.constexpr,
    EARLY: gl.constexpr = False,
):
    # q        [batch, seqlen_q, num_heads, 576] (stride_qb, stride_qs, stride_qh, 1)
    # c_desc   TMA over the cache as [num_blocks·page_size, 576] rows, box [64, 64] (9 blocks per 64-key tile)
    # block_table [batch, max_blocks] int32 (stride_btb, 1); cache_seqlens [batch] int32
    # sched [num_parts, 4] / split [batch, 2] int32: get_mla_metadata's schedule (BLOCK_N = 64)
    # out [batch, seqlen_q, num_heads, 512] (stride_ob, stride_os, stride_oh, 1); lse [batch, num_heads, seqlen_q]
    # opart [num_parts + batch, rows, 512] fp32; lpart [num_parts + batch, rows] fp32
    # grid (64-row head tiles, parts)
    dtype: gl.constexpr = c_desc.dtype
    v_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES, TILE_N, D_LATENT], c_desc.layout)
    r_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES, TILE_N, D_ROPE], c_desc.layout)
    q_lat = gl.allocate_shared_memory(dtype, [ROWS, D_LATENT], gl.NVMMASharedLayout.get_default_for([ROWS, D_LATENT],
                                                                                                   dtype))
    q_rope = gl.allocate_shared_memory(dtype, [ROWS, D_ROPE], gl.NVMMASharedLayout.get_default_for([ROWS, D_ROPE], dtype))
    xl: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[0])
    x_m0 = gl.allocate_shared_memory(gl.float32, [ROWS], xl)
    x_m1 = gl.allocate_shared_memory(gl.float32, [ROWS], xl)
    x_l0 = gl.allocate_shared_memory(gl.float32, [ROWS], xl)
    x_l1 = gl.allocate_shared_memory(gl.float32, [ROWS], xl)
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES * 9, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    bars = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES * 9):
        mbarrier.init(ready.index(i), count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(empty.index(i), count=2)  # released by both consumer warpgroups
    mbarrier.init(bars.index(_Q_WRITTEN), count=2)
    mbarrier.init(bars.index(_L_SWAPPED), count=2)
    mbarrier.init(bars.index(_X1), count=1)
    mbarrier.init(bars.index(_X2), count=1)
    gl.warp_specialize([
        (_seesaw_consumer, (q_ptr, v_bufs, r_bufs, q_lat, q_rope, x_m0, x_m1, x_l0, x_l1, ready, empty, bars,
                            seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                            stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                            batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift, NUM_STAGES, CAUSAL,
                            EARLY, 0)),
        (_seesaw_consumer, (q_ptr, v_bufs, r_bufs, q_lat, q_rope, x_m0, x_m1, x_l1, x_l0, ready, empty, bars,
                            seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
                            stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
                            batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift, NUM_STAGES, CAUSAL,
                            EARLY, 1)),
        (_wsm_producer, (c_desc, c_desc, v_bufs, r_bufs, ready, empty, bt_ptr, seqlens_ptr, sched_ptr, stride_btb,
                         batch, max_blocks, page_shift, NUM_STAGES, True)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


def launch_split_seesaw(q, kv_cache, block_table, cache_seqlens, scale, causal, metadata, out, lse, opart, lpart,
                        cfg):
    """Launch the seesaw split kernel on inputs validated by ``mla_decode`` (``launch_split_wsm`` checked the
    config: BLOCK_H 64, BLOCK_N 64); partials go to opart/lpart for the combine kernel."""
    batch, seqlen_q, num_heads, _ = q.shape
    num_blocks, page_size, _, d_qk = kv_cache.shape
    flat = kv_cache.view(num_blocks * page_size, d_qk)
    c_desc = TensorDescriptor(flat, list(flat.shape), [d_qk, 1], [64, 64], smem_layout([64, 64], _GL_DTYPES[q.dtype]))
    _mla_decode_seesaw_kernel[(triton.cdiv(seqlen_q * num_heads, 64), metadata.num_parts)](
        q, c_desc, block_table, cache_seqlens, metadata.sched, metadata.split,
        out, lse, opart, lpart,
        q.stride(0), q.stride(1), q.stride(2), block_table.stride(0),
        out.stride(0), out.stride(1), out.stride(2), lse.stride(0), lse.stride(1),
        batch, block_table.shape[1], num_heads, seqlen_q, scale * 1.4426950408889634, page_size.bit_length() - 1,
        NUM_STAGES=int(cfg["WS_STAGES"]), CAUSAL=bool(causal), PRODUCER_REGS=int(cfg["PRODUCER_REGS"]),
        CONSUMER_REGS=int(cfg["CONSUMER_REGS"]), EARLY=bool(cfg.get("SEESAW_EARLY", False)), num_warps=4,
        maxnreg=_MAXNREG,
    )
