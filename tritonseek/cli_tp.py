"""``tritonseek generate --tp N`` (used by tritonseek.cli): the checks before torchrun starts, the parent process that
starts torchrun and waits for its ranks (signals, rank 0's messages, exit codes), each rank's joining of the process
group, and the ranks' agreement on a failure. Messages end the command as tritonseek.cli's do: one line on stderr,
then typer.Exit."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from tritonseek.cli_interrupt import interrupt_handled
from tritonseek.cli_output import QuietStderr
from tritonseek.cli_prompts import HANDOFF_ENV, hand_to_ranks

_stderr = QuietStderr()  # as tritonseek.cli: a closed or full stderr must not end the run
_err = Console(file=_stderr, highlight=False)


def _fail(msg: str, code: int = 2) -> None:
    _err.print(f"[bold red]error:[/] {msg}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def check_tp_splits(model: str | None, tp_size: int) -> None:
    """--tp N: the splits every checkpoint makes (vocabulary and attention heads into N equal shares), checked on
    config.json before torchrun starts N processes that each load the model to find out (8-15 s, h3tester s24 #3).
    A model or config that cannot be read is left to the ranks, which report it as before."""
    try:
        from tritonseek.engine.llm import resolve_model_path
        from tritonseek.model.config import ModelConfig

        cfg = ModelConfig.from_file(resolve_model_path(model))
    except Exception:  # noqa: BLE001  (any problem here is the ranks' to report, in their words)
        return
    for what, n in (("vocab_size", cfg.vocab_size), ("num_attention_heads", cfg.num_attention_heads)):
        if n % tp_size:
            _fail(f"{what}={n} is not divisible by the tensor-parallel size {tp_size} (--tp {tp_size})")


def tensor_parallel(tp_size: int, device: str | None, prompt_rows: tuple[list[dict], list[int]] | None = None,
                    model: str | None = None):
    """--tp N: re-launch under torchrun (N processes), or join the group torchrun set up; rank > 0 is silent.
    ``prompt_rows``: the --prompts-file rows (and line numbers) this process read, handed to the ranks it starts
    (cli_prompts.hand_to_ranks): standard input or a ``<(cmd)`` cannot be read a second time. ``model``: --model, whose
    config.json is checked for the --tp splits before torchrun is started (``check_tp_splits``).

    WORLD_SIZE in the environment means "torchrun started this process as one of WORLD_SIZE ranks"; unset or 1 is
    one process. A WORLD_SIZE that disagrees with --tp, or one without the rest of torchrun's variables (exported
    by hand), ends with a one-line error and exit 2, never a traceback or a wait for ranks that never come.
    """
    from tritonseek.parallel import TPLaunchError, env_world_size

    try:
        world = env_world_size()
    except TPLaunchError as e:
        _fail(f"{e} (torchrun's process count; unset it to run in one process)")
    if tp_size == 1:
        if world > 1:
            _fail(f"WORLD_SIZE={world} is set in the environment but --tp is 1: under torchrun pass --tp {world} "
                  f"(each of the {world} processes would otherwise generate on its own); to run in one process "
                  "unset WORLD_SIZE")
        return None
    if device is not None and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            _fail(f"--device {device}: no CUDA device is available here (use --device cpu for --tp on CPU)")
        if torch.cuda.device_count() < tp_size:
            _fail(f"--tp {tp_size} needs {tp_size} CUDA devices, {torch.cuda.device_count()} available")
    if world == 1:
        check_tp_splits(model, tp_size)
        import subprocess

        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        handoff = None
        if prompt_rows is not None:
            try:
                handoff = env[HANDOFF_ENV] = hand_to_ranks(*prompt_rows)
            except OSError as e:
                _fail(f"--tp {tp_size}: cannot hand the --prompts-file rows to the ranks (temporary file: "
                      f"{e.strerror or e})")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={tp_size}",
               "-m", "tritonseek.cli", *sys.argv[1:]]
        import re
        import signal

        class _Terminated(Exception):
            def __init__(self, signum: int):
                super().__init__(signum)
                self.signum = signum

        def _on_signal(signum, frame):
            raise _Terminated(signum)

        def _drop_handoff():
            if handoff is not None:
                try:
                    os.unlink(handoff)
                except OSError:  # already gone (a tmp cleaner): nothing to do
                    pass

        try:
            proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        except BaseException:
            _drop_handoff()
            raise
        # SIGTERM (kill, a job scheduler) and SIGHUP (kill -HUP, a closed session) are handled like Ctrl-C: left at
        # their defaults they ended this process alone and torchrun's ranks ran on and wrote the output file afterwards.
        import threading

        main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
        handled = [sig for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
                   if sig and main_thread and signal.getsignal(sig) != signal.SIG_IGN]  # nohup's SIGHUP stays off
        previous = {sig: signal.signal(sig, _on_signal) for sig in handled}
        try:
            while True:
                # In short waits: Popen keeps what it read across them, so the ranks' words survive a signal (a
                # plain communicate() read the whole pipe and lost it when the handler ran before it returned, as
                # it does when the signal reaches another thread; rank 0's "rows kept in OUT.partial" went with it)
                try:
                    _, err = proc.communicate(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    pass
        except (KeyboardInterrupt, _Terminated) as e:
            # torchrun stops its ranks on SIGTERM; killed outright (subprocess.run's reaction) it left them running
            for sig in previous:  # a second signal must not cut the clean-up short
                signal.signal(sig, signal.SIG_IGN)
            if isinstance(e, KeyboardInterrupt):
                interrupt_handled()
            proc.send_signal(signal.SIGTERM)
            try:
                _, said = proc.communicate(timeout=60)  # rank 0 saves the finished rows as it stops
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                said = ""
            ctrl_c = isinstance(e, KeyboardInterrupt)
            what = "interrupted" if ctrl_c else f"terminated ({signal.Signals(e.signum).name})"
            _stderr.write(f"error: {what}; every tensor-parallel rank was stopped{kept_clause(said)}\n")
            raise typer.Exit(130 if ctrl_c else 128 + e.signum) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            _drop_handoff()
        # Keep rank 0's own messages; drop torchrun's agent log (glog-style lines and what follows),
        # which would bury a one-line user error under a launcher traceback.
        user_error, log = False, err.splitlines()
        for i, line in enumerate(log):
            if re.match(r"^[WEIF]\d{4} \d\d:\d\d:", line):
                log = log[i:]
                break
            user_error |= line.startswith("error: ")
            _stderr.write(line + "\n")
        else:
            log = []
        if proc.returncode and not user_error:  # a rank died without a message of its own (a signal, a crash)
            text = "\n".join(log)
            text = text[text.find("Root Cause"):] if "Root Cause" in text else text  # torchrun's first failure
            rank, code = re.search(r"\brank\s*:\s*(\d+)", text), re.search(r"\bexitcode\s*:\s*(-?\d+)", text)
            what = f"rank {rank.group(1)}" if rank else "a tensor-parallel rank"
            how = f"exit code {code.group(1)}" if code else f"torchrun exit code {proc.returncode}"
            if code and int(code.group(1)) < 0:
                how = f"signal {-int(code.group(1))}"
            _stderr.write(f"error: {what} failed ({how}); every rank was stopped{kept_clause(err)}\n")
        # torchrun reports any failed rank as exit 1; rank 0's one-line error keeps the CLI's usage code 2
        raise typer.Exit(2 if proc.returncode and user_error else proc.returncode)
    if world != tp_size:
        _fail(f"--tp {tp_size} but WORLD_SIZE={world} is set in the environment (torchrun's process count): pass "
              f"--tp {world}, or unset WORLD_SIZE and --tp {tp_size} starts torchrun itself")
    import torch

    from tritonseek.parallel import init_from_env

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        tp = init_from_env("cuda" if dev.startswith("cuda") else "cpu")  # sets the CUDA device to LOCAL_RANK
    except TPLaunchError as e:
        _fail(str(e))
    if tp.rank != 0:  # only rank 0 talks to the user
        devnull = open(os.devnull, "w")
        sys.stdout = sys.stderr = devnull
    return tp


def kept_clause(said: str | None) -> str:
    """What rank 0 said about the finished rows it kept when a --prompts-file run stopped early (cli.generate's
    ``kept``, cli_output.keep_finished): the "; --output o.jsonl not written: the 2 finished rows are in
    o.jsonl.partial" clause of its last ``error: interrupted`` / ``error: terminated (SIG...)`` / ``note: the run
    failed`` line in ``said`` (the ranks' and torchrun's stderr), for the parent's one line; "" when there is none.
    Before (stop 25), the parent's line dropped it, so a user did not learn that the rows were kept, or where."""
    import re

    clause = ""
    for line in (said or "").splitlines():
        m = re.match(r"(?:error: (?:interrupted|terminated \(SIG[A-Z]+\))|note: the run failed)(; .*finished row.*)$",
                     line.strip())
        if m:
            clause = m.group(1)
    return clause


def first_failure(tp, failure: str | None) -> str | None:
    """Every rank learns whether any rank failed (so all exit together), with the first message."""
    import torch.distributed as dist

    msgs: list = [None] * tp.world_size
    dist.all_gather_object(msgs, failure)
    for r, m in enumerate(msgs):
        if m:
            return m if r == tp.rank else f"rank {r} failed: {m}"
    return None
