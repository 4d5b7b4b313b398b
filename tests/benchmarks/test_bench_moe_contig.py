"""bench_moe.py's grouped_gemm_contiguous suite (issue 5, s20): it timed only the plain-Triton launcher while the model
runs the Gluon warp-specialized kernel on Hopper, and its rows did not say which kernel they were. Now the kernel
comes from model.moe_triton._contiguous_gemm (one source of truth), rows carry kernel / launcher_kernel, and a kernel
that leaves padding rows or valid rows wrong is reported WRONG and never timed. CPU (Triton's interpreter): --dry.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from benchmarks import bench_moe, bench_moe_grouped
from tritonseek.kernels import grouped_gemm as GG


def _run_dry(monkeypatch, tmp_path) -> list[dict]:
    out = tmp_path / "rows.jsonl"
    monkeypatch.setattr(sys, "argv", ["bench_moe.py", "--dry", "--suites", "grouped_gemm_contiguous", "--out", str(out),
                                      "--winners", str(tmp_path / "w.json")])
    assert bench_moe.main() == 0
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []  # no rows: no file


def test_dry_rows_name_the_kernel_the_model_runs(monkeypatch, tmp_path, capsys):
    rows = _run_dry(monkeypatch, tmp_path)
    assert len(rows) == 2  # a DeepGEMM-style case and the routed layout (with padding rows)
    assert "M_pad" in rows[1]["case"]
    for r in rows:  # on the CPU the model runs the tl kernel, called through the model's choice
        assert (r["kernel"], r["launcher_kernel"], r["launcher"]) == ("tl", "model", "grouped_fp8_gemm_contiguous")
        assert r["correct"] is True and r["dry"] is True
    table = capsys.readouterr().out.split("suite ")[-1]
    assert table.count(" tl ") == 2  # the printed table shows the kernel column for contiguous rows


def _follow(model_fn):
    return lambda dev: model_fn


def test_the_kernel_list_follows_the_model(monkeypatch):
    """On a device where the Gluon kernel runs, the model's choice (ws) is first and tl second; the model's own
    function decides (gluon_ws_supported patched: no GPU here)."""
    from tritonseek.kernels import fp8_gemm_ws

    monkeypatch.setattr(fp8_gemm_ws, "gluon_ws_supported", lambda dev: True)
    model_k, launchers = bench_moe_grouped._contiguous_kernels(torch.device("cuda", 0))
    assert model_k == "ws" and list(launchers) == ["tl", "ws"]
    assert launchers["ws"].__name__ == "grouped_fp8_gemm_contiguous_ws"
    assert bench_moe_grouped._contiguous_kernels(torch.device("cpu")) == ("tl", {"tl": GG.grouped_fp8_gemm_contiguous})


def test_an_unknown_model_kernel_is_an_error(monkeypatch):
    from tritonseek.model import moe_triton

    monkeypatch.setattr(moe_triton, "_contiguous_gemm", lambda dev: print)
    with pytest.raises(RuntimeError, match="neither"):
        bench_moe_grouped._contiguous_kernels(torch.device("cpu"))


@pytest.mark.parametrize("fault", ["padding_untouched", "valid_row_wrong"])
def test_a_wrong_kernel_is_not_timed(monkeypatch, tmp_path, capsys, fault):
    """A kernel that leaves the NaN-poisoned padding rows as they were (both kernels promise 0 there), or gets one
    valid row wrong, gives no row for the cases it breaks."""
    def broken(a, a_s, b, bs, mi, out, config=None):
        pad = mi < 0
        before = out[pad].clone()
        GG.grouped_fp8_gemm_contiguous(a, a_s, b, bs, mi, out=out, config=config)
        if fault == "padding_untouched":
            out[pad] = before
        else:
            out[0] = -out[0]
        return out

    monkeypatch.setattr(bench_moe_grouped, "_contiguous_kernels", lambda dev: ("tl", {"tl": broken}))
    rows = _run_dry(monkeypatch, tmp_path)
    text = capsys.readouterr().out
    assert "WRONG" in text
    if fault == "padding_untouched":  # the DeepGEMM-style case has no padding rows: still timed
        assert [("M_pad" in r["case"]) for r in rows] == [False]
    else:
        assert rows == []


def test_fields_added_after_a_row_reach_the_file(monkeypatch, tmp_path):
    """Ctx.row wrote each row at once and the suites set meets_target on the returned row afterwards: no row of
    s20's final pass (65f2170) from the masked / contiguous / layer / permute suites had it. Rows now land when the
    next row is made or the suite ends, a failed suite's too."""
    def suite(cx):
        for i in range(2):
            r = cx.row("x", {"i": i}, 1.0, None)
            r["meets_target"] = i == 1

    def failing(cx):
        cx.row("y", {"i": 0}, 1.0, None)["meets_target"] = True
        raise RuntimeError("boom")

    monkeypatch.setitem(bench_moe.SUITES, "late", suite)
    monkeypatch.setitem(bench_moe.SUITES, "late_fail", failing)
    out = tmp_path / "rows.jsonl"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench_moe.py", "--dry", "--suites", "late,late_fail", "--out", str(out)])
    assert bench_moe.main() == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]  # a new OUT: rows written to it directly
    assert [(r["suite"], r["meets_target"]) for r in rows] == [("x", False), ("x", True), ("y", True)]


def test_winner_labels_carry_the_expert_count(monkeypatch, tmp_path):
    """4×8192 and 8×4096 share N, K and the "large" M class: the sweep label had no expert count, so one case's
    winner replaced the other's in --winners. Rows keep their keys and gain winner_key (tl rows)."""
    key = bench_moe_grouped.contiguous_key
    assert key(4, 8192, 4096, 7168) != key(8, 4096, 4096, 7168)
    assert key(4, 8192, 4096, 7168) == "contiguous,4096,7168,large,G4"
    swept, sweep = [], bench_moe_grouped._sweep
    monkeypatch.setattr(bench_moe_grouped, "_sweep", lambda cx, c, run, check, key, **kw:
                        swept.append(key) or sweep(cx, c, run, check, key, **kw))
    rows = _run_dry(monkeypatch, tmp_path)
    assert swept == [r["winner_key"] for r in rows]  # the label the winner is stored under
    assert [r["winner_key"] for r in rows] == [key(r["case"]["groups"], m, 256, 384) for r, m in
                                               zip(rows, (64, rows[1]["case"]["M_pad"] // 8))]
    assert rows[0]["winner_key"] == "contiguous,256,384,small,G2"
