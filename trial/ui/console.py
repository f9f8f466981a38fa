"""What a local run shows on its terminal, and where everything else goes.

A local trial writes a lot: mmengine's environment and ~340-line config dump, the hook order, every
logged iteration, Determined's own report lines, pycocotools' evaluation tables, library warnings.
All of it goes to ``<work-dir>/train.log`` (the process's file descriptors 1 and 2 point there, so
C-level and third-party output are caught too). The terminal gets one progress bar per phase
(training with its loss and eta, validation), each warning once, an error as one line, and the
summary ``invoke train`` prints at the end. Without a terminal (or with ``$CI`` set) the bars become
plain lines, one per logged iteration. ``--verbose`` keeps everything on the terminal instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from errors import ProjectError, TrainingError, one_line

LOG_FILE = "train.log"
PREDICTIONS_FILE = "predictions.png"
SHOWN_METRICS = ("bbox_mAP", "bbox_mAP_50", "segm_mAP", "segm_mAP_50")
# mmengine/mmdet's notices about their own internals (FileClient, backend aliases): nothing a user
# can act on, so they stay in the log. The trial's own deprecation notices still show.
LIBRARY_NOISE = ("will be deprecated in future", "is the alias of")


def is_interactive(stream: IO[str]) -> bool:
    """Bars for a person at a terminal; plain lines in CI or when output goes to a file or pipe."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and not os.environ.get("CI")


class Console:
    """Lines and progress bars on the run's terminal (never the log file)."""

    def __init__(self, stream: IO[str], *, interactive: bool | None = None) -> None:
        self.stream = stream
        self.interactive = is_interactive(stream) if interactive is None else interactive
        self._bars: list[Any] = []

    def line(self, text: str) -> None:
        """One line, written above any bar that is showing."""
        if self._bars:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def bar(self, *, total: int, desc: str, initial: int = 0, leave: bool = True) -> Any:
        """A tqdm bar on a terminal, None otherwise (the caller prints plain lines instead)."""
        if not self.interactive:
            return None
        from tqdm import tqdm

        try:
            width = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            width = 0
        bar = tqdm(  # a terminal that reports no width (a bare pty) gets 100 columns
            total=total, initial=initial, desc=desc, file=self.stream, leave=leave,
            dynamic_ncols=width > 0, ncols=None if width > 0 else 100, bar_format="{desc:<5} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
            "[{elapsed}<{remaining}{postfix}]",
        )  # fmt: skip
        self._bars.append(bar)
        return bar

    def close(self, bar: Any) -> None:
        if bar is not None:
            bar.close()
            self._bars.remove(bar)


class ConsoleLogHandler(logging.Handler):
    """Warnings (each text once) and errors (one line each) of a logger, on the console."""

    def __init__(self, console: Console, *, skip: tuple[str, ...] = ()) -> None:
        super().__init__(level=logging.WARNING)
        self.console = console
        self._skip = skip
        self._seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = one_line(record.getMessage())
        except Exception:  # a record that cannot be formatted must not stop training
            return
        if text in self._seen or any(part in text for part in self._skip):
            return
        self._seen.add(text)
        kind = "error" if record.levelno >= logging.ERROR else "warning"
        self.console.line(f"{kind}: {text}")


@contextlib.contextmanager
def captured_output(log_path: str | Path, *, console: bool = True) -> Iterator[Console | None]:
    """Point fds 1 and 2 at ``log_path`` (appended) and yield a Console on the original stdout.

    Python loggers' warnings and errors still reach the console (once each). An exception that is
    not a ProjectError leaves its traceback in the log and becomes one TrainingError line naming it.
    ``console=False`` (another rank): the log only, and None instead of a Console.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = (os.dup(1), os.dup(2))
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1, encoding="utf-8", errors="replace")
    shown = Console(terminal)
    handler = ConsoleLogHandler(shown) if console else logging.NullHandler()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    logging.getLogger().addHandler(handler)
    try:
        yield shown if console else None
    except (ProjectError, KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:
        traceback.print_exc()  # into the log: fd 2 is still the log file here
        raise TrainingError(
            f"training failed: {type(err).__name__}: {_shorten(one_line(err))} "
            f"(traceback in {log_path})"
        ) from None
    finally:
        logging.getLogger().removeHandler(handler)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        terminal.close()


def local_session(work_dir: str | Path, *, verbose: bool) -> contextlib.AbstractContextManager:
    """The console of one trial process: rank 0 logs to ``train.log`` and keeps the terminal,
    another local rank logs to ``train-rank<N>.log``; ``verbose`` keeps today's output (None)."""
    if verbose:
        return contextlib.nullcontext(None)
    rank = int(os.environ.get("RANK", "0"))
    name = LOG_FILE if rank == 0 else f"train-rank{rank}.log"
    return captured_output(Path(work_dir) / name, console=rank == 0)


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def metrics_text(metrics: Mapping[str, Any]) -> str:
    """``bbox_mAP 0.412  bbox_mAP_50 0.701`` from mmengine's (``coco/``-prefixed) or the trial's keys."""
    values = {key.rpartition("/")[2]: value for key, value in metrics.items()}
    shown = [f"{key} {float(values[key]):.3f}" for key in SHOWN_METRICS if key in values]
    return "  ".join(shown) if shown else "no mAP (no validation metrics)"


def duration_text(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def summary(result: Mapping[str, Any], *, model: str, work_dir: str | Path, seconds: float) -> str:
    """The lines ``invoke train`` ends with: what ran, how long, the mAP, where the results are."""
    work_dir = Path(work_dir)
    state = "preempted" if result.get("preempted") else "finished"
    lines = [
        f"{model} {state}: {result.get('steps', 0)} iterations in {duration_text(seconds)}",
        f"  {metrics_text(result.get('validation') or {})}",
    ]
    files = [
        ("result", work_dir / "result.json"),
        ("curves", work_dir / "curves.png"),
        ("predictions", work_dir / PREDICTIONS_FILE),
        ("tensorboard", work_dir / "tensorboard"),
        ("log", work_dir / LOG_FILE),
    ]
    lines += [f"  {label:<12} {_shown_path(path)}" for label, path in files if path.exists()]
    if result.get("preempted"):
        lines.append("  continue with the same command plus --resume")
    return "\n".join(lines)


def _shown_path(path: Path) -> str:
    """A path relative to the current directory when it lies below it (shorter to read and copy)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
