"""Command-line values the verbs receive as text, checked before anything runs.

invoke turns an option whose default is an int into ``int(text)`` itself and shows a traceback for
``--nproc abc``; the tasks therefore take these options as text and call the parsers here, which
raise one ConfigError naming the option, the bad value and what to pass instead.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from errors import ConfigError


def whole_number(
    value: Any, option: str, *, minimum: int = 1, maximum: int | None = None, what: str = ""
) -> int:
    """``value`` (text or int) as an int in [``minimum``, ``maximum``]; one line naming
    ``option`` otherwise."""
    text = str(value).strip()
    try:
        number = int(text)
    except ValueError:
        number = None
    if (
        number is None
        or isinstance(value, bool)
        or number < minimum
        or (maximum is not None and number > maximum)
    ):
        kind = "a positive whole number" if minimum == 1 else f"a whole number >= {minimum}"
        kind += f" up to {maximum}" if maximum is not None else ""
        raise ConfigError(f"{option} {text!r} must be {kind}{f' ({what})' if what else ''}")
    return number


def optional_whole_number(
    value: Any, option: str, *, minimum: int = 1, what: str = ""
) -> int | None:
    """Like ``whole_number``; None (option not given) stays None."""
    return None if value is None else whole_number(value, option, minimum=minimum, what=what)


def positive_number(value: Any, option: str, *, example: str = "1") -> float:
    """``value`` (text or number) as a finite float > 0; one line naming ``option`` otherwise."""
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not 0.0 < number < math.inf:  # NaN fails too
        raise ConfigError(
            f"{option} {str(value).strip()!r} must be a positive number, e.g. {option} {example}"
        )
    return number


def fraction(value: Any, option: str) -> float:
    """``value`` as a float in [0, 1] (a score threshold)."""
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not 0.0 <= number <= 1.0:  # NaN fails too
        raise ConfigError(f"{option} {str(value)!r} must be a number between 0 and 1, e.g. 0.3")
    return number


def torch_device(device: str | None, option: str = "--device") -> str:
    """``--device`` checked against this machine: a torch device type that exists and is visible.

    None picks ``cuda:0`` when a GPU is visible, else ``cpu``.
    """
    import torch

    if not device:
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"{option} {device!r} is not a torch device; use cpu, cuda or cuda:N"
        ) from None
    if parsed.type == "cpu":
        return device
    backend = getattr(torch, parsed.type, None)
    available = getattr(backend, "is_available", lambda: False)()
    if not available:
        raise ConfigError(
            f"{option} {device}: no {parsed.type} device is visible on this machine; "
            "use --device cpu (or leave --device out)"
        )
    count = getattr(backend, "device_count", lambda: 1)()
    if parsed.index is not None and parsed.index >= count:
        raise ConfigError(
            f"{option} {device}: this machine has {count} {parsed.type} device(s), "
            f"numbered 0..{count - 1}"
        )
    return device


def directory_option(path: str | Path, option: str) -> Path:
    """An absolute directory path for ``option``: it may not exist yet, but must not be a file."""
    resolved = Path(path).expanduser().resolve()
    if resolved.exists() and not resolved.is_dir():
        raise ConfigError(f"{option} {resolved} is a file, not a directory; pick a directory")
    _check_parents(resolved, option, "a directory")
    return resolved


def file_option(path: str | Path, option: str) -> Path:
    """An absolute path for an output file of ``option``: not a directory, and no folder on the
    way to it is a file."""
    resolved = Path(path).expanduser().resolve()
    if resolved.is_dir():
        raise ConfigError(f"{option} {resolved} is a directory; pass a file path")
    _check_parents(resolved, option, "a file path in a directory")
    return resolved


def _check_parents(resolved: Path, option: str, pick: str) -> None:
    for parent in resolved.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{option} {resolved}: {parent} is a file; pick {pick}")


def check_mode_options(
    *, cluster: bool, local_only: dict[str, Any], cluster_only: dict[str, Any]
) -> None:
    """Options of one mode given in the other would be ignored silently: refuse them."""
    given = local_only if cluster else cluster_only
    wrong = [name for name, value in given.items() if value not in (None, False, "", [])]
    if wrong:
        where = "a local run (drop --cluster)" if cluster else "--cluster"
        why = (
            "the cluster stages the experiment's data: section and keeps its own checkpoints"
            if cluster
            else "a local run has nothing to submit"
        )
        verb = "goes" if len(wrong) == 1 else "go"
        raise ConfigError(f"{', '.join(wrong)} only {verb} with {where}: {why}")
