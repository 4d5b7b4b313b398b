"""``tie_word_embeddings: true`` with an ``lm_head.weight`` stored anyway (h2tester s25 F4): the loader used the stored
head silently, where transformers and vLLM ignore it and use the embedding. Now a stored head equal to the embedding
loads (a harmless copy: it makes no difference which one is used), and one that differs is refused by name, as the
loader refuses other tensors that are not part of the model. Without a stored head the embedding is the head."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tritonseek.engine.llm import DEFAULT_MODEL_DIR, LLM
from tritonseek.model.loader import CheckpointError

PROMPT = "def fibonacci(n):"


def _tied(dst, head: str):
    """The default model in ``dst`` with tie_word_embeddings true; ``head``: "own" (its trained lm_head, which differs
    from the embedding), "copy" (lm_head.weight = the embedding) or "none" (no lm_head.weight)."""
    shutil.copytree(DEFAULT_MODEL_DIR, dst)
    sd = load_file(str(DEFAULT_MODEL_DIR / "model.safetensors"))
    assert not torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"])
    if head == "copy":
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"].clone()
    elif head == "none":
        del sd["lm_head.weight"]
    save_file(sd, str(dst / "model.safetensors"))
    cfg = json.loads((dst / "config.json").read_text())
    cfg["tie_word_embeddings"] = True
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_a_stored_head_that_differs_is_refused_by_name(tmp_path):
    with pytest.raises(CheckpointError, match=r"'lm_head.weight' in model.safetensors differs .* "
                                              r"tie_word_embeddings: true"):
        LLM(_tied(tmp_path / "m", "own"), device="cpu")


def test_a_stored_copy_of_the_embedding_loads_as_the_tied_model(tmp_path):
    none = LLM(_tied(tmp_path / "none", "none"), device="cpu")
    copy = LLM(_tied(tmp_path / "copy", "copy"), device="cpu")
    assert torch.equal(copy.model.lm_head.weight, copy.model.model.embed_tokens.weight)
    assert torch.equal(copy.score(copy.encode(PROMPT)), none.score(none.encode(PROMPT)))
