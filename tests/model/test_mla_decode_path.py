"""MLA's fused decode launches on the triton backend (CPU interpreter), on a tiny random V3 checkpoint (q_lora,
block-FP8 weights, v_head_dim 128, written by transformers' save_pretrained): the decode step runs
``mla_prologue_fp8`` + the q rope inside ``mla_absorb_q`` and ``mla_absorb_o_fp8`` (W_UV product + o_proj's
input quant); its logits must be bit-equal to the unfused path (``rms_norm_quant_fp8`` + ``mla_rope_cache`` +
``mla_absorb_q`` without rope; ``mla_absorb_o`` + fp8_linear's quant), which computes the same rounded values in
the same fp32 order, and the latent cache must hold the same rows.
"""

from __future__ import annotations

import torch

import pytest

from tritonseek.engine.kv_cache import PagedLatentCache
from tests.model.tiny import build_hf_model, save_checkpoint
from tritonseek.model.loader import load_model
from tritonseek.model.mla import MLA, AttentionBatch
from tritonseek.model.ops import Ops


def _fused_and_unfused(monkeypatch, tmp_path, device, **hf_kw):
    """Logits and caches of one decode step (after a 5-token prefill of 2 prompts), fused launches vs unfused."""
    save_checkpoint(build_hf_model("v3", seed=4, **hf_kw), tmp_path, fp8=True)
    model = load_model(tmp_path, ops=Ops("triton"), device=device, dtype=torch.bfloat16, with_mtp=False)
    cfg = model.cfg
    g = torch.Generator().manual_seed(7)
    B, P, page = 2, 5, 4  # prompts of 5 tokens over 4-token pages: the decoded token opens page 2
    ids = torch.randint(2, cfg.vocab_size, (B, P + 1), generator=g).to(device)
    cache = PagedLatentCache(model.num_cache_layers, B * 2 + 4, page, cfg.kv_lora_rank + cfg.qk_rope_head_dim,
                             model.dtype, torch.device(device))
    slots = []
    for i in range(B):
        cache.ensure_capacity(i, P + 1)
        slots += cache.slots(i, 0, P)
    t = lambda v, **k: torch.tensor(v, device=device, **k)  # noqa: E731
    pre = AttentionBatch(True, t(slots), cu_seqlens=torch.arange(0, B * P + 1, P, dtype=torch.int32, device=device),
                         max_seqlen=P)
    with torch.inference_mode():
        model(ids[:, :P].reshape(-1), torch.arange(P, device=device).repeat(B), pre, cache.layers)
    before = [c.clone() for c in cache.layers]
    step = AttentionBatch(False, t([cache.slots(i, P, P + 1)[0] for i in range(B)]),
                          block_table=cache.block_table(list(range(B))).to(device),
                          cache_seqlens=torch.full((B,), P + 1, dtype=torch.int32, device=device), seqlen_q=1,
                          mla_metadata=model.ops.mla_metadata(torch.full((B,), P + 1, dtype=torch.int32, device=device),
                                                              1, cfg.num_attention_heads) if device != "cpu" else None)

    def decode():
        for c, b in zip(cache.layers, before):
            c.copy_(b)
        with torch.inference_mode():
            lg = model.compute_logits(model(ids[:, P], torch.full((B,), P, device=device), step, cache.layers))
        return lg, [c.clone() for c in cache.layers]

    calls = []
    for name in ("mla_prologue_fp8", "mla_absorb_o_fp8"):
        real = getattr(Ops, name)
        monkeypatch.setattr(Ops, name, lambda self, *a, _r=real, _n=name, **k: calls.append(_n) or _r(self, *a, **k))
    fused, fused_cache = decode()
    # the decode step took both fused launches in every layer (the prefill keeps the unfused path)
    assert sorted(calls) == sorted(["mla_prologue_fp8", "mla_absorb_o_fp8"] * cfg.num_hidden_layers)
    monkeypatch.setattr(MLA, "_fused_decode_prologue", lambda self, batch, kv_cache, T: False)
    monkeypatch.setattr(MLA, "fuse_o_quant", False)
    plain, plain_cache = decode()
    assert len(calls) == 2 * cfg.num_hidden_layers
    assert torch.isfinite(fused).all()
    return fused, plain, fused_cache, plain_cache


def test_fused_decode_launches_equal_unfused(monkeypatch, tmp_path):
    fused, plain, fc, pc = _fused_and_unfused(monkeypatch, tmp_path, "cpu", v_head_dim=128, num_hidden_layers=2,
                                              first_k_dense_replace=2, num_attention_heads=2, num_key_value_heads=2)
    assert torch.equal(fused, plain)
    for a, b in zip(fc, pc):
        assert torch.equal(a.nan_to_num(), b.nan_to_num())


@pytest.mark.gpu
def test_fused_decode_launches_match_unfused_gpu(monkeypatch, tmp_path):
    """V3 attention widths (16 heads, q_lora 1536, kv_lora 512, rope 64, nope 128, v 128) on the GPU: the latent's
    kv-norm sum may round differently at the prologue's warp count (one bf16 step on a few values), so logits
    agree within 1e-2 (Frobenius) and every clear argmax (top-2 margin > 0.1) is the same."""
    fused, plain, _, _ = _fused_and_unfused(
        monkeypatch, tmp_path, "cuda", hidden_size=1024, intermediate_size=2048, num_attention_heads=16,
        num_key_value_heads=16, q_lora_rank=1536, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
        v_head_dim=128, num_hidden_layers=2, first_k_dense_replace=2)
    err = ((fused.float() - plain.float()).norm() / plain.float().norm()).item()
    assert err < 1e-2, err
    top2 = plain.float().topk(2, -1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.1
    assert torch.equal(fused.argmax(-1)[clear], plain.argmax(-1)[clear])
