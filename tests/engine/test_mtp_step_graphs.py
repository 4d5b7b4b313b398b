"""Whole-step MTP graphs (engine/mtp_step.py): one replay per greedy MTP step, one device→host copy.

CPU: CUDA graphs need a GPU, so the capture is replaced by an eager call of ``MTPStepGraphs._forward`` on the
same static buffers and carried state (bucket padding rows, in-graph draft lengths / slots, the K = 0 step near
max_new_tokens, compaction of finished rows). Greedy outputs must equal plain decoding, and the acceptance must
equal the step-by-step drafter's (the drafts themselves are the same: verification would hide bad ones).
GPU (``-m gpu``): the real captures at batch 1 / 3 / 16 and K 1–3, against plain decoding and the step-by-step
graph path, stop tokens inside runs, max_new_tokens mid-run, sequences finishing at different steps, reuse by
a second ``generate`` call and no host synchronisation inside a step besides its one event wait.
"""

from __future__ import annotations

import types

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tritonseek import LLM, SamplingParams
from tritonseek.engine import mtp_step, speculative
from tritonseek.engine.cuda_graph import batch_buckets

NEAR_TIE = 0.25  # bf16 logit gap below which graph (q = K+1) and plain (q = 1) kernels may order two tokens differently


class EagerStepGraphs(mtp_step.MTPStepGraphs):
    """MTPStepGraphs whose capture is a no-op and whose 'replay' evaluates the step on the static buffers."""

    replays_seen = 0

    def _capture(self, b: int, k: int) -> None:
        self._graphs[(b, k)] = None

    def _replay(self, b: int, k: int) -> None:
        EagerStepGraphs.replays_seen += 1
        self._forward(b, k)


class FakeDecodeGraphs:
    """What MTPStepGraphs reads from the runner's DecodeGraphs (buckets, batch limit, block-table width, device)."""

    def __init__(self):
        self.device, self.max_batch, self.buckets = torch.device("cpu"), 8, batch_buckets(8)
        self.bufs = types.SimpleNamespace(max_blocks=16)


@pytest.fixture(scope="module")
def llm():
    return LLM(device="cpu", backend="reference")


def _use_eager_step_graphs(monkeypatch, lookahead: bool):
    fake = FakeDecodeGraphs()

    def step_graphs(self, seqs):
        if any(s.params.temperature > 0 for s in seqs):
            return None
        if self._step_graphs is None:
            runner = types.SimpleNamespace(graphs=fake, model=self.runner.model, cache=self.runner.cache)
            self._step_graphs = EagerStepGraphs(runner)
            self._step_graphs.lookahead = lookahead
        return self._step_graphs if self._step_graphs.fits(len(seqs)) else None

    monkeypatch.setattr(speculative.MTPDrafter, "step_graphs", step_graphs)


def _record_stepwise_drafts(mp) -> dict:
    seen: dict[int, list] = {}
    orig = speculative.MTPDrafter.verify

    def verify(self, seqs, drafts, limits=None):
        for s, row in zip(seqs, drafts.tolist()):
            seen.setdefault(s.seq_id, []).append(row)
        return orig(self, seqs, drafts, limits)

    mp.setattr(speculative.MTPDrafter, "verify", verify)
    return seen


def _record_fused_drafts(mp, llm) -> dict:
    # the eager 'replay' runs inside launch: the launch's sequences name the rows verify_greedy sees
    seen: dict[int, list] = {}
    ids: list[int] = []
    orig_launch, orig_verify = mtp_step.MTPStepGraphs.launch, llm.model.ops.verify_greedy

    def launch(self, seqs, k, pending=0):
        ids[:] = [s.seq_id for s in seqs]
        return orig_launch(self, seqs, k, pending)

    def verify_greedy(drafts, logits):
        for sid, row in zip(ids, drafts.tolist()):  # bucket padding rows come after the launch's rows
            seen.setdefault(sid, []).append(row)
        return orig_verify(drafts, logits)

    mp.setattr(mtp_step.MTPStepGraphs, "launch", launch)
    mp.setattr(llm.model.ops, "verify_greedy", verify_greedy)
    return seen


@pytest.mark.parametrize("k", [1, 4])  # 4 = MAX_K: three draft steps inside the step
@settings(max_examples=2, deadline=None)
@given(lens=st.lists(st.integers(1, 10), min_size=1, max_size=4), seed=st.integers(0, 1000), stop=st.booleans(),
       lookahead=st.booleans())
@example(lens=[10, 10], seed=1, stop=True, lookahead=True)  # a stop token while the next step is in flight
@example(lens=[2], seed=14, stop=True, lookahead=False)  # the stop token is also the first token: no decode step
def test_step_graphs_equal_plain_and_stepwise(llm, k, lens, seed, stop, lookahead):
    # one max_new_tokens per prompt: sequences finish at different steps (non-prefix compaction of the carried
    # rows; with lookahead a launched step still holds a finished row), k shrinks to 0 near the end (the K = 0
    # graph); optionally a stop token taken from the plain output
    g = torch.Generator().manual_seed(seed)
    prompts = [llm.tokenizer.decode(torch.randint(3, llm.config.vocab_size, (int(torch.randint(1, 6, (1,), generator=g)),),
                                                  generator=g).tolist()) or "x" for _ in lens]
    params = [SamplingParams(max_new_tokens=n, ignore_eos=True) for n in lens]
    if stop:  # the step-by-step path equals plain decoding (tests/engine/test_generate.py)
        toks = llm.generate(prompts, params, mtp=k)[0].token_ids
        params = [SamplingParams(max_new_tokens=n, stop_token_ids=[toks[len(toks) // 2]]) for n in lens]
    with pytest.MonkeyPatch.context() as mp:
        drafts_stepwise = _record_stepwise_drafts(mp)
        stepwise = llm.generate(prompts, params, mtp=k)
    acc = llm.last_stats.extra["acceptance"]
    with pytest.MonkeyPatch.context() as mp:
        _use_eager_step_graphs(mp, lookahead)
        drafts_fused = _record_fused_drafts(mp, llm)
        EagerStepGraphs.replays_seen = 0
        fused = llm.generate(prompts, params, mtp=k)
        st_ = llm.last_stats
    # no decode step when every sequence ends at its first token: max_new_tokens 1, or a stop token that is also the
    # first token (CI s19: lens [2], the stop token toks[1] equal to toks[0]; only max(lens) == 1 was exempted)
    assert EagerStepGraphs.replays_seen >= st_.decode_steps > 0 or max(len(x.token_ids) for x in fused) == 1
    assert [x.token_ids for x in fused] == [x.token_ids for x in stepwise]
    assert [x.finish_reason for x in fused] == [x.finish_reason for x in stepwise]
    # every draft of every step (verification hides bad drafts); a lookahead step launched before its sequence
    # finished adds one ignored row at the end
    assert set(drafts_fused) == set(drafts_stepwise)
    for sid, rows in drafts_stepwise.items():
        assert drafts_fused[sid][: len(rows)] == rows and len(drafts_fused[sid]) - len(rows) <= int(lookahead)
    assert st_.extra["acceptance"] == acc


# ------------------------------------------------------------------------------------- GPU
@pytest.fixture(scope="module")
def cuda_llm() -> LLM:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return LLM(device="cuda")


_BASE = ["def fibonacci(n):\n", "import os\nimport sys\n", "class Stack:\n    def __init__(self):\n",
         "for i in range(10):\n", "# Copyright 2001 Python Software Foundation\n", "def read_file(path):\n"]


def _prompts(batch: int) -> list[str]:
    return [_BASE[i % len(_BASE)] + " " * (i // len(_BASE)) for i in range(batch)]


def _check_near_ties(llm, ref, got, what):
    for i, (a, c) in enumerate(zip(ref, got)):
        d = next((j for j, (x, y) in enumerate(zip(a.token_ids, c.token_ids)) if x != y), None)
        if d is not None:
            top2 = llm.score(a.prompt_token_ids + a.token_ids[:d])[-1].topk(2).values
            gap = float(top2[0] - top2[1])
            print(f"{what} row {i}: first divergence at {d}, top-2 gap {gap:.3f}")
            assert gap < NEAR_TIE, f"{what} row {i} diverged at {d}, margin {gap:.3f}"


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 3, 16])  # 3 → bucket 4 (a dummy row)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_gpu_step_graphs_match_plain_and_stepwise(cuda_llm, batch, k):
    llm = cuda_llm
    prompts = _prompts(batch)
    p = SamplingParams(max_new_tokens=24, ignore_eos=True)
    llm.enforce_eager = False
    plain = llm.generate(prompts, p)
    llm.graph_verify, llm.graph_step = True, False
    stepwise = llm.generate(prompts, p, mtp=k)
    acc = llm.last_stats.extra["acceptance"]
    llm.graph_step = True
    fused = llm.generate(prompts, p, mtp=k)
    st_ = llm.last_stats
    print(f"b{batch} k{k}: acceptance {st_.extra['acceptance']:.3f} (stepwise {acc:.3f}), identical to plain "
          f"{[o.token_ids for o in fused] == [o.token_ids for o in plain]}")
    assert st_.extra["graph_steps"] == st_.decode_steps > 0
    # same kernels at the same shapes as the step-by-step graph path: the same tokens and the same acceptance
    assert [o.token_ids for o in fused] == [o.token_ids for o in stepwise]
    assert st_.extra["acceptance"] == acc
    _check_near_ties(llm, plain, fused, f"b{batch} k{k}")


@pytest.mark.gpu
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("lookahead", [True, False])
def test_gpu_step_graphs_stop_max_new_and_uneven_finish(cuda_llm, monkeypatch, k, lookahead):
    llm = cuda_llm
    llm.enforce_eager, llm.graph_verify, llm.graph_step = False, True, True
    monkeypatch.setattr(mtp_step.MTPStepGraphs, "lookahead", lookahead)
    prompts = _prompts(5)
    ref = llm.generate(prompts, SamplingParams(max_new_tokens=20, ignore_eos=True))
    stop = ref[0].token_ids[7]  # a token inside sequence 0's output: EOS-like stop inside an accepted run
    params = [SamplingParams(max_new_tokens=n, stop_token_ids=[stop] if i == 0 else [])
              for i, n in enumerate([20, 3, 11, 6, 17])]  # finish at different steps, max_new_tokens mid-run
    plain = llm.generate(prompts, params)
    fused = llm.generate(prompts, params, mtp=k)
    assert llm.last_stats.extra["graph_steps"] == llm.last_stats.decode_steps > 0
    assert plain[0].finish_reason == "stop" and plain[0].token_ids[-1] == stop
    assert [o.finish_reason for o in fused] == [o.finish_reason for o in plain]
    assert [len(o.token_ids) for o in fused] == [len(o.token_ids) for o in plain]
    _check_near_ties(llm, plain, fused, f"stop/max_new k{k}")


@pytest.mark.gpu
def test_gpu_step_graphs_reused_and_sync_free(cuda_llm, monkeypatch):
    llm = cuda_llm
    llm.enforce_eager, llm.graph_verify, llm.graph_step = False, True, True
    prompts, p = _prompts(3), SamplingParams(max_new_tokens=16, ignore_eos=True)
    first = llm.generate(prompts, p, mtp=2)
    sg = mtp_step._STEP_GRAPHS.get(llm._graphs)
    assert sg is not None and sg._graphs
    captured, cap_s = set(sg._graphs), sg.capture_s
    cls = mtp_step.MTPStepGraphs

    def strict(fn):
        def run(*a, **kw):  # a blocking copy or stream/device sync inside the step raises
            torch.cuda.set_sync_debug_mode("error")
            try:
                return fn(*a, **kw)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        return run

    for name in ("launch", "wait", "compact"):  # the step's one wait is an event wait (not flagged)
        monkeypatch.setattr(cls, name, strict(getattr(cls, name)))
    again = llm.generate(prompts, p, mtp=2)
    assert mtp_step._STEP_GRAPHS.get(llm._graphs) is sg and set(sg._graphs) == captured and sg.capture_s == cap_s
    assert [o.token_ids for o in again] == [o.token_ids for o in first]
