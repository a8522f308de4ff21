"""Time compiled models on a target: the target's own timer where it has one (trtexec), else its
sessions called here, interleaved in one process (device clocks where a session has them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from profiles import timing


def time_compiled(
    target,
    compiled: dict[str, Path],
    input_shape: tuple[int, ...],
    threads: int,
    precision: str,
    seconds: float,
    trials: int,
    seed: int = 0,
    sessions: dict | None = None,
    warmup_seconds: float = 0.5,
    progress=None,
) -> dict[str, list[list[float]]]:
    """Per-trial call seconds of each compiled model. `sessions`: ones already open (the parity check's)."""
    times = target.profile(compiled, input_shape, seconds, trials)
    if times is not None:
        return times
    if sessions is None:
        sessions = {name: target.open(path, input_shape, threads, precision) for name, path in compiled.items()}
    runs = {name: callable_of(session, input_shape, seed) for name, session in sessions.items()}
    return timing.interleaved(runs, seconds, trials, warmup_seconds=warmup_seconds, progress=progress)


def callable_of(session, input_shape: tuple[int, ...], seed: int = 0):
    """A no-argument call of `session` on a fixed random input; one that returns its device seconds where it can."""
    feed = np.random.default_rng(seed).standard_normal(input_shape).astype(np.float32)
    return session.timed(feed) if hasattr(session, "timed") else (lambda: session.run(feed))


def median_ms(trials: list[list[float]]) -> float:
    return float(np.median([t for trial in trials for t in trial])) * 1000.0
