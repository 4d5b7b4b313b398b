"""MLA decode benchmark cases shared by bench_mla.py (suite ``mla_decode``), bench_mla_small.py and the MLA probes:
the paged inputs, the plain-torch peer and the correctness check against the fp32 reference.

Shapes are FlashMLA's: q [batch, s_q, h_q, 576] bf16 (absorbed q_nope·W_UK ‖ q_pe), latent cache
[num_blocks, 64, 1, 576] bf16 whose first 512 columns are V, block_table [batch, max_blocks] int32 (a random
permutation of the blocks), cache_seqlens [batch] int32; out [batch, s_q, h_q, 512], lse [batch, h_q, s_q] fp32.
"""

from __future__ import annotations

import torch
import triton

D_QK, D_V, PAGE = 576, 512, 64


def cos_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """FlashMLA's test metric 1 − 2Σxy / Σ(x² + y²) in float64 (0 = equal; the suites accept ≤ 1e-5)."""
    x, y = x.double(), y.double()
    return float(1 - 2 * (x * y).sum() / (x * x + y * y).sum().clamp_min(1e-30))


def make_decode_case(batch: int, h: int, s_q: int, lens: list[int], device):
    """(q, kv, block_table, cache_seqlens) of one decode case, fresh randn bf16 q / cache on ``device``.

    lens: the batch's cache lengths (len(lens) == batch); every sequence gets ceil(max(lens) / 64) blocks of a
    shared pool drawn as a random permutation, so pages are scattered as in a long-running server.
    """
    max_blocks = triton.cdiv(max(lens), PAGE)
    num_blocks = batch * max_blocks
    kv = torch.randn(num_blocks, PAGE, 1, D_QK, device=device, dtype=torch.bfloat16)
    bt = torch.randperm(num_blocks, device=device).view(batch, max_blocks).int()
    q = torch.randn(batch, s_q, h, D_QK, device=device, dtype=torch.bfloat16)
    cs = torch.tensor(lens, dtype=torch.int32, device=device)
    return q, kv, bt, cs


def torch_peer_decode(q, kv, bt, cs, max_len, scale):
    """Plain-torch absorbed MLA decode (the suites' peer): gather pages, bmm, masked fp32 softmax, bmm.
    Causal bottom-right: query row j of a sequence of length L sees keys < L − s_q + j + 1. Returns (out, lse)."""
    b, s_q, h, d = q.shape
    nb = triton.cdiv(max_len, PAGE)
    kvg = kv[bt[:, :nb].long()].view(b, nb * PAGE, d)
    s = torch.bmm(q.view(b, s_q * h, d), kvg.transpose(1, 2)).float() * scale
    pos = torch.arange(nb * PAGE, device=q.device)
    srow = torch.arange(s_q, device=q.device).repeat_interleave(h)
    limit = cs[:, None].long() - s_q + srow[None, :]
    s.masked_fill_(pos[None, None, :] > limit[:, :, None], float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse[..., None]).to(q.dtype)
    out = torch.bmm(p, kvg[..., :D_V])
    return out.view(b, s_q, h, D_V), lse.view(b, s_q, h).transpose(1, 2)


def ref_rows(cs, n: int = 16):
    """Sequences checked against the fp32 reference in the suite: the n − 1 first and the longest."""
    longest = int(torch.argmax(cs).item())
    return sorted(set(range(min(n - 1, cs.numel()))) | {longest})


def check_decode(o, lse, ref, idx=None):
    """(cos_diff, max |Δlse|, ok) of the kernel's (o, lse) — rows ``idx`` of them when given — against ``ref`` =
    the fp32 reference's (out, lse) of those rows; ok: cos_diff ≤ 1e-5, |Δlse| ≤ 1e-3 and no NaN in o."""
    ro, rlse = ref
    if idx is not None:
        o, lse = o[idx], lse[idx]
    cd = cos_diff(o.float(), ro.float())
    dl = (lse - rlse).abs().max().item()
    return cd, dl, (cd <= 1e-5 and dl <= 1e-3 and not torch.isnan(o).any().item())
