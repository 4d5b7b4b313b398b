"""Plain-PyTorch RMSNorm (plain and fused with the residual add): the spec of kernels/norm.py."""

from __future__ import annotations

import torch

from tritonseek.kernels._utils import check_positive_float


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """y = x / sqrt(mean(x², -1) + eps) · weight in fp32, rounded to x.dtype (DeepSeek-V3 RMSNorm).

    x: [..., N]; weight: [N]. Returns [..., N] x.dtype. eps: a finite float > 0 (ints and numpy numbers too; a bool or
    str is a TypeError, as rms_norm's).
    """
    eps = check_positive_float("eps", eps)
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (xf * weight.float()).to(x.dtype)


def fused_add_rms_norm_ref(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                           eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """h = x + residual (in x.dtype); returns (rms_norm_ref(h), h)."""
    h = x + residual
    return rms_norm_ref(h, weight, eps), h
