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
from tritonseek.kernels.mla_absorb import mla_absorb_o, mla_absorb_o_fp8, mla_absorb_q
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


@settings(max_examples=4, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(T=st.integers(1, 20), H=st.integers(1, 3), rope=st.sampled_from([16, 32]), seed=st.integers(0, 2**31 - 1))
def test_mla_absorb_q_rotates_q_pe_as_rope_cache(device, monkeypatch, T, H, rope, seed):
    """With positions + cos_sin_cache the copied q_pe is rotated on the way: out = absorb_q with
    mla_rope_cache's roped q_pe, bit for bit (same rotation code, rounded to q_pe's dtype, then copied)."""
    from tritonseek.kernels.reference.rope import cos_sin_cache_ref
    from tritonseek.kernels.rope_cache import mla_rope_cache

    poison_outputs(monkeypatch, MA)
    g = torch.Generator().manual_seed(seed)
    nope, kv_lora = 32, 64
    q = _t(T, H, nope + rope, g=g, device=device)
    kv = _t(T, kv_lora + rope, g=g, device=device)
    pos = torch.randint(0, 300, (T,), generator=g).to(device)
    cs = cos_sin_cache_ref(1.0 / (10000 ** (torch.arange(0, rope, 2, dtype=torch.float32) / rope)), 300).to(device)
    w_uk = _t(H, nope, kv_lora, g=g, device=device, scale=0.1)
    q_pe, _ = mla_rope_cache(q, kv, pos, cs, torch.ones(kv_lora, device=device), 1e-6, None, None)
    out = mla_absorb_q(q[..., :nope], w_uk, q[..., nope:], positions=pos, cos_sin_cache=cs)
    assert torch.equal(out.cpu(), mla_absorb_q(q[..., :nope], w_uk, q_pe).cpu())
    _close(out, mla_absorb_q_ref(q[..., :nope], w_uk, q_pe))
    with pytest.raises(ValueError, match="positions and cos_sin_cache"):
        mla_absorb_q(q[..., :nope], w_uk, q[..., nope:], positions=pos)
    with pytest.raises(ValueError, match="cos_sin_cache"):
        mla_absorb_q(q[..., :nope], w_uk, q[..., nope:], positions=pos, cos_sin_cache=cs[:, :8].contiguous())
    with pytest.raises(ValueError, match="config has an unknown key 'BLOCK_D'"):  # absorb_q takes only PDL
        mla_absorb_q(q[..., :nope], w_uk, q[..., nope:], config=dict(BLOCK_D=32))
    with pytest.raises(ValueError, match="config key PDL=1 must be a bool"):
        mla_absorb_q(q[..., :nope], w_uk, q[..., nope:], config=dict(PDL=1))
    bad = pos.clone()
    bad[-1] = 300  # one past cos_sin_cache's rows
    with pytest.raises(ValueError, match=rf"positions\[{T - 1}\] = 300 is out of range"):
        mla_absorb_q(q[..., :nope], w_uk, q[..., nope:], positions=bad, cos_sin_cache=cs)
    if T > 1:  # (a one-entry view is contiguous whatever its stride)
        with pytest.raises(ValueError, match="positions must be contiguous"):  # read at unit stride
            mla_absorb_q(q[..., :nope], w_uk, q[..., nope:], positions=torch.stack([pos, pos], 1)[:, 0],
                         cos_sin_cache=cs)
    with pytest.raises(TypeError, match="check_ids"):
        mla_absorb_q(q[..., :nope], w_uk, q[..., nope:], positions=pos, cos_sin_cache=cs, check_ids=None)


@pytest.mark.parametrize("config", [dict(BLOCK_D=16), dict(BLOCK_D=64, PDL=False), dict(BLOCK_D=128),
                                    dict(BLOCK_D=32, BLOCK_C=64, STAGES=2), dict(BLOCK_C=32, STAGES=1, num_warps=8)])
def test_mla_absorb_o_configs(device, monkeypatch, config):
    """Every BLOCK_D (value rows per program), BLOCK_C (latent columns per streamed chunk), STAGES and warp count gives
    the reference's result; bad configs name themselves."""
    poison_outputs(monkeypatch, MA)
    g = torch.Generator().manual_seed(5)
    o_lat, w_uv = _t(5, 2, 128, g=g, device=device), _t(2, 64, 128, g=g, device=device, scale=0.1)
    _close(mla_absorb_o(o_lat, w_uv, config=config), mla_absorb_o_ref(o_lat, w_uv))
    for bad in (dict(BLOCK_D=24), dict(PDL=1), dict(BLOCK_T=16), dict(TILES=2), dict(BLOCK_C=8), dict(STAGES=0),
                dict(FMA=True)):
        with pytest.raises(ValueError, match="config"):
            mla_absorb_o(o_lat, w_uv, config=bad)


@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(T=st.integers(1, 40), H=st.integers(1, 3), v_dim=st.sampled_from([16, 64, 128]), kv_lora=st.sampled_from([16, 128, 256]),
       seed=st.integers(0, 2**31 - 1))
def test_mla_absorb_o_matches_reference(device, monkeypatch, T, H, v_dim, kv_lora, seed):
    poison_outputs(monkeypatch, MA)
    g = torch.Generator().manual_seed(seed)
    o_lat = _t(T, H, kv_lora, g=g, device=device)
    w_uv = _t(H, v_dim, kv_lora, g=g, device=device, scale=0.1)
    _close(mla_absorb_o(o_lat, w_uv), mla_absorb_o_ref(o_lat, w_uv))


@settings(max_examples=4, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(T=st.integers(1, 20), H=st.integers(1, 3), v_dim=st.sampled_from([128, 256]), kv_lora=st.sampled_from([16, 128]),
       seed=st.integers(0, 2**31 - 1))
def test_mla_absorb_o_fp8_equals_quant_of_absorb_o(device, monkeypatch, T, H, v_dim, kv_lora, seed):
    """The fused o_proj input quant: (q, s) bit-equal to per_token_group_quant_fp8 of mla_absorb_o's output at the
    same tile (BLOCK_D 128: the same products and rounding), every element written (NaN-poisoned outputs)."""
    from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8

    poison_outputs(monkeypatch, MA)
    g = torch.Generator().manual_seed(seed)
    o_lat = _t(T, H, kv_lora, g=g, device=device, scale=3.0)
    w_uv = _t(H, v_dim, kv_lora, g=g, device=device, scale=0.1)
    for cfg in (None, dict(BLOCK_C=16, STAGES=2)):
        q, s = mla_absorb_o_fp8(o_lat, w_uv, config=cfg)
        o = mla_absorb_o(o_lat, w_uv, config=dict(cfg or {}, BLOCK_D=128))
        q_ref, s_ref = per_token_group_quant_fp8(o.reshape(T, H * v_dim), 128)
        assert q.shape == (T, H * v_dim) and q.dtype == torch.float8_e4m3fn and s.stride() == s_ref.stride()
        assert torch.equal(q.view(torch.uint8).cpu(), q_ref.view(torch.uint8).cpu())
        assert torch.equal(s.cpu(), s_ref.cpu())
    with pytest.raises(ValueError, match="multiple of 128"):
        mla_absorb_o_fp8(o_lat, w_uv[:, :64].contiguous())
    with pytest.raises(ValueError, match="config"):
        mla_absorb_o_fp8(o_lat, w_uv, config=dict(BLOCK_D=128))


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


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 8, 128])
@pytest.mark.parametrize("block_d", [32, 64, 128])
def test_mla_absorb_rope_and_configs_real_shapes_gpu(device, T, block_d):
    """V3 shapes: absorb_q rotating q_pe (PDL launch) = absorb_q on mla_rope_cache's q_pe, bit for bit;
    absorb_o at BLOCK_D 32 / 64 / 128 with and without PDL (and BLOCK_C 64 / 128) vs the reference; the fused FP8
    quant (default BLOCK_C: 128 at T ≤ 16, else 64; and 64) bit-equal to quantizing absorb_o at the same chunks, and
    to quantizing absorb_o at its own default (the model's unfused path)."""
    from tritonseek.kernels.reference.rope import cos_sin_cache_ref
    from tritonseek.kernels.rope_cache import mla_rope_cache

    g = torch.Generator().manual_seed(T + block_d)
    q = _t(T, 128, 192, g=g, device=device)
    kv = _t(T, 576, g=g, device=device)
    pos = torch.randint(0, 4096, (T,), generator=g).to(device)
    cs = cos_sin_cache_ref(1.0 / (10000 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64)), 4096).to(device)
    w_uk = _t(128, 128, 512, g=g, device=device, scale=0.05)
    q_pe, _ = mla_rope_cache(q, kv, pos, cs, torch.ones(512, device=device), 1e-6, None, None)
    for pdl in (True, False):
        out = mla_absorb_q(q[..., :128], w_uk, q[..., 128:], positions=pos, cos_sin_cache=cs, config=dict(PDL=pdl))
        assert torch.equal(out, mla_absorb_q(q[..., :128], w_uk, q_pe))
        o_lat, w_uv = _t(T, 128, 512, g=g, device=device), _t(128, 128, 512, g=g, device=device, scale=0.05)
        bc = 64 if pdl else 128
        _close(mla_absorb_o(o_lat, w_uv, config=dict(BLOCK_D=block_d, PDL=pdl, BLOCK_C=bc)), mla_absorb_o_ref(o_lat, w_uv))
        if block_d == 128:  # the fused o_proj input quant at V3 shapes: bit-equal to quant(absorb_o)
            from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8

            for cfg in (dict(PDL=pdl), dict(PDL=pdl, BLOCK_C=64)):
                q8, s8 = mla_absorb_o_fp8(o_lat, w_uv, config=cfg)
                ocfg = dict(BLOCK_D=128, BLOCK_C=cfg.get("BLOCK_C", 128 if T <= 16 else 64))
                qr, sr = per_token_group_quant_fp8(mla_absorb_o(o_lat, w_uv, config=ocfg).reshape(T, -1), 128)
                assert torch.equal(q8.view(torch.uint8), qr.view(torch.uint8)) and torch.equal(s8, sr)
                if "BLOCK_C" not in cfg:
                    qd, sd = per_token_group_quant_fp8(mla_absorb_o(o_lat, w_uv).reshape(T, -1), 128)
                    assert torch.equal(q8.view(torch.uint8), qd.view(torch.uint8)) and torch.equal(s8, sd)
                # and close to the fp32 product: e4m3 keeps 3 mantissa bits (≤ 6.25% per element), 3% overall
                deq, ref = q8.float().view(T, 128, 128) * s8[:, :, None], mla_absorb_o_ref(o_lat, w_uv).float()
                assert ((deq - ref).norm() / ref.norm()).item() < 3e-2


_SEP = "\n// ---- next kernel ----\n"


def compile_decode_kernels_sm90():
    """The kernels this session changed on the MLA decode path at V3 shapes, compiled for sm_90a (no GPU): the
    one-launch prologue, absorb_q rotating q_pe under PDL, absorb_o under PDL at BLOCK_D 32 and at 128 with the
    fused FP8 quant (mla_absorb_o_fp8), the RMSNorm
    row kernel (fused add, 7168 wide, PDL trigger). Returns an object whose asm["ptx"] joins their PTX."""
    import types

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import tritonseek.kernels.norm as N
    import tritonseek.kernels.rope_cache as R

    def comp(fn, sig, consts, **opt):
        sig = dict(sig, **{k: "constexpr" for k in consts})
        return triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", 90, 32), options=opt).asm["ptx"]

    i32, bf = "i32", "*bf16"
    ptx = [comp(R._mla_prologue_kernel, dict(
        qa_ptr=bf, qw_ptr=bf, qq_ptr="*fp8e4nv", qs_ptr="*fp32", kv_ptr=bf, pos_ptr="*i64", cs_ptr="*fp32", w_ptr=bf,
        lat_ptr=bf, cache_ptr=bf, slot_ptr="*i64", Q_LORA=i32, stride_qat=i32, stride_qqt=i32, stride_qsm=i32,
        stride_qsg=i32, q_eps="fp32", amax_eps="fp32", fp8_max="fp32", stride_kvt=i32, stride_lt=i32, stride_cb="i64",
        stride_cp=i32, eps="fp32"), dict(BLOCK_Q=2048, GROUP=128, KV_LORA=512, ROPE=64, BLOCK_C=512, PAGE_SIZE=64,
        WRITE_CACHE=True, EXACT_BF16=False, EXACT_ROUND=False, FAST_DIV=True, PDL_TRIGGER=True), num_warps=8)]
    ptx.append(comp(MA._mla_absorb_q_kernel, dict(
        q_nope_ptr=bf, w_desc="tensordesc<bf16[128, 64]>", q_pe_ptr=bf, out_ptr=bf, pos_ptr="*i64",
        cs_ptr="*fp32", T=i32, stride_qt=i32, stride_qh=i32, stride_pt=i32, stride_ph=i32, stride_ot=i32, stride_oh=i32),
        dict(NOPE=128, KV_LORA=512, ROPE=64, BLOCK_T=16, BLOCK_C=64, DOT_FP32=False, ROTATE=True, EXACT_BF16=False,
             PDL=True), num_warps=4))
    for bd, quant in ((32, False), (128, True)):
        ptx.append(comp(MA._mla_absorb_o_kernel, dict(
            o_lat_ptr=bf, w_desc=f"tensordesc<bf16[{bd}, 128]>", w_ptr=bf, out_ptr="*fp8e4nv" if quant else bf,
            s_ptr="*fp32", T=i32, stride_lt=i32, stride_lh=i32, stride_ot=i32, stride_oh=i32, stride_sm=i32,
            stride_sg=i32, amax_eps="fp32", fp8_max="fp32"),
            dict(V_DIM=128, KV_LORA=512, BLOCK_T=16, BLOCK_D=bd, BLOCK_C=128, DOT_FP32=False, PDL=True, QUANT=quant,
                 EXACT_ROUND=False, FAST_DIV=True), num_warps=4, num_stages=4))
    ptx.append(comp(N._rms_norm_kernel, dict(
        x_ptr=bf, r_ptr=bf, w_ptr=bf, y_ptr=bf, h_ptr=bf, q_ptr="*fp8e4nv", s_ptr="*fp32", N=i32, stride_x=i32,
        stride_r=i32, stride_y=i32, stride_h=i32, stride_q=i32, stride_sm=i32, stride_sg=i32, eps="fp32",
        amax_eps="fp32", fp8_max="fp32"), dict(HAS_RESIDUAL=True, BLOCK_N=8192, EXACT_BF16=False, QUANT=False,
        WRITE_Y=True, GROUP=128, EXACT_ROUND=False, FAST_DIV=True, PDL_TRIGGER=True), num_warps=16))
    return types.SimpleNamespace(asm={"ptx": _SEP.join(ptx)})


def test_decode_kernels_compile_for_sm90():
    """The GPU compiler accepts every changed decode-path kernel (the interpreter ignores griddepcontrol and
    type-checks little); ptxas: no spills; PDL waits / triggers / L2 prefetches where intended."""
    from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report, spill_store_bytes

    ptxs = ptx_in_fresh_process(__name__, "compile_decode_kernels_sm90").split(_SEP)
    assert len(ptxs) == 5
    prologue, absorb_q, absorb_o32, absorb_o128, norm = ptxs
    for p in ptxs:
        assert max(spill_store_bytes(ptxas_report(p))) == 0
    assert "griddepcontrol.launch_dependents" in prologue and "griddepcontrol.launch_dependents" in norm
    assert "griddepcontrol.wait" in absorb_q and "cp.async.bulk.tensor" in absorb_q
    for p in (absorb_o32, absorb_o128):
        assert "griddepcontrol.wait" in p and "prefetch.global.L2" in p
