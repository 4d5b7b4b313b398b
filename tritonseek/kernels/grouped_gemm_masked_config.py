"""Launch-config helpers of the masked grouped GEMMs' tl kernels (grouped_gemm_masked): the caller's config checked
and normalised, and the decode defaults adjusted to the grid (``_decode_wave_config``) and to K (``_decode_k2_config``).
Moved out of grouped_gemm_masked.py (s24) unchanged but for the K2 key; host code only.
"""

from __future__ import annotations

import numpy as np

from tritonseek.kernels.grouped_gemm import _MASKED_DECODE

_CONFIG_KEYS = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages", "SWAP_AB", "PREFETCH", "MAXNREG", "K2")


def _plain_config(config: object) -> dict | None:
    """A copy of the caller's config with numpy scalars as their Python values (the launchers' scalar rule: an
    np.int64 BLOCK_M was refused by the int checks below); TypeError unless a dict (or None)."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict of launch settings, got {type(config).__name__}")
    return {key: v.item() if isinstance(v, np.generic) else v for key, v in config.items()}


def _check_config_keys(cfg: dict, silu: bool) -> None:
    """Unknown keys (a typo would otherwise be ignored), a non-bool SWAP_AB or K2, and for the fused SiLU·quant
    kernel a BLOCK_N other than 128 (its N tile is one quant group) raise ValueError naming the key."""
    for key in cfg:
        if key not in _CONFIG_KEYS:
            raise ValueError(f"config has an unknown key {key!r}; the masked GEMMs' tl kernel takes "
                             f"{', '.join(_CONFIG_KEYS)} (kernel='ws' takes grouped_ws_config's keys)")
    for key in ("SWAP_AB", "K2"):
        if not isinstance(cfg.get(key, False), bool):
            raise ValueError(f"config[{key!r}] must be a bool, got {cfg[key]!r}")
    if silu and cfg.get("BLOCK_N", 128) != 128:
        raise ValueError(f"config['BLOCK_N'] must be 128 here (one quant group per N tile), got {cfg['BLOCK_N']!r}")


def _check_k2(cfg: dict, num_k_blocks: int) -> None:
    """config K2 (two K blocks per pipeline stage) needs SWAP_AB, BLOCK_N ≤ 128 and an even number of 128-wide K
    blocks (K a multiple of 256): ValueError naming config['K2'] otherwise."""
    if cfg.get("K2", False) and (not cfg.get("SWAP_AB", False) or cfg.get("BLOCK_N", 128) > 128 or num_k_blocks % 2):
        raise ValueError(f"config['K2'] needs SWAP_AB=True, BLOCK_N <= 128 and K a multiple of 256 "
                         f"(got {num_k_blocks} K blocks, config {cfg!r})")


def _maxnreg(cfg: dict) -> dict:
    """config MAXNREG (registers per thread cap, e.g. 128 for 4 programs per SM at 3 stages) as launch options."""
    v = cfg.get("MAXNREG")
    if v is None:
        return {}
    if isinstance(v, bool) or not isinstance(v, int) or not 24 <= v <= 255 or v % 8:
        raise ValueError(f"config['MAXNREG'] must be a multiple of 8 in [24, 255], got {v!r} (config {cfg!r})")
    return dict(maxnreg=v)


def _decode_wave_config(cfg: dict, tiles: int, num_sms: int) -> dict:
    """The default swapped decode config (6 stages: 2 programs per SM by shared memory) → 3 stages at 128
    registers (4 per SM) when the grid needs more than one 2-per-SM wave but fits one 4-per-SM wave; other
    configs unchanged. H200 A/B (W2 at e9e2f1c, 256 experts, top-8 routing, plain launches, 3 alternated rounds):
    T=1 (7168, 2048), 448 programs: device-side graph 34.24-34.43 µs against 34.69-35.10, kernel 32.0 against
    32.65; where one 2-per-SM wave holds the grid ((4096, 7168) at T=1, 256 programs) 64.4 against 61.6-61.9,
    and with many waves (T=8) 199.0-199.3 against 194.8-195.2, so there the 6-stage config stays."""
    if cfg == _MASKED_DECODE and 2 * num_sms < tiles <= 4 * num_sms:
        return dict(cfg, num_stages=3, MAXNREG=128)
    return cfg


# K blocks from which the default decode config takes two K blocks per stage (K2): measured at K = 7168 only
K2_MIN_K_BLOCKS = 56


def _decode_k2_config(cfg: dict, num_k_blocks: int) -> dict:
    """The default swapped decode config (as left by ``_decode_wave_config``: 6 stages) → two K blocks per stage,
    3 stages (the same shared memory: 2 programs per SM), when K has an even number ≥ ``K2_MIN_K_BLOCKS`` of
    128-wide blocks; other configs unchanged. H200 s24 W2 (probe_masked_decode, 300 rotated interleaved rounds,
    A/A ≤ 1.001, usual weight layout), device-side graph time against the 6-stage default at (4096, 7168): T=1
    0.970, T=8 0.980, T=64 0.980; at (7168, 2048) (16 K blocks) it lost (T=1 1.012, T=64 1.014), so K = 2048 keeps
    one K block per stage. Confirmed as the default in W3 (cfc93da, same method): the pre-K2 config took 1.023 /
    1.013 / 1.014 × the time at T=1/8/64 (A/A 1.001 / 1.000 / 1.000), T=256 (not this config) and K = 2048
    unchanged; bench_moe T=1 (4096, 7168): one-call graph 67.33 µs = 3,491 GB/s (target 3,416; 71.31 µs in W2)."""
    if cfg == _MASKED_DECODE and num_k_blocks >= K2_MIN_K_BLOCKS and num_k_blocks % 2 == 0:
        return dict(cfg, num_stages=3, K2=True)
    return cfg
