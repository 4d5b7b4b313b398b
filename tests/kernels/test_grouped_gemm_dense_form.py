"""The dense-form contiguous grouped FP8 GEMM (grouped_gemm_dense_form: the dense 192-row kernel over a device tile
table) against the fp32 reference.

CPU: the tile table (``tl`` kernels, interpreter) against ``tile_table_ref``; the Gluon kernel compiled for sm_90a
(Triton's compiler and bundled ptxas, no GPU) without spills or serialized wgmmas; the launcher's errors. The numbers
run on the H200 (gpu marker): segment sizes 0, 1, 191, 192, 193 and 8192 at the model's (N, K), all-padding layouts,
NaN garbage in padding rows, poisoned outputs, misaligned rows, bit-identical reruns and CUDA-graph replays with a
changed layout, grouped_gemm_ws's contiguous default handing off to this kernel.
Tolerance: calc_diff < 1e-3 (test_grouped_gemm_ws's docstring).
"""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report
from tritonseek.kernels import grouped_gemm_dense_form as D
from tritonseek.kernels.grouped_gemm import M_ALIGNMENT
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_contiguous_ref

FP8_NAN = 0x7F


def _layout(segs, tail=0):
    parts = []
    for e, s in enumerate(segs):
        parts += [torch.full((s,), e), torch.full(((-s) % M_ALIGNMENT,), -1)]
    parts.append(torch.full((tail,), -1))
    return torch.cat(parts).to(torch.int32)


def _table(mi, **kw):
    ent, cnt = D.build_tile_table(mi, mi.numel(), **kw)
    c = int(cnt[0])
    return [(int(r[0]), int(r[1]), int(r[2]), int(r[3]) & 255, int(r[3]) >> 8) for r in ent[:c].cpu()]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segs=st.lists(st.sampled_from([0, 1, 64, 127, 128, 129, 191, 192, 193, 384, 500]), min_size=1, max_size=7),
       tail=st.sampled_from([0, 1, 128, 300]))
def test_tile_table_matches_ref(segs, tail):
    mi = _layout(segs, tail)
    if mi.numel() == 0:
        return
    ref = D.tile_table_ref(mi)
    assert _table(mi) == ref
    assert len(ref) <= D.max_row_tiles(mi.numel())
    # every row of the layout is inside exactly one tile's stored range
    covered = torch.zeros(mi.numel(), dtype=torch.int32)
    for row0, _e, _n_any, _n_clean, n_store in ref:
        covered[row0:row0 + n_store] += 1
    assert (covered == 1).all()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segs=st.lists(st.sampled_from([0, 1, 64, 128, 191, 192, 193, 256, 320, 384, 449, 500]), min_size=1, max_size=6),
       tail=st.sampled_from([0, 1, 128, 300]), split_tail=st.booleans(), partial_last=st.booleans())
def test_tile_table_options_match_ref(segs, tail, split_tail, partial_last):
    # split_tail / partial_last (s24): the device table equals the reference; the options change the row ranges of a
    # run's last two tiles (split) and the entries' order (partial last), never the set of rows covered or the count
    mi = _layout(segs, tail)
    if mi.numel() == 0:
        return
    ref = D.tile_table_ref(mi, split_tail, partial_last)
    assert _table(mi, split_tail=split_tail, partial_last=partial_last) == ref
    plain = D.tile_table_ref(mi)
    assert len(ref) == len(plain)
    covered = torch.zeros(mi.numel(), dtype=torch.int32)
    for row0, _e, _n_any, _n_clean, n_store in ref:
        covered[row0:row0 + n_store] += 1
    assert (covered == 1).all()
    if not split_tail:
        assert sorted(ref) == sorted(plain)
    if partial_last:
        full = [x[4] == D.TILE_M for x in ref]
        assert full == sorted(full, reverse=True)  # every 192-row tile before every shorter one


def test_tile_table_options_examples():
    # 4096 = 21 * 192 + 64: split_tail ends the run in 128 + 128 rows; 8192 = 42 * 192 + 128 is not split
    mi = _layout([4096, 8192])
    st_ = D.tile_table_ref(mi, split_tail=True)
    assert [x[4] for x in st_[19:23]] == [192, 128, 128, 192] and st_[20][0] == 20 * 192
    assert [x[4] for x in st_[-2:]] == [192, 128]
    pl = D.tile_table_ref(mi, partial_last=True)
    assert [x[0] for x in pl[-2:]] == [21 * 192, 4096 + 42 * 192]  # expert 0's 64-row tile, then expert 1's
    assert _table(mi, split_tail=True, partial_last=True) == D.tile_table_ref(mi, True, True)


def test_split_tail_default_rule():
    # SPLIT_TAIL is the launchers' default from 4096 rows per expert (H200 s24 W1: 8 x 4096 won, routed lost)
    assert not D.df_config()["SPLIT_TAIL"] and not D.df_config()["PARTIAL_LAST"]
    assert D.df_config(32768, 8)["SPLIT_TAIL"] and D.df_config(8192, 2)["SPLIT_TAIL"]
    assert not D.df_config(48896, 256)["SPLIT_TAIL"]  # routed T = 4096 top-8: 191 rows per expert
    assert not D.df_config(32767, 8)["SPLIT_TAIL"]
    from tritonseek.kernels import grouped_gemm_ws as W
    # and grouped_gemm_ws hands (7168, 2048) to the dense form from 4096 rows per expert (s24 W1: 0.961 at 8 x 4096)
    assert W.grouped_ws_config("contiguous", 32768, 7168, 2048, experts=8)["DENSE_FORM"]
    assert not W.grouped_ws_config("contiguous", 48640, 7168, 2048, experts=256)["DENSE_FORM"]


def test_tile_table_edges():
    # all padding (expert −1 tiles), a misaligned row (the block's max expert, n_clean / n_any cut), M not a multiple
    # of 128, one row
    assert _table(torch.full((1000,), -1, dtype=torch.int32)) == [(0, -1, 192, 192, 192), (192, -1, 192, 192, 192),
                                                                   (384, -1, 192, 192, 192), (576, -1, 192, 192, 192),
                                                                   (768, -1, 192, 192, 192), (960, -1, 40, 40, 40)]
    mi = _layout([200, 100])
    mi[130] = 1
    assert _table(mi) == D.tile_table_ref(mi)
    assert _table(mi)[1][:2] == (128, 1)  # block 1's max is expert 1: its run starts there, n_clean cut at row 128
    assert _table(mi)[1][3] == 0
    assert _table(torch.zeros(1, dtype=torch.int32)) == [(0, 0, 1, 1, 1)]
    mi = torch.cat([torch.zeros(300, dtype=torch.int32), torch.ones(77, dtype=torch.int32)])
    assert _table(mi) == D.tile_table_ref(mi)


def compile_df(tma_store=True, out_dtype=torch.bfloat16, stages=4, ahead=1):
    """Compile the dense-form kernel for sm_90a on any machine; returns the compiled kernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    bn, bk = 128, 128
    cty = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[out_dtype]
    la = D._smem_layout([64, bk], gl.float8e4nv)
    lb = D._smem_layout([bn, bk], gl.float8e4nv)
    lc = D._smem_layout([64, bn], D._GL_DTYPES[out_dtype])
    sig = dict(a_desc=f"tensordesc<fp8e4nv[64, {bk}],{la!r}>", b_desc=f"tensordesc<fp8e4nv[{bn}, {bk}],{lb!r}>",
               c_desc=f"tensordesc<{cty}[64, {bn}],{lc!r}>" if tma_store else "constexpr", c_ptr=f"*{cty}",
               a_scale_ptr="*fp32", b_scale_ptr="*fp32", mi_ptr="*i32", table_ptr="*i32", count_ptr="*i32")
    sig.update({n: "i32" for n in ("M", "N", "num_k_blocks", "stride_asm", "stride_ask", "stride_bse", "stride_bsn",
                                   "stride_bsk", "stride_cm", "stride_cn", "num_programs")})
    consts = dict(BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, NUM_STAGES=stages, TMA_STORE=tma_store, SCALE_AHEAD=ahead,
                  PRODUCER_REGS=D._WGS3_REGS[2], CONSUMER_REGS=D._WGS3_REGS[1], ENTRY=4, num_warps=4)
    if not tma_store:
        consts["c_desc"] = None
    sig.update({n: "constexpr" for n in consts})
    src = GluonASTSource(D._df_kernel, sig, consts)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=D._WGS3_REGS[0]))


@pytest.mark.parametrize("tma_store,out_dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_df_compiles_for_sm90_without_spills(tma_store, out_dtype):
    stages = 3 if tma_store and out_dtype == torch.float32 else 4
    ptx = ptx_in_fresh_process(__name__, "compile_df", tma_store, out_dtype, stages, 1)
    # three consumer warpgroups × (block 0 + the serial loop) × 4 k32 steps
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3") == 24
    assert ("cp.async.bulk.tensor.2d.global.shared::cta" in ptx) == tma_store
    report = ptxas_report(ptx)
    assert "C7514" not in report and "C7508" not in report, report
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert spills and all(s == ("0", "0") for s in spills), report


def test_df_launcher_errors():
    K, N = 256, 128
    a = torch.zeros(M_ALIGNMENT, K, dtype=torch.float8_e4m3fn)
    a_s = torch.ones(M_ALIGNMENT, 2)
    b = torch.zeros(2, N, K, dtype=torch.float8_e4m3fn)
    bs = torch.ones(2, 1, 2)
    mi = torch.zeros(M_ALIGNMENT, dtype=torch.int32)
    with pytest.raises(ValueError, match="Gluon kernel that runs only on CUDA"):
        D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi)
    with pytest.raises(ValueError, match="NUM_STAGES"):
        D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi, config=dict(NUM_STAGES=5))  # 192-row tiles: ≤ 4
    with pytest.raises(ValueError, match="BLOCK_N"):
        D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi, config=dict(BLOCK_N=64))
    with pytest.raises(TypeError, match="config must be a dict"):
        D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi, config=[1])
    with pytest.raises(ValueError, match="a_scale must be"):
        D.grouped_fp8_gemm_contiguous_df(a, a_s[:, :1], b, bs, mi)
    with pytest.raises(ValueError, match="m_indices"):
        D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi[:5])
    with pytest.raises(ValueError, match="SPLIT_TAIL"):
        D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi, config=dict(SPLIT_TAIL=1))
    with pytest.raises(ValueError, match="DIAG"):  # the s23 diagnostics were removed: an unknown key
        D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi, config=dict(DIAG=1))
    with pytest.raises(ValueError, match="table must be"):
        D.build_tile_table(mi, M_ALIGNMENT, torch.zeros(3, dtype=torch.int32))


# ---------------------------------------------------------------- GPU (H200)

def _operands(segs, N, K, device, seed, tail=0, extra_experts=1):
    g = torch.Generator(device=device).manual_seed(seed)
    E = len(segs) + extra_experts
    b = (torch.randn(E, N, K, generator=g, device=device)).to(torch.float8_e4m3fn)
    bs = torch.rand(E, -(-N // 128), -(-K // 128), generator=g, device=device) + 0.25
    mi = _layout(segs, tail).to(device)
    M = mi.numel()
    a = torch.randn(M, K, generator=g, device=device).to(torch.float8_e4m3fn)
    a.view(torch.uint8)[mi < 0] = FP8_NAN  # garbage in padding rows must not leak
    a_s = (torch.rand(-(-K // 128), M, generator=g, device=device) + 0.25).t()
    a_s[mi < 0] = float("inf")
    return a, a_s, b, bs, mi


def _check(a, a_s, b, bs, mi, out_dtype=torch.bfloat16, config=None):
    out = torch.full((mi.numel(), b.shape[1]), float("nan"), dtype=out_dtype, device=a.device)
    res = D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi, out_dtype, out=out, config=config)
    torch.cuda.synchronize()
    assert res.data_ptr() == out.data_ptr()
    ref = grouped_fp8_gemm_contiguous_ref(a, a_s, b, bs, mi, out_dtype=torch.float32)
    got = out.float()
    assert torch.isfinite(got).all(), "NaN from padding rows leaked, or an element was not written"
    pad = mi < 0
    assert (got[pad] == 0).all()
    if (~pad).any():
        d = calc_diff(got[~pad], ref[~pad])
        assert d < 1e-3, f"calc_diff {d}"
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("N,K", [(4096, 7168), (7168, 2048)])
def test_df_edge_segments_real_shapes_gpu(device, N, K):
    a, a_s, b, bs, mi = _operands([0, 1, 191, 192, 193, 8192, 0], N, K, device, seed=N + K, tail=300)
    out = _check(a, a_s, b, bs, mi)
    again = torch.full_like(out, float("nan"))
    D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi, out=again)
    assert torch.equal(out.view(torch.int16), again.view(torch.int16))  # deterministic bits


@pytest.mark.gpu
@pytest.mark.parametrize("config", [dict(SPLIT_TAIL=True), dict(PARTIAL_LAST=True),
                                    dict(SPLIT_TAIL=True, PARTIAL_LAST=True)])
def test_df_table_options_real_shapes_gpu(device, config):
    # the s24 table options at the model's (N, K) on edge segments (256 = 192 + 64 and 4096 are split): the reference,
    # and the same bits as the default table (a row's products and K order do not depend on its tile)
    N, K = 4096, 7168
    a, a_s, b, bs, mi = _operands([0, 1, 191, 192, 193, 256, 4096, 0], N, K, device, seed=11, tail=300)
    out = _check(a, a_s, b, bs, mi, config=config)
    plain = D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi)
    assert torch.equal(out.view(torch.int16), plain.view(torch.int16))


@pytest.mark.gpu
def test_split_tail_default_and_hand_off_gpu(device):
    # 2 experts x 4096 rows at (7168, 2048): both launchers' default builds the SPLIT_TAIL table there (4096 rows per
    # expert); the reference, and the same bits as the plain table and as grouped_gemm_ws's hand-off
    from tritonseek.kernels import grouped_gemm_ws as W

    a, a_s, b, bs, mi = _operands([4096, 4096], 7168, 2048, device, seed=12, extra_experts=0)
    out = _check(a, a_s, b, bs, mi)
    plain = D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi, config=dict(SPLIT_TAIL=False))
    assert torch.equal(out.view(torch.int16), plain.view(torch.int16))
    ws = W.grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi)
    assert torch.equal(out.view(torch.int16), ws.view(torch.int16))


@pytest.mark.gpu
@pytest.mark.parametrize("out_dtype,config", [(torch.float32, None), (torch.bfloat16, dict(TMA_STORE=False)),
                                              (torch.float16, dict(SCALE_AHEAD=0, NUM_STAGES=3, GROUP_M=1))])
def test_df_small_layouts_gpu(device, out_dtype, config):
    for segs, N, K, tail in [([0, 1, 127, 128, 129], 200, 1152, 0), ([64, 65, 0, 300], 576, 256, 5),
                             ([5], 128, 128, 0), ([383, 385], 300, 272, 128)]:
        _check(*_operands(segs, N, K, device, seed=N + K, tail=tail), out_dtype=out_dtype, config=config)


@pytest.mark.gpu
def test_df_all_padding_and_one_expert_gpu(device):
    a, a_s, b, bs, mi = _operands([], 256, 512, device, seed=1, tail=700, extra_experts=2)
    out = D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi)
    assert (out == 0).all()
    _check(*_operands([32768 - 5], 512, 1024, device, seed=2))


@pytest.mark.gpu
def test_df_misaligned_rows_are_nan_gpu(device):
    a, a_s, b, bs, mi = _operands([130, 5], 256, 256, device, seed=3)
    a = torch.randn(a.shape, device=device).to(torch.float8_e4m3fn)
    a_s = torch.rand(a_s.shape, device=device) + 0.5
    mi[300] = 0  # expert 0's row inside expert 1's block: NaN, never another expert's product
    out = D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi)
    ref = grouped_fp8_gemm_contiguous_ref(a, a_s, b, bs, mi, out_dtype=torch.float32)
    assert torch.isnan(out[300].float()).all()
    ok = torch.ones(mi.numel(), dtype=torch.bool, device=device)
    ok[300] = False
    assert calc_diff(out[ok].float(), ref[ok]) < 1e-3
    with pytest.raises(ValueError, match="not aligned"):
        D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi, check_alignment=True)


@pytest.mark.gpu
def test_df_graph_replay_with_new_layout_gpu(device):
    # the tile table is built on the device: a graph captured for one layout replays another of the same M
    N, K = 512, 1024
    a, a_s, b, bs, mi = _operands([600, 0, 70, 330], N, K, device, seed=4)
    M = mi.numel()
    table = torch.empty(D.max_row_tiles(M) * 4 + 3 * (-(-M // 128)) + 1, dtype=torch.int32, device=device)
    out = torch.empty(M, N, dtype=torch.bfloat16, device=device)
    D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi, out=out, table=table)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        D.grouped_fp8_gemm_contiguous_df(a, a_s, b, bs, mi, out=out, table=table)
    mi2 = _layout([128, 256, 300, 330]).to(device)  # 128 + 256 + 384 + 384 rows: the same M = 1152
    assert mi2.numel() == M
    mi.copy_(mi2)
    a.copy_(torch.randn(M, K, device=device).to(torch.float8_e4m3fn))
    a.view(torch.uint8)[mi < 0] = FP8_NAN
    a_s.copy_(torch.rand(a_s.shape, device=device) + 0.25)
    a_s[mi < 0] = float("inf")
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    ref = grouped_fp8_gemm_contiguous_ref(a, a_s, b, bs, mi, out_dtype=torch.float32)
    pad = mi < 0
    assert torch.isfinite(out.float()).all() and (out[pad] == 0).all()
    assert calc_diff(out[~pad].float(), ref[~pad]) < 1e-3


@pytest.mark.gpu
def test_ws_default_hands_off_to_dense_form_gpu(device):
    # grouped_gemm_ws's contiguous default runs this kernel where _dense_form_pays ((4096, 7168) from 190 rows per
    # expert, bf16 out): the same bits as this launcher; fp32 out and DENSE_FORM=False keep the 128-row kernel
    from tritonseek.kernels import grouped_gemm_ws as W

    N, K = 4096, 7168
    a, a_s, b, bs, mi = _operands([500, 0, 300, 512], N, K, device, seed=7, extra_experts=0)
    assert W.grouped_ws_config("contiguous", mi.numel(), N, K, experts=b.shape[0])["DENSE_FORM"]
    df = _check(a, a_s, b, bs, mi)
    ws = W.grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi)
    assert torch.equal(ws.view(torch.int16), df.view(torch.int16))
    old = W.grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi, config=dict(DENSE_FORM=False))
    pad = mi < 0
    assert (old[pad] == 0).all() and calc_diff(old[~pad].float(), df[~pad].float()) < 1e-3
    f32 = W.grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi, torch.float32)
    f32_old = W.grouped_fp8_gemm_contiguous_ws(a, a_s, b, bs, mi, torch.float32, config=dict(DENSE_FORM=False))
    assert torch.equal(f32, f32_old)
