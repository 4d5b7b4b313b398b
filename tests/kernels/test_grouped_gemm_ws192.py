"""Session-22 knobs of the grouped FP8 GEMMs against the fp32 reference: ROWS192 (contiguous 192-row tiles,
grouped_gemm_ws192), PROD_TABLE (masked producer schedule), FIRST_ROW (contiguous tile expert from its first row).

On the CPU: the sm_90a compile (Triton's compiler and bundled ptxas, no GPU) — three consumer warpgroups' serial
K loops (block 0 + the loop: 2 issue sites × 4 k32 wgmmas each), TMA loads / stores, no spills, no serialized
wgmmas — and the config rules. On the H200 (gpu marker): segments of 0, 1, 63-65, 127-129, 190-194, 300 rows
(a 192-row tile then holds two experts and runs in two passes), NaN/inf garbage in the padding rows, padding rows
exactly 0, misaligned rows NaN; tolerance as in test_grouped_gemm_ws (calc_diff < 1e-3 against the fp32 product of
the dequantized operands: summation order and one bf16 rounding ≈ 1e-5; a wrong expert, scale or pass ≳ 1e-2).
"""

from __future__ import annotations

import re

import pytest
import torch
import triton
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report
from tests.kernels.test_grouped_gemm_ws import (
    _check_contiguous, _contiguous, _cpu_contiguous, _fixture_ok, _fp8, _weights,
)
from tritonseek.kernels import grouped_gemm_ws as W
from tritonseek.kernels.grouped_gemm_ws import grouped_fp8_gemm_contiguous_ws, grouped_fp8_gemm_masked_ws
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_contiguous_ref


def compile_sm90_192(stages: int, ahead: int):
    """Compile the 192-row kernel (bf16 out) for sm_90a on any machine (no GPU); returns the compiled kernel."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    from tritonseek.kernels import grouped_gemm_ws192 as K
    from tritonseek.kernels.fp8_gemm_ws import _WGS3_REGS

    la, lb = W._smem_layout([64, 128], gl.float8e4nv), W._smem_layout([128, 128], gl.float8e4nv)
    lc = W._smem_layout([64, 128], gl.bfloat16)
    sig = dict(a_desc=f"tensordesc<fp8e4nv[64, 128],{la!r}>", b_desc=f"tensordesc<fp8e4nv[128, 128],{lb!r}>",
               c_desc=f"tensordesc<bf16[64, 128],{lc!r}>", a_scale_ptr="*fp32", b_scale_ptr="*fp32", idx_ptr="*i32")
    sig.update({n: "i32" for n in ("M_rows", "N", "E", "num_k_blocks", "stride_asm", "stride_ask", "stride_bse",
                                   "stride_bsn", "stride_bsk", "num_programs")})
    consts = dict(GROUP_M=8, NUM_STAGES=stages, SCALE_AHEAD=ahead, PRODUCER_REGS=_WGS3_REGS[2],
                  CONSUMER_REGS=_WGS3_REGS[1], num_warps=4)
    sig.update({n: "constexpr" for n in consts})
    src = GluonASTSource(K._grouped_fp8_ws192_kernel, sig, consts)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=_WGS3_REGS[0]))


@pytest.mark.parametrize("ahead", [1, 0])
def test_rows192_compiles_for_sm90_without_spills(ahead):
    ptx = ptx_in_fresh_process(__name__, "compile_sm90_192", 4, ahead)
    # 3 consumer warpgroups × 2 inlined passes × (block 0 + the serial loop) × 4 k32 steps of an n128 wgmma
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3") == 48
    assert ptx.count("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier") == 8  # (three A thirds + B) × 2 passes
    assert ptx.count("cp.async.bulk.tensor.2d.global.shared::cta") == 6  # TMA-store epilogues
    assert re.search(r"setmaxnreg.inc.sync.aligned.u32\s+160;", ptx)
    report = ptxas_report(ptx)
    assert "C7514" not in report and "serialized" not in report, report
    assert "C7508" not in report, report
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert spills and all(x == ("0", "0") for x in spills), report


@pytest.mark.parametrize("e_pad", [256])
def test_prod_table_compiles_for_sm90_without_spills(e_pad):
    # PROD_TABLE (masked): the producer warp holds the per-group table (E_PAD / 32 ints per lane) within its 40
    # registers; same wgmma sites and TMA requests as the masked default. E_PAD 512 spilled 148 bytes, so the
    # launcher runs PROD_TABLE for up to 256 groups only
    from tests.kernels.test_grouped_gemm_ws import compile_sm90  # noqa: F401 (the child imports it from there)

    cfg = dict(W.grouped_ws_config("masked", 1024, 4096, 7168), PROD_TABLE=True)
    ptx = ptx_in_fresh_process("tests.kernels.test_grouped_gemm_ws", "compile_sm90", cfg, True, torch.bfloat16, True,
                               e_pad)
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3") == 4 * 3 * 2
    assert ptx.count("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier") == 2
    report = ptxas_report(ptx)
    assert "C7514" not in report and "C7508" not in report, report
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert spills and all(x == ("0", "0") for x in spills), report


def test_warp_table_compiles_for_sm90():
    # WARP_TABLE (masked): 14 fewer bar.sync than the default (the per-tile schedule reduction stays inside a warp);
    # ptxas spills the replicated table around the K loops (120 bytes at E_PAD 256; in the SASS the STL / LDL sit in
    # the prologue and between a tile's last QGMMA and the next tile's first, none inside a K loop); the launcher
    # runs it for up to 256 groups only
    from tests.kernels.test_grouped_gemm_ws import compile_sm90  # noqa: F401 (the child imports it from there)

    base = W.grouped_ws_config("masked", 1024, 4096, 7168)
    ptx0 = ptx_in_fresh_process("tests.kernels.test_grouped_gemm_ws", "compile_sm90", base, True, torch.bfloat16, True,
                                256)
    ptx = ptx_in_fresh_process("tests.kernels.test_grouped_gemm_ws", "compile_sm90", dict(base, WARP_TABLE=True), True,
                               torch.bfloat16, True, 256)
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3") == 4 * 3 * 2
    assert ptx.count("bar.sync") < ptx0.count("bar.sync")
    report = ptxas_report(ptx)
    assert "C7514" not in report and "C7508" not in report, report
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert spills and all(int(st_) <= 128 and int(ld) <= 128 for st_, ld in spills), report


def test_rows192_config_rules():
    a, a_s, b, b_s, mi = _cpu_contiguous()
    for bad, match in ((dict(ROWS192=True, BLOCK_N=64), "ROWS192"), (dict(ROWS192=True, NUM_STAGES=5), "ROWS192"),
                       (dict(SCALE_AHEAD=True), "SCALE_AHEAD"), (dict(ROWS192=1), "ROWS192")):
        with pytest.raises(ValueError, match=match):
            grouped_fp8_gemm_contiguous_ws(a, a_s, b, b_s, mi, config=bad)
    with pytest.raises(ValueError, match="ROWS192.*masked"):
        grouped_fp8_gemm_masked_ws(a.view(2, 128, -1), a_s.view(2, 128, -1), b, b_s,
                                   torch.tensor([3, 0], dtype=torch.int32), config=dict(ROWS192=True, NUM_STAGES=4))
    # the contiguous default's WIDE tiles (N = 7168, K = 2048) give way to 128 columns under ROWS192
    wide = W.grouped_ws_config("contiguous", 32768, 7168, 2048)
    assert wide["BLOCK_N"] == 256 and not wide["ROWS192"]
    assert W._with_overrides(wide, dict(ROWS192=True))["BLOCK_N"] == 128
    W._resolve_config(W._with_overrides(wide, dict(ROWS192=True, SCALE_AHEAD=True)))


_R192 = [dict(ROWS192=True), dict(ROWS192=True, SCALE_AHEAD=True)]
_SEG = st.sampled_from([0, 1, 63, 64, 65, 127, 128, 129, 190, 192, 194, 300])


@pytest.mark.gpu
@settings(_fixture_ok, max_examples=min(16, settings.default.max_examples))
@given(segs=st.lists(_SEG, min_size=1, max_size=6), N=st.sampled_from([64, 128, 200, 576]),
       K=st.sampled_from([128, 256, 272, 1152]), config=st.sampled_from(_R192), seed=st.integers(0, 2**31 - 1))
def test_rows192_matches_reference_gpu(device, segs, N, K, config, seed):
    _check_contiguous(segs, N, K, device, seed, config)


@pytest.mark.gpu
@pytest.mark.parametrize("config", _R192)
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_rows192_edges_gpu(device, config, out_dtype):
    # two experts per tile (128-row segments: every tile straddles), empty experts between, one row, all padding,
    # a layout whose last tile is a third past M; fp32 out runs the 128-row tiles (ROWS192 stores through TMA only)
    for segs, N, K in [([0, 1, 127, 128, 129], 200, 1152), ([128] * 7, 256, 256), ([64, 65, 0, 300], 576, 256),
                       ([5], 128, 128), ([0, 0, 0], 128, 256), ([256, 256, 256], 128, 384), ([1, 0, 0, 1], 64, 128)]:
        _check_contiguous(segs, N, K, device, seed=N + K + len(segs), config=config, out_dtype=out_dtype)


@pytest.mark.gpu
def test_rows192_misaligned_rows_are_nan_gpu(device):
    g = torch.Generator(device=device).manual_seed(3)
    b, bs = _weights(3, 128, 256, g, device)
    a, a_s, mi = _contiguous([130, 5, 200], 256, g, device)
    a = _fp8(tuple(a.shape), g, device)
    a_s = torch.rand(a_s.shape, device=device) + 0.5
    # row 300 (expert 1's 128-row block) set to expert 0, row 400 (expert 2's) to expert 1: NaN, never another
    # expert's product
    mi[300] = 0
    mi[400] = 1
    out = grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi, config=dict(ROWS192=True))
    ref = grouped_fp8_gemm_contiguous_ref(a, a_s, b, bs, mi, out_dtype=torch.float32)
    assert torch.isnan(out[300].float()).all() and torch.isnan(out[400].float()).all()
    ok = torch.ones(mi.numel(), dtype=torch.bool, device=device)
    ok[300] = ok[400] = False
    assert calc_diff(out[ok].float(), ref[ok]) < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("groups,m", [(4, 8192), (8, 4096)])
def test_rows192_deepgemm_shapes_gpu(device, groups, m):
    # DeepGEMM's contiguous anchors at (4096, 7168): bit-identical across two launches (fixed summation order)
    # and within tolerance of the 128-row default on every row
    g = torch.Generator(device=device).manual_seed(groups)
    N, K = 4096, 7168
    b, bs = _weights(groups, N, K, g, device)
    a = _fp8((groups * m, K), g, device)
    a_s = (torch.rand(K // 128, groups * m, generator=g, device=device) + 0.25).t()
    mi = torch.arange(groups * m, device=device).div(m, rounding_mode="floor").to(torch.int32)
    outs = [torch.full((groups * m, N), float("nan"), dtype=torch.bfloat16, device=device) for _ in range(3)]
    for out, cfg in zip(outs, (dict(ROWS192=True, SCALE_AHEAD=True), dict(ROWS192=True, SCALE_AHEAD=True), None)):
        grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi, out=out, config=cfg)
    torch.cuda.synchronize()
    assert torch.isfinite(outs[0]).all()
    assert torch.equal(outs[0].view(torch.int16), outs[1].view(torch.int16))
    assert calc_diff(outs[0].float(), outs[2].float()) < 1e-4


_FR = [dict(FIRST_ROW=True), dict(FIRST_ROW=True, SPECIALIZE=True), dict(FIRST_ROW=True, BLOCK_N=256, NUM_STAGES=4)]


@pytest.mark.gpu
@settings(_fixture_ok, max_examples=min(12, settings.default.max_examples))
@given(segs=st.lists(st.sampled_from([0, 1, 63, 64, 65, 127, 128, 129, 300]), min_size=1, max_size=5),
       N=st.sampled_from([64, 128, 200, 576]), K=st.sampled_from([128, 256, 272, 1152]), config=st.sampled_from(_FR),
       seed=st.integers(0, 2**31 - 1))
def test_first_row_matches_reference_gpu(device, segs, N, K, config, seed):
    _check_contiguous(segs, N, K, device, seed, config)


@pytest.mark.gpu
def test_first_row_misaligned_rows_are_nan_gpu(device):
    # FIRST_ROW takes a tile's expert from its first row and a warpgroup computes when its own first row names it:
    # rows of another expert, and the valid rows of a warpgroup whose first row is padding, are NaN (never 0, never
    # another expert's product)
    g = torch.Generator(device=device).manual_seed(5)
    b, bs = _weights(3, 128, 256, g, device)
    a, a_s, mi = _contiguous([130, 5], 256, g, device)
    a = _fp8(tuple(a.shape), g, device)
    a_s = torch.rand(a_s.shape, device=device) + 0.5
    mi[300] = 0  # expert 0 inside expert 1's block
    mi[200] = 0  # a valid row in tile 1's second warpgroup, whose first row (192) is padding
    out = grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi, config=dict(FIRST_ROW=True))
    ref = grouped_fp8_gemm_contiguous_ref(a, a_s, b, bs, mi, out_dtype=torch.float32)
    assert torch.isnan(out[300].float()).all() and torch.isnan(out[200].float()).all()
    ok = torch.ones(mi.numel(), dtype=torch.bool, device=device)
    ok[300] = ok[200] = False
    assert calc_diff(out[ok].float(), ref[ok]) < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("config", [dict(PROD_TABLE=True), dict(SPECIALIZE=True), dict(PROD_TABLE=True, NUM_STAGES=4),
                                    dict(WARP_TABLE=True), dict(WARP_TABLE=True, PROD_TABLE=True)])
def test_masked_knobs_gpu(device, config):
    from tests.kernels.test_grouped_gemm_ws import _check_masked

    for masked_m, M_max, N, K in [([0, 1, 127, 128, 129, 256, 0, 255], 256, 200, 1152), ([1024], 1024, 4096, 7168),
                                  ([0, 0, 0], 128, 128, 256), ([300, 5], 300, 576, 272)]:
        _check_masked(masked_m, M_max, N, K, device, seed=M_max + N, config=config)
