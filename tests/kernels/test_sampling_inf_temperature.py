"""sample / verify_rejection with a temperature tensor entry of +inf (or above 1e30) against the references.

Tensor temperatures are not checked on the device (a host sync); +inf gave token id 2^31 − 1 (outside the vocabulary,
an out-of-bounds embedding read when fed back) because the kernels' softmax / race maths took 1/T = 0 and T·log(score)
= ±inf (tester23 #4). The reference's x / inf = 0 makes the row uniform over its kept tokens; the kernels now take T at
most 1e30 in those maths, where exp((x − m) / 1e30) is exactly 1, so the tokens equal the reference's exactly
(same noise). Rows mix +inf, 3e38, finite, 0 (greedy) and NaN (greedy) temperatures; V = 150 / 1000 runs several
splits per row under the interpreter; some rows hold −inf logits (filtered tokens must stay out of the race).
"""

from __future__ import annotations

import pytest
import torch

from tritonseek.kernels.reference.sampling import sample_ref
from tritonseek.kernels.reference.spec import verify_rejection_ref
from tritonseek.kernels.sampling import philox_exp_noise, sample
from tritonseek.kernels.spec_verify import verify_rejection

INF = float("inf")
TEMPS = [INF, 3e38, 0.7, INF, 0.0, float("nan"), INF]


def _to(dev, *ts):
    return [None if t is None else t.to(dev) for t in ts]


def _logits(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * 3
    x.view(-1, shape[-1])[3, 1::3] = -INF  # a row (an +inf one) with a third of its tokens filtered out
    return x, g


def _filters(B, filters):
    if filters is None:
        return None, None
    return torch.full((B,), 20, dtype=torch.int32), torch.full((B,), 0.8)


@pytest.mark.parametrize("filters", [None, "kp"])
@pytest.mark.parametrize("V", [150, 1000])
def test_sample_infinite_temperature_matches_ref(device, V, filters):
    B = len(TEMPS)
    x, g = _logits((B, V), V)
    t = torch.tensor(TEMPS)
    top_k, top_p = _filters(B, filters)
    noise = torch.empty(B, V).exponential_(generator=g)
    got = sample(*_to(device, x, t, top_k, top_p, noise)).cpu()
    want = sample_ref(x, t, top_k, top_p, noise)
    assert ((got >= 0) & (got < V)).all(), got
    assert torch.equal(got, want), (got, want)
    assert x[3, got[3]] > -INF  # a filtered token never wins
    # seeds mode (in-register Philox noise) == the reference fed the same noise
    seeds = torch.arange(B, dtype=torch.int64) * 7919
    got = sample(*_to(device, x, t, top_k, top_p), None, seeds=seeds.to(device)).cpu()
    assert torch.equal(got, sample_ref(x, t, top_k, top_p, philox_exp_noise(seeds.to(device), 1, V)[:, 0].cpu()))


def test_sample_infinite_temperature_is_uniform(device):
    """At T = +inf every kept token is equally likely whatever its logit: 400 draws over 6 tokens (two of them −inf),
    each kept token's share within 0.1 of 1/4 (4.6σ at n = 400; a race still weighted by the logits, spread 4σ here,
    or a greedy row gives shares near 0 / 1)."""
    V, n = 6, 400
    x = torch.randn(V, generator=torch.Generator().manual_seed(3)).mul(4).expand(n, V).clone()
    x[:, [2, 5]] = -INF
    noise = torch.empty(n, V).exponential_(generator=torch.Generator().manual_seed(4))
    got = sample(*_to(device, x, torch.full((n,), INF), None, None, noise)).cpu()
    share = torch.bincount(got, minlength=V).float() / n
    assert share[[2, 5]].sum() == 0
    assert (share[[0, 1, 3, 4]] - 1 / 4).abs().max() < 0.1, share


@pytest.mark.parametrize("one_hot", [True, False])
@pytest.mark.parametrize("filters", [None, "kp"])
def test_verify_rejection_infinite_temperature_matches_ref(device, one_hot, filters):
    B, K, V = len(TEMPS), 2, 150
    x, g = _logits((B, K + 1, V), 11)
    drafts = torch.randint(0, V, (B, K), generator=g)
    probs = None if one_hot else torch.softmax(torch.randn(B, K, V, generator=g), -1)
    t = torch.tensor(TEMPS)
    top_k, top_p = _filters(B, filters)
    noise = torch.empty(B, K + 1, V).exponential_(generator=g)
    # u small on some rows: at T = +inf p(d) = 1 / (kept tokens), so those drafts are accepted
    u = torch.rand(B, K, generator=g) * torch.tensor([1e-4, 1.0, 1.0, 1e-4, 1.0, 1.0, 1.0])[:, None]
    out, n = verify_rejection(*_to(device, drafts, probs, x, t, top_k, top_p, u, noise))
    ref_out, ref_n = verify_rejection_ref(drafts, probs, x, t, top_k, top_p, u, noise)
    out, n = out.cpu(), n.cpu()
    assert ((out >= -1) & (out < V)).all(), out
    assert torch.equal(out, ref_out) and torch.equal(n, ref_n), (out, ref_out, n, ref_n)
    if one_hot and filters is None:
        assert n[0] == K  # the accepted run at T = +inf is exercised (p(d) = 1/V > u)
