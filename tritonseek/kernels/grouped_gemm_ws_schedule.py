"""Device-side tile schedule of the warp-specialized grouped FP8 GEMMs (grouped_gemm_ws.py), in Gluon.

Every partition (the TMA producer warp and the consumer warpgroups) calls these with the same arguments and gets
the same answer, so they agree on which tiles run without talking: contiguous tiles in fp8_gemm_ws's GROUP_M order
with each tile's expert read from m_indices; masked tiles numbered from a prefix sum over masked_m (no host sync).
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from tritonseek.kernels.fp8_gemm_ws import _tile_coords


# reductions through our own @gluon.jit combine functions: gl.max / gl.sum combine with triton.jit
# functions, which the CPU test process (TRITON_INTERPRET=1) turns into interpreter objects that the
# sm_90a compile cannot call
@gluon.jit
def _add(x, y):
    return x + y


@gluon.jit
def _maximum(x, y):
    return gl.maximum(x, y)


@gluon.jit
def _maximum2(a0, b0, a1, b1):
    return gl.maximum(a0, a1), gl.maximum(b0, b1)


@gluon.jit
def _masked_prefix(masked_m_ptr, E, M_rows, num_pid_n, BLOCK_M: gl.constexpr, E_PAD: gl.constexpr,
                   WARPS: gl.constexpr):
    # inclusive prefix sum over groups of their non-empty tiles: cdiv(min(masked_m[g], M_max), BLOCK_M) · n-tiles.
    # E_PAD ≥ 256 = 32 lanes × 8 warps: no thread holds a copy of another's element (the sums count each once)
    layout: gl.constexpr = gl.BlockedLayout([E_PAD // (32 * WARPS)], [32], [WARPS], [0])
    ev = gl.arange(0, E_PAD, layout=layout)
    mm = gl.load(masked_m_ptr + ev, mask=ev < E, other=0)
    mm = gl.maximum(gl.minimum(mm, M_rows), 0)
    tiles = (mm + BLOCK_M - 1) // BLOCK_M * num_pid_n
    return gl.associative_scan(tiles, 0, _add)


@gluon.jit
def _masked_tiles(masked_m_ptr, E, M_rows, num_pid_n, E_PAD: gl.constexpr, WARPS: gl.constexpr):
    # FAST_SCHED's per-group table, kept in registers across the tile loop (one int32 per group, so it fits the
    # consumers' registers without spills at E_PAD = 512): 2 × (inclusive prefix sum of the groups' non-empty tiles
    # cdiv(masked_m[g], 128) · n-tiles) + bit, bit = 0 when the group's last 128-row tile has no row in its second
    # 64-row half (cdiv(masked_m[g], 64) odd), else 1 (also for empty groups: see _schedule_masked_fast).
    # E_PAD ≥ 32 lanes × WARPS: each element held by one thread (sums count it once)
    return _tiles_table(_load_masked_m(masked_m_ptr, E, E_PAD, WARPS), M_rows, num_pid_n)


@gluon.jit
def _load_masked_m(masked_m_ptr, E, E_PAD: gl.constexpr, WARPS: gl.constexpr):
    # masked_m [E] as an [E_PAD] int32 tensor (0 past E), one element per thread slot (E_PAD ≥ 32 × WARPS)
    layout: gl.constexpr = gl.BlockedLayout([E_PAD // (32 * WARPS)], [32], [WARPS], [0])
    ev = gl.arange(0, E_PAD, layout=layout)
    return gl.load(masked_m_ptr + ev, mask=ev < E, other=0)


@gluon.jit
def _tiles_table(mm, M_rows, num_pid_n):
    # _masked_tiles' table from the loaded masked_m (EARLY_TMA loads it before the barriers are initialized)
    halves = (gl.maximum(gl.minimum(mm, M_rows), 0) + 63) // 64
    cum = gl.associative_scan((halves + 1) // 2 * num_pid_n, 0, _add)
    return cum * 2 + 1 - (halves & 1)


@gluon.jit
def _sum_max_min(a0, b0, c0, a1, b1, c1):
    return a0 + a1, gl.maximum(b0, b1), gl.minimum(c0, c1)


@gluon.jit
def _schedule_masked_fast(tile_id, table, M_rows, num_pid_n, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr):
    # FAST_SCHED (masked): _schedule's tile from the _masked_tiles table alone — one reduction, no dependent global
    # load of masked_m[g] before the K loop. g = the groups whose tiles all come before tile_id, base = their tile
    # count, and the smallest table entry past tile_id is g's (2 · its inclusive count + its bit; the empty groups
    # right after g share g's count and carry bit 1, so the minimum keeps g's bit).
    # -> (run, g, off_m, a_row, off_n, cdiv(masked_m[g], 64))
    cum = table >> 1
    before = cum <= tile_id
    g, base, nxt = gl.reduce((before.to(gl.int32), gl.where(before, cum, 0), gl.where(before, 2147483647, table)),
                             0, _sum_max_min)
    nm = gl.maximum(((nxt >> 1) - base) // num_pid_n, 1)
    local = tile_id - base
    off_m = (local % nm) * BLOCK_M  # m fastest, as _schedule
    return nxt < 2147483647, g, off_m, g * M_rows + off_m, (local // nm) * BLOCK_N, 2 * nm - 1 + (nxt & 1)


@gluon.jit
def _tile_rows(tile_id, idx_ptr, M_rows, num_pid_m, num_pid_n, num_tiles, BLOCK_M: gl.constexpr,
               GROUP_M: gl.constexpr, WARPS: gl.constexpr):
    # FAST_SCHED (contiguous): issue the load of a tile's BLOCK_M m_indices (−1 past M or past the last tile),
    # one tile ahead of its use, so its latency hides under the current tile's K loop
    pid_m, pid_n = _tile_coords(gl.minimum(tile_id, num_tiles - 1), num_pid_m, num_pid_n, GROUP_M)
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    rows = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=layout)
    return gl.load(idx_ptr + rows, mask=(rows < M_rows) & (tile_id < num_tiles), other=-1)


@gluon.jit
def _schedule_contig_fast(tile_id, tile_mi, E, num_pid_m, num_pid_n, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                          GROUP_M: gl.constexpr, ROW0: gl.constexpr, ROWS: gl.constexpr, WARPS: gl.constexpr):
    # FAST_SCHED (contiguous): the tile's expert g (max of its m_indices, as _schedule) and whether rows
    # [ROW0, ROW0 + ROWS) hold one of g's rows (their max equals g), in one 2-way reduction of the prefetched
    # tile_mi. -> (run, g, off_m, a_row, off_n, mine)
    pid_m, pid_n = _tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M)
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    r = gl.arange(0, BLOCK_M, layout=layout)
    g, gh = gl.reduce((tile_mi, gl.where((r >= ROW0) & (r < ROW0 + ROWS), tile_mi, -1)), 0, _maximum2)
    run = (g >= 0) & (g < E)
    return run, g, pid_m * BLOCK_M, pid_m * BLOCK_M, pid_n * BLOCK_N, run & (gh == g)


@gluon.jit
def _schedule(tile_id, idx_ptr, cum, M_rows, N, E, num_pid_m, num_pid_n,
              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, GROUP_M: gl.constexpr, MASKED: gl.constexpr,
              WARPS: gl.constexpr):
    # -> (run, g, off_m, a_row, off_n): the tile's group, its first row inside the group (masked) or in a
    # (contiguous), its first row of the 2-D view of a, its first column; run = the tile has a K loop.
    # Every partition calls this with the same arguments and gets the same answer.
    if MASKED:
        before = cum <= tile_id
        g = gl.reduce(before.to(gl.int32), 0, _add)
        base = gl.reduce(gl.where(before, cum, 0), 0, _maximum)
        mm = gl.maximum(gl.minimum(gl.load(idx_ptr + g), M_rows), 0)
        nm = gl.maximum((mm + BLOCK_M - 1) // BLOCK_M, 1)
        local = tile_id - base
        pid_m = local % nm  # m fastest: the programs of one weight tile run side by side (L2 reuse of B)
        pid_n = local // nm
        off_m = pid_m * BLOCK_M
        run = g < E
        a_row = g * M_rows + off_m
    else:
        pid_m, pid_n = _tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        layout: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
        rows = off_m + gl.arange(0, BLOCK_M, layout=layout)
        g = gl.reduce(gl.load(idx_ptr + rows, mask=rows < M_rows, other=-1), 0, _maximum)
        run = (g >= 0) & (g < E)
        a_row = off_m
    return run, g, off_m, a_row, pid_n * BLOCK_N


@gluon.jit
def _num_tiles(cum, M_rows, num_pid_n, BLOCK_M: gl.constexpr, MASKED: gl.constexpr):
    if MASKED:
        return gl.reduce(cum, 0, _maximum)
    else:
        return gl.cdiv(M_rows, BLOCK_M) * num_pid_n
