"""Plain-PyTorch references of tritonseek/kernels/spec_step.py (same in-place outputs)."""

from __future__ import annotations

import torch


def spec_step_inputs_ref(pos0, meta, block_table, last, first, b, q, page_size, pos, slots, pos_t, slots_t, lens_t,
                         ids) -> None:
    """Reference of ``spec_step_inputs``: positions, cache slots and lengths of q tokens per row from pos0."""
    rows = torch.arange(b, device=pos0.device)
    live = (rows < meta[0])[:, None]
    p = torch.where(live, pos0[:b, None] + torch.arange(q, device=pos0.device), 0)
    blk = block_table[:b].gather(1, p // page_size).to(torch.int64)
    s = torch.where(live, blk * page_size + p % page_size, -1)
    pos[: b * q].copy_(p.reshape(-1))
    slots[: b * q].copy_(s.reshape(-1))
    pos_t[: b * q].copy_(p.t().reshape(-1))
    slots_t[: b * q].copy_(s.t().reshape(-1))
    lens_t[: b * q].copy_(torch.where(live, p + 1, 0).t().reshape(-1).to(torch.int32))
    v = ids[: b * q].view(b, q)
    v[:, 0] = last[:b]
    if q > 1:
        v[:, 1] = first[:b]


def spec_step_finish_ref(out, num_accepted, b, q, res, last, pos0, ids, sel) -> None:
    """Reference of ``spec_step_finish``: result rows, carried last token / position, MTP ids, gather rows."""
    rows = torch.arange(b, device=out.device)
    a = torch.zeros(b, dtype=torch.int64, device=out.device) if num_accepted is None else num_accepted[:b].long()
    r = res[: b * (q + 1)].view(b, q + 1)
    r[:, :q] = out
    r[:, q] = a
    last[:b] = out[rows, a]
    pos0[:b] += a + 1
    ids[: b * q].copy_(out.clamp_min(0).reshape(-1))
    sel[:b] = rows * q + a
