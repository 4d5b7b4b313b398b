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


@pytest.mark.parametrize("nextn,with_mtp", [(0, True), (0, False), (1, False)])
def test_a_plain_decoder_layer_past_num_hidden_layers_is_not_skipped(tmp_path, nextn, with_mtp):
    """Only an MTP layer (one with eh_proj) past num_hidden_layers is skipped: a checkpoint without MTP whose
    config says one decoder layer too few must not load as a silently truncated model."""
    from safetensors.torch import load_file, save_file

    from tritonseek.model.loader import CheckpointError

    shutil.copytree(DEFAULT_MODEL_DIR, tmp_path, dirs_exist_ok=True)
    sd = load_file(str(tmp_path / "model.safetensors"))
    save_file({k: v for k, v in sd.items() if not k.startswith("model.layers.2.")}, str(tmp_path / "model.safetensors"))
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(num_hidden_layers=1, num_nextn_predict_layers=nextn)  # the checkpoint has 2 decoder layers
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model.layers.1."):
        load_model(tmp_path, ops=Ops("reference"), dtype=torch.float32, with_mtp=with_mtp)
