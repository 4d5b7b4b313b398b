"""The small-M (decode) swap-AB FP8 GEMM (fp8_gemm_small) through fp8_gemm_nt, against the fp32 reference.

Accuracy: DeepGEMM's calc_diff = 1 − 2Σxy / Σ(x² + y²) < 1e-3 against the dequantized fp32 product
(fp8_gemm_nt_ref), as in test_fp8_gemm.py: both sides see the same fp8 operands and scales, so only
the fp32 summation order and the output's bf16 rounding (≈ 4e-6 in calc_diff) remain, while a wrong
scale, a dropped K block or split, or a mis-indexed tile gives ≳ 1e-2. Outputs are NaN-poisoned
before every launch and must be fully written.

CPU (interpreter): the configs' tile/split/launch-order paths at small shapes (PDL, PREFETCH and AHEAD
are PTX-only and are ignored there; they are exercised by the gpu-marked tests at the V3 shapes).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tritonseek.kernels import fp8_gemm_small as S
from tritonseek.kernels.fp8_gemm import fp8_gemm_nt, get_config
from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8
from tritonseek.kernels.reference.fp8 import fp8_gemm_nt_ref, per_block_quant_fp8_ref, per_token_group_quant_fp8_ref

_fixture_ok = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
)


def _sw(bn=128, st=4, s=1, **kw):
    return dict(SWAP_AB=True, BLOCK_N=bn, BLOCK_M=16, num_warps=4, num_stages=st, SPLIT_K=s, **kw)


# the families and variants the decode table is built from (bench_gemm_decode.py)
_CONFIGS = [
    None,  # the library's choice (table or heuristic)
    _sw(128, 4, 3),
    _sw(64, 6, 2, SPLIT_FAST=True),
    _sw(64, 4, 5, SPLIT_FAST=True),
    _sw(128, 5, 4, PDL=2, PREFETCH=4, AHEAD=4),  # GPU-only options: ignored by the interpreter
    _sw(128, 6, 3, PDL=1, PREFETCH=2, SPLIT_FAST=True),
]


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double(), y.double()
    return float(1 - 2 * (x * y).sum() / (x * x + y * y).sum())


def _operands(m, n, k, device, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=g) * torch.exp(torch.randn(m, 1, generator=g))  # per-row magnitudes
    b = torch.randn(n, k, generator=g) * 0.05
    b[:: max(1, n // 3)] *= 8  # some weight blocks at other scales
    a_q, a_s = per_token_group_quant_fp8_ref(a)
    b_q, b_s = per_block_quant_fp8_ref(b)
    a_s = torch.empty_strided(a_s.shape, (1, m), dtype=a_s.dtype).copy_(a_s)  # MN-major, as the quant kernel writes
    return a_q.to(device), a_s.to(device), b_q.to(device), b_s.to(device)


def _check(m, n, k, device, seed, config):
    a, a_s, b, b_s = _operands(m, n, k, device, seed)
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device=device)
    fp8_gemm_nt(a, a_s, b, b_s, out=out, config=config)
    assert not torch.isnan(out).any(), f"unwritten outputs for M={m} N={n} K={k} config={config}"
    ref = fp8_gemm_nt_ref(a.cpu(), a_s.cpu(), b.cpu(), b_s.cpu(), out_dtype=torch.float32)
    d = calc_diff(out.float().cpu(), ref)
    assert d < 1e-3, f"calc_diff {d} for M={m} N={n} K={k} config={config}"
    return out


# (M, N, K): decode M 1..16, N with tails, K = 16·j ∈ [128, 768] (tails and 1..6 K blocks)
_SHAPES = st.tuples(st.integers(1, 16), st.integers(1, 300), st.integers(8, 48).map(lambda j: 16 * j))


@_fixture_ok
@given(shape=_SHAPES, config=st.sampled_from(_CONFIGS), seed=st.integers(0, 2**31 - 1))
def test_swap_ab_matches_reference(device, shape, config, seed):
    _check(*shape, device, seed, config)


@pytest.mark.parametrize(
    "m,n,k,config",
    [
        (1, 300, 640, _sw(128, 4, 2, SPLIT_FAST=True)),  # 44-row tail in the third tile, split-fast grid
        (7, 130, 1152, _sw(64, 6, 3, SPLIT_FAST=True)),  # split-fast grid, 9 K blocks in 3 splits, N tail
        (16, 64, 400, _sw(128, 4, 2)),  # K tail (400 = 3·128 + 16), one N tile past N
        # 5 / 9 splits of one K block each: the in-kernel reduce (four partials a step) ends on a step holding one
        # partial (tester22 mutation #52: a reduce loop stopping at split_k - 1 dropped it, no case had 5 or 9 splits)
        (3, 100, 640, _sw(64, 4, 5)),
        (2, 70, 1152, _sw(64, 4, 9, SPLIT_FAST=True)),
    ],
)
def test_swap_ab_edge_shapes(device, m, n, k, config):
    _check(m, n, k, device, 3, config)


@pytest.mark.parametrize(
    "m,n,k,config",
    [
        # 64 / 128 token columns (the 16 < M ≤ 128 swap-AB family): odd M inside one token tile, N tail,
        # split-K over 5 blocks (3 + 2) reduced in-kernel; M past one 64-token tile (two token tiles)
        (77, 130, 640, dict(_sw(64, 4, 2), BLOCK_M=128)),
        (100, 64, 256, dict(_sw(64, 4, 1), BLOCK_M=128)),
        (65, 200, 384, dict(_sw(128, 4, 3), BLOCK_M=64)),
    ],
)
def test_swap_ab_wide_token_tiles(device, m, n, k, config):
    _check(m, n, k, device, 5, config)


def compile_swap_ab_sm90(bn: int, bm: int, warps: int, stages: int, split: bool):
    """The swap-AB kernel compiled for sm_90a (Triton's compiler, no GPU); every constexpr passed explicitly."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = dict(a_desc=f"tensordesc<fp8e4nv[{bm}, 128]>", b_desc=f"tensordesc<fp8e4nv[{bn}, 128]>",
               a_scale_ptr="*fp32", b_scale_ptr="*fp32", out_ptr="*bf16", ws_ptr="*fp32" if split else "*bf16",
               count_ptr="*i32" if split else "*bf16", b_ptr="*fp8e4nv")
    sig.update({k: "i32" for k in ("M", "N", "num_k_blocks", "k_blocks_per_split", "split_k", "stride_asm",
                                   "stride_ask", "stride_bsn", "stride_bsk", "stride_om", "stride_on", "stride_bn")})
    consts = dict(BLOCK_N=bn, BLOCK_M=bm, BLOCK_K=128, NUM_STAGES=stages, SPLIT=split, PDL=0, PREFETCH=0, AHEAD=0,
                  SPLIT_FAST=False)
    sig.update({k: "constexpr" for k in consts})
    return triton.compile(ASTSource(S._fp8_gemm_swap_ab_kernel, sig, consts), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=warps, num_stages=stages))


@pytest.mark.parametrize("bn,bm,warps,split", [(64, 128, 4, False), (64, 128, 4, True)])
def test_swap_ab_wide_token_tiles_compile_for_sm90(bn, bm, warps, split):
    """ptxas sm_90a: the 64/128-token tiles keep the fp8 wgmma (m64 n{bm}) and TMA loads; without split-K they do not
    spill. With split-K the per-element partial addresses (64-bit, one per accumulator element) of the store and the
    in-kernel reduce exceed 255 registers at these tile sizes: 392 bytes spilled at 64×128 (1124 with four partials
    in flight, hence two), 528 at 128×64 — what the H200 sweep times for those configs. (128×128 on 8 warps spills 40
    bytes even without split-K: not a candidate.)"""
    from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report, spill_store_bytes

    ptx = ptx_in_fresh_process(__name__, "compile_swap_ab_sm90", bn, bm, warps, 4, split)
    assert f"wgmma.mma_async.sync.aligned.m64n{bm}k32.f32.e4m3.e4m3" in ptx
    assert "cp.async.bulk.tensor.2d" in ptx
    spilled = max(spill_store_bytes(ptxas_report(ptx)))
    assert spilled == 0 if not split else spilled <= 392, spilled


def test_swap_ab_split_fast_deterministic(device):
    # the in-kernel reduce sums partials in split order whichever program arrives last: repeated
    # launches are bit-identical, and the arrival counters are back at 0 afterwards
    cfg = _sw(64, 6, 4, SPLIT_FAST=True)
    first = _check(5, 200, 1024, device, 11, cfg)
    a, a_s, b, b_s = _operands(5, 200, 1024, device, 11)
    assert torch.equal(fp8_gemm_nt(a, a_s, b, b_s, config=cfg), first)
    assert all(int(buf.abs().sum()) == 0 for buf in S._counters.values())


def test_small_m_table_and_default():
    """Every committed entry is a valid swap-AB config with an exact K split; M ≤ 16 resolves to one."""
    from tritonseek.kernels.fp8_gemm_small import _TUNED_SMALL

    assert _TUNED_SMALL
    for (cls, n, k), cfg in _TUNED_SMALL.items():
        assert cls in ("1", "16") and cfg["SWAP_AB"] and cfg["BLOCK_N"] in (64, 128) and cfg["BLOCK_M"] == 16
        kb = -(-k // 128)
        s = cfg["SPLIT_K"]
        assert 1 <= s <= kb and -(-kb // -(-kb // s)) == s, (cls, n, k, s)  # every split owns ≥ 1 block
        assert cfg.get("PDL", 0) in (0, 1, 2, True, False)
    for m in range(1, 17):
        for n, k in ((2112, 7168), (7168, 16384), (3072, 2048), (2048, 10944), (1000, 3000)):
            cfg = get_config(m, n, k, 132)
            assert cfg["SWAP_AB"] and cfg["BLOCK_M"] == 16
    assert not get_config(17, 2112, 7168, 132).get("SWAP_AB")


def test_swap_ab_rejects_bad_configs():
    a, a_s, b, b_s = _operands(2, 128, 256, torch.device("cpu"), 1)
    with pytest.raises(ValueError, match="BLOCK_N"):
        fp8_gemm_nt(a, a_s, b, b_s, config=_sw(bn=256))
    with pytest.raises(ValueError, match="PDL"):
        fp8_gemm_nt(a, a_s, b, b_s, config=_sw(PDL=3))


# ---- H200: the V3 decode shapes (N×K of the slice's GEMMs, fused and unfused) -------------------
_V3_NK = [(2112, 7168), (24576, 1536), (7168, 16384), (36864, 7168), (7168, 18432), (4096, 7168), (7168, 2048),
          (1536, 7168), (576, 7168), (18432, 7168), (2048, 7168)]
_V2LITE_NK = [(3072, 2048), (576, 2048), (2048, 2048), (21888, 2048), (2048, 10944), (5632, 2048), (2048, 2816)]


def _gpu_operands(m, n, k, device):
    a_q, a_s = per_token_group_quant_fp8_ref(torch.randn(m, k, device=device))
    a_s = torch.empty_strided(a_s.shape, (1, m), dtype=a_s.dtype, device=device).copy_(a_s)
    b_q, b_s = per_block_quant_fp8_ref(torch.randn(n, k, device=device) * 0.05)
    return a_q, a_s, b_q, b_s


@pytest.mark.gpu
@pytest.mark.parametrize("n,k", _V3_NK + _V2LITE_NK)
def test_small_m_table_gpu(device, n, k):
    # the library's choice (committed table or heuristic) at every decode M 1..16, and the variant
    # paths (early PDL trigger + L2 prefetch + in-loop prefetch, split-fast grid, late PDL)
    a_q, a_s, b_q, b_s = _gpu_operands(16, n, k, device)
    # PREFETCH=64: the launcher caps it at the split's K blocks (the whole split prefetched into L2)
    variants = [None, _sw(128, 5, 4, PDL=2, PREFETCH=4, AHEAD=4), _sw(64, 6, 3, SPLIT_FAST=True, PDL=2, PREFETCH=64),
                _sw(128, 4, 2, PDL=1, PREFETCH=2)]
    for m in (1, 2, 3, 4, 8, 13, 16):
        ref = fp8_gemm_nt_ref(a_q[:m], a_s[:m], b_q, b_s, out_dtype=torch.float32)
        a_sm = torch.empty_strided((m, a_s.shape[1]), (1, m), dtype=a_s.dtype, device=device).copy_(a_s[:m])
        # variants at three M (M == 1 and other M compile apart) on the V3 shapes; the choice everywhere
        for cfg in variants if m in (1, 8, 13) and (n, k) in _V3_NK else variants[:1]:
            out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device=device)
            fp8_gemm_nt(a_q[:m].contiguous(), a_sm, b_q, b_s, out=out, config=cfg)
            assert not torch.isnan(out).any(), (m, cfg)
            assert calc_diff(out.float(), ref) < 1e-3, (m, cfg)


@pytest.mark.gpu
@pytest.mark.parametrize("n,k", [(2112, 7040), (576, 1600)])  # K tails (7040 = 55·128, 1600 = 12.5·128)
def test_small_m_k_tail_gpu(device, n, k):
    a_q, a_s, b_q, b_s = _gpu_operands(3, n, k, device)
    ref = fp8_gemm_nt_ref(a_q, a_s, b_q, b_s, out_dtype=torch.float32)
    for cfg in (None, _sw(128, 5, 4, PDL=2, PREFETCH=4, AHEAD=4), _sw(64, 6, 3, SPLIT_FAST=True, PDL=2, PREFETCH=2)):
        out = torch.full((3, n), float("nan"), dtype=torch.bfloat16, device=device)
        fp8_gemm_nt(a_q, a_s, b_q, b_s, out=out, config=cfg)
        assert not torch.isnan(out).any() and calc_diff(out.float(), ref) < 1e-3, cfg


@pytest.mark.gpu
def test_quant_then_pdl_gemm_graph_gpu(device):
    # the decode sequence under a CUDA graph: quant (triggers its dependents early) → GEMM launched
    # with PDL=2 → quant → GEMM, twice; fresh activations copied into the captured input buffers give
    # the right products, replays are bit-identical (counters re-armed, no read of stale q/s)
    k, n1, n2 = 7168, 2112, 4096
    cfg1 = _sw(128, 5, 14, PDL=2, PREFETCH=4, AHEAD=4)
    cfg2 = _sw(128, 4, 7, PDL=2, PREFETCH=64, SPLIT_FAST=True)
    w1 = per_block_quant_fp8_ref(torch.randn(n1, k, device=device) * 0.05)
    w2 = per_block_quant_fp8_ref(torch.randn(n2, k, device=device) * 0.05)
    x = torch.randn(2, k, device=device, dtype=torch.bfloat16)
    o1 = torch.empty(2, n1, dtype=torch.bfloat16, device=device)
    o2 = torch.empty(2, n2, dtype=torch.bfloat16, device=device)

    def step():
        q, s = per_token_group_quant_fp8(x)
        fp8_gemm_nt(q, s, w1[0], w1[1], out=o1, config=cfg1)
        q2, s2 = per_token_group_quant_fp8(x * 2)
        fp8_gemm_nt(q2, s2, w2[0], w2[1], out=o2, config=cfg2)

    step()  # compiles, and allocates the arrival counters outside the capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    for seed in range(2):
        x.copy_(torch.randn(2, k, device=device, generator=torch.Generator(device).manual_seed(seed)))
        o1.fill_(float("nan"))
        o2.fill_(float("nan"))
        g.replay()
        first = (o1.clone(), o2.clone())
        g.replay()
        assert torch.equal(o1, first[0]) and torch.equal(o2, first[1])
        for xx, w, o in ((x, w1, o1), (x * 2, w2, o2)):
            q, s = per_token_group_quant_fp8_ref(xx.float())
            ref = fp8_gemm_nt_ref(q, s, w[0], w[1], out_dtype=torch.float32)
            assert calc_diff(o.float(), ref) < 1e-3
