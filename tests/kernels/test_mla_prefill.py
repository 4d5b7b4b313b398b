"""MLA prefill attention and latent-cache write (Triton) against tritonseek.kernels.reference.mla.

CPU runs use the Triton interpreter with small head dims (d_qk 48 = 32 ‖ 16 and 96 = 64 ‖ 32, the
tiny models' shapes, so the two-piece q·kᵀ split is exercised, and 40/24, which does not fill its
power-of-two blocks and takes the column-masked loads); ``gpu`` tests use DeepSeek's 192/128 with
128 heads.

Tolerances: the reference runs in fp32 on the same bf16 inputs. The kernel rounds p to bf16 before
the p·v dot and rounds out to bf16 (each ≈ 2^-9 relative), so out is compared with
‖out − ref‖/‖ref‖ ≤ 1e-2 and elementwise |out − ref| ≤ 2e-2 + 2e-2·|ref|. The cache write is a
plain copy (with a cast to the cache dtype, identical to torch's) and must match exactly.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tritonseek.kernels.mla_prefill import mla_prefill, write_latent_cache
from tritonseek.kernels.reference.mla import mla_prefill_ref, write_latent_cache_ref

# The device fixture only names cpu/cuda; it holds no state across examples.
_fixture_ok = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
)


def make_qkv(device, lens, heads, d_qk, d_v, gen):
    total = sum(lens)
    q = torch.randn(total, heads, d_qk, generator=gen).to(torch.bfloat16).to(device)
    k = torch.randn(total, heads, d_qk, generator=gen).to(torch.bfloat16).to(device)
    v = torch.randn(total, heads, d_v, generator=gen).to(torch.bfloat16).to(device)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    return q, k, v, cu


def check_prefill(q, k, v, cu, lens, causal, scale):
    out = torch.full((q.shape[0], q.shape[1], v.shape[2]), float("nan"), dtype=q.dtype, device=q.device)
    o = mla_prefill(q, k, v, cu, max(lens), scale, causal=causal, out=out)
    assert o.data_ptr() == out.data_ptr()
    ref = mla_prefill_ref(q.float(), k.float(), v.float(), cu, scale, causal=causal).cpu()
    o = o.float().cpu()
    assert not torch.isnan(o).any(), "some output row was never written"
    rel = ((o - ref).norm() / ref.norm()).item()
    assert rel <= 1e-2, rel
    assert torch.all((o - ref).abs() <= 2e-2 + 2e-2 * ref.abs())


@_fixture_ok
@given(
    lens=st.lists(st.one_of(st.sampled_from([1, 2, 16, 63, 64, 65]), st.integers(1, 150)), min_size=1, max_size=4),
    heads=st.sampled_from([1, 2, 3]),
    dims=st.sampled_from([(48, 32), (96, 64), (40, 24)]),
    causal=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_prefill_matches_reference(device, lens, heads, dims, causal, seed):
    d_qk, d_v = dims
    gen = torch.Generator().manual_seed(seed)
    check_prefill(*make_qkv(device, lens, heads, d_qk, d_v, gen), lens, causal, d_qk**-0.5)


@_fixture_ok
@given(
    lens=st.lists(st.one_of(st.sampled_from([1, 15, 16, 17]), st.integers(1, 70)), min_size=1, max_size=3),
    pad=st.integers(0, 20),
    dims=st.sampled_from([(48, 32), (96, 64)]),
    causal=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_prefill_tma_path_matches_reference(device, lens, pad, dims, causal, seed):
    """USE_TMA (tiles from the [tokens, heads·d] views): trailing tokens of no sequence hold NaN and
    must neither reach the outputs (the last sequence's tail tile reads them) nor be written."""
    d_qk, d_v = dims
    gen = torch.Generator().manual_seed(seed)
    total = sum(lens)
    q, k, v, cu = make_qkv(device, lens + [pad] if pad else lens, 2, d_qk, d_v, gen)
    cu = cu[: len(lens) + 1]
    for t in (q, k, v):
        t[total:] = float("nan")
    out = torch.full((q.shape[0], 2, d_v), 7.0, dtype=q.dtype, device=device)
    cfg = dict(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=2, USE_TMA=True)
    mla_prefill(q, k, v, cu, max(lens), d_qk**-0.5, causal=causal, out=out, config=cfg)
    ref = mla_prefill_ref(q[:total].float(), k[:total].float(), v[:total].float(), cu, d_qk**-0.5, causal=causal)
    o = out.float().cpu()
    assert torch.all(o[total:] == 7.0)
    assert not torch.isnan(o[:total]).any()
    assert ((o[:total] - ref.cpu()).norm() / ref.norm().cpu()).item() <= 1e-2


def test_prefill_strided_heads_view(device):
    """q/k as slices of a wider tensor (token/head strides not packed) are read correctly."""
    gen = torch.Generator().manual_seed(5)
    lens = [70, 1, 33]
    q, k, v, cu = make_qkv(device, lens, 2, 48, 32, gen)
    wide = torch.randn(q.shape[0], 2, 64, generator=gen).to(torch.bfloat16).to(device)
    wide[..., :48] = q
    check_prefill(wide[..., :48], k, v, cu, lens, True, 0.3)


def test_prefill_bad_inputs(device):
    gen = torch.Generator().manual_seed(6)
    q, k, v, cu = make_qkv(device, [5, 7], 2, 48, 32, gen)
    with pytest.raises(TypeError, match="q"):
        mla_prefill(q.float(), k, v, cu, 7, 0.1)
    for bad, exc in ((float("nan"), ValueError), (float("inf"), ValueError), ("0.2", TypeError), (True, TypeError)):
        with pytest.raises(exc, match="softmax_scale"):
            mla_prefill(q, k, v, cu, 7, bad)
    with pytest.raises(TypeError, match="k"):
        mla_prefill(q, k.half(), v, cu, 7, 0.1)
    with pytest.raises(ValueError, match="k must"):
        mla_prefill(q, k[:, :1].contiguous(), v, cu, 7, 0.1)
    with pytest.raises(ValueError, match="v must"):
        mla_prefill(q, k, v[:5], cu, 7, 0.1)
    with pytest.raises(TypeError, match="cu_seqlens"):
        mla_prefill(q, k, v, cu.long(), 7, 0.1)
    with pytest.raises(ValueError, match="contiguous last dim"):
        mla_prefill(q.transpose(1, 2).contiguous().transpose(1, 2), k, v, cu, 7, 0.1)
    with pytest.raises(ValueError, match="max_seqlen"):
        mla_prefill(q, k, v, cu, -1, 0.1)
    with pytest.raises(ValueError, match="out"):
        mla_prefill(q, k, v, cu, 7, 0.1, out=torch.empty(12, 2, 48, dtype=q.dtype, device=device))
    with pytest.raises(ValueError, match="config BLOCK_M"):
        mla_prefill(q, k, v, cu, 7, 0.1, config={"BLOCK_M": 24})
    with pytest.raises(ValueError, match="unknown keys"):
        mla_prefill(q, k, v, cu, 7, 0.1, config={"BLOCK": 16})
    with pytest.raises(TypeError, match="config"):
        mla_prefill(q, k, v, cu, 7, 0.1, config="fast")
    with pytest.raises(TypeError, match="max_seqlen"):  # a bool is no int (one rule, session 20)
        mla_prefill(q, k, v, cu, True, 0.1)


def test_prefill_cu_seqlens_checked(device="cpu"):
    """Offsets past the tokens, decreasing offsets and a max_seqlen below the longest sequence raise (check_ids;
    always on the CPU, where checking costs no sync) instead of reading/writing out of bounds; strided offsets
    (read at unit stride) too."""
    gen = torch.Generator().manual_seed(7)
    q, k, v, _ = make_qkv(device, [9], 2, 48, 32, gen)
    for bad, msg in (([0, 4, 20], r"cu_seqlens\[2\] = 20 is past the 9 tokens"),
                     ([0, 6, 4], r"cu_seqlens\[2\] = 4 < cu_seqlens\[1\] = 6"), ([1, 9], r"cu_seqlens\[0\] = 1")):
        with pytest.raises(ValueError, match=msg):
            mla_prefill(q, k, v, torch.tensor(bad, dtype=torch.int32, device=device), 16, 0.1)
    with pytest.raises(ValueError, match="max_seqlen 5"):
        mla_prefill(q, k, v, torch.tensor([0, 9], dtype=torch.int32, device=device), 5, 0.1)
    with pytest.raises(ValueError, match="cu_seqlens must be contiguous"):
        mla_prefill(q, k, v, torch.tensor([0, 5, 4, 7, 9], dtype=torch.int32, device=device)[::2], 16, 0.1)
    with pytest.raises(TypeError, match="check_ids"):
        mla_prefill(q, k, v, torch.tensor([0, 9], dtype=torch.int32, device=device), 16, 0.1, check_ids="no")


@pytest.mark.gpu
def test_prefill_cu_seqlens_checked_gpu(device):
    test_prefill_cu_seqlens_checked(device)


def test_prefill_partial_config_merges_defaults(device):
    gen = torch.Generator().manual_seed(8)
    lens = [20, 3]
    q, k, v, cu = make_qkv(device, lens, 2, 48, 32, gen)
    o = mla_prefill(q, k, v, cu, max(lens), 0.2, config={"BLOCK_M": 16, "BLOCK_N": 16})
    ref = mla_prefill_ref(q.float(), k.float(), v.float(), cu, 0.2, causal=True)
    assert ((o.float().cpu() - ref.cpu()).norm() / ref.norm().cpu()).item() <= 1e-2


def make_split(device, lens, heads, nope, rope, d_v, gen, shared_k_pe=True):
    """The model's prefill operands: q_nope/k_nope/v as strided views of the projections' outputs,
    q_pe [T, h, rope], k_pe [T, rope] (shared by the heads) or [T, h, rope]; plus the concatenated
    q, k the reference takes."""
    total = sum(lens)
    rnd = lambda *shape: torch.randn(*shape, generator=gen).to(torch.bfloat16).to(device)  # noqa: E731
    q_full, kvb = rnd(total, heads, nope + rope), rnd(total, heads, nope + d_v)
    q_nope, k_nope, v = q_full[..., :nope], kvb[..., :nope], kvb[..., nope:]
    q_pe = rnd(total, heads, rope)
    k_pe = rnd(total, rope) if shared_k_pe else rnd(total, heads, rope)
    k_pe_h = k_pe.unsqueeze(1).expand(total, heads, rope) if shared_k_pe else k_pe
    q, k = torch.cat([q_nope, q_pe], -1), torch.cat([k_nope, k_pe_h], -1)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    return q_nope, k_nope, v, q_pe, k_pe, q, k, cu


def check_split(device, lens, heads, nope, rope, d_v, causal, seed, shared_k_pe=True):
    gen = torch.Generator().manual_seed(seed)
    q_nope, k_nope, v, q_pe, k_pe, q, k, cu = make_split(device, lens, heads, nope, rope, d_v, gen, shared_k_pe)
    scale = (nope + rope) ** -0.5
    out = torch.full((q.shape[0], heads, d_v), float("nan"), dtype=q.dtype, device=device)
    mla_prefill(q_nope, k_nope, v, cu, max(lens), scale, causal=causal, out=out, q_pe=q_pe, k_pe=k_pe)
    ref = mla_prefill_ref(q.float(), k.float(), v.float(), cu, scale, causal=causal).cpu()
    o = out.float().cpu()
    assert not torch.isnan(o).any(), "some output row was never written"
    assert ((o - ref).norm() / ref.norm()).item() <= 1e-2
    assert torch.all((o - ref).abs() <= 2e-2 + 2e-2 * ref.abs())


@_fixture_ok
@given(
    lens=st.lists(st.one_of(st.sampled_from([1, 16, 17, 64]), st.integers(1, 90)), min_size=1, max_size=3),
    heads=st.sampled_from([1, 3]),
    dims=st.sampled_from([(32, 16, 32), (64, 32, 64), (32, 16, 24)]),
    causal=st.booleans(),
    shared_k_pe=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_prefill_separate_rope_parts(device, lens, heads, dims, causal, shared_k_pe, seed):
    """q_pe/k_pe given apart (k_pe one row per token shared by the heads, or per head), q/k/v strided
    views: equals the reference on the concatenated q, k."""
    nope, rope, d_v = dims
    check_split(device, lens, heads, nope, rope, d_v, causal, seed, shared_k_pe)


def test_prefill_separate_rope_parts_bad_inputs(device):
    gen = torch.Generator().manual_seed(8)
    q_nope, k_nope, v, q_pe, k_pe, _, _, cu = make_split(device, [5, 7], 2, 32, 16, 32, gen)
    with pytest.raises(ValueError, match="both q_pe and k_pe"):
        mla_prefill(q_nope, k_nope, v, cu, 7, 0.1, q_pe=q_pe)
    with pytest.raises(ValueError, match="k_pe must"):
        mla_prefill(q_nope, k_nope, v, cu, 7, 0.1, q_pe=q_pe, k_pe=k_pe[:5])
    with pytest.raises(ValueError, match="q_pe must"):
        mla_prefill(q_nope, k_nope, v, cu, 7, 0.1, q_pe=q_pe[:, :1], k_pe=k_pe)
    with pytest.raises(TypeError, match="q_pe"):
        mla_prefill(q_nope, k_nope, v, cu, 7, 0.1, q_pe=q_pe.half(), k_pe=k_pe)
    with pytest.raises(ValueError, match="power of two"):
        mla_prefill(q_nope[..., :24], k_nope[..., :24], v, cu, 7, 0.1, q_pe=q_pe, k_pe=k_pe)
    with pytest.raises(ValueError, match="contiguous last dim"):
        mla_prefill(q_nope, k_nope, v, cu, 7, 0.1, q_pe=q_pe, k_pe=torch.randn(16, 12, device=device).to(q_pe.dtype).t())


@_fixture_ok
@given(
    num_tokens=st.integers(0, 40),
    page=st.sampled_from([1, 4, 16, 64]),
    d=st.sampled_from([80, 64, 576]),
    latent_dtype=st.sampled_from([torch.bfloat16, torch.float32]),
    seed=st.integers(0, 2**31 - 1),
)
def test_write_latent_cache_matches_reference(device, num_tokens, page, d, latent_dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    num_blocks = max(1, -(-num_tokens // page)) + 2
    kv = torch.randn(num_blocks, page, 1, d, generator=gen).to(torch.bfloat16)
    latent = torch.randn(num_tokens, d, generator=gen).to(latent_dtype)
    slots = torch.randperm(num_blocks * page, generator=gen)[:num_tokens]
    if num_tokens:
        slots[torch.rand(num_tokens, generator=gen) < 0.2] = -1  # padding tokens are skipped
    ref = kv.clone()
    write_latent_cache_ref(ref, latent, slots)
    kv_d = kv.to(device)
    write_latent_cache(kv_d, latent.to(device), slots.to(device))
    assert torch.equal(kv_d.cpu(), ref)


def test_write_latent_cache_bad_inputs(device):
    kv = torch.zeros(4, 16, 1, 80, dtype=torch.bfloat16, device=device)
    lat = torch.randn(3, 80, device=device)
    slots = torch.tensor([0, 5, -1], device=device)
    with pytest.raises(TypeError, match="slot_mapping"):
        write_latent_cache(kv, lat, slots.int())
    with pytest.raises(ValueError, match="disagree"):
        write_latent_cache(kv, lat[:, :64].contiguous(), slots)
    with pytest.raises(ValueError, match="slot_mapping has"):
        write_latent_cache(kv, lat, slots[:2])
    with pytest.raises(ValueError, match="power of two"):
        write_latent_cache(kv[:, :12], lat, slots)
    with pytest.raises(ValueError, match=r"slot_mapping\[1\] = 64 is out of range"):
        write_latent_cache(kv, lat, torch.tensor([0, 64, -1], device=device))  # 4 blocks × 16 = 64 slots
    with pytest.raises(TypeError, match="check_ids"):
        write_latent_cache(kv, lat, slots, check_ids="no")
    with pytest.raises(ValueError, match="slot_mapping must be contiguous"):
        write_latent_cache(kv, lat, torch.stack([slots, slots], 1)[:, 0])
    with pytest.raises(TypeError, match="kv_cache"):
        write_latent_cache(kv.to(torch.int32), lat, slots)
    assert not kv.any()  # nothing was written by the rejected calls


# ----------------------------------------------------------------------------- real shapes (H200)
@pytest.mark.gpu
@pytest.mark.parametrize("lens", [[1], [4096], [1, 777, 64, 129, 2000], [1000] * 4])
@pytest.mark.parametrize("heads", [16, 128])
def test_prefill_real_shapes(device, lens, heads):
    gen = torch.Generator().manual_seed(len(lens) * 1000 + heads)
    check_prefill(*make_qkv(device, lens, heads, 192, 128, gen), lens, True, 192**-0.5)


@pytest.mark.gpu
@pytest.mark.parametrize("lens", [[4096], [1, 777, 64, 129, 2000]])
@pytest.mark.parametrize("heads", [16, 128])
def test_prefill_separate_rope_parts_real_shapes(device, lens, heads):
    """DeepSeek's 128 nope ‖ 64 rope, v 128, with the model's views (what MLA.forward passes)."""
    check_split(device, lens, heads, 128, 64, 128, True, len(lens) * 1000 + heads)


@pytest.mark.gpu
def test_write_latent_cache_real_shapes(device):
    gen = torch.Generator().manual_seed(9)
    kv = torch.randn(512, 64, 1, 576, generator=gen).to(torch.bfloat16)
    latent = torch.randn(5000, 576, generator=gen).to(torch.bfloat16)
    slots = torch.randperm(512 * 64, generator=gen)[:5000]
    ref = kv.clone()
    write_latent_cache_ref(ref, latent, slots)
    kv_d = kv.to(device)
    write_latent_cache(kv_d, latent.to(device), slots.to(device))
    assert torch.equal(kv_d.cpu(), ref)
