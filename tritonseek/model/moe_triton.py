"""Routed experts on the Triton backend: quant → permute → grouped FP8 GEMM → SiLU·mul+quant →
grouped FP8 GEMM → unpermute (fp32 weighted sum over the top-k, deterministic).

Follows DeepGEMM's ``m_grouped_fp8_gemm_nt_contiguous`` layout (each expert's rows padded to the
GEMM's 128-row M tile, padding rows skipped) for every batch size. The masked layout for
graph-captured decode is the end-to-end issue's step.
"""

from __future__ import annotations

import torch

from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8, silu_mul_quant_fp8
from tritonseek.kernels.grouped_gemm import M_ALIGNMENT, grouped_fp8_gemm_contiguous
from tritonseek.kernels.moe_routing import moe_permute, moe_unpermute


def moe_experts_triton(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, moe) -> torch.Tensor:
    """Σ_k topk_weights[t,k]·expert_{topk_ids[t,k]}(x_t) for x [T, H] bf16 on CUDA; returns [T, H] in x.dtype.

    ``moe`` is the :class:`tritonseek.model.moe.MoE` holding the stacked FP8 weights
    (w13 [E, 2I, H] + w13_scale_inv, w2 [E, H, I] + w2_scale_inv).
    """
    E = moe.w13.shape[0]  # this rank's experts (all of them without expert parallelism)
    x_q, x_s = per_token_group_quant_fp8(x, 128)
    a, a_s, m_indices, row_map = moe_permute(x_q, topk_ids, E, M_ALIGNMENT, hidden_scale=x_s)
    gate_up = grouped_fp8_gemm_contiguous(a, a_s, moe.w13, moe.w13_scale_inv, m_indices, out_dtype=x.dtype)
    h_q, h_s = silu_mul_quant_fp8(gate_up, 128)
    down = grouped_fp8_gemm_contiguous(h_q, h_s, moe.w2, moe.w2_scale_inv, m_indices, out_dtype=x.dtype)
    return moe_unpermute(down, row_map, topk_weights)
