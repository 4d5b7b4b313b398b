"""The swapped FP8 K loop with two 128-wide K blocks per pipeline stage (config K2 of grouped_gemm_masked's plain
kernel; probe variants in grouped_gemm_masked_decode). Both K blocks' TMA boxes of the same weight rows are issued
together, so each row's 256 contiguous bytes are requested at once: at (4096, 7168) decode shapes on the H200 the
masked GEMM ran 1.3-3 % faster than with one K block per stage (s24 W2 / W3, device-side graph time, T = 1-64), at
K = 2048 it did not (fewer, longer stages fill and drain a 16-block loop worse). In the fused SiLU·quant GEMM1
kernel (V3 w13, 2I = 4096, K = 7168; s24 W4 at 614bcf7, same method, A/A ≤ 1.0015): T=8 0.977, T=64 0.985, but
T=1 1.012 (128 programs on 132 SMs), so there K2 stays a config key, off by default (the model's decode configs come
from moe_triton, which does not set it).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _fp8_tile_k2(a_desc, b_desc, a_row, b_row, sa_ptrs, sb_ptr, row_ok, num_k_blocks, stride_ask, stride_bsk,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STAGES: tl.constexpr = None):
    # fp32 [BLOCK_N, BLOCK_M] = b·aᵀ over K blocks [0, num_k_blocks) (even), two per iteration; a rows from a_row,
    # weight rows from b_row (BLOCK_N ≤ 128: one weight scale per K block, at sb_ptr + kb·stride_bsk); each
    # block's fp32 product is promoted with sa (per token row, row_ok masks it) × sb as in grouped_gemm._fp8_tile,
    # the scales of the next two blocks loaded while these are multiplied
    sa0 = tl.load(sa_ptrs, mask=row_ok, other=0.0)
    sa1 = tl.load(sa_ptrs + stride_ask, mask=row_ok, other=0.0)
    sb0 = tl.load(sb_ptr)
    sb1 = tl.load(sb_ptr + stride_bsk)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for j in tl.range(0, num_k_blocks // 2, num_stages=STAGES):
        k0 = 2 * j * BLOCK_K
        a0 = a_desc.load([a_row, k0])
        b0 = b_desc.load([b_row, k0])
        a1 = a_desc.load([a_row, k0 + BLOCK_K])
        b1 = b_desc.load([b_row, k0 + BLOCK_K])
        more = 2 * j + 2 < num_k_blocks
        sa0n = tl.load(sa_ptrs + (2 * j + 2) * stride_ask, mask=row_ok & more, other=0.0)
        sa1n = tl.load(sa_ptrs + (2 * j + 3) * stride_ask, mask=row_ok & more, other=0.0)
        sb0n = tl.load(sb_ptr + (2 * j + 2) * stride_bsk, mask=more, other=0.0)
        sb1n = tl.load(sb_ptr + (2 * j + 3) * stride_bsk, mask=more, other=0.0)
        acc += tl.dot(b0, a0.T) * (sa0 * sb0)[None, :]
        acc += tl.dot(b1, a1.T) * (sa1 * sb1)[None, :]
        sa0, sa1, sb0, sb1 = sa0n, sa1n, sb0n, sb1n
    return acc
