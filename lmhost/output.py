"""How the CLI shows things: tables, sizes, durations, the load progress bar, prompts (rich).

Rich styles and redraws only on a terminal; written to a pipe or a file, its output is plain
text without escape codes, and tables are never squeezed to 80 columns there.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

from rich.console import Console
from rich.filesize import decimal
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.prompt import Prompt
from rich.table import Table

# Piped output: wide enough that no table row wraps; rich pads columns only to their content.
PIPED_WIDTH = 1000


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich exits 1 when the reader of a pipe leaves (`lmhost ls | head -1`); lmhost.cli
        # treats that as the end of the output, not as an error
        raise BrokenPipeError


def stdout_console() -> Console:
    console = _Console(highlight=False)
    if not console.is_terminal:
        console = _Console(highlight=False, width=PIPED_WIDTH)
    return console


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    """A borderless table like `lms`'s: upper-case headers, columns in `right` right-aligned."""
    grid = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        grid.add_column(column, justify="right" if column in right else "left", no_wrap=True)
    return grid


def size(num_bytes: int | None) -> str:
    return decimal(num_bytes) if num_bytes is not None else "-"


def duration(seconds: int | None) -> str:
    """3600 → "1h", 300 → "5m", 90 → "90s"; None → "" (no TTL)."""
    if not seconds:
        return ""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"


@contextmanager
def load_progress(what: str):
    """Yields `report(fraction)`. On a terminal (stderr) a bar with the percentage appears at
    the first report and follows each one as it comes; elsewhere reports are dropped, so piped
    output stays plain. An error before any progress (unknown model) shows no bar at all."""
    console = stderr_console()
    if not console.is_terminal:
        yield lambda fraction: None
        return
    # auto_refresh off: the bar is redrawn on each real progress event, not by a timer
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                        TimeElapsedColumn(), console=console, auto_refresh=False)
    task = None

    def report(fraction: float) -> None:
        nonlocal task
        if task is None:
            progress.start()
            task = progress.add_task(f"Loading {what}", total=100)
        progress.update(task, completed=round(fraction * 100, 1))
        progress.refresh()

    try:
        yield report
    finally:
        progress.stop()


def interactive() -> bool:
    """A person is there to answer a prompt."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def choose(question: str, choices: list[str], default: str) -> str:
    return Prompt.ask(question, choices=choices, default=default, console=stdout_console())
