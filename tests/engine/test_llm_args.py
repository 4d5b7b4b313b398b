"""LLM argument checks found by session 21's fresh-user tester (h5 s21): each test fails without its fix."""

from __future__ import annotations

import numpy as np
import pytest

from tritonseek import LLM, SamplingParams


@pytest.fixture(scope="module")
def llm():
    return LLM()  # the embedded default model


def test_score_checks_token_ids(llm):
    """llm.score([4101]) / ([-1, 3]) was torch's "index out of range in self", [1.5, 2] scored token 1 and 3000
    tokens past max_position_embeddings=2048 were scored silently (tester21 #1)."""
    vocab, max_pos = llm.config.vocab_size, llm.config.max_position_embeddings
    ids = llm.encode("def f(x):")
    want = llm.score(ids)
    assert (llm.score(tuple(np.int64(i) for i in ids)) == want).all()
    for bad, i in (([vocab + 5], 0), ([3, -1], 1)):
        with pytest.raises(ValueError, match=rf"^token_ids\[{i}\]={bad[i]} is outside the vocabulary \[0, {vocab}\)"):
            llm.score(bad)
    for bad, i in (([1.5, 2], 0), ([2, True], 1), ([2, "3"], 1), ([2, None], 1)):
        with pytest.raises(TypeError, match=rf"^token_ids\[{i}\] must be an int, got {type(bad[i]).__name__}"):
            llm.score(bad)
    with pytest.raises(TypeError, match="^token_ids must be a list of ints, got str"):
        llm.score("abc")
    with pytest.raises(ValueError, match=f"^token_ids has {max_pos + 1} tokens, more than max_position_embeddings"):
        llm.score([1] * (max_pos + 1))


def test_generate_takes_a_tuple_of_params(llm):
    """A tuple of SamplingParams was "params for prompt 0 must be a SamplingParams, got tuple" while a tuple of
    prompts was taken (tester21 #2)."""
    p = (SamplingParams(max_new_tokens=2, ignore_eos=True), SamplingParams(max_new_tokens=3, ignore_eos=True))
    outs = llm.generate(("a", "b"), p)
    assert [len(o.token_ids) for o in outs] == [2, 3]
    with pytest.raises(ValueError, match="got 1 SamplingParams for 2 prompts"):
        llm.generate(["a", "b"], (SamplingParams(),))


def test_prompt_token_id_past_the_vocabulary_is_a_value_error(tmp_path):
    """A tokenizer with an added token past vocab_size: the prompt's id reached the embedding (IndexError traceback,
    rc 1, on CPU; a device-side assert on CUDA) (tester21 #3). validate_requests names the prompt and the id, and
    the CLI prints it as a one-line error (rc 2)."""
    import json
    import shutil
    from importlib.resources import files

    from typer.testing import CliRunner

    from tritonseek.cli import app

    src = files("tritonseek") / "data" / "default_model"
    model = tmp_path / "m_bigtok"
    shutil.copytree(str(src), model)
    tok = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))
    tok["added_tokens"].append({"id": 5000, "content": "<|zzz|>", "single_word": False, "lstrip": False,
                                "rstrip": False, "normalized": False, "special": False})
    (model / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    llm = LLM(str(model))
    vocab = llm.config.vocab_size
    big = max(llm.encode("hello <|zzz|> x"))  # 5000, or the next free id (4096) with some tokenizers versions
    assert big >= vocab
    with pytest.raises(ValueError, match=f"^prompt 1 has token id {big} outside the vocabulary \\(vocab_size={vocab}\\)"):
        llm.generate(["x", "hello <|zzz|> x"], SamplingParams(max_new_tokens=2))
    assert len(llm.generate("hello x", SamplingParams(max_new_tokens=2, ignore_eos=True))[0].token_ids) == 2
    r = CliRunner().invoke(app, ["generate", "-m", str(model), "-p", "hello <|zzz|> x", "-n", "3"])
    assert r.exit_code == 2 and f"token id {big} outside the vocabulary" in r.stderr, (r.exit_code, r.output)


def test_empty_model_name_is_refused(tmp_path, monkeypatch):
    """LLM("") / -m "" meant the current folder (Path("") == Path(".")): inside a checkpoint folder it loaded that
    checkpoint, elsewhere the error named "." (tester21 #6)."""
    from importlib.resources import files

    from typer.testing import CliRunner

    from tritonseek.cli import app
    from tritonseek.engine.llm import ModelNotFoundError

    monkeypatch.chdir(str(files("tritonseek") / "data" / "default_model"))  # a checkpoint folder
    for name in ("", " "):
        with pytest.raises(ModelNotFoundError, match="is empty"):
            LLM(name)
    r = CliRunner().invoke(app, ["generate", "-p", "x", "-n", "2", "-m", ""])
    assert r.exit_code == 2 and "is empty" in r.stderr, (r.exit_code, r.output)


def test_on_text_and_encode_arguments_are_checked_first(llm, monkeypatch):
    """on_text=5 was "'int' object is not callable" from inside the decode loop after the prefill ran; encode(5) an
    AttributeError in the tokenizer (tester21 #7)."""
    ran = []
    monkeypatch.setattr(llm, "_run", lambda *a, **k: ran.append(1))
    for bad in (5, "print"):
        with pytest.raises(TypeError, match=f"^on_text must be a callable .* got {type(bad).__name__}"):
            llm.generate("x", SamplingParams(max_new_tokens=2), on_text=bad)
    assert not ran
    with pytest.raises(TypeError, match="^prompt must be a str, got int"):
        llm.encode(5)
    with pytest.raises(TypeError, match="^chat must be a bool"):
        llm.encode("x", chat=1)


def test_another_checkpoints_model_card_is_not_read(tmp_path):
    """A copied checkpoint whose optional tritonseek_model.json is not JSON failed to load with "error: Expecting
    value: line 2 column 1" naming no file (tester21 #12): the card is the embedded model's, read only for it."""
    import shutil
    from importlib.resources import files

    model = tmp_path / "m_badcard"
    shutil.copytree(str(files("tritonseek") / "data" / "default_model"), model)
    (model / "tritonseek_model.json").write_bytes(b'\xff\xfe{"note": ')
    out = LLM(str(model)).generate("x", SamplingParams(max_new_tokens=2, ignore_eos=True))
    assert len(out[0].token_ids) == 2
    assert LLM().model_info.get("note")  # the embedded model still has its card


def test_mtp_without_mtp_layer_names_the_layer_and_model_not_found_says_both(monkeypatch):
    """The --mtp error printed "model.layers.{num_hidden_layers}.*" literally; a mistyped relative folder
    "models/foo" was only "not in the local Hugging Face cache" (tester21 #16)."""
    import torch

    from tritonseek.engine.llm import ModelNotFoundError, resolve_model_path

    llm = LLM()
    n = llm.config.num_hidden_layers
    monkeypatch.setattr(llm.model, "mtp", torch.nn.ModuleList())
    with pytest.raises(ValueError, match=rf"MTP layer \(model\.layers\.{n}\.\*\), and this checkpoint has none"):
        llm.generate("x", SamplingParams(max_new_tokens=2), mtp=1)
    with pytest.raises(ModelNotFoundError, match=r"^model 'models/foo-not-here' is no folder here \(.*models/foo-not-here "
                                                 r"does not exist\) and not in the local Hugging Face cache"):
        resolve_model_path("models/foo-not-here")


def test_stream_flushes_an_incomplete_utf8_tail_at_the_end(llm):
    """A sequence ending mid-character: the returned text ends with U+FFFD, the streamed pieces had dropped it, so
    `generate --prompt` (streamed) and --prompts-file (text) printed different text (tester21 #10)."""
    ids = llm.tokenizer.tok.encode("😀 中文", add_special_tokens=False).ids
    for k in range(1, len(ids) + 1):
        st = llm.tokenizer.stream()
        streamed = "".join(st.step(t) for t in ids[:k]) + st.finish(ids[:k])
        assert streamed == llm.tokenizer.decode(ids[:k]), k
    assert st.finish(ids) == ""  # nothing twice
    acc = {}
    prompts = ["é ü 中文 😀 ", "def f(x):", "# ∑ → ", "x"] * 4
    outs = llm.generate(prompts, [SamplingParams(temperature=2.0, seed=i, max_new_tokens=40) for i in range(16)],
                        on_text=lambda i, d: acc.__setitem__(i, acc.get(i, "") + d))
    assert [acc.get(i, "") for i in range(16)] == [o.text for o in outs]
    assert any(o.text.endswith("\ufffd") for o in outs)  # the case is exercised (seed 12 in the tester's run)


def test_tp_takes_numpy_integers():
    """TP(np.int64(0), np.int64(2)) was "TP rank must be an int" (the scalar rule takes numpy integers; h5 s21)."""
    from tritonseek.parallel import TP

    t = TP(np.int64(1), np.int32(2))
    assert t == TP(1, 2) and type(t.rank) is int and type(t.world_size) is int
    for bad in (True, 1.0, "1", None):
        with pytest.raises(TypeError, match="^TP rank must be an int"):
            TP(bad, 2)
