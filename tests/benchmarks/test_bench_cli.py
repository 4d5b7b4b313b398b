"""Benchmark command lines (session 18 tester findings): bad values are one argparse line naming the option (exit 2),
an interrupted or failed run keeps an existing ``--out``, rows carry the git commit and ``dry``, a failed suite is a
non-zero exit, and the suite modules that are not scripts say so for ``--help``.

All in-process (each script's ``main`` with a patched ``sys.argv``; measuring functions replaced by stubs), so the
whole file runs in a few seconds on the CPU box.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from tritonseek.benchrun import StagedRows, git_commit, name_list, out_file, positive_float, positive_int_list

ROOT = Path(__file__).resolve().parents[2]
OLD = '{"suite": "old", "kept": true}\n'


# ---------------------------------------------------------------------------------------------- benchrun helpers
def test_staged_rows_keeps_the_old_file_until_the_run_ends(tmp_path):
    out = tmp_path / "rows.jsonl"
    out.write_text(OLD)
    with pytest.raises(KeyboardInterrupt):
        with StagedRows(out) as f:
            f.write('{"row": 1}\n')
            raise KeyboardInterrupt
    assert out.read_text() == OLD  # interrupted: old file kept, the measured row beside it
    assert (tmp_path / "rows.jsonl.partial").read_text() == '{"row": 1}\n'
    with StagedRows(out):
        pass  # measured nothing: nothing touched
    assert out.read_text() == OLD
    with StagedRows(out) as f:
        f.write('{"row": 2}\n')
    assert out.read_text() == '{"row": 2}\n' and not (tmp_path / "rows.jsonl.partial").exists()


def test_staged_rows_writes_a_new_file_row_by_row(tmp_path):
    """No old file to keep (a GPU job's fresh $OUT): each row lands in the file itself, so a run stopped by its time
    limit keeps what it measured where the job looks for it."""
    out = tmp_path / "rows.jsonl"
    with pytest.raises(KeyboardInterrupt):
        with StagedRows(out) as f:
            f.write('{"row": 1}\n')
            assert out.read_text() == '{"row": 1}\n'
            raise KeyboardInterrupt
    assert out.read_text() == '{"row": 1}\n' and not (tmp_path / "rows.jsonl.partial").exists()


@pytest.mark.parametrize("fn, text", [(positive_float, "nan"), (positive_float, "inf"), (positive_float, "-5"),
                                      (positive_float, "0"), (positive_float, "abc"), (positive_int_list, "1,0"),
                                      (positive_int_list, "-1"), (positive_int_list, "abc"), (positive_int_list, ""),
                                      (name_list(("a", "b")), "a,bogus"), (name_list(("a", "b")), ","),
                                      (out_file, "/nonexistent_dir_h7/x.jsonl")])
def test_arg_types_refuse(fn, text):
    with pytest.raises(argparse.ArgumentTypeError):
        fn(text)


def test_arg_types_accept(tmp_path):
    assert positive_float("2.5") == 2.5 and positive_int_list("1, 16,64") == (1, 16, 64)
    assert name_list(("a", "b"))("b,a") == ["b", "a"] and out_file(str(tmp_path / "x")) == str(tmp_path / "x")


# ---------------------------------------------------------------------------------------------- argparse level
@pytest.fixture(scope="module")
def scripts():
    import importlib

    names = ("bench_mla", "bench_mla_small", "bench_moe", "bench_mtp", "bench_mla_absorb", "bench_gemm_decode",
             "bench_decode_chain", "probe_decode_small", "bench_fused_small", "bench_cold_start")
    return {n: importlib.import_module(f"benchmarks.{n}") for n in names}


BAD = [
    ("bench_mla", ["--budget-s", "nan"], "--budget-s"), ("bench_mla", ["--budget-s", "-5"], "--budget-s"),
    ("bench_mla", ["--sk", "-1"], "--sk"), ("bench_mla", ["--max-rows", "0"], "--max-rows"),
    ("bench_mla", ["--out", "/nonexistent_dir_h7/x.jsonl"], "--out"), ("bench_mla", ["--batch", "0"], "--batch"),
    ("bench_mla_small", ["--heads", "0"], "--heads"), ("bench_mla_small", ["--variants", "bogus"], "--variants"),
    ("bench_mla_small", ["--cases", "bogus"], "--cases"), ("bench_mla_small", ["--cases", "1:0:1"], "--cases"),
    ("bench_mla_small", ["--budget-s", "inf"], "--budget-s"),
    ("bench_moe", ["--suites", "bogus"], "--suites"), ("bench_moe", ["--budget-s", "0"], "--budget-s"),
    ("bench_moe", ["--layer-tokens", "1,x"], "--layer-tokens"), ("bench_moe", ["--decode-nk", "4096"], "--decode-nk"),
    ("bench_moe", ["--layer-variants", "bogus"], "--layer-variants"), ("bench_moe", ["--decode-cands", "99"], "--decode-cands"),
    ("bench_mla", ["--hs", "16y1"], "--hs"), ("bench_mla", ["--gluon-extra", "{bad"], "--gluon-extra"),
    ("bench_mtp", ["--dry", "--suite", "bogus"], "--suite"), ("bench_mtp", ["--ks", "0"], "--ks"),
    ("bench_mtp", ["--batches", "-1"], "--batches"), ("bench_mtp", ["--batches", "abc"], "--batches"),
    ("bench_mla_absorb", ["--tokens", "0"], "--tokens"),
    ("bench_gemm_decode", ["--models", "bogus"], "--models"), ("bench_gemm_decode", ["--ms", "0"], "--ms"),
    ("bench_gemm_decode", ["--min-ms", "nan"], "--min-ms"), ("bench_decode_chain", ["--tokens", "1,-8"], "--tokens"),
    ("probe_decode_small", ["--only", "bogus"], "--only"), ("bench_fused_small", ["--ops", "bogus"], "--ops"),
    ("bench_cold_start", ["--max-batch", "0"], "--max-batch"),
]


@pytest.mark.parametrize("script, argv, option", BAD, ids=[f"{s}{' '.join(a)}" for s, a, _ in BAD])
def test_bad_values_exit_2_naming_the_option(scripts, monkeypatch, capsys, tmp_path, script, argv, option):
    out = tmp_path / "rows.jsonl"
    out.write_text(OLD)
    if "--out" not in argv:
        argv = [*argv, "--out", str(out)]
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    with pytest.raises(SystemExit) as e:
        scripts[script].main()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"{script}.py: error: argument {option}"), err[-1]
    assert out.read_text() == OLD


# ---------------------------------------------------------------------------------------------- bench_mla --out
@pytest.fixture
def bench_mla(scripts, monkeypatch):
    bm = scripts["bench_mla"]
    for name in ("BATCH", "MAX_ROWS", "GLUON_VARIANT", "DECODE_SK", "ONLY_HS", "ONLY_VARLEN", "GLUON_EXTRA", "NO_PEER",
                 "PRECOMPILE_TIMEOUT_S"):
        monkeypatch.setattr(bm, name, getattr(bm, name))  # main() rebinds them: restored after the test
    # the real _dry_mode shrinks module tables for the CPU run; here only the GPU name is needed (no kernel runs)
    monkeypatch.setattr(bm, "_dry_mode", lambda: monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "cpu-dry"))
    return bm


def _decode_stub(stop=None):
    def bench_decode(env, rows, out_f, winners, deadline):
        row = dict(suite="mla_metadata", case={}, **env)  # a suite the summary table skips
        rows.append(row)
        out_f.write(json.dumps(row) + "\n")
        if stop is not None:
            raise stop
    return bench_decode


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), RuntimeError("kernel failed")], ids=["ctrl-c", "error"])
def test_bench_mla_interrupted_run_keeps_the_old_file(bench_mla, monkeypatch, tmp_path, stop):
    """Ctrl-C replaced 2 old rows by 11 partial ones (--out opened with "w" up front). Now the old file stays and the
    rows measured go to OUT.partial; the empty winners dict does not replace an old winners file either."""
    out, win = tmp_path / "rows.jsonl", tmp_path / "w.json"
    out.write_text(OLD)
    win.write_text('{"old": 1}')
    monkeypatch.setattr(bench_mla, "bench_decode", _decode_stub(stop))
    monkeypatch.setattr(sys, "argv", ["bench_mla.py", "--dry", "--suite", "mla_decode", "--out", str(out),
                                      "--winners", str(win)])
    with pytest.raises(type(stop)):
        bench_mla.main()
    assert out.read_text() == OLD and win.read_text() == '{"old": 1}'
    assert len((tmp_path / "rows.jsonl.partial").read_text().splitlines()) == 1


def test_bench_mla_dry_rows_carry_dry_and_the_commit(bench_mla, monkeypatch, tmp_path):
    """--dry rows said commit "unknown" in a git checkout and had no dry field."""
    out = tmp_path / "rows.jsonl"
    out.write_text(OLD)
    monkeypatch.delenv("TRITONSEEK_COMMIT", raising=False)
    monkeypatch.setattr(bench_mla, "bench_decode", _decode_stub())
    monkeypatch.setattr(sys, "argv", ["bench_mla.py", "--dry", "--suite", "mla_decode", "--out", str(out),
                                      "--winners", str(tmp_path / "w.json")])
    bench_mla.main()
    (row,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert row["dry"] is True and row["commit"] == git_commit() != "unknown" and row["gpu"] == "cpu-dry"


def test_bench_mla_suite_none_keeps_the_old_file(bench_mla, monkeypatch, tmp_path):
    out = tmp_path / "rows.jsonl"
    out.write_text(OLD)
    monkeypatch.setattr(sys, "argv", ["bench_mla.py", "--dry", "--suite", "none", "--out", str(out),
                                      "--winners", str(tmp_path / "w.json")])
    bench_mla.main()
    assert out.read_text() == OLD


# ---------------------------------------------------------------------------------------------- bench_moe
def test_bench_moe_failed_suite_exits_1_and_keeps_the_others_rows(scripts, monkeypatch, tmp_path):
    """A suite that raised printed a traceback and the run exited 0; now the others still run and the exit status is
    1. Their rows go to OUT.partial: a failed run keeps the old --out (it replaced it, session 18). Rows carry dry and
    the commit."""
    bm = scripts["bench_moe"]
    out = tmp_path / "rows.jsonl"
    out.write_text(OLD)

    def broken(cx):
        raise RuntimeError("kernel failed")

    monkeypatch.setitem(bm.SUITES, "moe_gate", broken)
    monkeypatch.setitem(bm.SUITES, "moe_permute", lambda cx: cx.row("moe_permute", {"T": 1}, 1.0, None))
    monkeypatch.setattr(sys, "argv", ["bench_moe.py", "--dry", "--suites", "moe_gate,moe_permute", "--out", str(out),
                                      "--winners", str(tmp_path / "w.json")])
    monkeypatch.delenv("TRITONSEEK_COMMIT", raising=False)
    assert bm.main() == 1 and out.read_text() == OLD
    (row,) = [json.loads(x) for x in (tmp_path / "rows.jsonl.partial").read_text().splitlines()]
    assert row["suite"] == "moe_permute" and row["dry"] is True and row["commit"] == git_commit()


def test_bench_moe_dry_refuses_compiled_kernels(scripts, monkeypatch, tmp_path, capsys):
    """--dry with the interpreter off (TRITON_INTERPRET=0) ran every suite into a traceback and exited 0."""
    bm = scripts["bench_moe"]
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(sys, "argv", ["bench_moe.py", "--dry", "--out", str(tmp_path / "rows.jsonl")])
    with pytest.raises(SystemExit) as e:
        bm.main()
    assert e.value.code == 2 and "TRITON_INTERPRET" in capsys.readouterr().err


def test_bench_moe_help_shows_the_out_default(scripts, monkeypatch, capsys):
    """--dry writes moe_rows.jsonl into the current directory unless --out says otherwise, and --help did not say so
    (tester2 s20 #10)."""
    monkeypatch.setattr(sys, "argv", ["bench_moe.py", "--help"])
    with pytest.raises(SystemExit) as e:
        scripts["bench_moe"].main()
    text = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0
    assert "default: moe_rows.jsonl, in the current directory" in text and "default: moe_winners.json" in text


# ---------------------------------------------------------------------------------------------- suite modules
@pytest.mark.parametrize("name, runner", [("bench_moe_layer", "bench_moe.py"), ("bench_moe_routing", "bench_moe.py"),
                                          ("bench_moe_grouped", "bench_moe.py"),
                                          ("bench_mla_prefill", "bench_mla.py"), ("timing", "bench_*.py"),
                                          ("v3_slice", "bench_e2e.py")])
def test_suite_modules_answer_help(monkeypatch, capsys, name, runner):
    """`python benchmarks/bench_moe_layer.py --help` crashed (no module 'benchmarks'), bench_mla_prefill printed
    nothing: these modules hold suites of another script and now say which one (exit 0 for --help, 2 otherwise)."""
    for argv, code in ((["--help"], 0), ([], 2)):
        monkeypatch.setattr(sys, "argv", [name + ".py", *argv])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(str(ROOT / "benchmarks" / f"{name}.py"), run_name="__main__")
        assert e.value.code == code and runner in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- row commit
def test_no_script_reads_the_commit_from_the_environment_only():
    """Rows said commit "unknown" in a git checkout when TRITONSEEK_COMMIT was unset: every script takes
    benchrun.git_commit() (TRITONSEEK_COMMIT, else git HEAD of the imported package)."""
    bad = [p.name for p in sorted((ROOT / "benchmarks").glob("*.py"))
           if any(f'os.environ.get("TRITONSEEK_COMMIT", {d})' in p.read_text() for d in ('"unknown"', '""'))]
    assert bad == []
