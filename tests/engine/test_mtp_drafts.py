"""Chained MTP drafts (``MTPDrafter.draft``, K ≥ 3) against an independent, cache-free computation.

Verification hides bad drafts (greedy output stays token-identical to plain decoding whatever the drafts are),
so the drafts themselves are pinned here instead of an acceptance figure. For every verify step of a K-draft
generate call, with accepted tokens t_0…t_n, the drafts must equal what the MTP module gives when run by hand
over the whole sequence with no KV cache (prefill attention over positions 0…p, as in training):

- target hiddens h_0…h_{n−1}: the main model (pre final norm) over t_0…t_{n−1};
- MTP position i < n is fed (h_i, t_{i+1}) — after each step's MTP pass the cache holds exactly these rows;
- draft d_{n+1} is argmax of the MTP logits at position n−1, and each further draft d_{n+j} (j ≥ 2) is the argmax
  at position n+j−2, fed by the MTP's own output at position n+j−3 and the *previous* draft d_{n+j−1}.

The by-hand run shares no code with the drafter beyond the module itself: no paged cache, no decode batches, no
batch of sequences, no draft bookkeeping. Its argmax is only compared where its top-2 logit gap exceeds
``_TIE_GAP``: the drafter runs the cached (decode) attention path, whose fp32 sums differ from the prefill path's
by ~1e-5, so a closer pair could legitimately flip (none does on these prompts: smallest gap seen 0.0097).
"""

from __future__ import annotations

import pytest
import torch

from tritonseek import LLM, SamplingParams
from tritonseek.engine import speculative
from tritonseek.model.mla import AttentionBatch

_TIE_GAP = 1e-3
_PROMPTS = ["def fibonacci(n):\n", "import os\n", "class Stack:\n"]


@pytest.fixture(scope="module")
def llm():
    return LLM(device="cpu", backend="reference")


def _no_cache_batch(t: int) -> AttentionBatch:
    # one prefill sequence of t tokens that writes no cache rows (slot −1) and reads no context
    return AttentionBatch(True, torch.full((t,), -1, dtype=torch.int64), cu_seqlens=torch.tensor([0, t], dtype=torch.int32),
                          max_seqlen=t)


@torch.inference_mode()
def _drafts_by_hand(model, tokens: list[int], k: int) -> list[tuple[int, float]]:
    """(draft, top-2 logit gap) for the k drafts that follow accepted tokens t_0…t_n = ``tokens``."""
    n = len(tokens) - 1
    ids = torch.tensor(tokens)
    hidden = model(ids[:n], torch.arange(n), _no_cache_batch(n), [None] * model.num_cache_layers)
    mtp = model.mtp[0]
    nxt = ids[1:]  # MTP position i sees the token after it
    out = []
    for _ in range(k):
        t = hidden.shape[0]
        hm = mtp(nxt, hidden, torch.arange(t), _no_cache_batch(t), None)
        top = mtp.logits(hm[-1:])[0].topk(2)
        draft = int(top.indices[0])
        out.append((draft, float(top.values[0] - top.values[1])))
        # chain: the next position is fed by this position's MTP output and this draft
        hidden, nxt = torch.cat([hidden, hm[-1:]]), torch.cat([nxt, torch.tensor([draft])])
    return out


@pytest.mark.parametrize("k", [3, 4])
def test_chained_drafts_equal_the_mtp_module_run_by_hand(llm, monkeypatch, k):
    steps: list[tuple[list[int], list[int]]] = []
    orig = speculative.MTPDrafter.verify

    def verify(self, seqs, drafts, limits=None):
        steps.extend((s.prompt_ids + s.out_ids, row) for s, row in zip(seqs, drafts.tolist()))
        return orig(self, seqs, drafts, limits)

    monkeypatch.setattr(speculative.MTPDrafter, "verify", verify)
    llm.generate(_PROMPTS, SamplingParams(max_new_tokens=12, ignore_eos=True), mtp=k)
    assert sum(len(d) == k for _, d in steps) >= len(_PROMPTS)  # full-length chains were drafted (K shrinks at the end)
    checked = chained = 0
    for tokens, drafts in steps:
        ref = _drafts_by_hand(llm.model, tokens, len(drafts))
        for j, (d, (want, gap)) in enumerate(zip(drafts, ref)):
            if gap < _TIE_GAP:  # a near-tie: either token is right, and the chains part ways if they differ
                if d != want:
                    break
                continue
            assert d == want, f"tokens {tokens}: drafts {drafts}, by hand {[r[0] for r in ref]} (draft {j + 1})"
            checked += 1
            chained += j >= 2  # the drafts fed by an earlier *chained* draft
    assert chained >= len(_PROMPTS) and checked >= 0.9 * sum(len(d) for _, d in steps)
