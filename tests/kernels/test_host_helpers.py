"""kernels/_host: the host helpers the launchers use instead of Triton's constexpr functions give Triton's answers."""

import numpy as np
import pytest
import triton

from tritonseek.kernels._host import cdiv, next_pow2, nvmma_layout


def test_cdiv_matches_triton():
    for a in range(-300, 5000, 7):
        for b in (1, 2, 3, 16, 127, 128, 129, 4096):
            assert cdiv(a, b) == triton.cdiv(a, b), (a, b)
    assert cdiv(np.int64(1000), 128) == 8


def test_next_pow2_matches_triton():
    for n in range(-8, 70000):
        assert next_pow2(n) == triton.next_power_of_2(n), n
    assert next_pow2(np.int32(17)) == 32 and type(next_pow2(np.int32(17))) is int
    with pytest.raises(TypeError):
        next_pow2(3.0)


def test_nvmma_layout_cached_and_equal():
    gl = pytest.importorskip("triton.experimental.gluon.language")
    first = nvmma_layout([128, 128], gl.float8e4nv)
    assert nvmma_layout((128, 128), gl.float8e4nv) is first  # one instance per (shape, dtype)
    assert first == gl.NVMMASharedLayout.get_default_for([128, 128], gl.float8e4nv)
    assert nvmma_layout([64, 128], gl.bfloat16) == gl.NVMMASharedLayout.get_default_for([64, 128], gl.bfloat16)


def test_config_key_separates_types():
    from tritonseek.kernels._host import config_key

    assert config_key({"A": 1, "B": True}) == config_key({"B": True, "A": 1})  # key order does not matter
    assert config_key({"A": 1}) != config_key({"A": True}) != config_key({"A": 1.0})
    assert config_key({"A": np.int64(1)}) != config_key({"A": 1})
    assert config_key({"A": [1]}) is None and config_key([("A", 1)]) is None and config_key({1: 0, "A": 0}) is None


def test_checked_once_skips_only_configs_that_passed():
    from tritonseek.kernels._host import checked_once

    seen = []

    @checked_once
    def check(cfg):
        seen.append(dict(cfg))
        if cfg.get("A") == -1:
            raise ValueError("A")

    check({"A": 1})
    check({"A": 1})
    assert len(seen) == 1
    check({"A": True})  # another type: checked
    assert len(seen) == 2
    for _ in range(2):
        with pytest.raises(ValueError):
            check({"A": -1})  # a failing config raises every time
    assert len(seen) == 4
    check({"A": [1]})  # no key: checked each time
    check({"A": [1]})
    assert len(seen) == 6
