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
        self._router_w: torch.Tensor | None = None
        self._router_key: tuple | None = None

    def router_weight(self) -> torch.Tensor:
        """The weight the fused decode router streams: a bf16 copy when it equals the fp32 weight exactly
        (a bf16 checkpoint: half the bytes, same logits up to summation order), else the fp32 weight.
        Cached per (storage, version); built outside CUDA-graph capture (under capture before the first
        eager call: the fp32 weight, never a host sync)."""
        w = self.weight
        # inference tensors (weights loaded under torch.inference_mode) carry no version counter
        key = (w.data_ptr(), None if w.is_inference() else w._version, w.device)
        if self._router_key != key:
            if w.is_cuda and torch.cuda.is_current_stream_capturing():
                return w
            wb = w.detach().to(torch.bfloat16)
            self._router_w = wb if torch.equal(wb.float(), w) else w
            self._router_key = key
        return self._router_w


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
        if self.tp is not None:  # global expert id → this rank's group, −1 for a foreign expert (one gather a layer)
            local = torch.full((cfg.n_routed_experts,), -1, dtype=torch.int32)
            local[self.expert_start : self.expert_end] = torch.arange(E, dtype=torch.int32)
            self.register_buffer("ep_local_id", local, persistent=False)
        if fp8 and I % FP8_BLOCK:
            raise ValueError(
                f"moe_intermediate_size={I} must be a multiple of {FP8_BLOCK} for FP8 experts "
                "(gate and up projections are stacked on 128-row scale blocks)"
            )
        self.gate = Gate(cfg, dtype)
        wdtype = torch.float8_e4m3fn if fp8 else dtype
        # FP8 with one shared expert (V3/R1, Kimi-K2) and no expert parallelism: the routed stacks get one more
        # group E whose rows ARE the shared expert's weights (its Linears hold views into group E, so no extra
        # memory), and decode runs the shared expert as one more group of the masked GEMMs.
        stack = fp8 and cfg.n_shared_experts == 1 and self.tp is None
        G = E + 1 if stack else E
        cdiv = lambda a: math.ceil(a / FP8_BLOCK)  # noqa: E731
        w13 = torch.empty(G, 2 * I, H, dtype=wdtype)
        w2 = torch.empty(G, H, I, dtype=wdtype)
        self.w13 = nn.Parameter(w13[:E], requires_grad=False)
        self.w2 = nn.Parameter(w2[:E], requires_grad=False)
        if fp8:
            s13, s2 = torch.empty(G, cdiv(2 * I), cdiv(H)), torch.empty(G, cdiv(H), cdiv(I))
            self.w13_scale_inv = nn.Parameter(s13[:E], requires_grad=False)
            self.w2_scale_inv = nn.Parameter(s2[:E], requires_grad=False)
        else:
            self.register_parameter("w13_scale_inv", None)
            self.register_parameter("w2_scale_inv", None)
        # Shared experts: split over the ranks like a dense MLP (gate/up column-, down row-parallel) when the
        # split stays on the 128 FP8 grid (DeepSeek-V3: 2048 / N); otherwise (small models) held whole on every
        # rank and computed by rank 0 alone (the same FP8 GEMMs as one process); either way its share joins the
        # routed experts' one all-reduce. n_shared_experts None (null or absent in config.json) means none, as in
        # DeepSeek's modeling_deepseek.py; I * None was a TypeError naming nothing (h2tester s25 F1).
        Is = I * (cfg.n_shared_experts or 0)
        shared_tp = tp if self.tp is not None and (not fp8 or Is % (FP8_BLOCK * self.tp.world_size) == 0) else None
        self.shared_on_this_rank = self.tp is None or shared_tp is not None or self.tp.rank == 0
        self.shared_experts = (
            MLP(H, Is, fp8=fp8, dtype=dtype, ops=ops, tp=shared_tp) if cfg.n_shared_experts else None
        )
        self._stacked = None
        if stack:
            sh, Ib = self.shared_experts, cdiv(I)
            for lin, w, sc in ((sh.gate_proj, w13[E, :I], s13[E, :Ib]), (sh.up_proj, w13[E, I:], s13[E, Ib:]),
                               (sh.down_proj, w2[E], s2[E])):
                lin.weight = nn.Parameter(w, requires_grad=False)
                lin.weight_scale_inv = nn.Parameter(sc, requires_grad=False)
            fused = getattr(sh, "gate_up", None)  # the MLP's one-GEMM [gate ‖ up] weight (layers.FusedLinears)
            if fused is not None and getattr(fused, "weight", None) is not None:
                fused.weight, fused.scale = w13[E], s13[E]  # the same rows, now group E of the stack
            self._stacked = (w13, s13, w2, s2)
        # Decode fusions (triton backend on CUDA, eval mode), chosen by the token count T of the call:
        # the router GEMV fused with the top-k for T ≤ fused_router_max_t, the shared expert as group E of the
        # masked GEMMs for T ≤ shared_group_max_t (set to 0 to disable either; bench_moe_layer times them).
        # V3 layer on the H200 (W2, d1c41c5, graph replay): both together −7 / −4 / −7 % at T = 1 / 2 / 4;
        # the router alone at T = 8: 17.5 µs against 30.3 µs for fp32 GEMV + gate_topk. Re-measured at T = 1, 2, 4,
        # 8 in one run (h4moe W2, db1a27e, PDL chain, shared as group vs its own MLP): 120.4 / 131.7, 211.8 (with
        # moe_triton.DECODE_CONFIGS' T=2 entry; 228.4 without) / 217.2, 356.7 / 367.5, 645.9 / 657.3 µs: the group
        # wins at every measured T ≤ 8, so shared_group_max_t stays 8 (T = 16 not measured: the job's time ran out).
        self.fused_router_max_t = 16
        self.shared_group_max_t = 8
        # masked decode path: 0 plain launches, 1 permute → GEMM1 → down → unpermute as programmatic dependent
        # launches, 2 that plus GEMM1 prefetching the stacked shared expert's weights into L2 before its wait
        # (moe_triton.moe_experts_triton). V3 layer, H200 W2 (db1a27e, graph replay, same run), T=1: 120.4 µs (2) /
        # 121.8 (1) / 123.5 (0); T=2/4/8: 2 is 0.7-1.0% faster than 0.
        self.decode_pdl = 2
        # keys merged over the masked GEMMs' default configs on the decode path: (GEMM1, down); None: the measured
        # per-shape table moe_triton.DECODE_CONFIGS
        self.decode_configs: tuple[dict | None, dict | None] | None = None

    def route(self, x: torch.Tensor, *, shared_slot: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, H] → (topk_weights [T, k] fp32, topk_ids [T, k] int32).

        shared_slot (fused router only, see :meth:`stacked_weights`): a (k+1)-th slot (id E, weight 1) for
        the shared expert stacked as group E. On the triton backend on CUDA with T ≤ fused_router_max_t the
        router GEMV and the top-k run as one kernel (``router_gate_topk``) over the gate weight's bf16 copy.
        """
        cfg = self.cfg
        kw = dict(top_k=cfg.num_experts_per_tok, n_group=cfg.n_group, topk_group=cfg.topk_group,
                  scoring_func=cfg.scoring_func, topk_method=cfg.topk_method, norm_topk_prob=cfg.norm_topk_prob,
                  routed_scaling_factor=cfg.routed_scaling_factor)
        if self.ops.is_triton and x.is_cuda and x.shape[0] <= self.fused_router_max_t:
            from tritonseek.kernels.moe_gate import router_gate_topk

            return router_gate_topk(x, self.gate.router_weight(), self.gate.e_score_correction_bias,
                                    shared_expert_id=self.w13.shape[0] if shared_slot else None, **kw)
        if shared_slot:
            raise ValueError("shared_slot needs the fused router (triton backend, CUDA, T <= fused_router_max_t)")
        logits = F.linear(x.float(), self.gate.weight.float())
        return self.ops.gate_topk(logits, self.gate.e_score_correction_bias, **kw)

    def stacked_weights(self) -> tuple[torch.Tensor, ...] | None:
        """(w13 [E+1, 2I, H], w13_scale_inv, w2 [E+1, H, I], w2_scale_inv): the routed experts plus the shared
        expert as group E, when this layer stacks them and the shared Linears still view group E (a later
        ``.to()``/reassignment breaks the sharing: then None and the shared expert runs as its own MLP)."""
        if self._stacked is None:
            return None
        w13, s13, w2, s2 = self._stacked
        E, I = self.w13.shape[0], self.cfg.moe_intermediate_size
        sh = self.shared_experts
        views = ((self.w13, w13[:E]), (self.w2, w2[:E]), (self.w13_scale_inv, s13[:E]), (self.w2_scale_inv, s2[:E]),
                 (sh.gate_proj.weight, w13[E, :I]), (sh.up_proj.weight, w13[E, I:]), (sh.down_proj.weight, w2[E]),
                 (sh.gate_proj.weight_scale_inv, s13[E, : s13.shape[1] // 2]),
                 (sh.up_proj.weight_scale_inv, s13[E, s13.shape[1] // 2:]), (sh.down_proj.weight_scale_inv, s2[E]))
        if any(p.device != v.device or p.data_ptr() != v.data_ptr() or p.shape != v.shape for p, v in views):
            return None
        return self._stacked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[0]
        stacked = (self.stacked_weights() if self.ops.is_triton and x.is_cuda and not self.training
                   and 0 < T <= min(self.shared_group_max_t, self.fused_router_max_t) else None)
        if stacked is not None:
            from tritonseek.model.moe_triton import moe_experts_triton

            # decode: the shared expert is group E of the masked GEMMs, routed with weight 1 in slot k
            topk_weights, topk_ids = self.route(x, shared_slot=True)
            return moe_experts_triton(x, topk_weights, topk_ids, self, layout="masked", weights=stacked,
                                      pdl=self.decode_pdl, shared_group=self.w13.shape[0], configs=self.decode_configs,
                                      check_ids=False)  # our gate's ids: no range-check sync per layer
        topk_weights, topk_ids = self.route(x)
        if self.training:
            # kept for DeepSeek-V3's auxiliary-loss-free balancing (bias update after each step)
            self.last_topk_ids = topk_ids.detach()
        if self.tp is not None:
            # Expert parallel: foreign experts' slots become −1, which the Triton path skips (the masked layout
            # gets programs for this rank's groups only, the contiguous one gives −1 slots no row), so they are
            # never computed. This rank's routed share and its shared-expert share (the row-parallel down
            # projection's partial, added in fp32 inside the unpermute) are summed by ONE all-reduce per layer.
            ep = self.ep_local_id.to(topk_ids.device)
            topk_ids = ep.index_select(0, topk_ids.reshape(-1)).view(topk_ids.shape).to(topk_ids.dtype)
            shared = (self.shared_experts.partial(x) if self.shared_experts is not None and self.shared_on_this_rank
                      else None)
            if self.ops.is_triton and x.is_cuda and self.w13_scale_inv is not None:
                from tritonseek.model.moe_triton import moe_experts_triton

                y = moe_experts_triton(x, topk_weights, topk_ids, self, shared_output=shared, pdl=self.decode_pdl,
                                       configs=self.decode_configs, check_ids=False)
            else:
                y = self.experts(x, topk_weights, topk_ids)
                y = y if shared is None else y + shared
            return self.tp.all_reduce(y)
        if self.ops.is_triton and x.is_cuda and self.w13_scale_inv is not None:
            from tritonseek.model.moe_triton import moe_experts_triton

            # past shared_group_max_t the shared expert is its own MLP, its output added in fp32 inside the
            # unpermute (no separate add): as one more group of the masked GEMMs it measured slower at T=64 on
            # the H200 (commit 36ecc83: V3 layer 3109 µs against 2554 µs), its 64 rows re-streaming its weights.
            shared = self.shared_experts(x) if self.shared_experts is not None else None
            return moe_experts_triton(x, topk_weights, topk_ids, self, shared_output=shared, pdl=self.decode_pdl,
                                      configs=self.decode_configs, check_ids=False)
        y = self.experts(x, topk_weights, topk_ids)
        return y if self.shared_experts is None else y + self.shared_experts(x)

    def experts(self, x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
        """Routed experts: Σ_k topk_weights[t,k]·down(silu(gate(x_t))·up(x_t)) of expert topk_ids[t,k]."""
        if self.ops.is_triton and x.is_cuda and self.w13_scale_inv is not None:
            from tritonseek.model.moe_triton import moe_experts_triton

            return moe_experts_triton(x, topk_weights, topk_ids, self, check_ids=False)
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
