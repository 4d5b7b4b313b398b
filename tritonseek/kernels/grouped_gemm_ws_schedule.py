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
