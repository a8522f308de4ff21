"""prune: choose the units to remove from the scores and the budget, compensate what they leave
behind (mean-shift or least-squares re-fit, when asked), remove them physically, re-estimate
BatchNorm statistics, and save plan.json + model.safetensors (replayable, no pickles)."""

from __future__ import annotations

import math

from safetensors.torch import load_file, save_file

from exporters import TARGETS
from pipeline.pruning import budget, compensation, macs, surgery
from pipeline.training import iterative
from pipeline.core.artifacts import read_json, write_json
from pipeline.core.log import info, progress
from pipeline.data.loaders import accuracy, calibration_loader, eval_loader
from pipeline.stages.common import (PLAN, MODEL_WEIGHTS, StageContext, data_spec, dense_model,
                                    example_input, input_shape, load_groups, ranking_of)


def channel_block(targets: tuple[str, ...], precision: str) -> int:
    """The least common multiple of the targets' channel blocks."""
    block = 1
    for name in targets:
        block = math.lcm(block, TARGETS.load_class(name)().block(precision))
    return block


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg
    analysis = read_json(ctx.stage_dir("calibrate") / "groups.json")
    model = dense_model(cfg)
    surgery.drop_modules(model, analysis.get("dropped", []))  # training-only heads the forward never reaches
    example = example_input(cfg)
    groups = load_groups(ctx.run_dir)
    scores = load_file(str(ctx.stage_dir("score") / "scores.safetensors"))
    stats = load_file(str(ctx.stage_dir("calibrate") / "stats.safetensors"))
    round_to = cfg.round_to or channel_block(cfg.targets, cfg.precision)
    ranking, method = ranking_of(cfg, groups), cfg.compensate
    estimator = macs.MacsEstimator(model, example, groups)
    own_path = ctx.stage_dir("score") / "budget.json"
    # the criterion chose per-group counts; an explicit --ranking spreads the budget by its scores instead
    own = read_json(own_path) if own_path.is_file() and cfg.ranking == "auto" else None
    ratio = (cfg.ratio if own else cfg.effective_ratio) if cfg.macs_reduction is None else None
    knob, kept, round_to, notes = budget.plan_budget(
        groups, scores, estimator, ratio, cfg.macs_reduction, round_to, cfg.round_to is None, cfg.max_unit_ratio, ranking,
        own["kept"] if own else None)
    if own:
        ranking = "own, scaled" if ratio is not None or cfg.macs_reduction else "own"  # the criterion's per-layer counts
    for note in notes:
        info(f"prune: {note}")
    removal = {g.name: budget.lowest(scores[g.name], kept[g.name]) for g in groups if g.name in scores}
    spec = data_spec(cfg)
    calibration = lambda: calibration_loader(spec, cfg.calib_samples, cfg.batch_size, cfg.seed, workers=cfg.workers)  # noqa: E731
    added_biases, steps = [], None
    if cfg.iterative:
        schedule = _iterative(cfg, ctx, model, example, groups, scores, kept, calibration)
        pruned, steps = schedule.model, schedule.steps
        notes += schedule.notes
        write_json(ctx.out / "iterations.json", schedule.history)
        kept = {g.name: g.size for g in groups}
        for step in steps:
            for name, units in step["removal"].items():
                kept[name] -= len(units)
    else:
        pruned = surgery.clone_model(model)
        added_biases = compensation.fold_means(pruned, groups, removal, stats) if method == "mean" else []
        surgery.apply_removal(pruned, example, groups, removal)
        if method == "lstsq":
            with progress(len(compensation.refit_order(pruned, groups, removal, example)), "least-squares re-fit", "layer") as bar:
                compensation.refit_least_squares(model, pruned, groups, removal, calibration(), example, cfg.lstsq_ridge, bar.update)
        if cfg.bn_recalibration and method != "lstsq":
            surgery.recalibrate_batchnorm(pruned, calibration())
        elif cfg.bn_recalibration:
            # the re-fit restores each layer's dense output, so the dense BatchNorm statistics hold;
            # re-estimating them on the calibration images measurably undoes part of the re-fit
            notes.append("lstsq: BatchNorm statistics kept from the dense model (the re-fit restores the outputs they describe)")
    dense_macs, dense_params = macs.count(model, example)
    pruned_macs, pruned_params = macs.count(pruned, example)
    one_shot = accuracy(pruned, eval_loader(spec, cfg.eval_samples, cfg.batch_size, cfg.seed, cfg.workers))
    scorer_notes = read_json(ctx.stage_dir("score") / "notes.json")
    write_json(ctx.out / PLAN, {
        "model": cfg.model, "weights": cfg.weights, "input_shape": list(input_shape(cfg)), "scorer": cfg.scorer,
        "ratio": knob, "ranking": ranking, "compensation": method, "bn_recalibration": cfg.bn_recalibration,
        "macs_reduction_target": cfg.macs_reduction, "round_to": round_to, "added_biases": added_biases,
        "dropped_modules": analysis.get("dropped", []),
        "notes": analysis["notes"] + scorer_notes + notes,
        "groups": [{**g.to_dict(), "removed": removal.get(g.name, []) if steps is None else None,
                    "kept": kept.get(g.name, g.size) if steps is not None else g.size - len(removal.get(g.name, []))} for g in groups],
        **({"steps": steps} if steps is not None else {}),
    })
    save_file({k: v.contiguous() for k, v in pruned.state_dict().items()}, str(ctx.out / MODEL_WEIGHTS))
    metrics = {
        "dense": {"macs": dense_macs, "params": dense_params},
        "pruned": {"macs": pruned_macs, "params": pruned_params, "accuracy_one_shot": one_shot},
        "macs_ratio": dense_macs / max(pruned_macs, 1), "ratio": knob, "round_to": round_to,
    }
    if own:  # what the criterion's own counts give, besides what was applied
        metrics["own_budget"] = {"kept": own["kept"], "details": own.get("details", {}),
                                 "macs_ratio": estimator.dense / max(estimator.estimate(own["kept"]), 1)}
    write_json(ctx.out / "metrics.json", metrics)
    message = (f"prune: MACs {dense_macs / 1e6:.1f}M -> {pruned_macs / 1e6:.1f}M ({metrics['macs_ratio']:.2f}x), "
               f"{ranking} ranking, compensation {method}, channels rounded to {round_to}")
    info(message + (f", one-shot accuracy {one_shot:.4f}" if one_shot is not None else ""))


def _iterative(cfg, ctx, model, example, groups, scores, kept, calibration):
    """Class-Aware Pruning's schedule towards the same final kept counts (pipeline.training.iterative)."""
    from pipeline.statistics import calibration as collectors
    from pipeline.data.loaders import train_loader
    from pipeline.stages.common import scorer_class, scoring_context
    from pipeline.training.distillation import finetune

    spec = data_spec(cfg)
    scorer = scorer_class(cfg)()
    evaluation = eval_loader(spec, cfg.eval_samples, cfg.batch_size, cfg.seed, cfg.workers)
    training = train_loader(spec, cfg.distill_samples, cfg.batch_size, cfg.seed, cfg.workers)

    def rescore(current, current_groups):
        consumers = sorted({c.module for g in current_groups for c in g.consumers})
        stats = collectors.collect(current, calibration(), consumers, scorer.needs) if scorer.needs else {}
        return scorer.score(scoring_context(cfg, current, current_groups, stats, calibration))

    def tune(student):
        finetune(student, model, training, cfg.distill_epochs, cfg.distill_optimizer, cfg.distill_lr,
                 cfg.distill_temperature, cfg.distill_alpha, cfg.regularize)

    dense_accuracy = read_json(ctx.stage_dir("calibrate") / "accuracy.json")["dense"]
    recalibrate = (lambda m: surgery.recalibrate_batchnorm(m, calibration())) if cfg.bn_recalibration else (lambda m: None)
    schedule = iterative.run(model, example, groups, scores, kept, rescore, recalibrate, tune,
                             lambda m: accuracy(m, evaluation), dense_accuracy, cfg.max_acc_drop, cfg.keep_layers)
    for entry in schedule.history:
        shown = f", accuracy {entry['accuracy']:.4f}" if entry["accuracy"] is not None else ""
        info(f"prune: iterative step {entry['step']} removed {entry['removed']} units{shown}")
    return schedule
