"""Contiguous grouped FP8 GEMM built from the dense 192-row kernel (Gluon, sm_90a; issue 5, session 23).

out[m, n] = Σ_kb a_scale[m, kb] · b_scale[g, n // 128, kb] · Σ_{k in block kb} a[m, k] · b[g, n, k], g = m_indices[m]

Same operands, results and errors as ``grouped_gemm_ws.grouped_fp8_gemm_contiguous_ws`` (DeepGEMM
m_grouped_fp8_gemm_nt_contiguous). Why a second kernel: in session 22 the dense kernel's 192-row tiles (WGS = 3, three
64-row consumer warpgroups, serial SCALE_AHEAD loop) ran the one-expert problem (32768×4096×7168) in 0.845 × the grouped
kernel's time, and a port of those tiles INTO the grouped kernel did not (0.974-1.054, cause not found). So this module
starts from the dense kernel's top level and partitions (fp8_gemm_ws / fp8_gemm_ws_loop: the TMA ring, ``_load_tile``,
``_tile_k_loop`` with SERIAL + SCALE_AHEAD, ``_drain``, ``_store_tile``, ``_tile_coords``, the same registers, stages
and integer specialization) and adds only what the grouped layout needs:

* row tiles per expert segment: a run of 128-row blocks of one expert (the layout's alignment unit) is covered by
  192-row tiles from its first row, the last one partial; rows past the run (the next expert's) are computed but never
  stored. The tile → (first row, expert) map is a device table built by three small ``tl`` kernels from m_indices
  (``build_tile_table``: block experts, a scan over the runs, one program per tile), so there is no host sync and the
  launch is CUDA-graph safe; the persistent grid walks the table's device-side tile count × the N tiles in the dense
  kernel's GROUP_M order. Bound on the row tiles: cdiv(M, 192) + cdiv(M, 128) (each run adds at most one partial tile).
* per tile the table gives n_any (rows up to the last of the tile's expert), n_clean (leading rows of the expert) and
  n_store (rows inside the run). A warpgroup whose 64 rows hold none of the expert's rows issues no wgmma (``_drain``,
  as the dense IDLE_SKIP); a tile with none at all (an all-padding run, expert −1) loads nothing.
* B is read as one [E·N, K] matrix (rows e·N + n; an N tail reads the next expert's rows or TMA's zero fill, which
  feed only columns ≥ N, never stored), the weight scale is b_scale[e, off_n // 128].
* epilogue: a warpgroup whose 64 rows are all the expert's stores through TMA (the dense path); else masked stores
  where padding rows (m_indices −1) get 0 and rows of another expert (a layout not aligned to 128 rows) NaN, the
  contract of the 128-row kernel.

Measured (H200, session 23; benchmarks/probe_grouped_dense.py --df, GPU clock, interleaved graph replays, every variant
checked against the fp32 reference first; A/A twins 0.996-1.002; W1 at 1918939, W2 at 5bf20f9, W3 at 5170cfb, W4 at
e8d5d71, W5 at 7a6a079, W6 at 577e50f). Without BASE_PTR it lost to the grouped 128-row kernel (below); with it
(W6, 30 rounds, A/A ≤ 1.004) it runs 0.921 / 0.948 × the grouped default's time at 4×8192 / 8×4096 (4096, 7168) (1124 /
1092 vs 1032 / 1035 TFLOP/s), 0.943 at 4×8192 (7168, 2048) (1074 vs 1013), 0.958 on the routed (4096, 7168) layout
(655 vs 628), one expert 1119 (NO_TABLE 1130, dense 192-row kernel 1204): grouped_gemm_ws hands those layouts to it
(``_dense_form_pays``, bf16 out).
* without BASE_PTR, time ratio to the grouped default: 4×8192 / 8×4096 at (4096, 7168) 1.049 / 1.074 (W1),
  1.042 / 1.066 (W2), 1.046 / 1.069 (W3), 4×8192 1.042 (W4), 1.040 (W5);
  (7168, 2048) 1.027 / 1.065 (W1, against the default's WIDE tiles); routed prefill (T = 4096 top-8 over 256 experts)
  (4096, 7168) 0.989 / 0.991 (W1 / W2), (7168, 2048) 1.094.
* the one-expert bisection (the dense 32768×4096×7168 problem, TFLOP/s, W2): dense 192-row kernel (the same
  partitions, SCALE_AHEAD) 1209; this kernel 982 (W1 998 vs 1225); the same build with NO_TABLE (tiles from the index,
  no table loads, no table kernels) 1133; PREFETCH + PF_PROD (the next entry loaded one tile ahead) 970; the three
  table kernels alone 11-12 µs. So ~13 % of the time is lost to where the tile entries come from, and ~6 % to what
  remains different from the dense kernel (not found: same K-loop SASS, registers, stages, order).
* PREFETCH did not help: ptxas issues the R2UR of each prefetched value right after its LDG (sm_90a SASS).
* it is NOT the latency of the table's global loads: SMEM_TABLE (the table copied to shared memory once per CTA, one
  LDS.128 per tile) ran 992 vs 994 for the global table (W3 at 5170cfb, A/A 0.1 %); nor the table kernels (DIAG 6:
  the NO_TABLE kernel behind them, unread, 1129 vs 1131, W5).
* the DIAG bisection (W4 at e8d5d71 / W5 at 7a6a079, same run each, A/A ≤ 0.2 %; TFLOP/s, NO_TABLE 1132 / 1131,
  table 983 / 983): the loss is in the CONSUMERS' first row. Consumers from the table, producer from the index (d1)
  976; the reverse (d2) 1091; rows + count from the table with a compile-time expert 0 (d3) 980; the expert loaded,
  rows from the index (d4) 1105; the consumers' first row from the table, their row counts and everything else from
  the index (d8) 980; the reverse: the row counts loaded per tile (branch conditions: wgmma or drain, TMA or masked
  store), the first row from the index (d9) 1129, at NO_TABLE speed. The tile count loaded once per partition (d5,
  all partitions) 1079-1082, (d7, consumers only) 1076: ~5 % for one load per kernel, with the consumers' hot loop
  and tile-start SASS instruction for instruction those of NO_TABLE (faithful compile with the launch's integer and
  pointer specialization) — so part of the loss is not in the static code; a run-time effect (the consumers'
  start or phase against the producer) is the open guess.
* NOT a chain of two dependent loads at the tile start either: d9 has one too (entry LDG, R2UR, the wgmma-or-drain
  branch, then the a_scale LDGs, then the first wgmma; faithful sm_90a SASS) and runs at NO_TABLE speed. What the
  loaded first row (d8) changes: the a_scale row addresses (loaded at every K block; in the hot loop each of a
  thread's two rows gets its own 64-bit address, IMAD.WIDE, where NO_TABLE uses one address and a +0x20 offset) and
  the TMA store coordinates.
* W6: BASE_PTR (the row pointers built from the tile's scalar base, so the hot loop's addressing is NO_TABLE's) takes
  the loss back: one expert 1119 (d8 + BASE_PTR 1146) vs 985 without. So it was the a_scale addressing in the K loop
  (a couple of integer instructions per K block in the SASS; why they cost ~13 % is not known). What is left to the
  dense kernel (1204): the count loaded once (d7, ~5 %, the same SASS: not explained) and the expert (d4, ~2.4 %).
The same pointers in grouped_gemm_ws's 128-row kernels changed nothing there (its docstring, session 23).

Session 24 (h1df; H200 W1 at 5cdb825, probe_grouped_dense --df --df-free, 60 interleaved rounds, A/A ≤ 0.3 %): why
8×4096 (4096, 7168) ran slower than 4×8192 (same FLOPs). 4096 = 21·192 + 64: 22 row tiles per expert, 5632 tiles on
132 persistent programs, so 88 programs draw 43 tiles and with the static round-robin some draw 43 full ones (a tile-
cost model: max 43 against a mean of 41.7 tile-times; 4×8192: 42 against 41.6). Making the 64-row tiles free (their
rows padding: ``df_free``) did not help (1.009 × the time): consistent with the model, where those programs hold no
short tile. The table's SPLIT_TAIL (a run's last 192 + 64 rows as 128 + 128: the same tile count, the work of a 64-row
tile spread so the 43-tile programs carry short tiles; model max 42.25) ran 0.981 at 8×4096 at both (N, K); the
PARTIAL_LAST order (model 42.0) only 0.994 (its short tiles re-read their weight strips at the end). On the routed
layouts SPLIT_TAIL lost (1.157 / 1.230: a 128-row tile costs nearly a 192-row one there), hence the per-expert rows
rule (``df_config``). W2 (25aabfa, warmed GPU, 80 rounds, A/A ≤ 0.1 %): SPLIT_TAIL off 1.022 / 1.018 × the default's
time at 8×4096 (4096, 7168) / (7168, 2048); GROUP_M 16 1.012 / 1.001, 4 1.002 / 0.998 (kept 8). W3 (cfc93da;
benchmarks/probe_grouped_suite_clocks.py) under sustained load at the 700 W cap (1.25-1.55 GHz, single reps ±8 %):
SPLIT_TAIL off 1.011-1.034 × at 8×4096 (4096, 7168) by eager, one-call graph, GPU clock and back-to-back replays.

Gluon compiles only for CUDA (sm_90a): no interpreter path; the launcher raises on other devices. The table builder is
``tl`` and runs under the interpreter (CPU tests check it against ``tile_table_ref``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from tritonseek.kernels._host import cdiv, next_pow2
from tritonseek.kernels._utils import check_config, check_tensor
from tritonseek.kernels.fp8_gemm import _tma_storable
from tritonseek.kernels.fp8_gemm_ws import (_GL_DTYPES, _WGS3_REGS, _c_buf, _check_cuda_sm90, _load_tile, _num_sms,
                                            _smem_layout)
from tritonseek.kernels.fp8_gemm_ws_loop import _drain, _store_tile, _tile_coords, _tile_k_loop
from tritonseek.kernels.grouped_gemm import (
    BLOCK_K, M_ALIGNMENT, check_contiguous_alignment, check_contiguous_operands,
)

TILE_M = 192  # rows per tile: three 64-row consumer warpgroups
GROUPED_CPU_PATH = "the tl kernels of grouped_gemm"  # the launchers' error names them for CPU use
_ENTRY = 4  # int32 per table entry: first row, expert, n_any, n_clean | n_store << 8

# Launch config (the dense fp8_gemm_ws WGS = 3 entry: 4 stages of 3 × 8 KB A + 16 KB B, GROUP_M 8, TMA store,
# SCALE_AHEAD 1 = the serial loop's scales one K block ahead)
# The session-23 diagnostics and variants (PREFETCH / PF_PROD: the next tile's entry loaded one tile ahead; SMEM_TABLE:
# the table copied to shared memory; NO_TABLE / DIAG 1-9: the one-expert bisection builds; BASE_PTR off) were measured
# (module docstring) and removed; their code is in git at 3794200. The a_scale pointers are always BASE_PTR's.
# SPLIT_TAIL / PARTIAL_LAST (session 24): build_tile_table's split_tail / partial_last (the tile table's shapes and
# order; the kernel is the same). H200 s24 W1 (GPU clock, 60 interleaved rounds, A/A 0.999-1.003): SPLIT_TAIL 0.981 ×
# the time at 8×4096 (4096, 7168) and 0.981 at 8×4096 (7168, 2048) (rows 4096 = 21·192 + 64 per expert), no change at
# 4×8192 (8192 = 42·192 + 128: not split), but 1.157 / 1.230 on the routed layouts (191 rows per expert with padding,
# runs of 128 / 256 rows). So it is on from _SPLIT_MIN_ROWS_PER_EXPERT rows per expert (padding included; the
# fewest measured to win). PARTIAL_LAST (off) 0.994 / 0.990 at 8×4096, 1.023 / 0.995 routed: the short tiles at the
# end read their experts' weight strips again (each (expert, N tile) once, no L2 reuse), eating the balance it buys.
_DEFAULT_DF = dict(NUM_STAGES=4, GROUP_M=8, TMA_STORE=True, SCALE_AHEAD=1, SPLIT_TAIL=False, PARTIAL_LAST=False)
DF_CONFIG_SPEC: dict = dict(NUM_STAGES=range(2, 5), GROUP_M=range(1, 1025), TMA_STORE=bool, SCALE_AHEAD=(0, 1),
                            SPLIT_TAIL=bool, PARTIAL_LAST=bool)
_SPLIT_MIN_ROWS_PER_EXPERT = 4096


def df_config(rows: int | None = None, experts: int = 1) -> dict:
    """The launch config of ``grouped_fp8_gemm_contiguous_df`` (a copy); with ``rows`` (M, padding included) over
    ``experts`` weights, SPLIT_TAIL is on where M / E ≥ 4096 (``_SPLIT_MIN_ROWS_PER_EXPERT``, measured above)."""
    cfg = dict(_DEFAULT_DF)
    if rows is not None:
        cfg["SPLIT_TAIL"] = rows >= _SPLIT_MIN_ROWS_PER_EXPERT * max(experts, 1)
    return cfg


def max_row_tiles(m: int) -> int:
    """Upper bound on the row tiles of an M-row contiguous layout: Σ_runs cdiv(rows_r, 192) ≤ cdiv(M, 192) + runs,
    runs ≤ cdiv(M, 128)."""
    return cdiv(m, TILE_M) + cdiv(m, M_ALIGNMENT)


# ----------------------------------------------------------------------------------------------
# Tile table (tl: runs under the interpreter too)
# ----------------------------------------------------------------------------------------------


@triton.jit
def _block_expert_kernel(mi_ptr, blk_ptr, M, NB, BLOCKS: tl.constexpr, ALIGN: tl.constexpr):
    # the expert of each ALIGN-row block = the max of its m_indices (−1: all padding); rows ≥ M count as padding
    b = tl.program_id(0) * BLOCKS + tl.arange(0, BLOCKS)
    rows = b[:, None] * ALIGN + tl.arange(0, ALIGN)[None, :]
    mi = tl.load(mi_ptr + rows, mask=rows < M, other=-1)
    tl.store(blk_ptr + b, tl.max(mi, axis=1), mask=b < NB)


@triton.jit
def _min_i32(x, y):
    return tl.minimum(x, y)


@triton.jit
def _run_scan_kernel(blk_ptr, cum_ptr, rend_ptr, count_ptr, M, NB, NB_PAD: tl.constexpr, ALIGN: tl.constexpr,
                     TILE: tl.constexpr):
    # one program: a run = maximal span of consecutive blocks with one block expert. Per block b: the run's row end
    # (rend) and the inclusive count of tiles of the runs starting at blocks ≤ b (cum; a run of R rows has cdiv(R, TILE)
    # tiles, counted at its first block); count = the total
    b = tl.arange(0, NB_PAD)
    inb = b < NB
    e = tl.load(blk_ptr + b, mask=inb, other=-2)
    e_prev = tl.load(blk_ptr + b - 1, mask=inb & (b > 0), other=-3)
    e_next = tl.load(blk_ptr + b + 1, mask=b + 1 < NB, other=-3)
    start = inb & (e != e_prev)
    nxt = tl.where((b + 1 < NB) & (e_next != e), b + 1, NB)  # b + 1 where a run starts there
    run_end = tl.associative_scan(nxt, 0, _min_i32, reverse=True)  # the first run start after b (NB: none)
    row_end = tl.minimum(run_end * ALIGN, M)
    ntiles = tl.where(start, (row_end - b * ALIGN + TILE - 1) // TILE, 0)
    tl.store(cum_ptr + b, tl.cumsum(ntiles, 0), mask=inb)
    tl.store(rend_ptr + b, row_end, mask=inb)
    tl.store(count_ptr, tl.sum(ntiles, 0))


@triton.jit
def _tile_info_kernel(mi_ptr, blk_ptr, cum_ptr, rend_ptr, count_ptr, table_ptr, NB, NB_PAD: tl.constexpr,
                      ALIGN: tl.constexpr, TILE: tl.constexpr, TILE_PAD: tl.constexpr, ENTRY: tl.constexpr,
                      SPLIT_TAIL: tl.constexpr, PARTIAL_LAST: tl.constexpr):
    # one program per possible tile t (< the device count) in run order: its run = the first block whose cum exceeds
    # t (a run start), its first row, expert and row counts (see the module docstring). SPLIT_TAIL: a run's last
    # 192 + r rows (0 < r <= 64) become tiles of 128 and 64 + r rows (same tile count). PARTIAL_LAST: the entry is
    # written at its place in the order "all 192-row tiles (run order), then the others (run order)"
    t = tl.program_id(0)
    count = tl.load(count_ptr)
    if t < count:
        b = tl.arange(0, NB_PAD)
        cum = tl.load(cum_ptr + b, mask=b < NB, other=2147483647)
        bs = tl.sum((cum <= t).to(tl.int32), 0)
        before = tl.load(cum_ptr + bs - 1, mask=bs > 0, other=0)
        e = tl.load(blk_ptr + bs)
        rend = tl.load(rend_ptr + bs)
        i = t - before  # the tile's index in its run
        row0 = bs * ALIGN + i * TILE
        n_store = tl.minimum(rend - row0, TILE)
        if SPLIT_TAIL:  # (selects, not branches: one code path per program)
            q = (rend - bs * ALIGN) // TILE
            rem = (rend - bs * ALIGN) % TILE
            split = (q >= 1) & (rem > 0) & (rem <= TILE // 3)
            row0 = tl.where(split & (i == q), row0 - TILE // 3, row0)  # (q - 1) · 192 + 128
            n_store = tl.where(split & (i == q - 1), 2 * (TILE // 3), tl.where(split & (i == q), TILE // 3 + rem,
                                                                                n_store))
        r = tl.arange(0, TILE_PAD)
        in_st = r < n_store
        mi = tl.load(mi_ptr + row0 + r, mask=in_st, other=-2)
        match = in_st & (mi == e)
        n_any = tl.max(tl.where(match, r + 1, 0), 0)
        n_clean = tl.min(tl.where(in_st & (mi != e), r, n_store), 0)
        dest = t
        if PARTIAL_LAST:
            # full (192-row) tiles of every run: R // 192, one fewer where SPLIT_TAIL splits the run's last rows
            inb = b < NB
            eb = tl.load(blk_ptr + b, mask=inb, other=-2)
            eprev = tl.load(blk_ptr + b - 1, mask=inb & (b > 0), other=-3)
            rows = tl.load(rend_ptr + b, mask=inb, other=0) - b * ALIGN
            nfull = rows // TILE
            if SPLIT_TAIL:
                rr = rows % TILE
                nfull = tl.where((nfull >= 1) & (rr > 0) & (rr <= TILE // 3), nfull - 1, nfull)
            nfull = tl.where(inb & (eb != eprev), nfull, 0)
            full_total = tl.sum(nfull, 0)
            full_before = tl.sum(tl.where(b < bs, nfull, 0), 0)
            run_full = tl.sum(tl.where(b == bs, nfull, 0), 0)
            dest = tl.where(i < run_full, full_before + i, full_total + (before - full_before) + (i - run_full))
        tl.store(table_ptr + dest * ENTRY, row0)
        tl.store(table_ptr + dest * ENTRY + 1, e)
        tl.store(table_ptr + dest * ENTRY + 2, n_any)
        tl.store(table_ptr + dest * ENTRY + 3, n_clean | (n_store << 8))


def build_tile_table(m_indices: torch.Tensor, m: int, table: torch.Tensor | None = None, *,
                     split_tail: bool = False, partial_last: bool = False) -> tuple:
    """The row-tile table of a contiguous layout, on m_indices' device (no host sync; CUDA-graph safe).

    m_indices: [m] int32 expert per row (−1 padding), contiguous; m ≥ 1.
    table: optional int32 workspace of ≥ ``max_row_tiles(m) · 4 + cdiv(m, 128) · 3 + 1`` elements (else allocated).
    split_tail: a run whose length is 192·q + r with q ≥ 1 and 0 < r ≤ 64 ends in tiles of 128 and 64 + r rows instead
        of 192 and r (the same tile count; no tile with only one busy consumer warpgroup). partial_last: the entries
        of all 192-row tiles first, then those of the shorter tiles, each part in run order (a tile's row range and
        counts do not change, only its place). Both as ``tile_table_ref`` describes.
    Returns (entries [max_row_tiles(m), 4] int32: first row, expert (−1 = all padding), n_any, n_clean | n_store << 8,
    valid for the first count rows; count [1] int32). Entries past count are left as they were.
    """
    nb = cdiv(m, M_ALIGNMENT)
    tmax = max_row_tiles(m)
    need = tmax * _ENTRY + 3 * nb + 1
    dev = m_indices.device
    if table is None:
        table = torch.empty(need, dtype=torch.int32, device=dev)
    elif table.dtype != torch.int32 or table.numel() < need or not table.is_contiguous():
        raise ValueError(f"table must be a contiguous int32 workspace of >= {need} elements")
    entries = table[: tmax * _ENTRY].view(tmax, _ENTRY)
    blk = table[tmax * _ENTRY: tmax * _ENTRY + nb]
    cum = table[tmax * _ENTRY + nb: tmax * _ENTRY + 2 * nb]
    rend = table[tmax * _ENTRY + 2 * nb: tmax * _ENTRY + 3 * nb]
    count = table[tmax * _ENTRY + 3 * nb: tmax * _ENTRY + 3 * nb + 1]
    blocks = 8
    _block_expert_kernel[(cdiv(nb, blocks),)](m_indices, blk, m, nb, BLOCKS=blocks, ALIGN=M_ALIGNMENT)
    nb_pad = max(16, next_pow2(nb))
    _run_scan_kernel[(1,)](blk, cum, rend, count, m, nb, NB_PAD=nb_pad, ALIGN=M_ALIGNMENT, TILE=TILE_M,
                           num_warps=8 if nb_pad >= 2048 else 4)
    _tile_info_kernel[(tmax,)](m_indices, blk, cum, rend, count, entries, nb, NB_PAD=nb_pad, ALIGN=M_ALIGNMENT,
                               TILE=TILE_M, TILE_PAD=256, ENTRY=_ENTRY, SPLIT_TAIL=bool(split_tail),
                               PARTIAL_LAST=bool(partial_last), num_warps=2)
    return entries, count


def tile_table_ref(m_indices: torch.Tensor, split_tail: bool = False,
                   partial_last: bool = False) -> list[tuple[int, int, int, int, int]]:
    """Python reference of ``build_tile_table``: [(first row, expert, n_any, n_clean, n_store)] in table order.

    A run = a maximal span of 128-row blocks with one block expert (the max of the block's m_indices); it is cut into
    192-row tiles from its first row, the last one shorter (split_tail: a last 192 + r rows with 0 < r ≤ 64 as 128 and
    64 + r). partial_last: the tiles of 192 rows first, then the shorter ones, each part in run order."""
    mi = m_indices.tolist()
    m = len(mi)
    blk = [max(mi[i:i + M_ALIGNMENT]) for i in range(0, m, M_ALIGNMENT)]
    out = []
    b = 0
    while b < len(blk):
        e = blk[b]
        b_end = b
        while b_end < len(blk) and blk[b_end] == e:
            b_end += 1
        r0, r_end = b * M_ALIGNMENT, min(b_end * M_ALIGNMENT, m)
        heights = [TILE_M] * ((r_end - r0) // TILE_M)
        rem = (r_end - r0) % TILE_M
        if rem:
            heights.append(rem)
        if split_tail and rem and len(heights) >= 2 and rem <= TILE_M // 3:
            heights[-2:] = [2 * TILE_M // 3, TILE_M // 3 + rem]
        row0 = r0
        for h in heights:
            rows = mi[row0:row0 + h]
            n_any = max([i + 1 for i, x in enumerate(rows) if x == e], default=0)
            n_clean = next((i for i, x in enumerate(rows) if x != e), h)
            out.append((row0, e, n_any, n_clean, h))
            row0 += h
        b = b_end
    if partial_last:
        out = [x for x in out if x[4] == TILE_M] + [x for x in out if x[4] != TILE_M]
    return out


# ----------------------------------------------------------------------------------------------
# Gluon kernel: the dense WGS = 3 kernel with the table's tiles
# ----------------------------------------------------------------------------------------------


@gluon.jit
def _df_producer(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, table_ptr, count_ptr, N, num_k_blocks,
                 num_programs, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, GROUP_M: gl.constexpr,
                 NUM_STAGES: gl.constexpr, ENTRY: gl.constexpr):
    # the dense _ws_producer over the table's row tiles: A rows from the tile's first row, B rows e·N + off_n; a tile
    # with no row of its expert (all padding) loads nothing
    num_pid_m = gl.load(count_ptr)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    total = num_pid_m * num_pid_n
    it = 0
    for tile_id in range(gl.program_id(0), total, num_programs):
        pid_m, pid_n = _tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M)
        row0, e, n_any, _p = _entry(table_ptr, tile_id, total, num_pid_m, num_pid_n, GROUP_M, ENTRY)
        if (e >= 0) & (n_any > 0):
            it = _load_tile(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, it, row0,
                            e * N + pid_n * BLOCK_N, num_k_blocks, 192, BLOCK_K, NUM_STAGES)


@gluon.jit
def _df_consumer(a_bufs, b_bufs, ready_bars, empty_bars, c_smem, c_desc, c_ptr, a_scale_ptr, b_scale_ptr, mi_ptr,
                 table_ptr, count_ptr, M, N, num_k_blocks, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk,
                 stride_cm, stride_cn, num_programs, BLOCK_N: gl.constexpr, GROUP_M: gl.constexpr,
                 NUM_STAGES: gl.constexpr, TMA_STORE: gl.constexpr, ROW0: gl.constexpr, SCALE_AHEAD: gl.constexpr,
                 ENTRY: gl.constexpr):
    # rows [ROW0, ROW0 + 64) of every table tile: the dense _ws_consumer / _consumer_tile with WGS = 3 (SERIAL loop)
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, BLOCK_N, 32])
    row_layout: gl.constexpr = gl.SliceLayout(1, mma_layout)
    col_layout: gl.constexpr = gl.SliceLayout(0, mma_layout)
    zero = gl.zeros([64, BLOCK_N], gl.float32, mma_layout)
    num_pid_m = gl.load(count_ptr)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    total = num_pid_m * num_pid_n
    it = 0
    for tile_id in range(gl.program_id(0), total, num_programs):
        pid_m, pid_n = _tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M)
        row0, e, n_any, packed = _entry(table_ptr, tile_id, total, num_pid_m, num_pid_n, GROUP_M, ENTRY)
        off_m = row0 + ROW0
        off_n = pid_n * BLOCK_N
        if (e >= 0) & (n_any > ROW0):
            rm = off_m + gl.arange(0, 64, layout=row_layout)
            # the tile's scalar base first, then the 64 rows' small offsets: base + rm · stride costs ~13 % (module
            # docstring, BASE_PTR)
            sa_ptrs = (a_scale_ptr + off_m * stride_asm) + gl.arange(0, 64, layout=row_layout) * stride_asm
            acc, it = _tile_k_loop(it, num_k_blocks, zero, gl.zeros([64], gl.float32, row_layout), a_bufs, b_bufs,
                                   ready_bars, empty_bars, sa_ptrs, rm < M,
                                   b_scale_ptr + e * stride_bse + (off_n // 128) * stride_bsn, stride_ask, stride_bsk,
                                   ROW0, 64, 192, NUM_STAGES, True, False, True, False, SCALE_AHEAD)
        else:
            if (e >= 0) & (n_any > 0):
                # the other warpgroups compute this tile: hand the stages back without wgmmas (dense IDLE_SKIP)
                it = _drain(it, num_k_blocks, ready_bars, empty_bars, NUM_STAGES)
            acc = zero
        n_store = packed >> 8
        if n_store > ROW0:
            if (packed & 255) >= ROW0 + 64:
                _store_tile(acc, c_smem, c_desc, c_ptr, off_m, off_n, M, N, stride_cm, stride_cn, 64, BLOCK_N,
                            TMA_STORE, row_layout, col_layout)
            else:
                _store_rows(acc, c_ptr, mi_ptr, e, off_m, off_n, row0 + n_store, N, stride_cm, stride_cn, BLOCK_N,
                            row_layout, col_layout)
    if TMA_STORE:
        tma.store_wait(0)


@gluon.jit
def _entry(table, tile_id, total, num_pid_m, num_pid_n, GROUP_M: gl.constexpr, ENTRY: gl.constexpr):
    # the table entry (row0, e, n_any, n_clean | n_store << 8) of tile tile_id; past the last tile (0, −1, 0, 0), no load
    pid_m, pid_n = _tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M)
    ok = tile_id < total
    ptr = table + pid_m * ENTRY
    return (gl.load(ptr, mask=ok, other=0), gl.load(ptr + 1, mask=ok, other=-1),
            gl.load(ptr + 2, mask=ok, other=0), gl.load(ptr + 3, mask=ok, other=0))


@gluon.jit
def _store_rows(acc, c_ptr, mi_ptr, e, off_m, off_n, row_end, N, stride_cm, stride_cn, BLOCK_N: gl.constexpr,
                row_layout: gl.constexpr, col_layout: gl.constexpr):
    # masked epilogue of a warpgroup with rows that are not all the tile's expert: rows < row_end (the run's end) are
    # stored, the expert's rows as computed, padding rows (−1) as 0, another expert's rows (misaligned) as NaN
    rm = off_m + gl.arange(0, 64, layout=row_layout)
    rn = off_n + gl.arange(0, BLOCK_N, layout=col_layout)
    r_ok = rm < row_end
    mi = gl.load(mi_ptr + rm, mask=r_ok, other=-1)
    fill = gl.where(mi < 0, 0.0, float("nan"))
    val = gl.where(gl.expand_dims(mi == e, 1), acc, gl.expand_dims(fill, 1))
    c_ptrs = c_ptr + gl.expand_dims(rm.to(gl.int64) * stride_cm, 1) + gl.expand_dims(rn * stride_cn, 0)
    gl.store(c_ptrs, val.to(c_ptr.dtype.element_ty), mask=gl.expand_dims(r_ok, 1) & gl.expand_dims(rn < N, 0))


@gluon.jit
def _df_kernel(
    a_desc, b_desc, c_desc, c_ptr, a_scale_ptr, b_scale_ptr, mi_ptr, table_ptr, count_ptr,
    M, N, num_k_blocks, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk, stride_cm, stride_cn,
    num_programs,
    BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr,
    TMA_STORE: gl.constexpr, SCALE_AHEAD: gl.constexpr, PRODUCER_REGS: gl.constexpr, CONSUMER_REGS: gl.constexpr,
    ENTRY: gl.constexpr, num_warps: gl.constexpr,
):
    # a_desc: TMA over a [M, K] e4m3, box [64, BLOCK_K]; b_desc: over b viewed [E·N, K], box [BLOCK_N, BLOCK_K]
    # c_desc (TMA_STORE): over out [M, N], box [64, BLOCK_N]; c_ptr / stride_c*: the masked epilogue
    # a_scale [M, KB] (stride_asm, stride_ask); b_scale [E, NB, KB] (stride_bse, stride_bsn, stride_bsk)
    # mi_ptr: m_indices [M]; table_ptr / count_ptr: build_tile_table's entries and count
    a_bufs = gl.allocate_shared_memory(a_desc.dtype, [NUM_STAGES * 3] + a_desc.block_type.shape, a_desc.layout)
    b_bufs = gl.allocate_shared_memory(b_desc.dtype, [NUM_STAGES] + b_desc.block_type.shape, b_desc.layout)
    ready_bars = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty_bars = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready_bars.index(i), count=1)
        mbarrier.init(empty_bars.index(i), count=3)  # released once per consumer warpgroup
    if TMA_STORE:
        c_smem = gl.allocate_shared_memory(c_desc.dtype, [3] + c_desc.block_type.shape, c_desc.layout)
    else:
        c_smem = a_bufs  # unused placeholder
    gl.warp_specialize([
        (_df_consumer, (a_bufs, b_bufs, ready_bars, empty_bars, _c_buf(c_smem, 0, 1, 0, TMA_STORE), c_desc, c_ptr,
                        a_scale_ptr, b_scale_ptr, mi_ptr, table_ptr, count_ptr, M, N, num_k_blocks, stride_asm,
                        stride_ask, stride_bse, stride_bsn, stride_bsk, stride_cm, stride_cn, num_programs, BLOCK_N,
                        GROUP_M, NUM_STAGES, TMA_STORE, 0, SCALE_AHEAD, ENTRY)),
        (_df_consumer, (a_bufs, b_bufs, ready_bars, empty_bars, _c_buf(c_smem, 1, 1, 0, TMA_STORE), c_desc, c_ptr,
                        a_scale_ptr, b_scale_ptr, mi_ptr, table_ptr, count_ptr, M, N, num_k_blocks, stride_asm,
                        stride_ask, stride_bse, stride_bsn, stride_bsk, stride_cm, stride_cn, num_programs, BLOCK_N,
                        GROUP_M, NUM_STAGES, TMA_STORE, 64, SCALE_AHEAD, ENTRY)),
        (_df_consumer, (a_bufs, b_bufs, ready_bars, empty_bars, _c_buf(c_smem, 2, 1, 0, TMA_STORE), c_desc, c_ptr,
                        a_scale_ptr, b_scale_ptr, mi_ptr, table_ptr, count_ptr, M, N, num_k_blocks, stride_asm,
                        stride_ask, stride_bse, stride_bsn, stride_bsk, stride_cm, stride_cn, num_programs, BLOCK_N,
                        GROUP_M, NUM_STAGES, TMA_STORE, 128, SCALE_AHEAD, ENTRY)),
        (_df_producer, (a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, table_ptr, count_ptr, N,
                        num_k_blocks, num_programs, BLOCK_N, BLOCK_K, GROUP_M, NUM_STAGES, ENTRY)),
    ], [4, 4, 1], [CONSUMER_REGS, CONSUMER_REGS, PRODUCER_REGS])


# ----------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------


def grouped_fp8_gemm_contiguous_df(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    m_indices: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    *,
    out: torch.Tensor | None = None,
    check_alignment: bool = False,
    config: dict | None = None,
    table: torch.Tensor | None = None,
) -> torch.Tensor:
    """out[m] = (a[m]·a_scale[m]) @ (b[g]·b_scale[g])ᵀ with g = m_indices[m]; 0 where m_indices[m] = −1.

    The dense 192-row kernel's form of ``grouped_gemm_ws.grouped_fp8_gemm_contiguous_ws`` (module docstring); same
    operands, results and errors. CUDA Hopper only.
    a: [M, K] float8_e4m3fn, row-major (16-byte aligned rows, K % 16 == 0), experts' segments back to back, each
        starting at a multiple of 128 rows. a_scale: [M, ceil(K/128)] fp32, any strides (MN-major is fastest).
    b: [E, N, K] float8_e4m3fn, K-contiguous; b_scale: [E, ceil(N/128), ceil(K/128)] fp32.
    m_indices: [M] int32 expert per row, −1 = padding (output row 0; its a rows, NaN or not, never reach another
        row). A 128-row block holding two experts gives NaN in the rows of the smaller id (``check_alignment=True``
        raises ValueError instead, after one host sync).
    out: optional [M, N] destination of out_dtype ∈ {bf16, fp16, fp32}; must not alias the inputs.
    config: optional overrides of ``df_config(M, E)`` (NUM_STAGES 2-4, 3 at most with an fp32 TMA-store epilogue,
        GROUP_M, TMA_STORE, SCALE_AHEAD 0 / 1, SPLIT_TAIL / PARTIAL_LAST: the tile table's ``build_tile_table`` options,
        SPLIT_TAIL on by default from 4096 rows per expert; see ``_DEFAULT_DF``).
    table: optional int32 workspace for ``build_tile_table`` (graph capture without allocation).
    Returns out [M, N]. Raises TypeError (dtypes, config not a dict) / ValueError (shapes, layout, config keys or
    values, alignment, a non-CUDA or non-Hopper device: no interpreter path, no silent fallback).
    """
    check_tensor("a", a, dtype=torch.float8_e4m3fn, ndim=2)
    E, N, K, M, out = check_contiguous_operands(a, a_scale, b, b_scale, m_indices, out_dtype, out)
    cfg = df_config(M, E)
    if config is not None:
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict of df_config overrides, got {type(config).__name__}")
        cfg.update(check_config("config", config, DF_CONFIG_SPEC))
    _check_cuda_sm90(a, "grouped_fp8_gemm_contiguous_df", GROUPED_CPU_PATH)
    if check_alignment:
        check_contiguous_alignment(m_indices, E)
    return launch_df(a, a_scale, b, b_scale, m_indices, out, E, N, K, cfg, table)


def launch_df(a, a_scale, b, b_scale, m_indices, out, E: int, N: int, K: int, cfg: dict,
              table: torch.Tensor | None = None) -> torch.Tensor:
    """``grouped_fp8_gemm_contiguous_df`` after its checks (operands as ``check_contiguous_operands`` accepts them,
    ``out`` allocated, cfg a full ``df_config``, a Hopper GPU): the tile table and the kernel launch; returns out.
    Also the dispatch target of ``grouped_gemm_ws.grouped_fp8_gemm_contiguous_ws`` (its DENSE_FORM key)."""
    M = a.shape[0]
    if M == 0:
        return out
    entries, count = build_tile_table(m_indices, M, table, split_tail=bool(cfg["SPLIT_TAIL"]),
                                      partial_last=bool(cfg["PARTIAL_LAST"]))
    bn = 128
    gl_fp8 = gl.float8e4nv
    a_desc = TensorDescriptor(a, [M, K], [a.stride(0), 1], [64, BLOCK_K], _smem_layout([64, BLOCK_K], gl_fp8))
    b_desc = TensorDescriptor(b.view(E * N, K), [E * N, K], [b.stride(1), 1], [bn, BLOCK_K],
                              _smem_layout([bn, BLOCK_K], gl_fp8))
    tma_store = bool(cfg["TMA_STORE"]) and _tma_storable(out)
    stages = int(cfg["NUM_STAGES"])
    if tma_store and out.element_size() == 4:
        stages = min(stages, 3)  # three fp32 [64, 128] epilogue buffers (96 KB) leave room for 3 stages of 40 KB
    c_desc = None
    if tma_store:
        c_desc = TensorDescriptor(out, [M, N], [out.stride(0), 1], [64, bn],
                                  _smem_layout([64, bn], _GL_DTYPES[out.dtype]))
    dev = a.device.index if a.device.index is not None else torch.cuda.current_device()
    grid = min(_num_sms(dev), max_row_tiles(M) * cdiv(N, bn))
    regs = _WGS3_REGS
    _df_kernel[(grid,)](
        a_desc, b_desc, c_desc, out, a_scale, b_scale, m_indices, entries, count,
        M, N, cdiv(K, BLOCK_K), a_scale.stride(0), a_scale.stride(1), b_scale.stride(0), b_scale.stride(1),
        b_scale.stride(2), out.stride(0), out.stride(1), grid,
        BLOCK_N=bn, BLOCK_K=BLOCK_K, GROUP_M=int(cfg["GROUP_M"]), NUM_STAGES=stages,
        TMA_STORE=tma_store, SCALE_AHEAD=int(cfg["SCALE_AHEAD"]), PRODUCER_REGS=regs[2], CONSUMER_REGS=regs[1],
        ENTRY=_ENTRY, num_warps=4, maxnreg=regs[0],
    )
    return out


__all__ = ["build_tile_table", "df_config", "grouped_fp8_gemm_contiguous_df", "launch_df", "max_row_tiles",
           "tile_table_ref"]
