"""Host-side helpers of the launchers that keep one eager call's Python short (session 20, h6eager).

A prefill forward launches ~1,000 kernels eagerly, so each launcher's host time adds up to the time to first
token. These helpers replace per-call work whose answer cannot change between calls:

* ``cdiv`` / ``next_pow2``: ``triton.cdiv`` / ``triton.next_power_of_2`` are constexpr functions; on the host
  each call goes through Triton's argument-unwrapping wrapper (~2 µs, against ~0.05 µs for the integer
  expression), and a launcher makes 5-10 of them per call;
* ``cuda_sm_count`` / ``cuda_capability``: device properties read once per device index (they do not change
  while the process runs);
* ``nvmma_layout``: the Gluon shared-memory layout of a TMA block, built once per (block shape, dtype)
  (``NVMMASharedLayout.get_default_for`` costs ~8 µs and the Gluon launchers build three per call);
* ``checked_once`` / ``config_key``: a pure check of a launch config runs once per distinct config (the Gluon
  GEMM launchers re-checked their table config on every call, ~20 µs).

Measured (s20, benchmarks/probe_host_overhead.py --stub: the launchers' own Python on the dev CPU, kernel launches
stubbed, 3 alternating passes per tree, pass spread ≤ 5 %): new / before 0.56-0.58 for fp8_gemm_nt (swap-AB M=8, tl
M=64), 0.66 quant, 0.61 / 0.70 masked / contiguous grouped tl, 0.60-0.65 gate / router, 0.69-0.73 MLA metadata /
decode (tl path), 0.83-0.88 rms_norm, moe_unpermute, mla_prefill. On the H200 host (W1 at a43d188) the launchers'
eager host time per call was 48-370 µs with results bit-identical before / after, but the pass-to-pass spread of
the shared host (A/A 0.5-4x) left the before / after difference unresolved there.
"""

from __future__ import annotations

import functools
import operator

import torch


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for host integers (b > 0): the expression ``triton.cdiv`` evaluates, without its wrapper."""
    return (a + b - 1) // b


def next_pow2(n: int) -> int:
    """The smallest power of two ≥ n for a host integer, 0 for n ≤ 0 (as ``triton.next_power_of_2``).
    TypeError for a non-integer (numpy integers are integers)."""
    n = operator.index(n)
    return 0 if n <= 0 else 1 << (n - 1).bit_length()


def cuda_index(device: torch.device) -> int:
    """The CUDA device index of ``device`` (the current device for a bare ``cuda``)."""
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.lru_cache(maxsize=None)
def _cuda_props(index: int):
    return torch.cuda.get_device_properties(index)


def sm_count_at(index: int) -> int:
    """Streaming multiprocessors of CUDA device ``index`` (queried once per index; every launcher's SM count)."""
    return _cuda_props(index).multi_processor_count


def capability_at(index: int) -> tuple[int, int]:
    """(major, minor) compute capability of CUDA device ``index`` (queried once per index)."""
    p = _cuda_props(index)
    return p.major, p.minor


def cuda_sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of the CUDA ``device`` (queried once per device index)."""
    return sm_count_at(cuda_index(device))


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """(major, minor) compute capability of the CUDA ``device`` (queried once per device index)."""
    return capability_at(cuda_index(device))


@functools.lru_cache(maxsize=256)
def _nvmma_layout(block_shape: tuple[int, ...], dtype):
    from triton.experimental.gluon import language as gl

    return gl.NVMMASharedLayout.get_default_for(list(block_shape), dtype)


def nvmma_layout(block_shape, dtype):
    """``gl.NVMMASharedLayout.get_default_for(block_shape, dtype)``, cached on (tuple(block_shape), dtype): the
    layout is an immutable value object determined by those two, so one instance serves every call."""
    return _nvmma_layout(tuple(block_shape), dtype)


def config_key(cfg: object):
    """A hashable key of a launch-config dict that is equal for two configs only when they hold the same keys with
    values of the same types and values (1, 1.0 and True differ), for memoizing a pure check of a config; None
    when cfg is not a dict or a key / value is unhashable or the keys do not sort (such a config is just checked)."""
    if not isinstance(cfg, dict):
        return None
    try:
        key = tuple(sorted((k, type(v), v) for k, v in cfg.items()))
        hash(key)
    except TypeError:
        return None
    return key


def checked_once(check):
    """Decorator for a pure check of a launch-config dict (returns None or raises): a config with the ``config_key``
    of one that passed before returns at once (the launchers re-checked their table configs on every call);
    a config without a key, or one that raised, is checked every time."""
    passed: set = set()

    @functools.wraps(check)
    def wrapper(cfg):
        key = config_key(cfg)
        if key is not None and key in passed:
            return None
        check(cfg)
        if key is not None and len(passed) < 4096:
            passed.add(key)
        return None

    return wrapper
