"""The fused MLA prologue (RoPE on q_pe/k_pe + kv RMSNorm + latent-cache write) against
tritonseek.kernels.reference.rope, and the reference against the model's own torch code.

Tolerances: cos/sin are gathered from the same table on both sides, so the rotation differs only
by fp32 contraction (fma) on the GPU and the kv norm by reduction order/rsqrt: fp32 outputs within
1e-5, bf16 outputs within one bf16 step (2^-8 relative; rtol 2^-7). Cache rows must equal the
returned latent exactly (the same rounded values are stored), and untouched rows stay NaN.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kernels.poison import poison_outputs

from tritonseek.kernels import rope_cache
from tritonseek.kernels.reference.rope import cos_sin_cache_ref, mla_rope_cache_ref
from tritonseek.kernels.norm import rms_norm_quant_fp8
from tritonseek.kernels.rope_cache import mla_prologue_fp8, mla_rope_cache
from tritonseek.model.config import ModelConfig
from tritonseek.model.layers import RMSNorm, RotaryEmbedding, apply_rotary_interleaved, rope_inv_freq

_fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def poisoned(monkeypatch):
    poison_outputs(monkeypatch, rope_cache)


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2.0**-7, atol=2.0**-7)


def _inv_freq(rope, yarn=True):
    base = 10000.0
    f = 1.0 / (base ** (torch.arange(0, rope, 2, dtype=torch.float32) / rope))
    return f / 4.0 if yarn else f


def _case(T, H, nope, rope, kv_lora, dtype, device, g, num_blocks, page, max_pos=300):
    q = torch.randn(T, H, nope + rope, generator=g).to(dtype).to(device)
    kv = (torch.randn(T, kv_lora + rope, generator=g) * 3).to(dtype).to(device)
    pos = torch.randint(0, max_pos, (T,), generator=g).to(device)
    cs = cos_sin_cache_ref(_inv_freq(rope), max_pos).to(device)
    w = torch.randn(kv_lora, generator=g).to(device)
    slots = torch.randperm(num_blocks * page, generator=g)[:T]
    slots[torch.rand(T, generator=g) < 0.25] = -1  # padding rows (CUDA-graph) are skipped
    cache = torch.full((num_blocks, page, 1, kv_lora + rope), float("nan"), dtype=dtype, device=device)
    return q, kv, pos, cs, w, cache, slots.to(device)


@_fixture_ok
@given(
    T=st.integers(1, 10), H=st.integers(1, 5), rope=st.sampled_from([2, 8, 16]), kv_lora=st.integers(1, 70),
    page=st.sampled_from([1, 4, 16]), dtype=st.sampled_from([torch.bfloat16, torch.float32]),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_reference(poisoned, device, T, H, rope, kv_lora, page, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    num_blocks = (T + page - 1) // page + 1
    q, kv, pos, cs, w, cache, slots = _case(T, H, 8, rope, kv_lora, dtype, device, g, num_blocks, page)
    cache_ref = cache.clone().cpu()
    q_pe, latent = mla_rope_cache(q, kv, pos, cs, w, 1e-6, cache, slots)
    q_ref, lat_ref = mla_rope_cache_ref(q.cpu(), kv.cpu(), pos.cpu(), cs.cpu(), w.cpu(), 1e-6, cache_ref, slots.cpu())
    assert q_pe.shape == (T, H, rope) and latent.shape == (T, kv_lora + rope)
    assert not q_pe.isnan().any() and not latent.isnan().any()
    torch.testing.assert_close(q_pe.cpu(), q_ref, **_tol(dtype))
    torch.testing.assert_close(latent.cpu(), lat_ref, **_tol(dtype))
    flat = cache.view(-1, kv_lora + rope).cpu()
    keep = slots.cpu() >= 0
    assert torch.equal(flat[slots.cpu()[keep]], latent.cpu()[keep])  # written rows = returned latent
    written = torch.zeros(flat.shape[0], dtype=torch.bool)
    written[slots.cpu()[keep]] = True
    assert flat[~written].isnan().all()  # nothing else touched (slot −1 skipped)


def test_no_cache_and_empty(device):
    g = torch.Generator().manual_seed(3)
    q, kv, pos, cs, w, _, _ = _case(4, 2, 8, 8, 16, torch.float32, device, g, 2, 4)
    q_pe, latent = mla_rope_cache(q, kv, pos, cs, w, 1e-6, None, None)
    q_ref, lat_ref = mla_rope_cache_ref(q.cpu(), kv.cpu(), pos.cpu(), cs.cpu(), w.cpu(), 1e-6, None, None)
    torch.testing.assert_close(q_pe.cpu(), q_ref, **_tol(torch.float32))
    torch.testing.assert_close(latent.cpu(), lat_ref, **_tol(torch.float32))
    e = mla_rope_cache(q[:0], kv[:0], pos[:0], cs, w, 1e-6, None, None)
    assert e[0].shape == (0, 2, 8) and e[1].shape == (0, 24)


def test_bad_inputs_name_the_argument(device):
    g = torch.Generator().manual_seed(4)
    q, kv, pos, cs, w, cache, slots = _case(4, 2, 8, 8, 16, torch.float32, device, g, 2, 4)
    with pytest.raises(ValueError, match="kv must be"):
        mla_rope_cache(q, kv[:, :-1], pos, cs, w, 1e-6, cache, slots)
    with pytest.raises(TypeError, match="positions"):
        mla_rope_cache(q, kv, pos.int(), cs, w, 1e-6, cache, slots)
    with pytest.raises(ValueError, match="page_size"):
        mla_rope_cache(q, kv, pos, cs, w, 1e-6, cache.expand(2, 4, 1, 24)[:, :3], slots)
    with pytest.raises(ValueError, match="slot_mapping"):
        mla_rope_cache(q, kv, pos, cs, w, 1e-6, cache, slots[:3])
    with pytest.raises(ValueError, match="qk_rope_head_dim"):
        mla_rope_cache(q, kv, pos, cs[:, :6].contiguous(), w, 1e-6, cache, slots)
    with pytest.raises(ValueError, match="eps"):
        mla_rope_cache(q, kv, pos, cs, w, -1.0, cache, slots)


def test_out_of_range_ids_raise(device):
    """check_ids (default): a position past cos_sin_cache's rows or a slot past the cache raises, naming the
    argument, the entry and its value, before anything is written; negative slots stay "skip"."""
    g = torch.Generator().manual_seed(5)
    q, kv, pos, cs, w, cache, slots = _case(4, 2, 8, 8, 16, torch.float32, device, g, 2, 4)
    qa = torch.randn(4, 256, generator=g).to(device)
    bad_pos, bad_slot = pos.clone(), slots.clone()
    bad_pos[2] = cs.shape[0]
    bad_slot[1] = cache.shape[0] * cache.shape[1]
    for fn in (lambda p, s: mla_rope_cache(q, kv, p, cs, w, 1e-6, cache, s),
               lambda p, s: mla_prologue_fp8(qa, kv, torch.ones(256, device=device), 1e-5, p, cs, w, 1e-6, cache, s)):
        with pytest.raises(ValueError, match=rf"positions\[2\] = {cs.shape[0]} is out of range"):
            fn(bad_pos, slots)
        with pytest.raises(ValueError, match=r"slot_mapping\[1\] = 8 is out of range"):
            fn(pos, bad_slot)
        neg = pos.clone()
        neg[0] = -3
        with pytest.raises(ValueError, match=r"positions\[0\] = -3"):
            fn(neg, slots)
        assert torch.isnan(cache).all()  # nothing written
    with pytest.raises(TypeError, match="check_ids"):
        mla_rope_cache(q, kv, pos, cs, w, 1e-6, cache, slots, check_ids=1)
    # strided ids: the kernels read at unit stride, so a strided view would be read as other entries → rejected
    with pytest.raises(ValueError, match="positions must be contiguous"):
        mla_rope_cache(q, kv, torch.stack([pos, pos], 1)[:, 0], cs, w, 1e-6, cache, slots)
    with pytest.raises(ValueError, match="slot_mapping must be contiguous"):
        mla_prologue_fp8(qa, kv, torch.ones(256, device=device), 1e-5, pos, cs, w, 1e-6, cache,
                         torch.stack([slots, slots], 1)[:, 1])
    mla_rope_cache(q, kv, pos, cs, w, 1e-6, cache, slots)  # in range (−1 slots included): no raise


@pytest.mark.gpu
def test_range_check_skipped_under_graph_capture(device):
    """The check needs a sync, impossible during CUDA-graph capture: it must step aside there (the replay
    writes the same rows as an eager call) instead of breaking the capture."""
    g = torch.Generator().manual_seed(6)
    q, kv, pos, cs, w, cache, slots = _case(8, 16, 128, 64, 512, torch.bfloat16, device, g, 4, 64)
    eager_cache = cache.clone()
    eager = mla_rope_cache(q, kv, pos, cs, w, 1e-6, eager_cache, slots)
    mla_rope_cache(q, kv, pos, cs, w, 1e-6, cache.clone(), slots)  # compile outside the capture
    stream = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
        out = mla_rope_cache(q, kv, pos, cs, w, 1e-6, cache, slots)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out[0], eager[0]) and torch.equal(out[1], eager[1])
    assert torch.equal(cache.nan_to_num(7.0), eager_cache.nan_to_num(7.0))


def _prologue_parts(q_a, kv, qw, pos, cs, w, cache, slots):
    """The unfused kernels the one-launch prologue replaces: rms_norm_quant_fp8 and mla_rope_cache's latent."""
    q, s = rms_norm_quant_fp8(q_a, qw, 1e-5)
    c2 = cache.clone() if cache is not None else None
    _, lat = mla_rope_cache(kv[:, None, :], kv, pos, cs, w, 1e-6, c2, slots)
    return q, s, lat, c2


def _check_prologue(q_a, kv, qw, pos, cs, w, cache, slots):
    ref = _prologue_parts(q_a, kv, qw, pos, cs, w, cache, slots)
    q, s, lat = mla_prologue_fp8(q_a, kv, qw, 1e-5, pos, cs, w, 1e-6, cache, slots)
    assert q.dtype == torch.float8_e4m3fn and s.stride() == ref[1].stride() and lat.shape == ref[2].shape
    # q/s: the same row code at the same block and warps → bit-equal, every output written (poisoned). The latent
    # row runs at the q row's warp count here (8 at V3's q_lora 1536) and at 4 in mla_rope_cache: on the GPU its
    # kv-norm sum may then round differently (one bf16 step); under the interpreter it is bit-equal.
    assert torch.equal(q.view(torch.uint8), ref[0].view(torch.uint8))
    assert torch.equal(s, ref[1])
    exact = q_a.device.type == "cpu"
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=2.0**-7, atol=1e-6)
    assert not lat.isnan().any()
    torch.testing.assert_close(lat, ref[2], **tol)
    if cache is not None:  # the rows written hold the returned latent; the others are untouched (NaN)
        flat, flat_ref = cache.view(-1, cache.shape[-1]), ref[3].view(-1, cache.shape[-1])
        keep = slots >= 0
        assert torch.equal(flat[slots[keep]], lat[keep].to(cache.dtype))
        torch.testing.assert_close(flat.nan_to_num(7.0), flat_ref.nan_to_num(7.0), **tol)


@_fixture_ok
@given(T=st.integers(1, 9), q_lora=st.sampled_from([16, 96, 128, 200, 384]), rope=st.sampled_from([2, 8, 16]),
       kv_lora=st.integers(1, 70), page=st.sampled_from([1, 4]), dtype=st.sampled_from([torch.bfloat16, torch.float32]),
       seed=st.integers(0, 2**31 - 1))
def test_prologue_fp8_equals_the_unfused_kernels(poisoned, device, T, q_lora, rope, kv_lora, page, dtype, seed):
    """mla_prologue_fp8 = rms_norm_quant_fp8(q_a) (q_lora not a multiple of 128: a partial quant group) and
    mla_rope_cache's latent + cache rows (slot −1 skipped), q_a and kv as column views of one product."""
    g = torch.Generator().manual_seed(seed)
    num_blocks = (T + page - 1) // page + 1
    _, kv, pos, cs, w, cache, slots = _case(T, 1, 8, rope, kv_lora, dtype, device, g, num_blocks, page)
    fused = torch.cat([(torch.randn(T, q_lora, generator=g) * 4).to(dtype).to(device), kv], 1)  # q_a ‖ kv
    qw = (torch.rand(q_lora, generator=g) + 0.5).to(device)
    _check_prologue(fused[:, :q_lora], fused[:, q_lora:], qw, pos, cs, w, cache, slots)


def test_prologue_fp8_no_cache_empty_and_rejects(device):
    g = torch.Generator().manual_seed(8)
    _, kv, pos, cs, w, cache, slots = _case(4, 1, 8, 8, 16, torch.bfloat16, device, g, 2, 4)
    q_a = torch.randn(4, 256, generator=g).to(torch.bfloat16).to(device)
    qw = torch.rand(256, generator=g).to(device)
    _check_prologue(q_a, kv, qw, pos, cs, w, None, None)
    q, s, lat = mla_prologue_fp8(q_a[:0], kv[:0], qw, 1e-5, pos[:0], cs, w, 1e-6, None, None)
    assert q.shape == (0, 256) and s.shape == (0, 2) and lat.shape == (0, 24)
    with pytest.raises(ValueError, match="q_norm_weight"):
        mla_prologue_fp8(q_a, kv, qw[:100], 1e-5, pos, cs, w, 1e-6, cache, slots)
    with pytest.raises(ValueError, match="q_eps"):
        mla_prologue_fp8(q_a, kv, qw, 0.0, pos, cs, w, 1e-6, cache, slots)
    with pytest.raises(TypeError, match="kv"):
        mla_prologue_fp8(q_a, kv.float(), qw, 1e-5, pos, cs, w, 1e-6, cache, slots)
    with pytest.raises(ValueError, match="q_a needs a contiguous"):
        mla_prologue_fp8(q_a.t().contiguous().t(), kv, qw, 1e-5, pos, cs, w, 1e-6, cache, slots)
    with pytest.raises(ValueError, match="positions"):
        mla_prologue_fp8(q_a, kv, qw, 1e-5, pos[:3], cs, w, 1e-6, cache, slots)
    with pytest.raises(ValueError, match="slot_mapping"):
        mla_prologue_fp8(q_a, kv, qw, 1e-5, pos, cs, w, 1e-6, None, slots)


def test_eps_must_be_a_finite_positive_float_not_a_bool(device):
    g = torch.Generator().manual_seed(9)
    _, kv, pos, cs, w, cache, slots = _case(4, 1, 8, 8, 16, torch.float32, device, g, 2, 4)
    q_a = torch.randn(4, 128, generator=g).to(device)
    qw = torch.rand(128, generator=g).to(device)
    for bad, err in [(True, TypeError), (False, TypeError), ("1e-6", TypeError), (None, TypeError),
                     (float("nan"), ValueError), (float("inf"), ValueError), (-1e-6, ValueError), (0, ValueError)]:
        with pytest.raises(err, match=r"^q_eps "):
            mla_prologue_fp8(q_a, kv, qw, bad, pos, cs, w, 1e-6, cache, slots)
        with pytest.raises(err, match=r"^eps "):
            mla_prologue_fp8(q_a, kv, qw, 1e-5, pos, cs, w, bad, cache, slots)
        with pytest.raises(err, match=r"^eps "):
            mla_rope_cache(kv[:, None, :], kv, pos, cs, w, bad, cache, slots)


def test_reference_equals_the_models_torch_code():
    """The spec is the model's code: RotaryEmbedding.cos_sin + apply_rotary_interleaved + RMSNorm."""
    import json
    from pathlib import Path

    import tritonseek

    raw = json.loads((Path(tritonseek.__file__).parent / "data/default_model/config.json").read_text())
    cfg = ModelConfig.from_dict(raw)  # YaRN factor 4, rope 32, kv_lora 128, 2048 positions
    rot = RotaryEmbedding(cfg)
    g = torch.Generator().manual_seed(5)
    T = 7
    R, C = cfg.qk_rope_head_dim, cfg.kv_lora_rank
    pos = torch.randint(0, cfg.max_position_embeddings, (T,), generator=g)
    q = torch.randn(T, 2, cfg.qk_nope_head_dim + R, generator=g).bfloat16()
    kv = torch.randn(T, C + R, generator=g).bfloat16()
    norm = RMSNorm(C, 1e-6)
    norm.weight.data = torch.randn(C, generator=g)
    cs = rot.cos_sin_cache("cpu")
    assert torch.equal(cs, cos_sin_cache_ref(rope_inv_freq(cfg), cfg.max_position_embeddings))
    q_pe, latent = mla_rope_cache_ref(q, kv, pos, cs, norm.weight, 1e-6, None, None)
    cos, sin = rot.cos_sin(pos)
    # the table's rows are the same fp32 angles; cos/sin of equal inputs may still differ by an
    # ulp between vectorised and tail code paths, so compare the rotation with a tight tolerance
    torch.testing.assert_close(torch.cat([cos, sin], -1), cs[pos], rtol=0, atol=2e-7)
    torch.testing.assert_close(q_pe, apply_rotary_interleaved(q[..., -R:], cos, sin), rtol=2.0**-7, atol=2.0**-7)
    assert torch.equal(latent[:, :C], norm(kv[:, :C]))
    torch.testing.assert_close(latent[:, C:], apply_rotary_interleaved(kv[:, C:].unsqueeze(1), cos, sin).squeeze(1),
                               rtol=2.0**-7, atol=2.0**-7)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 32, 128, 4096])
@pytest.mark.parametrize("H", [128, 16])
def test_real_shapes_gpu(device, T, H):
    """DeepSeek-V3: 128 heads (16 per rank at TP 8), nope 128, rope 64, kv_lora 512, page 64."""
    g = torch.Generator().manual_seed(T + H)
    num_blocks = (T + 63) // 64 + 2
    q, kv, pos, cs, w, cache, slots = _case(T, H, 128, 64, 512, torch.bfloat16, device, g, num_blocks, 64, 163840)
    cache_ref = cache.clone()
    q_pe, latent = mla_rope_cache(q, kv, pos, cs, w, 1e-6, cache, slots)
    q_ref, lat_ref = mla_rope_cache_ref(q, kv, pos, cs, w, 1e-6, cache_ref, slots)
    torch.testing.assert_close(q_pe, q_ref, **_tol(torch.bfloat16))
    torch.testing.assert_close(latent, lat_ref, **_tol(torch.bfloat16))
    keep = slots >= 0
    flat = cache.view(-1, 576)
    assert torch.equal(flat[slots[keep]], latent[keep])
    assert flat.isnan().any(-1).sum() == flat.shape[0] - int(keep.sum())


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 8, 128])
def test_prologue_fp8_real_shapes_gpu(device, T):
    """DeepSeek-V3: q_lora 1536 and kv_lora 512 + rope 64 as column views of the fused [T, 2112] q_a‖kv_a
    product, page 64: bit-equal to rms_norm_quant_fp8 + mla_rope_cache (GPU: both compiled from one helper)."""
    g = torch.Generator().manual_seed(T)
    num_blocks = (T + 63) // 64 + 2
    _, kv, pos, cs, w, cache, slots = _case(T, 1, 8, 64, 512, torch.bfloat16, device, g, num_blocks, 64, 163840)
    fused = torch.cat([(torch.randn(T, 1536, generator=g) * 4).to(torch.bfloat16).to(device), kv], 1)
    qw = (torch.rand(1536, generator=g) + 0.5).to(torch.bfloat16).to(device)
    _check_prologue(fused[:, :1536], fused[:, 1536:], qw, pos, cs, w.to(torch.bfloat16), cache, slots)
