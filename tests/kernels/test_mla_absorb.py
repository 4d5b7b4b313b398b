"""mla_absorb_q / mla_absorb_o against tritonseek.kernels.reference.mla_absorb (CPU interpreter; real shapes on the GPU).

Tolerance: both sides accumulate in fp32 over bf16 inputs and round once to bf16, so they differ
by summation order (~1e-6 relative) plus at most one bf16 rounding step (2^-8 relative per
element); we assert max |out − ref| ≤ 1e-2·(|ref| + 1e-2·rms(ref)) elementwise, which a wrong head,
a dropped chunk or a transposed weight (errors of order |ref|) fails by far.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kernels.poison import poison_outputs
from tritonseek.kernels import mla_absorb as MA
from tritonseek.kernels.mla_absorb import mla_absorb_o, mla_absorb_q
from tritonseek.kernels.reference.mla_absorb import mla_absorb_o_ref, mla_absorb_q_ref


def _close(out: torch.Tensor, ref: torch.Tensor) -> None:
    out, ref = out.float().cpu(), ref.float().cpu()
    assert not torch.isnan(out).any(), "some outputs were never written"
    tol = 1e-2 * (ref.abs() + 1e-2 * ref.pow(2).mean().sqrt())
    bad = (out - ref).abs() > tol
    assert not bad.any(), f"{int(bad.sum())} elements off, max err {(out - ref).abs().max():.3g}"


def _t(*shape, g, device, scale=1.0):
    return (torch.randn(*shape, generator=g) * scale).to(torch.bfloat16).to(device)


@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(T=st.integers(1, 40), H=st.integers(1, 3), nope=st.sampled_from([16, 32]), kv_lora=st.sampled_from([16, 64, 256]),
       rope=st.sampled_from([16, 32]), seed=st.integers(0, 2**31 - 1))
def test_mla_absorb_q_matches_reference(device, monkeypatch, T, H, nope, kv_lora, rope, seed):
    poison_outputs(monkeypatch, MA)
    g = torch.Generator().manual_seed(seed)
    q = _t(T, H, nope + rope + 8, g=g, device=device)  # q_nope a strided view, like q_b_proj's output
    q_nope = q[..., :nope]
    q_pe = _t(T, H, rope, g=g, device=device)
    w_uk = _t(H, nope, kv_lora, g=g, device=device, scale=0.1)
    out = mla_absorb_q(q_nope, w_uk, q_pe)
    assert out.shape == (T, H, kv_lora + rope) and out.dtype == torch.bfloat16
    _close(out, mla_absorb_q_ref(q_nope, w_uk, q_pe))
    assert torch.equal(out[..., kv_lora:].cpu(), q_pe.cpu())  # q_pe copied exactly


@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(T=st.integers(1, 40), H=st.integers(1, 3), v_dim=st.sampled_from([16, 64, 128]), kv_lora=st.sampled_from([16, 128, 256]),
       seed=st.integers(0, 2**31 - 1))
def test_mla_absorb_o_matches_reference(device, monkeypatch, T, H, v_dim, kv_lora, seed):
    poison_outputs(monkeypatch, MA)
    g = torch.Generator().manual_seed(seed)
    o_lat = _t(T, H, kv_lora, g=g, device=device)
    w_uv = _t(H, v_dim, kv_lora, g=g, device=device, scale=0.1)
    _close(mla_absorb_o(o_lat, w_uv), mla_absorb_o_ref(o_lat, w_uv))


def test_mla_absorb_out_buffers_and_empty(device):
    g = torch.Generator().manual_seed(3)
    q_nope, q_pe = _t(3, 2, 32, g=g, device=device), _t(3, 2, 16, g=g, device=device)
    w_uk = _t(2, 32, 64, g=g, device=device, scale=0.1)
    big = torch.full((3, 2, 100), float("nan"), dtype=torch.bfloat16, device=device)
    out = big[..., :80]  # strided rows, contiguous last dim
    assert mla_absorb_q(q_nope, w_uk, q_pe, out=out).data_ptr() == out.data_ptr()
    _close(out, mla_absorb_q_ref(q_nope, w_uk, q_pe))
    assert torch.isnan(big[..., 80:]).all()  # nothing written outside out
    assert mla_absorb_q(q_nope[:0], w_uk, q_pe[:0]).shape == (0, 2, 80)
    for dt in (torch.float32, torch.float16):  # the float out_dtypes it supports
        o = mla_absorb_q(q_nope, w_uk, q_pe, out_dtype=dt)
        assert o.dtype == dt
        _close(o.float(), mla_absorb_q_ref(q_nope, w_uk, q_pe).float())
    assert mla_absorb_o(_t(0, 2, 64, g=g, device=device), _t(2, 32, 64, g=g, device=device)).shape == (0, 2, 32)


def test_mla_absorb_rejects_bad_inputs(device):
    g = torch.Generator().manual_seed(4)
    q_nope, q_pe = _t(2, 2, 32, g=g, device=device), _t(2, 2, 16, g=g, device=device)
    w_uk = _t(2, 32, 64, g=g, device=device)
    with pytest.raises(TypeError, match="w_uk"):
        mla_absorb_q(q_nope, w_uk.float(), q_pe)
    with pytest.raises(ValueError, match="w_uk must be"):
        mla_absorb_q(q_nope, w_uk[:1], q_pe)
    with pytest.raises(ValueError, match="kv_lora_rank"):
        mla_absorb_q(q_nope, w_uk[..., :48].contiguous(), q_pe)
    with pytest.raises(ValueError, match="contiguous"):
        mla_absorb_q(q_nope, w_uk.transpose(1, 2).contiguous().transpose(1, 2), q_pe)
    with pytest.raises(ValueError, match="q_pe must be"):
        mla_absorb_q(q_nope, w_uk, q_pe[:1])
    for bad in (torch.int8, torch.int32, torch.float8_e4m3fn):  # the store would wrap: rejected, never garbage
        with pytest.raises(TypeError, match="out_dtype"):
            mla_absorb_q(q_nope, w_uk, q_pe, out_dtype=bad)
    with pytest.raises(ValueError, match="out_dtype"):
        mla_absorb_q(q_nope, w_uk, q_pe, out=torch.empty(2, 2, 80, dtype=torch.bfloat16, device=device),
                     out_dtype=torch.float32)
    with pytest.raises(ValueError, match="w_uv must be"):
        mla_absorb_o(_t(2, 2, 64, g=g, device=device), _t(2, 32, 32, g=g, device=device))
    with pytest.raises(ValueError, match="out must be"):
        mla_absorb_o(_t(2, 2, 64, g=g, device=device), _t(2, 32, 64, g=g, device=device),
                     out=torch.empty(2, 2, 16, dtype=torch.bfloat16, device=device))


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 8, 16, 40, 128])
def test_mla_absorb_real_shapes_gpu(device, T):
    # DeepSeek-V3: 128 heads, qk_nope 128, kv_lora 512, rope 64, v_head_dim 128
    g = torch.Generator().manual_seed(T)
    q = _t(T, 128, 192, g=g, device=device)
    q_nope, q_pe = q[..., :128], _t(T, 128, 64, g=g, device=device)
    w_uk = _t(128, 128, 512, g=g, device=device, scale=0.05)
    out = torch.full((T, 128, 576), float("nan"), dtype=torch.bfloat16, device=device)
    mla_absorb_q(q_nope, w_uk, q_pe, out=out)
    _close(out, mla_absorb_q_ref(q_nope, w_uk, q_pe))
    o_lat, w_uv = _t(T, 128, 512, g=g, device=device), _t(128, 128, 512, g=g, device=device, scale=0.05)
    o = torch.full((T, 128, 128), float("nan"), dtype=torch.bfloat16, device=device)
    mla_absorb_o(o_lat, w_uv, out=o)
    _close(o, mla_absorb_o_ref(o_lat, w_uv))
