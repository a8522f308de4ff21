"""One pipeline process per run directory at a time, and what killed processes left there.

The lock is an flock on <run>/.lock holding the owner's PID: the kernel releases it when the owner
dies however it dies, so the next run takes over a dead run's lock without any clean-up. Where flock
does not exist (Windows) runs are not locked."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from pipeline.core.errors import ArtifactError
from pipeline.core.log import info

LOCK_FILE = ".lock"
# StageWriter's scratch names: .<stage>.tmp-<pid> while writing, .<stage>.old-<pid> while replacing
LEFTOVER = re.compile(r"^\.[\w.-]+\.(tmp|old)-(\d+)$")


@contextlib.contextmanager
def locked(run_dir: Path):
    try:
        import fcntl
    except ImportError:  # no flock here
        yield
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ArtifactError(
                f"{run_dir} is in use by another pipeline process (PID {holder}); wait for it or give another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            remove_leftovers(run_dir)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete the scratch directories of stage writers whose process is gone (a SIGKILL, a pre-empted job)."""
    removed = []
    for path in Path(run_dir).rglob(".*"):
        match = LEFTOVER.match(path.name)
        if match and path.is_dir() and not _alive(int(match.group(2))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        info(f"removed {len(removed)} unfinished stage director{'y' if len(removed) == 1 else 'ies'} of killed runs")
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours from an earlier run in this process: nothing of it is still writing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
