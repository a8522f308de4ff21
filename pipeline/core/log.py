"""Progress messages on stderr (stdout stays clean for what a command prints as its result)."""

from __future__ import annotations

import sys


def _speaks() -> bool:
    """Under torchrun only rank 0 reports, so that N processes print one log."""
    from pipeline.core.distributed import current

    return current().is_main


def info(message: str) -> None:
    if _speaks():
        print(message, file=sys.stderr, flush=True)


def progress(total: int, description: str, unit: str = "it"):
    """A tqdm bar on stderr; silent when stderr is not a terminal (logs, CI) and on ranks other than 0."""
    from tqdm import tqdm

    disable = None if _speaks() else True
    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=False, disable=disable, dynamic_ncols=True)
