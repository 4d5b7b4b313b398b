"""Small-M (decode) block-scaled FP8 GEMM: swap-AB tiles and split-K with an in-kernel reduce.

out[m, n] = Σ_kb a_scale[m, kb] · b_scale[n // 128, kb] · Σ_{k in block kb} a[m, k] · b[n, k]

At decode M is 1–16 tokens and the GEMM only has to stream the weights b at HBM speed. The
general kernel (fp8_gemm.py) puts the tokens on the wgmma M side, whose minimum is 64 rows, so
≥ 63/64 of every A tile is TMA zero fill and every promotion touches a 64×128 accumulator.
This kernel swaps the operands (as DeepGEMM's and vLLM's small-M paths do):

* a program owns BLOCK_N weight rows × BLOCK_M tokens (BLOCK_N = 64/128 fills the wgmma M side,
  BLOCK_M = 8/16/32 tokens are its N side) and computes accᵀ = b_tile · a_tileᵀ, so each K step
  moves a 16 KB weight tile plus a 1–4 KB token tile, and the fp32 promotion (once per 128-wide
  K block, as in DeepGEMM) is a BLOCK_N × BLOCK_M multiply-add;
* the grid is (N tiles, K splits, M tiles), one work item per program, several programs resident
  per SM (small shared-memory footprint: NUM_STAGES × (BLOCK_N + BLOCK_M) × 128 bytes), so the
  hardware block scheduler balances the K splits and many TMA loads are in flight per SM;
* split-K partials (fp32) go to a workspace; the last program to finish a tile (an acq_rel
  arrival counter per tile, re-armed to 0 by that program) sums the partials in split order and
  writes the output — deterministic, and no second kernel launch. The counters live in a cached
  per-device buffer zeroed once; a launch captured into a CUDA graph before that buffer exists
  gets its own zeroed counters (one memset node) instead.

Configs per (M class, N, K) in ``_TUNED_SMALL`` (H200 sweeps of benchmarks/bench_fp8_gemm.py),
else the heuristic ``small_m_config``. The launcher is internal: ``fp8_gemm_nt`` validates and
dispatches here for M ≤ ``SMALL_M_MAX`` when the shape has a tuned swap-AB entry (other shapes
keep the general kernel until measured), or when a config with SWAP_AB=True is passed.
"""

from __future__ import annotations

import functools
import threading

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from tritonseek.kernels._utils import check_tensor, interpreter_active
from tritonseek.kernels.fp8_quant import (
    AMAX_EPS,
    FP8_E4M3_MAX,
    _div_rn,
    _recip_rn,
    _round_to_e4m3,
    _scale_from_amax,
)

BLOCK_K = 128  # = the 1×128 / 128×128 scale granularity; fixed
SMALL_M_MAX = 16  # fp8_gemm_nt routes M ≤ this here (the H200 sweep decides the cut-over)

# (M class, N, K) → BLOCK_N (weight rows per tile), BLOCK_M (tokens), num_warps, num_stages,
# SPLIT_K (number of K splits; 1 = no workspace). M class: "8" (M ≤ 8), "16" (M ≤ 16).
_TUNED_SMALL: dict[tuple[str, int, int], dict] = {}


def _small_m_class(m: int) -> str:
    return "8" if m <= 8 else ("16" if m <= 16 else "32")


def _auto_split(n_tiles: int, kb: int, num_sms: int, resident: int) -> int:
    """K splits so the work items fill whole waves of resident programs.

    Cost of split s: waves = ⌈n_tiles·s / (num_sms·resident)⌉ of items of ⌈kb/s⌉ K blocks each,
    plus a fixed per-item charge (pipeline fill, partial write) of 2 K blocks; ≥ 4 blocks per split.
    """
    best_cost, best_s = None, 1
    for s in range(1, max(1, kb // 4) + 1):
        cost = triton.cdiv(n_tiles * s, num_sms * resident) * (triton.cdiv(kb, s) + (2 if s > 1 else 0))
        if best_cost is None or cost < best_cost:
            best_cost, best_s = cost, s
    return best_s


def tuned_small_config(m: int, n: int, k: int) -> dict | None:
    """The H200-measured entry for this small-M shape class (swap-AB ones carry SWAP_AB=True), or None."""
    hit = _TUNED_SMALL.get((_small_m_class(m), n, k))
    return None if hit is None else dict(hit)


def small_m_config(m: int, n: int, k: int, num_sms: int) -> dict:
    """The launch config for a small-M problem: the tuned entry for its shape class, else a heuristic."""
    hit = tuned_small_config(m, n, k)
    if hit is not None:
        return hit
    # BLOCK_M ≥ 16: Triton emits wgmma only from n16 up (8 falls back to mma.sync through fp16)
    cfg = dict(BLOCK_N=128, BLOCK_M=16 if m <= 16 else 32, num_warps=4, num_stages=6)
    cfg["SPLIT_K"] = _auto_split(triton.cdiv(n, 128), triton.cdiv(k, BLOCK_K), num_sms, 2)
    cfg["SWAP_AB"] = True
    return cfg


@triton.jit
def _prefetch_l2(ptrs):
    # one `prefetch.global.L2` per element (a hint: never faults, returns nothing)
    tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                              is_pure=False, pack=1)


@triton.jit
def _quant_tile(xf, eps, fp8_max, EXACT_ROUND: tl.constexpr, FAST_DIV: tl.constexpr):
    # per-row (1×128 group) FP8 quantization of an activation tile, bit-identical to
    # per_token_group_quant_fp8: s = max(amax, eps)/448, q = RN(x/s) saturated onto e4m3
    x = xf.to(tl.float32)
    s = _scale_from_amax(tl.max(tl.abs(x), axis=1), eps, fp8_max, False)
    q = _div_rn(x, s[:, None], _recip_rn(s)[:, None], FAST_DIV)
    if EXACT_ROUND:  # interpreter: its e4m3 cast rounds wrongly (see fp8_quant)
        q = _round_to_e4m3(tl.minimum(tl.maximum(q, -fp8_max), fp8_max))
    return q.to(tl.float8e4nv), s


@triton.jit
def _fp8_gemm_swap_ab_kernel(
    a_desc, b_desc, a_scale_ptr, b_scale_ptr, out_ptr, ws_ptr, count_ptr, b_ptr, x_ptr,
    M, N, K, num_k_blocks, k_blocks_per_split, split_k,
    stride_asm, stride_ask, stride_bsn, stride_bsk, stride_om, stride_on, stride_bn, stride_xm,
    eps, fp8_max,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    NUM_STAGES: tl.constexpr, SPLIT: tl.constexpr, PDL: tl.constexpr, PREFETCH: tl.constexpr,
    QUANT_A: tl.constexpr, EXACT_ROUND: tl.constexpr, FAST_DIV: tl.constexpr,
):
    # a_desc:  TMA over a [M, K] e4m3 (tokens), K contiguous, box [BLOCK_M, BLOCK_K]
    # b_desc:  TMA over b [N, K] e4m3 (weights), K contiguous, box [BLOCK_N, BLOCK_K]
    # a_scale: [M, KB] fp32, strides (stride_asm, stride_ask); b_scale: [NB, KB] fp32 (NB = ceil(N/128))
    # out:     [M, N], strides (stride_om, stride_on)
    # ws:      SPLIT: fp32 partials [split_k, M, N] contiguous; count: SPLIT: int32 [n_tiles·m_tiles]
    #          arrival counters, 0 on entry and re-armed to 0 on exit
    # b_ptr:   the same weights as b_desc (row stride stride_bn), for the L2 prefetch only
    # QUANT_A: the activations arrive unquantized, x [M, K] bf16/fp16/fp32 (stride_xm, 1), and
    #          each K block is quantized per token here (a_desc / a_scale unused)
    # PDL:     launched as a programmatic dependent launch: wait for the previous kernel before the
    #          first dependent access; PREFETCH weight K blocks are pulled into L2 before that wait
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    pid_m = tl.program_id(2)
    off_n = pid_n * BLOCK_N
    off_m = pid_m * BLOCK_M
    rn = off_n + tl.arange(0, BLOCK_N)
    rm = off_m + tl.arange(0, BLOCK_M)
    k_lo = split * k_blocks_per_split
    k_hi = tl.minimum(k_lo + k_blocks_per_split, num_k_blocks)
    if PREFETCH > 0:  # weights do not depend on the previous kernel: start them before the wait
        rows = tl.minimum(rn, N - 1).to(tl.int64) * stride_bn
        for p in tl.static_range(PREFETCH):
            _prefetch_l2(b_ptr + rows + tl.minimum(k_lo + p, k_hi - 1) * BLOCK_K)
    if PDL:
        tl.extra.cuda.gdc_wait()

    # BLOCK_N divides 128: the tile lies in one 128-row weight-scale block (a scalar per K block).
    # The scales of block kb+1 load while block kb is multiplied (off the tensor-core chain).
    sb_ptr = b_scale_ptr + (off_n // 128) * stride_bsn
    sb = tl.load(sb_ptr + k_lo * stride_bsk)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    if QUANT_A:
        # the activation block kb+1 loads (L2-resident, tiny) while block kb is quantized and used
        rk = tl.arange(0, BLOCK_K)
        x_rows = x_ptr + rm.to(tl.int64)[:, None] * stride_xm
        row_ok = (rm < M)[:, None]
        xf = tl.load(x_rows + (k_lo * BLOCK_K + rk)[None, :], mask=row_ok & ((k_lo * BLOCK_K + rk) < K)[None, :], other=0.0)
        for kb in tl.range(k_lo, k_hi, num_stages=NUM_STAGES):
            w = b_desc.load([off_n, kb * BLOCK_K])  # [BLOCK_N, BLOCK_K] weights: the wgmma M side
            more = kb + 1 < k_hi
            kn = (kb + 1) * BLOCK_K + rk
            xf_next = tl.load(x_rows + kn[None, :], mask=row_ok & (kn < K)[None, :] & more, other=0.0)
            sb_next = tl.load(sb_ptr + (kb + 1) * stride_bsk, mask=more, other=0.0)
            x, sa = _quant_tile(xf, eps, fp8_max, EXACT_ROUND, FAST_DIV)  # [BLOCK_M, BLOCK_K] e4m3, [BLOCK_M]
            blk = tl.dot(w, x.T)
            acc += blk * (sa * sb)[None, :]
            xf = xf_next
            sb = sb_next
    else:
        sa_ptrs = a_scale_ptr + rm * stride_asm
        sa = tl.load(sa_ptrs + k_lo * stride_ask, mask=rm < M, other=0.0)
        for kb in tl.range(k_lo, k_hi, num_stages=NUM_STAGES):
            w = b_desc.load([off_n, kb * BLOCK_K])  # [BLOCK_N, BLOCK_K] weights: the wgmma M side
            x = a_desc.load([off_m, kb * BLOCK_K])  # [BLOCK_M, BLOCK_K] tokens: the wgmma N side
            more = kb + 1 < k_hi
            sa_next = tl.load(sa_ptrs + (kb + 1) * stride_ask, mask=(rm < M) & more, other=0.0)
            sb_next = tl.load(sb_ptr + (kb + 1) * stride_bsk, mask=more, other=0.0)
            blk = tl.dot(w, x.T)  # fresh fp32 product of one 128-wide K block, [BLOCK_N, BLOCK_M]
            acc += blk * (sa * sb)[None, :]
            sa = sa_next
            sb = sb_next
    if PDL:  # the next kernel may launch once every program is past its main loop
        tl.extra.cuda.gdc_launch_dependents()

    mask = (rn[:, None] < N) & (rm[None, :] < M)
    if SPLIT:
        # partial of this split, then arrive; the last arrival reduces in split order 0..split_k-1
        mn = M * N
        ws_off = rm[None, :] * N + rn[:, None]
        tl.store(ws_ptr + split * mn + ws_off, acc, mask=mask)
        tl.debug_barrier()  # every thread's partial stored before the (single-thread) release
        tile = pid_m * tl.num_programs(0) + pid_n
        arrived = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel", scope="gpu")
        if arrived == split_k - 1:
            # four partials in flight per step (independent L2 loads), summed in split order; a
            # masked-off split adds +0.0, which leaves the sum unchanged
            tot = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
            for s in range(0, split_k, 4):
                p0 = tl.load(ws_ptr + s * mn + ws_off, mask=mask, other=0.0, cache_modifier=".cg")
                p1 = tl.load(ws_ptr + (s + 1) * mn + ws_off, mask=mask & (s + 1 < split_k), other=0.0, cache_modifier=".cg")
                p2 = tl.load(ws_ptr + (s + 2) * mn + ws_off, mask=mask & (s + 2 < split_k), other=0.0, cache_modifier=".cg")
                p3 = tl.load(ws_ptr + (s + 3) * mn + ws_off, mask=mask & (s + 3 < split_k), other=0.0, cache_modifier=".cg")
                tot += p0
                tot += p1
                tot += p2
                tot += p3
            o_ptrs = out_ptr + rm[None, :] * stride_om + rn[:, None] * stride_on
            tl.store(o_ptrs, tot.to(out_ptr.dtype.element_ty), mask=mask)
            tl.store(count_ptr + tile, 0)  # re-arm for the next launch (graph replays included)
    else:
        o_ptrs = out_ptr + rm[None, :] * stride_om + rn[:, None] * stride_on
        tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)


# Per-device arrival counters, zeroed once and kept at zero by the kernel; 16 slots used
# round-robin so launches that overlap on different streams rarely share a slot.
_COUNTER_SLOTS = 16
_counters: dict[int, torch.Tensor] = {}
_slot = [0]
_lock = threading.Lock()


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _arrival_counters(device: torch.device, n: int) -> torch.Tensor:
    """n int32 counters that are 0 now (a slice of the cached buffer, or fresh zeros under capture)."""
    key = -1 if device.type != "cuda" else (device.index if device.index is not None else torch.cuda.current_device())
    with _lock:
        buf = _counters.get(key)
        if buf is None or buf.shape[1] < n:
            if _capturing(device):
                # never cache memory that belongs to a graph's private pool: per-launch zeros
                return torch.zeros(n, dtype=torch.int32, device=device)
            size = max(n, 4096 if buf is None else 2 * buf.shape[1])
            buf = _counters[key] = torch.zeros((_COUNTER_SLOTS, size), dtype=torch.int32, device=device)
        _slot[0] = (_slot[0] + 1) % _COUNTER_SLOTS
        return buf[_slot[0], :n]


@functools.lru_cache(maxsize=64)
def _check_block(block_n: int, block_m: int) -> None:
    if block_n not in (64, 128):
        raise ValueError(f"config BLOCK_N={block_n} must be 64 or 128 for the swap-AB kernel")
    if block_m not in (8, 16, 32, 64):
        raise ValueError(f"config BLOCK_M={block_m} must be 8, 16, 32 or 64 for the swap-AB kernel")


def launch_fp8_gemm_swap_ab(
    a: torch.Tensor, a_scale: torch.Tensor | None, b: torch.Tensor, b_scale: torch.Tensor, out: torch.Tensor, cfg: dict,
) -> torch.Tensor:
    """Launch the swap-AB kernel on inputs ``fp8_gemm_nt`` has validated (same shapes and layouts).

    a_scale None: a is the unquantized activation [M, K] (bf16/fp16/fp32, stride(1) == 1), quantized
    per 1×128 group inside the kernel exactly as ``per_token_group_quant_fp8`` would.

    cfg: BLOCK_N (64/128), BLOCK_M (8/16/32/64), num_warps, num_stages, SPLIT_K; optional PDL
    (programmatic dependent launch, CUDA only) and PREFETCH (weight K blocks prefetched into L2
    before the grid-dependency wait; CUDA only). Returns out.
    Raises ValueError for a config outside those values.
    """
    m, k = a.shape
    n = b.shape[0]
    bn, bm = int(cfg["BLOCK_N"]), int(cfg["BLOCK_M"])
    _check_block(bn, bm)
    kb = triton.cdiv(k, BLOCK_K)
    split_k = max(1, min(int(cfg.get("SPLIT_K", 1)), kb))
    k_per_split = triton.cdiv(kb, split_k)
    split_k = triton.cdiv(kb, k_per_split)  # every split owns ≥ 1 K block
    n_tiles, m_tiles = triton.cdiv(n, bn), triton.cdiv(m, bm)
    quant_a = a_scale is None
    b_desc = TensorDescriptor(b, [n, k], [b.stride(0), 1], [bn, BLOCK_K])
    a_desc = b_desc if quant_a else TensorDescriptor(a, [m, k], [a.stride(0), 1], [bm, BLOCK_K])
    if split_k > 1:
        ws = torch.empty((split_k, m, n), dtype=torch.float32, device=a.device)
        count = _arrival_counters(a.device, n_tiles * m_tiles)
    else:
        ws, count = out, out  # unused (SPLIT=False)
    on_gpu = a.device.type == "cuda"  # griddepcontrol / prefetch are PTX: not under the interpreter
    pdl = bool(cfg.get("PDL", False)) and on_gpu
    prefetch = min(int(cfg.get("PREFETCH", 0)), k_per_split) if on_gpu else 0
    sa = b_scale if quant_a else a_scale  # unused under QUANT_A
    _fp8_gemm_swap_ab_kernel[(n_tiles, split_k, m_tiles)](
        a_desc, b_desc, sa, b_scale, out, ws, count, b, a,
        m, n, k, kb, k_per_split, split_k,
        sa.stride(0), sa.stride(1), b_scale.stride(0), b_scale.stride(1), out.stride(0), out.stride(1),
        b.stride(0), a.stride(0), AMAX_EPS, FP8_E4M3_MAX,
        BLOCK_N=bn, BLOCK_M=bm, BLOCK_K=BLOCK_K, NUM_STAGES=int(cfg["num_stages"]), SPLIT=split_k > 1,
        PDL=pdl, PREFETCH=prefetch, QUANT_A=quant_a, EXACT_ROUND=interpreter_active(),
        FAST_DIV=not interpreter_active(), num_warps=int(cfg["num_warps"]), launch_pdl=pdl,
    )
    return out


def fp8_linear_small(x2: torch.Tensor, weight: torch.Tensor, weight_scale_inv: torch.Tensor) -> torch.Tensor | None:
    """y = quant(x2) @ dequant(weight).T in one launch (activation quant fused), or None when not applicable.

    Applies when x2 [M, K] (bf16/fp16/fp32, stride(1) == 1) has M ≤ SMALL_M_MAX and the shape has
    a tuned swap-AB entry; the result is bit-identical to per_token_group_quant_fp8 + fp8_gemm_nt
    with that config. weight [N, K] e4m3 (K-contiguous, 16-byte aligned rows), weight_scale_inv
    [ceil(N/128), ceil(K/128)] fp32. Returns y [M, N] in x2.dtype. Raises TypeError/ValueError
    like ``fp8_gemm_nt`` on a bad weight or scale.
    """
    m, k = x2.shape
    if m > SMALL_M_MAX or m == 0 or x2.stride(1) != 1 or weight.dim() != 2:
        return None
    cfg = tuned_small_config(m, weight.shape[0], k)
    if cfg is None or not cfg.get("SWAP_AB"):
        return None
    n = weight.shape[0]
    check_tensor("weight", weight, dtype=torch.float8_e4m3fn, ndim=2, device=x2.device)
    check_tensor("weight_scale_inv", weight_scale_inv, dtype=torch.float32, ndim=2, device=x2.device)
    if weight.shape[1] != k:
        raise ValueError(f"x is [M, K] = {tuple(x2.shape)} and weight must be [N, K] with the same K, got {tuple(weight.shape)}")
    if tuple(weight_scale_inv.shape) != (triton.cdiv(n, 128), triton.cdiv(k, BLOCK_K)):
        raise ValueError(f"weight_scale_inv must be [ceil(N/128), ceil(K/128)] = {(triton.cdiv(n, 128), triton.cdiv(k, BLOCK_K))}, "
                         f"got {tuple(weight_scale_inv.shape)}")
    if weight.stride(1) != 1 or weight.stride(0) % 16 or weight.data_ptr() % 16:
        raise ValueError(f"weight must be K-contiguous with 16-byte aligned rows for TMA, strides {weight.stride()}")
    out = torch.empty((m, n), dtype=x2.dtype, device=x2.device)
    return launch_fp8_gemm_swap_ab(x2, None, weight, weight_scale_inv, out, cfg)
