"""The tl launch config that benchmark rows record (``grouped_gemm_masked.tl_launch_config``) is the one the launcher
runs: the table's entry adjusted to the grid and K on CUDA; and K2 is named as a tl-only key for kernel='ws'."""

import pytest
import torch

from tritonseek.kernels import grouped_gemm as GG
from tritonseek.kernels import grouped_gemm_masked as GM
from tritonseek.kernels.grouped_gemm_masked_choice import _check_ws_config_keys


def test_cpu_config_is_the_table_entry():
    for E, M_max, N, K, em, mag in [(256, 1, 7168, 2048, 1, 8), (4, 256, 4096, 7168, 256, None), (8, 16, 512, 256, 2, 4)]:
        assert GM.tl_launch_config(torch.device("cpu"), E, M_max, N, K, em, mag) == \
            GG.get_config("masked", min(em, M_max), N, K)


def test_cuda_config_follows_grid_and_k(monkeypatch):
    # 132 SMs (H200): T=1 decode at (7168, 2048) launches 8 slots x 56 n-tiles = 448 programs (> 2, <= 4 per SM): 3
    # stages at 128 registers; at (4096, 7168) 8 x 32 = 256 programs and 56 K blocks: K2 with 3 stages
    monkeypatch.setattr(GG, "_num_programs", lambda dev: 132)
    cuda = torch.device("cuda")
    base = GG.get_config("masked", 1, 7168, 2048)
    got = GM.tl_launch_config(cuda, 256, 1, 7168, 2048, 1, 8)
    assert got == dict(base, num_stages=3, MAXNREG=128)
    got = GM.tl_launch_config(cuda, 256, 1, 4096, 7168, 1, 8)
    assert got == dict(GG.get_config("masked", 1, 4096, 7168), num_stages=3, K2=True)
    # without the bound every one of the 256 groups gets a slot: many waves, the 6-stage table entry stays (K2 aside)
    got = GM.tl_launch_config(cuda, 256, 1, 7168, 2048, 1, None)
    assert got == base


def test_k2_is_a_tl_only_key():
    with pytest.raises(ValueError, match="belongs to the tl kernel"):
        _check_ws_config_keys({"K2": True})
    _check_ws_config_keys({"NUM_STAGES": 3})
