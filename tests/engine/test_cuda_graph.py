"""CUDA-graph decode: static-buffer packing (CPU) and graph replay vs eager decode (GPU, ``-m gpu``).

    TRITONSEEK_TEST_DEVICE=cuda python -m pytest -m gpu tests/engine/test_cuda_graph.py

GPU checks run the embedded default model (FP8, MoE, MLA). Graph and eager run the same kernels,
but a padded batch (B < bucket) and the graph-safe MoE layout change GEMM M sizes and so possibly
tile configs, which may reorder fp32 sums; greedy tokens may then differ only where the top-2
logits are within ``NEAR_TIE`` (0.25 ≈ the bf16 rounding of a logit around 8–16 times a few ulps).
"""

from __future__ import annotations

import pytest
import torch

from tritonseek import LLM, SamplingParams
from tritonseek.engine.cuda_graph import DecodeGraphs, StepBuffers, batch_buckets
from tritonseek.engine.kv_cache import PagedLatentCache

NEAR_TIE = 0.25


# ------------------------------------------------------------------------------------- CPU
def test_batch_buckets():
    assert batch_buckets(1) == (1,)
    assert batch_buckets(128) == (1, 2, 4, 8, 16, 32, 64, 128)
    assert batch_buckets(48) == (1, 2, 4, 8, 16, 32, 48)
    with pytest.raises(ValueError, match="max_batch"):
        batch_buckets(0)


def test_step_buffers_pack_real_and_dummy_rows():
    page = 4
    bufs = StepBuffers(max_batch=8, max_blocks=5, page_size=page, device=torch.device("cpu"))
    blocks = [[7, 2, 9], [4], [11, 3]]
    positions = [9, 2, 5]  # → blocks 2, 0, 1 of each list
    bufs.fill(blocks, [10, 11, 12], [101, 102, 103], positions, bucket=4, epoch=0)
    assert bufs.input_ids[:4].tolist() == [101, 102, 103, 0]
    assert bufs.positions[:4].tolist() == [9, 2, 5, 0]
    assert bufs.slot_mapping[:4].tolist() == [9 * page + 1, 4 * page + 2, 3 * page + 1, -1]
    assert bufs.cache_seqlens[:4].tolist() == [10, 3, 6, 0]
    assert bufs.block_table[0, :3].tolist() == [7, 2, 9]
    assert bufs.block_table[1, :1].tolist() == [4]
    assert bufs.block_table[2, :2].tolist() == [11, 3]
    # next step: row 1 is another sequence now (same length) and row 0 grew; rows re-sent
    bufs.fill([[7, 2, 9, 5], [8]], [10, 12], [1, 2], [12, 0], bucket=2, epoch=0)
    assert bufs.block_table[0, :4].tolist() == [7, 2, 9, 5]
    assert bufs.block_table[1, :1].tolist() == [8]
    assert bufs.slot_mapping[:2].tolist() == [5 * page + 0, 8 * page + 0]
    # same (seq_id, length) but the cache released something: re-sent because the epoch moved
    bufs.fill([[6, 2, 9, 5]], [10], [1], [1], bucket=1, epoch=1)
    assert bufs.block_table[0, :4].tolist() == [6, 2, 9, 5]
    assert bufs.slot_mapping[:1].tolist() == [6 * page + 1]


def test_step_buffers_pack_verify_rows():
    """seqlen_q = 3 (MTP verify, K = 2): token rows sequence-major, lengths = start + 3, dummies after."""
    page = 4
    bufs = StepBuffers(max_batch=4, max_blocks=3, page_size=page, device=torch.device("cpu"), max_seqlen_q=3)
    bufs.fill([[5, 6], [9, 1, 2]], [0, 1], None, [2, 7], bucket=4, epoch=0, seqlen_q=3)
    assert bufs.positions[:12].tolist() == [2, 3, 4, 7, 8, 9] + [0] * 6
    assert bufs.slot_mapping[:12].tolist() == [5 * page + 2, 5 * page + 3, 6 * page + 0,
                                               1 * page + 3, 2 * page + 0, 2 * page + 1] + [-1] * 6
    assert bufs.cache_seqlens[:4].tolist() == [5, 10, 0, 0]
    assert bufs.input_ids[6:12].tolist() == [0] * 6  # dummy ids; real ones come from the caller's device copy
    with pytest.raises(ValueError, match="needs block"):
        bufs.fill([[5, 6]], [0], [1, 2, 3], [6], bucket=1, seqlen_q=3)
    with pytest.raises(ValueError, match="seqlen_q"):
        bufs.fill([[5, 6]], [0], None, [0], bucket=1, seqlen_q=4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(blocks=[[1]], positions=[4], bucket=1), "needs block"),
    (dict(blocks=[[1]] * 3, positions=[0] * 3, bucket=2), "bucket"),
    (dict(blocks=[[1]], positions=[0], bucket=16), "bucket"),
    (dict(blocks=[list(range(6))], positions=[0], bucket=1), "sized for"),
])
def test_step_buffers_reject(kwargs, match):
    bufs = StepBuffers(max_batch=8, max_blocks=5, page_size=4, device=torch.device("cpu"))
    n = len(kwargs["blocks"])
    with pytest.raises(ValueError, match=match):
        bufs.fill(kwargs["blocks"], list(range(n)), [1] * n, kwargs["positions"], kwargs["bucket"])


def test_graphs_refuse_cpu_and_cpu_llm_stays_eager():
    llm = LLM(device="cpu")
    cache = PagedLatentCache(llm.model.num_cache_layers, 4, 64, 160, torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match="CUDA"):
        DecodeGraphs(llm.model, cache, max_blocks=4)
    assert not llm.uses_cuda_graphs
    out = llm.generate("def f(x):", SamplingParams(max_new_tokens=3))[0]
    assert len(out.token_ids) == 3 and llm.last_stats.extra["graph_steps"] == 0
    with pytest.raises(ValueError, match="max_graph_batch"):
        LLM(device="cpu", max_graph_batch=0)


def test_cli_eager_flag_generates_the_same_text():
    from typer.testing import CliRunner

    from tritonseek.cli import app

    args = ["generate", "-p", "def f(x):", "-n", "4", "--device", "cpu"]
    plain = CliRunner().invoke(app, args, catch_exceptions=False)
    eager = CliRunner().invoke(app, args + ["--eager"], catch_exceptions=False)
    assert plain.exit_code == eager.exit_code == 0
    assert plain.stdout == eager.stdout and plain.stdout.strip()


# ------------------------------------------------------------------------------------- GPU
@pytest.fixture(scope="module")
def cuda_llm() -> LLM:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return LLM(device="cuda")


def _prompts(llm: LLM, batch: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    base = ["def fibonacci(n):", "import os\nimport sys\n", "class Config:", "for i in range(10):\n    x =",
            "# sum a list\n", "return self."]
    out = []
    for i in range(batch):
        extra = torch.randint(3, llm.config.vocab_size, (int(torch.randint(0, 40, (1,), generator=g)),), generator=g)
        out.append(base[i % len(base)] + llm.tokenizer.decode(extra.tolist()))
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 3, 21])  # 3 → bucket 4 and 21 → bucket 32 are padded
def test_graph_greedy_matches_eager(cuda_llm, batch):
    llm = cuda_llm
    prompts = _prompts(llm, batch, seed=batch)
    p = SamplingParams(max_new_tokens=24, ignore_eos=True)
    llm.enforce_eager = True
    eager = llm.generate(prompts, p)
    assert llm.last_stats.extra["graph_steps"] == 0
    llm.enforce_eager = False
    graph = llm.generate(prompts, p)
    assert llm.last_stats.extra["graph_steps"] == 23
    graph2 = llm.generate(prompts, p)  # graphs and cache reused by a second call
    assert [o.token_ids for o in graph2] == [o.token_ids for o in graph]
    for i, (oe, og) in enumerate(zip(eager, graph)):
        d = next((j for j, (x, y) in enumerate(zip(oe.token_ids, og.token_ids)) if x != y), None)
        print(f"batch {batch} row {i}: first divergence {d} of {len(oe.token_ids)}")
        if d is not None:
            top2 = llm.score(oe.prompt_token_ids + oe.token_ids[:d])[-1].topk(2).values
            assert float(top2[0] - top2[1]) < NEAR_TIE, f"row {i} diverged at {d}, margin {float(top2[0] - top2[1]):.3f}"


@pytest.mark.gpu
def test_graph_sampling_matches_eager(cuda_llm):
    llm = cuda_llm
    prompts = _prompts(llm, 3, seed=7)
    p = SamplingParams(max_new_tokens=16, temperature=0.8, top_k=50, seed=3, ignore_eos=True)
    llm.enforce_eager = True
    eager = [o.token_ids for o in llm.generate(prompts, p)]
    llm.enforce_eager = False
    graph = [o.token_ids for o in llm.generate(prompts, p)]
    assert llm.last_stats.extra["graph_steps"] > 0
    assert graph == eager


@pytest.mark.gpu
def test_graph_step_logits_match_eager_and_never_sync(cuda_llm):
    llm = cuda_llm
    from tritonseek.engine.runner import ModelRunner, Sequence

    cfg = llm.config
    cache = PagedLatentCache(llm.model.num_cache_layers, 32, 64, cfg.kv_lora_rank + cfg.qk_rope_head_dim,
                             llm.model.dtype, llm.device)
    for c in cache.layers:  # random, finite: "changed" below compares values
        c.normal_()
    graphs = DecodeGraphs(llm.model, cache, max_blocks=16, max_batch=8)
    runner = ModelRunner(llm.model, cache, llm.device, graphs)
    g = torch.Generator().manual_seed(0)
    seqs = [Sequence(i, "", torch.randint(3, cfg.vocab_size, (n,), generator=g).tolist(), SamplingParams(), None)
            for i, n in enumerate([5, 17, 33, 2, 40])]  # 5 rows → bucket 8 (3 dummy rows)
    logits, *_ = runner.prefill(seqs)
    for s, t in zip(seqs, runner.sample(seqs, logits)):
        s.out_ids.append(t)
    snapshot = [c.clone() for c in cache.layers]
    eager = runner.decode(seqs)  # writes the same latents the graph writes next
    toks, glogits = graphs.step([s.seq_id for s in seqs], [s.last_token for s in seqs],
                                [s.num_tokens - 1 for s in seqs])
    rel = float((glogits - eager).norm() / eager.norm())
    assert rel < 2e-2, rel
    assert toks.tolist() == glogits.argmax(-1).tolist()
    # the dummy rows (slot −1) wrote nothing: only the 5 real slots changed in every layer
    for before, after in zip(snapshot, cache.layers):
        changed = (before != after).flatten(2).any(-1).flatten().nonzero().flatten().tolist()
        assert len(changed) <= len(seqs)
    ids, starts = [s.seq_id for s in seqs], [s.num_tokens - 1 for s in seqs]
    drafts = torch.randint(3, cfg.vocab_size, (len(seqs), 3), device=llm.device)
    graphs.step_tokens(ids, drafts, starts)  # capture the (8, 3) verify graph outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        graphs.step(ids, [s.last_token for s in seqs], starts)
        graphs.step_tokens(ids, drafts, starts)  # MTP verify shape: device-resident drafts, no sync either
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


@pytest.mark.gpu
@pytest.mark.parametrize("batch, k", [(1, 3), (5, 2)])  # 5 → bucket 8 (padded verify rows)
def test_graph_mtp_verify_matches_eager(cuda_llm, batch, k):
    llm = cuda_llm
    prompts = _prompts(llm, batch, seed=10 + batch)
    p = SamplingParams(max_new_tokens=20, ignore_eos=True)
    llm.enforce_eager = True
    eager = llm.generate(prompts, p)
    llm.enforce_eager, llm.graph_verify = False, True
    spec = llm.generate(prompts, p, mtp=k)
    assert llm.last_stats.extra["graph_steps"] > 0
    for i, (oe, og) in enumerate(zip(eager, spec)):
        d = next((j for j, (x, y) in enumerate(zip(oe.token_ids, og.token_ids)) if x != y), None)
        print(f"mtp k={k} batch {batch} row {i}: first divergence {d} of {len(oe.token_ids)}; "
              f"acceptance {llm.last_stats.extra.get('acceptance')}")
        if d is not None:
            top2 = llm.score(oe.prompt_token_ids + oe.token_ids[:d])[-1].topk(2).values
            assert float(top2[0] - top2[1]) < NEAR_TIE, f"row {i} diverged at {d}, margin {float(top2[0] - top2[1]):.3f}"


@pytest.mark.gpu
@pytest.mark.parametrize("lens, buckets", [([300], (300,)), ([5, 130, 61], (256, 512)), ([700, 1], (1024,))])
def test_prefill_graph_matches_eager(cuda_llm, lens, buckets):
    """PrefillGraphs (padded bucket, extra empty sequence slots, MoE at its bound layout) vs the eager
    prefill: logits within 2e-2 (different GEMM M sizes may reorder fp32 sums, see NEAR_TIE), the same
    argmax wherever the eager top-2 margin exceeds NEAR_TIE, the same latents written to the real slots
    (bf16 rounding: 2e-2) and nothing written anywhere else (padding slot −1)."""
    from tritonseek.engine.cuda_graph import PrefillGraphs
    from tritonseek.engine.runner import ModelRunner, Sequence

    llm = cuda_llm
    cfg = llm.config
    g = torch.Generator().manual_seed(sum(lens))
    seqs = [Sequence(i, "", torch.randint(3, cfg.vocab_size, (n,), generator=g).tolist(), SamplingParams(), None)
            for i, n in enumerate(lens)]

    def run(graphs: bool):
        cache = PagedLatentCache(llm.model.num_cache_layers, 64, 64, cfg.kv_lora_rank + cfg.qk_rope_head_dim,
                                 llm.model.dtype, llm.device)
        for c in cache.layers:
            c.fill_(float("nan"))
        pg = PrefillGraphs(llm.model, cache, buckets=buckets, max_seqs=3) if graphs else None
        runner = ModelRunner(llm.model, cache, llm.device, prefill_graphs=pg)
        logits, hidden, _, cu = runner.prefill(seqs)
        if pg is not None:
            assert pg.replays == 1
        return logits.clone(), hidden.clone(), cu, cache

    le, he, cue, ce = run(False)
    lg, hg, cug, cg = run(True)
    assert cue == cug and hg.shape == he.shape
    assert float((lg - le).norm() / le.norm()) < 2e-2
    top2 = le.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > NEAR_TIE
    assert (lg.argmax(-1) == le.argmax(-1))[clear].all()
    n_dec = cfg.num_hidden_layers  # the caches after these are the MTP layers', which a prefill does not write
    for i, (a, b) in enumerate(zip(ce.layers, cg.layers)):
        wa, wb = ~torch.isnan(a.float()).all(-1), ~torch.isnan(b.float()).all(-1)
        assert torch.equal(wa, wb)  # the same slots written, the padding wrote none
        assert int(wa.sum()) == (sum(lens) if i < n_dec else 0)
        if i >= n_dec:
            continue
        assert float((a[wa].float() - b[wb].float()).norm() / a[wa].float().norm()) < 2e-2
