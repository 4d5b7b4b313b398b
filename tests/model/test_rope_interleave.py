"""transformers' DeepseekV3Config.rope_interleave (h2tester s26): false means the checkpoint's q/k rope rows are in
rotate-half order, which tritonseek does not apply; it was ignored and the logits came out 60-90 % off transformers'.
Now a ConfigError naming the field; true (transformers' default, DeepSeek's layout) keeps parity."""

from __future__ import annotations

import json

import pytest
import torch

from tests.model.test_parity import prefill_logits, rel_err
from tests.model.tiny import build_hf_model, save_checkpoint
from tritonseek.engine.llm import DEFAULT_MODEL_DIR
from tritonseek.model.config import ConfigError, ModelConfig
from tritonseek.model.loader import load_model
from tritonseek.model.ops import Ops

BASE = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())


@pytest.mark.parametrize("value", [False, None, 0, "false"])
def test_rope_interleave_other_than_true_is_refused(value):
    with pytest.raises(ConfigError, match="rope_interleave"):
        ModelConfig.from_dict({**BASE, "rope_interleave": value})


def test_rope_interleave_false_checkpoint_is_refused_at_load(tmp_path):
    save_checkpoint(build_hf_model("v3", seed=1, rope_interleave=False), tmp_path)
    with pytest.raises(ConfigError, match="rope_interleave=False"):
        load_model(tmp_path, ops=Ops("reference"), dtype=torch.float32)


def test_rope_interleave_true_matches_transformers(tmp_path):
    hf = build_hf_model("v3", seed=1, rope_interleave=True)
    save_checkpoint(hf, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()).get("rope_interleave") is True
    ours = load_model(tmp_path, ops=Ops("reference"), dtype=torch.float32)
    seq = torch.randint(2, ours.cfg.vocab_size, (30,), generator=torch.Generator().manual_seed(7)).tolist()
    (got,) = prefill_logits(ours, [seq])
    with torch.no_grad():
        want = hf(torch.tensor([seq])).logits[0].float()
    assert rel_err(got, want) <= 1e-4
