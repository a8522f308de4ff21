"""Progress messages on stderr (stdout stays clean for what a command prints as its result)."""

from __future__ import annotations

import sys


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def progress(total: int, description: str, unit: str = "it"):
    """A tqdm bar on stderr; silent when stderr is not a terminal (logs, CI)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=False, disable=None, dynamic_ncols=True)
