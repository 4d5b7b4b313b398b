"""Triton exact top-k / top-p threshold by radix select: the fallback of ``kernels.sampling_filter``.

One program per row streams the row 8 times (one pass per 4-bit digit of the order-preserving fp32 key,
most significant first) and keeps the largest key whose count (top-k) or softmax mass (top-p) of the
elements at or above it reaches the target. Exact for any row, but slow (~2.8 ms per 4,096-candidate row
at V = 129280 on the H200): ``launch_thresholds`` runs it only on the rows its split fast path flags.
Also home of the order-preserving key helpers that the fast path shares.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
THRESH_CONFIG = (1024, 8)  # (BLOCK, num_warps) of the radix-select kernel (121 regs, no spills)
_INTERP_BLOCK = 64


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
    # need        [B * NJ] int32: only rows with 1 are computed (the others' thresh is already written)
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
        p_on = p_on & (top_p < 1.0)  # NaN: off
        top_p = tl.where(top_p > 0, top_p, 1e-30)  # <= 0 keeps the top token(s), as the reference
    else:
        p_on = False
    k_on = k_on & (tl.load(need_ptr + row) == 1)
    p_on = p_on & (tl.load(need_ptr + row) == 1)
    thr = tl.full([], float("-inf"), tl.float32)
    if k_on | p_on:
        t = tl.where(temp > 0, tl.minimum(temp, 1e30), 1.0)  # T > 1e30 (+inf too) acts as 1e30 (sampling.py)
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
def _float_key(x):
    # order-preserving fp32 -> uint32 key (negative floats: all bits flipped; others: sign bit set)
    bits = x.to(tl.uint32, bitcast=True)
    return tl.where((bits >> 31) == 1, bits ^ 0xFFFFFFFF, bits | 0x80000000)


# --------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------
def launch_radix_thresholds(logits3: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None,
                            top_p: torch.Tensor | None, thresh: torch.Tensor, need: torch.Tensor) -> None:
    """Write thresh[r] (keep s = x / T iff s >= thresh[r]) for every row r of logits3 [B, NJ, V] with need[r] == 1.

    logits3: [B, NJ, V] fp32/bf16/fp16, last stride 1 (row r = b * NJ + j). temperature: [B] fp32 (rows with
    T <= 0 or NaN filter nothing). top_k: [B] int32 (<= 0 or >= V: off) or None. top_p: [B] fp32 (>= 1 or
    NaN: off; <= 0 keeps the top token(s)) or None; at least one of them given. thresh: [B * NJ] fp32,
    written in place on the flagged rows only. need: [B * NJ] int32. Inputs are validated by the callers.
    Semantics: vLLM ``apply_top_k_top_p``; reference ``apply_top_k_top_p_ref``.
    """
    B, NJ, V = logits3.shape
    block, warps = (_INTERP_BLOCK, 4) if logits3.device.type != "cuda" else THRESH_CONFIG
    _topk_topp_threshold_kernel[(B * NJ,)](
        logits3, temperature, top_k if top_k is not None else temperature,
        top_p if top_p is not None else temperature, thresh, need, V, NJ, logits3.stride(0), logits3.stride(1),
        HAS_TOP_K=top_k is not None, HAS_TOP_P=top_p is not None, BLOCK=block, num_warps=warps,
    )
