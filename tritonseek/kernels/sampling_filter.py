"""Triton top-k / top-p filter thresholds for the decode-path sampler and speculative verification.

The kept set of top-k and of top-p (over the top-k survivors, renormalised) is {s >= t} for one value t
per row, s = x / T. Fast path, the row split across programs (memory-bound: three passes, the third
only over splits that hold candidates), exact:
  1. ``_filter_max_kernel``: per split, max of s and sum exp(s - max) (the softmax mass, for top-p).
  2. ``_filter_hist_kernel``: a count histogram of d = (M - s)/W in BINS bins of width W below the row
     max M (last bin: everything further). The program that finishes a row last (arrival counter)
     picks the pivot bin t: the first bin whose cumulative count reaches k (top-k), or (top-p alone)
     whose cumulative lower-bound mass Σ count·exp(-(b+1)W) reaches p·Z. The candidates {bin <= t}
     are an upper set of the row (all ties in or out) of known size; more than CAP → fallback.
  3. ``_filter_gather_kernel``: splits whose max lies in a bin <= t copy their candidates into a
     [CAP] buffer per row (slots by atomic reservation; the order does not matter: it is sorted);
     the row's last program sorts them descending and applies the reference rule exactly: top-k =
     the k-th largest, top-p = the first sorted position where the cumulative softmax reaches p.
     It writes the threshold, or flags the row for the fallback when the candidates cannot decide
     (top-p alone whose crossing lies past them).
  4. ``_topk_topp_threshold_kernel``: the exact one-program-per-row radix select (8 passes of 4 bits),
     run only on flagged rows (the others exit at once). Flat rows (top-p alone over thousands of
     near-equal logits) take this slow path.
No host synchronisation (graph-capturable); split counts depend on shapes only; arrival counters and
histograms are left at 0 by the kernels for the next launch.
"""

from __future__ import annotations

import functools
import threading

import torch
import triton
import triton.language as tl

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
FILTER_CONFIG = (2048, 8, 4)  # (BLOCK, num_warps, programs per SM) of the streaming filter passes
FILTER_BINS = 256  # histogram bins of d = (M - s) / FILTER_BIN_W
FILTER_BIN_W = 1.0 / 16.0  # bin width in units of s = x / T: bins cover 16 units below the max
FILTER_CAP = 4096  # candidates per row sorted by one program; more → fallback
FILTER_SMALL = 256  # candidate counts up to this use a small sort
THRESH_CONFIG = (1024, 8)  # (BLOCK, num_warps) of the fallback radix-select kernel (121 regs, no spills)
_INTERP_BLOCK = 64
_INTERP_CAP = (64, 16)  # (CAP, SMALL) under the interpreter: small rows reach both sorts and the fallback


@functools.lru_cache(maxsize=8)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


_COUNTER_SLOTS = 16
_counters: dict[int, torch.Tensor] = {}
_retired: list[torch.Tensor] = []  # outgrown counter buffers: a captured graph may still point at one
_slot = [0]
_lock = threading.Lock()


def arrival_counters(device: torch.device, n: int) -> torch.Tensor:
    """n int32 arrival counters that are 0 now; the kernels using them leave them at 0 again.

    A slice of a cached per-device buffer (16 slots in rotation, so launches that overlap on different
    streams rarely share one; never freed: a captured graph may hold the pointer), or fresh zeros (one
    memset) while a graph is being captured and no buffer exists yet, so an eager call never sees
    counters that only a replay would have zeroed.
    """
    key = -1 if device.type != "cuda" else (device.index if device.index is not None else torch.cuda.current_device())
    with _lock:
        buf = _counters.get(key)
        if buf is None or buf.shape[1] < n:
            if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                return torch.zeros(n, dtype=torch.int32, device=device)
            if buf is not None:
                _retired.append(buf)
            size = max(n, 1024 if buf is None else 2 * buf.shape[1])
            buf = _counters[key] = torch.zeros((_COUNTER_SLOTS, size), dtype=torch.int32, device=device)
        _slot[0] = (_slot[0] + 1) % _COUNTER_SLOTS
        return buf[_slot[0], :n]


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _key_to_float(key):
    # inverse of the order-preserving key (negative floats: all bits flipped; others: sign bit set)
    b = tl.where(key >= 0x80000000, key ^ 0x80000000, key ^ 0xFFFFFFFF)
    return b.to(tl.float32, bitcast=True)


@triton.jit
def _radix_select(row_ptr, V, temp, lower, m, target, USE_MASS: tl.constexpr, BLOCK: tl.constexpr):
    # Largest uint32 key v with F(v) = sum_{i: s_i >= lower, key(s_i) >= v} w_i >= target, where
    # s = x / temp and w = 1 (count, top-k) or exp(s - m) (mass, top-p). found = False when even the
    # smallest key misses the target (the caller then keeps the whole row).
    digits = tl.arange(0, 16)
    prefix = tl.zeros((), dtype=tl.uint32)
    acc = tl.zeros((), dtype=tl.float32)
    found = tl.zeros((), dtype=tl.int1)
    for r in tl.static_range(8):
        shift = 28 - 4 * r  # constexpr: r comes from static_range
        hist = tl.zeros([16], dtype=tl.float32)
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            msk = offs < V
            s = tl.load(row_ptr + offs, mask=msk, other=float("-inf")).to(tl.float32) / temp
            valid = msk & (s >= lower)
            # order-preserving fp32 -> uint32 key, inlined: nested jit calls are slow in the interpreter
            bits = s.to(tl.uint32, bitcast=True)
            key = tl.where((bits >> 31) == 1, bits ^ 0xFFFFFFFF, bits | 0x80000000)
            if r > 0:
                valid = valid & ((key >> (shift + 4)) == prefix)
            d = ((key >> shift) & 15).to(tl.int32)
            if USE_MASS:
                w = tl.where(valid, tl.exp(s - m), 0.0)
            else:
                w = tl.where(valid, 1.0, 0.0)
            hist += tl.sum(tl.where(d[:, None] == digits[None, :], w[:, None], 0.0), axis=0)
        suffix = tl.cumsum(hist, 0, reverse=True)
        dsel = tl.max(tl.where(acc + suffix >= target, digits, -1), axis=0)
        if r == 0:
            found = dsel >= 0
        dsel = tl.maximum(dsel, 0)
        acc += tl.sum(tl.where(digits > dsel, hist, 0.0), axis=0)
        prefix = (prefix << 4) | dsel.to(tl.uint32)
    return prefix, found


@triton.jit
def _topk_topp_threshold_kernel(
    logits_ptr, temperature_ptr, top_k_ptr, top_p_ptr, thresh_ptr, need_ptr,
    V, NJ, stride_lb, stride_lj,
    HAS_TOP_K: tl.constexpr, HAS_TOP_P: tl.constexpr, BLOCK: tl.constexpr,
):
    # Exact fallback for rows the fast path could not settle (one program per row, 8-pass radix selects):
    # logits      [B, NJ, V] float, last stride 1 (row = b * NJ + j; NJ = 1 for plain sampling)
    # temperature [B] fp32, top_k [B] int32 (0 = off), top_p [B] fp32 (>= 1 = off)
    # need        [B * NJ] int32: rows with 0 are left alone (their thresh is already written)
    # thresh      [B * NJ] fp32 out: keep s = x / T iff s >= thresh (-inf = keep all)
    row = tl.program_id(0)
    b = row // NJ
    j = row % NJ
    row_ptr = logits_ptr + b.to(tl.int64) * stride_lb + j.to(tl.int64) * stride_lj
    temp = tl.load(temperature_ptr + b)
    k_on = temp > 0
    p_on = temp > 0
    top_k = 0
    top_p = 1.0
    if HAS_TOP_K:
        top_k = tl.load(top_k_ptr + b)
        k_on = k_on & (top_k > 0) & (top_k < V)
    else:
        k_on = False
    if HAS_TOP_P:
        top_p = tl.load(top_p_ptr + b)
        p_on = p_on & (top_p < 1.0)
    else:
        p_on = False
    k_on = k_on & (tl.load(need_ptr + row) != 0)
    p_on = p_on & (tl.load(need_ptr + row) != 0)
    thr = tl.full([], float("-inf"), tl.float32)
    if k_on | p_on:
        t = tl.where(temp > 0, temp, 1.0)
        m = tl.full([BLOCK], float("-inf"), tl.float32)
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            s = tl.load(row_ptr + offs, mask=offs < V, other=float("-inf")).to(tl.float32) / t
            m = tl.maximum(m, s)
        mx = tl.max(m, axis=0)
        if k_on:
            key_k, found_k = _radix_select(row_ptr, V, t, float("-inf"), mx, top_k.to(tl.float32),
                                           False, BLOCK)
            thr = tl.where(found_k, _key_to_float(key_k), float("-inf"))
        if p_on:
            z = tl.zeros([BLOCK], dtype=tl.float32)
            for start in range(0, V, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                s = tl.load(row_ptr + offs, mask=offs < V, other=float("-inf")).to(tl.float32) / t
                z += tl.where(s >= thr, tl.exp(s - mx), 0.0)
            target = top_p * tl.sum(z, axis=0)
            key_p, found_p = _radix_select(row_ptr, V, t, thr, mx, target, True, BLOCK)
            thr = tl.maximum(thr, tl.where(found_p, _key_to_float(key_p), float("-inf")))
        tl.store(thresh_ptr + row, thr)


@triton.jit
def _filter_row_params(temperature_ptr, top_k_ptr, top_p_ptr, b, V,
                       HAS_TOP_K: tl.constexpr, HAS_TOP_P: tl.constexpr):
    # (T used to scale, top-k on, top-p on, k, p) of sequence b; T == 0 rows (greedy) filter nothing
    temp = tl.load(temperature_ptr + b)
    t = tl.where(temp > 0, temp, 1.0)
    k_on = temp > 0
    p_on = temp > 0
    top_k = tl.zeros([], tl.int32)
    top_p = tl.full([], 1.0, tl.float32)
    if HAS_TOP_K:
        top_k = tl.load(top_k_ptr + b)
        k_on = k_on & (top_k > 0) & (top_k < V)
    else:
        k_on = k_on & False
    if HAS_TOP_P:
        top_p = tl.load(top_p_ptr + b)
        p_on = p_on & (top_p < 1.0)
    else:
        p_on = p_on & False
    return t, k_on, p_on, top_k, top_p


@triton.jit
def _filter_max_kernel(
    logits_ptr, temperature_ptr, top_k_ptr, top_p_ptr, part_m_ptr, part_l_ptr,
    V, NJ, split_len, num_splits, stride_lb, stride_lj,
    HAS_TOP_K: tl.constexpr, HAS_TOP_P: tl.constexpr, BLOCK: tl.constexpr,
):
    # logits [B, NJ, V] float, last stride 1; program (row = b*NJ + j, split)
    # part_m / part_l [B*NJ, num_splits] fp32 out: max of s = x/T over the split, sum exp(s - max) (top-p)
    row = tl.program_id(0)
    split = tl.program_id(1)
    b = row // NJ
    t, k_on, p_on, _k, _p = _filter_row_params(temperature_ptr, top_k_ptr, top_p_ptr, b, V, HAS_TOP_K, HAS_TOP_P)
    start = split * split_len
    end = tl.where(k_on | p_on, tl.minimum(start + split_len, V), start)  # unfiltered rows read nothing
    row_ptr = logits_ptr + b.to(tl.int64) * stride_lb + (row % NJ).to(tl.int64) * stride_lj
    m_vec = tl.full([BLOCK], float("-inf"), tl.float32)
    l_vec = tl.zeros([BLOCK], tl.float32)
    for off in range(start, end, BLOCK):
        offs = off + tl.arange(0, BLOCK)
        s = tl.load(row_ptr + offs, mask=offs < end, other=float("-inf")).to(tl.float32) / t
        if HAS_TOP_P:
            m_new = tl.maximum(m_vec, s)
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            l_vec = l_vec * tl.exp(m_vec - m_safe) + tl.exp(s - m_safe)
            m_vec = m_new
        else:
            m_vec = tl.maximum(m_vec, s)
    m = tl.max(m_vec, axis=0)
    p = row.to(tl.int64) * num_splits + split
    tl.store(part_m_ptr + p, m)
    if HAS_TOP_P:
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        tl.store(part_l_ptr + p, tl.sum(l_vec * tl.exp(m_vec - m_safe), axis=0))


@triton.jit
def _filter_hist_kernel(
    logits_ptr, temperature_ptr, top_k_ptr, top_p_ptr, part_m_ptr, part_l_ptr, hist_ptr, count_ptr,
    rowstat_ptr, pivot_ptr,
    V, NJ, split_len, num_splits, stride_lb, stride_lj, cap,
    HAS_TOP_K: tl.constexpr, HAS_TOP_P: tl.constexpr, SPLITS: tl.constexpr, BINS: tl.constexpr,
    INV_W: tl.constexpr, BLOCK: tl.constexpr,
):
    # part_m / part_l from _filter_max_kernel; hist [B*NJ, BINS] int32 and count [B*NJ] int32 are 0 on
    # entry and left at 0. The last program of a row writes rowstat [B*NJ, 2] fp32 = (M, Z) and pivot
    # [B*NJ] int32: the candidate bin t >= 0, -1 = fallback, -2 = row not filtered.
    row = tl.program_id(0)
    split = tl.program_id(1)
    b = row // NJ
    t, k_on, p_on, top_k, top_p = _filter_row_params(temperature_ptr, top_k_ptr, top_p_ptr, b, V,
                                                     HAS_TOP_K, HAS_TOP_P)
    active = k_on | p_on
    so = tl.arange(0, SPLITS)
    s_ok = so < num_splits
    pbase = row.to(tl.int64) * num_splits
    pm = tl.load(part_m_ptr + pbase + so, mask=s_ok, other=float("-inf"))
    M = tl.max(pm, axis=0)
    start = split * split_len
    end = tl.where(active, tl.minimum(start + split_len, V), start)
    row_ptr = logits_ptr + b.to(tl.int64) * stride_lb + (row % NJ).to(tl.int64) * stride_lj
    bins = tl.arange(0, BINS)
    h = tl.zeros([BINS], tl.int32)
    for off in range(start, end, BLOCK):
        offs = off + tl.arange(0, BLOCK)
        msk = offs < end
        s = tl.load(row_ptr + offs, mask=msk, other=float("-inf")).to(tl.float32) / t
        bn = tl.minimum((M - s) * INV_W, BINS - 1).to(tl.int32)
        h += tl.histogram(bn, BINS, mask=msk)
    hrow = hist_ptr + row.to(tl.int64) * BINS + bins
    if active:
        tl.atomic_add(hrow, h, mask=h > 0, sem="relaxed", scope="gpu")
    tl.debug_barrier()  # every thread's histogram adds are done before the (release) arrival below
    arrived = tl.atomic_add(count_ptr + row, 1, sem="acq_rel", scope="gpu")
    if arrived == num_splits - 1:
        pivot = tl.full([], -2, tl.int32)
        Z = tl.zeros([], tl.float32)
        if HAS_TOP_P:
            pl = tl.load(part_l_ptr + pbase + so, mask=s_ok, other=0.0)
            Z = tl.sum(pl * tl.exp(pm - tl.where(M == float("-inf"), 0.0, M)), axis=0)
        if active:
            cnt = tl.load(hrow, cache_modifier=".cg")
            cum = tl.cumsum(cnt, 0)
            t_sel = tl.min(tl.where(cum >= top_k, bins, BINS), axis=0)
            if HAS_TOP_P:
                # lower bound of each bin's softmax mass (times Z): count * exp(-(b+1) W)
                lb = cnt.to(tl.float32) * tl.exp(-(bins + 1).to(tl.float32) / INV_W)
                t_p = tl.min(tl.where(tl.cumsum(lb, 0) >= top_p * Z, bins, BINS), axis=0)
                t_sel = tl.where(k_on, t_sel, t_p)
            n_c = tl.sum(tl.where(bins <= t_sel, cnt, 0), axis=0)
            pivot = tl.where((t_sel < BINS - 1) & (n_c <= cap), t_sel, -1)
            tl.store(hrow, tl.zeros([BINS], tl.int32))  # re-arm
        tl.store(pivot_ptr + row, pivot)
        tl.store(rowstat_ptr + 2 * row, M)
        tl.store(rowstat_ptr + 2 * row + 1, Z)
        tl.atomic_xchg(count_ptr + row, 0, sem="relaxed", scope="gpu")  # re-arm


@triton.jit
def _filter_finish(cand_ptr, n, M, Z, k_on, p_on, top_k, top_p, N: tl.constexpr):
    # the reference rule on the n sorted candidates (an upper set of the row): returns (threshold, decided)
    i = tl.arange(0, N)
    v = tl.load(cand_ptr + i, mask=i < n, other=float("-inf"), cache_modifier=".cg")
    v = tl.sort(v, descending=True)
    thr = tl.where(k_on, tl.max(tl.where(i == top_k - 1, v, float("-inf")), axis=0), float("-inf"))
    ok = (~k_on) | (top_k <= n)
    keep = (i < n) & (v >= thr)
    mass = tl.where(keep, tl.exp(v - M), 0.0)
    zk = tl.where(k_on, tl.sum(mass, axis=0), Z)
    csum = tl.cumsum(mass / zk, 0)
    first = tl.min(tl.where(keep & (csum >= top_p), i, N), axis=0)
    crossed = first < N
    thr_p = tl.max(tl.where(i == first, v, float("-inf")), axis=0)
    thr = tl.where(p_on & crossed, tl.maximum(thr, thr_p), thr)
    # top-p alone whose crossing lies past the candidates cannot be decided here (after top-k the
    # reference keeps every survivor when the cumulative mass never reaches p)
    ok = ok & ((~p_on) | crossed | k_on)
    return thr, ok


@triton.jit
def _filter_gather_kernel(
    logits_ptr, temperature_ptr, top_k_ptr, top_p_ptr, part_m_ptr, rowstat_ptr, pivot_ptr,
    cand_ptr, ccount_ptr, count_ptr, thresh_ptr, need_ptr,
    V, NJ, split_len, num_splits, stride_lb, stride_lj,
    HAS_TOP_K: tl.constexpr, HAS_TOP_P: tl.constexpr, BINS: tl.constexpr, INV_W: tl.constexpr,
    CAP: tl.constexpr, SMALL: tl.constexpr, BLOCK: tl.constexpr,
):
    # cand [B*NJ, CAP] fp32 scratch; ccount / count [B*NJ] int32, 0 on entry and left at 0.
    # The last program of a row writes thresh [B*NJ] fp32 and need [B*NJ] int32 (1 = fallback).
    row = tl.program_id(0)
    split = tl.program_id(1)
    b = row // NJ
    t, k_on, p_on, top_k, top_p = _filter_row_params(temperature_ptr, top_k_ptr, top_p_ptr, b, V,
                                                     HAS_TOP_K, HAS_TOP_P)
    pv = tl.load(pivot_ptr + row)
    M = tl.load(rowstat_ptr + 2 * row)
    m_split = tl.load(part_m_ptr + row.to(tl.int64) * num_splits + split)
    d_split = tl.where(pv >= 0, M - m_split, 0.0)  # (M is -inf on unfiltered rows)
    has = (pv >= 0) & (tl.minimum(d_split * INV_W, BINS - 1).to(tl.int32) <= pv)
    start = split * split_len
    end = tl.where(has, tl.minimum(start + split_len, V), start)  # splits without candidates read nothing
    row_ptr = logits_ptr + b.to(tl.int64) * stride_lb + (row % NJ).to(tl.int64) * stride_lj
    c_row = cand_ptr + row.to(tl.int64) * CAP
    for off in range(start, end, BLOCK):
        offs = off + tl.arange(0, BLOCK)
        msk = offs < end
        s = tl.load(row_ptr + offs, mask=msk, other=float("-inf")).to(tl.float32) / t
        sel = msk & (tl.minimum((M - s) * INV_W, BINS - 1).to(tl.int32) <= pv)
        sel_i = sel.to(tl.int32)
        n = tl.sum(sel_i, axis=0)
        if n > 0:
            base = tl.atomic_add(ccount_ptr + row, n, sem="relaxed", scope="gpu")
            pos = base + tl.cumsum(sel_i, 0) - 1
            tl.store(c_row + pos, s, mask=sel & (pos < CAP))
    tl.debug_barrier()  # every thread's candidate stores are done before the (release) arrival below
    arrived = tl.atomic_add(count_ptr + row, 1, sem="acq_rel", scope="gpu")
    if arrived == num_splits - 1:
        thr = tl.full([], float("-inf"), tl.float32)
        need = (pv == -1).to(tl.int32)
        if pv >= 0:
            n_c = tl.load(ccount_ptr + row, cache_modifier=".cg")
            Z = tl.load(rowstat_ptr + 2 * row + 1)
            if n_c <= SMALL:
                thr, ok = _filter_finish(c_row, n_c, M, Z, k_on, p_on, top_k, top_p, SMALL)
            else:
                thr, ok = _filter_finish(c_row, n_c, M, Z, k_on, p_on, top_k, top_p, CAP)
            need = (~ok).to(tl.int32)
            tl.store(ccount_ptr + row, 0)  # re-arm
        tl.store(thresh_ptr + row, thr)
        tl.store(need_ptr + row, need)
        tl.atomic_xchg(count_ptr + row, 0, sem="relaxed", scope="gpu")  # re-arm


# --------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------
def launch_thresholds(logits3: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None,
                      top_p: torch.Tensor | None, *, cap: tuple[int, int] | None = None,
                      fast: bool = True, need_out: torch.Tensor | None = None) -> torch.Tensor | None:
    """Per-row filter thresholds [B * NJ] fp32 for logits3 [B, NJ, V]: keep s = x / T iff s >= thresh.

    None when both filters are None. temperature [B] fp32 (rows with T == 0 get -inf), top_k [B] int32,
    top_p [B] fp32 (validated by the callers). cap: (CAP, SMALL) candidate capacities (tests);
    fast=False runs only the one-program-per-row radix select (the previous path; benchmarks).
    need_out: optional [B * NJ] int32 that receives 1 for the rows the fallback settled (tests).
    """
    if top_k is None and top_p is None:
        return None
    B, NJ, V = logits3.shape
    rows = B * NJ
    dev = logits3.device
    thresh = torch.empty(rows, dtype=torch.float32, device=dev)
    interp = dev.type != "cuda"
    dummy = temperature
    tk = top_k if top_k is not None else dummy
    tp = top_p if top_p is not None else dummy
    flags = dict(HAS_TOP_K=top_k is not None, HAS_TOP_P=top_p is not None)
    if fast:
        if interp:
            block, warps, slots = _INTERP_BLOCK, 4, 8
            cap_, small = _INTERP_CAP
        else:
            block, warps, per_sm = FILTER_CONFIG
            slots = per_sm * _sm_count(dev.index if dev.index is not None else torch.cuda.current_device())
            cap_, small = FILTER_CAP, FILTER_SMALL
        if cap is not None:
            cap_, small = cap
        chunks = triton.cdiv(V, block)
        splits = max(1, min(chunks, slots // rows))
        split_len = triton.cdiv(chunks, splits) * block
        splits = triton.cdiv(V, split_len)
        part_m = torch.empty(rows, splits, dtype=torch.float32, device=dev)
        part_l = torch.empty(rows, splits, dtype=torch.float32, device=dev) if top_p is not None else part_m
        rowstat = torch.empty(rows, 2, dtype=torch.float32, device=dev)
        pivot = torch.empty(rows, dtype=torch.int32, device=dev)
        cand = torch.empty(rows, cap_, dtype=torch.float32, device=dev)
        need = torch.empty(rows, dtype=torch.int32, device=dev)
        zeros = arrival_counters(dev, rows * (FILTER_BINS + 3))  # left at 0 by the kernels
        count1, count2, ccount = zeros[:rows], zeros[rows:2 * rows], zeros[2 * rows:3 * rows]
        hist = zeros[3 * rows:]
        strides = (logits3.stride(0), logits3.stride(1))
        _filter_max_kernel[(rows, splits)](logits3, temperature, tk, tp, part_m, part_l, V, NJ, split_len, splits,
                                           *strides, BLOCK=block, num_warps=warps, **flags)
        _filter_hist_kernel[(rows, splits)](
            logits3, temperature, tk, tp, part_m, part_l, hist, count1, rowstat, pivot,
            V, NJ, split_len, splits, *strides, cap_,
            SPLITS=triton.next_power_of_2(splits), BINS=FILTER_BINS, INV_W=1.0 / FILTER_BIN_W, BLOCK=block,
            num_warps=warps, **flags)
        _filter_gather_kernel[(rows, splits)](
            logits3, temperature, tk, tp, part_m, rowstat, pivot, cand, ccount, count2, thresh, need,
            V, NJ, split_len, splits, *strides,
            BINS=FILTER_BINS, INV_W=1.0 / FILTER_BIN_W, CAP=cap_, SMALL=small, BLOCK=block, num_warps=warps,
            **flags)
    else:
        need = torch.ones(rows, dtype=torch.int32, device=dev)
        thresh.fill_(float("-inf"))
    block, warps = (_INTERP_BLOCK, 4) if interp else THRESH_CONFIG
    _topk_topp_threshold_kernel[(rows,)](
        logits3, temperature, tk, tp, thresh, need, V, NJ, logits3.stride(0), logits3.stride(1),
        BLOCK=block, num_warps=warps, **flags,
    )
    if need_out is not None:
        need_out.copy_(need)
    return thresh
