"""MLA's fused decode launches on the triton backend (CPU interpreter), on a tiny random V3 checkpoint (q_lora,
block-FP8 weights, v_head_dim 128, written by transformers' save_pretrained): the decode step runs
``mla_prologue_fp8`` + the q rope inside ``mla_absorb_q`` and ``mla_absorb_o_fp8`` (W_UV product + o_proj's
input quant); its logits must be bit-equal to the unfused path (``rms_norm_quant_fp8`` + ``mla_rope_cache`` +
``mla_absorb_q`` without rope; ``mla_absorb_o`` + fp8_linear's quant), which computes the same rounded values in
the same fp32 order, and the latent cache must hold the same rows.
"""

from __future__ import annotations

import torch

from tests.model.test_parity import make_cache
from tests.model.tiny import build_hf_model, save_checkpoint
from tritonseek.model.loader import load_model
from tritonseek.model.mla import MLA, AttentionBatch
from tritonseek.model.ops import Ops


def test_fused_decode_launches_equal_unfused(monkeypatch, tmp_path):
    save_checkpoint(build_hf_model("v3", seed=4, v_head_dim=128, num_hidden_layers=2, first_k_dense_replace=2,
                                   num_attention_heads=2, num_key_value_heads=2), tmp_path, fp8=True)
    model = load_model(tmp_path, ops=Ops("triton"), device="cpu", dtype=torch.bfloat16, with_mtp=False)
    g = torch.Generator().manual_seed(7)
    B, P, page = 2, 5, 4  # prompts of 5 tokens over 4-token pages: the decoded token opens page 2
    ids = torch.randint(2, model.cfg.vocab_size, (B, P + 1), generator=g)
    cache = make_cache(model, B * (P + 1) + 2 * page, page)
    slots = []
    for i in range(B):
        cache.ensure_capacity(i, P + 1)
        slots += cache.slots(i, 0, P)
    pre = AttentionBatch(True, torch.tensor(slots), cu_seqlens=torch.arange(0, B * P + 1, P, dtype=torch.int32),
                         max_seqlen=P)
    with torch.inference_mode():
        model(ids[:, :P].reshape(-1), torch.arange(P).repeat(B), pre, cache.layers)
    before = [c.clone() for c in cache.layers]
    step = AttentionBatch(False, torch.tensor([cache.slots(i, P, P + 1)[0] for i in range(B)]),
                          block_table=cache.block_table(list(range(B))),
                          cache_seqlens=torch.full((B,), P + 1, dtype=torch.int32), seqlen_q=1)

    def decode():
        for c, b in zip(cache.layers, before):
            c.copy_(b)
        with torch.inference_mode():
            lg = model.compute_logits(model(ids[:, P], torch.full((B,), P), step, cache.layers))
        return lg, [c.clone() for c in cache.layers]

    calls = []
    for name in ("mla_prologue_fp8", "mla_absorb_o_fp8"):
        real = getattr(Ops, name)
        monkeypatch.setattr(Ops, name, lambda self, *a, _r=real, _n=name, **k: calls.append(_n) or _r(self, *a, **k))
    fused, fused_cache = decode()
    # the decode step took both fused launches in every layer (the prefill keeps the unfused path)
    assert sorted(calls) == sorted(["mla_prologue_fp8", "mla_absorb_o_fp8"] * model.cfg.num_hidden_layers)
    monkeypatch.setattr(MLA, "_fused_decode_prologue", lambda self, batch, kv_cache, T: False)
    for layer in model.model.layers:
        layer.self_attn.fuse_o_quant = False
    plain, plain_cache = decode()
    assert len(calls) == 2 * model.cfg.num_hidden_layers
    assert torch.isfinite(fused).all() and torch.equal(fused, plain)
    for a, b in zip(fused_cache, plain_cache):
        assert torch.equal(a.nan_to_num(), b.nan_to_num())
