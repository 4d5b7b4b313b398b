"""Per-tile building blocks of the paged MLA decode kernel (``mla_decode._mla_decode_kernel``), and the
split-KV combine and schedule kernels shared by the tl and Gluon (``mla_decode_ws``) split kernels.

Each function handles one tile of BLOCK_N cache rows for a tile of BLOCK_H query rows (rows =
(query position, head) pairs); see tritonseek/kernels/mla_decode.py for the design and layouts.

* ``_load_tile``: the tile's three column blocks (TMA descriptors or pointer gathers through the block table).
* ``_tile_step``: s = q·kᵀ, online softmax (base 2), acc += p·v.
* ``_mla_combine_kernel``: lse-weighted merge of a sequence's split partials; ``_mla_schedule_kernel``:
  ``get_mla_metadata``'s split schedule on the device.

Under the Triton interpreter (DOT_FP32) operands are upcast to fp32: it cannot multiply bf16.
"""

import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor


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


@triton.jit(do_not_specialize=["stride_ob", "stride_os", "stride_oh", "stride_lb", "stride_lh", "num_heads",
                               "seqlen_q", "head_dim_v"])
def _mla_combine_kernel(
    split_ptr, out_ptr, lse_ptr, opart_ptr, lpart_ptr,
    stride_ob, stride_os, stride_oh, stride_lb, stride_lh,
    num_heads, seqlen_q, head_dim_v,
    BLOCK_ROWS: tl.constexpr, BLOCK_DVP: tl.constexpr, NUM_STAGES: tl.constexpr, PDL: tl.constexpr = False,
):
    # split [batch, 2] int32 (first part, parts); opart [slots, rows, BLOCK_DVP] fp32; lpart [slots, rows]
    # out [batch, seqlen_q, num_heads, head_dim_v]; lse [batch, num_heads, seqlen_q] fp32.
    # Sequence b's partials sit in slots first + i + b, i < parts (see the scheduler).
    # PDL: launched as a programmatic dependent of the split kernel (resident early, waits for its
    # completion before any load) and lets the next kernel launch at once (it waits for ours likewise).
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
        s_idx = rows // num_heads
        h_idx = rows % num_heads
        # One online pass (lse-weighted, rescaled as the running max grows): the partials' loads do
        # not depend on each other, so the pipeliner keeps several in flight.
        m = tl.full([BLOCK_ROWS], float("-inf"), dtype=tl.float32)
        acc = tl.zeros([BLOCK_ROWS, BLOCK_DVP], dtype=tl.float32)
        wsum = tl.zeros([BLOCK_ROWS], dtype=tl.float32)
        for i in tl.range(0, n, num_stages=NUM_STAGES):
            slot = (first + i + b).to(tl.int64)
            lse_i = tl.load(lpart_ptr + slot * rows_total + rows, mask=row_ok, other=float("-inf"))
            o = tl.load(opart_ptr + (slot * rows_total + rows)[:, None] * BLOCK_DVP + c[None, :],
                        mask=row_ok[:, None], other=0.0)
            m, acc, wsum = _lse_merge_step(m, acc, wsum, lse_i, o)
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        has = wsum > 0.0
        inv = tl.where(has, 1.0 / tl.where(has, wsum, 1.0), 0.0)
        o_row = b.to(tl.int64) * stride_ob + s_idx.to(tl.int64) * stride_os + h_idx.to(tl.int64) * stride_oh
        tl.store(out_ptr + o_row[:, None] + c[None, :], (acc * inv[:, None]).to(out_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & c_ok[None, :])
        lse = tl.where(has, m_safe + tl.math.log(tl.where(has, wsum, 1.0)), float("-inf"))
        tl.store(lse_ptr + b.to(tl.int64) * stride_lb + h_idx.to(tl.int64) * stride_lh + s_idx, lse, mask=row_ok)


@triton.jit
def _seq_costs(lens_ptr, b0, ob, batch, block_n, overhead):
    # Sequences b0 + ob: (in range, tiles, cost = tiles + overhead or 0 for an empty one), int64.
    ok = b0 + ob < batch
    n = tl.maximum(tl.load(lens_ptr + b0 + ob, mask=ok, other=0), 0).to(tl.int64)
    nt = (n + block_n - 1) // block_n
    return ok, nt, tl.where(nt > 0, nt + overhead, 0)


@triton.jit(do_not_specialize=["batch", "num_parts", "block_n", "overhead", "min_span"])
def _mla_schedule_kernel(
    lens_ptr, sched_ptr, split_ptr, batch, num_parts, block_n, overhead, min_span, go_ptr,
    BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, HAS_GO: tl.constexpr = False,
):
    # One program: the whole schedule of get_mla_metadata (see reference.mla.mla_schedule_ref) in one
    # launch instead of ~35 small torch kernels. lens [batch] int32; sched [num_parts, 4] int32;
    # split [batch, 2] int32. Costs and prefix sums in int64. HAS_GO: write only when go_ptr[0] != 0
    # (the packed schedule kernel's fallback flag, same step).
    go = True
    if HAS_GO:
        go = tl.load(go_ptr) != 0
    ob = tl.arange(0, BLOCK_B)
    total = tl.zeros([], dtype=tl.int64)
    for b0 in range(0, batch, BLOCK_B):
        _, _, cost = _seq_costs(lens_ptr, b0, ob, batch, block_n, overhead)
        total += tl.sum(cost, 0)
    per = tl.maximum((total + num_parts - 1) // num_parts, min_span)
    # per sequence: first program and number of programs
    offset = tl.zeros([], dtype=tl.int64)
    for b0 in range(0, batch, BLOCK_B):
        ok, nt, cost = _seq_costs(lens_ptr, b0, ob, batch, block_n, overhead)
        end = tl.cumsum(cost, 0) + offset
        first = (end - cost + overhead) // per
        nsplit = tl.where(nt > 0, (end - 1) // per - first + 1, 0)
        tl.store(split_ptr + (b0 + ob) * 2, first.to(tl.int32), mask=ok & go)
        tl.store(split_ptr + (b0 + ob) * 2 + 1, nsplit.to(tl.int32), mask=ok & go)
        offset += tl.sum(cost, 0)
    # per cut position pos_p = min(p·per, total), p = 0..num_parts: the sequence it falls in
    # (#ends ≤ pos) and the tile within it (pos − that sequence's start − overhead, ≥ 0).
    op = tl.arange(0, BLOCK_P)
    for p0 in range(0, num_parts + 1, BLOCK_P):
        pp = p0 + op
        pos = tl.minimum(pp.to(tl.int64) * per, total)
        cnt = tl.zeros([BLOCK_P], dtype=tl.int64)
        seq_start = tl.zeros([BLOCK_P], dtype=tl.int64)
        offset = tl.zeros([], dtype=tl.int64)
        for b0 in range(0, batch, BLOCK_B):
            ok, _, cost = _seq_costs(lens_ptr, b0, ob, batch, block_n, overhead)
            end = tl.cumsum(cost, 0) + offset
            le = (end[None, :] <= pos[:, None]) & ok[None, :]
            cnt += tl.sum(le.to(tl.int64), 1)
            seq_start = tl.maximum(seq_start, tl.max(tl.where(le, end[None, :], 0), 1))
            offset += tl.sum(cost, 0)
        tile = tl.where(cnt < batch, tl.maximum(pos - seq_start - overhead, 0), 0)
        lo = pp < num_parts
        tl.store(sched_ptr + pp * 4, cnt.to(tl.int32), mask=lo & go)
        tl.store(sched_ptr + pp * 4 + 1, tile.to(tl.int32), mask=lo & go)
        hi = (pp >= 1) & (pp <= num_parts)
        tl.store(sched_ptr + (pp - 1) * 4 + 2, cnt.to(tl.int32), mask=hi & go)
        tl.store(sched_ptr + (pp - 1) * 4 + 3, tile.to(tl.int32), mask=hi & go)


@triton.jit
def _ceil_div_pos(r, d):
    # ⌈r/d⌉ for int64 r, d ≥ 1 without a 64-bit integer division (a long software routine on the GPU): an fp32
    # quotient, then one exact correction each way (exact while the quotient is below 2^22; a larger one only
    # occurs for candidate caps far too small, which stay infeasible either way).
    q = ((r - 1).to(tl.float32) / d.to(tl.float32)).to(tl.int64)
    q = tl.where(q * d > r - 1, q - 1, q)
    q = tl.where((q + 1) * d <= r - 1, q + 1, q)
    return q + 1


@triton.jit
def _packed_step(n, cap, fill, seg_cost, split_cost, min_piece, min_fit):
    # One sequence of n > 0 tiles placed by the length-aware greedy (reference.mla._packed_place), for a
    # vector of caps or a scalar cap: (moved to a fresh program, tiles in its first program, programs it
    # continues into, fill of the last one after it).
    rem = cap - fill
    first = rem - seg_cost - split_cost
    whole = n + seg_cost <= rem
    fits = n + seg_cost <= cap
    moved = (~whole) & (first < tl.where(fits, min_fit, min_piece))
    full = cap - seg_cost - split_cost
    first = tl.where(moved, full, first)
    r = tl.maximum(n - first, 1)
    k = _ceil_div_pos(r, full)
    keep_whole = whole | (moved & fits)
    k = tl.where(keep_whole, 0, k)
    first = tl.where(keep_whole, n, first)
    fill = tl.where(whole, fill + n + seg_cost,
                    tl.where(keep_whole, n + seg_cost, r - (k - 1) * full + seg_cost + split_cost))
    return moved, first, k, fill


@triton.jit
def _tile_count(lens_ptr, b0, ob, batch, block_n):
    ok = b0 + ob < batch
    n = tl.maximum(tl.load(lens_ptr + b0 + ob, mask=ok, other=0), 0).to(tl.int64)
    return (n + block_n - 1) // block_n


@triton.jit(do_not_specialize=["batch", "num_parts", "block_n", "seg_cost", "split_cost", "min_piece", "min_fit",
                               "fill_tol"])
def _mla_schedule_packed_kernel(
    lens_ptr, sched_ptr, split_ptr, go_ptr, batch, num_parts, block_n, seg_cost, split_cost, min_piece, min_fit,
    fill_tol, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # One program: get_mla_metadata's length-aware schedule (reference.mla.mla_schedule_packed_ref).
    # lens [batch] int32; sched [num_parts, 4] int32; split [batch, 2] int32. Costs in int64.
    # Pass 1 sums the costs; pass 2 walks the batch once for 2·BLOCK_C candidate walks at a time (one per
    # lane: BLOCK_C caps with min_fit, the same caps with min_fit = min_piece for the fill_tol rule) and
    # keeps the smallest cap that needs ≤ num_parts programs; pass 3 walks it again with the chosen cap
    # and writes the cuts (or only go_ptr[0] = 1 when the balanced schedule is to be used). Sequences are taken
    # one at a time out of a BLOCK_B chunk of tile counts in registers (one warp: the reductions stay in it).
    ob = tl.arange(0, BLOCK_B)
    total = tl.zeros([], dtype=tl.int64)
    max_nt = tl.zeros([], dtype=tl.int64)
    for b0 in range(0, batch, BLOCK_B):
        nt = _tile_count(lens_ptr, b0, ob, batch, block_n)
        total += tl.sum(tl.where(nt > 0, nt + seg_cost, 0), 0)
        max_nt = tl.maximum(max_nt, tl.max(nt, 0))
    lb = tl.maximum(tl.maximum((total + num_parts - 1) // num_parts, seg_cost + split_cost + min_piece), 1)
    step = tl.maximum((max_nt + seg_cost + BLOCK_C - 2) // (BLOCK_C - 1), 1)  # last cap ≥ lb + max_nt + seg
    lane = tl.arange(0, 2 * BLOCK_C)
    caps = lb + (lane % BLOCK_C).to(tl.int64) * step
    fit_lane = tl.where(lane < BLOCK_C, min_fit, min_piece)
    p_vec = tl.zeros([2 * BLOCK_C], dtype=tl.int64)
    f_vec = tl.zeros([2 * BLOCK_C], dtype=tl.int64)
    for b0 in range(0, batch, BLOCK_B):
        nt = _tile_count(lens_ptr, b0, ob, batch, block_n)
        for i in range(0, tl.minimum(batch - b0, BLOCK_B)):
            n = tl.sum(tl.where(ob == i, nt, 0), 0)  # sequence b0 + i (a reduction inside the one warp)
            moved, _, k, fill = _packed_step(n, caps, f_vec, seg_cost, split_cost, min_piece, fit_lane)
            busy = n > 0
            p_vec = tl.where(busy, p_vec + moved.to(tl.int64) + k, p_vec)
            f_vec = tl.where(busy, fill, f_vec)
    big = tl.full([2 * BLOCK_C], 2**62, dtype=tl.int64)
    ok = p_vec + 1 <= num_parts
    largest = lb + (BLOCK_C - 1) * step
    cap = tl.min(tl.where(ok & (lane < BLOCK_C), caps, big), 0)
    cap = tl.where(cap == 2**62, largest, cap)
    cap_fill = tl.min(tl.where(ok & (lane >= BLOCK_C), caps, big), 0)
    cap_fill = tl.where(cap_fill == 2**62, largest, cap_fill)
    # packing needs a cap more than fill_tol % over filling's: leave this step to the balanced schedule
    # kernel launched next (go_ptr[0] = 1), which writes sched/split instead
    use_fill = (fill_tol >= 0) & (cap * 100 > cap_fill * (100 + fill_tol))
    tl.store(go_ptr, use_fill.to(tl.int32))
    full = cap - seg_cost - split_cost
    last = num_parts - 1
    p = tl.zeros([], dtype=tl.int64)
    fill = tl.zeros([], dtype=tl.int64)
    n_walk = tl.where(use_fill, 0, batch)
    if not use_fill:
        tl.store(sched_ptr + 0, 0)
        tl.store(sched_ptr + 1, 0)
    for b0 in range(0, n_walk, BLOCK_B):
        nt = _tile_count(lens_ptr, b0, ob, batch, block_n)
        for i in range(0, tl.minimum(n_walk - b0, BLOCK_B)):
            b = b0 + i
            n = tl.sum(tl.where(ob == i, nt, 0), 0)
            if n == 0:
                tl.store(split_ptr + b * 2, p.to(tl.int32))
                tl.store(split_ptr + b * 2 + 1, 0)
            else:
                moved, first, k, fill = _packed_step(n, cap, fill, seg_cost, split_cost, min_piece, min_fit)
                # cuts (b, t): program p ends there and p + 1 starts there (the last program takes the rest)
                if moved & (p < last):
                    tl.store(sched_ptr + p * 4 + 2, b)
                    tl.store(sched_ptr + p * 4 + 3, 0)
                    tl.store(sched_ptr + p * 4 + 4, b)
                    tl.store(sched_ptr + p * 4 + 5, 0)
                    p += 1
                p0 = p
                for j in range(0, k):
                    if p < last:
                        t = (first + j * full).to(tl.int32)
                        tl.store(sched_ptr + p * 4 + 2, b)
                        tl.store(sched_ptr + p * 4 + 3, t)
                        tl.store(sched_ptr + p * 4 + 4, b)
                        tl.store(sched_ptr + p * 4 + 5, t)
                        p += 1
                tl.store(split_ptr + b * 2, p0.to(tl.int32))
                tl.store(split_ptr + b * 2 + 1, (p - p0 + 1).to(tl.int32))
    if not use_fill:
        tl.store(sched_ptr + p * 4 + 2, batch)
        tl.store(sched_ptr + p * 4 + 3, 0)
    for p1 in range(tl.where(use_fill, num_parts, p + 1), num_parts):  # programs past the work: empty spans
        tl.store(sched_ptr + p1 * 4 + 0, batch)
        tl.store(sched_ptr + p1 * 4 + 1, 0)
        tl.store(sched_ptr + p1 * 4 + 2, batch)
        tl.store(sched_ptr + p1 * 4 + 3, 0)


def cache_tiles(q, kv_cache, head_dim_v: int, block_n: int, want_tma: bool):
    """Column tiles of the tl split kernels over a [num_blocks, page_size, 1, d_qk] cache, and their TMA
    descriptors over the flat [num_blocks·page_size, d_qk] rows when ``want_tma`` and the layout allows it
    (page_size ≥ block_n, both tiles exact, ≤ 256 latent columns per half, contiguous 16-byte-aligned cache,
    rows < 2³¹): (BLOCK_DV2, BLOCK_R, EVEN_D, kn_desc, kr_desc), descriptors None → pointer gathers."""
    d_qk = q.shape[3]
    num_blocks, page_size = kv_cache.shape[:2]
    block_dv2 = max(16, triton.next_power_of_2(triton.cdiv(head_dim_v, 2)))
    block_r = max(16, triton.next_power_of_2(max(d_qk - head_dim_v, 1)))
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
