"""SamplingParams.stop_token_ids cannot be changed past its check (h5 s21, from session 20's testers): it was stored
as a list, so ``sp.stop_token_ids.append(-5)`` or ``.append("x")`` reached ``LLM.generate`` unchecked. It is stored
as a tuple of ints now; a list or tuple is still accepted and checked on construction and on assignment."""

from __future__ import annotations

import numpy as np
import pytest

from tritonseek import SamplingParams


def test_stop_token_ids_cannot_be_mutated_in_place():
    p = SamplingParams(stop_token_ids=[3, np.int64(7)])
    assert p.stop_token_ids == (3, 7) and all(type(i) is int for i in p.stop_token_ids)
    for bad in (-5, "x"):
        with pytest.raises(AttributeError):
            p.stop_token_ids.append(bad)
    with pytest.raises(TypeError):
        p.stop_token_ids[0] = -5
    assert p.stop_token_ids == (3, 7)


def test_stop_token_ids_change_by_assignment_and_caller_list_is_not_shared():
    ids = [4]
    p = SamplingParams(stop_token_ids=ids)
    ids.append(-1)  # the caller's list is copied, not kept
    assert p.stop_token_ids == (4,)
    p.stop_token_ids = [*p.stop_token_ids, 9]
    assert p.stop_token_ids == (4, 9)
    p.stop_token_ids = (np.int32(2),)
    assert p.stop_token_ids == (2,) and type(p.stop_token_ids[0]) is int
    with pytest.raises(ValueError, match="^stop_token_ids"):
        p.stop_token_ids = [*p.stop_token_ids, -5]
    with pytest.raises(TypeError, match="^stop_token_ids"):
        p.stop_token_ids = [*p.stop_token_ids, "x"]
    assert p.stop_token_ids == (2,)
    assert SamplingParams().stop_token_ids == () and SamplingParams(stop_token_ids=[1]) == SamplingParams(
        stop_token_ids=(1,))


def test_generate_snapshots_params_at_submission():
    """tester23 #8: generate read the caller's SamplingParams while it ran, so a change from on_text switched a
    greedy request to unseeded sampling (or cut it short). The request keeps the values it was submitted with."""
    from tritonseek import LLM

    llm = LLM(device="cpu", backend="reference")
    greedy = llm.generate(["def f(x):"], SamplingParams(max_new_tokens=12))[0].token_ids

    def run(change):
        p = SamplingParams(max_new_tokens=12)
        out = llm.generate(["def f(x):"], p, on_text=lambda i, d: change(p))[0].token_ids
        return p, out

    p, out = run(lambda p: setattr(p, "temperature", 2.0))
    assert p.temperature == 2.0 and out == greedy
    p, out = run(lambda p: setattr(p, "max_new_tokens", 2))
    assert p.max_new_tokens == 2 and out == greedy
