"""Consumer-side building blocks of the warp-specialized Gluon FP8 GEMMs (fp8_gemm_ws.py, grouped_gemm_ws.py).

Tile order, the K loops (fp32 promotion of each 128-wide K block's wgmma product with a_scale × b_scale, as in
DeepGEMM fp8_gemm_nt) and the epilogue store of one consumer warpgroup. The design and the H200 measurements
behind each loop are in fp8_gemm_ws.py's docstring. Gluon only: no interpreter path.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)


@gluon.jit
def _tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M: gl.constexpr):
    # GROUP_M-swizzled order: GROUP_M row-tiles sweep the N tiles together (L2 reuse of B).
    group_id = tile_id // (GROUP_M * num_pid_n)
    first_m = group_id * GROUP_M
    group_rows = gl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (tile_id % group_rows)
    pid_n = (tile_id % (GROUP_M * num_pid_n)) // group_rows
    return pid_m, pid_n


@gluon.jit
def _n192_cols(off_n):
    # a 192-column tile [off_n, off_n + 192) as a 128-column part starting at c128 (a multiple of 128: one weight-scale
    # block) and a 64-column part at c64 (inside one block): off_n % 128 is 0 (parts 128 | 64) or 64 (parts 64 | 128)
    odd = (off_n % 128) != 0
    return off_n + gl.where(odd, 64, 0), off_n + gl.where(odd, 0, 128)


@gluon.jit
def _a_rows(a_bufs, s, ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr):
    # this partition's rows of stage s's A tile (a shared-memory view, no copy); BLOCK_M = 192: the tile is
    # three 64-row buffers per stage (see _ws_producer)
    if ROWS == BLOCK_M:
        return a_bufs.index(s)
    elif BLOCK_M == 192:
        return a_bufs.index(s * 3 + ROW0 // 64)
    else:
        return a_bufs.index(s).slice(ROW0, ROWS, dim=0)


@gluon.jit
def _issue_block0(it, zero, a_bufs, b_bufs, ready_bars, sa_ptrs, row_ok, sb_ptr, ROW0: gl.constexpr, ROWS: gl.constexpr,
                  BLOCK_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    # a tile's K block 0 (pipeline slot it): its scales, and its wgmma issued once the stage has landed; the
    # caller waits for the product (returned in flight) and releases stage s
    scale = gl.load(sa_ptrs, mask=row_ok, other=0.0) * gl.load(sb_ptr)
    s = it % NUM_STAGES
    mbarrier.wait(ready_bars.index(s), (it // NUM_STAGES) & 1)
    prod = warpgroup_mma(_a_rows(a_bufs, s, ROW0, ROWS, BLOCK_M), b_bufs.index(s).permute((1, 0)), zero,
                         use_acc=False, is_async=True)
    return prod, scale, s


@gluon.jit
def _k_step(it, kb, prev, prev_scale, acc, zero, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs, m_ok, sb_ptr,
            stride_ask, stride_bsk, ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
            NUM_STAGES: gl.constexpr):
    # issue K block kb (pipeline slot it), promote the previous block's product under it, wait for
    # kb, release its stage; returns kb's product and scale (a_scale rows × b_scale) and the acc
    scale = gl.load(sa_ptrs + kb * stride_ask, mask=m_ok, other=0.0) * gl.load(sb_ptr + kb * stride_bsk)
    s = it % NUM_STAGES
    mbarrier.wait(ready_bars.index(s), (it // NUM_STAGES) & 1)
    cur = warpgroup_mma(_a_rows(a_bufs, s, ROW0, ROWS, BLOCK_M), b_bufs.index(s).permute((1, 0)), zero,
                        use_acc=False, is_async=True)
    acc += prev * gl.expand_dims(prev_scale, 1)
    cur = warpgroup_mma_wait(0, deps=[cur])
    mbarrier.arrive(empty_bars.index(s))
    return cur, scale, acc


@gluon.jit
def _mainloop(it, num_k_blocks, zero, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask,
              stride_bsk, ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr, NUM_STAGES: gl.constexpr,
              UNROLL2: gl.constexpr, SERIAL: gl.constexpr):
    # fp32 tile of this warpgroup's rows over all K blocks (BLOCK_N ≤ 128): K block 0 is issued, waited and its
    # stage released; its promotion runs under block 1's wgmma (SERIAL: before it); returns (acc, it)
    prod, scale0, s = _issue_block0(it, zero, a_bufs, b_bufs, ready_bars, sa_ptrs, row_ok, sb_ptr, ROW0, ROWS,
                                    BLOCK_M, NUM_STAGES)
    prod = warpgroup_mma_wait(0, deps=[prod])
    mbarrier.arrive(empty_bars.index(s))
    if SERIAL:
        acc, plast, slast, it = _k_loop_serial(it + 1, num_k_blocks, prod, scale0, zero, a_bufs, b_bufs, ready_bars,
                                               empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask, stride_bsk, ROW0,
                                               ROWS, BLOCK_M, NUM_STAGES)
    else:
        acc, plast, slast, it = _k_loop(it + 1, num_k_blocks, prod, scale0, zero, a_bufs, b_bufs, ready_bars,
                                        empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS,
                                        BLOCK_M, NUM_STAGES, UNROLL2)
    acc += plast * gl.expand_dims(slast, 1)
    return acc, it


@gluon.jit
def _k_loop(it, num_k_blocks, prod, scale0, zero, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs, row_ok, sb_ptr,
            stride_ask, stride_bsk, ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
            NUM_STAGES: gl.constexpr, UNROLL2: gl.constexpr):
    # K blocks 1.. of a tile whose block 0 product (prod, scale0) is done: each block's wgmma is issued,
    # the previous block promoted under it, then waited. Returns (acc without the last block, the last
    # block's product and scale, it): the caller promotes the last block.
    acc = zero
    if UNROLL2:
        # unrolled by two: the products of even and odd blocks live in two fixed register sets, so
        # nothing is copied between a wait and the next issue (ptxas cannot rename a loop-carried
        # wgmma result: a one-set loop moves the 64 product registers after every wait)
        for j in range((num_k_blocks - 1) // 2):
            p1, scale1, acc = _k_step(it, 1 + 2 * j, prod, scale0, acc, zero, a_bufs, b_bufs, ready_bars, empty_bars,
                                      sa_ptrs, row_ok, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS, BLOCK_M, NUM_STAGES)
            prod, scale0, acc = _k_step(it + 1, 2 + 2 * j, p1, scale1, acc, zero, a_bufs, b_bufs, ready_bars,
                                        empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS,
                                        BLOCK_M, NUM_STAGES)
            it += 2
        if num_k_blocks % 2 == 0:  # one block left: num_k_blocks - 1
            prod, scale0, acc = _k_step(it, num_k_blocks - 1, prod, scale0, acc, zero, a_bufs, b_bufs, ready_bars,
                                        empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS,
                                        BLOCK_M, NUM_STAGES)
            it += 1
    else:
        for kb in range(1, num_k_blocks):
            prod, scale0, acc = _k_step(it, kb, prod, scale0, acc, zero, a_bufs, b_bufs, ready_bars, empty_bars,
                                        sa_ptrs, row_ok, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS, BLOCK_M,
                                        NUM_STAGES)
            it += 1
    return acc, prod, scale0, it


@gluon.jit
def _k_loop_serial(it, num_k_blocks, prod, scale0, zero, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs, row_ok,
                   sb_ptr, stride_ask, stride_bsk, ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
                   NUM_STAGES: gl.constexpr):
    # _k_loop with one product register set (WGS = 3: 160 registers per consumer thread hold the accumulator
    # and one product, not two): promote the previous block, then issue and wait for this one; the other
    # warpgroups' wgmmas keep the tensor core busy during the promotion
    acc = zero
    for kb in range(1, num_k_blocks):
        scale = gl.load(sa_ptrs + kb * stride_ask, mask=row_ok, other=0.0) * gl.load(sb_ptr + kb * stride_bsk)
        acc += prod * gl.expand_dims(scale0, 1)
        s = it % NUM_STAGES
        mbarrier.wait(ready_bars.index(s), (it // NUM_STAGES) & 1)
        prod = warpgroup_mma(_a_rows(a_bufs, s, ROW0, ROWS, BLOCK_M), b_bufs.index(s).permute((1, 0)), zero,
                             use_acc=False, is_async=True)
        prod = warpgroup_mma_wait(0, deps=[prod])
        mbarrier.arrive(empty_bars.index(s))
        scale0 = scale
        it += 1
    return acc, prod, scale0, it


@gluon.jit
def _k_loop_n192(it, num_k_blocks, a_bufs, b_bufs, b2_bufs, ready_bars, empty_bars, sa_ptrs, row_ok, b_scale_ptr,
                 off_n, N, stride_ask, stride_bsn, stride_bsk, ROW0: gl.constexpr, ROWS: gl.constexpr,
                 BLOCK_M: gl.constexpr, NUM_STAGES: gl.constexpr, WARPS: gl.constexpr):
    # BLOCK_N = 192 (stage B: b_bufs[s] = the tile's 128-column part, b2_bufs[s] its 64-column part; _n192_cols): per K
    # block A is loaded once into registers (ldmatrix) and feeds an n128 and an n64 wgmma, both issued; the n128
    # product is promoted while the n64 one runs (registers: accumulators 64 + 32, products 64 + 32, A 16). With A
    # from shared memory each wgmma read it again: on the H200 (W1, b08f755) that lost 5-11% to 192x128 tiles, which
    # fits the kernel being bound by shared-memory bytes per MAC (wgmma operand reads + TMA writes). Each part lies
    # in one 128-column weight-scale block; a part starting at or past N only feeds columns that are never stored:
    # its scale row is clamped to block 0. Returns (acc of the 128-column part, acc of the 64-column part, it).
    l128: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1], instr_shape=[16, 128, 32])
    l64: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1], instr_shape=[16, 64, 32])
    zero128 = gl.zeros([ROWS, 128], gl.float32, l128)
    zero64 = gl.zeros([ROWS, 64], gl.float32, l64)
    c128, c64 = _n192_cols(off_n)
    sb128_ptr = b_scale_ptr + gl.where(c128 < N, c128 // 128, 0) * stride_bsn
    sb64_ptr = b_scale_ptr + gl.where(c64 < N, c64 // 128, 0) * stride_bsn
    acc128 = zero128
    acc64 = zero64
    for kb in range(num_k_blocks):
        sa = gl.load(sa_ptrs + kb * stride_ask, mask=row_ok, other=0.0)
        sb128 = gl.load(sb128_ptr + kb * stride_bsk)
        sb64 = gl.load(sb64_ptr + kb * stride_bsk)
        s = it % NUM_STAGES
        mbarrier.wait(ready_bars.index(s), (it // NUM_STAGES) & 1)
        # A read once from shared memory into registers, the operand of both wgmmas (each would read it again)
        a = _a_rows(a_bufs, s, ROW0, ROWS, BLOCK_M).load(gl.DotOperandLayout(0, l128, 4))
        p = warpgroup_mma(a, b_bufs.index(s).permute((1, 0)), zero128, use_acc=False, is_async=True)
        q = warpgroup_mma(gl.convert_layout(a, gl.DotOperandLayout(0, l64, 4)), b2_bufs.index(s).permute((1, 0)),
                          zero64, use_acc=False, is_async=True)
        p = warpgroup_mma_wait(1, deps=[p])
        acc128 += p * gl.expand_dims(gl.convert_layout(sa, gl.SliceLayout(1, l128)) * sb128, 1)
        q = warpgroup_mma_wait(0, deps=[q])
        mbarrier.arrive(empty_bars.index(s))
        acc64 += q * gl.expand_dims(gl.convert_layout(sa, gl.SliceLayout(1, l64)) * sb64, 1)
        it += 1
    return acc128, acc64, it


@gluon.jit
def _store_tile(acc, c_smem, c_desc, c_ptr, row0, off_n, M, N, stride_cm, stride_cn, ROWS: gl.constexpr,
                BLOCK_N: gl.constexpr, TMA_STORE: gl.constexpr, row_layout: gl.constexpr, col_layout: gl.constexpr,
                PENDING: gl.constexpr = 0):
    # rows [row0, row0 + ROWS) × columns [off_n, off_n + BLOCK_N) of out; rows ≥ M / columns ≥ N are dropped
    # (TMA store: clipped by the descriptor; else masked). PENDING: TMA stores that may still be in flight when
    # c_smem is overwritten (1: the most recent one went from another buffer, e.g. the tile's other part)
    if TMA_STORE:
        tma.store_wait(PENDING)  # the previous store from c_smem has left it
        c_smem.store(acc.to(c_desc.dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(c_desc, [row0, off_n], c_smem)
    else:
        rm = row0 + gl.arange(0, ROWS, layout=row_layout)
        rn = off_n + gl.arange(0, BLOCK_N, layout=col_layout)
        c_ptrs = c_ptr + gl.expand_dims(rm.to(gl.int64) * stride_cm, 1) + gl.expand_dims(rn * stride_cn, 0)
        mask = gl.expand_dims(rm < M, 1) & gl.expand_dims(rn < N, 0)
        gl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)
