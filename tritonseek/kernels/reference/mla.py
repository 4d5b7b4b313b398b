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
    A query row with a NaN score (NaN/inf in that q row or in a key it sees) gets out = NaN and
    lse = NaN. Masked slots are excluded before the dot, so NaN in unused cache rows never reaches the output.
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
        m = scores.amax(-1, keepdim=True)  # NaN when a visible score is NaN (amax propagates it)
        empty = m == float("-inf")  # no visible key
        m = torch.where(empty, torch.zeros_like(m), m)
        p = torch.exp(scores - m)
        denom = p.sum(-1, keepdim=True)
        o = torch.einsum("shn,nd->shd", p, k[:, :head_dim_v]) / denom.clamp_min(1e-30)
        out[i] = torch.where(empty, torch.zeros_like(o), o)
        lse[i] = torch.where(empty, torch.full_like(m, float("-inf")), m + torch.log(denom)).squeeze(-1).T
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
    cache_seqlens: torch.Tensor, num_parts: int, block_n: int, overhead: int, min_span: int,
    num_programs: int | None = None, tail_pct: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split-KV schedule of ``get_mla_metadata`` in torch ops: sched [num_parts, 4], split [batch, 2] int32.

    Cost of sequence b = ⌈max(cache_seqlens[b], 0)/block_n⌉ + overhead tiles (0 when empty); prefix
    sums cut at multiples of per = max(⌈total/num_parts⌉, min_span). sched[p] = (batch_begin,
    tile_begin, batch_end, tile_end) of program p's span (tile_begin/end: first tile of the span's
    first / one past its last sequence part); split[b] = (first program, number of programs) of b.
    num_programs < num_parts (config STEAL, tail spans taken dynamically): num_parts spans, the first
    num_programs of per = max(⌈total·(100 − tail_pct)/(100·num_programs)⌉, min_span), the num_parts −
    num_programs tail spans cutting the rest evenly (⌈rest/tail spans⌉, ≥ 1); split[b] then counts spans.
    Semantics: FlashMLA ``get_mla_metadata`` (tile_scheduler_metadata + num_splits).
    """
    dev = cache_seqlens.device
    lens = cache_seqlens.to(torch.int64).clamp_min(0)
    n_tiles = (lens + block_n - 1) // block_n
    cost = torch.where(n_tiles > 0, n_tiles + overhead, torch.zeros_like(n_tiles))
    end = torch.cumsum(cost, 0)
    start = end - cost
    total = end[-1:] if end.numel() else torch.zeros(1, dtype=torch.int64, device=dev)
    progs = num_parts if num_programs is None else num_programs
    n_tail = num_parts - progs
    keep = 100 - tail_pct if n_tail > 0 else 100
    per = torch.clamp((total * keep + 100 * progs - 1) // (100 * progs), min=min_span)
    t0 = torch.minimum(per * progs, total)
    small = torch.clamp((total - t0 + max(n_tail, 1) - 1) // max(n_tail, 1), min=1)
    idx = torch.arange(num_parts + 1, device=dev, dtype=torch.int64)
    pos = torch.minimum(torch.where(idx <= progs, idx * per, t0 + (idx - progs) * small), total)
    bidx = torch.searchsorted(end, pos, right=True)  # first sequence whose span ends after pos
    bsafe = bidx.clamp(max=max(lens.numel() - 1, 0))
    tile = torch.where(bidx < lens.numel(), (pos - start[bsafe] - overhead).clamp_min(0), torch.zeros_like(pos))
    sched = torch.stack([bidx[:-1], tile[:-1], bidx[1:], tile[1:]], 1).to(torch.int32).contiguous()
    def span_of(x):
        return torch.where(x < t0, x // per, progs + (x - t0) // small)

    first = span_of(start + overhead)
    last = span_of(end - 1)
    nsplit = torch.where(n_tiles > 0, last - first + 1, torch.zeros_like(last))
    split = torch.stack([first, nsplit], 1).to(torch.int32).contiguous()
    return sched, split


def _packed_place(n: int, cap: int, fill: int, seg_cost: int, split_cost: int, min_piece: int, min_fit: int):
    """One step of the length-aware greedy: where a sequence of n > 0 tiles goes for a program cap.

    Returns (moved, first, k, fill'): moved = it starts in a fresh program; first = tiles in its first
    program (n: not split); k = programs after the first that it continues into; fill' = the cost
    in the last of them after it.
    """
    rem = cap - fill
    first = rem - seg_cost - split_cost
    if n + seg_cost <= rem:
        return False, n, 0, fill + n + seg_cost
    fits = n + seg_cost <= cap
    moved = first < (min_fit if fits else min_piece)
    if moved:
        if fits:
            return True, n, 0, n + seg_cost
        first = cap - seg_cost - split_cost
    full = cap - seg_cost - split_cost
    r = n - first
    k = -(-r // full)
    return moved, first, k, r - (k - 1) * full + seg_cost + split_cost


def mla_schedule_packed_ref(
    cache_seqlens: torch.Tensor, num_parts: int, block_n: int, seg_cost: int, split_cost: int,
    min_piece: int, min_fit: int, fill_tol: int = -1, overhead: int = 5, min_span: int = 1,
    num_candidates: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Length-aware split-KV schedule (``get_mla_metadata`` with SCHED="packed"): sched [num_parts, 4], split [batch, 2].

    Sequences are placed in batch order into programs of cost ≤ cap: a piece of n tiles costs
    n + seg_cost, + split_cost more when its sequence is split. A sequence that fits the current
    program stays whole there; one that fits a fresh program moves to the next program unless the
    current one still has room for ≥ min_fit of its tiles (then it is split); a longer one is split,
    its first piece filling the current program if that takes ≥ min_piece tiles (else a fresh one),
    full programs next, the rest starting the following program. The cap is the smallest of
    num_candidates evenly spaced values from lb to at least lb + max tiles + seg_cost (lb =
    max(⌈Σ(n + seg_cost) / num_parts⌉, seg_cost + split_cost + min_piece)) for which the walk needs
    ≤ num_parts programs (the largest when none does; work past the last program then stays in it;
    with min_fit above every length the largest always does). So equal lengths with batch ≤
    num_parts give one program per sequence and no combine; long sequences are split.
    fill_tol ≥ 0 (percent): the same search also runs with min_fit = min_piece (every program filled
    to the cap), and when the packed cap exceeds that walk's cap by more than fill_tol percent (a
    varied batch, where keeping short sequences whole would unbalance the programs) the result is the
    balanced schedule ``mla_schedule_ref(cache_seqlens, num_parts, block_n, overhead, min_span)``
    instead (measured faster there than the filled walk). Same output format as ``mla_schedule_ref``: sched[p] = (batch_begin,
    tile_begin, batch_end, tile_end); split[b] = (first program, number of programs), (p, 0) when empty.
    Requires min_piece ≥ 1, min_fit ≥ min_piece, seg_cost, split_cost ≥ 0.
    Semantics: FlashMLA ``get_mla_metadata`` outputs, with cuts snapped to sequence ends.
    """
    lens = [max(int(x), 0) for x in cache_seqlens.tolist()]
    nt = [-(-x // block_n) for x in lens]
    batch = len(nt)
    total = sum(n + seg_cost for n in nt if n > 0)
    lb = max(-(-total // num_parts), seg_cost + split_cost + min_piece, 1)
    step = max(1, -(-((max(nt) if nt else 0) + seg_cost) // (num_candidates - 1)))  # last candidate ≥ lb + max + seg

    def programs(cap, mf):
        p = fill = 0
        for n in nt:
            if n > 0:
                moved, _, k, fill = _packed_place(n, cap, fill, seg_cost, split_cost, min_piece, mf)
                p += int(moved) + k
        return p + 1

    caps = [lb + i * step for i in range(num_candidates)]
    cap = next((c for c in caps if programs(c, min_fit) <= num_parts), caps[-1])
    if fill_tol >= 0:
        cap_fill = next((c for c in caps if programs(c, min_piece) <= num_parts), caps[-1])
        if cap * 100 > cap_fill * (100 + fill_tol):
            return mla_schedule_ref(cache_seqlens, num_parts, block_n, overhead, min_span)
    last = num_parts - 1
    sched = [[batch, 0, batch, 0] for _ in range(num_parts)]
    sched[0][:2] = [0, 0]
    split = []
    p = fill = 0

    def cut(b, t):  # program p ends at (b, t), p + 1 starts there (unless p is the last program)
        nonlocal p
        if p < last:
            sched[p][2:] = [b, t]
            sched[p + 1][:2] = [b, t]
            p += 1

    for b, n in enumerate(nt):
        if n == 0:
            split.append([p, 0])
            continue
        moved, first, k, fill = _packed_place(n, cap, fill, seg_cost, split_cost, min_piece, min_fit)
        if moved:
            cut(b, 0)
        p0 = p
        full = cap - seg_cost - split_cost
        for j in range(k):
            cut(b, first + j * full)
        split.append([p0, p - p0 + 1])
    sched[p][2:] = [batch, 0]
    dev = cache_seqlens.device
    return (torch.tensor(sched, dtype=torch.int32, device=dev).view(num_parts, 4),
            torch.tensor(split, dtype=torch.int32, device=dev).view(batch, 2))
