"""Seeded sampling with MTP: a request's tokens do not depend on the other requests of its batch.

h3tester s24 #2: the step's draft count was one K for the whole batch (the min of every live sequence's limit),
so when one sequence neared its max_new_tokens the others drafted fewer tokens, drew other uniforms / noise and
sampled differently. ``draft_groups`` now gives each sampled sequence its own limit. Checked on the CPU reference
backend (its kernels give each row the same numbers at any batch shape), where the tester saw it.
"""

from __future__ import annotations

import pytest

from tritonseek import LLM, SamplingParams
from tritonseek.engine.runner import Sequence
from tritonseek.engine.speculative import draft_groups

PROMPTS = ["def add(a, b):", "import os", "class Foo:"]


@pytest.fixture(scope="module")
def llm():
    return LLM(device="cpu", backend="reference")  # the embedded default model (has an MTP layer)


@pytest.mark.parametrize("mtp", [1, 2])
def test_seeded_mtp_sampling_is_batch_invariant(llm, mtp):
    """The tester's case: 30 new tokens at T=0.8, seed 5. Batched, reversed and single runs agree per prompt."""
    sp = SamplingParams(temperature=0.8, seed=5, max_new_tokens=30)
    single = [llm.generate([p], sp, mtp=mtp)[0].token_ids for p in PROMPTS]
    batch = [o.token_ids for o in llm.generate(PROMPTS, sp, mtp=mtp)]
    rev = [o.token_ids for o in llm.generate(PROMPTS[::-1], sp, mtp=mtp)][::-1]
    assert batch == single and rev == single


def test_mixed_limits_and_greedy_batch_mates(llm):
    """Other max_new_tokens and a greedy request in the batch change nothing for a seeded sampled request, and the
    greedy request stays token-identical to plain greedy decoding."""
    sampled = SamplingParams(temperature=1.0, top_k=40, seed=11, max_new_tokens=25)
    short = SamplingParams(temperature=0.7, seed=3, max_new_tokens=6)
    greedy = SamplingParams(max_new_tokens=17)
    alone = llm.generate(["x = 1"], sampled, mtp=3)[0].token_ids
    got = llm.generate(["for i in", "x = 1", "import re"], [short, sampled, greedy], mtp=3)
    assert got[1].token_ids == alone
    assert got[0].token_ids == llm.generate(["for i in"], short, mtp=3)[0].token_ids
    assert got[2].token_ids == llm.generate(["import re"], greedy)[0].token_ids


def _seq(i, emitted, max_new, temperature):
    s = Sequence(i, "", [1, 2, 3], SamplingParams(temperature=temperature, max_new_tokens=max_new), None)
    s.out_ids.extend([5] * emitted)
    return s


def test_draft_groups():
    # limits min(3, max_new - emitted - 1): 3, 1, 0 (sampled), greedy 3 and 2 -> greedy at 2
    seqs = [_seq(0, 0, 10, 0.8), _seq(1, 8, 10, 0.8), _seq(2, 9, 10, 0.8), _seq(3, 0, 10, 0.0), _seq(4, 7, 10, 0.0)]
    assert draft_groups(seqs, 3) == {3: [0], 2: [3, 4], 1: [1], 0: [2]}
    assert list(draft_groups(seqs, 3)) == [3, 2, 1, 0]  # largest k first
    # all greedy: one batch at the smallest limit (the old rule); all sampled at one limit: one batch
    assert draft_groups(seqs[3:], 3) == {2: [0, 1]}
    assert draft_groups([seqs[0], _seq(1, 2, 10, 0.5)], 3) == {3: [0, 1]}
    # a greedy limit equal to a sampled one shares its batch
    assert draft_groups([seqs[1], _seq(1, 8, 10, 0.0)], 4) == {1: [0, 1]}


# --- LLM.mtp_draft_masks (off by default): one masked verify batch per step instead of one batch per draft count


@pytest.fixture
def masked(llm):
    llm.mtp_draft_masks = True
    yield llm
    llm.mtp_draft_masks = False


@pytest.mark.parametrize("mtp", [1, 3])
def test_masked_steps_are_batch_invariant_in_one_batch(masked, mtp):
    sp = SamplingParams(temperature=0.8, seed=5, max_new_tokens=30)
    single = [masked.generate([p], sp, mtp=mtp)[0].token_ids for p in PROMPTS]
    batch = [o.token_ids for o in masked.generate(PROMPTS, sp, mtp=mtp)]
    steps_masked = masked.last_stats.decode_steps
    rev = [o.token_ids for o in masked.generate(PROMPTS[::-1], sp, mtp=mtp)][::-1]
    assert batch == single and rev == single
    masked.mtp_draft_masks = False
    masked.generate(PROMPTS, sp, mtp=mtp)
    assert steps_masked <= masked.last_stats.decode_steps  # never more forwards than one batch per draft count


def test_masked_steps_mixed_limits_and_greedy_mate(masked):
    sampled = SamplingParams(temperature=1.0, top_k=40, seed=11, max_new_tokens=25)
    short = SamplingParams(temperature=0.7, seed=3, max_new_tokens=6)
    greedy = SamplingParams(max_new_tokens=17)
    got = masked.generate(["for i in", "x = 1", "import re"], [short, sampled, greedy], mtp=3)
    assert got[1].token_ids == masked.generate(["x = 1"], sampled, mtp=3)[0].token_ids
    assert got[0].token_ids == masked.generate(["for i in"], short, mtp=3)[0].token_ids
    assert got[2].token_ids == masked.generate(["import re"], greedy)[0].token_ids


def test_step_plan():
    from tritonseek.engine.speculative import step_plan

    seqs = [_seq(0, 0, 10, 0.8), _seq(1, 8, 10, 0.8), _seq(2, 9, 10, 0.8), _seq(3, 0, 10, 0.0), _seq(4, 7, 10, 0.0)]
    assert step_plan(seqs, 3, 100, False) == [(k, rows, None) for k, rows in draft_groups(seqs, 3).items()]
    assert step_plan(seqs, 3, 100, True) == [(3, [0, 1, 2, 3, 4], [3, 1, 0, 3, 2])]
    assert step_plan([seqs[2]], 3, 100, True) == [(1, [0], [0])]  # a sampled row at limit 0: one masked draft
    assert step_plan(seqs[3:], 3, 100, True) == [(2, [0, 1], None)]  # all greedy: the unmasked rule
    # prompt 3 + 9 emitted: the row at limit 0 sits at position n = 11; with max_positions 13 a k = 3 batch would pass
    # it: one masked batch per max(1, limit), each row then within range (n + limit + 1 < max_positions)
    assert step_plan(seqs, 3, 13, True) == [(3, [0, 3], [3, 3]), (2, [4], [2]), (1, [1, 2], [1, 0])]
