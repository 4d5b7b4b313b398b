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
  gets its own zeroed counters (one memset node) instead;
* launch options for the decode step under CUDA graphs: programmatic dependent launch (PDL: the
  weights, which never depend on the previous kernel, are prefetched into L2 before the grid-
  dependency wait; PDL=2 lets the next kernel launch at once), an in-loop L2 prefetch AHEAD K
  blocks beyond the shared-memory pipeline, and a split-fast grid order (SPLIT_FAST).

Configs per (M class, N, K) in ``_TUNED_SMALL`` (H200 sweeps of benchmarks/bench_gemm_decode.py,
suite fp8_gemm_decode), else the heuristic ``small_m_config`` (swap-AB won on every shape swept). The launcher is internal:
``fp8_gemm_nt`` validates and dispatches here for M ≤ ``SMALL_M_MAX`` (or a config with SWAP_AB=True).
Fusing the activation quant into this kernel was measured too (commit 9f1489a: bit-identical, but
slower than quant kernel + GEMM on the big shapes, up to 20% at 36864×7168) and was removed.
"""

from __future__ import annotations

import functools
import threading

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from tritonseek.kernels._host import cdiv

BLOCK_K = 128  # = the 1×128 / 128×128 scale granularity; fixed
SMALL_M_MAX = 16  # fp8_gemm_nt routes M ≤ this here (swept at M = 1 and 8)

# (M class, N, K) → BLOCK_N (weight rows per tile), BLOCK_M (tokens), num_warps, num_stages,
# SPLIT_K (number of K splits; 1 = no workspace), optional PDL / PREFETCH / AHEAD / SPLIT_FAST
# (see the launcher). M class: "1" (M = 1) and "16" (M ≤ 16); an M = 1 problem without a "1"
# entry uses the "16" one. H200 runs of benchmarks/bench_gemm_decode.py (2026-11-29; graph replays
# over rotated weight sets ≥ 4× L2): W1 --sweep at 240b67e (~38 correctness-checked candidates per
# shape at M = 1 and 8, the best of those at M = 2 and 4; entry = lowest M = 1 + M = 8 sum), then
# W2 --confirm at 9208595 (each entry against ~10 neighbours at M = 1, 2, 4, 8): every V3 entry was
# the fastest or within run-to-run noise (≤ 1.1%) of it. 64-row tiles won every shape up to N = 4096
# and 36864×7168 (more programs per SM in flight); 128-row tiles the K ≥ 16384 shapes and 18432×7168.
# The heuristic below came within 0-8% of the best on the DeepSeek-V2-Lite shapes (hidden 2048); the
# three where it lost by > 5% in W2 have entries.
def _sw(bn: int, st: int, split: int, **kw) -> dict:
    return dict(SWAP_AB=True, BLOCK_N=bn, BLOCK_M=16, num_warps=4, num_stages=st, SPLIT_K=split, **kw)


_PDL_EARLY = dict(PDL=2, PREFETCH=2)  # next kernel launches at our entry; 2 weight blocks into L2 first
_PDL_LATE = dict(PDL=1, PREFETCH=2)  # next kernel launches after our main loop
_TUNED_SMALL: dict[tuple[str, int, int], dict] = {
    ("16", 2112, 7168): _sw(64, 6, 4, SPLIT_FAST=True, **_PDL_EARLY),  # q_a ‖ kv_a
    ("16", 24576, 1536): _sw(64, 6, 1, SPLIT_FAST=True, **_PDL_EARLY),  # q_b
    ("16", 7168, 16384): _sw(128, 4, 4, **_PDL_LATE),  # o_proj
    ("16", 36864, 7168): _sw(64, 6, 2, SPLIT_FAST=True, **_PDL_EARLY),  # dense gate ‖ up
    ("16", 7168, 18432): _sw(128, 4, 7, **_PDL_EARLY),  # dense down
    ("16", 4096, 7168): _sw(64, 6, 4, **_PDL_LATE),  # shared expert gate ‖ up
    ("16", 7168, 2048): _sw(64, 6, 1, **_PDL_LATE),  # shared expert down
    ("16", 1536, 7168): _sw(64, 6, 5, **_PDL_LATE),  # q_a
    ("16", 576, 7168): _sw(64, 6, 14, **_PDL_LATE),  # kv_a
    ("16", 18432, 7168): _sw(128, 4, 4, SPLIT_FAST=True, **_PDL_EARLY),  # dense gate, up
    ("16", 2048, 7168): _sw(64, 6, 4, **_PDL_LATE),  # shared expert gate, up
    # DeepSeek-V2-Lite (W2: heuristic 10.40 / 20.99 / 13.12 us for M = 1 + 8 against these 9.73 / 19.58 / 12.06)
    ("16", 3072, 2048): _sw(64, 6, 4, SPLIT_FAST=True, **_PDL_EARLY),  # q_proj
    ("16", 2048, 10944): _sw(128, 4, 8, **_PDL_LATE),  # dense down
    ("16", 5632, 2048): _sw(128, 4, 3, SPLIT_FAST=True, **_PDL_EARLY),  # shared experts gate ‖ up
}


def _small_m_class(m: int) -> str:
    return "1" if m == 1 else ("16" if m <= 16 else "32")


def _auto_split(n_tiles: int, kb: int, num_sms: int, resident: int) -> int:
    """K splits so the work items fill whole waves of resident programs.

    Cost of split s: waves = ⌈n_tiles·s / (num_sms·resident)⌉ of items of ⌈kb/s⌉ K blocks each,
    plus a fixed per-item charge (pipeline fill, partial write) of 2 K blocks; ≥ 4 blocks per split.
    """
    best_cost, best_s = None, 1
    for s in range(1, max(1, kb // 4) + 1):
        cost = cdiv(n_tiles * s, num_sms * resident) * (cdiv(kb, s) + (2 if s > 1 else 0))
        if best_cost is None or cost < best_cost:
            best_cost, best_s = cost, s
    return best_s


def tuned_small_config(m: int, n: int, k: int) -> dict | None:
    """The H200-measured entry for this small-M shape class (swap-AB ones carry SWAP_AB=True), or None."""
    cls = _small_m_class(m)
    hit = _TUNED_SMALL.get((cls, n, k))
    if hit is None and cls == "1":
        hit = _TUNED_SMALL.get(("16", n, k))
    return None if hit is None else dict(hit)


def small_m_config(m: int, n: int, k: int, num_sms: int) -> dict:
    """The launch config for a small-M problem: the tuned entry for its shape class, else a heuristic."""
    hit = tuned_small_config(m, n, k)
    if hit is not None:
        return hit
    # BLOCK_M ≥ 16: Triton emits wgmma only from n16 up (8 falls back to mma.sync through fp16).
    # The W1 sweep's families (V3 and V2-Lite shapes): up to ~2 waves of 64-row tiles, 64-row tiles
    # with 6 stages and K split to fill one wave; wider N, 128-row tiles with 4 stages (3 programs
    # per SM) and K split for 2 resident programs per SM. PDL with 2 weight blocks prefetched.
    kb = cdiv(k, BLOCK_K)
    if cdiv(n, 64) < 2 * num_sms:
        cfg = _sw(64, 6, _auto_split(cdiv(n, 64), kb, num_sms, 1), **_PDL_LATE)
    else:
        cfg = _sw(128, 4, _auto_split(cdiv(n, 128), kb, num_sms, 2), **_PDL_LATE)
    if m > 16:
        cfg["BLOCK_M"] = 32
    return cfg


@triton.jit
def _prefetch_l2(ptrs):
    # one `prefetch.global.L2` per element (a hint: never faults, returns nothing)
    tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                              is_pure=False, pack=1)


# Integer arguments keep Triton's ==1 / %16 specialization: with M, N and the strides left
# unspecialized (tried at 21953f3), 128-row split-K configs lost 5-28% on the H200 (W1 of
# bench_gemm_decode: the masked partial stores and reduce loads lose their vector width).
@triton.jit
def _fp8_gemm_swap_ab_kernel(
    a_desc, b_desc, a_scale_ptr, b_scale_ptr, out_ptr, ws_ptr, count_ptr, b_ptr,
    M, N, num_k_blocks, k_blocks_per_split, split_k,
    stride_asm, stride_ask, stride_bsn, stride_bsk, stride_om, stride_on, stride_bn,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    NUM_STAGES: tl.constexpr, SPLIT: tl.constexpr, PDL: tl.constexpr, PREFETCH: tl.constexpr,
    AHEAD: tl.constexpr, SPLIT_FAST: tl.constexpr,
):
    # a_desc:  TMA over a [M, K] e4m3 (tokens), K contiguous, box [BLOCK_M, BLOCK_K]
    # b_desc:  TMA over b [N, K] e4m3 (weights), K contiguous, box [BLOCK_N, BLOCK_K]
    # a_scale: [M, KB] fp32, strides (stride_asm, stride_ask); b_scale: [NB, KB] fp32 (NB = ceil(N/128))
    # out:     [M, N], strides (stride_om, stride_on)
    # ws:      SPLIT: fp32 partials [split_k, M, N] contiguous; count: SPLIT: int32 [n_tiles·m_tiles]
    #          arrival counters, 0 on entry and re-armed to 0 on exit
    # b_ptr:   the same weights as b_desc (row stride stride_bn), for the L2 prefetches only
    # PDL:     launched as a programmatic dependent launch: wait for the previous kernel before the
    #          first dependent access; PREFETCH weight K blocks are pulled into L2 before that wait.
    #          PDL = 1 lets the next kernel launch once every program is past its main loop, PDL = 2
    #          at entry (its programs then become resident as ours retire and prefetch during our tail)
    # AHEAD:   > 0: each K step also prefetches the weight block AHEAD steps ahead into L2 (bytes in
    #          flight beyond the shared-memory stages, at no shared-memory cost)
    # grid:    (n_tiles, split_k, m_tiles), or (split_k, n_tiles, m_tiles) when SPLIT_FAST (the splits
    #          of one weight tile are consecutive programs: together they read one contiguous slab)
    if SPLIT_FAST:
        split = tl.program_id(0)
        pid_n = tl.program_id(1)
    else:
        pid_n = tl.program_id(0)
        split = tl.program_id(1)
    pid_m = tl.program_id(2)
    off_n = pid_n * BLOCK_N
    off_m = pid_m * BLOCK_M
    rn = off_n + tl.arange(0, BLOCK_N)
    rm = off_m + tl.arange(0, BLOCK_M)
    k_lo = split * k_blocks_per_split
    k_hi = tl.minimum(k_lo + k_blocks_per_split, num_k_blocks)
    if PDL == 2:
        tl.extra.cuda.gdc_launch_dependents()
    rows = tl.minimum(rn, N - 1).to(tl.int64) * stride_bn
    if PREFETCH > 0:  # weights do not depend on the previous kernel: start them before the wait
        for p in tl.static_range(PREFETCH):
            _prefetch_l2(b_ptr + rows + tl.minimum(k_lo + p, k_hi - 1) * BLOCK_K)
    if PDL > 0:
        tl.extra.cuda.gdc_wait()

    # BLOCK_N divides 128: the tile lies in one 128-row weight-scale block (a scalar per K block).
    # The scales of block kb+1 load while block kb is multiplied (off the tensor-core chain).
    sb_ptr = b_scale_ptr + (off_n // 128) * stride_bsn
    sb = tl.load(sb_ptr + k_lo * stride_bsk)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    sa_ptrs = a_scale_ptr + rm * stride_asm
    sa = tl.load(sa_ptrs + k_lo * stride_ask, mask=rm < M, other=0.0)
    for kb in tl.range(k_lo, k_hi, num_stages=NUM_STAGES):
        if AHEAD > 0:
            _prefetch_l2(b_ptr + rows + tl.minimum(kb + AHEAD, k_hi - 1) * BLOCK_K)
        w = b_desc.load([off_n, kb * BLOCK_K])  # [BLOCK_N, BLOCK_K] weights: the wgmma M side
        x = a_desc.load([off_m, kb * BLOCK_K])  # [BLOCK_M, BLOCK_K] tokens: the wgmma N side
        more = kb + 1 < k_hi
        sa_next = tl.load(sa_ptrs + (kb + 1) * stride_ask, mask=(rm < M) & more, other=0.0)
        sb_next = tl.load(sb_ptr + (kb + 1) * stride_bsk, mask=more, other=0.0)
        blk = tl.dot(w, x.T)  # fresh fp32 product of one 128-wide K block, [BLOCK_N, BLOCK_M]
        acc += blk * (sa * sb)[None, :]
        sa = sa_next
        sb = sb_next
    if PDL == 1:  # the next kernel may launch once every program is past its main loop
        tl.extra.cuda.gdc_launch_dependents()

    mask = (rn[:, None] < N) & (rm[None, :] < M)
    if SPLIT:
        # partial of this split, then arrive; the last arrival reduces in split order 0..split_k-1
        mn = M * N
        ws_off = rm[None, :] * N + rn[:, None]
        tl.store(ws_ptr + split * mn + ws_off, acc, mask=mask)
        tl.debug_barrier()  # every thread's partial stored before the (single-thread) release
        tile = pid_m * tl.cdiv(N, BLOCK_N) + pid_n
        arrived = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel", scope="gpu")
        if arrived == split_k - 1:
            # four partials in flight per step (independent L2 loads), summed in split order; a
            # masked-off split adds +0.0, which leaves the sum unchanged
            tot = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
            if BLOCK_N * BLOCK_M <= 64 * 64:
                for s in range(0, split_k, 4):
                    p0 = tl.load(ws_ptr + s * mn + ws_off, mask=mask, other=0.0, cache_modifier=".cg")
                    p1 = tl.load(ws_ptr + (s + 1) * mn + ws_off, mask=mask & (s + 1 < split_k), other=0.0, cache_modifier=".cg")
                    p2 = tl.load(ws_ptr + (s + 2) * mn + ws_off, mask=mask & (s + 2 < split_k), other=0.0, cache_modifier=".cg")
                    p3 = tl.load(ws_ptr + (s + 3) * mn + ws_off, mask=mask & (s + 3 < split_k), other=0.0, cache_modifier=".cg")
                    tot += p0
                    tot += p1
                    tot += p2
                    tot += p3
            else:
                # 64/128-token tiles: two partials in flight (four spilled: 64 registers per partial and thread)
                for s in range(0, split_k, 2):
                    p0 = tl.load(ws_ptr + s * mn + ws_off, mask=mask, other=0.0, cache_modifier=".cg")
                    p1 = tl.load(ws_ptr + (s + 1) * mn + ws_off, mask=mask & (s + 1 < split_k), other=0.0, cache_modifier=".cg")
                    tot += p0
                    tot += p1
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
    if block_m not in (8, 16, 32, 64, 128):
        raise ValueError(f"config BLOCK_M={block_m} must be 8, 16, 32, 64 or 128 for the swap-AB kernel")


def _pdl_mode(value) -> int:
    """Config PDL → kernel mode: False/0 off, True/1 trigger after the main loop, 2 trigger at entry."""
    mode = int(value)
    if mode not in (0, 1, 2):
        raise ValueError(f"config PDL={value!r} must be False/0, True/1 or 2")
    return mode


def launch_fp8_gemm_swap_ab(
    a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor, out: torch.Tensor, cfg: dict,
) -> torch.Tensor:
    """Launch the swap-AB kernel on inputs ``fp8_gemm_nt`` has validated (same shapes and layouts).

    cfg: BLOCK_N (64/128), BLOCK_M (8/16/32/64/128), num_warps, num_stages, SPLIT_K; optional
    (CUDA only; ignored under the interpreter): PDL (programmatic dependent launch: 1/True = the
    next kernel may launch after our main loop, 2 = at our entry), PREFETCH (weight K blocks
    prefetched into L2 before the grid-dependency wait), AHEAD (in-loop L2 prefetch distance in K
    blocks); SPLIT_FAST (the K splits of a weight tile are adjacent programs). Returns out.
    Raises ValueError for a config outside those values.
    """
    m, k = a.shape
    n = b.shape[0]
    bn, bm = int(cfg["BLOCK_N"]), int(cfg["BLOCK_M"])
    _check_block(bn, bm)
    kb = cdiv(k, BLOCK_K)
    split_k = max(1, min(int(cfg.get("SPLIT_K", 1)), kb))
    k_per_split = cdiv(kb, split_k)
    split_k = cdiv(kb, k_per_split)  # every split owns ≥ 1 K block
    n_tiles, m_tiles = cdiv(n, bn), cdiv(m, bm)
    a_desc = TensorDescriptor(a, [m, k], [a.stride(0), 1], [bm, BLOCK_K])
    b_desc = TensorDescriptor(b, [n, k], [b.stride(0), 1], [bn, BLOCK_K])
    if split_k > 1:
        ws = torch.empty((split_k, m, n), dtype=torch.float32, device=a.device)
        count = _arrival_counters(a.device, n_tiles * m_tiles)
    else:
        ws, count = out, out  # unused (SPLIT=False)
    on_gpu = a.device.type == "cuda"  # griddepcontrol / prefetch are PTX: not under the interpreter
    pdl = _pdl_mode(cfg.get("PDL", 0))  # validated on every device, used on CUDA only
    pdl = pdl if on_gpu else 0
    prefetch = min(int(cfg.get("PREFETCH", 0)), k_per_split) if on_gpu else 0
    ahead = int(cfg.get("AHEAD", 0)) if on_gpu else 0
    split_fast = bool(cfg.get("SPLIT_FAST", False))
    grid = (split_k, n_tiles, m_tiles) if split_fast else (n_tiles, split_k, m_tiles)
    _fp8_gemm_swap_ab_kernel[grid](
        a_desc, b_desc, a_scale, b_scale, out, ws, count, b,
        m, n, kb, k_per_split, split_k,
        a_scale.stride(0), a_scale.stride(1), b_scale.stride(0), b_scale.stride(1), out.stride(0), out.stride(1),
        b.stride(0),
        BLOCK_N=bn, BLOCK_M=bm, BLOCK_K=BLOCK_K, NUM_STAGES=int(cfg["num_stages"]), SPLIT=split_k > 1,
        PDL=pdl, PREFETCH=prefetch, AHEAD=ahead, SPLIT_FAST=split_fast, num_warps=int(cfg["num_warps"]), launch_pdl=pdl > 0,
    )
    return out
