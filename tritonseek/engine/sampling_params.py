"""Sampling parameters and per-request outputs of offline generation (vLLM ``LLM.generate`` style)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MIN_TEMPERATURE = 1e-5  # smallest non-zero temperature accepted (vLLM's sampling epsilon)


@dataclass
class SamplingParams:
    """How to pick each new token.

    temperature: 0 = greedy (argmax); otherwise finite and ≥ 1e-5, dividing the logits before softmax.
    top_k: keep the k most likely tokens (0 = off). top_p: nucleus mass in (0, 1] (1 = off).
    max_new_tokens: tokens to generate at most (≥ 1). seed: per-request RNG seed (None = random).
    stop_token_ids: extra ids that end a sequence, besides the checkpoint's EOS (unless ignore_eos);
    ids outside the vocabulary are rejected by ``LLM.generate``.
    Raises ValueError naming the field on construction when a value is out of range.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False

    def __post_init__(self):
        t = self.temperature
        if not _is_real(t) or not math.isfinite(t) or t < 0 or 0 < t < MIN_TEMPERATURE:
            # Below MIN_TEMPERATURE, logits / T overflows fp32 and sampling degenerates; vLLM treats
            # such values as greedy, we make the caller say so (0) instead.
            raise ValueError(f"temperature={t!r} must be 0 (greedy) or a finite value >= {MIN_TEMPERATURE}")
        if not _is_int(self.top_k) or not 0 <= self.top_k < 2**31:
            raise ValueError(f"top_k={self.top_k!r} must be an int in [0, 2**31) (0 = off)")
        if not _is_real(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1]")
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens!r} must be an int >= 1")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**63):
            raise ValueError(f"seed={self.seed!r} must be an int in [0, 2**63) or None")
        ids = self.stop_token_ids
        if not isinstance(ids, (list, tuple)) or not all(_is_int(i) and 0 <= i < 2**31 for i in ids):
            raise ValueError(f"stop_token_ids={ids!r} must be a list of token ids (ints in [0, 2**31))")
        self.stop_token_ids = list(ids)
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos={self.ignore_eos!r} must be a bool")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass
class RequestOutput:
    """One prompt's result: text, ids, why it ended ("stop" | "length") and its own stats."""

    prompt: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str


@dataclass
class GenerationStats:
    """Whole-call counters; tokens/s counts new tokens over prefill + decode wall time."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0
    backend: str = ""
    device: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        t = self.prefill_s + self.decode_s
        return self.new_tokens / t if t > 0 else 0.0
