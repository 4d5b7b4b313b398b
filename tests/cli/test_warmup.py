"""``tritonseek warmup``: its plan, its CPU error, and (GPU) that generate after warmup compiles nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tritonseek.cli import app
from tritonseek.engine.cuda_graph import batch_buckets
from tritonseek.engine.llm import DEFAULT_MODEL_DIR
from tritonseek.engine.tokenizer import TextTokenizer
from tritonseek.warmup import _prompt_of_length, cache_entries, plan, triton_cache_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_warmup_on_cpu_fails_with_one_line():
    r = CliRunner().invoke(app, ["warmup", "--max-batch", "4"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "CUDA GPU" in lines[0]


def test_plan_covers_every_bucket_sampling_and_mtp():
    steps = plan(8, has_mtp=True)
    decode = {len(s.prompt_lengths) for s in steps if s.label.startswith("decode")}
    assert decode == set(batch_buckets(8)) == {1, 2, 4, 8}
    assert any(s.sampled and s.top for s in steps) and any(s.sampled and not s.top for s in steps)
    assert {s.mtp for s in steps} == {0, 1, 2, 3, 4}
    assert all(s.mtp == 0 for s in plan(8, has_mtp=False))
    assert max(n for s in plan(1, False, max_positions=512) for n in s.prompt_lengths) <= 512 - 16
    assert {n for s in steps if s.label.startswith("prefill") for n in s.prompt_lengths} >= {2, 16, 128}


def test_prompt_of_length_hits_the_token_count():
    tok = TextTokenizer(DEFAULT_MODEL_DIR)

    class _Enc:
        encode = staticmethod(tok.encode)

    for n in (2, 3, 16, 37, 1100):
        got = len(tok.encode(_prompt_of_length(_Enc, n, n)))
        assert abs(got - n) <= 1, (n, got)


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    assert triton_cache_dir() == tmp_path and cache_entries() == 0
    (tmp_path / "ABC").mkdir()
    assert cache_entries() == 1


def _cli(args, cache, **kw):
    env = {**os.environ, "TRITON_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    env.pop("TRITON_INTERPRET", None)
    r = subprocess.run([sys.executable, "-m", "tritonseek.cli", *args], env=env, cwd=ROOT, capture_output=True,
                       text=True, **kw)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.gpu
def test_generate_after_warmup_compiles_nothing(tmp_path):
    """Warm an empty cache (max batch 4), then run generate in fresh processes: greedy one prompt,
    and a sampled 3-prompt file; Triton's cache must gain no entry (nothing compiled)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    # TRITONSEEK_TEST_TRITON_CACHE: reuse a cache folder (e.g. the one bench_cold_start warmed) to
    # save device time; the check is the same: after warmup, generate adds nothing.
    cache = Path(os.environ.get("TRITONSEEK_TEST_TRITON_CACHE") or tmp_path / "cache")
    cache.mkdir(parents=True, exist_ok=True)
    w = _cli(["warmup", "--max-batch", "4"], cache)
    print(w.stdout.strip())
    warmed = set(os.listdir(cache))
    assert warmed
    _cli(["generate", "-p", "def add(a, b):", "-n", "12"], cache)
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["import os", "class A:\n    def", "x = [1,"]))
    _cli(["generate", "--prompts-file", str(src), "-o", str(tmp_path / "o.jsonl"), "-n", "10", "-t", "0.7",
          "--top-p", "0.9", "--seed", "1"], cache)
    _cli(["generate", "-p", "for i in range(", "-n", "9", "--mtp", "2"], cache)
    new = set(os.listdir(cache)) - warmed
    names = sorted({f.split(".")[0] for d in new if (cache / d).is_dir() for f in os.listdir(cache / d)})
    assert not new, f"generate added {len(new)} Triton cache entries after warmup: {names[:12]}"
