"""Plain-PyTorch references for block-scaled FP8: quantization, dequantization, GEMM, linear.

These are the executable specification of ``tritonseek.kernels.fp8_quant`` and
``tritonseek.kernels.fp8_gemm``. Scale conventions follow DeepSeek-V3 / DeepGEMM:

* activations: one fp32 scale per token per ``group_size`` (=128) channels,
  ``x ≈ x_q * x_scale`` (scale = amax / 448, amax clamped ≥ 1e-4);
* weights: one fp32 scale per 128×128 block, stored as the checkpoint's ``weight_scale_inv``,
  ``w ≈ w_q * weight_scale_inv``; ragged blocks are ceil-sized ([576, 7168] → [5, 56]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonseek.kernels._utils import check_bool, check_int

FP8_E4M3_MAX = 448.0
"""Largest finite float8_e4m3fn magnitude."""

AMAX_EPS = 1e-4
"""Lower clamp on a group's amax, so an all-zero group gets a finite, non-zero scale."""


def _ceil_div(a: int, b: int) -> int:
    return (a + b - 1) // b


def _pow2_ceil(scale: torch.Tensor) -> torch.Tensor:
    """Round positive fp32 scales up to the next power of two (UE8M0 scales), exactly.

    frexp gives scale = mant · 2^exp with mant in [0.5, 1); a power of two has mant == 0.5.
    A NaN or +inf scale stays as it is (frexp would give exponent 0, i.e. a scale of 1).
    """
    mant, exp = torch.frexp(scale)
    exp = torch.where(mant == 0.5, exp - 1, exp)
    return torch.where(torch.isfinite(scale), torch.ldexp(torch.ones_like(scale), exp), scale)


def per_token_group_quant_fp8_ref(
    x: torch.Tensor, group_size: int = 128, scale_ue8m0: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """q = clamp(x / s, ±448) with s = max(amax(group), 1e-4) / 448 per 1×group_size group.

    x: [M, K] bf16/fp16/fp32 activations (K need not be a multiple of group_size; the tail group
    is narrower). Returns x_q [M, K] float8_e4m3fn and x_scale [M, ceil(K/group_size)] fp32
    (x ≈ x_q * x_scale). scale_ue8m0: round each scale up to a power of two before quantizing.
    Non-finite input: a group holding NaN gets scale NaN and q NaN (amax and clamp propagate NaN);
    a group holding ±inf (no NaN) gets scale +inf, q NaN at the infs and ±0 elsewhere (x / inf).
    group_size: an int ≥ 1 (numpy integers too), scale_ue8m0 a bool (numpy too): the launchers' types (a bool
    group_size or a 0/1 flag is a TypeError; the Triton launcher also needs a power of two ≥ 16).
    Semantics: DeepGEMM per_token_cast_to_fp8 / SGLang per_token_group_quant_fp8.
    """
    group_size = check_int("group_size", group_size, 1)
    scale_ue8m0 = check_bool("scale_ue8m0", scale_ue8m0)
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [M, K], got shape {tuple(x.shape)}")
    m, k = x.shape
    g = _ceil_div(k, group_size)
    pad = g * group_size - k
    xf = x.float()
    if pad:
        xf = F.pad(xf, (0, pad))
    xg = xf.view(m, g, group_size)
    amax = xg.abs().amax(dim=-1).clamp_min(AMAX_EPS)
    scale = amax / torch.full_like(amax, FP8_E4M3_MAX)  # tensor divisor: IEEE division on CPU and CUDA
    if scale_ue8m0:
        scale = _pow2_ceil(scale)
    q = (xg / scale.unsqueeze(-1)).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX)
    q = q.view(m, g * group_size)[:, :k].to(torch.float8_e4m3fn)
    return q.contiguous(), scale.contiguous()


def per_block_quant_fp8_ref(w: torch.Tensor, block_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """w_q = clamp(w / s, ±448) with s = max(amax(block), 1e-4) / 448 per block_size² block.

    w: [N, K] float weight. Returns w_q [N, K] float8_e4m3fn and weight_scale_inv
    [ceil(N/block_size), ceil(K/block_size)] fp32 with w ≈ w_q * weight_scale_inv (per block).
    Non-finite blocks as in per_token_group_quant_fp8_ref (NaN → scale NaN, q NaN; ±inf → scale
    +inf, q NaN at the infs, ±0 elsewhere).
    Semantics: DeepSeek-V3 checkpoint weight_scale_inv / DeepGEMM per_block_cast_to_fp8.
    """
    block_size = check_int("block_size", block_size, 1)  # an int (numpy too), as the launcher's
    if w.dim() != 2:
        raise ValueError(f"w must be 2-D [N, K], got shape {tuple(w.shape)}")
    n, k = w.shape
    bn, bk = _ceil_div(n, block_size), _ceil_div(k, block_size)
    wf = F.pad(w.float(), (0, bk * block_size - k, 0, bn * block_size - n))
    wb = wf.view(bn, block_size, bk, block_size)
    amax = wb.abs().amax(dim=(1, 3)).clamp_min(AMAX_EPS)
    scale = amax / torch.full_like(amax, FP8_E4M3_MAX)  # (CUDA divides by a Python scalar via its reciprocal)
    q = (wb / scale[:, None, :, None]).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX)
    q = q.view(bn * block_size, bk * block_size)[:n, :k].to(torch.float8_e4m3fn)
    return q.contiguous(), scale.contiguous()


def dequant_block_fp8_ref(
    w_q: torch.Tensor, weight_scale_inv: torch.Tensor, block_size: int = 128, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """w = w_q * weight_scale_inv[n // block_size, k // block_size], computed in fp32, cast to dtype.

    w_q: [N, K] float8_e4m3fn; weight_scale_inv: [ceil(N/block_size), ceil(K/block_size)] fp32.
    Returns [N, K] dtype. Raises ValueError on a scale shape that does not match.
    Semantics: DeepSeek-V3 inference/kernel.py weight_dequant.
    """
    if w_q.dim() != 2:
        raise ValueError(f"w_q must be 2-D [N, K], got shape {tuple(w_q.shape)}")
    n, k = w_q.shape
    want = (_ceil_div(n, block_size), _ceil_div(k, block_size))
    if tuple(weight_scale_inv.shape) != want:
        raise ValueError(
            f"weight_scale_inv must have shape {want} for w_q {tuple(w_q.shape)}, got {tuple(weight_scale_inv.shape)}"
        )
    s = weight_scale_inv.float().repeat_interleave(block_size, 0)[:n].repeat_interleave(block_size, 1)[:, :k]
    return (w_q.float() * s).to(dtype)


def dequant_token_group_fp8_ref(x_q: torch.Tensor, x_scale: torch.Tensor, group_size: int = 128) -> torch.Tensor:
    """x = x_q * x_scale[m, k // group_size] in fp32. x_q [M, K] e4m3, x_scale [M, ceil(K/group_size)] fp32."""
    k = x_q.shape[-1]
    s = x_scale.float().repeat_interleave(group_size, -1)[..., :k]
    return x_q.float() * s


def fp8_gemm_nt_ref(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """out = (a * a_scale) @ (b * b_scale).T in fp32, cast to out_dtype.

    a: [M, K] e4m3 with a_scale [M, ceil(K/128)] fp32 (1×128 groups); b: [N, K] e4m3 with
    b_scale [ceil(N/128), ceil(K/128)] fp32 (128×128 blocks). Returns [M, N] out_dtype.
    Semantics: DeepGEMM fp8_gemm_nt (its test's dequantized fp32 reference).
    """
    a_f = dequant_token_group_fp8_ref(a, a_scale, 128)
    b_f = dequant_block_fp8_ref(b, b_scale, 128, torch.float32)
    return (a_f @ b_f.t()).to(out_dtype)


def silu_mul_quant_fp8_ref(
    x: torch.Tensor, group_size: int = 128, scale_ue8m0: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """h = silu(gate) * up in fp32 (x = [gate ‖ up]), then per-token-group FP8 quant of h.

    x: [M, 2*I] bf16/fp32. Returns q [M, I] float8_e4m3fn and scale [M, ceil(I/group_size)] fp32.
    Semantics: SGLang/vLLM silu_and_mul followed by per_token_group_quant_fp8, fused.
    """
    if x.dim() != 2 or x.shape[1] % 2:
        raise ValueError(f"x must be 2-D [M, 2*I], got shape {tuple(x.shape)}")
    inter = x.shape[1] // 2
    xf = x.float()
    h = F.silu(xf[:, :inter]) * xf[:, inter:]
    return per_token_group_quant_fp8_ref(h, group_size, scale_ue8m0)


def fp8_linear_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale_inv: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = x @ dequant(weight, weight_scale_inv).T (+ bias), computed in fp32, returned in x.dtype.

    x: [..., K] any float dtype; weight: [N, K] float8_e4m3fn; weight_scale_inv:
    [ceil(N/128), ceil(K/128)] fp32; bias: [N] or None. Returns [..., N] x.dtype.
    Activations are not quantized here (the reference backend's linear).
    Semantics: DeepSeek-V3 inference/model.py linear with weight_dequant.
    """
    w = dequant_block_fp8_ref(weight, weight_scale_inv, 128, torch.float32)
    y = x.float() @ w.t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
