"""`generate --tp N` checks the splits every checkpoint makes before it starts torchrun.

h3tester s24 #3 (minor): `--tp 3` / `--tp 8` on the default model (vocab_size 4096, 4 attention heads) started
torchrun and N ranks that each loaded the model before "vocab_size=4096 is not divisible by ..." (8-15 s). torchrun
is replaced here by a stand-in that records whether it was started.
"""

from __future__ import annotations

import subprocess

import pytest
from typer.testing import CliRunner

from tritonseek.cli import app


class Started(Exception):
    pass


@pytest.fixture
def popen(monkeypatch):
    calls = []

    def fake(*args, **kwargs):
        calls.append(args)
        raise Started  # stop here: the check under test runs before this point

    monkeypatch.setattr(subprocess, "Popen", fake)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return calls


@pytest.mark.parametrize("tp, what", [(3, "vocab_size=4096"), (8, "num_attention_heads=4")])
def test_a_tp_that_does_not_divide_fails_before_torchrun(popen, tp, what):
    r = CliRunner().invoke(app, ["generate", "-p", "x", "--tp", str(tp), "--device", "cpu"])
    assert r.exit_code == 2, r.output
    assert f"{what} is not divisible by the tensor-parallel size {tp}" in r.stderr
    assert popen == []  # torchrun never started


def test_a_tp_that_divides_still_starts_torchrun(popen):
    r = CliRunner().invoke(app, ["generate", "-p", "x", "--tp", "2", "--device", "cpu"])
    assert isinstance(r.exception, Started) and len(popen) == 1
    assert "torch.distributed.run" in " ".join(popen[0][0])
