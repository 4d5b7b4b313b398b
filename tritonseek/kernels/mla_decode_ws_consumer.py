"""The consumer warpgroup of the warp-specialized Gluon MLA decode split kernel (``mla_decode_ws``): one schedule
span's walk (``_consumer_span``: per sequence piece Sᵀ = K·Qᵀ, online softmax, Oᵀ += Vᵀ·Pᵀ, the piece's store) and the
partition entry (``_consumer``: the program's span, then with STEAL the tail spans its producer warp claims). Split from
mla_decode_ws.py (module size); the kernel and its launchers stay there.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from tritonseek.kernels.mla_decode_ws_parts import (
    D_LATENT,
    _merge_parts,
    _rotated,
    _part_release,
    _release_pending,
    _scores,
    _seq_range,
    _seq_tiles,
    _stamp,
    _store_o,
    _store_o_tma,
    _write_empty,
)

# STEAL: a claimed span index as read by the consumer warpgroup (the producer's 32 copies, one per lane)
_SPAN_L4 = gl.constexpr(gl.BlockedLayout([1], [32], [4], [0]))


@gluon.jit
def _consumer(q_ptr, v_bufs, r_bufs, q_lat_all, q_rope_all, p_smem, ready, empty, q_ready, q_empty,
              seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
              stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
              batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
              BLOCK_H: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr,
              DEFER_L: gl.constexpr, ROW0: gl.constexpr, ROWS: gl.constexpr, PIPE: gl.constexpr,
              QTMA: gl.constexpr, WG: gl.constexpr, SEQPF: gl.constexpr, cnt_ptr, COUNT: gl.constexpr, od_desc,
              pd_desc, OTMA: gl.constexpr, PART_TMA: gl.constexpr, diag_ptr, DIAG: gl.constexpr,
              FUSE: gl.constexpr = False, num_spans=0, sp_smem=None, sp_ready=None, sp_free=None,
              STEAL: gl.constexpr = False, ROTATE: gl.constexpr = False, REV_PIDS: gl.constexpr = False,
              DIAG_LITE: gl.constexpr = False):
    # One consumer warpgroup: its program's span, then (STEAL) the tail spans its producer warp claims (each
    # handed over through the sp_smem slot guarded by sp_ready / sp_free; num_spans: the end sentinel).
    # REV_PIDS (diagnostics, no STEAL): program p walks span num_spans − 1 − p (stamps stay in row p).
    # DIAG_LITE (diagnostics): only the program's start / end stamps and SM id (DIAG off: no stamps in the loops).
    pid = gl.program_id(1)
    dg = diag_ptr
    if DIAG or DIAG_LITE:
        dg = diag_ptr + pid.to(gl.int64) * 128
        _stamp(dg, 0)
        smid = gl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r", [], dtype=gl.int32, is_pure=False, pack=1)
        gl.store(dg + 63, smid.to(gl.int64))
    it = gl.to_tensor(0)
    qn0 = gl.to_tensor(0)
    qn1 = gl.to_tensor(0)
    seg = gl.to_tensor(0)
    if STEAL:
        span = pid
        n_sp = gl.to_tensor(0)
        while span < num_spans:
            it, qn0, qn1, seg = _consumer_span(
                span, it, qn0, qn1, seg, dg, q_ptr, v_bufs, r_bufs, q_lat_all, q_rope_all, p_smem, ready, empty,
                q_ready, q_empty, seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr, stride_qb, stride_qs,
                stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh, batch, max_blocks,
                num_heads, seqlen_q, sm_scale_log2, page_shift, BLOCK_H, BLOCK_N, NUM_STAGES,
                CAUSAL, DEFER_L, ROW0, ROWS, PIPE, QTMA, WG, SEQPF, cnt_ptr, COUNT, od_desc,
                pd_desc, OTMA, PART_TMA, diag_ptr, DIAG, FUSE, ROTATE)
            mbarrier.wait(sp_ready, n_sp & 1)
            span = gl.max(sp_smem.load(_SPAN_L4), 0)
            mbarrier.arrive(sp_free, count=1)
            if DIAG:
                gl.store(dg + 56 + gl.minimum(n_sp, 6), span.to(gl.int64))
            n_sp += 1
    else:
        _consumer_span(
            (num_spans - 1 - pid) if REV_PIDS else pid, it, qn0, qn1, seg, dg, q_ptr, v_bufs, r_bufs, q_lat_all, q_rope_all, p_smem, ready, empty, q_ready,
            q_empty, seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr, stride_qb, stride_qs,
            stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh, batch, max_blocks,
            num_heads, seqlen_q, sm_scale_log2, page_shift, BLOCK_H, BLOCK_N, NUM_STAGES, CAUSAL,
            DEFER_L, ROW0, ROWS, PIPE, QTMA, WG, SEQPF, cnt_ptr, COUNT, od_desc, pd_desc, OTMA,
            PART_TMA, diag_ptr, DIAG, FUSE, ROTATE)
    if DIAG or DIAG_LITE:
        _stamp(dg, 1)


@gluon.jit
def _consumer_span(span, it, qn0, qn1, seg, dg,
                   q_ptr, v_bufs, r_bufs, q_lat_all, q_rope_all, p_smem, ready, empty, q_ready, q_empty,
              seqlens_ptr, sched_ptr, split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
              stride_qb, stride_qs, stride_qh, stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
              batch, max_blocks, num_heads, seqlen_q, sm_scale_log2, page_shift,
              BLOCK_H: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr,
              DEFER_L: gl.constexpr, ROW0: gl.constexpr, ROWS: gl.constexpr, PIPE: gl.constexpr,
              QTMA: gl.constexpr, WG: gl.constexpr, SEQPF: gl.constexpr, cnt_ptr, COUNT: gl.constexpr, od_desc,
              pd_desc, OTMA: gl.constexpr, PART_TMA: gl.constexpr, diag_ptr, DIAG: gl.constexpr,
              FUSE: gl.constexpr = False, ROTATE: gl.constexpr = False):
    # The consumer warpgroup's walk of one schedule span (sched row `span`; the program's own, or a STEAL tail span):
    # Sᵀ = K·Qᵀ, online softmax over keys (Sᵀ's rows), Oᵀ += Vᵀ·Pᵀ per sequence piece. q_lat_all/q_rope_all:
    # [2, ROWS, ·] query buffers filled by the producer (QTMA), else buffer WG (this warpgroup's) written here.
    # it / qn0 / qn1 / seg: tiles consumed, query-buffer uses, DIAG segments so far (returned updated).
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
    b_begin = gl.load(sched_ptr + span * 4 + 0)
    t_begin = gl.load(sched_ptr + span * 4 + 1)
    b_end = gl.load(sched_ptr + span * 4 + 2)
    t_end = gl.load(sched_ptr + span * 4 + 3)
    if FUSE:  # span 0 also walks the empty sequences before it (no combine kernel writes them)
        b_begin = gl.where(span == 0, 0, b_begin)
    # qn0 / qn1: sequences that used query buffer 0 / 1 (QTMA: buffer (b − b_begin) % 2, the producer's choice)
    # seg (DIAG): segments done; dg row[2 + 5j ...]: start, first tile ready, tiles done, stored, sequence id
    UNROLL: gl.constexpr = 2 if QTMA else 1  # QTMA: two copies of the body, one per query buffer
    # ROTATE: the span's last sequence first (its piece is the first piece of a sequence the next span continues),
    # then b_begin .. b_end − 1: walk step bl visits sequence _rotated(bl) (bl itself without ROTATE)
    if SEQPF:  # cache_seqlens of the next sequence loaded one sequence ahead
        len_next = gl.load(seqlens_ptr + gl.minimum(b_end if ROTATE else b_begin, batch - 1))
    # COUNT with TMA-stored partials (PART_TMA): the piece stored last, released at the next segment's start or the
    # span's end (−1: none), see _release_pending
    pend = gl.to_tensor(-1)
    for bb in range(b_begin, b_end + 1, UNROLL):
        for u in gl.static_range(UNROLL):
            bl = bb + u
            b = _rotated(bl, b_begin, b_end, ROTATE)
            if SEQPF:
                seqlen, k_lo, k_hi = _seq_tiles(b, len_next, b_begin, t_begin, b_end, t_end, batch, max_blocks,
                                                page_shift, BLOCK_N)
                # the next step's sequence: _rotated(bl + 1) = bl with ROTATE
                len_next = gl.load(seqlens_ptr + gl.minimum(bl if ROTATE else b + 1, batch - 1))
                n_split = gl.load(split_ptr + gl.minimum(b, batch - 1) * 2 + 1)  # used after the tiles
            else:
                seqlen, k_lo, k_hi = _seq_range(b, b_begin, t_begin, b_end, t_end, seqlens_ptr, batch, max_blocks,
                                                page_shift, BLOCK_N)
            if (bl <= b_end) & (k_lo < k_hi):
                if DIAG:
                    dj = 2 + 5 * gl.minimum(seg, 7)
                    _stamp(dg, dj)
                if COUNT and PART_TMA:  # the previous piece: its TMA store has had its epilogue to complete
                    _release_pending(cnt_ptr, pend)
                    pend = gl.to_tensor(-1)
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
                has = l_i != 0.0  # NaN scores (l_i NaN): out and lse NaN, as mla_decode_ref
                inv_l = gl.where(has, 1.0 / gl.where(has, l_i, 1.0), 0.0)
                lse = gl.where(has, (m_i + gl.log2(gl.where(has, l_i, 1.0))) * 0.6931471805599453, float("-inf"))
                if not SEQPF:
                    n_split = gl.load(split_ptr + b * 2 + 1)
                slot = (span + b).to(gl.int64) * rows_total
                merge = n_split < 0  # FUSE (per thread): merge the sequence's pieces
                if OTMA:
                    if FUSE:
                        if n_split > 1:
                            merge = _part_release(acc * gl.expand_dims(inv_l, 0), lse, b, n_split, slot,
                                                  tile_h * BLOCK_H + ROW0, q_lat, opart_ptr, lpart_ptr, cnt_ptr, rows,
                                                  row_ok, ROWS, dg, DIAG)
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
                    if DIAG:  # the program's last split piece: merged (stamp 58), merge flag, its segment index
                        _stamp(dg, 58)
                        gl.store(dg + 59, merge.to(gl.int64))
                        gl.store(dg + 60, gl.minimum(seg, 7).to(gl.int64))
                else:
                    gl.store(lpart_ptr + slot + rows, lse, mask=row_ok)
                    if COUNT and not PART_TMA:  # each thread releases its own partial stores (COMBINE_SPIN)
                        gl.inline_asm_elementwise("red.release.gpu.global.add.s32 [$1], 1; // $0", "=r,l", [cnt_ptr + b],
                                                  dtype=gl.int32, is_pure=False, pack=1)
                if COUNT and PART_TMA:  # a TMA-stored piece is released later (no wait for its writes here)
                    pend = gl.where(n_split > 1, b, pend)
                if DIAG:
                    _stamp(dg, dj + 3)
                    gl.store(dg + dj + 4, b.to(gl.int64))
                    seg += 1
            if FUSE:
                if (bl <= b_end) & (b < batch) & (seqlen == 0):
                    _write_empty(b, tile_h * BLOCK_H + ROW0, rows_total, out_ptr, lse_ptr, stride_lb, stride_lh,
                                 num_heads, ROWS)
    if COUNT and PART_TMA:
        _release_pending(cnt_ptr, pend)
    return it, qn0, qn1, seg


