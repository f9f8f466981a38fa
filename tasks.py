"""mmdet-determined's user-facing verbs. Wiring only: parse options, call one package function,
turn a ProjectError into one line on stderr and exit 1. Heavy imports stay inside the tasks so that
``invoke --list`` is instant."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from invoke import Exit, task

from errors import ProjectError


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a ProjectError into a one-line message and exit code 1 (no traceback)."""
    try:
        yield
    except ProjectError as err:
        raise Exit(f"error: {err}", code=1) from None


# --- images (owner: images/) -------------------------------------------------------------------
# BEGIN images tasks
# END images tasks


# --- staging (owner: staging/) -----------------------------------------------------------------
# BEGIN staging tasks
# END staging tasks


# --- trial (owner: trial/) ---------------------------------------------------------------------
# BEGIN trial tasks
# END trial tasks


# --- ci (owner: ci/) ---------------------------------------------------------------------------
# BEGIN ci tasks
# END ci tasks


# --- benchmarks ---------------------------------------------------------------------------------
BENCHES = {
    "trial": "trial.bench",
    "staging": "staging.bench",
    "images": "images.bench",
}


@task(
    help={"what": f"which benchmark: {', '.join(BENCHES)}", "runs": "repetitions per side (median)"},
)
def bench(c, what, runs=0):
    """Run a side-by-side benchmark and print ratios (results go into docs/benchmarks.md).

    Each benchmark module exposes ``main(runs: int) -> None``; runs=0 keeps its own default.
    """
    import importlib

    if what not in BENCHES:
        raise Exit(f"error: unknown benchmark {what!r}; choose one of: {', '.join(BENCHES)}", code=1)
    with user_errors():
        importlib.import_module(BENCHES[what]).main(runs=runs)


