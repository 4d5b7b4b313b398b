"""Masked-layout grouped block-scaled FP8 GEMM for MoE decode (DeepGEMM m_grouped_fp8_gemm_nt_masked).

out[g, m] = Σ_kb a_scale[g, m, kb] · b_scale[g, n // 128, kb] · Σ_{k in block kb} a[g, m, k] · b[g, n, k]
for m < masked_m[g]. Tile machinery (TMA boxes, 128-wide K blocks with fp32 promotion, the shared ``_fp8_tile`` K
loop), config table and input checks live in grouped_gemm.py; see its docstring for the layout. One program per (group
slot, n-tile, m-tile); with ``max_active_groups`` only that many group slots are launched and slot s serves the
non-empty groups number s, s + slots, … (found by a prefix count over masked_m on the device), so a bound that is too
small costs a second pass, never a skipped group (the loop costs registers: 161 / 144 instead of 63 / 80 for the two
kernels at the decode config, ptxas sm_90a, occupancy unchanged at the 2 CTAs per SM that 6 pipeline stages of shared
memory allow; a first version that recomputed the prefix count inside the loop ran 1–3% slower than the straight-line
kernel on the H200, V3 decode shapes, same run). SWAP_AB (the decode default) computes the tile as b·aᵀ: 128 weight
rows on the tensor-core M side, 16 token rows on its N side (decode has 1–16 rows per expert).
``grouped_fp8_gemm_masked_silu_quant`` is the experts' first GEMM with SiLU·mul and the 1×128 FP8 quant of its output
in the epilogue.

``pdl=True`` launches either kernel as a programmatic dependent launch (Hopper griddepcontrol): its programs may become
resident while the kernel before it runs, pull weight K blocks into L2 (``prefetch.global.L2``, a hint), wait for that
kernel, then release the next one. The MoE decode chain permute → GEMM1 → down → unpermute uses it (moe_triton). Decode
shapes on the H200, 8 routed groups of 256, T=1, (4096, 7168) / (7168, 2048): h4moe W1 (7d06960, one graph replay) 68.9
µs = 3,410 GB/s / 38.5 µs = 3,052 GB/s with 5 stages (45.1 with 6, timed first: the first-timed penalty of earlier
sweeps), 256-row weight tiles (BLOCK_N 256, 3 stages) 70.5 / 39.2 µs; h3moe W2 (e9e2f1c, plain launches, 3 rounds)
one-call graph 68.5 / 37.4 µs (``_decode_wave_config``: 4 programs per SM), device-side graph (host submission latency
excluded) 61.9 / 34.4 µs = 3,800 / 3,419 GB/s, kernel 59.1 / 32.0 µs; a plain streaming read of the same bytes (W1):
graph 60.1 / 34.3, device-side 55.7 / 30.2, kernel 53.1 / 27.9 µs. Session 24 (h2dec, probe_masked_decode): the
one-call graph's host part is the read's too; K2 and pre-tiled weights (grouped_gemm_masked_decode) in those docstrings.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from tritonseek.kernels import grouped_gemm as _gg
from tritonseek.kernels._utils import check_bool, check_int, check_runnable_device, check_tensor, interpreter_active
from tritonseek.kernels._host import cdiv, next_pow2
from tritonseek.kernels.fp8_gemm_small import _prefetch_l2
from tritonseek.kernels.fp8_quant import (AMAX_EPS, FP8_E4M3_MAX, _div_rn, _divisor, _max_nan, _pdl_capable, _recip_rn,
                                          _scale_from_amax, _to_e4m3_interp)
from tritonseek.kernels.grouped_gemm import _OUT_DTYPES, BLOCK_K, _check_b, _check_cfg, _fp8_tile
from tritonseek.kernels.grouped_gemm_k2 import _fp8_tile_k2
from tritonseek.kernels.grouped_gemm_masked_config import (_check_config_keys, _check_k2, _decode_k2_config,
                                                           _decode_wave_config, _maxnreg, _plain_config)
from tritonseek.kernels.grouped_gemm_masked_choice import check_kernel, choose_masked_kernel, ws_unavailable


@triton.jit
def _tile_coords(tile, M_max, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # tile = (group slot, n-tile, m-tile) → (slot, off_m, off_n, number of slots in the grid)
    num_pid_m = tl.cdiv(M_max, BLOCK_M)
    per_slot = num_pid_m * tl.cdiv(N, BLOCK_N)
    slot = tile // per_slot
    rest = tile - slot * per_slot
    pid_n = rest // num_pid_m
    pid_m = rest - pid_n * num_pid_m
    return slot, pid_m * BLOCK_M, pid_n * BLOCK_N, tl.num_programs(0) // per_slot


@triton.jit
def _nonempty_groups(masked_m_ptr, E, E_PAD: tl.constexpr):
    # COMPACT slot → group map, from a prefix count over masked_m[0:E]: the q-th non-empty group (q from 0) is
    # the g with cnt[g] > 0 and csum[g] == q + 1. Returns (ev, cnt = masked_m, csum, number of non-empty groups).
    ev = tl.arange(0, E_PAD)
    cnt = tl.load(masked_m_ptr + ev, mask=ev < E, other=0)
    csum = tl.cumsum((cnt > 0).to(tl.int32), axis=0)
    return ev, cnt, csum, tl.max(csum, axis=0)


@triton.jit
def _compact_group(q, ev, cnt, csum, E_PAD: tl.constexpr):
    # the q-th non-empty group (COMPACT) and its row count, both taken from the masked_m vector already in
    # registers (a load of masked_m[g] would wait for g before the first weight TMA could be issued)
    sel = (cnt > 0) & (csum == q + 1)
    return tl.min(tl.where(sel, ev, E_PAD), axis=0), tl.max(tl.where(sel, cnt, 0), axis=0)


@triton.jit
def _prefetch_rows(b_ptr, row0, n_valid, stride_bn, kb_lo, kb_hi, kb_step, BLOCK_N: tl.constexpr,
                   BLOCK_K: tl.constexpr):
    # L2 prefetch (a hint: never faults, nothing waits on it) of weight rows [row0, row0 + n_valid), n_valid ≥ 1,
    # K blocks kb_lo, kb_lo + kb_step, … < kb_hi: one 128-byte line per row and K block
    rows = (row0 + tl.minimum(tl.arange(0, BLOCK_N), n_valid - 1)).to(tl.int64) * stride_bn
    for kb in range(kb_lo, kb_hi, kb_step):
        _prefetch_l2(b_ptr + rows + kb * BLOCK_K)


@triton.jit
def _prefetch_plan(masked_m_ptr, slot, n_slots, off_m, pf_group, E,
                   E_PAD: tl.constexpr, COMPACT: tl.constexpr, PF_MODE: tl.constexpr):
    # Which weights a program pulls into L2 before its grid-dependency wait: (group, first K block, K-block step,
    # whether to prefetch). PF_MODE 1: its own first group, read from masked_m now (final when the kernel before
    # the previous one wrote it: the PDL chain permute → GEMM1 → down), its K blocks from 0. PF_MODE 2: group
    # pf_group (e.g. the shared expert, always routed) whatever masked_m holds, its K blocks shared out over the
    # slots (slot s takes s, s + slots, …). Only m-tile 0 prefetches (the other m-tiles read the same weights).
    if PF_MODE == 1:
        if COMPACT:
            ev, cnt, csum, nnz = _nonempty_groups(masked_m_ptr, E, E_PAD)
            g, _ = _compact_group(slot, ev, cnt, csum, E_PAD)
            ok = slot < nnz
        else:
            g = slot
            ok = tl.load(masked_m_ptr + slot) > 0
        return tl.minimum(g, E - 1), 0, 1, ok & (off_m == 0)
    else:
        return tl.maximum(tl.minimum(pf_group, E - 1), 0), slot, n_slots, (pf_group >= 0) & (off_m == 0)


@triton.jit
def _masked_tile(
    g, mm, off_m, off_n, a_desc, b_desc, a_scale_ptr, b_scale_ptr, out_ptr, M_max, N, num_k_blocks,
    stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk, stride_oe, stride_om, stride_on,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SWAP_AB: tl.constexpr,
    STAGES: tl.constexpr = None, K2: tl.constexpr = False,
):
    # one [BLOCK_M, BLOCK_N] output tile of group g with mm = masked_m[g] rows (nothing when off_m ≥ mm); K2: two K
    # blocks per pipeline stage (grouped_gemm_k2; SWAP_AB, BLOCK_N ≤ 128, even num_k_blocks: the launcher checks)
    mm = tl.minimum(mm, M_max)
    if off_m < mm:
        g64 = g.to(tl.int64)
        rm = off_m + tl.arange(0, BLOCK_M)
        rn = off_n + tl.arange(0, BLOCK_N)
        row_ok = rm < mm
        if BLOCK_N <= 128:
            n_blk = off_n // 128
            sb_mask = off_n < N
        else:
            n_blk = rn // 128
            sb_mask = rn < N
        if K2:
            acc = _fp8_tile_k2(a_desc, b_desc, (g64 * M_max + off_m).to(tl.int32), (g64 * N + off_n).to(tl.int32),
                               a_scale_ptr + g64 * stride_ase + rm * stride_asm,
                               b_scale_ptr + g64 * stride_bse + n_blk * stride_bsn, row_ok, num_k_blocks, stride_ask,
                               stride_bsk, BLOCK_M, BLOCK_N, BLOCK_K, STAGES)
        else:
            acc = _fp8_tile(a_desc, b_desc, (g64 * M_max + off_m).to(tl.int32), (g64 * N + off_n).to(tl.int32),
                            a_scale_ptr + g64 * stride_ase + rm * stride_asm,
                            b_scale_ptr + g64 * stride_bse + n_blk * stride_bsn, row_ok, sb_mask, row_ok, sb_mask, 0,
                            num_k_blocks, stride_ask, stride_bsk, BLOCK_M, BLOCK_N, BLOCK_K, SWAP_AB, False, STAGES)
        if SWAP_AB:  # acc is [BLOCK_N, BLOCK_M]
            rm2 = rm.to(tl.int64)[None, :]
            rn2 = rn[:, None]
            ok2 = row_ok[None, :] & (rn2 < N)
        else:
            rm2 = rm.to(tl.int64)[:, None]
            rn2 = rn[None, :]
            ok2 = row_ok[:, None] & (rn2 < N)
        o_ptrs = out_ptr + g64 * stride_oe + rm2 * stride_om + rn2 * stride_on
        tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=ok2)


# one compile for every T and K (these only feed loop bounds and per-row scale addresses)
@triton.jit(do_not_specialize=["M_max", "num_k_blocks", "pf_group", "n_prefetch", "stride_ase", "stride_asm",
                             "stride_bse", "stride_bsn"])
def _grouped_fp8_masked_kernel(
    a_desc, b_desc, a_scale_ptr, b_scale_ptr, masked_m_ptr, out_ptr, b_ptr,
    M_max, N, E, num_k_blocks, pf_group, n_prefetch,
    stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk,
    stride_oe, stride_om, stride_on, stride_bn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    COMPACT: tl.constexpr, E_PAD: tl.constexpr, SWAP_AB: tl.constexpr,
    PDL: tl.constexpr = False, PF_MODE: tl.constexpr = 0, K2: tl.constexpr = False,
):
    # a_desc:  TMA over a viewed [E*M_max, K] e4m3, box [BLOCK_M, BLOCK_K]
    # b_desc:  TMA over b viewed [E*N, K] e4m3, box [BLOCK_N, BLOCK_K]
    # a_scale: [E, M_max, KB] fp32; b_scale: [E, NB, KB] fp32; masked_m: [E] int32
    # out:     [E, M_max, N] (stride_oe, stride_om, stride_on); rows >= masked_m[g] untouched
    # program id = tile = (group slot, n-tile, m-tile). Not COMPACT: slot = group. COMPACT (fewer slots than
    # groups): slot s serves the non-empty groups number s, s + slots, s + 2·slots, … (one pass when the
    # launcher's bound holds; more passes, never a skipped group, when it does not)
    # PDL (programmatic dependent launch): n_prefetch weight K blocks (b_ptr: the same weights as b_desc, row
    # stride stride_bn) go to L2 as _prefetch_plan says, then wait for the previous kernel (griddepcontrol.wait)
    # before any input is read, then let the next kernel launch (its programs fill SMs as ours retire)
    slot, off_m, off_n, n_slots = _tile_coords(tl.program_id(0), M_max, N, BLOCK_M, BLOCK_N)
    if PF_MODE > 0:
        pg, kb0, kbs, pf_ok = _prefetch_plan(masked_m_ptr, slot, n_slots, off_m, pf_group, E, E_PAD, COMPACT, PF_MODE)
        if pf_ok:
            _prefetch_rows(b_ptr, pg.to(tl.int64) * N + off_n, tl.minimum(N - off_n, BLOCK_N), stride_bn, kb0,
                           tl.minimum(num_k_blocks, n_prefetch), kbs, BLOCK_N, BLOCK_K)
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    if COMPACT:
        ev, cnt, csum, nnz = _nonempty_groups(masked_m_ptr, E, E_PAD)
        if slot < nnz:  # the first pass: the group this slot serves when the bound holds
            g, mm = _compact_group(slot, ev, cnt, csum, E_PAD)
            _masked_tile(g, mm, off_m, off_n, a_desc, b_desc, a_scale_ptr, b_scale_ptr, out_ptr, M_max, N,
                         num_k_blocks, stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk,
                         stride_oe, stride_om, stride_on, BLOCK_M, BLOCK_N, BLOCK_K, SWAP_AB, None, K2)
        # groups past the bound (slot + slots, + 2·slots, …; only when max_active_groups was too small): a loop
        # with an unpipelined K loop and the prefix count re-read, so the first pass keeps the straight-line
        # register budget (ptxas sm_90a at 6 stages: 161 registers; 175 when every pass ran in one loop)
        for q in range(slot + n_slots, nnz, n_slots):
            ev2, cnt2, csum2, _ = _nonempty_groups(masked_m_ptr, E, E_PAD)
            g, mm = _compact_group(q, ev2, cnt2, csum2, E_PAD)
            _masked_tile(g, mm, off_m, off_n, a_desc, b_desc, a_scale_ptr, b_scale_ptr, out_ptr, M_max, N,
                         num_k_blocks, stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk,
                         stride_oe, stride_om, stride_on, BLOCK_M, BLOCK_N, BLOCK_K, SWAP_AB, 1, K2)
    else:
        _masked_tile(slot, tl.load(masked_m_ptr + slot), off_m, off_n, a_desc, b_desc, a_scale_ptr, b_scale_ptr,
                     out_ptr, M_max, N, num_k_blocks, stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn,
                     stride_bsk, stride_oe, stride_om, stride_on, BLOCK_M, BLOCK_N, BLOCK_K, SWAP_AB, None, K2)


@triton.jit
def _gate_up_two_loops(a_desc, b_desc, a_row, g64, I, off_n, sa_ptrs, sb_ptrs, up_blk, row_ok, num_k_blocks,
                       stride_ask, stride_bsk, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       SWAP_AB: tl.constexpr, K2: tl.constexpr = False):
    # the gate tile's K loop, then the up tile's (two pipelines). Both in one K loop (3 TMA loads per stage, 3
    # stages, same bits) ran 1-2% slower in the V3 layer at T=1/2/4/8 (H200 W2, db1a27e) and was removed (ee3ed3f).
    # K2: each loop takes two K blocks per stage (grouped_gemm_k2; SWAP_AB, even K blocks: the launcher checks)
    if K2:
        gate = _fp8_tile_k2(a_desc, b_desc, a_row, (g64 * 2 * I + off_n).to(tl.int32), sa_ptrs, sb_ptrs, row_ok,
                            num_k_blocks, stride_ask, stride_bsk, BLOCK_M, BLOCK_N, BLOCK_K)
        up = _fp8_tile_k2(a_desc, b_desc, a_row, (g64 * 2 * I + I + off_n).to(tl.int32), sa_ptrs, sb_ptrs + up_blk,
                          row_ok, num_k_blocks, stride_ask, stride_bsk, BLOCK_M, BLOCK_N, BLOCK_K)
        return gate, up
    gate = _fp8_tile(a_desc, b_desc, a_row, (g64 * 2 * I + off_n).to(tl.int32), sa_ptrs, sb_ptrs, row_ok, True,
                     row_ok, True, 0, num_k_blocks, stride_ask, stride_bsk, BLOCK_M, BLOCK_N, BLOCK_K, SWAP_AB,
                     False)
    up = _fp8_tile(a_desc, b_desc, a_row, (g64 * 2 * I + I + off_n).to(tl.int32), sa_ptrs, sb_ptrs + up_blk,
                   row_ok, True, row_ok, True, 0, num_k_blocks, stride_ask, stride_bsk, BLOCK_M, BLOCK_N, BLOCK_K,
                   SWAP_AB, False)
    return gate, up


@triton.jit
def _masked_silu_quant_tile(
    g, mm, off_m, off_n, a_desc, b_desc, a_scale_ptr, b_scale_ptr, q_ptr, s_ptr, M_max, I, num_k_blocks,
    stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk,
    stride_qe, stride_qm, stride_se, stride_sm, stride_sg, eps, fp8_max,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SWAP_AB: tl.constexpr,
    EXACT_ROUND: tl.constexpr, FAST_DIV: tl.constexpr, K2: tl.constexpr = False, UE8M0: tl.constexpr = False,
):
    # one [BLOCK_M, 128] tile of h = silu(gate)·up of group g, quantized (nothing when off_m ≥ masked_m[g]);
    # see _grouped_fp8_masked_silu_quant_kernel; mm = masked_m[g]
    mm = tl.minimum(mm, M_max)
    if off_m < mm:
        g64 = g.to(tl.int64)
        rm = off_m + tl.arange(0, BLOCK_M)
        rn = off_n + tl.arange(0, BLOCK_N)
        row_ok = rm < mm
        a_row = (g64 * M_max + off_m).to(tl.int32)
        sa_ptrs = a_scale_ptr + g64 * stride_ase + rm * stride_asm
        sb_ptrs = b_scale_ptr + g64 * stride_bse + (off_n // 128) * stride_bsn
        up_blk = (I // 128) * stride_bsn
        gate, up = _gate_up_two_loops(a_desc, b_desc, a_row, g64, I, off_n, sa_ptrs, sb_ptrs, up_blk, row_ok,
                                      num_k_blocks, stride_ask, stride_bsk, BLOCK_M, BLOCK_N, BLOCK_K, SWAP_AB, K2)
        gate = gate.to(tl.bfloat16).to(tl.float32)
        up = up.to(tl.bfloat16).to(tl.float32)
        h = gate / (1.0 + tl.exp(-gate)) * up
        # NaN / inf in h follow fp8_quant.silu_mul_quant_fp8 (NaN-propagating amax; an inf scale gives ±0 / NaN)
        if SWAP_AB:  # [BLOCK_N, BLOCK_M]: the 128 columns of a group run down axis 0
            sc = _scale_from_amax(tl.reduce(tl.abs(h), 0, _max_nan), eps, fp8_max, UE8M0)
            q = _div_rn(h, _divisor(sc, FAST_DIV)[None, :], _recip_rn(sc)[None, :], FAST_DIV)
            q_off = rm.to(tl.int64)[None, :] * stride_qm + rn[:, None]
            q_ok = row_ok[None, :]
        else:
            sc = _scale_from_amax(tl.reduce(tl.abs(h), 1, _max_nan), eps, fp8_max, UE8M0)
            q = _div_rn(h, _divisor(sc, FAST_DIV)[:, None], _recip_rn(sc)[:, None], FAST_DIV)
            q_off = rm.to(tl.int64)[:, None] * stride_qm + rn[None, :]
            q_ok = row_ok[:, None]
        if EXACT_ROUND:  # interpreter: clamp and round onto the e4m3 grid here (its cast rounds wrongly)
            q = _to_e4m3_interp(q, q_ptr.dtype.element_ty)
        tl.store(q_ptr + g64 * stride_qe + q_off, q.to(q_ptr.dtype.element_ty), mask=q_ok)
        tl.store(s_ptr + g64 * stride_se + rm * stride_sm + (off_n // 128) * stride_sg, sc, mask=row_ok)


@triton.jit(do_not_specialize=["M_max", "num_k_blocks", "pf_group", "n_prefetch", "stride_ase", "stride_asm",
                             "stride_bse", "stride_bsn"])
def _grouped_fp8_masked_silu_quant_kernel(
    a_desc, b_desc, a_scale_ptr, b_scale_ptr, masked_m_ptr, q_ptr, s_ptr, b_ptr,
    M_max, I, E, num_k_blocks, pf_group, n_prefetch,
    stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk,
    stride_qe, stride_qm, stride_se, stride_sm, stride_sg, stride_bn, eps, fp8_max,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    COMPACT: tl.constexpr, E_PAD: tl.constexpr, SWAP_AB: tl.constexpr, EXACT_ROUND: tl.constexpr,
    FAST_DIV: tl.constexpr, PDL: tl.constexpr = False, PF_MODE: tl.constexpr = 0, K2: tl.constexpr = False,
    UE8M0: tl.constexpr = False,
):
    # GEMM1 of the MoE experts with SiLU·mul and the 1×128 FP8 quant in the epilogue (BLOCK_N = 128 = one
    # quant group): b rows [g·2I + n, +128) (gate) and [g·2I + I + n, +128) (up) give two fp32 tiles over the
    # same a rows; each is rounded to bf16 (what the unfused GEMM stores), then h = silu(gate)·up in fp32 and
    # q = e4m3(h / s), s = max(amax_128(h), eps) / 448 (UE8M0: rounded up to 2^k), as fp8_quant.silu_mul_quant_fp8.
    # a_desc: TMA over a [E*M_max, K] e4m3; b_desc: TMA over b [E*2I, K] e4m3 (box [BLOCK_N, BLOCK_K])
    # q: [E, M_max, I] e4m3 (stride_qe, stride_qm, 1); s: [E, M_max, I/128] fp32 (stride_se, stride_sm, stride_sg)
    # slots → groups, PDL and the L2 prefetch (gate and up rows) as in _grouped_fp8_masked_kernel
    slot, off_m, off_n, n_slots = _tile_coords(tl.program_id(0), M_max, I, BLOCK_M, BLOCK_N)
    if PF_MODE > 0:
        pg, kb0, kbs, pf_ok = _prefetch_plan(masked_m_ptr, slot, n_slots, off_m, pf_group, E, E_PAD, COMPACT, PF_MODE)
        if pf_ok:
            kb_hi = tl.minimum(num_k_blocks, n_prefetch)
            row0 = pg.to(tl.int64) * 2 * I + off_n
            _prefetch_rows(b_ptr, row0, BLOCK_N, stride_bn, kb0, kb_hi, kbs, BLOCK_N, BLOCK_K)
            _prefetch_rows(b_ptr, row0 + I, BLOCK_N, stride_bn, kb0, kb_hi, kbs, BLOCK_N, BLOCK_K)
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    if COMPACT:
        ev, cnt, csum, nnz = _nonempty_groups(masked_m_ptr, E, E_PAD)
        for q in range(slot, nnz, n_slots):
            g, mm = _compact_group(q, ev, cnt, csum, E_PAD)
            _masked_silu_quant_tile(g, mm, off_m, off_n, a_desc, b_desc, a_scale_ptr, b_scale_ptr, q_ptr,
                                    s_ptr, M_max, I, num_k_blocks, stride_ase, stride_asm, stride_ask, stride_bse,
                                    stride_bsn, stride_bsk, stride_qe, stride_qm, stride_se, stride_sm, stride_sg, eps,
                                    fp8_max, BLOCK_M, BLOCK_N, BLOCK_K, SWAP_AB, EXACT_ROUND, FAST_DIV, K2, UE8M0)
    else:
        _masked_silu_quant_tile(slot, tl.load(masked_m_ptr + slot), off_m, off_n, a_desc, b_desc, a_scale_ptr,
                                b_scale_ptr, q_ptr, s_ptr, M_max, I, num_k_blocks, stride_ase, stride_asm, stride_ask,
                                stride_bse, stride_bsn, stride_bsk, stride_qe, stride_qm, stride_se, stride_sm,
                                stride_sg, eps, fp8_max, BLOCK_M, BLOCK_N, BLOCK_K, SWAP_AB, EXACT_ROUND, FAST_DIV,
                                K2, UE8M0)


# ---- launcher ---------------------------------------------------------------------------------


def _check_masked(a, a_scale, b, b_scale, masked_m, kernel: str = "tl"):
    """Validate the masked operands for the tl kernels; returns (device, E, M_max, N, K, K blocks). On a device
    Triton cannot run on, kernel="ws" says the ws kernel needs a Hopper GPU (TRITON_INTERPRET=1 cannot help it)."""
    check_tensor("a", a, dtype=torch.float8_e4m3fn, ndim=3)
    try:
        check_runnable_device("a", a)
    except ValueError:
        if kernel == "ws":
            raise ValueError(ws_unavailable(a.device)) from None
        raise
    return check_masked_operands(a, a_scale, b, b_scale, masked_m)


def check_masked_operands(a, a_scale, b, b_scale, masked_m):
    """Validate the masked layout's operands (shared by the tl and Gluon launchers; ``a`` already
    checked as a 3-D e4m3 tensor); returns (device, E, M_max, N, K, K blocks)."""
    dev = a.device
    check_tensor("a_scale", a_scale, dtype=torch.float32, ndim=3, device=dev)
    check_tensor("masked_m", masked_m, dtype=torch.int32, ndim=1, device=dev)
    E, N, K = _check_b(b, b_scale, dev)
    Ea, M_max, Ka = a.shape
    if Ea != E or Ka != K:
        raise ValueError(f"a must be [E, M_max, K] with E={E}, K={K} (from b), got {tuple(a.shape)}")
    if a.numel() and (a.stride(2) != 1 or a.stride(0) != M_max * a.stride(1) or a.stride(1) % 16 or a.data_ptr() % 16):
        raise ValueError(f"a must be K-contiguous, groups stacked densely, 16-byte aligned rows; got strides {a.stride()}")
    kb = cdiv(K, BLOCK_K)
    if tuple(a_scale.shape) != (E, M_max, kb):
        raise ValueError(f"a_scale must be [E, M_max, ceil(K/128)] = {(E, M_max, kb)}, got {tuple(a_scale.shape)}")
    if masked_m.shape[0] != E or masked_m.stride(0) != 1:
        raise ValueError(f"masked_m must be a contiguous [{E}] int32 tensor, got {tuple(masked_m.shape)}")
    return dev, E, M_max, N, K, kb


def _tl_options(E: int, max_active_groups, pdl, prefetch_group) -> tuple[int | None, bool, int | None]:
    """The tl kernel's options under the launchers' scalar rule (``_utils``): max_active_groups None or an int ≥ 0,
    pdl a bool, prefetch_group None or an int in [0, E) — numpy integers / bools accepted and returned as Python
    values; another type (a bool or float for an int, an int for pdl, a str, a tensor) is a TypeError naming the
    argument, a value out of range a ValueError naming it."""
    if max_active_groups is not None:
        max_active_groups = check_int("max_active_groups", max_active_groups, 0)
    pdl = check_bool("pdl", pdl)
    if prefetch_group is not None:
        prefetch_group = check_int("prefetch_group", prefetch_group)
        if not 0 <= prefetch_group < max(E, 1):
            raise ValueError(f"prefetch_group must be None or a group index in [0, {E}), got {prefetch_group}")
    return max_active_groups, pdl, prefetch_group


def _groups(E: int, max_active_groups: int | None) -> int:
    """Group slots to launch: E, or the caller's bound (checked by ``_tl_options``) clamped to [1, E] (a slot loops
    over every non-empty group past the bound, so a too-small bound costs time, never a skipped group). E = 0 → 0."""
    return E if max_active_groups is None else min(E, max(1, max_active_groups))


# L2 prefetch depth (weight K blocks per program) under PDL when the config does not name PREFETCH: own group
# (the down GEMM after GEMM1: 8 of its 16 K blocks) / a fixed group shared out over the slots (GEMM1: the
# shared expert's first 16 of 56 K blocks, ~8 MB, what HBM moves during a decode permute)
_PREFETCH_DEFAULT = {1: 8, 2: 16}


def _pdl_setup(dev, E: int, pdl: bool, prefetch_group: int | None, cfg: dict) -> dict:
    """Kernel arguments of the PDL options (pdl, prefetch_group checked by ``_tl_options``): PDL, PF_MODE, PREFETCH,
    pf_group (all off off CUDA / sm < 90)."""
    pf = cfg.get("PREFETCH")
    if pf is not None and (isinstance(pf, bool) or not isinstance(pf, int) or pf < 0):
        raise ValueError(f"config['PREFETCH'] must be a non-negative int, got {pf!r} (config {cfg!r})")
    if not (pdl and _pdl_capable(dev)):  # griddepcontrol / prefetch are PTX: CUDA sm_90+ only
        return dict(PDL=False, PF_MODE=0, PREFETCH=0, pf_group=-1)
    mode = 1 if prefetch_group is None else 2
    depth = _PREFETCH_DEFAULT[mode] if pf is None else pf
    return dict(PDL=True, PF_MODE=mode if depth > 0 else 0, PREFETCH=depth,
                pf_group=-1 if prefetch_group is None else prefetch_group)


def _default_on_device(cfg: dict, dev: torch.device, tiles: int, kb: int) -> dict:
    # the table's default config adjusted to the grid and to K on CUDA (``_decode_wave_config``, ``_decode_k2_config``)
    if dev.type != "cuda":
        return cfg
    return _decode_k2_config(_decode_wave_config(cfg, tiles, _gg._num_programs(dev)), kb)


def tl_launch_config(dev: torch.device, E: int, M_max: int, N: int, K: int, expected_m: int | None = None,
                     max_active_groups: int | None = None) -> dict:
    """The config the ``tl`` kernel of :func:`grouped_fp8_gemm_masked` launches with when it is called with these
    sizes and no config / pdl: ``grouped_gemm.get_config``'s entry, on CUDA adjusted to the grid and to K (as the
    launcher does). For benchmark rows, which should record what ran. E, M_max, N, K ≥ 1 ints (no checks: the
    launcher's own call checks them); dev a torch.device."""
    cfg = _gg.get_config("masked", min(expected_m or M_max, M_max), N, K)
    tiles = _groups(E, max_active_groups) * cdiv(M_max, cfg["BLOCK_M"]) * cdiv(N, cfg["BLOCK_N"])
    return _default_on_device(cfg, dev, tiles, cdiv(K, BLOCK_K))


def grouped_fp8_gemm_masked(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    masked_m: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    *,
    out: torch.Tensor | None = None,
    expected_m: int | None = None,
    max_active_groups: int | None = None,
    config: dict | None = None,
    pdl: bool = False,
    prefetch_group: int | None = None,
    kernel: str = "auto",
) -> torch.Tensor:
    """out[g, m] = (a[g, m]·a_scale[g, m]) @ (b[g]·b_scale[g])ᵀ for m < masked_m[g]; other rows not written.

    a: [E, M_max, K] float8_e4m3fn, K-contiguous with groups stacked densely (a.view(E·M_max, K) valid),
        16-byte aligned rows (K % 16 == 0). a_scale: [E, M_max, ceil(K/128)] fp32, any strides.
    b: [E, N, K] float8_e4m3fn, K-contiguous; b_scale: [E, ceil(N/128), ceil(K/128)] fp32.
    masked_m: [E] int32 valid rows per group, read on the device (no host sync: CUDA-graph safe);
        values above M_max are clamped to M_max. Rows ≥ masked_m[g] of ``out`` keep whatever they held
        (unspecified when ``out`` is allocated here); their a/a_scale rows (NaN or not) are never stored.
    expected_m: typical rows per group (an int ≥ 1, bools rejected, or None; above M_max it counts as M_max), used
        to pick the kernel (kernel="auto", below) and the launch config (default M_max; without ``config`` and
        ``pdl`` on CUDA, also ``_decode_wave_config``); never a bound on the rows computed (masked_m is).
    max_active_groups: a bound on how many groups have masked_m > 0 (e.g. min(E, T·k) for MoE decode);
        programs are launched for that many group slots (at least 1) and each finds its group(s) on the device:
        slot s serves the non-empty groups number s, s + slots, … — a bound that is too small only costs time
        (a second pass), every non-empty group is always computed. Default E (one program set per group).
    out: optional [E, M_max, N] out_dtype destination; it must not alias the inputs (not checked: a destination
        overlapping an input may give wrong results).
    config: optional launch-config override: BLOCK_M, BLOCK_N, num_warps, num_stages, plus SWAP_AB (tile
        computed as b·aᵀ: weight rows on the tensor-core M side, for few rows per group), PREFETCH (weight
        K blocks per program pulled into L2 before the PDL wait; default 8 own-group / 16 prefetch_group) and
        MAXNREG (registers per thread cap, a multiple of 8 in [24, 255]: with 3-4 stages it lets 3-4 programs
        share an SM, which 161-175 registers would not) and K2 (bool: two K blocks per pipeline stage; needs
        SWAP_AB, BLOCK_N ≤ 128, K a multiple of 256; without ``config`` and ``pdl`` on CUDA the decode default takes
        it from 56 K blocks, grouped_gemm_masked_config._decode_k2_config); any other key raises ValueError.
    pdl: programmatic dependent launch (CUDA sm_90+; ignored elsewhere): the programs may start while the
        previous kernel on the stream runs; they prefetch weights into L2, wait for that kernel
        (griddepcontrol.wait) before reading any input, then let the next kernel launch. The prefetch is a
        hint, never a correctness input: it reads masked_m before the wait (right when masked_m was final
        before the previous kernel started, as in permute → GEMM1 → this GEMM; stale values only miss).
    prefetch_group: with pdl, prefetch this group's weights (e.g. a shared expert routed to every token)
        instead of the groups masked_m names, its K blocks shared out over the programs.
    kernel: "tl" = this module's Triton kernel (config / pdl / prefetch_group / max_active_groups as above);
        "ws" = the warp-specialized Gluon kernel (grouped_gemm_ws.grouped_fp8_gemm_masked_ws: CUDA sm_90 only; takes
        none of pdl, prefetch_group, max_active_groups; config keys of ``grouped_ws_config``; out with its groups
        stacked densely); "auto" (default) = "ws" on a Hopper GPU when none of those tl options nor config is
        given, out is None or dense, rows per group (expected_m capped at M_max, else M_max) ≥ 128 and rows per
        group × E ≥ 256 (grouped_gemm_masked_choice.WS_MIN_ROWS / WS_MIN_TOTAL_ROWS; H200: ws / tl time 0.71-0.98
        in every measured case there), else "tl" (the MoE decode path passes max_active_groups and config: tl). Results
        agree to rounding (both accumulate in fp32; summation order differs). grouped_gemm_masked_choice.
        choose_masked_kernel names the kernel a call runs. Measured as graph replays; eager (no CUDA graph), the ws
        launch costs ~125-145 µs of host time per call against tl's ~45-75 (H200, session 20 W2), so back-to-back
        eager calls at the anchor shapes are host-bound and slower with ws.
    Scalars follow the launchers' rule (``_utils``): expected_m, max_active_groups, prefetch_group ints or numpy
    integers, pdl a bool or numpy bool.
    Returns out [E, M_max, N] (E = 0 or M_max = 0: an empty result, nothing launched). Raises TypeError
    (dtypes; expected_m, max_active_groups, prefetch_group not an int, pdl not a bool, kernel not a str) /
    ValueError (shapes, layout, device, config, prefetch_group out of [0, E), max_active_groups < 0, expected_m < 1,
    kernel unknown, kernel="ws" off a Hopper GPU — on a CPU tensor that is the error, whatever TRITON_INTERPRET — or
    with a tl-only option).
    Semantics: DeepGEMM m_grouped_fp8_gemm_nt_masked.
    """
    if out_dtype not in _OUT_DTYPES:
        raise TypeError(f"out_dtype must be one of {_OUT_DTYPES}, got {out_dtype}")
    kernel = check_kernel(kernel)
    dev, E, M_max, N, K, kb = _check_masked(a, a_scale, b, b_scale, masked_m, kernel)
    if expected_m is not None:
        expected_m = check_int("expected_m", expected_m, 1)
    if out is not None:
        check_tensor("out", out, dtype=out_dtype, ndim=3, device=dev, output=True)
        if tuple(out.shape) != (E, M_max, N):
            raise ValueError(f"out must be [E, M_max, N] = {(E, M_max, N)}, got {tuple(out.shape)}")
    max_active_groups, pdl, prefetch_group = _tl_options(E, max_active_groups, pdl, prefetch_group)
    config = _plain_config(config)
    groups = _groups(E, max_active_groups)
    which = choose_masked_kernel(kernel, dev, E, M_max, expected_m=expected_m, out=out, config=config, pdl=pdl,
                                 prefetch_group=prefetch_group, max_active_groups=max_active_groups)
    if out is None:
        out = torch.empty(E, M_max, N, dtype=out_dtype, device=dev)
    if which == "ws":  # imported here: grouped_gemm_ws imports this module (check_masked_operands)
        from tritonseek.kernels.grouped_gemm_ws import _masked_ws

        if E == 0 or M_max == 0:
            return out
        # operands, out and out_dtype are checked above as grouped_fp8_gemm_masked_ws would check them again
        return _masked_ws(a, a_scale, b, b_scale, masked_m, out, dev, E, M_max, N, K, expected_m, config)
    if M_max == 0 or groups == 0:
        return out
    cfg = dict(config) if config is not None else _gg.get_config("masked", min(expected_m or M_max, M_max), N, K)
    _check_config_keys(cfg, False)
    _check_cfg(cfg, False)
    _maxnreg(cfg)  # MAXNREG checked with the other keys, before any launch setup
    p = _pdl_setup(dev, E, pdl, prefetch_group, cfg)
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    tiles = groups * cdiv(M_max, bm) * cdiv(N, bn)
    if config is None and not p["PDL"]:  # (PDL chains keep their measured configs)
        cfg = _default_on_device(cfg, dev, tiles, kb)
    _check_k2(cfg, kb)
    a_desc = TensorDescriptor(a, [E * M_max, K], [a.stride(1), 1], [bm, BLOCK_K])
    b_desc = TensorDescriptor(b, [E * N, K], [b.stride(1), 1], [bn, BLOCK_K])
    _grouped_fp8_masked_kernel[(tiles,)](
        a_desc, b_desc, a_scale, b_scale, masked_m, out, b,
        M_max, N, E, kb, p["pf_group"], p["PREFETCH"],
        a_scale.stride(0), a_scale.stride(1), a_scale.stride(2), b_scale.stride(0), b_scale.stride(1),
        b_scale.stride(2), out.stride(0), out.stride(1), out.stride(2), b.stride(1),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=BLOCK_K, COMPACT=groups < E, E_PAD=next_pow2(E),
        SWAP_AB=bool(cfg.get("SWAP_AB", False)), PDL=p["PDL"], PF_MODE=p["PF_MODE"], K2=bool(cfg.get("K2", False)),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], launch_pdl=p["PDL"], **_maxnreg(cfg),
    )
    return out


def grouped_fp8_gemm_masked_silu_quant(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    masked_m: torch.Tensor,
    *,
    expected_m: int | None = None,
    max_active_groups: int | None = None,
    config: dict | None = None,
    pdl: bool = False,
    prefetch_group: int | None = None,
    scale_ue8m0: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """h[g, m] = silu(y[g, m, :I])·y[g, m, I:], y = masked grouped GEMM (bf16), then h → e4m3 per 1×128 group.

    The MoE experts' first GEMM with SiLU·mul and the FP8 quant of h in its epilogue: the [E, M_max, 2I]
    bf16 intermediate is never written and only rows < masked_m[g] are computed.
    a, a_scale, masked_m, expected_m, max_active_groups, pdl, prefetch_group: as :func:`grouped_fp8_gemm_masked`.
    b: [E, 2I, K] float8_e4m3fn (gate rows, then up rows: the model's w13), I % 128 == 0;
        b_scale: [E, 2I/128, ceil(K/128)] fp32.
    config: BLOCK_M, num_warps, num_stages, SWAP_AB, PREFETCH, MAXNREG, K2 (as :func:`grouped_fp8_gemm_masked`;
        off unless given: not measured here yet) (BLOCK_N, if given, must be 128: one quant group); other keys raise.
    Returns (h_q [E, M_max, I] float8_e4m3fn, h_s [E, M_max, I/128] fp32, MN-major inside each group —
    stride (M_max·I/128, 1, M_max), the a_scale layout the second GEMM reads). Rows ≥ masked_m[g] are not
    written. On valid rows the result equals grouped_fp8_gemm_masked(out_dtype=bf16) followed by
    fp8_quant.silu_mul_quant_fp8 (same K loop, same rounding; scale_ue8m0, a bool, off by default: power-of-two
    scales as its scale_ue8m0, DeepSeek-V3.1's scale_fmt "ue8m0"). Raises TypeError / ValueError (shapes, layout,
    device, config, expected_m, pdl, prefetch_group, scale_ue8m0) as :func:`grouped_fp8_gemm_masked`.
    Semantics: DeepGEMM m_grouped_fp8_gemm_nt_masked + SGLang silu_and_mul + per_token_group_quant_fp8.
    """
    ue8m0 = check_bool("scale_ue8m0", scale_ue8m0)
    dev, E, M_max, N2, K, kb = _check_masked(a, a_scale, b, b_scale, masked_m)
    if N2 % 256:
        raise ValueError(f"b must be [E, 2I, K] with I a multiple of 128, got {tuple(b.shape)}")
    if expected_m is not None:
        expected_m = check_int("expected_m", expected_m, 1)
    max_active_groups, pdl, prefetch_group = _tl_options(E, max_active_groups, pdl, prefetch_group)
    config = _plain_config(config)
    I = N2 // 2
    h_q = torch.empty(E, M_max, I, dtype=torch.float8_e4m3fn, device=dev)
    h_s = torch.empty(E, I // 128, M_max, dtype=torch.float32, device=dev).transpose(1, 2)
    groups = _groups(E, max_active_groups)
    if M_max == 0 or groups == 0:
        return h_q, h_s
    cfg = dict(config) if config is not None else _gg.get_config("masked", min(expected_m or M_max, M_max), N2, K)
    _check_config_keys(cfg, True)
    _check_cfg(cfg, False, keys=("BLOCK_M", "num_warps", "num_stages"))  # its N tile is fixed at 128
    _check_k2(cfg, kb)
    p = _pdl_setup(dev, E, pdl, prefetch_group, cfg)
    bm = cfg["BLOCK_M"]
    a_desc = TensorDescriptor(a, [E * M_max, K], [a.stride(1), 1], [bm, BLOCK_K])
    b_desc = TensorDescriptor(b, [E * N2, K], [b.stride(1), 1], [128, BLOCK_K])
    tiles = groups * cdiv(M_max, bm) * (I // 128)
    _grouped_fp8_masked_silu_quant_kernel[(tiles,)](
        a_desc, b_desc, a_scale, b_scale, masked_m, h_q, h_s, b,
        M_max, I, E, kb, p["pf_group"], p["PREFETCH"],
        a_scale.stride(0), a_scale.stride(1), a_scale.stride(2), b_scale.stride(0), b_scale.stride(1),
        b_scale.stride(2), h_q.stride(0), h_q.stride(1), h_s.stride(0), h_s.stride(1), h_s.stride(2), b.stride(1),
        AMAX_EPS, FP8_E4M3_MAX,
        BLOCK_M=bm, BLOCK_N=128, BLOCK_K=BLOCK_K, COMPACT=groups < E, E_PAD=next_pow2(E),
        SWAP_AB=bool(cfg.get("SWAP_AB", False)), EXACT_ROUND=interpreter_active(), FAST_DIV=not interpreter_active(),
        PDL=p["PDL"], PF_MODE=p["PF_MODE"], K2=bool(cfg.get("K2", False)),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], launch_pdl=p["PDL"], **_maxnreg(cfg),
        **({"UE8M0": True} if ue8m0 else {}),  # off: the launch (and compiled kernel) of before the keyword
    )
    return h_q, h_s


__all__ = ["grouped_fp8_gemm_masked", "grouped_fp8_gemm_masked_silu_quant"]
