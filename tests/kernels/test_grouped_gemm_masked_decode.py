"""grouped_gemm_masked_decode (probe variants of the masked decode GEMM) against the fp32 reference.

CPU (interpreter) and, with the gpu marker, the H200 at the real T = 1 decode shapes: in-kernel TMA descriptors
(devdesc) and the direct launch of the default kernel equal the reference on the routed groups (calc_diff < 1e-3,
the tolerance of test_grouped_gemm_masked.py) and leave NaN-poisoned rows of empty groups untouched; num_k_blocks=0
writes zeros on routed rows; bad arguments are named.
"""

from __future__ import annotations

import pytest
import torch
import triton

from tritonseek.kernels.grouped_gemm_masked_decode import (launch_masked_devdesc, launch_masked_raw, launch_masked_tiled,
                                                           tile_weights)
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_masked_ref

_CFG = dict(BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=3, SWAP_AB=True)


@pytest.fixture(autouse=True)
def _allocator():
    # tl.make_tensor_descriptor's global scratch
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8,
                                                                 device="cuda" if torch.cuda.is_available() else "cpu"))


def _case(E, M_max, N, K, mm, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(E, M_max, K, generator=g).to(torch.float8_e4m3fn)
    a_s = torch.rand(E, M_max, -(-K // 128), generator=g) + 0.25
    b = (torch.randn(E, N, K, generator=g) * 0.5).to(torch.float8_e4m3fn)
    bs = torch.rand(E, -(-N // 128), -(-K // 128), generator=g) * 1e-2 + 1e-3
    mm = torch.tensor(mm, dtype=torch.int32)
    return tuple(t.to(device) for t in (a, a_s, b, bs, mm))


def _case_at(E, M_max, N, K, mm, device, seed=0):
    """_case, with the operands drawn on the GPU when device is cuda (real decode sizes: a CPU randn of 256 experts'
    weights would take minutes): random e4m3 bytes with the NaN patterns replaced."""
    if device.type != "cuda":
        return _case(E, M_max, N, K, mm, device, seed)
    gd = torch.Generator(device=device).manual_seed(seed)

    def fp8(*shape):
        x = torch.randint(0, 256, shape, dtype=torch.uint8, device=device, generator=gd)
        x[(x & 0x7F) == 0x7F] = 0x38  # NaN patterns → 1.0
        return x.view(torch.float8_e4m3fn)

    a_s = torch.rand(E, M_max, -(-K // 128), device=device, generator=gd) + 0.25
    bs = torch.rand(E, -(-N // 128), -(-K // 128), device=device, generator=gd) * 1e-2 + 1e-3
    mm = torch.as_tensor(mm, dtype=torch.int32).to(device)
    return fp8(E, M_max, K), a_s, fp8(E, N, K), bs, mm


def _tiled(a, a_s, b, bs, mm, out, mag, cfg):
    return launch_masked_tiled(a, a_s, tile_weights(b), bs, mm, out, mag, cfg)


# (K2 was a variant here; as the launcher's config K2 it is tested by the test_k2_* cases below)
_LAUNCHES = [launch_masked_devdesc, launch_masked_raw, _tiled]
_IDS = ["devdesc", "raw", "tiled"]


def _check(launch, a, a_s, b, bs, mm, mag, cfg):
    E, M_max, _ = a.shape
    out = torch.full((E, M_max, b.shape[1]), float("nan"), dtype=torch.bfloat16, device=a.device)
    launch(a, a_s, b, bs, mm, out, mag, cfg)
    ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm, out_dtype=torch.float32)
    valid = torch.arange(M_max, device=a.device)[None, :] < mm[:, None]
    assert torch.isfinite(out[valid].float()).all()
    assert torch.isnan(out[~valid].float()).all()  # rows past masked_m (and empty groups) untouched
    assert calc_diff(out[valid].float(), ref[valid]) < 1e-3


@pytest.mark.parametrize("launch", _LAUNCHES, ids=_IDS)
@pytest.mark.parametrize("mag", [3, 1])  # 1: a slot bound below the 3 routed groups (the second-pass loop)
def test_matches_reference(device, launch, mag):
    a, a_s, b, bs, mm = _case(5, 16, 256, 512, [1, 0, 3, 0, 16], device)  # 4 K blocks
    _check(launch, a, a_s, b, bs, mm, mag, _CFG)


def test_raw_no_k_loop_writes_zeros(device):
    a, a_s, b, bs, mm = _case(3, 16, 128, 256, [2, 0, 1], device)
    out = torch.full((3, 16, 128), float("nan"), dtype=torch.bfloat16, device=device)
    launch_masked_raw(a, a_s, b, bs, mm, out, 2, _CFG, num_k_blocks=0)
    assert (out[0, :2] == 0).all() and (out[2, :1] == 0).all()
    assert torch.isnan(out[1].float()).all() and torch.isnan(out[0, 2:].float()).all()


def test_tile_weights_layout(device):
    b = torch.arange(2 * 256 * 384, dtype=torch.int32).reshape(2, 256, 384).to(device)
    t = tile_weights(b)
    assert tuple(t.shape) == (2, 2, 3, 128, 128) and t.is_contiguous()
    assert torch.equal(t[1, 1, 2], b[1, 128:256, 256:384])
    with pytest.raises(ValueError, match="multiples of 128"):
        tile_weights(b[:, :200])


def test_arguments_named(device):
    a, a_s, b, bs, mm = _case(2, 16, 128, 256, [1, 1], device)
    out = torch.empty(2, 16, 128, dtype=torch.bfloat16, device=device)
    with pytest.raises(ValueError, match="max_active_groups"):
        launch_masked_devdesc(a, a_s, b, bs, mm, out, 0, _CFG)
    with pytest.raises(ValueError, match="num_k_blocks"):
        launch_masked_raw(a, a_s, b, bs, mm, out, 2, _CFG, num_k_blocks=3)
    with pytest.raises(ValueError, match="b_tiled"):
        launch_masked_tiled(a, a_s, b, bs, mm, out, 2, _CFG)


@pytest.mark.gpu
@pytest.mark.parametrize("nk", [(7168, 2048), (4096, 7168)])
@pytest.mark.parametrize("launch", _LAUNCHES, ids=_IDS)
def test_decode_shapes(device, nk, launch):
    """T = 1 of DeepSeek-V3 decode: 256 experts, 8 routed (masked_m 1), slot bound 8."""
    N, K = nk
    if device.type != "cuda":
        N, K = 256, 256  # the interpreter: same code path, small
    m = [0] * 256
    for e in (3, 17, 64, 100, 128, 200, 201, 255):
        m[e] = 1
    a, a_s, b, bs, mm = _case_at(256, 1, N, K, m, device)
    _check(launch, a, a_s, b, bs, mm, 8, _CFG)


# ------------------------------------------------------------------------- config K2 of the public launcher
def _k2_case(device, K=512):
    a, a_s, b, bs, mm = _case(5, 16, 256, K, [1, 0, 3, 0, 16], device)
    return a, a_s, b, bs, mm


def test_k2_config_matches_reference(device):
    from tritonseek.kernels.grouped_gemm_masked import grouped_fp8_gemm_masked

    a, a_s, b, bs, mm = _k2_case(device)
    for mag in (None, 1):  # every group slot / a bound below the routed groups (second pass, unpipelined)
        _check(lambda a, a_s, b, bs, mm, out, _m, cfg: grouped_fp8_gemm_masked(
            a, a_s, b, bs, mm, out=out, max_active_groups=mag, config=cfg), a, a_s, b, bs, mm, mag, dict(_CFG, K2=True))


def test_k2_config_errors(device):
    from tritonseek.kernels.grouped_gemm_masked import grouped_fp8_gemm_masked, grouped_fp8_gemm_masked_silu_quant

    a, a_s, b, bs, mm = _k2_case(device)
    with pytest.raises(ValueError, match="K2"):  # not a bool
        grouped_fp8_gemm_masked(a, a_s, b, bs, mm, config=dict(_CFG, K2=1))
    with pytest.raises(ValueError, match="K2"):  # unswapped tiles
        grouped_fp8_gemm_masked(a, a_s, b, bs, mm, config=dict(_CFG, SWAP_AB=False, K2=True))
    with pytest.raises(ValueError, match="K2"):  # 256-row weight tiles
        grouped_fp8_gemm_masked(a, a_s, b, bs, mm, config=dict(_CFG, BLOCK_N=256, K2=True))
    a3, a_s3, b3, bs3, _ = _k2_case(device, K=384)  # 3 K blocks: odd
    with pytest.raises(ValueError, match="K2"):
        grouped_fp8_gemm_masked(a3, a_s3, b3, bs3, mm, config=dict(_CFG, K2=True))
    with pytest.raises(ValueError, match="K2"):  # the fused SiLU·quant kernel: unswapped tiles
        grouped_fp8_gemm_masked_silu_quant(a, a_s, b, bs, mm, config=dict(_CFG, SWAP_AB=False, K2=True))
    with pytest.raises(ValueError, match="K2"):
        grouped_fp8_gemm_masked_silu_quant(a3, a_s3, b3, bs3, mm, config=dict(_CFG, K2=True))


def test_decode_k2_rule():
    from tritonseek.kernels.grouped_gemm import _MASKED_DECODE
    from tritonseek.kernels.grouped_gemm_masked_config import _decode_k2_config, _decode_wave_config

    d = dict(_MASKED_DECODE)
    assert _decode_k2_config(d, 56) == dict(d, num_stages=3, K2=True)  # K = 7168
    for kb in (16, 54, 57):  # K = 2048 (measured to lose), below the measured K, odd
        assert _decode_k2_config(d, kb) == d
    wave = _decode_wave_config(d, 448, 132)  # 4 programs per SM: not the 6-stage default, left alone
    assert _decode_k2_config(wave, 56) == wave
    assert _decode_k2_config(dict(d, num_stages=5), 56) == dict(d, num_stages=5)
    assert _MASKED_DECODE.get("K2") is None and _MASKED_DECODE["num_stages"] == 6  # not mutated


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 8, 64])
def test_k2_default_bit_identical_at_decode_shapes(device, T):
    """(4096, 7168), 256 experts, top-8 routing: the launcher's default (K2 from 56 K blocks) gives the same bits as
    the one-block-per-stage config (same accumulation order) and matches the fp32 reference; NaN rows stay NaN."""
    from tritonseek.kernels import grouped_gemm as GG
    from tritonseek.kernels.grouped_gemm_masked import grouped_fp8_gemm_masked

    from tritonseek.kernels.grouped_gemm_masked_config import _decode_k2_config

    cuda = device.type == "cuda"
    N, K = (4096, 7168) if cuda else (256, 1024)  # the interpreter: small, K2 given explicitly (no default rule)
    k2 = None if cuda else dict(GG._MASKED_DECODE, num_stages=3, K2=True)
    assert _decode_k2_config(GG.get_config("masked", 1, 4096, 7168), 56)["K2"]  # the default at this shape
    g = torch.Generator().manual_seed(T)
    picks = torch.stack([torch.randperm(256, generator=g)[:8] for _ in range(T)])
    mm = torch.bincount(picks.flatten(), minlength=256).to(torch.int32)
    if not cuda:
        T, mm = min(T, 8), mm[:32].clamp(max=min(T, 8))
    E = mm.numel()
    a, a_s, b, bs, mm = _case_at(E, T, N, K, mm.tolist(), device, seed=T)
    outs = []
    for cfg in (k2, dict(GG._MASKED_DECODE)):
        out = torch.full((E, T, N), float("nan"), dtype=torch.bfloat16, device=device)
        grouped_fp8_gemm_masked(a, a_s, b, bs, mm, out=out, expected_m=1, max_active_groups=min(E, 8 * T),
                                config=cfg)
        outs.append(out)
    valid = torch.arange(T, device=device)[None, :] < mm[:, None]
    assert torch.equal(outs[0][valid], outs[1][valid]) and torch.isnan(outs[0][~valid].float()).all()
    ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm, out_dtype=torch.float32)
    assert calc_diff(outs[0][valid].float(), ref[valid]) < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 8])
def test_silu_k2_bit_identical(device, T):
    """The fused GEMM1 + SiLU·mul + quant with config K2 (off by default) gives the same bits (h_q, h_s) as without:
    V3's w13 (2I = 4096, K = 7168) over 256 experts on the H200, small on the interpreter."""
    from tritonseek.kernels.grouped_gemm import _MASKED_DECODE
    from tritonseek.kernels.grouped_gemm_masked import grouped_fp8_gemm_masked_silu_quant

    cuda = device.type == "cuda"
    E, N2, K = (256, 4096, 7168) if cuda else (16, 256, 512)
    g = torch.Generator().manual_seed(T)
    picks = torch.stack([torch.randperm(E, generator=g)[:8] for _ in range(T)])
    mm = torch.bincount(picks.flatten(), minlength=E).to(torch.int32)
    a, a_s, b, bs, mm = _case_at(E, T, N2, K, mm.tolist(), device, seed=T)
    res = [grouped_fp8_gemm_masked_silu_quant(a, a_s, b, bs, mm, max_active_groups=min(E, 8 * T),
                                              config=dict(_MASKED_DECODE, num_stages=st, **kw))
           for st, kw in ((6, {}), (3, dict(K2=True)))]
    valid = torch.arange(T, device=device)[None, :] < mm[:, None]
    (q0, s0), (q1, s1) = res
    assert torch.equal(q1[valid].view(torch.uint8), q0[valid].view(torch.uint8))
    assert torch.equal(s1[valid], s0[valid]) and torch.isfinite(s0[valid]).all()
