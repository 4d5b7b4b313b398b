"""Plain-PyTorch references of the MLA kernels: absorbed paged decode, varlen prefill, cache write.

Semantics follow FlashMLA ``flash_mla_with_kvcache`` (decode) and FlashAttention's varlen causal
attention (prefill); everything is computed in fp32.
"""

from __future__ import annotations

import torch


def mla_decode_ref(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_table: torch.Tensor,
    cache_seqlens: torch.Tensor,
    softmax_scale: float | None = None,
    causal: bool = True,
    head_dim_v: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """out = softmax(q·Kᵀ·scale)·V over each sequence's cached latents; V = K[..., :head_dim_v].

    q: [batch, seqlen_q, num_heads, d_qk] (bf16/fp32), absorbed query (q_nope·W_UK ‖ q_pe); d_qk = 576 in DeepSeek.
    kv_cache: [num_blocks, page_size, 1, d_qk], latent ‖ rope key per token.
    block_table: [batch, max_blocks] int32; cache_seqlens: [batch] int32 (keys per sequence).
    softmax_scale: default d_qk^-0.5. causal: bottom-right aligned, query i sees keys j ≤ s_k − s_q + i.
    Returns out [batch, seqlen_q, num_heads, head_dim_v] in q.dtype and lse [batch, num_heads, seqlen_q]
    fp32 (natural log). A query that sees no key (cache_seqlens 0) gets out = 0 and lse = −inf.
    Masked slots are excluded before the dot, so NaN in unused cache rows never reaches the output.
    Raises ValueError on inconsistent shapes.
    """
    b, s_q, h, d = q.shape
    if kv_cache.dim() != 4 or kv_cache.shape[2] != 1 or kv_cache.shape[3] != d:
        raise ValueError(f"kv_cache must be [num_blocks, page_size, 1, {d}], got {tuple(kv_cache.shape)}")
    if block_table.shape[0] != b or cache_seqlens.shape != (b,):
        raise ValueError("block_table/cache_seqlens batch does not match q")
    page = kv_cache.shape[1]
    scale = d**-0.5 if softmax_scale is None else softmax_scale
    out = torch.zeros(b, s_q, h, head_dim_v, dtype=torch.float32, device=q.device)
    lse = torch.full((b, h, s_q), float("-inf"), dtype=torch.float32, device=q.device)
    flat = kv_cache.view(-1, d)
    for i in range(b):
        n = int(cache_seqlens[i])
        if n <= 0:
            continue
        if -(-n // page) > block_table.shape[1]:
            raise ValueError(f"block_table row {i} holds {block_table.shape[1]} blocks, fewer than cache_seqlens={n} needs")
        pos = torch.arange(n, device=q.device)
        rows = block_table[i, pos // page].long() * page + pos % page
        k = flat[rows].float()  # [n, d]
        scores = torch.einsum("shd,nd->shn", q[i].float(), k) * scale  # [s_q, h, n]
        if causal:
            limit = n - s_q + torch.arange(s_q, device=q.device)  # last visible key per query
            mask = pos[None, :] > limit[:, None]
            scores = scores.masked_fill(mask[:, None, :], float("-inf"))
        m = scores.amax(-1, keepdim=True)
        visible = torch.isfinite(m)
        m = torch.where(visible, m, torch.zeros_like(m))
        p = torch.exp(scores - m)
        denom = p.sum(-1, keepdim=True)
        o = torch.einsum("shn,nd->shd", p, k[:, :head_dim_v]) / denom.clamp_min(1e-30)
        out[i] = torch.where(visible, o, torch.zeros_like(o))
        lse[i] = torch.where(visible, m + torch.log(denom), torch.full_like(m, float("-inf"))).squeeze(-1).T
    return out.to(q.dtype), lse


def mla_prefill_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    softmax_scale: float,
    causal: bool = True,
) -> torch.Tensor:
    """Varlen attention per sequence: out = softmax(q·kᵀ·scale [+ causal mask])·v.

    q, k: [total_tokens, num_heads, d_qk] (192 in DeepSeek); v: [total_tokens, num_heads, d_v] (128);
    cu_seqlens: [batch+1] int32 prefix sums of the sequence lengths. Causal is the ordinary
    (top-left) mask: q and k are the same tokens. Returns [total_tokens, num_heads, d_v] in q.dtype.
    Semantics: FlashAttention ``flash_attn_varlen_func``.
    """
    out = torch.empty(q.shape[0], q.shape[1], v.shape[2], dtype=torch.float32, device=q.device)
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e <= s:
            continue
        qs, ks, vs = q[s:e].float(), k[s:e].float(), v[s:e].float()
        scores = torch.einsum("qhd,khd->hqk", qs, ks) * softmax_scale
        if causal:
            n = e - s
            mask = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        out[s:e] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), vs)
    return out.to(q.dtype)


def write_latent_cache_ref(kv_cache: torch.Tensor, latent: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """kv_cache.view(-1, d)[slot_mapping[t]] = latent[t] in place; slot −1 is skipped.

    kv_cache: [num_blocks, page_size, 1, d]; latent: [T, d] (normed compressed kv ‖ roped k_pe);
    slot_mapping: [T] int64 (block_id·page_size + offset, vLLM convention).
    """
    d = kv_cache.shape[-1]
    keep = slot_mapping >= 0
    kv_cache.view(-1, d)[slot_mapping[keep]] = latent[keep].to(kv_cache.dtype)


def mla_schedule_ref(
    cache_seqlens: torch.Tensor, num_parts: int, block_n: int, overhead: int, min_span: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split-KV schedule of ``get_mla_metadata`` in torch ops: sched [num_parts, 4], split [batch, 2] int32.

    Cost of sequence b = ⌈max(cache_seqlens[b], 0)/block_n⌉ + overhead tiles (0 when empty); prefix
    sums cut at multiples of per = max(⌈total/num_parts⌉, min_span). sched[p] = (batch_begin,
    tile_begin, batch_end, tile_end) of program p's span (tile_begin/end: first tile of the span's
    first / one past its last sequence part); split[b] = (first program, number of programs) of b.
    Semantics: FlashMLA ``get_mla_metadata`` (tile_scheduler_metadata + num_splits).
    """
    dev = cache_seqlens.device
    lens = cache_seqlens.to(torch.int64).clamp_min(0)
    n_tiles = (lens + block_n - 1) // block_n
    cost = torch.where(n_tiles > 0, n_tiles + overhead, torch.zeros_like(n_tiles))
    end = torch.cumsum(cost, 0)
    start = end - cost
    total = end[-1:] if end.numel() else torch.zeros(1, dtype=torch.int64, device=dev)
    per = torch.clamp((total + num_parts - 1) // num_parts, min=min_span)
    pos = torch.minimum(torch.arange(num_parts + 1, device=dev, dtype=torch.int64) * per, total)
    bidx = torch.searchsorted(end, pos, right=True)  # first sequence whose span ends after pos
    bsafe = bidx.clamp(max=max(lens.numel() - 1, 0))
    tile = torch.where(bidx < lens.numel(), (pos - start[bsafe] - overhead).clamp_min(0), torch.zeros_like(pos))
    sched = torch.stack([bidx[:-1], tile[:-1], bidx[1:], tile[1:]], 1).to(torch.int32).contiguous()
    first = (start + overhead) // per
    last = (end - 1) // per
    nsplit = torch.where(n_tiles > 0, last - first + 1, torch.zeros_like(last))
    split = torch.stack([first, nsplit], 1).to(torch.int32).contiguous()
    return sched, split
