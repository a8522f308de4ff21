"""Interleaved timing of several callables in one process: warm-up, then trials that alternate the
order of the models so that drift (clock, cache, other load) hits all of them alike."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def warm_up(run: Callable[[], object], seconds: float, min_calls: int = 10) -> float:
    """Run until both `seconds` and `min_calls` are reached; returns the median call time."""
    times, started = [], time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - started < seconds:
        begin = time.perf_counter()
        run()
        times.append(time.perf_counter() - begin)
    times.sort()
    return times[len(times) // 2]


def interleaved(
    runs: dict[str, Callable[[], object]],
    seconds: float,
    trials: int,
    warmup_seconds: float = 0.5,
    progress: Callable[[], None] | None = None,
) -> dict[str, list[list[float]]]:
    """Per-call seconds of each callable, as `trials` lists per name. Each model gets about
    `seconds` of timed calls in all, spread over the trials. A callable that returns a float has
    timed itself (device time); otherwise its wall time is taken."""
    call_time = {name: warm_up(run, warmup_seconds) for name, run in runs.items()}
    calls = {name: max(3, math.ceil(seconds / trials / max(t, 1e-6))) for name, t in call_time.items()}
    results: dict[str, list[list[float]]] = {name: [] for name in runs}
    names = list(runs)
    for trial in range(trials):
        order = names if trial % 2 == 0 else names[::-1]
        for name in order:
            run, times = runs[name], []
            for _ in range(calls[name]):
                begin = time.perf_counter()
                device_seconds = run()
                wall = time.perf_counter() - begin
                # a call may time itself on its device (CUDA events) and return the seconds
                times.append(device_seconds if isinstance(device_seconds, float) else wall)
            results[name].append(times)
        if progress is not None:
            progress()
    return results
