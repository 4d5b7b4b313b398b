"""tokenizer_config.json naming special tokens that tokenizer.json lacks (stop 25, "noticed, left alone"):

- an unknown ``eos_token`` was dropped silently, so a checkpoint whose config.json gives no eos_token_id never
  stopped on EOS. Now it is a TokenizerWarning kept in ``TextTokenizer.warnings`` and printed by ``generate`` as one
  ``warning:`` line; the behaviour is documented (not used; the config's eos_token_id still stops generation).
- ``--chat`` with an unknown ``bos_token`` (and no add_bos_token) wrote "<s>" into the prompt as plain text. Now a
  TokenizerError naming bos_token and the token, one line and exit 2 from the CLI.

transformers 5.24, for comparison (checked by hand, not a test dependency): it adds both as new tokens past the
vocabulary (4096 / 4097 for the default model), so its EOS id is one the model cannot produce and its chat BOS id is
outside the embedding.
"""

from __future__ import annotations

import json
import warnings

import pytest
from typer.testing import CliRunner

from tests.engine.model_copy import default_model_with
from tritonseek.cli import app
from tritonseek.engine.llm import DEFAULT_MODEL_DIR, LLM
from tritonseek.engine.tokenizer import TextTokenizer, TokenizerError, TokenizerWarning


def test_an_unknown_eos_token_warns_naming_the_field_and_token(tmp_path):
    d = default_model_with(tmp_path, eos_token="<|unknown_eos|>")
    with pytest.warns(TokenizerWarning, match=r"^tokenizer_config.json: eos_token '<\|unknown_eos\|>' is not a token "
                                              r"of tokenizer.json and is not used: generation stops on the "
                                              r"eos_token_id of config.json / generation_config.json"):
        tok = TextTokenizer(d)
    assert tok.eos_token_id is None and len(tok.warnings) == 1 and "'<|unknown_eos|>'" in tok.warnings[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known EOS: no warning
        assert TextTokenizer(DEFAULT_MODEL_DIR).warnings == []


def test_generate_prints_the_eos_warning_as_one_line(tmp_path):
    d = default_model_with(tmp_path, eos_token="<|unknown_eos|>")
    r = CliRunner().invoke(app, ["generate", "-p", "def f(", "-n", "2", "--model", str(d)])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stderr.splitlines() if "eos_token" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: tokenizer_config.json: eos_token '<|unknown_eos|>' is "
                                                   "not a token of tokenizer.json"), r.stderr
    assert "TokenizerWarning" not in r.stderr


def test_chat_with_an_unknown_bos_token_is_an_error_naming_it(tmp_path):
    d = default_model_with(tmp_path, bos_token="<s>")
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    del cfg["add_bos_token"]  # absent: true only for a BOS tokenizer.json has, so plain prompts load as before
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    llm = LLM(d, device="cpu")
    assert llm.tokenizer.encode("x") == llm.tokenizer.tok.encode("x", add_special_tokens=False).ids
    with pytest.raises(TokenizerError, match=r"^tokenizer_config.json: bos_token '<s>' is not a token of "
                                             r"tokenizer.json, and chat_template writes it"):
        llm.tokenizer.apply_chat_template("hi")
    r = CliRunner().invoke(app, ["generate", "-p", "hi", "-n", "2", "--chat", "--model", str(d)])
    assert r.exit_code == 2 and r.stderr.strip().splitlines()[-1].startswith(
        "error: tokenizer_config.json: bos_token '<s>' is not a token of tokenizer.json"), r.output
    assert r.stdout == ""  # nothing generated from a prompt with "<s>" as text


def test_chat_template_without_bos_token_is_unaffected(tmp_path):
    d = default_model_with(tmp_path, bos_token="<s>", add_bos_token=False,
                chat_template="{% for m in messages %}# User: {{ m['content'] }}\n{% endfor %}# Assistant:\n")
    tok = TextTokenizer(d)
    assert tok.decode(tok.apply_chat_template("hi")) == "# User: hi\n# Assistant:"  # jinja drops the last newline
