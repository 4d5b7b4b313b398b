"""MTP statistics when nothing was drafted: acceptance is None ("no drafts"), not 0.0 ("every draft rejected").

h3tester s24 #7: `generate -n 1 --mtp 2` printed "acceptance 0.00, 0.00 tokens/step" and `-n 2` "acceptance 0.00,
1.00 tokens/step": with max_new_tokens <= 2 no draft is proposed (K = min(K, max_new_tokens - emitted - 1) = 0).
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tritonseek import LLM, SamplingParams
from tritonseek.cli import app
from tritonseek.cli_prompts import add_stats


@pytest.fixture(scope="module")
def llm():
    return LLM(device="cpu", backend="reference")


@pytest.mark.parametrize("n, tps", [(1, None), (2, 1.0)])
def test_no_drafts_is_none_not_zero(llm, n, tps):
    llm.generate(["def f(x):", "import os"], SamplingParams(max_new_tokens=n, ignore_eos=True), mtp=2)
    e = llm.last_stats.extra
    assert e["proposed"] == 0 and e["acceptance"] is None and e["tokens_per_step"] == tps
    llm.generate(["def f(x):"], SamplingParams(max_new_tokens=6, ignore_eos=True), mtp=2)
    e = llm.last_stats.extra  # drafts proposed: the rates are numbers as before
    assert e["proposed"] > 0 and 0.0 <= e["acceptance"] <= 1.0 and e["tokens_per_step"] >= 1.0


def test_summed_stats_keep_none_until_a_draft(llm):
    llm.generate("x = 1", SamplingParams(max_new_tokens=1), mtp=1)
    first = llm.last_stats
    total = add_stats(None, first)
    llm.generate("x = 1", SamplingParams(max_new_tokens=1), mtp=1)
    total = add_stats(total, llm.last_stats)
    assert total.extra["acceptance"] is None
    llm.generate("x = 1", SamplingParams(max_new_tokens=8, ignore_eos=True), mtp=1)
    total = add_stats(total, llm.last_stats)
    assert total.extra["acceptance"] == total.extra["accepted"] / total.extra["proposed"]


def test_cli_says_no_drafts():
    r = CliRunner().invoke(app, ["generate", "-p", "x", "-n", "1", "--mtp", "2"])
    assert r.exit_code == 0, r.output
    assert "mtp 2: no drafts" in r.stderr and "acceptance 0.00" not in r.stderr
