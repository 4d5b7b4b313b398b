"""Parts of ``mla_decode_wsm``'s split kernel (split from it, module size): the tile constants, the barriers between
the two consumer warpgroups, and a sequence's epilogue (row sums of both warpgroups added, O / l and lse written to out
or to the sequence's partial slot: register stores, OVEC's 16-byte stores or OTMA's TMA stores through the query
buffer). Layouts and the knobs are described in mla_decode_wsm.py.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

D_LATENT = gl.constexpr(512)
D_ROPE = gl.constexpr(64)
TILE_N = gl.constexpr(64)  # keys per cache tile (and S's N)
HALF_V = gl.constexpr(256)  # value columns per warpgroup (O's N)
ROWS = gl.constexpr(64)  # query rows per program (wgmma M)
# index of each barrier between the consumer warpgroups (bars): query tile written, X1 (warpgroup 0 → 1: m0 and
# P0 published), X2 (1 → 0: m1 and P1), row sums swapped
_Q_WRITTEN = gl.constexpr(0)
_X1 = gl.constexpr(1)
_X2 = gl.constexpr(2)
_L_SWAPPED = gl.constexpr(3)
_Q_READY = gl.constexpr(4)  # QTMA: the query tile landed (TMA transaction count)
_Q_FREE = gl.constexpr(5)  # QTMA: both warpgroups' last score matmul of the sequence completed


@gluon.jit
def _sync(bars, i: gl.constexpr, phase):
    # both consumer warpgroups reach this point (this warpgroup's shared stores done before it arrives)
    gl.thread_barrier()
    mbarrier.arrive(bars.index(i), count=1)
    mbarrier.wait(bars.index(i), phase)


@gluon.jit
def _write_rows(acc, m_i, l_i, x_mine, x_other, bars, phase, b, pid, rows_total, rows_o, o_row, l_row, cols,
                n_split, out_ptr, lse_ptr, opart_ptr, lpart_ptr, stride_ob, stride_lb, num_heads, stride_os, stride_oh,
                W: gl.constexpr, OVEC: gl.constexpr, q_lat, od_desc, pd_desc, OTMA: gl.constexpr,
                PART_TMA: gl.constexpr):
    # l = this warpgroup's row sums + the other's (through x_mine / x_other); O_W / l (and lse, base-2 maxima →
    # natural log) → out / lse for an unsplit sequence (n_split 1), else its partial slot (fp32, or the 16-bit
    # dtype with config PART16). OTMA: O_W through the query buffer's columns 256W.. by one TMA store (PART_TMA: the
    # 16-bit partials too; fp32 partials from registers), then the buffer is released to the TMA warp (Q_FREE)
    orow_l: gl.constexpr = rows_o.type.layout
    x_mine.store(l_i)
    _sync(bars, _L_SWAPPED, phase)
    l_all = l_i + x_other.load(l_i.type.layout)
    has = l_all != 0.0  # NaN scores: out and lse NaN, as mla_decode_ref
    inv_l = gl.where(has, 1.0 / gl.where(has, l_all, 1.0), 0.0)
    lse = gl.where(has, (m_i + gl.log2(gl.where(has, l_all, 1.0))) * 0.6931471805599453, float("-inf"))
    o = acc * gl.expand_dims(gl.convert_layout(inv_l, orow_l), 1)
    lse = gl.convert_layout(lse, orow_l)
    row_ok = rows_o < rows_total
    if OTMA:
        # after the swap above both warpgroups are past their last wgmma: the query buffer is free to hold O
        row0 = gl.program_id(0) * ROWS
        if n_split == 1:
            _store_tma(o, q_lat, od_desc, b * rows_total + row0, W)
            if W == 0:
                gl.store(lse_ptr + b.to(gl.int64) * stride_lb + l_row, lse, mask=row_ok)
        else:
            slot = (pid + b).to(gl.int64) * rows_total
            if PART_TMA:
                _store_tma(o, q_lat, pd_desc, slot.to(gl.int32) + row0, W)
            else:
                p_ptrs = opart_ptr + slot * D_LATENT + (gl.expand_dims(rows_o * D_LATENT, 1) + gl.expand_dims(cols, 0))
                gl.store(p_ptrs, o.to(opart_ptr.dtype.element_ty), mask=gl.expand_dims(row_ok, 1))
            if W == 0:
                gl.store(lpart_ptr + slot + rows_o, lse, mask=row_ok)
        gl.thread_barrier()  # every thread is past its stores' reads of the buffer (store_wait in the issuing one)
        mbarrier.arrive(bars.index(_Q_FREE), count=1)
    elif n_split == 1:
        if OVEC == 2:
            _store_vec(o.to(out_ptr.dtype.element_ty), out_ptr + b.to(gl.int64) * stride_ob, num_heads, stride_os,
                       stride_oh, rows_total, W)
        else:
            o_ptrs = out_ptr + b.to(gl.int64) * stride_ob + (gl.expand_dims(o_row, 1) + gl.expand_dims(cols, 0))
            gl.store(o_ptrs, o.to(out_ptr.dtype.element_ty), mask=gl.expand_dims(row_ok, 1))
        if W == 0:
            gl.store(lse_ptr + b.to(gl.int64) * stride_lb + l_row, lse, mask=row_ok)
    else:
        slot = (pid + b).to(gl.int64) * rows_total
        # a partial row is 512 contiguous values (rows_total rows per slot); fp32 partials keep the accumulator
        # layout's 8-byte stores (their relayout through shared memory cost more than it saved: H200 W2)
        if OVEC == 2 and opart_ptr.dtype.element_ty.primitive_bitwidth == 16:
            _store_vec(o.to(opart_ptr.dtype.element_ty), opart_ptr + slot * D_LATENT, rows_total, 0, D_LATENT,
                       rows_total, W)
        else:
            p_ptrs = opart_ptr + slot * D_LATENT + (gl.expand_dims(rows_o * D_LATENT, 1) + gl.expand_dims(cols, 0))
            gl.store(p_ptrs, o.to(opart_ptr.dtype.element_ty), mask=gl.expand_dims(row_ok, 1))
        if W == 0:
            gl.store(lpart_ptr + slot + rows_o, lse, mask=row_ok)


@gluon.jit
def _store_tma(o, q_lat, desc, row, W: gl.constexpr):
    # OTMA: warpgroup W's [64, 256] block (16-bit) → its columns of the query buffer → one TMA store of rows row ..
    # row + 63, columns 256W .. of desc's [rows, 512] view (rows_total % 64 == 0: every row is this tile's own);
    # the buffer has been read by the store on return (in the issuing thread: the caller's barrier then covers all)
    buf = q_lat.slice(W * HALF_V, HALF_V, dim=1)
    buf.store(o.to(buf.dtype))
    fence_async_shared()  # the generic-proxy writes above, before the async-proxy (TMA) read
    gl.thread_barrier()
    tma.async_copy_shared_to_global(desc, [row, W * HALF_V], buf)
    tma.store_wait(0)


@gluon.jit
def _store_vec(o, base, num_heads, stride_os, stride_oh, rows_total, W: gl.constexpr):
    # OVEC: warpgroup W's [64, 256] output block re-laid out inside each warp (same rows per warp as the wgmma
    # accumulator, so shuffles, no shared memory) to 8 consecutive columns per thread, then stored: each warp store
    # writes 64 contiguous bytes of each of 8 rows (the accumulator layout writes 2 values per thread, i.e. 16-byte
    # pieces of a row for 16-bit outputs: half sectors). Row r (= s·h_q + h) goes to base + s·stride_os + h·stride_oh.
    st_l: gl.constexpr = gl.DistributedLinearLayout(
        reg_bases=[[0, 1], [0, 2], [0, 4], [8, 0], [0, 32], [0, 64], [0, 128]],
        lane_bases=[[0, 8], [0, 16], [1, 0], [2, 0], [4, 0]], warp_bases=[[16, 0], [32, 0]], block_bases=[],
        shape=[ROWS, HALF_V])
    ov = gl.convert_layout(o, st_l)
    rows = gl.program_id(0) * ROWS + gl.arange(0, ROWS, layout=gl.SliceLayout(1, st_l))
    cols = W * HALF_V + gl.arange(0, HALF_V, layout=gl.SliceLayout(0, st_l))
    off = (rows // num_heads).to(gl.int64) * stride_os + (rows % num_heads).to(gl.int64) * stride_oh
    gl.store(base + (gl.expand_dims(off, 1) + gl.expand_dims(cols, 0)), ov, mask=gl.expand_dims(rows < rows_total, 1))
