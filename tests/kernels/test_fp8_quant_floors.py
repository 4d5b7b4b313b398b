"""The byte-pattern floors of benchmarks/probe_quant_ab.py (issue 4, s25): _floor_kernel writes what the probe's
GPU check says it writes, and that check can fail.

CPU interpreter at small, ragged shapes (M not a multiple of ROWS, K ending in a partial tile and a partial group).
The interpreter's fp32 → e4m3 cast rounds wrongly off the grid (fp8_quant's _round_to_e4m3), so the inputs here are
e4m3 values (and values past ±448, which must clamp): every q is then exact, on the GPU and here. The GPU check at
the real shapes (probe_quant_ab --cases floors) compares random bf16 input against torch's own cast.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks import probe_quant_ab as probe

PER, SILU = probe.PER, probe.SILU


def _e4m3_values(m, k, seed):
    """[m, k] bf16 of random e4m3 values (no NaN byte, no −0), with a few ±1000 / ±5000 that must clamp to ±448."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, 256, (m, k), generator=g, dtype=torch.int32)
    b = torch.where((b == 0x7F) | (b == 0xFF) | (b == 0x80), torch.zeros_like(b), b).to(torch.uint8)
    x = b.view(torch.float8_e4m3fn).float()
    x[0, 0], x[m - 1, k - 1], x[m // 2, k // 2] = 1000.0, -5000.0, -1000.0
    return x.to(torch.bfloat16)


def _input(op, m, k, seed):
    if op == PER:
        return _e4m3_values(m, k, seed)
    # gate on the e4m3 grid, up ∈ {1, −1, 2}: gate·up stays on the grid (or past ±448, clamped)
    g = torch.Generator().manual_seed(seed + 1)
    up = torch.tensor([1.0, -1.0, 2.0])[torch.randint(0, 3, (m, k), generator=g)]
    return torch.cat([_e4m3_values(m, k, seed), up.to(torch.bfloat16)], dim=1)


@pytest.mark.parametrize("op", [PER, SILU])
@pytest.mark.parametrize("cfg", probe.FLOOR_CFGS[:4] + probe.FLOOR_CFGS[-2:], ids=lambda c: probe.cfg_name("s", c))
def test_stream_floor_writes_clamped_cast_and_unit_scales(op, cfg):
    m, k = 11, 320  # 3 groups, the last half full; rows not a multiple of any ROWS > 1
    x = _input(op, m, k, seed=len(cfg) + cfg[0] + cfg[1])
    q, s = probe.floor_call(op, x, cfg, write=True, poison=True)
    assert q.shape == (m, k) and q.dtype == torch.float8_e4m3fn
    assert s.shape == (m, 3) and s.stride() == (1, m)  # the quant's MN-major scale layout
    ref = probe.floor_value(op, x).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    assert torch.equal(q.view(torch.uint8), ref.view(torch.uint8))
    assert bool((s == 1.0).all())
    assert float(q.float().abs().max()) == 448.0  # the planted ±1000 / −5000 clamped
    assert probe.check_floor(op, x, cfg, True) == ""


@pytest.mark.parametrize("op", [PER, SILU])
@pytest.mark.parametrize("cfg", probe.READ_CFGS, ids=lambda c: probe.cfg_name("r", c))
def test_read_floor_sums_every_input_element(op, cfg):
    m, k = 11, 320
    x = _input(op, m, k, seed=3)
    sums, _ = probe.floor_call(op, x, cfg, write=False, poison=True)
    cols = min(cfg[1], 512)
    assert sums.numel() == -(-m // cfg[0]) * -(-k // cols)  # one fp32 per program, none left NaN
    assert not bool(torch.isnan(sums).any())
    assert probe.check_floor(op, x, cfg, False) == ""


def test_floor_check_fails_on_a_wrong_byte_a_wrong_scale_and_a_lost_read(monkeypatch):
    x = _input(PER, 11, 320, seed=5)
    cfg = probe.FLOOR_CFGS[0]
    real = probe.floor_call

    def flip(op, x, cfg, write=True, poison=False):
        q, s = real(op, x, cfg, write, poison)
        if write:
            q.view(torch.uint8)[3, 7] ^= 1
        else:
            q[0] += 1.0e6
        return q, s

    def bad_scale(op, x, cfg, write=True, poison=False):
        q, s = real(op, x, cfg, write, poison)
        s[2, 1] = 2.0
        return q, s

    monkeypatch.setattr(probe, "floor_call", flip)
    assert "1 q bytes differ" in probe.check_floor(PER, x, cfg, True)
    assert probe.check_floor(PER, x, cfg, False).startswith("sum")
    monkeypatch.setattr(probe, "floor_call", bad_scale)
    assert "scales all 1.0: False" in probe.check_floor(PER, x, cfg, True)


@pytest.mark.parametrize("op", [PER, SILU])
def test_cast_floor_moves_the_quant_bytes(op):
    m, k = 6, 256
    x = torch.randn(m, 2 * k if op == SILU else k, generator=torch.Generator().manual_seed(9)).to(torch.bfloat16)
    q = torch.full((m, k), float("nan"), dtype=torch.float8_e4m3fn)
    probe.cast_fn(op, x, q)()
    assert not bool(torch.isnan(q.float()).any())  # every byte written (|x| < 448: no NaN of its own)
    src = x.view(torch.float32) if op == SILU else x  # SiLU·mul: a bf16 pair read as one fp32
    assert torch.equal(q.view(torch.uint8), src.float().to(torch.float8_e4m3fn).view(torch.uint8))
    assert probe.check_cast(op, x) == ""
    # what the cast moves: per_token 2 B read + 1 B written per element; SiLU·mul 4 B read per q byte; no scales
    assert probe.bytes_moved(op, "cast", m, k, 2) == (m * k * 2 if op == PER else m * k * 4) + m * k
    assert probe.bytes_moved(op, "stream_x", m, k, 2) == probe.bytes_moved(op, "cast", m, k, 2) + 4 * m * 2


def test_floor_call_rejects_a_strided_x():
    x = _input(PER, 4, 256, seed=1).t()
    with pytest.raises(ValueError, match="unit column stride"):
        probe.floor_call(PER, x, probe.FLOOR_CFGS[0])


def test_named_quant_variants_parse_and_refuse():
    assert probe.named("default") == (None, None)
    assert probe.named("q32x8x2s") == ((32, 8, 2), dict(stream_loads=True, stream_stores=True))
    assert probe.named("q16x4x1") == ((16, 4, 1), None)  # no suffix: the committed knobs
    assert probe.named("q16x4x1n_AA") == ((16, 4, 1), {})
    assert probe.named("q8x4x4l")[1] == dict(stream_loads=True) and probe.named("q8x4x4t")[1] == dict(stream_stores=True)
    for bad in ("bogus", "q8x4", "q8x4x4z", "q8x4x4s_BB"):
        with pytest.raises(ValueError, match="unknown variant"):
            probe.named(bad)
