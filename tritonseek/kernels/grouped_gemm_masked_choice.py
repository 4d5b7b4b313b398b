"""Which kernel ``grouped_gemm_masked.grouped_fp8_gemm_masked`` runs: the plain-Triton ``tl`` kernel or the
warp-specialized Gluon ``ws`` kernel (grouped_gemm_ws.grouped_fp8_gemm_masked_ws), and the checks of that choice.

* "tl": the ``tl`` kernel of grouped_gemm_masked.py (any device Triton runs on, interpreter included; the
  options pdl, prefetch_group, max_active_groups and its config keys). Its swapped 16-row tiles are built for
  decode (1-16 rows per expert).
* "ws": the Gluon kernel (CUDA sm_90 only; a persistent grid over the non-empty 128-row tiles). It takes none of the
  ``tl`` kernel's options: pdl, prefetch_group, max_active_groups or a ``tl`` config key is a ValueError naming it
  (its config keys are grouped_gemm_ws.GROUPED_WS_CONFIG_SPEC's); ``out`` must have its groups stacked densely.
* "auto": "ws" where it was measured faster — a Hopper CUDA device (not the interpreter), none of the ``tl``-only
  options given, a densely stacked ``out`` (or none), rows per group (expected_m capped at M_max — no group holds
  more —, else M_max) ≥ ``WS_MIN_ROWS`` and rows per group × groups ≥ ``WS_MIN_TOTAL_ROWS`` — else "tl". The choice
  reads only host-side values (no device sync: CUDA-graph safe), so the same call always picks the same kernel.

H200 measurement (h5wire W1, code 1230905, benchmarks/probe_masked_kernel.py): both kernels through this launcher
checked against the fp32 reference first (calc_diff 1.4e-6 at the 6 anchors, full and partial masked_m), then one-call
graphs of tl, ws, tl again and torch._grouped_mm bf16 replayed 40 times interleaved on the GPU clock; masked_m = M_max.
Median per-round time ratio ws / tl (< 1: ws faster), (N, K) = (4096, 7168) / (7168, 2048):
  rows 16, groups 1 / 4 / 16:   1.06 1.19 / 1.21 1.63 / 1.10 1.20
  rows 32:                       1.16 1.28 / 1.12 1.36 / 1.03 1.14
  rows 64:                       0.96 1.14 / 0.87 1.03 / 0.93 1.01
  rows 128:                      0.79 1.21 / 0.93 0.88 / 0.87 0.88
  rows 256:                      0.79 0.97 / 0.75 0.86 / 0.77 0.86
  rows 512:                      0.80 0.88 / 0.76 0.83 / 0.71 0.88
  anchors 1×1024, 2×512, 4×256:  0.75 0.90, 0.74 0.88, 0.75 0.86 (ws 1041 / 803, 1089 / 829, 1065 / 817 TFLOP/s)
A/A control (tl again / tl): 0.99-1.00 at 16 groups, 0.93-1.03 at 4, 1.00-1.21 at one group (largest with ≤ 128
rows: likely L2 — tl again followed the bf16 peer in half the rounds, which evicts the fp8 weights from the 50 MB L2,
while tl and ws always followed a kernel reading the same weights; not verified). Hence from 128 rows per
group (ws / tl 0.87-0.93 with ≥ 4 groups), but not one group of 128 (one (N, K) 21 % slower: 56 short tiles);
below 128 rows the tl kernel wins or ties (64 rows: mixed, ±14 %), and decode (1-16 rows) stays on its swapped tiles.
bench_moe's grouped_gemm_masked suite with this rule (h5wire W2, 1e2fb3b): auto ran ws at the 6 anchors, GPU clock
1122 / 836, 1121 / 832, 1074 / 814 TFLOP/s (tl 869 / 747, 851 / 726, 821 / 703; torch._grouped_mm bf16 1.51-1.55×
slower than ws); graph replay incl. launch 1100 / 831, 1096 / 813, 1049 / 775. Eager calls: see the launcher.
"""

from __future__ import annotations

import torch

from tritonseek.kernels._host import cuda_capability
from tritonseek.kernels._utils import interpreter_active

KERNELS = ("auto", "tl", "ws")

# Rows per group (expected_m, else M_max), and rows per group × groups, from which "auto" runs the ws kernel
# (the measurement above); WS_MIN_ROWS None would mean never.
WS_MIN_ROWS: int | None = 128
WS_MIN_TOTAL_ROWS: int = 256


def _is_hopper(dev: torch.device) -> bool:
    return dev.type == "cuda" and not interpreter_active() and cuda_capability(dev)[0] == 9


def _dense_groups(out: torch.Tensor | None, M_max: int) -> bool:
    # the ws kernel stores through out viewed as [E·M_max, N]
    return out is None or out.dim() != 3 or out.shape[0] <= 1 or out.stride(0) == M_max * out.stride(1)


def ws_unavailable(dev: torch.device) -> str:
    """Why kernel='ws' cannot run on ``dev`` (not a Hopper CUDA device, or the interpreter): the error message."""
    if dev.type != "cuda":
        why = f"a is on {dev}"
    elif interpreter_active():
        why = "TRITON_INTERPRET=1 (Gluon has no interpreter path)"
    else:
        why = f"a is on a compute capability {cuda_capability(dev)[0]}.x GPU"
    return f"kernel='ws' is a Gluon kernel for CUDA Hopper GPUs (sm_90) only, and {why}; use kernel='tl' or 'auto'"


def check_kernel(kernel: object) -> str:
    """``kernel`` itself: TypeError unless a str, ValueError unless one of ``KERNELS``."""
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be a str, one of {KERNELS}, got {type(kernel).__name__} {kernel!r}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return kernel


def choose_masked_kernel(
    kernel: str,
    dev: torch.device,
    E: int,
    M_max: int,
    *,
    expected_m: int | None = None,
    out: torch.Tensor | None = None,
    config: dict | None = None,
    pdl: bool = False,
    prefetch_group: int | None = None,
    max_active_groups: int | None = None,
) -> str:
    """The kernel ("tl" | "ws") a ``grouped_fp8_gemm_masked`` call with these arguments runs (the operands already
    checked: dev = a.device, E = a.shape[0] groups, M_max = a.shape[1]). kernel "tl" / "ws" is returned as given
    once its options are checked; "auto" resolves as the module docstring says. Raises TypeError (kernel not a str)
    / ValueError (kernel unknown; kernel="ws" with a non-Hopper or non-CUDA device, pdl, prefetch_group,
    max_active_groups or a config key of the tl kernel — each naming the argument)."""
    kernel = check_kernel(kernel)
    # the tl kernel's options, as given (None / False: not used)
    tl_only = dict(pdl=pdl or None, prefetch_group=prefetch_group, max_active_groups=max_active_groups)
    if kernel == "ws":
        for name, v in tl_only.items():
            if v is not None:
                raise ValueError(f"{name}={v!r} is an option of the tl kernel only; kernel='ws' does not take it")
        if config is not None:
            _check_ws_config_keys(config)
        if not _is_hopper(dev):
            raise ValueError(ws_unavailable(dev))
        return "ws"
    if kernel == "tl":
        return "tl"
    if config is not None or any(v is not None for v in tl_only.values()):
        return "tl"  # options only the tl kernel takes: the caller asked for it
    if not _dense_groups(out, M_max) or not _is_hopper(dev):
        return "tl"
    rows = min(expected_m, M_max) if expected_m is not None else M_max  # no group has more than M_max rows
    return "ws" if WS_MIN_ROWS is not None and rows >= WS_MIN_ROWS and rows * E >= WS_MIN_TOTAL_ROWS else "tl"


# keys only the tl kernel's config takes (grouped_gemm_masked._CONFIG_KEYS less the shared BLOCK_M / BLOCK_N)
_TL_ONLY_KEYS = ("num_warps", "num_stages", "SWAP_AB", "PREFETCH", "MAXNREG", "K2")


def _check_ws_config_keys(config: object) -> None:
    """kernel='ws': a config naming a tl-kernel key is a ValueError saying so (other keys are checked by the ws
    launcher against GROUPED_WS_CONFIG_SPEC)."""
    if isinstance(config, dict):
        for key in config:
            if key in _TL_ONLY_KEYS:
                raise ValueError(f"config key {key!r} belongs to the tl kernel; kernel='ws' takes the keys of "
                                 "grouped_gemm_ws.GROUPED_WS_CONFIG_SPEC (NUM_STAGES, BLOCK_N, ...)")


__all__ = ["KERNELS", "WS_MIN_ROWS", "WS_MIN_TOTAL_ROWS", "check_kernel", "choose_masked_kernel"]
