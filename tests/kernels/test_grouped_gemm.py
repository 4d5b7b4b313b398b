"""Grouped block-scaled FP8 GEMMs (contiguous and masked) against the dequantized fp32 reference.

Tolerance: DeepGEMM's calc_diff = 1 − 2Σxy/Σ(x²+y²) < 1e-3 against the fp32 product of the
dequantized operands (the kernel accumulates in fp32 and rounds once to bf16, which alone gives
calc_diff ≈ 1e-5; the 1e-3 bound is DeepGEMM's own acceptance test). Padding rows are checked exactly.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tritonseek.kernels.grouped_gemm import _MASKED_DECODE, M_ALIGNMENT, grouped_fp8_gemm_contiguous
from tritonseek.kernels.fp8_quant import silu_mul_quant_fp8
from tritonseek.kernels.grouped_gemm_masked import grouped_fp8_gemm_masked, grouped_fp8_gemm_masked_silu_quant
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_contiguous_ref, grouped_fp8_gemm_masked_ref

_fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                              HealthCheck.data_too_large])
FP8_NAN = 0x7F  # e4m3fn bit pattern of NaN

CONFIGS = [
    None,
    dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2, GROUP_M=2),
    dict(BLOCK_M=128, BLOCK_N=256, num_warps=8, num_stages=2, GROUP_M=4),
]


def _fp8(shape, g, scale=1.0):
    return (torch.randn(*shape, generator=g) * scale).to(torch.float8_e4m3fn)


def _weights(E, N, K, g):
    b = _fp8((E, N, K), g)
    bs = torch.rand(E, -(-N // 128), -(-K // 128), generator=g) + 0.25
    return b, bs


def _contiguous_layout(segs, g, K):
    """m_indices for segments of the given sizes, each padded to M_ALIGNMENT; a / a_scale with NaN/inf garbage
    in the padding rows."""
    parts = []
    for e, s in enumerate(segs):
        parts += [torch.full((s,), e), torch.full(((-s) % M_ALIGNMENT,), -1)]
    mi = torch.cat(parts).to(torch.int32) if parts else torch.zeros(0, dtype=torch.int32)
    M = mi.numel()
    a = _fp8((M, K), g)
    a.view(torch.uint8)[mi < 0] = FP8_NAN
    a_s = (torch.rand(-(-K // 128), M, generator=g) + 0.25).t()  # MN-major, as the quant kernel writes it
    a_s[mi < 0] = float("inf")
    return a, a_s, mi


@_fixture_ok
@given(segs=st.lists(st.sampled_from([0, 1, 127, 128, 129, 37]), min_size=1, max_size=3),
       N=st.sampled_from([64, 128, 200]), K=st.sampled_from([128, 256, 272]), cfg=st.sampled_from(range(len(CONFIGS))),
       seed=st.integers(0, 2**31 - 1))
def test_contiguous_matches_reference(device, segs, N, K, cfg, seed):
    g = torch.Generator().manual_seed(seed)
    E = len(segs) + 1  # the last expert never gets a row
    b, bs = _weights(E, N, K, g)
    a, a_s, mi = _contiguous_layout(segs, g, K)
    out = torch.full((mi.numel(), N), float("nan"), dtype=torch.bfloat16, device=device)
    grouped_fp8_gemm_contiguous(a.to(device), a_s.to(device), b.to(device), bs.to(device), mi.to(device), out=out,
                                config=CONFIGS[cfg])
    ref = grouped_fp8_gemm_contiguous_ref(a, a_s, b, bs, mi, out_dtype=torch.float32)
    out = out.cpu().float()
    assert torch.isfinite(out).all(), "NaN/inf from padding rows (or an unwritten element) leaked"
    pad = mi < 0
    assert (out[pad] == 0).all()
    if (~pad).any():
        assert calc_diff(out[~pad], ref[~pad]) < 1e-3


def test_contiguous_misaligned_rows_are_nan_or_rejected(device):
    g = torch.Generator().manual_seed(7)
    b, bs = _weights(3, 128, 128, g)
    a, a_s, mi = _contiguous_layout([130, 5], g, 128)
    a = _fp8(tuple(a.shape), g)  # no garbage here: rows change role below
    a_s = torch.rand(a_s.shape, generator=g) + 0.25
    mi[131] = 0  # one more expert-0 row inside expert 0's second tile: still aligned
    mi[256 + 3] = 0  # an expert-0 row inside expert 1's tile: misaligned
    args = [t.to(device) for t in (a, a_s, b, bs, mi)]
    out = grouped_fp8_gemm_contiguous(*args).cpu()
    assert out[259].isnan().all(), "a row of another expert must not be computed with the tile's expert"
    assert torch.isfinite(out[256:259]).all() and torch.isfinite(out[:131]).all()
    with pytest.raises(ValueError, match="aligned"):
        grouped_fp8_gemm_contiguous(*args, check_alignment=True)
    # the tile's expert is the largest id in it, not the majority (tester23 #6: the docstring said "minority"):
    # 100 rows of expert 0 and 8 of expert 1 in one tile → expert 0's rows are NaN, expert 1's computed
    mi = torch.cat([torch.zeros(100), torch.full((20,), -1), torch.ones(8), torch.full((128,), 2)]).to(torch.int32)
    a, a_s = _fp8((256, 128), g), torch.rand(1, 256, generator=g).t() + 0.25
    out = grouped_fp8_gemm_contiguous(*[t.to(device) for t in (a, a_s, b, bs, mi)]).cpu().float()
    ref = grouped_fp8_gemm_contiguous_ref(a, a_s, b, bs, mi, out_dtype=torch.float32)
    assert out[:100].isnan().all() and (out[100:120] == 0).all()
    assert calc_diff(out[120:], ref[120:]) < 1e-3


def _out_of_range_case(g, bad_id):
    """Segments [130, 5] of 3 experts with row 256 + 2 (expert 1's tile) set to bad_id."""
    b, bs = _weights(3, 128, 128, g)
    a, a_s, mi = _contiguous_layout([130, 5], g, 128)
    a = _fp8(tuple(a.shape), g)
    a_s = torch.rand(a_s.shape, generator=g) + 0.25
    mi[258] = bad_id
    return a, a_s, b, bs, mi


# tester (1ee7e10): m_indices + 5 with E = 3 ran on the CPU without an error (all-NaN output); the reference
# silently left such rows 0. Both now raise naming m_indices on the CPU; CUDA checks with check_alignment only.
@pytest.mark.parametrize("bad_id", [3, 8, -2])
def test_contiguous_out_of_range_ids_raise(device, bad_id):
    args = [t.to(device) for t in _out_of_range_case(torch.Generator().manual_seed(9), bad_id)]
    with pytest.raises(ValueError, match=r"m_indices\[258\]"):
        grouped_fp8_gemm_contiguous_ref(*args)
    with pytest.raises(ValueError, match=r"m_indices\[258\]"):
        grouped_fp8_gemm_contiguous(*args, check_alignment=True)
    if device.type == "cpu":
        with pytest.raises(ValueError, match=r"m_indices\[258\]"):
            grouped_fp8_gemm_contiguous(*args)


def test_contiguous_rejects_bad_inputs(device):
    g = torch.Generator().manual_seed(8)
    b, bs = _weights(2, 128, 256, g)
    a, a_s, mi = _contiguous_layout([3], g, 256)
    a, a_s, mi, b, bs = (t.to(device) for t in (a, a_s, mi, b, bs))
    with pytest.raises(TypeError, match="a must"):
        grouped_fp8_gemm_contiguous(a.float(), a_s, b, bs, mi)
    with pytest.raises(ValueError, match="b_scale"):
        grouped_fp8_gemm_contiguous(a, a_s, b, bs[:, :, :1], mi)
    with pytest.raises(ValueError, match="K"):
        grouped_fp8_gemm_contiguous(a[:, :128], a_s[:, :1], b, bs, mi)
    with pytest.raises(ValueError, match="m_indices"):
        grouped_fp8_gemm_contiguous(a, a_s, b, bs, mi[:5])
    with pytest.raises(TypeError, match="m_indices"):
        grouped_fp8_gemm_contiguous(a, a_s, b, bs, mi.long())
    with pytest.raises(ValueError, match="BLOCK_M"):
        grouped_fp8_gemm_contiguous(a, a_s, b, bs, mi, config=dict(BLOCK_M=256, BLOCK_N=128, num_warps=8, num_stages=2))
    # fresh-user pass (session 17): GRID_MULT 0 / -1 left out unwritten (rel. error 2.7e36), GROUP_M 0 gave NaN, and
    # unknown keys were ignored; each now raises naming the key, before any launch
    base = dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=2)
    for bad, key in (({"GRID_MULT": 0}, "GRID_MULT"), ({"GRID_MULT": -1}, "GRID_MULT"), ({"GROUP_M": 0}, "GROUP_M"),
                     ({"FAST_SHED": True}, "FAST_SHED"), ({"WS": 2}, "WS")):
        with pytest.raises(ValueError, match=key):
            grouped_fp8_gemm_contiguous(a, a_s, b, bs, mi, config={**base, **bad})
    with pytest.raises(TypeError, match="config must be a dict"):
        grouped_fp8_gemm_contiguous(a, a_s, b, bs, mi, config=[1])


# masked-only decode option: swapped tiles (b·aᵀ, 16-row activation boxes; 128 and 256 weight rows)
MASKED_CONFIGS = [c and {k: v for k, v in c.items() if k != "GROUP_M"} for c in CONFIGS] + [  # (no GROUP_M there)
    dict(BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=2, SWAP_AB=True),
    dict(BLOCK_M=16, BLOCK_N=256, num_warps=4, num_stages=2, SWAP_AB=True),
    dict(BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=3, SWAP_AB=True, MAXNREG=128),  # ignored by the interpreter
]


@_fixture_ok
@given(E=st.integers(1, 3), M_max=st.sampled_from([1, 64, 70]), N=st.sampled_from([64, 200]),
       K=st.sampled_from([128, 272]), cfg=st.sampled_from(range(len(MASKED_CONFIGS))), data=st.data(),
       bound=st.sampled_from([None, "exact", "over", "under"]), seed=st.integers(0, 2**31 - 1))
def test_masked_matches_reference(device, E, M_max, N, K, cfg, data, bound, seed):
    g = torch.Generator().manual_seed(seed)
    masked = data.draw(st.lists(st.sampled_from(sorted({0, 1, M_max, max(0, M_max - 1), M_max // 2})),
                                min_size=E, max_size=E))
    masked_m = torch.tensor(masked, dtype=torch.int32)
    b, bs = _weights(E, N, K, g)
    a = _fp8((E, M_max, K), g)
    a_s = torch.rand(E, M_max, -(-K // 128), generator=g) + 0.25
    invalid = torch.arange(M_max)[None, :] >= masked_m[:, None]
    a.view(torch.uint8)[invalid] = FP8_NAN  # garbage past masked_m must not leak
    a_s[invalid] = float("inf")
    sentinel = 12345.0
    # max_active_groups: the exact number of non-empty groups (compact slots, every one used), one more, or
    # too few (0 or 1 slot for up to 3 non-empty groups: the slots loop, every group must still be written)
    n_active = int((masked_m > 0).sum())
    mag = None if bound is None else (max(0, n_active - 2) if bound == "under" else n_active + (bound == "over"))
    ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, masked_m, out_dtype=torch.float32)
    args = [t.to(device) for t in (a, a_s, b, bs, masked_m)]
    out = torch.full((E, M_max, N), sentinel, dtype=torch.float32, device=device)
    grouped_fp8_gemm_masked(*args, out_dtype=torch.float32, out=out, config=MASKED_CONFIGS[cfg], max_active_groups=mag)
    out = out.cpu()
    assert (out[invalid] == sentinel).all(), "rows >= masked_m must not be written"
    valid = ~invalid
    assert torch.isfinite(out[valid]).all()
    if valid.any():
        assert calc_diff(out[valid], ref[valid]) < 1e-3


def _silu_quant_both(a, a_s, b, bs, masked_m, cfg, mag):
    """(fused h_q, h_s), (GEMM to bf16 → silu_mul_quant_fp8 h_q, h_s) on the same inputs."""
    E, M_max, _ = a.shape
    y = grouped_fp8_gemm_masked(a, a_s, b, bs, masked_m, out_dtype=torch.bfloat16, config=cfg, max_active_groups=mag)
    y[torch.arange(M_max, device=a.device)[None, :] >= masked_m[:, None]] = 0  # unwritten rows: any finite value
    q, s = silu_mul_quant_fp8(y.view(E * M_max, -1), 128)
    fused = grouped_fp8_gemm_masked_silu_quant(a, a_s, b, bs, masked_m, config=cfg, max_active_groups=mag)
    return fused, (q.view(E, M_max, -1), s.view(E, M_max, -1))


@_fixture_ok
@given(E=st.integers(1, 3), M_max=st.sampled_from([1, 5, 70]), I=st.sampled_from([128, 256]), K=st.sampled_from([128, 272]),
       cfg=st.sampled_from([None, 0, 1]), under=st.booleans(), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_masked_silu_quant_equals_unfused(device, E, M_max, I, K, cfg, under, data, seed):
    """GEMM1 with SiLU·mul + FP8 quant in the epilogue = masked GEMM to bf16, then silu_mul_quant_fp8, bit for bit
    on valid rows (same K loop and rounding); rows ≥ masked_m not written."""
    g = torch.Generator().manual_seed(seed)
    masked_m = torch.tensor(data.draw(st.lists(st.sampled_from(sorted({0, 1, M_max, M_max // 2})), min_size=E,
                                               max_size=E)), dtype=torch.int32)
    b, bs = _weights(E, 2 * I, K, g)
    a = _fp8((E, M_max, K), g)
    a_s = torch.rand(E, M_max, -(-K // 128), generator=g) + 0.25
    invalid = torch.arange(M_max)[None, :] >= masked_m[:, None]
    a.view(torch.uint8)[invalid] = FP8_NAN
    a_s[invalid] = float("inf")
    c = None if cfg is None else [dict(BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=2, SWAP_AB=True),
                                  dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=2)][cfg]
    args = [t.to(device) for t in (a, a_s, b, bs, masked_m)]
    n_active = int((masked_m > 0).sum())
    (q, s), (q_ref, s_ref) = _silu_quant_both(*args, c, 1 if under else n_active)  # 1 slot: loops over all groups
    v = ~invalid.to(device)
    assert torch.equal(q[v].view(torch.uint8), q_ref[v].view(torch.uint8)) and torch.equal(s[v], s_ref[v])
    assert s.stride()[1] == 1, "h_s must be MN-major inside each group"
    with pytest.raises(ValueError, match="2I"):
        b64 = args[2][:, :64].flatten().view(args[2].shape[0], 64, -1)  # odd I: 2I = 64
        grouped_fp8_gemm_masked_silu_quant(args[0], args[1], b64, args[3][:, :1], args[4])


@pytest.mark.parametrize("E,M_max,I,K,cfg", [
    (2, 5, 128, 256, None), (2, 20, 128, 256, 1),
    pytest.param(4, 64, 2048, 7168, None, marks=pytest.mark.gpu),  # DeepSeek-V3 expert gate‖up, decode default
])
def test_masked_silu_quant_non_finite_rows(device, E, M_max, I, K, cfg):
    """A valid row whose product is NaN (a_scale NaN) or ±inf/NaN (a_scale inf) quantizes exactly as
    silu_mul_quant_fp8 of the unfused GEMM (scale NaN / inf, q NaN or ±0), never to finite values; the other
    rows bit for bit as before (lead, s18: the fused epilogue dropped NaN in its amax)."""
    g = torch.Generator().manual_seed(18)
    b, bs = _weights(E, 2 * I, K, g)
    a = _fp8((E, M_max, K), g)
    a_s = torch.rand(E, M_max, -(-K // 128), generator=g) + 0.25
    a_s[0, 1, 0] = float("nan")
    a_s[E - 1, 2, -1] = float("inf")
    masked_m = torch.full((E,), M_max, dtype=torch.int32)
    c = None if cfg is None else dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=2)
    args = [t.to(device) for t in (a, a_s, b, bs, masked_m)]
    (q, s), (q_ref, s_ref) = _silu_quant_both(*args, c, E)
    assert torch.isnan(s[0, 1]).all() and torch.isnan(q[0, 1].float()).all()
    assert not torch.isfinite(s[E - 1, 2]).any()
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))
    assert torch.equal(s.isnan(), s_ref.isnan()) and torch.equal(s.nan_to_num(0.0), s_ref.nan_to_num(0.0))


def test_masked_rejects_bad_inputs(device):
    g = torch.Generator().manual_seed(9)
    b, bs = _weights(2, 128, 128, g)
    a = _fp8((2, 8, 128), g).to(device)
    a_s = torch.ones(2, 8, 1, device=device)
    b, bs = b.to(device), bs.to(device)
    mm = torch.tensor([3, 8], dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="masked_m"):
        grouped_fp8_gemm_masked(a, a_s, b, bs, mm[:1])
    with pytest.raises(ValueError, match="a must"):
        grouped_fp8_gemm_masked(a[:1], a_s[:1], b, bs, mm)
    with pytest.raises(ValueError, match="a_scale"):
        grouped_fp8_gemm_masked(a, a_s[:, :4], b, bs, mm)
    with pytest.raises(TypeError, match="out_dtype"):
        grouped_fp8_gemm_masked(a, a_s, b, bs, mm, out_dtype=torch.int8)
    with pytest.raises(ValueError, match="BLOCK_N"):
        grouped_fp8_gemm_masked(a, a_s, b, bs, mm, config=dict(BLOCK_M=64, BLOCK_N=96, num_warps=4, num_stages=2))
    with pytest.raises(ValueError, match="max_active_groups"):
        grouped_fp8_gemm_masked(a, a_s, b, bs, mm, max_active_groups=-1)
    with pytest.raises(ValueError, match="masked_m"):
        grouped_fp8_gemm_masked(a, a_s, b, bs, torch.tensor([3, 0, 8, 0], dtype=torch.int32, device=device)[::2])
    with pytest.raises(TypeError, match="max_active_groups"):  # a bool is no int (tester2 s20 #3)
        grouped_fp8_gemm_masked(a, a_s, b, bs, mm, max_active_groups=True)
    with pytest.raises(ValueError, match="BLOCK_N"):  # a partial config names the missing key
        grouped_fp8_gemm_masked(a, a_s, b, bs, mm, config=dict(BLOCK_M=16))
    for bad in (100, 8 * 40, True, 128.0):
        with pytest.raises(ValueError, match="MAXNREG"):
            grouped_fp8_gemm_masked(a, a_s, b, bs, mm, config=dict(_MASKED_DECODE, MAXNREG=bad))
    b2, bs2 = (t.to(device) for t in _weights(2, 256, 128, g))
    with pytest.raises(ValueError, match="BLOCK_M"):
        grouped_fp8_gemm_masked_silu_quant(a, a_s, b2, bs2, mm, config=dict(BLOCK_M=3, num_warps=4, num_stages=2))
    # a misspelt or foreign key would otherwise be ignored: both launchers name it; SWAP_AB must be a bool; the
    # fused kernel's N tile is one quant group (BLOCK_N 128 only); it checks MAXNREG as the plain one does
    for fn, bb, bbs in ((grouped_fp8_gemm_masked, b, bs), (grouped_fp8_gemm_masked_silu_quant, b2, bs2)):
        for kw, key in ((dict(MAXNRG=128), "MAXNRG"), (dict(GROUP_M=8), "GROUP_M"), (dict(SWAP_AB="no"), "SWAP_AB"),
                        (dict(SWAP_AB=1), "SWAP_AB"), (dict(MAXNREG=7), "MAXNREG")):
            with pytest.raises(ValueError, match=key):
                fn(a, a_s, bb, bbs, mm, config=dict(_MASKED_DECODE, **kw))
    with pytest.raises(ValueError, match="BLOCK_N"):
        grouped_fp8_gemm_masked_silu_quant(a, a_s, b2, bs2, mm, config=dict(_MASKED_DECODE, BLOCK_N=64))
    k0 = torch.empty(2, 128, 0, dtype=torch.float8_e4m3fn, device=device)
    with pytest.raises(ValueError, match="K = 0"):
        grouped_fp8_gemm_masked(a[:, :, :0], a_s[:, :, :0], k0, bs[:, :, :0], mm)


@pytest.mark.parametrize("E,M_max", [(0, 4), (2, 0)])
def test_masked_empty_inputs(device, E, M_max):
    """No groups or no rows: empty results of the documented shapes (nothing to compute), not a layout error."""
    K, N = 256, 256
    a = torch.empty(E, M_max, K, dtype=torch.float8_e4m3fn, device=device)
    a_s = torch.empty(E, M_max, 2, device=device)
    b = torch.empty(E, N, K, dtype=torch.float8_e4m3fn, device=device)
    bs = torch.ones(E, 2, 2, device=device)
    mm = torch.zeros(E, dtype=torch.int32, device=device)
    assert grouped_fp8_gemm_masked(a, a_s, b, bs, mm, max_active_groups=0).shape == (E, M_max, N)
    q, s = grouped_fp8_gemm_masked_silu_quant(a, a_s, b, bs, mm)
    assert q.shape == (E, M_max, N // 2) and s.shape == (E, M_max, 1)


# ------------------------------------------------------------------------------------------------
# Real shapes on the H200
# ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("bad_id", [3, -2])
def test_contiguous_out_of_range_ids_gpu(device, bad_id):
    """CUDA without check_alignment (no sync): an id ≥ E turns its tile's non-padding rows NaN (never another
    expert's product), an id < −1 is stored as padding (0); every other row as the reference; check_alignment
    raises (tl and Gluon launchers)."""
    from tritonseek.kernels.grouped_gemm_ws import grouped_fp8_gemm_contiguous_ws

    a, a_s, b, bs, mi = (t.to(device) for t in _out_of_range_case(torch.Generator().manual_seed(10), bad_id))
    out = grouped_fp8_gemm_contiguous(a, a_s, b, bs, mi, out_dtype=torch.float32).cpu()
    good = mi.clone()
    good[258] = -1
    ref = grouped_fp8_gemm_contiguous_ref(a, a_s, b, bs, good, out_dtype=torch.float32).cpu()
    tile = slice(256, 261) if bad_id >= 0 else slice(258, 259)  # expert 1's 5 rows (its padding rows stay 0)
    assert (out[tile].isnan().all() if bad_id >= 0 else (out[tile] == 0).all())
    keep = torch.ones(out.shape[0], dtype=torch.bool)
    keep[tile] = False
    assert torch.isfinite(out[keep]).all() and calc_diff(out[keep], ref[keep]) < 1e-3
    with pytest.raises(ValueError, match=r"m_indices\[258\]"):
        grouped_fp8_gemm_contiguous(a, a_s, b, bs, mi, check_alignment=True)
    if torch.cuda.get_device_capability(a.device)[0] == 9:  # the Gluon launcher shares the check
        with pytest.raises(ValueError, match=r"m_indices\[258\]"):
            grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi, check_alignment=True)


@pytest.mark.gpu
@pytest.mark.parametrize("N,K", [(4096, 7168), (7168, 2048)])
def test_contiguous_gpu(device, N, K):
    g = torch.Generator().manual_seed(N)
    segs = [0, 1, 127, 128, 129, 4096, 3000]
    b, bs = _weights(len(segs), N, K, g)
    a, a_s, mi = _contiguous_layout(segs, g, K)
    out = grouped_fp8_gemm_contiguous(*(t.to(device) for t in (a, a_s, b, bs, mi))).cpu().float()
    ref = grouped_fp8_gemm_contiguous_ref(*(t.to(device) for t in (a, a_s, b, bs, mi)), out_dtype=torch.float32).cpu()
    pad = mi < 0
    assert torch.isfinite(out).all() and (out[pad] == 0).all()
    assert calc_diff(out[~pad], ref[~pad]) < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("N,K", [(4096, 7168), (7168, 2048)])
def test_masked_gpu(device, N, K):
    g = torch.Generator().manual_seed(K)
    E, M_max = 8, 256
    masked_m = torch.tensor([0, 1, 63, 64, 65, 256, 200, 17], dtype=torch.int32)
    b, bs = _weights(E, N, K, g)
    a = _fp8((E, M_max, K), g)
    a_s = torch.rand(E, M_max, K // 128, generator=g) + 0.25
    invalid = torch.arange(M_max)[None, :] >= masked_m[:, None]
    a.view(torch.uint8)[invalid] = FP8_NAN
    out = grouped_fp8_gemm_masked(*(t.to(device) for t in (a, a_s, b, bs, masked_m)), out_dtype=torch.float32).cpu()
    ref = grouped_fp8_gemm_masked_ref(*(t.to(device) for t in (a, a_s, b, bs, masked_m)), out_dtype=torch.float32).cpu()
    assert torch.isfinite(out[~invalid]).all()
    assert calc_diff(out[~invalid], ref[~invalid]) < 1e-3


# decode-streaming configs (the default: swapped 16-row tiles; the 64-row tiles) at the V3 widths, with real
# routing: T tokens pick 8 distinct experts of E, programs launched for min(E, 8·T) group slots as the model does
DECODE_CONFIGS = [
    None,
    dict(BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=5, SWAP_AB=True),
    dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3),
    # 3 / 4 programs per SM: 4 stages (161 registers), 3 stages capped at 128 registers (0 spills, ptxas sm_90a)
    dict(BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=4, SWAP_AB=True),
    dict(BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=3, SWAP_AB=True, MAXNREG=128),
]


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 4, 8, 64])
@pytest.mark.parametrize("N,K", [(4096, 7168), (7168, 2048)])
def test_masked_decode_gpu(device, T, N, K):
    E = 32  # 256 at V3; 32 keeps the fp32 reference small while T=8/64 still fill most groups
    g = torch.Generator(device=device).manual_seed(T * 7 + N)
    b = (torch.randn(E, N, K, generator=g, device=device) * 0.5).to(torch.float8_e4m3fn)
    bs = torch.rand(E, N // 128, K // 128, generator=g, device=device) + 0.25
    picks = torch.stack([torch.randperm(E, generator=g, device=device)[:8] for _ in range(T)])
    masked_m = torch.bincount(picks.flatten(), minlength=E).to(torch.int32)
    a = (torch.randn(E, T, K, generator=g, device=device)).to(torch.float8_e4m3fn)
    a_s = torch.rand(E, T, K // 128, generator=g, device=device) + 0.25
    invalid = torch.arange(T, device=device)[None, :] >= masked_m[:, None]
    a.view(torch.uint8)[invalid] = FP8_NAN
    ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, masked_m, out_dtype=torch.float32)
    # the model's bound min(E, 8·T) per config; plus a bound far too small (3 slots loop over every group)
    for cfg, mag in [(c, min(E, 8 * T)) for c in DECODE_CONFIGS] + [(None, 3)]:
        out = torch.full((E, T, N), float("nan"), dtype=torch.bfloat16, device=device)
        grouped_fp8_gemm_masked(a, a_s, b, bs, masked_m, out=out, max_active_groups=mag, config=cfg)
        assert out[invalid].isnan().all(), cfg
        o = out[~invalid].float()
        assert torch.isfinite(o).all(), cfg
        assert calc_diff(o, ref[~invalid]) < 1e-3, cfg


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 4, 64])
def test_masked_silu_quant_gpu(device, T):
    """V3 gate/up widths (2I = 4096, K = 7168): fused epilogue = GEMM → silu_mul_quant_fp8, bit for bit."""
    E, I, K = 32, 2048, 7168
    g = torch.Generator(device=device).manual_seed(T)
    b = (torch.randn(E, 2 * I, K, generator=g, device=device) * 0.5).to(torch.float8_e4m3fn)
    bs = torch.rand(E, 2 * I // 128, K // 128, generator=g, device=device) * 0.01 + 0.002
    picks = torch.stack([torch.randperm(E, generator=g, device=device)[:8] for _ in range(T)])
    masked_m = torch.bincount(picks.flatten(), minlength=E).to(torch.int32)
    a = torch.randn(E, T, K, generator=g, device=device).to(torch.float8_e4m3fn)
    a_s = torch.rand(E, T, K // 128, generator=g, device=device) * 0.01 + 0.002
    for cfg, mag in ((None, min(E, 8 * T)), (dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3), min(E, 8 * T)),
                     (None, 2)):  # 2 slots: too small a bound, every group still computed
        (q, s), (q_ref, s_ref) = _silu_quant_both(a, a_s, b, bs, masked_m, cfg, mag)
        v = torch.arange(T, device=device)[None, :] < masked_m[:, None]
        assert torch.equal(q[v].view(torch.uint8), q_ref[v].view(torch.uint8)), cfg
        assert torch.equal(s[v], s_ref[v]), cfg


def test_masked_pdl_options(device):
    """pdl / prefetch_group / config PREFETCH: validated on every device; on the interpreter (no griddepcontrol)
    they are ignored, so the result equals the plain launch bit for bit."""
    g = torch.Generator().manual_seed(3)
    E, M_max, I, K = 3, 2, 128, 256
    b, bs = _weights(E, 2 * I, K, g)
    a = _fp8((E, M_max, K), g)
    a_s = torch.rand(E, M_max, K // 128, generator=g) + 0.25
    masked_m = torch.tensor([1, 0, 2], dtype=torch.int32)
    args = [t.to(device) for t in (a, a_s, b, bs, masked_m)]
    base = grouped_fp8_gemm_masked(*args)
    v = torch.arange(M_max, device=device)[None, :] < args[4][:, None].to(device)
    for kw in (dict(pdl=True), dict(pdl=True, prefetch_group=E - 1), dict(pdl=True, config=dict(
            BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=2, SWAP_AB=True, PREFETCH=0))):
        assert torch.equal(grouped_fp8_gemm_masked(*args, **kw)[v], base[v]), kw
    q0, s0 = grouped_fp8_gemm_masked_silu_quant(*args)
    q1, s1 = grouped_fp8_gemm_masked_silu_quant(*args, pdl=True, prefetch_group=0, max_active_groups=1)
    assert torch.equal(q0[v].view(torch.uint8), q1[v].view(torch.uint8)) and torch.equal(s0[v], s1[v])
    with pytest.raises(TypeError, match="pdl"):
        grouped_fp8_gemm_masked(*args, pdl=1)
    for bad in (E, -1):
        with pytest.raises(ValueError, match="prefetch_group"):
            grouped_fp8_gemm_masked_silu_quant(*args, pdl=True, prefetch_group=bad)
    for bad in (True, 1.0):  # another type: TypeError (tester2 s20 #3)
        with pytest.raises(TypeError, match="prefetch_group"):
            grouped_fp8_gemm_masked_silu_quant(*args, pdl=True, prefetch_group=bad)
    with pytest.raises(ValueError, match="PREFETCH"):
        grouped_fp8_gemm_masked(*args, config=dict(BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=2, PREFETCH=-1))


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 2, 8])
def test_masked_pdl_chain_gpu(device, T):
    """V3 widths (GEMM1 2I = 4096 × K 7168, down 7168 × 2048), E = 33 groups with group 32 taking every token (a
    shared expert) and one more group taking every token, some groups empty: GEMM1 (+SiLU·mul+quant) and the down
    GEMM launched as programmatic dependent launches with L2 prefetch (GEMM1: group 32's weights; down: its own),
    captured in one CUDA graph, equal the plain launches bit for bit, and the down output matches the fp32
    reference within calc_diff 1e-3 on valid rows (rows past masked_m poisoned with NaN, never stored); GEMM1 with
    4 pipeline stages (moe_triton.DECODE_CONFIGS at T=2) gives the same bits."""
    E, I, K, H = 33, 2048, 7168, 7168
    g = torch.Generator(device=device).manual_seed(40 + T)
    w13 = (torch.randn(E, 2 * I, K, generator=g, device=device) * 0.5).to(torch.float8_e4m3fn)
    s13 = torch.rand(E, 2 * I // 128, K // 128, generator=g, device=device) * 0.01 + 0.002
    w2 = (torch.randn(E, H, I, generator=g, device=device) * 0.5).to(torch.float8_e4m3fn)
    s2 = torch.rand(E, H // 128, I // 128, generator=g, device=device) * 0.01 + 0.002
    picks = torch.stack([torch.randperm(E - 2, generator=g, device=device)[:7] for _ in range(T)])
    masked_m = torch.bincount(picks.flatten(), minlength=E).to(torch.int32)
    masked_m[E - 1] = T
    masked_m[5] = T  # one expert takes every token
    a = torch.randn(E, T, K, generator=g, device=device).to(torch.float8_e4m3fn)
    a_s = torch.rand(E, T, K // 128, generator=g, device=device) * 0.01 + 0.002
    invalid = torch.arange(T, device=device)[None, :] >= masked_m[:, None]
    a.view(torch.uint8)[invalid] = FP8_NAN
    mag = min(E, 8 * T)

    def chain(pdl, stages=None):
        cfg1 = None if stages is None else dict(BLOCK_M=16, num_warps=4, num_stages=stages, SWAP_AB=True)
        q, s = grouped_fp8_gemm_masked_silu_quant(a, a_s, w13, s13, masked_m, max_active_groups=mag, pdl=pdl,
                                                  prefetch_group=E - 1 if pdl else None, config=cfg1)
        out = torch.full((E, T, H), float("nan"), dtype=torch.bfloat16, device=device)
        grouped_fp8_gemm_masked(q, s, w2, s2, masked_m, out=out, max_active_groups=mag, pdl=pdl)
        return q, s, out

    q0, s0, o0 = chain(False)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        res = chain(True)
    graph.replay()
    torch.cuda.synchronize()
    q1, s1, o1 = res
    v = ~invalid
    assert torch.equal(q1[v].view(torch.uint8), q0[v].view(torch.uint8)) and torch.equal(s1[v], s0[v])
    assert torch.equal(o1[v], o0[v]) and o1[invalid].isnan().all()
    q2, s2_, o2 = chain(True, stages=4)  # the T=2 decode config (4 stages: 3 programs per SM): the same bits
    assert torch.equal(q2[v].view(torch.uint8), q0[v].view(torch.uint8)) and torch.equal(s2_[v], s0[v])
    assert torch.equal(o2[v], o0[v])
    ref = grouped_fp8_gemm_masked_ref(q0, s0, w2, s2, masked_m, out_dtype=torch.float32)
    assert torch.isfinite(o1[v]).all() and calc_diff(o1[v].float(), ref[v]) < 1e-3


def compile_masked_sm90(silu: bool, pdl: bool, pf_mode: int, stages: int, maxnreg: int | None = None):
    """The masked decode kernels (swapped 16-row tiles, COMPACT slots over V3's 257 groups) compiled for sm_90a."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import tritonseek.kernels.grouped_gemm_masked as GM

    i = "i32"
    sig = dict(a_desc="tensordesc<fp8e4nv[16, 128]>", b_desc="tensordesc<fp8e4nv[128, 128]>", a_scale_ptr="*fp32",
               b_scale_ptr="*fp32", masked_m_ptr="*i32")
    strides = ("stride_ase", "stride_asm", "stride_ask", "stride_bse", "stride_bsn", "stride_bsk")
    consts = dict(BLOCK_M=16, BLOCK_N=128, BLOCK_K=128, COMPACT=True, E_PAD=512, SWAP_AB=True, PDL=pdl,
                  PF_MODE=pf_mode)
    if silu:
        sig.update(q_ptr="*fp8e4nv", s_ptr="*fp32", b_ptr="*fp8e4nv", M_max=i, I=i, E=i, num_k_blocks=i, pf_group=i,
                   n_prefetch=i, **{k: i for k in strides + ("stride_qe", "stride_qm", "stride_se", "stride_sm",
                                                              "stride_sg", "stride_bn")}, eps="fp32", fp8_max="fp32")
        consts.update(EXACT_ROUND=False, FAST_DIV=True)
        fn = GM._grouped_fp8_masked_silu_quant_kernel
    else:
        sig.update(out_ptr="*bf16", b_ptr="*fp8e4nv", M_max=i, N=i, E=i, num_k_blocks=i, pf_group=i, n_prefetch=i,
                   **{k: i for k in strides + ("stride_oe", "stride_om", "stride_on", "stride_bn")})
        fn = GM._grouped_fp8_masked_kernel
    sig.update({k: "constexpr" for k in consts})
    opts = dict(num_warps=4, num_stages=stages, **({"maxnreg": maxnreg} if maxnreg else {}))
    return triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", 90, 32), options=opts)


def test_masked_pdl_kernels_compile_for_sm90():
    """The GPU compiler accepts the PDL + L2-prefetch variants the MoE decode chain launches (the interpreter runs
    them with PDL off): griddepcontrol and prefetch.global.L2 present, wgmma kept, no spills (ptxas sm_90a)."""
    from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report, spill_store_bytes

    for silu, pf_mode, stages in ((True, 2, 4), (False, 1, 6)):  # GEMM1 as at T=2, down as at every decode T
        ptx = ptx_in_fresh_process(__name__, "compile_masked_sm90", silu, True, pf_mode, stages)
        assert "griddepcontrol.wait" in ptx and "griddepcontrol.launch_dependents" in ptx
        assert "prefetch.global.L2" in ptx and "wgmma.mma_async" in ptx
        assert max(spill_store_bytes(ptxas_report(ptx))) == 0


def test_masked_decode_occupancy_sm90():
    """ptxas sm_90a, the decode kernel (COMPACT slots, no PDL): 4 stages fit 3 programs per SM in registers
    (≤ 168 per thread) and shared memory, 3 stages with MAXNREG 128 fit 4 per SM without spills."""
    import re

    from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report, spill_store_bytes

    for stages, cap, per_sm in ((4, None, 3), (3, 128, 4)):
        rep = ptxas_report(ptx_in_fresh_process(__name__, "compile_masked_sm90", False, False, 0, stages, cap))
        regs = max(int(r) for r in re.findall(r"Used (\d+) registers", rep))
        assert -(-regs // 8) * 8 * 128 * per_sm <= 65536, rep
        assert max(spill_store_bytes(rep)) == 0, rep


def test_decode_wave_config():
    """The default decode config becomes 3 stages at 128 registers (4 programs per SM) only when the grid needs
    more than one 2-per-SM wave and fits one 4-per-SM wave (V3 down GEMM at T=1 on 132 SMs: 448 programs)."""
    from tritonseek.kernels.grouped_gemm_masked import _decode_wave_config

    d = dict(_MASKED_DECODE)
    assert _decode_wave_config(d, 448, 132) == dict(d, num_stages=3, MAXNREG=128)
    assert _decode_wave_config(d, 528, 132)["num_stages"] == 3
    for tiles in (256, 264, 529, 3248):  # one 2-per-SM wave, or more than one 4-per-SM wave: unchanged
        assert _decode_wave_config(d, tiles, 132) == d
    other = dict(d, num_stages=5)
    assert _decode_wave_config(other, 448, 132) == other  # a caller's / tuned config is never changed
    assert _MASKED_DECODE["num_stages"] == 6  # not mutated


def test_masked_rejects_bad_expected_m(device):
    g = torch.Generator().manual_seed(9)
    a = _fp8((2, 8, 128), g).to(device)
    a_s = torch.ones(2, 8, 1, device=device)
    mm = torch.tensor([3, 8], dtype=torch.int32, device=device)
    b, bs = (t.to(device) for t in _weights(2, 128, 128, g))
    b2, bs2 = (t.to(device) for t in _weights(2, 256, 128, g))
    for bad, exc in ((-5, ValueError), (0, ValueError), (True, TypeError), (2.0, TypeError)):
        with pytest.raises(exc, match="expected_m"):
            grouped_fp8_gemm_masked(a, a_s, b, bs, mm, expected_m=bad)
        with pytest.raises(exc, match="expected_m"):
            grouped_fp8_gemm_masked_silu_quant(a, a_s, b2, bs2, mm, expected_m=bad)
