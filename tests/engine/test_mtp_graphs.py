"""MTPGraphs' static-buffer path (the drafter's MTP forwards as CUDA graphs replay them) on CPU.

CUDA graphs need a GPU, so the capture is replaced by an eager call of ``MTPGraphs._forward`` on the
same static buffers (StepBuffers packing, bucket padding rows, zeroed hidden rows, the num_accepted
gather of the MTP pass). Greedy outputs must equal plain decoding, and — the real check, since
verification hides bad drafts — the drafts must be exactly the eager drafter's: same acceptance.
The GPU replay itself is covered by tests/engine/test_cuda_graph.py::test_graph_mtp_verify_matches_eager.
"""

from __future__ import annotations

import types

import pytest
import torch

import tritonseek.engine.llm as llm_mod
from tritonseek import LLM, SamplingParams
from tritonseek.engine import speculative
from tritonseek.engine.cuda_graph import batch_buckets


class EagerReplayGraphs(speculative.MTPGraphs):
    """MTPGraphs whose capture is a no-op and whose 'replay' evaluates the captured function on the static buffers."""

    calls = 0

    def _capture(self, b: int, q: int) -> None:
        self._graphs[(b, q)] = None

    def _replay(self, b: int, q: int, B: int):
        EagerReplayGraphs.calls += 1
        h, tok = self._forward(b, q)
        return h[:B].clone(), tok[:B].clone()


@pytest.fixture(scope="module")
def llm():
    return LLM(device="cpu", backend="reference")


class FakeDecodeGraphs:
    """What MTPGraphs reads from the runner's DecodeGraphs (buckets, batch limit, block-table width, device)."""

    def __init__(self):
        self.device, self.max_batch, self.buckets = torch.device("cpu"), 8, batch_buckets(8)
        self.bufs = types.SimpleNamespace(max_blocks=16)


FAKE = FakeDecodeGraphs()


def _with_static_graphs(monkeypatch):
    orig_init = speculative.MTPDrafter.__init__

    def init(self, runner, k):
        orig_init(self, runner, k)
        runner.graphs = FAKE  # only while the drafter picks its graphs: the runner itself stays eager
        self.graphs = speculative.mtp_graphs_for(runner)
        runner.graphs = None

    monkeypatch.setattr(speculative, "MTPGraphs", EagerReplayGraphs)
    monkeypatch.setattr(speculative.MTPDrafter, "__init__", init)
    monkeypatch.setattr(llm_mod, "MTPDrafter", speculative.MTPDrafter)


def _record_drafts(monkeypatch) -> list[list[list[int]]]:
    seen: list[list[list[int]]] = []
    orig = speculative.MTPDrafter.verify

    def verify(self, seqs, drafts, limits=None):
        seen.append(drafts.tolist())
        return orig(self, seqs, drafts, limits)

    monkeypatch.setattr(speculative.MTPDrafter, "verify", verify)
    return seen


def test_static_buffer_drafts_equal_eager_drafts(llm, monkeypatch):
    # K = 3: draft steps (seqlen 1) and MTP passes (seqlen 4, and shorter near max_new_tokens); batch 3 →
    # bucket 4, so every replay carries one dummy row
    k = 3
    prompts = ["def fibonacci(n):\n", "import os\n", "class Stack:\n"]
    p = SamplingParams(max_new_tokens=10, ignore_eos=True)
    plain = [o.token_ids for o in llm.generate(prompts, p)]
    eager_drafts = _record_drafts(monkeypatch)
    eager = [o.token_ids for o in llm.generate(prompts, p, mtp=k)]
    monkeypatch.undo()
    _with_static_graphs(monkeypatch)
    static_drafts = _record_drafts(monkeypatch)
    EagerReplayGraphs.calls = 0
    static = [o.token_ids for o in llm.generate(prompts, p, mtp=k)]
    assert EagerReplayGraphs.calls > 0
    assert static == plain == eager
    assert eager_drafts  # drafts were proposed
    assert static_drafts == eager_drafts  # every draft of every step, not just the emitted tokens
    # later calls over the same graphs and cache reuse the MTPGraphs (its captures); a new cache gets new ones
    first = speculative._MTP_GRAPHS.get(FAKE)
    same = types.SimpleNamespace(graphs=FAKE, cache=first.cache, model=first.model)
    assert speculative.mtp_graphs_for(same) is first
    static_drafts.clear()
    assert [o.token_ids for o in llm.generate(prompts, p, mtp=k)] == plain  # CPU: a fresh cache per call
    assert static_drafts == eager_drafts
    assert speculative._MTP_GRAPHS.get(FAKE) is not first
