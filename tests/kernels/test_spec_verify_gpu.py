"""verify_greedy / verify_rejection at the real vocabulary (129280) on the GPU (``-m gpu``), against
tritonseek.kernels.reference.spec; the CPU properties, tolerances and helpers are in test_spec_verify.py (split for
module size). Tokens and accepted counts are compared exactly, as there.
"""

from __future__ import annotations

import pytest
import torch

from tests.kernels.test_sampling import TINY_T, rising_logits
from tests.kernels.test_spec_verify import _case, _nonfinite_matches_ref, _rej_params, _to

from tritonseek.kernels.reference.spec import verify_greedy_ref, verify_rejection_ref
from tritonseek.kernels.sampling import philox_exp_noise
from tritonseek.kernels.spec_verify import verify_greedy, verify_rejection


def _assert_philox_matches_ref(device, seeds, *host_args):
    """verify_rejection with Philox seeds (noise made in the kernel) gives the reference's tokens and counts with
    the materialised noise philox_exp_noise(seeds). host_args: (drafts, draft_probs, x [B, K+1, V], temperature,
    top_k, top_p, uniforms) as _to takes them."""
    args = _to(device, *host_args)
    _, k1, v = args[2].shape
    got = verify_rejection(*args, None, seeds=seeds)
    ref = verify_rejection_ref(*args, philox_exp_noise(seeds, k1, v))
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


@pytest.mark.gpu
@pytest.mark.parametrize("B", [1, 16, 64])
@pytest.mark.parametrize("K", [1, 3])
def test_verify_real_vocab_gpu(device, B, K):
    V = 129280
    x, drafts, g = _case(B, K, V, 100 * B + K, scale=1.0)
    got = verify_greedy(*_to(device, drafts, x))
    ref = verify_greedy_ref(*_to(device, drafts, x))
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    for one_hot, filters in ((True, False), (True, True), (False, False)):
        draft_probs = None if one_hot else torch.softmax(torch.randn(B, K, V, generator=g), -1)
        temperature, top_k, top_p, uniforms, noise = _rej_params(B, K, V, g, filters)
        if filters:
            top_k = torch.randint(0, 2000, (B,), generator=g, dtype=torch.int32)
        args = _to(device, drafts, draft_probs, x, temperature, top_k, top_p, uniforms, noise)
        got = verify_rejection(*args)
        ref = verify_rejection_ref(*args)
        assert torch.equal(got[0], ref[0]), (one_hot, filters)
        assert torch.equal(got[1], ref[1]), (one_hot, filters)
    seeds = torch.arange(B, dtype=torch.int64, device=device) + 99
    _assert_philox_matches_ref(device, seeds, drafts, None, x, temperature, None, None, uniforms)
    # Philox noise with filters: rows the filter's fast path settles take their race from the candidates
    top_k = torch.randint(0, 2000, (B,), generator=g, dtype=torch.int32)
    top_p = torch.rand(B, generator=g) * 0.7 + 0.3
    _assert_philox_matches_ref(device, seeds, drafts, None, x, temperature, top_k, top_p, uniforms)


@pytest.mark.gpu
@pytest.mark.parametrize("B,K", [(1, 3), (16, 1), (64, 3)])
@pytest.mark.parametrize("temp,step", [(TINY_T, 2.0**-16), (1.0, 0.5)])
def test_rejection_rising_logits_real_vocab_gpu(device, B, K, temp, step):
    # real-vocab twin of test_rejection_rising_logits_rescale (every lane's max grows at every chunk), GPU plan
    V = 129280
    x, g = rising_logits(B * (K + 1), V, 3 + B, step, ties=False)
    x = x.view(B, K + 1, V)
    drafts = V - 1 - torch.randint(0, 3, (B, K), generator=g)
    t = torch.full((B,), temp)
    u = torch.rand(B, K, generator=g)
    seeds = torch.arange(B, dtype=torch.int64, device=device) + 17
    _assert_philox_matches_ref(device, seeds, drafts, None, x, t, None, None, u)


@pytest.mark.gpu
@pytest.mark.parametrize("B,K", [(1, 1), (16, 3), (64, 3)])
def test_greedy_graph_replays_gpu(device, B, K):
    # one captured verify_greedy replayed on fresh logits each time: the in-kernel arrival counters must be
    # re-armed by every replay and the eager path afterwards must still agree (counters shared with it).
    if device.type != "cuda":
        pytest.skip("CUDA graphs need the GPU")
    V = 129280
    x = torch.empty(B, K + 1, V, device=device)
    d = torch.empty(B, K, dtype=torch.int64, device=device)
    out = torch.empty(B, K + 1, dtype=torch.int64, device=device)
    n = torch.empty(B, dtype=torch.int32, device=device)
    x0, d0, _ = _case(B, K, V, 1, scale=1.0)
    x.copy_(x0)
    d.copy_(d0)
    verify_greedy(d, x, out_tokens=out, out_num_accepted=n)  # compile outside the capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        verify_greedy(d, x, out_tokens=out, out_num_accepted=n)
    for seed in range(2, 6):
        xs, ds, _ = _case(B, K, V, seed, ties=seed % 2 == 0, scale=1.0)
        x.copy_(xs)
        d.copy_(ds)
        out.fill_(-7)
        g.replay()
        ref = verify_greedy_ref(d, x)
        assert torch.equal(out, ref[0]) and torch.equal(n, ref[1])
        eager = verify_greedy(d, x)
        assert torch.equal(eager[0], ref[0]) and torch.equal(eager[1], ref[1])


@pytest.mark.gpu
@pytest.mark.parametrize("B,K", [(16, 3), (64, 1)])
def test_nonfinite_real_vocab_gpu(device, B, K):
    # NaN / +inf / all -inf target rows at the real vocabulary: greedy and rejection (with and without filters)
    # equal the reference, in one launch each
    t = torch.rand(B, generator=torch.Generator().manual_seed(B)) + 0.3
    t[::4] = 0.0
    _nonfinite_matches_ref(device, B, K, 129280, 40 + B, t, 50)
