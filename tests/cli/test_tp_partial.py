"""``generate --tp 2 --prompts-file`` stopped in a later batch keeps the finished batches' rows in OUT.partial, as the
single-process run does since ce386cc (tests/cli/test_prompts_partial.py). Before (stop 25, "noticed, left alone"):
the ranks had no SIGTERM handler, so torchrun's SIGTERM ended them before rank 0 could save anything, and the parent
dropped what rank 0 said; only rank 0's user-error path wrote OUT.partial.

These run the real thing on CPU: the CLI starts torchrun, which starts two gloo ranks. A ``sitecustomize`` module
on PYTHONPATH (imported by every Python process at start-up; it acts only in the ranks, where WORLD_SIZE is set)
makes the batches small and makes the second ``LLM.generate`` call stop: rank 0 sends the signal a user would send
(Ctrl-C to the terminal's process group, or SIGTERM to the CLI) and then waits, as a rank busy generating would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import tritonseek

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tritonseek.__file__)))  # the CLI's package, from any folder
PROMPTS = ["def add(a, b):", "import os", "x = [1, 2", "class A:"]

HOOK = textwrap.dedent('''
    import os
    if os.environ.get("WORLD_SIZE") and os.environ.get("H1_TP_STOP"):
        import json, signal, time
        import torch.distributed as dist
        from tritonseek import cli_prompts
        from tritonseek.engine.llm import LLM

        cli_prompts.BATCH_TOKENS = 25  # about two rows per generate call: the 4 rows take 2-3 calls
        real, calls = LLM.generate, []
        rank, how = os.environ["RANK"], os.environ["H1_TP_STOP"]

        def generate(self, prompts, *a, **k):
            calls.append(len(prompts))
            if len(calls) == 2:
                if rank == "0":
                    with open(os.environ["H1_TP_CALLS"], "w") as f:
                        json.dump(calls, f)
                    cli = os.getpgid(os.getppid())  # the test starts the CLI as a process group leader
                    if how == "SIGTERM":
                        os.kill(cli, signal.SIGTERM)  # kill PID, a job scheduler
                    else:
                        os.killpg(cli, signal.SIGINT)  # Ctrl-C: the terminal signals the CLI and torchrun
                    if how == "collective":  # rank 0 blocked in a collective that rank 1 never joins
                        dist.all_reduce(torch_ones())
                time.sleep(60)  # busy generating; the signal from torchrun ends this
                raise AssertionError("the ranks were not stopped")
            return real(self, prompts, *a, **k)

        def torch_ones():
            import torch
            return torch.ones(1)

        LLM.generate = generate
''')


def _run(tmp_path, how):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS)))
    out = tmp_path / "out.jsonl"
    out.write_text("old results\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "H1_TP_STOP": how, "H1_TP_CALLS": str(tmp_path / "calls.json"),
           "PYTHONPATH": os.pathsep.join([str(hook), ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("TRITON_INTERPRET", None)
    env.pop("WORLD_SIZE", None)
    r = subprocess.run([sys.executable, "-m", "tritonseek.cli", "generate", "--prompts-file", str(src), "-o", str(out),
                        "-n", "3", "--tp", "2", "--device", "cpu"], capture_output=True, text=True, env=env,
                       timeout=240, start_new_session=True)
    calls = json.loads((tmp_path / "calls.json").read_text())
    return r, out, calls


@pytest.mark.parametrize("how, code, head", [("SIGINT", 130, "error: interrupted"),
                                             ("SIGTERM", 143, "error: terminated (SIGTERM)"),
                                             ("collective", 130, "error: interrupted")])
def test_tp_run_stopped_in_batch_2_keeps_batch_1_in_partial(tmp_path, how, code, head):
    r, out, calls = _run(tmp_path, how)
    assert r.returncode == code, r.stderr[-3000:]
    assert out.read_text() == "old results\n"  # --output as it was
    partial = tmp_path / "out.jsonl.partial"
    assert partial.exists(), r.stderr[-3000:]
    rows = [json.loads(line) for line in partial.read_text().splitlines()]
    n = calls[0]  # the first call's rows are the finished ones
    assert 0 < n < len(PROMPTS) and [row["id"] for row in rows] == list(range(n))
    assert all(row["prompt"] == PROMPTS[row["id"]] and len(row["token_ids"]) <= 3 and row["finish_reason"]
               for row in rows)
    last = r.stderr.strip().splitlines()[-1]
    assert last == (f"{head}; every tensor-parallel rank was stopped; --output {out} not written: the {n} finished "
                    f"rows are in {out}.partial"), r.stderr[-3000:]
    assert "Traceback" not in r.stderr.split("error: ")[-1]


def test_a_sigterm_while_a_ctrl_c_is_handled_does_not_cut_the_saving_short():
    """torchrun stops its ranks with the signal it got (Ctrl-C: SIGINT), then again with the SIGTERM the CLI sends it,
    a quarter of a second later: the second one raised Terminated inside rank 0's saving of the rows."""
    from tritonseek import cli_interrupt

    outer = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    saved = []
    try:
        guard = cli_interrupt.TerminationGuard()
        try:
            ctrl_c = KeyboardInterrupt()
            setattr(ctrl_c, cli_interrupt._OURS, True)  # as interruptible's SIGINT handler marks it
            try:
                raise ctrl_c
            except KeyboardInterrupt:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(20):  # the handler runs at a bytecode boundary within these
                    time.sleep(0.01)
                saved.append(True)
        finally:
            guard.close()
    finally:
        signal.signal(signal.SIGTERM, outer)
    assert saved == [True]


def test_kept_clause_takes_rank_0s_last_word_on_the_rows():
    from tritonseek.cli_tp import kept_clause

    said = ("W1201 05:16:19.723000 26377 api.py:1028] Sending process 26381 closing signal SIGINT\n"
            "error: interrupted; --output o.jsonl not written: the 2 finished rows are in o.jsonl.partial\n"
            "Traceback (most recent call last):\n")
    assert kept_clause(said) == "; --output o.jsonl not written: the 2 finished rows are in o.jsonl.partial"
    assert kept_clause("note: the run failed; the 1 finished row were written to --output /dev/null\n") == \
        "; the 1 finished row were written to --output /dev/null"
    assert kept_clause("error: interrupted\n") == kept_clause("error: x; y\n") == kept_clause(None) == ""
