"""Plain-PyTorch MLA prologue (RoPE on q_pe/k_pe, kv RMSNorm, latent-cache write): the spec of
kernels/rope_cache.py, written with the model's own torch code (tritonseek.model.layers)."""

from __future__ import annotations

import torch

from tritonseek.kernels.reference.mla import write_latent_cache_ref
from tritonseek.kernels.reference.norm import rms_norm_ref


def cos_sin_cache_ref(inv_freq: torch.Tensor, max_positions: int) -> torch.Tensor:
    """[max_positions, 2·len(inv_freq)] fp32 = (cos ‖ sin) of position·inv_freq (the model's angles)."""
    angles = torch.arange(max_positions, dtype=torch.float32, device=inv_freq.device)[:, None] * inv_freq[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1).contiguous()


def rotary_interleaved_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of x [T, ..., rope] by cos/sin [T, rope/2] fp32; keeps x.dtype."""
    shape = x.shape
    xf = x.float().reshape(shape[0], -1, shape[-1] // 2, 2)
    c = cos.reshape(shape[0], 1, -1)
    s = sin.reshape(shape[0], 1, -1)
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return out.reshape(shape).to(x.dtype)


def mla_rope_cache_ref(q, kv, positions, cos_sin_cache, kv_norm_weight, eps, kv_cache, slot_mapping):
    """Spec of ``mla_rope_cache``: (rope(q_pe) [T, h, rope], latent [T, kv_lora + rope]); writes the cache."""
    rope = cos_sin_cache.shape[1]
    kv_lora = kv_norm_weight.shape[0]
    cs = cos_sin_cache[positions]
    cos, sin = cs[:, : rope // 2], cs[:, rope // 2 :]
    q_pe = rotary_interleaved_ref(q[..., q.shape[-1] - rope :], cos, sin)
    kv_c, k_pe = kv.split([kv_lora, rope], dim=-1)
    k_pe = rotary_interleaved_ref(k_pe.unsqueeze(1), cos, sin).squeeze(1)
    latent = torch.cat([rms_norm_ref(kv_c, kv_norm_weight, eps), k_pe], -1)
    if kv_cache is not None:
        write_latent_cache_ref(kv_cache, latent, slot_mapping)
    return q_pe, latent
