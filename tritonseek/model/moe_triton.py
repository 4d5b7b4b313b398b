"""Routed experts on the Triton backend: quant → permute → grouped FP8 GEMM → SiLU·mul+quant →
grouped FP8 GEMM → unpermute (fp32 weighted sum over the top-k, deterministic). On the masked (decode)
path the quant runs inside the permute and SiLU·mul+quant inside the first GEMM's epilogue (bf16
activations, I % 128 == 0): four launches for the routed experts.

Two layouts (DeepGEMM's), chosen by the token count T of the call:

* **masked** (decode, T ≤ ``MASKED_MAX_TOKENS``): each expert gets a slab of ``max_m = T`` rows
  (enough: a DeepSeek gate never picks one expert twice for a token), ``masked_m`` stays on the device
  and only the ``min(E, T·k)`` experts that can hold a row get GEMM programs. No host sync at all, so
  the call can be captured in a CUDA graph (the decode step).
* **contiguous** (prefill, T > ``MASKED_MAX_TOKENS``): each expert's rows padded to the GEMM's 128-row
  tile, padding rows skipped. Outside graph capture one host sync trims the layout to its exact size;
  under capture it runs graph-safe at the bound T·k + E·127 rows.

Why 128: the masked slabs hold E·T rows, the contiguous layout ≈ (#active experts)·128 rows (bound
T·k + E·127). For DeepSeek-V3 (E = 256, k = 8) E·T is below the contiguous bound for T ≤ 131 and below
the expected exact size (256·(1 − (1 − 8/256)^T)·128 rows) for T ≤ 126, and on decode-sized segments
(~T·k/E rows per expert) the masked GEMM's 64-row tiles do half the padded MMA work of the contiguous
128-row tiles. Past that the masked slabs grow linearly in T while the contiguous layout stays bounded.
Both layouts give the same output (V3 widths on the H200: calc_diff vs the FP8 reference 6e-5 / 1.5e-4
at T = 1 / 64, identical for the two).

Decode (``MoE.forward``, T ≤ ``MoE.shared_group_max_t``): the router GEMV + top-k is one kernel
(``router_gate_topk``, bf16 weight) that appends the shared expert as slot k (id E, weight 1), and the
shared expert runs as group E of the masked GEMMs (``MoE.stacked_weights``: its weights are that group):
five launches for the whole layer. V3 layer, graph replay, H200 (W2, commit d1c41c5, same run): T=1
124.3 µs against 133.9 µs for the unfused path (fp32 GEMV + gate_topk + the shared expert's own GEMMs), T=2
224.5 / 233.3, T=4 354.4 / 382.6; floor (weights touched / 4.27 TB/s) 93.7 / 176.2 / 330.9 µs. At T=1 the
kernels: GEMM1 (+SiLU·mul+quant) 67.5 µs, down GEMM 34.8 µs (396 MB of FP8 weights: 3.9 TB/s), router
7.4 µs, permute 3.5 µs, unpermute 2.2 µs, launch gaps 8.8 µs.

``pdl`` (``MoE.decode_pdl``, default 2): permute → GEMM1 → down → unpermute as programmatic dependent launches,
GEMM1's programs prefetching the shared expert's first 16 K blocks into L2 while the permute runs. V3 layer,
H200 (h4moe W2, db1a27e, graph replay, one run; W1 at 7d06960 in brackets), plain / PDL / PDL + prefetch:
T=1 123.5 / 121.8 / 120.4 µs (126.8 / 123.3 / 121.0), T=2 230.0 / — / 228.4, T=4 359.2 / — / 356.7, T=8 650.4 /
— / 645.9; with the T=2 entry of ``DECODE_CONFIGS`` T=2 is 211.8. Not kept: the down GEMM prefetching its own
weights (its programs start with GEMM1's, so the lines are evicted before use: T=1 124.0), 28 prefetched K
blocks (121.7), gate and up in one K loop (1-2% slower at T=1/2/4/8). Under PDL the profiler's per-kernel
times include each kernel's wait for the one before it.
"""

from __future__ import annotations

import torch

from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8, silu_mul_quant_fp8
from tritonseek.kernels.grouped_gemm import M_ALIGNMENT, get_config, grouped_fp8_gemm_contiguous
from tritonseek.kernels._utils import check_bool, check_int, check_tensor
from tritonseek.kernels.grouped_gemm_masked import grouped_fp8_gemm_masked, grouped_fp8_gemm_masked_silu_quant
from tritonseek.kernels.moe_routing import moe_permute, moe_permute_masked, moe_unpermute
from tritonseek.kernels.moe_routing_checks import check_ids_in_range

MASKED_MAX_TOKENS = 128
LAYOUTS = ("masked", "contiguous")
# Masked decode path: launch-config keys merged over the GEMMs' defaults, per (T, 2I, H), (GEMM1, down).
# V3 at T=2 (~17 groups with the shared expert): GEMM1's 17·16 = 272 programs are 8 more than 2 per SM (6 stages,
# 110 KB of shared memory each) can hold, and those 8 then stream alone after the first wave; 4 stages (3 programs
# per SM) make it one wave: layer 211.8 µs against 228.4 (H200 W2, db1a27e, graph replay, same run). T=3 (~25
# groups, 400 programs) would leave a 4-program second wave at 3 per SM, so the table names T=2 only.
DECODE_CONFIGS: dict[tuple[int, int, int], tuple[dict | None, dict | None]] = {
    (2, 4096, 7168): ({"num_stages": 4}, None),
}


def choose_layout(num_tokens: int) -> str:
    """"masked" for T ≤ MASKED_MAX_TOKENS (decode), else "contiguous" (prefill)."""
    return "masked" if num_tokens <= MASKED_MAX_TOKENS else "contiguous"


def moe_experts_triton(
    x: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    moe,
    *,
    layout: str | None = None,
    shared_output: torch.Tensor | None = None,
    weights: tuple[torch.Tensor, ...] | None = None,
    pdl: int = 0,
    shared_group: int | None = None,
    configs: tuple[dict | None, dict | None] | None = None,
    check_ids: bool = True,
    scale_ue8m0: bool | None = None,
) -> torch.Tensor:
    """y[t] = Σ_j topk_weights[t,j]·down_e(silu(gate_e(x_t))·up_e(x_t)), e = topk_ids[t,j] (+ shared_output[t]).

    x: [T, H] bf16 (or fp16/fp32) activations; topk_weights: [T, k] fp32; topk_ids: [T, k] int32/int64
    expert ids in [0, E) or −1 (slot skipped), distinct within a row (as every DeepSeek gate gives; a
    repeated id beyond T entries per expert would be dropped on the masked path).
    moe: the :class:`tritonseek.model.moe.MoE` holding the stacked FP8 weights (w13 [E, 2I, H] e4m3 +
    w13_scale_inv [E, 2I/128, ceil(H/128)], w2 [E, H, I] e4m3 + w2_scale_inv [E, ceil(H/128), I/128]).
    layout: "masked" | "contiguous" | None (None: :func:`choose_layout` by T).
    shared_output: optional [T, H] added in fp32 inside the unpermute (fused shared-expert add).
    weights: optional (w13, w13_scale_inv, w2, w2_scale_inv) used instead of moe's, e.g. ``moe.stacked_weights()``
        (E+1 groups, group E = the shared expert, reached through topk_ids == E with weight 1).
    pdl: masked path on CUDA sm_90+ (ignored elsewhere): 0 plain launches; 1 the permute → GEMM1 → down →
        unpermute chain as programmatic dependent launches (each kernel's programs start while the one before
        finishes and wait for it before reading its inputs); 2 that, plus GEMM1's programs pulling
        ``shared_group``'s first weight K blocks into L2 before their wait (the only weights known before the
        routing lands). Same result for every value.
    shared_group: the group every token is routed to (the stacked shared expert, E−1 of ``weights``), or None;
        an int in [0, E) (E = the groups of the weights) for every pdl value, though only pdl=2 uses it.
    configs: masked path: keys merged over the default launch config of GEMM1 and of the down GEMM (e.g.
        PREFETCH: L2-prefetched K blocks under PDL (down: its own groups'), num_stages); None: the
        measured per-shape entries of ``DECODE_CONFIGS`` (T, 2I, H), if any.
    scale_ue8m0: every activation quant here (x's, h's) rounds its 1×128 scales up to a power of two (DeepSeek-V3.1's
        ``scale_fmt: "ue8m0"``); a bool, or None (default): the setting of moe's kernel table (``moe.ops.scale_ue8m0``,
        which the model takes from its config; False when moe has no ``ops``).
    Returns y [T, H] in x.dtype. The masked path (and the contiguous one while a CUDA graph is being
    captured) never synchronizes with the host. Raises, naming the argument: ValueError for an unknown layout,
    pdl not 0/1/2, shared_group out of [0, E), weights not a 4-tuple, topk_weights / topk_ids not both [T, k];
    TypeError for pdl or shared_group not an int (numpy integers are ints; a bool is not), scale_ue8m0 not a bool or
    None, and wrong x / topk_ids /
    topk_weights dtypes; the launchers raise for other bad shapes/dtypes. topk_ids outside [−1, E) raise ValueError
    naming the entry, on CUDA only with check_ids (default; one device→host sync, skipped during CUDA-graph capture;
    the MoE layer passes False for its own gate's ids, and unchecked out-of-range CUDA ids are undefined behaviour).
    Semantics: DeepSeek-V3 inference/model.py MoE (routed part); layouts: DeepGEMM m_grouped contiguous / masked.
    """
    check_tensor("x", x, ndim=2)
    check_tensor("topk_ids", topk_ids, dtype=(torch.int32, torch.int64), ndim=2)
    check_tensor("topk_weights", topk_weights, dtype=torch.float32, ndim=2)
    T, H = x.shape
    if topk_ids.shape[0] != T or topk_weights.shape != topk_ids.shape:
        raise ValueError(f"topk_weights {tuple(topk_weights.shape)} and topk_ids {tuple(topk_ids.shape)} must both be "
                         f"[T, k] with T = {T} (x's rows)")
    if layout is None:
        layout = choose_layout(T)
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not one of {LAYOUTS}")
    pdl = check_int("pdl", pdl, 0, 2)  # a numpy integer → int (it reached the launchers as a numpy bool)
    if scale_ue8m0 is None:
        scale_ue8m0 = getattr(getattr(moe, "ops", None), "scale_ue8m0", False)
    ue8m0 = check_bool("scale_ue8m0", scale_ue8m0)
    if weights is not None and (not isinstance(weights, (tuple, list)) or len(weights) != 4):
        raise ValueError("weights must be a tuple (w13, w13_scale_inv, w2, w2_scale_inv) or None")
    w13, w13_s, w2, w2_s = weights if weights is not None else (moe.w13, moe.w13_scale_inv, moe.w2, moe.w2_scale_inv)
    E = w13.shape[0]  # this rank's experts (all of them without expert parallelism), + 1 when stacked
    if shared_group is not None:  # checked whatever pdl (used only with pdl=2)
        shared_group = check_int("shared_group", shared_group, 0, E - 1)
    check_ids_in_range("topk_ids", topk_ids, E, check_ids)  # once here; the launchers below skip it
    k = topk_ids.shape[1]
    two_i = w13.shape[1]
    if layout == "masked":
        max_m = max(T, 1)
        # programs only for the groups that can be non-empty (≤ T·k of them); expected rows pick the config
        em = max(1, (T * k) // E)
        kw = dict(expected_m=em, max_active_groups=min(E, T * k), pdl=pdl > 0)
        # PDL prefetch: GEMM1 only the shared group's weights (masked_m is still being written by the permute
        # when its programs start), the down GEMM its own groups' (masked_m final by then)
        if configs is None:
            configs = DECODE_CONFIGS.get((T, two_i, H), (None, None))
        pf1 = pdl == 2 and shared_group is not None
        kw1 = dict(kw, prefetch_group=shared_group if pf1 else None,
                   config=_merged_config(em, two_i, w13.shape[2], configs[0], None if pf1 else 0))
        kw2 = dict(kw, config=_merged_config(em, H, w2.shape[2], configs[1], 0 if pdl < 2 else None, 0))
        # 1×128 FP8 quant of x inside the permute (one launch with the routing and copies at decode sizes)
        a, a_s, masked_m, row_map = moe_permute_masked(x, topk_ids, E, max_m, quantize=True, pdl=pdl > 0,
                                                          check_ids=False, scale_ue8m0=ue8m0)
        if x.dtype == torch.bfloat16 and two_i % 256 == 0:
            # SiLU·mul + FP8 quant in GEMM1's epilogue (same result as the three steps below, valid rows only)
            h_q, h_s = grouped_fp8_gemm_masked_silu_quant(a, a_s, w13, w13_s, masked_m, scale_ue8m0=ue8m0, **kw1)
        else:
            gate_up = grouped_fp8_gemm_masked(a, a_s, w13, w13_s, masked_m, out_dtype=x.dtype, **kw1)
            h_q, h_s = silu_mul_quant_fp8(gate_up.view(E * max_m, two_i), 128, ue8m0)
            h_q, h_s = h_q.view(E, max_m, -1), h_s.view(E, max_m, -1)  # h_s stays MN-major inside each group
        down = grouped_fp8_gemm_masked(h_q, h_s, w2, w2_s, masked_m, out_dtype=x.dtype, **kw2)
        return moe_unpermute(down.view(E * max_m, H), row_map, topk_weights, shared_output, pdl=pdl > 0,
                             check_ids=False)
    x_q, x_s = per_token_group_quant_fp8(x, 128, ue8m0)
    graph_safe = x.is_cuda and torch.cuda.is_current_stream_capturing()
    a, a_s, m_indices, row_map = moe_permute(x_q, topk_ids, E, M_ALIGNMENT, hidden_scale=x_s, graph_safe=graph_safe,
                                             check_ids=False)
    gemm = _contiguous_gemm(x.device)
    gate_up = gemm(a, a_s, w13, w13_s, m_indices, out_dtype=x.dtype)
    h_q, h_s = silu_mul_quant_fp8(gate_up, 128, ue8m0)
    down = gemm(h_q, h_s, w2, w2_s, m_indices, out_dtype=x.dtype)
    return moe_unpermute(down, row_map, topk_weights, shared_output, check_ids=False)


def _merged_config(expected_m: int, n: int, k: int, override: dict | None, force_prefetch: int | None,
                   default_prefetch: int | None = None) -> dict:
    """The masked GEMM's default config, then ``override``'s keys; PREFETCH = force_prefetch when given (PDL
    off / no prefetch there), else the override's, else default_prefetch (None: the launcher's depth)."""
    cfg = dict(get_config("masked", expected_m, n, k), **(override or {}))
    pf = force_prefetch if force_prefetch is not None else cfg.get("PREFETCH", default_prefetch)
    if pf is None:
        cfg.pop("PREFETCH", None)
    else:
        cfg["PREFETCH"] = pf
    return cfg


def _contiguous_gemm(device: torch.device):
    """The contiguous grouped GEMM for this device: the warp-specialized Gluon kernel on a Hopper GPU
    (V3's routed 4k-token prefill layout on the H200: 625 / 615 TFLOP/s vs 499 / 439 for the tl kernel,
    same result), the tl kernel elsewhere (other GPUs, the CPU interpreter). Same operands and output."""
    if device.type == "cuda":  # imported only here: the CPU path never loads the Gluon modules
        from tritonseek.kernels.fp8_gemm_ws import gluon_ws_supported

        if gluon_ws_supported(device):
            from tritonseek.kernels.grouped_gemm_ws import grouped_fp8_gemm_contiguous_ws

            return grouped_fp8_gemm_contiguous_ws
    return grouped_fp8_gemm_contiguous
