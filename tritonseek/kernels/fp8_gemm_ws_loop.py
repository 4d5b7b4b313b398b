"""The consumer warpgroups' K loops of the warp-specialized block-scaled FP8 GEMMs (Gluon, sm_90a).

Shared by fp8_gemm_ws.py (dense) and grouped_gemm_ws.py (grouped): one consumer partition's rows of a tile,
fed from the producer's NUM_STAGES shared-memory ring (``ready``/``empty`` mbarriers per stage), each 128-wide
K block's wgmma product promoted into the fp32 accumulator with a_scale rows × the tile's b_scale. The schedules
(serial, UNROLL2, PIPE) and what they measured on the H200 are described in fp8_gemm_ws.py's docstring.

Warpgroup barriers (session 18, h6loop; code in git at 90ebf39, kept out): Triton 3.6's membar analysis puts a
``bar.sync`` (the partition's 128 threads) before every ``mbarrier.arrive`` (modelled as a write to all of shared
memory; thread 0 arrives) and between two accesses of one barrier array (a wait reads and writes its barrier): 4 per
pair of K blocks in the PIPE loop, the top "barrier" stall in ncu. Releasing stages per thread instead
(cp.async.mbarrier.arrive.noinc, 128 arrivals per warpgroup; s0 after wait(0), s1 after the next ready-wait) leaves
2; ptxas needed that placement (an arrive while the second wgmma is in flight spilled 1316 bytes; pinning the
promotion with a wgmma wait injected a serializing wait, C7517). H200 W1, interleaved GPU clock, time ratio to the
committed config (A/A in the same run): 2 more bar.syncs per pair cost nothing (M = 4096, (N, K) = (4096, 7168) /
(7168, 2048) / (7168, 16384): 1.0001 / 0.9985 / 1.0017, A/A 0.9981 / 0.9982 / 1.0013), and the per-thread releases
lost (1.045 / 1.038 / 1.088; grouped masked (7168, 2048) 1.018-1.034, (4096, 7168) 1.000-1.012 with A/A 0.999-1.011,
contiguous (4096, 7168) 1.036-1.037): the barriers are warps waiting on the wgmmas and the ring, not a cost of their own.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, warpgroup_mma, warpgroup_mma_wait

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
def _b_cols(b_bufs, s, COLS: gl.constexpr):
    # stage s's B tile as the wgmma's [K, COLS] operand: all of its rows, or the first COLS (TAIL_N64: a last
    # column tile with at most 64 columns inside N runs n64 wgmmas)
    if b_bufs.shape[1] == COLS:
        return b_bufs.index(s).permute((1, 0))
    else:
        return b_bufs.index(s).slice(0, COLS, dim=0).permute((1, 0))


@gluon.jit
def _drain(it, num_k_blocks, ready_bars, empty_bars, NUM_STAGES: gl.constexpr):
    # a consumer partition with no rows in the tile still hands every stage back, in order: it waits for the stage to
    # land (so its arrival counts toward this use of the stage, not the previous one) and releases it (no wgmma)
    for kb in range(num_k_blocks):
        s = it % NUM_STAGES
        mbarrier.wait(ready_bars.index(s), (it // NUM_STAGES) & 1)
        mbarrier.arrive(empty_bars.index(s))
        it += 1
    return it


@gluon.jit
def _k_step(it, kb, prev, prev_scale, acc, zero, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs, m_ok, sb_ptr,
            stride_ask, stride_bsk, ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
            NUM_STAGES: gl.constexpr):
    # issue K block kb (pipeline slot it), promote the previous block's product under it, wait for
    # kb, release its stage; returns kb's product and scale (a_scale rows × b_scale) and the acc
    scale = gl.load(sa_ptrs + kb * stride_ask, mask=m_ok, other=0.0) * gl.load(sb_ptr + kb * stride_bsk)
    s = it % NUM_STAGES
    mbarrier.wait(ready_bars.index(s), (it // NUM_STAGES) & 1)
    cur = warpgroup_mma(_a_rows(a_bufs, s, ROW0, ROWS, BLOCK_M), _b_cols(b_bufs, s, zero.shape[1]), zero,
                        use_acc=False, is_async=True)
    acc += prev * gl.expand_dims(prev_scale, 1)
    cur = warpgroup_mma_wait(0, deps=[cur])
    mbarrier.arrive(empty_bars.index(s))
    return cur, scale, acc


@gluon.jit
def _issue_block0(it, zero, a_bufs, b_bufs, ready_bars, sa_ptrs, row_ok, sb_ptr, ROW0: gl.constexpr, ROWS: gl.constexpr,
                  BLOCK_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    # a tile's K block 0 (pipeline slot it): its scales, and its wgmma issued once the stage has landed; the
    # caller waits for the product (returned in flight) and releases stage s
    scale = gl.load(sa_ptrs, mask=row_ok, other=0.0) * gl.load(sb_ptr)
    s = it % NUM_STAGES
    mbarrier.wait(ready_bars.index(s), (it // NUM_STAGES) & 1)
    prod = warpgroup_mma(_a_rows(a_bufs, s, ROW0, ROWS, BLOCK_M), _b_cols(b_bufs, s, zero.shape[1]), zero,
                         use_acc=False, is_async=True)
    return prod, scale, s


@gluon.jit
def _k_loop(it, num_k_blocks, prod, scale0, zero, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs, row_ok, sb_ptr,
            stride_ask, stride_bsk, ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
            NUM_STAGES: gl.constexpr, UNROLL2: gl.constexpr, PIPE: gl.constexpr, KB0: gl.constexpr):
    # K blocks KB0.. of a tile whose block KB0 - 1 product (prod, scale0) is done (KB0 = 0: a zero product): each
    # block's wgmma is issued, the previous block promoted under it, then waited. Returns (acc without the last
    # block, the last block's product and scale, it): the caller promotes the last block.
    acc = zero
    if PIPE or UNROLL2:
        for j in range((num_k_blocks - KB0) // 2):
            if PIPE:
                # two wgmmas in flight per warpgroup, two blocks per iteration: issue kb (promote the finished kb-1
                # under it), issue kb+1, wait(1) for kb and promote it while kb+1 runs, wait(0) for kb+1 (promoted
                # under the next iteration's first wgmma). Only finished products cross the loop's back-edge: a
                # product in flight across it makes ptxas serialize every wgmma (C7514; probe_wgmma_fp8.py MODE 3).
                kb = KB0 + 2 * j
                s0 = it % NUM_STAGES
                s1 = (it + 1) % NUM_STAGES
                scale1 = gl.load(sa_ptrs + kb * stride_ask, mask=row_ok, other=0.0) * gl.load(sb_ptr + kb * stride_bsk)
                mbarrier.wait(ready_bars.index(s0), (it // NUM_STAGES) & 1)
                p1 = warpgroup_mma(_a_rows(a_bufs, s0, ROW0, ROWS, BLOCK_M), _b_cols(b_bufs, s0, zero.shape[1]),
                                   zero, use_acc=False, is_async=True)
                acc += prod * gl.expand_dims(scale0, 1)
                scale0 = gl.load(sa_ptrs + (kb + 1) * stride_ask, mask=row_ok, other=0.0) * gl.load(
                    sb_ptr + (kb + 1) * stride_bsk)
                mbarrier.wait(ready_bars.index(s1), ((it + 1) // NUM_STAGES) & 1)
                prod = warpgroup_mma(_a_rows(a_bufs, s1, ROW0, ROWS, BLOCK_M),
                                     _b_cols(b_bufs, s1, zero.shape[1]), zero, use_acc=False, is_async=True)
                p1 = warpgroup_mma_wait(1, deps=[p1])
                mbarrier.arrive(empty_bars.index(s0))
                acc += p1 * gl.expand_dims(scale1, 1)
                prod = warpgroup_mma_wait(0, deps=[prod])
                mbarrier.arrive(empty_bars.index(s1))
            else:
                # UNROLL2: the products of even and odd blocks live in two fixed register sets, so nothing is copied
                # between a wait and the next issue (ptxas cannot rename a loop-carried wgmma result: a one-set loop
                # moves the 64 product registers after every wait)
                p1, scale1, acc = _k_step(it, KB0 + 2 * j, prod, scale0, acc, zero, a_bufs, b_bufs, ready_bars,
                                          empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS,
                                          BLOCK_M, NUM_STAGES)
                prod, scale0, acc = _k_step(it + 1, KB0 + 1 + 2 * j, p1, scale1, acc, zero, a_bufs, b_bufs, ready_bars,
                                            empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS,
                                            BLOCK_M, NUM_STAGES)
            it += 2
        if (num_k_blocks - KB0) % 2 == 1:  # one block left: num_k_blocks - 1
            prod, scale0, acc = _k_step(it, num_k_blocks - 1, prod, scale0, acc, zero, a_bufs, b_bufs, ready_bars,
                                        empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS,
                                        BLOCK_M, NUM_STAGES)
            it += 1
    else:
        for kb in range(KB0, num_k_blocks):
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
        prod = warpgroup_mma(_a_rows(a_bufs, s, ROW0, ROWS, BLOCK_M), _b_cols(b_bufs, s, zero.shape[1]), zero,
                             use_acc=False, is_async=True)
        prod = warpgroup_mma_wait(0, deps=[prod])
        mbarrier.arrive(empty_bars.index(s))
        scale0 = scale
        it += 1
    return acc, prod, scale0, it


@gluon.jit
def _tile_k_loop(it, num_k_blocks, zero, zero_rows, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs, row_ok, sb_ptr,
                 stride_ask, stride_bsk, ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
                 NUM_STAGES: gl.constexpr, UNROLL2: gl.constexpr, PIPE: gl.constexpr, SERIAL: gl.constexpr,
                 PIPE0: gl.constexpr):
    # this partition's fp32 rows of a tile over all its K blocks (pipeline slots from it); returns (acc, it).
    # PIPE0 (with PIPE): the two-in-flight loop starts at block 0, a zero product (zero_rows scales) standing in for
    # block −1, so block 0 is no longer issued and waited for alone at the start of every tile
    if PIPE0:
        acc, plast, slast, it = _k_loop(it, num_k_blocks, zero, zero_rows, zero, a_bufs, b_bufs, ready_bars,
                                        empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS,
                                        BLOCK_M, NUM_STAGES, UNROLL2, PIPE, 0)
    else:
        # K block 0: issue, wait, release its stage; its promotion runs under block 1's wgmma
        prod, scale0, s = _issue_block0(it, zero, a_bufs, b_bufs, ready_bars, sa_ptrs, row_ok, sb_ptr, ROW0, ROWS,
                                        BLOCK_M, NUM_STAGES)
        prod = warpgroup_mma_wait(0, deps=[prod])
        mbarrier.arrive(empty_bars.index(s))
        if SERIAL:
            acc, plast, slast, it = _k_loop_serial(it + 1, num_k_blocks, prod, scale0, zero, a_bufs, b_bufs,
                                                   ready_bars, empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask,
                                                   stride_bsk, ROW0, ROWS, BLOCK_M, NUM_STAGES)
        else:
            acc, plast, slast, it = _k_loop(it + 1, num_k_blocks, prod, scale0, zero, a_bufs, b_bufs, ready_bars,
                                            empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS,
                                            BLOCK_M, NUM_STAGES, UNROLL2, PIPE, 1)
    acc += plast * gl.expand_dims(slast, 1)
    return acc, it


@gluon.jit
def _k_loop_wide(it, num_k_blocks, zero, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs, row_ok, sb_ptr, n1_ok,
                 stride_ask, stride_bsn, stride_bsk, ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
                 NUM_STAGES: gl.constexpr):
    # BLOCK_N = 256 (fp8_gemm_ws WIDE tiles): this partition's rows × both 128-column halves of every K block, the
    # halves' wgmmas issued one after the other into ONE product register set (acc0 + acc1 + product = 192 of the
    # 232 registers; two sets would not fit), each promoted with its own b_scale block (sb_ptr: the first half's
    # row of b_scale; the second half's, one row on, exists where n1_ok). The other warpgroup's wgmmas keep the
    # tensor core busy during a promotion, as in _k_loop_serial. Returns (acc0, acc1, it).
    acc0 = zero
    acc1 = zero
    # the scales of block kb + 1 are loaded during block kb (clamped at the last block), so their global-load latency
    # is off the promotion's path
    sa = gl.load(sa_ptrs, mask=row_ok, other=0.0)
    sc0 = sa * gl.load(sb_ptr)
    sc1 = sa * gl.load(sb_ptr + stride_bsn, mask=n1_ok, other=0.0)
    for kb in range(num_k_blocks):
        kn = gl.minimum(kb + 1, num_k_blocks - 1)
        sa = gl.load(sa_ptrs + kn * stride_ask, mask=row_ok, other=0.0)
        sb0 = gl.load(sb_ptr + kn * stride_bsk)
        sb1 = gl.load(sb_ptr + stride_bsn + kn * stride_bsk, mask=n1_ok, other=0.0)
        s = it % NUM_STAGES
        mbarrier.wait(ready_bars.index(s), (it // NUM_STAGES) & 1)
        a_s = _a_rows(a_bufs, s, ROW0, ROWS, BLOCK_M)
        b_s = b_bufs.index(s)
        prod = warpgroup_mma(a_s, b_s.slice(0, 128, dim=0).permute((1, 0)), zero, use_acc=False, is_async=True)
        prod = warpgroup_mma_wait(0, deps=[prod])
        acc0 += prod * gl.expand_dims(sc0, 1)
        # a no-op wait that takes acc0 pins the promotion above before the next issue (else LLVM sinks the FFMAs below
        # it, both products are live at once and ptxas spills)
        acc0 = warpgroup_mma_wait(0, deps=[acc0])
        prod = warpgroup_mma(a_s, b_s.slice(128, 128, dim=0).permute((1, 0)), prod, use_acc=stride_bsn < 0,
                             is_async=True)
        prod = warpgroup_mma_wait(0, deps=[prod])
        mbarrier.arrive(empty_bars.index(s))
        acc1 += prod * gl.expand_dims(sc1, 1)
        acc1 = warpgroup_mma_wait(0, deps=[acc1])
        sc0 = sa * sb0
        sc1 = sa * sb1
        it += 1
    return acc0, acc1, it
