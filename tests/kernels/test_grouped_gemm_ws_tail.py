"""TAIL_SK of the masked warp-specialized grouped FP8 GEMM (grouped_gemm_ws_tail: the last wave split in K, pairwise
deterministic fix-up) against the dequantized fp32 reference; the helpers and tolerance of test_grouped_gemm_ws.py
(calc_diff < 1e-3, rows past masked_m left NaN, NaN/inf garbage past masked_m must not leak).

On the CPU: the sm_90a build (no GPU) and the launcher's grid rule and errors; the numerics on the H200 (gpu marker).
"""

from __future__ import annotations

import re
import types

import pytest
import torch

from tests.kernels.gluon_sm90 import ptx_in_fresh_process, ptxas_report
from tests.kernels.test_grouped_gemm_ws import _check_masked, _fp8, _weights, compile_sm90  # noqa: F401
from tritonseek.kernels import grouped_gemm_ws as W
from tritonseek.kernels.grouped_gemm_ws import grouped_fp8_gemm_masked_ws
from tritonseek.kernels.reference.moe import calc_diff, grouped_fp8_gemm_masked_ref


def test_grouped_ws_tail_sk_compiles_for_sm90():
    # TAIL_SK (grouped_gemm_ws_tail): the same wgmma sites as the masked default (2 partitions x 3 x 4 k32), the
    # pairwise fix-up's release (one atom per partition) and acquire spin (one ld.acquire per partition), no spills,
    # the wgmmas still asynchronous
    cfg = dict(W.grouped_ws_config("masked", 1024, 7168, 2048), TAIL_SK=True)
    ptx = ptx_in_fresh_process(__name__, "compile_sm90", cfg, True, torch.bfloat16, True, 256, False, True)
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3") == 4 * 3 * 2
    assert ptx.count("ld.acquire.gpu") == 2 and ptx.count("atom.") == 2
    assert "cp.async.bulk.tensor.2d.global.shared::cta" in ptx
    report = ptxas_report(ptx)
    assert "C7514" not in report and "C7508" not in report, report
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert spills and all(x == ("0", "0") for x in spills), report


def test_grouped_ws_tail_sk_grid_rule(monkeypatch):
    # one program per SM where the last wave of the M_max tiles holds 1 .. SMs / 2 tiles (DeepGEMM's masked
    # (7168, 2048) anchors: 448 tiles = 3 x 132 + 52), BALANCE's grid elsewhere ((4096, 7168): 256 = 132 + 124 ->
    # 128 programs); the contiguous layout ignores it
    monkeypatch.setattr(W, "_num_sms", lambda index: 132)
    t = types.SimpleNamespace(device=torch.device("cuda", 0))  # only its device index is read
    on = dict(W.grouped_ws_config("masked", 1024, 7168, 2048), TAIL_SK=True)
    off = W.grouped_ws_config("masked", 1024, 7168, 2048)
    assert W._programs(t, 448, on, masked=True) == 132
    assert W._programs(t, 448, off, masked=True) == 112
    assert W._programs(t, 448, on) == 112
    assert W._programs(t, 256, on, masked=True) == 128
    assert W._programs(t, 132 + 66, on, masked=True) == 132 and W._programs(t, 132 + 67, on, masked=True) == 100
    assert W._programs(t, 100, on, masked=True) == 100  # one wave: nothing to split


# TAIL_SK (grouped_gemm_ws_tail): the last wave split in K when it holds 1 .. programs / 2 tiles, decided on the device
# from masked_m. Cases (132 SMs): 1x1024 (7168, 2048) 448 tiles = 3 x 132 + 52 (split), masked_m 600 -> 280 tiles
# (2 rounds + 16, split), 200 -> 112 (one wave of 112 > 66: whole tiles), 100 -> 56 (every tile split, no whole
# round); 8 groups in M_max 256 with 0 / 1 / 127 / 128 / 129 / 256 rows (host grid: BALANCE 128; device: 392 tiles =
# 3 x 128 + 8, split); K = 128 (one K block: the first half is empty) and K = 384 (halves of 1 and 2 blocks)
@pytest.mark.gpu
@pytest.mark.parametrize("masked_m,M_max,N,K", [
    ([1024], 1024, 7168, 2048), ([600], 1024, 7168, 2048), ([200], 1024, 7168, 2048), ([100], 1024, 7168, 2048),
    ([512, 511], 512, 7168, 2048), ([256, 0, 129, 1], 256, 7168, 2048),
    ([0, 1, 127, 128, 129, 256, 0, 0], 256, 7168, 2048), ([256, 129], 256, 256, 128), ([0, 1, 64, 129, 130], 130, 200, 384),
])
def test_masked_ws_tail_sk_gpu(device, masked_m, M_max, N, K):
    _check_masked(masked_m, M_max, N, K, device, seed=len(masked_m) + K, config=dict(TAIL_SK=True))


# TAIL_AT: the storing program's share of K in eighths (K = 2048: 2 / 6 / 14 of 16 blocks; K = 384: 0 or 2 of 3)
@pytest.mark.gpu
@pytest.mark.parametrize("at", [1, 3, 7])
@pytest.mark.parametrize("masked_m,M_max,N,K", [([1024], 1024, 7168, 2048), ([0, 1, 64, 129, 130], 130, 200, 384)])
def test_masked_ws_tail_sk_split_point_gpu(device, at, masked_m, M_max, N, K):
    _check_masked(masked_m, M_max, N, K, device, seed=at, config=dict(TAIL_SK=True, TAIL_AT=at))


@pytest.mark.gpu
def test_masked_ws_tail_sk_deterministic_and_rearmed_gpu(device):
    # two launches bitwise equal (the split tiles' halves are summed in a fixed order), and the cached flags are all
    # 0 again after each (re-armed by the waiting programs)
    from tritonseek.kernels import fp8_gemm_small as S

    g = torch.Generator(device=device).manual_seed(3)
    E, M_max, N, K = 1, 1024, 7168, 2048
    b, bs = _weights(E, N, K, g, device)
    a = _fp8((E, M_max, K), g, device)
    a_s = torch.rand(E, M_max, K // 128, generator=g, device=device) + 0.25
    mm = torch.tensor([M_max], dtype=torch.int32, device=device)
    outs = []
    for _ in range(2):
        out = torch.full((E, M_max, N), float("nan"), dtype=torch.bfloat16, device=device)
        grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out=out, config=dict(TAIL_SK=True))
        torch.cuda.synchronize()
        assert all(int(buf.abs().sum()) == 0 for buf in S._counters.values())
        outs.append(out)
    assert torch.equal(outs[0].view(torch.int16), outs[1].view(torch.int16))
    ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm, out_dtype=torch.float32)
    assert calc_diff(outs[0].float().view(-1, N), ref.view(-1, N)) < 1e-3


@pytest.mark.gpu
def test_masked_ws_tail_sk_graph_replay_gpu(device):
    # captured once (host grid: 132 programs for 448 M_max tiles), replayed with masked_m that split the last wave or
    # not and with new A each time: a flag left set by one replay would let the next one read a stale partial
    g = torch.Generator(device=device).manual_seed(12)
    E, M_max, N, K = 4, 256, 7168, 2048
    b, bs = _weights(E, N, K, g, device)
    a = _fp8((E, M_max, K), g, device)
    a_s = torch.rand(E, M_max, K // 128, generator=g, device=device) + 0.25
    mm = torch.full((E,), M_max, dtype=torch.int32, device=device)
    out = torch.zeros(E, M_max, N, dtype=torch.bfloat16, device=device)
    cfg = dict(TAIL_SK=True)
    grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out=out, config=cfg)  # compile outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        grouped_fp8_gemm_masked_ws(a, a_s, b, bs, mm, out=out, config=cfg)
    for i, vals in enumerate(([256] * 4, [256, 256, 256, 0], [100, 0, 0, 0], [0] * 4, [256, 129, 1, 0], [256] * 4)):
        mm.copy_(torch.tensor(vals, dtype=torch.int32))
        a.copy_(_fp8((E, M_max, K), torch.Generator(device=device).manual_seed(100 + i), device))
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        ref = grouped_fp8_gemm_masked_ref(a, a_s, b, bs, mm, out_dtype=torch.float32)
        valid = torch.arange(M_max, device=device)[None, :] < mm[:, None]
        assert torch.isnan(out.float()[~valid]).all()
        if valid.any():
            assert calc_diff(out.float()[valid], ref[valid]) < 1e-3, vals
