"""Benchmark scripts without a GPU (tester, s19): they ended in "AssertionError: Torch not compiled with CUDA enabled"
tracebacks (bench_gemm_decode in "0 active drivers", after its finally had created an empty rows file). Now each
prints one line "<script>: needs a CUDA GPU" and exits 2 before writing anything (``benchrun.require_cuda``);
``--dry`` runs are unaffected. In-process, with ``torch.cuda.is_available`` patched to False so the test means the
same on a GPU machine; nothing is launched.
"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

OLD = '{"suite": "old", "kept": true}\n'

# script, the option naming its rows file (None: the script has none)
SCRIPTS = [("bench_fp8_gemm", "--out"), ("bench_grouped_ws", "--out"), ("bench_mla", "--out"),
           ("bench_mla_absorb", "--out"), ("bench_mla_small", "--out"), ("bench_moe", "--out"), ("bench_mtp", "--out"),
           ("probe_decode_small", "--out"), ("probe_fp8_gemm_ab", "--rows"), ("probe_wgmma_fp8", None),
           ("bench_gemm_decode", "--out"),
           # tester 2, s19: bench_e2e built the full-width slice on the CPU (5.6 GB in 40 s), check_v3_parity ran
           # silently, profile_mtp_step ended in a ValueError traceback; the next three exited 1, bench_e2e_tp 0
           ("bench_e2e", "--out"), ("check_v3_parity", "--out"), ("profile_mtp_step", "--out"),
           ("bench_cold_start", "--out"), ("bench_decode_chain", "--out"), ("bench_fused_small", "--out"),
           ("bench_e2e_tp", "--out")]


@pytest.mark.parametrize("script, out_opt", SCRIPTS, ids=[s for s, _ in SCRIPTS])
def test_without_a_gpu_one_line_exit_2_nothing_written(monkeypatch, capsys, tmp_path, script, out_opt):
    mod = importlib.import_module(f"benchmarks.{script}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)  # default file names land here if anything is written
    out = tmp_path / "rows.jsonl"
    out.write_text(OLD)
    argv = [out_opt, str(out)] if out_opt else []
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    with pytest.raises(SystemExit) as e:
        mod.main(*([[]] if script == "probe_wgmma_fp8" else []))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{script}: needs a CUDA GPU (torch sees none)"], err
    assert out.read_text() == OLD and sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


class _Built(BaseException):
    """Raised by the stubbed slice builder: the script got past its GPU check (a BaseException, so no script's
    ``except Exception`` swallows it)."""


@pytest.mark.parametrize("script", ["bench_e2e", "check_v3_parity"])
def test_slice_scripts_run_on_the_cpu_only_when_asked(monkeypatch, capsys, script):
    """A CPU run is asked for with --device cpu (the documented --tiny --device cpu) and goes on to build the slice;
    the default device, or an explicit --device cuda, without a GPU is the one line, exit 2, before any building."""
    mod = importlib.import_module(f"benchmarks.{script}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def build_slice(*a, **k):
        raise _Built(k.get("device"))

    monkeypatch.setattr(mod, "build_slice", build_slice)
    with pytest.raises(_Built) as b:
        mod.main(["--tiny", "--device", "cpu"])
    assert str(b.value) == "cpu"
    for argv in ([], ["--tiny"], ["--device", "cuda:0"]):
        with pytest.raises(SystemExit) as e:
            mod.main(argv)
        assert e.value.code == 2
        assert capsys.readouterr().err.strip() == f"{script}: needs a CUDA GPU (torch sees none)"


def test_bench_e2e_tp_on_one_gpu_still_skips_with_exit_0(monkeypatch, capsys):
    """`tritonseek bench` runs every suite and stops at a failing one: on one GPU e2e_tp keeps its skip line (exit 0);
    only a machine with no GPU at all exits 2 (above)."""
    mod = importlib.import_module("benchmarks.bench_e2e_tp")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(mod, "spawn", lambda *a, **k: pytest.fail("spawned workers on one GPU"))
    assert mod.main([]) is None
    assert "e2e_tp: skipped, needs 2 CUDA GPUs and 1 are visible" in capsys.readouterr().out


def test_bench_gemm_decode_tiny_on_cpu_needs_the_interpreter(monkeypatch, capsys, tmp_path):
    """--models tiny is the script's CPU run; without TRITON_INTERPRET it reached Triton's "0 active drivers"."""
    mod = importlib.import_module("benchmarks.bench_gemm_decode")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench_gemm_decode.py", "--models", "tiny"])
    with pytest.raises(SystemExit) as e:
        mod.main()
    assert e.value.code == 2 and "TRITON_INTERPRET=1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- --dry winners
def test_bench_moe_dry_never_writes_winners(monkeypatch, tmp_path, capsys):
    """bench_moe.py --dry replaced an existing ./moe_winners.json with CPU-interpreter winners (its rows said dry, the
    winners file did not). A finished --dry run now writes no winners file, neither the default nor a given one."""
    bm = importlib.import_module("benchmarks.bench_moe")
    monkeypatch.chdir(tmp_path)
    default = tmp_path / "moe_winners.json"
    default.write_text('{"real": 1}')

    def sweep(cx):
        cx.winners["k"] = {"BLOCK_M": 64}
        cx.row("x", {"n": 1}, 1.0, None)

    monkeypatch.setitem(bm.SUITES, "sweep", sweep)
    for extra in ([], ["--winners", str(tmp_path / "given.json")]):
        monkeypatch.setattr(sys, "argv", ["bench_moe.py", "--dry", "--suites", "sweep", "--out",
                                          str(tmp_path / "rows.jsonl"), *extra])
        assert bm.main() == 0
        assert "winners are not written" in capsys.readouterr().err
    assert default.read_text() == '{"real": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moe_winners.json", "rows.jsonl"]


def test_bench_mla_dry_sweep_never_writes_winners(monkeypatch, tmp_path, capsys):
    bm = importlib.import_module("benchmarks.bench_mla")
    for name in ("BATCH", "MAX_ROWS", "GLUON_VARIANT", "DECODE_SK", "ONLY_HS", "ONLY_VARLEN", "GLUON_EXTRA", "NO_PEER",
                 "PRECOMPILE_TIMEOUT_S"):
        monkeypatch.setattr(bm, name, getattr(bm, name))  # main() rebinds them
    monkeypatch.setattr(bm, "_dry_mode", lambda: monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "dry"))
    monkeypatch.setattr(bm, "precompile_all", lambda prefill: None)
    monkeypatch.setattr(bm, "sweep_decode", lambda winners, deadline: winners.update(decode_x={"BLOCK_N": 64}))
    monkeypatch.setattr(bm, "bench_decode", lambda env, rows, out_f, winners, deadline: None)
    monkeypatch.chdir(tmp_path)
    win = tmp_path / "mla_winners.json"
    win.write_text('{"real": 1}')
    monkeypatch.setattr(sys, "argv", ["bench_mla.py", "--dry", "--sweep", "--suite", "mla_decode", "--out",
                                      str(tmp_path / "rows.jsonl")])
    bm.main()
    assert "winners are not written" in capsys.readouterr().err
    assert win.read_text() == '{"real": 1}' and sorted(p.name for p in tmp_path.iterdir()) == ["mla_winners.json"]


# ---------------------------------------------------------------------------------------------- kernel-time rows
def test_bench_fp8_gemm_kernel_fields_are_marked_unverified(monkeypatch):
    """us_kernel / tflops_kernel / ratio_vs_peer_kernel come from benchmarks.timing.kernel_time_us, which its own
    docstring does not trust alone; rows carrying them now say so (tester, s19). Profiler stubbed: 10 µs ours,
    12 µs the peer."""
    from benchmarks import bench_fp8_gemm, timing

    monkeypatch.setattr(timing, "kernel_time_us", lambda fns: 10.0 if fns == "ours" else 12.0)
    got = bench_fp8_gemm.kernel_fields("ours", "peer", 2e9)
    assert got == dict(us_kernel=10.0, kernel_time_unverified=True, tflops_kernel=200.0, peer_us_kernel=12.0,
                       peer_tflops_kernel=166.7, ratio_vs_peer_kernel=1.2)
    monkeypatch.setattr(timing, "kernel_time_us", lambda fns: 1 / 0)
    assert set(bench_fp8_gemm.kernel_fields("ours", None, 2e9)) == {"kernel_time_note"}  # no kernel figures, no flag
