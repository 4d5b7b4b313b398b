"""Tokenizer of a checkpoint folder: HF ``tokenizers`` for encode/decode, jinja2 for chat templates.

Reads ``tokenizer.json`` and ``tokenizer_config.json`` (bos/eos tokens, ``add_bos_token``,
``chat_template``) the way transformers' AutoTokenizer does for DeepSeek checkpoints, without
importing transformers at run time.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


class TokenizerError(ValueError):
    """Missing or unusable tokenizer files."""


class TokenizerWarning(UserWarning):
    """A tokenizer_config.json entry that is not used as written (see :attr:`TextTokenizer.warnings`)."""


def _token_text(v) -> str | None:
    # tokenizer_config stores special tokens either as strings or as AddedToken dicts.
    if v is None:
        return None
    if isinstance(v, dict):
        return v.get("content")
    return str(v)


class TextTokenizer:
    """Encode prompts, decode ids, stream text across token boundaries.

    Args:
        folder: checkpoint folder holding ``tokenizer.json`` (+ optional ``tokenizer_config.json``).
    Raises:
        TokenizerError: ``tokenizer.json`` missing or unreadable, ``tokenizer_config.json`` not a JSON object, or
            its ``bos_token`` not in tokenizer.json's vocabulary while ``add_bos_token`` is true (absent, it is true
            only for a BOS the vocabulary has: an unknown one is then not added, as before).
    Warns:
        TokenizerWarning: ``eos_token`` is not in tokenizer.json's vocabulary. It is not used (``eos_token_id`` None):
            generation stops on the eos_token_id of config.json / generation_config.json, or else only at
            max_new_tokens. transformers 5.24 adds it to the vocabulary as a new token (id 4096 or up for the
            4096-token default model: one the model cannot produce), so it never ends a generation there either; its generate
            stops on the config's eos_token_id as here. The message is also kept in :attr:`warnings`.
    """

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"tokenizer.json not found in {folder}")
        try:
            self.tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise TokenizerError(f"cannot read {path}: {e}") from None
        cfg_path = folder / "tokenizer_config.json"
        try:
            self.config = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        except (ValueError, OSError) as e:
            raise TokenizerError(f"cannot read {cfg_path}: {e}") from None
        if not isinstance(self.config, dict):
            raise TokenizerError(f"{cfg_path} must hold a JSON object")
        self.bos_token = _token_text(self.config.get("bos_token"))
        self.eos_token = _token_text(self.config.get("eos_token"))
        self.bos_token_id = self.tok.token_to_id(self.bos_token) if self.bos_token else None
        self.eos_token_id = self.tok.token_to_id(self.eos_token) if self.eos_token else None
        self.add_bos_token = bool(self.config.get("add_bos_token", self.bos_token_id is not None))
        if self.add_bos_token and self.bos_token and self.bos_token_id is None:
            # was dropped silently: every prompt went in without the BOS the config asks for (h2tester s25 F6)
            raise TokenizerError(f"{cfg_path}: bos_token {self.bos_token!r} is not a token of tokenizer.json, but "
                                 "add_bos_token is true: name the BOS token tokenizer.json has, or set add_bos_token: "
                                 "false")
        self.chat_template = self.config.get("chat_template")
        self.warnings: list[str] = []  # one line each: a config entry not used as written (the CLI prints them)
        if self.eos_token and self.eos_token_id is None:
            # was dropped silently: a checkpoint whose config.json gives no eos_token_id then never stopped on EOS
            self._warn(f"{cfg_path.name}: eos_token {self.eos_token!r} is not a token of tokenizer.json and is not "
                       "used: generation stops on the eos_token_id of config.json / generation_config.json, or else "
                       "only at max_new_tokens")

    def _warn(self, msg: str) -> None:
        import warnings

        self.warnings.append(msg)
        warnings.warn(msg, TokenizerWarning, stacklevel=3)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text``, with one BOS in front when the checkpoint asks for it.

        Raises TokenizerError when ``text`` is not valid Unicode (e.g. a lone surrogate)."""
        _check_text(text)
        ids = self.tok.encode(text, add_special_tokens=False).ids
        if add_bos is None:
            add_bos = self.add_bos_token
        if add_bos and self.bos_token_id is not None and (not ids or ids[0] != self.bos_token_id):
            ids = [self.bos_token_id] + ids
        return ids

    def apply_chat_template(self, prompt: str) -> list[int]:
        """Render the checkpoint's chat template for one user turn and encode it with exactly one BOS.

        Raises:
            TokenizerError: the checkpoint has no chat template, or it does not compile or render, or it writes a
                ``bos_token`` that tokenizer.json lacks. That BOS went into the prompt as plain text ("<s>" as the
                tokens of "<", "s", ">"); transformers 5.24 adds it as a new token (id 4096 or up for the 4096-token
                default model, outside its embedding, so the model fails on it): neither gives the model a BOS it knows.
        """
        if not self.chat_template:
            raise TokenizerError("this checkpoint's tokenizer_config.json has no chat_template; drop --chat")
        _check_text(prompt)
        from jinja2 import meta
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(msg):
            raise TokenizerError(f"chat template error: {msg}")

        from jinja2 import TemplateError

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        if not isinstance(self.chat_template, str):
            raise TokenizerError("tokenizer_config.json: chat_template must be a string")
        if self.bos_token and self.bos_token_id is None:
            try:
                writes_bos = "bos_token" in meta.find_undeclared_variables(env.parse(self.chat_template))
            except TemplateError:  # reported by the render below, in its words
                writes_bos = False
            if writes_bos:
                raise TokenizerError(f"tokenizer_config.json: bos_token {self.bos_token!r} is not a token of "
                                     "tokenizer.json, and chat_template writes it (--chat would send it as plain "
                                     "text): name the BOS token tokenizer.json has, or set bos_token to null")
        try:
            text = env.from_string(self.chat_template).render(
                messages=[{"role": "user", "content": prompt}],
                add_generation_prompt=True,
                bos_token=self.bos_token or "",
                eos_token=self.eos_token or "",
            )
        except (TemplateError, LookupError, TypeError, ValueError) as e:
            if isinstance(e, TokenizerError):
                raise
            raise TokenizerError(f"tokenizer_config.json chat_template failed to render: {type(e).__name__}: {e}") from None
        ids = self.tok.encode(text, add_special_tokens=False).ids
        # Templates usually write the BOS text themselves; never end up with two (or none).
        while len(ids) >= 2 and self.bos_token_id is not None and ids[0] == ids[1] == self.bos_token_id:
            ids = ids[1:]
        if self.bos_token_id is not None and (not ids or ids[0] != self.bos_token_id):
            ids = [self.bos_token_id] + ids
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def stream(self) -> "TextStream":
        return TextStream(self)


class TextStream:
    """Incremental detokenizer: yields text only once its UTF-8 bytes are complete; ``finish`` gives what the
    full decode has beyond that (a trailing incomplete UTF-8 sequence as U+FFFD), so the pieces add up to it."""

    def __init__(self, tokenizer: TextTokenizer):
        self._tok = tokenizer.tok
        self._decode = tokenizer.decode
        self._stream = DecodeStream(skip_special_tokens=True)
        self._text = ""  # everything step() has returned

    def step(self, token_id: int) -> str:
        piece = self._stream.step(self._tok, token_id) or ""
        self._text += piece
        return piece

    def finish(self, ids: list[int]) -> str:
        """The rest of ``decode(ids)`` (ids: every token given to step) past the text already returned; "" when
        nothing is left or the full decode does not extend it. A sequence ending mid-character streamed less than
        its RequestOutput.text holds (tester21 #10)."""
        full = self._decode(ids)
        rest = full[len(self._text):] if full.startswith(self._text) else ""
        self._text += rest
        return rest


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TokenizerError(f"prompt is not valid Unicode text ({e.reason} at character {e.start})") from None
