"""Contiguous grouped block-scaled FP8 GEMM with 192-row tiles (ROWS192), in Gluon (sm_90a).

out[m, n] = Σ_kb a_scale[m, kb] · b_scale[g, n // 128, kb] · Σ_{k in block kb} a[m, k] · b[g, n, k], g = m_indices[m]

The dense kernel's WGS = 3 design (fp8_gemm_ws.py: three 64-row consumer warpgroups with one product register set
each, serial issue–wait–promote K loop, A as three 64-row TMA boxes) for grouped_gemm_ws's contiguous layout. A
stage feeds 1.5× the FLOPs of a 128×128 one for 1.25× the bytes, which is what the fill-bound 128-row K loop runs
short of (grouped_gemm_ws docstring, session 20); the dense kernel measured a 192-row tile at 1.37-1.45 × a 128-row
one, so it pays where the 128-row tiles take many waves (DeepGEMM's 4 × 8192 / 8 × 4096 rows: 63 rounds of 132 SMs
against 42-43).

Experts' segments start at multiples of 128 rows (M_ALIGNMENT), not of 192, so a 192-row tile at rows
[192·t, 192·t + 192) can hold rows of two experts. Each 64-row third j of a tile (one consumer warpgroup) has one
expert e_j = the m_indices of its first row (a 64-row third lies inside one 128-row block, whose padding rows follow
its valid ones: −1 = all padding). A tile whose valid thirds name two experts (it straddles an expert boundary) runs two passes back to back on its program: pass 0
with the larger expert id (hi), pass 1 with the smaller (lo), each a full K loop over the tile's A thirds and that
expert's B rows; every other tile runs one pass (expert hi). In a pass, a warpgroup whose third belongs to its
expert runs the K loop, the others only hand the stages back (fp8_gemm_ws_loop._drain), and a third is stored in
the pass of its own expert (pass 1 if it is lo of a straddling tile, else pass 0; all-padding thirds store 0 in pass
0). Every partition (producer warp, three consumers) computes the same passes from m_indices, so they agree without
talking, as in grouped_gemm_ws; the consumers load a tile's three m_indices one tile ahead. Rows whose m_indices
differ from their third's expert (a layout not aligned to 128 rows) are stored as NaN (as with grouped_gemm_ws's
FIRST_ROW), padding rows as 0. Persistent grid: one program per SM, tile t on program t mod P. At DeepGEMM's
4 × 8192 rows × (4096, 7168), 171 × 32 tiles (3 × 32 of them two passes) against 256 × 32 of 128 rows.

Shared memory: NUM_STAGES × (3 × 8 KB of A + 16 KB of B) + 3 × 16 KB of epilogue buffers (16-bit [64, 128] each,
TMA stores only; the launcher runs 128-row tiles for fp32 or unaligned out): ≤ 4 stages. Registers (setmaxnreg):
consumers 160, producer 24 (fp8_gemm_ws._WGS3_REGS); no spills at sm_90a.
SCALE_AHEAD: the serial loop's scales loaded one K block ahead (fp8_gemm_ws_loop).

Gluon compiles only for CUDA (sm_90a): no interpreter path; grouped_gemm_ws's launcher raises on other devices.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from tritonseek.kernels._host import cdiv
from tritonseek.kernels.fp8_gemm import BLOCK_K
from tritonseek.kernels.fp8_gemm_ws import _GL_DTYPES, _WGS3_REGS, _load_tile, _smem_layout
from tritonseek.kernels.fp8_gemm_ws_loop import _drain, _tile_coords, _tile_k_loop

BLOCK_M192 = 192
MAX_STAGES192 = 4  # 4 × 40 KB of ring + 48 KB of epilogue buffers ≤ 227 KB


@gluon.jit
def _thirds_rows(idx_ptr, tile, num_tiles, M_rows, num_pid_m, num_pid_n, GROUP_M: gl.constexpr):
    # issue the loads of m_indices at a tile's rows 0, 64 and 128 (−1 past M or past the last tile): its thirds'
    # experts. In a layout aligned to 128 rows a 64-row third lies inside one 128-row block, whose padding rows all
    # follow its valid ones, so a third's first row names its expert (−1: all padding). The consumers load them one
    # tile ahead (their latency hides under the current tile's K loops)
    pid_m, pid_n = _tile_coords(gl.minimum(tile, num_tiles - 1), num_pid_m, num_pid_n, GROUP_M)
    r = pid_m * 192
    ok = tile < num_tiles
    e0 = gl.load(idx_ptr + r, mask=ok & (r < M_rows), other=-1)
    e1 = gl.load(idx_ptr + r + 64, mask=ok & (r + 64 < M_rows), other=-1)
    e2 = gl.load(idx_ptr + r + 128, mask=ok & (r + 128 < M_rows), other=-1)
    return e0, e1, e2


@gluon.jit
def _tile192(tile, e0, e1, e2, num_pid_m, num_pid_n, GROUP_M: gl.constexpr):
    # a tile's rows [off_m, off_m + 192), columns [off_n, off_n + 128), the larger and the smaller valid expert of its
    # thirds (hi, lo) and its passes (2 where it straddles two experts: pass 0 = hi, pass 1 = lo)
    pid_m, pid_n = _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M)
    hi = gl.maximum(gl.maximum(e0, e1), e2)
    big = 2147483647
    lo = gl.minimum(gl.minimum(gl.where(e0 >= 0, e0, big), gl.where(e1 >= 0, e1, big)), gl.where(e2 >= 0, e2, big))
    passes = 1 + ((lo != hi) & (lo != big)).to(gl.int32)
    return pid_m * 192, pid_n * 128, hi, lo, passes


@gluon.jit
def _producer192(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, idx_ptr, M_rows, N, E, num_k_blocks,
                 num_programs, GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    # one warp: the A thirds (three 64-row boxes) and the pass's expert's B rows of every pass that runs (its
    # schedule loads are not prefetched: the warp runs NUM_STAGES blocks ahead of the consumers)
    num_pid_m = gl.cdiv(M_rows, 192)
    num_pid_n = gl.cdiv(N, 128)
    num_tiles = num_pid_m * num_pid_n
    it = 0
    for tile in range(gl.program_id(0), num_tiles, num_programs):
        e0, e1, e2 = _thirds_rows(idx_ptr, tile, num_tiles, M_rows, num_pid_m, num_pid_n, GROUP_M)
        off_m, off_n, hi, lo, passes = _tile192(tile, e0, e1, e2, num_pid_m, num_pid_n, GROUP_M)
        if (hi >= 0) & (hi < E):
            it = _load_tile(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, it, off_m, hi * N + off_n,
                            num_k_blocks, 192, 128, NUM_STAGES)
        if (passes == 2) & (lo < E):
            it = _load_tile(a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, it, off_m, lo * N + off_n,
                            num_k_blocks, 192, 128, NUM_STAGES)


@gluon.jit
def _pass192(it, g, e, store, mi, rm, row_ok, sa_ptrs, off_m, off_n, zero, a_bufs, b_bufs, ready_bars, empty_bars,
             c_smem, c_desc, b_scale_ptr, E, num_k_blocks, stride_ask, stride_bse, stride_bsn, stride_bsk,
             NUM_STAGES: gl.constexpr, SCALE_AHEAD: gl.constexpr, ROW0: gl.constexpr, row_layout: gl.constexpr):
    # one pass (expert g) of a tile for this third (expert e): the K loop where the third is g's, else the stages
    # handed back; the third's rows stored where ``store`` (padding rows → 0; rows of another expert than the third's,
    # a layout not aligned to 128 rows → NaN). Returns the next pipeline slot
    run = (g >= 0) & (g < E)
    mine = run & (e == g)
    if mine:
        sb_ptr = b_scale_ptr + g.to(gl.int64) * stride_bse + (off_n // 128) * stride_bsn
        acc, it = _tile_k_loop(it, num_k_blocks, zero, gl.zeros([64], gl.float32, row_layout), a_bufs, b_bufs,
                               ready_bars, empty_bars, sa_ptrs, row_ok, sb_ptr, stride_ask, stride_bsk, ROW0, 64, 192,
                               NUM_STAGES, False, False, True, False, SCALE_AHEAD)
    else:
        if run:
            it = _drain(it, num_k_blocks, ready_bars, empty_bars, NUM_STAGES)
        acc = zero
    if store:
        fill = gl.where(mi < 0, 0.0, float("nan"))
        acc = gl.where(gl.expand_dims((mi == g) & mine, 1), acc, gl.expand_dims(fill, 1))
        tma.store_wait(0)  # the previous store has left c_smem
        c_smem.store(acc.to(c_desc.dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(c_desc, [off_m + ROW0, off_n], c_smem)
    return it


@gluon.jit
def _consumer192(a_bufs, b_bufs, ready_bars, empty_bars, c_smem, c_desc, a_scale_ptr, b_scale_ptr, idx_ptr, M_rows, N,
                 E, num_k_blocks, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk, num_programs,
                 GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr, SCALE_AHEAD: gl.constexpr, ROW0: gl.constexpr):
    # third ROW0 // 64 (rows [ROW0, ROW0 + 64)) of every tile, one warpgroup: pass 0, then pass 1 of a straddling
    # tile (two inlined copies of the pass rather than a run-time loop of passes around the K loop)
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 128, 32])
    row_layout: gl.constexpr = gl.SliceLayout(1, mma_layout)
    zero = gl.zeros([64, 128], gl.float32, mma_layout)
    num_pid_m = gl.cdiv(M_rows, 192)
    num_pid_n = gl.cdiv(N, 128)
    num_tiles = num_pid_m * num_pid_n
    n0, n1, n2 = _thirds_rows(idx_ptr, gl.program_id(0), num_tiles, M_rows, num_pid_m, num_pid_n, GROUP_M)
    it = 0
    for tile in range(gl.program_id(0), num_tiles, num_programs):
        e0, e1, e2 = n0, n1, n2
        off_m, off_n, hi, lo, passes = _tile192(tile, e0, e1, e2, num_pid_m, num_pid_n, GROUP_M)
        n0, n1, n2 = _thirds_rows(idx_ptr, tile + num_programs, num_tiles, M_rows, num_pid_m, num_pid_n, GROUP_M)
        if ROW0 == 0:
            e = e0
        elif ROW0 == 64:
            e = e1
        else:
            e = e2
        # the pass in which this third is stored: the second where its expert is the straddling tile's smaller one,
        # else the first (its expert's; all padding: as 0; a third expert of a misaligned layout: as NaN)
        late = (passes == 2) & (e == lo)
        rm = off_m + ROW0 + gl.arange(0, 64, layout=row_layout)
        row_ok = rm < M_rows
        mi = gl.load(idx_ptr + rm, mask=row_ok, other=-1)  # first read in the epilogue
        sa_ptrs = a_scale_ptr + rm * stride_asm
        it = _pass192(it, hi, e, late == 0, mi, rm, row_ok, sa_ptrs, off_m, off_n, zero, a_bufs, b_bufs, ready_bars,
                      empty_bars, c_smem, c_desc, b_scale_ptr, E, num_k_blocks, stride_ask, stride_bse, stride_bsn,
                      stride_bsk, NUM_STAGES, SCALE_AHEAD, ROW0, row_layout)
        if passes == 2:
            it = _pass192(it, lo, e, late, mi, rm, row_ok, sa_ptrs, off_m, off_n, zero, a_bufs, b_bufs, ready_bars,
                          empty_bars, c_smem, c_desc, b_scale_ptr, E, num_k_blocks, stride_ask, stride_bse, stride_bsn,
                          stride_bsk, NUM_STAGES, SCALE_AHEAD, ROW0, row_layout)
    tma.store_wait(0)


@gluon.jit(do_not_specialize=["M_rows", "N", "E", "num_k_blocks", "stride_asm", "stride_ask", "stride_bse",
                              "stride_bsn", "stride_bsk", "num_programs"])
def _grouped_fp8_ws192_kernel(
    a_desc, b_desc, c_desc, a_scale_ptr, b_scale_ptr, idx_ptr,
    M_rows, N, E, num_k_blocks, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk, num_programs,
    GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr, SCALE_AHEAD: gl.constexpr,
    PRODUCER_REGS: gl.constexpr, CONSUMER_REGS: gl.constexpr, num_warps: gl.constexpr,
):
    # a_desc over a [M, K] e4m3, box [64, 128] (three per stage); b_desc over b viewed [E·N, K], box [128, 128];
    # c_desc over out [M, N] (16-bit), box [64, 128]; a_scale [M, KB] (stride_asm, stride_ask);
    # b_scale [E, NB, KB]; idx_ptr = m_indices [M] int32 (−1 = padding)
    a_bufs = gl.allocate_shared_memory(a_desc.dtype, [NUM_STAGES * 3] + a_desc.block_type.shape, a_desc.layout)
    b_bufs = gl.allocate_shared_memory(b_desc.dtype, [NUM_STAGES] + b_desc.block_type.shape, b_desc.layout)
    ready_bars = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty_bars = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready_bars.index(i), count=1)
        mbarrier.init(empty_bars.index(i), count=3)  # released once per consumer warpgroup
    c_smem = gl.allocate_shared_memory(c_desc.dtype, [3] + c_desc.block_type.shape, c_desc.layout)
    gl.warp_specialize([
        (_consumer192, (a_bufs, b_bufs, ready_bars, empty_bars, c_smem.index(0), c_desc, a_scale_ptr, b_scale_ptr,
                        idx_ptr, M_rows, N, E, num_k_blocks, stride_asm, stride_ask, stride_bse, stride_bsn,
                        stride_bsk, num_programs, GROUP_M, NUM_STAGES, SCALE_AHEAD, 0)),
        (_consumer192, (a_bufs, b_bufs, ready_bars, empty_bars, c_smem.index(1), c_desc, a_scale_ptr, b_scale_ptr,
                        idx_ptr, M_rows, N, E, num_k_blocks, stride_asm, stride_ask, stride_bse, stride_bsn,
                        stride_bsk, num_programs, GROUP_M, NUM_STAGES, SCALE_AHEAD, 64)),
        (_consumer192, (a_bufs, b_bufs, ready_bars, empty_bars, c_smem.index(2), c_desc, a_scale_ptr, b_scale_ptr,
                        idx_ptr, M_rows, N, E, num_k_blocks, stride_asm, stride_ask, stride_bse, stride_bsn,
                        stride_bsk, num_programs, GROUP_M, NUM_STAGES, SCALE_AHEAD, 128)),
        (_producer192, (a_desc, b_desc, a_bufs, b_bufs, ready_bars, empty_bars, idx_ptr, M_rows, N, E, num_k_blocks,
                        num_programs, GROUP_M, NUM_STAGES)),
    ], [4, 4, 1], [CONSUMER_REGS, CONSUMER_REGS, PRODUCER_REGS])


# SPECIALIZE (grouped_gemm_ws): Triton's default integer specialization
_grouped_fp8_ws192_kernel_spec = gluon.jit(_grouped_fp8_ws192_kernel.fn)


def launch_contiguous_192(a, a_scale, b, b_scale, m_indices, out, M: int, E: int, N: int, K: int, num_sms: int,
                          cfg: dict) -> None:
    """Launch the 192-row contiguous kernel on operands checked by grouped_gemm_ws.grouped_fp8_gemm_contiguous_ws
    (cfg: its config with ROWS192; BLOCK_N 128, NUM_STAGES ≤ MAX_STAGES192 checked there; out bf16 / fp16 with
    16-byte aligned rows: TMA stores only); one program per SM, at most one per tile."""
    gl_fp8 = gl.float8e4nv
    a_desc = TensorDescriptor(a, [M, K], [a.stride(0), 1], [64, BLOCK_K], _smem_layout([64, BLOCK_K], gl_fp8))
    b_desc = TensorDescriptor(b.view(E * N, K), [E * N, K], [b.stride(1), 1], [128, BLOCK_K],
                              _smem_layout([128, BLOCK_K], gl_fp8))
    c_desc = TensorDescriptor(out, [M, N], [out.stride(0), 1], [64, 128], _smem_layout([64, 128], _GL_DTYPES[out.dtype]))
    tiles = cdiv(M, BLOCK_M192) * cdiv(N, 128)
    grid = max(1, min(num_sms, tiles))
    kernel = _grouped_fp8_ws192_kernel_spec if cfg.get("SPECIALIZE") else _grouped_fp8_ws192_kernel
    kernel[(grid,)](
        a_desc, b_desc, c_desc, a_scale, b_scale, m_indices,
        M, N, E, cdiv(K, BLOCK_K), a_scale.stride(0), a_scale.stride(1), b_scale.stride(0), b_scale.stride(1),
        b_scale.stride(2), grid,
        GROUP_M=int(cfg["GROUP_M"]), NUM_STAGES=int(cfg["NUM_STAGES"]), SCALE_AHEAD=int(bool(cfg["SCALE_AHEAD"])),
        PRODUCER_REGS=_WGS3_REGS[2], CONSUMER_REGS=_WGS3_REGS[1], num_warps=4, maxnreg=_WGS3_REGS[0],
    )
