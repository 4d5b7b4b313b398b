"""``quantization_config.scale_fmt`` (DeepSeek-V3.1: "ue8m0", power-of-two activation scales) from config.json to
every activation quant of the model, on both backends.

Why the model checks are built as they are: on the CPU the Triton backend's FP8 GEMMs run through the interpreter
(fp16-emulated FP8 dots), so whole-model logits of the two backends differ by 4-11 % on the default model (measured
with this test's prefill + decode, s26, with and without UE8M0 alike; test_backends_gpu.py explains the amplification)
— as much as UE8M0 itself moves them (5-7 %). So "the backends agree" is checked where it is exact: every fused quant the triton model
launches returns the bytes and scales of the reference op with the same switch, and every FP8 GEMM input scale of
the model is a power of two (the switch reached each quant site, incl. the MoE and fp8_linear); "the switch is wired"
by the logits of both backends moving when only scale_fmt changes.
"""

from __future__ import annotations

import json
import shutil
import types

import pytest
import torch

from tritonseek.engine.kv_cache import PagedLatentCache
from tritonseek.engine.llm import DEFAULT_MODEL_DIR
from tritonseek.kernels.reference.fp8 import dequant_token_group_fp8_ref
from tritonseek.kernels.reference.moe import calc_diff, moe_experts_fp8_ref
from tritonseek.model.config import ConfigError, ModelConfig
from tritonseek.model.loader import load_model
from tritonseek.model.mla import AttentionBatch
from tritonseek.model.ops import Ops


# ------------------------------------------------------------------------------------------------ config
def _cfg(**quant):
    d = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    d["quantization_config"] = {**d["quantization_config"], **quant}
    return d


def test_scale_fmt_parsed():
    base = _cfg()
    base["quantization_config"].pop("scale_fmt", None)
    assert ModelConfig.from_dict(base).quantization_config.scale_fmt is None  # absent: fp32 scales
    assert "scale_fmt" not in ModelConfig.from_dict(base).to_dict()["quantization_config"]
    assert ModelConfig.from_dict(_cfg(scale_fmt=None)).quantization_config.scale_fmt is None
    c = ModelConfig.from_dict(_cfg(scale_fmt="ue8m0"))
    assert c.quantization_config.scale_fmt == "ue8m0"
    assert ModelConfig.from_dict(c.to_dict()).quantization_config.scale_fmt == "ue8m0"  # round trip


@pytest.mark.parametrize("bad", ["UE8M0", "fp32", "e8m0", "", 0, True, ["ue8m0"]])
def test_scale_fmt_bad_value_names_the_field(bad):
    with pytest.raises(ConfigError, match=r"^quantization_config\.scale_fmt=.* is not supported; only 'ue8m0'"):
        ModelConfig.from_dict(_cfg(scale_fmt=bad))


def test_ops_for_config():
    plain = ModelConfig.from_dict(_cfg())
    ue = ModelConfig.from_dict(_cfg(scale_fmt="ue8m0"))
    ops = Ops("triton")
    assert ops.for_config(plain) is ops and not ops.scale_ue8m0
    o2 = ops.for_config(ue)
    assert o2 is not ops and o2.scale_ue8m0 and o2.backend == "triton" and not ops.scale_ue8m0
    assert o2.for_config(ue) is o2 and not o2.for_config(plain).scale_ue8m0
    r = Ops("reference", fp8_activations=True).for_config(ue)
    assert r.fp8_activations and r.scale_ue8m0
    for bad in (1, "ue8m0", None):
        with pytest.raises(TypeError, match="^scale_ue8m0 must be a bool"):
            Ops("triton", scale_ue8m0=bad)


# ------------------------------------------------------------------------------------------------ the model
def _checkpoint(tmp_path, fmt):
    d = tmp_path / (fmt or "plain")
    shutil.copytree(DEFAULT_MODEL_DIR, d)
    c = json.loads((d / "config.json").read_text())
    if fmt is not None:
        c["quantization_config"]["scale_fmt"] = fmt
    (d / "config.json").write_text(json.dumps(c))
    return d


def _prefill_and_decode(path, ops):
    """Logits of a 2 × 5-token prefill and of one decode step after it (paged cache, bf16)."""
    model = load_model(path, ops=ops, device="cpu", dtype=torch.bfloat16, with_mtp=False)
    cfg = model.cfg
    ids = torch.randint(2, cfg.vocab_size, (2, 6), generator=torch.Generator().manual_seed(7))
    cache = PagedLatentCache(model.num_cache_layers, 8, 4, cfg.kv_lora_rank + cfg.qk_rope_head_dim, model.dtype,
                             torch.device("cpu"))
    slots = []
    for i in range(2):
        cache.ensure_capacity(i, 6)
        slots += cache.slots(i, 0, 5)
    pre = AttentionBatch(True, torch.tensor(slots), cu_seqlens=torch.tensor([0, 5, 10], dtype=torch.int32),
                         max_seqlen=5)
    step = AttentionBatch(False, torch.tensor([cache.slots(i, 5, 6)[0] for i in range(2)]),
                          block_table=cache.block_table([0, 1]), cache_seqlens=torch.full((2,), 6, dtype=torch.int32),
                          seqlen_q=1)
    with torch.inference_mode():
        lp = model.compute_logits(model(ids[:, :5].reshape(-1), torch.arange(5).repeat(2), pre, cache.layers))
        ld = model.compute_logits(model(ids[:, 5], torch.full((2,), 5), step, cache.layers))
    return model, lp, ld


def _rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


_QUANT_OPS = ("rms_norm_quant", "fused_add_rms_norm_quant", "silu_mul_quant", "mla_prologue_fp8", "mla_absorb_o_fp8")


def test_triton_model_quants_equal_reference_ops_and_gemm_scales_are_pow2(monkeypatch, tmp_path):
    """Default model with scale_fmt "ue8m0" on the triton backend (prefill + decode): each fused quant it launches
    gives the bytes / scales of the reference op with the same switch, and every FP8 GEMM reads power-of-two scales."""
    import tritonseek.kernels.fp8_gemm as G

    path = _checkpoint(tmp_path, "ue8m0")
    ref_ops = Ops("reference", fp8_activations=True, scale_ue8m0=True)
    seen, scales = [], []
    for name in _QUANT_OPS:
        real = getattr(Ops, name)

        def spy(self, *a, _real=real, _name=name, **k):
            out = _real(self, *a, **k)
            if self.is_triton:
                assert self.scale_ue8m0, "the model's Ops did not take scale_fmt from config.json"
                want = _real(ref_ops, *a, **k)
                if _name == "mla_absorb_o_fp8":  # its product rounds differently from the reference einsum
                    assert _rel(dequant_token_group_fp8_ref(*out[:2]), dequant_token_group_fp8_ref(*want[:2])) < 3e-2
                else:
                    assert torch.equal(out[0].view(torch.uint8), want[0].view(torch.uint8)), _name
                    assert torch.equal(out[1], want[1]), _name
                seen.append(_name)
            return out

        monkeypatch.setattr(Ops, name, spy)
    real_gemm = G.fp8_gemm_nt

    def gemm_spy(a, a_scale, *args, **kw):
        scales.append(a_scale.detach().clone())
        return real_gemm(a, a_scale, *args, **kw)

    monkeypatch.setattr(G, "fp8_gemm_nt", gemm_spy)
    _prefill_and_decode(path, Ops("triton"))
    assert {"fused_add_rms_norm_quant", "silu_mul_quant", "mla_prologue_fp8"} <= set(seen), seen
    assert len(scales) > 10
    for s in scales:
        assert (torch.frexp(s)[0] == 0.5).all(), "an FP8 GEMM read a scale that is not a power of two"
    monkeypatch.undo()
    # the same check fails without the switch: plain scales are not powers of two
    scales.clear()
    monkeypatch.setattr(G, "fp8_gemm_nt", gemm_spy)
    _prefill_and_decode(_checkpoint(tmp_path, None), Ops("triton"))
    assert not all((torch.frexp(s)[0] == 0.5).all() for s in scales)


def test_scale_fmt_moves_the_logits_of_both_backends(tmp_path):
    """Only scale_fmt differs: each backend's logits move (the switch is wired end to end), and the two backends
    stay as close as they are without it (CPU figures in the module docstring)."""
    ue, plain = _checkpoint(tmp_path, "ue8m0"), _checkpoint(tmp_path, None)
    out = {}
    for name, path, ops in (("tri_ue", ue, Ops("triton")), ("tri", plain, Ops("triton")),
                            ("ref_ue", ue, Ops("reference", fp8_activations=True)),
                            ("ref", plain, Ops("reference", fp8_activations=True))):
        model, lp, ld = _prefill_and_decode(path, ops)
        assert model.ops.scale_ue8m0 == name.endswith("_ue")
        out[name] = torch.cat([lp, ld]).float()
    assert torch.isfinite(out["tri_ue"]).all()
    assert _rel(out["tri_ue"], out["tri"]) > 1e-2 and _rel(out["ref_ue"], out["ref"]) > 1e-2
    assert _rel(out["tri_ue"], out["ref_ue"]) < 0.15 and _rel(out["tri"], out["ref"]) < 0.15


# ------------------------------------------------------------------------------------------------ MoE (triton)
def _moe(E, H, I, device, seed, ue8m0):
    g = torch.Generator(device=device).manual_seed(seed)  # drawn on the device, one expert at a time (V3 widths)

    def w(n, k):
        q = torch.empty(E, n, k, dtype=torch.float8_e4m3fn, device=device)
        for e in range(E):
            q[e] = (torch.randn(n, k, generator=g, device=device) * 0.5).to(torch.float8_e4m3fn)
        return q, torch.rand(E, n // 128, k // 128, generator=g, device=device) * 0.02 + 0.005

    w13, s13 = w(2 * I, H)
    w2, s2 = w(H, I)
    return types.SimpleNamespace(w13=w13, w13_scale_inv=s13, w2=w2, w2_scale_inv=s2,
                                 ops=types.SimpleNamespace(scale_ue8m0=ue8m0))


def _check_moe(device, T, E, H, I, k, monkeypatch):
    import tritonseek.model.moe_triton as MT

    moe = _moe(E, H, I, device, T, True)
    g = torch.Generator().manual_seed(T + 1)
    x = torch.randn(T, H, generator=g).to(torch.bfloat16).to(device)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]).to(torch.int32).to(device)
    w = (torch.rand(T, k, generator=g) + 0.1).to(device)
    flags = []
    for name in ("moe_permute_masked", "grouped_fp8_gemm_masked_silu_quant", "silu_mul_quant_fp8",
                 "per_token_group_quant_fp8"):
        real = getattr(MT, name)

        def spy(*a, _real=real, _name=name, **kw):
            # the quant launchers of fp8_quant take it as their 3rd argument, the others as a keyword
            flags.append((_name, kw["scale_ue8m0"] if "scale_ue8m0" in kw else a[2] if "quant_fp8" in _name else None))
            return _real(*a, **kw)

        monkeypatch.setattr(MT, name, spy)
    ref = moe_experts_fp8_ref(x, w, ids, moe.w13, moe.w13_scale_inv, moe.w2, moe.w2_scale_inv, scale_ue8m0=True)
    for layout in ("masked", "contiguous"):
        flags.clear()
        y = MT.moe_experts_triton(x, w, ids, moe, layout=layout)
        assert flags and all(f is True for _, f in flags), (layout, flags)  # moe.ops.scale_ue8m0 reached each quant
        d = calc_diff(y.float(), ref.float())
        assert torch.isfinite(y).all() and d < 1e-3, (layout, d)
        flags.clear()
        MT.moe_experts_triton(x, w, ids, moe, layout=layout, scale_ue8m0=False)
        assert flags and all(f is False for _, f in flags), (layout, flags)
    with pytest.raises(TypeError, match="^scale_ue8m0 must be a bool"):
        MT.moe_experts_triton(x, w, ids, moe, scale_ue8m0=1)


def test_moe_experts_triton_follows_the_ops_switch(device, monkeypatch):
    _check_moe(device, 3, 6, 256, 128, 3, monkeypatch)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 64, 200])
def test_moe_experts_triton_ue8m0_v3_gpu(device, monkeypatch, T):
    """V3 expert widths (H 7168, I 2048, k 8), 32 experts: ue8m0 masked (decode) and contiguous layouts vs the
    reference with power-of-two scales, calc_diff < 1e-3 (tolerance: test_moe_triton.py)."""
    _check_moe(device, T, 32, 7168, 2048, 8, monkeypatch)
