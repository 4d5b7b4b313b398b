"""Triton routed experts (tritonseek.model.moe_triton): the masked (decode) and contiguous (prefill)
layouts both equal the FP8 reference ``moe_experts_fp8_ref``.

Tolerance: calc_diff (1 − 2Σxy/Σ(x²+y²)) < 1e-3 against the reference, which rounds activations to
e4m3 exactly as the kernels do; the remaining differences are fp32 summation order inside the GEMMs,
a bf16 output rounding that can move an FP8 rounding of the intermediate h by one e4m3 step
(≤ 2^-4 relative on that element), and the final bf16 cast — calc_diff ≈ 1e-5 measured. Between the
two layouts: < 1e-4 (same kernels per row, only tile shapes differ).
"""

from __future__ import annotations

import types

import pytest
import torch

from tritonseek.kernels.reference.moe import calc_diff, moe_experts_fp8_ref
from tritonseek.model.moe_triton import MASKED_MAX_TOKENS, choose_layout, moe_experts_triton


def _experts(E, H, I, g, device):
    """Random FP8 experts, drawn on ``device`` one expert at a time (V3 widths: no 30 GB fp32 temporary)."""
    gd = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))

    def w(n, k):
        q = torch.empty(E, n, k, dtype=torch.float8_e4m3fn, device=device)
        for e in range(E):
            q[e] = (torch.randn(n, k, generator=gd, device=device) * 0.5).to(torch.float8_e4m3fn)
        s = torch.rand(E, -(-n // 128), -(-k // 128), generator=gd, device=device) * 0.02 + 0.005  # never zero
        return q, s

    w13, s13 = w(2 * I, H)
    w2, s2 = w(H, I)
    return types.SimpleNamespace(w13=w13, w13_scale_inv=s13, w2=w2, w2_scale_inv=s2)


def _routing(T, E, k, g, mode):
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]).to(torch.int32)
    if mode == "one_expert":  # every token's first slot goes to expert 0, the rest elsewhere
        ids = torch.stack([torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(E - 1, generator=g)[:k - 1]])
                           for _ in range(T)]).to(torch.int32)
    if mode == "dropped":  # expert-parallel style: some slots are −1 (another rank's experts)
        ids[torch.rand(T, k, generator=g) < 0.3] = -1
    w = torch.rand(T, k, generator=g) + 0.1
    return w, ids


@pytest.mark.parametrize("T,mode", [(1, "plain"), (5, "dropped"), (9, "one_expert")])
def test_layouts_match_reference(device, T, mode):
    g = torch.Generator().manual_seed(T)
    E, H, I, k = 6, 256, 128, 3
    moe = _experts(E, H, I, g, device)
    x = (torch.randn(T, H, generator=g)).to(torch.bfloat16)
    w, ids = _routing(T, E, k, g, mode)
    x, w, ids = x.to(device), w.to(device), ids.to(device)
    ref = moe_experts_fp8_ref(x, w, ids, moe.w13, moe.w13_scale_inv, moe.w2, moe.w2_scale_inv).float().cpu()
    outs = {}
    for layout in ("masked", "contiguous"):
        y = moe_experts_triton(x, w, ids, moe, layout=layout).float().cpu()
        assert torch.isfinite(y).all(), layout
        assert calc_diff(y, ref) < 1e-3, (layout, calc_diff(y, ref))
        outs[layout] = y
    assert calc_diff(outs["masked"], outs["contiguous"]) < 1e-4
    if T == 5:  # a precomputed shared-expert output added inside the unpermute, in both layouts (tester22 #75: the
        # contiguous layout, every prefill past MASKED_MAX_TOKENS, dropping it went unseen: only masked was checked)
        shared = torch.randn(T, H, generator=g).to(torch.bfloat16).to(device)
        for layout in ("masked", "contiguous"):
            y = moe_experts_triton(x, w, ids, moe, layout=layout, shared_output=shared).float().cpu()
            assert calc_diff(y, ref + shared.float().cpu()) < 1e-3, layout


def test_choose_layout_and_rejects(device):
    assert choose_layout(1) == "masked" and choose_layout(MASKED_MAX_TOKENS) == "masked"
    assert choose_layout(MASKED_MAX_TOKENS + 1) == "contiguous"
    g = torch.Generator().manual_seed(0)
    moe = _experts(2, 128, 128, g, device)
    x = torch.randn(2, 128).to(torch.bfloat16).to(device)
    with pytest.raises(ValueError, match="layout"):
        moe_experts_triton(x, torch.ones(2, 1, device=device), torch.zeros(2, 1, dtype=torch.int32, device=device),
                           moe, layout="dense")


# ------------------------------------------------------------------------------------------------
# DeepSeek-V3 widths on the H200 (H 7168, I 2048, 256 experts, k = 8)
# ------------------------------------------------------------------------------------------------


E_V3, H_V3, I_V3, K_V3 = 256, 7168, 2048, 8


@pytest.fixture(scope="module")
def v3_experts():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return _experts(E_V3, H_V3, I_V3, torch.Generator().manual_seed(3), torch.device("cuda"))


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 64, 200])
def test_layouts_match_reference_v3_gpu(device, v3_experts, T):
    g = torch.Generator().manual_seed(T)
    E, H, k = E_V3, H_V3, K_V3
    moe = v3_experts
    x = torch.randn(T, H, generator=g).to(torch.bfloat16).to(device)
    w, ids = _routing(T, E, k, g, "plain")
    w, ids = w.to(device), ids.to(device)
    ref = moe_experts_fp8_ref(x, w, ids, moe.w13, moe.w13_scale_inv, moe.w2, moe.w2_scale_inv).float()
    outs = {}
    for layout in ("masked", "contiguous"):
        y = moe_experts_triton(x, w, ids, moe, layout=layout).float()
        assert torch.isfinite(y).all(), layout
        d = calc_diff(y, ref)
        print(f"T={T} {layout}: calc_diff vs reference {d:.2e}")
        assert d < 1e-3, (layout, d)
        outs[layout] = y
    assert calc_diff(outs["masked"], outs["contiguous"]) < 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 64, 256])
def test_decode_step_is_graph_capturable_gpu(device, v3_experts, T):
    """Both layouts capture in a CUDA graph (no host sync) and replays follow new inputs."""
    g = torch.Generator().manual_seed(100 + T)
    E, H, k = E_V3, H_V3, K_V3
    moe = v3_experts
    x = torch.randn(T, H, generator=g).to(torch.bfloat16).to(device)
    w, ids = _routing(T, E, k, g, "plain")
    w, ids = w.to(device), ids.to(device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        moe_experts_triton(x, w, ids, moe)  # compile outside capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = moe_experts_triton(x, w, ids, moe)
    for _ in range(2):  # new routing and activations, same buffers
        w2, ids2 = _routing(T, E, k, g, "plain")
        x.copy_(torch.randn(T, H, generator=g).to(torch.bfloat16))
        w.copy_(w2)
        ids.copy_(ids2)
        graph.replay()
        torch.cuda.synchronize()
        ref = moe_experts_fp8_ref(x, w, ids, moe.w13, moe.w13_scale_inv, moe.w2, moe.w2_scale_inv).float()
        assert calc_diff(y.float(), ref) < 1e-3


# ------------------------------------------------------------------------------------------------
# The MoE module's decode fusions: router GEMV + top-k in one kernel, the shared expert as group E
# ------------------------------------------------------------------------------------------------


def _moe_module(device, H, E, I, ng, tg, ops, seed=0):
    from benchmarks.bench_moe_layer import random_moe_layer

    return random_moe_layer(device, H, E, I, ng, tg, ops, seed=seed, router_std=0.05)


def _gate_kw(cfg):
    return dict(top_k=cfg.num_experts_per_tok, n_group=cfg.n_group, topk_group=cfg.topk_group,
                scoring_func=cfg.scoring_func, topk_method=cfg.topk_method, norm_topk_prob=cfg.norm_topk_prob,
                routed_scaling_factor=cfg.routed_scaling_factor)


@pytest.mark.parametrize("T", [1, 5])
def test_shared_expert_as_group_matches_reference(device, T):
    """The stacked layout (shared expert = group E, its Linears view that group) run as the decode path does:
    fused router with the (k+1)-th shared slot, then the masked experts over E+1 groups, equals the reference
    module (routed experts + shared MLP, FP8 activation rounding) within the FP8 tolerance above."""
    from tritonseek.kernels.moe_gate import router_gate_topk
    from tritonseek.model.ops import Ops

    moe, cfg = _moe_module(device, 256, 16, 128, 4, 2, Ops("reference", fp8_activations=True), seed=T)
    E = cfg.n_routed_experts
    stacked = moe.stacked_weights()
    assert stacked is not None and stacked[0].shape[0] == E + 1 and stacked[2].shape[0] == E + 1
    sh = moe.shared_experts
    assert sh.up_proj.weight.data_ptr() == stacked[0][E, cfg.moe_intermediate_size:].data_ptr()  # a view, no copy
    assert moe.gate.router_weight().dtype == torch.bfloat16  # the bf16-valued weight streams as bf16
    g = torch.Generator().manual_seed(T)
    x = torch.randn(T, cfg.hidden_size, generator=g).to(torch.bfloat16).to(device)
    with torch.no_grad():
        y_ref = moe(x).float().cpu()
        w, ids = router_gate_topk(x, moe.gate.router_weight(), moe.gate.e_score_correction_bias, shared_expert_id=E,
                                  **_gate_kw(cfg))
        _, ids_ref = moe.route(x)
        assert torch.equal(ids[:, :-1].sort(1).values.cpu(), ids_ref.sort(1).values.cpu())
        y = moe_experts_triton(x, w, ids, moe, layout="masked", weights=stacked).float().cpu()
        # the decode options (PDL and prefetch are ignored off the GPU; configs merged over the defaults: fewer
        # stages) give the same bits
        y2 = moe_experts_triton(x, w, ids, moe, layout="masked", weights=stacked, pdl=2, shared_group=E,
                                configs=(dict(num_stages=2, PREFETCH=4), dict(num_stages=3))).float().cpu()
        assert torch.equal(y, y2)
        with pytest.raises(ValueError, match="pdl"):
            moe_experts_triton(x, w, ids, moe, layout="masked", weights=stacked, pdl=3)
    assert torch.isfinite(y).all()
    assert calc_diff(y, y_ref) < 1e-3, calc_diff(y, y_ref)
    moe.w2 = torch.nn.Parameter(moe.w2.detach().clone(), requires_grad=False)  # the sharing broken: no stacked path
    assert moe.stacked_weights() is None


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 2, 8, 16, 64])
def test_moe_decode_fusions_v3_gpu(device, T):
    """V3 widths, the whole MoE module on the triton backend: every decode-fusion setting (unfused; fused router;
    fused router + shared expert as group E; decode_pdl 0 / 1 / 2) equals the reference module (same expert sets,
    calc_diff < 1e-3), the PDL settings bit for bit equal to plain launches, and the fused path (PDL + prefetch)
    replays in a CUDA graph with new inputs."""
    from tritonseek.model.ops import Ops

    moe, cfg = _moe_module(device, H_V3, E_V3, I_V3, 8, 4, Ops("reference", fp8_activations=True), seed=T)
    g = torch.Generator().manual_seed(50 + T)
    x = torch.randn(T, H_V3, generator=g).to(torch.bfloat16).to(device)
    with torch.no_grad():
        y_ref = moe(x).float()
        _, ids_ref = moe.route(x)
        for m in moe.modules():
            if hasattr(m, "ops"):
                m.ops = Ops("triton")
        mlp_calls = []
        moe.shared_experts.register_forward_hook(lambda *a: mlp_calls.append(1))
        ys = {}
        for fr, sg, pdl in ((0, 0, 0), (128, 0, 2), (128, 128, 2), (128, 128, 1), (128, 128, 0)):
            moe.fused_router_max_t, moe.shared_group_max_t, moe.decode_pdl = fr, sg, pdl
            mlp_calls.clear()
            y = ys[fr, sg, pdl] = moe(x).float()
            assert len(mlp_calls) == (0 if sg else 1), "the shared expert ran as its own MLP" if sg else "not run"
            _, ids = moe.route(x)
            assert torch.equal(ids.sort(1).values, ids_ref.sort(1).values), (fr, sg)
            d = calc_diff(y, y_ref)
            print(f"T={T} fused_router_max_t={fr} shared_group_max_t={sg}: calc_diff {d:.2e}")
            assert torch.isfinite(y).all() and d < 1e-3, (fr, sg, d)
        # programmatic dependent launches and L2 prefetch change when kernels start, never what they compute
        assert torch.equal(ys[128, 128, 2], ys[128, 128, 0]) and torch.equal(ys[128, 128, 1], ys[128, 128, 0])
        moe.decode_pdl = 2
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y_g = moe(x)
        x.copy_(torch.randn(T, H_V3, generator=g).to(torch.bfloat16))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(y_g, moe(x))  # replay = eager on the new input, bit for bit


def test_rejects_bad_shared_group_and_routing_shapes(device):
    moe = types.SimpleNamespace(w13=torch.empty(3, 256, 128, dtype=torch.float8_e4m3fn, device=device),
                                w13_scale_inv=torch.ones(3, 2, 1, device=device),
                                w2=torch.empty(3, 128, 128, dtype=torch.float8_e4m3fn, device=device),
                                w2_scale_inv=torch.ones(3, 1, 1, device=device))
    x = torch.randn(2, 128, device=device).to(torch.bfloat16)
    w, ids = torch.ones(2, 2, device=device), torch.zeros(2, 2, dtype=torch.int32, device=device)
    for pdl in (0, 1, 2):  # checked whatever pdl, before any launch
        for bad, exc in ((9, ValueError), (3, ValueError), (-1, ValueError), (True, TypeError), (1.0, TypeError)):
            with pytest.raises(exc, match="shared_group"):
                moe_experts_triton(x, w, ids, moe, layout="masked", pdl=pdl, shared_group=bad)
    for bad_w in (torch.ones(2, 3, device=device), torch.ones(1, 2, device=device)):
        with pytest.raises(ValueError, match="topk_weights"):
            moe_experts_triton(x, bad_w, ids, moe)
    with pytest.raises(ValueError, match="weights must"):
        moe_experts_triton(x, w, ids, moe, weights=(moe.w13,))
