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

Scale loads (session 19, h2gemm; SASS of the sm_90a build, ptxas 12.8 bundled with Triton 3.6): in the PIPE loop the
a_scale / b_scale loads of block kb+1 are issued after the first wgmma and ptxas places their multiply (and with scales
in uniform registers, an R2UR) between the k32 QGMMAs of the second wgmma, about 40-150 instructions after the loads:
the warpgroup waits there for a global load (L2 latency) with its second wgmma a quarter issued, and both warpgroups
wait together, being kept in step by the shared stages. SCALE_AHEAD loads each pair's raw scales one iteration ahead
(_scale_pair; b_scale per row under the row mask, so ptxas keeps it out of uniform registers) and forms their products
in a volatile asm right after the pair's first issue (_pinned_mul), so the loop's only load consumers are
multiplies of values loaded an iteration earlier. H200 W1 (346898a, interleaved GPU clock, A/A 0.9988-1.0003, time
ratio to the committed loop): the stream-K kernel at 128×7168×16384 (GRID 112) 0.942 (43.7 vs 46.2 µs; its committed
SASS formed the next block's scales right before the second wgmma's issue) and stream-K at M = 4096 1.05-1.08 instead
of 1.12-1.14 — but the dense kernel's 128-row tiles 1.030 / 1.031 / 0.997 at M = 4096 (N, K) = (7168, 2048) /
(4096, 7168) / (7168, 16384), and with each tile's first pair loaded in the previous tile too 1.056 / 1.058 / 1.023
(code in git at 69c55bd): the dense loop's waits were hidden and the extra loads cost more. The 192-row tiles' serial
loop (its one wgmma's issue waited on the block's scale product) gained at 4096×2112×7168: 116.71 → 105.59 µs (W2 at
460236b, ratio 0.901, A/A 0.998), noise at 24576×1536 / 32768×512 (0.996 / 0.997). So SCALE_AHEAD is on in those
two fp8_gemm_nt entries only (128×7168×16384 stream-K, 4096×2112×7168 192-row tiles).
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
def _scale_pair(sa_ptrs, row_ok, sb_ptr, kb, num_k_blocks, stride_ask, stride_bsk):
    # the raw a_scale rows and b_scale of K blocks kb and kb + 1, each index clamped to the last block (a clamped load
    # reads a valid address and its value is never used). b_scale is loaded per row under the rows' mask, so its value
    # is not warp-uniform: as a scalar, ptxas kept it in a uniform register and put the R2UR (which waits for the
    # load) before the pair's second wgmma issue
    ka0, kb0 = _scale_one(sa_ptrs, row_ok, sb_ptr, kb, num_k_blocks, stride_ask, stride_bsk)
    ka1, kb1 = _scale_one(sa_ptrs, row_ok, sb_ptr, kb + 1, num_k_blocks, stride_ask, stride_bsk)
    return ka0, kb0, ka1, kb1


@gluon.jit
def _scale_one(sa_ptrs, row_ok, sb_ptr, kb, num_k_blocks, stride_ask, stride_bsk):
    # _scale_pair's loads for one block (index clamped to the last block)
    k0 = gl.minimum(kb, num_k_blocks - 1)
    return (gl.load(sa_ptrs + k0 * stride_ask, mask=row_ok, other=0.0),
            gl.load(sb_ptr + row_ok.to(gl.int32) * 0 + k0 * stride_bsk, mask=row_ok, other=0.0))


@gluon.jit
def _pinned_mul(x, y):
    # x · y (row tensors) as a volatile asm: LLVM keeps it before the next barrier wait, so the product is
    # formed at the top of the iteration and the registers of x and y are free for the next loads
    return gl.inline_asm_elementwise("mul.f32 $0, $1, $2;", "=r,r,r", [x, y], dtype=gl.float32, is_pure=False,
                                     pack=1)


@gluon.jit
def _k_loop(it, num_k_blocks, prod, scale0, zero, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs, row_ok, sb_ptr,
            stride_ask, stride_bsk, ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
            NUM_STAGES: gl.constexpr, UNROLL2: gl.constexpr, PIPE: gl.constexpr, KB0: gl.constexpr,
            SCALE_AHEAD: gl.constexpr = 0):
    # K blocks KB0.. of a tile whose block KB0 - 1 product (prod, scale0) is done (KB0 = 0: a zero product): each
    # block's wgmma is issued, the previous block promoted under it, then waited. Returns (acc without the last
    # block, the last block's product and scale, it): the caller promotes the last block.
    # SCALE_AHEAD (PIPE only): each pair's scales are loaded one iteration earlier (see the module docstring)
    acc = zero
    if PIPE and SCALE_AHEAD:
        # raw scales of the first pair (a block past the last one is clamped to it: loaded, never used)
        ka0, kb0s, ka1, kb1s = _scale_pair(sa_ptrs, row_ok, sb_ptr, KB0, num_k_blocks, stride_ask, stride_bsk)
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
                if not SCALE_AHEAD:
                    scale1 = gl.load(sa_ptrs + kb * stride_ask, mask=row_ok, other=0.0) * gl.load(
                        sb_ptr + kb * stride_bsk)
                mbarrier.wait(ready_bars.index(s0), (it // NUM_STAGES) & 1)
                p1 = warpgroup_mma(_a_rows(a_bufs, s0, ROW0, ROWS, BLOCK_M), _b_cols(b_bufs, s0, zero.shape[1]),
                                   zero, use_acc=False, is_async=True)
                if SCALE_AHEAD:
                    # this pair's scales from the raw values loaded one iteration ago (at a tile's first pair: under
                    # the wgmma just issued), then the next pair's loads into the freed registers
                    scale1 = _pinned_mul(ka0, kb0s)
                    scale_next = _pinned_mul(ka1, kb1s)
                    ka0, kb0s, ka1, kb1s = _scale_pair(sa_ptrs, row_ok, sb_ptr, kb + 2, num_k_blocks, stride_ask,
                                                       stride_bsk)
                acc += prod * gl.expand_dims(scale0, 1)
                if SCALE_AHEAD:
                    scale0 = scale_next
                else:
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
                   NUM_STAGES: gl.constexpr, SCALE_AHEAD: gl.constexpr = 0, ka=None, kbs=None):
    # _k_loop with one product register set (WGS = 3: 160 registers per consumer thread hold the accumulator
    # and one product, not two): promote the previous block, then issue and wait for this one; the other
    # warpgroups' wgmmas keep the tensor core busy during the promotion. SCALE_AHEAD: each block's raw scales are
    # loaded one iteration ahead (ka, kbs: block 1's), their product formed after the block's issue
    acc = zero
    for kb in range(1, num_k_blocks):
        if not SCALE_AHEAD:
            scale = gl.load(sa_ptrs + kb * stride_ask, mask=row_ok, other=0.0) * gl.load(sb_ptr + kb * stride_bsk)
        acc += prod * gl.expand_dims(scale0, 1)
        s = it % NUM_STAGES
        mbarrier.wait(ready_bars.index(s), (it // NUM_STAGES) & 1)
        prod = warpgroup_mma(_a_rows(a_bufs, s, ROW0, ROWS, BLOCK_M), _b_cols(b_bufs, s, zero.shape[1]), zero,
                             use_acc=False, is_async=True)
        if SCALE_AHEAD:
            scale = _pinned_mul(ka, kbs)
            ka, kbs = _scale_one(sa_ptrs, row_ok, sb_ptr, kb + 1, num_k_blocks, stride_ask, stride_bsk)
        prod = warpgroup_mma_wait(0, deps=[prod])
        mbarrier.arrive(empty_bars.index(s))
        scale0 = scale
        it += 1
    return acc, prod, scale0, it


@gluon.jit
def _tile_k_loop(it, num_k_blocks, zero, zero_rows, a_bufs, b_bufs, ready_bars, empty_bars, sa_ptrs, row_ok, sb_ptr,
                 stride_ask, stride_bsk, ROW0: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
                 NUM_STAGES: gl.constexpr, UNROLL2: gl.constexpr, PIPE: gl.constexpr, SERIAL: gl.constexpr,
                 PIPE0: gl.constexpr, SCALE_AHEAD: gl.constexpr = 0):
    # this partition's fp32 rows of a tile over all its K blocks (pipeline slots from it); returns (acc, it).
    # PIPE0 (with PIPE): the two-in-flight loop starts at block 0, a zero product (zero_rows scales) standing in for
    # block −1, so block 0 is no longer issued and waited for alone at the start of every tile. SCALE_AHEAD: _k_loop
    if PIPE0:
        acc, plast, slast, it = _k_loop(it, num_k_blocks, zero, zero_rows, zero, a_bufs, b_bufs, ready_bars,
                                        empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS,
                                        BLOCK_M, NUM_STAGES, UNROLL2, PIPE, 0, SCALE_AHEAD)
    else:
        # K block 0: issue, wait, release its stage; its promotion runs under block 1's wgmma
        ka0 = None
        kb0s = None
        if SERIAL and SCALE_AHEAD:  # block 1's raw scales, in flight during block 0
            ka0, kb0s = _scale_one(sa_ptrs, row_ok, sb_ptr, 1, num_k_blocks, stride_ask, stride_bsk)
        prod, scale0, s = _issue_block0(it, zero, a_bufs, b_bufs, ready_bars, sa_ptrs, row_ok, sb_ptr, ROW0, ROWS,
                                        BLOCK_M, NUM_STAGES)
        prod = warpgroup_mma_wait(0, deps=[prod])
        mbarrier.arrive(empty_bars.index(s))
        if SERIAL:
            acc, plast, slast, it = _k_loop_serial(it + 1, num_k_blocks, prod, scale0, zero, a_bufs, b_bufs,
                                                   ready_bars, empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask,
                                                   stride_bsk, ROW0, ROWS, BLOCK_M, NUM_STAGES, SCALE_AHEAD, ka0, kb0s)
        else:
            acc, plast, slast, it = _k_loop(it + 1, num_k_blocks, prod, scale0, zero, a_bufs, b_bufs, ready_bars,
                                            empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask, stride_bsk, ROW0, ROWS,
                                            BLOCK_M, NUM_STAGES, UNROLL2, PIPE, 1, SCALE_AHEAD)
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
def _tile_coords_fast(tile_id, num_pid_m, num_pid_n, GROUP_M: gl.constexpr, inv_width):
    # _tile_coords without integer divisions (each a ~35-instruction dependent chain with an MUFU.RCP, run at every tile
    # boundary while the tensor core idles): the group from a float estimate (inv_width = 1 / (GROUP_M · num_pid_n);
    # exact to ±1 for ids < 2^24, then corrected), the row/column split by shifts in a full group (GROUP_M a power of
    # two), by division only in the last, partial one
    width = GROUP_M * num_pid_n
    group_id = (tile_id.to(gl.float32) * inv_width).to(gl.int32)
    r = tile_id - group_id * width
    adj = (r >= width).to(gl.int32) - (r < 0).to(gl.int32)
    group_id += adj
    r -= adj * width
    first_m = group_id * GROUP_M
    group_rows = gl.minimum(num_pid_m - first_m, GROUP_M)
    if group_rows == GROUP_M:
        pid_m = first_m + (tile_id % GROUP_M)
        pid_n = r // GROUP_M
    else:
        pid_m = first_m + (tile_id % group_rows)
        pid_n = r // group_rows
    return pid_m, pid_n


@gluon.jit
def _store_tile(acc, c_smem, c_desc, c_ptr, row0, off_n, M, N, stride_cm, stride_cn, ROWS: gl.constexpr,
                BLOCK_N: gl.constexpr, TMA_STORE: gl.constexpr, row_layout: gl.constexpr, col_layout: gl.constexpr):
    # rows [row0, row0 + ROWS) × columns [off_n, off_n + BLOCK_N) of out; rows ≥ M / columns ≥ N are dropped
    # (TMA store: clipped by the descriptor; else masked)
    if TMA_STORE:
        tma.store_wait(0)  # the previous tile's store has left c_smem
        c_smem.store(acc.to(c_desc.dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(c_desc, [row0, off_n], c_smem)
    else:
        rm = row0 + gl.arange(0, ROWS, layout=row_layout)
        rn = off_n + gl.arange(0, BLOCK_N, layout=col_layout)
        c_ptrs = c_ptr + gl.expand_dims(rm.to(gl.int64) * stride_cm, 1) + gl.expand_dims(rn * stride_cn, 0)
        mask = gl.expand_dims(rm < M, 1) & gl.expand_dims(rn < N, 0)
        gl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)
