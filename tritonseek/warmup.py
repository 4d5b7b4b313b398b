"""``tritonseek warmup``: compile every Triton kernel configuration ``generate`` will use, ahead of time.

Triton compiles a kernel the first time it meets a new specialization (constexpr values, integer
arguments equal to 1 or divisible by 16, dtypes, pointer alignment) and stores the binary in its
on-disk cache (``TRITON_CACHE_DIR``, default ``~/.triton/cache``). A later process that meets the
same specialization loads it from there instead of compiling. So warming = running the model once
through every shape class a generation meets: prefill at a few prompt lengths, decode at every
CUDA-graph batch bucket up to ``max_batch`` (greedy and sampled), and, when the checkpoint has an
MTP layer, speculative draft/verify steps for K = 1…4 (DeepGEMM users do the same with
``compile_deep_gemm`` before serving).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class WarmupError(RuntimeError):
    """Warmup cannot run here (no CUDA GPU, or the reference backend)."""


def triton_cache_dir() -> Path:
    """Triton's on-disk kernel cache: ``TRITON_CACHE_DIR`` or triton's default (``~/.triton/cache``)."""
    env = os.environ.get("TRITON_CACHE_DIR")
    if env:
        return Path(env)
    try:
        from triton import knobs

        return Path(knobs.cache.dir)
    except (ImportError, AttributeError):  # older triton
        return Path.home() / ".triton" / "cache"


def cache_entries(path: Path | None = None) -> int:
    """Entries (one folder per compiled kernel or launcher) in Triton's cache folder; 0 if absent."""
    path = triton_cache_dir() if path is None else Path(path)
    try:
        return sum(1 for _ in path.iterdir())
    except FileNotFoundError:
        return 0


@dataclass
class WarmupStep:
    """One generate call of the plan: ``prompt_lengths`` prompts (token counts), sampling on/off, MTP K."""

    label: str
    prompt_lengths: list[int]
    sampled: bool = False
    top: bool = False
    mtp: int = 0
    max_new_tokens: int = 3


@dataclass
class WarmupReport:
    seconds: float
    new_entries: int
    cache_dir: str
    steps: list[str] = field(default_factory=list)


# Prompt lengths: Triton's integer specializations (== 1, % 16 == 0, other) and the launch-config
# classes of the kernels on the prefill path (FP8 GEMM tiles for M ≤ 64 / ≤ 128 / larger, token-group
# quant ≥ 1024 rows, MoE masked ≤ 128 tokens vs contiguous layout).
PREFILL_LENGTHS = (2, 3, 16, 37, 77, 128, 200, 1100)


def plan(max_batch: int, has_mtp: bool, prefill_lengths=PREFILL_LENGTHS, max_positions: int | None = None
         ) -> list[WarmupStep]:
    """The generate calls that cover the kernel specializations generate meets up to ``max_batch``
    (prompts longer than ``max_positions`` − 16 are left out)."""
    from tritonseek.engine.cuda_graph import batch_buckets

    if max_positions is not None:
        prefill_lengths = [n for n in prefill_lengths if n <= max_positions - 16]
    steps = [WarmupStep(f"prefill {n} tokens", [n]) for n in prefill_lengths]
    for b in batch_buckets(max_batch):
        lengths = [5 + (i % 11) for i in range(b)]
        steps.append(WarmupStep(f"decode batch {b}", lengths))
        steps.append(WarmupStep(f"decode batch {b}, sampled", lengths, sampled=True))
        steps.append(WarmupStep(f"decode batch {b}, top-k/top-p", lengths, sampled=True, top=True))
    if has_mtp:
        for k in range(1, 5):
            for b in sorted({1, min(4, max_batch), min(16, max_batch)}):
                lengths = [6 + (i % 7) for i in range(b)]
                steps.append(WarmupStep(f"mtp k={k} batch {b}", lengths, mtp=k, max_new_tokens=2 * k + 3))
                steps.append(WarmupStep(f"mtp k={k} batch {b}, sampled", lengths, sampled=True, mtp=k,
                                        max_new_tokens=2 * k + 3))
    return steps


def _prompt_of_length(llm, n: int, salt: int) -> str:
    """A text that tokenizes to ``n`` tokens (or the closest length found), different per ``salt``."""
    words = ["x", "a", "b", "y", "z", "k", "m"]  # one token each, also after a space (a BOS may add one)
    w = words[salt % len(words)]

    def length(k: int) -> int:
        return len(llm.encode(" ".join([w] * k)))

    k = max(1, n - (length(1) - 1))
    best, best_err = k, abs(length(k) - n)
    for _ in range(8):  # walk towards n if a merge or a missing BOS shifted the count
        if best_err == 0:
            break
        k = max(1, best + (1 if length(best) < n else -1))
        err = abs(length(k) - n)
        if err >= best_err:
            break
        best, best_err = k, err
    return " ".join([w] * best)


def run_warmup(llm, max_batch: int, on_step: Callable[[int, int, str], None] | None = None,
               steps: list[WarmupStep] | None = None) -> WarmupReport:
    """Run ``plan(max_batch, …)`` through ``llm.generate``; returns the time and the new cache entries.

    llm: a CUDA :class:`tritonseek.LLM` on the triton backend. on_step(i, n, label) is called before
    each step. Raises WarmupError when the model is not on CUDA with the triton backend.
    """
    from tritonseek.engine.sampling_params import SamplingParams

    if llm.device.type != "cuda" or llm.backend != "triton":
        raise WarmupError(f"warmup compiles Triton kernels for the GPU; this model runs on {llm.device} "
                          f"with the {llm.backend} backend")
    has_mtp = len(llm.model.mtp) > 0
    if steps is None:
        steps = plan(max_batch, has_mtp, max_positions=llm.config.max_position_embeddings)
    before = cache_entries()
    t0 = time.perf_counter()
    for i, s in enumerate(steps):
        if on_step is not None:
            on_step(i, len(steps), s.label)
        prompts = [_prompt_of_length(llm, n, j) for j, n in enumerate(s.prompt_lengths)]
        p = SamplingParams(temperature=0.8 if s.sampled else 0.0, top_k=20 if s.top else 0,
                           top_p=0.9 if s.top else 1.0, max_new_tokens=s.max_new_tokens, seed=i, ignore_eos=True)
        llm.generate(prompts, p, mtp=s.mtp)
    if on_step is not None:
        on_step(len(steps), len(steps), "done")
    return WarmupReport(time.perf_counter() - t0, cache_entries() - before, str(triton_cache_dir()),
                        [s.label for s in steps])
