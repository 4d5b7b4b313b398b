"""The ``tritonseek`` command line (typer + rich): generate, warmup, bench, info.

Thin layer: parse → call the library → print. User errors end with a one-line message and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from tritonseek.cli_interrupt import NOTE as _NOTE, Terminated as _Terminated, TerminationGuard as _TerminationGuard
from tritonseek.cli_interrupt import interruptible as _interruptible
from tritonseek.cli_interrupt import process_run as _process_run
from tritonseek.cli_output import QuietStderr
from tritonseek.cli_output import StdoutLost as _StdoutLost
from tritonseek.cli_output import drop_stdout as _drop_stdout
from tritonseek.cli_output import keep_finished as _keep_finished
from tritonseek.cli_output import emit as _emit
from tritonseek.cli_output import stdout_closed as _stdout_closed
from tritonseek.cli_prompts import PromptsFileError, handed_rows, read_prompts
from tritonseek.cli_prompts import add_stats, batches, param_field_note, result_field_note, result_lines
from tritonseek.cli_tp import first_failure as _first_failure, tensor_parallel as _tensor_parallel


class _App(typer.Typer):
    """typer.Typer whose direct call is a process run (see cli_interrupt.interruptible): the console script
    (``sys.exit(app())``), ``python -m tritonseek.cli`` and a script's ``app()`` in standalone mode end in sys.exit.
    CliRunner (which calls the click command itself), ``app(..., standalone_mode=False)`` and an interactive session
    are in-process runs.

    In standalone mode a failed write ends in one line: stdout (``info > /dev/full``, ``--help`` to a closed stdout)
    exit 1, quiet for a reader that went away (``| head``); a usage message that cannot be written to stderr keeps
    its usage exit code 2 (it was 1: the OSError ended click's error path)."""

    def __call__(self, *args, **kwargs):
        from tritonseek.cli_output import GuardedStdout

        standalone = bool(kwargs.get("standalone_mode", True))
        interactive = bool(sys.flags.interactive) or hasattr(sys, "ps1") or "ipykernel" in sys.modules
        token = _process_run.set(standalone and not interactive)
        real = sys.stdout
        if standalone and not isinstance(real, GuardedStdout):
            sys.stdout = GuardedStdout(real)
        try:
            return super().__call__(*args, **kwargs)
        except _StdoutLost as e:
            _drop_stdout()
            if not e.broken_pipe:
                _stderr.write(f"error: could not write to standard output ({e})\n")
            sys.exit(1)
        except OSError as e:
            code = getattr(e.__context__, "exit_code", None)  # typer vendors click: no isinstance test
            if standalone and isinstance(code, int) and hasattr(e.__context__, "show"):  # while reporting it
                sys.exit(code)
            raise
        finally:
            if isinstance(sys.stdout, GuardedStdout) and sys.stdout.real is real:
                sys.stdout = real
            _process_run.reset(token)


app = _App(add_completion=False, no_args_is_help=True, help="DeepSeek-architecture inference in Python + Triton.")
_stderr = QuietStderr()  # every message goes through it: a closed or full stderr must not end the run
err = Console(file=_stderr, highlight=False)
out = Console(highlight=False)


def _fail(msg: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {msg}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _user_errors():
    from tritonseek.engine.llm import ModelNotFoundError
    from tritonseek.engine.tokenizer import TokenizerError
    from tritonseek.model.loader import CheckpointError

    return (ValueError, TypeError, ModelNotFoundError, TokenizerError, CheckpointError, FileNotFoundError)


def _check_device(device: str | None, tp_size: int) -> None:
    """--device: cpu (no index), cuda or cuda:N (an existing GPU; not with --tp, whose ranks take GPU LOCAL_RANK)."""
    if device is None:
        return
    m = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", device)
    if not m:
        _fail(f"--device {device!r} is not supported; use cpu, cuda or cuda:N")
    if m.group(1) == "cpu":
        if m.group(2) is not None:
            _fail(f"--device {device}: the CPU device takes no index; use --device cpu")
        return
    import torch

    if not torch.cuda.is_available():
        _fail(f"--device {device}: no CUDA device is available here (use --device cpu)")
    if m.group(2) is not None:
        if tp_size > 1:
            _fail(f"--device {device} with --tp {tp_size}: each rank runs on GPU LOCAL_RANK; pass --device cuda "
                  "(CUDA_VISIBLE_DEVICES picks the GPUs)")
        n = torch.cuda.device_count()
        if int(m.group(2)) >= n:
            _fail(f"--device {device}: torch sees {n} CUDA GPU(s), cuda:0 to cuda:{n - 1}")


@app.command()
@_interruptible
def generate(
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Prompt text."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint folder or HF id (local cache). Default: the embedded model."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", min=1, help="Tokens to generate at most."),
    temperature: float = typer.Option(0.0, "--temperature", "-t",
                                      help="0 = greedy; else a finite number >= 1e-5."),
    top_p: float = typer.Option(1.0, "--top-p",
                               help="Nucleus sampling mass in (0, 1] (1 = off)."),
    top_k: int = typer.Option(0, "--top-k", min=0, help="Keep the k most likely tokens (0 = off)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed (reproducible output)."),
    chat: bool = typer.Option(False, "--chat", help="Apply the checkpoint's chat template."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default: cuda if available)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="triton | reference (default: triton on CUDA; triton on CPU needs TRITON_INTERPRET=1, slow)."),
    prompts_file: Optional[str] = typer.Option(None, "--prompts-file",
                                                help="JSONL with a 'prompt' field per line ('-' = standard input); "
                                                     "generated in batches of at most 65536 prompt + new tokens."),
    output: Optional[str] = typer.Option(
        None, "--output", "-o",
        help="JSONL output file (with --prompts-file; '-' = standard output). A regular file is replaced atomically "
             "(keeping its permission bits, not its hard links; its owner and group only when run as root or by the "
             "owner); a FIFO, a device or /dev/stdout is written in place. A failed write exits 1."),
    mtp: int = typer.Option(0, "--mtp", min=0, max=4, help="Speculative decoding with K MTP drafts per step (1-4; 0 = off)."),
    compare: bool = typer.Option(False, "--compare", help="With --mtp: also run without MTP and report the speedup."),
    tp_size: int = typer.Option(1, "--tp", min=1, max=64, help="Tensor/expert-parallel processes (started with torchrun)."),
    eager: bool = typer.Option(False, "--eager", help="No CUDA graphs: launch every decode step eagerly (default on CUDA: graphs)."),
    quantize_fp8: bool = typer.Option(False, "--quantize-fp8", help="Quantize a bf16 checkpoint's linears and experts to 128x128 block FP8 at load."),
):
    """Generate text from a prompt (streamed) or a JSONL file of prompts.

    Exit status: 0 done; 1 a write failed (standard output, or --output: its rows then go to stdout if that works);
    2 a usage or input error (bad option, prompts file, model); 130 interrupted (Ctrl-C; 143 on SIGTERM, 129 on
    SIGHUP). A --prompts-file run stopped early (interrupted, or failing in a later batch) leaves an --output file as
    it was and writes the rows of the batches already finished to OUT.partial (a FIFO, a device or standard output
    gets them in place); its error line says where and how many.
    """
    if (prompt is None) == (prompts_file is None):
        _fail("give exactly one of --prompt or --prompts-file")
    # '-' is the usual name of the standard streams: --output - wrote a file named "-", --prompts-file - was "does not
    # exist" (tester21 #9). Only the text "-" itself: ./- (which a Path option also printed as "-") is a file of that
    # name (tester22 #2); check_output takes --output - as descriptor 1
    from_stdin = prompts_file == "-"
    if prompts_file == "":  # Path("") is the current folder
        _fail("--prompts-file is empty; give a JSONL file, or - for standard input")
    shown = "- (standard input)" if from_stdin else prompts_file  # how messages name it (not /dev/stdin)
    prompts_path = Path(prompts_file) if prompts_file is not None and not from_stdin else None
    if prompts_file is not None and output is None:
        _fail("--prompts-file needs --output OUT.jsonl")
    if output is not None and prompts_file is None:
        _fail("--output is for --prompts-file runs; --prompt streams to the terminal")
    if not temperature >= 0 or temperature == float("inf"):  # not typer's min=: it calls NaN "not >= 0"
        _fail(f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:  # also NaN (typer's max= would call it "not <= 1")
        _fail(f"--top-p must be in (0, 1], got {top_p}")
    if compare and not mtp:
        _fail("--compare needs --mtp K")
    if backend is not None and backend not in ("triton", "reference"):
        _fail(f"--backend must be triton or reference, got {backend!r}")
    if prompts_file is None and _stdout_closed():  # started with stdout closed (>&-): Python sets it to None
        _fail("standard output is closed: nothing to stream the text to (use --prompts-file IN --output OUT)")
    _check_device(device, tp_size)
    target = None
    if output is not None:
        from tritonseek.cli_output import OutputPathError, check_output, same_file

        try:
            target = check_output(output, child=tp_size > 1)
        except OutputPathError as e:
            _fail(str(e))
        if same_file(target, "/dev/stdin" if from_stdin else prompts_file):
            _fail("--output must not overwrite --prompts-file")
    from tritonseek.engine.sampling_params import SamplingParams

    try:
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p,
                                max_new_tokens=max_new_tokens, seed=seed)
    except ValueError as e:
        _fail(f"--{str(e).split('=', 1)[0].replace('_', '-')}: {e}")
    try:
        # a --tp rank started by this command reads the rows its parent read (stdin cannot be read twice)
        handed = handed_rows()
        rows, row_lines = handed or (read_prompts(prompts_path, shown) if prompts_file else ([{"prompt": prompt}], []))
    except PromptsFileError as e:
        _fail(str(e))
    # notes once: by the parent of --tp ranks (not again by them), by rank 0 of a torchrun the user started
    talk = handed is None and os.environ.get("RANK", "0").strip() in ("", "0")
    note = result_field_note(shown, rows, row_lines, kept=prompts_path is not None and prompts_path.is_file()) \
        if prompts_file and talk else None
    if note:
        err.print(f"[dim]{escape(note)}[/]", soft_wrap=True)
    note = param_field_note(shown, rows, row_lines) if prompts_file and talk else None
    if note:
        err.print(f"[dim]{escape(note)}[/]", soft_wrap=True)
    if talk and temperature == 0 and (top_k or top_p < 1.0 or seed is not None):
        err.print("[dim]note: --top-k/--top-p/--seed apply only when sampling (--temperature > 0); decoding greedily[/]",
                  soft_wrap=True)

    from tritonseek.engine.llm import LLM

    tp = _tensor_parallel(tp_size, device, (rows, row_lines), model)
    rank0 = tp is None or tp.rank == 0
    failure = None
    try:
        import warnings

        from tritonseek.engine.tokenizer import TokenizerWarning

        with warnings.catch_warnings():  # printed below as one line each, not as Python's two-line warning
            warnings.simplefilter("ignore", TokenizerWarning)
            llm = LLM(model, device=device, backend=backend, progress=_stderr.isatty() and rank0, tp=tp,
                      enforce_eager=eager, quantize_fp8=quantize_fp8)
    except _user_errors() as e:
        failure = str(e)
    if tp is not None:
        failure = _first_failure(tp, failure)
    if failure:
        _fail(failure)
    if llm.is_default_model and llm.model_info.get("note"):
        err.print(f"[dim]{llm.model_info['note']}[/]", soft_wrap=True)
    for note in getattr(llm.tokenizer, "warnings", []):  # a tokenizer_config.json entry not used as written
        err.print(f"[yellow]warning:[/] {escape(note)}", soft_wrap=True)
    stream = prompts_file is None

    def on_text(i: int, delta: str) -> None:
        _emit(delta)

    started, results = False, []
    # SIGTERM / SIGHUP end a --prompts-file run through the except path below, which keeps the finished rows; also in
    # a --tp rank: torchrun stops its ranks with SIGTERM, which ended rank 0 before it saved anything (h1fix s26)
    guard = _TerminationGuard(active=bool(prompts_file))

    def kept() -> str:  # a run stopped early: its finished rows saved, as a clause for the error line
        guard.hold()
        return _keep_finished(target, output, result_lines(rows, results)) if rank0 and not stream else ""
    try:
        encoded, _ = llm.validate_requests([r["prompt"] for r in rows], params, chat=chat, mtp=mtp)
        waves = [[rows[i]["prompt"] for i in w] for w in batches([len(e) for e in encoded], max_new_tokens + mtp)]
        if stream:
            # Echo what the model continues: the rendered chat turn with --chat, else the prompt.
            _emit(llm.tokenizer.decode(llm.encode(prompt, chat=True)) if chat else prompt)
            started = True
        if compare and mtp:
            # Warm both paths first so neither timed run pays Triton's JIT compilation.
            warm = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                  max_new_tokens=min(max_new_tokens, mtp + 2))
            llm.generate([r["prompt"] for r in rows][:1], warm, chat=chat, mtp=mtp)
            llm.generate([r["prompt"] for r in rows][:1], warm, chat=chat)
        s = None
        for w in waves:  # one wave unless the file holds more than cli_prompts.BATCH_TOKENS tokens
            results += llm.generate(w, params, chat=chat, on_text=on_text if stream else None, mtp=mtp)
            s = add_stats(s, llm.last_stats)
        if compare:
            base = None
            for w in waves:
                llm.generate(w, params, chat=chat)
                base = add_stats(base, llm.last_stats)
            s.extra["speedup"] = s.tokens_per_s / base.tokens_per_s if base.tokens_per_s else float("nan")
        llm.last_stats = s
    except _StdoutLost as e:
        _drop_stdout()
        if e.broken_pipe:  # `| head` took what it wanted: quiet, as before (tester s19)
            raise typer.Exit(1) from None
        _fail(f"could not write the generated text to standard output ({e})", 1)
    except _user_errors() as e:
        if started:
            try:
                _emit("\n")
            except _StdoutLost:
                _drop_stdout()
        # the engine's message names the library argument; a CLI user sets it with the option
        msg = str(e).replace("with max_new_tokens=", "with --max-new-tokens ")
        m = re.match(r"(params for )?prompt (\d+) ", msg)
        if row_lines and m and int(m.group(2)) < len(row_lines):
            # the engine counts prompts from 0; a prompts-file user looks for a line number
            i = int(m.group(2))
            msg = f"--prompts-file {shown} line {row_lines[i]}: " + msg[:m.start(2) - 7] + "this prompt" + msg[m.end(2):]
        _fail(msg + kept())
    except (KeyboardInterrupt, _Terminated, Exception) as e:  # a later batch failed or was stopped: keep the others
        if isinstance(e, (KeyboardInterrupt, _Terminated)):
            setattr(e, _NOTE, kept())  # cli_interrupt.interruptible ends its one line with it
        elif kept_note := kept():
            _stderr.write(f"note: the run failed{kept_note}\n")  # before the traceback
        raise
    finally:
        # A stop that came while another failure was handled above (a --tp rank: the collective fails as the other
        # rank exits, then torchrun's signal arrives) skipped the saving: do it now, its note ends the one line
        stop = sys.exc_info()[1]
        if isinstance(stop, (KeyboardInterrupt, _Terminated)) and not hasattr(stop, _NOTE):
            setattr(stop, _NOTE, kept())
        guard.close()
    if stream:
        try:
            _emit("\n")
        except _StdoutLost as e:
            _drop_stdout()
            _fail(f"could not write the generated text to standard output ({e})", 1)
    elif rank0:
        lines = result_lines(rows, results)
        try:
            from tritonseek.cli_output import write_output

            write_output(target, "".join(lines))
        except OSError as e:
            if target.how == "fd" and target.fd == 1 and isinstance(e, BrokenPipeError):
                # `-o - | head -1` took what it wanted: quiet, as the streamed text (tester22 #4c)
                _drop_stdout()
                raise typer.Exit(1) from None
            # Never lose finished work: hand the rows to stdout instead, unless stdout is what failed (or is closed).
            if target.how != "fd" or target.fd != 1:
                try:
                    _emit("".join(lines))
                    _fail(f"could not write --output {output} ({e.strerror}); the results were printed to stdout "
                          "instead", 1)
                except (_StdoutLost, AttributeError):
                    _drop_stdout()
            _fail(f"could not write --output {output} ({e.strerror})", 1)  # a failed write, as for stdout
    s = llm.last_stats
    line = (f"prompt tokens {s.prompt_tokens} · new tokens {s.new_tokens} · {s.tokens_per_s:.1f} tok/s · "
            f"backend {s.backend} · device {s.device}")
    if mtp:
        acc, tps = s.extra.get("acceptance"), s.extra.get("tokens_per_step")
        line += f" · mtp {mtp}: " + ("no drafts (too few new tokens to draft)" if acc is None else
                                     f"acceptance {acc:.2f}, {tps:.2f} tokens/step")
        if "speedup" in s.extra:
            line += f", speedup {s.extra['speedup']:.2f}x vs no MTP"
    err.print(f"[dim]{line}[/]", soft_wrap=True)


@app.command()
def info():
    """Versions, GPU, TMA support, and which kernels run in Triton (or Gluon, on Hopper GPUs only)."""
    import platform

    import torch
    import triton
    from rich.table import Table

    from tritonseek import __version__
    from tritonseek.kernels import _LAUNCHERS, kernel_status
    from tritonseek.kernels._utils import interpreter_active

    hopper = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
    t = Table(show_header=False, box=None)
    t.add_row("tritonseek", __version__)
    t.add_row("python", platform.python_version())
    t.add_row("torch", torch.__version__)
    t.add_row("triton", triton.__version__)
    if torch.cuda.is_available():
        cap = torch.cuda.get_device_capability()
        t.add_row("gpu", f"{torch.cuda.get_device_name()} (sm_{cap[0]}{cap[1]})")
        t.add_row("tma", "yes" if cap >= (9, 0) else "no (needs sm_90+)")
    else:
        t.add_row("gpu", "none (CPU: the reference backend runs the model)")
        t.add_row("tma", "n/a")
    out.print(t)
    k = Table("op", "implementation", title="kernels")
    for op, impl in kernel_status().items():
        # The Gluon kernels (modules named *_ws*, the package's convention) compile only for sm_90 and raise
        # elsewhere; "triton" made them look usable on a CPU or another GPU (session 19 tester).
        if impl == "triton" and "_ws" in _LAUNCHERS.get(op, ""):
            impl = "gluon" if hopper else "gluon (Hopper GPUs only: not here)"
        elif impl == "triton" and not torch.cuda.is_available():
            # they raise "needs CUDA tensors" on CPU unless Triton's interpreter runs them (session 19 tester 2)
            impl += " (CPU interpreter)" if interpreter_active() else " (no CUDA GPU: see below)"
            if not interpreter_active():
                k.caption = "triton kernels need a CUDA GPU, or TRITON_INTERPRET=1 for Triton's CPU interpreter (slow)"
        k.add_row(op, impl)
    out.print(k)


@app.command()
@_interruptible
def warmup(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint folder or HF id (local cache). Default: the embedded model."),
    max_batch: int = typer.Option(128, "--max-batch", min=1, max=4096, help="Largest decode batch to prepare (CUDA-graph buckets up to it)."),
    quantize_fp8: bool = typer.Option(False, "--quantize-fp8", help="As generate --quantize-fp8 (a bf16 checkpoint's linears and experts as FP8)."),
):
    """Compile every Triton kernel generate will use into Triton's on-disk cache (TRITON_CACHE_DIR)."""
    import torch

    from tritonseek.warmup import WarmupError, run_warmup, triton_cache_dir

    if not torch.cuda.is_available():
        _fail("tritonseek warmup compiles Triton kernels for a CUDA GPU, and torch sees none")
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from tritonseek.engine.llm import LLM

    t0 = time.perf_counter()
    try:
        llm = LLM(model, device="cuda", backend="triton", max_graph_batch=max_batch, progress=_stderr.isatty(),
                  quantize_fp8=quantize_fp8)
    except _user_errors() as e:
        _fail(str(e))
    load_s = time.perf_counter() - t0
    with Progress(TextColumn("[bold]warmup[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=False) as bar:
        task = bar.add_task("", total=None)

        def on_step(i: int, n: int, label: str) -> None:
            bar.update(task, total=n, completed=i, description=label)

        try:
            rep = run_warmup(llm, max_batch, on_step)
        except (WarmupError, *_user_errors()) as e:
            _fail(str(e))
    out.print(f"warmed {len(rep.steps)} configurations in {rep.seconds:.1f} s (model load {load_s:.1f} s); "
              f"{rep.new_entries} new Triton cache entries in {triton_cache_dir()}", soft_wrap=True)


@app.command()
@_interruptible
def bench(suites: list[str] = typer.Argument(None, help="mla fp8_gemm moe mtp e2e fused_small cold_start e2e_tp (default: all)")):
    """Run benchmark suites on the CUDA GPU (source checkout), print a table, append rows to benchmarks/results/."""
    from rich.table import Table

    from tritonseek.benchrun import BenchError, run_suites

    try:
        rows = run_suites(list(suites or []))
    except BenchError as e:
        _fail(str(e))
    t = Table("suite", "case", "us (or s)", "TFLOP/s", "GB/s", "vs peer")
    for r in rows:
        time_cell = r.get("us_graph") or r.get("us")
        if time_cell is None and r.get("seconds") is not None:
            time_cell = f"{r['seconds']} s"
        t.add_row(str(r.get("suite")), json.dumps(r.get("case"), separators=(",", ":")), str(time_cell),
                  str(r.get("tflops")), str(r.get("gbps")), str(r.get("ratio_vs_peer")))
    out.print(t)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
