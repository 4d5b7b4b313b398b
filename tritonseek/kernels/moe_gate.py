"""DeepSeek MoE router in Triton: gate top-k on router logits, and the decode router (GEMV + top-k fused).

* ``gate_topk``: logits [T, E] → (topk_weights, topk_ids), one program per token.
* ``router_gate_topk``: x [T, H] and the gate weight [E, H] (bf16 or fp32, products summed in fp32) →
  (topk_weights, topk_ids) in ONE launch: programs own (expert block, K slice, token block) pieces of the
  logits, write fp32 partials, and the last program of each token block to arrive (an acq_rel counter)
  sums the partials in a fixed order and runs the same selection as ``gate_topk``. Deterministic (no
  float atomics); graph-safe (the counter resets itself). Optionally appends a shared expert as one
  more slot (id ``shared_expert_id``, weight 1) so the masked GEMMs can run it as one more group.

Both select exactly as ``tritonseek.kernels.reference.moe.gate_topk_ref`` (the spec).
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from tritonseek.kernels._utils import (
    check_bool,
    check_int,
    check_positive_float,
    check_runnable_device,
    check_tensor,
    interpreter_active,
)
from tritonseek.kernels._host import cdiv, next_pow2
from tritonseek.kernels.fp8_quant import _pdl_capable
from tritonseek.kernels.reference.moe import check_gate_args

# Fused router: experts per program, K slice per program, tokens per program (see _router_config).
_ROUTER_MAX_T_TILES = 4096
_COUNTERS: dict[tuple[str, int | None], torch.Tensor] = {}
_POW2 = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1 and not v & (v - 1)  # noqa: E731
# BLOCK_E is bounded by the [BLOCK_E, BLOCK_K ≤ 1024] weight tile in registers (2**20 is Triton's tensor limit: a
# larger one failed inside the launch naming no argument, tester22 #8), BLOCK_T by the unrolled per-token loop
_CONFIG_KEYS = {"BLOCK_E": lambda v: _POW2(v) and v <= 128, "BLOCK_T": lambda v: _POW2(v) and v <= 64,
                "num_warps": lambda v: _POW2(v) and v <= 16,
                "PDL": lambda v: isinstance(v, bool), "TRIGGER": lambda v: isinstance(v, bool)}


def _router_config(T: int, E: int, H: int, config: dict | None = None) -> dict:
    """BLOCK_E, BLOCK_K, BLOCK_T, num_warps, PDL: V3 (E 256, H 7168) → 32 expert blocks × 7 K slices = 224 programs
    per token block, each loading an 8 × 1024 weight tile at once (the whole 3.7 MB bf16 weight in flight); H200
    W2 (d1c41c5), T=1 graph replay: BLOCK_E 4 / 8 / 16 → 15.2 / 14.3 / 22.7 µs (one run each).
    One token per block up to 16 tokens: the selections of the tokens then run in parallel (the last program
    of a block selects for each of its tokens in turn: 8 per block made T=8 3% slower than the unfused router
    on the H200, W1) and the weight is re-read from L2 per token. PDL (Hopper, not under the interpreter):
    launched as a programmatic dependent, the weight streams in while the previous kernel (the post-attention
    RMSNorm, which triggers its dependents at entry) finishes (H200 W1, norm → router graph chain, T=1: 7.31 µs
    vs 8.57 without PDL; BLOCK_E / num_warps variants 7.15-7.72, within noise); TRIGGER (off by default): the router
    also releases its own dependents at entry. H200 A/B at d1af4b1 (V3 4-layer slice, b1 ctx 1k decode step as
    one graph replay, median of 3 × 40, same process): TRIGGER on 1295.5 / 1304.8 µs, off 1227.1 µs, router PDL
    off 1231.0 µs (likely because the released GEMM1 programs hold SMs while they wait for the routing). ``config``
    overrides any of BLOCK_E / BLOCK_T / num_warps / PDL / TRIGGER."""
    cfg = dict(
        BLOCK_K=min(1024, next_pow2(max(H, 16))),
        # the interpreter runs programs one by one: fewer, wider ones there (still several per token block)
        BLOCK_E=min(32 if interpreter_active() else 8, next_pow2(E)),
        BLOCK_T=1 if T <= 16 else 8, num_warps=4, PDL=True, TRIGGER=False,
    )
    cfg.update(config or {})
    return cfg


@triton.jit
def _order_key(v):
    # fp32 → int32 with the same order as the values (−0.0 folded into +0.0 by the + 0.0, as comparisons treat
    # them), every NaN mapped to INT32_MAX: above +inf, as torch's sort orders NaN
    bits = (v + 0.0).to(tl.int32, bitcast=True)
    return tl.where(v != v, 2147483647, bits ^ ((bits >> 31) & 0x7FFFFFFF))


@triton.jit
def _key_value(k):
    # inverse of _order_key (INT32_MAX → a NaN)
    return (k ^ ((k >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)


@triton.jit
def _gate_select(
    x, bias_ptr, w_ptr, ids_ptr, t, stride_b, routed_scaling_factor, shared_id,
    N_GROUP: tl.constexpr, GROUP_SIZE: tl.constexpr, NG_PAD: tl.constexpr, GS_PAD: tl.constexpr,
    TOPK_GROUP: tl.constexpr, TOP_K: tl.constexpr, K_PAD: tl.constexpr, OUT_K: tl.constexpr,
    SOFTMAX: tl.constexpr, HAS_BIAS: tl.constexpr, GROUPED: tl.constexpr, GROUP_TOP2: tl.constexpr,
    NORM: tl.constexpr,
):
    # x: [NG_PAD, GS_PAD] fp32 logits of token t held as (group, expert-in-group); padding lanes are −inf.
    # Writes w[t, :OUT_K] fp32 and ids[t, :OUT_K] int32 (rows of OUT_K); OUT_K = TOP_K + 1 appends
    # (shared_id, 1.0) after the routed slots.
    g = tl.arange(0, NG_PAD)[:, None]
    j = tl.arange(0, GS_PAD)[None, :]
    valid = (g < N_GROUP) & (j < GROUP_SIZE)
    e = g * GROUP_SIZE + j
    if SOFTMAX:
        m = tl.max(tl.max(x, axis=1), axis=0)
        p = tl.where(valid, tl.exp(x - m), 0.0)
        s = p / tl.sum(tl.sum(p, axis=1), axis=0)
    else:
        s = 1.0 / (1.0 + tl.exp(-x))
    s = tl.where(valid, s, 0.0)
    biased = s
    if HAS_BIAS:
        biased = s + tl.load(bias_ptr + e * stride_b, mask=valid, other=0.0).to(tl.float32)
    biased = tl.where(valid, biased, float("-inf"))
    # Order keys (int32, NaN above +inf, −0.0 = +0.0): every comparison below is on keys, so a NaN score orders
    # as the reference's stable descending sort puts it (first), independent of how max treats NaN.
    bk = _order_key(biased)
    if GROUPED:
        k1 = tl.max(bk, axis=1)
        if GROUP_TOP2:
            first = tl.min(tl.where(bk == k1[:, None], j, GS_PAD), axis=1)
            k2 = tl.max(tl.where(j == first[:, None], -2147483647 - 1, bk), axis=1)
            gscore = _key_value(k1) + _key_value(k2)  # the top-2 sum (NaN if either is NaN, as the reference)
        else:
            gscore = _key_value(k1)
        gidx = tl.arange(0, NG_PAD)
        gk = tl.where(gidx < N_GROUP, _order_key(gscore), -2147483647 - 1)
        keep = gidx < 0
        for _ in tl.static_range(TOPK_GROUP):
            gm = tl.max(gk, axis=0)
            gsel = tl.min(tl.where(gk == gm, gidx, NG_PAD), axis=0)
            keep = keep | (gidx == gsel)
            gk = tl.where(gidx == gsel, -2147483647 - 1, gk)
        bk = tl.where(keep[:, None], bk, -2139095041)  # dropped groups: the key of −inf
    kk = tl.arange(0, K_PAD)
    w_acc = tl.zeros([K_PAD], dtype=tl.float32)
    id_acc = tl.zeros([K_PAD], dtype=tl.int32)
    # one max per pick: an int64 key = the order key of the biased score above (BIG − e), so equal scores pick
    # the lowest expert id
    BIG: tl.constexpr = NG_PAD * GS_PAD * 2
    key = (bk.to(tl.int64) << 32) | (BIG - e).to(tl.int64)
    for i in tl.static_range(TOP_K):
        kmax = tl.max(tl.max(key, axis=1), axis=0)
        sel = BIG - (kmax & 0xFFFFFFFF).to(tl.int32)
        id_acc = tl.where(kk == i, sel, id_acc)
        key = tl.where(e == sel, -9223372036854775807 - 1, key)
        if K_PAD * NG_PAD * GS_PAD > 4096:  # large E: the weight of each pick on its own
            w_acc = tl.where(kk == i, tl.sum(tl.sum(tl.where(e == sel, s, 0.0), axis=1), axis=0), w_acc)
    if K_PAD * NG_PAD * GS_PAD <= 4096:  # the k weights in one batched reduction
        hit = e[None, :, :] == tl.where(kk < TOP_K, id_acc, -1)[:, None, None]
        w_acc = tl.sum(tl.sum(tl.where(hit, s[None, :, :], 0.0), axis=2), axis=1)
    if NORM:
        w_acc = w_acc / (tl.sum(tl.where(kk < TOP_K, w_acc, 0.0), axis=0) + 1e-20)
    w_acc = w_acc * routed_scaling_factor
    if OUT_K > TOP_K:  # the shared expert as one more slot, weight exactly 1
        w_acc = tl.where(kk == TOP_K, 1.0, w_acc)
        id_acc = tl.where(kk == TOP_K, shared_id, id_acc)
    kmask = kk < OUT_K
    tl.store(w_ptr + t * OUT_K + kk, w_acc, mask=kmask)
    tl.store(ids_ptr + t * OUT_K + kk, id_acc, mask=kmask)


@triton.jit
def _gate_topk_kernel(
    logits_ptr, bias_ptr, w_ptr, ids_ptr,
    stride_lt, stride_le, stride_b, routed_scaling_factor,
    N_GROUP: tl.constexpr, GROUP_SIZE: tl.constexpr, NG_PAD: tl.constexpr, GS_PAD: tl.constexpr,
    TOPK_GROUP: tl.constexpr, TOP_K: tl.constexpr, K_PAD: tl.constexpr,
    SOFTMAX: tl.constexpr, HAS_BIAS: tl.constexpr, GROUPED: tl.constexpr, GROUP_TOP2: tl.constexpr,
    NORM: tl.constexpr,
):
    # logits: [T, E] (strides stride_lt, stride_le), E = N_GROUP * GROUP_SIZE, any float dtype
    # bias:   [E] fp32 (stride_b), selection only
    # w:      [T, TOP_K] fp32 contiguous; ids: [T, TOP_K] int32 contiguous
    # One program per token; experts held as a [NG_PAD, GS_PAD] tile (group, expert-in-group).
    t = tl.program_id(0).to(tl.int64)
    g = tl.arange(0, NG_PAD)[:, None]
    j = tl.arange(0, GS_PAD)[None, :]
    valid = (g < N_GROUP) & (j < GROUP_SIZE)
    e = g * GROUP_SIZE + j
    x = tl.load(logits_ptr + t * stride_lt + e * stride_le, mask=valid, other=float("-inf")).to(tl.float32)
    _gate_select(x, bias_ptr, w_ptr, ids_ptr, t, stride_b, routed_scaling_factor, 0,
                 N_GROUP, GROUP_SIZE, NG_PAD, GS_PAD, TOPK_GROUP, TOP_K, K_PAD, TOP_K,
                 SOFTMAX, HAS_BIAS, GROUPED, GROUP_TOP2, NORM)


@triton.jit
def _router_gate_kernel(
    x_ptr, wt_ptr, part_ptr, count_ptr, bias_ptr, w_ptr, ids_ptr,
    T, H, stride_xt, stride_we, stride_b, routed_scaling_factor, shared_id,
    E: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_T: tl.constexpr,
    N_GROUP: tl.constexpr, GROUP_SIZE: tl.constexpr, NG_PAD: tl.constexpr, GS_PAD: tl.constexpr,
    TOPK_GROUP: tl.constexpr, TOP_K: tl.constexpr, K_PAD: tl.constexpr, OUT_K: tl.constexpr,
    SOFTMAX: tl.constexpr, HAS_BIAS: tl.constexpr, GROUPED: tl.constexpr, GROUP_TOP2: tl.constexpr,
    NORM: tl.constexpr, PDL: tl.constexpr = False, TRIGGER: tl.constexpr = True,
):
    # x:     [T, H] bf16/fp16/fp32 (stride_xt, unit column stride); wt: [E, H] bf16/fp32 gate weight (stride_we)
    # part:  [SPLIT_K, T, E] fp32 partial logits; count: [num T blocks] int32 arrival counters (zero at rest)
    # program (e block, K slice, T block): part[ks, t, e] = Σ_{k in slice} x[t, k]·wt[e, k] (fp32 products/sums)
    # The last program of a T block to arrive sums part over ks = 0..SPLIT_K−1 (fixed order) and selects.
    if PDL and TRIGGER:
        # the next kernel (the masked permute, itself a programmatic dependent that releases GEMM1, whose shared-
        # expert weight prefetch then overlaps this router) may launch now; it waits for our completion to read
        tl.extra.cuda.gdc_launch_dependents()
    pid_e = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_t = tl.program_id(2)
    re = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    rk = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    km = rk < H
    wv = tl.load(wt_ptr + re[:, None] * stride_we + rk[None, :], mask=(re[:, None] < E) & km[None, :],
                 other=0.0).to(tl.float32)
    if PDL:
        # launched as a programmatic dependent: the weight tile (the kernel's bytes, independent of the previous
        # kernel) is loaded above while that kernel finishes; x, the partials and the counter only after it has
        tl.extra.cuda.gdc_wait()
    for i in tl.static_range(BLOCK_T):
        t = pid_t * BLOCK_T + i
        if t < T:
            xv = tl.load(x_ptr + t.to(tl.int64) * stride_xt + rk, mask=km, other=0.0).to(tl.float32)
            acc = tl.sum(wv * xv[None, :], axis=1)
            tl.store(part_ptr + (pid_k * T + t).to(tl.int64) * E + re, acc, mask=re < E)
    tl.debug_barrier()  # every thread's partials are stored before the (release) arrival below
    arrived = tl.atomic_add(count_ptr + pid_t, 1, sem="acq_rel", scope="gpu")
    if arrived == tl.num_programs(0) * tl.num_programs(1) - 1:
        g = tl.arange(0, NG_PAD)[:, None]
        j = tl.arange(0, GS_PAD)[None, :]
        valid = (g < N_GROUP) & (j < GROUP_SIZE)
        e = g * GROUP_SIZE + j
        for r in range(BLOCK_T):
            tok = pid_t * BLOCK_T + r
            if tok < T:
                lg = tl.zeros([NG_PAD, GS_PAD], dtype=tl.float32)
                for ks in tl.static_range(SPLIT_K):
                    lg += tl.load(part_ptr + (ks * T + tok).to(tl.int64) * E + e, mask=valid, other=0.0,
                                  cache_modifier=".cg")
                lg = tl.where(valid, lg, float("-inf"))
                _gate_select(lg, bias_ptr, w_ptr, ids_ptr, tok.to(tl.int64), stride_b, routed_scaling_factor,
                             shared_id, N_GROUP, GROUP_SIZE, NG_PAD, GS_PAD, TOPK_GROUP, TOP_K, K_PAD, OUT_K,
                             SOFTMAX, HAS_BIAS, GROUPED, GROUP_TOP2, NORM)
        tl.atomic_xchg(count_ptr + pid_t, 0, sem="relaxed", scope="gpu")  # ready for the next launch


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def _select_constants(E, *, top_k, n_group, topk_group, scoring_func, topk_method, norm_topk_prob, grouped,
                      out_k):
    ng = n_group if grouped else 1
    gs = E // ng
    return dict(
        N_GROUP=ng, GROUP_SIZE=gs, NG_PAD=next_pow2(ng), GS_PAD=next_pow2(gs),
        TOPK_GROUP=topk_group if grouped else 1, TOP_K=top_k, K_PAD=next_pow2(out_k),
        SOFTMAX=scoring_func == "softmax", GROUPED=grouped, GROUP_TOP2=topk_method == "noaux_tc" and gs >= 2,
        NORM=bool(norm_topk_prob),
    )


def _check_bias_and_scalars(bias, E, device, norm_topk_prob, routed_scaling_factor) -> tuple[bool, float]:
    """(norm_topk_prob, routed_scaling_factor) as bool / float (numpy bools and floats accepted), after the checks."""
    norm_topk_prob = check_bool("norm_topk_prob", norm_topk_prob)
    routed_scaling_factor = check_positive_float("routed_scaling_factor", routed_scaling_factor)
    if bias is not None:
        check_tensor("e_score_correction_bias", bias, dtype=torch.float32, ndim=1, device=device)
        if bias.shape[0] != E:
            raise ValueError(f"e_score_correction_bias must have shape [{E}], got {tuple(bias.shape)}")
    return norm_topk_prob, routed_scaling_factor


def gate_topk(
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

    logits: [T, E] fp32/bf16/fp16/fp64 router logits (any strides), rounded to fp32 and scored in fp32, as
        ``gate_topk_ref`` does (fp64 logits give the reference's result); fp8 and other dtypes raise TypeError.
    top_k / n_group / topk_group: ints (numpy integers too; a bool, float or tensor is a TypeError naming it).
    scoring_func: "sigmoid" | "softmax"; topk_method: "noaux_tc" | "group_limited_greedy" | "greedy" (a non-str is
    a TypeError naming it, another name a ValueError).
    norm_topk_prob: a bool or numpy bool; routed_scaling_factor: a finite float > 0 (numpy floats too; bools rejected).
    e_score_correction_bias: [E] fp32 (or None), added for selection only.
    Returns (topk_weights [T, top_k] fp32, topk_ids [T, top_k] int32), in descending biased-score
    order; ties go to the lower group/expert id; dropped groups are masked with −inf; weights are
    the unbiased scores, divided by (sum + 1e-20) when norm_topk_prob, × routed_scaling_factor once.
    One program per token (E ≤ 4096). Covers DeepSeek-V3/R1 (256 experts, 8 groups, 4 kept, k=8,
    noaux_tc), V2-Lite (64, softmax, greedy, k=6), V2 (160, 8 groups, group_limited_greedy), Kimi-K2 (384, 1 group).
    Raises ValueError for inconsistent settings (as ``gate_topk_ref``), bad shapes/devices or a non-finite /
    non-positive routed_scaling_factor; TypeError for wrong dtypes or a non-bool norm_topk_prob / non-float
    routed_scaling_factor (each naming the argument).
    Follows DeepSeek-V3 inference/model.py Gate and HF DeepseekV2 MoEGate.
    """
    check_tensor("logits", logits, dtype=(torch.float32, torch.bfloat16, torch.float16, torch.float64), ndim=2)
    check_runnable_device("logits", logits)
    T, E = logits.shape
    grouped = check_gate_args(E, top_k=top_k, n_group=n_group, topk_group=topk_group,
                              scoring_func=scoring_func, topk_method=topk_method)
    top_k, n_group, topk_group = int(top_k), int(n_group), int(topk_group)  # numpy integers → int
    if E > 4096:
        raise ValueError(f"gate_topk supports E <= 4096 experts, got E={E}")
    bias = e_score_correction_bias
    norm_topk_prob, routed_scaling_factor = _check_bias_and_scalars(bias, E, logits.device, norm_topk_prob,
                                                                    routed_scaling_factor)
    w = torch.empty(T, top_k, dtype=torch.float32, device=logits.device)
    ids = torch.empty(T, top_k, dtype=torch.int32, device=logits.device)
    if T == 0:
        return w, ids
    pad = next_pow2(E)
    consts = _select_constants(E, top_k=top_k, n_group=n_group, topk_group=topk_group, scoring_func=scoring_func,
                               topk_method=topk_method, norm_topk_prob=norm_topk_prob, grouped=grouped, out_k=top_k)
    _gate_topk_kernel[(T,)](
        logits, bias if bias is not None else logits, w, ids,
        logits.stride(0), logits.stride(1), bias.stride(0) if bias is not None else 0, float(routed_scaling_factor),
        HAS_BIAS=bias is not None, **consts,
        num_warps=1 if pad <= 256 else (2 if pad <= 1024 else 4),
    )
    return w, ids


def _counters(device: torch.device) -> torch.Tensor:
    """Per-device arrival counters of the fused router (zero between launches: each launch's last program
    resets its own). Allocated once, outside any graph capture."""
    key = (device.type, device.index)
    c = _COUNTERS.get(key)
    if c is None:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("router_gate_topk: call it once before CUDA-graph capture (its counters are "
                               "allocated on first use)")
        c = _COUNTERS[key] = torch.zeros(_ROUTER_MAX_T_TILES, dtype=torch.int32, device=device)
    return c


def router_gate_topk(
    x: torch.Tensor,
    weight: torch.Tensor,
    e_score_correction_bias: torch.Tensor | None,
    *,
    top_k: int,
    n_group: int = 1,
    topk_group: int = 1,
    scoring_func: str = "sigmoid",
    topk_method: str = "noaux_tc",
    norm_topk_prob: bool = True,
    routed_scaling_factor: float = 1.0,
    shared_expert_id: int | None = None,
    config: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """gate_topk(x·weightᵀ) in one launch: logits = Σ_k x[t,k]·weight[e,k] with fp32 products and sums.

    x: [T, H] bf16/fp16/fp32 hidden states (unit column stride). weight: [E, H] bf16 or fp32 router
    weight (contiguous; DeepSeek's checkpoint stores it bf16, so its bf16 copy is exact).
    e_score_correction_bias: [E] fp32 or None (selection only). Selection settings as :func:`gate_topk`.
    shared_expert_id: when given (an int in [0, 2**31), numpy integers too), a (k+1)-th slot (id shared_expert_id,
    weight exactly 1.0) is appended to every token: the shared expert run as one more group of the masked GEMMs.
    Returns (topk_weights [T, k(+1)] fp32, topk_ids [T, k(+1)] int32) = gate_topk_ref(x.float() @
    weight.float()ᵀ, …) up to the fp32 summation order of the logits (fixed here: deterministic).
    Graph-safe (no host sync); the first call on a device must happen outside CUDA-graph capture; calls on one
    device share its arrival counters, so two of them must not run concurrently on different streams.
    Built for decode sizes (the last program of each token block runs the selection of its tokens; one token
    per block up to T = 16). config: optional override (checked also when T == 0) of BLOCK_E (experts per program, a
    power of two ≤ 128), BLOCK_T (tokens per block, a power of two ≤ 64), num_warps (1..16, a power of two), PDL (bool: launch as a programmatic
    dependent on Hopper, weight loads before the wait; default on; ignored off Hopper and in the interpreter),
    TRIGGER (bool, with PDL: release the next kernel at entry; default off).
    Raises TypeError (dtypes; norm_topk_prob not a bool, routed_scaling_factor not a float, scoring_func /
    topk_method not a str) / ValueError (shapes,
    settings, devices, routed_scaling_factor not finite and > 0) / RuntimeError (first call under capture).
    Follows DeepSeek-V3 inference/model.py Gate (linear in fp32, then the noaux_tc/greedy selection).
    """
    check_tensor("x", x, dtype=(torch.bfloat16, torch.float16, torch.float32), ndim=2)
    check_runnable_device("x", x)
    check_tensor("weight", weight, dtype=(torch.bfloat16, torch.float32), ndim=2, device=x.device)
    T, H = x.shape
    E = weight.shape[0]
    if weight.shape[1] != H or not weight.is_contiguous():
        raise ValueError(f"weight must be a contiguous [E, {H}] tensor, got {tuple(weight.shape)} strides {weight.stride()}")
    if x.stride(1) != 1:
        raise ValueError(f"x must have unit column stride, got strides {x.stride()}")
    grouped = check_gate_args(E, top_k=top_k, n_group=n_group, topk_group=topk_group,
                              scoring_func=scoring_func, topk_method=topk_method)
    top_k, n_group, topk_group = int(top_k), int(n_group), int(topk_group)  # numpy integers → int
    if E > 4096:
        raise ValueError(f"router_gate_topk supports E <= 4096 experts, got E={E}")
    if H == 0:
        raise ValueError("x has hidden size 0: there is no router product to compute")
    if shared_expert_id is not None:
        # ids are stored as int32: a larger id would wrap onto a routed expert's
        shared_expert_id = check_int("shared_expert_id", shared_expert_id, 0, 2**31 - 1)
    bias = e_score_correction_bias
    norm_topk_prob, routed_scaling_factor = _check_bias_and_scalars(bias, E, x.device, norm_topk_prob,
                                                                    routed_scaling_factor)
    # config is checked before the empty-batch return: a bad one passed with T == 0 and failed on the next call
    # (tester22 #8)
    if config is not None and not isinstance(config, dict):  # was a ValueError (h5 s21: the scalar rule's TypeError)
        raise TypeError(f"config must be a dict or None, got {type(config).__name__}")
    if config is not None:  # numpy scalars as their Python values (the launchers' scalar rule)
        config = {k: v.item() if isinstance(v, np.generic) else v for k, v in config.items()}
        for k, v in config.items():
            if k not in _CONFIG_KEYS or not _CONFIG_KEYS[k](v):  # the key named: the message said only "config"
                raise ValueError(f"config key {k}={v!r} is not valid: config takes BLOCK_E a power of two in 1..128, "
                                 f"BLOCK_T a power of two in 1..64, num_warps a power of two in 1..16 and bool PDL / "
                                 f"TRIGGER")
    out_k = top_k + (shared_expert_id is not None)
    w = torch.empty(T, out_k, dtype=torch.float32, device=x.device)
    ids = torch.empty(T, out_k, dtype=torch.int32, device=x.device)
    if T == 0:
        return w, ids
    cfg = _router_config(T, E, H, config)
    block_t = cfg["BLOCK_T"]
    split_k = cdiv(H, cfg["BLOCK_K"])
    t_tiles = cdiv(T, block_t)
    if t_tiles > _ROUTER_MAX_T_TILES:
        raise ValueError(f"router_gate_topk supports T <= {_ROUTER_MAX_T_TILES * block_t} tokens, got T={T}")
    part = torch.empty(split_k, T, E, dtype=torch.float32, device=x.device)
    consts = _select_constants(E, top_k=top_k, n_group=n_group, topk_group=topk_group, scoring_func=scoring_func,
                               topk_method=topk_method, norm_topk_prob=norm_topk_prob, grouped=grouped, out_k=out_k)
    pdl = bool(cfg["PDL"]) and _pdl_capable(x.device)
    _router_gate_kernel[(cdiv(E, cfg["BLOCK_E"]), split_k, t_tiles)](
        x, weight, part, _counters(x.device), bias if bias is not None else part, w, ids,
        T, H, x.stride(0), weight.stride(0), bias.stride(0) if bias is not None else 0,
        float(routed_scaling_factor), int(shared_expert_id or 0),
        E=E, SPLIT_K=split_k, BLOCK_E=cfg["BLOCK_E"], BLOCK_K=cfg["BLOCK_K"], BLOCK_T=block_t, OUT_K=out_k,
        HAS_BIAS=bias is not None, **consts, PDL=pdl, TRIGGER=bool(cfg["TRIGGER"]), num_warps=cfg["num_warps"],
        launch_pdl=pdl,
    )
    return w, ids


__all__ = ["gate_topk", "router_gate_topk"]
