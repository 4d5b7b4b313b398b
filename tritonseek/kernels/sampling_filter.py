"""Triton top-k / top-p filter thresholds for the decode-path sampler and speculative verification.

The kept set of top-k and of top-p (over the top-k survivors, renormalised) is {s >= t} for one value t
per row, s = x / T. Fast path, the row split across programs (memory-bound: one full pass plus the splits
that hold candidates), exact:
  1. ``_filter_max_kernel``: per split, max of s, sum exp(s - max) (the softmax mass Z, for top-p) and a
     sketch: the maxima of G disjoint groups of the split's elements (<= FILTER_SKETCH per row).
  2. ``_filter_pivot_kernel`` (one program per row): selects in the sketch by bisection on the
     order-preserving key bits (a 4096-wide sort was ~90 us on the H200). Each entry is a distinct element,
     so the k-th largest entry L has at least k elements >= L (top-k), and the entries >= L carry at most
     the mass of {s >= L} (top-p alone: the largest L where their mass reaches p·Z). The
     candidates {s >= L} are an upper set of the row (ties all in or out) holding the threshold.
  3. ``_filter_gather_kernel``: splits whose max is >= L copy their candidates (s and id) into a [CAP]
     buffer per row (slots by atomic reservation; the order does not matter).
  4. ``_filter_settle_kernel`` (one program per row): sorts the candidates descending (up to SMALL of
     them; more: key bisection, fp64 sums) and applies the reference rule exactly: top-k = the k-th
     largest, top-p = the first sorted position where the cumulative softmax reaches p. It writes the threshold; rows with more than CAP candidates, or whose
     top-p crossing (top-p alone) lies past them, are flagged for the fallback. For the samplers it also
     writes the row's sampling partials (max, softmax sum, argmax, exponential race over the kept
     candidates with the noise gathered, or made by Philox, at their ids), so the sampling pass skips
     the row.
  5. ``kernels.sampling_radix``: the exact one-program-per-row radix select (8 passes of 4 bits),
     run only on flagged rows (the others exit at once): flat rows (top-p alone over thousands of
     near-equal logits, or top-k in the thousands) take this slow path.
No host synchronisation (graph-capturable); split counts depend on shapes only; the candidate counters
are left at 0 by the kernels for the next launch.
"""

from __future__ import annotations

import threading

import torch
import triton
import triton.language as tl

from tritonseek.kernels._host import sm_count_at
from tritonseek.kernels.sampling_radix import (  # noqa: F401 - THRESH_CONFIG re-exported
    THRESH_CONFIG,
    _float_key,
    _key_to_float,
    launch_radix_thresholds,
)

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
FILTER_CONFIG = (2048, 8, 4)  # (BLOCK, num_warps, programs per SM) of the streaming filter passes
GATHER_CONFIG = (1024, 4)  # (BLOCK, num_warps) of the candidate gather (same splits; BLOCK divides theirs)
FILTER_SKETCH = 4096  # group maxima per row that the pivot kernel sorts
FILTER_CAP = 4096  # candidates per row sorted by one program; more → fallback
FILTER_SMALL = 256  # candidate counts up to this use a small sort
SETTLE_WARPS = 8  # the per-row candidate sort / threshold / partials kernel
_INTERP_BLOCK = 64
_INTERP_SKETCH = 64
_INTERP_CAP = (64, 16)  # (CAP, SMALL) under the interpreter: small rows reach both sorts and the fallback


_sm_count = sm_count_at  # SMs of a CUDA device index (cached once per index in _host)


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
def _key_select(keys, w, target):
    # largest key v with sum(w[keys >= v]) >= target (0 if none): 32 bisection steps on the key bits, one
    # reduction each; v is always one of the keys. w >= 0; sums in fp64 (the lane order of w may vary from
    # run to run, fp64 keeps the comparisons reproducible).
    v = tl.zeros((), tl.uint32)
    one = tl.full((), 1, tl.uint32)
    w64 = w.to(tl.float64)
    t64 = target.to(tl.float64)
    for bit in tl.static_range(32):
        cand = v | (one << (31 - bit))
        tot = tl.sum(tl.where(keys >= cand, w64, 0.0), axis=0)
        v = tl.where(tot >= t64, cand, v)
    return v


@triton.jit
def _filter_row_params(temperature_ptr, top_k_ptr, top_p_ptr, b, V,
                       HAS_TOP_K: tl.constexpr, HAS_TOP_P: tl.constexpr):
    # (T used to scale, top-k on, top-p on, k, p) of sequence b; T == 0 rows (greedy) filter nothing
    temp = tl.load(temperature_ptr + b)
    t = tl.where(temp > 0, tl.minimum(temp, 1e30), 1.0)  # T > 1e30 (+inf too) acts as 1e30, as in _row_stats_kernel
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
        p_on = p_on & (top_p < 1.0)  # NaN: off
        top_p = tl.where(top_p > 0, top_p, 1e-30)  # <= 0 keeps the top token(s), as the reference
    else:
        p_on = p_on & False
    return t, k_on, p_on, top_k, top_p


@triton.jit
def _filter_max_kernel(
    logits_ptr, temperature_ptr, top_k_ptr, top_p_ptr, part_m_ptr, part_l_ptr, sketch_ptr,
    V, NJ, split_len, num_splits, sketch_stride,
    stride_lb, stride_lj,
    HAS_TOP_K: tl.constexpr, HAS_TOP_P: tl.constexpr, G: tl.constexpr, BLOCK: tl.constexpr,
):
    # logits [B, NJ, V] float, last stride 1; program (row = b*NJ + j, split)
    # part_m / part_l [B*NJ, num_splits] fp32 out: max of s = x/T over the split, sum exp(s - max) (top-p)
    # sketch [B*NJ, sketch_stride] fp32 out: entries split*G .. split*G+G-1 = the maxima of G disjoint
    #        groups of the split's elements (lanes l with l // (BLOCK/G) = g, all chunks)
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
        s = tl.where(s != s, float("inf"), s)  # a NaN row gets max +inf: the samplers then return token 0
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
    gmax = tl.max(tl.reshape(m_vec, [G, BLOCK // G]), axis=1)
    tl.store(sketch_ptr + row.to(tl.int64) * sketch_stride + split * G + tl.arange(0, G), gmax)
    if HAS_TOP_P:
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        tl.store(part_l_ptr + p, tl.sum(l_vec * tl.exp(m_vec - m_safe), axis=0))


@triton.jit
def _filter_pivot_kernel(
    temperature_ptr, top_k_ptr, top_p_ptr, part_m_ptr, part_l_ptr, sketch_ptr, rowstat_ptr, pivot_ptr,
    V, num_splits, n_sketch, sketch_stride, NJ,
    HAS_TOP_K: tl.constexpr, HAS_TOP_P: tl.constexpr, SPLITS: tl.constexpr, SK: tl.constexpr,
):
    # one program per row. Each sketch entry is the max of its own group of elements, so the k-th largest
    # entry L has >= k elements s >= L (top-k), and the entries >= L carry at most the softmax mass of
    # {s >= L} (top-p alone: the first L where their mass reaches p·Z). Out: rowstat [B*NJ, 3] fp32 =
    # (M, Z, L) and pivot [B*NJ] int32 (1 = candidates {s >= L}, -1 = fallback, -2 = row not filtered).
    row = tl.program_id(0)
    b = row // NJ
    t, k_on, p_on, top_k, top_p = _filter_row_params(temperature_ptr, top_k_ptr, top_p_ptr, b, V,
                                                     HAS_TOP_K, HAS_TOP_P)
    so = tl.arange(0, SPLITS)
    s_ok = so < num_splits
    pbase = row.to(tl.int64) * num_splits
    pm = tl.load(part_m_ptr + pbase + so, mask=s_ok, other=float("-inf"))
    M = tl.max(pm, axis=0)
    m_safe = tl.where(M == float("-inf"), 0.0, M)
    Z = tl.zeros([], tl.float32)
    if HAS_TOP_P:
        Z = tl.sum(tl.load(part_l_ptr + pbase + so, mask=s_ok, other=0.0) * tl.exp(pm - m_safe), axis=0)
    pivot = tl.full([], -2, tl.int32)
    L = tl.full([], float("-inf"), tl.float32)
    if k_on | p_on:
        i = tl.arange(0, SK)
        sk = tl.load(sketch_ptr + row.to(tl.int64) * sketch_stride + i, mask=i < n_sketch, other=float("-inf"))
        valid = sk > float("-inf")
        w = tl.where(valid, 1.0, 0.0)
        target = top_k.to(tl.float32)
        if HAS_TOP_P:
            w = tl.where(k_on, w, tl.where(valid, tl.exp(sk - m_safe), 0.0))
            target = tl.where(k_on, target, top_p * Z)
        # no sort (a 4096-wide tl.sort costs ~90 us on the H200): bisection on the order-preserving keys
        L = _key_to_float(_key_select(_float_key(sk), w, target))
        pivot = tl.where((tl.sum(w, axis=0) >= target) & (L > float("-inf")), 1, -1)
    tl.store(pivot_ptr + row, pivot)
    tl.store(rowstat_ptr + 3 * row, M)
    tl.store(rowstat_ptr + 3 * row + 1, Z)
    tl.store(rowstat_ptr + 3 * row + 2, L)


@triton.jit
def _philox_exp_at(seed, j, V, idx):
    # Exp(1) noise of elements idx (int32) of row j under key seed: output idx % 4 of Philox4x32-10 at counter
    # j*ceil(V/4) + idx // 4, the same numbers as sampling._philox_exp makes for whole chunks
    u0, u1, u2, u3 = tl.rand4x(seed, j * ((V + 3) // 4) + idx // 4)
    r = idx % 4
    u = tl.where(r == 0, u0, tl.where(r == 1, u1, tl.where(r == 2, u2, u3)))
    return -tl.log(u)


@triton.jit
def _filter_finish(cand_ptr, cidx_ptr, n, M, Z, k_on, p_on, top_k, top_p, N: tl.constexpr):
    # the reference rule on the n sorted candidates (an upper set of the row): returns (threshold, decided,
    # candidate values and ids sorted by (value, id) descending: a fixed order whatever the gather order,
    # so every later sum is reproducible, lane ids)
    i = tl.arange(0, N)
    v0 = tl.load(cand_ptr + i, mask=i < n, other=float("-inf"))
    c0 = tl.load(cidx_ptr + i, mask=i < n, other=0)
    bits = v0.to(tl.uint32, bitcast=True)
    key = tl.where((bits >> 31) == 1, bits ^ 0xFFFFFFFF, bits | 0x80000000)  # order-preserving
    kk = tl.sort((key.to(tl.uint64) << 32) | c0.to(tl.uint32).to(tl.uint64), descending=True)
    ci = (kk & 0xFFFFFFFF).to(tl.int32)
    v = _key_to_float((kk >> 32).to(tl.uint32))
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
    return thr, ok, v, ci, i


@triton.jit
def _filter_finish_bisect(cand_ptr, cidx_ptr, n, M, Z, k_on, p_on, top_k, top_p, N: tl.constexpr):
    # _filter_finish without a sort (for more than SMALL candidates, where an N-wide sort is slow): the k-th
    # largest and the top-p crossing value (largest v whose mass {s >= v} reaches p·Z_k) by key bisection
    i = tl.arange(0, N)
    valid = i < n
    v = tl.load(cand_ptr + i, mask=valid, other=float("-inf"))
    ci = tl.load(cidx_ptr + i, mask=valid, other=0)
    keys = _float_key(v)
    thr_k = _key_to_float(_key_select(keys, tl.where(valid, 1.0, 0.0), top_k.to(tl.float32)))
    thr = tl.where(k_on, thr_k, float("-inf"))
    ok = (~k_on) | (top_k <= n)
    keep = valid & (v >= thr)
    mass = tl.where(keep, tl.exp(v - M), 0.0)
    zk = tl.where(k_on, tl.sum(mass.to(tl.float64), axis=0).to(tl.float32), Z)
    target = top_p * zk
    crossed = tl.sum(mass.to(tl.float64), axis=0) >= target.to(tl.float64)
    thr_p = _key_to_float(_key_select(keys, mass, target))
    thr = tl.where(p_on & crossed, tl.maximum(thr, thr_p), thr)
    ok = ok & ((~p_on) | crossed | k_on)
    return thr, ok, v, ci, i


@triton.jit
def _candidate_stats(v, ci, lane, n, thr, M, t, l_row, b, j, NJ, V, noise_row, seeds_ptr, draft_ptr, stride_db,
                     part, part_max_ptr, part_sum_ptr, part_idx_ptr, part_race_ptr, part_ridx_ptr,
                     NEED_SUM: tl.constexpr, RACE_MODE: tl.constexpr, PHILOX: tl.constexpr):
    # _row_stats_kernel's partials of the whole filtered row from its candidates (every kept token is
    # one), on the logits x (reloaded from the row l_row at the candidates' ids; v = x / T only decides
    # which are kept): max m of the kept x, sum exp((x - m) / T), first argmax, race value (x_w - m) + T·g_w
    # of the winner w (g = -log E) and w. M is the row's max of x / T: +inf (a NaN/+inf logit, or x / T
    # overflowing) is stored as the max so the combine returns token 0 (no softmax). Written at split 0
    # of the row (``part``); the row's other splits are neutral (see _row_stats_kernel HAS_DONE).
    big = 2147483647
    kept = (lane < n) & (v >= thr)
    x = tl.load(l_row + ci, mask=kept, other=float("-inf")).to(tl.float32)
    m = tl.max(x, axis=0)
    tl.store(part_max_ptr + part, tl.where(M < float("inf"), m, M))
    amax = tl.min(tl.where(kept & (x == m), ci, big), axis=0)
    tl.store(part_idx_ptr + part, tl.where(amax == big, 0, amax))
    if NEED_SUM:
        inv_t = tl.minimum(1.0 / t, 3.4028234663852886e38)
        tl.store(part_sum_ptr + part,
                 tl.sum(tl.where(kept, tl.exp((x - m) * inv_t), 0.0).to(tl.float64), axis=0).to(tl.float32))
    if RACE_MODE != 0:
        do_race = kept
        if RACE_MODE == 2:
            do_race = do_race & (j == NJ - 1)
        if RACE_MODE == 1:
            has_draft = j < NJ - 1
            excl = tl.load(draft_ptr + b.to(tl.int64) * stride_db + tl.where(has_draft, j, 0), mask=has_draft,
                           other=-1).to(tl.int64)
            excl = tl.where((excl >= 0) & (excl < V), excl, -1).to(tl.int32)  # out-of-range drafts exclude nothing
            do_race = do_race & (ci != excl)
        if PHILOX:
            e = _philox_exp_at(tl.load(seeds_ptr + b), j, V, ci)
        else:
            e = tl.load(noise_row + ci, mask=do_race, other=1.0)
        r = tl.where(do_race, (x - m) - t * tl.log(e), float("-inf"))
        rmax = tl.max(r, axis=0)
        tl.store(part_race_ptr + part, rmax)
        ridx = tl.min(tl.where(do_race & (r == rmax), ci, big), axis=0)
        tl.store(part_ridx_ptr + part, tl.where(ridx == big, 0, ridx))


@triton.jit
def _filter_settle(cand_ptr, cidx_ptr, n, M, Z, k_on, p_on, top_k, top_p, t, l_row, b, j, NJ, V, noise_row,
                   seeds_ptr, draft_ptr, stride_db, part, part_max_ptr, part_sum_ptr, part_idx_ptr, part_race_ptr,
                   part_ridx_ptr, N: tl.constexpr, STATS: tl.constexpr, NEED_SUM: tl.constexpr,
                   RACE_MODE: tl.constexpr, PHILOX: tl.constexpr, SORT: tl.constexpr):
    # threshold from N-wide candidate vectors (sorted, or by bisection), then (STATS, when decided) the
    # row's sampling partials
    if SORT:
        thr, ok, v, ci, lane = _filter_finish(cand_ptr, cidx_ptr, n, M, Z, k_on, p_on, top_k, top_p, N)
    else:
        thr, ok, v, ci, lane = _filter_finish_bisect(cand_ptr, cidx_ptr, n, M, Z, k_on, p_on, top_k, top_p, N)
    if STATS:
        if ok:
            _candidate_stats(v, ci, lane, n, thr, M, t, l_row, b, j, NJ, V, noise_row, seeds_ptr, draft_ptr, stride_db,
                             part, part_max_ptr, part_sum_ptr, part_idx_ptr, part_race_ptr, part_ridx_ptr,
                             NEED_SUM, RACE_MODE, PHILOX)
    return thr, ok


@triton.jit
def _filter_gather_kernel(
    logits_ptr, temperature_ptr, top_k_ptr, top_p_ptr, part_m_ptr, rowstat_ptr, pivot_ptr,
    cand_ptr, cidx_ptr, ccount_ptr,
    V, NJ, split_len, num_splits, stride_lb, stride_lj,
    HAS_TOP_K: tl.constexpr, HAS_TOP_P: tl.constexpr, CAP: tl.constexpr, BLOCK: tl.constexpr,
):
    # cand / cidx [B*NJ, CAP] fp32 / int32 out: candidate s and id in any order; ccount [B*NJ] int32
    # (0 on entry; _filter_settle_kernel re-arms it) counts them (beyond CAP too: the row then falls back).
    # Candidates: s >= L of the row's pivot; splits whose max is below L read nothing.
    row = tl.program_id(0)
    split = tl.program_id(1)
    b = row // NJ
    t, _k_on, _p_on, _k, _p = _filter_row_params(temperature_ptr, top_k_ptr, top_p_ptr, b, V, HAS_TOP_K, HAS_TOP_P)
    pv = tl.load(pivot_ptr + row)
    L = tl.load(rowstat_ptr + 3 * row + 2)
    m_split = tl.load(part_m_ptr + row.to(tl.int64) * num_splits + split)
    has = (pv == 1) & (m_split >= L)
    start = split * split_len
    end = tl.where(has, tl.minimum(start + split_len, V), start)
    row_ptr = logits_ptr + b.to(tl.int64) * stride_lb + (row % NJ).to(tl.int64) * stride_lj
    c_row = cand_ptr + row.to(tl.int64) * CAP
    i_row = cidx_ptr + row.to(tl.int64) * CAP
    for off in range(start, end, BLOCK):
        offs = off + tl.arange(0, BLOCK)
        msk = offs < end
        s = tl.load(row_ptr + offs, mask=msk, other=float("-inf")).to(tl.float32) / t
        sel = msk & (s >= L)
        sel_i = sel.to(tl.int32)
        n = tl.sum(sel_i, axis=0)
        if n > 0:
            base = tl.atomic_add(ccount_ptr + row, n, sem="relaxed", scope="gpu")
            pos = base + tl.cumsum(sel_i, 0) - 1
            tl.store(c_row + pos, s, mask=sel & (pos < CAP))
            tl.store(i_row + pos, offs, mask=sel & (pos < CAP))


@triton.jit
def _filter_settle_kernel(
    temperature_ptr, top_k_ptr, top_p_ptr, rowstat_ptr, pivot_ptr, cand_ptr, cidx_ptr, ccount_ptr,
    thresh_ptr, need_ptr,
    logits_ptr, noise_ptr, seeds_ptr, draft_ptr, part_max_ptr, part_sum_ptr, part_idx_ptr, part_race_ptr,
    part_ridx_ptr,
    V, NJ, stride_lb, stride_lj, stride_nb, stride_nj, stride_db, stats_splits,
    HAS_TOP_K: tl.constexpr, HAS_TOP_P: tl.constexpr, CAP: tl.constexpr, SMALL: tl.constexpr,
    STATS: tl.constexpr, NEED_SUM: tl.constexpr, RACE_MODE: tl.constexpr, PHILOX: tl.constexpr,
):
    # one program per row: thresh [B*NJ] fp32 and need [B*NJ] int32 out (0 = settled, 1 = fallback,
    # 2 = settled and, with STATS, the row's sampling partials written at split 0 of part_*
    # [B*NJ, stats_splits] (logits [B, NJ, V] read at the candidates' ids, noise [B, NJ, V] Exp(1) or Philox
    # seeds [B], draft [B, NJ-1]: as _row_stats_kernel), so that kernel skips the row); re-arms ccount.
    row = tl.program_id(0)
    b = row // NJ
    j = row % NJ
    t, k_on, p_on, top_k, top_p = _filter_row_params(temperature_ptr, top_k_ptr, top_p_ptr, b, V,
                                                     HAS_TOP_K, HAS_TOP_P)
    pv = tl.load(pivot_ptr + row)
    thr = tl.full([], float("-inf"), tl.float32)
    need = (pv != -2).to(tl.int32)
    n_c = tl.load(ccount_ptr + row)
    if (pv == 1) & (n_c <= CAP):
        M = tl.load(rowstat_ptr + 3 * row)
        Z = tl.load(rowstat_ptr + 3 * row + 1)
        c_row = cand_ptr + row.to(tl.int64) * CAP
        i_row = cidx_ptr + row.to(tl.int64) * CAP
        noise_row = noise_ptr + b.to(tl.int64) * stride_nb + j.to(tl.int64) * stride_nj
        l_row = logits_ptr + b.to(tl.int64) * stride_lb + j.to(tl.int64) * stride_lj
        part = row.to(tl.int64) * stats_splits
        if n_c <= SMALL:
            thr, ok = _filter_settle(c_row, i_row, n_c, M, Z, k_on, p_on, top_k, top_p, t, l_row, b, j, NJ, V,
                                     noise_row, seeds_ptr, draft_ptr, stride_db, part, part_max_ptr, part_sum_ptr,
                                     part_idx_ptr, part_race_ptr, part_ridx_ptr, SMALL, STATS, NEED_SUM,
                                     RACE_MODE, PHILOX, True)
        else:
            thr, ok = _filter_settle(c_row, i_row, n_c, M, Z, k_on, p_on, top_k, top_p, t, l_row, b, j, NJ, V,
                                     noise_row, seeds_ptr, draft_ptr, stride_db, part, part_max_ptr, part_sum_ptr,
                                     part_idx_ptr, part_race_ptr, part_ridx_ptr, CAP, STATS, NEED_SUM,
                                     RACE_MODE, PHILOX, False)
        need = tl.where(ok, 0, 1)
        if STATS:
            need = tl.where(ok, 2, 1)
    tl.store(ccount_ptr + row, 0)  # re-arm
    tl.store(thresh_ptr + row, thr)
    tl.store(need_ptr + row, need)


# --------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------
def launch_thresholds(logits3: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None,
                      top_p: torch.Tensor | None, *, cap: tuple[int, int] | None = None,
                      fast: bool = True, need_out: torch.Tensor | None = None,
                      stats: tuple | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-row filter thresholds [B * NJ] fp32 for logits3 [B, NJ, V]: keep s = x / T iff s >= thresh.

    Returns (thresh, need): need [B * NJ] int32 is 2 on the rows whose sampling partials were written
    (``stats``), else 0/1; (None, None) when both filters are None. temperature [B] fp32 (rows with T == 0 get -inf), top_k [B] int32,
    top_p [B] fp32 (validated by the callers). cap: (CAP, SMALL) candidate capacities (tests);
    fast=False runs only the one-program-per-row radix select (the previous path; benchmarks).
    need_out: optional [B * NJ] int32 that receives 1 for the rows the fallback settled (tests).
    stats: optional (part_max, part_sum, part_idx, part_race, part_ridx, need_sum, race_mode, noise3, seeds,
    draft) of the caller's ``_row_stats_kernel`` launch: rows settled by the fast path get their partials
    from their candidates (split 0; need = 2) and that kernel skips them.
    """
    if top_k is None and top_p is None:
        return None, None
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
            cap_, small, sk = _INTERP_CAP + (_INTERP_SKETCH,)
        else:
            block, warps, per_sm = FILTER_CONFIG
            slots = per_sm * _sm_count(dev.index if dev.index is not None else torch.cuda.current_device())
            cap_, small, sk = FILTER_CAP, FILTER_SMALL, FILTER_SKETCH
        if cap is not None:
            cap_, small = cap
        chunks = triton.cdiv(V, block)
        splits = max(1, min(chunks, slots // rows))
        split_len = triton.cdiv(chunks, splits) * block
        splits = triton.cdiv(V, split_len)
        g = min(block, 1 << max(0, (sk // splits).bit_length() - 1))  # groups per split: <= sk entries per row
        sketch = torch.empty(rows, splits * g, dtype=torch.float32, device=dev)
        part_m = torch.empty(rows, splits, dtype=torch.float32, device=dev)
        part_l = torch.empty(rows, splits, dtype=torch.float32, device=dev) if top_p is not None else part_m
        rowstat = torch.empty(rows, 3, dtype=torch.float32, device=dev)
        pivot = torch.empty(rows, dtype=torch.int32, device=dev)
        cand = torch.empty(rows, cap_, dtype=torch.float32, device=dev)
        cidx = torch.empty(rows, cap_, dtype=torch.int32, device=dev)
        need = torch.empty(rows, dtype=torch.int32, device=dev)
        ccount = arrival_counters(dev, rows)  # left at 0 by the settle kernel
        strides = (logits3.stride(0), logits3.stride(1))
        _filter_max_kernel[(rows, splits)](logits3, temperature, tk, tp, part_m, part_l, sketch, V, NJ, split_len,
                                           splits, sketch.stride(0), *strides, G=g, BLOCK=block, num_warps=warps,
                                           **flags)
        _filter_pivot_kernel[(rows,)](
            temperature, tk, tp, part_m, part_l, sketch, rowstat, pivot, V, splits, splits * g, sketch.stride(0), NJ,
            SPLITS=triton.next_power_of_2(splits), SK=triton.next_power_of_2(splits * g), num_warps=SETTLE_WARPS,
            **flags)
        if stats is not None:
            pmax, psum, pidx, prace, pridx, need_sum, race_mode, noise3, seeds, draft = stats
            noise3 = noise3 if noise3 is not None else logits3
            draft = draft if draft is not None else pidx
            sargs = (logits3, noise3, seeds if seeds is not None else pidx, draft, pmax, psum, pidx, prace, pridx)
            sstrides = (logits3.stride(0), logits3.stride(1), noise3.stride(0), noise3.stride(1),
                        draft.stride(0) if draft.dim() == 2 else 0, pmax.shape[1])
            sflags = dict(STATS=True, NEED_SUM=need_sum, RACE_MODE=race_mode, PHILOX=seeds is not None)
        else:
            sargs = (logits3, logits3, temperature, temperature, part_m, part_m, pivot, part_m, pivot)
            sstrides = (0, 0, 0, 0, 0, 1)
            sflags = dict(STATS=False, NEED_SUM=False, RACE_MODE=0, PHILOX=False)
        _filter_gather_kernel[(rows, splits)](
            logits3, temperature, tk, tp, part_m, rowstat, pivot, cand, cidx, ccount,
            V, NJ, split_len, splits, *strides,
            CAP=cap_, BLOCK=block if interp else GATHER_CONFIG[0], num_warps=warps if interp else GATHER_CONFIG[1],
            **flags)
        _filter_settle_kernel[(rows,)](
            temperature, tk, tp, rowstat, pivot, cand, cidx, ccount, thresh, need, *sargs,
            V, NJ, *sstrides, CAP=cap_, SMALL=small, num_warps=SETTLE_WARPS, **flags, **sflags)
    else:
        need = torch.ones(rows, dtype=torch.int32, device=dev)
        thresh.fill_(float("-inf"))
    launch_radix_thresholds(logits3, temperature, top_k, top_p, thresh, need)
    if need_out is not None:
        need_out.copy_(need)
    return thresh, need
