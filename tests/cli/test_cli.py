"""The typer CLI through CliRunner: determinism, one-line errors, prompts-file round trip, info."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tritonseek.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_generate_default_model_prints_text_and_stats():
    r = run("generate", "--prompt", "def add(a, b):", "--max-new-tokens", "8")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("def add(a, b):")
    assert len(r.stdout.strip()) > len("def add(a, b):")
    assert "new tokens" in r.stderr and "backend reference" in r.stderr


def test_generate_with_seed_is_deterministic():
    args = ("generate", "--prompt", "import os", "-n", "12", "--temperature", "0.9", "--top-p", "0.95",
            "--top-k", "50", "--seed", "123")
    a, b = run(*args), run(*args)
    assert a.exit_code == 0 and b.exit_code == 0
    assert a.stdout == b.stdout
    c = run(*args[:-1], "124")
    assert c.stdout != a.stdout  # a different seed draws different tokens (12 tokens of ~4k vocab)


@pytest.mark.parametrize("flt", [("--top-k", "1"), ("--top-p", "1e-6")])
def test_generate_top_k_and_top_p_reach_the_sampler(flt):
    # --top-k 1 / --top-p 1e-6 keep only the top token: a hot temperature prints the greedy text (tester22 mutation
    # #77: --top-p passed as 1.0 to SamplingParams survived; the CLI tests checked its validation only)
    greedy = run("generate", "-p", "def f(x):", "-n", "12", "--temperature", "0")
    hot = run("generate", "-p", "def f(x):", "-n", "12", "--temperature", "1.5", "--seed", "0", *flt)
    assert greedy.exit_code == 0 and hot.exit_code == 0, hot.output
    assert hot.stdout == greedy.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (("generate",), "exactly one of --prompt or --prompts-file"),
        (("generate", "-p", "x", "--model", "/nonexistent/folder/x"), "neither a folder nor a Hugging Face id"),
        (("generate", "-p", "x", "--model", "someone/not-cached-model-xyz"), "not in the local Hugging Face cache"),
        # session 18: the messages named backend= / max_new_tokens= instead of the options
        (("generate", "-p", "x", "--backend", "cuda"), "--backend must be triton or reference, got 'cuda'"),
        (("generate", "-p", "x", "--device", "tpu"), "--device 'tpu' is not supported"),
        # session 17: cpu:1 was accepted ("device cpu:1"); errors named device= instead of the option
        (("generate", "-p", "x", "--device", "cpu:1"), "--device cpu:1: the CPU device takes no index"),
        (("generate", "-p", "x", "-n", "5000"), "with --max-new-tokens 5000 that exceeds max_position_embeddings"),
        (("generate", "-p", "x", "--top-p", "0"), "--top-p must be in (0, 1]"),
        (("generate", "-p", "x", "--top-p", "nan"), "--top-p must be in (0, 1], got nan"),
        (("generate", "-p", "x", "--top-p", "1.5"), "--top-p must be in (0, 1], got 1.5"),
        (("generate", "-p", "x", "-t", "1", "--top-k", "3000000000"), "--top-k: top_k=3000000000"),
        (("generate", "-p", "x", "-t", "1e-38"), "--temperature: temperature=1e-38"),
        (("generate", "-p", "x", "-t", "inf"), "--temperature must be a finite number >= 0"),
        (("generate", "-p", "x", "-t", "nan"), "--temperature must be a finite number >= 0"),
        (("generate", "-p", "x", "-t", "-1"), "--temperature must be a finite number >= 0"),
        (("generate", "-p", "caf\udce9"), "not valid Unicode"),
    ],
)
def test_bad_arguments_give_one_line_error(args, needle):
    r = run(*args)
    assert r.exit_code != 0
    assert needle in r.stderr
    assert "Traceback" not in r.output
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: ")


def test_typer_range_errors_exit_nonzero():
    r = runner.invoke(app, ["generate", "-p", "x", "--max-new-tokens", "0"])
    assert r.exit_code != 0 and "Traceback" not in r.output


def test_prompts_file_round_trip(tmp_path):
    src = tmp_path / "in.jsonl"
    rows = [{"prompt": "def f(x):", "id": 1}, {"prompt": "class A:", "id": 2}, {"prompt": "x = [", "id": 3}]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    dst = tmp_path / "out.jsonl"
    r = run("generate", "--prompts-file", str(src), "--output", str(dst), "-n", "6")
    assert r.exit_code == 0, r.output
    got = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [g["id"] for g in got] == [1, 2, 3]
    assert [g["prompt"] for g in got] == [r["prompt"] for r in rows]
    for g in got:
        assert isinstance(g["output"], str) and len(g["token_ids"]) <= 6 and g["finish_reason"] in ("stop", "length")
    # batch composition does not change a prompt's greedy output
    single = run("generate", "--prompt", "class A:", "-n", "6")
    assert single.stdout.rstrip("\n") == "class A:" + got[1]["output"]


def test_bad_prompts_file_keeps_input_and_writes_nothing(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "ok"}\nnot json\n')
    dst = tmp_path / "out.jsonl"
    r = run("generate", "--prompts-file", str(src), "--output", str(dst))
    assert r.exit_code != 0 and "line 2 is not JSON" in r.stderr
    assert src.read_text() == '{"prompt": "ok"}\nnot json\n' and not dst.exists()


def test_prompts_file_errors_name_the_line_and_keep_input(tmp_path):
    """A lone surrogate in any field (copied into the UTF-8 results) and an over-long prompt are reported by
    file line before anything is generated; the input stays and no output or temporary file appears."""
    sur = tmp_path / "sur.jsonl"
    sur_text = '{"prompt": "def a():", "meta": "x \\ud800 y"}\n'
    sur.write_text(sur_text)
    dst = tmp_path / "out.jsonl"
    r = run("generate", "--prompts-file", str(sur), "--output", str(dst), "-n", "2")
    assert r.exit_code == 2 and "line 1 holds text that is not valid Unicode" in r.stderr
    long = tmp_path / "long.jsonl"
    long_text = '\n{"prompt": "x = 1"}\n' + json.dumps({"prompt": "x " * 3000}) + "\n"
    long.write_text(long_text)
    r = run("generate", "--prompts-file", str(long), "--output", str(dst), "-n", "2")
    assert r.exit_code == 2 and "line 3: this prompt has" in r.stderr
    assert sur.read_text() == sur_text and long.read_text() == long_text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.jsonl", "sur.jsonl"]


def test_info_runs():
    r = run("info")
    assert r.exit_code == 0, r.output
    assert "torch" in r.stdout and "triton" in r.stdout and "mla_decode" in r.stdout


def test_info_marks_gluon_kernels_hopper_only(monkeypatch):
    """Session 19 tester: the Gluon kernels (they raise off sm_90) were listed as "triton" on a CPU machine."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = runner.invoke(app, ["info"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    rows = {cells[0]: cells[1] for line in r.stdout.splitlines()
            if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 2}
    for op in ("mla_decode_ws", "fp8_gemm_nt_ws", "fp8_gemm_nt_sk", "grouped_fp8_gemm_masked_ws"):
        assert rows[op] == "gluon (Hopper GPUs only: not here)", rows
    assert rows["fp8_gemm_nt"] == rows["mla_decode"] == rows["sample"] == "triton (CPU interpreter)", rows
    assert "TRITON_INTERPRET" not in r.stdout
    # without the interpreter they raise "needs CUDA tensors" here: not listed as plain "triton" (session 19 tester 2)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    r = runner.invoke(app, ["info"], env={"COLUMNS": "200"})
    rows = {cells[0]: cells[1] for line in r.stdout.splitlines()
            if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 2}
    assert rows["fp8_gemm_nt"] == "triton (no CUDA GPU: see below)", rows
    assert "need a CUDA GPU, or TRITON_INTERPRET=1" in " ".join(r.stdout.split()), r.stdout
    assert rows["mla_decode_ws"] == "gluon (Hopper GPUs only: not here)", rows


def test_hf_id_resolves_from_local_cache(tmp_path, monkeypatch):
    """An owner/name id found in the local HF cache (hub layout: models--o--n/snapshots/<rev>) loads offline."""
    import shutil

    from tritonseek.engine.llm import DEFAULT_MODEL_DIR

    snap = tmp_path / "models--someone--tiny-deepseek" / "snapshots" / "0123abcd"
    shutil.copytree(DEFAULT_MODEL_DIR, snap)
    (tmp_path / "models--someone--tiny-deepseek" / "refs").mkdir()
    (tmp_path / "models--someone--tiny-deepseek" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    r = run("generate", "--prompt", "def f(x):", "-n", "4", "--model", "someone/tiny-deepseek")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("def f(x):")


@pytest.mark.parametrize(
    "extra,needle",
    [
        (("--output", "{tmp}/nodir/sub/o.jsonl"), "does not exist"),
        (("--output", "{tmp}"), "is a directory"),
    ],
)
def test_bad_output_fails_before_generating(tmp_path, extra, needle):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "x = 1"}\n')
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    r = run("generate", "--prompts-file", str(src), *args, "-n", "2")
    assert r.exit_code != 0 and needle in r.stderr and "Traceback" not in r.output
    assert "prompt tokens" not in r.stderr  # nothing was generated


def test_prompts_file_not_utf8_or_a_directory(tmp_path):
    bad = tmp_path / "lat1.jsonl"
    bad.write_bytes(b'{"prompt": "\xff\xfe"}\n')
    r = run("generate", "--prompts-file", str(bad), "--output", str(tmp_path / "o.jsonl"))
    assert r.exit_code != 0 and "is not UTF-8" in r.stderr
    r = run("generate", "--prompts-file", str(tmp_path), "--output", str(tmp_path / "o.jsonl"))
    assert r.exit_code != 0 and "is a folder, not a file" in r.stderr


def test_prompts_file_with_a_utf8_bom(tmp_path):
    """Tester s20: a BOM at the start (what Windows editors write) was "line 1 is not JSON: Unexpected UTF-8 BOM".
    It is skipped; the byte offset of a bad byte still counts it."""
    src, dst = tmp_path / "bom.jsonl", tmp_path / "o.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + '{"prompt": "x = 1", "id": "é"}\n'.encode())
    r = run("generate", "--prompts-file", str(src), "--output", str(dst), "-n", "2")
    assert r.exit_code == 0, r.output
    (row,) = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert row["prompt"] == "x = 1" and row["id"] == "é"
    src.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "\xff"}\n')
    r = run("generate", "--prompts-file", str(src), "--output", str(dst), "-n", "2")
    assert r.exit_code == 2 and "is not UTF-8 (byte 15:" in r.stderr


def test_prompts_file_with_unicode_line_separators_round_trips(tmp_path):
    """U+2028 / U+2029 / U+0085 are written raw in --output (ensure_ascii=False); reading that file back as
    --prompts-file cut such rows in two (str.splitlines; tester2 s20 #2). Lines end at "\n" (one "\r" dropped) and
    keep their numbers."""
    src, dst, dst2 = tmp_path / "in.jsonl", tmp_path / "o.jsonl", tmp_path / "o2.jsonl"
    rows = [{"prompt": "x = 1", "id": "a\u2028b"}, {"prompt": "y = 2", "id": "c\u2029d\x85e"}]
    src.write_text(json.dumps(rows[0]) + "\r\n" + json.dumps(rows[1]) + "\n", encoding="utf-8")
    r = run("generate", "--prompts-file", str(src), "--output", str(dst), "-n", "2")
    assert r.exit_code == 0, r.output
    out = dst.read_text(encoding="utf-8")
    assert "\u2028" in out and "\x85" in out  # raw in the results, as the round trip needs
    r = run("generate", "--prompts-file", str(dst), "--output", str(dst2), "-n", "2")
    assert r.exit_code == 0, r.output
    got = [json.loads(line) for line in dst2.read_text(encoding="utf-8").split("\n") if line]
    assert [g["id"] for g in got] == [r["id"] for r in rows]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0], ensure_ascii=False) + "\n\nnot json\n", encoding="utf-8")
    r = run("generate", "--prompts-file", str(bad), "--output", str(dst2), "-n", "2")
    assert r.exit_code == 2 and "line 3 is not JSON" in r.stderr


def test_prompts_file_from_a_pipe_or_fifo(tmp_path):
    """``--prompts-file /dev/stdin`` fed by a pipe and a FIFO (what ``<(cat p.jsonl)`` gives) are read once; they
    were refused as "not a file" (session 19 tester 2)."""
    import os
    import subprocess
    import sys
    import threading
    from pathlib import Path

    line = json.dumps({"prompt": "x = 1", "id": 7}) + "\n"
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "tritonseek.cli", "generate", "--prompts-file", "/dev/stdin", "-o",
                        str(tmp_path / "a.jsonl"), "-n", "2"], input=line, capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "a.jsonl").read_text())["id"] == 7
    fifo = tmp_path / "p.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(line), daemon=True)
    writer.start()
    r = run("generate", "--prompts-file", str(fifo), "--output", str(tmp_path / "b.jsonl"), "-n", "2")
    writer.join(10)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "b.jsonl").read_text())["id"] == 7


def test_compare_without_mtp_and_too_long_prompt_fail_before_generating():
    r = run("generate", "-p", "def f(x):", "-n", "8", "--compare")
    assert r.exit_code != 0 and "--compare needs --mtp K" in r.stderr and r.stdout == ""
    r = run("generate", "-p", "x " * 3000, "-n", "8")
    assert r.exit_code != 0 and "max_position_embeddings" in r.stderr and r.stdout == ""


def test_seed_out_of_range():
    r = run("generate", "-p", "x", "-t", "1", "--seed", str(2**70))
    assert r.exit_code != 0 and "seed=" in r.stderr and "Traceback" not in r.output


def test_bench_on_cpu_fails_with_one_line():
    r = run("bench", "mla")
    assert r.exit_code != 0 and "needs a CUDA GPU" in r.stderr and "Traceback" not in r.output
    r = run("bench", "nonsense")
    assert r.exit_code != 0 and "unknown suite 'nonsense'" in r.stderr


def test_output_write_leaves_no_temp_file_and_keeps_other_files(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "x = 1"}\n')
    mine = tmp_path / "o.jsonl.tmp"  # a user's file with the old fixed temp name
    mine.write_text("mine\n")
    r = run("generate", "--prompts-file", str(src), "--output", str(tmp_path / "o.jsonl"), "-n", "2")
    assert r.exit_code == 0, r.output
    assert mine.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "o.jsonl", "o.jsonl.tmp"]


def test_broken_chat_template_gives_one_line_error(tmp_path):
    import shutil

    from tritonseek.engine.llm import DEFAULT_MODEL_DIR

    model = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    for template, needle in [("{% if %}", "chat_template failed to render"), ("{{ messages[5].content }}", "chat_template"),
                             (42, "chat_template must be a string")]:
        cfg["chat_template"] = template
        (model / "tokenizer_config.json").write_text(json.dumps(cfg))
        r = run("generate", "-p", "hi", "--chat", "-n", "2", "--model", str(model))
        assert r.exit_code != 0 and needle in r.stderr and "Traceback" not in r.output, (template, r.output)


def test_tp_on_cuda_without_a_gpu_fails_with_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = run("generate", "-p", "x", "--tp", "2", "--device", "cuda")
    assert r.exit_code != 0 and "no CUDA device" in r.stderr and "Traceback" not in r.output
    r = run("generate", "-p", "x", "--device", "cuda:0")  # session 17: reported as device='cuda'
    assert r.exit_code == 2 and "--device cuda:0: no CUDA device" in r.stderr and "Traceback" not in r.output


def test_world_size_without_torchrun_is_one_clear_error(monkeypatch):
    """Fresh-user pass (session 16): WORLD_SIZE exported by hand gave a traceback (MASTER_ADDR expected) or a
    wait for ranks that never come; --tp 1 with WORLD_SIZE=2 ran silently (each torchrun rank generating alone)."""
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    for args, needles in ((("-p", "x"), ("WORLD_SIZE=2", "--tp is 1", "--tp 2")),
                          (("-p", "x", "--tp", "2", "--device", "cpu"), ("WORLD_SIZE=2", "MASTER_ADDR, MASTER_PORT")),
                          (("-p", "x", "--tp", "3", "--device", "cpu"), ("--tp 3 but WORLD_SIZE=2",))):
        r = run("generate", *args)
        assert r.exit_code == 2 and all(n in r.stderr for n in needles) and "Traceback" not in r.output, r.output
    monkeypatch.setenv("WORLD_SIZE", "two")
    r = run("generate", "-p", "x")
    assert r.exit_code == 2 and "WORLD_SIZE='two'" in r.stderr
    monkeypatch.setenv("WORLD_SIZE", "1")  # a one-process world is no tensor parallelism
    r = run("generate", "-p", "x", "-n", "2")
    assert r.exit_code == 0 and "new tokens 2" in r.stderr, r.output


@pytest.mark.parametrize("sig_name, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_stops_the_tp_ranks_and_exits_143(monkeypatch, tmp_path, sig_name, code):
    """Fresh-user passes (session 17): SIGTERM, then SIGHUP, to `generate --tp 2` ended the CLI alone; torchrun and
    its ranks ran on and overwrote --output a minute later. Now both are handled like Ctrl-C: torchrun gets SIGTERM
    (it stops its ranks), the CLI waits for it and exits 128 + the signal. torchrun is replaced by a stand-in that
    records the signal.

    The signal's disposition is set to SIG_DFL for the test: the CLI leaves an inherited SIG_IGN alone (nohup), so
    when pytest itself ran under nohup (SIGHUP ignored) the SIGHUP case failed with "SIGHUP did not interrupt the
    wait" while SIGTERM passed — the "flaky under load" failure of s22, which came from how the run was started."""
    import signal

    sig = getattr(signal, sig_name)
    outer = signal.signal(sig, signal.SIG_DFL)
    try:
        _signal_stops_the_ranks(monkeypatch, tmp_path, sig, sig_name, code)
    finally:
        signal.signal(sig, outer)


def _signal_stops_the_ranks(monkeypatch, tmp_path, sig, sig_name, code):
    import os
    import signal
    import subprocess
    import time

    class FakeTorchrun:
        def __init__(self, *a, **k):
            self.signals, self.returncode = [], None

        def communicate(self, timeout=None):
            if not self.signals:  # the first wait: the signal arrives while the ranks run
                os.kill(os.getpid(), sig)
                time.sleep(5)
                raise AssertionError(f"{sig_name} did not interrupt the wait")
            self.returncode = -signal.SIGTERM
            return "", ""

        def send_signal(self, sig):
            self.signals.append(sig)

    procs = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: procs.append(FakeTorchrun()) or procs[-1])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    before = signal.getsignal(sig)
    (tmp_path / "p.jsonl").write_text('{"prompt": "x"}\n')
    (tmp_path / "out.jsonl").write_text("kept\n")
    r = run("generate", "--prompts-file", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "out.jsonl"),
            "--tp", "2", "--device", "cpu")
    assert r.exit_code == code and f"terminated ({sig_name})" in r.stderr, r.output
    assert "every tensor-parallel rank was stopped" in r.stderr, r.output
    assert procs[0].signals == [signal.SIGTERM] and signal.getsignal(sig) is before
    assert (tmp_path / "out.jsonl").read_text() == "kept\n"


def test_an_inherited_ignored_sighup_stays_ignored_under_tp(monkeypatch, tmp_path):
    """nohup: SIGHUP arrives ignored and the --tp wait must not start handling it (a closed terminal would then stop
    the ranks nohup was asked to keep alive); torchrun gets no signal and the run ends normally."""
    import os
    import signal
    import subprocess

    class FakeTorchrun:
        def __init__(self, *a, **k):
            self.signals, self.returncode, self.seen = [], None, None

        def communicate(self, timeout=None):
            self.seen = signal.getsignal(signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing happens
            self.returncode = 0
            return "", ""

        def send_signal(self, sig):
            self.signals.append(sig)

    procs = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: procs.append(FakeTorchrun()) or procs[-1])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    outer = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        r = run("generate", "-p", "x", "--tp", "2", "--device", "cpu")
        assert r.exit_code == 0 and "terminated" not in r.stderr, r.output
        assert procs[0].seen == signal.SIG_IGN and procs[0].signals == []
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, outer)


def test_double_ctrl_c_is_one_line_and_exit_130(monkeypatch, tmp_path):
    """Tester finding (session 18): a second Ctrl-C while the first was being handled ended `generate` silently
    (killed by SIGINT, or exit 130 with no message) and cut its clean-up short. Now the first Ctrl-C turns SIGINT off:
    one line, exit 130, the clean-up runs to its end, --output untouched; then the caller's SIGINT handler is back
    (session 19: it stayed ignored; tests/cli/test_sigint.py)."""
    import os
    import signal
    import time

    from tritonseek.engine.llm import LLM

    cleaned = []

    def interrupted_generate(self, *a, **k):
        try:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while generating
            time.sleep(5)
            raise AssertionError("SIGINT did not interrupt generate")
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # pressed again while the first unwinds
            time.sleep(0.05)
            cleaned.append(True)

    monkeypatch.setattr(LLM, "generate", interrupted_generate)
    before = signal.getsignal(signal.SIGINT)
    (tmp_path / "p.jsonl").write_text('{"prompt": "x"}\n')
    (tmp_path / "out.jsonl").write_text("kept\n")
    try:
        r = run("generate", "--prompts-file", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "out.jsonl"))
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        signal.signal(signal.SIGINT, before)
    assert r.exit_code == 130 and r.stderr.strip().splitlines()[-1] == "error: interrupted", r.output
    assert "Traceback" not in r.output and cleaned == [True]
    assert (tmp_path / "out.jsonl").read_text() == "kept\n" and sorted(os.listdir(tmp_path)) == ["out.jsonl", "p.jsonl"]
    monkeypatch.undo()
    r = run("generate", "-p", "x", "-n", "2")  # a run that is not interrupted gives the caller's handler back
    assert r.exit_code == 0 and signal.getsignal(signal.SIGINT) is before


def test_double_ctrl_c_under_tp_waits_for_torchrun(monkeypatch, tmp_path):
    """--tp: a second Ctrl-C while the CLI waited for torchrun to stop its ranks ended the CLI at once, silently, and
    torchrun was left behind (a tester saw it defunct). Now: torchrun gets SIGTERM once, the CLI waits for it, one
    line, exit 130. torchrun is replaced by a stand-in."""
    import os
    import signal
    import subprocess
    import time

    class FakeTorchrun:
        def __init__(self, *a, **k):
            self.signals, self.waits, self.returncode = [], 0, None

        def communicate(self, timeout=None):
            self.waits += 1
            if not self.signals:  # the ranks run: Ctrl-C
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
                raise AssertionError("SIGINT did not interrupt the wait")
            time.sleep(0.05)  # torchrun stopping its ranks
            self.returncode = -signal.SIGTERM
            return "", ""

        def send_signal(self, sig):
            self.signals.append(sig)
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again while the CLI stops torchrun

    procs = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: procs.append(FakeTorchrun()) or procs[-1])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    before = signal.getsignal(signal.SIGINT)
    (tmp_path / "p.jsonl").write_text('{"prompt": "x"}\n')
    (tmp_path / "out.jsonl").write_text("kept\n")
    try:
        r = run("generate", "--prompts-file", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "out.jsonl"),
                "--tp", "2", "--device", "cpu")
    finally:
        signal.signal(signal.SIGINT, before)
    assert r.exit_code == 130, r.output
    assert r.stderr.strip().splitlines() == ["error: interrupted; every tensor-parallel rank was stopped"], r.output
    assert procs[0].signals == [signal.SIGTERM] and procs[0].waits == 2
    assert (tmp_path / "out.jsonl").read_text() == "kept\n"


def test_ctrl_c_in_bench_is_one_line_and_exit_130(monkeypatch):
    """warmup and bench take Ctrl-C as generate does (they exited 130 with no message, or killed by a second one)."""
    import os
    import signal

    from tritonseek import benchrun

    def interrupted(names):
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("SIGINT did not interrupt")

    monkeypatch.setattr(benchrun, "run_suites", interrupted)
    before = signal.getsignal(signal.SIGINT)
    try:
        r = run("bench", "mla")
    finally:
        signal.signal(signal.SIGINT, before)
    assert r.exit_code == 130 and r.stderr.strip().splitlines() == ["error: interrupted"], r.output


def test_launchers_named_like_their_module_are_the_same_object_in_any_order():
    """Session 18: `from tritonseek.kernels import mla_decode` gave the module (not callable) and
    `tritonseek.kernels.mla_decode` the function or the module depending on what was imported first. Now the name is
    the module in every order, callable as its launcher. Both paths to the name: the attribute the import system
    binds, and the package's __getattr__ (reached while that attribute is absent, as before the first import)."""
    import importlib
    import sys

    import torch

    import tritonseek.kernels as K

    for name in ("mla_decode", "mla_prefill", "mla_decode_ws"):
        mod = importlib.import_module("tritonseek.kernels." + name)
        exec(f"from tritonseek.kernels import {name} as got", globals())
        assert got is mod is getattr(K, name) is sys.modules["tritonseek.kernels." + name]  # noqa: F821
        delattr(K, name)  # the first access, before any import bound it: the package's __getattr__
        try:
            assert getattr(K, name) is mod
        finally:
            setattr(K, name, mod)
        assert callable(mod) and getattr(mod, name).__name__ == name
        with pytest.raises((TypeError, ValueError)) as e:  # the call reaches the launcher's own validation
            mod(torch.zeros(2), *([None] * 6))
        assert "module" not in str(e.value)
    from tritonseek.kernels import fp8_gemm_nt, kernel_status

    assert fp8_gemm_nt.__name__ == "fp8_gemm_nt" and kernel_status()["mla_decode"] == "triton"
