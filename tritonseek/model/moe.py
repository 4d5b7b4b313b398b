"""DeepSeek MoE layer: router gate, routed experts (stacked weights), shared experts.

Routed expert weights are stored stacked, as the grouped GEMMs read them: ``w13`` [E, 2·I, H]
(gate_proj rows then up_proj rows of each expert) and ``w2`` [E, H, I], with their 128×128 block
scales ``w13_scale_inv`` [E, 2·I/128, ceil(H/128)] and ``w2_scale_inv`` [E, ceil(H/128), ceil(I/128)]
when FP8. The loader fills them from the HF per-expert keys (``mlp.experts.E.gate_proj.weight``…).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tritonseek.model.config import ModelConfig
from tritonseek.model.layers import FP8_BLOCK, MLP
from tritonseek.model.ops import Ops
from tritonseek.parallel import TP


class Gate(nn.Module):
    """Router: logits = x·Wᵀ in fp32, then DeepSeek top-k (``e_score_correction_bias`` stays fp32).

    ``weight`` [E, H] is held in fp32 (a bf16 checkpoint widens exactly at load), so the router GEMM
    runs on it directly instead of casting W to fp32 on every forward (a decode-step cost).
    """

    def __init__(self, cfg: ModelConfig, dtype: torch.dtype):
        super().__init__()
        self.weight = nn.Parameter(
            torch.empty(cfg.n_routed_experts, cfg.hidden_size, dtype=torch.float32), requires_grad=False
        )
        if cfg.has_e_score_correction_bias:
            self.e_score_correction_bias = nn.Parameter(
                torch.empty(cfg.n_routed_experts, dtype=torch.float32), requires_grad=False
            )
        else:
            self.register_parameter("e_score_correction_bias", None)


class MoE(nn.Module):
    """y = Σ_k w_k·expert_{id_k}(x) + shared_experts(x) (DeepSeek-V3 inference/model.py MoE)."""

    def __init__(self, cfg: ModelConfig, *, fp8: bool, dtype: torch.dtype, ops: Ops, tp: TP | None = None):
        super().__init__()
        self.cfg = cfg
        self.ops = ops
        # Expert parallel: this rank holds experts [expert_start, expert_end) (all of them without TP).
        self.tp = tp if tp is not None and tp.enabled else None
        self.expert_start, self.expert_end = (
            self.tp.split(cfg.n_routed_experts, "n_routed_experts") if self.tp else (0, cfg.n_routed_experts)
        )
        E, H, I = self.expert_end - self.expert_start, cfg.hidden_size, cfg.moe_intermediate_size
        if fp8 and I % FP8_BLOCK:
            raise ValueError(
                f"moe_intermediate_size={I} must be a multiple of {FP8_BLOCK} for FP8 experts "
                "(gate and up projections are stacked on 128-row scale blocks)"
            )
        self.gate = Gate(cfg, dtype)
        wdtype = torch.float8_e4m3fn if fp8 else dtype
        self.w13 = nn.Parameter(torch.empty(E, 2 * I, H, dtype=wdtype), requires_grad=False)
        self.w2 = nn.Parameter(torch.empty(E, H, I, dtype=wdtype), requires_grad=False)
        if fp8:
            cdiv = lambda a: math.ceil(a / FP8_BLOCK)  # noqa: E731
            self.w13_scale_inv = nn.Parameter(torch.empty(E, cdiv(2 * I), cdiv(H)), requires_grad=False)
            self.w2_scale_inv = nn.Parameter(torch.empty(E, cdiv(H), cdiv(I)), requires_grad=False)
        else:
            self.register_parameter("w13_scale_inv", None)
            self.register_parameter("w2_scale_inv", None)
        self.shared_experts = (
            MLP(H, I * cfg.n_shared_experts, fp8=fp8, dtype=dtype, ops=ops, tp=tp) if cfg.n_shared_experts else None
        )

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, H] → (topk_weights [T, k] fp32, topk_ids [T, k] int32)."""
        logits = F.linear(x.float(), self.gate.weight.float())
        cfg = self.cfg
        return self.ops.gate_topk(
            logits, self.gate.e_score_correction_bias, top_k=cfg.num_experts_per_tok, n_group=cfg.n_group,
            topk_group=cfg.topk_group, scoring_func=cfg.scoring_func, topk_method=cfg.topk_method,
            norm_topk_prob=cfg.norm_topk_prob, routed_scaling_factor=cfg.routed_scaling_factor,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        topk_weights, topk_ids = self.route(x)
        if self.training:
            # kept for DeepSeek-V3's auxiliary-loss-free balancing (bias update after each step)
            self.last_topk_ids = topk_ids.detach()
        if self.tp is not None:
            # Foreign experts' slots become −1 (skipped); each rank's share is summed across ranks.
            local = (topk_ids >= self.expert_start) & (topk_ids < self.expert_end)
            topk_ids = torch.where(local, topk_ids - self.expert_start, torch.full_like(topk_ids, -1))
            y = self.tp.all_reduce(self.experts(x, topk_weights, topk_ids))
            if self.shared_experts is not None:
                y = y + self.shared_experts(x)
            return y
        if self.ops.is_triton and x.is_cuda and self.w13_scale_inv is not None:
            from tritonseek.model.moe_triton import moe_experts_triton

            # the shared expert's output is added in fp32 inside the unpermute (no separate add). Running it
            # as one more group of the masked GEMMs measured slower on the H200 (W2, commit 36ecc83: V3
            # layer T=64 3109 µs against 2554 µs unfused), so it stays a separate MLP.
            shared = self.shared_experts(x) if self.shared_experts is not None else None
            return moe_experts_triton(x, topk_weights, topk_ids, self, shared_output=shared)
        y = self.experts(x, topk_weights, topk_ids)
        return y if self.shared_experts is None else y + self.shared_experts(x)

    def experts(self, x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
        """Routed experts: Σ_k topk_weights[t,k]·down(silu(gate(x_t))·up(x_t)) of expert topk_ids[t,k]."""
        if self.ops.is_triton and x.is_cuda and self.w13_scale_inv is not None:
            from tritonseek.model.moe_triton import moe_experts_triton

            return moe_experts_triton(x, topk_weights, topk_ids, self)
        return self.experts_reference(x, topk_weights, topk_ids)

    def experts_reference(self, x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
        """The spec: a Python loop over the experts that received tokens, fp32 accumulation."""
        I = self.cfg.moe_intermediate_size
        out = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float32, device=x.device)
        ids = topk_ids.long()
        counts = torch.bincount(ids.flatten().clamp_min(-1) + 1, minlength=self.w13.shape[0] + 1)[1:].tolist()
        for e, n in enumerate(counts):
            if n == 0:
                continue
            tok, slot = torch.where(ids == e)
            xe = x[tok]
            if self.w13_scale_inv is None:
                w13, w2 = self.w13[e], self.w2[e]
                gu = F.linear(xe, w13.to(xe.dtype))
                ye = F.linear(F.silu(gu[:, :I]) * gu[:, I:], w2.to(xe.dtype))
            else:
                gu = self.ops.linear(xe, self.w13[e], self.w13_scale_inv[e])
                ye = self.ops.linear(F.silu(gu[:, :I]) * gu[:, I:], self.w2[e], self.w2_scale_inv[e])
            out.index_add_(0, tok, ye.float() * topk_weights[tok, slot, None])
        return out.to(x.dtype)
