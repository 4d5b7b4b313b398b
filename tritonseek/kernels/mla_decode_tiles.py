"""Per-tile building blocks of the paged MLA decode kernel (``mla_decode._mla_decode_kernel``), and the
split-KV combine and schedule kernels shared by the tl and Gluon (``mla_decode_ws``) split kernels.

Each function handles one tile of BLOCK_N cache rows for a tile of BLOCK_H query rows (rows =
(query position, head) pairs); see tritonseek/kernels/mla_decode.py for the design and layouts.

* ``_load_tile``: the tile's three column blocks (TMA descriptors or pointer gathers through the block table).
* ``_tile_step``: s = q·kᵀ, online softmax (base 2), acc += p·v.
* ``_mla_combine_kernel``: lse-weighted merge of a sequence's split partials; ``_mla_schedule_kernel`` /
  ``_mla_schedule_packed_kernel``: ``get_mla_metadata``'s balanced / length-aware split schedule on the device.

Under the Triton interpreter (DOT_FP32) operands are upcast to fp32: it cannot multiply bf16.
"""

import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from tritonseek.kernels._host import cdiv, next_pow2


@triton.jit
def _load_tile(
    kv_ptr, kn_desc, kr_desc, bt_row_ptr, k, seqlen,
    stride_kvb, stride_kvt, head_dim_v, d_qk, page_shift,
    BLOCK_N: tl.constexpr, BLOCK_DV2: tl.constexpr, BLOCK_R: tl.constexpr,
    MASKED: tl.constexpr, USE_TMA: tl.constexpr, DOT_FP32: tl.constexpr, EVEN_D: tl.constexpr,
):
    # Cache rows k·BLOCK_N … +BLOCK_N of one sequence as (latent half 0, latent half 1, rope) tiles;
    # with MASKED, rows at or past seqlen are zeroed (NaN in unused slots never reaches a dot).
    keys = k * BLOCK_N + tl.arange(0, BLOCK_N)
    valid = keys < seqlen
    if USE_TMA:
        # page_size ≥ BLOCK_N: the tile lies inside one page.
        first = k * BLOCK_N
        blk = tl.load(bt_row_ptr + (first >> page_shift))
        row = (blk << page_shift) + (first & ((1 << page_shift) - 1))
        kn0 = kn_desc.load([row, 0])
        kn1 = kn_desc.load([row, BLOCK_DV2])
        kr = kr_desc.load([row, 2 * BLOCK_DV2])
        if MASKED:
            kn0 = tl.where(valid[:, None], kn0, 0.0).to(kn0.dtype)
            kn1 = tl.where(valid[:, None], kn1, 0.0).to(kn1.dtype)
            kr = tl.where(valid[:, None], kr, 0.0).to(kr.dtype)
    else:
        if MASKED:
            blk = tl.load(bt_row_ptr + (keys >> page_shift), mask=valid, other=0).to(tl.int64)
        else:
            blk = tl.load(bt_row_ptr + (keys >> page_shift)).to(tl.int64)
        row_off = blk * stride_kvb + (keys & ((1 << page_shift) - 1)).to(tl.int64) * stride_kvt
        c = tl.arange(0, BLOCK_DV2)
        if EVEN_D:
            # 576 = 2·256 + 64: no column masks and constexpr column offsets, so each row loads as
            # 16-byte vectors and the pipeliner turns the unmasked tiles into multi-stage cp.async.
            p0 = kv_ptr + row_off[:, None] + c[None, :]
            p1 = kv_ptr + row_off[:, None] + (c + BLOCK_DV2)[None, :]
            pr = kv_ptr + row_off[:, None] + (2 * BLOCK_DV2 + tl.arange(0, BLOCK_R))[None, :]
            if MASKED:
                kn0 = tl.load(p0, mask=valid[:, None], other=0.0)
                kn1 = tl.load(p1, mask=valid[:, None], other=0.0)
                kr = tl.load(pr, mask=valid[:, None], other=0.0)
            else:
                kn0 = tl.load(p0)
                kn1 = tl.load(p1)
                kr = tl.load(pr)
        else:
            c0_ok = c < head_dim_v
            c1_ok = (c + BLOCK_DV2) < head_dim_v
            cr_mem = head_dim_v + tl.arange(0, BLOCK_R)  # rope columns follow the head_dim_v latent columns
            cr_ok = cr_mem < d_qk
            if MASKED:
                vm = valid[:, None]
            else:
                vm = keys[:, None] >= 0
            kn0 = tl.load(kv_ptr + row_off[:, None] + c[None, :], mask=vm & c0_ok[None, :], other=0.0)
            kn1 = tl.load(kv_ptr + row_off[:, None] + (c + BLOCK_DV2)[None, :], mask=vm & c1_ok[None, :],
                          other=0.0)
            kr = tl.load(kv_ptr + row_off[:, None] + cr_mem[None, :], mask=vm & cr_ok[None, :], other=0.0)
    if DOT_FP32:
        kn0 = kn0.to(tl.float32)
        kn1 = kn1.to(tl.float32)
        kr = kr.to(tl.float32)
    return keys, kn0, kn1, kr


@triton.jit
def _tile_step(
    q0, q1, qr, acc0, acc1, m_i, l_i,
    kv_ptr, kn_desc, kr_desc, bt_row_ptr, k, seqlen, limit,
    stride_kvb, stride_kvt, head_dim_v, d_qk, sm_scale_log2, page_shift,
    BLOCK_N: tl.constexpr, BLOCK_DV2: tl.constexpr, BLOCK_R: tl.constexpr,
    MASKED: tl.constexpr, USE_TMA: tl.constexpr, DOT_FP32: tl.constexpr, EVEN_D: tl.constexpr = False,
):
    # One BLOCK_N-row cache tile: s = q·kᵀ, online softmax (base 2), acc += p·v (v = k[:, :head_dim_v]).
    keys, kn0, kn1, kr = _load_tile(kv_ptr, kn_desc, kr_desc, bt_row_ptr, k, seqlen, stride_kvb, stride_kvt,
                                    head_dim_v, d_qk, page_shift, BLOCK_N, BLOCK_DV2, BLOCK_R, MASKED, USE_TMA,
                                    DOT_FP32, EVEN_D)
    s = tl.dot(q0, tl.trans(kn0))
    s = tl.dot(q1, tl.trans(kn1), s)
    s = tl.dot(qr, tl.trans(kr), s)
    s = s * sm_scale_log2
    if MASKED:
        s = tl.where(keys[None, :] <= limit[:, None], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_safe)
    p = tl.math.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    p = p.to(kn0.dtype)
    acc0 = tl.dot(p, kn0, acc0 * alpha[:, None])
    acc1 = tl.dot(p, kn1, acc1 * alpha[:, None])
    return acc0, acc1, m_new, l_i


@triton.jit
def _lse_merge_step(m, acc, wsum, lse_i, o):
    # One partial (o = its normalized output rows, lse_i its natural-log lse) into a running merge:
    # running max m, acc = Σ w·o and wsum = Σ w with w = exp(lse − m), rescaled as m grows (−inf safe).
    m_new = tl.maximum(m, lse_i)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    scale = tl.math.exp(m - m_safe)
    w = tl.math.exp(lse_i - m_safe)
    return m_new, acc * scale[:, None] + w[:, None] * o, wsum * scale + w


@triton.jit
def _wait_count(ptr, target, limit):
    # Thread 0 of the program polls *ptr (int32) until it is ≥ target or `limit` polls have passed, then fences
    # (fence.acq_rel.gpu: with the relaxed load that saw the writers' releases, an acquire); the other threads return
    # at once and the caller's bar.sync holds them until thread 0 is through, which orders their later loads too.
    # Returns the polls taken (0 in the other threads). Why one thread, relaxed polls and a ~0.2 µs sleep: session
    # 16's COMBINE_SPIN had all 128 threads of every waiting program in a tight ld.acquire loop (each an L1
    # invalidation, all on the 4 cache lines of the counters) while the split kernel streams. (PTX labels inside
    # { } are local to the block, so the asm can be inlined more than once.)
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .b32 t, v; mov.u32 $0, 0; mov.u32 t, %tid.x; setp.ne.u32 p, t, 0; @p bra DONE; "
        "LOOP: ld.relaxed.gpu.global.b32 v, [$1]; setp.ge.s32 p, v, $2; @p bra SEEN; add.u32 $0, $0, 1; "
        "setp.ge.u32 p, $0, $3; @p bra SEEN; nanosleep.u32 200; bra LOOP; SEEN: fence.acq_rel.gpu; DONE: }",
        "=r,l,r,r", [ptr, target, limit], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit(do_not_specialize=["stride_ob", "stride_os", "stride_oh", "stride_lb", "stride_lh", "num_heads",
                               "seqlen_q", "head_dim_v"])
def _mla_combine_kernel(
    split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
    stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
    num_heads, seqlen_q, head_dim_v,
    BLOCK_ROWS: tl.constexpr, BLOCK_DVP: tl.constexpr, NUM_STAGES: tl.constexpr, PDL: tl.constexpr = False,
    cnt_ptr=None, SPIN: tl.constexpr = False, SPIN_THREADS: tl.constexpr = 128, SPIN_LIMIT: tl.constexpr = 1 << 22,
    SPIN_EARLY_EXIT: tl.constexpr = True,
):
    # split [batch, 2] int32 (first part, parts); opart [slots, rows, BLOCK_DVP] fp32; lpart [slots, rows]
    # out [batch, seqlen_q, num_heads, head_dim_v]; lse [batch, num_heads, seqlen_q] fp32.
    # Sequence b's partials sit in slots first + i + b, i < parts (see the scheduler).
    # PDL: launched as a programmatic dependent of the split kernel (resident early, waits for its
    # completion before any load) and lets the next kernel launch at once (it waits for ours likewise).
    # SPIN (Gluon split kernel only): launched as a programmatic dependent too, but a program waits only for its
    # own sequence: cnt [2, batch] int32, cnt[0, b] counts the split kernel's releases of b's pieces (SPIN_THREADS
    # threads each, red.release.gpu after their partial stores; TMA-stored partials are complete and proxy-fenced
    # before the release, see mla_decode_ws_parts._release_pending); thread 0 polls it (_wait_count: relaxed polls,
    # then an acquire fence; at most SPIN_LIMIT polls), the program merges, and the last of b's programs (cnt[1, b])
    # zeroes both for the next call. So the sequences finished early are merged on the SMs the split kernel has
    # left, during its tail.
    # Program (0, 0) ends with griddepcontrol.wait: this grid never completes before the split kernel (whose
    # unsplit sequences' out the next kernel may read); SPIN_EARLY_EXIT False (not H200-tested yet: the probe's HOLD
    # key): every program ends with it.
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    b = tl.program_id(0)
    rows_total = seqlen_q * num_heads
    rows = tl.program_id(1) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_ok = rows < rows_total
    c = tl.arange(0, BLOCK_DVP)
    c_ok = c < head_dim_v
    first = tl.load(split_ptr + b * 2)
    n = tl.load(split_ptr + b * 2 + 1)
    if n != 1:
        if SPIN:
            _wait_count(cnt_ptr + b, n * SPIN_THREADS, n * 0 + SPIN_LIMIT)
            tl.debug_barrier()
        s_idx = rows // num_heads
        h_idx = rows % num_heads
        # One online pass (lse-weighted, rescaled as the running max grows): the partials' loads do
        # not depend on each other, so the pipeliner keeps several in flight.
        m = tl.full([BLOCK_ROWS], float("-inf"), dtype=tl.float32)
        acc = tl.zeros([BLOCK_ROWS, BLOCK_DVP], dtype=tl.float32)
        wsum = tl.zeros([BLOCK_ROWS], dtype=tl.float32)
        for i in tl.range(0, n, num_stages=NUM_STAGES):
            slot = (first + i + b).to(tl.int64)
            lse_i = tl.load(lpart_ptr + slot * rows_total + rows, mask=row_ok, other=float("-inf"),
                            cache_modifier=".cg" if SPIN else "")
            o = tl.load(opart_ptr + (slot * rows_total + rows)[:, None] * BLOCK_DVP + c[None, :],
                        mask=row_ok[:, None], other=0.0, cache_modifier=".cg" if SPIN else "").to(tl.float32)
            m, acc, wsum = _lse_merge_step(m, acc, wsum, lse_i, o)
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        has = wsum != 0.0  # a NaN partial makes wsum NaN: out and lse NaN (not lse −inf)
        inv = tl.where(has, 1.0 / tl.where(has, wsum, 1.0), 0.0)
        o_row = b.to(tl.int64) * stride_ob + s_idx.to(tl.int64) * stride_os + h_idx.to(tl.int64) * stride_oh
        tl.store(out_ptr + o_row[:, None] + c[None, :], (acc * inv[:, None]).to(out_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & c_ok[None, :])
        lse = tl.where(has, m_safe + tl.math.log(tl.where(has, wsum, 1.0)), float("-inf"))
        tl.store(lse_ptr + b.to(tl.int64) * stride_lb + h_idx.to(tl.int64) * stride_lh + s_idx, lse, mask=row_ok)
        if SPIN:  # every thread of this program is past its spin; the last program of b resets the counters
            tl.debug_barrier()
            done = tl.atomic_add(cnt_ptr + tl.num_programs(0) + b, 1, sem="acq_rel", scope="gpu")
            if done == tl.num_programs(1) - 1:
                tl.store(cnt_ptr + b, 0)
                tl.store(cnt_ptr + tl.num_programs(0) + b, 0)
    if SPIN:  # SPIN_EARLY_EXIT (session 21, the default): only program (0, 0) waits for the split grid, the others
        # leave as soon as they merged (their slots go to the programs not yet resident). Open question (H200 s21 W2):
        # with it one call per CUDA graph ran +8.5 .. +23 us (+9 on fixed lengths, where no program waits for a count),
        # eager calls +350 us, while 8 calls per graph gained 1-2 us per call; session 16's SPIN (every program
        # waiting) showed no such penalty in its bench rows, so the early exit is the first suspect. SPIN_EARLY_EXIT
        # False: every program waits (probe_mla_ws_timeline key HOLD; a ready A/B with 8 / 2 / 1 calls per graph and
        # eager calls was written in session 22 but not run: no device time left).
        if SPIN_EARLY_EXIT:
            if (b == 0) & (tl.program_id(1) == 0):
                tl.extra.cuda.gdc_wait()
        else:
            tl.extra.cuda.gdc_wait()


@triton.jit
def _tiles(lens_ptr, idx, ok, BLOCK_N: tl.constexpr):
    # ⌈max(cache_seqlens[idx], 0) / BLOCK_N⌉ in int32 (0 where not ok; no int32 overflow near 2³¹ keys).
    n = tl.maximum(tl.load(lens_ptr + idx, mask=ok, other=0), 0)
    return n // BLOCK_N + (n % BLOCK_N != 0).to(tl.int32)


@triton.jit
def _upper_bound(arr_ptr, n, x, log_n):
    # Per lane: #{i < n : arr[i] ≤ x} for a nondecreasing arr (searchsorted right), log_n = n.bit_length()
    # halvings of [0, n].
    lo = tl.zeros(x.shape, dtype=tl.int32)
    hi = tl.zeros(x.shape, dtype=tl.int32) + n
    for _ in range(log_n):
        active = lo < hi
        mid = (lo + hi) >> 1
        v = tl.load(arr_ptr + mid, mask=active, other=0)
        right = active & (v <= x)
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(active & ~right, mid, hi)
    return lo


@triton.jit
def _balanced_schedule(lens_ptr, sched_ptr, split_ptr, end_ptr, batch, num_parts, overhead, min_span, log_batch,
                       BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, num_progs=None,
                       tail_pct=0):
    # get_mla_metadata's balanced schedule (reference.mla.mla_schedule_ref), every pass data-parallel:
    # costs and their prefix sums (int64, stored to end [batch]), split from each sequence's span, and each
    # cut position's sequence by a binary search over the stored ends.
    # STEAL (num_progs < num_parts spans): the first num_progs spans share (100 − tail_pct) % of the total cost
    # (span `big`), the num_parts − num_progs tail spans the rest (span `small`), as reference.mla.mla_schedule_ref.
    ob = tl.arange(0, BLOCK_B)
    total = tl.zeros([], dtype=tl.int64)
    for b0 in range(0, batch, BLOCK_B):
        ok = b0 + ob < batch
        nt = _tiles(lens_ptr, b0 + ob, ok, BLOCK_N).to(tl.int64)
        cost = tl.where(nt > 0, nt + overhead, 0)
        tl.store(end_ptr + b0 + ob, tl.cumsum(cost, 0) + total, mask=ok)
        total += tl.sum(cost, 0)
    if num_progs is None:
        num_progs = num_parts
    n_tail = num_parts - num_progs
    # big = per of the plain cut when there is no tail (n_tail 0: tail_pct is ignored)
    keep = tl.where(n_tail > 0, 100 - tail_pct, 100).to(tl.int64)
    per = tl.maximum((total * keep + 100 * num_progs - 1) // (100 * num_progs), min_span)
    t0 = tl.minimum(per * num_progs, total)  # cost position where the tail spans begin
    small = tl.maximum((total - t0 + tl.maximum(n_tail, 1) - 1) // tl.maximum(n_tail, 1), 1)
    tl.debug_barrier()  # the ends are read back by other threads below
    for b0 in range(0, batch, BLOCK_B):
        ok = b0 + ob < batch
        nt = _tiles(lens_ptr, b0 + ob, ok, BLOCK_N).to(tl.int64)
        cost = tl.where(nt > 0, nt + overhead, 0)
        end = tl.load(end_ptr + b0 + ob, mask=ok, other=0)
        x0 = end - cost + overhead
        first = tl.where(x0 < t0, x0 // per, num_progs + (x0 - t0) // small)
        x1 = end - 1
        nsplit = tl.where(nt > 0, tl.where(x1 < t0, x1 // per, num_progs + (x1 - t0) // small) - first + 1, 0)
        tl.store(split_ptr + (b0 + ob) * 2, first.to(tl.int32), mask=ok)
        tl.store(split_ptr + (b0 + ob) * 2 + 1, nsplit.to(tl.int32), mask=ok)
    # cut p = 0..num_parts at pos = min(p·per, total): its sequence (#ends ≤ pos) and the tile in it
    op = tl.arange(0, BLOCK_P)
    for p0 in range(0, num_parts + 1, BLOCK_P):
        pp = p0 + op
        pos = tl.minimum(tl.where(pp <= num_progs, pp.to(tl.int64) * per, t0 + (pp - num_progs).to(tl.int64) * small),
                         total)
        bi = _upper_bound(end_ptr, batch, pos, log_batch)
        inb = bi < batch
        nt = _tiles(lens_ptr, bi, inb, BLOCK_N).to(tl.int64)
        start = tl.load(end_ptr + bi, mask=inb, other=0) - tl.where(nt > 0, nt + overhead, 0)
        tile = tl.where(inb, tl.maximum(pos - start - overhead, 0), 0).to(tl.int32)
        lo = pp < num_parts
        tl.store(sched_ptr + pp * 4, bi, mask=lo)
        tl.store(sched_ptr + pp * 4 + 1, tile, mask=lo)
        hi = (pp >= 1) & (pp <= num_parts)
        tl.store(sched_ptr + (pp - 1) * 4 + 2, bi, mask=hi)
        tl.store(sched_ptr + (pp - 1) * 4 + 3, tile, mask=hi)


@triton.jit(do_not_specialize=["batch", "num_parts", "overhead", "min_span", "log_batch", "num_progs", "tail_pct"])
def _mla_schedule_kernel(
    lens_ptr, sched_ptr, split_ptr, end_ptr, batch, num_parts, overhead, min_span, log_batch, num_progs, tail_pct,
    BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # One program: the whole balanced schedule of get_mla_metadata (see _balanced_schedule) in one launch.
    # lens [batch] int32; sched [num_parts, 4] int32 (num_parts spans: num_progs programs' + STEAL tail spans);
    # split [batch, 2] int32; end [batch] int64 workspace.
    _balanced_schedule(lens_ptr, sched_ptr, split_ptr, end_ptr, batch, num_parts, overhead, min_span, log_batch,
                       BLOCK_N, BLOCK_B, BLOCK_P, num_progs, tail_pct)


@triton.jit
def _packed_step(n, cap, fill, seg_cost, split_cost, min_piece, min_fit, full, inv_full):
    # One sequence of n > 0 tiles placed by the length-aware greedy (reference.mla._packed_place) for lanes of
    # caps or a scalar cap (full = cap − seg_cost − split_cost ≥ 1, inv_full = 1/full in fp32), int32: (moved to
    # a fresh program, tiles in its first program, programs it continues into, fill after it). Little depends on
    # fill (the walk's loop-carried value): the first piece is full − fill (full when moved). (An fp32 walk with
    # no int↔float conversion on fill measured slower on the H200: 13.1-13.5 vs 12.2-12.4 µs per schedule.)
    ns = n + seg_cost
    whole = fill <= cap - ns
    fits = ns <= cap
    moved = (~whole) & (fill > full - tl.where(fits, min_fit, min_piece))
    g = tl.where(moved, 0, fill)
    first = full - g
    r1 = tl.maximum(n - full - 1 + g, 0)  # r − 1 for the r = n − first tiles after the first piece
    # k − 1 = ⌊r1/full⌋ without an integer division: an fp32 estimate (relative error < 2⁻²¹) within one of
    # the quotient while that is below 2²⁰, then fixed exactly through the remainder (a larger one only occurs
    # for caps far too small, which stay infeasible: a chosen cap has k ≤ num_parts everywhere)
    q = (r1.to(tl.float32) * inv_full).to(tl.int32)
    rm = r1 - q * full
    low = rm < 0
    q = tl.where(low, q - 1, q)
    rm = tl.where(low, rm + full, rm)
    high = rm >= full
    q = tl.where(high, q + 1, q)
    rm = tl.where(high, rm - full, rm)
    keep_whole = whole | (moved & fits)
    k = tl.where(keep_whole, 0, q + 1)
    first = tl.where(keep_whole, n, first)
    fill = tl.where(whole, fill + ns, tl.where(keep_whole, ns, rm + 1 + seg_cost + split_cost))
    return moved, first, k, fill


@triton.jit(do_not_specialize=["batch", "num_parts", "seg_cost", "split_cost", "min_piece", "min_fit", "fill_tol",
                               "overhead", "min_span", "log_batch", "n_spans", "tail_pct"])
def _mla_schedule_packed_kernel(
    lens_ptr, sched_ptr, split_ptr, ws_ptr, end_ptr, batch, num_parts, seg_cost, split_cost, min_piece, min_fit,
    fill_tol, overhead, min_span, log_batch, n_spans, tail_pct,
    BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    UNROLL: tl.constexpr,
):
    # One program: get_mla_metadata's length-aware schedule (reference.mla.mla_schedule_packed_ref), or with
    # FILL_TOL the balanced one (_balanced_schedule) where the reference falls back to it, in one launch.
    # lens [batch] int32; sched [n_spans, 4] int32 (STEAL: n_spans > num_parts; the packed walk leaves the tail
    # spans empty, the balanced fallback cuts them); split [batch, 2] int32; workspaces ws int32
    # [2·batch·BLOCK_C + 3·batch], end int64 [batch]. Walk values in int32: exact while the total cost and the
    # caps stay below 2³⁰ tiles.
    # 1. costs (data-parallel). 2. the greedy walk, serial over the batch (the one part that is: a sequence's
    #    place depends on the previous program's fill), for 2·BLOCK_C caps at once (one lane each: BLOCK_C caps
    #    with min_fit, the same with min_fit = min_piece for the fill_tol rule), lens prefetched UNROLL at a
    #    time; each packed lane records (programs so far, fill) before every sequence. 3. the smallest cap that
    #    needs ≤ num_parts programs; every sequence's place re-derived from its record (data-parallel), then each
    #    program's bounds by a binary search over the sequences' last programs.
    # H200, b128 on 132 programs (acd7dba): 11.8-12.8 µs per call amortised in a CUDA graph (the walk is most of
    # it; the balanced kernel alone 2.7-3.0), 15.6-18.0 µs as one graph replay; the previous serial version
    # (two walks with scalar stores, a second launch for the fallback) took 101-151 µs per replay.
    ob = tl.arange(0, BLOCK_B)
    total = tl.zeros([], dtype=tl.int64)
    max_nt = tl.zeros([], dtype=tl.int32)
    for b0 in range(0, batch, BLOCK_B):
        nt = _tiles(lens_ptr, b0 + ob, b0 + ob < batch, BLOCK_N)
        total += tl.sum(tl.where(nt > 0, nt + seg_cost, 0).to(tl.int64), 0)
        max_nt = tl.maximum(max_nt, tl.max(nt, 0))
    lb = tl.maximum(tl.maximum((total + num_parts - 1) // num_parts, seg_cost + split_cost + min_piece), 1)
    step = tl.maximum((max_nt + seg_cost + BLOCK_C - 2) // (BLOCK_C - 1), 1)  # last cap ≥ lb + max_nt + seg
    lane = tl.arange(0, 2 * BLOCK_C)
    cidx = lane % BLOCK_C
    caps = (lb + cidx * step).to(tl.int32)
    fit_lane = tl.where(lane < BLOCK_C, min_fit, min_piece)
    full_l = caps - seg_cost - split_cost
    rec = lane < BLOCK_C
    rec_p = ws_ptr + lane
    rec_f = ws_ptr + batch * BLOCK_C + lane
    inv_l = 1.0 / full_l.to(tl.float32)
    p_vec = tl.zeros([2 * BLOCK_C], dtype=tl.int32)
    f_vec = tl.zeros([2 * BLOCK_C], dtype=tl.int32)
    for b0 in range(0, batch, UNROLL):
        # the chunk's lengths are all loaded before its records are stored (stores may alias them for the
        # compiler, so a load after a store could not be hoisted off the walk's critical path)
        ns = ()
        for i in tl.static_range(UNROLL):
            ns = ns + (_tiles(lens_ptr, b0 + i, b0 + i < batch, BLOCK_N),)
        for i in tl.static_range(UNROLL):
            b = b0 + i
            inb = b < batch
            n = ns[i]
            tl.store(rec_p + b * BLOCK_C, p_vec, mask=rec & inb)
            tl.store(rec_f + b * BLOCK_C, f_vec, mask=rec & inb)
            moved, _, k, fill = _packed_step(n, caps, f_vec, seg_cost, split_cost, min_piece, fit_lane, full_l, inv_l)
            busy = n > 0
            p_vec = tl.where(busy, p_vec + moved.to(tl.int32) + k, p_vec)
            f_vec = tl.where(busy, fill, f_vec)
    none = 2 * BLOCK_C
    ok = p_vec + 1 <= num_parts
    ci = tl.min(tl.where(ok & rec, cidx, none), 0)
    ci = tl.where(ci == none, BLOCK_C - 1, ci)
    cf = tl.min(tl.where(ok & ~rec, cidx, none), 0)
    cf = tl.where(cf == none, BLOCK_C - 1, cf)
    cap = lb + ci * step
    cap_fill = lb + cf * step
    p_total = tl.sum(tl.where(lane == ci, p_vec, 0), 0)
    tl.debug_barrier()  # the records are read back by other threads below
    # packing needs a cap more than fill_tol % over filling's: the balanced schedule instead
    if (fill_tol >= 0) & (cap * 100 > cap_fill * (100 + fill_tol)):
        _balanced_schedule(lens_ptr, sched_ptr, split_ptr, end_ptr, batch, n_spans, overhead, min_span,
                           log_batch, BLOCK_N, BLOCK_B, BLOCK_P, num_parts, tail_pct)
    else:
        cap32 = cap.to(tl.int32)
        full = cap32 - seg_cost - split_cost
        inv = 1.0 / full.to(tl.float32)
        last = num_parts - 1
        # per sequence: its first program u0 (after a move), one past its last cut u1, tiles in its first program
        seq_u0 = ws_ptr + 2 * batch * BLOCK_C
        seq_u1 = seq_u0 + batch
        seq_first = seq_u1 + batch
        for b0 in range(0, batch, BLOCK_B):
            bb = b0 + ob
            okb = bb < batch
            n = _tiles(lens_ptr, bb, okb, BLOCK_N)
            pb = tl.load(ws_ptr + bb * BLOCK_C + ci, mask=okb, other=0)
            fb = tl.load(ws_ptr + (batch + bb) * BLOCK_C + ci, mask=okb, other=0)
            moved, first, k, _ = _packed_step(n, cap32, fb, seg_cost, split_cost, min_piece, min_fit, full, inv)
            busy = n > 0
            u0 = tl.where(busy, pb + moved.to(tl.int32), pb)
            u1 = tl.where(busy, u0 + k, pb)
            tl.store(seq_u0 + bb, u0, mask=okb)
            tl.store(seq_u1 + bb, u1, mask=okb)
            tl.store(seq_first + bb, tl.where(busy, first, 0), mask=okb)
            # program ids past the last one are clamped to it (the work past it stays there)
            s0 = tl.minimum(u0, last)
            tl.store(split_ptr + bb * 2, s0, mask=okb)
            tl.store(split_ptr + bb * 2 + 1, tl.where(busy, tl.minimum(u1, last) - s0 + 1, 0), mask=okb)
        tl.debug_barrier()
        # cut c < p_end ends program c and starts c + 1: it belongs to the sequence b with u1[b−1] ≤ c < u1[b]
        # (c < u0[b]: b moved to a fresh program, cut at its tile 0; else b's (c − u0[b])-th full piece)
        p_end = tl.minimum(p_total, last)
        op = tl.arange(0, BLOCK_P)
        for c0 in range(0, num_parts, BLOCK_P):  # one pass when BLOCK_P > num_parts (the launcher's choice)
            c = c0 + op
            has = c < p_end
            b = _upper_bound(seq_u1, batch, c, log_batch)
            b_ok = has & (b < batch)
            u0 = tl.load(seq_u0 + b, mask=b_ok, other=0)
            t = tl.where(c < u0, 0, tl.load(seq_first + b, mask=b_ok, other=0) + (c - u0) * full)
            b = tl.where(has, b, batch)
            t = tl.where(has, t, 0)
            # cut c (or (batch, 0) past the last one) ends program c and starts program c + 1
            okc = c < num_parts
            tl.store(sched_ptr + c * 4 + 2, b, mask=okc)
            tl.store(sched_ptr + c * 4 + 3, t, mask=okc)
            tl.store(sched_ptr + c * 4 + 4, b, mask=c + 1 < num_parts)
            tl.store(sched_ptr + c * 4 + 5, t, mask=c + 1 < num_parts)
        tl.store(sched_ptr + 0, 0)
        tl.store(sched_ptr + 1, 0)
        for c0 in range(num_parts, n_spans, BLOCK_P):  # STEAL tail spans: empty (batch, 0, batch, 0)
            c = c0 + op
            okt = c < n_spans
            tl.store(sched_ptr + c * 4, batch + 0 * c, mask=okt)
            tl.store(sched_ptr + c * 4 + 1, 0 * c, mask=okt)
            tl.store(sched_ptr + c * 4 + 2, batch + 0 * c, mask=okt)
            tl.store(sched_ptr + c * 4 + 3, 0 * c, mask=okt)


def cache_tiles(q, kv_cache, head_dim_v: int, block_n: int, want_tma: bool):
    """Column tiles of the tl split kernels over a [num_blocks, page_size, 1, d_qk] cache, and their TMA
    descriptors over the flat [num_blocks·page_size, d_qk] rows when ``want_tma`` and the layout allows it
    (page_size ≥ block_n, both tiles exact, ≤ 256 latent columns per half, contiguous 16-byte-aligned cache,
    rows < 2³¹): (BLOCK_DV2, BLOCK_R, EVEN_D, kn_desc, kr_desc), descriptors None → pointer gathers."""
    d_qk = q.shape[3]
    num_blocks, page_size = kv_cache.shape[:2]
    block_dv2 = max(16, next_pow2(cdiv(head_dim_v, 2)))
    block_r = max(16, next_pow2(max(d_qk - head_dim_v, 1)))
    even_d = head_dim_v == 2 * block_dv2 and d_qk - head_dim_v == block_r
    total_rows = num_blocks * page_size
    use_tma = (
        want_tma and page_size >= block_n and even_d and block_dv2 <= 256
        and kv_cache.is_contiguous() and kv_cache.data_ptr() % 16 == 0 and (d_qk * kv_cache.element_size()) % 16 == 0
        and total_rows < 2**31
    )
    if not use_tma:
        return block_dv2, block_r, even_d, None, None
    flat = kv_cache.view(total_rows, d_qk)
    return (block_dv2, block_r, even_d, TensorDescriptor(flat, [total_rows, d_qk], [d_qk, 1], [block_n, block_dv2]),
            TensorDescriptor(flat, [total_rows, d_qk], [d_qk, 1], [block_n, block_r]))
