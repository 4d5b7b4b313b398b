"""examples/eval_tiny.py says whether its held-out files are the training run's (h2tester s25 F5): the split is a
seeded shuffle of the running interpreter's stdlib files, so on Python 3.11 the embedded model (trained on 3.12)
scored 1.14 "held-out" bits/byte against its card's 1.33, partly on training files, with no word. train_tiny records
the split (python version + a hash of the held-out paths) in the model card; eval_tiny compares."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from make_default_model import corpus_files, split_check, split_record  # noqa: E402


def test_split_record_names_this_interpreter_and_is_stable():
    _, held = corpus_files(0)
    rec = split_record(held)
    assert rec["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert len(rec["held_out_files_sha256"]) == 16 and rec == split_record(list(reversed(held)))
    assert split_record(corpus_files(1)[1]) != rec  # another seed, another split


def test_split_check_same_differs_unknown():
    rec = split_record(corpus_files(0)[1])
    assert split_check({"name": "x", **rec}, rec) == "same"
    other = {**rec, "python": "2.7"}
    assert split_check(other, rec).startswith("differs: python 2.7 (card)")
    assert split_check({**rec, "held_out_files_sha256": "0" * 16}, rec).startswith("differs: held_out_files_sha256")
    assert split_check({"name": "tritonseek-tiny"}, rec).startswith("unknown: ")
