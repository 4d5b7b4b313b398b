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
    max_new_tokens: tokens to generate at most (≥ 1). seed: per-request RNG seed (None = random). A seeded request's
    random draws depend on its seed, prompt and params only, not on the other requests of the batch (with ``mtp`` too:
    each sampled sequence drafts its own count); on the reference backend its tokens are then batch-invariant, while
    GPU kernels may round a row differently at another batch size.
    stop_token_ids: extra ids that end a sequence, besides the checkpoint's EOS (unless ignore_eos);
    ids outside the vocabulary are rejected by ``LLM.generate``.
    Types follow the launchers' rule (``tritonseek.kernels._utils``): int fields take ints or numpy integers, float
    fields ints, floats or numpy numbers, ignore_eos a bool or numpy bool; each is stored as the Python type.
    Raises TypeError naming the field for another type (a bool for a number, a string, a tensor), ValueError naming
    it for a value out of range, on construction and on every later assignment (``p.top_k = 50`` is checked and
    stored like the constructor's argument; a refused assignment leaves the field as it was). stop_token_ids takes
    a list or tuple and is stored as a tuple of ints: it cannot be changed in place (``p.stop_token_ids.append(-5)``
    is an AttributeError; an in-place change of a stored list reached the engine unchecked, s20), assign a new
    sequence instead (``p.stop_token_ids = [*p.stop_token_ids, 7]``).
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False

    def __setattr__(self, name: str, value) -> None:
        # every assignment is checked, at construction (the dataclass __init__ assigns each field) and after it:
        # sp.temperature = True sampled at 1.0 and sp.max_new_tokens = 2.5 failed inside generate (tester2 s20 #6)
        super().__setattr__(name, _check_field(name, value))


def _check_field(name: str, v):
    """The value SamplingParams stores for field ``name`` (numpy numbers as the Python ones); TypeError naming the
    field for another type, ValueError naming it for a value out of range."""
    kind = _KINDS.get(name)
    if kind is not None:
        if v is None and name == "seed":
            return None
        if not (is_int_arg(v) if kind is int else is_real_arg(v)):
            what = "an int" + (" or None" if name == "seed" else "") if kind is int else "a float"
            raise TypeError(f"{name} must be {what}, got {type(v).__name__} {v!r}")
        try:
            v = kind(v)  # a numpy number → the Python one
        except OverflowError:  # float(10**400)
            raise ValueError(f"{name} must be finite, got an int too large for a float") from None
    if name == "temperature" and (not math.isfinite(v) or v < 0 or 0 < v < MIN_TEMPERATURE):
        # Below MIN_TEMPERATURE, logits / T overflows fp32 and sampling degenerates; vLLM treats
        # such values as greedy, we make the caller say so (0) instead.
        raise ValueError(f"temperature={v!r} must be 0 (greedy) or a finite value >= {MIN_TEMPERATURE}")
    if name == "top_k" and not 0 <= v < 2**31:
        raise ValueError(f"top_k={v!r} must be an int in [0, 2**31) (0 = off)")
    if name == "top_p" and not 0 < v <= 1:
        raise ValueError(f"top_p={v!r} must be in (0, 1]")
    if name == "max_new_tokens" and v < 1:
        raise ValueError(f"max_new_tokens={v!r} must be an int >= 1")
    if name == "seed" and not 0 <= v < 2**63:
        raise ValueError(f"seed={v!r} must be an int in [0, 2**63) or None")
    if name == "stop_token_ids":
        if not isinstance(v, (list, tuple)) or not all(is_int_arg(i) for i in v):
            raise TypeError(f"stop_token_ids must be a list of token ids (ints), got {type(v).__name__} {v!r}")
        if not all(0 <= i < 2**31 for i in v):
            raise ValueError(f"stop_token_ids={v!r} must be a list of token ids (ints in [0, 2**31))")
        v = tuple(int(i) for i in v)  # immutable: the checked ids are the ones the engine reads
    if name == "ignore_eos":
        v = check_bool("ignore_eos", v)
    return v


_KINDS = {"temperature": float, "top_k": int, "top_p": float, "max_new_tokens": int, "seed": int}


@dataclass
class RequestOutput:
    """One prompt's result: its prompt and prompt ids, the new token ids and their text, and why it ended
    (finish_reason "stop" | "length"). Timing and token counts are per call, not per prompt: ``LLM.last_stats``."""

    prompt: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str


@dataclass
class GenerationStats:
    """Whole-call counters; tokens/s counts new tokens over prefill + decode wall time.

    extra: graph_steps / graph_capture_s (CUDA graphs), and with ``mtp``: mtp (K), proposed / accepted drafts,
    emitted tokens and seq_steps (Σ live sequences over verify steps), acceptance = accepted / proposed and
    tokens_per_step = emitted / seq_steps, each None when its denominator is 0 (nothing drafted, e.g.
    max_new_tokens ≤ 2).
    """

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
