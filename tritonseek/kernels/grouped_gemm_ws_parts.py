"""The partitions of the warp-specialized grouped FP8 GEMM kernel (grouped_gemm_ws.py), in Gluon (sm_90a).

The TMA producer warp, the consumer warpgroups (K loop per tile, epilogue) and their DIAG timer stamps. Split from
grouped_gemm_ws.py (module size, session 19); the kernel, its configs, launchers and measurements stay there.

DIAG (constexpr, off by default and compiled out; ``grouped_fp8_gemm_masked_ws(diag=...)``): every program writes
%globaltimer (ns) into diag[pid, slot] and %clock64 (its SM's cycles) into diag[pid, 64 + slot] at the points of
``DIAG_SLOTS``; benchmarks/probe_grouped_ws_timeline.py reads them (%globaltimer advances in 256 ns steps on the
H200, so intervals inside a program are taken from %clock64). The DIAG build runs 4-5 % slower (W1, W3).

What the timeline showed (H200 session 19, W1 d91fd0f / W3 db8c501, masked 1×1024 (4096, 7168), 128 programs of two
128×128 tiles; µs from a program's entry): barriers initialized 0.36, producer start 0.65, masked_m prefix 1.07,
first TMA requested 1.23, first stage landed 2.58; K loops 22.7-23.0 per tile (405 ns per 128-wide K block at
1.63 GHz: 660 SM cycles for 512 cycles of wgmma); epilogue 0.26-0.28 per tile, last store_wait 0.3; the programs'
ends spread ~1 µs (max − median 0.77-1.09), driven by their SMs' clocks (corr(work, MHz) ≈ −0.75). The span (first
entry → last end) is 50.2 of the 53.8 µs a GPU-clock graph replay measures: ~3.6 µs are launch and event overhead
that every kernel pays this way (a one-program stamp kernel times 4.5-4.9 µs; the empty grouped kernel, masked_m =
0, 6.2-6.9). (7168, 2048) (112 programs × 4 tiles): first stage landed 1.94-1.97, K loops 6.7-6.9, epilogues 0.26-0.39
with warpgroup 1 already finishing its K loop 0.42-0.45 µs after warpgroup 0 at tiles 2-4 (the other warpgroup's
epilogue runs under its wgmmas). So the in-kernel fixed cost is ~2.6 µs of prologue (half of it the first TMA's
latency), ~0.6 µs of last epilogue and ~1 µs of end spread.

EARLY_TMA (constexpr, masked, off): the kernel's top level loads masked_m before it initializes the barriers and
requests each program's first tile's first min(K blocks, NUM_STAGES) K blocks (_early_loads) before warp_specialize
starts the partitions; the producer warp goes on from that slot, to move the first request from 1.23 to ~0.6 µs after
entry. Its first form hung on the H200 (W2 at e0bd947, the first 1×1024 (4096, 7168) launch never returned): Triton
3.6's Gluon frontend did not carry the producer's ``kb0`` (the first tile's start block, reset to 0 inside ``if run:``)
through the tile loop, because the loop body read it only as the lower bound of _load_blocks' ``range(kb0, …)``: every
later tile kept the first tile's start, lost NUM_STAGES loads, and the consumers waited forever. Seen in the TTGIR (one
iter_arg for ``it`` and ``kb0``; ``range`` bound = the pre-loop value); a 10-line @gluon.jit kernel shows the same, the
same code under @triton.jit carries it. The start block is now computed per tile. H200 W4 at ad1de6f (the fixed form):
bitwise equal to the default at edge shapes (K blocks < stages, masked_m 0 / 1 / partial, several tiles per program,
all empty, graph replays with new masked_m) — and slower: GPU clock, 60 rounds, ratio to the default 1×1024 (4096,
7168) / 1×1024 (7168, 2048) / 2×512 (7168, 2048) / 4×256 (4096, 7168) 1.028 / 1.041 / 1.042 / 1.017 (A/A 1.003 / 1.000 /
1.012 / 1.001). Its timeline: the top level's masked_m load, table scan and requests held warp_specialize back (producer
start 0.65 → 2.24 µs after entry), and the first stage landed no earlier (2.70 against 2.58 µs), the partitions then
starting ~1.6 µs late. So the first request is not latency-bound on the schedule; it stays off (code kept).

Tried and removed (session 19): PF_DESC (prefetch.param.tensormap of the TMA descriptors at the producer's start;
W1 1.006 / 1.008 / 1.004 against A/A 1.005 / 1.003 / 1.002 — and its B "descriptor" was the wrong kernel parameter:
a host TensorDescriptor expands into the 128-byte tensormap plus its shape/stride params, so B's tensormap is param 5,
not 1); STAGGER (code at 7acc022: the second consumer warpgroup started N SM cycles after the first stage landed,
to move the warpgroups' epilogues apart): W3 at db8c501, GPU clock, 60 rounds, ratio to the default, 1×1024 (4096,
7168) / 1×1024 (7168, 2048) / 2×512 (7168, 2048): 500 cycles 1.032 / 1.022 / 1.036, 1200 cycles 1.039 / 1.034 / 1.043
(A/A 1.008 / 1.002 / 1.008) — slower; its timeline shows the lag absorbed within the first tile (warpgroup 1 ends its
K loops 0.14-0.49 µs after warpgroup 0, as without it) while the first tile takes 0.5 µs longer.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

from tritonseek.kernels.fp8_gemm_ws import _load_tile
from tritonseek.kernels.fp8_gemm_ws_loop import _drain, _k_loop_wide, _tile_k_loop
from tritonseek.kernels.grouped_gemm_ws_schedule import (
    _masked_prefix, _masked_tiles, _maximum, _num_tiles, _schedule, _schedule_contig_fast, _schedule_masked_fast,
    _tile_rows, _tiles_table,
)

# DIAG stamp slots of a program's row (globaltimer at [slot], clock64 at [64 + slot]); i = the program's i-th tile
# (i < 6 producer, i < 8 consumers), consumer c = 0 (rows 0-63; cooperative: all) or 1 (rows 64-127)
DIAG_SLOTS = dict(
    entry=0,  # kernel entry, before the barrier init (every warp)
    bars=1,  # barriers initialized, before warp_specialize
    prod_start=2, prod_sched=3,  # producer warp: partition start, masked_m prefix / tile count ready
    prod_tile=4,  # + i: before tile i's first stage is requested (its empty-wait and TMA follow)
    prod_tile_done=10,  # + i: tile i's last TMA issued
    cons=16, cons_stride=24,  # consumer c's slots start at 16 + 24·c:
    cons_start=0, cons_sched=1, cons_landed=2,  # + start, table ready, first stage landed (before the first wgmma)
    cons_kdone=3,  # + 3 + i: tile i's K loop done (accumulator final)
    cons_epi=11,  # + 11 + i: tile i's epilogue issued (TMA store in flight / masked stores issued)
    cons_end=19,  # + 19: last store_wait done (the partition's end)
    early=62,  # EARLY_TMA: the top level's first-tile requests issued
    smid=63,  # globaltimer half only: the SM id (consumer 0)
)


@gluon.jit
def _clock():
    return gl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l", [], dtype=gl.int64, is_pure=False, pack=1)


@gluon.jit
def _stamp(diag_ptr, slot):
    # DIAG: %globaltimer (ns) and %clock64 of this program at diag[pid, slot] / diag[pid, 64 + slot] (every thread
    # stores the same word: no lane election needed, the stores are fire-and-forget)
    row = diag_ptr + gl.program_id(0).to(gl.int64) * 128
    t = gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=gl.int64, is_pure=False, pack=1)
    gl.store(row + slot, t)
    gl.store(row + 64 + slot, _clock())


@gluon.jit
def _early_loads(mm, a_desc, b_desc, a_bufs, b_bufs, ready_bars, M_rows, N, num_k_blocks, BLOCK_M: gl.constexpr,
                 BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, NUM_STAGES: gl.constexpr):
    # EARLY_TMA (masked; the kernel's top level, barriers initialized): request the first min(K blocks, NUM_STAGES)
    # blocks of this program's first tile (tile pid) into stages 0, 1, … (pipeline slots 0, 1, …: the producer warp
    # goes on from slot min(K blocks, NUM_STAGES)), from mm = masked_m loaded before the barrier init, so the masked_m
    # load overlaps the barrier init and no request waits for warp_specialize (the W1 timeline: first request 1.23 µs
    # after entry, after barrier init 0.36, partition start 0.29, masked_m prefix 0.41, schedule 0.17)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    table = _tiles_table(mm, M_rows, num_pid_n)
    num_tiles = gl.reduce(table >> 1, 0, _maximum)
    pid = gl.program_id(0)
    if pid < num_tiles:
        run, g, off_m, a_row, off_n, hh = _schedule_masked_fast(pid, table, M_rows, num_pid_n, BLOCK_M, BLOCK_N)
        stage_bytes: gl.constexpr = a_desc.block_type.nbytes + b_desc.block_type.nbytes
        for kb in range(gl.minimum(num_k_blocks, NUM_STAGES)):
            bar = ready_bars.index(kb)
            mbarrier.expect(bar, stage_bytes)
            tma.async_copy_global_to_shared(a_desc, [a_row, kb * BLOCK_K], bar, a_bufs.index(kb))
            tma.async_copy_global_to_shared(b_desc, [g * N + off_n, kb * BLOCK_K], bar, b_bufs.index(kb))


@gluon.jit
def _load_blocks(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, it, kb0, a_row, b_row, num_k_blocks,
                 BLOCK_K: gl.constexpr, NUM_STAGES: gl.constexpr):
    # K blocks kb0.. of one tile (128-row A box) into the ring from pipeline slot it on: wait for the stage to be
    # released (a fresh empty barrier passes on parity 1), expect its bytes, request A and B; returns the next slot
    stage_bytes: gl.constexpr = a_desc.block_type.nbytes + b_desc.block_type.nbytes
    for kb in range(kb0, num_k_blocks):
        s = it % NUM_STAGES
        mbarrier.wait(empty_bars.index(s), ((it // NUM_STAGES) & 1) ^ 1)
        bar = ready_bars.index(s)
        mbarrier.expect(bar, stage_bytes)
        tma.async_copy_global_to_shared(a_desc, [a_row, kb * BLOCK_K], bar, a_bufs.index(s))
        tma.async_copy_global_to_shared(b_desc, [b_row, kb * BLOCK_K], bar, b_bufs.index(s))
        it += 1
    return it


@gluon.jit
def _producer(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, idx_ptr, M_rows, N, E, num_k_blocks,
              num_programs, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
              GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr, MASKED: gl.constexpr, E_PAD: gl.constexpr,
              diag_ptr, DIAG: gl.constexpr, EARLY: gl.constexpr = False):
    # One warp: TMA the A rows of each tile that runs and its expert's B rows into the stage ring (it runs up to
    # NUM_STAGES blocks ahead of the consumers, so its schedule's load latency is hidden; the consumers' table would
    # not fit its 40 registers and gives the same tiles in the same order). EARLY (EARLY_TMA, masked): the top level
    # already requested the first tile's first min(K blocks, NUM_STAGES) blocks (slots 0 ..), _early_loads.
    if DIAG:
        _stamp(diag_ptr, 2)
    num_pid_m = gl.cdiv(M_rows, BLOCK_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    if MASKED:
        cum = _masked_prefix(idx_ptr, E, M_rows, num_pid_n, BLOCK_M, E_PAD, 1)
    else:
        cum = 0
    num_tiles = _num_tiles(cum, M_rows, num_pid_n, BLOCK_M, MASKED)
    if DIAG:
        _stamp(diag_ptr, 3)
    it = 0
    if EARLY:
        it = gl.where(gl.program_id(0) < num_tiles, gl.minimum(num_k_blocks, NUM_STAGES), 0)
    ti = 0
    for tile_id in range(gl.program_id(0), num_tiles, num_programs):
        run, g, off_m, a_row, off_n = _schedule(tile_id, idx_ptr, cum, M_rows, N, E, num_pid_m, num_pid_n,
                                                BLOCK_M, BLOCK_N, GROUP_M, MASKED, 1)
        if DIAG:
            if ti < 6:
                _stamp(diag_ptr, 4 + ti)
        if run:
            if EARLY:
                # the early blocks belong to the program's first tile only: its first block index is computed per
                # tile, not carried. Triton 3.6's Gluon frontend drops the update of a loop-carried variable that the
                # loop body reads only as a nested range() start (kb0 = 0 after the first tile never reached the next
                # iteration: every later tile lost its first NUM_STAGES loads and the consumers waited forever, the
                # W2 hang at e0bd947; plain @triton.jit carries it)
                kb0 = gl.minimum(num_k_blocks, NUM_STAGES) * (tile_id == gl.program_id(0)).to(gl.int32)
                it = _load_blocks(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, it, kb0, a_row,
                                  g * N + off_n, num_k_blocks, BLOCK_K, NUM_STAGES)
            else:
                it = _load_tile(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, it, a_row, g * N + off_n,
                                num_k_blocks, BLOCK_M, BLOCK_K, NUM_STAGES)
        if DIAG:
            if ti < 6:
                _stamp(diag_ptr, 10 + ti)
        ti += 1


@gluon.jit
def _tile_or_drain(mine, run, it, num_k_blocks, zero, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs, scale_ok, sb_ptr,
                   stride_ask, stride_bsk, ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
                   NUM_STAGES: gl.constexpr, UNROLL2: gl.constexpr, PIPE: gl.constexpr, PIPE0: gl.constexpr,
                   row_layout: gl.constexpr):
    # this partition's fp32 rows of a tile (mine: it has rows of the tile's expert), else 0 after releasing the
    # tile's stages (run: the producer loaded them); returns (acc, it)
    if mine:
        acc, it = _tile_k_loop(it, num_k_blocks, zero, gl.zeros([ROWS], gl.float32, row_layout), a_bufs, b_bufs,
                               ready_bars, empty_bars, sa_ptrs, scale_ok, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS,
                               BLOCK_M, NUM_STAGES, UNROLL2, PIPE, False, PIPE0)
    else:
        if run:
            it = _drain(it, num_k_blocks, ready_bars, empty_bars, NUM_STAGES)
        acc = zero
    return acc, it


@gluon.jit
def _wide_or_drain(mine, run, it, num_k_blocks, zero, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs, scale_ok, sb_ptr,
                   n1_ok, stride_ask, stride_bsn, stride_bsk, ROW0: gl.constexpr, ROWS: gl.constexpr,
                   BLOCK_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    # WIDE (BLOCK_N = 256): _tile_or_drain with fp8_gemm_ws_loop's 128×256 loop (two n128 halves per K block through
    # one product register set, each promoted with its own b_scale block; n1_ok: the second half's block exists);
    # returns (acc0, acc1, it)
    if mine:
        acc0, acc1, it = _k_loop_wide(it, num_k_blocks, zero, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs, scale_ok,
                                      sb_ptr, n1_ok, stride_ask, stride_bsn, stride_bsk, ROW0, ROWS, BLOCK_M, NUM_STAGES)
    else:
        if run:
            it = _drain(it, num_k_blocks, ready_bars, empty_bars, NUM_STAGES)
        acc0 = zero
        acc1 = zero
    return acc0, acc1, it


@gluon.jit
def _tma_store(acc, c_smem, c_desc, row0, off_n):
    tma.store_wait(0)  # the previous tile's store has left c_smem
    c_smem.store(acc.to(c_desc.dtype))
    fence_async_shared()
    tma.async_copy_shared_to_global(c_desc, [row0, off_n], c_smem)


@gluon.jit
def _store_rows(acc, c_ptr, row0, off_n, row_ok, N, stride_cm, stride_cn, ROWS: gl.constexpr, BLOCK_N: gl.constexpr,
                row_layout: gl.constexpr, col_layout: gl.constexpr):
    rn = off_n + gl.arange(0, BLOCK_N, layout=col_layout)
    ro = (row0 + gl.arange(0, ROWS, layout=row_layout)).to(gl.int64)
    c_ptrs = c_ptr + gl.expand_dims(ro * stride_cm, 1) + gl.expand_dims(rn * stride_cn, 0)
    mask = gl.expand_dims(row_ok, 1) & gl.expand_dims(rn < N, 0)
    gl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


@gluon.jit
def _consumer(a_bufs, b_bufs, ready_bars, empty_bars, c_smem, c_smem1, c_desc, c_ptr, a_scale_ptr, b_scale_ptr,
              idx_ptr, M_rows, N, E, num_k_blocks, stride_ase, stride_asm, stride_ask, stride_bse, stride_bsn,
              stride_bsk, stride_cm, stride_cn, num_programs,
              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr,
              TMA_STORE: gl.constexpr, MASKED: gl.constexpr, E_PAD: gl.constexpr, ROW0: gl.constexpr,
              ROWS: gl.constexpr, WARPS: gl.constexpr, UNROLL2: gl.constexpr, PIPE: gl.constexpr,
              PIPE0: gl.constexpr, diag_ptr, DIAG: gl.constexpr):
    # rows [ROW0, ROW0 + ROWS) of every tile (cooperative: all 128 rows, 8 warps; SPLIT: one warpgroup's 64), with
    # no global load between a tile's last wgmma and the next tile's first (FAST_SCHED, session 17). Masked: the
    # schedule comes from a per-group table held in registers (one reduction per tile), masked_m[g] is loaded at the
    # tile's start and first read in its epilogue. Contiguous: a tile's m_indices are loaded one tile ahead; its
    # expert and whether this partition has rows of it come from one reduction. The a_scale loads are masked to
    # rows < M_rows only (memory safety): rows past masked_m / of padding or another expert compute garbage that is
    # never stored (masked) or replaced by 0 / NaN in the epilogue (contiguous). WIDE (BLOCK_N = 256): two 128-column
    # accumulators per partition, stored one after the other (c_smem, c_smem1; the second only where it has columns
    # inside N). DIAG: stamps at 16 + 24·(ROW0 // 64) + the offsets of DIAG_SLOTS.
    D0: gl.constexpr = 16 + 24 * (ROW0 // 64)
    if DIAG:
        _stamp(diag_ptr, D0)
        if ROW0 == 0:
            smid = gl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r", [], dtype=gl.int32, is_pure=False, pack=1)
            gl.store(diag_ptr + gl.program_id(0).to(gl.int64) * 128 + 63, smid.to(gl.int64))
    ACC_N: gl.constexpr = 128 if BLOCK_N == 256 else BLOCK_N
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[WARPS, 1], instr_shape=[16, ACC_N, 32])
    row_layout: gl.constexpr = gl.SliceLayout(1, mma_layout)
    col_layout: gl.constexpr = gl.SliceLayout(0, mma_layout)
    zero = gl.zeros([ROWS, ACC_N], gl.float32, mma_layout)
    num_pid_m = gl.cdiv(M_rows, BLOCK_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    if MASKED:
        table = _masked_tiles(idx_ptr, E, M_rows, num_pid_n, E_PAD, WARPS)
        num_tiles = gl.reduce(table >> 1, 0, _maximum)
        tile_mi = 0
    else:
        num_tiles = num_pid_m * num_pid_n
        tile_mi = _tile_rows(gl.program_id(0), idx_ptr, M_rows, num_pid_m, num_pid_n, num_tiles, BLOCK_M, GROUP_M,
                             WARPS)
    if DIAG:
        _stamp(diag_ptr, D0 + 1)
        if MASKED and gl.program_id(0) < num_tiles:
            # masked (every numbered tile loads): the first stage landed (a second wait on the phase the K loop waits
            # for: it returns at the same time)
            mbarrier.wait(ready_bars.index(0), 0)
            _stamp(diag_ptr, D0 + 2)
    it = 0
    ti = 0
    for tile_id in range(gl.program_id(0), num_tiles, num_programs):
        if MASKED:
            run, g, off_m, a_row, off_n, hh = _schedule_masked_fast(tile_id, table, M_rows, num_pid_n, BLOCK_M, BLOCK_N)
            mine = run & ((off_m + ROW0) // 64 < hh)
            mm = gl.load(idx_ptr + g)  # first read in the epilogue
            rm = off_m + ROW0 + gl.arange(0, ROWS, layout=row_layout)
            sa_ptrs = a_scale_ptr + g.to(gl.int64) * stride_ase + rm * stride_asm
            mi = 0
        else:
            run, g, off_m, a_row, off_n, mine = _schedule_contig_fast(tile_id, tile_mi, E, num_pid_m, num_pid_n,
                                                                      BLOCK_M, BLOCK_N, GROUP_M, ROW0, ROWS, WARPS)
            tile_mi = _tile_rows(tile_id + num_programs, idx_ptr, M_rows, num_pid_m, num_pid_n, num_tiles, BLOCK_M,
                                 GROUP_M, WARPS)
            rm = off_m + ROW0 + gl.arange(0, ROWS, layout=row_layout)
            mi = gl.load(idx_ptr + rm, mask=rm < M_rows, other=-1)  # first read in the epilogue
            sa_ptrs = a_scale_ptr + rm.to(gl.int64) * stride_asm
            mm = M_rows
        sb_ptr = b_scale_ptr + g.to(gl.int64) * stride_bse + (off_n // 128) * stride_bsn
        if BLOCK_N == 256:
            acc, acc1, it = _wide_or_drain(mine, run, it, num_k_blocks, zero, a_bufs, b_bufs, ready_bars, empty_bars,
                                           sa_ptrs, rm < M_rows, sb_ptr, off_n + 128 < N, stride_ask, stride_bsn,
                                           stride_bsk, ROW0, ROWS, BLOCK_M, NUM_STAGES)
        else:
            acc, it = _tile_or_drain(mine, run, it, num_k_blocks, zero, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs,
                                     rm < M_rows, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS, BLOCK_M, NUM_STAGES,
                                     UNROLL2, PIPE, PIPE0, row_layout)
        if MASKED:
            mm = gl.maximum(gl.minimum(mm, M_rows), 0)
        if DIAG:
            if ti < 8:
                _stamp(diag_ptr, D0 + 3 + ti)
        _epilogue(acc, c_smem, c_desc, c_ptr, mi, g, run, off_m, a_row, off_n, mm, M_rows, N, stride_cm, stride_cn,
                  ROW0, ROWS, ACC_N, TMA_STORE, MASKED, row_layout, col_layout)
        if BLOCK_N == 256:
            if off_n + 128 < N:
                _epilogue(acc1, c_smem1, c_desc, c_ptr, mi, g, run, off_m, a_row, off_n + 128, mm, M_rows, N, stride_cm,
                          stride_cn, ROW0, ROWS, ACC_N, TMA_STORE, MASKED, row_layout, col_layout)
        if DIAG:
            if ti < 8:
                _stamp(diag_ptr, D0 + 11 + ti)
        ti += 1
    if TMA_STORE:
        tma.store_wait(0)
    if DIAG:
        _stamp(diag_ptr, D0 + 19)


@gluon.jit
def _epilogue(acc, c_smem, c_desc, c_ptr, mi, g, run, off_m, a_row, off_n, mm, M_rows, N, stride_cm, stride_cn,
              ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_N: gl.constexpr, TMA_STORE: gl.constexpr,
              MASKED: gl.constexpr, row_layout: gl.constexpr, col_layout: gl.constexpr):
    # store this partition's rows of a tile (group g, first row off_m inside the group / of a, first row a_row of
    # the 2-D out view, first column off_n; masked: mm = the group's valid rows; contiguous: mi = the rows' m_indices)
    rm = off_m + ROW0 + gl.arange(0, ROWS, layout=row_layout)
    if MASKED:
        store_ok = rm < mm
    else:
        # padding rows → 0; rows of another expert than the tile's (misaligned layout) → NaN
        fill = gl.where(mi < 0, 0.0, float("nan"))
        acc = gl.where(gl.expand_dims((mi == g) & run, 1), acc, gl.expand_dims(fill, 1))
        store_ok = rm < M_rows
    # rows of the 2-D output view: a_row + ROW0 + i (masked: out viewed [E·M_max, N]); a masked tile crossing
    # masked_m[g] takes the masked stores (the rows past it are never written)
    if TMA_STORE:
        if MASKED:
            if off_m + ROW0 + ROWS <= mm:
                _tma_store(acc, c_smem, c_desc, a_row + ROW0, off_n)
            else:
                _store_rows(acc, c_ptr, a_row + ROW0, off_n, store_ok, N, stride_cm, stride_cn, ROWS, BLOCK_N,
                            row_layout, col_layout)
        else:
            _tma_store(acc, c_smem, c_desc, a_row + ROW0, off_n)
    else:
        _store_rows(acc, c_ptr, a_row + ROW0, off_n, store_ok, N, stride_cm, stride_cn, ROWS, BLOCK_N,
                    row_layout, col_layout)
