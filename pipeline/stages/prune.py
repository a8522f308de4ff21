"""prune: choose the units to remove from the scores and the budget, compensate what they leave
behind (mean-shift or least-squares re-fit, when asked), remove them physically, re-estimate
BatchNorm statistics, and save plan.json + model.safetensors (replayable, no pickles)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from exporters import TARGETS
from pipeline.allocators import ALLOCATORS
from pipeline.allocators.base import Request, lowest, width_options
from pipeline.core.artifacts import read_json, write_json
from pipeline.core.log import info, progress
from pipeline.data.loaders import accuracy
from pipeline.models.build import save_weights
from pipeline.models.clone import clone_model
from pipeline.pruning import compensation, macs, surgery
from pipeline.pruning.surgery import UnitGroup
from pipeline.stages.common import (
    StageContext,
    calibration_batches,
    dense_model,
    evaluation_batches,
    example_input,
    input_shape,
    load_groups,
    ranking_of,
)  # fmt: skip
from pipeline.training import iterative


def channel_block(targets: tuple[str, ...], precision: str) -> int:
    """The least common multiple of the targets' channel blocks."""
    block = 1
    for name in targets:
        block = math.lcm(block, TARGETS.load_class(name)().block(precision))
    return block


BOUNDED_BY_OWN = ("latency", "sensitivity")  # budgets that take a criterion's own counts as upper bounds


@dataclass
class Choice:
    """How many units each group keeps and which ones go."""

    kept: dict[str, int]
    removal: dict[str, list[int]]
    knob: float | None  # the budget search's ratio (what --macs-reduction was met with)
    ranking: str
    round_to: int
    own: dict | None  # the criterion's own per-group counts (budget.json), where they apply
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # the allocator's measurements (latency rounds)
    refitted: torch.nn.Module | None = None  # reconstruction's working copy: units off, every layer re-fitted


def fingerprint_extras(cfg) -> dict:
    """A latency budget also depends on how latency is measured, and on a brought-in table's contents."""
    if cfg.budget != "latency":
        return {}
    from pipeline.core.artifacts import sha256_file

    table = sha256_file(Path(cfg.latency_table)) if cfg.latency_table and Path(cfg.latency_table).is_file() else None
    return {"latency": {"threads": cfg.threads, "seconds": cfg.profile_seconds, "trials": cfg.profile_trials, "table": table}}


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg
    analysis = read_json(ctx.input("calibrate", "groups"))
    model = dense_model(cfg).to(ctx.device)
    surgery.drop_modules(model, analysis.get("dropped", []))  # training-only heads the forward never reaches
    example, groups = example_input(cfg, device=ctx.device), load_groups(ctx.run_dir)
    scores = load_file(str(ctx.input("score", "scores")))
    estimator = macs.MacsEstimator(model, example, groups)
    choice = choose(ctx, model, groups, scores, estimator)
    calibration = lambda: calibration_batches(cfg, ctx.device)  # noqa: E731
    steps, added_biases = None, []
    if cfg.iterative:
        schedule = _iterative(ctx, model, example, groups, scores, choice.kept, calibration)
        pruned, steps = schedule.model, schedule.steps
        choice.notes += schedule.notes
        write_json(ctx.output("iterations"), schedule.history)
        choice.kept = _kept_after(groups, steps)
    else:
        pruned, added_biases = _one_shot(ctx, model, example, groups, choice, calibration)
    plan = _plan(ctx, analysis, groups, choice, steps, added_biases)
    write_json(ctx.output("plan"), plan)
    save_weights(pruned, ctx.output("weights"))
    metrics = _metrics(ctx, model, pruned, example, plan, choice, estimator)
    write_json(ctx.output("metrics"), metrics)
    one_shot = metrics["pruned"]["accuracy_one_shot"]
    info(
        f"prune: MACs {metrics['dense']['macs'] / 1e6:.1f}M -> {metrics['pruned']['macs'] / 1e6:.1f}M "
        f"({metrics['macs_ratio']:.2f}x), {plan['units_removed']:.1%} of the units, {choice.ranking} ranking, "
        f"compensation {cfg.compensate}, channels rounded to {choice.round_to}"
        + (f", one-shot accuracy {one_shot:.4f}" if one_shot is not None else "")
    )


def choose(ctx: StageContext, model, groups: list[UnitGroup], scores: dict, estimator: macs.MacsEstimator) -> Choice:
    """Kept counts from the resolved budget (pipeline.preflight), then the lowest-scored units of each group."""
    cfg = ctx.cfg
    round_to = cfg.round_to or channel_block(cfg.targets, cfg.precision)
    own = read_json(ctx.input("score", "budget")) if _uses_own_counts(ctx) else None
    ranking = ranking_of(cfg, groups)
    request = Request(
        groups, scores, estimator, round_to, cfg.round_to is None, cfg.max_unit_ratio, ranking,
        ratio=cfg.ratio, macs_reduction=cfg.macs_reduction, own=own["kept"] if own else None,
        latency=_latency_budget(ctx, model, groups, scores, round_to) if cfg.budget == "latency" else None,
    )  # fmt: skip
    if cfg.allocate == "sensitivity":
        from pipeline.statistics.sensitivity import IMAGES, PLAN_IMAGES, PlanLoss, first_images

        request.round_to, request.own = _sensitivity_block(request), _sensitivity_bounds(request)
        count = PLAN_IMAGES if cfg.budget == "latency" else IMAGES  # plans measured whole on more images
        images, labels = first_images(calibration_batches(cfg, ctx.device), labelled=True, images=count)
        batches, _ = first_images(zip(images, labels), labelled=False)  # the curves': the first IMAGES of them
        request.sensitivity = _sensitivity(ctx, model, groups, scores, request, batches)
        if cfg.budget == "latency":  # (pipeline.allocators.plan_search); labels only where the images are the run's data
            request.plan_loss = PlanLoss(model, groups, scores, images, labels if cfg.data is not None else None)
    allocation = ALLOCATORS.load(cfg.budget)(request)
    if own and cfg.budget not in BOUNDED_BY_OWN:
        ranking = "own, scaled" if cfg.budget == "own-scaled" else "own"  # the criterion's per-layer counts
    for note in allocation.notes:
        info(f"prune: {note}")
    kept = allocation.kept
    removal = {g.name: lowest(scores[g.name], kept[g.name]) for g in groups if g.name in scores}
    choice = Choice(kept, removal, allocation.knob, ranking, allocation.round_to, own, allocation.notes, allocation.details)
    if cfg.select == "reconstruction":
        choice.removal, choice.refitted = _reconstruction(ctx, model, groups, scores, kept, removal)
    return choice


def _reconstruction(ctx: StageContext, model, groups, scores, kept: dict[str, int], by_scores: dict):
    """The units each group's consumers rebuild best (pipeline.pruning.reconstruction), in forward order,
    and the working copy, re-fitted on the way."""
    from pipeline.pruning import reconstruction

    batches = [inputs for inputs, _ in calibration_batches(ctx.cfg, ctx.device)]
    todo = [g for g in groups if g.name in scores and kept[g.name] < g.size]
    started, working = time.perf_counter(), clone_model(model)
    with progress(len(todo), "reconstruction selection", "group") as bar:
        removal, errors = reconstruction.select(
            model, working, groups, scores, kept, batches, example_input(ctx.cfg, device=ctx.device),
            ctx.cfg.lstsq_ridge, lambda g: by_scores[g.name], bar.update,
        )  # fmt: skip
    changed = sum(1 for name, e in errors.items() if e["reconstruction"] < e["scores"])
    info(
        f"prune: reconstruction chose other units than the scores in {changed} of {len(todo)} groups "
        f"({time.perf_counter() - started:.0f} s, every layer re-fitted on the way)"
    )
    return {**by_scores, **removal}, working


def _uses_own_counts(ctx: StageContext) -> bool:
    """The criterion's per-group counts: the budget itself, or upper bounds of the widths a latency or
    sensitivity budget chooses."""
    if ctx.cfg.budget in ("own", "own-scaled"):
        return True
    return ctx.cfg.budget in BOUNDED_BY_OWN and ctx.cfg.ranking == "auto" and ctx.input("score", "budget").is_file()


def _sensitivity_block(request: Request) -> int:
    from pipeline.allocators.sensitivity import block_for

    step = block_for(request)
    if step != request.round_to:
        info(f"prune: channel rounding {request.round_to} cannot reach {request.macs_reduction}x MACs; rounded to {step} instead")
    return step


def _sensitivity_bounds(request: Request) -> dict | None:
    from pipeline.allocators.sensitivity import bounds_for

    bounds = bounds_for(request)
    if request.own and bounds is None:
        info(
            "prune: the criterion's own counts alone cut more than the budget asks; the sensitivity curves choose the widths alone"
        )
    return bounds


def _sensitivity(ctx: StageContext, model, groups, scores, request: Request, batches: list[torch.Tensor]) -> dict:
    """Each group's measured sensitivity at a few of its allowed widths (pipeline.statistics.sensitivity)."""
    from pipeline.statistics import sensitivity

    widths = {g.name: width_options(g, request) for g in groups if g.name in scores}
    started = time.perf_counter()
    with progress(len(widths), "sensitivity", "group") as bar:
        refit = {"ridge": ctx.cfg.lstsq_ridge, "select": ctx.cfg.select} if ctx.cfg.compensate == "lstsq" else None
        curves = sensitivity.curves(model, groups, scores, widths, batches, bar.update, refit)
    count = sum(b.shape[0] for b in batches)
    info(f"prune: sensitivity of {len(curves)} groups measured on {count} images in {time.perf_counter() - started:.0f} s")
    return curves


def _latency_budget(ctx: StageContext, model, groups, scores, round_to: int):
    from exporters.base import default_threads
    from pipeline.latency.candidates import LatencyBudget, Setting

    cfg = ctx.cfg
    setting = Setting(
        cfg.targets[0], cfg.precision, input_shape(cfg), cfg.threads or default_threads(), cfg.profile_seconds,
        cfg.profile_trials, round_to, cfg.max_unit_ratio, Path(cfg.latency_table) if cfg.latency_table else None,
    )  # fmt: skip
    return LatencyBudget(setting, model, groups, scores, ctx.out / "latency", speedup=cfg.speedup, latency_ms=cfg.latency_ms)


def _one_shot(ctx: StageContext, model, example, groups, choice: Choice, calibration) -> tuple[torch.nn.Module, list[str]]:
    """The pruned copy: compensation folded or re-fitted, units removed, BatchNorm re-estimated."""
    cfg, method = ctx.cfg, ctx.cfg.compensate
    # reconstruction's working copy is re-fitted already, its units switched off: removing them is left
    pruned = choice.refitted if choice.refitted is not None else clone_model(model)
    added_biases = []
    if method == "mean":
        stats = load_file(str(ctx.input("calibrate", "stats")))
        added_biases = compensation.fold_means(pruned, groups, choice.removal, stats)
    surgery.apply_removal(pruned, example, groups, choice.removal)
    if method == "lstsq" and choice.refitted is None:
        layers = len(compensation.refit_order(pruned, groups, choice.removal, example))
        with progress(layers, "least-squares re-fit", "layer") as bar:
            compensation.refit_least_squares(
                model, pruned, groups, choice.removal, calibration(), example, cfg.lstsq_ridge, bar.update
            )
    if cfg.bn_recalibration and method != "lstsq":
        surgery.recalibrate_batchnorm(pruned, calibration())
    elif cfg.bn_recalibration:
        # the re-fit restores each layer's dense output, so the dense BatchNorm statistics hold;
        # re-estimating them on the calibration images measurably undoes part of the re-fit
        choice.notes.append(
            "lstsq: BatchNorm statistics kept from the dense model (the re-fit restores the outputs they describe)"
        )
    return pruned, added_biases


def _kept_after(groups: list[UnitGroup], steps: list[dict]) -> dict[str, int]:
    kept = {g.name: g.size for g in groups}
    for step in steps:
        for name, units in step["removal"].items():
            kept[name] -= len(units)
    return kept


def _plan(ctx: StageContext, analysis: dict, groups: list[UnitGroup], choice: Choice, steps, added_biases) -> dict:
    """plan.json: what was removed, replayable onto a fresh dense model (pipeline.stages.common.replay_plan)."""
    cfg = ctx.cfg
    entries = [
        {**g.to_dict(), "removed": choice.removal.get(g.name, []) if steps is None else None,
         "kept": choice.kept.get(g.name, g.size) if steps is not None else g.size - len(choice.removal.get(g.name, []))}
        for g in groups
    ]  # fmt: skip
    total = sum(g.size for g in groups)
    return {
        "model": cfg.model, "weights": cfg.weights, "input_shape": list(input_shape(cfg)), "scorer": cfg.scorer,
        # the fraction of all prunable units removed; the budget as asked for and the search's own knob
        "units_removed": sum(e["size"] - e["kept"] for e in entries) / max(total, 1),
        "budget": {"mode": cfg.budget, "ratio": cfg.ratio, "macs_reduction": cfg.macs_reduction, "search_ratio": choice.knob},
        "ranking": choice.ranking, "compensation": cfg.compensate, "bn_recalibration": cfg.bn_recalibration,
        "round_to": choice.round_to, "added_biases": added_biases, "dropped_modules": analysis.get("dropped", []),
        "notes": analysis["notes"] + read_json(ctx.input("score", "notes")) + choice.notes,
        "groups": entries, **({"steps": steps} if steps is not None else {}),
    }  # fmt: skip


def _metrics(ctx: StageContext, model, pruned, example, plan: dict, choice: Choice, estimator) -> dict:
    cfg = ctx.cfg
    dense_macs, dense_params = macs.count(model, example)
    pruned_macs, pruned_params = macs.count(pruned, example)
    per_layer = macs.per_module_macs(model, example), macs.per_module_macs(pruned, example)
    one_shot = accuracy(pruned, evaluation_batches(cfg, ctx.device))
    metrics = {
        "dense": {"macs": dense_macs, "params": dense_params},
        "pruned": {"macs": pruned_macs, "params": pruned_params, "accuracy_one_shot": one_shot},
        "macs_ratio": dense_macs / max(pruned_macs, 1), "units_removed": plan["units_removed"], "round_to": choice.round_to,
        "layers": {name: {"macs": [value, per_layer[1].get(name, 0)], **macs.widths(pruned, name)} for name, value in per_layer[0].items()},
    }  # fmt: skip
    if choice.details.get("rounds"):
        metrics["latency"] = {k: v for k, v in choice.details.items() if k != "sensitivity"}
    if choice.details.get("sensitivity"):
        metrics["sensitivity"] = choice.details["sensitivity"]
    if choice.own:  # what the criterion's own counts give, besides what was applied
        own = choice.own
        metrics["own_budget"] = {"kept": own["kept"], "details": own.get("details", {}),
                                 "macs_ratio": estimator.dense / max(estimator.estimate(own["kept"]), 1)}  # fmt: skip
    return metrics


def _iterative(ctx: StageContext, model, example, groups, scores, kept, calibration):
    """Class-Aware Pruning's schedule towards the same final kept counts (pipeline.training.iterative)."""
    from pipeline.stages.common import scorer_class, scoring_context, training_batches, training_options
    from pipeline.statistics import calibration as collectors
    from pipeline.training.distillation import finetune, has_convolutions

    cfg = ctx.cfg
    scorer = scorer_class(cfg)()
    evaluation = evaluation_batches(cfg, ctx.device)
    training = training_batches(cfg, ctx.device)
    options = training_options(cfg, ctx.device, channels_last=ctx.device.type == "cuda" and has_convolutions(model))

    def rescore(current, current_groups):
        consumers = sorted({c.module for g in current_groups for c in g.consumers})
        stats = collectors.collect(current, calibration(), consumers, scorer.needs) if scorer.needs else {}
        return scorer.score(scoring_context(cfg, current, current_groups, stats, calibration))

    def recalibrate(candidate):
        if cfg.bn_recalibration:
            surgery.recalibrate_batchnorm(candidate, calibration())

    schedule = iterative.run(
        model, example=example, groups=groups, first_scores=scores, target_kept=kept, rescore=rescore,
        recalibrate=recalibrate, finetune=lambda student: finetune(student, model, training, options),
        evaluate=lambda m: accuracy(m, evaluation), dense_accuracy=read_json(ctx.input("calibrate", "accuracy"))["dense"],
        max_acc_drop=cfg.max_acc_drop, keep_patterns=cfg.keep_layers,
    )  # fmt: skip
    for entry in schedule.history:
        shown = f", accuracy {entry['accuracy']:.4f}" if entry["accuracy"] is not None else ""
        info(f"prune: iterative step {entry['step']} removed {entry['removed']} units{shown}")
    return schedule
