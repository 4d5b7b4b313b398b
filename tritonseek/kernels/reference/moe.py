"""Plain-PyTorch references of the MoE path: gate top-k, permute/unpermute, grouped FP8 GEMMs.

These are the executable specification of ``tritonseek.kernels.moe_routing`` and
``tritonseek.kernels.grouped_gemm``. They loop over experts in Python where that is the
clearest statement of the maths; speed is not their purpose.
"""

from __future__ import annotations

import numbers

import torch

from tritonseek.kernels._utils import check_bool, check_int, check_positive_float
from tritonseek.kernels.reference.fp8 import _pow2_ceil

FP8_BLOCK = 128
_SCORING = ("sigmoid", "softmax")
_TOPK_METHODS = ("noaux_tc", "group_limited_greedy", "greedy")


def check_gate_args(num_experts: int, *, top_k: int, n_group: int, topk_group: int, scoring_func: str,
                    topk_method: str) -> bool:
    """Validate gate settings; return True when group-limited selection is active.

    Raises TypeError naming top_k / n_group / topk_group when one is not an int (numpy integers count; a bool,
    float or tensor does not) and naming scoring_func / topk_method when one is not a str, ValueError naming the
    inconsistent argument (an unknown scoring_func / topk_method name included).
    """
    for name, v in (("scoring_func", scoring_func), ("topk_method", topk_method)):
        # scoring_func=True was a ValueError blaming the value (h5 s21); a tensor would be compared elementwise
        if not isinstance(v, str):
            raise TypeError(f"{name} must be a str, got {type(v).__name__} {v!r}")
    if scoring_func not in _SCORING:
        raise ValueError(f"scoring_func must be one of {_SCORING}, got {scoring_func!r}")
    if topk_method not in _TOPK_METHODS:
        raise ValueError(f"topk_method must be one of {_TOPK_METHODS}, got {topk_method!r}")
    for name, v in (("top_k", top_k), ("n_group", n_group), ("topk_group", topk_group)):
        # an int or a numpy integer; a bool, float or tensor is a TypeError (the launchers' rule, kernels._utils)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
        if v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if num_experts % n_group:
        raise ValueError(f"n_group={n_group} must divide the number of experts E={num_experts}")
    if topk_group > n_group:
        raise ValueError(f"topk_group={topk_group} must be <= n_group={n_group}")
    grouped = topk_method != "greedy" and n_group > 1
    kept = topk_group * (num_experts // n_group) if grouped else num_experts
    if top_k > kept:
        raise ValueError(
            f"top_k={top_k} exceeds the {kept} experts in the kept groups "
            f"(E={num_experts}, n_group={n_group}, topk_group={topk_group}, topk_method={topk_method!r})"
        )
    return grouped


def gate_topk_ref(
    logits: torch.Tensor,
    e_score_correction_bias: torch.Tensor | None,
    *,
    top_k: int,
    n_group: int = 1,
    topk_group: int = 1,
    scoring_func: str = "sigmoid",
    topk_method: str = "noaux_tc",
    norm_topk_prob: bool = True,
    routed_scaling_factor: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek router top-k: w = norm(score[topk(group_mask(score + bias))]) · routed_scaling_factor.

    logits: [T, E] any float dtype, router logits (computed here in fp32).
    e_score_correction_bias: [E] fp32 or None; added to the scores for selection only.
    scores = sigmoid(logits) or softmax(logits, -1). With ``n_group > 1`` and topk_method
    "noaux_tc" (group score = sum of the top-2 biased scores of the group) or
    "group_limited_greedy" (group score = max biased score of the group), the best
    ``topk_group`` groups are kept and the others' biased scores set to −inf; "greedy" never
    groups. Ties go to the lower group / expert id (stable descending sort). Weights are the
    UNBIASED scores of the chosen experts, divided by (their sum + 1e-20) when
    ``norm_topk_prob``, then multiplied by ``routed_scaling_factor`` once.
    Returns (topk_weights [T, top_k] fp32, topk_ids [T, top_k] int32), ids in selection order
    (descending biased score).
    Raises ValueError for inconsistent settings (see ``check_gate_args``), TypeError/ValueError
    for a logits/bias of the wrong rank or size.
    Follows DeepSeek-V3 inference/model.py Gate and HF DeepseekV2 MoEGate (group_limited_greedy).
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() != 2:
        raise ValueError(f"logits must be a 2-D float tensor [T, E], got {getattr(logits, 'shape', logits)!r}")
    T, E = logits.shape
    grouped = check_gate_args(E, top_k=top_k, n_group=n_group, topk_group=topk_group,
                              scoring_func=scoring_func, topk_method=topk_method)
    # the launchers' rule (gate_topk): a bool / str / tensor is a TypeError (True was taken as 1.0 here)
    norm_topk_prob = check_bool("norm_topk_prob", norm_topk_prob)
    routed_scaling_factor = check_positive_float("routed_scaling_factor", routed_scaling_factor)
    if e_score_correction_bias is not None and tuple(e_score_correction_bias.shape) != (E,):
        raise ValueError(f"e_score_correction_bias must have shape [{E}], got {tuple(e_score_correction_bias.shape)}")
    x = logits.float()
    scores = torch.sigmoid(x) if scoring_func == "sigmoid" else torch.softmax(x, dim=-1)
    biased = scores if e_score_correction_bias is None else scores + e_score_correction_bias.float()
    if grouped:
        g = biased.view(T, n_group, E // n_group)
        if topk_method == "noaux_tc":
            top2 = torch.sort(g, dim=-1, descending=True, stable=True).values[..., : min(2, E // n_group)]
            group_scores = top2.sum(dim=-1)
        else:
            group_scores = g.amax(dim=-1)
        group_order = torch.sort(group_scores, dim=-1, descending=True, stable=True).indices[:, :topk_group]
        keep = torch.zeros(T, n_group, dtype=torch.bool, device=logits.device)
        keep.scatter_(1, group_order, True)
        keep = keep.unsqueeze(-1).expand(T, n_group, E // n_group).reshape(T, E)
        biased = biased.masked_fill(~keep, float("-inf"))
    topk_ids = torch.sort(biased, dim=-1, descending=True, stable=True).indices[:, :top_k]
    topk_weights = scores.gather(1, topk_ids)
    if norm_topk_prob:
        topk_weights = topk_weights / (topk_weights.sum(dim=-1, keepdim=True) + 1e-20)
    topk_weights = topk_weights * routed_scaling_factor
    return topk_weights.float(), topk_ids.to(torch.int32)


def router_gate_topk_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    e_score_correction_bias: torch.Tensor | None,
    *,
    shared_expert_id: int | None = None,
    **gate_kw,
) -> tuple[torch.Tensor, torch.Tensor]:
    """gate_topk_ref(x·weightᵀ in fp32, …), plus a (k+1)-th slot (shared_expert_id, weight 1.0) when given.

    x: [T, H] float; weight: [E, H] float (the router weight); gate_kw: gate_topk_ref's selection settings.
    Returns (topk_weights [T, k(+1)] fp32, topk_ids [T, k(+1)] int32). Spec of ``moe_gate.router_gate_topk``.
    """
    w, ids = gate_topk_ref(x.float() @ weight.float().t(), e_score_correction_bias, **gate_kw)
    if shared_expert_id is not None:
        T = x.shape[0]
        w = torch.cat([w, torch.ones(T, 1, dtype=w.dtype, device=w.device)], 1)
        ids = torch.cat([ids, torch.full((T, 1), shared_expert_id, dtype=ids.dtype, device=ids.device)], 1)
    return w, ids


def _padded(n: int, block_m: int) -> int:
    return (n + block_m - 1) // block_m * block_m


def moe_permute_ref(
    hidden: torch.Tensor,
    topk_ids: torch.Tensor,
    num_experts: int,
    block_m: int,
    hidden_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Group token rows by expert: permuted[row_map[t, j]] = hidden[t] for every (t, j) with topk_ids[t, j] ≥ 0.

    hidden: [T, H] bf16/fp16/fp32 or float8_e4m3fn, token rows.
    topk_ids: [T, k] int32/int64, expert id of each (token, slot); −1 = no expert (skipped).
    num_experts: E; block_m: each expert's segment is padded to a multiple of block_m rows.
    hidden_scale: [T, ceil(H/128)] fp32 per-token-group scales of an e4m3 ``hidden`` (move with their rows).
    Returns (permuted_hidden [M_pad, H] hidden.dtype, permuted_scale [M_pad, ceil(H/128)] fp32 or None,
    m_indices [M_pad] int32 (expert of each row, −1 on padding rows), row_map [T, k] int32 (row of each
    (token, slot), −1 where topk_ids is −1)). Segments are in expert order; inside one expert rows are
    ordered by token then slot. M_pad = Σ_e ceil(count_e / block_m)·block_m. Padding rows are zero here.
    Raises ValueError for out-of-range expert ids or mismatched shapes, TypeError (ValueError) naming num_experts /
    block_m unless an int (numpy integers too) ≥ 1.
    Layout follows DeepGEMM's m_grouped contiguous layout (DeepEP/SGLang moe_align_block_size).
    """
    num_experts = check_int("num_experts", num_experts, 1)  # as moe_permute: True was taken as 1 expert
    block_m = check_int("block_m", block_m, 1)
    if hidden.dim() != 2 or topk_ids.dim() != 2 or topk_ids.shape[0] != hidden.shape[0]:
        raise ValueError(f"hidden [T, H] and topk_ids [T, k] disagree: {tuple(hidden.shape)} vs {tuple(topk_ids.shape)}")
    T, H = hidden.shape
    k = topk_ids.shape[1]
    ids = topk_ids.long()
    if ((ids < -1) | (ids >= num_experts)).any():
        raise ValueError(f"topk_ids must lie in [-1, {num_experts}), got range [{int(ids.min())}, {int(ids.max())}]")
    counts = [int((ids == e).sum()) for e in range(num_experts)]
    m_pad = sum(_padded(c, block_m) for c in counts)
    dev = hidden.device
    permuted = torch.zeros(m_pad, H, dtype=hidden.dtype, device=dev)
    permuted_scale = None
    if hidden_scale is not None:
        if hidden_scale.shape[0] != T:
            raise ValueError(f"hidden_scale must have {T} rows, got {tuple(hidden_scale.shape)}")
        permuted_scale = torch.zeros(m_pad, hidden_scale.shape[1], dtype=hidden_scale.dtype, device=dev)
    m_indices = torch.full((m_pad,), -1, dtype=torch.int32, device=dev)
    row_map = torch.full((T, k), -1, dtype=torch.int32, device=dev)
    start = 0
    flat = ids.flatten()
    for e in range(num_experts):
        sel = torch.nonzero(flat == e).flatten()  # flat index t*k + j: token-then-slot order
        n = sel.numel()
        if n:
            rows = torch.arange(start, start + n, device=dev)
            tok = sel // k
            permuted[rows] = hidden[tok]
            if permuted_scale is not None:
                permuted_scale[rows] = hidden_scale[tok]
            m_indices[rows] = e
            row_map.view(-1)[sel] = rows.to(torch.int32)
        start += _padded(n, block_m)
    return permuted, permuted_scale, m_indices, row_map


def moe_unpermute_ref(
    expert_out: torch.Tensor,
    row_map: torch.Tensor,
    topk_weights: torch.Tensor,
    shared_output: torch.Tensor | None = None,
) -> torch.Tensor:
    """out[t] = Σ_j topk_weights[t, j] · expert_out[row_map[t, j]] (+ shared_output[t]), summed in fp32.

    expert_out: [M_pad, H] float, rows of the permuted layout (padding rows are never read).
    row_map: [T, k] int32, row of each (token, slot); −1 contributes nothing.
    topk_weights: [T, k] fp32.  shared_output: [T, H] or None, added in fp32 before the one cast.
    Returns out [T, H] in expert_out.dtype.
    Follows DeepSeek-V3 inference/model.py MoE (y[idx] += expert(x[idx]) * weights[idx, top]).
    """
    T, k = row_map.shape
    rm = row_map.long()
    valid = rm >= 0
    # gather through a zero row appended at the end, so −1 slots read it even when expert_out has no rows
    padded = torch.cat([expert_out.float(), expert_out.new_zeros(1, expert_out.shape[1], dtype=torch.float32)])
    rows = padded[torch.where(valid, rm, expert_out.shape[0])]  # [T, k, H]
    w = torch.where(valid, topk_weights.float(), torch.zeros((), device=rows.device))
    rows = torch.where(valid.unsqueeze(-1), rows, torch.zeros((), device=rows.device))
    out = (w.unsqueeze(-1) * rows).sum(dim=1)
    if shared_output is not None:
        out = out + shared_output.float()
    return out.to(expert_out.dtype)


def _dequant_act(a: torch.Tensor, a_scale: torch.Tensor) -> torch.Tensor:
    """[.., M, K] e4m3 × [.., M, ceil(K/128)] scales → fp32."""
    K = a.shape[-1]
    s = a_scale.float().repeat_interleave(FP8_BLOCK, dim=-1)[..., :K]
    return a.float() * s


def _dequant_weight(b: torch.Tensor, b_scale: torch.Tensor) -> torch.Tensor:
    """[N, K] e4m3 × [ceil(N/128), ceil(K/128)] scales → fp32."""
    N, K = b.shape
    s = b_scale.float().repeat_interleave(FP8_BLOCK, dim=0)[:N].repeat_interleave(FP8_BLOCK, dim=1)[:, :K]
    return b.float() * s


def grouped_fp8_gemm_contiguous_ref(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    m_indices: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """out[m] = (a[m]·a_scale[m]) @ (b[m_indices[m]]·b_scale[m_indices[m]])ᵀ, 0 where m_indices[m] = −1.

    a: [M, K] float8_e4m3fn, permuted activations; a_scale: [M, ceil(K/128)] fp32 (1×128 groups).
    b: [E, N, K] float8_e4m3fn (NT: K contiguous); b_scale: [E, ceil(N/128), ceil(K/128)] fp32 (128×128 blocks).
    m_indices: [M] int32, expert of each row, −1 = padding (output row 0, its a/a_scale never read).
    Returns out [M, N] out_dtype, computed from the dequantized operands in fp32.
    Raises ValueError naming m_indices when an id lies outside [−1, E).
    Follows DeepGEMM m_grouped_fp8_gemm_nt_contiguous.
    """
    M, K = a.shape
    E, N, _ = b.shape
    out = torch.zeros(M, N, dtype=torch.float32, device=a.device)
    mi = m_indices.long()
    bad = (mi < -1) | (mi >= E)
    if bool(bad.any()):
        pos = int(bad.nonzero()[0, 0])
        raise ValueError(f"m_indices[{pos}] = {int(mi[pos])} is out of range: entries must be in [-1, {E})")
    for e in range(E):
        rows = torch.nonzero(mi == e).flatten()
        if rows.numel():
            out[rows] = _dequant_act(a[rows], a_scale[rows]) @ _dequant_weight(b[e], b_scale[e]).t()
    return out.to(out_dtype)


def grouped_fp8_gemm_masked_ref(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    masked_m: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """out[g, m] = (a[g, m]·a_scale[g, m]) @ (b[g]·b_scale[g])ᵀ for m < masked_m[g]; rows ≥ masked_m[g] are 0 here.

    a: [E, M_max, K] float8_e4m3fn; a_scale: [E, M_max, ceil(K/128)] fp32 (1×128 groups).
    b: [E, N, K] float8_e4m3fn; b_scale: [E, ceil(N/128), ceil(K/128)] fp32.
    masked_m: [E] int32, valid rows of each group (0 ≤ masked_m[g] ≤ M_max).
    Returns out [E, M_max, N] out_dtype (the Triton kernel leaves rows ≥ masked_m[g] unwritten).
    Follows DeepGEMM m_grouped_fp8_gemm_nt_masked.
    """
    E, M_max, K = a.shape
    N = b.shape[1]
    out = torch.zeros(E, M_max, N, dtype=torch.float32, device=a.device)
    mm = masked_m.tolist()
    for g in range(E):
        m = int(mm[g])
        if m > 0:
            out[g, :m] = _dequant_act(a[g, :m], a_scale[g, :m]) @ _dequant_weight(b[g], b_scale[g]).t()
    return out.to(out_dtype)


def _quant_dequant_act(x: torch.Tensor, scale_ue8m0: bool = False) -> torch.Tensor:
    """Round [M, K] activations to e4m3 per 1×128 group (amax ≥ 1e-4, scale = amax/448, with scale_ue8m0 rounded
    up to a power of two) and back, in fp32."""
    M, K = x.shape
    pad = (-K) % FP8_BLOCK
    xg = torch.nn.functional.pad(x.float(), (0, pad)).view(M, -1, FP8_BLOCK)
    scale = xg.abs().amax(dim=-1, keepdim=True).clamp_min(1e-4) / 448.0
    if scale_ue8m0:
        scale = _pow2_ceil(scale)
    q = (xg / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return (q.float() * scale).view(M, -1)[:, :K]


def moe_experts_fp8_ref(
    x: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    w13: torch.Tensor,
    w13_scale_inv: torch.Tensor,
    w2: torch.Tensor,
    w2_scale_inv: torch.Tensor,
    shared_output: torch.Tensor | None = None,
    *,
    scale_ue8m0: bool = False,
) -> torch.Tensor:
    """y[t] = Σ_j topk_weights[t,j]·(q(silu(g)·u) @ W2_eᵀ), [g ‖ u] = q(x_t) @ W13_eᵀ, e = topk_ids[t,j] (+ shared_output).

    x: [T, H] bf16/fp16/fp32; topk_weights: [T, k] fp32; topk_ids: [T, k] int, −1 = skipped slot.
    w13: [E, 2I, H] e4m3 with w13_scale_inv [E, 2I/128, ceil(H/128)] fp32; w2: [E, H, I] e4m3 with
    w2_scale_inv [E, ceil(H/128), ceil(I/128)] fp32 (128×128 blocks). q(·) = per-token 1×128 FP8 rounding
    (as the Triton path quantizes activations; scale_ue8m0, a bool: each scale rounded up to a power of two first,
    DeepSeek-V3.1's scale_fmt "ue8m0"); GEMM outputs are rounded to x.dtype, as the kernels store them.
    Returns y [T, H] in x.dtype, summed in fp32. One expert at a time: memory stays one dequantized expert.
    Follows DeepSeek-V3 inference/model.py MoE (act_quant + fp8_gemm experts), routed part.
    """
    ue8m0 = check_bool("scale_ue8m0", scale_ue8m0)
    T, H = x.shape
    I = w2.shape[2]
    out = torch.zeros(T, H, dtype=torch.float32, device=x.device)
    ids = topk_ids.long()
    for e in torch.unique(ids[ids >= 0]).tolist():
        tok, slot = torch.where(ids == e)
        gu = (_quant_dequant_act(x[tok], ue8m0) @ _dequant_weight(w13[e], w13_scale_inv[e]).t()).to(x.dtype).float()
        h = torch.nn.functional.silu(gu[:, :I]) * gu[:, I:]
        ye = (_quant_dequant_act(h, ue8m0) @ _dequant_weight(w2[e], w2_scale_inv[e]).t()).to(x.dtype).float()
        out.index_add_(0, tok, ye * topk_weights[tok, slot, None].float())
    if shared_output is not None:
        out = out + shared_output.float()
    return out.to(x.dtype)


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """DeepGEMM's similarity: 1 − 2·Σxy / Σ(x² + y²), in float64 (0 = identical)."""
    x, y = x.double(), y.double()
    denom = (x * x + y * y).sum()
    if denom == 0:
        return 0.0
    return float(1 - 2 * (x * y).sum() / denom)


__all__ = [
    "gate_topk_ref",
    "router_gate_topk_ref",
    "moe_permute_ref",
    "moe_unpermute_ref",
    "grouped_fp8_gemm_contiguous_ref",
    "grouped_fp8_gemm_masked_ref",
    "moe_experts_fp8_ref",
    "calc_diff",
    "check_gate_args",
]
