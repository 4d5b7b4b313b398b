"""Warp-specialized grouped FP8 GEMMs (Gluon; contiguous and masked) against the dequantized fp32 reference.

Gluon has no interpreter, so on the CPU this file (a) compiles the kernel for sm_90a with Triton's
compiler and its bundled ptxas (no GPU needed) and checks the instructions the design relies on
(fp8 wgmma, TMA loads/stores, setmaxnreg) and that ptxas neither spills nor serializes the wgmmas
(C7514), and (b) checks the launchers' errors. The numerical properties run on the H200 (gpu marker).

Tolerance, as for the ``tl`` grouped kernels: DeepGEMM's calc_diff = 1 − 2Σxy/Σ(x²+y²) < 1e-3 against
the fp32 product of the dequantized operands. Both sides see the same fp8 inputs and scales, so what
remains is fp32 summation order and one bf16 rounding (≈ 1e-5); a wrong expert, scale or K block gives
≳ 1e-2. Padding rows are checked exactly (0), rows past masked_m exactly (left untouched: NaN stays NaN).
"""

from __future__ import annotations

import re

import pytest
import torch
import triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report
from tritonseek.kernels import grouped_gemm_ws as W
from tritonseek.kernels.grouped_gemm import M_ALIGNMENT
from tritonseek.kernels.grouped_gemm_ws import grouped_fp8_gemm_contiguous_ws, grouped_fp8_gemm_masked_ws
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_contiguous_ref, grouped_fp8_gemm_masked_ref

_fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                              HealthCheck.data_too_large])
FP8_NAN = 0x7F  # e4m3fn bit pattern of NaN


def compile_sm90(cfg: dict, masked: bool, out_dtype=torch.bfloat16, tma_store=True, e_pad=256, diag=False):
    """Compile the kernel for sm_90a on any machine (Triton's compiler, no GPU); returns the compiled kernel.
    diag: the DIAG build (timer stamps into an int64 buffer)."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], W.BLOCK_K
    split = bool(cfg["SPLIT"])
    c_rows = bm // 2 if split else bm
    warps = 4 if split else 8
    cty = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[out_dtype]
    la = W._smem_layout([bm, bk], gl.float8e4nv)
    lb = W._smem_layout([bn, bk], gl.float8e4nv)
    c_cols = min(bn, 128)  # WIDE (BLOCK_N 256) tiles: one store per 128-column half
    lc = W._smem_layout([c_rows, c_cols], W._GL_DTYPES[out_dtype])
    sig = dict(a_desc=f"tensordesc<fp8e4nv[{bm}, {bk}],{la!r}>", b_desc=f"tensordesc<fp8e4nv[{bn}, {bk}],{lb!r}>",
               c_desc=f"tensordesc<{cty}[{c_rows}, {c_cols}],{lc!r}>" if tma_store else "constexpr",
               c_ptr=f"*{cty}", a_scale_ptr="*fp32", b_scale_ptr="*fp32", idx_ptr="*i32")
    sig.update({n: "i32" for n in ("M_rows", "N", "E", "num_k_blocks", "stride_ase", "stride_asm", "stride_ask",
                                   "stride_bse", "stride_bsn", "stride_bsk", "stride_cm", "stride_cn", "num_programs")})
    consts = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=cfg["GROUP_M"], NUM_STAGES=cfg["NUM_STAGES"],
                  TMA_STORE=tma_store, PRODUCER_REGS=cfg["PRODUCER_REGS"], SPLIT=split,
                  CONSUMER_REGS=cfg["CONSUMER_REGS"], UNROLL2=bool(cfg["UNROLL2"]), MASKED=masked, E_PAD=e_pad,
                  PIPE=bool(cfg["PIPE"]), PIPE0=bool(cfg["PIPE0"]) and bool(cfg["PIPE"]), num_warps=warps,
                  DIAG=diag, EARLY_TMA=bool(cfg.get("EARLY_TMA", False)))
    if diag:
        sig["diag_ptr"] = "*i64"
    else:
        consts["diag_ptr"] = None
    if not tma_store:
        consts["c_desc"] = None
    sig.update({n: "constexpr" for n in consts})
    src = GluonASTSource(W._grouped_fp8_ws_kernel, sig, consts)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, maxnreg=W._MAXNREG))



# (masked, SPLIT, UNROLL2, PIPE, BLOCK_N, out dtype, TMA store): the default (SPLIT + PIPE, TMA store) of both
# layouts, and the cooperative one-stream one-product-set loop with masked stores. ~12 s each on the 2-core CI
# machine. The masked default at E_PAD = 512: its per-group schedule table (4 entries per consumer thread) fits.
@pytest.mark.parametrize("masked,split,unroll2,pipe,bn,out_dtype,tma_store", [
    (False, True, True, True, 128, torch.bfloat16, True),
    (True, True, True, True, 128, torch.bfloat16, True),
    (False, False, False, False, 64, torch.float32, False),
])
def test_grouped_ws_compiles_for_sm90_without_spills(masked, split, unroll2, pipe, bn, out_dtype, tma_store):
    cfg = dict(W.grouped_ws_config("masked" if masked else "contiguous", 128, 4096, 7168), SPLIT=split,
               UNROLL2=unroll2, PIPE=pipe, BLOCK_N=bn)
    ptx = ptx_in_fresh_process(__name__, "compile_sm90", cfg, masked, out_dtype, tma_store, 512 if masked else 256)
    # issue sites per consumer partition: block 0 + the loop (UNROLL2 / PIPE: block 0, two in the loop, the tail;
    # PIPE0, the default of both layouts: no block-0 site)
    sites = (4 if unroll2 or pipe else 2) * (2 if split else 1) - (2 if pipe and cfg["PIPE0"] else 0)
    assert ptx.count(f"wgmma.mma_async.sync.aligned.m64n{bn}k32.f32.e4m3.e4m3") == 4 * sites
    assert "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier" in ptx  # TMA loads
    assert ("cp.async.bulk.tensor.2d.global.shared::cta" in ptx) == tma_store  # TMA-store epilogue
    assert re.search(r"setmaxnreg.inc.sync.aligned.u32\s+(240|232);", ptx)
    report = ptxas_report(ptx)
    assert "C7514" not in report and "serialized" not in report, report  # wgmmas stay asynchronous
    assert "C7508" not in report, report  # setmaxnreg honoured
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert spills and all(s == ("0", "0") for s in spills), report


@pytest.mark.parametrize("diag,early", [(True, False), (False, True), (True, True)])
def test_grouped_ws_diag_and_early_compile_for_sm90(diag, early):
    # the masked default's DIAG build (top level 2, producer 4, each consumer partition 6 stamps, a %globaltimer and a
    # %clock64 read each; EARLY_TMA one more) and EARLY_TMA (the top level's A and B request sites beside the
    # producer's); the same wgmma sites as the default, no spills
    cfg = dict(W.grouped_ws_config("masked", 1024, 4096, 7168), EARLY_TMA=early)
    ptx = ptx_in_fresh_process(__name__, "compile_sm90", cfg, True, torch.bfloat16, True, 256, diag)
    stamps = (19 if early else 18) if diag else 0
    assert ptx.count("%globaltimer") == stamps and ptx.count("%clock64") == stamps
    assert ptx.count("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier") == (4 if early else 2)
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3") == 4 * 3 * 2
    report = ptxas_report(ptx)
    assert "C7514" not in report and "C7508" not in report, report
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert spills and all(x == ("0", "0") for x in spills), report


@pytest.mark.parametrize("masked", [False, True])
def test_grouped_ws_wide_compiles_for_sm90(masked):
    # WIDE 128×256 tiles (BLOCK_N 256, 4 stages; the contiguous default at N = 7168, K = 2048): per K block each
    # consumer warpgroup issues two n128 wgmma groups (4 × k32 each) from fp8_gemm_ws_loop._k_loop_wide, so 2
    # partitions × 2 halves × 4 = 16 n128 wgmmas and no n256 one. Masked (E_PAD 256 = up to 256 groups): ptxas spills
    # 4 bytes once per tile, outside the K loop (seen in the SASS: one STL/LDL pair before the loop over tiles; at
    # E_PAD 512, 24 bytes, also outside the K loop); contiguous spills nothing.
    cfg = dict(W.grouped_ws_config("masked" if masked else "contiguous", 128, 4096, 7168), BLOCK_N=256, NUM_STAGES=4)
    ptx = ptx_in_fresh_process(__name__, "compile_sm90", cfg, masked, torch.bfloat16, True, 256)
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3") == 16
    assert "m64n256k32" not in ptx
    assert "cp.async.bulk.tensor.2d.global.shared::cta" in ptx
    report = ptxas_report(ptx)
    assert "C7514" not in report and "C7508" not in report, report
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    limit = 4 if masked else 0
    assert spills and all(int(st_) <= limit and int(ld) <= limit for st_, ld in spills), report


def test_grouped_ws_config_wide_rule():
    # contiguous: 128×256 tiles where the W1 cost model says they pay (DeepGEMM's prefill shapes: the down projection
    # N = 7168, K = 2048 yes, the gate/up one N = 4096, K = 7168 no); never with N % 256 != 0, never in one round
    # of 128×128 tiles, never for the masked layout (measured neutral there)
    cfg = W.grouped_ws_config
    assert cfg("contiguous", 32768, 7168, 2048)["BLOCK_N"] == 256
    assert cfg("contiguous", 8192, 7168, 2048, groups=4)["BLOCK_N"] == 256
    assert cfg("contiguous", 32768, 4096, 7168)["BLOCK_N"] == 128
    assert cfg("contiguous", 256, 7168, 2048)["BLOCK_N"] == 128  # 112 tiles: one round either way
    assert cfg("contiguous", 32768, 7168 - 128, 2048)["BLOCK_N"] == 128
    assert cfg("masked", 1024, 7168, 2048, groups=4)["BLOCK_N"] == 128
    for layout in ("contiguous", "masked"):  # every default passes the launchers' own checks
        c = cfg(layout, 32768, 7168, 2048)
        W._resolve_config(c)
    # a caller's override that WIDE tiles cannot run (no SPLIT, 5 stages) keeps 128×128 tiles instead of raising;
    # an explicit BLOCK_N 256 with it still raises
    wide = cfg("contiguous", 32768, 7168, 2048)
    assert W._with_overrides(wide, dict(NUM_STAGES=5))["BLOCK_N"] == 128
    assert W._with_overrides(wide, dict(SPLIT=False))["BLOCK_N"] == 128
    assert W._with_overrides(wide, dict(NUM_STAGES=3))["BLOCK_N"] == 256
    with pytest.raises(ValueError, match="BLOCK_N 256"):
        W._resolve_config(W._with_overrides(wide, dict(BLOCK_N=256, NUM_STAGES=5)))


def test_grouped_ws_dense_form_key(monkeypatch):
    # DENSE_FORM (session 23): the contiguous launcher's hand-off to grouped_gemm_dense_form, the default where H200
    # s23 W6 measured it to win (per (N, K): from 190 rows per expert at (4096, 7168), the routed layout's 191
    # included; from 4096 at (7168, 2048), s24 W1); other shapes keep the 128-row kernel; a caller's config for the 128-row
    # kernel turns a default DENSE_FORM off; the masked layout refuses it
    cfg = W.grouped_ws_config
    assert cfg("contiguous", 32768, 4096, 7168, experts=4)["DENSE_FORM"]
    assert cfg("contiguous", 32768, 4096, 7168, experts=8)["DENSE_FORM"]
    assert cfg("contiguous", 48896, 4096, 7168, experts=256)["DENSE_FORM"]  # routed T = 4096 top-8: 191 rows each
    assert not cfg("contiguous", 32768, 4096, 7168, experts=256)["DENSE_FORM"]  # 128 rows each: not measured
    assert cfg("contiguous", 32768, 7168, 2048, experts=4)["DENSE_FORM"]
    assert cfg("contiguous", 32768, 7168, 2048, experts=8)["DENSE_FORM"]  # 8 x 4096 there: s24 W1 0.961
    assert not cfg("contiguous", 48640, 7168, 2048, experts=256)["DENSE_FORM"]  # routed 190 rows: s24 W1 1.061
    assert not cfg("contiguous", 32768, 2048, 7168, experts=4)["DENSE_FORM"]  # another (N, K)
    monkeypatch.setattr(W, "_DF_MIN_ROWS_PER_EXPERT", {})
    assert not cfg("contiguous", 32768, 4096, 7168, experts=4)["DENSE_FORM"]
    monkeypatch.setattr(W, "_DF_MIN_ROWS_PER_EXPERT", {(4096, 7168): 190})
    assert not cfg("masked", 1024, 4096, 7168)["DENSE_FORM"]
    on = cfg("contiguous", 32768, 4096, 7168, experts=4)
    assert not W._with_overrides(on, dict(NUM_STAGES=3))["DENSE_FORM"]
    assert W._with_overrides(on, dict(DENSE_FORM=True, NUM_STAGES=3))["DENSE_FORM"]
    with pytest.raises(ValueError, match="DENSE_FORM"):
        W._with_overrides(on, dict(DENSE_FORM=1))
    a = torch.zeros(2, M_ALIGNMENT, 256, dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="DENSE_FORM=True is a contiguous-layout key"):
        grouped_fp8_gemm_masked_ws(a, torch.ones(2, M_ALIGNMENT, 2), torch.zeros(2, 128, 256, dtype=torch.float8_e4m3fn),
                                   torch.ones(2, 1, 2), torch.zeros(2, dtype=torch.int32), config=dict(DENSE_FORM=True))


def _cpu_contiguous(E=2, N=128, K=256):
    a = torch.randn(2 * M_ALIGNMENT, K).to(torch.float8_e4m3fn)
    a_s = torch.rand(2 * M_ALIGNMENT, K // 128) + 0.5
    b = torch.randn(E, N, K).to(torch.float8_e4m3fn)
    b_s = torch.rand(E, -(-N // 128), K // 128) + 0.5
    mi = torch.arange(2, dtype=torch.int32).repeat_interleave(M_ALIGNMENT)
    return a, a_s, b, b_s, mi


def test_grouped_ws_rejects_non_cuda():
    a, a_s, b, b_s, mi = _cpu_contiguous()
    with pytest.raises(ValueError, match="CUDA"):
        grouped_fp8_gemm_contiguous_ws(a, a_s, b, b_s, mi)
    with pytest.raises(ValueError, match="CUDA"):
        grouped_fp8_gemm_masked_ws(a.view(2, M_ALIGNMENT, -1), a_s.view(2, M_ALIGNMENT, -1), b, b_s,
                                   torch.tensor([3, 0], dtype=torch.int32))


def test_grouped_ws_rejects_bad_inputs():
    a, a_s, b, b_s, mi = _cpu_contiguous()
    with pytest.raises(TypeError, match="a must have dtype"):
        grouped_fp8_gemm_contiguous_ws(a.float(), a_s, b, b_s, mi)
    with pytest.raises(TypeError, match="m_indices must have dtype"):
        grouped_fp8_gemm_contiguous_ws(a, a_s, b, b_s, mi.long())
    with pytest.raises(ValueError, match="a_scale must be"):
        grouped_fp8_gemm_contiguous_ws(a, a_s[:, :1], b, b_s, mi)
    with pytest.raises(ValueError, match="b_scale must be"):
        grouped_fp8_gemm_contiguous_ws(a, a_s, b, b_s[:, :, :1], mi)
    with pytest.raises(ValueError, match="K-contiguous"):
        grouped_fp8_gemm_contiguous_ws(a, a_s, b.transpose(1, 2).contiguous().transpose(1, 2), b_s, mi)
    with pytest.raises(ValueError, match=r"BLOCK_M=64 must be one of \(128,\)"):
        grouped_fp8_gemm_contiguous_ws(a, a_s, b, b_s, mi, config=dict(BLOCK_M=64))
    # fresh-user pass (session 17): unknown keys (a removed FAST_SCHED, typos) were ignored by cfg.update; values
    # and keys are now checked on every device, before the Hopper check
    # STAGGER was removed in session 19: an unknown key now, never accepted and ignored (tester, s19)
    # s22 knobs removed after W2 / W3 (PROD_TABLE, WARP_TABLE, FIRST_ROW, ROWS192): unknown keys; SPECIALIZE is a bool
    for bad, key in ((dict(FAST_SCHED=False), "FAST_SCHED"), (dict(STAGGER=800), "STAGGER"),
                     (dict(ROWS192=True), "ROWS192"), (dict(PROD_TABLE=True), "PROD_TABLE"),
                     (dict(SPECIALIZE=1), "SPECIALIZE"),
                     (dict(NUM_STAGES=0), "NUM_STAGES"),
                     (dict(BALANCE=1), "BALANCE"), (dict(BLOCK_N=192), "BLOCK_N")):
        with pytest.raises(ValueError, match=key):
            grouped_fp8_gemm_contiguous_ws(a, a_s, b, b_s, mi, config=bad)
    # WIDE 128×256 tiles (session 18) need split warpgroups and at most 4 stages (48 KB each): raised, never replaced
    with pytest.raises(ValueError, match="BLOCK_N 256.*SPLIT=False"):
        grouped_fp8_gemm_contiguous_ws(a, a_s, b, b_s, mi, config=dict(BLOCK_N=256, SPLIT=False))
    with pytest.raises(ValueError, match="BLOCK_N 256.*NUM_STAGES=5"):  # the masked default has 5 stages
        grouped_fp8_gemm_masked_ws(a.view(2, M_ALIGNMENT, -1), a_s.view(2, M_ALIGNMENT, -1), b, b_s,
                                   torch.tensor([3, 0], dtype=torch.int32), config=dict(BLOCK_N=256))
    with pytest.raises(TypeError, match="config must be a dict"):
        grouped_fp8_gemm_contiguous_ws(a, a_s, b, b_s, mi, config=[1])
    with pytest.raises(TypeError, match="out_dtype"):
        grouped_fp8_gemm_contiguous_ws(a, a_s, b, b_s, mi, out_dtype=torch.int32)
    a3, s3 = a.view(2, M_ALIGNMENT, -1), a_s.view(2, M_ALIGNMENT, -1)
    with pytest.raises(ValueError, match="masked_m must be"):
        grouped_fp8_gemm_masked_ws(a3, s3, b, b_s, torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="stacked densely"):
        out = torch.empty(2, M_ALIGNMENT + 1, 128, dtype=torch.bfloat16)[:, :M_ALIGNMENT]
        grouped_fp8_gemm_masked_ws(a3, s3, b, b_s, torch.zeros(2, dtype=torch.int32), out=out)
    with pytest.raises(ValueError, match="FAST_SHED"):
        grouped_fp8_gemm_masked_ws(a3, s3, b, b_s, torch.zeros(2, dtype=torch.int32), config=dict(FAST_SHED=True))


# ---------------------------------------------------------------- GPU (H200) properties

def _fp8(shape, g, device, scale=1.0):
    return (torch.randn(*shape, generator=g, device=device) * scale).to(torch.float8_e4m3fn)


def _weights(E, N, K, g, device):
    b = _fp8((E, N, K), g, device)
    bs = torch.rand(E, -(-N // 128), -(-K // 128), generator=g, device=device) + 0.25
    return b, bs


def _contiguous(segs, K, g, device):
    """m_indices for segments of the given sizes, each padded to M_ALIGNMENT rows; a / a_scale with NaN/inf
    garbage in the padding rows (which must not leak)."""
    parts = []
    for e, s in enumerate(segs):
        parts += [torch.full((s,), e), torch.full(((-s) % M_ALIGNMENT,), -1)]
    mi = (torch.cat(parts) if parts else torch.zeros(0)).to(torch.int32).to(device)
    M = mi.numel()
    a = _fp8((M, K), g, device)
    a.view(torch.uint8)[mi < 0] = FP8_NAN
    a_s = (torch.rand(-(-K // 128), M, generator=g, device=device) + 0.25).t()  # MN-major, as the quant kernel
    a_s[mi < 0] = float("inf")
    return a, a_s, mi


def _check_contiguous(segs, N, K, device, seed, config=None, out_dtype=torch.bfloat16, extra_experts=1):
    g = torch.Generator(device=device).manual_seed(seed)
    E = len(segs) + extra_experts  # the last experts never get a row
    b, bs = _weights(E, N, K, g, device)
    a, a_s, mi = _contiguous(segs, K, g, device)
    out = torch.full((mi.numel(), N), float("nan"), dtype=out_dtype, device=device)
    res = grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi, out_dtype, out=out, config=config)
    torch.cuda.synchronize()
    assert res.data_ptr() == out.data_ptr()
    ref = grouped_fp8_gemm_contiguous_ref(a, a_s, b, bs, mi, out_dtype=torch.float32)
    out = out.float()
    assert torch.isfinite(out).all(), "NaN/inf from padding rows (or an unwritten element) leaked"
    pad = mi < 0
    assert (out[pad] == 0).all()
    if (~pad).any():
        d = calc_diff(out[~pad], ref[~pad])
        assert d < 1e-3, f"calc_diff {d} segs={segs} N={N} K={K} config={config}"


# the shipped default (split warpgroups + PIPE), the cooperative one-stream consumer and UNROLL2: every
# new config × out dtype costs a few seconds of compile on the H200, so the other options get fixed cases below
_GPU_CONFIGS = [None, dict(SPLIT=False, UNROLL2=False, PIPE=False), dict(PIPE=False)]
_SEG = st.sampled_from([0, 1, 63, 64, 65, 127, 128, 129, 300])  # 0, 1, block_m−1, block_m, block_m+1 and halves


@pytest.mark.gpu
@settings(_fixture_ok, max_examples=min(20, settings.default.max_examples))
@given(segs=st.lists(_SEG, min_size=1, max_size=5), N=st.sampled_from([64, 128, 200, 576]),
       K=st.sampled_from([128, 256, 272, 1152, 2048]), config=st.sampled_from(_GPU_CONFIGS),
       seed=st.integers(0, 2**31 - 1))
def test_contiguous_ws_matches_reference_gpu(device, segs, N, K, config, seed):
    _check_contiguous(segs, N, K, device, seed, config)


@pytest.mark.gpu
@pytest.mark.parametrize("config,out_dtype", [
    (None, torch.float32),  # fp32 TMA-store epilogue
    (dict(BLOCK_N=64, TMA_STORE=False), torch.bfloat16),  # 64-wide N tiles, masked-store epilogue
    (dict(SPLIT=False, UNROLL2=True, NUM_STAGES=3, GROUP_M=1), torch.bfloat16),
    (dict(PIPE=False, NUM_STAGES=5), torch.bfloat16),  # UNROLL2 (one wgmma in flight per warpgroup)
])
def test_contiguous_ws_other_configs_gpu(device, config, out_dtype):
    for segs, N, K in [([0, 1, 127, 128, 129], 200, 1152), ([64, 65, 0, 300], 576, 256), ([5], 128, 128)]:
        _check_contiguous(segs, N, K, device, seed=N + K, config=config, out_dtype=out_dtype)


@pytest.mark.gpu
def test_contiguous_ws_misaligned_rows_are_nan_gpu(device):
    g = torch.Generator(device=device).manual_seed(3)
    b, bs = _weights(3, 128, 256, g, device)
    a, a_s, mi = _contiguous([130, 5], 256, g, device)
    a = _fp8(tuple(a.shape), g, device)
    a_s = torch.rand(a_s.shape, device=device) + 0.5
    # rows 0-129 expert 0 (tiles 0-1), 256-260 expert 1 (tile 2): row 300 set to expert 0 sits in expert 1's tile
    mi[300] = 0
    out = grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi)
    ref = grouped_fp8_gemm_contiguous_ref(a, a_s, b, bs, mi, out_dtype=torch.float32)
    assert torch.isnan(out[300].float()).all()  # never another expert's product
    ok = torch.ones(mi.numel(), dtype=torch.bool, device=device)
    ok[300] = False
    assert calc_diff(out[ok].float(), ref[ok]) < 1e-3
    with pytest.raises(ValueError, match="not aligned"):
        grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi, check_alignment=True)


@pytest.mark.gpu
@pytest.mark.parametrize("N,K", [(4096, 7168), (7168, 2048)])
def test_contiguous_ws_v3_prefill_layout_gpu(device, N, K):
    # the model's prefill layout, 32 of its experts (all 256 at N·K = 4096·7168 would take 7.5 GB of weights):
    # T = 2048 tokens top-2 over 32 experts = ~128 rows each, padded to 128, plus an empty expert and one
    # that every token picks
    g = torch.Generator(device=device).manual_seed(N + K)
    T, E = 2048, 32
    picks = torch.rand(T, E, generator=g, device=device).topk(2, dim=1).indices
    counts = torch.bincount(picks.flatten(), minlength=E).tolist()
    counts[0], counts[1] = 0, T  # an empty expert and one that every token picks
    _check_contiguous(counts, N, K, device, seed=K, extra_experts=0)


def _check_masked(masked_m, M_max, N, K, device, seed, config=None, out_dtype=torch.bfloat16):
    g = torch.Generator(device=device).manual_seed(seed)
    E = len(masked_m)
    b, bs = _weights(E, N, K, g, device)
    a = _fp8((E, M_max, K), g, device)
    a_s = torch.rand(E, M_max, -(-K // 128), generator=g, device=device) + 0.25
    mm = torch.tensor(masked_m, dtype=torch.int32, device=device)
    valid = torch.arange(M_max, device=device)[None, :] < mm.clamp(max=M_max)[:, None]
    a.view(torch.uint8)[~valid] = FP8_NAN  # garbage past masked_m must not matter
    a_s[~valid] = float("inf")
    out = torch.full((E, M_max, N), float("nan"), dtype=out_dtype, device=device)
    grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out_dtype, out=out, config=config)
    torch.cuda.synchronize()
    ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm.clamp(max=M_max), out_dtype=torch.float32)
    out = out.float()
    assert torch.isnan(out[~valid]).all(), "wrote rows past masked_m"
    assert torch.isfinite(out[valid]).all(), "a valid row was not written (or garbage leaked)"
    if valid.any():
        d = calc_diff(out[valid], ref[valid])
        assert d < 1e-3, f"calc_diff {d} masked_m={masked_m} M_max={M_max} N={N} K={K} config={config}"


@pytest.mark.gpu
@settings(_fixture_ok, max_examples=min(20, settings.default.max_examples))
@given(data=st.data(), E=st.integers(1, 6), M_max=st.sampled_from([1, 64, 128, 129, 256, 300]),
       N=st.sampled_from([64, 128, 200]), K=st.sampled_from([128, 256, 272, 1152]), config=st.sampled_from(_GPU_CONFIGS),
       seed=st.integers(0, 2**31 - 1))
def test_masked_ws_matches_reference_gpu(device, data, E, M_max, N, K, config, seed):
    # masked_m from {0, 1, 63, 64, 65, M_max − 1, M_max, M_max + 5 (clamped)}
    choices = sorted({0, 1, 63, 64, 65, max(M_max - 1, 0), M_max, M_max + 5})
    mm = data.draw(st.lists(st.sampled_from(choices), min_size=E, max_size=E))
    _check_masked(mm, M_max, N, K, device, seed, config)


@pytest.mark.gpu
def test_masked_ws_masked_store_epilogue_gpu(device):
    # fp32 out, and 64-wide N tiles without TMA stores (every row through the masked stores)
    _check_masked([0, 1, 64, 129, 130], 130, 200, 384, device, seed=5, out_dtype=torch.float32)
    _check_masked([0, 1, 64, 129, 130], 130, 200, 384, device, seed=6, config=dict(BLOCK_N=64, TMA_STORE=False))


@pytest.mark.gpu
@pytest.mark.parametrize("config", [None, dict(BALANCE=True), dict(BLOCK_N=256, NUM_STAGES=4)])
@pytest.mark.parametrize("N,K", [(4096, 7168), (7168, 2048)])
@pytest.mark.parametrize("shape", [(1, 1024), (4, 256), (32, 32)])
def test_masked_ws_deepgemm_shapes_gpu(device, N, K, shape, config):
    E, M_max = shape
    mm = [M_max] * E
    mm[-1] = M_max // 2 + 1  # one partly filled group
    if E > 2:
        mm[0] = 0
    _check_masked(mm, M_max, N, K, device, seed=E + N, config=config)


# The consumers' tile schedule (session 17: no global load before the K loop; a_scale loads masked to rows < M
# only) × BALANCE (fewer programs, same number of tile rounds), with the tile cases it decides: masked_m 63/64/65
# (one half, one half full, a second half with 1 row), 129 (a 128-row tile whose second warpgroup has no row: it
# only drains the stages), M_max, 0; contiguous segments 0, 1, 127, 128, 129 with NaN/inf padding, a misaligned row
# SPECIALIZE (session 22, off): the same kernel with Triton's integer specialization (E = 1, strides 1 folded)
_FAST_CONFIGS = [None, dict(BALANCE=True), dict(PIPE0=True), dict(SPLIT=False, UNROLL2=False, PIPE=False),
                 dict(SPECIALIZE=True)]


@pytest.mark.gpu
@pytest.mark.parametrize("K", [128, 384, 2048])
@pytest.mark.parametrize("config", _FAST_CONFIGS)
def test_fast_sched_gpu(device, K, config):
    _check_masked([0, 1, 63, 64, 65, 129, 256, 300], 256, 200, K, device, seed=K, config=config)
    _check_masked([5] * 3, 5, 128, K, device, seed=K + 2, config=config)  # M_max < one tile, N = one tile
    _check_contiguous([0, 1, 127, 128, 129, 0], 200, K, device, seed=K + 1, config=config)
    _check_contiguous([300, 5], 576, K, device, seed=K + 3, config=config, out_dtype=torch.float32)


@pytest.mark.gpu
def test_fast_sched_many_groups_and_misaligned_contiguous_gpu(device):
    cfg = None
    # 300 groups: the per-group tables spread over E_PAD = 512 entries (4 per consumer thread)
    mm = [(7 * g) % 130 for g in range(300)]
    _check_masked(mm, 130, 128, 256, device, seed=9, config=cfg)
    g = torch.Generator(device=device).manual_seed(4)
    b, bs = _weights(3, 128, 256, g, device)
    a, a_s, mi = _contiguous([130, 5], 256, g, device)
    a = _fp8(tuple(a.shape), g, device)
    a_s = torch.rand(a_s.shape, device=device) + 0.5
    mi[300] = 0  # expert 0's row inside expert 1's tile: NaN, never another expert's product
    out = grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi, config=cfg)
    ref = grouped_fp8_gemm_contiguous_ref(a, a_s, b, bs, mi, out_dtype=torch.float32)
    assert torch.isnan(out[300].float()).all()
    ok = torch.ones(mi.numel(), dtype=torch.bool, device=device)
    ok[300] = False
    assert calc_diff(out[ok].float(), ref[ok]) < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("K", [128, 256, 384, 2048])  # PIPE0's loop from block 0: 1 block (tail only), 1 pair, pair + tail
@pytest.mark.parametrize("pipe0", [True, False])
def test_pipe0_gpu(device, K, pipe0):
    # PIPE0 (the default of both layouts): the two-in-flight loop from K block 0 (a zero product standing in for
    # block −1); False: block 0 issued alone (the contiguous default until session 17)
    _check_masked([0, 1, 129, 256], 256, 200, K, device, seed=K, config=dict(PIPE0=pipe0))
    _check_contiguous([0, 1, 127, 128, 129], 200, K, device, seed=K + 1, config=dict(PIPE0=pipe0))


@pytest.mark.gpu
@pytest.mark.parametrize("N,K", [(4096, 7168), (7168, 2048)])
def test_contiguous_ws_deepgemm_shapes_pipe0_gpu(device, N, K):
    _check_contiguous([4096, 0, 4096 - 64], N, K, device, seed=N, config=dict(PIPE0=True))


# WIDE 128×256 tiles (session 18): masked_m 0, 1, 63/64/65 (a 128-row tile whose second warpgroup only drains),
# 127/128/129 (block_m ± 1), M_max and past it; NaN/inf in every row past masked_m and in contiguous padding rows;
# NaN-poisoned out; N tails: 128 (the second half lies past N: no b_scale block, nothing stored), 200 (a second
# half with 72 columns), 256, 384 (a full tile and a half one), 576; K with 1, 3 and 16 blocks
_WIDE_CONFIGS = [dict(BLOCK_N=256, NUM_STAGES=4), dict(BLOCK_N=256, NUM_STAGES=3, TMA_STORE=False)]


@pytest.mark.gpu
@pytest.mark.parametrize("config", _WIDE_CONFIGS)
@pytest.mark.parametrize("N", [128, 200, 256, 384, 576])
def test_wide_tiles_gpu(device, config, N):
    for K in (128, 384, 2048):
        _check_masked([0, 1, 63, 64, 65, 127, 128, 129, 256, 300], 256, N, K, device, seed=N + K, config=config)
        _check_contiguous([0, 1, 127, 128, 129, 300], N, K, device, seed=N + K + 1, config=config)
    _check_masked([5] * 3, 5, N, 256, device, seed=N, config=config)  # M_max below one tile
    # fp32 out: WIDE tiles store it with masked stores (no room for fp32 TMA-store buffers)
    _check_contiguous([64, 0, 5], N, 256, device, seed=N + 2, config=config, out_dtype=torch.float32)
    _check_masked([0, 1, 129, 256], 256, N, 384, device, seed=N + 5, config=config, out_dtype=torch.float32)


@pytest.mark.gpu
def test_wide_tiles_many_groups_gpu(device):
    # 300 groups: E_PAD = 512 (the per-group schedule table at 4 entries per consumer thread, where ptxas spills 24
    # bytes outside the K loop)
    _check_masked([(7 * g) % 130 for g in range(300)], 130, 256, 256, device, seed=9,
                  config=dict(BLOCK_N=256, NUM_STAGES=4))


@pytest.mark.gpu
@pytest.mark.parametrize("config", [None, dict(BALANCE=True), dict(BLOCK_N=256, NUM_STAGES=4)])
def test_masked_ws_graph_replay_follows_masked_m_gpu(device, config):
    # captured once, replayed with new masked_m values: no host sync, each replay reads masked_m on the device
    g = torch.Generator(device=device).manual_seed(11)
    E, M_max, N, K = 8, 64, 256, 512
    b, bs = _weights(E, N, K, g, device)
    a = _fp8((E, M_max, K), g, device)
    a_s = torch.rand(E, M_max, K // 128, generator=g, device=device) + 0.25
    mm = torch.zeros(E, dtype=torch.int32, device=device)
    out = torch.zeros(E, M_max, N, dtype=torch.bfloat16, device=device)
    grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out=out, config=config)  # compile outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out=out, config=config)
    for vals in ([1, 0, 64, 3, 0, 0, 17, 64], [0] * 8, [64] * 8):
        mm.copy_(torch.tensor(vals, dtype=torch.int32))
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm, out_dtype=torch.float32)
        valid = torch.arange(M_max, device=device)[None, :] < mm[:, None]
        assert torch.isnan(out.float()[~valid]).all()
        if valid.any():
            assert calc_diff(out.float()[valid], ref[valid]) < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(1, 1024, 4096, 7168), (3, 130, 200, 384)])
def test_masked_ws_diag_gpu(device, shape):
    # the DIAG build: the same out bitwise as the plain one (rows past masked_m left NaN alike), and every running
    # program stamped its entry, its first landed stage and its end in order; a bad diag buffer is rejected
    from tritonseek.kernels.grouped_gemm_ws_parts import DIAG_SLOTS as S

    E, M_max, N, K = shape
    g = torch.Generator(device=device).manual_seed(21)
    b, bs = _weights(E, N, K, g, device)
    a = _fp8((E, M_max, K), g, device)
    a_s = torch.rand(E, M_max, -(-K // 128), generator=g, device=device) + 0.25
    mm = torch.tensor([M_max - 3 * e for e in range(E)], dtype=torch.int32, device=device)
    ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm, out_dtype=torch.float32)
    valid = torch.arange(M_max, device=device)[None, :] < mm[:, None]
    diag = torch.zeros(132, 128, dtype=torch.int64, device=device)
    outs = []
    for d in (None, diag):
        out = torch.full((E, M_max, N), float("nan"), dtype=torch.bfloat16, device=device)
        grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out=out, diag=d)
        torch.cuda.synchronize()
        assert calc_diff(out.float()[valid], ref[valid]) < 1e-3
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0, equal_nan=True)
    # the grid is sized on the host from M_max (no sync): programs past the device's count of non-empty tiles run no
    # tile and stamp no "first stage landed" (shape1: masked_m 130 / 127 / 124 -> 2 + 1 + 1 row tiles x 2 column
    # tiles = 8 tiles on 12 programs; the s19 final pass failed on those 4 programs' zero stamps)
    n_tiles = sum(-(-int(m) // 128) for m in mm.tolist()) * -(-N // 128)
    ran = diag[:, S["entry"]] > 0
    programs = int(ran.sum())
    assert programs > 0 and bool(ran[:programs].all())  # programs 0 .. grid - 1 each stamped their entry
    busy = min(n_tiles, programs)  # the programs that run a tile
    c0 = S["cons"]
    ent, landed, end = (diag[:busy, S["entry"]], diag[:busy, c0 + S["cons_landed"]], diag[:busy, c0 + S["cons_end"]])
    assert bool((landed >= ent).all()) and bool((end >= landed).all())
    idle = ran.clone()
    idle[:busy] = False
    assert bool((diag[idle, c0 + S["cons_landed"]] == 0).all())
    assert bool((diag[idle, c0 + S["cons_end"]] >= diag[idle, S["entry"]]).all())
    with pytest.raises(ValueError, match="diag"):
        grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, diag=torch.zeros(4, dtype=torch.int32, device=device))
