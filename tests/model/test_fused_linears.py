"""Decode-path fusions of the triton backend (CPU: interpreter, tiny V3-shaped widths; GPU: V3 widths).

* :class:`FusedLinears`: q_a_proj ‖ kv_a_proj_with_mqa and gate_proj ‖ up_proj are row blocks of one
  weight (one GEMM, one activation quant); the HF parameter names, in-place fills and state_dict are
  unchanged, and a broken aliasing falls back to the separate linears.
* MLP on FP8: one [gate ‖ up] GEMM → fused SiLU·mul + FP8 quant → down GEMM.
* ``Ops.argmax``: the Triton greedy token (sampler's split-row pass), lowest id on ties, any float dtype.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.v3_slice import build_slice, v3_config
from tritonseek.kernels.reference.fp8 import dequant_token_group_fp8_ref, per_token_group_quant_fp8_ref
from tritonseek.model.layers import MLP, FusedLinears, Linear
from tritonseek.model.ops import Ops


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def tiny_slice():
    # one dense + one MoE layer at tiny widths (hidden 256, q_lora 128, kv_lora 128 + rope 16, inter 512)
    return build_slice(v3_config(2, tiny=True, mtp=False), backend="triton", device="cpu", dtype=torch.float32,
                       seed=5)


def test_fused_parameters_alias_one_weight(tiny_slice):
    attn, mlp = tiny_slice.model.layers[0].self_attn, tiny_slice.model.layers[0].mlp
    for fused, parts in ((attn.q_kv_a, (attn.q_a_proj, attn.kv_a_proj_with_mqa)), (mlp.gate_up, (mlp.gate_proj, mlp.up_proj))):
        assert fused.ready()
        assert torch.equal(fused.weight.float(), torch.cat([p.weight.float() for p in parts]))
        assert torch.equal(fused.scale, torch.cat([p.weight_scale_inv for p in parts]))
    # V3 shapes: 1536 + 576 rows, 12 + 5 = ceil(2112 / 128) scale rows (meta tensors, no memory)
    with torch.device("meta"):
        from tritonseek.model.mla import MLA
        from tritonseek.model.layers import RotaryEmbedding

        cfg = v3_config(1)
        m = MLA(cfg, fp8=True, dtype=torch.bfloat16, ops=Ops("triton"), rope=RotaryEmbedding(cfg))
    assert m.q_kv_a.weight.shape == (2112, 7168) and m.q_kv_a.scale.shape == (17, 56)
    # the HF names are untouched: state_dict has the separate keys (views of the fused tensors)
    sd = tiny_slice.state_dict()
    assert "model.layers.0.self_attn.q_a_proj.weight" in sd and "model.layers.0.mlp.up_proj.weight_scale_inv" in sd
    assert not any("q_kv_a" in k or "gate_up" in k for k in sd)


def test_unfusable_linears_stay_separate():
    ops = Ops("triton")
    a = Linear(256, 200, fp8=True, dtype=torch.float32, ops=ops)  # 200 rows: the scale blocks would not stack
    b = Linear(256, 128, fp8=True, dtype=torch.float32, ops=ops)
    assert not FusedLinears([a, b]).ready()
    c = Linear(256, 128, fp8=False, dtype=torch.float32, ops=ops)  # mixed FP8-ness
    assert not FusedLinears([b, c]).ready()
    d = Linear(256, 256, fp8=True, dtype=torch.float32, ops=ops)
    f = FusedLinears([b, d])
    assert f.ready()
    d.weight = torch.nn.Parameter(d.weight.detach().clone(), requires_grad=False)  # aliasing broken
    assert not f.ready()


def test_fused_mla_and_mlp_match_separate(tiny_slice, monkeypatch):
    """The fused forward (triton, interpreter) equals the separate linears' forward on the same backend
    up to the fp32 SiLU·mul of the fused kernel (the separate path rounds silu(g)·u in x.dtype = fp32
    here, so only GEMM summation order differs): 1e-5 relative."""
    torch.manual_seed(0)
    layer = tiny_slice.model.layers[0]
    x = torch.randn(5, 256) * 0.5
    with torch.inference_mode():
        y_fused = layer.mlp(x)
        q_fused = layer.self_attn.q_kv_a(x, tiny_slice.ops)
        monkeypatch.setattr(FusedLinears, "ready", lambda self: False)
        y_sep = layer.mlp(x)
        q_sep = [layer.self_attn.q_a_proj(x), layer.self_attn.kv_a_proj_with_mqa(x)]
    assert torch.isfinite(y_fused).all()
    assert _rel(y_fused, y_sep) < 1e-5
    for a, b in zip(q_fused, q_sep):
        assert a.shape == b.shape and _rel(a, b) < 1e-5


def test_fused_mlp_bf16_matches_reference_quant_chain():
    """bf16 FP8 MLP: fused path = quant(x) → [gate‖up] GEMM → silu·mul (fp32) → quant → down GEMM, checked
    against the same chain in plain torch on dequantized weights. Tolerance 2e-2: bf16 rounding of the
    GEMM outputs plus an FP8 step where a value near a rounding boundary may land on either side."""
    torch.manual_seed(1)
    ops = Ops("triton")
    mlp = MLP(256, 384, fp8=True, dtype=torch.bfloat16, ops=ops)
    for lin in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
        w = torch.randn(lin.out_features, lin.in_features) / lin.in_features ** 0.5
        q, s = ops.quantize_block_fp8(w)
        lin.weight.data.copy_(q)
        lin.weight_scale_inv.data.copy_(s)
    assert mlp.gate_up.ready()
    x = (torch.randn(3, 256)).to(torch.bfloat16)
    with torch.inference_mode():
        y = mlp(x)
    wd = [ops.dequant_block_fp8(l.weight, l.weight_scale_inv, torch.float32) for l in (mlp.gate_proj, mlp.up_proj,
                                                                                        mlp.down_proj)]
    xq = dequant_token_group_fp8_ref(*per_token_group_quant_fp8_ref(x.float()))
    g = (xq @ wd[0].t()).bfloat16().float()
    u = (xq @ wd[1].t()).bfloat16().float()
    h = dequant_token_group_fp8_ref(*per_token_group_quant_fp8_ref(torch.nn.functional.silu(g) * u))
    ref = h @ wd[2].t()
    assert y.dtype == torch.bfloat16 and _rel(y, ref) < 2e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B, V", [(1, 1000), (3, 4099)])
def test_ops_argmax_lowest_id_on_ties(dtype, B, V, device):
    g = torch.Generator().manual_seed(B * V)
    x = torch.randn(B, V, generator=g).to(dtype)
    x[0, 7] = x[0, V - 3] = x[0].max() + 1  # a tie: the lower id wins
    if B > 1:
        x[1, :] = -torch.inf
        x[1, 5] = x[1, V - 1] = 2.0  # every other logit -inf
    out = Ops("triton").argmax(x.to(device))
    assert out.dtype == torch.int64 and out.shape == (B,)
    assert out.cpu().tolist() == x.float().argmax(-1).tolist()
    assert out.cpu().tolist()[0] == 7
    assert Ops("reference").argmax(x).tolist() == out.cpu().tolist()


@pytest.mark.gpu
@pytest.mark.parametrize("B", [1, 8, 128])
def test_ops_argmax_v3_vocab_gpu(device, B):
    g = torch.Generator().manual_seed(B)
    x = torch.randn(B, 129280, generator=g).to(torch.bfloat16).to(device)
    x[0, 100] = x[0, 129000] = x[0].max() + 1
    out = Ops("triton").argmax(x)
    assert out.tolist() == x.float().argmax(-1).tolist() and out[0].item() == 100


@pytest.mark.gpu
def test_fused_v3_linears_gpu(device):
    """V3 widths on the device: fused q_a‖kv_a and MLP (dense 18432) vs the separate linears, bf16."""
    from tritonseek.model.layers import RotaryEmbedding
    from tritonseek.model.mla import MLA

    torch.manual_seed(0)
    cfg = v3_config(1)
    ops = Ops("triton")
    with torch.device(device):
        attn = MLA(cfg, fp8=True, dtype=torch.bfloat16, ops=ops, rope=RotaryEmbedding(cfg))
        mlp = MLP(7168, 18432, fp8=True, dtype=torch.bfloat16, ops=ops)
    for lin in (attn.q_a_proj, attn.kv_a_proj_with_mqa, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
        w = torch.randn(lin.out_features, lin.in_features, device=device) / lin.in_features ** 0.5
        q, s = ops.quantize_block_fp8(w)
        lin.weight.data.copy_(q)
        lin.weight_scale_inv.data.copy_(s)
    for T in (1, 7, 300):
        x = torch.randn(T, 7168, device=device).to(torch.bfloat16)
        qa, kv = attn.q_kv_a(x, ops)
        assert _rel(qa, attn.q_a_proj(x)) < 1e-2 and _rel(kv, attn.kv_a_proj_with_mqa(x)) < 1e-2
        y = mlp(x)
        g, u = mlp.gate_proj(x).float(), mlp.up_proj(x).float()
        ref = mlp.down_proj((torch.nn.functional.silu(g) * u).to(torch.bfloat16))
        assert torch.isfinite(y).all() and _rel(y, ref) < 3e-2


def test_norm_quant_path_is_bit_identical(monkeypatch):
    """Norms feeding only FP8 GEMMs run fused with the activation quant (RMSNorm.forward_fp8): the fused
    kernel's q/s are bit-equal to norm then quant (tests/kernels/test_norm.py), so a forward through the
    dense layer gives bit-identical outputs with the fused path on and off (bf16, interpreter)."""
    from tritonseek.model.layers import RMSNorm
    from tritonseek.model.mla import MLA, AttentionBatch

    model = build_slice(v3_config(1, tiny=True, mtp=False), backend="triton", device="cpu", dtype=torch.bfloat16,
                        seed=6)  # the dense layer has all three fused norms (the residual variant: test_norm.py)
    assert model.model.layers[0].self_attn.accepts_fp8() and model.model.layers[0].mlp.accepts_fp8()
    T = 6
    ids = torch.randint(2, model.cfg.vocab_size, (T,), generator=torch.Generator().manual_seed(0))
    batch = AttentionBatch(True, torch.full((T,), -1), cu_seqlens=torch.tensor([0, 2, T], dtype=torch.int32),
                           max_seqlen=4)
    calls = []
    real = RMSNorm.forward_fp8
    monkeypatch.setattr(RMSNorm, "forward_fp8", lambda self, *a: calls.append(1) or real(self, *a))
    with torch.inference_mode():
        h_on = model(ids, torch.tensor([0, 1, 0, 1, 2, 3]), batch, [None])
        assert len(calls) == 3  # the input norm, q_a_layernorm and the post-attention norm
        monkeypatch.setattr(MLA, "accepts_fp8", lambda self: False)
        monkeypatch.setattr(MLP, "accepts_fp8", lambda self: False)
        monkeypatch.setattr(RMSNorm, "forward_fp8", lambda self, *a: (_ for _ in ()).throw(AssertionError("fp8")))
        monkeypatch.setattr(Ops, "rms_norm_quant", lambda self, *a: (_ for _ in ()).throw(AssertionError("q_a")))
        monkeypatch.setattr(MLA, "forward", _mla_forward_unfused(MLA.forward))
        h_off = model(ids, torch.tensor([0, 1, 0, 1, 2, 3]), batch, [None])
    assert torch.isfinite(h_on.float()).all()
    assert torch.equal(h_on, h_off)


def _mla_forward_unfused(forward):
    """MLA.forward with the q_a_layernorm + quant fusion off (the plain q_a_layernorm then q_b_proj)."""
    def run(self, x, *args):
        qb = self.q_b_proj
        fp8 = qb.fp8
        qb.fp8 = False  # takes the `qb(self.q_a_layernorm(q))` branch; the Linear still holds FP8 weights
        try:
            return forward(self, x, *args)
        finally:
            qb.fp8 = fp8
    return run
