"""MLA prefill in Triton: varlen causal flash attention (non-absorbed path) and the latent-cache write.

out[t, h] = Σ_{j ≤ i} softmax_j(q[t, h]·k[s+j, h]·scale) · v[s+j, h]   for token t = s + i of a sequence
starting at s (FlashAttention ``flash_attn_varlen_func`` semantics, causal = top-left).

Design: one program per (query block of BLOCK_M rows, head, sequence); the grid's first axis runs
over ⌈max_seqlen/BLOCK_M⌉ blocks in reverse, so the long causal blocks start first. The q/k head
dim (192 = 128 nope + 64 rope in DeepSeek) is not a power of two, so it is carried as two
power-of-two pieces (128 + 64) — no padded work in the q·kᵀ dot. Key blocks entirely below the
causal diagonal and inside the sequence run unmasked in a software-pipelined loop; the diagonal
and tail blocks are peeled and masked (keys outside the sequence are zeroed before the dots).
Online softmax in base 2 with fp32 statistics; dots in bf16 with fp32 accumulation on the GPU
(fp32 under the Triton interpreter, which cannot multiply bf16).

Tuned configs (``_TUNED``) by head-dim class, measured on the H200 with benchmarks/bench_mla.py.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from tritonseek.kernels._utils import (check_bool, check_index_range, check_int, check_real, check_runnable_device,
                                      check_tensor, interpreter_active, is_int_arg)
from tritonseek.kernels._host import cdiv, next_pow2

# (d_qk class, d_v class) → launch config; "default" for everything else.
_TUNED: dict[str, dict] = {
    # H200 sweep, run 1 (commit ced8f6e, 8192-token causal prompt, 128 heads): 128×128 tiles won.
    # Run 5 (75f123d, loads pipelined): 128×64/3 stages 464 TFLOP/s, 128×128/2 462, TMA 451 / 436.
    # s21 W1 (h6prefill, e3478a4; GPU clock, graph replays, 11 interleaved rounds, A/A tl vs tl 0.2-1.5 %): the Gluon
    # kernel (mla_prefill_ws, 128-key blocks, 2 stages, PIPE) 644 / 567 / 343 / 564 / 567 TFLOP/s at 8192×1 / 8192
    # as 2 / as 8 seqs / 4096×1 / 16384 as 4, vs this tl config 414 / 367 / 228 / 364 / 363 and torch SDPA 587 / 557
    # / 398 / 561 / 546 in the same run; it runs where it takes the operands (sm_90, bf16, causal, 128 ‖ 64 / 128,
    # aligned pieces), the tl config below elsewhere.
    # s22 W1 (h4prefill, tree a6b26f2; same timing, 15 rounds; TFLOP/s [ratio to SDPA]): its persistent variant
    # (PERSIST, mla_prefill_ws_persistent; 128-key blocks, 2 stages) vs the one-program-per-block kernel (A/A of the
    # latter in brackets): 8192 as 8 / 16 / 32 seqs 368.7 [0.98] vs 317.1 (337.4) / 254.6 [1.04] vs 213.7 (216.1) /
    # 143.2 [1.11] vs 124.4 (124.1); 8192×1 622.7 [1.12] vs 606.0 (604.8); 4096×1 568.1 [1.06] vs 531.6 (527.7);
    # 8192 as 2 563.8 [1.08] vs 530.6 (529.3); 16384 as 4 559.6 [1.10] vs 519.8 (528.7): faster in all 7, beyond the
    # A/A in all 7, hence the default. W3 (da394eb, 21 rounds, A/A ≤ 0.8 %; with persist_config's block shapes):
    # 1.03-1.23× the s21 kernel on 10 of 11 cases, 0.97 at 24 × 341 (which persist_config left to it).
    # s23 W1 (h2prefill, tree 5bf20f9; same timing, 21 rounds, A/A of PAIR_MID 1.000-1.003): PAIR_MID (odd query-
    # block counts: two (head, sequence)s' middle blocks in one unit) vs the same persistent kernel without it at
    # 24 × 341 / 13 × 630 / 40 × 300 tokens 165.4 vs 128.0 / 274.8 vs 231.2 / 125.8 vs 121.1 TFLOP/s (SDPA 152.1 /
    # 273.9 / 121.4); 8 × 1024, 4096 × 1, 8192 × 1 (even counts: the same kernel) 0.997-1.003: on by default.
    "192x128": dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3, GLUON=True, WS_BLOCK_N=128, WS_STAGES=2,
                    PIPE=True, PERSIST=True, PAIR_MID=True),
    "default": dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2),
}


def default_config(d_qk: int, d_v: int) -> dict:
    """Launch config for the head dims (tuned entry for DeepSeek's 192/128, else a safe default)."""
    return dict(_TUNED.get(f"{d_qk}x{d_v}", _TUNED["default"]))


@triton.jit
def _prefill_block(
    q1, q2, acc, m_i, l_i, k_base, k2_base, v_base, n0, offs_m, seqlen,
    stride_kt, stride_k2t, stride_vt, d_1, d_2, d_v, sm_scale_log2,
    BLOCK_N: tl.constexpr, BLOCK_D1: tl.constexpr, BLOCK_D2: tl.constexpr, BLOCK_DV: tl.constexpr,
    HAS_D2: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr, EVEN_D: tl.constexpr,
):
    # One key block [n0, n0 + BLOCK_N) of the current sequence: s = q·kᵀ, online softmax, acc += p·v.
    offs_n = n0 + tl.arange(0, BLOCK_N)
    d1 = tl.arange(0, BLOCK_D1)
    dv = tl.arange(0, BLOCK_DV)
    rows = offs_n.to(tl.int64)
    n_ok = offs_n < seqlen
    k1_ptrs = k_base + rows[:, None] * stride_kt + d1[None, :]
    v_ptrs = v_base + rows[:, None] * stride_vt + dv[None, :]
    if EVEN_D:
        # Head dims fill the blocks exactly: no column mask, so the loads vectorize (16 B) and the
        # unmasked loop's loads become cp.async copies the pipeliner can run ahead (a 2-byte-wide
        # masked load cannot be pipelined).
        if MASKED:
            k1 = tl.load(k1_ptrs, mask=n_ok[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
        else:
            k1 = tl.load(k1_ptrs)
            v = tl.load(v_ptrs)
    else:
        if not MASKED:
            n_ok = offs_n >= 0
        k1 = tl.load(k1_ptrs, mask=n_ok[:, None] & (d1 < d_1)[None, :], other=0.0)
        v = tl.load(v_ptrs, mask=n_ok[:, None] & (dv < d_v)[None, :], other=0.0)
    if DOT_FP32:
        k1 = k1.to(tl.float32)
        v = v.to(tl.float32)
    s = tl.dot(q1, tl.trans(k1))
    if HAS_D2:
        d2 = tl.arange(0, BLOCK_D2)
        k2_ptrs = k2_base + rows[:, None] * stride_k2t + d2[None, :]
        if EVEN_D:
            if MASKED:
                k2 = tl.load(k2_ptrs, mask=n_ok[:, None], other=0.0)
            else:
                k2 = tl.load(k2_ptrs)
        else:
            k2 = tl.load(k2_ptrs, mask=n_ok[:, None] & (d2 < d_2)[None, :], other=0.0)
        if DOT_FP32:
            k2 = k2.to(tl.float32)
        s = tl.dot(q2, tl.trans(k2), s)
    s = s * sm_scale_log2
    if MASKED:
        ok = n_ok[None, :]
        if CAUSAL:
            ok = ok & (offs_n[None, :] <= offs_m[:, None])
        s = tl.where(ok, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_safe)
    p = tl.math.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return acc, m_new, l_i


@triton.jit
def _prefill_block_tma(
    q1, q2, acc, m_i, l_i, k1_desc, k2_desc, v_desc, row0, col_k, col_v, n0, offs_m, seqlen, sm_scale_log2,
    BLOCK_N: tl.constexpr, BLOCK_D1: tl.constexpr, HAS_D2: tl.constexpr, MASKED: tl.constexpr,
    CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
):
    # _prefill_block with the key/value tiles fetched by TMA from the [tokens, heads·d] views: rows
    # row0 + n0 … (the sequence's tokens), columns from col_k / col_v (this head's slice). Rows past
    # the sequence belong to the next one (or are zero-filled past the tensor): their scores are
    # masked, and in the masked (tail) steps their value rows are zeroed so non-finite data of
    # other tokens cannot reach acc.
    offs_n = n0 + tl.arange(0, BLOCK_N)
    k1 = k1_desc.load([row0 + n0, col_k])
    v = v_desc.load([row0 + n0, col_v])
    if MASKED:
        v = tl.where((offs_n < seqlen)[:, None], v, 0.0).to(v.dtype)
    if DOT_FP32:
        k1 = k1.to(tl.float32)
        v = v.to(tl.float32)
    s = tl.dot(q1, tl.trans(k1))
    if HAS_D2:
        k2 = k2_desc.load([row0 + n0, col_k + BLOCK_D1])
        if DOT_FP32:
            k2 = k2.to(tl.float32)
        s = tl.dot(q2, tl.trans(k2), s)
    s = s * sm_scale_log2
    if MASKED:
        ok = (offs_n < seqlen)[None, :]
        if CAUSAL:
            ok = ok & (offs_n[None, :] <= offs_m[:, None])
        s = tl.where(ok, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_safe)
    p = tl.math.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return acc, m_new, l_i


@triton.jit(do_not_specialize=["d_qk", "d_1", "d_2", "d_v", "num_m_blocks"])
def _mla_prefill_kernel(
    q_ptr, k_ptr, q2_ptr, k2_ptr, v_ptr, cu_ptr, out_ptr, k1_desc, k2_desc, v_desc,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_q2t, stride_q2h, stride_k2t, stride_k2h,
    stride_vt, stride_vh, stride_ot, stride_oh,
    d_qk, d_1, d_2, d_v, num_m_blocks, sm_scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D1: tl.constexpr, BLOCK_D2: tl.constexpr,
    BLOCK_DV: tl.constexpr, HAS_D2: tl.constexpr, CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
    NUM_STAGES: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, EVEN_D: tl.constexpr, USE_TMA: tl.constexpr,
):
    # q, k [total_tokens, num_heads, ≥ d_1] strides (stride_qt/kt, stride_qh/kh, 1): columns [0, d_1) of q·k
    # q2, k2 [total_tokens, num_heads, ≥ d_2] (stride_q2t/k2t, stride_q2h/k2h, 1): the other d_2 columns
    # (views of q/k at column BLOCK_D1, or separate rope tensors; stride_k2h = 0 shares one k2 row
    # across heads, as MLA's single rope key is); d_qk = d_1 + d_2 (the TMA path's per-head width).
    # v    [total_tokens, num_heads, d_v]  strides (stride_vt, stride_vh, 1)
    # out  [total_tokens, num_heads, d_v]  strides (stride_ot, stride_oh, 1)
    # cu_seqlens [batch + 1] int32; grid (num_m_blocks, num_heads, batch), m blocks in reverse.
    pid_m = num_m_blocks - 1 - tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2)
    start = tl.load(cu_ptr + b)
    seqlen = tl.load(cu_ptr + b + 1) - start
    m0 = pid_m * BLOCK_M
    if m0 < seqlen:
        offs_m = m0 + tl.arange(0, BLOCK_M)
        m_ok = offs_m < seqlen
        tok = start.to(tl.int64) + offs_m
        d1 = tl.arange(0, BLOCK_D1)
        q_rows = q_ptr + tok * stride_qt + h * stride_qh
        q1 = tl.load(q_rows[:, None] + d1[None, :], mask=m_ok[:, None] & (d1 < d_1)[None, :], other=0.0)
        if HAS_D2:
            d2 = tl.arange(0, BLOCK_D2)
            q2_rows = q2_ptr + tok * stride_q2t + h * stride_q2h
            q2 = tl.load(q2_rows[:, None] + d2[None, :], mask=m_ok[:, None] & (d2 < d_2)[None, :], other=0.0)
        else:
            q2 = q1
        if DOT_FP32:
            q1 = q1.to(tl.float32)
            q2 = q2.to(tl.float32)
        k_base = k_ptr + start.to(tl.int64) * stride_kt + h * stride_kh
        k2_base = k2_ptr + start.to(tl.int64) * stride_k2t + h * stride_k2h
        v_base = v_ptr + start.to(tl.int64) * stride_vt + h * stride_vh
        if CAUSAL:
            hi = tl.minimum(seqlen, m0 + BLOCK_M)
            fast_hi = tl.minimum(m0, seqlen) // BLOCK_N * BLOCK_N
        else:
            hi = seqlen
            fast_hi = seqlen // BLOCK_N * BLOCK_N
        acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        if USE_TMA:
            # q/k/v are [tokens, heads, d] contiguous: tiles come from the [tokens, heads·d] views.
            col_k = (h * d_qk).to(tl.int32)
            col_v = (h * d_v).to(tl.int32)
            for n0 in tl.range(0, fast_hi, BLOCK_N, num_stages=NUM_STAGES, warp_specialize=WARP_SPECIALIZE):
                acc, m_i, l_i = _prefill_block_tma(
                    q1, q2, acc, m_i, l_i, k1_desc, k2_desc, v_desc, start, col_k, col_v, n0, offs_m, seqlen,
                    sm_scale_log2, BLOCK_N, BLOCK_D1, HAS_D2, False, CAUSAL, DOT_FP32)
            for n0 in tl.range(fast_hi, hi, BLOCK_N, num_stages=1):
                acc, m_i, l_i = _prefill_block_tma(
                    q1, q2, acc, m_i, l_i, k1_desc, k2_desc, v_desc, start, col_k, col_v, n0, offs_m, seqlen,
                    sm_scale_log2, BLOCK_N, BLOCK_D1, HAS_D2, True, CAUSAL, DOT_FP32)
        else:
            for n0 in tl.range(0, fast_hi, BLOCK_N, num_stages=NUM_STAGES, warp_specialize=WARP_SPECIALIZE):
                acc, m_i, l_i = _prefill_block(
                    q1, q2, acc, m_i, l_i, k_base, k2_base, v_base, n0, offs_m, seqlen, stride_kt, stride_k2t,
                    stride_vt, d_1, d_2, d_v,
                    sm_scale_log2, BLOCK_N, BLOCK_D1, BLOCK_D2, BLOCK_DV, HAS_D2, False, CAUSAL, DOT_FP32, EVEN_D)
            for n0 in tl.range(fast_hi, hi, BLOCK_N, num_stages=1):
                acc, m_i, l_i = _prefill_block(
                    q1, q2, acc, m_i, l_i, k_base, k2_base, v_base, n0, offs_m, seqlen, stride_kt, stride_k2t,
                    stride_vt, d_1, d_2, d_v,
                    sm_scale_log2, BLOCK_N, BLOCK_D1, BLOCK_D2, BLOCK_DV, HAS_D2, True, CAUSAL, DOT_FP32, EVEN_D)
        inv_l = tl.where(l_i > 0.0, 1.0 / tl.where(l_i > 0.0, l_i, 1.0), 0.0)
        dv = tl.arange(0, BLOCK_DV)
        o_rows = out_ptr + tok * stride_ot + h * stride_oh
        tl.store(o_rows[:, None] + dv[None, :], (acc * inv_l[:, None]).to(out_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & (dv < d_v)[None, :])


@triton.jit
def _write_latent_cache_kernel(
    kv_ptr, latent_ptr, slot_ptr, num_tokens, d, stride_kvb, stride_kvt, stride_lt,
    PAGE_SIZE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # kv_cache [num_blocks, PAGE_SIZE, 1, d] strides (stride_kvb, stride_kvt, -, 1)
    # latent [T, d] (stride_lt, 1); slot_mapping [T] int64, slot = block·PAGE_SIZE + offset, −1 = skip.
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_ok = t < num_tokens
    slot = tl.load(slot_ptr + t, mask=t_ok, other=-1).to(tl.int64)
    keep = t_ok & (slot >= 0)
    slot = tl.where(keep, slot, 0)
    dst = (slot // PAGE_SIZE) * stride_kvb + (slot % PAGE_SIZE) * stride_kvt
    for d0 in range(0, d, BLOCK_D):
        c = d0 + tl.arange(0, BLOCK_D)
        m = keep[:, None] & (c < d)[None, :]
        x = tl.load(latent_ptr + t.to(tl.int64)[:, None] * stride_lt + c[None, :], mask=m, other=0.0)
        tl.store(kv_ptr + dst[:, None] + c[None, :], x, mask=m)


_ATTN_DTYPES = (torch.bfloat16, torch.float16)


def _check_cu_seqlens(cu_seqlens: torch.Tensor, total: int, max_seqlen: int) -> None:
    """Offsets must start at 0, never decrease, stay within the tokens and within max_seqlen per sequence.
    On a GPU this reads cu_seqlens back (a host sync): mla_prefill does it only with check_ids."""
    cu = cu_seqlens.tolist()
    lens = [b - a for a, b in zip(cu, cu[1:])]
    if cu[0] != 0:
        raise ValueError(f"cu_seqlens[0] = {cu[0]}: the offsets must start at 0")
    for i, n in enumerate(lens):
        if n < 0:
            raise ValueError(f"cu_seqlens[{i + 1}] = {cu[i + 1]} < cu_seqlens[{i}] = {cu[i]}: offsets must never decrease")
    if cu[-1] > total:
        raise ValueError(f"cu_seqlens[{len(cu) - 1}] = {cu[-1]} is past the {total} tokens of q/k/v")
    if max(lens) > max_seqlen:
        raise ValueError(f"max_seqlen {max_seqlen} is below the longest sequence in cu_seqlens ({max(lens)})")


# Keys of the Gluon kernel (mla_prefill_ws, sm_90): GLUON selects it where it takes the operands; the others tune it.
_WS_KEYS = {"GLUON", "WS_BLOCK_N", "WS_STAGES", "PIPE", "CONSUMER_REGS", "PRODUCER_REGS", "PERSIST", "DIAG64",
            "PAIR_MID"}


# The persistent kernel's block shape by the longest sequence: the first (bound, overrides) with max_seqlen ≤ bound
# applies over the default config (a caller's WS_BLOCK_N / WS_STAGES / DIAG64 / PERSIST / PAIR_MID win). s22 left
# 257-384 tokens (3 query blocks: the persistent schedule's odd-count imbalance, see mla_prefill_ws_persistent) to the
# one-program-per-block kernel (W3 24 × 341 tokens 820 µs vs 846 with DIAG64); s23 W1 (tree 5bf20f9, A/A ≤ 0.3 %):
# with PAIR_MID (the default config's) the persistent kernel with DIAG64 runs 24 × 341 / 40 × 300 at 169.1 / 126.0
# TFLOP/s vs that kernel's 138.2 / 123.9 (PAIR_MID with 128-key blocks 165.4 / 125.8, 64-key 166.4 / 125.6; 64-key
# blocks without PAIR_MID 136.2 / 128.9): 257-512 tokens run DIAG64. W2 (tree 28d0632, A/A of this default 0.999-
# 1.010): the default vs s22's at 24 × 341 / 40 × 300 / 30 × 270 / 22 × 372 / 13 × 630 / 9 × 896 / 1 × 8000 / 8 ×
# 1024 tokens 1.237 / 1.023 / 1.021 / 1.222 / 1.181 / 1.127 / 1.019 / 1.008 (168.3 / 125.9 / 102.8 / 196.1 / 274.1
# / 336.8 / 599.0 / 361.5 TFLOP/s, SDPA 1.10 / 1.03 / 1.03 / 1.10 / 0.99 / 0.97 / 1.13 / 0.97). Not taken (one
# shape each): 64-key blocks 1.024 faster at 22 × 372 (not at 341 / 300 / 270), DIAG64 at 13 × 630 1.013 (W1 1.014).
# s22 W2 (h4prefill, tree 041b4a1; GPU clock, graph replays, 21 interleaved rounds; time of the 128-key default ÷
# time of the variant, A/A 0.998-1.013): DIAG64 at 16 × 512 / 32 × 256 / 8 × 1024 / 4 × 2048 tokens 1.026 / 1.014 /
# 0.980 / 0.979, 64-key blocks (3 stages) 0.999 / 1.025 / 0.951 / 0.908 (W1: 1.01 / 1.02 at 512 / 256).
# W3 (tree da394eb, same timing, A/A 0.997-1.005 at ≤ 1024 tokens per sequence): this rule vs 128-key blocks at
# 64 × 128 / 32 × 256 / 24 × 341 / 16 × 512 / 13 × 630 / 8 × 1024 tokens 1.058 / 1.020 / 1.039 / 1.026 / 0.998 /
# 0.999 (≥ 630: the same kernel); DIAG64 was 1.028 faster than 64-key blocks at 128, 64-key blocks 1.020 faster than
# DIAG64 at 341 (one run each: left as is).
_PERSIST_BY_LENGTH: tuple = ((256, dict(WS_BLOCK_N=64, WS_STAGES=3)), (512, dict(DIAG64=True)))
_PERSIST_SHAPE_KEYS = {"WS_BLOCK_N", "WS_STAGES", "DIAG64", "PERSIST", "PAIR_MID"}


def persist_config(cfg: dict, config: dict | None, max_seqlen: int) -> dict:
    """The Gluon kernel's config for this call: ``cfg`` (resolved, PERSIST on) with ``_PERSIST_BY_LENGTH``'s overrides
    for max_seqlen (PERSIST=False among them: the one-program-per-block kernel) unless the caller's ``config`` sets any
    of WS_BLOCK_N / WS_STAGES / DIAG64 / PERSIST / PAIR_MID."""
    if config and _PERSIST_SHAPE_KEYS & set(config):
        return cfg
    for bound, over in _PERSIST_BY_LENGTH:
        if max_seqlen <= bound:
            return dict(cfg, **over)
    return cfg


def _resolve_config(config: dict | None, d_qk: int, d_v: int) -> dict:
    """The tuned/default launch config, with the keys of ``config`` (if given) overriding it, validated: ints (numpy
    integers too, stored as ints) for the sizes, bools (numpy bools too) for USE_TMA / WARP_SPECIALIZE; a bool is no
    size (num_stages=True was taken as 1) — ValueError naming the key, as ``_utils.check_config``."""
    cfg = default_config(d_qk, d_v)
    if config is None:
        return cfg
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict of launch settings, got {type(config).__name__}")
    unknown = set(config) - {"BLOCK_M", "BLOCK_N", "num_warps", "num_stages", "USE_TMA", "WARP_SPECIALIZE"} - _WS_KEYS
    if unknown:
        raise ValueError(f"config has unknown keys {sorted(unknown)}")
    cfg.update({key: v.item() if isinstance(v, np.generic) else v for key, v in config.items()})
    for key in ("BLOCK_M", "BLOCK_N"):
        v = cfg[key]
        if not is_int_arg(v) or v < 16 or v & (v - 1):
            raise ValueError(f"config {key} must be a power of two ≥ 16, got {v!r}")
    for key in ("num_warps", "num_stages"):
        if not is_int_arg(cfg[key]) or cfg[key] < 1:
            raise ValueError(f"config {key} must be a positive int, got {cfg[key]!r}")
    for key in ("USE_TMA", "WARP_SPECIALIZE", "GLUON", "PIPE", "PERSIST", "DIAG64", "PAIR_MID"):
        if not isinstance(cfg.get(key, False), bool):
            raise ValueError(f"config {key} must be a bool, got {cfg[key]!r}")
    for key in ("WS_BLOCK_N", "WS_STAGES", "CONSUMER_REGS", "PRODUCER_REGS"):
        if key in cfg and (not is_int_arg(cfg[key]) or cfg[key] < 1):
            raise ValueError(f"config {key} must be a positive int, got {cfg[key]!r}")
    return cfg


def _check_rope_parts(q: torch.Tensor, q_pe: torch.Tensor | None, k_pe: torch.Tensor | None) -> bool:
    """Validate mla_prefill's separate rope parts; True when they are given."""
    if q_pe is None and k_pe is None:
        return False
    if q_pe is None or k_pe is None:
        raise ValueError("give both q_pe and k_pe (the rope parts of q and k) or neither")
    total, num_heads, d_nope = q.shape
    check_tensor("q_pe", q_pe, dtype=q.dtype, ndim=3, device=q.device)
    check_tensor("k_pe", k_pe, dtype=q.dtype, device=q.device)
    d_rope = q_pe.shape[2]
    if tuple(q_pe.shape[:2]) != (total, num_heads):
        raise ValueError(f"q_pe must be [{total}, {num_heads}, d_rope], got {tuple(q_pe.shape)}")
    if tuple(k_pe.shape) not in ((total, d_rope), (total, num_heads, d_rope)):
        raise ValueError(f"k_pe must be [{total}, {d_rope}] or [{total}, {num_heads}, {d_rope}], got {tuple(k_pe.shape)}")
    for name, d in (("q/k (nope part)", d_nope), ("q_pe/k_pe (rope part)", d_rope)):
        if d < 16 or d & (d - 1):
            raise ValueError(f"with separate rope parts the {name} width must be a power of two ≥ 16, got {d}")
    if q_pe.stride(-1) != 1 or k_pe.stride(-1) != 1:
        raise ValueError(f"q_pe and k_pe need a contiguous last dim, strides {q_pe.stride()} {k_pe.stride()}")
    return True


def mla_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    softmax_scale: float,
    causal: bool = True,
    out: torch.Tensor | None = None,
    config: dict | None = None,
    *,
    q_pe: torch.Tensor | None = None,
    k_pe: torch.Tensor | None = None,
    check_ids: bool = True,
) -> torch.Tensor:
    """Varlen attention per sequence: out = softmax(q·kᵀ·scale [+ causal mask])·v.

    q, k: [total_tokens, num_heads, d_qk] bf16/fp16 (d_qk 192 = qk_nope_head_dim 128 ‖ qk_rope_head_dim 64
    in DeepSeek); v: [total_tokens, num_heads, d_v] (128); last dims contiguous, other strides free
    (views of the kv_b projection's output work as they are).
    q_pe, k_pe (both or neither): the rope parts kept apart, so the caller needs no concatenation:
    then q, k are the nope parts [total_tokens, num_heads, d_nope], q_pe is [total_tokens, num_heads,
    d_rope] and k_pe is [total_tokens, d_rope] (MLA's one rope key per token, shared by every head) or
    [total_tokens, num_heads, d_rope]; q·kᵀ means q_nope·k_nopeᵀ + q_pe·k_peᵀ; d_nope and d_rope must be
    powers of two ≥ 16 (128 and 64 in DeepSeek); last dims contiguous.
    cu_seqlens: [batch+1] int32 contiguous prefix sums of the sequence lengths (cu_seqlens[0] = 0). max_seqlen:
    host int ≥ the longest sequence (sizes the grid). check_ids (default True): the offsets (start at 0, never
    decrease, end ≤ total_tokens) and max_seqlen are checked against cu_seqlens — free on the CPU, one
    device→host read on CUDA (skipped while a CUDA graph is being captured); with check_ids=False on CUDA (the
    model: the engine builds cu_seqlens) bad offsets read and write out of bounds. softmax_scale: multiplies
    q·kᵀ.
    causal: top-left mask within each sequence (q and k are the same tokens). out: optional
    [total_tokens, num_heads, d_v] q.dtype buffer (it must not alias the inputs: not checked, an overlapping
    destination may give wrong results). config: launch-config override (tuning): any of BLOCK_M,
    BLOCK_N (powers of two ≥ 16), num_warps, num_stages, USE_TMA, WARP_SPECIALIZE over the default; GLUON=True
    (the default for DeepSeek's 192/128 dims) runs the Gluon kernel (``mla_prefill_ws``: sm_90, bf16, causal,
    nope 128 + rope 64, v 128, TMA-aligned pieces, scale > 0; the tl kernel otherwise, GLUON=False forces it) with its knobs WS_BLOCK_N (64 / 128), WS_STAGES, PIPE, CONSUMER_REGS, PRODUCER_REGS; with
    PERSIST=True (the default for 192/128 since s22; PERSIST=False: one program per query block) its persistent
    variant (``mla_prefill_ws_persistent``: one program per SM; knobs DIAG64, PAIR_MID there; without the caller's block
    knobs the kernel and block shape follow max_seqlen, ``persist_config``).
    Returns out [total_tokens, num_heads, d_v] q.dtype; tokens of no sequence are left untouched.
    Scalars: max_seqlen an int (numpy integers too), softmax_scale an int/float (numpy too), causal / check_ids bools
    (numpy bools too); a bool for max_seqlen or softmax_scale, a tensor (0-d too) or 1 for a bool is a TypeError.
    Raises TypeError (dtype, config not a dict, a scalar of another type: each named) or ValueError
    (shape, device, layout incl. a non-contiguous cu_seqlens, max_seqlen < 0, softmax_scale not finite, only one of q_pe/k_pe, bad config, and with check_ids or on the
    CPU cu_seqlens offsets that are out of order or past the tokens, or a max_seqlen below the longest).
    Semantics: FlashAttention ``flash_attn_varlen_func``.
    """
    check_tensor("q", q, dtype=_ATTN_DTYPES, ndim=3)
    check_runnable_device("q", q)
    dev = q.device
    check_tensor("k", k, dtype=q.dtype, ndim=3, device=dev)
    check_tensor("v", v, dtype=q.dtype, ndim=3, device=dev)
    check_tensor("cu_seqlens", cu_seqlens, dtype=torch.int32, ndim=1, device=dev, contiguous=True)
    total, num_heads, d_1 = q.shape
    if tuple(k.shape) != tuple(q.shape):
        raise ValueError(f"k must have q's shape {tuple(q.shape)}, got {tuple(k.shape)}")
    split = _check_rope_parts(q, q_pe, k_pe)
    if v.shape[0] != total or v.shape[1] != num_heads:
        raise ValueError(f"v must be [{total}, {num_heads}, d_v], got {tuple(v.shape)}")
    d_v = v.shape[2]
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError(f"q, k, v need a contiguous last dim, strides {q.stride()} {k.stride()} {v.stride()}")
    if cu_seqlens.numel() < 1:
        raise ValueError("cu_seqlens must hold batch+1 ≥ 1 offsets")
    check_ids = check_bool("check_ids", check_ids)
    causal = check_bool("causal", causal)
    softmax_scale = check_real("softmax_scale", softmax_scale)
    max_seqlen = check_int("max_seqlen", max_seqlen, 0)
    if out is None:
        out = torch.empty(total, num_heads, d_v, dtype=q.dtype, device=dev)
    else:
        check_tensor("out", out, dtype=q.dtype, ndim=3, device=dev, output=True)
        if tuple(out.shape) != (total, num_heads, d_v) or out.stride(-1) != 1:
            raise ValueError(f"out must be [{total}, {num_heads}, {d_v}] with a contiguous last dim, "
                             f"got {tuple(out.shape)} strides {out.stride()}")
    batch = cu_seqlens.numel() - 1
    capturing = cu_seqlens.is_cuda and torch.cuda.is_current_stream_capturing()  # no sync possible there
    if batch > 0 and (cu_seqlens.device.type == "cpu" or (check_ids and not capturing)):
        _check_cu_seqlens(cu_seqlens, total, max_seqlen)
    if batch == 0 or max_seqlen == 0 or total == 0:
        return out
    if split:
        d_2 = q_pe.shape[2]
        d_qk, block_d1, block_d2, has_d2 = d_1 + d_2, d_1, d_2, True
        q2, k2 = q_pe, k_pe
        stride_k2h = 0 if k_pe.dim() == 2 else k_pe.stride(1)
    else:
        d_qk = d_1
        block_d1 = max(16, 1 << (d_qk.bit_length() - 1))  # largest power of two ≤ d_qk (192 → 128)
        d_1, d_2 = min(d_qk, block_d1), max(0, d_qk - block_d1)
        has_d2 = d_2 > 0
        block_d2 = max(16, next_pow2(d_2)) if has_d2 else 16
        # the second column piece as views at column BLOCK_D1 (an empty view when there is none)
        q2, k2 = q[..., block_d1:], k[..., block_d1:]
        stride_k2h = k2.stride(1)
    cfg = _resolve_config(config, d_qk, d_v)
    if cfg.get("GLUON", False) and causal and d_1 == 128 and d_2 == 64 and not interpreter_active():
        # the Gluon TMA/wgmma kernel (sm_90 only) where it takes the operands; the tl kernel below otherwise
        from tritonseek.kernels import mla_prefill_ws as _ws

        p1, p2, r1, r2 = (q, q_pe, k, k_pe) if split else (q[..., :128], q[..., 128:], k[..., :128], k[..., 128:])
        if _ws.ws_supported(p1, p2, r1, r2, v, out, float(softmax_scale)):
            if cfg.get("PERSIST", False):
                cfg = persist_config(cfg, config, max_seqlen)
            if cfg.get("PERSIST", False):  # one program per SM walking the work items (mla_prefill_ws_persistent)
                from tritonseek.kernels.mla_prefill_ws_persistent import launch_prefill_ws_persistent

                return launch_prefill_ws_persistent(p1, p2, r1, r2, v, cu_seqlens, out, max_seqlen,
                                                    float(softmax_scale), causal, cfg)
            return _ws.launch_prefill_ws(p1, p2, r1, r2, v, cu_seqlens, out, max_seqlen, float(softmax_scale),
                                         causal, cfg)
    block_dv = max(16, next_pow2(d_v))
    num_m = cdiv(max_seqlen, cfg["BLOCK_M"])
    even_d = (block_d1 + (block_d2 if has_d2 else 0) == d_qk) and block_dv == d_v
    use_tma = (
        cfg.get("USE_TMA", False) and even_d and not split and k.is_contiguous() and v.is_contiguous()
        and all(t.data_ptr() % 16 == 0 for t in (k, v)) and (d_qk * k.element_size()) % 16 == 0
        and (d_v * v.element_size()) % 16 == 0 and total * num_heads < 2**31
    )
    if use_tma:
        k2d, v2d = k.view(total, num_heads * d_qk), v.view(total, num_heads * d_v)
        k1_desc = TensorDescriptor(k2d, list(k2d.shape), [num_heads * d_qk, 1], [cfg["BLOCK_N"], block_d1])
        k2_desc = TensorDescriptor(k2d, list(k2d.shape), [num_heads * d_qk, 1], [cfg["BLOCK_N"], block_d2])
        v_desc = TensorDescriptor(v2d, list(v2d.shape), [num_heads * d_v, 1], [cfg["BLOCK_N"], block_dv])
    else:
        k1_desc = k2_desc = v_desc = None
    _mla_prefill_kernel[(num_m, num_heads, batch)](
        q, k, q2, k2, v, cu_seqlens, out, k1_desc, k2_desc, v_desc,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), q2.stride(0), q2.stride(1), k2.stride(0), stride_k2h,
        v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        d_qk, d_1, d_2, d_v, num_m, float(softmax_scale) * 1.4426950408889634,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_D1=block_d1, BLOCK_D2=block_d2, BLOCK_DV=block_dv,
        HAS_D2=has_d2, CAUSAL=bool(causal), DOT_FP32=interpreter_active(), NUM_STAGES=cfg["num_stages"],
        WARP_SPECIALIZE=bool(cfg.get("WARP_SPECIALIZE", False)) and not interpreter_active(),
        EVEN_D=even_d, USE_TMA=use_tma, num_warps=cfg["num_warps"],
    )
    return out


def write_latent_cache(kv_cache: torch.Tensor, latent: torch.Tensor, slot_mapping: torch.Tensor, *,
                       check_ids: bool = True) -> None:
    """kv_cache.view(-1, d)[slot_mapping[t]] = latent[t], in place; slot −1 is skipped.

    kv_cache: [num_blocks, page_size, 1, d] (bf16 in DeepSeek, d = kv_lora_rank 512 ‖ qk_rope_head_dim 64),
    page_size a power of two, last dim contiguous. latent: [T, d] float dtype (normed compressed kv ‖
    roped k_pe), cast to kv_cache.dtype by torch first when it differs, last dim contiguous. slot_mapping: [T] int64,
    slot = block_id·page_size + offset (vLLM convention); slots must be < num_blocks·page_size or negative (skip).
    check_ids (default True): check the slots with one device→host read (a sync; skipped while a CUDA graph is
    being captured); with check_ids=False (the model: the engine builds the slots) an out-of-range slot writes out
    of bounds, undefined behaviour. Returns None (writes kv_cache).
    Raises TypeError (dtype: kv_cache and latent bf16/fp16/fp32, slot_mapping int64; check_ids not a bool) or
    ValueError (shape, device, layout incl. a non-contiguous slot_mapping or a kv_cache whose elements share memory,
    e.g. an expand() view; with check_ids a slot out of range).
    Semantics: vLLM ``concat_and_cache_mla`` (without the fp8 scale).
    """
    # written in place: an expand()-ed cache (rows sharing memory) would take racing stores (tester 2, s19)
    check_tensor("kv_cache", kv_cache, dtype=(torch.bfloat16, torch.float16, torch.float32), ndim=4, output=True)
    check_runnable_device("kv_cache", kv_cache)
    dev = kv_cache.device
    check_tensor("latent", latent, dtype=(torch.bfloat16, torch.float16, torch.float32), ndim=2, device=dev)
    check_tensor("slot_mapping", slot_mapping, dtype=torch.int64, ndim=1, device=dev, contiguous=True)
    num_blocks, page_size, one, d = kv_cache.shape
    if one != 1 or latent.shape[1] != d:
        raise ValueError(f"kv_cache [num_blocks, page_size, 1, d] and latent [T, d] disagree: "
                         f"{tuple(kv_cache.shape)} vs {tuple(latent.shape)}")
    if slot_mapping.shape[0] != latent.shape[0]:
        raise ValueError(f"slot_mapping has {slot_mapping.shape[0]} entries, latent {latent.shape[0]} rows")
    if page_size < 1 or page_size & (page_size - 1):
        raise ValueError(f"kv_cache page_size must be a power of two, got {page_size}")
    if kv_cache.stride(-1) != 1 or latent.stride(-1) != 1:
        raise ValueError(f"kv_cache and latent need a contiguous last dim, strides {kv_cache.stride()} {latent.stride()}")
    if check_bool("check_ids", check_ids):
        check_index_range("slot_mapping", slot_mapping, 0, num_blocks * page_size, skip_negative=True)
    num_tokens = latent.shape[0]
    if num_tokens == 0:
        return
    if latent.dtype != kv_cache.dtype:
        latent = latent.to(kv_cache.dtype)  # torch's round-to-nearest cast (the model passes kv_cache.dtype)
    block_t = 16
    block_d = min(256, max(16, next_pow2(d)))
    _write_latent_cache_kernel[(cdiv(num_tokens, block_t),)](
        kv_cache, latent, slot_mapping, num_tokens, d, kv_cache.stride(0), kv_cache.stride(1), latent.stride(0),
        PAGE_SIZE=page_size, BLOCK_T=block_t, BLOCK_D=block_d, num_warps=4,
    )
