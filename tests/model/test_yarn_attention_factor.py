"""YaRN's cos/sin attention factor (rope_scaling mscale / mscale_all_dim) against transformers.

HF's DeepSeek rotary embedding multiplies cos and sin by yarn_mscale(factor, mscale) / yarn_mscale(factor,
mscale_all_dim); tritonseek left it out, invisible for released configs (mscale == mscale_all_dim gives 1) but
13-45 % off in the logits for a yarn config with other values (h2tester s26).
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.model.test_parity import prefill_logits, rel_err
from tests.model.tiny import V3_KW, build_hf_model, save_checkpoint
from tritonseek.model.config import ModelConfig, yarn_attention_factor
from tritonseek.model.layers import RotaryEmbedding
from tritonseek.model.loader import load_model
from tritonseek.model.ops import Ops

_RS = {k: v for k, v in V3_KW["rope_scaling"].items() if k not in ("mscale", "mscale_all_dim")}


@pytest.mark.parametrize("kind", ["v3", "v2"])
@pytest.mark.parametrize("mscales", [{"mscale": 1.0, "mscale_all_dim": 0.707}, {}], ids=["unequal", "absent"])
def test_logits_match_transformers_with_yarn_attention_factor(tmp_path, kind, mscales):
    hf = build_hf_model(kind, seed=1, rope_scaling={**_RS, **mscales})
    save_checkpoint(hf, tmp_path)
    ours = load_model(tmp_path, ops=Ops("reference"), dtype=torch.float32)
    assert ours.rope.attention_factor != 1.0
    g = torch.Generator().manual_seed(7)
    seq = torch.randint(2, ours.cfg.vocab_size, (40,), generator=g).tolist()
    (got,) = prefill_logits(ours, [seq])
    with torch.no_grad():
        want = hf(torch.tensor([seq])).logits[0].float()
    assert rel_err(got, want) <= 1e-4  # V3 0.13-0.45, V2 0.05-0.22 without the factor


def test_attention_factor_values_and_cos_sin_tables():
    base = build_hf_model("v3", seed=0).config.to_dict()
    for rs, want in (
        (None, 1.0),
        ({**_RS, "mscale": 0.707, "mscale_all_dim": 0.707}, 1.0),  # every released config: equal mscales
        ({**_RS, "mscale": 1.0, "mscale_all_dim": 0.707}, (0.1 * math.log(4) + 1) / (0.0707 * math.log(4) + 1)),
        ({**_RS}, 0.1 * math.log(4) + 1),  # missing: mscale 1, mscale_all_dim 0
        ({**_RS, "factor": 1.0, "mscale": 1.0}, 1.0),  # no interpolation, no correction
    ):
        cfg = ModelConfig.from_dict({**base, "rope_scaling": rs})
        assert yarn_attention_factor(cfg.rope_scaling) == pytest.approx(want, rel=1e-12)
        rope = RotaryEmbedding(cfg)
        pos = torch.arange(0, cfg.max_position_embeddings, 37)
        cos, sin = rope.cos_sin(pos)
        torch.testing.assert_close(cos * cos + sin * sin, torch.full_like(cos, want * want), rtol=1e-5, atol=0)
        # the fused kernels' table carries the same values as the torch path
        torch.testing.assert_close(rope.cos_sin_cache(torch.device("cpu"))[pos], torch.cat([cos, sin], -1),
                                   rtol=0, atol=0)
