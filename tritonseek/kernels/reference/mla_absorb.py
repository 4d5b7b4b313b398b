"""Plain-PyTorch references of the MLA weight-absorption products (tritonseek.kernels.mla_absorb).

Semantics: DeepSeek-V3 inference/model.py MLA attn_impl="absorb"; computed in fp32, rounded once.
"""

from __future__ import annotations

import torch


def mla_absorb_q_ref(
    q_nope: torch.Tensor, w_uk: torch.Tensor, q_pe: torch.Tensor, out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """qa = [einsum("thd,hdc->thc", q_nope, W_UK) ‖ q_pe]: q_nope [T, H, nope], w_uk [H, nope, kv_lora],
    q_pe [T, H, rope] → [T, H, kv_lora + rope] in out_dtype (default q_nope.dtype)."""
    q_lat = torch.einsum("thd,hdc->thc", q_nope.float(), w_uk.float())
    return torch.cat([q_lat, q_pe.float()], dim=-1).to(out_dtype or q_nope.dtype)


def mla_absorb_o_ref(o_lat: torch.Tensor, w_uv: torch.Tensor) -> torch.Tensor:
    """o = einsum("thc,hdc->thd", o_lat, W_UV): o_lat [T, H, kv_lora], w_uv [H, v_dim, kv_lora] → [T, H, v_dim]."""
    return torch.einsum("thc,hdc->thd", o_lat.float(), w_uv.float()).to(o_lat.dtype)
