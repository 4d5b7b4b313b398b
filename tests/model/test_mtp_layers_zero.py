"""config.json num_nextn_predict_layers 0 on a checkpoint that holds the MTP layer's weights (h2tester s26): the load
failed with "unexpected tensor 'model.layers.2.eh_proj.weight' ... (76 such keys)". The config is the user's switch:
the MTP weights are skipped as with load_model(with_mtp=False), and --mtp says why it cannot run."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tritonseek import LLM, SamplingParams
from tritonseek.engine.llm import DEFAULT_MODEL_DIR
from tritonseek.model.loader import load_model
from tritonseek.model.ops import Ops


@pytest.fixture
def no_mtp_model(tmp_path):
    shutil.copytree(DEFAULT_MODEL_DIR, tmp_path, dirs_exist_ok=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["num_nextn_predict_layers"] == 1
    cfg["num_nextn_predict_layers"] = 0
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_mtp_weights_skipped_when_config_says_zero(no_mtp_model):
    model = load_model(no_mtp_model, ops=Ops("reference"), dtype=torch.float32)
    assert len(model.mtp) == 0
    full = load_model(DEFAULT_MODEL_DIR, ops=Ops("reference"), dtype=torch.float32, with_mtp=False)
    assert model.state_dict().keys() == full.state_dict().keys()
    for k, v in full.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_generate_same_tokens_and_mtp_says_why(no_mtp_model):
    prompts = ["def add(a, b):", "import os"]
    params = SamplingParams(max_new_tokens=8)
    want = [o.token_ids for o in LLM(device="cpu").generate(prompts, params)]
    llm = LLM(str(no_mtp_model), device="cpu")
    assert [o.token_ids for o in llm.generate(prompts, params)] == want
    with pytest.raises(ValueError, match="num_nextn_predict_layers to 0"):
        llm.generate(prompts, params, mtp=1)
