"""Plain-PyTorch reference of speculative-decoding verification (greedy and rejection sampling).

Executable specification of ``tritonseek.kernels.spec_verify``. Layout shared by both:
  draft_tokens  [B, K]        int64, the K draft tokens of each sequence.
  target_logits [B, K+1, V]   float, target logits at the K draft positions plus the bonus position.
  output_tokens [B, K+1]      int64, emitted tokens left-aligned, padded with -1.
  num_accepted  [B]           int32 in [0, K], accepted DRAFT tokens; num_accepted + 1 tokens are emitted.
No host synchronisation: every step is a batched tensor op (graph-capturable).
"""

from __future__ import annotations

import torch

from tritonseek.kernels.reference.sampling import TEMPERATURE_MAX, apply_top_k_top_p_ref, softmax_kept_ref


def check_spec_args(draft_tokens: torch.Tensor, target_logits: torch.Tensor) -> tuple[int, int, int]:
    """Validate the draft/target layout; return (B, K, V). Raises ValueError/TypeError naming the argument."""
    if not isinstance(draft_tokens, torch.Tensor) or draft_tokens.dim() != 2:
        raise ValueError(f"draft_tokens must be a 2-D tensor [B, K], got {getattr(draft_tokens, 'shape', None)}")
    if draft_tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"draft_tokens must be int64 or int32, got {draft_tokens.dtype}")
    B, K = draft_tokens.shape
    if K < 1:
        raise ValueError(f"draft_tokens must hold K >= 1 drafts per sequence, got shape {tuple(draft_tokens.shape)}")
    if not isinstance(target_logits, torch.Tensor) or target_logits.dim() != 3:
        raise ValueError(f"target_logits must be a 3-D tensor [B, K+1, V], got {getattr(target_logits, 'shape', None)}")
    if tuple(target_logits.shape[:2]) != (B, K + 1):
        raise ValueError(f"target_logits must have shape [{B}, {K + 1}, V], got {tuple(target_logits.shape)}")
    return B, K, target_logits.shape[2]


def verify_greedy_ref(draft_tokens: torch.Tensor, target_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept drafts while draft_i == argmax(target_i); then emit argmax at the first mismatch (or the bonus).

    draft_tokens: [B, K] int64 (an id outside [0, V) never equals the argmax: rejected).
    target_logits: [B, K+1, V] float (argmax, lowest id on ties).
    Returns (output_tokens [B, K+1] int64 padded with -1, num_accepted [B] int32).
    Raises ValueError/TypeError on bad shapes/dtypes. Semantics: vLLM RejectionSampler greedy path.
    """
    B, K, V = check_spec_args(draft_tokens, target_logits)
    target = target_logits.float().argmax(dim=-1)  # [B, K+1]
    match = draft_tokens.to(torch.int64) == target[:, :K]
    num_accepted = match.to(torch.int32).cumprod(dim=-1).sum(dim=-1).to(torch.int32)  # leading matches
    pos = torch.arange(K + 1, device=target.device)
    # accepted drafts equal the target argmax, so every emitted position holds the target argmax
    out = torch.where(pos[None, :] <= num_accepted[:, None], target, torch.full_like(target, -1))
    return out, num_accepted


def verify_rejection_ref(
    draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor | None,
    target_logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor | None,
    top_p: torch.Tensor | None,
    uniforms: torch.Tensor,
    exp_noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative rejection sampling: accept d_i iff u_i·q(d_i) < p(d_i); on reject sample norm(max(0, p − q)).

    p = softmax(top_k_top_p(target_logits / T)) per position (``softmax_kept_ref``); q = draft_probs, or
    one-hot at the draft (draft_probs None: greedy drafts, the MTP case). Drafts are checked left to right; the first
    rejected position emits a sample of max(0, p − q) (exponential race with exp_noise) and stops;
    if all K are accepted, position K emits a sample of p (bonus). Rows with T == 0 use greedy
    verification (verify_greedy_ref) and ignore uniforms/exp_noise.
    Accepting iff u·q < p is accept-with-probability min(1, p/q) written without a division.

    draft_tokens: [B, K] int64; an id outside [0, V) is rejected (p(d) = q(d) = 0: the position emits a sample of
    max(0, p − q), i.e. of p when draft_probs is None), as verify_greedy_ref never accepts it.
    draft_probs: [B, K, V] float or None.
    target_logits: [B, K+1, V] float. temperature: [B] fp32 >= 0 (> 1e30, +inf too, acts as 1e30). top_k: [B] int32 (0 = off) or None.
    top_p: [B] fp32 (1 = off) or None. uniforms: [B, K] fp32 in [0, 1). exp_noise: [B, K+1, V] fp32 Exp(1) > 0.
    Returns (output_tokens [B, K+1] int64 padded with -1, num_accepted [B] int32).
    Raises ValueError/TypeError on bad shapes/dtypes.
    Semantics: Leviathan et al. 2023 / Chen et al. 2023 speculative sampling; vLLM RejectionSampler.
    """
    B, K, V = check_spec_args(draft_tokens, target_logits)
    if draft_probs is not None and tuple(draft_probs.shape) != (B, K, V):
        raise ValueError(f"draft_probs must have shape [{B}, {K}, {V}] or be None, got {tuple(draft_probs.shape)}")
    if tuple(uniforms.shape) != (B, K):
        raise ValueError(f"uniforms must have shape [{B}, {K}], got {tuple(uniforms.shape)}")
    if tuple(exp_noise.shape) != (B, K + 1, V):
        raise ValueError(f"exp_noise must have shape [{B}, {K + 1}, {V}], got {tuple(exp_noise.shape)}")
    if tuple(temperature.shape) != (B,):
        raise ValueError(f"temperature must have shape [{B}], got {tuple(temperature.shape)}")
    x = target_logits.float()
    t = temperature.float()
    sampled = t > 0
    greedy_tok = x.argmax(dim=-1)  # [B, K+1]
    t_row = torch.where(sampled, t.clamp(max=TEMPERATURE_MAX), torch.ones_like(t))[:, None, None]
    scaled = x / t_row
    rep_k = None if top_k is None else top_k.repeat_interleave(K + 1)
    rep_p = None if top_p is None else top_p.repeat_interleave(K + 1)
    filtered = apply_top_k_top_p_ref(scaled.reshape(B * (K + 1), V), rep_k, rep_p).view(B, K + 1, V)
    p = softmax_kept_ref(x, filtered, t_row)  # exp((x - max) / T): exact at low T
    noise = exp_noise.float()
    drafts = draft_tokens.to(torch.int64)

    out = torch.full((B, K + 1), -1, dtype=torch.int64, device=x.device)
    num_accepted = torch.zeros(B, dtype=torch.int32, device=x.device)
    running = torch.ones(B, dtype=torch.bool, device=x.device)
    for j in range(K):
        d = drafts[:, j]
        d_ok = (d >= 0) & (d < V)  # an id outside [0, V) has p(d) = q(d) = 0: rejected, never an index error
        d_safe = torch.where(d_ok, d, torch.zeros_like(d))
        p_d = torch.where(d_ok, p[:, j].gather(1, d_safe[:, None]).squeeze(1), 0.0)
        if draft_probs is None:
            q = torch.nn.functional.one_hot(d_safe, V).float() * d_ok[:, None]
        else:
            q = draft_probs[:, j].float()
        q_d = torch.where(d_ok, q.gather(1, d_safe[:, None]).squeeze(1), 0.0)
        accept_s = uniforms[:, j].float() * q_d < p_d
        resampled = ((p[:, j] - q).clamp_min(0.0) / noise[:, j]).argmax(dim=-1)
        accept = torch.where(sampled, accept_s, d == greedy_tok[:, j])
        fallback = torch.where(sampled, resampled, greedy_tok[:, j])
        out[:, j] = torch.where(running, torch.where(accept, d, fallback), out[:, j])
        num_accepted += (running & accept).to(torch.int32)
        running = running & accept
    bonus = torch.where(sampled, (p[:, K] / noise[:, K]).argmax(dim=-1), greedy_tok[:, K])
    out[:, K] = torch.where(running, bonus, out[:, K])
    return out, num_accepted
