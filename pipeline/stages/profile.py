"""profile (per target): dense and pruned latency, interleaved in one process, at the batch size of
--input-shape and at every --batch-sizes; the target's outputs checked against PyTorch first."""

from __future__ import annotations

import numpy as np

from exporters import TARGETS
from exporters.base import cpu_name, default_threads
from pipeline.core.artifacts import write_json
from pipeline.core.errors import PipelineError
from pipeline.core.log import info, progress
from pipeline.stages.common import StageContext, input_shape
from profiles import layers, measure, stats

# Outputs against fp32 PyTorch: max abs error allowed, relative to the largest reference logit. fp32 is
# strict (a miss is a bug); fp16 and int8 change the numbers by design, so there the top-1 agreement
# and the accuracy of the quantised graph on the eval split (export/parity.json) are the check.
PARITY_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2, "int8": None}
MIN_TOP1_AGREEMENT = 0.9
LAYER_PROFILE_CALLS = 20


def parity(sessions: dict, reference, precision: str, target: str) -> dict:
    result = {}
    for variant, session in sessions.items():
        output, expected = session.run(reference["input"]), reference[variant]
        result[f"{variant}_max_abs"] = float(np.abs(output - expected).max())
        result[f"{variant}_top1_agreement"] = float((output.argmax(1) == expected.argmax(1)).mean())
    scale = max(1.0, float(np.abs(reference["pruned"]).max()))
    tolerance = PARITY_TOLERANCE[precision]
    result["ok"] = (
        (result["pruned_max_abs"] <= tolerance * scale)
        if tolerance is not None
        else min(result["dense_top1_agreement"], result["pruned_top1_agreement"]) >= MIN_TOP1_AGREEMENT
    )
    if precision == "fp32" and not result["ok"]:
        raise PipelineError(
            f"{target} gives outputs {result['pruned_max_abs']:.2e} (max abs) away from PyTorch in fp32: "
            f"the compiled model is wrong"
        )
    return result


def layer_breakdown(ctx: StageContext, target, compiled, shape, threads: int) -> dict | None:
    """Per-layer milliseconds of both models from the runtime's own profiler, matched to their modules."""
    found = {}
    for variant in ("dense", "pruned"):
        times = target.layer_times(compiled / variant, shape, threads, ctx.cfg.precision, LAYER_PROFILE_CALLS)
        if times is None:
            return None
        by_module, other = layers.match(times, layers.onnx_layers(ctx.input("export", variant)))
        found[variant] = {"modules": by_module, "other_ms": other}
    return found


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg
    target = TARGETS.load(ctx.target)()
    compiled = ctx.stage_dir("compile") / ctx.target
    threads = cfg.threads or default_threads()
    shape = input_shape(cfg)
    batches = [shape[0]] + [b for b in cfg.batch_sizes if b != shape[0]]
    reference = np.load(ctx.input("export", "reference"))
    result = {"target": ctx.target, "threads": threads, "precision": cfg.precision, "cpu": cpu_name(), "batches": {}}
    for batch in batches:
        feed_shape = (batch, *shape[1:])
        sessions = {v: target.open(compiled / v, feed_shape, threads, cfg.precision) for v in ("dense", "pruned")}
        if batch == shape[0]:
            result["parity"] = parity(sessions, reference, cfg.precision, ctx.target)
        with progress(cfg.profile_trials, f"profile {ctx.target} batch {batch}", "trial") as bar:
            times = measure.time_compiled(
                target, {v: compiled / v for v in sessions}, feed_shape, threads, cfg.precision, cfg.profile_seconds,
                cfg.profile_trials, seed=cfg.seed, sessions=sessions, progress=lambda: bar.update(1),
            )  # fmt: skip
        speedup, interval = stats.speedup_with_ci(times["dense"], times["pruned"], seed=cfg.seed)
        result["batches"][str(batch)] = {
            "dense_ms": stats.summary_ms(times["dense"]),
            "pruned_ms": stats.summary_ms(times["pruned"]),
            "speedup": speedup,
            "speedup_ci": list(interval),
        }
        info(
            f"profile: {ctx.target} batch {batch}: {result['batches'][str(batch)]['dense_ms']['p50']:.2f} ms -> "
            f"{result['batches'][str(batch)]['pruned_ms']['p50']:.2f} ms, speedup {speedup:.2f}x [{interval[0]:.2f}, {interval[1]:.2f}]"
        )
        del sessions
    result["layers"] = layer_breakdown(ctx, target, compiled, shape, threads)
    result["runtime_notes"] = target.layer_reasons(compiled / "pruned")
    write_json(ctx.output("latency"), result)
