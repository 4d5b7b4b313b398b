"""Per-tile building blocks of the paged MLA decode kernel (``mla_decode._mla_decode_kernel``).

Each function handles one tile of BLOCK_N cache rows for a tile of BLOCK_H query rows (rows =
(query position, head) pairs); see tritonseek/kernels/mla_decode.py for the design and layouts.

* ``_load_tile``: the tile's three column blocks (TMA descriptors or pointer gathers through the block table).
* ``_tile_step``: s = q·kᵀ, online softmax (base 2), acc += p·v.

Under the Triton interpreter (DOT_FP32) operands are upcast to fp32: it cannot multiply bf16.
"""

import triton
import triton.language as tl


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

