"""profile (per target): dense and pruned latency, interleaved in one process, at the batch size of
--input-shape and at every --batch-sizes; the target's outputs checked against PyTorch first."""

from __future__ import annotations

import platform

import numpy as np

from exporters import TARGETS
from exporters.base import default_threads
from pipeline.core.artifacts import write_json
from pipeline.core.log import info, progress
from pipeline.stages.common import StageContext, input_shape
from profiles import stats, timing


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg
    target = TARGETS.load(ctx.target)()
    compiled = ctx.stage_dir("compile") / ctx.target
    threads = cfg.threads or default_threads()
    shape = input_shape(cfg)
    batches = [shape[0]] + [b for b in cfg.batch_sizes if b != shape[0]]
    reference = np.load(ctx.stage_dir("export") / "reference.npz")
    result = {"target": ctx.target, "threads": threads, "precision": cfg.precision, "cpu": cpu_name(), "batches": {}}
    for batch in batches:
        feed_shape = (batch, *shape[1:])
        sessions = {v: target.open(compiled / v, feed_shape, threads, cfg.precision) for v in ("dense", "pruned")}
        if batch == shape[0]:
            result["parity"] = {
                f"{v}_max_abs": float(np.abs(sessions[v].run(reference["input"]) - reference[v]).max()) for v in sessions
            }
        feed = np.random.default_rng(cfg.seed).standard_normal(feed_shape).astype(np.float32)
        runs = {v: (lambda s=s: s.run(feed)) for v, s in sessions.items()}
        with progress(cfg.profile_trials, f"profile {ctx.target} batch {batch}", "trial") as bar:
            times = timing.interleaved(runs, cfg.profile_seconds, cfg.profile_trials, progress=lambda: bar.update(1))
        speedup, interval = stats.speedup_with_ci(times["dense"], times["pruned"], seed=cfg.seed)
        result["batches"][str(batch)] = {
            "dense_ms": stats.summary_ms(times["dense"]), "pruned_ms": stats.summary_ms(times["pruned"]),
            "speedup": speedup, "speedup_ci": list(interval),
        }
        info(f"profile: {ctx.target} batch {batch}: {result['batches'][str(batch)]['dense_ms']['p50']:.2f} ms -> "
             f"{result['batches'][str(batch)]['pruned_ms']['p50']:.2f} ms, speedup {speedup:.2f}x [{interval[0]:.2f}, {interval[1]:.2f}]")
        del sessions, runs
    write_json(ctx.out / "latency.json", result)
