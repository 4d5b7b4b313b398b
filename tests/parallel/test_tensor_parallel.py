"""Tensor + expert parallelism on CPU: 2 processes over gloo give the single-process results.

Tolerance: splitting heads/columns/experts across ranks only reorders fp32 sums (all-reduce), so
logits agree to ~1e-6 relative; we assert 1e-5 and identical greedy tokens.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tritonseek import LLM, SamplingParams
from tritonseek.engine.llm import DEFAULT_MODEL_DIR
from tritonseek.parallel import TP

PROMPTS = ["def fibonacci(n):", "import os\nimport sys\n", "class A:\n    def __init__(self):"]


def _run(model_dir: str):
    llm = LLM(model_dir, device="cpu", backend="reference", tp=TP(dist.get_rank(), dist.get_world_size())
              if dist.is_initialized() else None)
    outs = llm.generate(PROMPTS, SamplingParams(max_new_tokens=12))
    spec = llm.generate(PROMPTS, SamplingParams(max_new_tokens=12), mtp=2)
    return llm.score(llm.encode(PROMPTS[0])), [o.token_ids for o in outs], [o.token_ids for o in spec]


def _worker(rank: int, world: int, init_file: str, model_dir: str, out_dir: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        logits, toks, spec = _run(model_dir)
        torch.save({"logits": logits, "tokens": toks, "spec": spec}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _parallel(model_dir: Path, tmp_path: Path, world: int = 2) -> list[dict]:
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(model_dir), str(tmp_path)), nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


def _skewed_checkpoint(tmp_path: Path) -> Path:
    """The default model with routing biased so every token picks experts 0 and 1 (both on rank 0)."""
    from safetensors.torch import load_file, save_file

    d = tmp_path / "skewed"
    shutil.copytree(DEFAULT_MODEL_DIR, d)
    sd = load_file(str(d / "model.safetensors"))
    for k in sd:
        if k.endswith("e_score_correction_bias"):
            sd[k] = torch.zeros_like(sd[k])
            sd[k][:2] = 10.0
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


@pytest.mark.parametrize("which", ["default", "skewed"])
def test_tp2_matches_single_process(tmp_path, which):
    model_dir = DEFAULT_MODEL_DIR if which == "default" else _skewed_checkpoint(tmp_path)
    single_logits, single_tokens, single_spec = _run(str(model_dir))
    ranks = _parallel(model_dir, tmp_path)
    for r in ranks:
        err = ((r["logits"] - single_logits).norm() / single_logits.norm()).item()
        print(f"{which}: tp=2 logits rel err {err:.2e}")
        assert err < 1e-5
        assert r["tokens"] == single_tokens
        assert r["spec"] == single_spec == single_tokens


def test_tp_shards_are_rank_slices(tmp_path):
    """Each rank holds its slice only: heads, vocabulary rows, experts."""
    full = LLM(device="cpu", backend="reference").model
    part = LLM(device="cpu", backend="reference", tp=TP(1, 2)).model  # no collective needed to load
    cfg = full.cfg
    assert part.model.layers[0].self_attn.num_heads == cfg.num_attention_heads // 2
    assert part.model.embed_tokens.weight.shape[0] == cfg.vocab_size // 2
    torch.testing.assert_close(part.model.embed_tokens.weight, full.model.embed_tokens.weight[cfg.vocab_size // 2:])
    moe = part.model.layers[1].mlp
    assert moe.w13.shape[0] == cfg.n_routed_experts // 2 and moe.expert_start == cfg.n_routed_experts // 2
    torch.testing.assert_close(moe.w2.float(), full.model.layers[1].mlp.w2[cfg.n_routed_experts // 2:].float())
    # q_b_proj: 4 heads × 96 rows = 384 → 192 per rank, not on the 128-row FP8 grid: held dense, dequantized
    qb = part.model.layers[0].self_attn.q_b_proj
    assert not qb.fp8
    torch.testing.assert_close(qb.weight, full.model.layers[0].self_attn.q_b_proj.dense_weight()[192:])
    # kv_b_proj: 4 × 128 = 512 → 256 per rank, on the grid: stays FP8 with its scale rows
    kvb = part.model.layers[0].self_attn.kv_b_proj
    assert kvb.fp8 and kvb.weight_scale_inv.shape[0] == 2


def _cli(*args):
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, "-m", "tritonseek.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_cli_tp2_prints_once_and_matches_tp1():
    one = _cli("generate", "-p", "def fibonacci(n):", "-n", "12")
    two = _cli("generate", "-p", "def fibonacci(n):", "-n", "12", "--tp", "2")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    assert two.stdout == one.stdout  # rank 1 prints nothing; the text is the same
    assert two.stderr.count("prompt tokens") == 1


def test_cli_tp2_load_failure_is_one_clear_error():
    r = _cli("generate", "-p", "x", "--tp", "2", "--model", "/nonexistent/model")
    assert r.returncode == 2  # a user error, as without --tp (torchrun itself reports 1)
    assert "neither a folder nor a Hugging Face id" in r.stderr and "Traceback" not in r.stderr
