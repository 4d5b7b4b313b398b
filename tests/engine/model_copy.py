"""Test helper: a copy of the embedded default model with tokenizer_config.json entries changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tritonseek.engine.llm import DEFAULT_MODEL_DIR


def default_model_with(tmp_path: Path, **tokenizer_config) -> Path:
    """Copy the default model to tmp_path / "m" and update its tokenizer_config.json with the given keys."""
    dst = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL_DIR, dst)
    cfg = json.loads((dst / "tokenizer_config.json").read_text())
    cfg.update(tokenizer_config)
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg))
    return dst
