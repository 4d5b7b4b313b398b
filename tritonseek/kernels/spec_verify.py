"""Triton speculative-decoding verification: greedy and rejection sampling over [B, K+1, V] logits.

Greedy (``verify_greedy``): one launch of ``_greedy_verify_kernel``: each row's vocabulary split over
programs (max/first argmax per split), the program that arrives last for a sequence (arrival counter)
reduces its K+1 rows' partials in split order and walks the drafts. On the H200 (rotating-buffer graph
timing, no L2 hits) B = 64, K = 3 reads the logits at 3.7 TB/s, the rate of a plain streaming read.

Rejection sampling (``verify_rejection``; memory-bound: the target logits, 517 KB per row at V = 129280
fp32, are read once):
  1. (top-k/top-p only) ``kernels.sampling_filter.launch_thresholds``: one filter threshold per
     (sequence, position) row (settled rows also get their sampling partials).
  2. ``_row_stats_kernel`` from ``kernels.sampling``, grid (B·(K+1) rows × splits): each program
     streams a slice of one row in BLOCK chunks, keeping the online max/argmax (greedy), the online
     softmax sum and the exponential race argmax_i (s_i − log E_i) — for draft rows of one-hot
     drafts the race skips the draft token, which is exactly a sample of norm(max(0, p − q)). Sums,
     race and p(d) are computed from x − max, never from x / T (exact at T = 1e-5; see kernels.sampling).
  3. (general draft_probs only) ``_residual_race_kernel``: the race of max(0, p − q) needs the
     row's final softmax max/sum, so it re-streams the draft rows after step 2.
  4. ``_verify_combine_kernel``, one program per sequence: reduces the split partials and walks the
     K draft positions left to right (accept / first reject / bonus), writing the padded tokens and
     the accepted count.
No host synchronisation (CUDA-graph safe); split counts depend on shapes only.
EOS/stop tokens and max_new_tokens trimming are left to the engine (it sees the emitted run).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonseek.kernels._utils import check_no_alias, check_no_overlap, check_runnable_device, check_tensor
from tritonseek.kernels.sampling import (
    _INTERP_BLOCK,
    _check_vocab,
    _row_params,
    _sm_count,
    arrival_counters,
    launch_row_stats,
    _check_seeds,
    _philox_exp,
    check_config,
    stats_launch_config,
)


# --------------------------------------------------------------------------------------------
# Launch configuration of the greedy kernel: (BLOCK, num_warps, programs per SM, UNROLL); split
# counts are shape-only (one wave of programs), so CUDA graphs stay valid.
# --------------------------------------------------------------------------------------------
# H200 A/B (bench_mtp.py --ab, rotating-buffer graph timing, 3 interleaved reps, tree at 472a4b3):
# (2048, 8, 4, 2) 3.53 / 3.90 us at B1 K1 / K3 vs 4.03 / 4.01 for the previous (1024, 4, 8, 2); equal within
# 0.2 us on B16 and B64 (B64 K3 36.5 us = 3.6 TB/s, the rate of a plain streaming read).
GREEDY_CONFIG = (2048, 8, 4, 2)
# (min rows, config): launches of at least that many rows (B·(K+1)) use the config instead (the last match wins).
# H200 A/B at 731e9dc (rotating-buffer graph timing, 3 interleaved reps, every config checked exact first): B64 K1
# (2048, 8, 4, 4) 19.98 us [19.81-20.29] vs 20.22 [20.08-20.28] for GREEDY_CONFIG, 3 or 2 splits per row 20.5-21.5;
# B64 K3 37.17 vs 37.31 (2 splits: 42-46). A ~1% gain, inside the spread at K1; 80% of copy at K1 (19.38 us) is
# not reached.
GREEDY_CONFIG_BY_ROWS: tuple[tuple[int, tuple[int, int, int, int]], ...] = ((128, (2048, 8, 4, 4)),)
# Tried in session 15 (f7e1111) and reverted: one tuple reduction (max, first index) per program and the sequence's
# tail as unrolled scalar loads (no block barriers). H200 W2 A/B, rotating: B64 K1 19.58 vs 19.46 us for this
# kernel, B64 K3 35.68 vs 35.07, B16 K1 10.14 vs 7.72, B16 K3 15.31 vs 11.57, B1 equal. The same run's plain
# streaming read: 18.41 / 34.29 / 5.98 / 10.12 us; without the arrival and tail (W1 diagnostic) B64 K1 19.30.


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _reduce_splits(part_max_ptr, part_sum_ptr, part_idx_ptr, part_race_ptr, part_ridx_ptr, row, inv_t,
                   num_splits, SPLITS: tl.constexpr, NEED_SUM: tl.constexpr, NEED_RACE: tl.constexpr,
                   RACE_REL: tl.constexpr):
    # combine one row's split partials (max of x, sum exp((x - max) · inv_t), first argmax, race winner).
    # RACE_REL: race values relative to their split's max (_row_stats_kernel: shifted by m_split - m_row here);
    # else comparable as stored (_residual_race_kernel's log-probability scores).
    offs = tl.arange(0, SPLITS)
    msk = offs < num_splits
    base = row.to(tl.int64) * num_splits
    big = 2147483647
    ms = tl.load(part_max_ptr + base + offs, mask=msk, other=float("-inf"))
    ids = tl.load(part_idx_ptr + base + offs, mask=msk, other=big)
    mx = tl.max(ms, axis=0)
    amax = tl.min(tl.where((ms == mx) & msk, ids, big), axis=0)
    lsum = 0.0
    if NEED_SUM:
        ls = tl.load(part_sum_ptr + base + offs, mask=msk, other=0.0)
        m_safe = tl.where(mx == float("-inf"), 0.0, mx)
        lsum = tl.sum(ls * tl.exp((ms - m_safe) * inv_t), axis=0)
    ridx = amax
    if NEED_RACE:
        rs = tl.load(part_race_ptr + base + offs, mask=msk, other=float("-inf"))
        if RACE_REL:
            rs = rs + (ms - mx)
        rids = tl.load(part_ridx_ptr + base + offs, mask=msk, other=big)
        rmx = tl.max(rs, axis=0)
        ridx = tl.min(tl.where((rs == rmx) & msk, rids, big), axis=0)
    return mx, lsum, amax, ridx


@triton.jit
def _greedy_verify_kernel(
    logits_ptr, draft_ptr, part_max_ptr, part_idx_ptr, count_ptr, out_ptr, num_acc_ptr,
    V, split_len, num_splits,
    stride_lb, stride_lj, stride_db, stride_ob,
    K: tl.constexpr, KP: tl.constexpr, SPLITS: tl.constexpr, BLOCK: tl.constexpr, UNROLL: tl.constexpr,
):
    # KP = next_power_of_2(K + 1)
    # logits  [B, K+1, V] float, last stride 1; program (row = b*(K+1) + j, split) streams elements
    #         [split*split_len, min((split+1)*split_len, V)) of row (b, j)
    # draft   [B, K] int; part_max/part_idx [B*(K+1), num_splits] fp32/int32 scratch
    # count   [B] int32 arrival counters: 0 on entry, re-armed to 0 by the program that arrives last
    # out     [B, K+1] int64 (-1 padded); num_acc [B] int32
    row = tl.program_id(0)
    split = tl.program_id(1)
    b = row // (K + 1)
    start = split * split_len
    end = tl.minimum(start + split_len, V)
    row_ptr = logits_ptr + b.to(tl.int64) * stride_lb + (row % (K + 1)).to(tl.int64) * stride_lj
    big = 2147483647
    # lane-wise running max / first index; UNROLL independent chunks per iteration keep more loads in flight
    m_vec = tl.full([BLOCK], float("-inf"), tl.float32)
    i_vec = tl.full([BLOCK], big, tl.int32)
    for off in range(start, end, BLOCK * UNROLL):
        for u in tl.static_range(UNROLL):
            offs = off + u * BLOCK + tl.arange(0, BLOCK)
            x = tl.load(row_ptr + offs, mask=offs < end, other=float("-inf"),
                        eviction_policy="evict_first").to(tl.float32)
            x = tl.where(x != x, float("inf"), x)  # NaN counts as the largest value (torch.argmax's order)
            i_vec = tl.where(x > m_vec, offs, i_vec)  # strict: each lane keeps its first maximum
            m_vec = tl.maximum(m_vec, x)
    m = tl.max(m_vec, axis=0)
    idx = tl.min(tl.where(m_vec == m, i_vec, big), axis=0)
    idx = tl.where(idx == big, start, idx)  # all -inf: the split's first index (torch's argmax gives 0)
    p = row.to(tl.int64) * num_splits + split
    tl.store(part_max_ptr + p, m)
    tl.store(part_idx_ptr + p, idx)
    tl.debug_barrier()  # every thread's partial is stored before the (release) arrival below
    arrived = tl.atomic_add(count_ptr + b, 1, sem="acq_rel", scope="gpu")
    if arrived == (K + 1) * num_splits - 1:
        # last program of sequence b: reduce the K+1 rows' partials (in split order: deterministic,
        # ties -> lowest id) and walk the drafts. Accepted drafts equal the argmax, so every emitted
        # position holds the target argmax. All K+1 rows' partials and the drafts are loaded at once
        # (one memory round trip, not one per position: this tail is serial work at the end of the launch).
        jj = tl.arange(0, KP)
        ss = tl.arange(0, SPLITS)
        msk = (jj[:, None] < K + 1) & (ss[None, :] < num_splits)
        b64 = b.to(tl.int64)
        base = (b64 * (K + 1) + jj[:, None]) * num_splits + ss[None, :]
        ms = tl.load(part_max_ptr + base, mask=msk, other=float("-inf"), cache_modifier=".cg")
        ids = tl.load(part_idx_ptr + base, mask=msk, other=big, cache_modifier=".cg")
        d = tl.load(draft_ptr + b64 * stride_db + jj, mask=jj < K, other=-1).to(tl.int64)
        mx = tl.max(ms, axis=1)
        amax = tl.min(tl.where((ms == mx[:, None]) & msk, ids, big), axis=1).to(tl.int64)  # [KP]
        # accepted = the leading run of matching drafts = the first position j < K that mismatches (else K)
        n_acc = tl.min(tl.where((jj < K) & (d != amax), jj, K), axis=0)
        tl.store(out_ptr + b64 * stride_ob + jj, tl.where(jj <= n_acc, amax, -1), mask=jj < K + 1)
        tl.store(num_acc_ptr + b, n_acc.to(tl.int32))
        tl.atomic_xchg(count_ptr + b, 0, sem="relaxed", scope="gpu")  # re-arm for the next launch


@triton.jit
def _residual_race_kernel(
    logits_ptr, noise_ptr, seeds_ptr, draft_probs_ptr, temperature_ptr, thresh_ptr,
    part_max_ptr, part_sum_ptr, part_idx_ptr, part_race_ptr, part_ridx_ptr,
    V, K, split_len, num_splits,
    stride_lb, stride_lj, stride_nb, stride_nj, stride_qb, stride_qj,
    HAS_THRESH: tl.constexpr, PHILOX: tl.constexpr, SPLITS: tl.constexpr, BLOCK: tl.constexpr,
):
    # logits [B, K+1, V], noise [B, K+1, V], draft_probs [B, K, V], all with last stride 1.
    # program (b * K + j, split) for draft position j < K: race of r_i = max(0, p_i - q_i),
    # p_i = exp((x_i - max) / T) / sum over the kept x (s = x / T >= thresh), score log r_i - log E_i;
    # writes part_race/part_ridx of row b*(K+1)+j.
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = pid // K
    j = pid % K
    row = b * (K + 1) + j
    temp = tl.load(temperature_ptr + b)
    do_race = temp > 0
    temp = tl.where(temp > 0, tl.minimum(temp, 1e30), 1.0)  # T > 1e30 (+inf too) acts as 1e30 (sampling.py)
    thr = float("-inf")
    if HAS_THRESH:
        thr = tl.load(thresh_ptr + row)
    inv_t = tl.minimum(1.0 / temp, 3.4028234663852886e38)
    mx, lsum, _a, _r = _reduce_splits(part_max_ptr, part_sum_ptr, part_idx_ptr, part_race_ptr, part_ridx_ptr,
                                      row, inv_t, num_splits, SPLITS, True, False, False)
    m_safe = tl.where(mx == float("-inf"), 0.0, mx)
    inv_l = 1.0 / lsum
    start = split * split_len
    end = tl.where(do_race, tl.minimum(start + split_len, V), start)
    l_row = logits_ptr + b.to(tl.int64) * stride_lb + j.to(tl.int64) * stride_lj
    n_row = noise_ptr + b.to(tl.int64) * stride_nb + j.to(tl.int64) * stride_nj
    q_row = draft_probs_ptr + b.to(tl.int64) * stride_qb + j.to(tl.int64) * stride_qj
    big = 2147483647
    r_vec = tl.full([BLOCK], float("-inf"), tl.float32)  # lane-wise race max / first index
    ri_vec = tl.full([BLOCK], big, tl.int32)
    for off in range(start, end, BLOCK):
        offs = off + tl.arange(0, BLOCK)
        msk = offs < end
        x = tl.load(l_row + offs, mask=msk, other=float("-inf")).to(tl.float32)
        if HAS_THRESH:
            x = tl.where(x / temp >= thr, x, float("-inf"))
        p = tl.exp((x - m_safe) * inv_t) * inv_l
        q = tl.load(q_row + offs, mask=msk, other=0.0).to(tl.float32)
        if PHILOX:
            e = _philox_exp(seeds_ptr, b, j, V, off, BLOCK)
        else:
            e = tl.load(n_row + offs, mask=msk, other=1.0)
        r = tl.maximum(p - q, 0.0)
        score = tl.where(r > 0, tl.log(tl.maximum(r, 1e-30)) - tl.log(e), float("-inf"))
        ri_vec = tl.where(score > r_vec, offs, ri_vec)
        r_vec = tl.maximum(r_vec, score)
    rmax = tl.max(r_vec, axis=0)
    ridx = tl.min(tl.where(r_vec == rmax, ri_vec, big), axis=0)
    ridx = tl.minimum(ridx, V - 1)
    p_out = row.to(tl.int64) * num_splits + split
    tl.store(part_race_ptr + p_out, rmax)
    tl.store(part_ridx_ptr + p_out, ridx)


@triton.jit
def _verify_combine_kernel(
    draft_ptr, draft_probs_ptr, logits_ptr, temperature_ptr, thresh_ptr, uniforms_ptr,
    part_max_ptr, part_sum_ptr, part_idx_ptr, part_race_ptr, part_ridx_ptr,
    out_ptr, num_acc_ptr,
    V, num_splits,
    stride_db, stride_qb, stride_qj, stride_lb, stride_lj, stride_ub, stride_ob,
    K: tl.constexpr, GREEDY: tl.constexpr, ONE_HOT: tl.constexpr, HAS_THRESH: tl.constexpr,
    SPLITS: tl.constexpr,
):
    # draft [B, K] int, draft_probs [B, K, V] (not ONE_HOT), logits [B, K+1, V] (one element read per
    # draft: p(d) = exp((x_d - max) / T) / sum), uniforms [B, K] fp32, out [B, K+1] int64, num_acc [B] int32.
    b = tl.program_id(0)
    b64 = b.to(tl.int64)
    if GREEDY:
        sampled = False
        temp = 1.0
        inv_t = 1.0
    else:
        temp = tl.load(temperature_ptr + b)
        sampled = temp > 0
        temp = tl.where(sampled, tl.minimum(temp, 1e30), 1.0)  # T > 1e30 (+inf too) acts as 1e30 (sampling.py)
        inv_t = tl.minimum(1.0 / temp, 3.4028234663852886e38)
    running = tl.full([], 1, tl.int1)
    n_acc = tl.zeros([], tl.int32)
    for j in tl.static_range(K + 1):
        row = b * (K + 1) + j
        if j < K:
            # race partials of draft rows: relative ones from _row_stats_kernel (one-hot drafts), or the
            # residual race's absolute scores
            mx, lsum, amax, ridx = _reduce_splits(part_max_ptr, part_sum_ptr, part_idx_ptr, part_race_ptr,
                                                  part_ridx_ptr, row, inv_t, num_splits, SPLITS, not GREEDY,
                                                  not GREEDY, ONE_HOT)
            d = tl.load(draft_ptr + b64 * stride_db + j).to(tl.int64)
            accept = d == amax.to(tl.int64)
            fallback = amax
            if not GREEDY:
                d_ok = (d >= 0) & (d < V)
                d_safe = tl.where(d_ok, d, 0)
                x_d = tl.load(logits_ptr + b64 * stride_lb + j * stride_lj + d_safe).to(tl.float32)
                keep = d_ok
                if HAS_THRESH:
                    keep = keep & (x_d / temp >= tl.load(thresh_ptr + row))
                finite = tl.abs(mx) < float("inf")  # else no softmax (NaN/+inf logit, all -inf): reject, emit 0
                m_safe = tl.where(finite, mx, 0.0)
                p_d = tl.where(keep & finite, tl.exp((x_d - m_safe) * inv_t) / lsum, 0.0)
                q_d = 1.0
                if not ONE_HOT:
                    q_d = tl.load(draft_probs_ptr + b64 * stride_qb + j * stride_qj + d_safe).to(tl.float32)
                u = tl.load(uniforms_ptr + b64 * stride_ub + j)
                accept = tl.where(sampled, u * q_d < p_d, accept)
                fallback = tl.where(sampled, tl.where(finite, ridx, 0), amax)
            tok = tl.where(accept, d, fallback.to(tl.int64))
            tl.store(out_ptr + b64 * stride_ob + j, tl.where(running, tok, -1).to(tl.int64))
            n_acc += (running & accept).to(tl.int32)
            running = running & accept
        else:
            mx, lsum, amax, ridx = _reduce_splits(part_max_ptr, part_sum_ptr, part_idx_ptr, part_race_ptr,
                                                  part_ridx_ptr, row, inv_t, num_splits, SPLITS, False,
                                                  not GREEDY, True)
            bonus = amax
            if not GREEDY:
                bonus = tl.where(sampled, tl.where(tl.abs(mx) < float("inf"), ridx, 0), amax)
            tl.store(out_ptr + b64 * stride_ob + j, tl.where(running, bonus, -1).to(tl.int64))
    tl.store(num_acc_ptr + b, n_acc)


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------
def _check_common(draft_tokens, target_logits) -> tuple[int, int, int, torch.device]:
    check_tensor("target_logits", target_logits, dtype=(torch.float32, torch.bfloat16, torch.float16), ndim=3)
    check_runnable_device("target_logits", target_logits)
    dev = target_logits.device
    check_tensor("draft_tokens", draft_tokens, dtype=(torch.int64, torch.int32), ndim=2, device=dev)
    B, K = draft_tokens.shape
    if K < 1:
        raise ValueError(f"draft_tokens must hold K >= 1 drafts, got shape {tuple(draft_tokens.shape)}")
    if tuple(target_logits.shape[:2]) != (B, K + 1):
        raise ValueError(f"target_logits must have shape [{B}, {K + 1}, V], got {tuple(target_logits.shape)}")
    _check_vocab("target_logits", target_logits.shape[2])
    if target_logits.stride(2) != 1:
        raise ValueError(f"target_logits must have a contiguous last dim, got strides {target_logits.stride()}")
    if draft_tokens.stride(1) != 1:
        raise ValueError(f"draft_tokens must have a contiguous last dim, got strides {draft_tokens.stride()}")
    return B, K, target_logits.shape[2], dev


def _outputs(B: int, K: int, dev: torch.device, out_tokens, out_num_accepted, **inputs):
    """The caller's output buffers checked (or new ones): TypeError for a non-tensor, ValueError for a wrong
    shape / dtype / device / layout, elements that share memory (an expand()-ed out_tokens kept only the last
    row's result: tester21 #4), the two outputs sharing memory or either sharing memory with an input tensor
    (``inputs``: name=tensor or None; an out_num_accepted viewed over out_tokens corrupted both, an out_tokens over
    the seeds was overwritten before other rows read them: tester22 #7)."""
    for name, t in (("out_tokens", out_tokens), ("out_num_accepted", out_num_accepted)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
    if out_tokens is None:
        out_tokens = torch.empty(B, K + 1, dtype=torch.int64, device=dev)
    elif (out_tokens.shape != (B, K + 1) or out_tokens.dtype != torch.int64 or out_tokens.device != dev
          or (K > 0 and out_tokens.stride(1) != 1)):
        raise ValueError(f"out_tokens must be a [{B}, {K + 1}] int64 tensor on {dev} with a contiguous last dim")
    if out_num_accepted is None:
        out_num_accepted = torch.empty(B, dtype=torch.int32, device=dev)
    elif (out_num_accepted.shape != (B,) or out_num_accepted.dtype != torch.int32 or out_num_accepted.device != dev
          or not out_num_accepted.is_contiguous()):
        raise ValueError(f"out_num_accepted must be a contiguous [{B}] int32 tensor on {dev}")
    check_no_overlap("out_tokens", out_tokens)  # a stride-0 row dim passes the stride(1) test above
    inputs = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    check_no_alias("out_tokens", out_tokens, **inputs)
    check_no_alias("out_num_accepted", out_num_accepted, out_tokens=out_tokens, **inputs)
    return out_tokens, out_num_accepted


def greedy_config(rows: int) -> tuple[int, ...]:
    """(BLOCK, num_warps, programs per SM, UNROLL) of ``_greedy_verify_kernel`` for a launch of ``rows`` rows."""
    cfg = GREEDY_CONFIG
    for min_rows, c in GREEDY_CONFIG_BY_ROWS:
        if rows >= min_rows:
            cfg = c
    return cfg


def greedy_launch_config(rows: int, V: int, device: torch.device,
                         override: tuple[int, ...] | None = None) -> tuple[int, int, int, int, int]:
    """(BLOCK, num_warps, UNROLL, num_splits, split_len) of ``_greedy_verify_kernel`` for ``rows`` rows of V."""
    if device.type != "cuda":
        block, warps, unroll, slots = _INTERP_BLOCK, 4, 2, 8  # several splits and ragged tails in CPU tests
    else:
        cfg = tuple(override) if override is not None else greedy_config(rows)
        block, warps, per_sm = cfg[:3]
        unroll = cfg[3] if len(cfg) > 3 else 1
        slots = per_sm * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    step = block * unroll
    chunks = triton.cdiv(V, step)
    # as many equal splits as fit in ONE wave (a partial second wave would cost a whole program time)
    splits = max(1, min(chunks, slots // rows))
    split_len = triton.cdiv(chunks, splits) * step
    return block, warps, unroll, triton.cdiv(V, split_len), split_len


def verify_greedy(draft_tokens: torch.Tensor, target_logits: torch.Tensor, *,
                  out_tokens: torch.Tensor | None = None, out_num_accepted: torch.Tensor | None = None,
                  config: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept drafts while d_j == argmax(target_j); emit argmax at the first mismatch, or the bonus argmax.

    draft_tokens: [B, K] int64/int32 (K >= 1); ids outside [0, V) are not checked on the device (a host
    sync) and are never accepted (as verify_greedy_ref). target_logits: [B, K+1, V] fp32/bf16/fp16, V >= 1, last dim contiguous,
    on CUDA (CPU under TRITON_INTERPRET=1); argmax ties pick the lowest id, a NaN counts as the largest
    value (the first NaN or +inf wins; torch.argmax: the first NaN), an all -inf row gives 0.
    out_tokens / out_num_accepted: optional preallocated outputs ([B, K+1] int64, last dim contiguous, no two
    elements sharing memory / contiguous [B] int32; neither sharing memory with the other or with an input
    tensor; else ValueError naming it). config: optional
    (BLOCK, num_warps, programs per SM[, UNROLL]) override (benchmark sweeps): ints, BLOCK a power of two in
    [16, 65536], num_warps a power of two in [1, 32], the others >= 1 (``sampling.check_config``).
    Returns (output_tokens [B, K+1] int64 padded with -1, num_accepted [B] int32 in [0, K]; empty for
    B = 0); num_accepted + 1 tokens are emitted. One kernel launch: each row is split across programs and the
    program that finishes a sequence last (per-sequence arrival counter) reduces the partials in split
    order (deterministic) and walks the drafts. No host synchronisation (CUDA-graph safe); launches
    that overlap on different streams use different counter slots (16 in rotation).
    Raises ValueError/TypeError naming a bad argument.
    Semantics: vLLM RejectionSampler greedy path; reference ``verify_greedy_ref``.
    """
    B, K, V, dev = _check_common(draft_tokens, target_logits)
    config = check_config(config, unroll=True)
    out_tokens, out_num_accepted = _outputs(B, K, dev, out_tokens, out_num_accepted, draft_tokens=draft_tokens,
                                            target_logits=target_logits)
    if B == 0:
        return out_tokens, out_num_accepted
    rows = B * (K + 1)
    block, warps, unroll, splits, split_len = greedy_launch_config(rows, V, dev, config)
    part_max = torch.empty(rows, splits, dtype=torch.float32, device=dev)
    part_idx = torch.empty(rows, splits, dtype=torch.int32, device=dev)
    count = arrival_counters(dev, B)
    _greedy_verify_kernel[(rows, splits)](
        target_logits, draft_tokens, part_max, part_idx, count, out_tokens, out_num_accepted,
        V, split_len, splits,
        target_logits.stride(0), target_logits.stride(1), draft_tokens.stride(0), out_tokens.stride(0),
        K=K, KP=triton.next_power_of_2(K + 1), SPLITS=triton.next_power_of_2(splits), BLOCK=block, UNROLL=unroll,
        num_warps=warps,
    )
    return out_tokens, out_num_accepted


def verify_rejection(
    draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor | None,
    target_logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor | None,
    top_p: torch.Tensor | None,
    uniforms: torch.Tensor,
    exp_noise: torch.Tensor | None,
    *,
    seeds: torch.Tensor | None = None,
    out_tokens: torch.Tensor | None = None,
    out_num_accepted: torch.Tensor | None = None,
    config: tuple[int, int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative rejection sampling: accept d_j iff u_j·q(d_j) < p_j(d_j), else sample norm(max(0, p_j − q_j)).

    p_j = softmax(top_k_top_p(target_logits[:, j] / T)); q = draft_probs, or one-hot at the draft when
    draft_probs is None (greedy drafts: MTP's case). Positions are checked left to right; the first
    rejection emits a residual sample (exponential race with exp_noise) and ends the run; if all K
    are accepted position K emits a sample of p_K. Rows with T == 0 use greedy verification. p is computed as
    exp((x − max) / T) / Σ (exact at low T, e.g. 1e-5 on logits ~100); the top-k/top-p kept set is decided on
    x / T in fp32, as in the reference.

    draft_tokens: [B, K] int64/int32 in [0, V) (K >= 1; ids outside are not checked (no host sync) and are
    rejected: p(d) = q(d) = 0, the position emits a sample of max(0, p − q), as verify_rejection_ref). draft_probs: [B, K, V] float, last dim contiguous, or None. target_logits:
    [B, K+1, V] fp32/bf16/fp16, V >= 1, last dim contiguous, CUDA (CPU under TRITON_INTERPRET=1); a sampled
    position whose max is not finite (NaN/+inf logit, all -inf) has no softmax: its draft is rejected and
    token 0 emitted, as the reference gives. temperature: [B] fp32 >= 0 or a float. top_k: [B] int32
    (0 = off), an int, or None. top_p: [B] fp32 in (0, 1] (1 = off), a float, or None. Tensor values are not
    checked (a host sync): T <= 0 or NaN → greedy row, T > 1e30 (+inf too) → 1e30, top_k < 0 → off, top_p <= 0 → top token(s), NaN
    top_p → off, as in the reference; bad host scalars raise. uniforms: [B, K] fp32 in [0, 1).
    exp_noise: [B, K+1, V] fp32 i.i.d. Exp(1) > 0, last dim contiguous (rows with T == 0 unread); or
    None with seeds: [B] int64 device tensor, the noise then made in registers by Philox, equal to
    ``philox_exp_noise(seeds, K+1, V)`` (no noise tensor written or read: half the bytes; change the
    seeds every step); giving both exp_noise and seeds raises ValueError.
    out_tokens / out_num_accepted: optional preallocated outputs ([B, K+1] int64, last dim contiguous, no two
    elements sharing memory / contiguous [B] int32; neither sharing memory with the other or with an input
    tensor; else ValueError naming it). config: optional
    (BLOCK, num_warps, programs per SM) override, checked as in ``sampling.sample``.
    Returns (output_tokens [B, K+1] int64 padded with -1, num_accepted [B] int32 in [0, K]; empty for B = 0).
    No host synchronisation (CUDA-graph safe). Raises ValueError/TypeError naming a bad argument.
    Semantics: Leviathan et al. 2023 speculative sampling / vLLM RejectionSampler; reference
    ``verify_rejection_ref``.
    """
    B, K, V, dev = _check_common(draft_tokens, target_logits)
    temperature, top_k, top_p = _row_params(B, dev, temperature, top_k, top_p)
    check_tensor("uniforms", uniforms, dtype=torch.float32, ndim=2, device=dev)
    if uniforms.shape != (B, K) or uniforms.stride(1) != 1:
        raise ValueError(f"uniforms must be [{B}, {K}] with a contiguous last dim, got {tuple(uniforms.shape)}")
    config = check_config(config)
    if exp_noise is None:
        _check_seeds(seeds, B, dev)
        if (K + 1) * V >= 2**31:
            raise ValueError(f"Philox noise offsets need (K+1)*V < 2^31, got {(K + 1) * V}")
    elif seeds is not None:
        raise ValueError("pass exp_noise or seeds, not both (exp_noise would silently win)")
    else:
        check_tensor("exp_noise", exp_noise, dtype=torch.float32, ndim=3, device=dev)
        if exp_noise.shape != (B, K + 1, V) or exp_noise.stride(2) != 1:
            raise ValueError(f"exp_noise must be [{B}, {K + 1}, {V}] with a contiguous last dim, "
                             f"got {tuple(exp_noise.shape)}")
        seeds = None
    if draft_probs is not None:
        check_tensor("draft_probs", draft_probs, dtype=(torch.float32, torch.bfloat16, torch.float16), ndim=3,
                     device=dev)
        if draft_probs.shape != (B, K, V) or draft_probs.stride(2) != 1:
            raise ValueError(f"draft_probs must be [{B}, {K}, {V}] with a contiguous last dim, "
                             f"got {tuple(draft_probs.shape)}")
    out_tokens, out_num_accepted = _outputs(
        B, K, dev, out_tokens, out_num_accepted, draft_tokens=draft_tokens, draft_probs=draft_probs,
        target_logits=target_logits, temperature=temperature, top_k=top_k, top_p=top_p, uniforms=uniforms,
        exp_noise=exp_noise, seeds=seeds)
    if B == 0:
        return out_tokens, out_num_accepted
    one_hot = draft_probs is None

    splits, pmax, psum, pidx, prace, pridx, thresh = launch_row_stats(
        target_logits, exp_noise, draft_tokens, temperature, top_k, top_p, mode="sample", need_sum=True,
        race_mode=1 if one_hot else 2, config=config, seeds=seeds)
    spl2 = triton.next_power_of_2(splits)
    if not one_hot:
        block, warps, _, split_len = stats_launch_config("sample", B * (K + 1), V, dev, config)  # same plan
        _residual_race_kernel[(B * K, splits)](
            target_logits, exp_noise if exp_noise is not None else target_logits,
            seeds if seeds is not None else pidx, draft_probs, temperature, thresh if thresh is not None else pmax,
            pmax, psum, pidx, prace, pridx,
            V, K, split_len, splits,
            target_logits.stride(0), target_logits.stride(1),
            exp_noise.stride(0) if exp_noise is not None else 0, exp_noise.stride(1) if exp_noise is not None else 0,
            draft_probs.stride(0), draft_probs.stride(1),
            HAS_THRESH=thresh is not None, PHILOX=seeds is not None, SPLITS=spl2, BLOCK=block, num_warps=warps,
        )
    _verify_combine_kernel[(B,)](
        draft_tokens, draft_probs if draft_probs is not None else uniforms, target_logits, temperature,
        thresh if thresh is not None else pmax, uniforms,
        pmax, psum, pidx, prace, pridx, out_tokens, out_num_accepted,
        V, splits,
        draft_tokens.stride(0), draft_probs.stride(0) if draft_probs is not None else 0,
        draft_probs.stride(1) if draft_probs is not None else 0,
        target_logits.stride(0), target_logits.stride(1), uniforms.stride(0), out_tokens.stride(0),
        K=K, GREEDY=False, ONE_HOT=one_hot, HAS_THRESH=thresh is not None, SPLITS=spl2, num_warps=1,
    )
    return out_tokens, out_num_accepted
