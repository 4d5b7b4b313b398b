"""A ``generate`` called while another runs on the same LLM (from on_text, or another thread) must not disturb it.

h3tester s24 #4: with CUDA graphs on, every call got the one kept latent cache and reset it, so a nested call from
the outer call's on_text released the outer sequences' pages and overwrote them: wrong text, no error. CUDA graphs
need a GPU, so the graph mode is simulated on CPU as the tester did: ``uses_cuda_graphs`` forced on and
DecodeGraphs replaced by a stand-in that keeps the cache and never fits (every step runs eagerly on the kept cache,
the policy under test). The eager path of a nested call is the plain CPU one.
"""

from __future__ import annotations

import threading

import pytest

import tritonseek.engine.llm as llm_mod
from tritonseek import LLM, SamplingParams


class KeptCacheGraphs:
    """Stands in for DecodeGraphs: holds the kept cache like the real one, replays nothing."""

    made = 0

    def __init__(self, model, cache, width, max_batch):
        KeptCacheGraphs.made += 1
        self.cache, self.max_batch, self.capture_s = cache, max_batch, 0.0

    def fits(self, *args, **kwargs):
        return False

    def close(self):
        pass


@pytest.fixture(scope="module")
def llm():
    return LLM(device="cpu", backend="reference")


@pytest.fixture
def graph_mode(monkeypatch):
    monkeypatch.setattr(llm_mod, "DecodeGraphs", KeptCacheGraphs)
    monkeypatch.setattr(llm_mod.LLM, "uses_cuda_graphs", property(lambda self: True))


PROMPTS = ["def add(a, b):", "import os"]


def test_nested_generate_from_on_text_leaves_the_running_call_intact(llm, graph_mode):
    sp = SamplingParams(max_new_tokens=20)
    base = [o.token_ids for o in llm.generate(PROMPTS, sp)]
    alone = llm.generate(["class Foo:"], SamplingParams(max_new_tokens=5))[0].token_ids
    inner = []

    def on_text(i, delta):
        if len(inner) < 2:
            inner.append(llm.generate(["class Foo:"], SamplingParams(max_new_tokens=5))[0].token_ids)

    got = [o.token_ids for o in llm.generate(PROMPTS, sp, on_text=on_text)]
    assert got == base  # the outer call is untouched
    assert inner == [alone, alone]  # the nested calls are right too
    assert llm._graphs is not None and llm._graphs.cache is llm._cache  # the kept pair survives for later calls
    assert [o.token_ids for o in llm.generate(PROMPTS, sp)] == base


def test_sequential_calls_still_share_the_kept_cache(llm, graph_mode):
    """The fix must not turn the graph mode off: calls one after another reuse the kept cache and graphs."""
    sp = SamplingParams(max_new_tokens=4)
    llm.generate(PROMPTS, sp)
    cache, graphs = llm._cache, llm._graphs
    llm.generate(PROMPTS, sp)
    assert llm._cache is cache and llm._graphs is graphs


def test_a_call_from_another_thread_gets_its_own_cache(llm, graph_mode):
    """While one call holds the kept cache (paused inside on_text), a call from another thread runs on a cache of
    its own and both results equal their single runs."""
    sp = SamplingParams(max_new_tokens=12)
    base = [o.token_ids for o in llm.generate(PROMPTS, sp)]
    alone = llm.generate(["class Foo:"], sp)[0].token_ids
    other = {}
    started = threading.Event()

    def worker():
        started.set()
        other["ids"] = llm.generate(["class Foo:"], sp)[0].token_ids

    def on_text(i, delta):
        if "t" not in other:  # run the other thread's whole call while this call is in flight
            other["t"] = t = threading.Thread(target=worker)
            t.start()
            started.wait()
            t.join()

    got = [o.token_ids for o in llm.generate(PROMPTS, sp, on_text=on_text)]
    assert got == base and other["ids"] == alone
