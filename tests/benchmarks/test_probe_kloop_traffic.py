"""benchmarks/probe_kloop_traffic.py on the CPU: argument checks and one variant's sm_90a build (no GPU)."""

import pytest

from benchmarks import probe_kloop_traffic as P


def test_odd_iters_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        P.main(["--iters", "3"])
    assert e.value.code == 2
    assert "--iters must be even" in capsys.readouterr().err


def _ptx(name: str) -> str:
    # the build needs a process that never ran Triton's interpreter (the test session's conftest sets it)
    from tests.kernels.gluon_sm90 import ptx_in_fresh_process

    return ptx_in_fresh_process("benchmarks.probe_kloop_traffic", "compile_variant", name)


def test_ring_tma16_builds_for_sm90():
    # the variant with the most traffic: 2 consumer partitions × 2 PIPE sites × 4 k32 wgmmas, the producer's three TMA
    # sites (A, B, the side buffer), nothing spilled and nothing serialized
    r = P.build_report("ring+tma16", _ptx("ring+tma16"))
    assert r["rc"] == 0 and r["wgmma"] == 16 and r["tma"] == 3
    assert r["spills"] and all(x == "0" for x in r["spills"]) and not r["serialized"]
