"""``scale_ue8m0`` of the fused activation quants (DeepSeek-V3.1's ``quantization_config.scale_fmt: "ue8m0"``):
the RMSNorm + quant kernels (norm.py), the MLA decode prologue (rope_cache.mla_prologue_fp8), the MLA W_UV + quant
kernel (mla_absorb_o_fp8), the masked MoE permute with quant (moe_permute_masked(quantize=True)) and the masked
grouped GEMM's SiLU·mul + quant epilogue.

With the keyword on, each must give the bytes and scales of its unfused form with power-of-two scales: the same
values quantized by ``per_token_group_quant_fp8_ref(..., scale_ue8m0=True)`` (the plain-PyTorch spec; for the GEMM
epilogue, whose h is formed in the kernel's own fp32 arithmetic, by ``silu_mul_quant_fp8(..., scale_ue8m0=True)``,
itself checked against the spec in test_fp8_quant.py). Bit equality, no tolerance: same inputs, same rounding rule.
Each scale must also be an exact power of two, ≥ the plain (keyword off) scale of the same group and < twice it,
so the switch provably changed the rounding (the plain scales of random data are almost never powers of two).
CPU: the interpreter at small shapes; GPU (``-m gpu``): DeepSeek-V3 widths.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tritonseek.kernels import norm
from tritonseek.kernels.fp8_quant import silu_mul_quant_fp8
from tritonseek.kernels.grouped_gemm_masked import grouped_fp8_gemm_masked, grouped_fp8_gemm_masked_silu_quant
from tritonseek.kernels.mla_absorb import mla_absorb_o, mla_absorb_o_fp8
from tritonseek.kernels.moe_routing import moe_permute_masked
from tritonseek.kernels.reference.fp8 import per_token_group_quant_fp8_ref
from tritonseek.kernels.reference.rope import cos_sin_cache_ref
from tritonseek.kernels.rope_cache import mla_prologue_fp8

BAD_FLAGS = (1, 0, "yes", None, np.int64(1), torch.tensor(True))


def _bytes(q: torch.Tensor) -> torch.Tensor:
    return q.view(torch.uint8).cpu()


def _assert_pow2_over_plain(s_ue: torch.Tensor, s_plain: torch.Tensor) -> None:
    """Each UE8M0 scale is 2^k exactly, s_plain ≤ s < 2·s_plain; at least one group actually moved."""
    s_ue, s_plain = s_ue.float().cpu(), s_plain.float().cpu()
    mant, _ = torch.frexp(s_ue)
    assert (mant == 0.5).all(), "UE8M0 scales must be exact powers of two"
    assert (s_ue >= s_plain).all() and (s_ue < 2 * s_plain).all()
    assert (s_ue != s_plain).any(), "the keyword changed no scale"


def _assert_equal(q, s, q_ref, s_ref) -> None:
    assert torch.equal(_bytes(q), _bytes(q_ref))
    assert torch.equal(s.cpu(), s_ref.cpu())


# ----------------------------------------------------------------------------------------------- RMSNorm + quant
def _norm_case(device, t, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(t, n, generator=g) * 3).to(torch.bfloat16).to(device)
    r = torch.randn(t, n, generator=g).to(torch.bfloat16).to(device)
    w = (1 + 0.1 * torch.randn(n, generator=g)).to(torch.bfloat16).to(device)
    return x, r, w


def _check_norm(device, t, n, seed):
    x, r, w = _norm_case(device, t, n, seed)
    q, s = norm.rms_norm_quant_fp8(x, w, 1e-6, scale_ue8m0=True)
    # the reference quantizes the kernel's own rounded y (the fused kernel quantizes exactly that y)
    q_ref, s_ref = per_token_group_quant_fp8_ref(norm.rms_norm(x, w, 1e-6).cpu(), 128, scale_ue8m0=True)
    _assert_equal(q, s, q_ref, s_ref)
    _assert_pow2_over_plain(s, norm.rms_norm_quant_fp8(x, w, 1e-6)[1])
    q, s, h = norm.fused_add_rms_norm_quant_fp8(x, r, w, 1e-6, scale_ue8m0=np.True_)
    y, h_ref = norm.fused_add_rms_norm(x, r, w, 1e-6)
    q_ref, s_ref = per_token_group_quant_fp8_ref(y.cpu(), 128, scale_ue8m0=True)
    _assert_equal(q, s, q_ref, s_ref)
    assert torch.equal(h, h_ref)
    _assert_pow2_over_plain(s, norm.fused_add_rms_norm_quant_fp8(x, r, w, 1e-6)[1])


@pytest.mark.parametrize("t,n,seed", [(3, 200, 0), (5, 256, 1)])
def test_norm_quant_ue8m0_matches_reference(device, t, n, seed):
    _check_norm(device, t, n, seed)


def test_norm_quant_ue8m0_type_errors(device):
    x, r, w = _norm_case(device, 2, 128, 3)
    for bad in BAD_FLAGS:
        with pytest.raises(TypeError, match="^scale_ue8m0 must be a bool"):
            norm.rms_norm_quant_fp8(x, w, 1e-6, scale_ue8m0=bad)
        with pytest.raises(TypeError, match="^scale_ue8m0 must be a bool"):
            norm.fused_add_rms_norm_quant_fp8(x, r, w, 1e-6, scale_ue8m0=bad)


# ----------------------------------------------------------------------------------------------- MLA W_UV + quant
def _absorb_case(device, T, H, v_dim, kv_lora, seed):
    g = torch.Generator().manual_seed(seed)
    o_lat = (torch.randn(T, H, kv_lora, generator=g) * 3).to(torch.bfloat16).to(device)
    w_uv = (torch.randn(H, v_dim, kv_lora, generator=g) * 0.1).to(torch.bfloat16).to(device)
    return o_lat, w_uv


def _check_absorb(device, T, H, v_dim, kv_lora, seed):
    o_lat, w_uv = _absorb_case(device, T, H, v_dim, kv_lora, seed)
    q, s = mla_absorb_o_fp8(o_lat, w_uv, scale_ue8m0=True)
    # mla_absorb_o at the fused kernel's tile (BLOCK_D 128) computes the same rounded o (see test_mla_absorb.py)
    o = mla_absorb_o(o_lat, w_uv, config=dict(BLOCK_D=128))
    q_ref, s_ref = per_token_group_quant_fp8_ref(o.reshape(T, H * v_dim).cpu(), 128, scale_ue8m0=True)
    _assert_equal(q, s, q_ref, s_ref)
    _assert_pow2_over_plain(s, mla_absorb_o_fp8(o_lat, w_uv)[1])


@pytest.mark.parametrize("T,H,seed", [(3, 2, 0), (9, 1, 1)])
def test_mla_absorb_o_fp8_ue8m0_matches_reference(device, T, H, seed):
    _check_absorb(device, T, H, 128, 64, seed)


def test_mla_absorb_o_fp8_ue8m0_type_errors(device):
    o_lat, w_uv = _absorb_case(device, 2, 1, 128, 16, 2)
    for bad in BAD_FLAGS:
        with pytest.raises(TypeError, match="^scale_ue8m0 must be a bool"):
            mla_absorb_o_fp8(o_lat, w_uv, scale_ue8m0=bad)


# ----------------------------------------------------------------------------------------------- MoE permute + quant
def _permute_case(device, T, k, E, H, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]).to(torch.int32).to(device)
    x = (torch.randn(T, H, generator=g) * 3).to(torch.bfloat16).to(device)
    return x, ids


def _check_permute(device, T, k, E, H, seed):
    x, ids = _permute_case(device, T, k, E, H, seed)
    p, s, mm, rm = moe_permute_masked(x, ids, E, T, quantize=True, scale_ue8m0=True)
    xq, xs = per_token_group_quant_fp8_ref(x.cpu(), 128, scale_ue8m0=True)
    p_ref, s_ref, mm_ref, rm_ref = moe_permute_masked(xq.to(device), ids, E, T, xs.to(device))  # a pure copy
    assert torch.equal(mm, mm_ref) and torch.equal(rm, rm_ref)
    v = torch.arange(T, device=device)[None, :] < mm[:, None]
    _assert_equal(p[v], s[v], p_ref[v], s_ref[v])
    _assert_pow2_over_plain(s[v], moe_permute_masked(x, ids, E, T, quantize=True)[1][v])


@pytest.mark.parametrize("T,H,seed", [(3, 256, 0), (20, 200, 1)])  # T·k = 24 one launch; 160 > 128: quant, then copy
def test_permute_masked_quantize_ue8m0_matches_reference(device, T, H, seed):
    _check_permute(device, T, 8, 12, H, seed)


def test_permute_masked_ue8m0_errors(device):
    x, ids = _permute_case(device, 2, 2, 4, 128, 3)
    for bad in BAD_FLAGS:
        with pytest.raises(TypeError, match="^scale_ue8m0 must be a bool"):
            moe_permute_masked(x, ids, 4, 2, quantize=True, scale_ue8m0=bad)
    with pytest.raises(ValueError, match="^scale_ue8m0=True needs quantize=True"):
        moe_permute_masked(x, ids, 4, 2, scale_ue8m0=True)


# ----------------------------------------------------------------------------------------------- masked GEMM + SiLU·mul + quant
def _gemm_case(device, E, M_max, I, K, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(E, M_max, K, generator=g).to(torch.float8_e4m3fn)
    a_s = torch.rand(E, M_max, K // 128, generator=g) * 0.01 + 0.002
    b = (torch.randn(E, 2 * I, K, generator=g) * 0.5).to(torch.float8_e4m3fn)
    bs = torch.rand(E, 2 * I // 128, K // 128, generator=g) * 0.01 + 0.002
    mm = torch.randint(1, M_max + 1, (E,), generator=g).to(torch.int32)
    mm[0] = M_max
    return tuple(t.to(device) for t in (a, a_s, b, bs, mm))


def _check_gemm(device, E, M_max, I, K, seed, **kw):
    a, a_s, b, bs, mm = _gemm_case(device, E, M_max, I, K, seed)
    q, s = grouped_fp8_gemm_masked_silu_quant(a, a_s, b, bs, mm, scale_ue8m0=True, **kw)
    y = grouped_fp8_gemm_masked(a, a_s, b, bs, mm, out_dtype=torch.bfloat16)
    y[torch.arange(M_max, device=device)[None, :] >= mm[:, None]] = 0  # unwritten rows: any finite value
    q_ref, s_ref = silu_mul_quant_fp8(y.view(E * M_max, -1), 128, scale_ue8m0=True)
    q_ref, s_ref = q_ref.view(E, M_max, -1), s_ref.view(E, M_max, -1)
    v = torch.arange(M_max, device=device)[None, :] < mm[:, None]
    _assert_equal(q[v], s[v], q_ref[v], s_ref[v])
    _assert_pow2_over_plain(s[v], grouped_fp8_gemm_masked_silu_quant(a, a_s, b, bs, mm, **kw)[1][v])


def test_masked_silu_quant_ue8m0_matches_unfused(device):
    _check_gemm(device, 2, 5, 128, 128, 0)


def test_masked_silu_quant_ue8m0_type_errors(device):
    a, a_s, b, bs, mm = _gemm_case(device, 1, 2, 128, 128, 1)
    for bad in BAD_FLAGS:
        with pytest.raises(TypeError, match="^scale_ue8m0 must be a bool"):
            grouped_fp8_gemm_masked_silu_quant(a, a_s, b, bs, mm, scale_ue8m0=bad)


# --------------------------------------------------------------------------------------- MLA decode prologue
def _check_prologue(device, T, q_lora, kv_lora, rope, seed):
    """q/s of the one-launch prologue with the keyword on = rms_norm_quant_fp8(q_a, ..., scale_ue8m0=True) byte for
    byte (the same row code); the latent and the cache rows are those of the keyword off."""
    g = torch.Generator().manual_seed(seed)
    q_a = (torch.randn(T, q_lora, generator=g) * 4).to(torch.bfloat16).to(device)
    qw = (torch.rand(q_lora, generator=g) + 0.5).to(torch.bfloat16).to(device)
    kv = (torch.randn(T, kv_lora + rope, generator=g) * 3).to(torch.bfloat16).to(device)
    pos = torch.randint(0, 64, (T,), generator=g).to(device)
    half = torch.arange(0, rope, 2, dtype=torch.float32) / rope
    cs = cos_sin_cache_ref(1.0 / (10000.0 ** half), 64).to(device)
    w = torch.randn(kv_lora, generator=g).to(device)
    caches = [torch.full((T + 1, 1, 1, kv_lora + rope), float("nan"), dtype=torch.bfloat16, device=device)
              for _ in range(2)]
    slots = torch.arange(T, device=device)
    q, s, lat = mla_prologue_fp8(q_a, kv, qw, 1e-6, pos, cs, w, 1e-6, caches[0], slots, scale_ue8m0=True)
    q0, s0, lat0 = mla_prologue_fp8(q_a, kv, qw, 1e-6, pos, cs, w, 1e-6, caches[1], slots)
    _assert_equal(q, s, *norm.rms_norm_quant_fp8(q_a, qw, 1e-6, scale_ue8m0=True))
    _assert_pow2_over_plain(s, s0)
    assert torch.equal(lat, lat0) and torch.equal(caches[0].nan_to_num(7.0), caches[1].nan_to_num(7.0))


def test_mla_prologue_fp8_ue8m0_matches_rms_norm_quant(device):
    _check_prologue(device, 3, 256, 32, 8, 0)


def test_mla_prologue_fp8_ue8m0_type_errors(device):
    g = torch.Generator().manual_seed(1)
    q_a = torch.randn(2, 128, generator=g).to(torch.bfloat16).to(device)
    kv = torch.randn(2, 24, generator=g).to(torch.bfloat16).to(device)
    cs = cos_sin_cache_ref(torch.ones(4), 8).to(device)
    pos = torch.zeros(2, dtype=torch.int64, device=device)
    for bad in BAD_FLAGS:
        with pytest.raises(TypeError, match="^scale_ue8m0 must be a bool"):
            mla_prologue_fp8(q_a, kv, torch.ones(128, device=device), 1e-6, pos, cs, torch.ones(16, device=device),
                             1e-6, None, None, scale_ue8m0=bad)


# ----------------------------------------------------------------------------------------------- H200, V3 widths
@pytest.mark.gpu
@pytest.mark.parametrize("t", [1, 64, 4096])
def test_norm_quant_ue8m0_gpu(device, t):
    _check_norm(device, t, 7168, t)
    _check_norm(device, t, 1536, t + 1)  # q_lora_rank (q_a_layernorm)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 16, 128])
def test_mla_absorb_o_fp8_ue8m0_gpu(device, T):
    _check_absorb(device, T, 128, 128, 512, T)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 4, 16, 64])  # T·k ≤ 128: the one-launch decode path; 64·8: quant, then copy
def test_permute_masked_quantize_ue8m0_gpu(device, T):
    _check_permute(device, T, 8, 256, 7168, T)


@pytest.mark.gpu
@pytest.mark.parametrize("M_max", [1, 4, 64])
def test_masked_silu_quant_ue8m0_gpu(device, M_max):
    _check_gemm(device, 16, M_max, 2048, 7168, M_max, max_active_groups=16)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 64])
def test_mla_prologue_fp8_ue8m0_gpu(device, T):
    _check_prologue(device, T, 1536, 512, 64, T)  # DeepSeek-V3 q_lora_rank, kv_lora_rank, qk_rope_head_dim
