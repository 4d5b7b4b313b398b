"""quantization_config values that must be refused with a ConfigError naming the field (h2tester s26): a
weight_block_size that is not a list (128, null, a string of digits) was a bare TypeError "'int' object is not
iterable" (``tritonseek generate`` printed it as the whole error line)."""

from __future__ import annotations

import json

import pytest

from tritonseek.engine.llm import DEFAULT_MODEL_DIR
from tritonseek.model.config import ConfigError, ModelConfig

BASE = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())


def _quant(**changes) -> dict:
    raw = json.loads(json.dumps(BASE))
    raw["quantization_config"] = {**raw["quantization_config"], **changes}
    return raw


@pytest.mark.parametrize("block", [128, None, "128", {"0": 128, "1": 128}, [128], [128, 64], [128, 128, 1]])
def test_weight_block_size_not_128x128_names_the_field(block):
    with pytest.raises(ConfigError, match="quantization_config.weight_block_size"):
        ModelConfig.from_dict(_quant(weight_block_size=block))


@pytest.mark.parametrize("block", [[128, 128], (128, 128)])
def test_weight_block_size_128x128_is_accepted(block):
    q = ModelConfig.from_dict(_quant(weight_block_size=block)).quantization_config
    assert q.weight_block_size == (128, 128)
