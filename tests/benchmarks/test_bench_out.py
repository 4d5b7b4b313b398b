"""``--out`` of the benchmark scripts: a run that fails keeps an existing file; rows carry dry and the git commit.

Session 18 (testers' finding): ``bench_mtp.py --suite spec_verify --dry --out F`` without TRITON_INTERPRET=1 emptied F,
then failed in its first kernel call (the file was opened with mode "w" before any work).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tritonseek.benchrun import RowsFile, git_commit, write_rows

ROOT = Path(__file__).resolve().parents[2]
OLD = '{"suite": "old", "kept": true}\n'


def test_bench_mtp_dry_turns_the_interpreter_on_itself(tmp_path):
    """Without TRITON_INTERPRET in the environment --dry ran the kernels compiled for a GPU (ValueError) after emptying
    --out. Now the script turns the interpreter on before triton loads: one greedy case, rows replace the old file."""
    out = tmp_path / "rows.jsonl"
    out.write_text(OLD)
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITONSEEK_TEST_DEVICE")}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_mtp.py"), "--suite", "spec_verify", "--dry",
                        "--batches", "1", "--ks", "1", "--ops", "greedy", "--out", str(out)],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["suite"], x["case"]["op"], x["correct"], x["dry"]) for x in rows] == [("spec_verify", "greedy", True, True)]


@pytest.fixture
def bench_mtp(monkeypatch):
    from benchmarks import bench_mtp as bm

    for name in ("DEVICE", "VOCAB", "BATCHES", "KS", "SWEEP_CANDIDATES", "SWEEP_CASES", "OPS", "SAMPLER_OPS"):
        monkeypatch.setattr(bm, name, getattr(bm, name))  # main() rebinds them (--dry): restored after the test
    return bm


def test_bench_mtp_failing_run_keeps_the_old_file(bench_mtp, monkeypatch, tmp_path):
    """A run that fails before its first row leaves --out as it was (mode "w" emptied it up front)."""
    out = tmp_path / "rows.jsonl"
    out.write_text(OLD)

    def broken(*a, **k):
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(bench_mtp, "check", broken)
    monkeypatch.setattr(sys, "argv", ["bench_mtp.py", "--dry", "--suite", "spec_verify", "--out", str(out)])
    with pytest.raises(RuntimeError, match="kernel failed"):
        bench_mtp.main()
    assert out.read_text() == OLD


def test_bench_mtp_after_an_empty_mtp_e2e_replaces_the_old_file(bench_mtp, monkeypatch, tmp_path):
    """mtp_e2e that wrote nothing, then a suite that measures: its rows replace the old file, never append to it."""
    out = tmp_path / "rows.jsonl"
    out.write_text(OLD)
    monkeypatch.setattr(bench_mtp, "run_mtp_e2e_suite", lambda argv: None)
    monkeypatch.setattr(sys, "argv", ["bench_mtp.py", "--dry", "--suite", "mtp_e2e,sampler", "--batches", "1",
                                      "--sampler-ops", "sample", "--out", str(out)])
    bench_mtp.main()
    assert [json.loads(line)["suite"] for line in out.read_text().splitlines()] == ["sampler"]


def test_bench_mtp_dry_refuses_compiled_kernels_before_touching_out(bench_mtp, monkeypatch, tmp_path, capsys):
    """Kernels defined with the interpreter off (TRITON_INTERPRET=0, or imported earlier): one line, exit 2."""
    out = tmp_path / "rows.jsonl"
    out.write_text(OLD)
    monkeypatch.setattr(bench_mtp, "_empty_kernel", lambda *a: None)  # stands for a kernel compiled for a GPU
    monkeypatch.setattr(sys, "argv", ["bench_mtp.py", "--dry", "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        bench_mtp.main()
    assert e.value.code == 2 and "run with TRITON_INTERPRET=1" in capsys.readouterr().err
    assert out.read_text() == OLD


def test_rows_file_opens_at_the_first_line(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text(OLD)
    with RowsFile(out) as f:
        assert not f.written and out.read_text() == OLD
        f.write('{"a": 1}\n')
        assert out.read_text() == '{"a": 1}\n'  # flushed at once: a run killed at its limit keeps it
    with RowsFile(out, "a") as f:
        f.write('{"a": 2}\n')
    assert out.read_text() == '{"a": 1}\n{"a": 2}\n'
    with RowsFile(tmp_path / "never.jsonl"):
        pass
    assert not (tmp_path / "never.jsonl").exists()
    with pytest.raises(ValueError, match="mode"):
        RowsFile(out, "r+")


def test_write_rows_is_atomic_and_skips_empty(tmp_path, monkeypatch):
    out = tmp_path / "r.jsonl"
    out.write_text(OLD)
    os.chmod(out, 0o640)
    write_rows(out, [])
    assert out.read_text() == OLD
    write_rows(out, [{"a": 1}, {"b": 2}])
    assert out.read_text() == '{"a": 1}\n{"b": 2}\n' and (out.stat().st_mode & 0o777) == 0o640
    link = tmp_path / "link.jsonl"
    link.symlink_to(out)
    write_rows(link, [{"c": 3}])
    assert link.is_symlink() and out.read_text() == '{"c": 3}\n'

    def unserializable_late(*a, **k):  # a failure while writing: the old file stays whole, no temporary left
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", unserializable_late)
    with pytest.raises(OSError):
        write_rows(out, [{"d": 4}])
    assert out.read_text() == '{"c": 3}\n' and sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "r.jsonl"]


def test_bench_e2e_commit_from_git():
    """--commit defaulted to "unknown" in bench_e2e.py and bench_e2e_tp.py; the rows now carry git HEAD (or
    TRITONSEEK_COMMIT) as bench_mtp's do."""
    from benchmarks import bench_e2e, bench_e2e_tp

    heads = {git_commit()}
    got = {bench_e2e.parse_args(["--tiny"]).commit, bench_e2e_tp.parse_args([]).commit}
    heads.add(git_commit())  # a shared checkout may gain a commit meanwhile
    assert "unknown" not in heads and got <= heads
    assert bench_e2e.parse_args(["--commit", "abc1234"]).commit == "abc1234"


def test_bench_moe_failing_suite_keeps_old_rows_and_winners(monkeypatch, tmp_path):
    """bench_moe.py emptied --out before its first suite ran and wrote {} over --winners when nothing was measured."""
    from benchmarks import bench_moe

    out, win = tmp_path / "rows.jsonl", tmp_path / "winners.json"
    out.write_text(OLD)
    win.write_text('{"old": 1}')

    def broken(cx):
        raise RuntimeError("suite failed")

    monkeypatch.setitem(bench_moe.SUITES, "broken", broken)
    monkeypatch.setattr(sys, "argv", ["bench_moe.py", "--dry", "--suites", "broken", "--out", str(out),
                                      "--winners", str(win)])
    bench_moe.main()  # a failing suite is reported and skipped
    assert out.read_text() == OLD and win.read_text() == '{"old": 1}'

    def one_row(cx):
        cx.row("x", {"n": 1}, 1.0, None)
        cx.row("x", {"n": 2}, 1.0, None)

    def winner_then_fail(cx):
        cx.winners["k"] = {"BLOCK_M": 64}
        raise RuntimeError("suite failed after a sweep")

    monkeypatch.setitem(bench_moe.SUITES, "broken", winner_then_fail)
    bench_moe.main()  # --dry never writes winners (s19): neither the file nor .partial
    assert win.read_text() == '{"old": 1}' and not (tmp_path / "winners.json.partial").exists()
    # a GPU run (stubbed: only the script's GPU check and device name are faked) that fails keeps the old winners;
    # what it found goes to .partial (lead, s18)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "test-gpu")
    monkeypatch.setattr(sys, "argv", ["bench_moe.py", "--suites", "broken", "--out", str(out), "--winners", str(win)])
    bench_moe.main()
    assert win.read_text() == '{"old": 1}' and json.loads((tmp_path / "winners.json.partial").read_text()) == {
        "k": {"BLOCK_M": 64}}
    monkeypatch.setattr(sys, "argv", ["bench_moe.py", "--dry", "--suites", "broken", "--out", str(out),
                                      "--winners", str(win)])

    monkeypatch.setitem(bench_moe.SUITES, "broken", one_row)
    bench_moe.main()  # the first row replaces the old file, the next ones append
    assert [json.loads(line)["case"] for line in out.read_text().splitlines()] == [{"n": 1}, {"n": 2}]


def test_bench_fp8_gemm_failing_run_keeps_old_files(monkeypatch, tmp_path):
    """bench_fp8_gemm.py wrote --out, --winners and --sweep-out in a finally, empty after a failure before any row; and
    (session 18) the rows measured before an exception / Ctrl-C / SIGTERM over the old files ("w"). Now they go to
    FILE.partial; a run that finishes replaces the files."""
    import signal

    import torch

    from benchmarks import bench_fp8_gemm

    files = {name: tmp_path / name for name in ("rows.jsonl", "winners.json", "sweep.jsonl")}
    for f in files.values():
        f.write_text(OLD)
    stops = [RuntimeError("gemm failed"), KeyboardInterrupt()]

    def bench_gemm(args, env, rows, winners, sweep_rows):
        if len(stops) == 2:
            raise stops.pop(0)  # before any row
        rows.append({"suite": "fp8_gemm", "case": {"M": 64, "N": 1, "K": 1}, "us_graph": 1.0, "tflops": 1.0,
                     "gbps": 1.0})
        winners["64"] = [1]
        sweep_rows.append({"cfg": 1})
        if stops:
            raise stops.pop(0)

    monkeypatch.setattr(bench_fp8_gemm, "bench_gemm", bench_gemm)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "test-gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # past the script's GPU check (stubs only)
    monkeypatch.setattr(sys, "argv", ["bench_fp8_gemm.py", "--skip-quant", "--out", str(files["rows.jsonl"]),
                                      "--winners", str(files["winners.json"]), "--sweep-out", str(files["sweep.jsonl"])])
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(RuntimeError, match="gemm failed"):
            bench_fp8_gemm.main()
        assert all(f.read_text() == OLD for f in files.values()) and len(list(tmp_path.iterdir())) == 3
        with pytest.raises(KeyboardInterrupt):  # after rows
            bench_fp8_gemm.main()
        assert all(f.read_text() == OLD for f in files.values())
        partial = {n: (tmp_path / (n + ".partial")).read_text() for n in files}
        assert json.loads(partial["rows.jsonl"])["case"]["M"] == 64 and json.loads(partial["sweep.jsonl"])["cfg"] == 1
        assert json.loads(partial["winners.json"]) == {"64": [1]}
        assert bench_fp8_gemm.main() == 0
    finally:
        signal.signal(signal.SIGTERM, before)  # main() sets its own
    assert json.loads(files["rows.jsonl"].read_text())["case"]["M"] == 64
    assert json.loads(files["winners.json"].read_text()) == {"64": [1]}
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_staged_rows_fail_keeps_the_old_file(tmp_path, capsys):
    """StagedRows replaced the old file whenever its block ended without an exception, also after the script had
    recorded a failure (bench_moe: a failed suite, exit 1). fail() keeps it; the rows stay in .partial."""
    from tritonseek.benchrun import StagedRows

    out = tmp_path / "r.jsonl"
    out.write_text(OLD)
    with StagedRows(out) as f:
        f.write('{"a": 1}\n')
        f.fail("suite x failed")
    assert out.read_text() == OLD and (tmp_path / "r.jsonl.partial").read_text() == '{"a": 1}\n'
    assert "suite x failed" in capsys.readouterr().err
    with StagedRows(out) as f:  # a run that finishes replaces it
        f.write('{"a": 2}\n')
    assert out.read_text() == '{"a": 2}\n' and not (tmp_path / "r.jsonl.partial").exists()


def test_bench_mtp_interrupted_run_keeps_the_old_file(bench_mtp, monkeypatch, tmp_path):
    """RowsFile("w") emptied an existing --out at the first row: Ctrl-C / SIGTERM later lost the user's file. Now the
    rows go to OUT.partial until the run finishes."""
    out = tmp_path / "rows.jsonl"
    out.write_text(OLD)

    def one_row_then_ctrl_c(env, rows, out_f, deadline):
        out_f.write('{"suite": "sampler"}\n')
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_mtp, "run_sampler", one_row_then_ctrl_c)
    monkeypatch.setattr(sys, "argv", ["bench_mtp.py", "--dry", "--suite", "sampler", "--out", str(out)])
    with pytest.raises(KeyboardInterrupt):
        bench_mtp.main()
    assert out.read_text() == OLD and (tmp_path / "rows.jsonl.partial").read_text() == '{"suite": "sampler"}\n'


@pytest.mark.parametrize("bad", [["--budget-s", "nan"], ["--budget-s", "0"], ["--out", "no/such/folder/r.jsonl"]])
def test_bench_mtp_refuses_bad_out_and_budget(bench_mtp, monkeypatch, capsys, tmp_path, bad):
    """--budget-s nan / 0 ran (and a missing --out folder failed after the work): now one line, exit 2."""
    monkeypatch.chdir(tmp_path)  # the default --out, should a bad value run
    monkeypatch.setattr(sys, "argv", ["bench_mtp.py", "--dry", *bad])
    with pytest.raises(SystemExit) as e:
        bench_mtp.main()
    assert e.value.code == 2 and f"argument {bad[0]}" in capsys.readouterr().err
