"""A safetensors path that is not a readable file is named for what it is (h2tester s25 F7): a dangling symlink (an
interrupted Hugging Face download leaves snapshot links to blobs that never arrived) and a folder were both reported
as "the file is truncated or corrupted", sending the user to re-check a file that is not there."""

from __future__ import annotations

import shutil

import pytest

from tritonseek.engine.llm import DEFAULT_MODEL_DIR
from tritonseek.model.loader import CheckpointError
from tritonseek.model.loader import _open


def _copy_without_weights(tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL_DIR, dst)
    (dst / "model.safetensors").unlink()
    return dst / "model.safetensors"


def test_dangling_symlink_is_named(tmp_path):
    f = _copy_without_weights(tmp_path)
    f.symlink_to(tmp_path / "blobs" / "0123abcd")
    with pytest.raises(CheckpointError, match=r"symlink to .*0123abcd, which does not exist") as e:
        _open(f)
    assert "truncated" not in str(e.value)


def test_folder_is_named(tmp_path):
    f = _copy_without_weights(tmp_path)
    f.mkdir()
    with pytest.raises(CheckpointError, match="is a folder, not a file") as e:
        _open(f)
    assert "truncated" not in str(e.value)


def test_truncated_file_still_says_so(tmp_path):
    f = _copy_without_weights(tmp_path)
    f.write_bytes((DEFAULT_MODEL_DIR / "model.safetensors").read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        _open(f)
