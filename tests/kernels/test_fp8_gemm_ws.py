"""fp8_gemm_nt_ws (Gluon, warp-specialized) against tritonseek.kernels.reference.fp8.

Gluon has no interpreter, so on the CPU this file only (a) compiles the kernel for sm_90a with
Triton's own compiler and ptxas (no GPU needed) and checks the instructions the design relies on
(wgmma, TMA loads, setmaxnreg) and that ptxas neither spills nor serializes the wgmmas (C7514),
and (b) checks the launcher's errors. The numerical properties run on the H200 (gpu marker).

Accuracy measure and tolerance, as for fp8_gemm_nt: DeepGEMM's calc_diff = 1 − 2Σxy / Σ(x² + y²)
< 1e-3 against the dequantized fp32 product (fp8_gemm_nt_ref). Both sides see the same fp8
inputs and scales, so what remains is fp32 summation order and the output rounding (bf16:
≈ 4e-6 in calc_diff terms); a wrong scale, a dropped K block or a mis-indexed tile gives ≳ 1e-2.
"""

from __future__ import annotations

import re

import pytest
import torch
import triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report
from tritonseek.kernels import fp8_gemm_ws as W
from tritonseek.kernels.fp8_gemm_ws import fp8_gemm_nt_ws
from tritonseek.kernels.reference.fp8 import (
    fp8_gemm_nt_ref,
    per_block_quant_fp8_ref,
    per_token_group_quant_fp8_ref,
)

_fixture_ok = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
)


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """DeepGEMM's accuracy measure: 1 − 2Σxy / Σ(x² + y²) (0 for identical tensors)."""
    x, y = x.double(), y.double()
    return float(1 - 2 * (x * y).sum() / (x * x + y * y).sum())


def compile_sm90(cfg: dict, out_dtype: torch.dtype = torch.bfloat16, tma_store: bool = True):
    """Compile the kernel for sm_90a on any machine (Triton's compiler, no GPU); returns the kernel."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    bn, bk, wgs = cfg["BLOCK_N"], W.BLOCK_K, cfg["WGS"] or 2
    split = bool(cfg["SPLIT"])
    bm = 64 * wgs if split else cfg["BLOCK_M"]
    c_rows = 64 if split else bm
    maxnreg, consumer_regs, producer_regs = ((W._MAXNREG, cfg["CONSUMER_REGS"], cfg["PRODUCER_REGS"]) if wgs == 2
                                             else W._WGS3_REGS)
    warps = 4 if split else W._NUM_WARPS
    pipe = bool(cfg["PIPE"]) and wgs == 2 and bn != 256
    ahead = int(cfg["SCALE_AHEAD"]) if wgs == 3 or (pipe and cfg["WGS"] is not None) else 0  # as the launcher
    cty = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[out_dtype]
    a_rows = 64 if wgs == 3 else bm
    la = W._smem_layout([a_rows, bk], gl.float8e4nv)
    lb = W._smem_layout([bn, bk], gl.float8e4nv)
    c_cols = min(bn, 128)  # WIDE (256-column) tiles store 128-column halves
    lc = W._smem_layout([c_rows, c_cols], W._GL_DTYPES[out_dtype])
    sig = dict(a_desc=f"tensordesc<fp8e4nv[{a_rows}, {bk}],{la!r}>", b_desc=f"tensordesc<fp8e4nv[{bn}, {bk}],{lb!r}>",
               c_desc=f"tensordesc<{cty}[{c_rows}, {c_cols}],{lc!r}>" if tma_store else "constexpr",
               c_ptr=f"*{cty}", a_scale_ptr="*fp32", b_scale_ptr="*fp32")
    sig.update({name: "i32" for name in ("M", "N", "num_k_blocks", "stride_asm", "stride_ask", "stride_bsn",
                                         "stride_bsk", "stride_cm", "stride_cn", "num_programs")})
    consts = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=cfg["GROUP_M"], NUM_STAGES=cfg["NUM_STAGES"],
                  TMA_STORE=tma_store, PRODUCER_REGS=producer_regs, SPLIT=split, CONSUMER_REGS=consumer_regs,
                  UNROLL2=bool(cfg["UNROLL2"]), WGS=wgs, PIPE=bool(cfg["PIPE"]) and wgs == 2 and bn != 256,
                  PIPE0=bool(cfg["PIPE0"]) and bool(cfg["PIPE"]) and wgs == 2 and bn != 256,
                  IDLE_SKIP=bool(cfg["IDLE_SKIP"]) and wgs == 3, TAIL_N64=bool(cfg["TAIL_N64"]) and wgs == 3,
                  SCALE_AHEAD=ahead, FAST_COORDS=bool(cfg["FAST_COORDS"]),
                  num_warps=warps)
    if not tma_store:
        consts["c_desc"] = None
    sig.update({name: "constexpr" for name in consts})
    src = GluonASTSource(W._fp8_gemm_ws_kernel, sig, consts)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, maxnreg=maxnreg))



@pytest.mark.parametrize("bn,out_dtype,tma_store,split,unroll2,pipe,pipe0,ahead", [
    (128, torch.bfloat16, True, False, False, False, False, 0),  # cooperative, one product set
    (64, torch.float32, False, False, True, False, False, 0),
    (128, torch.bfloat16, True, True, True, False, False, 0),  # split + unrolled
    (128, torch.bfloat16, True, True, True, True, False, 0),  # split + two wgmmas in flight (PIPE), block 0 alone
    (128, torch.bfloat16, True, True, True, True, True, 0),  # PIPE from K block 0 (PIPE0, the default)
    (128, torch.bfloat16, True, True, True, True, True, 1),  # + SCALE_AHEAD 1: scales loaded a pair ahead
    (128, torch.bfloat16, True, True, True, True, True, 2),  # 2 here = FAST_COORDS (division-free tile coordinates)
])
def test_ws_compiles_for_sm90_without_spills(bn, out_dtype, tma_store, split, unroll2, pipe, pipe0, ahead):
    cfg = dict(W.ws_config(4096, 7168, 7168), BLOCK_N=bn, SPLIT=split, UNROLL2=unroll2, WGS=2, PIPE=pipe, PIPE0=pipe0,
               SCALE_AHEAD=int(ahead == 1), FAST_COORDS=ahead == 2)
    ptx = ptx_in_fresh_process(__name__, "compile_sm90", cfg, out_dtype, tma_store)
    # fp8 wgmma, 4 k32 steps per 128-wide K block; issue sites: block 0 and the loop (UNROLL2 / PIPE: block 0,
    # two in the loop, the tail; PIPE0: no block-0 site), per consumer partition (SPLIT: two)
    sites = (4 if unroll2 or pipe else 2) * (2 if split else 1) - (2 if pipe0 else 0)
    assert ptx.count(f"wgmma.mma_async.sync.aligned.m64n{bn}k32.f32.e4m3.e4m3") == 4 * sites
    if split:  # each warpgroup synchronizes only itself (its own named barrier, 128 threads)
        assert re.search(r"bar.sync\s+0, 128;", ptx) and re.search(r"bar.sync\s+[1-9], 128;", ptx)
    assert "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier" in ptx  # TMA loads
    # consumers take the producer's registers (40 → 232/240 each)
    assert re.search(r"setmaxnreg.inc.sync.aligned.u32\s+(240|232);", ptx)
    assert ("cp.async.bulk.tensor.2d.global.shared::cta" in ptx) == tma_store  # TMA-store epilogue
    report = ptxas_report(ptx)
    assert "C7514" not in report and "serialized" not in report, report  # wgmmas stay asynchronous
    assert "C7508" not in report, report  # setmaxnreg honoured
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert all(s == ("0", "0") for s in spills), report


@pytest.mark.parametrize("ahead", [0, 1])
def test_ws_three_warpgroups_compile_for_sm90_without_spills(ahead):
    # WGS = 3: 192-row tiles (three 64-row A boxes per stage), three consumer warpgroups at 160 registers
    # with one product set each (serial promotion), the TMA warp at 24; SCALE_AHEAD 1: scales a block ahead
    cfg = dict(W.ws_config(4096, 7168, 7168), WGS=3, SCALE_AHEAD=ahead)
    ptx = ptx_in_fresh_process(__name__, "compile_sm90", cfg, torch.bfloat16, True)
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3") == 4 * 2 * 3  # block 0 + loop, ×3
    # TAIL_N64: the same sites at n64 for last column tiles with ≤ 64 columns inside N (on where N % 128 ≤ 64)
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3") == 4 * 2 * 3
    assert re.search(r"setmaxnreg.inc.sync.aligned.u32\s+160;", ptx)
    assert re.search(r"setmaxnreg.dec.sync.aligned.u32\s+24;", ptx)
    assert ptx.count("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier") >= 4  # 3 A boxes + B per stage
    report = ptxas_report(ptx)
    assert "C7514" not in report and "serialized" not in report and "C7508" not in report, report
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert spills and all(s == ("0", "0") for s in spills), report


@pytest.mark.parametrize("stages", [3, 4])
def test_ws_wide_tiles_compile_for_sm90_without_spills(stages):
    # BLOCK_N = 256: per warpgroup two m64n128 wgmmas per K block through ONE product register set (the second takes
    # the first's registers as its never-read accumulator), acc0 + acc1 + product in 232 registers; 3 stages with two
    # epilogue buffers per warpgroup, 4 with one, both inside 227 KB of shared memory
    cfg = dict(W.ws_config(4096, 7168, 2048), BLOCK_N=256, NUM_STAGES=stages, WGS=2)
    ptx = ptx_in_fresh_process(__name__, "compile_sm90", cfg, torch.bfloat16, True)
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3") == 4 * 2 * 2  # 2 halves × 2 partitions
    assert ptx.count("cp.async.bulk.tensor.2d.global.shared::cta") == 2 * 2  # a TMA store per half per partition
    report = ptxas_report(ptx)
    assert "C7514" not in report and "serialized" not in report and "C7508" not in report, report
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert spills and all(s == ("0", "0") for s in spills), report


def test_wide_for_keeps_the_waves():
    # WIDE 128×256 tiles only where N % 256 == 0 and half as many tiles cost no wave (132 SMs): the three M = 4096
    # shapes of _TUNED's WIDE entries, and mid M down to where 128×128 tiles fit in one wave
    assert all(W.wide_for(4096, n, 132) for n in (7168, 4096))
    assert W.wide_for(512, 7168, 132) and W.wide_for(333, 7168, 132)  # 112 vs 224 tiles, 84 vs 168: 2 units each
    assert not W.wide_for(256, 7168, 132)  # 56 wide tiles = 2 units against one wave of 112
    assert not W.wide_for(4096, 2112, 132) and not W.wide_for(4096, 2112 + 128, 132)  # half-empty last tile


def test_wgs_for_picks_192_row_tiles_where_their_waves_win():
    # the H200 measurements behind _WGS3_TILE_COST (M = 4096, 132 SMs, session 15): serial 192-row tiles beat
    # PIPE 128-row tiles on three of DeepGEMM's shapes (3 vs 5, 32 vs 47, 43 vs 63 waves) and lost on the other
    # three (10 vs 14, 6 vs 8, 10 vs 14); M = 256, 512: 2 everywhere
    picks = {(n, k): W.wgs_for(4096, n, 128, 132) for n, k in _REAL_NK}
    assert picks == {(2112, 7168): 3, (24576, 1536): 3, (32768, 512): 3, (7168, 16384): 2, (4096, 7168): 2,
                     (7168, 2048): 2}
    assert all(W.wgs_for(m, n, 128, 132) == 2 for m in (256, 512) for n, _ in _REAL_NK)
    # with SCALE_AHEAD (the 192-row tiles' cost 1.37, session 20 W1): 7168×16384 moves to 192 rows at M = 4096 (0.964
    # measured), 4096×7168 stays at 128 (192 rows measured 1.045); M ≤ 1024 keeps 128-row tiles at 7168×16384
    ahead = {(n, k): W.wgs_for(4096, n, 128, 132, ahead=True) for n, k in _REAL_NK}
    assert ahead[(7168, 16384)] == 3 and ahead[(4096, 7168)] == 2 and ahead[(2112, 7168)] == 3
    assert all(W.wgs_for(m, 7168, 128, 132, ahead=True) == 2 for m in (129, 256, 512, 1024))
    # PIPE0 (block 0 inside the two-in-flight loop) is the default where it was measured (M = 4096), not for the
    # M ≤ 128 Gluon entries of fp8_gemm.py
    assert W.ws_config(4096, 7168, 2048)["PIPE0"] and not W.ws_config(128, 7168, 2048)["PIPE0"]


def _cpu_operands(m=8, n=128, k=256):
    a_q, a_s = per_token_group_quant_fp8_ref(torch.randn(m, k))
    b_q, b_s = per_block_quant_fp8_ref(torch.randn(n, k))
    return a_q, a_s, b_q, b_s


def test_ws_rejects_non_cuda():
    a, a_s, b, b_s = _cpu_operands()
    with pytest.raises(ValueError, match="CUDA.*"):
        fp8_gemm_nt_ws(a, a_s, b, b_s)
    with pytest.raises(ValueError, match="fp8_gemm_nt_ws is a Gluon kernel"):  # names the launcher called
        fp8_gemm_nt_ws(a, a_s, b, b_s)


def test_ws_rejects_bad_layouts():
    a, a_s, b, b_s = _cpu_operands()
    with pytest.raises(TypeError, match="a must have dtype"):
        fp8_gemm_nt_ws(a.float(), a_s, b, b_s)
    with pytest.raises(ValueError, match="b must be K-contiguous"):
        fp8_gemm_nt_ws(a, a_s, b.t().contiguous().t(), b_s)
    with pytest.raises(ValueError, match="a_scale must be"):
        fp8_gemm_nt_ws(a, a_s[:, :1], b, b_s)
    with pytest.raises(ValueError, match="b_scale must be"):
        fp8_gemm_nt_ws(a, a_s, b, b_s[:, :1])
    with pytest.raises(TypeError, match="out_dtype"):
        fp8_gemm_nt_ws(a, a_s, b, b_s, out_dtype=torch.int32)
    out = torch.empty(8, 128, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="unknown fp8_gemm_nt_ws config keys"):  # checked before any launch
        W.launch_fp8_gemm_ws(a, a_s, b, b_s, out, dict(SKEW=True))
    with pytest.raises(ValueError, match=r"BLOCK_N=96 must be one of \(64, 128, 256\)"):
        W.launch_fp8_gemm_ws(a, a_s, b, b_s, out, dict(BLOCK_N=96))
    for bad, key in ((dict(NUM_STAGES=0), "NUM_STAGES"), (dict(PIPE0=1), "PIPE0"), (dict(CONSUMER_REGS=233), "CONSUMER")):
        with pytest.raises(ValueError, match=key):
            W.launch_fp8_gemm_ws(a, a_s, b, b_s, out, bad)
    with pytest.raises(TypeError, match="config must be a dict"):
        W.launch_fp8_gemm_ws(a, a_s, b, b_s, out, [1])
    for bad in (dict(WGS=3), dict(NUM_STAGES=5), dict(SPLIT=False)):  # WIDE tiles: two split warpgroups, ≤ 4 stages
        with pytest.raises(ValueError, match="BLOCK_N 256"):
            W.launch_fp8_gemm_ws(a, a_s, b, b_s, out, dict(bad, BLOCK_N=256))
    for bad in (dict(WGS=4), dict(WGS=3, NUM_STAGES=5), dict(WGS=3, SPLIT=False)):
        with pytest.raises(ValueError, match="WGS"):
            W.launch_fp8_gemm_ws(a, a_s, b, b_s, out, bad)
    # SCALE_AHEAD is read by the PIPE loop of 128-row tiles and the 192-row loop only; elsewhere the launcher dropped
    # it silently (tester, s19): refused now, the loops that read it still accepted
    for bad in (dict(SCALE_AHEAD=1, PIPE=False), dict(SCALE_AHEAD=1, PIPE=False, WGS=2),
                dict(SCALE_AHEAD=1, BLOCK_N=256, NUM_STAGES=3)):
        with pytest.raises(ValueError, match="SCALE_AHEAD=1 needs"):
            W.launch_fp8_gemm_ws(a, a_s, b, b_s, out, bad)
    for ok in (dict(SCALE_AHEAD=1), dict(SCALE_AHEAD=1, WGS=2), dict(SCALE_AHEAD=1, WGS=3, PIPE=False),
               dict(SCALE_AHEAD=0, PIPE=False)):
        W.check_ws_config(dict(W.ws_config(4096, 7168, 7168), **ok))


def test_fp8_gemm_nt_gluon_entries(device):
    # fp8_gemm_nt dispatches its GLUON table entries to this kernel on a Hopper GPU; elsewhere (the
    # interpreter) the same entry's tl keys run, so an entry must stay a valid tl config
    from tritonseek.kernels import fp8_gemm as G

    gluon = [key for key, cfg in G._TUNED.items() if cfg.get("GLUON") is not None]
    # large M, and since fdb4683 two M = 128 entries (128×32768×512, 128×7168×2048) where the H200 sweep picked it
    assert gluon and all(key[0] in ("large", "128") for key in gluon)
    for key in gluon:
        cfg = G._TUNED[key]
        if cfg["GLUON"].get("STREAM_K"):  # the stream-K kernel's entry: its keys are sk_config overrides
            from tritonseek.kernels.fp8_gemm_ws_sk import sk_config

            sk_config({k: v for k, v in cfg["GLUON"].items() if k not in ("MIN_M", "STREAM_K")})
            continue
        # MIN_M, WIDE: read by fp8_gemm_nt's dispatch
        gluon = {k: v for k, v in cfg["GLUON"].items() if k not in ("MIN_M", "WIDE")}
        assert isinstance(cfg["GLUON"].get("MIN_M", 0), int) and isinstance(cfg["GLUON"].get("WIDE", False), bool)
        merged = dict(W.ws_config(4096, key[1], key[2]), **gluon)
        assert set(merged) == set(W._DEFAULT_WS), f"unknown GLUON keys in {key}"
        assert merged["BLOCK_N"] in (64, 128) and merged["BLOCK_M"] == 128
    if device.type == "cpu":  # interpreter: the tl half of an entry, at a small shape
        a, a_s, b, b_s = _cpu_operands(m=70, n=256, k=384)
        tl_cfg = dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3, SPLIT_K=1,
                      GLUON=dict(SPLIT=True, UNROLL2=True))
        out = G.fp8_gemm_nt(a, a_s, b, b_s, config=tl_cfg)
        ref = fp8_gemm_nt_ref(a, a_s, b, b_s, out_dtype=torch.float32)
        assert calc_diff(out.float(), ref) < 1e-3


# ---------------------------------------------------------------- GPU (H200) properties

def _gpu_operands(m, n, k, device, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    a = torch.randn(m, k, device=device, generator=g)
    a *= torch.exp(torch.randn(m, 1, device=device, generator=g))  # rows at different scales
    b = torch.randn(n, k, device=device, generator=g) * 0.05
    a_q, a_s = per_token_group_quant_fp8_ref(a)
    b_q, b_s = per_block_quant_fp8_ref(b)
    return a_q, a_s.t().contiguous().t(), b_q, b_s


def _check_gpu(m, n, k, device, seed, config=None, out_dtype=torch.bfloat16, out_stride_pad=0, fn=None):
    # fn: the launcher under test (default fp8_gemm_nt_ws; test_fp8_gemm_ws_sk passes fp8_gemm_nt_sk); returns out
    a, a_s, b, b_s = _gpu_operands(m, n, k, device, seed)
    # out_stride_pad > 0: a row-padded view (unaligned rows → the masked-store epilogue)
    base = torch.full((m, n + out_stride_pad), float("nan"), dtype=out_dtype, device=device)
    out = base[:, :n]
    res = (fn or fp8_gemm_nt_ws)(a, a_s, b, b_s, out=out, out_dtype=out_dtype, config=config)
    torch.cuda.synchronize()
    assert res.data_ptr() == out.data_ptr()
    assert not torch.isnan(out).any(), "some outputs were never written"
    if out_stride_pad:
        assert torch.isnan(base[:, n:]).all(), "wrote outside out"
    ref = fp8_gemm_nt_ref(a, a_s, b, b_s, out_dtype=torch.float32)
    diff = calc_diff(out.float(), ref)
    assert diff < 1e-3, f"calc_diff {diff} for M={m} N={n} K={k} config={config}"
    return out


_COOP = dict(SPLIT=False, UNROLL2=False, PIPE=False)  # the cooperative 8-warp partition, one product set
# every option of the kernel appears at least once; each new (config, dtype, divisibility) costs a
# ~2 s compile on the device, so the GPU property test is capped at 10 examples
_GPU_CONFIGS = [
    None,  # split warpgroups, two wgmmas in flight (PIPE) on 128-row tiles, 192-row tiles where wgs_for picks them
    dict(BLOCK_N=64, NUM_STAGES=6),
    dict(NUM_STAGES=5, GROUP_M=16),
    dict(BLOCK_N=64, TMA_STORE=False, UNROLL2=False),
    dict(_COOP, NUM_STAGES=3, GROUP_M=1),
    dict(UNROLL2=True, SPLIT=False, NUM_STAGES=2, TMA_STORE=False),
    dict(WGS=3),  # 192-row tiles, three consumer warpgroups
    dict(WGS=3, TMA_STORE=False),
    dict(WGS=2, PIPE=True),  # two wgmmas in flight per warpgroup
    dict(WGS=2, PIPE=False),  # UNROLL2: one in flight, the previous block promoted under it
    dict(BLOCK_N=256, NUM_STAGES=3),  # WIDE 128×256 tiles, two epilogue buffers per warpgroup
    dict(WGS=2, SCALE_AHEAD=1, FAST_COORDS=True),  # scales a pair ahead, division-free tile coordinates
]


@pytest.mark.gpu
@settings(_fixture_ok, max_examples=min(10, settings.default.max_examples))
@given(
    m=st.integers(1, 700),
    n=st.integers(1, 900),
    kb16=st.integers(1, 120),  # K = 16·kb16 ∈ [16, 1920]: K tails, odd numbers of 128-blocks
    config=st.sampled_from(_GPU_CONFIGS),
    out_dtype=st.sampled_from([torch.bfloat16, torch.bfloat16, torch.float32, torch.float16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_ws_matches_reference_gpu(device, m, n, kb16, config, out_dtype, seed):
    _check_gpu(m, n, 16 * kb16, device, seed, config, out_dtype)


# GROUP_M 3: partial last groups (FAST_COORDS' division path). auto_ahead_fast: WGS None with SCALE_AHEAD (7168×2048's
# entry): 192-row tiles with it where wgs_for picks them (4096 × 576 here), else 128-row tiles without it
@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k,pad", [(333, 2112, 7168, 0), (4096, 576, 1152, 0), (130, 7168, 2048, 8),
                                       (1, 4096, 7168, 0), (257, 300, 1040, 3), (200, 256, 128, 0),
                                       (129, 384, 256, 0)])
@pytest.mark.parametrize("cfg", [dict(WGS=2), dict(WGS=3), dict(WGS=2, PIPE=False), dict(WGS=2, PIPE0=False),
                                 dict(BLOCK_N=256), dict(BLOCK_N=256, NUM_STAGES=3), dict(WGS=3, SCALE_AHEAD=1),
                                 dict(WGS=3, FAST_COORDS=True, GROUP_M=3), dict(SCALE_AHEAD=1, FAST_COORDS=True)],
                         ids=["pipe0", "wgs3", "unroll2", "pipe", "wide", "wide3", "wgs3_ahead1", "wgs3_fast_g3",
                              "auto_ahead_fast"])
def test_ws_tails_gpu(device, m, n, k, pad, cfg):
    # K = 128 / 256: one and two K blocks (the unrolled loop's empty-loop paths); 1152, 1040: odd counts. WIDE
    # (256-column) tiles: N = 2112, 300, 384 end in a tile whose second half lies past N (no b_scale row there)
    _check_gpu(m, n, k, device, seed=m + n + k, config=cfg, out_stride_pad=pad)


_REAL_NK = [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)]


@pytest.mark.gpu
@pytest.mark.parametrize("m", [333, 256])  # wide_for: WIDE at 333 × 7168, 128×128 tiles at 256 × 7168
def test_fp8_gemm_nt_wide_entry_gpu(device, m):
    # fp8_gemm_nt with a GLUON entry carrying WIDE=True (the key _TUNED would use): right result either way
    from tritonseek.kernels import fp8_gemm as G

    a, a_s, b, b_s = _gpu_operands(m, 7168, 2048, device, seed=m)
    out = torch.full((m, 7168), float("nan"), dtype=torch.bfloat16, device=device)
    cfg = dict(G._TUNED[("large", 7168, 2048)], GLUON=dict(SPLIT=True, UNROLL2=True, WIDE=True))
    G.fp8_gemm_nt(a, a_s, b, b_s, out=out, config=cfg)
    torch.cuda.synchronize()
    assert not torch.isnan(out).any()
    assert calc_diff(out.float(), fp8_gemm_nt_ref(a, a_s, b, b_s, out_dtype=torch.float32)) < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("n,k", _REAL_NK)
@pytest.mark.parametrize("cfg", [dict(WGS=2), dict(WGS=3), dict(WGS=2, PIPE=False), dict(WGS=2, PIPE0=False),
                                 dict(WGS=3, SCALE_AHEAD=1), dict(WGS=2, FAST_COORDS=True)],
                         ids=["pipe0", "wgs3", "unroll2", "pipe", "wgs3_ahead1", "fast"])  # WIDE: the tails test
def test_ws_real_shapes_gpu(device, n, k, cfg):
    _check_gpu(4096, n, k, device, seed=n + k, config=cfg)
