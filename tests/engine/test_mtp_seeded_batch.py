"""Seeded sampling with MTP: a request's tokens do not depend on the other requests of its batch.

h3tester s24 #2: the step's draft count was one K for the whole batch (the min of every live sequence's limit),
so when one sequence neared its max_new_tokens the others drafted fewer tokens, drew other uniforms / noise and
sampled differently. ``step_plan`` now runs one batch in which each row drafts its own limit (the rest masked).
Checked on the CPU reference backend, where the tester saw it (H200: benchmarks/probe_engine_fixes.py).
"""

from __future__ import annotations

import pytest

from tritonseek import LLM, SamplingParams
from tritonseek.engine.runner import Sequence
from tritonseek.engine.speculative import step_plan

PROMPTS = ["def add(a, b):", "import os", "class Foo:"]


@pytest.fixture(scope="module")
def llm():
    return LLM(device="cpu", backend="reference")  # the embedded default model (has an MTP layer)


@pytest.mark.parametrize("mtp", [1, 2, 3])
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


def test_step_plan():
    # limits min(3, max_new - emitted - 1): 3, 1, 0 (sampled), 3 and 2 (greedy): one batch at k = 3, masked per row
    # (greedy rows too, once a sampled row is in the batch)
    seqs = [_seq(0, 0, 10, 0.8), _seq(1, 8, 10, 0.8), _seq(2, 9, 10, 0.8), _seq(3, 0, 10, 0.0), _seq(4, 7, 10, 0.0)]
    assert step_plan(seqs, 3, 100) == [(3, [0, 1, 2, 3, 4], [3, 1, 0, 3, 2])]
    assert step_plan([seqs[2]], 3, 100) == [(1, [0], [0])]  # a row at limit 0: one masked draft (k >= 1 always)
    assert step_plan(seqs[3:], 3, 100) == [(2, [0, 1], None)]  # all greedy: the smallest limit, unmasked
    assert step_plan([seqs[3], _seq(1, 9, 10, 0.0)], 3, 100) == [(0, [0, 1], None)]  # k = 0: a plain decode step
    # prompt 3 + 9 emitted: the row at limit 0 sits at position n = 11; with max_positions 13 a k = 3 batch would pass
    # it: one masked batch per max(1, limit), each row then within range (n + limit + 1 < max_positions)
    assert step_plan(seqs, 3, 13) == [(3, [0, 3], [3, 3]), (2, [4], [2]), (1, [1, 2], [1, 0])]


def test_tail_steps_emit_per_row_limits(llm):
    """Rows with different remaining budgets share each step: never more steps than the longest request needs at
    one token per step, and a 2-token request next to a long one still ends with exactly 2 tokens."""
    sp_long = SamplingParams(temperature=0.9, seed=1, max_new_tokens=12, ignore_eos=True)
    sp_short = SamplingParams(temperature=0.9, seed=2, max_new_tokens=2, ignore_eos=True)
    out = llm.generate(["import os", "x = 1"], [sp_long, sp_short], mtp=3)
    assert [len(o.token_ids) for o in out] == [12, 2]
    assert llm.last_stats.decode_steps <= 11
    assert out[1].token_ids == llm.generate(["x = 1"], sp_short, mtp=3)[0].token_ids
