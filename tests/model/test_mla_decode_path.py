"""MLA's one-launch decode prologue on the triton backend (CPU interpreter): the shipped default model (q_lora,
block-FP8 weights) decodes with ``mla_prologue_fp8`` + the q rope inside ``mla_absorb_q``; its logits must be
bit-equal to the unfused path (``rms_norm_quant_fp8`` + ``mla_rope_cache`` + ``mla_absorb_q`` without rope),
which computes the same rounded values in the same fp32 order, and the latent cache must hold the same rows.
"""

from __future__ import annotations

import torch

from tests.model.test_parity import make_cache
from tritonseek.engine.llm import DEFAULT_MODEL_DIR
from tritonseek.model.loader import load_model
from tritonseek.model.mla import MLA, AttentionBatch
from tritonseek.model.ops import Ops


def test_fused_decode_prologue_equals_unfused(monkeypatch):
    model = load_model(DEFAULT_MODEL_DIR, ops=Ops("triton"), device="cpu", dtype=torch.bfloat16, with_mtp=False)
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
    real = Ops.mla_prologue_fp8
    monkeypatch.setattr(Ops, "mla_prologue_fp8", lambda self, *a, **k: calls.append(a[0].shape[0]) or real(self, *a, **k))
    fused, fused_cache = decode()
    assert calls == [B] * model.cfg.num_hidden_layers  # the decode step took the fused prologue in every layer
    monkeypatch.setattr(MLA, "_fused_decode_prologue", lambda self, batch, kv_cache, T: False)
    plain, plain_cache = decode()
    assert len(calls) == model.cfg.num_hidden_layers
    assert torch.isfinite(fused).all() and torch.equal(fused, plain)
    for a, b in zip(fused_cache, plain_cache):
        assert torch.equal(a.nan_to_num(), b.nan_to_num())
