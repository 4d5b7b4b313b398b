"""Logits parity with transformers' DeepseekV3/DeepseekV2 on tiny random checkpoints, and
prefill-vs-decode consistency through the paged latent cache.

Tolerance: both sides compute in fp32 with the same weights; the remaining difference is
summation order (absorbed vs non-absorbed attention, einsum vs matmul), ~1e-6 relative. We
assert ≤ 1e-4 relative Frobenius error (the issue's bound) and print the measured value.
"""

from __future__ import annotations

import pytest
import torch

from tests.model.tiny import build_hf_model, save_checkpoint
from tritonseek.engine.kv_cache import PagedLatentCache
from tritonseek.model.loader import load_model
from tritonseek.model.mla import AttentionBatch
from tritonseek.model.ops import Ops


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def make_cache(model, tokens: int, page_size: int) -> PagedLatentCache:
    cfg = model.cfg
    blocks = -(-tokens // page_size) + 2
    return PagedLatentCache(model.num_cache_layers, blocks, page_size, cfg.kv_lora_rank + cfg.qk_rope_head_dim,
                            model.dtype, torch.device("cpu"))


def prefill_logits(model, ids: list[list[int]], page_size: int = 16) -> list[torch.Tensor]:
    """All-position logits of each sequence from one varlen prefill."""
    cache = make_cache(model, sum(map(len, ids)) + page_size * len(ids), page_size)
    flat, pos, slots, cu = [], [], [], [0]
    for i, seq in enumerate(ids):
        cache.ensure_capacity(i, len(seq))
        flat += seq
        pos += list(range(len(seq)))
        slots += cache.slots(i, 0, len(seq))
        cu.append(cu[-1] + len(seq))
    batch = AttentionBatch(True, torch.tensor(slots), cu_seqlens=torch.tensor(cu, dtype=torch.int32),
                           max_seqlen=max(map(len, ids)))
    with torch.inference_mode():
        h = model(torch.tensor(flat), torch.tensor(pos), batch, cache.layers)
        logits = model.compute_logits(h)
    return [logits[cu[i]:cu[i + 1]] for i in range(len(ids))]


def decode_logits(model, ids: list[list[int]], prefix: int, page_size: int) -> list[torch.Tensor]:
    """Prefill the first ``prefix`` tokens of each sequence, then decode the rest one token a step."""
    cache = make_cache(model, sum(map(len, ids)) + page_size * len(ids), page_size)
    out = [[] for _ in ids]
    flat, pos, slots, cu = [], [], [], [0]
    for i, seq in enumerate(ids):
        cache.ensure_capacity(i, prefix)
        flat += seq[:prefix]
        pos += list(range(prefix))
        slots += cache.slots(i, 0, prefix)
        cu.append(cu[-1] + prefix)
    batch = AttentionBatch(True, torch.tensor(slots), cu_seqlens=torch.tensor(cu, dtype=torch.int32), max_seqlen=prefix)
    with torch.inference_mode():
        lg = model.compute_logits(model(torch.tensor(flat), torch.tensor(pos), batch, cache.layers))
        for i in range(len(ids)):
            out[i].append(lg[cu[i]:cu[i + 1]])
        for p in range(prefix, len(ids[0])):
            for i in range(len(ids)):
                cache.ensure_capacity(i, p + 1)
            batch = AttentionBatch(
                False, torch.tensor([s for i in range(len(ids)) for s in cache.slots(i, p, p + 1)]),
                block_table=cache.block_table(list(range(len(ids)))),
                cache_seqlens=torch.full((len(ids),), p + 1, dtype=torch.int32), seqlen_q=1,
            )
            tok = torch.tensor([seq[p] for seq in ids])
            lg = model.compute_logits(model(tok, torch.full((len(ids),), p), batch, cache.layers))
            for i in range(len(ids)):
                out[i].append(lg[i:i + 1])
    return [torch.cat(o) for o in out]


@pytest.mark.parametrize("kind", ["v3", "v2"])
@pytest.mark.parametrize("fp8", [False, True], ids=["fp32", "fp8"])
def test_logits_match_transformers(tmp_path, kind, fp8):
    hf = build_hf_model(kind, seed=1)
    save_checkpoint(hf, tmp_path, fp8=fp8)
    ours = load_model(tmp_path, ops=Ops("reference"), dtype=torch.float32)
    assert ours.fp8 == fp8
    g = torch.Generator().manual_seed(7)
    ids = [torch.randint(2, ours.cfg.vocab_size, (n,), generator=g).tolist() for n in (37, 12)]
    got = prefill_logits(ours, ids)
    for seq, lg in zip(ids, got):
        with torch.no_grad():
            want = hf(torch.tensor([seq])).logits[0].float()
        err = rel_err(lg, want)
        print(f"{kind} {'fp8' if fp8 else 'fp32'} len={len(seq)} rel_err={err:.2e}")
        assert err <= 1e-4


@pytest.mark.parametrize("page_size", [1, 4, 16])
def test_prefill_equals_decode_across_pages(tmp_path, page_size):
    hf = build_hf_model("v3", seed=2)
    save_checkpoint(hf, tmp_path, fp8=True)
    model = load_model(tmp_path, ops=Ops("reference"), dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    ids = [torch.randint(2, model.cfg.vocab_size, (21,), generator=g).tolist() for _ in range(2)]
    full = prefill_logits(model, ids, page_size)
    stepped = decode_logits(model, ids, prefix=5, page_size=page_size)
    for a, b in zip(full, stepped):
        assert rel_err(b, a) <= 1e-4


def test_dropped_groups_masked_with_neg_inf_not_zero():
    """DeepSeek semantics (not HF V2's 0-mask): with every biased score negative, a 0-mask would
    let experts of dropped groups win; -inf keeps every pick inside the kept groups."""
    from tritonseek.kernels.reference.moe import gate_topk_ref

    T, E, G = 16, 16, 4
    logits = torch.randn(T, E) - 8.0  # sigmoid ≈ 3e-4
    bias = torch.full((E,), -1.0)
    w, ids = gate_topk_ref(logits, bias, top_k=4, n_group=G, topk_group=2, scoring_func="sigmoid",
                           topk_method="noaux_tc", norm_topk_prob=True, routed_scaling_factor=2.5)
    biased = logits.sigmoid() + bias
    group_score = biased.view(T, G, E // G).topk(2, dim=-1).values.sum(-1)
    kept = group_score.topk(2, dim=-1).indices
    assert torch.all((ids.long() // (E // G)).unsqueeze(-1).eq(kept.unsqueeze(1)).any(-1))
    torch.testing.assert_close(w.sum(-1), torch.full((T,), 2.5), rtol=1e-5, atol=1e-5)


def test_softmax_scale_has_mscale_squared():
    from tritonseek.model.config import ModelConfig, yarn_mscale

    hf = build_hf_model("v3", seed=0)
    cfg = ModelConfig.from_dict(hf.config.to_dict())
    m = yarn_mscale(4.0, 0.707)
    assert cfg.softmax_scale == pytest.approx(48**-0.5 * m * m)


def test_reference_fp8_activations_option():
    """Ops('reference', fp8_activations=True) = DeepSeek's act_quant + fp8_gemm numerics in fp32."""
    from tritonseek.kernels.reference.fp8 import (dequant_block_fp8_ref, dequant_token_group_fp8_ref,
                                                  per_block_quant_fp8_ref, per_token_group_quant_fp8_ref)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 300, generator=g)
    w, s = per_block_quant_fp8_ref(torch.randn(200, 300, generator=g))
    got = Ops("reference", fp8_activations=True).linear(x, w, s)
    want = dequant_token_group_fp8_ref(*per_token_group_quant_fp8_ref(x)) @ dequant_block_fp8_ref(w, s).t()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    plain = Ops("reference").linear(x, w, s)
    assert rel_err(plain, want) > 1e-3  # the option changes the numbers (FP8 rounding of x)
