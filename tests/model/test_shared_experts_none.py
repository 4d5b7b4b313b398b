"""config.json without shared experts spelled as ``"n_shared_experts": null`` or with the field left out (h2tester
s25 F1): ModelConfig accepts None, and DeepSeek's own modeling_deepseek.py reads it as "no shared experts", but the
MoE layer multiplied moe_intermediate_size by it and every load ended in "unsupported operand type(s) for *: 'int'
and 'NoneType'", naming no field. None must load as 0 does; a checkpoint that does hold shared-expert tensors is then
refused by the loader's unexpected-tensor check, naming the tensor.

On the embedded default model with its shared expert's tensors removed (the same checkpoint with
``n_shared_experts: 0`` is the reference: the logits must be identical, same weights and same code path).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tritonseek.engine.llm import DEFAULT_MODEL_DIR, LLM, SamplingParams
from tritonseek.model.loader import CheckpointError

PROMPT = "def fibonacci(n):"


def _copy(dst, value, *, drop_shared: bool):
    """The default model in ``dst`` with n_shared_experts = ``value`` ("missing": no such field), and without the
    shared experts' tensors when ``drop_shared``."""
    shutil.copytree(DEFAULT_MODEL_DIR, dst)
    if drop_shared:
        sd = load_file(str(DEFAULT_MODEL_DIR / "model.safetensors"))
        save_file({k: v for k, v in sd.items() if ".shared_experts." not in k}, str(dst / "model.safetensors"))
    cfg = json.loads((dst / "config.json").read_text())
    if value == "missing":
        del cfg["n_shared_experts"]
    else:
        cfg["n_shared_experts"] = value
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.fixture(scope="module")
def zero_logits(tmp_path_factory):
    llm = LLM(_copy(tmp_path_factory.mktemp("ns") / "zero", 0, drop_shared=True), device="cpu")
    return llm.score(llm.encode(PROMPT))


@pytest.mark.parametrize("value", [None, "missing"])
def test_no_shared_experts_loads_as_zero(tmp_path, zero_logits, value):
    llm = LLM(_copy(tmp_path / "m", value, drop_shared=True), device="cpu")
    moe = [m for m in llm.model.modules() if hasattr(m, "shared_experts")]
    assert moe and all(m.shared_experts is None for m in moe)
    logits = llm.score(llm.encode(PROMPT))
    assert torch.isfinite(logits).all()
    assert torch.equal(logits, zero_logits)
    assert len(llm.generate(PROMPT, SamplingParams(max_new_tokens=4))[0].token_ids) == 4


@pytest.mark.parametrize("value", [None, "missing"])
def test_no_shared_experts_with_shared_tensors_is_refused_by_name(tmp_path, value):
    with pytest.raises(CheckpointError, match="shared_experts"):
        LLM(_copy(tmp_path / "m", value, drop_shared=False), device="cpu")
