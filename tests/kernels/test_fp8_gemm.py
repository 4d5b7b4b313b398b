"""fp8_gemm_nt / fp8_linear against tritonseek.kernels.reference.fp8 (CPU interpreter; real shapes on the GPU).

Accuracy measure and tolerance: DeepGEMM's calc_diff = 1 − 2Σxy / Σ(x² + y²) < 1e-3 against the
dequantized fp32 product (fp8_gemm_nt_ref). Both sides see the same fp8 inputs and scales, so
what remains is fp32 summation order plus the output's bf16 rounding (≈ (2^-9)² ≈ 4e-6 in
calc_diff terms); 1e-3 is DeepGEMM's own bound and still catches a wrong scale, a dropped
K block or a mis-indexed tile (each gives calc_diff ≳ 1e-2).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tritonseek.kernels import fp8_gemm_small
from tritonseek.kernels.fp8_gemm import fp8_gemm_nt, fp8_linear
from tritonseek.kernels.reference.fp8 import (
    fp8_gemm_nt_ref,
    per_block_quant_fp8_ref,
    per_token_group_quant_fp8_ref,
)

_fixture_ok = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
)

# Launch configs the kernel may be given (the tuned table holds instances of these families).
_CONFIGS = [
    None,  # the library's own choice for the shape
    dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3, SPLIT_K=1),
    dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3, SPLIT_K=3),
    dict(BLOCK_M=64, BLOCK_N=256, num_warps=8, num_stages=3, SPLIT_K=2),
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3, SPLIT_K=1, FLATTEN=True),
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3, SPLIT_K=1, GRID_MULT=0),
    dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3, SPLIT_K=1, GRID_MULT=2, TMA_STORE=True),
    # swap-AB small-M kernel (fp8_gemm_small): weights on the wgmma M side, split-K reduced in-kernel
    dict(SWAP_AB=True, BLOCK_N=128, BLOCK_M=16, num_warps=4, num_stages=3, SPLIT_K=1),
    dict(SWAP_AB=True, BLOCK_N=64, BLOCK_M=8, num_warps=4, num_stages=4, SPLIT_K=4),
    dict(SWAP_AB=True, BLOCK_N=128, BLOCK_M=16, num_warps=4, num_stages=3, SPLIT_K=2, PDL=True, PREFETCH=2),  # GPU-only options
]
_SWAP = dict(SWAP_AB=True, BLOCK_N=64, BLOCK_M=16, num_warps=4, num_stages=4)


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """DeepGEMM's accuracy measure: 1 − 2Σxy / Σ(x² + y²) (0 for identical tensors)."""
    x, y = x.double(), y.double()
    denom = (x * x + y * y).sum()
    return float(1 - 2 * (x * y).sum() / denom)


def _operands(m, n, k, device, seed, zero_rows=()):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=g)
    a *= torch.exp(torch.randn(m, 1, generator=g))  # rows at different magnitudes → different scales
    for r in zero_rows:
        a[r] = 0
    b = torch.randn(n, k, generator=g) * 0.05
    a_q, a_s = per_token_group_quant_fp8_ref(a)
    b_q, b_s = per_block_quant_fp8_ref(b)
    a_s = a_s.t().contiguous().t()  # MN-major, the layout the quant kernels write
    return a_q.to(device), a_s.to(device), b_q.to(device), b_s.to(device)


def _check(m, n, k, device, seed, config=None, out_dtype=torch.bfloat16):
    a, a_s, b, b_s = _operands(m, n, k, device, seed)
    out = torch.full((m, n), float("nan"), dtype=out_dtype, device=device)
    res = fp8_gemm_nt(a, a_s, b, b_s, out=out, out_dtype=out_dtype, config=config)
    assert res.data_ptr() == out.data_ptr()
    assert not torch.isnan(out).any(), "some outputs were never written"
    ref = fp8_gemm_nt_ref(a.cpu(), a_s.cpu(), b.cpu(), b_s.cpu(), out_dtype=torch.float32)
    diff = calc_diff(out.float().cpu(), ref)
    assert diff < 1e-3, f"calc_diff {diff} for M={m} N={n} K={k} config={config}"


@_fixture_ok
@given(
    m=st.integers(1, 140),
    n=st.integers(1, 300),
    kb16=st.integers(1, 80),  # K = 16·kb16 ∈ [16, 1280]: tails and odd numbers of 128-blocks
    config=st.sampled_from(_CONFIGS),
    seed=st.integers(0, 2**31 - 1),
)
def test_fp8_gemm_matches_reference(device, m, n, kb16, config, seed):
    _check(m, n, 16 * kb16, device, seed, config)


@pytest.mark.parametrize(
    "m,n,k,config",
    [
        (1, 200, 1152, None),  # M = 1, K with 9 (odd) 128-blocks
        (67, 130, 1152, _CONFIGS[2]),  # odd M, N tail, split-K over 9 blocks (3 splits of 3)
        (3, 576, 400, _CONFIGS[3]),  # K tail (400 = 3·128 + 16), BLOCK_N = 256 over a 576-wide N
        (129, 96, 256, _CONFIGS[4]),  # M just past a tile, N < one tile, flattened persistent loop
        (200, 260, 384, _CONFIGS[5]),  # one tile per program
        (70, 264, 256, _CONFIGS[6]),  # TMA-store epilogue clipped at M and N tails
        # three programs per SM, 3 stages (the M = 64/128 entries for 24576×1536 and 32768×512): odd M over two
        # row tiles, N tail, more tiles than programs (persistent loop)
        (101, 600, 256, dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3, SPLIT_K=1, GRID_MULT=3)),
    ],
)
def test_fp8_gemm_edge_shapes(device, m, n, k, config):
    _check(m, n, k, device, 7, config)


@pytest.mark.parametrize(
    "m,n,k,split",
    [
        (1, 200, 1152, 4),  # M = 1, 9 K blocks in splits of 3,3,3 (4 requested → 3), N tail
        (5, 130, 640, 2),  # 5 K blocks: splits of 3 and 2, N tail inside a 64-row tile
        (16, 64, 256, 1),  # one tile, no workspace
        (19, 190, 384, 3),  # M past one token tile (two M tiles, counters per (M, N) tile)
    ],
)
def test_fp8_gemm_swap_ab_split_k(device, m, n, k, split):
    _check(m, n, k, device, 21, dict(_SWAP, SPLIT_K=split))


def test_fp8_gemm_swap_ab_deterministic_and_rearmed(device):
    # the in-kernel split-K reduce sums partials in split order: repeated launches are bit-identical,
    # and the arrival counters are back at 0 afterwards (else the next launch reduces too early)
    a, a_s, b, b_s = _operands(3, 192, 1024, device, 13)
    cfg = dict(_SWAP, SPLIT_K=4)
    first = fp8_gemm_nt(a, a_s, b, b_s, config=cfg)
    for _ in range(2):
        assert torch.equal(fp8_gemm_nt(a, a_s, b, b_s, config=cfg), first)
    assert all(int(buf.abs().sum()) == 0 for buf in fp8_gemm_small._counters.values())
    ref = fp8_gemm_nt_ref(a.cpu(), a_s.cpu(), b.cpu(), b_s.cpu(), out_dtype=torch.float32)
    assert calc_diff(first.float().cpu(), ref) < 1e-3


def test_fp8_gemm_small_m_default_is_swap_ab():
    from tritonseek.kernels.fp8_gemm import get_config

    for m, n, k in ((1, 7168, 16384), (8, 2112, 7168), (16, 1000, 3000)):  # tuned, tuned, heuristic
        cfg = get_config(m, n, k, 132)
        assert cfg["SWAP_AB"] and cfg["BLOCK_M"] >= 16  # wgmma needs n ≥ 16 tokens per tile
    assert not get_config(17, 7168, 16384, 132).get("SWAP_AB")
    with pytest.raises(ValueError, match="BLOCK_N"):
        a, a_s, b, b_s = _operands(2, 128, 256, torch.device("cpu"), 1)
        fp8_gemm_nt(a, a_s, b, b_s, config=dict(_SWAP, BLOCK_N=32))


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32])
def test_fp8_gemm_out_dtypes(device, out_dtype):
    _check(33, 150, 256, device, 3, None, out_dtype)


def test_fp8_gemm_zero_rows_and_strided_out(device):
    a, a_s, b, b_s = _operands(20, 140, 256, device, 5, zero_rows=(0, 7))
    big = torch.full((20, 160), float("nan"), dtype=torch.bfloat16, device=device)
    out = big[:, 10:150]  # row stride 160
    fp8_gemm_nt(a, a_s, b, b_s, out=out)
    assert torch.isfinite(a_s).all()
    assert torch.all(out[0] == 0) and torch.all(out[7] == 0)
    assert torch.isnan(big[:, :10]).all() and torch.isnan(big[:, 150:]).all()  # nothing outside out
    ref = fp8_gemm_nt_ref(a.cpu(), a_s.cpu(), b.cpu(), b_s.cpu(), out_dtype=torch.float32)
    assert calc_diff(out.float().cpu(), ref) < 1e-3


def test_fp8_gemm_row_major_a_scale(device):
    # any a_scale strides are read correctly (row-major is merely slower on the GPU)
    a, a_s, b, b_s = _operands(9, 128, 384, device, 9)
    out = fp8_gemm_nt(a, a_s.contiguous(), b, b_s)
    ref = fp8_gemm_nt_ref(a.cpu(), a_s.cpu(), b.cpu(), b_s.cpu(), out_dtype=torch.float32)
    assert calc_diff(out.float().cpu(), ref) < 1e-3


def test_fp8_linear_matches_quantized_reference(device):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 5, 384, generator=g).to(torch.bfloat16)
    w = torch.randn(200, 384, generator=g) * 0.05
    bias = torch.randn(200, generator=g).to(torch.bfloat16)
    w_q, w_s = per_block_quant_fp8_ref(w)
    y = fp8_linear(x.to(device), w_q.to(device), w_s.to(device), bias.to(device))
    assert y.shape == (2, 5, 200) and y.dtype == torch.bfloat16
    x_q, x_s = per_token_group_quant_fp8_ref(x.reshape(10, 384))
    ref = fp8_gemm_nt_ref(x_q, x_s, w_q, w_s, out_dtype=torch.float32) + bias.float()
    assert calc_diff(y.float().cpu().reshape(10, 200), ref) < 1e-3


def test_fp8_linear_rejects_bad_weight_and_bias():
    """A bias that is not [N] on x's device, or a weight that is not a 2-D e4m3 tensor, is refused by name (fresh-user
    pass, session 21: a [1] or [3, N] bias was broadcast silently, weight=None gave an AttributeError)."""
    x = torch.randn(3, 128, dtype=torch.bfloat16)
    w_q, w_s = per_block_quant_fp8_ref(torch.randn(256, 128) * 0.05)
    for bias, err, text in [(torch.ones(1), ValueError, r"bias must be \[N\] with N = .*256"),
                            (torch.ones(3, 256), ValueError, "bias must be 1-D"),
                            (torch.zeros(255), ValueError, r"bias must be \[N\]"),
                            ([0.0] * 256, TypeError, "bias must be a torch.Tensor"),
                            (torch.zeros(256, dtype=torch.int32), TypeError, "bias must have dtype"),
                            (torch.zeros(256, device="meta"), ValueError, "bias is on meta")]:
        with pytest.raises(err, match=text):
            fp8_linear(x, w_q, w_s, bias=bias)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        fp8_linear(x, None, w_s)
    with pytest.raises(TypeError, match="weight must have dtype"):
        fp8_linear(x, w_q.float(), w_s)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        fp8_linear(x, w_q[None], w_s)
    # tester23 #3: K % 16 != 0 was refused by fp8_gemm_nt naming its operand "a"; now by name, before any work
    w_q, w_s = per_block_quant_fp8_ref(torch.randn(8, 300) * 0.05)
    for xk in (torch.randn(2, 300), torch.randn(300), torch.randn(0, 300)):
        with pytest.raises(ValueError, match=r"^x: K = 300 must be a multiple of 16"):
            fp8_linear(xk, w_q, w_s)


def test_fp8_gemm_rejects_bad_configs():
    """Config overrides are checked before launch (fresh-user pass: {} and {"BLOCK_N": 7} gave bare KeyErrors)."""
    a, a_s, b, b_s = _operands(32, 128, 256, torch.device("cpu"), 1)
    with pytest.raises(ValueError, match="missing the required key 'BLOCK_M'"):
        fp8_gemm_nt(a, a_s, b, b_s, config={})
    with pytest.raises(ValueError, match="BLOCK_N=7 must be one of"):
        fp8_gemm_nt(a, a_s, b, b_s, config=dict(BLOCK_M=64, BLOCK_N=7, num_warps=4, num_stages=2))
    with pytest.raises(TypeError, match="config must be a dict"):
        fp8_gemm_nt(a, a_s, b, b_s, config="abc")
    # Fresh-user pass (session 16): these ran, leaving NaN in out= or corrupting the heap (GROUP_M -1 + SPLIT_K 2
    # segfaulted), or were silently clamped / ignored; now each raises naming its key before any launch.
    base = dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3)
    for bad, key in (({"GRID_MULT": -1}, "GRID_MULT"), ({"GROUP_M": 0}, "GROUP_M"), ({"GROUP_M": -1}, "GROUP_M"),
                     ({"SPLIT_K": 0}, "SPLIT_K"), ({"SPLIT_K": 1.5}, "SPLIT_K"), ({"SPLIT_K": "2"}, "SPLIT_K"),
                     ({"WS": 7}, "WS"), ({"num_warps": 3}, "num_warps"), ({"num_stages": 0}, "num_stages"),
                     ({"BOGUS": 1}, "BOGUS"), ({"BLOK_M": 64}, "BLOK_M"), ({"GLUON": 5}, "GLUON"),
                     ({"GLUON": {"STAGES": 4}}, "STAGES"), ({"SWAP_AB": True, "AHEAD": -5}, "AHEAD"),
                     ({"SWAP_AB": True, "SPLITK": 2}, "SPLITK"),
                     # fresh-user pass (session 17): GLUON values were checked only on the H200, and WIDE silently
                     # replaced a caller's BLOCK_N / NUM_STAGES; now every device raises naming the key
                     ({"GLUON": {"BLOCK_N": 100}}, "BLOCK_N=100"), ({"GLUON": {"NUM_STAGES": 0}}, "NUM_STAGES"),
                     ({"GLUON": {"NUM_STAGES": "x"}}, "NUM_STAGES"), ({"GLUON": {"WIDE": True, "SPLIT": False}}, "WIDE"),
                     ({"GLUON": {"WIDE": True, "WGS": 3}}, "WIDE"), ({"GLUON": {"WIDE": True, "BLOCK_N": 128}}, "WIDE"),
                     ({"GLUON": {"WGS": True}}, "WGS"), ({"GLUON": {"WGS": 2.0}}, "WGS"),
                     ({"GLUON": {"BLOCK_N": 128.0}}, "BLOCK_N"), ({"num_warps": 4.0}, "num_warps")):
        with pytest.raises(ValueError, match=key):
            fp8_gemm_nt(a, a_s, b, b_s, config={**base, **bad})
    with pytest.raises(ValueError, match="missing the required key 'num_warps'"):
        fp8_gemm_nt(a, a_s, b, b_s, config=dict(SWAP_AB=True, BLOCK_M=16, BLOCK_N=64, num_stages=3))


def test_fp8_gemm_rejects_unsupported_layouts(device):
    a, a_s, b, b_s = _operands(16, 128, 256, device, 1)
    with pytest.raises(TypeError, match="a must have dtype"):
        fp8_gemm_nt(a.float(), a_s, b, b_s)
    with pytest.raises(TypeError, match="b must have dtype"):
        fp8_gemm_nt(a, a_s, b.view(torch.int8), b_s)
    with pytest.raises(TypeError, match="a_scale"):
        fp8_gemm_nt(a, a_s.double(), b, b_s)
    b_t = b.t().contiguous().t()  # same values, transposed storage (TN): must raise, not return garbage
    with pytest.raises(ValueError, match="K-contiguous"):
        fp8_gemm_nt(a, a_s, b_t, b_s)
    with pytest.raises(ValueError, match="a_scale must be"):
        fp8_gemm_nt(a, a_s[:, :1], b, b_s)
    with pytest.raises(ValueError, match="b_scale must be"):
        fp8_gemm_nt(a, a_s, b, b_s[:, :1])
    with pytest.raises(ValueError, match="same K"):
        fp8_gemm_nt(a, a_s, b[:, :128].contiguous(), b_s[:, :1])
    a40, _ = per_token_group_quant_fp8_ref(torch.randn(4, 40))
    b40, s40 = per_block_quant_fp8_ref(torch.randn(8, 40))
    with pytest.raises(ValueError, match="16-byte"):  # K = 40: rows not 16-byte aligned for TMA
        fp8_gemm_nt(a40.to(device), torch.ones(4, 1, device=device), b40.to(device), s40.to(device))
    with pytest.raises(ValueError, match="out must be"):
        fp8_gemm_nt(a, a_s, b, b_s, out=torch.empty(16, 64, dtype=torch.bfloat16, device=device))
    with pytest.raises(TypeError, match="out_dtype"):
        fp8_gemm_nt(a, a_s, b, b_s, out_dtype=torch.int32)


_REAL_NK = [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048), (576, 7168)]


# every (N, K) at M = 1 (decode), 333 (odd, untuned: the heuristic configs) and 4096 (the tuned
# compute-bound configs); M = 64/128 at a split-K and an unsplit shape (the benchmark checks all 12
# DeepGEMM small-M shapes too). Kept to ~25 cases so a cold compile cache stays within ~20 s.
_REAL_CASES = [(m, n, k) for m in (1, 333, 4096) for n, k in _REAL_NK] + [
    (m, n, k) for m in (64, 128) for n, k in ((2112, 7168), (7168, 2048))
]


@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k", _REAL_CASES)
def test_fp8_gemm_real_shapes_gpu(device, m, n, k):
    a = torch.randn(m, k, device=device)
    b = torch.randn(n, k, device=device) * 0.05
    a_q, a_s = per_token_group_quant_fp8_ref(a)
    a_s = a_s.t().contiguous().t()
    b_q, b_s = per_block_quant_fp8_ref(b)
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device=device)
    fp8_gemm_nt(a_q, a_s, b_q, b_s, out=out)
    assert not torch.isnan(out).any()
    ref = fp8_gemm_nt_ref(a_q, a_s, b_q, b_s, out_dtype=torch.float32)
    assert calc_diff(out.float(), ref) < 1e-3


# Every committed 16 < M ≤ 128 entry of fp8_gemm._TUNED (tl, swap-AB or Gluon), forced at M = 1, at odd M inside its
# class with N and K tails (N − 40: not a multiple of 64; K − 112: a 16-wide last K block), and at its class's top M
# (also through the library's own choice, config=None). NaN-poisoned outputs; calc_diff as above.
@pytest.mark.gpu
@pytest.mark.parametrize("n,k", _REAL_NK[:6])
def test_fp8_gemm_mid_m_tuned_configs_gpu(device, n, k):
    from tritonseek.kernels.fp8_gemm import _TUNED

    def run(m, nn, kk, cfg):
        a_q, a_s = per_token_group_quant_fp8_ref(torch.randn(m, kk, device=device))
        a_s = a_s.t().contiguous().t()
        b_q, b_s = per_block_quant_fp8_ref(torch.randn(nn, kk, device=device) * 0.05)
        out = torch.full((m, nn), float("nan"), dtype=torch.bfloat16, device=device)
        fp8_gemm_nt(a_q, a_s, b_q, b_s, out=out, config=cfg)
        assert not torch.isnan(out).any(), (m, nn, kk, cfg)
        ref = fp8_gemm_nt_ref(a_q, a_s, b_q, b_s, out_dtype=torch.float32)
        assert calc_diff(out.float(), ref) < 1e-3, (m, nn, kk, cfg)

    for cls, odd_m, top_m in (("64", 37, 64), ("128", 101, 128)):
        cfg = _TUNED[(cls, n, k)]
        run(1, n, k, cfg)
        run(odd_m, n - 40, k - 112, cfg)
        run(top_m, n, k, cfg)
        run(top_m, n, k, None)


# the V3-width slice's decode GEMMs (fused q_a‖kv_a, q_b, o_proj, dense gate‖up and down,
# shared-expert gate‖up and down) at decode M through the small-M (swap-AB) default
_SLICE_NK = [(2112, 7168), (24576, 1536), (7168, 16384), (36864, 7168), (7168, 18432), (4096, 7168), (7168, 2048)]


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 8, 16])
@pytest.mark.parametrize("n,k", _SLICE_NK)
def test_fp8_gemm_small_m_real_shapes_gpu(device, m, n, k):
    a_q, a_s = per_token_group_quant_fp8_ref(torch.randn(m, k, device=device))
    a_s = a_s.t().contiguous().t()
    b_q, b_s = per_block_quant_fp8_ref(torch.randn(n, k, device=device) * 0.05)
    ref = fp8_gemm_nt_ref(a_q, a_s, b_q, b_s, out_dtype=torch.float32)
    other = dict(SWAP_AB=True, BLOCK_N=64, BLOCK_M=16, num_warps=4, num_stages=6, SPLIT_K=3)
    for cfg in (None, other):  # the library's choice (the tuned table), and an untuned tile/split
        out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device=device)
        fp8_gemm_nt(a_q, a_s, b_q, b_s, out=out, config=cfg)
        assert not torch.isnan(out).any()
        assert calc_diff(out.float(), ref) < 1e-3, cfg


@pytest.mark.gpu
def test_fp8_gemm_small_m_cuda_graph_gpu(device):
    # split-K with the in-kernel reduce under graph replay: fresh inputs copied into the captured
    # buffers give the right product, and two replays are bit-identical (counters re-armed)
    m, n, k = 4, 7168, 16384
    a_q, a_s = per_token_group_quant_fp8_ref(torch.randn(m, k, device=device))
    a_s = a_s.t().contiguous().t()
    b_q, b_s = per_block_quant_fp8_ref(torch.randn(n, k, device=device) * 0.05)
    base = dict(SWAP_AB=True, BLOCK_N=128, BLOCK_M=16, num_warps=4, num_stages=6, SPLIT_K=4)
    out = torch.empty(m, n, dtype=torch.bfloat16, device=device)
    cfgs = (base, dict(base, PDL=True, PREFETCH=2))  # plain launch; programmatic dependent launch
    for cfg in cfgs:
        fp8_gemm_nt(a_q, a_s, b_q, b_s, out=out, config=cfg)  # compile + counters outside capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        # the two launches back to back (the second waits on the first through griddepcontrol)
        for cfg in cfgs:
            fp8_gemm_nt(a_q, a_s, b_q, b_s, out=out, config=cfg)
    for seed in range(2):
        x_q, x_s = per_token_group_quant_fp8_ref(torch.randn(m, k, device=device, generator=torch.Generator(device).manual_seed(seed)))
        a_q.copy_(x_q)
        a_s.copy_(x_s)
        out.fill_(float("nan"))
        g.replay()
        first = out.clone()
        g.replay()
        assert torch.equal(out, first)
        ref = fp8_gemm_nt_ref(x_q, x_s, b_q, b_s, out_dtype=torch.float32)
        assert calc_diff(out.float(), ref) < 1e-3


@pytest.mark.gpu
def test_fp8_linear_real_shape_gpu(device):
    x = torch.randn(3, 17, 7168, device=device, dtype=torch.bfloat16)
    w_q, w_s = per_block_quant_fp8_ref(torch.randn(2112, 7168, device=device) * 0.02)
    y = fp8_linear(x, w_q, w_s)
    x_q, x_s = per_token_group_quant_fp8_ref(x.reshape(-1, 7168))
    ref = fp8_gemm_nt_ref(x_q, x_s, w_q, w_s, out_dtype=torch.float32)
    assert calc_diff(y.float().reshape(-1, 2112), ref) < 1e-3
