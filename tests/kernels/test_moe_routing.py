"""MoE routing kernels (permute, unpermute) against tritonseek.kernels.reference.moe.

CPU: the Triton interpreter on small shapes. GPU (``-m gpu``): DeepSeek-V3 shapes. The gate kernels of the same
module are tested in test_moe_gate_topk.py.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tritonseek.kernels.moe_routing as MR
from tritonseek.kernels.moe_routing import moe_permute, moe_permute_bound, moe_permute_masked, moe_unpermute
from tritonseek.kernels.reference.moe import moe_permute_ref, moe_unpermute_ref

_fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                              HealthCheck.data_too_large])


def _routing(mode, T, k, E, g):
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]) if k <= E else None
    if mode == "one_expert":  # every token's slot 0 goes to expert E-1, others random (repeats allowed)
        ids = torch.randint(0, E, (T, k), generator=g)
        ids[:, 0] = E - 1
    elif mode == "empty_experts":  # only the even experts get tokens
        ids = torch.randint(0, (E + 1) // 2, (T, k), generator=g) * 2
    elif mode == "with_minus_one":
        ids = torch.randint(-1, E, (T, k), generator=g)
    return ids.to(torch.int32)


@_fixture_ok
@given(T=st.integers(1, 40), k=st.integers(1, 4), E=st.integers(4, 9), H=st.sampled_from([16, 136, 256]),
       block_m=st.sampled_from([1, 4, 16]), mode=st.sampled_from(["random", "one_expert", "empty_experts", "with_minus_one"]),
       dtype=st.sampled_from(["bf16", "fp32", "fp8"]), seed=st.integers(0, 2**31 - 1))
def test_permute_unpermute_match_reference(device, T, k, E, H, block_m, mode, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    ids = _routing(mode, T, k, E, g).to(device)
    x = torch.randn(T, H, generator=g) + 0.1
    scale = None
    if dtype == "fp8":
        x = x.to(torch.float8_e4m3fn)
        scale = (torch.rand(H // 128 + 1 if H % 128 else H // 128, T, generator=g) + 0.5).t()  # MN-major
        scale = scale.to(device)
    else:
        x = x.to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    x = x.to(device)
    ref = moe_permute_ref(x.cpu(), ids.cpu(), E, block_m, scale.cpu() if scale is not None else None)
    # both scale paths (odd seeds: the gather kernel after the row copy; else stored by the row copy), and
    # 1, 2 or 4 tokens per row-copy program (T not a multiple of it included); or (seed // 6 odd) the
    # destination-ordered gather permute instead of the token-ordered scatter
    fused, rows_default, gather = MR.FUSED_SCALE_COPY, MR.COPY_ROWS, MR.PERMUTE_GATHER
    MR.FUSED_SCALE_COPY = not (scale is not None and seed % 2)
    MR.COPY_ROWS = {eb: 1 << (seed // 2 % 3) for eb in (1, 2, 4)}
    MR.PERMUTE_GATHER = {eb: bool(seed // 6 % 2) for eb in (1, 2, 4)}
    try:
        out = moe_permute(x, ids, E, block_m, scale)
    finally:
        MR.FUSED_SCALE_COPY, MR.COPY_ROWS, MR.PERMUTE_GATHER = fused, rows_default, gather
    p_ref, s_ref, mi_ref, rm_ref = ref
    p, s, mi, rm = (t.cpu() if t is not None else None for t in out)
    assert torch.equal(mi, mi_ref) and torch.equal(rm, rm_ref)
    v = mi_ref >= 0
    assert torch.equal(p[v].view(torch.uint8), p_ref[v].view(torch.uint8))  # rows move bit-exactly
    if scale is not None:
        assert torch.equal(s[v], s_ref[v])
    # graph-safe: same prefix, bound-sized, tail rows are padding
    pg, sg, mig, rmg = moe_permute(x, ids, E, block_m, scale, graph_safe=True)
    assert pg.shape[0] == mig.shape[0] == moe_permute_bound(T, k, E, block_m)
    assert torch.equal(mig[: mi_ref.numel()].cpu(), mi_ref) and (mig[mi_ref.numel():] == -1).all()
    assert torch.equal(rmg.cpu(), rm_ref)
    # unpermute over expert outputs whose padding rows hold NaN/inf garbage (must not leak)
    y = torch.randn(p_ref.shape[0], H, generator=g)
    y[~v] = float("nan")
    pad_rows = torch.nonzero(~v).flatten()
    if pad_rows.numel():
        y[pad_rows[0]] = float("inf")
    w = torch.rand(T, k, generator=g)
    sh = torch.randn(T, H, generator=g)
    ydt = torch.float32 if dtype != "bf16" else torch.bfloat16
    y, sh = y.to(ydt), sh.to(ydt)
    o = torch.full((T, H), float("nan"), dtype=ydt, device=device)
    moe_unpermute(y.to(device), rm.to(device), w.to(device), sh.to(device), out=o)
    o_ref = moe_unpermute_ref(y, rm_ref, w, sh)
    assert torch.isfinite(o).all()
    # fp32: sums of ≤ 5 terms in another order → 1e-5; bf16 output: one rounding of the fp32 sum,
    # the order difference can flip it by one bf16 ulp (2^-8 relative) → rtol 1e-2.
    tol = dict(rtol=1e-5, atol=1e-5) if ydt == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(o.cpu(), o_ref, **tol)
    o2 = moe_unpermute(y.to(device), rm.to(device), w.to(device), sh.to(device))
    assert torch.equal(o2, o), "unpermute is not deterministic"


@_fixture_ok
@given(T=st.integers(1, 24), E=st.integers(2, 8), seed=st.integers(0, 2**31 - 1), fp8=st.booleans())
def test_permute_masked_round_trip(device, T, E, seed, fp8):
    """Masked layout: masked_m = per-expert counts, each row lands in its expert's slab; identity experts
    followed by unpermute give Σ_j w[t, j] · hidden[t]."""
    g = torch.Generator().manual_seed(seed)
    k = min(3, E)
    ids = _routing("random", T, k, E, g)
    ids[0, -1] = -1
    H = 256
    x = torch.randn(T, H, generator=g)
    scale = None
    if fp8:
        scale = (torch.rand(T, 2, generator=g) + 0.5).to(device)
        x = x.to(torch.float8_e4m3fn)
    p, s, masked_m, rm = moe_permute_masked(x.to(device), ids.to(device), E, T, scale)
    counts = torch.bincount(ids[ids >= 0].long(), minlength=E)
    assert torch.equal(masked_m.cpu().long(), counts)
    rmc = rm.cpu().long()
    assert (rmc[ids < 0] == -1).all()
    assert torch.equal(rmc[ids >= 0] // T, ids[ids >= 0].long())
    assert (rmc[ids >= 0] % T < counts[ids[ids >= 0].long()]).all()
    flat = p.view(E * T, H).cpu()
    xs = x.float()
    if fp8:
        assert torch.equal(s.cpu().reshape(E * T, 2)[rmc[ids >= 0]], scale.cpu()[torch.nonzero(ids >= 0)[:, 0]])
    w = torch.rand(T, k, generator=g)
    o = moe_unpermute(flat.float().to(device), rm, w.to(device))
    want = xs * torch.where(ids >= 0, w, 0.0).sum(1, keepdim=True)
    torch.testing.assert_close(o.cpu(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block", [128, 4])
def test_permute_masked_truncates_at_max_m(device, monkeypatch, block):
    """An expert with more entries than max_m: the first max_m (token order) land in its slab, the rest get
    row_map −1 and masked_m is clamped (one route block, the decode fast path, and several blocks)."""
    import tritonseek.kernels.moe_routing as MR

    monkeypatch.setattr(MR, "_ROUTE_BLOCK", block)
    T, E, max_m = 6, 3, 2
    ids = torch.tensor([[0, 1], [0, 2], [1, 0], [0, -1], [2, 1], [1, 0]], dtype=torch.int32)
    x = torch.randn(T, 128).to(torch.bfloat16)
    p, _, masked_m, rm = moe_permute_masked(x.to(device), ids.to(device), E, max_m)
    assert masked_m.cpu().tolist() == [2, 2, 2]
    want = torch.tensor([[0, 2], [1, 4], [3, -1], [-1, -1], [5, -1], [-1, -1]], dtype=torch.int32)
    assert torch.equal(rm.cpu(), want)
    flat = p.view(E * max_m, -1).cpu()
    for t, j in [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (4, 0)]:
        assert torch.equal(flat[want[t, j]], x[t])


@pytest.mark.parametrize("gather", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_permute_many_blocks_scan(device, monkeypatch, masked, gather):
    """Small route blocks and scan chunks so the per-expert prefix scan runs over several (partial) chunks; the
    rank kernels derive segment starts and seg (masked_m, or the padded end that sizes the graph_safe=False
    result) from the totals. Contiguous: scatter and gather permutes."""
    import tritonseek.kernels.moe_routing as MR

    monkeypatch.setattr(MR, "_ROUTE_BLOCK", 16)
    monkeypatch.setattr(MR, "_SCAN_CHUNK", 4)
    monkeypatch.setattr(MR, "PERMUTE_GATHER", {eb: gather for eb in (1, 2, 4)})
    g = torch.Generator().manual_seed(11)
    T, k, E = 45, 3, 5
    ids = _routing("random", T, k, E, g).to(device)
    x = torch.randn(T, 128, generator=g).to(torch.float8_e4m3fn).to(device)
    scale = (torch.rand(T, 1, generator=g) + 0.5).to(device)
    if masked:
        p, s, masked_m, rm = moe_permute_masked(x, ids, E, T, scale)
        assert torch.equal(masked_m.cpu().long(), torch.bincount(ids.cpu().flatten().long(), minlength=E))
        tok = torch.arange(T).repeat_interleave(k)
        assert torch.equal(s.reshape(E * T)[rm.flatten().long()].cpu(), scale.cpu()[tok, 0])
        assert torch.equal(p.view(E * T, -1)[rm.flatten().long()].view(torch.uint8).cpu(), x.cpu()[tok].view(torch.uint8))
    else:
        ref = moe_permute_ref(x.cpu(), ids.cpu(), E, 8, scale.cpu())
        out = moe_permute(x, ids, E, 8, scale)
        v = ref[2] >= 0
        assert torch.equal(out[2].cpu(), ref[2]) and torch.equal(out[3].cpu(), ref[3])
        assert torch.equal(out[1].cpu()[v], ref[1][v])
        assert torch.equal(out[0].cpu()[v].view(torch.uint8), ref[0][v].view(torch.uint8))


def compile_route_rank_sm90(masked: bool):
    """The route rank kernel as moe_permute launches it at T=4096, k=8, E=256 (segment starts from the totals),
    compiled for sm_90a (no GPU)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import tritonseek.kernels.moe_routing as MR

    sig = {k: "*i32" for k in ("ids_ptr", "offsets_ptr", "totals_ptr", "seg_ptr", "row_map_ptr", "m_indices_ptr",
                               "src_ptr")}
    sig.update(n_entries="i32", E="i32", max_m="i32", block_m="i32")
    consts = dict(E_BINS=256, BLOCK=MR._ROUTE_BLOCK, TOP_K=8, MASKED=masked, SINGLE=False, PDL=True)
    sig.update({k: "constexpr" for k in consts})
    return triton.compile(ASTSource(MR._route_rank_kernel, sig, consts), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=4))


def compile_permute_gather_sm90(rows: int, block_h: int):
    """The destination-ordered permute kernel (fp8 rows + scales, as at T=4096, H=7168) compiled for sm_90a."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import tritonseek.kernels.moe_routing as MR

    sig = dict(x_ptr="*fp8e4nv", xs_ptr="*fp32", src_ptr="*i32", valid_ptr="*i32", out_ptr="*fp8e4nv",
               outs_ptr="*fp32", **{k: "i32" for k in ("n_rows", "H", "HS", "stride_xt", "stride_o", "stride_st",
                                                      "stride_sc", "stride_osr", "stride_osc")})
    consts = dict(ROWS=rows, BLOCK_H=block_h, HAS_SCALE=True, SC_PER=block_h // 128, PDL=True)
    sig.update({k: "constexpr" for k in consts})
    return triton.compile(ASTSource(MR._permute_gather_kernel, sig, consts), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=4))


def test_route_rank_compiles_for_sm90():
    """The GPU compiler accepts the rank kernel with the segment starts gathered in registers (tl.gather), both
    layouts, and the gather permute at its fp8 config; ptxas: no spills."""
    from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report, spill_store_bytes

    for fn, arg in (("compile_route_rank_sm90", (False,)), ("compile_route_rank_sm90", (True,)),
                    ("compile_permute_gather_sm90", (8, 1024))):
        rep = ptxas_report(ptx_in_fresh_process(__name__, fn, *arg))
        assert max(spill_store_bytes(rep)) == 0, rep


def test_permute_T1_and_rejects(device):
    x = torch.randn(1, 64, device=device, dtype=torch.bfloat16)
    ids = torch.tensor([[3, 0]], dtype=torch.int32, device=device)
    p, s, mi, rm = moe_permute(x, ids, 4, 8)
    assert p.shape[0] == 16 and rm.tolist() == [[8, 0]] and s is None
    with pytest.raises(ValueError, match="hidden_scale"):
        moe_permute(x.to(torch.float8_e4m3fn), ids, 4, 8)
    with pytest.raises(ValueError, match="topk_ids"):
        moe_permute(x, ids[:, :1].expand(2, 1), 4, 8)
    with pytest.raises(TypeError, match="topk_ids"):
        moe_permute(x, ids.float(), 4, 8)
    with pytest.raises(ValueError, match="block_m"):
        moe_permute(x, ids, 4, 0)
    with pytest.raises(ValueError, match="topk_weights"):
        moe_unpermute(p.float(), rm, torch.ones(1, 3, device=device))


# ------------------------------------------------------------------------------------------------
# Real shapes on the H200
# ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("fp8", [False, True])
def test_permute_unpermute_gpu(device, fp8):
    T, k, E, H, bm = 4096, 8, 256, 7168, 128
    g = torch.Generator().manual_seed(0)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]).int()
    ids[: T // 2, 0] = 7  # skew: half the tokens share an expert
    x = torch.randn(T, H, generator=g)
    scale = (torch.rand(T, H // 128, generator=g) + 0.5) if fp8 else None
    x = x.to(torch.float8_e4m3fn) if fp8 else x.to(torch.bfloat16)
    x, ids = x.to(device), ids.to(device)
    scale = scale.to(device) if fp8 else None
    ref = moe_permute_ref(x, ids, E, bm, scale)
    out = moe_permute(x, ids, E, bm, scale)
    v = ref[2] >= 0
    assert torch.equal(out[2], ref[2]) and torch.equal(out[3], ref[3])
    assert torch.equal(out[0][v].view(torch.uint8), ref[0][v].view(torch.uint8))
    if fp8:
        assert torch.equal(out[1][v], ref[1][v])
    rows_default, pdl_default, gather_default = MR.COPY_ROWS, MR.PDL_CHAIN, MR.PERMUTE_GATHER
    try:  # 4 tokens per row-copy program, plain launches instead of the PDL chain, the other permute (gather/scatter)
        MR.COPY_ROWS, MR.PDL_CHAIN = {1: 4, 2: 4}, not pdl_default
        MR.PERMUTE_GATHER = {eb: not on for eb, on in gather_default.items()}
        out4 = moe_permute(x, ids, E, bm, scale)
    finally:
        MR.COPY_ROWS, MR.PDL_CHAIN, MR.PERMUTE_GATHER = rows_default, pdl_default, gather_default
    assert torch.equal(out4[0][v].view(torch.uint8), ref[0][v].view(torch.uint8)) and torch.equal(out4[3], ref[3])
    if fp8:
        assert torch.equal(out4[1][v], ref[1][v])
        try:  # the scatter's other scale path (a destination-ordered scale gather after the row copy): the same
            MR.FUSED_SCALE_COPY = not MR.FUSED_SCALE_COPY
            MR.PERMUTE_GATHER = {eb: False for eb in gather_default}
            out2 = moe_permute(x, ids, E, bm, scale)
        finally:
            MR.FUSED_SCALE_COPY = not MR.FUSED_SCALE_COPY
            MR.PERMUTE_GATHER = gather_default
        assert torch.equal(out2[1][v], ref[1][v]) and torch.equal(out2[0][v].view(torch.uint8), ref[0][v].view(torch.uint8))
    y = torch.randn(ref[0].shape[0], H, generator=g).to(torch.bfloat16).to(device)
    y[~v] = float("nan")
    w = torch.rand(T, k, generator=g).to(device)
    o = moe_unpermute(y, out[3], w)
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o, moe_unpermute_ref(y, ref[3], w), rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 4, 16])
def test_permute_masked_decode_gpu(device, monkeypatch, T):
    """V3 decode sizes: the one-launch masked permute (T·k ≤ 128; also with the FP8 quant fused) equals the
    multi-kernel route + copy path (and per_token_group_quant_fp8 first), bit for bit."""
    import tritonseek.kernels.moe_routing as MR

    k, E, H = 8, 256, 7168
    g = torch.Generator().manual_seed(T)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]).int().to(device)
    x = torch.randn(T, H, generator=g).to(torch.float8_e4m3fn).to(device)
    scale = (torch.rand(H // 128, T, generator=g) + 0.5).t().to(device)  # MN-major, as the quant kernel writes
    p, s, mm, rm = moe_permute_masked(x, ids, E, T, scale)
    xb = torch.randn(T, H, generator=g).to(torch.bfloat16).to(device)
    pq, sq, _, _ = moe_permute_masked(xb, ids, E, T, quantize=True)  # quant fused into the one launch
    monkeypatch.setattr(MR, "_ROUTE_BLOCK", 4)  # several route blocks: the general path
    p2, s2, mm2, rm2 = moe_permute_masked(x, ids, E, T, scale)
    pq2, sq2, _, _ = moe_permute_masked(xb, ids, E, T, quantize=True)  # per_token_group_quant_fp8, then permute
    assert torch.equal(mm, mm2) and torch.equal(rm, rm2)
    v = torch.arange(T, device=device)[None, :] < mm[:, None]
    assert torch.equal(p[v].view(torch.uint8), p2[v].view(torch.uint8)) and torch.equal(s[v], s2[v])
    assert torch.equal(pq[v].view(torch.uint8), pq2[v].view(torch.uint8)) and torch.equal(sq[v], sq2[v])


@settings(_fixture_ok, max_examples=5)  # bit-exact comparison: a few examples cover both paths (GPU test: V3 sizes)
@given(T=st.sampled_from([1, 3, 16, 20]), H=st.sampled_from([128, 200]), dtype=st.sampled_from(["bf16", "fp32"]),
       seed=st.integers(0, 2**31 - 1))
def test_permute_masked_quantize_equals_quant_then_permute(device, T, H, dtype, seed):
    """quantize=True (fused into the one-launch decode path when T·k ≤ 128; T=20, k=8 takes the general path)
    gives bit-identical e4m3 rows and scales to per_token_group_quant_fp8 followed by the permute."""
    from tritonseek.kernels.fp8_quant import per_token_group_quant_fp8

    g = torch.Generator().manual_seed(seed)
    E, k = 12, 8
    ids = _routing("random", T, k, E, g)
    ids[0, -1] = -1
    x = (torch.randn(T, H, generator=g) * 3).to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    x[0, :5] = 0  # a group that is partly zero
    x, ids = x.to(device), ids.to(device)
    q, s = per_token_group_quant_fp8(x, 128)
    p1, s1, m1, r1 = moe_permute_masked(q, ids, E, T, s)
    p2, s2, m2, r2 = moe_permute_masked(x, ids, E, T, quantize=True)
    assert torch.equal(m1, m2) and torch.equal(r1, r2)
    v = torch.arange(T, device=device)[None, :] < m1[:, None]
    assert torch.equal(p1[v].view(torch.uint8), p2[v].view(torch.uint8)) and torch.equal(s1[v], s2[v])
    with pytest.raises(ValueError, match="quantize"):
        moe_permute_masked(q, ids, E, T, s, quantize=True)


@pytest.mark.gpu
def test_cuda_ids_range_checked_outside_capture(device):
    """On CUDA the id check costs a sync: it runs by default, and steps aside during CUDA-graph capture."""
    test_permute_rejects_bad_scalars_and_ids(device)
    x = torch.randn(4, 256, device=device, dtype=torch.bfloat16)
    ids = torch.tensor([[0, 1], [1, 2], [3, -1], [2, 0]], dtype=torch.int32, device=device)
    eager = moe_permute_masked(x, ids, 4, 4, quantize=True)
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
        captured = moe_permute_masked(x, ids, 4, 4, quantize=True)  # check_ids=True: skipped, no sync error
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured[2], eager[2]) and torch.equal(captured[3], eager[3])


def test_permute_rejects_bad_scalars_and_ids(device):
    x = torch.randn(2, 128, device=device)
    ids = torch.tensor([[0, 1], [1, 2]], dtype=torch.int32, device=device)
    for kw, exc, name in [(dict(max_m=True), TypeError, "max_m"), (dict(num_experts=True), TypeError, "num_experts"),
                          (dict(num_experts=0), ValueError, "num_experts"), (dict(quantize="yes"), TypeError, "quantize"),
                          (dict(pdl=1), TypeError, "pdl")]:
        args = {**dict(num_experts=4, max_m=2), **kw}
        with pytest.raises(exc, match=name):
            moe_permute_masked(x, ids, args.pop("num_experts"), args.pop("max_m"), **args)
    with pytest.raises(TypeError, match="block_m"):
        moe_permute(x, ids, 4, True)
    with pytest.raises(TypeError, match="graph_safe"):
        moe_permute(x, ids, 4, 8, graph_safe=1)
    with pytest.raises(TypeError, match="pdl"):
        moe_unpermute(x, torch.zeros_like(ids), torch.ones(2, 2, device=device), pdl="no")
    with pytest.raises(TypeError, match="check_ids"):
        moe_permute(x, ids, 4, 8, check_ids="yes")
    for fn in (lambda *a, **kw: moe_permute(*a, 8, **kw), lambda *a, **kw: moe_permute_masked(*a, 2, **kw)):
        with pytest.raises(TypeError, match="hidden"):  # integer/bool rows are not activations
            fn(x.to(torch.int8), ids, 4)
        with pytest.raises(ValueError, match="hidden must have at least one column"):
            fn(x[:, :0], ids, 4)
        q8 = x.to(torch.float8_e4m3fn)
        with pytest.raises(ValueError, match=r"hidden_scale must be \[2, ceil\(H/128\) = 1\]"):
            fn(q8, ids, 4, hidden_scale=torch.ones(2, 5, device=device))
        with pytest.raises(ValueError, match="hidden_scale is for float8_e4m3fn"):
            fn(x, ids, 4, hidden_scale=torch.ones(2, 1, device=device))
    with pytest.raises(TypeError, match="shared_output"):
        moe_unpermute(x, torch.zeros_like(ids), torch.ones(2, 2, device=device), torch.ones(2, 128, device=device,
                                                                                            dtype=torch.int64))
    with pytest.raises(ValueError, match="num_tokens"):
        MR.moe_permute_bound(-1, 2, 4, 8)
    with pytest.raises(TypeError, match="block_m"):
        MR.moe_permute_bound(1, 2, 4, True)
    assert MR.moe_permute_bound(3, 2, 4, 8) == 3 * 2 + 4 * 7
    # out-of-range ids raise on every device (CUDA: check_ids's one sync), naming the entry and its value
    for bad in (4, -2):
        bad_ids = ids.clone()
        bad_ids[1, 0] = bad
        with pytest.raises(ValueError, match=rf"topk_ids\[1, 0\] = {bad} is out of range"):
            moe_permute_masked(x, bad_ids, 4, 2)
        with pytest.raises(ValueError, match=rf"topk_ids\[1, 0\] = {bad} is out of range"):
            moe_permute(x, bad_ids, 4, 8)
    for bad in (2, -2):  # expert_out has 2 rows
        with pytest.raises(ValueError, match=rf"row_map\[0, 0\] = {bad} is out of range"):
            moe_unpermute(x, ids.clone().fill_(bad), torch.ones(2, 2, device=device))


def test_unpermute_with_nothing_routed(device):
    """Every slot −1 and no expert rows at all: kernel and reference give the shared output (or zeros)."""
    rm = torch.full((3, 2), -1, dtype=torch.int32, device=device)
    w = torch.rand(3, 2, device=device)
    empty = torch.randn(0, 256, device=device).to(torch.bfloat16)
    shared = torch.randn(3, 256, device=device).to(torch.bfloat16)
    assert not moe_unpermute(empty, rm, w).any() and not moe_unpermute_ref(empty.cpu(), rm.cpu(), w.cpu()).any()
    assert torch.equal(moe_unpermute(empty, rm, w, shared).cpu(), moe_unpermute_ref(empty.cpu(), rm.cpu(), w.cpu(),
                                                                                   shared.cpu()))
