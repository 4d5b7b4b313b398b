"""MLA prefill attention on Hopper in Gluon: a TMA producer warp and two wgmma consumer warpgroups (FA3-style).

out[t, h] = Σ_{j ≤ i} softmax_j(q[t, h]·k[s+j, h]·scale) · v[s+j, h]   for token t = s + i of a sequence
starting at s (FlashAttention ``flash_attn_varlen_func`` semantics, causal = top-left), the same operation as
``mla_prefill``'s ``tl`` kernel; ``mla_prefill`` runs this kernel for a config with ``GLUON=True`` on an sm_90
GPU when the operands fit (``ws_supported``), and the ``tl`` kernel otherwise.

Why a second kernel: the ``tl`` kernel (one program per 128 query rows × head × sequence, 8 warps) reaches
~450 TFLOP/s at 8k tokens on the H200 while torch's SDPA reaches ~650 in the same run; ``tl`` gives no control
over which warps load, which compute, and when the next block's scores are issued. Design:

* one program per (128 query rows, head, sequence), query blocks in reverse so the long causal rows start first
  (as the tl kernel);
* **one TMA producer warp** loads the program's query rows once (two 64-row boxes, nope 128 + rope 64 columns)
  and walks the key blocks into a NUM_STAGES ring of (k_nope [BLOCK_N, 128], k_rope [BLOCK_N, 64],
  v [BLOCK_N, 128]) tiles guarded by ready (TMA transaction bytes) / empty (one arrival per consumer) mbarriers;
* **two consumer warpgroups**, 64 query rows each (the wgmma M), each with its own query tile in shared memory:
  S = Q_nope·K_nopeᵀ + Q_rope·K_ropeᵀ by two wgmmas (B = the key tile, transposed view), online softmax in base 2
  in registers, O += P·V by wgmma with P from registers (bf16) and V from shared memory. The two warpgroups run
  unsynchronised (one's softmax overlaps the other's tensor-core work);
* **PIPE** (FA3's intra-warpgroup overlap): block j's scores are issued before block j−1's P·V, and block j's
  softmax runs while that P·V is in flight;
* causal: blocks entirely at or below a warpgroup's first row run unmasked; the diagonal and the sequence's
  tail are masked to −inf (a warpgroup skips the blocks only the other one needs, still releasing them);
* value rows past the sequence (another sequence's tokens, or rows past the tensor, which TMA zero-fills) are
  zeroed in shared memory before P·V, so non-finite data there cannot reach the output (0·NaN = NaN).

Operands are read through 2-D TMA descriptors over [tokens, (heads − 1)·head_stride + width] of each piece (q
nope/rope, k nope/rope, v), so strided views of the projections work (k_pe [tokens, 64] shared by every head:
head stride 0). Requirements (``ws_supported``): bf16, nope 128 + rope 64 q/k columns, v 128, 16-byte aligned
bases and token/head strides, softmax_scale > 0; ``mla_prefill`` uses it for causal calls only (the non-causal
build compiles but was not checked on the H200).

H200 s21 W1 (e3478a4, 128 heads, equal lengths; GPU clock, CUDA-graph replays, 11 interleaved rounds; TFLOP/s):
8192×1 / 8192 as 2 / 8192 as 8 / 4096×1 / 16384 as 4 seqs: this kernel (128-key blocks, 2 stages, PIPE) 644 / 567 /
343 / 564 / 567; 128-key blocks without PIPE 556 / 497 / 324 / 496 / 497; 64-key blocks, 3 stages, PIPE 545 / 499 /
337 / 499 / 492, without 472 / 442 / 318 / 440 / 434; the tl kernel 414 / 367 / 228 / 364 / 363 (A/A 408 / 368 / 231
/ 365 / 360); torch SDPA 587 / 557 / 398 / 561 / 546. Short sequences (8 × 1024) still lose to SDPA: each program is
a few key blocks and its prologue (query TMA, first tiles) is not overlapped with the previous program on the SM (one
213 KB program per SM) — s22: the persistent variant (``mla_prefill_ws_persistent``, config PERSIST, the default
since) prefetches the next item's query and first tiles.
Gluon compiles only for CUDA sm_90: there is no interpreter path.
"""

from __future__ import annotations

import numpy as np
import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from tritonseek.kernels._host import cdiv, nvmma_layout
from tritonseek.kernels.mla_decode_ws_parts import _zero_tail

_D_NOPE, _D_ROPE, _D_V, _ROWS = 128, 64, 128, 64  # host ints of the constexprs below
D_NOPE = gl.constexpr(_D_NOPE)
D_ROPE = gl.constexpr(_D_ROPE)
D_V = gl.constexpr(_D_V)
ROWS = gl.constexpr(_ROWS)  # query rows per consumer warpgroup (the wgmma M); a program holds two: 128 rows
BLOCK_M = gl.constexpr(2 * _ROWS)

# Launch knobs (config keys of mla_prefill with GLUON=True): WS_BLOCK_N (keys per ring stage), WS_STAGES (ring
# depth), PIPE (intra-warpgroup overlap), CONSUMER_REGS / PRODUCER_REGS (setmaxnreg budgets). s21 W1: 128 / 2 / PIPE
# fastest of the four builds timed (module docstring); 128-key blocks fit 2 stages (213 KB of shared memory).
DEFAULT_WS = dict(WS_BLOCK_N=128, WS_STAGES=2, PIPE=True, CONSUMER_REGS=240, PRODUCER_REGS=24)
_MAXNREG = 168  # registers per thread at entry: 12 warps (2 consumer warpgroups + the producer's warpgroup)


@gluon.constexpr_function
def _mma_layout(n):
    # the register layout of a 64 × n wgmma accumulator of one warpgroup (scores: n = BLOCK_N; output: n = D_V)
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, n, 16])


@gluon.constexpr_function
def _p_layout(o_layout):
    # P as the register A operand of the P·V wgmma whose accumulator has layout o_layout
    return gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)


@gluon.jit
def _wg_state(BLOCK_N: gl.constexpr, s_layout: gl.constexpr, o_layout: gl.constexpr):
    # a warpgroup's start of a query block: the zero score accumulator (the first score wgmma's C, not used: it
    # overwrites), the output accumulator, running row max (base 2) and row sum
    row_l: gl.constexpr = gl.SliceLayout(1, s_layout)
    s_zero = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    acc = gl.zeros([ROWS, D_V], gl.float32, o_layout)
    m_i = gl.full([ROWS], float("-inf"), gl.float32, row_l)
    l_i = gl.zeros([ROWS], gl.float32, row_l)
    return s_zero, acc, m_i, l_i


@gluon.jit
def _alloc_ring(q1_desc, q2_desc, k1_desc, k2_desc, v_desc, NUM_STAGES: gl.constexpr):
    # a program's shared memory: one query tile pair (nope, rope) per consumer warpgroup, the K (nope + rope) and V
    # rings of NUM_STAGES, their ready / empty barriers (not initialised: _init_ring, after the caller's own)
    dtype: gl.constexpr = k1_desc.dtype
    q1_s = gl.allocate_shared_memory(dtype, [2] + q1_desc.block_type.shape, q1_desc.layout)
    q2_s = gl.allocate_shared_memory(dtype, [2] + q2_desc.block_type.shape, q2_desc.layout)
    k1_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + k1_desc.block_type.shape, k1_desc.layout)
    k2_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + k2_desc.block_type.shape, k2_desc.layout)
    v_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + v_desc.block_type.shape, v_desc.layout)
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    return q1_s, q2_s, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty


@gluon.jit
def _init_ring(k_ready, k_empty, v_ready, v_empty, NUM_STAGES: gl.constexpr):
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)  # released by both consumer warpgroups
        mbarrier.init(v_empty.index(i), count=2)


@gluon.jit
def _kv_end(m0, seqlen, CAUSAL: gl.constexpr):
    # keys [0, end) of the sequence a 128-row query block starting at row m0 reads: through its last row (causal)
    if CAUSAL:
        hi = gl.minimum(seqlen, m0 + BLOCK_M)
    else:
        hi = seqlen
    return hi


@gluon.jit
def _n_blocks(m0, seqlen, BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr):
    # key blocks the producer loads for the query block starting at row m0
    return (_kv_end(m0, seqlen, CAUSAL) + BLOCK_N - 1) // BLOCK_N


@gluon.jit
def _load_kv(k1_desc, k2_desc, v_desc, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, rc, r, h,
             hs_k1, hs_k2, hs_v, NUM_STAGES: gl.constexpr):
    # the rc-th key block a program loads (token rows r …, head h) into ring stage rc % NUM_STAGES: keys (nope +
    # rope) once the stage's key tile is free, then the values once its value tile is
    s = rc % NUM_STAGES
    ph = ((rc // NUM_STAGES) & 1) ^ 1  # a fresh stage counts as free
    k_bytes: gl.constexpr = k1_desc.block_type.nbytes + k2_desc.block_type.nbytes
    v_bytes: gl.constexpr = v_desc.block_type.nbytes
    mbarrier.wait(k_empty.index(s), ph)
    kb = k_ready.index(s)
    mbarrier.expect(kb, k_bytes)
    tma.async_copy_global_to_shared(k1_desc, [r, h * hs_k1], kb, k1_bufs.index(s))
    tma.async_copy_global_to_shared(k2_desc, [r, h * hs_k2], kb, k2_bufs.index(s))
    mbarrier.wait(v_empty.index(s), ph)
    vb = v_ready.index(s)
    mbarrier.expect(vb, v_bytes)
    tma.async_copy_global_to_shared(v_desc, [r, h * hs_v], vb, v_bufs.index(s))


@gluon.jit
def _producer(q1_desc, q2_desc, k1_desc, k2_desc, v_desc, q1_s, q2_s, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty,
              v_ready, v_empty, q_bar, start, seqlen, m0, h, hs_q1, hs_q2, hs_k1, hs_k2, hs_v,
              BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr):
    # One warp: the query rows once, then every key block the program needs: keys (nope + rope) into the K ring,
    # values into the V ring. Two rings because a key tile is free once its scores are done, a value tile only
    # after the P·V one block later (PIPE): one ring of both would hold the keys a block too long.
    if m0 < seqlen:
        row = start + m0
        mbarrier.expect(q_bar, 2 * (q1_desc.block_type.nbytes + q2_desc.block_type.nbytes))
        for w in gl.static_range(2):
            tma.async_copy_global_to_shared(q1_desc, [row + w * ROWS, h * hs_q1], q_bar, q1_s.index(w))
            tma.async_copy_global_to_shared(q2_desc, [row + w * ROWS, h * hs_q2], q_bar, q2_s.index(w))
        for j in range(0, _n_blocks(m0, seqlen, BLOCK_N, CAUSAL)):
            _load_kv(k1_desc, k2_desc, v_desc, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, j,
                     start + j * BLOCK_N, h, hs_k1, hs_k2, hs_v, NUM_STAGES)


@gluon.jit
def _zero_v_tail(vb, first, seqlen, BLOCK_N: gl.constexpr):
    # value rows first + i ≥ seqlen of a [BLOCK_N, 128] shared tile := 0 (then fenced for the wgmma's async proxy)
    _zero_tail(vb, first, seqlen, D_V, BLOCK_N, gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0]))
    fence_async_shared()
    gl.thread_barrier()


@gluon.jit
def _scores_issue(q1, q2, k1b, k2b, s_zero):
    # S = Q_nope·K_nopeᵀ + Q_rope·K_ropeᵀ, asynchronous (two wgmma groups)
    s = warpgroup_mma(q1, k1b.permute((1, 0)), s_zero, use_acc=False, is_async=True)
    return warpgroup_mma(q2, k2b.permute((1, 0)), s, is_async=True)


@gluon.jit
def _softmax(s, m_i, l_i, n0, rows, seqlen, scale_log2, masked, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr,
             s_layout: gl.constexpr):
    # online softmax step of one key block; returns p (fp32), alpha, new m_i, new l_i
    if masked:
        cols = n0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        ok = gl.expand_dims(cols < seqlen, 0)
        if CAUSAL:
            ok = ok & (gl.expand_dims(cols, 0) <= gl.expand_dims(rows, 1))
        s = gl.where(ok, s, gl.full_like(s, float("-inf")))
    m_new = gl.maximum(m_i, gl.max(s, 1) * scale_log2)
    m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no visible key yet (rows past seqlen)
    alpha = gl.exp2(m_i - m_safe)
    p = gl.exp2(s * scale_log2 - gl.expand_dims(m_safe, 1))
    l_i = l_i * alpha + gl.sum(p, 1)
    return p, alpha, m_new, l_i


@gluon.jit
def _pv_at(p16, v_bufs, v_ready, rc, j, acc, seqlen, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    # O += P·V of key block j at ring index rc (the program's rc-th block; = j without a ring running on across
    # items), async; p16: P in bf16/fp16 as the wgmma's register A operand. The value tile of the sequence's last
    # block first gets its rows past seqlen zeroed (0·NaN would be NaN).
    st = rc % NUM_STAGES
    mbarrier.wait(v_ready.index(st), (rc // NUM_STAGES) & 1)
    vb = v_bufs.index(st)
    if j * BLOCK_N + BLOCK_N > seqlen:
        _zero_v_tail(vb, j * BLOCK_N, seqlen, BLOCK_N)
    return warpgroup_mma(p16, vb, acc, is_async=True)


@gluon.jit
def _scores_at(q1, q2, k1_bufs, k2_bufs, k_ready, k_empty, rc, s_zero, NUM_STAGES: gl.constexpr):
    # the scores of the key block at ring index rc once its tile has landed, waited for; the key stage released
    st = rc % NUM_STAGES
    mbarrier.wait(k_ready.index(st), (rc // NUM_STAGES) & 1)
    s_tok = _scores_issue(q1, q2, k1_bufs.index(st), k2_bufs.index(st), s_zero)
    s = warpgroup_mma_wait(0, deps=[s_tok])
    mbarrier.arrive(k_empty.index(st), count=1)
    return s


@gluon.jit
def _first_block(q1, q2, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, qe, rc, n_need, s_zero, m_i, l_i, rows, seqlen,
                 scale_log2, n_fast, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr,
                 s_layout: gl.constexpr, p_layout: gl.constexpr):
    # PIPE's block 0 (ring index rc): scores, softmax; returns P as the 16-bit wgmma operand (half the registers of
    # fp32; its P·V is issued with block 1's scores), m_i, l_i. qe (not None): the query buffer's empty barrier,
    # arrived once the scores are read when block 0 is the warpgroup's last (n_need == 1).
    s = _scores_at(q1, q2, k1_bufs, k2_bufs, k_ready, k_empty, rc, s_zero, NUM_STAGES)
    if qe is not None:
        if n_need == 1:
            mbarrier.arrive(qe, count=1)
    p, alpha, m_i, l_i = _softmax(s, m_i, l_i, 0, rows, seqlen, scale_log2, n_fast == 0, CAUSAL, BLOCK_N, s_layout)
    return gl.convert_layout(p.to(v_bufs.dtype), p_layout), m_i, l_i


@gluon.jit
def _pipe_block(q1, q2, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, qe, rc, j, n_need, s_zero, p16,
                acc, m_i, l_i, rows, seqlen, scale_log2, n_fast, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr,
                NUM_STAGES: gl.constexpr, s_layout: gl.constexpr, p_layout: gl.constexpr, o_row_l: gl.constexpr):
    # PIPE step of key block j ≥ 1 (ring index rc): block j's scores are issued before block j − 1's P·V (p16),
    # block j's softmax runs while that P·V is in flight. qe as _first_block (arrived after block n_need − 1's
    # scores). Returns block j's P (16-bit), the accumulator rescaled for it, m_i, l_i.
    st = rc % NUM_STAGES
    mbarrier.wait(k_ready.index(st), (rc // NUM_STAGES) & 1)
    s_tok = _scores_issue(q1, q2, k1_bufs.index(st), k2_bufs.index(st), s_zero)
    o_tok = _pv_at(p16, v_bufs, v_ready, rc - 1, j - 1, acc, seqlen, BLOCK_N, NUM_STAGES)
    s = warpgroup_mma_wait(1, deps=[s_tok])  # the scores (issued first) are done
    mbarrier.arrive(k_empty.index(st), count=1)
    if qe is not None:
        if j == n_need - 1:
            mbarrier.arrive(qe, count=1)  # the last read of the queries is done
    p, alpha_n, m_i, l_i = _softmax(s, m_i, l_i, j * BLOCK_N, rows, seqlen, scale_log2, j >= n_fast, CAUSAL, BLOCK_N,
                                    s_layout)
    # p16 (the in-flight wgmma's register operand) stays a dependency: its registers must not be reused by the
    # softmax above before the P·V has read them
    acc, p16 = warpgroup_mma_wait(0, deps=[o_tok, p16])
    p16 = gl.convert_layout(p.to(v_bufs.dtype), p_layout)
    mbarrier.arrive(v_empty.index((rc - 1) % NUM_STAGES), count=1)
    acc = acc * gl.expand_dims(gl.convert_layout(alpha_n, o_row_l), 1)
    return p16, acc, m_i, l_i


@gluon.jit
def _pv_last(p16, v_bufs, v_ready, v_empty, rc, j, acc, seqlen, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    # the last block's P·V (key block j at ring index rc), waited for; its value stage released
    o_tok = _pv_at(p16, v_bufs, v_ready, rc, j, acc, seqlen, BLOCK_N, NUM_STAGES)
    acc, p16 = warpgroup_mma_wait(0, deps=[o_tok, p16])
    mbarrier.arrive(v_empty.index(rc % NUM_STAGES), count=1)
    return acc


@gluon.jit
def _wg_blocks(m0, r0, seqlen, BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr):
    # key blocks of the consumer warpgroup whose rows start at r0 (query block m0): n_all the producer loads for
    # the block, n_need these rows see (0 when they are all past the sequence), n_fast fully visible to every row
    hi = _kv_end(m0, seqlen, CAUSAL)
    if CAUSAL:
        need = gl.minimum(seqlen, r0 + ROWS)  # keys this warpgroup's rows can see: [0, need)
        n_fast = gl.minimum(r0, seqlen) // BLOCK_N
    else:
        need = seqlen
        n_fast = seqlen // BLOCK_N
    n_all = ((hi + BLOCK_N - 1) // BLOCK_N)
    n_need = gl.where(r0 < seqlen, ((need + BLOCK_N - 1) // BLOCK_N), 0)
    n_fast = gl.minimum(n_fast, n_need)
    return n_all, n_need, n_fast


@gluon.jit
def _release_unread(k_ready, k_empty, v_ready, v_empty, kc, j0, j1, NUM_STAGES: gl.constexpr):
    # key blocks j0 … j1 − 1 (ring indices kc + j) that only the other warpgroup needs (the causal diagonal of its
    # rows): released unread
    for j in range(j0, j1):
        rc = kc + j
        st = rc % NUM_STAGES
        ph = (rc // NUM_STAGES) & 1
        mbarrier.wait(k_ready.index(st), ph)
        mbarrier.arrive(k_empty.index(st), count=1)
        mbarrier.wait(v_ready.index(st), ph)
        mbarrier.arrive(v_empty.index(st), count=1)


@gluon.jit
def _store_rows(acc, l_i, out_ptr, stride_ot, stride_oh, start, r0, h, seqlen, o_layout: gl.constexpr):
    # out[start + r0 + i, h] = acc / l for the warpgroup's 64 rows inside the sequence (0 where l = 0)
    o_row_l: gl.constexpr = gl.SliceLayout(1, o_layout)
    l_o = gl.convert_layout(l_i, o_row_l)
    inv_l = gl.where(l_o > 0.0, 1.0 / gl.where(l_o > 0.0, l_o, 1.0), 0.0)
    o = (acc * gl.expand_dims(inv_l, 1)).to(out_ptr.dtype.element_ty)
    orow = r0 + gl.arange(0, ROWS, layout=o_row_l)
    ocol = gl.arange(0, D_V, layout=gl.SliceLayout(0, o_layout))
    o_ptrs = (out_ptr + gl.expand_dims((start + orow).to(gl.int64) * stride_ot + h * stride_oh, 1)
              + gl.expand_dims(ocol, 0))
    gl.store(o_ptrs, o, mask=gl.expand_dims(orow < seqlen, 1))


@gluon.jit
def _consumer(q1_s, q2_s, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_bar, out_ptr,
              stride_ot, stride_oh, start, seqlen, m0, h, scale_log2,
              WG: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr,
              PIPE: gl.constexpr):
    # One consumer warpgroup: query rows m0 + WG·64 … of the program's block.
    s_layout: gl.constexpr = _mma_layout(BLOCK_N)
    o_layout: gl.constexpr = _mma_layout(D_V)
    p_layout: gl.constexpr = _p_layout(o_layout)
    row_l: gl.constexpr = gl.SliceLayout(1, s_layout)
    o_row_l: gl.constexpr = gl.SliceLayout(1, o_layout)
    if m0 < seqlen:
        r0 = m0 + WG * ROWS
        rows = r0 + gl.arange(0, ROWS, layout=row_l)
        n_all, n_need, n_fast = _wg_blocks(m0, r0, seqlen, BLOCK_N, CAUSAL)
        mbarrier.wait(q_bar, 0)
        q1 = q1_s.index(WG)
        q2 = q2_s.index(WG)
        s_zero, acc, m_i, l_i = _wg_state(BLOCK_N, s_layout, o_layout)
        if PIPE:
            if n_need > 0:
                # block 0: scores, softmax; its P·V is issued with block 1's scores
                p16, m_i, l_i = _first_block(q1, q2, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, None, 0, n_need,
                                             s_zero, m_i, l_i, rows, seqlen, scale_log2, n_fast, CAUSAL, BLOCK_N,
                                             NUM_STAGES, s_layout, p_layout)
                for j in range(1, n_need):
                    p16, acc, m_i, l_i = _pipe_block(q1, q2, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready,
                                                     v_empty, None, j, j, n_need, s_zero, p16, acc, m_i, l_i, rows,
                                                     seqlen, scale_log2, n_fast, CAUSAL, BLOCK_N, NUM_STAGES,
                                                     s_layout, p_layout, o_row_l)
                acc = _pv_last(p16, v_bufs, v_ready, v_empty, n_need - 1, n_need - 1, acc, seqlen, BLOCK_N,
                               NUM_STAGES)
        else:
            for j in range(0, n_need):
                s = _scores_at(q1, q2, k1_bufs, k2_bufs, k_ready, k_empty, j, s_zero, NUM_STAGES)
                p, alpha, m_i, l_i = _softmax(s, m_i, l_i, j * BLOCK_N, rows, seqlen, scale_log2, j >= n_fast,
                                              CAUSAL, BLOCK_N, s_layout)
                acc = acc * gl.expand_dims(gl.convert_layout(alpha, o_row_l), 1)
                p16 = gl.convert_layout(p.to(v_bufs.dtype), p_layout)
                acc = _pv_last(p16, v_bufs, v_ready, v_empty, j, j, acc, seqlen, BLOCK_N, NUM_STAGES)
        _release_unread(k_ready, k_empty, v_ready, v_empty, 0, n_need, n_all, NUM_STAGES)
        if r0 < seqlen:
            _store_rows(acc, l_i, out_ptr, stride_ot, stride_oh, start, r0, h, seqlen, o_layout)


@gluon.jit(do_not_specialize=["stride_ot", "stride_oh", "hs_q1", "hs_q2", "hs_k1", "hs_k2", "hs_v",
                              "num_m_blocks"])
def _mla_prefill_ws_kernel(
    q1_desc, q2_desc, k1_desc, k2_desc, v_desc, cu_ptr, out_ptr, stride_ot, stride_oh,
    hs_q1, hs_q2, hs_k1, hs_k2, hs_v, num_m_blocks, scale_log2,
    BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr, PIPE: gl.constexpr,
    CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr,
):
    # q1/q2_desc: TMA over q's nope / rope piece as [tokens, ·] rows (box [64, 128] / [64, 64]); head h at column
    #   h·hs_q1 / h·hs_q2. k1/k2_desc, v_desc: the same over k nope / rope and v (box [BLOCK_N, 128 / 64 / 128],
    #   head columns h·hs_k1 / h·hs_k2 (0: one rope key shared by the heads) / h·hs_v).
    # out [tokens, heads, 128] (stride_ot, stride_oh, 1); cu_seqlens [batch + 1] int32.
    # grid (num_m_blocks, heads, batch), query blocks in reverse.
    pid_m = num_m_blocks - 1 - gl.program_id(0)
    h = gl.program_id(1)
    b = gl.program_id(2)
    start = gl.load(cu_ptr + b)
    seqlen = gl.load(cu_ptr + b + 1) - start
    m0 = pid_m * BLOCK_M
    q1_s, q2_s, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty = _alloc_ring(
        q1_desc, q2_desc, k1_desc, k2_desc, v_desc, NUM_STAGES)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    _init_ring(k_ready, k_empty, v_ready, v_empty, NUM_STAGES)
    mbarrier.init(q_bar, count=1)
    gl.warp_specialize([
        (_consumer, (q1_s, q2_s, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_bar, out_ptr,
                     stride_ot, stride_oh, start, seqlen, m0, h, scale_log2, 0, BLOCK_N, NUM_STAGES, CAUSAL, PIPE)),
        (_consumer, (q1_s, q2_s, k1_bufs, k2_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, q_bar, out_ptr,
                     stride_ot, stride_oh, start, seqlen, m0, h, scale_log2, 1, BLOCK_N, NUM_STAGES, CAUSAL, PIPE)),
        (_producer, (q1_desc, q2_desc, k1_desc, k2_desc, v_desc, q1_s, q2_s, k1_bufs, k2_bufs, v_bufs, k_ready,
                     k_empty, v_ready, v_empty, q_bar, start, seqlen, m0, h, hs_q1, hs_q2, hs_k1, hs_k2, hs_v,
                     BLOCK_N, NUM_STAGES, CAUSAL)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


_GL_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}


def _piece_ok(t: torch.Tensor, width: int) -> bool:
    # a [tokens, heads, width] (or [tokens, width]) piece TMA can read as 2-D rows: 16-byte aligned base and
    # token / head strides, contiguous columns
    if t.shape[-1] != width or t.stride(-1) != 1 or t.data_ptr() % 16 != 0:
        return False
    es = t.element_size()
    return all((s * es) % 16 == 0 for s in t.stride()[:-1]) and t.stride(0) > 0


def ws_supported(q1, q2, k1, k2, v, out, softmax_scale: float) -> bool:
    """True when the Gluon kernel takes these operands: a CUDA sm_90 device, bf16, q/k nope pieces
    [tokens, heads, 128], rope pieces [tokens, heads, 64] (k's also [tokens, 64]: shared by the heads), v
    [tokens, heads, 128], every piece TMA-readable (16-byte aligned base, token and head strides), softmax_scale > 0
    and int32-addressable TMA rows. False (never an error) otherwise: mla_prefill then runs the tl kernel."""
    # bf16 only: the fp16 build compiles but was not checked on the H200 (s21 W1 checked bf16)
    if q1.device.type != "cuda" or q1.dtype != torch.bfloat16:
        return False
    from tritonseek.kernels._host import cuda_capability

    if cuda_capability(q1.device)[0] != 9 or not softmax_scale > 0:
        return False
    if out.stride(-1) != 1:
        return False
    pieces = ((q1, _D_NOPE), (q2, _D_ROPE), (k1, _D_NOPE), (k2, _D_ROPE), (v, _D_V))
    if not all(_piece_ok(t, w) for t, w in pieces):
        return False
    if q2.dim() != 3 or v.dim() != 3 or q1.dim() != 3 or k1.dim() != 3:
        return False
    return all(t.shape[0] < 2**31 and (t.dim() == 2 or t.stride(1) * t.shape[1] < 2**31) for t, _ in pieces)


def _desc(t: torch.Tensor, width: int, box_rows: int):
    # 2-D TMA view of a piece: rows = tokens (stride t.stride(0)), columns = (heads − 1)·head stride + width
    heads, hs = (t.shape[1], t.stride(1)) if t.dim() == 3 else (1, 0)
    cols = (heads - 1) * hs + width
    box = [box_rows, width]
    return TensorDescriptor(t, [t.shape[0], cols], [t.stride(0), 1], box, nvmma_layout(box, _GL_DTYPES[t.dtype])), hs


def _launch_parts(q1, q2, k1, k2, v, cfg: dict):
    """Both Gluon launchers' shared set-up: cfg's Gluon knobs over DEFAULT_WS (ValueError for a WS_BLOCK_N other than
    64 / 128 or WS_STAGES outside 1-4), the block size and ring depth, the five pieces' TMA descriptors (q: 64-row
    boxes, k / v: WS_BLOCK_N rows) and their head strides in elements."""
    c = dict(DEFAULT_WS)
    c.update({k: cfg[k] for k in DEFAULT_WS if k in cfg})
    bn = int(c["WS_BLOCK_N"])
    if bn not in (64, 128):
        raise ValueError(f"config WS_BLOCK_N must be 64 or 128, got {bn!r}")
    stages = int(c["WS_STAGES"])
    if stages < 1 or stages > 4:
        raise ValueError(f"config WS_STAGES must be 1 to 4, got {stages!r}")
    parts = (_desc(q1, _D_NOPE, _ROWS), _desc(q2, _D_ROPE, _ROWS), _desc(k1, _D_NOPE, bn), _desc(k2, _D_ROPE, bn),
             _desc(v, _D_V, bn))
    return c, bn, stages, tuple(d for d, _ in parts), tuple(hs for _, hs in parts)


def launch_prefill_ws(q1, q2, k1, k2, v, cu_seqlens, out, max_seqlen: int, softmax_scale: float, causal: bool,
                      cfg: dict) -> torch.Tensor:
    """Launch the Gluon kernel on validated operands (mla_prefill's checks; ws_supported true). q1/k1: the nope
    pieces [T, H, 128]; q2 [T, H, 64], k2 [T, H, 64] or [T, 64]: the rope pieces; v [T, H, 128]; out [T, H, 128]
    (written for the tokens of the sequences). cfg: WS_BLOCK_N (64 / 128), WS_STAGES, PIPE, CONSUMER_REGS,
    PRODUCER_REGS over DEFAULT_WS. Returns out."""
    c, bn, stages, (dq1, dq2, dk1, dk2, dv), (hs_q1, hs_q2, hs_k1, hs_k2, hs_v) = _launch_parts(q1, q2, k1, k2, v, cfg)
    num_heads = q1.shape[1]
    batch = cu_seqlens.numel() - 1
    num_m = cdiv(max_seqlen, 2 * _ROWS)
    _mla_prefill_ws_kernel[(num_m, num_heads, batch)](
        dq1, dq2, dk1, dk2, dv, cu_seqlens, out, out.stride(0), out.stride(1),
        hs_q1, hs_q2, hs_k1, hs_k2, hs_v, num_m, float(softmax_scale) * 1.4426950408889634,
        BLOCK_N=bn, NUM_STAGES=stages, CAUSAL=bool(causal), PIPE=bool(c["PIPE"]),
        CONSUMER_REGS=int(c["CONSUMER_REGS"]), PRODUCER_REGS=int(c["PRODUCER_REGS"]),
        num_warps=4, maxnreg=_MAXNREG,
    )
    return out


def mla_prefill_ws(q, k, v, cu_seqlens, max_seqlen, softmax_scale, causal=True, out=None, config=None, *, q_pe=None,
                   k_pe=None, check_ids=True):
    """``mla_prefill`` forced onto this Gluon kernel: out = softmax(q·kᵀ·scale [+ causal mask])·v per sequence.

    Operands, outputs, validation and errors: ``mla_prefill``'s (FlashAttention ``flash_attn_varlen_func``
    semantics), with config's GLUON set; the Gluon knobs WS_BLOCK_N / WS_STAGES / PIPE / CONSUMER_REGS /
    PRODUCER_REGS / PERSIST / DIAG64 / PAIR_MID may be given in config (the default config runs the persistent
    variant, ``mla_prefill_ws_persistent``; PERSIST=False runs this module's kernel). Raises ValueError where this
    kernel cannot run: a device other than a CUDA sm_90 GPU (Gluon has no interpreter path), causal=False, or
    operands it does not take (``ws_supported``: bf16, DeepSeek's 128 nope ‖ 64 rope q/k columns and 128 v columns,
    16-byte aligned pieces, softmax_scale > 0) — ``mla_prefill`` runs the tl kernel for those."""
    from tritonseek.kernels._host import cuda_capability
    from tritonseek.kernels.mla_prefill import mla_prefill

    if not isinstance(q, torch.Tensor) or q.device.type != "cuda" or cuda_capability(q.device)[0] != 9:
        raise ValueError("q must be on a CUDA sm_90 GPU: mla_prefill_ws is a Gluon kernel (no interpreter path); "
                         "use mla_prefill elsewhere")
    if q_pe is not None and k_pe is not None:
        pieces = (q, q_pe, k, k_pe)
    elif q.dim() == 3 and q.shape[-1] == _D_NOPE + _D_ROPE and isinstance(k, torch.Tensor) and k.dim() == 3:
        pieces = (q[..., :_D_NOPE], q[..., _D_NOPE:], k[..., :_D_NOPE], k[..., _D_NOPE:])
    else:
        pieces = None
    probe = out if out is not None else v
    if isinstance(causal, (bool, np.bool_)) and not causal:  # other types: mla_prefill's TypeError
        raise ValueError("mla_prefill_ws runs causal attention only (causal=True); use mla_prefill for causal=False")
    if (pieces is None or not isinstance(v, torch.Tensor) or v.dim() != 3
            or not ws_supported(*pieces, v, probe, float(softmax_scale))):
        raise ValueError("mla_prefill_ws takes q/k of 128 nope ‖ 64 rope columns (or q_pe/k_pe apart), v of 128, "
                         "16-byte aligned token/head strides and softmax_scale > 0; use mla_prefill for others")
    return mla_prefill(q, k, v, cu_seqlens, max_seqlen, softmax_scale, causal, out, dict(config or {}, GLUON=True),
                       q_pe=q_pe, k_pe=k_pe, check_ids=check_ids)
