"""calibrate: find the unit groups of the dense model and collect the statistics the scorer (and
compensation) declared they need, on class-stratified calibration data."""

from __future__ import annotations

from safetensors.torch import save_file

from pipeline.core.artifacts import write_json
from pipeline.core.device import to_cpu
from pipeline.core.errors import ModelError
from pipeline.core.log import info, progress
from pipeline.data.loaders import accuracy
from pipeline.pruning.analysis import analyse
from pipeline.stages.common import StageContext, calibration_batches, dense_model, evaluation_batches, example_input, scorer_class
from pipeline.statistics import calibration


def fingerprint_extras(cfg) -> dict:
    """What the stage's output depends on besides its config keys: the weights, the data, the statistics."""
    from pathlib import Path

    from pipeline.core.artifacts import sha256_file
    from pipeline.data.sources import fingerprint

    return {"weights_sha256": sha256_file(Path(cfg.weights)) if cfg.weights else None, "data": fingerprint(cfg.data),
            "needs": needs_of(cfg), "stem_kept": stem_kept(cfg)}  # fmt: skip


def stem_kept(cfg) -> bool:
    """A latency budget may cut the stem: it sees what the stem's width costs (pipeline.pruning.analysis)."""
    return cfg.budget != "latency"


def needs_of(cfg) -> tuple[str, ...]:
    """What the scorer reads, plus the activation means mean-shift compensation folds."""
    needs = set(scorer_class(cfg).needs)
    if cfg.compensate == "mean":
        needs.add("input_moments")
    return tuple(sorted(needs))


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg
    model = dense_model(cfg).to(ctx.device)
    analysis = analyse(model, example_input(cfg, device=ctx.device), cfg.keep_layers, keep_stem=stem_kept(cfg))
    if not analysis.groups:
        raise ModelError(
            f"nothing in {cfg.model} can be pruned: "
            + ("; ".join(analysis.notes) or "no conv or linear layer between stem and classifier")
        )
    write_json(
        ctx.output("groups"),
        {
            "stem": analysis.stem,
            "classifier": analysis.classifier,
            "notes": analysis.notes,
            "dropped": analysis.dropped,
            "groups": [g.to_dict() for g in analysis.groups],
        },
    )
    for note in analysis.notes:
        info(f"calibrate: {note}")
    needs = needs_of(cfg)
    consumers = sorted({c.module for g in analysis.groups for c in g.consumers})
    stats = {}
    if needs:
        with progress(cfg.calib_samples, "calibrate", "img") as bar:
            stats = calibration.collect(model, calibration_batches(cfg, ctx.device), consumers, needs, progress=bar.update)
    save_file(to_cpu(stats), str(ctx.output("stats")))
    dense_accuracy = accuracy(model, evaluation_batches(cfg, ctx.device))
    write_json(ctx.output("accuracy"), {"dense": dense_accuracy})
    if dense_accuracy is not None:
        info(f"calibrate: dense accuracy {dense_accuracy:.4f}")
