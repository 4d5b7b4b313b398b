"""An empty prompt with nothing to feed says why (h2tester s25 F6): with add_bos_token false in tokenizer_config.json
the message said "(and the model has no BOS token)" while the tokenizer has one; it just is not added."""

from __future__ import annotations


import pytest

from tests.engine.model_copy import default_model_with
from tritonseek.engine.llm import LLM


def _model(tmp_path, **tokenizer_config):
    return LLM(default_model_with(tmp_path, **tokenizer_config), device="cpu")


def test_add_bos_token_false_is_named(tmp_path):
    llm = _model(tmp_path, add_bos_token=False)
    with pytest.raises(ValueError, match=r"prompt 0 is empty after tokenization \(tokenizer_config.json says "
                                         r"add_bos_token: false\)"):
        llm.generate("")
    assert llm.generate("", chat=True)  # the chat path writes one BOS itself


def test_no_bos_token_is_named(tmp_path):
    llm = _model(tmp_path, bos_token=None, add_bos_token=True)
    with pytest.raises(ValueError, match=r"empty after tokenization \(the tokenizer has no BOS token\)"):
        llm.generate("")


def test_an_unknown_bos_token_is_named_when_it_is_to_be_added(tmp_path):
    """bos_token naming a token tokenizer.json lacks was dropped silently: prompt "x" went in as 1 token, no BOS
    (h2tester s25 F6). With add_bos_token true it is an error naming bos_token and the token."""
    from tritonseek.engine.tokenizer import TokenizerError

    with pytest.raises(TokenizerError, match=r"tokenizer_config.json: bos_token '<s>' is not a token of "
                                             r"tokenizer.json, but add_bos_token is true"):
        _model(tmp_path, bos_token="<s>", add_bos_token=True)
    llm = _model(tmp_path / "off", bos_token="<s>", add_bos_token=False)  # not to be added: loads, as before
    assert llm.tokenizer.encode("x") == llm.tokenizer.tok.encode("x", add_special_tokens=False).ids
