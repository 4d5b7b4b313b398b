"""Device bookkeeping of a whole-step MTP graph (engine/mtp_step.py) in two launches.

A greedy MTP step derives its inputs from the carried positions and its carried state from the verification
outputs. As torch ops that is ~25 kernels of a few hundred bytes each — at batch 1 the graph pays each one's
node latency. ``spec_step_inputs`` and ``spec_step_finish`` do the same in one launch each (one program per
block of rows; no host synchronisation, graph-safe). References: ``spec_step_inputs_ref`` /
``spec_step_finish_ref`` in tritonseek/kernels/reference/spec_step.py (the executable spec).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tritonseek.kernels._utils import check_int, check_runnable_device, check_tensor

_BLOCK_ROWS = 32


# the ints are not specialized (== 1, % 16): the block-table width follows the engine's graph sizing and b the batch
# bucket, so a specialization would make generate compile a variant `tritonseek warmup` did not (final pass, s18)
@triton.jit(do_not_specialize=["bt_stride", "b"])
def _spec_step_inputs_kernel(pos0_ptr, meta_ptr, bt_ptr, bt_stride, last_ptr, first_ptr,
                             pos_ptr, slot_ptr, pos_t_ptr, slot_t_ptr, lens_t_ptr, ids_ptr, b,
                             PAGE: tl.constexpr, Q: tl.constexpr, QP: tl.constexpr, BLOCK: tl.constexpr):
    # pos0 [>= b] int64 (n per row), meta[0] int32 = B (rows >= B are dummies), bt [>= b, bt_stride] int32,
    # last / first [>= b] int64; out: pos / slot [b, Q] int64, pos_t / slot_t [Q, b] int64, lens_t [Q, b] int32,
    # ids [b, Q] int64 (columns 0 and 1 only)
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rm = r < b
    live = rm & (r < tl.load(meta_ptr))
    n = tl.load(pos0_ptr + r, mask=live, other=0)
    j = tl.arange(0, QP)
    m2 = rm[:, None] & (j < Q)[None, :]
    p = tl.where(live[:, None], n[:, None] + j[None, :], 0)
    blk = tl.load(bt_ptr + r[:, None].to(tl.int64) * bt_stride + p // PAGE, mask=m2 & live[:, None], other=0)
    slot = tl.where(live[:, None], blk.to(tl.int64) * PAGE + p % PAGE, -1)
    lens = tl.where(live[:, None], p + 1, 0).to(tl.int32)
    row_major = r[:, None] * Q + j[None, :]
    col_major = j[None, :] * b + r[:, None]
    tl.store(pos_ptr + row_major, p, mask=m2)
    tl.store(slot_ptr + row_major, slot, mask=m2)
    tl.store(pos_t_ptr + col_major, p, mask=m2)
    tl.store(slot_t_ptr + col_major, slot, mask=m2)
    tl.store(lens_t_ptr + col_major, lens, mask=m2)
    tl.store(ids_ptr + r * Q, tl.load(last_ptr + r, mask=rm, other=0), mask=rm)
    if Q > 1:
        tl.store(ids_ptr + r * Q + 1, tl.load(first_ptr + r, mask=rm, other=0), mask=rm)


@triton.jit(do_not_specialize=["out_stride", "b"])
def _spec_step_finish_kernel(out_ptr, out_stride, acc_ptr, res_ptr, last_ptr, pos0_ptr, ids_ptr, sel_ptr, b,
                             Q: tl.constexpr, QP: tl.constexpr, HAS_ACC: tl.constexpr, BLOCK: tl.constexpr):
    # out [b, Q] int64 (row stride out_stride, -1 padded), acc [b] int32 (absent: 0); out: res [b, Q+1] int64,
    # last / pos0 [>= b] int64 (updated), ids [b, Q] int64 = max(out, 0), sel [b] int64 = r*Q + a
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rm = r < b
    if HAS_ACC:
        a = tl.load(acc_ptr + r, mask=rm, other=0).to(tl.int64)
    else:
        a = tl.zeros([BLOCK], dtype=tl.int64)
    j = tl.arange(0, QP)
    m2 = rm[:, None] & (j < Q)[None, :]
    o = tl.load(out_ptr + r[:, None].to(tl.int64) * out_stride + j[None, :], mask=m2, other=0)
    tl.store(res_ptr + r[:, None] * (Q + 1) + j[None, :], o, mask=m2)
    tl.store(res_ptr + r * (Q + 1) + Q, a, mask=rm)
    tl.store(ids_ptr + r[:, None] * Q + j[None, :], tl.maximum(o, 0), mask=m2)
    tl.store(last_ptr + r, tl.sum(tl.where(j[None, :] == a[:, None], o, 0), axis=1), mask=rm)
    tl.store(pos0_ptr + r, tl.load(pos0_ptr + r, mask=rm, other=0) + a + 1, mask=rm)
    tl.store(sel_ptr + r, r * Q + a, mask=rm)


def _check_bq(b: int, q: int) -> tuple[int, int]:
    """(b, q) as Python ints: the scalar rule of ``kernels._utils`` (numpy integers count; b=True was taken as 1,
    b=2.0 was a ValueError blaming the value), b >= 1, q in 1..8."""
    return check_int("b", b, lo=1), check_int("q", q, 1, 8)


def _check_rows(b: int, q: int, **tensors) -> None:
    """The tensors (name=(tensor, dtype, min numel)): dtype, one device, contiguity, size for b rows of q."""
    dev = None
    for name, (t, dtype, numel) in tensors.items():
        check_tensor(name, t, dtype=dtype, device=dev, contiguous=True)
        dev = t.device
        if t.numel() < numel:
            raise ValueError(f"{name} has {t.numel()} elements, needs {numel} (b={b}, q={q})")
    check_runnable_device("pos0", tensors["pos0"][0])


def spec_step_inputs(pos0: torch.Tensor, meta: torch.Tensor, block_table: torch.Tensor, last: torch.Tensor,
                     first: torch.Tensor, b: int, q: int, page_size: int, pos: torch.Tensor, slots: torch.Tensor,
                     pos_t: torch.Tensor, slots_t: torch.Tensor, lens_t: torch.Tensor, ids: torch.Tensor) -> None:
    """Row r < b, live when r < B = meta[0]: p_j = pos0[r] + j (j < q), slot_j = block_table[r, p_j // page_size]·page_size
    + p_j % page_size, lens_j = p_j + 1; dummy rows (r >= B): p 0, slot −1, lens 0. ids[r, 0] = last[r],
    ids[r, 1] = first[r] (q >= 2).

    pos0 [>= b] int64 (token positions), meta [>= 1] int32 (meta[0] = B), block_table [>= b, max_blocks] int32
    (row-contiguous; the blocks of every p_j of a live row must be there), last / first [>= b] int64 token ids.
    Outputs (written in place): pos / slots [b·q] int64 row-major (row r, column j), pos_t / slots_t [q·b] int64 and
    lens_t [q·b] int32 column-major (lens_t[j] = cache_seqlens after writing p_j), ids [b·q] int64.
    b >= 1, q in 1..8, page_size >= 1: ints (numpy integers too; a bool, float or tensor is a TypeError naming it).
    Raises ValueError / TypeError naming a bad argument. Semantics: ``spec_step_inputs_ref``.
    """
    b, q = _check_bq(b, q)
    _check_rows(b, q, pos0=(pos0, torch.int64, b), meta=(meta, torch.int32, 1), last=(last, torch.int64, b),
                first=(first, torch.int64, b), pos=(pos, torch.int64, b * q), slots=(slots, torch.int64, b * q),
                pos_t=(pos_t, torch.int64, b * q), slots_t=(slots_t, torch.int64, b * q),
                lens_t=(lens_t, torch.int32, b * q), ids=(ids, torch.int64, b * q))
    check_tensor("block_table", block_table, dtype=torch.int32, ndim=2, device=pos0.device)
    if block_table.shape[0] < b or block_table.stride(1) != 1:
        raise ValueError(f"block_table {tuple(block_table.shape)} (strides {block_table.stride()}) needs >= {b} "
                         "rows with unit column stride")
    page_size = check_int("page_size", page_size, lo=1)
    _spec_step_inputs_kernel[(triton.cdiv(b, _BLOCK_ROWS),)](
        pos0, meta, block_table, block_table.stride(0), last, first, pos, slots, pos_t, slots_t, lens_t, ids, b,
        PAGE=page_size, Q=q, QP=triton.next_power_of_2(q), BLOCK=_BLOCK_ROWS,
    )


def spec_step_finish(out: torch.Tensor, num_accepted: torch.Tensor | None, b: int, q: int, res: torch.Tensor,
                     last: torch.Tensor, pos0: torch.Tensor, ids: torch.Tensor, sel: torch.Tensor) -> None:
    """Row r < b with a = num_accepted[r] (0 when None): res[r] = [out[r, 0 … q−1], a], last[r] = out[r, a],
    pos0[r] += a + 1, ids[r, j] = max(out[r, j], 0), sel[r] = r·q + a.

    out [b, q] int64 (verification output tokens padded −1; unit column stride), num_accepted [b] int32 or None;
    res [>= b·(q+1)] int64, last / pos0 [>= b] int64 (updated in place), ids [b·q] int64, sel [>= b] int64.
    b >= 1, q in 1..8: ints (numpy integers too; a bool, float or tensor is a TypeError naming it).
    Raises ValueError / TypeError naming a bad argument. Semantics: ``spec_step_finish_ref``.
    """
    b, q = _check_bq(b, q)
    _check_rows(b, q, pos0=(pos0, torch.int64, b), res=(res, torch.int64, b * (q + 1)), last=(last, torch.int64, b),
                ids=(ids, torch.int64, b * q), sel=(sel, torch.int64, b))
    check_tensor("out", out, dtype=torch.int64, ndim=2, device=pos0.device, output=True)
    if tuple(out.shape) != (b, q) or out.stride(1) != 1:
        raise ValueError(f"out must be [{b}, {q}] with unit column stride, got {tuple(out.shape)} {out.stride()}")
    if num_accepted is not None:
        check_tensor("num_accepted", num_accepted, dtype=torch.int32, device=pos0.device, contiguous=True)
        if num_accepted.numel() < b:
            raise ValueError(f"num_accepted has {num_accepted.numel()} elements, needs {b}")
    _spec_step_finish_kernel[(triton.cdiv(b, _BLOCK_ROWS),)](
        out, out.stride(0), num_accepted if num_accepted is not None else out, res, last, pos0, ids, sel, b,
        Q=q, QP=triton.next_power_of_2(q), HAS_ACC=num_accepted is not None, BLOCK=_BLOCK_ROWS,
    )
