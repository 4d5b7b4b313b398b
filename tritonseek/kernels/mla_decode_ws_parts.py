"""Device helpers of the warp-specialized Gluon MLA decode split kernel (``mla_decode_ws``): the TMA producer
warp, a sequence's tile range, tail zeroing, score issue, the output stores (registers or, OTMA, TMA from the
finished query buffer) and the DIAG timer stamps. Split from mla_decode_ws.py (module size); the kernel, its
consumer warpgroup and the launchers stay there.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma, warpgroup_mma

# The cache layout (DeepSeek MLA): 512 latent (= V) columns ‖ 64 rope columns; 64-key tiles.
D_LATENT = gl.constexpr(512)
D_ROPE = gl.constexpr(64)
D_QK = gl.constexpr(576)
TILE_N = gl.constexpr(64)  # keys per tile = wgmma M of one warpgroup
# STEAL: a claimed span index as written by the producer warp (one copy per lane)
_SPAN_L1 = gl.constexpr(gl.BlockedLayout([1], [32], [1], [0]))


@gluon.jit
def _seq_range(b, b_begin, t_begin, b_end, t_end, seqlens_ptr, batch, max_blocks, page_shift,
               BLOCK_N: gl.constexpr):
    # (seqlen, first tile, end tile) of sequence b inside this program's span; empty past the batch
    return _seq_tiles(b, gl.load(seqlens_ptr + gl.minimum(b, batch - 1)), b_begin, t_begin, b_end, t_end, batch,
                      max_blocks, page_shift, BLOCK_N)


@gluon.jit
def _rotated(bl, b_begin, b_end, ROTATE: gl.constexpr):
    # ROTATE: walk step bl ∈ [b_begin, b_end] of a span visits b_end first, then b_begin .. b_end − 1
    if ROTATE:
        return gl.where(bl == b_begin, b_end, bl - 1)
    else:
        return bl


@gluon.jit
def _seq_tiles(b, seqlen, b_begin, t_begin, b_end, t_end, batch, max_blocks, page_shift, BLOCK_N: gl.constexpr):
    # _seq_range with cache_seqlens[b] already loaded
    seqlen = gl.where(b < batch, gl.minimum(seqlen, max_blocks << page_shift), 0)  # never past the block table
    n_tiles = gl.cdiv(seqlen, BLOCK_N)
    k_lo = gl.where(b == b_begin, t_begin, 0)
    k_hi = gl.minimum(gl.where(b == b_end, t_end, n_tiles), n_tiles)
    return seqlen, k_lo, k_hi


@gluon.jit
def _clock():
    return gl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l", [], dtype=gl.int64, is_pure=False, pack=1)


@gluon.jit
def _stamp(row, i):
    # DIAG: %globaltimer (ns) at row[i] and %clock64 (SM cycles) at row[64 + i]
    t = gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=gl.int64, is_pure=False, pack=1)
    gl.store(row + i, t)
    gl.store(row + 64 + i, _clock())


@gluon.jit
def _claim(work_ptr):
    # STEAL: lane 0 of the producer warp takes the next tail-span ticket (relaxed atomic add), broadcast to the warp
    return gl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .b32 l, v; mov.u32 l, %laneid; setp.eq.u32 p, l, 0; mov.u32 v, 0; "
        "@p atom.relaxed.gpu.global.add.u32 v, [$1], 1; shfl.sync.idx.b32 $0, v, 0, 31, -1; }",
        "=r,l", [work_ptr], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _producer(v_desc, r_desc, v_bufs, r_bufs, ready, empty, bt_ptr, seqlens_ptr, sched_ptr,
              stride_btb, batch, max_blocks, page_shift,
              qd_lat, qd_rope, q_lat, q_rope, q_ready, q_empty, rows_total, row0,
              BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, QTMA: gl.constexpr, BTPF: gl.constexpr,
              diag_ptr, DIAG: gl.constexpr, FUSE: gl.constexpr = False, num_spans=0, work_ptr=None, sp_smem=None,
              sp_ready=None, sp_free=None, STEAL: gl.constexpr = False, ROTATE: gl.constexpr = False,
              REV_PIDS: gl.constexpr = False):
    # One warp: the program's span, then (STEAL) tail spans: after issuing a span's last tile it takes a ticket j
    # from work_ptr[head tile] (tail span num_programs + j while j < num_spans − num_programs, else the end
    # sentinel num_spans) and hands it to the consumer through the sp_smem slot. Every program takes exactly one
    # ticket past the tail, so the ticket numbered (tail spans + programs − 1) is the last one of the launch: its
    # taker re-arms the counter (0) for the next launch (graph-safe, no host reset).
    pid = gl.program_id(1)
    w_cyc = gl.to_tensor(0).to(gl.int64)  # DIAG: cycles waiting for free stages / from a free stage to its TMA
    i_cyc = gl.to_tensor(0).to(gl.int64)
    it = gl.to_tensor(0)
    qn0 = gl.to_tensor(0)  # sequences sent to query buffer 0 / 1: buffer (b − b_begin) % 2, as the consumer
    qn1 = gl.to_tensor(0)
    pseg = gl.to_tensor(0)
    if STEAL:
        n_prog = gl.num_programs(1)
        # an empty tail (the packed walk's, or nothing left past the programs' spans: the first tail span starts
        # past the batch) takes no tickets: every program reads the same row, the counter stays 0
        n_tail = gl.where(gl.load(sched_ptr + n_prog * 4) < batch, num_spans - n_prog, 0)
        cnt = work_ptr + gl.program_id(0)
        span = pid
        n_sp = gl.to_tensor(0)
        while span < num_spans:
            it, qn0, qn1, pseg, w_cyc, i_cyc = _producer_span(
                span, it, qn0, qn1, pseg, w_cyc, i_cyc, v_desc, r_desc, v_bufs, r_bufs, ready, empty, bt_ptr,
                seqlens_ptr, sched_ptr, stride_btb, batch, max_blocks, page_shift, qd_lat, qd_rope, q_lat, q_rope,
                q_ready, q_empty, rows_total, row0, BLOCK_N, NUM_STAGES, QTMA, BTPF, diag_ptr, DIAG, FUSE, ROTATE)
            j = n_tail
            if n_tail > 0:
                j = _claim(cnt)
                if j == n_tail + n_prog - 1:
                    gl.store(cnt, 0)
            span = gl.where(j < n_tail, n_prog + j, num_spans)
            mbarrier.wait(sp_free, (n_sp & 1) ^ 1)  # the slot starts free; then free once the consumer read it
            sp_smem.store(gl.zeros([32], gl.int32, _SPAN_L1) + span)
            mbarrier.arrive(sp_ready, count=1)
            n_sp += 1
    else:  # REV_PIDS (diagnostics): span num_spans − 1 − pid, as the consumer
        _, _, _, _, w_cyc, i_cyc = _producer_span(
            (num_spans - 1 - pid) if REV_PIDS else pid, it, qn0, qn1, pseg, w_cyc, i_cyc, v_desc, r_desc, v_bufs, r_bufs, ready, empty, bt_ptr,
            seqlens_ptr, sched_ptr, stride_btb, batch, max_blocks, page_shift, qd_lat, qd_rope, q_lat, q_rope,
            q_ready, q_empty, rows_total, row0, BLOCK_N, NUM_STAGES, QTMA, BTPF, diag_ptr, DIAG, FUSE, ROTATE)
    if DIAG:
        _stamp(diag_ptr + pid.to(gl.int64) * 128, 47)
        gl.store(diag_ptr + pid.to(gl.int64) * 128 + 45, w_cyc)
        gl.store(diag_ptr + pid.to(gl.int64) * 128 + 46, i_cyc)


@gluon.jit
def _producer_span(span, it, qn0, qn1, pseg, w_cyc, i_cyc, v_desc, r_desc, v_bufs, r_bufs, ready, empty, bt_ptr,
                   seqlens_ptr, sched_ptr, stride_btb, batch, max_blocks, page_shift,
                   qd_lat, qd_rope, q_lat, q_rope, q_ready, q_empty, rows_total, row0,
                   BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, QTMA: gl.constexpr, BTPF: gl.constexpr,
                   diag_ptr, DIAG: gl.constexpr, FUSE: gl.constexpr, ROTATE: gl.constexpr = False):
    # The producer warp's walk of one schedule span (sched row `span`): for every tile, wait for a free stage
    # and TMA the tile into it.
    # QTMA: before a sequence's tiles, its query rows go into one of two query buffers (released by the
    # consumer after the sequence), so the next sequence's queries arrive while this one is computed.
    # BTPF: the block id of the sequence's next tile is loaded before this tile's wait for a free stage (the
    # L2 latency of the block-table read is off the path from a released stage to its TMA).
    # Measured and dropped (s20 W2 at 1515883, code there): the next sequence's query TMA issued after this sequence's
    # third tile instead of at its start (QEARLY), a sequence's first block id loaded before its query TMA (BTFIRST).
    pid = gl.program_id(1)
    b_begin = gl.load(sched_ptr + span * 4 + 0)
    t_begin = gl.load(sched_ptr + span * 4 + 1)
    b_end = gl.load(sched_ptr + span * 4 + 2)
    t_end = gl.load(sched_ptr + span * 4 + 3)
    if FUSE:  # as the consumer: span 0 also walks the empty sequences before it
        b_begin = gl.where(span == 0, 0, b_begin)
    stage_bytes: gl.constexpr = v_desc.block_type.nbytes + r_desc.block_type.nbytes
    page_mask = (1 << page_shift) - 1
    for bl in range(b_begin, b_end + 1):
        b = _rotated(bl, b_begin, b_end, ROTATE)  # ROTATE: the span's last sequence first, as the consumer
        seqlen, k_lo, k_hi = _seq_range(b, b_begin, t_begin, b_end, t_end, seqlens_ptr, batch, max_blocks,
                                        page_shift, BLOCK_N)
        bt_row = bt_ptr + b.to(gl.int64) * stride_btb
        if QTMA:
            if k_lo < k_hi:
                qs = (bl - b_begin) % 2
                n_q = gl.where(qs == 0, qn0, qn1)
                mbarrier.wait(q_empty.index(qs), (n_q & 1) ^ 1)
                qbar = q_ready.index(qs)
                mbarrier.expect(qbar, qd_lat.block_type.nbytes + qd_rope.block_type.nbytes)
                tma.async_copy_global_to_shared(qd_lat, [b * rows_total + row0, 0], qbar, q_lat.index(qs))
                tma.async_copy_global_to_shared(qd_rope, [b * rows_total + row0, D_LATENT], qbar, q_rope.index(qs))
                qn0 = gl.where(qs == 0, qn0 + 1, qn0)
                qn1 = gl.where(qs == 1, qn1 + 1, qn1)
        if BTPF:  # block id of the span's first tile (clamped into the row: an empty span reads nothing past it)
            blk_next = gl.load(bt_row + gl.minimum((k_lo * BLOCK_N) >> page_shift, max_blocks - 1))
        for k in range(k_lo, k_hi):
            s = it % NUM_STAGES
            first = k * BLOCK_N
            if BTPF:
                blk = blk_next
                blk_next = gl.load(bt_row + ((gl.minimum(k + 1, k_hi - 1) * BLOCK_N) >> page_shift))
            if DIAG:
                c0 = _clock()
            mbarrier.wait(empty.index(s), ((it // NUM_STAGES) & 1) ^ 1)  # stages start released
            if DIAG:
                c1 = _clock()
            if not BTPF:
                blk = gl.load(bt_row + (first >> page_shift))
            row = (blk << page_shift) + (first & page_mask)
            bar = ready.index(s)
            mbarrier.expect(bar, stage_bytes)
            tma.async_copy_global_to_shared(v_desc, [row, 0], bar, v_bufs.index(s))
            tma.async_copy_global_to_shared(r_desc, [row, D_LATENT], bar, r_bufs.index(s))
            if DIAG:  # first tile of a segment issued
                i_cyc += _clock() - c1
                w_cyc += c1 - c0
                if k == k_lo:
                    _stamp(diag_ptr + pid.to(gl.int64) * 128, 48 + gl.minimum(pseg, 7))
            it += 1
        if k_lo < k_hi:
            pseg += 1
    return it, qn0, qn1, pseg, w_cyc, i_cyc


@gluon.jit
def _zero_tail(buf, first, seqlen, COLS: gl.constexpr, BLOCK_N: gl.constexpr, layout: gl.constexpr):
    # rows first + i ≥ seqlen of a [BLOCK_N, COLS] shared tile := 0, 64 columns at a time
    keys = first + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, layout))
    keep = gl.expand_dims(keys < seqlen, 1)
    for c in gl.static_range(COLS // 64):
        part = buf.slice(c * 64, 64, dim=1)
        x = part.load(layout)
        part.store(gl.where(keep, x, gl.zeros_like(x)))


@gluon.jit
def _store_o(o, n_split, b, slot, rows, row_ok, o_row, cols, out_ptr, opart_ptr, stride_ob):
    # Oᵀ [value columns, query rows] → out (the sequence's only split) or its partial slot
    if n_split == 1:
        o_ptrs = out_ptr + b.to(gl.int64) * stride_ob + (gl.expand_dims(o_row, 0) + gl.expand_dims(cols, 1))
        gl.store(o_ptrs, o.to(out_ptr.dtype.element_ty), mask=gl.expand_dims(row_ok, 0))
    else:
        p_ptrs = opart_ptr + slot * D_LATENT + (gl.expand_dims(rows * D_LATENT, 0) + gl.expand_dims(cols, 1))
        gl.store(p_ptrs, o.to(opart_ptr.dtype.element_ty), mask=gl.expand_dims(row_ok, 0))  # fp32 (or PART16)


@gluon.jit
def _release_pending(cnt_ptr, pend):
    # COMBINE_SPIN with TMA-stored partials: release piece counter cnt_ptr[pend] (pend < 0: nothing) to a combine that
    # is already running. Every thread of the warpgroup: wait until its bulk async-groups are complete
    # (cp.async.bulk.wait_group 0 without .read: the global writes, not just the buffer read that store_wait waits
    # for; a no-op in the threads that issued none), fence them from the async proxy to the generic one, then
    # red.release its increment, which also orders its own lpart store. The TMA-issuing thread's release thus covers
    # the partial. Called at the start of the next segment (the store has had the epilogue and gap to complete: an
    # immediate wait after each store cost H200 W1 the merges' gain) and at the span's end.
    return gl.inline_asm_elementwise(
        "{ .reg .pred p; setp.lt.s32 p, $2, 0; @p bra SKIP; cp.async.bulk.wait_group 0; fence.proxy.async.global; "
        "red.release.gpu.global.add.s32 [$1], 1; SKIP: } // $0",
        "=r,l,r", [cnt_ptr + gl.maximum(pend, 0), pend], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _store_o_tma(o, n_split, b, slot, row_base, rows_total, buf, od_desc, pd_desc, cols, rows, row_ok, opart_ptr,
                 PART_TMA: gl.constexpr):
    # OTMA: Oᵀ [value columns, query rows] → the finished sequence's query buffer (its wgmmas have completed) →
    # one TMA store of the [rows, 512] tile into out (the sequence's only split) or, PART_TMA (16-bit partials),
    # its partial slot; fp32 partials are stored from registers. The buffer is free again on return.
    if n_split == 1:
        buf.store(gl.permute(o.to(buf.dtype), (1, 0)))
        fence_async_shared()
        gl.thread_barrier()
        tma.async_copy_shared_to_global(od_desc, [b * rows_total + row_base, 0], buf)
        tma.store_wait(0)
    else:
        if PART_TMA:
            buf.store(gl.permute(o.to(buf.dtype), (1, 0)))
            fence_async_shared()
            gl.thread_barrier()
            tma.async_copy_shared_to_global(pd_desc, [slot.to(gl.int32) + row_base, 0], buf)
            tma.store_wait(0)
        else:
            p_ptrs = opart_ptr + slot * D_LATENT + (gl.expand_dims(rows * D_LATENT, 0) + gl.expand_dims(cols, 1))
            gl.store(p_ptrs, o.to(opart_ptr.dtype.element_ty), mask=gl.expand_dims(row_ok, 0))
    gl.thread_barrier()  # the TMA store has read the buffer (store_wait in the issuing thread) before it is released


@gluon.jit
def _scores(vb, rb, q_lat, q_rope, s_zero, k, masked, seqlen, BLOCK_N: gl.constexpr, ld: gl.constexpr):
    # issue Sᵀ = K·Qᵀ for cache tile k (async); a tail tile first gets its rows past seqlen zeroed
    if masked:
        _zero_tail(vb, k * BLOCK_N, seqlen, D_LATENT, BLOCK_N, ld)
        fence_async_shared()
        gl.thread_barrier()
    s = warpgroup_mma(vb, q_lat.permute((1, 0)), s_zero, use_acc=False, is_async=True)
    return warpgroup_mma(rb, q_rope.permute((1, 0)), s, is_async=True)


# FUSE (fused combine, one consumer warpgroup of 4 warps = 128 threads, OTMA): [rows, 128]-column chunks of 16-bit
# rows in 16-byte pieces (chunks keep the merge's registers low: the per-tile loop must stay spill-free)
_CHUNK = gl.constexpr(128)
_ROW_PIECES = gl.constexpr(gl.BlockedLayout([1, 8], [2, 16], [4, 1], [1, 0]))


@gluon.jit
def _part_store(o, lse, slot, row_base, buf, opart_ptr, lpart_ptr, rows, row_ok, ROWS: gl.constexpr):
    # FUSE, a piece of a split sequence: Oᵀ (normalized) → the finished query buffer → coalesced 16-byte stores into
    # its 16-bit partial slot (generic-proxy st.global, not TMA: the arrival's release orders them), lse → lpart
    buf.store(gl.permute(o.to(buf.dtype), (1, 0)))
    gl.thread_barrier()
    rr = row_base + gl.arange(0, ROWS, layout=gl.SliceLayout(1, _ROW_PIECES))
    cc = gl.arange(0, _CHUNK, layout=gl.SliceLayout(0, _ROW_PIECES))
    p_rows = opart_ptr + (slot + gl.expand_dims(rr, 1).to(gl.int64)) * D_LATENT + gl.expand_dims(cc, 0)
    for c in gl.static_range(D_LATENT // _CHUNK):
        gl.store(p_rows + c * _CHUNK, buf.slice(c * _CHUNK, _CHUNK, dim=1).load(_ROW_PIECES))
    gl.store(lpart_ptr + slot + rows, lse, mask=row_ok)


# one element per thread of the consumer warpgroup (4 warps): FUSE's single-thread arrival and re-arm are element 0
# (masked tensor atomic / store: they run in the one thread that owns it), as fp8_gemm_ws_sk's fix-up
_WG_LANES = gl.constexpr(gl.BlockedLayout([1], [32], [4], [0]))


@gluon.jit
def _part_release(o, lse, b, n_split, slot, row_base, buf, opart_ptr, lpart_ptr, cnt_ptr, rows, row_ok,
                  ROWS: gl.constexpr, dg=None, DIAG: gl.constexpr = False):
    # FUSE: store a piece (_part_store), then count it on the sequence's counter cnt_ptr[b]; returns merge: this
    # thread read the full count (n_split) and has acquired every piece. One arrival per warpgroup, as
    # fp8_gemm_ws_sk's fix-up: a warpgroup barrier (every thread's stores before it), ONE atom.acq_rel.gpu by element
    # 0's thread (a release cumulative over the stores the barrier ordered before it), a barrier, every thread re-reads
    # the count (ld.acquire.gpu), a barrier. In the warpgroup making the last increment every thread reads the full
    # count (a thread elsewhere that reads it too merges the same values; _merge_parts is per thread, no barrier); the
    # last incrementer's thread re-arms the counter (0) for the next call right here, after its warpgroup's reads.
    # H200 s19 W2 (DIAG, b128 s_k 4096 varlen): stored -> count re-read 1.0 us at 16 and 32 rows. Session 18's
    # arrival (each of the 128 threads incrementing, code in git at 6bd1975) measured the same end to end (W1).
    # DIAG: stamps 56 (partial stored, before the atomic) and 57 (count re-read) in the program's row dg.
    _part_store(o, lse, slot, row_base, buf, opart_ptr, lpart_ptr, rows, row_ok, ROWS)
    lane = gl.arange(0, 128, layout=_WG_LANES)
    ctr = cnt_ptr + b + lane * 0
    gl.thread_barrier()  # every thread's partial stores before the single release
    if DIAG:
        _stamp(dg, 56)
    old = gl.atomic_add(ctr, gl.full([128], 1, gl.int32, _WG_LANES), mask=lane == 0, sem="acq_rel", scope="gpu")
    gl.thread_barrier()  # the increment before this warpgroup's reads
    cur = gl.inline_asm_elementwise("ld.acquire.gpu.global.u32 $0, [$1];", "=r,l", [cnt_ptr + b],
                                    dtype=gl.int32, is_pure=False, pack=1)
    gl.thread_barrier()  # this warpgroup's reads before its re-arming thread (if here) zeroes the counter
    if DIAG:
        _stamp(dg, 57)
    gl.store(ctr, gl.zeros([128], gl.int32, _WG_LANES), mask=(lane == 0) & (old == n_split - 1))
    return cur == n_split


@gluon.jit
def _merge_parts(b, n_split, row_base, rows_total, split_ptr, opart_ptr, lpart_ptr, out_ptr, lse_ptr,
                 stride_lb, stride_lh, num_heads, ROWS: gl.constexpr):
    # FUSE, per thread (its own elements; no barrier, no exchange: threads may branch here apart), in a thread that
    # acquired all of sequence b's pieces (_part_release): out = Σ_i w_i·O_i / Σ_i w_i with w_i = exp(lse_i − max
    # lse) over b's pieces (slots first + i + b, as _mla_combine_kernel), lse = max + log Σ w_i (a row no piece saw:
    # out 0, lse −inf); out contiguous [batch·rows_total, 512]. Loads bypass L1 (.cg). One pass over the pieces with
    # a running max (weights rescaled as in online softmax), each piece's lse and all 512 columns loaded together:
    # n_split dependent global round trips (session 18's three passes of 128-column chunks: code in git at 6bd1975).
    # H200 s19 W2 (DIAG, b128 s_k 4096 varlen, 2 pieces mostly): 2.3-2.6 us at 16 rows but ~8 us (max 12) at 32 rows,
    # at the end of ~105 of the 132 programs: FUSE's cost at 32 rows (the three-pass merge measured the same in W1).
    # s20 W1 (1230905): every load of a 2-piece merge issued before the math, the own piece from shared memory: no
    # faster (DIAG 9.0 vs 7.7 us, A/B +2..+5 us); so not latency of a serial load chain (removed; code in git there).
    rr = row_base + gl.arange(0, ROWS, layout=gl.SliceLayout(1, _ROW_PIECES))
    cc = gl.expand_dims(gl.arange(0, D_LATENT, layout=gl.SliceLayout(0, _ROW_PIECES)), 0)
    first = gl.load(split_ptr + b * 2)
    m = gl.full([ROWS], float("-inf"), gl.float32, gl.SliceLayout(1, _ROW_PIECES))
    wsum = gl.zeros([ROWS], gl.float32, gl.SliceLayout(1, _ROW_PIECES))
    acc = gl.zeros([ROWS, D_LATENT], gl.float32, _ROW_PIECES)
    for i in range(0, n_split):
        sl = (first + i + b).to(gl.int64) * rows_total + rr
        lp = gl.load(lpart_ptr + sl, cache_modifier=".cg")
        x = gl.load(opart_ptr + gl.expand_dims(sl * D_LATENT, 1) + cc, cache_modifier=".cg")
        m_new = gl.maximum(m, lp)
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = gl.exp2((m - m_safe) * 1.4426950408889634)  # 0 while no piece had a finite lse (m −inf)
        w = gl.exp2((lp - m_safe) * 1.4426950408889634)  # a NaN piece: NaN, so out and lse NaN (as the combine)
        wsum = wsum * alpha + w
        acc = acc * gl.expand_dims(alpha, 1) + gl.expand_dims(w, 1) * x.to(gl.float32)
        m = m_new
    has = wsum != 0.0
    inv = gl.where(has, 1.0 / gl.where(has, wsum, 1.0), 0.0)
    o_rows = out_ptr + gl.expand_dims((b.to(gl.int64) * rows_total + rr) * D_LATENT, 1) + cc
    gl.store(o_rows, (acc * gl.expand_dims(inv, 1)).to(out_ptr.dtype.element_ty))
    m_safe = gl.where(m == float("-inf"), 0.0, m)
    lse = gl.where(has, m_safe + gl.log(gl.where(has, wsum, 1.0)), float("-inf"))
    gl.store(lse_ptr + b.to(gl.int64) * stride_lb + (rr % num_heads).to(gl.int64) * stride_lh + rr // num_heads, lse)


@gluon.jit
def _write_empty(b, row_base, rows_total, out_ptr, lse_ptr, stride_lb, stride_lh, num_heads, ROWS: gl.constexpr):
    # FUSE (no combine kernel): an empty sequence's rows get out 0 and lse −inf (out contiguous, as _merge_parts);
    # every program whose span holds b writes the same values
    rr = row_base + gl.arange(0, ROWS, layout=gl.SliceLayout(1, _ROW_PIECES))
    cc = gl.arange(0, _CHUNK, layout=gl.SliceLayout(0, _ROW_PIECES))
    o_rows = out_ptr + (b.to(gl.int64) * rows_total + gl.expand_dims(rr, 1).to(gl.int64)) * D_LATENT + gl.expand_dims(cc, 0)
    for c in gl.static_range(D_LATENT // _CHUNK):
        gl.store(o_rows + c * _CHUNK, gl.zeros([ROWS, _CHUNK], out_ptr.dtype.element_ty, _ROW_PIECES))
    gl.store(lse_ptr + b.to(gl.int64) * stride_lb + (rr % num_heads).to(gl.int64) * stride_lh + rr // num_heads,
             gl.full([ROWS], float("-inf"), gl.float32, gl.SliceLayout(1, _ROW_PIECES)))
