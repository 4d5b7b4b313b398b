"""--prompts-file in batches (tester23 #7): the whole file ran as one generate call, so memory grew with the file (2.1 GB
for 1000 rows on the tiny model; a 10k-row file would be killed and lose every row). Rows now go in consecutive
batches of at most cli_prompts.BATCH_TOKENS prompt + new tokens: same rows, same greedy tokens, stats summed."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tritonseek import cli_prompts
from tritonseek.cli import app
from tritonseek.engine.llm import LLM


def test_batches_are_consecutive_and_bounded(monkeypatch):
    monkeypatch.setattr(cli_prompts, "BATCH_TOKENS", 14)
    assert cli_prompts.batches([5, 5, 5, 30, 1], 2) == [range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
    assert cli_prompts.batches([], 2) == []
    monkeypatch.setattr(cli_prompts, "BATCH_TOKENS", 10**6)
    assert cli_prompts.batches([5, 5, 5], 2) == [range(0, 3)]


def test_a_large_file_runs_in_batches_with_the_same_rows(tmp_path, monkeypatch):
    src = tmp_path / "p.jsonl"
    prompts = ["def add(a, b):", "import os", "x = [1, 2", "class A:", "for i in range(3):"]
    src.write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(prompts)))

    def run(out, mtp):
        r = CliRunner().invoke(app, ["generate", "--prompts-file", str(src), "-o", str(out), "-n", "6",
                                     *(["--mtp", str(mtp)] if mtp else [])])
        assert r.exit_code == 0, r.output
        return [json.loads(line) for line in out.read_text().splitlines()], " ".join(r.stderr.split())

    calls, extras = [], []
    real = LLM.generate

    def spy(self, p, *a, **k):
        calls.append(len(p))
        out = real(self, p, *a, **k)
        extras.append(dict(self.last_stats.extra))
        return out

    monkeypatch.setattr(LLM, "generate", spy)
    for mtp in (0, 2):
        whole, whole_err = run(tmp_path / "one.jsonl", mtp)
        assert calls == [5]
        calls.clear()
        monkeypatch.setattr(cli_prompts, "BATCH_TOKENS", 25)  # about two rows per call
        split, split_err = run(tmp_path / "many.jsonl", mtp)
        monkeypatch.undo()
        monkeypatch.setattr(LLM, "generate", spy)
        assert len(calls) >= 3 and sum(calls) == 5
        calls.clear()
        assert split == whole  # same rows in the same order, greedy tokens unchanged
        new = sum(len(r["token_ids"]) for r in split)
        assert f"new tokens {new} ·" in split_err and f"new tokens {new} ·" in whole_err
        if mtp:  # the rates of the batched run come from its calls' summed counters (K shrinks per batch near
            # max_new_tokens, so they differ from the one-call run's)
            last = extras[1:]  # extras[0]: the one-call run
            acc = sum(e["accepted"] for e in last) / sum(e["proposed"] for e in last)
            tps = sum(e["emitted"] for e in last) / sum(e["seq_steps"] for e in last)
            assert f"mtp 2: acceptance {acc:.2f}, {tps:.2f} tokens/step" in split_err, split_err
        extras.clear()
