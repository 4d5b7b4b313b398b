"""TAIL_SK: split-K of the last partial wave of the masked warp-specialized grouped FP8 GEMM (Gluon, sm_90a).

The masked kernel (grouped_gemm_ws.py) walks its T non-empty 128×128 tiles on P persistent programs: R = T // P
whole rounds, then a last wave of t = T − R·P tiles that leaves P − t SMs idle. At DeepGEMM's masked (7168, 2048)
anchors T = 448 on 132 SMs: 3 rounds + 52 tiles (BALANCE instead runs 112 programs × 4 tiles). With TAIL_SK, when
0 < t ≤ P / 2 (decided on the device from masked_m, so CUDA-graph safe), each last-wave tile runs as two halves of its
K range on two programs: program 2i takes tile R·P + i over K blocks [0, KB·TAIL_AT / 8), program 2i + 1 over the
rest (TAIL_AT = 4: halves; fewer for the storing program hides its store and release under the other's K loop).
The fix-up is pairwise and deterministic:

* the lower program (2i) stores each consumer warpgroup's fp32 partial (64 × 128) into a workspace slot through
  a coalesced per-thread mapping (``_partial_offsets``: for every register pair a warp writes 256 contiguous bytes;
  both sides use the same mapping, so no layout conversion and no shared memory), then one thread of the warpgroup
  releases its flag (atom.acq_rel.gpu after a warpgroup barrier, cumulative over the warpgroup's stores);
* the higher program (2i + 1) spins on the flag with ld.acquire.gpu (every thread; the pair runs in the same wave,
  so the wait is about the partial's store), adds the partial to its own half (fixed order: first half + second
  half, so the bits do not depend on timing), re-arms the flag to 0 after a warpgroup barrier (graph replays find
  it zeroed) and stores the tile through the usual epilogue.
* the waiter is the later-dispatched program of the pair (higher program id), so the wait cannot deadlock even
  if the grid were not co-resident.

The whole rounds keep the default's K loop and epilogue. Results differ from the unsplit kernel only by the fp32
summation order of the split tiles (two 8-block sums added instead of one 16-block sum).
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import tma

from tritonseek.kernels.grouped_gemm_ws_parts import _epilogue, _load_blocks, _tile_or_drain
from tritonseek.kernels.grouped_gemm_ws_schedule import (
    _masked_prefix, _masked_tiles, _maximum, _schedule, _schedule_masked_fast,
)

# one element per thread of a consumer warpgroup: the single-thread release / re-arm is this layout's element 0
_WG_LANES = gl.constexpr(gl.BlockedLayout([1], [32], [4], [0]))


@gluon.jit
def _tail_counts(pid, num_tiles, num_programs):
    # (whole rounds, this program's work items, split?): split when the last wave holds 1 .. P / 2 tiles; then
    # programs < 2·tail take one half-K piece each, else programs < tail one whole tile
    n_full = num_tiles // num_programs
    tail = num_tiles - n_full * num_programs
    split = ((tail > 0) & (2 * tail <= num_programs)).to(gl.int32)
    extra = split * (pid < 2 * tail).to(gl.int32) + (1 - split) * (pid < tail).to(gl.int32)
    return n_full, n_full + extra, split


@gluon.jit
def _tail_item(j, pid, n_full, num_programs, split, num_k_blocks, TAIL_AT: gl.constexpr):
    # work item j of program pid -> (tile id, first K block, end K block, piece = 1 for a half-K piece); the first
    # piece (the storing program) takes the first TAIL_AT eighths of the K blocks
    piece = split * (j == n_full).to(gl.int32)
    tile_id = piece * (n_full * num_programs + pid // 2) + (1 - piece) * (pid + j * num_programs)
    half = pid % 2
    k_mid = num_k_blocks * TAIL_AT // 8
    k_lo = piece * half * k_mid
    k_hi = num_k_blocks - piece * (1 - half) * (num_k_blocks - k_mid)
    return tile_id, k_lo, k_hi, piece


@gluon.jit
def _producer_tail(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, idx_ptr, M_rows, N, E, num_k_blocks,
                   num_programs, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                   NUM_STAGES: gl.constexpr, E_PAD: gl.constexpr, TAIL_AT: gl.constexpr):
    # grouped_gemm_ws_parts._producer (masked) over this program's work items: each tile's K blocks [k_lo, k_hi)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    cum = _masked_prefix(idx_ptr, E, M_rows, num_pid_n, BLOCK_M, E_PAD, 1)
    num_tiles = gl.reduce(cum, 0, _maximum)
    pid = gl.program_id(0)
    n_full, n_items, split = _tail_counts(pid, num_tiles, num_programs)
    it = 0
    for j in range(n_items):
        # k_lo / k_hi recomputed per item, never loop-carried (the Gluon 3.6 range()-start bug, see _producer)
        tile_id, k_lo, k_hi, piece = _tail_item(j, pid, n_full, num_programs, split, num_k_blocks, TAIL_AT)
        run, g, off_m, a_row, off_n = _schedule(tile_id, idx_ptr, cum, M_rows, N, E, 0, num_pid_n, BLOCK_M, BLOCK_N,
                                                1, True, 1)
        if run:
            it = _load_blocks(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, it, k_lo, a_row, g * N + off_n,
                              k_hi, BLOCK_K, NUM_STAGES)


@gluon.jit
def _partial_offsets(ROWS: gl.constexpr, BLOCK_N: gl.constexpr, row_layout: gl.constexpr, col_layout: gl.constexpr):
    # element (r, c) of a warpgroup's [64, 128] wgmma accumulator -> its slot in a [64·128] fp32 piece, chosen so that
    # for each register pair (columns 2j, 2j+1 of an 8-column group, rows r or r + 8) the 32 lanes of a warp write 256
    # contiguous bytes (warp w holds rows 16w .. 16w + 15; lane = 4·(r mod 8) + (c mod 8) / 2). Any bijection is
    # correct (both programs of a pair use this one); this one keeps the stores and loads coalesced
    r = gl.expand_dims(gl.arange(0, ROWS, layout=row_layout), 1)
    c = gl.expand_dims(gl.arange(0, BLOCK_N, layout=col_layout), 0)
    warp = r // 16
    pair = (c // 8) * 2 + (r % 16) // 8
    lane = 4 * (r % 8) + (c % 8) // 2
    return ((warp * (BLOCK_N // 4) + pair) * 32 + lane) * 2 + c % 2


@gluon.jit
def _ld_acquire(ptr):
    return gl.inline_asm_elementwise("ld.acquire.gpu.global.u32 $0, [$1];", "=r,l", [ptr], dtype=gl.int32,
                                     is_pure=False, pack=1)


@gluon.jit
def _pair_fixup(acc, half, ws_ptr, flag_ptr, slot, ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_N: gl.constexpr,
                row_layout: gl.constexpr, col_layout: gl.constexpr):
    # half 0: store this warpgroup's partial, release the flag; half 1: wait for it, return partial + acc, re-arm
    offs = _partial_offsets(ROWS, BLOCK_N, row_layout, col_layout)
    piece = ws_ptr + (slot.to(gl.int64) * 2 + ROW0 // 64) * (ROWS * BLOCK_N)
    flag = flag_ptr + slot * 2 + ROW0 // 64
    lane = gl.arange(0, 128, layout=_WG_LANES)
    if half == 0:
        gl.store(piece + offs, acc)
        gl.thread_barrier()  # the warpgroup's partial stored before the single release
        gl.atomic_add(flag + lane * 0, gl.full([128], 1, gl.int32, _WG_LANES), mask=lane == 0, sem="acq_rel",
                      scope="gpu")
    else:
        cur = _ld_acquire(flag)
        while cur == 0:
            cur = _ld_acquire(flag)
        part = gl.load(piece + offs, cache_modifier=".cg")
        gl.thread_barrier()  # every thread past its wait before the flag is re-armed
        gl.store(flag + lane * 0, gl.zeros([128], gl.int32, _WG_LANES), mask=lane == 0)
        acc = part + acc
    return acc


@gluon.jit
def _consumer_tail(a_bufs, b_bufs, ready_bars, empty_bars, c_smem, c_desc, c_ptr, a_scale_ptr, b_scale_ptr, idx_ptr,
                   ws_ptr, flag_ptr, M_rows, N, E, num_k_blocks, stride_ase, stride_asm, stride_ask, stride_bse,
                   stride_bsn, stride_bsk, stride_cm, stride_cn, num_programs, BLOCK_M: gl.constexpr,
                   BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, TMA_STORE: gl.constexpr, E_PAD: gl.constexpr,
                   ROW0: gl.constexpr, ROWS: gl.constexpr, WARPS: gl.constexpr, UNROLL2: gl.constexpr,
                   PIPE: gl.constexpr, PIPE0: gl.constexpr, TAIL_AT: gl.constexpr):
    # grouped_gemm_ws_parts._consumer (masked, SPLIT: one warpgroup's 64 rows) over this program's work items; a
    # half-K piece goes through _pair_fixup, and only the second half stores the tile
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[WARPS, 1], instr_shape=[16, BLOCK_N, 32])
    row_layout: gl.constexpr = gl.SliceLayout(1, mma_layout)
    col_layout: gl.constexpr = gl.SliceLayout(0, mma_layout)
    zero = gl.zeros([ROWS, BLOCK_N], gl.float32, mma_layout)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    table = _masked_tiles(idx_ptr, E, M_rows, num_pid_n, E_PAD, WARPS)
    num_tiles = gl.reduce(table >> 1, 0, _maximum)
    pid = gl.program_id(0)
    n_full, n_items, split = _tail_counts(pid, num_tiles, num_programs)
    half = pid % 2
    it = 0
    for j in range(n_items):
        tile_id, k_lo, k_hi, piece = _tail_item(j, pid, n_full, num_programs, split, num_k_blocks, TAIL_AT)
        run, g, off_m, a_row, off_n, hh = _schedule_masked_fast(tile_id, table, M_rows, num_pid_n, BLOCK_M, BLOCK_N)
        mine = run & ((off_m + ROW0) // 64 < hh)
        mm = gl.load(idx_ptr + g)  # first read in the epilogue
        rm = off_m + ROW0 + gl.arange(0, ROWS, layout=row_layout)
        sa_ptrs = a_scale_ptr + g.to(gl.int64) * stride_ase + rm * stride_asm + k_lo * stride_ask
        sb_ptr = b_scale_ptr + g.to(gl.int64) * stride_bse + (off_n // 128) * stride_bsn + k_lo * stride_bsk
        acc, it = _tile_or_drain(mine, run, it, k_hi - k_lo, zero, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs,
                                 rm < M_rows, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS, BLOCK_M, NUM_STAGES,
                                 UNROLL2, PIPE, PIPE0, row_layout)
        mm = gl.maximum(gl.minimum(mm, M_rows), 0)
        if piece != 0:
            if mine:  # both programs of the pair agree on mine (same tile, same warpgroup rows)
                acc = _pair_fixup(acc, half, ws_ptr, flag_ptr, tile_id - n_full * num_programs, ROW0, ROWS, BLOCK_N,
                                  row_layout, col_layout)
        if (piece == 0) | (half == 1):
            _epilogue(acc, c_smem, c_desc, c_ptr, 0, g, run, off_m, a_row, off_n, mm, M_rows, N, stride_cm, stride_cn,
                      ROW0, ROWS, BLOCK_N, TMA_STORE, True, row_layout, col_layout)
    if TMA_STORE:
        tma.store_wait(0)
