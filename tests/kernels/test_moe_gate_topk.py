"""MoE gate kernels of moe_routing (gate_topk, router_gate_topk) against tritonseek.kernels.reference.moe.

CPU: the Triton interpreter on small shapes. GPU (``-m gpu``): DeepSeek-V3/Kimi-K2 shapes. The permute / unpermute
kernels of the same module are tested in test_moe_routing.py.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tritonseek.kernels.moe_routing import gate_topk, router_gate_topk
from tritonseek.kernels.reference.moe import gate_topk_ref, router_gate_topk_ref

_fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                              HealthCheck.data_too_large])

# (E, n_group, topk_group, top_k, scoring_func, topk_method, norm_topk_prob, routed_scaling_factor)
FAMILIES = {
    "deepseek-v3": (256, 8, 4, 8, "sigmoid", "noaux_tc", True, 2.5),
    "deepseek-v2-lite": (64, 1, 1, 6, "softmax", "greedy", False, 1.0),
    "deepseek-v2": (160, 8, 3, 6, "softmax", "group_limited_greedy", False, 16.0),
    "kimi-k2": (384, 1, 1, 8, "sigmoid", "noaux_tc", True, 2.827),
    "moonlight": (64, 1, 1, 6, "sigmoid", "noaux_tc", True, 2.446),
}


def _kw(fam):
    E, ng, tg, k, sf, tm, norm, rsf = FAMILIES[fam]
    return E, dict(top_k=k, n_group=ng, topk_group=tg, scoring_func=sf, topk_method=tm, norm_topk_prob=norm,
                   routed_scaling_factor=rsf)


def _selection_scores(logits, bias, ids, kw):
    """The reference's masked biased score of each chosen expert (−inf if it sits in a dropped group)."""
    E = logits.shape[1]
    s = torch.sigmoid(logits.float()) if kw["scoring_func"] == "sigmoid" else torch.softmax(logits.float(), -1)
    b = s + (bias if bias is not None else 0)
    ng, tg = kw.get("n_group", 1), kw.get("topk_group", 1)
    if kw.get("topk_method", "noaux_tc") != "greedy" and ng > 1:
        g = b.view(-1, ng, E // ng)
        gs = g.sort(dim=-1, descending=True).values[..., :2].sum(-1) if kw.get("topk_method", "noaux_tc") == "noaux_tc" else g.amax(-1)
        keep = torch.zeros_like(gs, dtype=torch.bool).scatter_(1, gs.sort(dim=-1, descending=True, stable=True).indices[:, :tg], True)
        b = b.masked_fill(~keep.repeat_interleave(E // ng, 1), float("-inf"))
    return b.gather(1, ids.long())


def _check_gate(logits, bias, kw, *, exact):
    w, ids = gate_topk(logits, bias, **kw)
    wr, idr = gate_topk_ref(logits.cpu(), bias.cpu() if bias is not None else None, **kw)
    w, ids = w.cpu(), ids.cpu()
    assert ids.dtype == torch.int32 and w.dtype == torch.float32 and ids.shape == idr.shape
    if exact:
        assert torch.equal(ids, idr)
    else:
        # Scores are computed with different exp implementations (numpy / libdevice vs torch): an expert
        # may swap with one whose biased score is within rounding (≤ 1e-6 here); the chosen set must still
        # be optimal, i.e. the selected scores agree with the reference's within that rounding.
        ks = _selection_scores(logits.cpu(), bias.cpu() if bias is not None else None, ids, kw)
        rs = _selection_scores(logits.cpu(), bias.cpu() if bias is not None else None, idr, kw)
        assert torch.isfinite(ks).all(), "kernel chose an expert from a dropped group"
        torch.testing.assert_close(ks, rs, rtol=0, atol=1e-6)
    same = (ids == idr).all(dim=1)
    # weights: fp32 sums of ≤ 8 terms; 1e-5 relative covers the different exp/sum order.
    torch.testing.assert_close(w[same], wr[same], rtol=1e-5, atol=1e-6)
    assert len(set(ids[0].tolist())) == ids.shape[1], "an expert was chosen twice"
    return w, ids


@_fixture_ok
@given(fam=st.sampled_from(sorted(FAMILIES)), T=st.integers(1, 6), scale=st.sampled_from([0.5, 2.0, 8.0]),
       seed=st.integers(0, 2**31 - 1), bias_on=st.booleans())
def test_gate_topk_families(device, fam, T, scale, seed, bias_on):
    g = torch.Generator().manual_seed(seed)
    E, kw = _kw(fam)
    logits = (torch.randn(T, E, generator=g) * scale).to(device)
    bias = (torch.randn(E, generator=g) * 0.1).to(device) if bias_on else None
    _check_gate(logits, bias, kw, exact=False)


@pytest.mark.parametrize("fam", ["deepseek-v3", "deepseek-v2"])
def test_gate_topk_negative_biased_scores(device, fam):
    """Every biased score < 0: a 0-mask (the classic bug) would pick dropped-group experts; −inf must not."""
    E, kw = _kw(fam)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(9, E, generator=g).to(device)
    bias = (-3.0 - torch.rand(E, generator=g)).to(device)
    w, ids = _check_gate(logits, bias, kw, exact=False)
    ng = kw["n_group"]
    groups = ids.long() // (E // ng)
    for row in groups:
        assert len(set(row.tolist())) <= kw["topk_group"]


@pytest.mark.parametrize("fam", sorted(FAMILIES))
def test_gate_topk_exact_ties(device, fam):
    """Integer-valued logits (many exact ties, also between groups): lower expert/group id wins, as the reference."""
    E, kw = _kw(fam)
    g = torch.Generator().manual_seed(2)
    logits = torch.randint(-2, 2, (6, E), generator=g).float().to(device)
    logits[0] = 0.0  # a row where every expert ties
    w, ids = _check_gate(logits, None, kw, exact=True)
    if kw["topk_method"] == "greedy" or kw["n_group"] == 1:
        assert ids[0].tolist() == list(range(kw["top_k"]))


def test_gate_topk_underflowing_sigmoid(device):
    """Logits ≤ −120: sigmoid underflows to exactly 0; selection falls to the bias, weights 0/(0+1e-20) = 0, no NaN."""
    E, kw = _kw("deepseek-v3")
    g = torch.Generator().manual_seed(3)
    logits = (-120.0 - 80 * torch.rand(5, E, generator=g)).to(device)
    bias = (torch.randn(E, generator=g) * 0.1).to(device)
    w, ids = _check_gate(logits, bias, kw, exact=True)
    assert torch.equal(w, torch.zeros_like(w))
    # all-equal (zero) scores and no bias: pure id order within the kept groups (groups 0..3)
    w, ids = _check_gate(logits, None, kw, exact=True)
    assert ids[0].tolist() == list(range(8))


def test_gate_topk_softmax_vs_sigmoid(device):
    """Same logits, the two scoring functions: weights are the chosen experts' softmax / sigmoid values."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 64, generator=g).to(device)
    for sf in ("softmax", "sigmoid"):
        kw = dict(top_k=6, scoring_func=sf, topk_method="greedy", norm_topk_prob=False)
        w, ids = _check_gate(logits, None, kw, exact=False)
        s = torch.softmax(logits.cpu(), -1) if sf == "softmax" else torch.sigmoid(logits.cpu())
        torch.testing.assert_close(w, s.gather(1, ids.long()), rtol=1e-5, atol=1e-7)


def test_gate_topk_bf16_strided_logits(device):
    g = torch.Generator().manual_seed(5)
    E, kw = _kw("deepseek-v3")
    base = torch.randn(2 * E, 7, generator=g).to(torch.bfloat16).to(device)
    logits = base.t()[:, ::2]  # [7, E], non-unit strides
    _check_gate(logits, torch.randn(E, generator=g).to(device) * 0.05, kw, exact=False)


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(top_k=2, n_group=3, topk_group=1), "n_group"),
        (dict(top_k=2, n_group=4, topk_group=5), "topk_group"),
        (dict(top_k=9, n_group=4, topk_group=1), "top_k"),
        (dict(top_k=2, scoring_func="relu"), "scoring_func"),
        (dict(top_k=2, topk_method="best"), "topk_method"),
    ],
)
def test_gate_topk_rejects_inconsistent_settings(device, kw, name):
    logits = torch.randn(2, 32, device=device)
    for fn in (gate_topk, gate_topk_ref):
        with pytest.raises(ValueError, match=name):
            fn(logits, None, **kw)


def _check_router(x, weight, bias, kw, *, exact, shared=None, config=None):
    """router_gate_topk against gate_topk_ref on the fp32 logits x·Wᵀ (torch's summation order differs from the
    kernel's: as in _check_gate, a swap between experts whose biased scores agree within 1e-6 is allowed)."""
    w, ids = router_gate_topk(x, weight, bias, shared_expert_id=shared, config=config, **kw)
    b = bias.cpu() if bias is not None else None
    wr, idr = router_gate_topk_ref(x.cpu(), weight.cpu(), b, shared_expert_id=shared, **kw)
    logits = x.float().cpu() @ weight.float().cpu().t()
    w, ids = w.cpu(), ids.cpu()
    k = kw["top_k"]
    assert ids.shape == idr.shape == (x.shape[0], k + (shared is not None)) and ids.dtype == torch.int32
    if shared is not None:  # the shared slot: id E, weight exactly 1, as the reference
        assert torch.equal(ids[:, k], idr[:, k]) and torch.equal(w[:, k], wr[:, k])
        w, ids, wr, idr = w[:, :k], ids[:, :k], wr[:, :k], idr[:, :k]
    if exact:
        assert torch.equal(ids, idr)
    else:
        ks, rs = _selection_scores(logits, b, ids, kw), _selection_scores(logits, b, idr, kw)
        assert torch.isfinite(ks).all(), "kernel chose an expert from a dropped group"
        torch.testing.assert_close(ks, rs, rtol=0, atol=1e-6)
    same = (ids == idr).all(dim=1)
    # weights: fp32 scores of logits that differ by summation order only (~1e-6 relative)
    torch.testing.assert_close(w[same], wr[same], rtol=2e-5, atol=1e-6)
    for row in ids.tolist():
        assert len(set(row)) == k, "an expert was chosen twice"
    return w, ids


@settings(_fixture_ok, max_examples=5)  # interpreter: a few seconds per example
@given(fam=st.sampled_from(sorted(FAMILIES)), T=st.integers(1, 11), H=st.sampled_from([128, 200, 1100]),
       wdtype=st.sampled_from(["bf16", "fp32"]), shared=st.booleans(), block_t=st.sampled_from([None, 4, 8]),
       seed=st.integers(0, 2**31 - 1))
def test_router_gate_topk_matches_reference(device, fam, T, H, wdtype, shared, block_t, seed):
    """Router GEMV + top-k in one launch = gate_topk_ref(x·Wᵀ); bf16 or fp32 weight, K tails (H=200, 1100:
    a partial K slice), one token per block (default at T ≤ 16) or 4 / 8 per block (T past one block: several
    blocks, several arrival counters, the last program selecting for each of its tokens), the shared slot."""
    g = torch.Generator().manual_seed(seed)
    E, kw = _kw(fam)
    x = torch.randn(T, H, generator=g).to(torch.bfloat16)
    weight = (torch.randn(E, H, generator=g) * 0.1).to(torch.bfloat16 if wdtype == "bf16" else torch.float32)
    bias = (torch.randn(E, generator=g) * 0.1) if kw["scoring_func"] == "sigmoid" else None
    _check_router(x.to(device), weight.to(device), bias.to(device) if bias is not None else None, kw, exact=False,
                  shared=E if shared else None, config=None if block_t is None else dict(BLOCK_T=block_t))


@pytest.mark.parametrize("fam", ["deepseek-v3", "deepseek-v2-lite"])
def test_router_gate_topk_ties_and_negative_scores(device, fam):
    """Duplicated weight rows give bit-equal logits (exact ties: the lower expert id wins, as the reference);
    all biased scores negative: the chosen experts still come from the kept groups only."""
    g = torch.Generator().manual_seed(6)
    E, kw = _kw(fam)
    H = 256
    base = (torch.randn(E // 4, H, generator=g) * 0.1).to(torch.bfloat16)
    weight = base.repeat_interleave(4, 0)  # experts 4i..4i+3 share one row: 4-way exact ties
    x = torch.randn(5, H, generator=g).to(torch.bfloat16)
    w, ids = _check_router(x.to(device), weight.to(device), None, kw, exact=True)
    if kw["n_group"] > 1:
        bias = (-3.0 - torch.rand(E, generator=g)).to(device)
        w, ids = _check_router(x.to(device), (torch.randn(E, H, generator=g) * 0.1).to(device), bias, kw, exact=False)
        for row in (ids.long() // (E // kw["n_group"])):
            assert len(set(row.tolist())) <= kw["topk_group"]


def compile_router_sm90(out_k: int, block_t: int):
    """The V3 router kernel at its GPU config (E 256 in blocks of 8, 8 groups keep 4, k 8, H 7168 in 7 K slices)
    compiled for sm_90a (no GPU)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import tritonseek.kernels.moe_gate as G

    sig = dict(x_ptr="*bf16", wt_ptr="*bf16", part_ptr="*fp32", count_ptr="*i32", bias_ptr="*fp32", w_ptr="*fp32",
               ids_ptr="*i32", T="i32", H="i32", stride_xt="i32", stride_we="i32", stride_b="i32",
               routed_scaling_factor="fp32", shared_id="i32")
    consts = dict(E=256, SPLIT_K=7, BLOCK_E=8, BLOCK_K=1024, BLOCK_T=block_t, OUT_K=out_k, HAS_BIAS=True,
                  **G._select_constants(256, top_k=8, n_group=8, topk_group=4, scoring_func="sigmoid",
                                        topk_method="noaux_tc", norm_topk_prob=True, grouped=True, out_k=out_k))
    sig.update({k: "constexpr" for k in consts})
    return triton.compile(ASTSource(G._router_gate_kernel, sig, consts), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=4))


def test_router_gate_topk_compiles_for_sm90():
    """The GPU compiler accepts the router kernel (the interpreter does not type-check loop-carried names: a
    compile error the CPU tests missed once); ptxas: no spills."""
    from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report, spill_store_bytes

    rep = ptxas_report(ptx_in_fresh_process(__name__, "compile_router_sm90", 9, 8))
    assert max(spill_store_bytes(rep)) == 0, rep


def test_router_gate_topk_rejects(device):
    x = torch.randn(2, 64, device=device).to(torch.bfloat16)
    w = torch.randn(8, 64, device=device).to(torch.bfloat16)
    kw = dict(top_k=2)
    with pytest.raises(ValueError, match="weight"):
        router_gate_topk(x, w[:, :32], None, **kw)
    with pytest.raises(ValueError, match="weight"):
        router_gate_topk(x, w.t().contiguous().t(), None, **kw)  # not contiguous
    with pytest.raises(TypeError, match="weight"):
        router_gate_topk(x, w.to(torch.float16), None, **kw)
    for bad in (-1, 2**31, 2**32 + 5):  # ids are int32: a larger one would wrap onto a routed expert
        with pytest.raises(ValueError, match="shared_expert_id"):
            router_gate_topk(x, w, None, shared_expert_id=bad, **kw)
    with pytest.raises(TypeError, match="shared_expert_id"):  # a bool is no int (one rule, session 20)
        router_gate_topk(x, w, None, shared_expert_id=True, **kw)
    with pytest.raises(TypeError, match="top_k"):
        router_gate_topk(x, w, None, top_k=True)
    with pytest.raises(ValueError, match="hidden size 0"):
        router_gate_topk(x[:, :0], w[:, :0].contiguous(), None, **kw)
    with pytest.raises(ValueError, match="e_score_correction_bias"):
        router_gate_topk(x, w, torch.zeros(7, device=device), **kw)
    with pytest.raises(ValueError, match="top_k"):
        router_gate_topk(x, w, None, top_k=9)
    with pytest.raises(ValueError, match="config"):
        router_gate_topk(x, w, None, config=dict(BLOCK_E=3), **kw)
    # bounded (BLOCK_E 2**20 failed inside the launch, naming nothing) and checked on an empty batch too, where a
    # bad config passed and failed on the next call (tester22 #8)
    for bad in (dict(BLOCK_E=2**20), dict(BLOCK_E=256), dict(BLOCK_T=128), dict(BLOCK_E=3)):
        with pytest.raises(ValueError, match=f"config key {next(iter(bad))}="):
            router_gate_topk(x[:0] if "BLOCK_E" in bad and bad["BLOCK_E"] == 3 else x, w, None, config=bad, **kw)
    with pytest.raises(TypeError, match="config must be a dict"):
        router_gate_topk(x[:0], w, None, config="x", **kw)
    e_w, e_ids = router_gate_topk(x[:0], w, None, shared_expert_id=8, **kw)
    assert e_w.shape == (0, 3) and e_ids.shape == (0, 3)


@pytest.mark.gpu
@pytest.mark.parametrize("fam", sorted(FAMILIES))
@pytest.mark.parametrize("T", [1, 64, 4096])
def test_gate_topk_gpu(device, fam, T):
    E, kw = _kw(fam)
    g = torch.Generator().manual_seed(T)
    _check_gate(torch.randn(T, E, generator=g).to(device), (torch.randn(E, generator=g) * 0.1).to(device), kw,
                exact=False)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 8, 64, 200])
def test_router_gate_topk_gpu(device, T):
    """DeepSeek-V3 router (H 7168, 256 experts, bf16 weight) in one launch vs the reference on fp32 logits,
    twice in a row (the arrival counters reset themselves) and as a CUDA-graph replay with new inputs."""
    E, kw = _kw("deepseek-v3")
    H = 7168
    g = torch.Generator().manual_seed(T)
    weight = (torch.randn(E, H, generator=g) * 0.02).to(torch.bfloat16).to(device)
    bias = (torch.randn(E, generator=g) * 0.05).to(device)
    x = torch.randn(T, H, generator=g).to(torch.bfloat16).to(device)
    for _ in range(2):
        _check_router(x, weight, bias, kw, exact=False, shared=E)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        w_g, ids_g = router_gate_topk(x, weight, bias, shared_expert_id=E, **kw)
    for _ in range(2):
        x.copy_(torch.randn(T, H, generator=g).to(torch.bfloat16))
        graph.replay()
        torch.cuda.synchronize()
        w_e, ids_e = router_gate_topk(x, weight, bias, shared_expert_id=E, **kw)
        assert torch.equal(ids_g, ids_e) and torch.equal(w_g, w_e)  # deterministic: replay = eager, bit for bit
