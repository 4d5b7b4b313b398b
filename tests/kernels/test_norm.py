"""RMSNorm kernels (plain and fused with the residual add) against tritonseek.kernels.reference.norm.

Tolerances: the residual sum h = x + residual is one fp32 add rounded to the activation dtype on
both sides, so h must match exactly. y differs from torch only in the fp32 reduction order and in
rsqrt (torch) vs 1/sqrt_rn (kernel): a few fp32 ulps before the final rounding, so fp32 outputs get
rtol 1e-5 and bf16 outputs may land one bf16 step away (2^-8 relative → rtol 2^-7 covers it).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kernels.poison import poison_outputs

from tritonseek.kernels import norm
from tritonseek.kernels.norm import fused_add_rms_norm, rms_norm
from tritonseek.kernels.reference.norm import fused_add_rms_norm_ref, rms_norm_ref

_fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def poisoned(monkeypatch):
    poison_outputs(monkeypatch, norm)


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2.0**-7, atol=2.0**-7)


def _rand(shape, dtype, device, gen, scale=1.0):
    return (torch.randn(shape, generator=gen) * scale).to(dtype).to(device)


@_fixture_ok
@given(
    t=st.integers(1, 9), n=st.integers(1, 300), dtype=st.sampled_from([torch.bfloat16, torch.float32]),
    scale=st.sampled_from([1e-2, 1.0, 50.0]), strided=st.booleans(), seed=st.integers(0, 2**31 - 1),
)
def test_rms_norm_matches_reference(poisoned, device, t, n, dtype, scale, strided, seed):
    g = torch.Generator().manual_seed(seed)
    x = _rand((t, n + 7 if strided else n), dtype, device, g, scale)[:, :n]  # row stride ≠ n when strided
    w = _rand((n,), torch.float32, device, g)
    y = rms_norm(x, w, 1e-6)
    assert y.shape == (t, n) and y.dtype == dtype and not y.isnan().any()
    torch.testing.assert_close(y.cpu(), rms_norm_ref(x.cpu(), w.cpu(), 1e-6), **_tol(dtype))


@_fixture_ok
@given(
    t=st.integers(1, 9), n=st.integers(1, 300), dtype=st.sampled_from([torch.bfloat16, torch.float32]),
    wdtype=st.sampled_from([torch.bfloat16, torch.float32]), seed=st.integers(0, 2**31 - 1),
)
def test_fused_add_rms_norm_matches_reference(poisoned, device, t, n, dtype, wdtype, seed):
    g = torch.Generator().manual_seed(seed)
    x, r = _rand((t, n), dtype, device, g), _rand((t, n), dtype, device, g, 4.0)
    w = _rand((n,), wdtype, device, g)
    x0, r0 = x.clone(), r.clone()
    y, h = fused_add_rms_norm(x, r, w, 1e-5)
    y_ref, h_ref = fused_add_rms_norm_ref(x.cpu(), r.cpu(), w.cpu(), 1e-5)
    assert torch.equal(x, x0) and torch.equal(r, r0)  # out of place
    assert not y.isnan().any() and not h.isnan().any()
    torch.testing.assert_close(h.cpu(), h_ref, rtol=0, atol=0)
    torch.testing.assert_close(y.cpu(), y_ref, **_tol(dtype))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_add_normalizes_the_rounded_h(device, dtype):
    """y is the norm of the ROUNDED h the kernel returns (as torch's x + residual then RMSNorm), bit for bit the
    kernel's own rms_norm of that h. tester22 mutation #67: normalizing the unrounded fp32 sum moved y by ~1 ulp,
    inside the property test's 2^-7 tolerance (and the quant tests compare with the same kernel's y)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 256, generator=g).to(dtype).to(device)
    r = (torch.randn(8, 256, generator=g) * 30).to(dtype).to(device)  # large residual: h's rounding matters
    w = torch.randn(256, generator=g).to(device)
    y, h = fused_add_rms_norm(x, r, w, 1e-6)
    assert torch.equal(h, x + r)
    assert torch.equal(y, rms_norm(h, w, 1e-6))


def test_empty_batch_and_bad_inputs(device):
    w = torch.ones(8, device=device)
    assert rms_norm(torch.empty(0, 8, device=device), w, 1e-6).shape == (0, 8)
    with pytest.raises(ValueError, match="columns"):
        rms_norm(torch.randn(2, 9, device=device), w, 1e-6)
    with pytest.raises(ValueError, match="eps"):
        rms_norm(torch.randn(2, 8, device=device), w, 0.0)
    with pytest.raises(TypeError, match="x must have dtype"):
        rms_norm(torch.ones(2, 8, dtype=torch.int32, device=device), w, 1e-6)
    with pytest.raises(ValueError, match="contiguous"):
        rms_norm(torch.randn(8, 2, device=device).t(), w, 1e-6)
    with pytest.raises(ValueError, match="residual"):
        fused_add_rms_norm(torch.randn(2, 8, device=device), torch.randn(3, 8, device=device), w, 1e-6)
    with pytest.raises(TypeError, match="residual"):
        fused_add_rms_norm(torch.randn(2, 8, device=device), None, w, 1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("t", [1, 32, 128, 4096])
@pytest.mark.parametrize("n", [7168, 2048, 1536, 512])
def test_real_shapes_gpu(device, t, n):
    g = torch.Generator().manual_seed(t * 7 + n)
    x, r = _rand((t, n), torch.bfloat16, device, g), _rand((t, n), torch.bfloat16, device, g, 8.0)
    w = _rand((n,), torch.bfloat16, device, g)
    y, h = fused_add_rms_norm(x, r, w, 1e-6)
    y_ref, h_ref = fused_add_rms_norm_ref(x, r, w, 1e-6)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=0)
    torch.testing.assert_close(y, y_ref, **_tol(torch.bfloat16))
    torch.testing.assert_close(rms_norm(x, w, 1e-6), rms_norm_ref(x, w, 1e-6), **_tol(torch.bfloat16))
    # fused norm + FP8 group quant: bit-equal to quantizing the kernels' own y (see the CPU property)
    from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8

    q, s, h2 = norm.fused_add_rms_norm_quant_fp8(x, r, w, 1e-6)
    q_ref, s_ref = per_token_group_quant_fp8(y, 128)
    assert torch.equal(h2, h) and torch.equal(s, s_ref) and torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))
    q, s = norm.rms_norm_quant_fp8(x, w, 1e-6)
    q_ref, s_ref = per_token_group_quant_fp8(rms_norm(x, w, 1e-6), 128)
    assert torch.equal(s, s_ref) and torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))


@_fixture_ok
@given(
    t=st.integers(1, 9), n=st.integers(1, 300), dtype=st.sampled_from([torch.bfloat16, torch.float32]),
    residual=st.booleans(), scale=st.sampled_from([1e-3, 1.0, 50.0]), seed=st.integers(0, 2**31 - 1),
)
def test_rms_norm_quant_equals_norm_then_quant(poisoned, device, t, n, dtype, residual, scale, seed):
    """q/s of the fused norm + FP8 group quant are BIT-equal to per_token_group_quant_fp8 of the rounded y that
    rms_norm / fused_add_rms_norm return (same kernel arithmetic, the quant reads y after its rounding),
    including N tails (n not a multiple of 128); h equal to fused_add_rms_norm's."""
    from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8

    g = torch.Generator().manual_seed(seed)
    x = _rand((t, n), dtype, device, g, scale)
    w = _rand((n,), torch.float32, device, g)
    if residual:
        r = _rand((t, n), dtype, device, g, 4.0)
        q, s, h = norm.fused_add_rms_norm_quant_fp8(x, r, w, 1e-6)
        y, h_ref = fused_add_rms_norm(x, r, w, 1e-6)
        assert torch.equal(h, h_ref)
    else:
        q, s = norm.rms_norm_quant_fp8(x, w, 1e-6)
        y = rms_norm(x, w, 1e-6)
    q_ref, s_ref = per_token_group_quant_fp8(y, 128)
    assert q.shape == (t, n) and q.dtype == torch.float8_e4m3fn and s.shape == (t, -(-n // 128))
    assert s.stride() == (1, t)  # MN-major, as fp8_gemm_nt reads it
    assert not torch.isnan(s).any() and not torch.isnan(q.float()).any()
    assert torch.equal(s, s_ref)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))


def test_rms_norm_quant_empty_and_bad_inputs(device):
    w = torch.ones(8, device=device)
    q, s = norm.rms_norm_quant_fp8(torch.empty(0, 8, device=device), w, 1e-6)
    assert q.shape == (0, 8) and s.shape == (0, 1)
    with pytest.raises(TypeError, match="residual"):
        norm.fused_add_rms_norm_quant_fp8(torch.randn(2, 8, device=device), None, w, 1e-6)
    with pytest.raises(ValueError, match="columns"):
        norm.rms_norm_quant_fp8(torch.randn(2, 9, device=device), w, 1e-6)


def test_rms_norm_quant_nan_row_is_nan_as_norm_then_quant(device):
    """tester23 #10: a row holding NaN got q bytes 0x7C (e4m3 384, finite) from the fused norm + quant (and so from
    mla_prologue_fp8) under the interpreter, where per_token_group_quant_fp8 of the same y writes NaN (0x7F): the
    bit-equality the docstrings promise held on finite rows only."""
    from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8
    from tritonseek.kernels.rope_cache import mla_prologue_fp8

    g = torch.Generator().manual_seed(4)
    x = _rand((4, 256), torch.bfloat16, device, g, 2.0)
    x[2, 7] = float("nan")
    w = _rand((256,), torch.float32, device, g)
    q, s = norm.rms_norm_quant_fp8(x, w, 1e-6)
    q_ref, s_ref = per_token_group_quant_fp8(rms_norm(x, w, 1e-6), 128)
    assert torch.isnan(q[2].float()).all() and torch.isnan(s[2]).all()
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8)) and torch.equal(s.isnan(), s_ref.isnan())
    kv = _rand((4, 24), torch.bfloat16, device, g)
    pos = torch.arange(4, device=device)
    cs = _rand((16, 8), torch.float32, device, g)
    qp, sp, _ = mla_prologue_fp8(x, kv, w, 1e-6, pos, cs, _rand((16,), torch.float32, device, g), 1e-6, None, None)
    assert torch.equal(qp.view(torch.uint8), q_ref.view(torch.uint8))
