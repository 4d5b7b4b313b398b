"""Sampling parameters and per-request outputs of offline generation (vLLM ``LLM.generate`` style)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tritonseek.kernels._utils import check_bool, is_int_arg, is_real_arg

MIN_TEMPERATURE = 1e-5  # smallest non-zero temperature accepted (vLLM's sampling epsilon)


@dataclass
class SamplingParams:
    """How to pick each new token.

    temperature: 0 = greedy (argmax); otherwise finite and ≥ 1e-5, dividing the logits before softmax.
    top_k: keep the k most likely tokens (0 = off). top_p: nucleus mass in (0, 1] (1 = off).
    max_new_tokens: tokens to generate at most (≥ 1). seed: per-request RNG seed (None = random).
    stop_token_ids: extra ids that end a sequence, besides the checkpoint's EOS (unless ignore_eos);
    ids outside the vocabulary are rejected by ``LLM.generate``.
    Types follow the launchers' rule (``tritonseek.kernels._utils``): int fields take ints or numpy integers, float
    fields ints, floats or numpy numbers, ignore_eos a bool or numpy bool; each is stored as the Python type.
    Raises TypeError naming the field for another type (a bool for a number, a string, a tensor), ValueError naming
    it for a value out of range, on construction.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False

    def __post_init__(self):
        for name, kind in (("temperature", float), ("top_k", int), ("top_p", float), ("max_new_tokens", int),
                           ("seed", int)):
            v = getattr(self, name)
            if v is None and name == "seed":
                continue
            if not (is_int_arg(v) if kind is int else is_real_arg(v)):
                what = "an int" + (" or None" if name == "seed" else "") if kind is int else "a float"
                raise TypeError(f"{name} must be {what}, got {type(v).__name__} {v!r}")
            try:
                setattr(self, name, kind(v))  # a numpy number → the Python one
            except OverflowError:  # float(10**400)
                raise ValueError(f"{name} must be finite, got an int too large for a float") from None
        t = self.temperature
        if not math.isfinite(t) or t < 0 or 0 < t < MIN_TEMPERATURE:
            # Below MIN_TEMPERATURE, logits / T overflows fp32 and sampling degenerates; vLLM treats
            # such values as greedy, we make the caller say so (0) instead.
            raise ValueError(f"temperature={t!r} must be 0 (greedy) or a finite value >= {MIN_TEMPERATURE}")
        if not 0 <= self.top_k < 2**31:
            raise ValueError(f"top_k={self.top_k!r} must be an int in [0, 2**31) (0 = off)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens!r} must be an int >= 1")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ValueError(f"seed={self.seed!r} must be an int in [0, 2**63) or None")
        ids = self.stop_token_ids
        if not isinstance(ids, (list, tuple)) or not all(is_int_arg(i) for i in ids):
            raise TypeError(f"stop_token_ids must be a list of token ids (ints), got {type(ids).__name__} {ids!r}")
        if not all(0 <= i < 2**31 for i in ids):
            raise ValueError(f"stop_token_ids={ids!r} must be a list of token ids (ints in [0, 2**31))")
        self.stop_token_ids = [int(i) for i in ids]
        self.ignore_eos = check_bool("ignore_eos", self.ignore_eos)


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
