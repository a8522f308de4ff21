"""prune: choose the units to remove from the scores and the budget, remove them physically,
re-estimate BatchNorm statistics, and save plan.json + model.safetensors (replayable, no pickles)."""

from __future__ import annotations

import copy
import math

from safetensors.torch import load_file, save_file

from exporters import TARGETS
from pipeline import budget, macs, surgery
from pipeline.core.artifacts import read_json, write_json
from pipeline.core.log import info
from pipeline.data import accuracy, calibration_loader, eval_loader
from pipeline.stages.common import PLAN, MODEL_WEIGHTS, StageContext, data_spec, dense_model, example_input, input_shape, load_groups


def channel_block(targets: tuple[str, ...], precision: str) -> int:
    """The least common multiple of the targets' channel blocks."""
    block = 1
    for name in targets:
        block = math.lcm(block, TARGETS.load(name)().block(precision))
    return block


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg
    model = dense_model(cfg)
    example = example_input(cfg)
    groups = load_groups(ctx.run_dir)
    scores = load_file(str(ctx.stage_dir("score") / "scores.safetensors"))
    round_to = cfg.round_to or channel_block(cfg.targets, cfg.precision)
    estimator = macs.MacsEstimator(model, example, groups)
    ratio, kept, round_to, notes = budget.plan_budget(
        groups, estimator, cfg.effective_ratio if cfg.macs_reduction is None else None, cfg.macs_reduction,
        round_to, cfg.round_to is None, cfg.max_unit_ratio)
    for note in notes:
        info(f"prune: {note}")
    removal = {g.name: budget.lowest(scores[g.name], kept[g.name]) for g in groups}
    pruned = copy.deepcopy(model)
    surgery.apply_removal(pruned, example, groups, removal)
    spec = data_spec(cfg)
    if cfg.bn_recalibration:
        surgery.recalibrate_batchnorm(pruned, calibration_loader(spec, cfg.calib_samples, cfg.batch_size, cfg.seed, workers=cfg.workers))
    dense_macs, dense_params = macs.count(model, example)
    pruned_macs, pruned_params = macs.count(pruned, example)
    one_shot = accuracy(pruned, eval_loader(spec, cfg.eval_samples, cfg.batch_size, cfg.seed, cfg.workers))
    analysis = read_json(ctx.stage_dir("calibrate") / "groups.json")
    write_json(ctx.out / PLAN, {
        "model": cfg.model, "weights": cfg.weights, "input_shape": list(input_shape(cfg)), "scorer": cfg.scorer,
        "ratio": ratio, "macs_reduction_target": cfg.macs_reduction, "round_to": round_to,
        "notes": analysis["notes"] + notes,
        "groups": [{**g.to_dict(), "removed": removal[g.name], "kept": g.size - len(removal[g.name])} for g in groups],
    })
    save_file({k: v.contiguous() for k, v in pruned.state_dict().items()}, str(ctx.out / MODEL_WEIGHTS))
    metrics = {
        "dense": {"macs": dense_macs, "params": dense_params},
        "pruned": {"macs": pruned_macs, "params": pruned_params, "accuracy_one_shot": one_shot},
        "macs_ratio": dense_macs / max(pruned_macs, 1), "ratio": ratio, "round_to": round_to,
    }
    write_json(ctx.out / "metrics.json", metrics)
    message = f"prune: MACs {dense_macs / 1e6:.1f}M -> {pruned_macs / 1e6:.1f}M ({metrics['macs_ratio']:.2f}x), ratio {ratio:.3f}, channels rounded to {round_to}"
    info(message + (f", one-shot accuracy {one_shot:.4f}" if one_shot is not None else ""))
