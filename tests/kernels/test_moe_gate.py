"""The DeepSeek router kernels (``kernels/moe_gate.py``): non-finite scores against the reference, the fused
router's launch options (warps, experts per program, PDL), its sm_90 compile, and the V3 router at real shapes.

The finite-input properties (families, ties, K tails, shared slot) live in test_moe_gate_topk.py; here:
* NaN logits (gate_topk) / NaN weight rows (router_gate_topk: one NaN logit per poisoned row) with and
  without expert groups: ids must equal the reference's exactly (a NaN score orders above +inf, as torch's
  stable descending sort puts it; a group holding a NaN has a NaN group score and is kept first) and the
  weights must match with NaN in the same places.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tritonseek.kernels.moe_gate import gate_topk, router_gate_topk
from tritonseek.kernels.reference.moe import gate_topk_ref, router_gate_topk_ref

_fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                              HealthCheck.data_too_large])

# (E, dict of selection settings)
FAMILIES = {
    "deepseek-v3": (256, dict(top_k=8, n_group=8, topk_group=4, scoring_func="sigmoid", topk_method="noaux_tc",
                              norm_topk_prob=True, routed_scaling_factor=2.5)),
    "deepseek-v2": (160, dict(top_k=6, n_group=8, topk_group=3, scoring_func="softmax",
                              topk_method="group_limited_greedy", norm_topk_prob=False, routed_scaling_factor=16.0)),
    "small-grouped": (32, dict(top_k=4, n_group=4, topk_group=2, scoring_func="sigmoid", topk_method="noaux_tc",
                               norm_topk_prob=True, routed_scaling_factor=1.5)),
    "moonlight": (64, dict(top_k=6, n_group=1, topk_group=1, scoring_func="sigmoid", topk_method="noaux_tc",
                           norm_topk_prob=True, routed_scaling_factor=2.446)),
}


def _same(w, ids, wr, idr):
    assert torch.equal(ids.cpu(), idr.cpu()), (ids, idr)
    # fp32 scores from different exp implementations: 1e-5 relative (as test_moe_gate_topk), NaN where the reference has NaN
    torch.testing.assert_close(w.cpu(), wr.cpu(), rtol=1e-5, atol=1e-6, equal_nan=True)


@settings(_fixture_ok, max_examples=6)
@given(fam=st.sampled_from(sorted(FAMILIES)), T=st.integers(1, 4), n_nan=st.integers(1, 9),
       neg=st.booleans(), bias_on=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_gate_topk_nan_logits_follow_reference(device, fam, T, n_nan, neg, bias_on, seed):
    """Random logits with n_nan NaNs per row (sign bit set when ``neg``: its bits order below −inf unless the
    kernel maps NaN explicitly), spread over up to 9 groups (more NaN groups than kept groups happens)."""
    g = torch.Generator().manual_seed(seed)
    E, kw = FAMILIES[fam]
    logits = torch.randn(T, E, generator=g)
    for t in range(T):
        logits[t, torch.randperm(E, generator=g)[:n_nan]] = -float("nan") if neg else float("nan")
    bias = (torch.randn(E, generator=g) * 0.1) if bias_on and kw["scoring_func"] == "sigmoid" else None
    w, ids = gate_topk(logits.to(device), bias.to(device) if bias is not None else None, **kw)
    _same(w, ids, *gate_topk_ref(logits, bias, **kw))


# FAMILIES plus V2-Lite (softmax, greedy), groups of 3 (padded lanes in every group, k above the group size) and
# single-expert groups
HARD_FAMILIES = dict(FAMILIES, **{
    "deepseek-v2-lite": (64, dict(top_k=6, n_group=1, topk_group=1, scoring_func="softmax", topk_method="greedy",
                                  norm_topk_prob=False, routed_scaling_factor=1.0)),
    "groups-of-3": (24, dict(top_k=5, n_group=8, topk_group=3, scoring_func="sigmoid", topk_method="noaux_tc",
                             norm_topk_prob=True, routed_scaling_factor=1.0)),
    "groups-of-1": (8, dict(top_k=3, n_group=8, topk_group=4, scoring_func="sigmoid", topk_method="noaux_tc",
                            norm_topk_prob=True, routed_scaling_factor=1.0)),
})


def _hard_logits(E, T, mode, g):
    """Logits that stress the order: many exact ties (small integers), NaN columns, all −inf, ±50 plateaus."""
    if mode == "ties":
        return torch.randint(-2, 3, (T, E), generator=g).float()
    if mode == "plateaus":
        return torch.randint(-1, 1, (T, E), generator=g).float() * 50
    logits = torch.randn(T, E, generator=g)
    if mode == "nan":
        logits[:, torch.randperm(E, generator=g)[: max(1, E // 5)]] = float("nan")
    elif mode == "-inf":
        logits[:] = float("-inf")
    return logits


@settings(_fixture_ok, max_examples=10)
@given(fam=st.sampled_from(sorted(HARD_FAMILIES)), mode=st.sampled_from(["randn", "ties", "plateaus", "nan", "-inf"]),
       bias_mode=st.sampled_from(["none", "randn", "inf"]), T=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_gate_topk_hard_logits_follow_reference(device, fam, mode, bias_mode, T, seed):
    """Exact ties, NaN, all −inf logits, ±inf biases, groups with padded lanes: gate_topk picks exactly the reference's
    ids in the reference's order (ties to the lower id, NaN first, dropped groups at −inf tying with real −inf scores
    by id) with its weights."""
    g = torch.Generator().manual_seed(seed)
    E, kw = HARD_FAMILIES[fam]
    logits = _hard_logits(E, T, mode, g)
    bias = None
    if bias_mode != "none" and kw["scoring_func"] == "sigmoid":
        bias = torch.randn(E, generator=g) * 0.1
        if bias_mode == "inf":
            bias[torch.randperm(E, generator=g)[:3]] = float("-inf")
            bias[torch.randperm(E, generator=g)[:1]] = float("inf")
    w, ids = gate_topk(logits.to(device), bias.to(device) if bias is not None else None, **kw)
    _same(w, ids, *gate_topk_ref(logits, bias, **kw))


@pytest.mark.parametrize("fam", ["deepseek-v3", "small-grouped", "moonlight"])
def test_router_gate_topk_nan_weight_rows_follow_reference(device, fam):
    """A NaN in weight rows e1, e2 makes logits e1, e2 NaN for every token: the router (GEMV + selection in one
    launch, several K slices) keeps their groups first and picks them first, as the reference."""
    g = torch.Generator().manual_seed(3)
    E, kw = FAMILIES[fam]
    H = 1100 if device.type == "cpu" else 7168  # 2 K slices on the interpreter (a partial one), 7 on the GPU
    weight = (torch.randn(E, H, generator=g) * 0.05).to(torch.bfloat16)
    e1, e2 = 5, E - 3
    weight[e1, 7] = float("nan")
    weight[e2, H - 1] = float("nan")
    x = torch.randn(3, H, generator=g).to(torch.bfloat16)
    bias = torch.randn(E, generator=g) * 0.1
    w, ids = router_gate_topk(x.to(device), weight.to(device), bias.to(device), shared_expert_id=E, **kw)
    wr, idr = router_gate_topk_ref(x, weight, bias, shared_expert_id=E, **kw)
    _same(w, ids, wr, idr)
    assert (ids[:, 0].cpu() == e1).all() and (ids[:, 1].cpu() == e2).all()


@pytest.mark.parametrize("config", [dict(num_warps=1, BLOCK_E=16), dict(num_warps=8, BLOCK_E=64), dict(PDL=False, BLOCK_T=2)])
def test_router_gate_topk_launch_options_same_result(device, config):
    """Every launch option gives the default's ids and weights (deterministic fixed-order sums: the per-slice
    partial sums do not depend on BLOCK_E / warps / PDL, only on BLOCK_K)."""
    g = torch.Generator().manual_seed(11)
    E, kw = FAMILIES["deepseek-v3"]
    H = 1100
    weight = (torch.randn(E, H, generator=g) * 0.05).to(torch.bfloat16).to(device)
    x = torch.randn(3, H, generator=g).to(torch.bfloat16).to(device)
    bias = (torch.randn(E, generator=g) * 0.1).to(device)
    w0, ids0 = router_gate_topk(x, weight, bias, **kw)
    w1, ids1 = router_gate_topk(x, weight, bias, config=config, **kw)
    assert torch.equal(ids0, ids1)
    torch.testing.assert_close(w1, w0, rtol=1e-6, atol=0)


def test_router_gate_topk_rejects_bad_launch_options(device):
    x = torch.randn(2, 64, device=device).to(torch.bfloat16)
    w = torch.randn(8, 64, device=device).to(torch.bfloat16)
    for bad in (dict(num_warps=3), dict(num_warps=32), dict(num_warps=True), dict(PDL=1), dict(TRIGGER=0), dict(BLOCK_K=64)):
        with pytest.raises(ValueError, match="config"):
            router_gate_topk(x, w, None, top_k=2, config=bad)
    with pytest.raises(TypeError, match="config must be a dict"):  # a wrong type is a TypeError (h5 s21)
        router_gate_topk(x, w, None, top_k=2, config=[("PDL", True)])


_SEP = "\n// ---- next kernel ----\n"


def compile_router_pdl_sm90(variants):
    """The V3 router kernel (T ≤ 16 config, shared slot) with PDL compiled for sm_90a (no GPU) at each
    (num_warps, BLOCK_E) of ``variants``; returns an object whose asm["ptx"] joins their PTX."""
    import types

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import tritonseek.kernels.moe_gate as G

    sig = dict(x_ptr="*bf16", wt_ptr="*bf16", part_ptr="*fp32", count_ptr="*i32", bias_ptr="*fp32", w_ptr="*fp32",
               ids_ptr="*i32", T="i32", H="i32", stride_xt="i32", stride_we="i32", stride_b="i32",
               routed_scaling_factor="fp32", shared_id="i32")
    ptx = []
    for num_warps, block_e in variants:
        consts = dict(E=256, SPLIT_K=7, BLOCK_E=block_e, BLOCK_K=1024, BLOCK_T=1, OUT_K=9, HAS_BIAS=True, PDL=True, TRIGGER=True,
                      **G._select_constants(256, top_k=8, n_group=8, topk_group=4, scoring_func="sigmoid",
                                            topk_method="noaux_tc", norm_topk_prob=True, grouped=True, out_k=9))
        ptx.append(triton.compile(ASTSource(G._router_gate_kernel, dict(sig, **{k: "constexpr" for k in consts}),
                                            consts), target=GPUTarget("cuda", 90, 32),
                                  options=dict(num_warps=num_warps)).asm["ptx"])
    return types.SimpleNamespace(asm={"ptx": _SEP.join(ptx)})


def test_router_gate_topk_pdl_compiles_for_sm90():
    """The PDL variant compiles for sm_90a (default 4 warps × 8 experts and 1 warp × 2) with the dependency wait
    in it and no spills (the interpreter ignores griddepcontrol, so only the GPU compiler can reject it)."""
    from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report, spill_store_bytes

    ptxs = ptx_in_fresh_process(__name__, "compile_router_pdl_sm90", [(4, 8), (1, 2)]).split(_SEP)
    assert len(ptxs) == 2
    for ptx in ptxs:
        assert "griddepcontrol.wait" in ptx and "griddepcontrol.launch_dependents" in ptx
        assert max(spill_store_bytes(ptxas_report(ptx))) == 0


# ------------------------------------------------------------------------------------------------
# Real shapes on the H200
# ------------------------------------------------------------------------------------------------

_V3_VARIANTS = [dict(), dict(PDL=False), dict(TRIGGER=False), dict(num_warps=1, BLOCK_E=2),
                dict(num_warps=2, BLOCK_E=4), dict(num_warps=8, BLOCK_E=16), dict(BLOCK_E=4)]


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 2, 8, 16])
@pytest.mark.parametrize("config", _V3_VARIANTS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()) or "default")
def test_router_gate_topk_variants_gpu(device, T, config):
    """V3 router (H 7168, E 256, bf16 weight) with every launch variant the benchmark sweeps, each vs the reference
    on fp32 logits (set-optimal within 1e-6, as test_moe_gate_topk; num_warps / BLOCK_E change the in-slice summation
    order, so variants are not bit-equal to each other, only PDL on/off is); a CUDA graph of [fused_add_rms_norm →
    router] (the decode order, PDL edge) replays = eager with new inputs, bit for bit."""
    from tests.kernels.test_moe_gate_topk import _check_router
    from tritonseek.kernels.norm import fused_add_rms_norm

    E, kw = FAMILIES["deepseek-v3"]
    H = 7168
    g = torch.Generator().manual_seed(T)
    weight = (torch.randn(E, H, generator=g) * 0.02).to(torch.bfloat16).to(device)
    bias = (torch.randn(E, generator=g) * 0.05).to(device)
    a = torch.randn(T, H, generator=g).to(torch.bfloat16).to(device)
    res = torch.randn(T, H, generator=g).to(torch.bfloat16).to(device)
    nw = torch.rand(H, generator=g).to(torch.bfloat16).to(device) + 0.5
    x, _ = fused_add_rms_norm(a, res, nw, 1e-6)
    _check_router(x, weight, bias, kw, exact=False, shared=E, config=config or None)
    if set(config) <= {"PDL", "TRIGGER"}:  # same tiles and warps: the same sums
        w0, ids0 = router_gate_topk(x, weight, bias, shared_expert_id=E, **kw)
        w1, ids1 = router_gate_topk(x, weight, bias, shared_expert_id=E, config=config, **kw)
        assert torch.equal(ids0, ids1) and torch.equal(w0, w1)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        xg, _ = fused_add_rms_norm(a, res, nw, 1e-6)
        w_g, ids_g = router_gate_topk(xg, weight, bias, shared_expert_id=E, config=config, **kw)
    for _ in range(3):
        a.copy_(torch.randn(T, H, generator=g).to(torch.bfloat16))
        graph.replay()
        torch.cuda.synchronize()
        xe, _ = fused_add_rms_norm(a, res, nw, 1e-6)
        w_e, ids_e = router_gate_topk(xe, weight, bias, shared_expert_id=E, config=config, **kw)
        assert torch.equal(ids_g, ids_e) and torch.equal(w_g, w_e)


@pytest.mark.gpu
@pytest.mark.parametrize("fam", sorted(HARD_FAMILIES))
@pytest.mark.parametrize("mode", ["randn", "ties", "plateaus", "nan"])
def test_gate_topk_hard_logits_gpu(device, fam, mode):
    """256 tokens of hard logits (exact ties, ±50 plateaus, NaN) with a bias holding −inf: ids equal the reference's."""
    g = torch.Generator().manual_seed(17)
    E, kw = HARD_FAMILIES[fam]
    logits = _hard_logits(E, 256, mode, g)
    bias = None
    if kw["scoring_func"] == "sigmoid":
        bias = torch.randn(E, generator=g) * 0.1
        bias[torch.randperm(E, generator=g)[:2]] = float("-inf")
    w, ids = gate_topk(logits.to(device), bias.to(device) if bias is not None else None, **kw)
    _same(w, ids, *gate_topk_ref(logits, bias, **kw))


@pytest.mark.gpu
@pytest.mark.parametrize("fam", sorted(FAMILIES))
def test_gate_topk_nan_gpu(device, fam):
    g = torch.Generator().manual_seed(5)
    E, kw = FAMILIES[fam]
    logits = torch.randn(64, E, generator=g)
    logits.view(-1)[torch.randperm(64 * E, generator=g)[:200]] = float("nan")
    w, ids = gate_topk(logits.to(device), None, **kw)
    _same(w, ids, *gate_topk_ref(logits, None, **kw))


def test_gate_topk_rejects_bad_scalars_and_dtypes(device):
    logits = torch.randn(2, 8, device=device)
    x, w = logits.to(torch.bfloat16), torch.randn(8, 8, device=device).to(torch.bfloat16)
    for kw, exc, name in [(dict(routed_scaling_factor="2"), TypeError, "routed_scaling_factor"),
                          (dict(routed_scaling_factor=True), TypeError, "routed_scaling_factor"),
                          (dict(routed_scaling_factor=float("nan")), ValueError, "routed_scaling_factor"),
                          (dict(routed_scaling_factor=float("inf")), ValueError, "routed_scaling_factor"),
                          (dict(routed_scaling_factor=0.0), ValueError, "routed_scaling_factor"),
                          (dict(norm_topk_prob="no"), TypeError, "norm_topk_prob"),
                          (dict(norm_topk_prob=1), TypeError, "norm_topk_prob")]:
        with pytest.raises(exc, match=name):
            gate_topk(logits, None, top_k=2, **kw)
        with pytest.raises(exc, match=name):
            router_gate_topk(x, w, None, top_k=2, **kw)
    for dt in (torch.float8_e4m3fn, torch.float8_e5m2):
        with pytest.raises(TypeError, match="logits"):
            gate_topk(logits.to(dt), None, top_k=2)


def test_gate_topk_fp64_logits_match_reference(device):
    logits = torch.randn(3, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).to(device)
    kw = dict(top_k=4, n_group=4, topk_group=2, norm_topk_prob=True, routed_scaling_factor=2)
    w, ids = gate_topk(logits, None, **kw)
    rw, rids = gate_topk_ref(logits, None, **kw)
    assert torch.equal(ids.cpu(), rids.cpu())
    torch.testing.assert_close(w.cpu(), rw.cpu(), rtol=1e-6, atol=1e-6)
