"""``tritonseek generate --prompts-file``: reading the JSONL prompt rows, and handing them to the ranks of ``--tp``.

Under ``--tp N`` the CLI re-launches itself under torchrun. The ranks used to open ``--prompts-file`` again, which
only works for a regular file: standard input (``-``, a pipe) had been read to its end by the parent, and a shell's
``<(cmd)`` (``/dev/fd/63``) is not inherited, so every rank said "holds no prompts" / "does not exist" after the
parent had accepted the file (tester22 #1). Now the parent writes the rows it read and checked to a private
temporary file and the ranks read that (:func:`hand_to_ranks` / :func:`handed_rows`), whatever the source was.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
import sys
import tempfile
import uuid
from pathlib import Path

RESULT_FIELDS = ("output", "token_ids", "finish_reason")  # what --output adds to each prompts-file row
HANDOFF_ENV = "_TRITONSEEK_TP_PROMPTS"  # set by the --tp parent for its torchrun ranks only


class PromptsFileError(ValueError):
    """--prompts-file cannot be used; the message is one line for the user, naming --prompts-file."""


class JsonNumber:
    """A non-integer number of a prompts-file row, kept as its JSON text: --output writes the row back as it was. As a
    float, 1e400 came back as ``Infinity`` (no JSON: strict readers refuse the line), 1.00000000000000001 as 1.0 and
    1E5 as 100000.0 (h2tester s25 F2). Integers stay Python ints (exact either way)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __eq__(self, other) -> bool:
        return isinstance(other, JsonNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"JsonNumber({self.text!r})"


def loads_row(text: str):
    """json.loads with non-integer numbers as :class:`JsonNumber` (NaN / Infinity too, which Python's json reads)."""
    return json.loads(text, parse_float=JsonNumber, parse_constant=JsonNumber)


def dumps_row(value) -> str:
    """The JSON text of a row read by :func:`loads_row`: json.dumps(value, ensure_ascii=False) with each JsonNumber
    written as its text. Each JsonNumber goes through json's own encoder as a placeholder string made of a random tag
    and its index, replaced afterwards: a hand-written recursive encoder hit Python's recursion limit at half the
    nesting json takes. A lone surrogate passes through as there (read_prompts refuses it when encoding to UTF-8)."""
    nums: list[str] = []
    tag = uuid.uuid4().hex  # no text of the row can hold it by chance

    def number(o):
        if not isinstance(o, JsonNumber):
            raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")
        nums.append(o.text)
        return f"{tag}{len(nums) - 1}"

    text = json.dumps(value, ensure_ascii=False, default=number)
    return re.sub(f'"{tag}(\\d+)"', lambda m: nums[int(m.group(1))], text) if nums else text


def result_lines(rows: list[dict], results) -> list[str]:
    """The --output JSONL lines: each row with this run's ``output``, ``token_ids`` and ``finish_reason`` (the
    RequestOutput of the same position in ``results``; a shorter ``results``, a run stopped early, gives its rows
    only), numbers as the input wrote them (JsonNumber)."""
    return [dumps_row({**row, "output": r.text, "token_ids": r.token_ids, "finish_reason": r.finish_reason}) + "\n"
            for row, r in zip(rows, results)]


def _rows_with(names: tuple, rows: list[dict], row_lines: list[int]) -> tuple[int, str, str] | None:
    """For the field notes: the first row holding any of ``names`` as (its line, "a field 'x'" / "fields 'x', 'y'",
    " (N rows in all)" or ""), None when no row does. Rows are counted, not fields (tester22 #4b)."""
    hits = [(n, [k for k in names if k in row]) for row, n in zip(rows, row_lines)]
    hits = [(n, ks) for n, ks in hits if ks]
    if not hits:
        return None
    n, ks = hits[0]
    fields = f"a field {ks[0]!r}" if len(ks) == 1 else "fields " + ", ".join(repr(k) for k in ks)
    return n, fields, f" ({len(hits)} rows in all)" if len(hits) > 1 else ""


def result_field_note(label: str, rows: list[dict], row_lines: list[int], kept: bool = True) -> str | None:
    """A note when prompt rows already hold fields the results write: --output replaces their values (a gold
    'output' of an eval set vanished from the results without a word; tester21 #11). Not an error: feeding a
    previous run's results back in is a supported round trip, and the prompts file itself is never overwritten.
    ``label``: the file as the messages name it; ``kept``: the input is a regular file, which still holds the old
    values afterwards (a pipe on standard input does not: nothing is said about keeping them)."""
    found = _rows_with(RESULT_FIELDS, rows, row_lines)
    if found is None:
        return None
    n, fields, more = found
    keep = " (the prompts file keeps the old ones)" if kept else ""
    return (f"note: --prompts-file {label} line {n} already has {fields}{more}; --output replaces the values of "
            f"{', '.join(RESULT_FIELDS)} with this run's results{keep}")


# A --prompts-file runs as consecutive generate calls of at most this many prompt + new tokens each: as one call, a
# 1000-row file (113k prompt tokens) took 2.1 GB on the tiny default model and a 10k-row one would not fit in memory,
# losing every row (tester23 #7). Under it (most files) nothing changes: one call.
BATCH_TOKENS = 65536


def batches(lengths: list[int], extra: int) -> list[range]:
    """The rows of each generate call, in order: consecutive ranges whose sum of (prompt tokens + ``extra``, the
    new tokens a row may add) stays within ``BATCH_TOKENS``; a row larger than that runs alone. [] for no rows."""
    out, start, total = [], 0, 0
    for i, n in enumerate(lengths):
        if i > start and total + n + extra > BATCH_TOKENS:
            out.append(range(start, i))
            start, total = i, 0
        total += n + extra
    return out + [range(start, len(lengths))] if lengths else out


def add_stats(total, s):
    """``total`` (None at first) plus the GenerationStats ``s`` of the next call: counts and times add up; the MTP
    rates are recomputed from the summed counters (``LLM._speculate``'s proposed / accepted / emitted / seq_steps)."""
    if total is None:
        return s
    for f in ("prompt_tokens", "new_tokens", "prefill_s", "decode_s", "decode_steps"):
        setattr(total, f, getattr(total, f) + getattr(s, f))
    for k, v in s.extra.items():
        if k in ("graph_steps", "graph_capture_s", "proposed", "accepted", "emitted", "seq_steps"):
            total.extra[k] = total.extra.get(k, 0) + v
    if "proposed" in total.extra:
        e = total.extra  # None when nothing was drafted / no step ran, as LLM._speculate reports it
        e["acceptance"] = e["accepted"] / e["proposed"] if e["proposed"] else None
        e["tokens_per_step"] = e["emitted"] / e["seq_steps"] if e["seq_steps"] else None
    return total


# SamplingParams' fields (and vLLM's max_tokens): per-row values in a prompts file are not read
PARAM_FIELDS = ("temperature", "top_k", "top_p", "max_new_tokens", "max_tokens", "seed", "stop_token_ids", "ignore_eos")


def param_field_note(label: str, rows: list[dict], row_lines: list[int]) -> str | None:
    """A note when prompt rows hold sampling settings: they are not read (the command line's apply to every row),
    yet --output echoes them beside results made otherwise (a row asking max_new_tokens 2 came back with 5 tokens
    and no word; tester23 #11)."""
    found = _rows_with(PARAM_FIELDS, rows, row_lines)
    if found is None:
        return None
    n, fields, more = found
    return (f"note: --prompts-file {label} line {n} has {fields}{more}; per-row sampling settings are not read: "
            "the command-line options (--max-new-tokens, --temperature, --top-k, --top-p, --seed) apply to every row")


def read_prompts(path: Path | None, label: str | None = None) -> tuple[list[dict], list[int]]:
    """The prompt rows of a JSONL file and the 1-based line number of each. ``path`` None: standard input
    (``sys.stdin``, read to its end; closed is an error). A regular file, or a FIFO or character
    device read once to its end (``/dev/stdin`` fed by a pipe, a shell's ``<(cmd)``; refused as "not a file" before
    session 19); a folder, socket or block device is refused. UTF-8, with or without a BOM at the start. Lines end at
    "\\n" only (one "\\r" before it is dropped): U+2028 / U+2029 / U+0085 inside a JSON string, raw as our own
    --output writes them, do not end a line (str.splitlines cut such rows in two, tester2 s20). A line holding a JSON
    string is the row {"prompt": that string}.

    ``label``: how messages name the file (default ``path``; the CLI passes "- (standard input)" for ``-``).
    Raises PromptsFileError (one line naming --prompts-file and the line number where there is one)."""
    label = (str(path) if path is not None else "- (standard input)") if label is None else label
    if path is None:
        # sys.stdin, not /dev/stdin: with descriptor 0 closed (<&-) that was "does not exist", and a file opened
        # meanwhile could take descriptor 0 and be read as the prompts (tester22 #3)
        if sys.stdin is None:
            raise PromptsFileError(f"--prompts-file {label}: standard input is closed")
    else:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise PromptsFileError(f"--prompts-file {label} does not exist") from None
        except OSError as e:
            raise PromptsFileError(f"--prompts-file {label}: {e.strerror or e}") from None
        if stat.S_ISDIR(mode):
            raise PromptsFileError(f"--prompts-file {label} is a folder, not a file")
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
            raise PromptsFileError(f"--prompts-file {label} is not a file, a FIFO or a character device")
    bom = 0
    try:
        if path is None:
            raw = getattr(sys.stdin, "buffer", None)  # a text-only stand-in (io.StringIO) has no bytes below it
            data = raw.read() if raw is not None else sys.stdin.read().encode("utf-8", "surrogateescape")
        else:
            with open(path, "rb") as f:
                data = f.read()
        bom = 3 if data.startswith(codecs.BOM_UTF8) else 0  # a UTF-8 BOM at the start (Windows editors write one)
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise PromptsFileError(f"--prompts-file {label} is not UTF-8 (byte {bom + e.start}: {e.reason})") from None
    except OSError as e:
        raise PromptsFileError(f"--prompts-file {label}: {e.strerror or e}") from None
    rows, lines = [], []
    for n, line in enumerate(text.split("\n"), 1):
        line = line[:-1] if line.endswith("\r") else line
        if not line.strip():
            continue
        try:
            row = loads_row(line)
        except json.JSONDecodeError as e:
            raise PromptsFileError(f"--prompts-file {label} line {n} is not JSON: {e.msg}") from None
        except RecursionError:  # was a traceback (h2tester s25 F8)
            raise PromptsFileError(f"--prompts-file {label} line {n} is nested too deeply to read") from None
        if isinstance(row, str):
            row = {"prompt": row}
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise PromptsFileError(f"--prompts-file {label} line {n} needs a string field 'prompt'")
        try:  # every field is copied into the results file, which is written as UTF-8 at the end
            dumps_row(row).encode("utf-8")
        except UnicodeEncodeError:
            raise PromptsFileError(f"--prompts-file {label} line {n} holds text that is not valid Unicode "
                                   "(a lone surrogate escape such as \\ud800); nothing was generated") from None
        except RecursionError:  # read at the limit, written a frame deeper
            raise PromptsFileError(f"--prompts-file {label} line {n} is nested too deeply to write back") from None
        rows.append(row)
        lines.append(n)
    if not rows:
        raise PromptsFileError(f"--prompts-file {label} holds no prompts")
    return rows, lines


def hand_to_ranks(rows: list[dict], row_lines: list[int]) -> str:
    """Write the checked rows (and their line numbers) to a new temporary file readable by this user only; returns
    its path, which the --tp parent puts in its ranks' environment as ``HANDOFF_ENV`` and removes when torchrun has
    ended. Raises OSError when the temporary folder cannot be written."""
    fd, path = tempfile.mkstemp(prefix="tritonseek-prompts-", suffix=".json")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write('{"rows": [' + ", ".join(map(dumps_row, rows)) + '], "lines": ' + json.dumps(row_lines) + "}")
    except BaseException:
        os.unlink(path)
        raise
    return path


def handed_rows() -> tuple[list[dict], list[int]] | None:
    """In a rank started by the --tp parent (``HANDOFF_ENV`` set and torchrun's ``WORLD_SIZE`` > 1): the rows and
    line numbers the parent read. None elsewhere (one process, or ranks of a torchrun the user started, which read
    --prompts-file themselves). Raises PromptsFileError when the parent's file cannot be read."""
    path = os.environ.get(HANDOFF_ENV)
    if not path or os.environ.get("WORLD_SIZE", "1").strip() in ("", "1"):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = loads_row(f.read())
        return data["rows"], data["lines"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:  # Recursion: one level deeper than the file
        raise PromptsFileError(f"--prompts-file: cannot read the rows handed over by the --tp parent ({path}: {e})")
