"""Shared helpers for the Triton launchers: interpreter detection and input validation."""

from __future__ import annotations

import math
import numbers
import os

import numpy as np
import torch


def interpreter_active() -> bool:
    """True when Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``).

    The interpreter stores bfloat16 as raw 16-bit integers, so ``tl.dot`` on bf16 operands is
    wrong there (triton-lang/triton#11584); kernels use this to pick an fp32 dot dtype under the
    interpreter while the GPU path keeps bf16 tensor-core dots.
    """
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_tensor(
    name: str,
    t: object,
    *,
    dtype: torch.dtype | tuple[torch.dtype, ...] | None = None,
    ndim: int | None = None,
    device: torch.device | None = None,
    contiguous: bool = False,
    output: bool = False,
) -> torch.Tensor:
    """Raise ``TypeError``/``ValueError`` naming ``name`` unless ``t`` is a tensor as described (``contiguous``: for
    tensors the kernels read at unit stride (index tensors, 1-D norm weights), where a strided view would be read as
    other entries;
    ``output``: a tensor the kernel writes, whose elements must not share memory: ``check_no_overlap``)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtype is not None:
        allowed = dtype if isinstance(dtype, tuple) else (dtype,)
        if t.dtype not in allowed:
            names = " or ".join(str(d) for d in allowed)
            raise TypeError(f"{name} must have dtype {names}, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        # a 0-d tensor is named as such: "got shape ()" read as a typo for a 1-D one (h5 s21)
        got = "a 0-d (scalar) tensor, shape ()" if t.dim() == 0 else f"a {t.dim()}-D tensor of shape {tuple(t.shape)}"
        raise ValueError(f"{name} must be {ndim}-D, got {got}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device} (same device as the other inputs)")
    if contiguous and not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (the kernel reads it at unit stride), got strides {t.stride()}: "
                         f"pass {name}.contiguous()")
    if output:
        check_no_overlap(name, t)
    return t


def has_internal_overlap(t: torch.Tensor) -> bool:
    """True when two elements of ``t`` may share memory (an ``expand``-ed or stride-0 view, an ``as_strided`` view
    with overlapping strides). Exact for every view of a dense tensor (slices, transposes, permutes); a layout
    whose dims interleave without overlapping (never made by views) also counts as overlapping."""
    if t.numel() <= 1:
        return False
    torch_says = torch._debug_has_internal_overlap(t)  # 0 = no, 1 = yes, 2 = too hard for torch to tell
    if torch_says != 2:
        return torch_says == 1
    # Nested-strides test: with the dims of size > 1 sorted by stride, each stride must step past the whole
    # span of the smaller dims, else two index tuples can land on the same offset.
    reach = 0
    for stride, size in sorted((abs(st), sz) for sz, st in zip(t.shape, t.stride()) if sz > 1):
        if stride <= reach:
            return True
        reach += stride * (size - 1)
    return False


def check_no_overlap(name: str, t: torch.Tensor) -> None:
    """ValueError naming ``name`` when elements of the output tensor ``t`` share memory (``has_internal_overlap``):
    the kernels would race on them and the result would depend on the store order. Checked before any
    stride-based choice (a stride of 0 passes divisibility tests)."""
    if has_internal_overlap(t):
        raise ValueError(f"{name} has elements that share memory (shape {tuple(t.shape)}, strides {t.stride()}, e.g. "
                         "an expand() or as_strided() view): the kernel's stores would race; pass a tensor with "
                         "distinct elements (torch.empty, or a slice of one)")


def _byte_span(t: torch.Tensor) -> tuple[int, int]:
    """[first, last) addresses of the bytes ``t``'s elements occupy (views have non-negative strides)."""
    start = t.data_ptr()
    return start, start + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride())) * t.element_size() \
        + t.element_size()


def check_no_alias(name: str, out: torch.Tensor, same_ok: tuple[str, ...] = (), **inputs) -> None:
    """ValueError naming ``name`` and the input when the output ``out``'s memory span intersects that of an input
    tensor (``inputs``: name=tensor; None entries skipped): the kernel would read elements it already overwrote, a
    result that depends on the program order (tester 2, s19: ``moe_unpermute(eo, rm, w, out=eo[:T])``).
    ``same_ok``: inputs that ``out`` may be exactly (same start, dtype, shape and strides), for a kernel whose every
    output element is read only by the program writing it (an in-place update); a partial overlap is still refused.
    Conservative: spans are compared, so interleaved but disjoint views count as aliasing."""
    if out.numel() == 0:
        return
    o0, o1 = _byte_span(out)
    for key, t in inputs.items():
        if t is None or t.numel() == 0 or t.device != out.device:
            continue
        if (key in same_ok and t.data_ptr() == out.data_ptr() and t.dtype == out.dtype and t.shape == out.shape
                and t.stride() == out.stride()):
            continue
        i0, i1 = _byte_span(t)
        if o0 < i1 and i0 < o1:
            raise ValueError(f"{name} shares memory with {key}: {name} must not alias the inputs (the kernel would "
                             f"read {key} elements it has already overwritten); pass a separate {name} buffer")


def check_runnable_device(name: str, t: torch.Tensor) -> None:
    """Triton kernels run on CUDA tensors, or on CPU tensors only under the interpreter."""
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu" and interpreter_active():
        return
    raise ValueError(
        f"{name} is on {t.device}: the Triton backend needs CUDA tensors "
        "(or TRITON_INTERPRET=1 for the CPU interpreter); use backend='reference' on CPU"
    )


# The one rule for scalar arguments of the launchers (and of SamplingParams / LLM.generate), session 20:
#   integer arguments: a Python int or a numpy integer (returned as int); a bool, float, str, tensor (0-d
#     included: reading it would sync a CUDA stream) or anything else is a TypeError naming the argument and type;
#   float arguments: a Python int/float or a numpy integer/floating (returned as float); a bool is a TypeError;
#   bool flags: a bool or a numpy bool (returned as bool); 0/1, "yes", a tensor are a TypeError (no truthiness).
# Values outside the allowed range are a ValueError naming the argument.


def is_int_arg(v: object) -> bool:
    """True for a Python int or a numpy integer (not a bool, not a numpy bool)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def is_real_arg(v: object) -> bool:
    """True for a Python int/float or a numpy integer/floating (not a bool, not a numpy bool)."""
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def check_int(name: str, v: object, lo: int | None = None, hi: int | None = None) -> int:
    """``int(v)``; TypeError naming ``name`` unless v is an int or a numpy integer (a bool, a float and a tensor are
    not), ValueError outside lo..hi."""
    if not is_int_arg(v):
        raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        want = f"≥ {lo}" if hi is None else f"≤ {hi}" if lo is None else f"in {lo}..{hi}"
        raise ValueError(f"{name} must be {want}, got {v}")
    return v


def check_pow2(name: str, v: object, lo: int = 1) -> int:
    """``int(v)`` for an integer argument (``check_int``) that must be a power of two ≥ lo (ValueError naming it)."""
    v = check_int(name, v)
    if v < lo or v & (v - 1):
        raise ValueError(f"{name} must be a power of two ≥ {lo}, got {v}")
    return v


def check_bool(name: str, v: object) -> bool:
    """``bool(v)``; TypeError naming ``name`` unless v is a bool or a numpy bool (0/1, strings and tensors are not)."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(v).__name__} {v!r}")
    return bool(v)


def check_real(name: str, v: object) -> float:
    """``float(v)``; TypeError naming ``name`` unless v is an int/float or a numpy integer/floating (not a bool, str
    or tensor), ValueError unless it is finite (an int too large for a float included: 10**400 is a ValueError, not
    an OverflowError)."""
    if not is_real_arg(v):
        raise TypeError(f"{name} must be a float, got {type(v).__name__} {v!r}")
    f = _as_float(v)
    if f is None or not math.isfinite(f):
        raise ValueError(f"{name} must be finite, got {_short(v)}")
    return f


def _as_float(v: numbers.Real) -> float | None:
    """``float(v)``, None for an int too large for a float (10**400: float() and math.isfinite raise OverflowError)."""
    try:
        return float(v)
    except OverflowError:
        return None


def _short(v: object) -> str:
    """repr of v for a message; an int past float range as its digit count (its repr may be thousands of digits,
    past Python's int-to-str limit)."""
    if isinstance(v, numbers.Integral) and _as_float(v) is None:
        return f"an int of {abs(int(v)).bit_length()} bits (too large for a float)"
    return repr(v)


def check_positive_float(name: str, v: object) -> float:
    """``float(v)``; TypeError naming ``name`` unless v is an int/float (not a bool), ValueError unless it is
    finite and > 0."""
    if check_real(name, v) <= 0:
        raise ValueError(f"{name} must be a finite positive float, got {v!r}")
    return float(v)


def _rule_text(rule: object) -> str:
    if rule is bool:
        return "a bool"
    if rule is float:
        return "a finite number > 0"
    if isinstance(rule, range):
        step = f" in steps of {rule.step}" if rule.step != 1 else ""
        return f"an int in {rule.start}..{rule[-1]}{step}"
    return f"one of {rule!r}"


def check_config(name: str, cfg: object, spec: dict, required: tuple = ()) -> dict:
    """A copy of the launch-config dict ``cfg`` checked against ``spec`` {key: rule}; rule ``bool`` (a bool or numpy
    bool), ``float`` (a finite int/float > 0), a ``range`` (an int in it) or a tuple of allowed values (a bool never
    stands for 0/1, a float never for an int). Numpy scalars count as their Python types (the scalar rule above)
    and the copy holds the Python values (np.int64(64) -> 64, np.False_ -> False). TypeError unless cfg is a dict;
    ValueError naming the key for an unknown key, a missing ``required`` key or a value outside its rule."""
    if not isinstance(cfg, dict):
        raise TypeError(f"{name} must be a dict, got {type(cfg).__name__}")
    for key in required:
        if key not in cfg:
            raise ValueError(f"{name} is missing the required key {key!r}")
    out = {}
    for key, v in cfg.items():
        rule = spec.get(key) if isinstance(key, str) else None
        if rule is None:
            raise ValueError(f"{name} has an unknown key {key!r}; known keys: {', '.join(spec)}")
        if isinstance(v, np.generic):  # a numpy scalar is checked and used as its Python value (np.bool_ -> bool)
            v = v.item()
        num = isinstance(v, numbers.Real) and not isinstance(v, bool)
        if rule is bool:
            ok = isinstance(v, bool)
        elif rule is float:
            ok = num and _as_float(v) is not None and math.isfinite(v) and v > 0
        elif isinstance(rule, range):
            ok = num and isinstance(v, numbers.Integral) and v in rule
        else:
            # a bool never stands for 0/1 and a float never for an int (BLOCK_N=128.0 passed as 128; tester, s17)
            ok = isinstance(v, (numbers.Number, str)) and any(
                v == a and isinstance(v, bool) == isinstance(a, bool)
                and (not isinstance(a, numbers.Integral) or isinstance(v, numbers.Integral)) for a in rule)
        if not ok:
            raise ValueError(f"{name} key {key}={_short(v)} must be {_rule_text(rule)}")
        out[key] = v
    return out


def check_index_range(name: str, t: torch.Tensor, lo: int, hi: int, *, skip_negative: bool = False,
                      read: torch.Tensor | None = None) -> None:
    """ValueError naming ``name`` (and the first offending position and value) unless every entry of the integer
    tensor ``t`` that the kernel reads lies in [lo, hi); with ``skip_negative`` negative entries are allowed (the
    kernels' "skip this row" value); ``read`` (a bool tensor of t's shape) limits the check to the entries read.

    Costs one device→host read (a sync on CUDA). While the current CUDA stream is being captured into a graph a
    sync is impossible, so the check is skipped there; launchers expose it as ``check_ids=True`` and the model's
    decode path, whose ids come from the engine's own allocator, passes ``check_ids=False``.
    """
    if t.numel() == 0 or (t.is_cuda and torch.cuda.is_current_stream_capturing()):
        return
    t = t.long()  # bounds past int32 (e.g. a 2^31-key table) must not wrap in the comparison
    bad = (t < lo) | (t >= hi)
    if skip_negative:
        bad &= t >= 0
    if read is not None:
        bad &= read
    if bool(bad.any()):
        pos = tuple(int(i) for i in bad.nonzero()[0])
        allowed = f"in [{lo}, {hi})" + (" or negative (skip)" if skip_negative else "")
        raise ValueError(f"{name}[{', '.join(map(str, pos))}] = {int(t[pos])} is out of range: entries must be "
                         f"{allowed}")


def is_pow2(x: int) -> bool:
    return x >= 1 and (x & (x - 1)) == 0
