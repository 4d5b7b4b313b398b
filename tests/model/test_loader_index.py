"""model.safetensors.index.json that is malformed or stale (h2tester s26): a weight_map list or a whole-file list
was a bare AttributeError / TypeError (the CLI printed a traceback, exit 1), a null file name a TypeError, and a
key mapped to a shard without it read as "truncated or corrupted" although the shard is fine. Each is now a
CheckpointError naming the index (or the shard and the key)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tritonseek.engine.llm import DEFAULT_MODEL_DIR
from tritonseek.model.loader import CheckpointError, load_model
from tritonseek.model.ops import Ops


@pytest.fixture
def sharded(tmp_path):
    """The default model in two shards with a correct index; returns (folder, index dict, keys of each shard)."""
    for f in DEFAULT_MODEL_DIR.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, tmp_path / f.name)
    sd = load_file(str(DEFAULT_MODEL_DIR / "model.safetensors"))
    keys = sorted(sd)
    a, b = keys[: len(keys) // 2], keys[len(keys) // 2:]
    save_file({k: sd[k] for k in a}, str(tmp_path / "a.safetensors"))
    save_file({k: sd[k] for k in b}, str(tmp_path / "b.safetensors"))
    index = {"metadata": {}, "weight_map": {**{k: "a.safetensors" for k in a}, **{k: "b.safetensors" for k in b}}}
    return tmp_path, index, a, b


def _write(folder, index):
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def test_correct_index_loads(sharded):
    folder, index, _, _ = sharded
    _write(folder, index)
    assert load_model(folder, ops=Ops("reference"), dtype=torch.float32) is not None


@pytest.mark.parametrize("make,match", [
    (lambda ix: {"weight_map": list(ix["weight_map"].items())}, r"needs a \"weight_map\" object .* weight_map is \[\["),
    (lambda ix: [ix], r"needs a \"weight_map\" object .* the file is \[\{"),
    (lambda ix: {"metadata": {}}, r"needs a \"weight_map\" object .* weight_map is null"),
])
def test_malformed_index_is_a_checkpoint_error(sharded, make, match):
    folder, index, _, _ = sharded
    _write(folder, make(index))
    with pytest.raises(CheckpointError, match=match):
        load_model(folder, ops=Ops("reference"), dtype=torch.float32)


@pytest.mark.parametrize("value,match", [(None, "to None, not a file name"), (".", "to ., a folder, not a file"),
                                         ("c.safetensors", "to c.safetensors, which does not exist")])
def test_bad_file_name_in_index(sharded, value, match):
    folder, index, a, _ = sharded
    index["weight_map"][a[0]] = value
    _write(folder, index)
    with pytest.raises(CheckpointError, match=match):
        load_model(folder, ops=Ops("reference"), dtype=torch.float32)


def test_key_mapped_to_a_shard_without_it_names_the_index(sharded):
    folder, index, a, _ = sharded
    index["weight_map"][a[0]] = "b.safetensors"
    _write(folder, index)
    with pytest.raises(CheckpointError, match=rf"b.safetensors holds no tensor '{a[0]}', but "
                                              r"model.safetensors.index.json maps it there"):
        load_model(folder, ops=Ops("reference"), dtype=torch.float32)
