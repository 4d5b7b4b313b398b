"""mla_prefill with a softmax_scale other than d_qk^-0.5 (DeepSeek-V3's YaRN mscale² · d_qk^-0.5 is one).

The other prefill properties pass the default scale, so a kernel that ignored the argument and used d_qk^-0.5
passed them (s22 mutation 40). Here the scale is drawn 2-4× away from the default on either side (or 0: uniform
attention), and every example first checks that the reference itself moves by ≥ 5e-2 (5× the tolerance) between
the drawn and the default scale — so an ignored scale cannot pass (smallest move in 3000 draws of these strategies:
0.20). Paths: packed q/k (the second column piece at a power-of-two split), the TMA tile loads, and q_pe/k_pe given
apart; on the GPU the Gluon kernels (persistent and one program per block) and the tl kernel at DeepSeek's 192/128.
Tolerances as in test_mla_prefill: ‖out − ref‖/‖ref‖ ≤ 1e-2 and |out − ref| ≤ 2e-2 + 2e-2·|ref|.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tritonseek.kernels.mla_prefill import mla_prefill
from tritonseek.kernels.reference.mla import mla_prefill_ref

_fixture_ok = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
)


def _operands(device, lens, heads, nope, rope, d_v, seed):
    """q_nope [T, h, nope], k_nope, v [T, h, d_v] (views of wider projections, as the model passes them), q_pe
    [T, h, rope], k_pe [T, rope] (shared by the heads), the concatenated q/k [T, h, nope + rope], cu_seqlens."""
    gen = torch.Generator().manual_seed(seed)
    total = sum(lens)
    rnd = lambda *shape: torch.randn(*shape, generator=gen).to(torch.bfloat16).to(device)  # noqa: E731
    q_full, kvb = rnd(total, heads, nope + rope), rnd(total, heads, nope + d_v)
    q_nope, k_nope, v = q_full[..., :nope], kvb[..., :nope], kvb[..., nope:]
    q_pe, k_pe = rnd(total, heads, rope), rnd(total, rope)
    q = torch.cat([q_nope, q_pe], -1)
    k = torch.cat([k_nope, k_pe.unsqueeze(1).expand(total, heads, rope)], -1)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    return q_nope, k_nope, v, q_pe, k_pe, q, k, cu


def _check(device, lens, heads, dims, causal, ratio, seed, path, config=None):
    nope, rope, d_v = dims
    q_nope, k_nope, v, q_pe, k_pe, q, k, cu = _operands(device, lens, heads, nope, rope, d_v, seed)
    default = (nope + rope) ** -0.5
    scale = ratio * default
    ref = mla_prefill_ref(q.float(), k.float(), v.float(), cu, scale, causal=causal).cpu()
    ref_default = mla_prefill_ref(q.float(), k.float(), v.float(), cu, default, causal=causal).cpu()
    moved = ((ref - ref_default).norm() / ref.norm()).item()
    assert moved >= 5e-2, f"the drawn scale barely changes the reference ({moved:.3g}): the case cannot tell"
    out = torch.full((q.shape[0], heads, d_v), float("nan"), dtype=q.dtype, device=device)
    if path == "split":
        mla_prefill(q_nope, k_nope, v, cu, max(lens), scale, causal=causal, out=out, q_pe=q_pe, k_pe=k_pe,
                    config=config)
    else:
        if path == "tma":  # the TMA loads take contiguous k/v
            k, v = k.contiguous(), v.contiguous()
            config = dict(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=2, USE_TMA=True)
        mla_prefill(q, k, v, cu, max(lens), scale, causal=causal, out=out, config=config)
    o = out.float().cpu()
    assert not torch.isnan(o).any(), "some output row was never written"
    rel = ((o - ref).norm() / ref.norm()).item()
    assert rel <= 1e-2, (rel, scale, default)
    assert torch.all((o - ref).abs() <= 2e-2 + 2e-2 * ref.abs())


@_fixture_ok
@given(
    lens=st.lists(st.integers(4, 70), min_size=1, max_size=3),
    heads=st.sampled_from([1, 2]),
    # (nope, rope, d_v): the packed path splits d_qk 48 as 32 ‖ 16 and 40 as 32 ‖ 8 (column-masked)
    dims=st.sampled_from([(32, 16, 32), (64, 32, 64), (32, 8, 24)]),
    causal=st.booleans(),
    ratio=st.one_of(st.floats(0.15, 0.5), st.floats(2.0, 4.0), st.just(0.0)),
    path=st.sampled_from(["packed", "tma", "split"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_prefill_honours_softmax_scale(device, lens, heads, dims, causal, ratio, seed, path):
    if path == "tma" and dims[1] == 8:  # TMA needs power-of-two column pieces (the tl path takes them masked)
        path = "packed"
    if path == "split" and dims[0] == 32 and dims[1] == 8:
        path = "packed"  # the split path takes power-of-two rope widths ≥ 16
    _check(device, lens, heads, dims, causal, ratio, seed, path)


def test_prefill_softmax_scale_sign_and_zero(device):
    """Deterministic corners: scale 0 (every visible key weighs the same: a running mean of v) and a negative
    scale (the tl kernel takes any finite scale; the reference defines it), on the packed and split paths."""
    for ratio, path in ((0.0, "packed"), (-1.5, "packed"), (-2.0, "split")):
        _check(device, [9, 33], 2, (32, 16, 32), True, ratio, 11, path)


# ----------------------------------------------------------------------------- real shapes (H200)
@pytest.mark.gpu
@pytest.mark.parametrize("config", [None, {"PERSIST": False}, {"GLUON": False}], ids=["persist", "ws", "tl"])
@pytest.mark.parametrize("scale", [0.03, 0.3])
@pytest.mark.parametrize("path", ["packed", "split"])
def test_prefill_softmax_scale_real_shapes(device, config, scale, path):
    """DeepSeek's 128 nope ‖ 64 rope, v 128, 16 heads; the default scale is 192^-0.5 ≈ 0.072."""
    _check(device, [1, 777, 64, 129, 2000], 16, (128, 64, 128), True, scale * 192**0.5, 40, path, config)
