"""Experimental variants of the masked grouped FP8 GEMM at MoE decode shapes (issue 5, session 24: the T = 1 gap).

Not wired into any launcher: ``benchmarks/probe_masked_decode.py`` times them against the default tl kernel
(grouped_gemm_masked) on the H200. What each variant asks:

* ``launch_masked_devdesc`` — the same COMPACT tile schedule and K loop, but the two TMA descriptors are built in
  the kernel (``tl.make_tensor_descriptor``) from the raw pointers instead of being passed as two 128-byte host
  CUtensorMaps by value: does the kernel-parameter size explain part of the launch cost (one-call graph replay
  minus device-side graph replay: ~6.6 µs for the GEMM against ~4.1 µs for a plain read at (7168, 2048))? Each
  program writes its descriptors to global scratch (``triton.set_allocator`` must have been called) and fences
  them before the first TMA, so it pays a little in the kernel instead.
* ``launch_masked_tiled`` — the weights pre-tiled (``tile_weights``: every [128, 128] block of b, one weight-row tile
  × one K block, stored as 16 contiguous KB) so that each weight TMA box is one contiguous 16-KB read instead of 128
  rows of 128 bytes 2 KB (K = 2048) or 7 KB (K = 7168) apart: does the DRAM access pattern explain the in-kernel
  gap (31.6 µs against a plain read's 27.9 at (7168, 2048))? Same K loop, scales and COMPACT slots otherwise.
* K2 (two K blocks per pipeline stage on the usual layout) was a variant here until it became
  grouped_gemm_masked's config K2; the probe now times it through that launcher (config K2=True).
* ``launch_masked_raw`` — the default kernel launched directly with a chosen ``num_k_blocks`` (0: launch only,
  the programs find their group, store zeros and exit) so the launch cost of its configuration (parameters,
  shared memory, registers, grid) can be timed apart from its K loop.

Findings, H200, 256 experts, top-8 routing (s24 W1 5cdb825 / W2 25aabfa / W3 cfc93da; interleaved graph replays,
three clocks, A/A twin, read floor in the same run; rows in benchmarks/results/h200.jsonl):
* Launch: the one-call graph's host part is not the kernel's. An empty kernel with the GEMM's parameter list (two
  host CUtensorMaps + pointers + scalars) against one with a single pointer: device-side 3.42 vs 3.68 µs (W1), 3.58
  vs 3.63 (W2); the read with those parameters added: 30.98 vs 30.99 µs; the GEMM without its K loop with 1 vs 3
  stages of shared memory: 5.28 vs 5.73 (no carve-out cost). Graph − device was the same for the GEMM and the read in
  each run (W2: 1.58 vs 1.42 µs at (7168, 2048), 4.26 vs 4.16 at (4096, 7168)); in bench_moe's own run it was ~7 µs
  for both (W2 suite: GEMM 41.70 − 34.08, read floor 37.55 − 30.37 µs at (7168, 2048)). In-kernel descriptors
  (devdesc) cost 1.02-1.06× (W1): lost.
* In the kernel: without its K loop the GEMM takes 2.1-2.9 µs against 0.7-0.9 for an empty kernel (masked_m read →
  prefix count → scale loads, all dependent; the first weight TMA waits on the first of them). Pre-tiled weights,
  device-side time against the pre-K2 default: T=1 0.956-0.972 (W1, W2; W3 at (7168, 2048) 0.987), T=8 0.968-0.992,
  T=64 0.967 at (4096, 7168) but 1.006-1.013 at (7168, 2048); against the K2 default at (4096, 7168) only
  0.992-0.994 (W3): K2 takes most of the layout's gain there without a layout change; at (7168, 2048) the layout
  would need every consumer of the expert weights to read it. BLOCK_N 64 (896 / 512 programs): 0.987-1.017 (one
  config, 3 stages at 80 registers, 1.14): nothing beyond the A/A. K2 (two K blocks per stage): (4096, 7168)
  0.970-0.980 (W2), the launcher's default there since cfc93da (grouped_gemm_masked_config._decode_k2_config);
  (7168, 2048) 1.012-1.35 (lost).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from tritonseek.kernels._host import cdiv, next_pow2
from tritonseek.kernels.grouped_gemm import BLOCK_K
from tritonseek.kernels.grouped_gemm_masked import (_compact_group, _grouped_fp8_masked_kernel, _masked_tile,
                                                    _nonempty_groups, _tile_coords)


@triton.jit(do_not_specialize=["M_max", "num_k_blocks", "stride_ase", "stride_asm", "stride_bse", "stride_bsn"])
def _masked_devdesc_kernel(
    a_ptr, b_ptr, a_scale_ptr, b_scale_ptr, masked_m_ptr, out_ptr,
    M_max, N, E, K, num_k_blocks, stride_am, stride_bn,
    stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk,
    stride_oe, stride_om, stride_on,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, E_PAD: tl.constexpr,
    SWAP_AB: tl.constexpr,
):
    # as _grouped_fp8_masked_kernel with COMPACT, no PDL, no prefetch; a / b: [E*M_max, K] / [E*N, K] e4m3 rows
    # with row strides stride_am / stride_bn (elements), last stride 1; descriptors built here, per program
    a_desc = tl.make_tensor_descriptor(a_ptr, shape=[E * M_max, K], strides=[stride_am, 1],
                                       block_shape=[BLOCK_M, BLOCK_K])
    b_desc = tl.make_tensor_descriptor(b_ptr, shape=[E * N, K], strides=[stride_bn, 1],
                                       block_shape=[BLOCK_N, BLOCK_K])
    slot, off_m, off_n, n_slots = _tile_coords(tl.program_id(0), M_max, N, BLOCK_M, BLOCK_N)
    ev, cnt, csum, nnz = _nonempty_groups(masked_m_ptr, E, E_PAD)
    if slot < nnz:
        g, mm = _compact_group(slot, ev, cnt, csum, E_PAD)
        _masked_tile(g, mm, off_m, off_n, a_desc, b_desc, a_scale_ptr, b_scale_ptr, out_ptr, M_max, N,
                     num_k_blocks, stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk,
                     stride_oe, stride_om, stride_on, BLOCK_M, BLOCK_N, BLOCK_K, SWAP_AB)
    for q in range(slot + n_slots, nnz, n_slots):  # groups past the slot bound (a too-small bound only)
        ev2, cnt2, csum2, _ = _nonempty_groups(masked_m_ptr, E, E_PAD)
        g, mm = _compact_group(q, ev2, cnt2, csum2, E_PAD)
        _masked_tile(g, mm, off_m, off_n, a_desc, b_desc, a_scale_ptr, b_scale_ptr, out_ptr, M_max, N,
                     num_k_blocks, stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk,
                     stride_oe, stride_om, stride_on, BLOCK_M, BLOCK_N, BLOCK_K, SWAP_AB, 1)


@triton.jit
def _tiled_tile(g, mm, off_m, off_n, a_desc, bt_desc, a_scale_ptr, b_scale_ptr, out_ptr, M_max, N, num_k_blocks,
                stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk, stride_oe, stride_om, stride_on,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STAGES: tl.constexpr = None):
    # one swapped [128 weight rows, BLOCK_M tokens] tile of group g (mm = masked_m[g]) from the tiled weights:
    # tile (g, n-tile t, K block kb) = rows ((g·N/128 + t)·KB + kb)·128 of bt_desc's [rows, 128] view
    mm = tl.minimum(mm, M_max)
    if off_m < mm:
        g64 = g.to(tl.int64)
        rm = off_m + tl.arange(0, BLOCK_M)
        rn = off_n + tl.arange(0, BLOCK_N)
        row_ok = rm < mm
        sa_ptrs = a_scale_ptr + g64 * stride_ase + rm * stride_asm
        sb_ptr = b_scale_ptr + g64 * stride_bse + (off_n // 128) * stride_bsn
        a_row = (g64 * M_max + off_m).to(tl.int32)
        t_row = (g64 * (N // 128) + off_n // 128) * num_k_blocks * 128
        sa = tl.load(sa_ptrs, mask=row_ok, other=0.0)
        sb = tl.load(sb_ptr)
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for kb in tl.range(0, num_k_blocks, num_stages=STAGES):
            a = a_desc.load([a_row, kb * BLOCK_K])
            b = bt_desc.load([(t_row + kb * 128).to(tl.int32), 0])
            more = kb + 1 < num_k_blocks
            sa_next = tl.load(sa_ptrs + (kb + 1) * stride_ask, mask=row_ok & more, other=0.0)
            sb_next = tl.load(sb_ptr + (kb + 1) * stride_bsk, mask=more, other=0.0)
            acc += tl.dot(b, a.T) * (sa * sb)[None, :]
            sa = sa_next
            sb = sb_next
        o_ptrs = out_ptr + g64 * stride_oe + rm.to(tl.int64)[None, :] * stride_om + rn[:, None] * stride_on
        tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[None, :] & (rn[:, None] < N))


@triton.jit(do_not_specialize=["M_max", "num_k_blocks", "stride_ase", "stride_asm", "stride_bse", "stride_bsn"])
def _masked_tiled_kernel(
    a_desc, bt_desc, a_scale_ptr, b_scale_ptr, masked_m_ptr, out_ptr,
    M_max, N, E, num_k_blocks,
    stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk,
    stride_oe, stride_om, stride_on,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, E_PAD: tl.constexpr,
):
    # a_desc: TMA over a [E*M_max, K] e4m3, box [BLOCK_M, BLOCK_K]; bt_desc: TMA over the tiled weights viewed
    # [E*N/128*KB*128, 128] e4m3, box [128, 128]. Swapped tiles, BLOCK_N = BLOCK_K = 128; COMPACT slots with the
    # first pass straight-line and later passes (a too-small slot bound) unpipelined, as _grouped_fp8_masked_kernel
    slot, off_m, off_n, n_slots = _tile_coords(tl.program_id(0), M_max, N, BLOCK_M, BLOCK_N)
    ev, cnt, csum, nnz = _nonempty_groups(masked_m_ptr, E, E_PAD)
    if slot < nnz:
        g, mm = _compact_group(slot, ev, cnt, csum, E_PAD)
        _tiled_tile(g, mm, off_m, off_n, a_desc, bt_desc, a_scale_ptr, b_scale_ptr, out_ptr, M_max, N, num_k_blocks,
                    stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk, stride_oe, stride_om,
                    stride_on, BLOCK_M, BLOCK_N, BLOCK_K)
    for q in range(slot + n_slots, nnz, n_slots):
        ev2, cnt2, csum2, _ = _nonempty_groups(masked_m_ptr, E, E_PAD)
        g, mm = _compact_group(q, ev2, cnt2, csum2, E_PAD)
        _tiled_tile(g, mm, off_m, off_n, a_desc, bt_desc, a_scale_ptr, b_scale_ptr, out_ptr, M_max, N, num_k_blocks,
                    stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk, stride_oe, stride_om,
                    stride_on, BLOCK_M, BLOCK_N, BLOCK_K, 1)


def tile_weights(b: torch.Tensor) -> torch.Tensor:
    """b [E, N, K] (N, K multiples of 128) → [E, N/128, K/128, 128, 128] contiguous: block (e, t, kb) holds
    b[e, 128t : 128t+128, 128kb : 128kb+128] row-major (a copy; what ``launch_masked_tiled`` reads)."""
    if b.dim() != 3 or b.shape[1] % 128 or b.shape[2] % 128:
        raise ValueError(f"b must be [E, N, K] with N and K multiples of 128, got {tuple(b.shape)}")
    E, N, K = b.shape
    return b.reshape(E, N // 128, 128, K // 128, 128).permute(0, 1, 3, 2, 4).contiguous()


def launch_masked_tiled(a, a_scale, b_tiled, b_scale, masked_m, out, max_active_groups: int, cfg: dict) -> torch.Tensor:
    """The masked GEMM over pre-tiled weights (``tile_weights``), swapped 16-row tiles, COMPACT slots.

    a, a_scale, b_scale, masked_m, out, max_active_groups: as :func:`launch_masked_devdesc`; b_tiled
    [E, N/128, K/128, 128, 128] e4m3 contiguous. cfg: num_warps, num_stages, optional MAXNREG (BLOCK_M 16 and
    BLOCK_N 128 are fixed). Returns out."""
    if b_tiled.dim() != 5 or tuple(b_tiled.shape[3:]) != (128, 128) or not b_tiled.is_contiguous():
        raise ValueError(f"b_tiled must be a contiguous [E, N/128, K/128, 128, 128] tensor, got {tuple(b_tiled.shape)}")
    E, M_max, K = a.shape
    N = b_tiled.shape[1] * 128
    kb = b_tiled.shape[2]
    if kb * 128 != K or b_tiled.shape[0] != E:
        raise ValueError(f"b_tiled {tuple(b_tiled.shape)} does not match a {tuple(a.shape)}")
    tiles = _slots(E, max_active_groups) * cdiv(M_max, 16) * (N // 128)
    a_desc = TensorDescriptor(a, [E * M_max, K], [a.stride(1), 1], [16, BLOCK_K])
    bt_desc = TensorDescriptor(b_tiled, [b_tiled.numel() // 128, 128], [128, 1], [128, 128])
    _masked_tiled_kernel[(tiles,)](
        a_desc, bt_desc, a_scale, b_scale, masked_m, out, M_max, N, E, kb,
        a_scale.stride(0), a_scale.stride(1), a_scale.stride(2), b_scale.stride(0), b_scale.stride(1),
        b_scale.stride(2), out.stride(0), out.stride(1), out.stride(2),
        BLOCK_M=16, BLOCK_N=128, BLOCK_K=BLOCK_K, E_PAD=next_pow2(E), **_launch_opts(cfg),
    )
    return out


def _slots(E: int, max_active_groups: int) -> int:
    if not isinstance(max_active_groups, int) or isinstance(max_active_groups, bool) or max_active_groups < 1:
        raise ValueError(f"max_active_groups must be an int >= 1, got {max_active_groups!r}")
    return min(E, max_active_groups)


def _launch_opts(cfg: dict) -> dict:
    opts = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    if cfg.get("MAXNREG") is not None:
        opts["maxnreg"] = cfg["MAXNREG"]
    return opts


def launch_masked_devdesc(a, a_scale, b, b_scale, masked_m, out, max_active_groups: int, cfg: dict) -> torch.Tensor:
    """The masked GEMM (grouped_fp8_gemm_masked semantics, COMPACT slots) with in-kernel TMA descriptors.

    a [E, M_max, K] / b [E, N, K] float8_e4m3fn K-contiguous, groups stacked densely; a_scale [E, M_max, K/128],
    b_scale [E, N/128, K/128] fp32; masked_m [E] int32; out [E, M_max, N] (rows < masked_m[g] written).
    max_active_groups: group slots launched (int ≥ 1). cfg: BLOCK_M, BLOCK_N, num_warps, num_stages, SWAP_AB,
    optional MAXNREG. Operands are not validated here beyond the slot count (a probe helper: the caller passes
    operands the public launcher accepted); needs ``triton.set_allocator`` (descriptor scratch). Returns out.
    """
    E, M_max, K = a.shape
    N = b.shape[1]
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    tiles = _slots(E, max_active_groups) * cdiv(M_max, bm) * cdiv(N, bn)
    _masked_devdesc_kernel[(tiles,)](
        a, b, a_scale, b_scale, masked_m, out, M_max, N, E, K, cdiv(K, BLOCK_K), a.stride(1), b.stride(1),
        a_scale.stride(0), a_scale.stride(1), a_scale.stride(2), b_scale.stride(0), b_scale.stride(1),
        b_scale.stride(2), out.stride(0), out.stride(1), out.stride(2),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=BLOCK_K, E_PAD=next_pow2(E), SWAP_AB=bool(cfg.get("SWAP_AB", False)),
        **_launch_opts(cfg),
    )
    return out


def launch_masked_raw(a, a_scale, b, b_scale, masked_m, out, max_active_groups: int, cfg: dict,
                      num_k_blocks: int | None = None) -> torch.Tensor:
    """grouped_gemm_masked's default tl kernel launched as its launcher does (COMPACT slots, no PDL), except that
    ``num_k_blocks`` may be given (default ceil(K/128); 0 = no K loop: tiles of zeros, the launch cost alone).
    Operands and cfg as :func:`launch_masked_devdesc` (host descriptors; no allocator needed). Returns out."""
    E, M_max, K = a.shape
    N = b.shape[1]
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    kb = cdiv(K, BLOCK_K) if num_k_blocks is None else num_k_blocks
    if not isinstance(kb, int) or not 0 <= kb <= cdiv(K, BLOCK_K):
        raise ValueError(f"num_k_blocks must be an int in [0, {cdiv(K, BLOCK_K)}], got {num_k_blocks!r}")
    slots = _slots(E, max_active_groups)
    tiles = slots * cdiv(M_max, bm) * cdiv(N, bn)
    a_desc = TensorDescriptor(a, [E * M_max, K], [a.stride(1), 1], [bm, BLOCK_K])
    b_desc = TensorDescriptor(b, [E * N, K], [b.stride(1), 1], [bn, BLOCK_K])
    _grouped_fp8_masked_kernel[(tiles,)](
        a_desc, b_desc, a_scale, b_scale, masked_m, out, b,
        M_max, N, E, kb, -1, 0,
        a_scale.stride(0), a_scale.stride(1), a_scale.stride(2), b_scale.stride(0), b_scale.stride(1),
        b_scale.stride(2), out.stride(0), out.stride(1), out.stride(2), b.stride(1),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=BLOCK_K, COMPACT=slots < E, E_PAD=next_pow2(E),
        SWAP_AB=bool(cfg.get("SWAP_AB", False)), PDL=False, PF_MODE=0, launch_pdl=False, **_launch_opts(cfg),
    )
    return out


__all__ = ["launch_masked_devdesc", "launch_masked_raw", "launch_masked_tiled", "tile_weights"]
