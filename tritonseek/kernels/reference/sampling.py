"""Plain-PyTorch reference of the decode-path sampler: top-k/top-p filtering and sampling.

Executable specification of ``tritonseek.kernels.sampling``. Randomness is an input: the caller
draws ``exp_noise ~ Exp(1)`` from a seeded ``torch.Generator`` and both the kernel and this
reference sample with the exponential race ``argmax_i p_i / E_i`` (P(i wins) = p_i), as vLLM's
sampler does, so results are reproducible and the two backends see the same randomness.

Filtering semantics (vLLM ``apply_top_k_top_p`` order, thresholds on values so ties are kept):
  * top-k (k > 0): keep x_i >= the k-th largest value (every token tied with it is kept).
  * top-p (p < 1), over the top-k survivors renormalised: keep x_i iff the probability mass of the
    tokens strictly larger than x_i is < p. The largest token is always kept.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")
# Temperatures above this (+inf too) act as it: at T = +inf, x / T and (x - max) / T give NaN for -inf logits (and
# the kernels' 1 / T = 0 NaN and ids out of the vocabulary: tester23 #4). At 1e30 exp((x - max) / T) is exactly 1 for
# |x - max| < 1e22: the row samples uniformly from its kept tokens, and top-k / top-p still rank them by x.
TEMPERATURE_MAX = 1e30


def check_sampling_args(logits: torch.Tensor, temperature: torch.Tensor | None, top_k: torch.Tensor | None,
                        top_p: torch.Tensor | None, exp_noise: torch.Tensor | None) -> None:
    """Validate the sampler inputs' shapes; raise ValueError/TypeError naming the argument."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be a 2-D tensor [B, V], got {getattr(logits, 'shape', type(logits))}")
    B, V = logits.shape
    for name, t, dt in (("temperature", temperature, torch.float32), ("top_k", top_k, torch.int32),
                        ("top_p", top_p, torch.float32)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.shape != (B,):
            raise ValueError(f"{name} must have shape [{B}], got {tuple(t.shape)}")
        if t.dtype != dt:
            raise TypeError(f"{name} must be {dt}, got {t.dtype}")
    if exp_noise is not None and tuple(exp_noise.shape) != (B, V):
        raise ValueError(f"exp_noise must have shape [{B}, {V}], got {tuple(exp_noise.shape)}")


def apply_top_k_top_p_ref(logits: torch.Tensor, top_k: torch.Tensor | None,
                          top_p: torch.Tensor | None) -> torch.Tensor:
    """Top-k then top-p filter: out_i = x_i if kept else -inf (rule in the module docstring).

    logits: [B, V] float (computed in fp32). top_k: [B] int32, 0 (or >= V) = off, None = off for all.
    top_p: [B] fp32 in (0, 1], >= 1 = off, None = off for all; values <= 0 keep only the top token(s).
    Returns [B, V] fp32, a new tensor. Raises ValueError/TypeError on bad shapes/dtypes.
    Semantics: vLLM ``apply_top_k_top_p`` (top-k first, top-p over the renormalised remainder).
    """
    check_sampling_args(logits, None, top_k, top_p, None)
    x = logits.float().clone()
    if top_k is None and top_p is None:
        return x
    B, V = x.shape
    xs = x.sort(dim=-1, descending=True).values  # [B, V], descending
    if top_k is not None:
        k = top_k.to(torch.int64)
        kth = xs.gather(1, (k.clamp(1, V) - 1)[:, None]).squeeze(1)
        thr_k = torch.where((k > 0) & (k < V), kth, torch.full_like(kth, NEG_INF))
        x = x.masked_fill(x < thr_k[:, None], NEG_INF)
        xs = xs.masked_fill(xs < thr_k[:, None], NEG_INF)
    if top_p is not None:
        csum = torch.softmax(xs, dim=-1).cumsum(dim=-1)  # inclusive mass of the top-(i+1) tokens
        crossed = csum >= top_p.float()[:, None]
        first = torch.where(crossed.any(dim=-1), crossed.to(torch.int32).argmax(dim=-1),
                            torch.full((B,), V - 1, dtype=torch.int64, device=x.device))
        thr_p = xs.gather(1, first[:, None]).squeeze(1)  # the token where the mass first reaches p
        thr_p = torch.where(top_p < 1.0, thr_p, torch.full_like(thr_p, NEG_INF))
        x = x.masked_fill(x < thr_p[:, None], NEG_INF)
    return x


def softmax_kept_ref(x: torch.Tensor, filtered: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """softmax over the entries kept by the filter (filtered > -inf), as exp((x − max) / T) / sum.

    x: [..., V] fp32 logits; filtered: the filter's output on x / T (same shape, -inf = dropped); t: T,
    broadcastable to x (> 0). The max is subtracted from x BEFORE dividing by T: at T = 1e-5 with logits ~100,
    x / T ~ 1e7 would round the logit differences to its fp32 ulp (1). Rows with a NaN/+inf logit or nothing
    finite give NaN (no softmax), as torch.softmax does on them.
    """
    z = torch.where(filtered == NEG_INF, NEG_INF, x)
    return torch.softmax((z - z.amax(dim=-1, keepdim=True)) / t, dim=-1)


def sample_ref(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None,
               top_p: torch.Tensor | None, exp_noise: torch.Tensor) -> torch.Tensor:
    """token = argmax(x) if T == 0 else argmax_i softmax(filter(x / T))_i / E_i (``softmax_kept_ref``).

    logits: [B, V] float (fp32 maths). temperature: [B] fp32 >= 0 (0 = greedy, lowest id on ties; above
    ``TEMPERATURE_MAX`` = 1e30, +inf too, it acts as 1e30). top_k: [B] int32 (0 = off) or None. top_p: [B] fp32 (1.0 = off) or None.
    exp_noise: [B, V] fp32, i.i.d. Exp(1) > 0 drawn by the caller (rows with T == 0 are not read).
    Returns tokens [B] int64. Raises ValueError/TypeError on bad shapes/dtypes.
    Semantics: vLLM Sampler (temperature → top-k/top-p → exponential-race sampling).
    """
    check_sampling_args(logits, temperature, top_k, top_p, exp_noise)
    x = logits.float()
    t = temperature.float()
    sampled = t > 0
    greedy = x.argmax(dim=-1)  # first occurrence of the max = lowest id on ties
    t_row = torch.where(sampled, t.clamp(max=TEMPERATURE_MAX), torch.ones_like(t))[:, None]
    probs = softmax_kept_ref(x, apply_top_k_top_p_ref(x / t_row, top_k, top_p), t_row)
    race = (probs / exp_noise.float()).argmax(dim=-1)
    return torch.where(sampled, race, greedy)
