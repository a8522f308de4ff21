"""score: one score per unit of every group the criterion covers; scores.csv shows why a unit went."""

from __future__ import annotations

import copy
import csv

import torch
from safetensors.torch import load_file, save_file

from pipeline.core.artifacts import write_json
from pipeline.core.log import info
from pipeline.data import calibration_loader
from pipeline.scorers.base import ScoreContext
from pipeline.stages.common import StageContext, data_spec, dense_model, load_groups, scorer_class


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg
    model = dense_model(cfg)
    groups = load_groups(ctx.run_dir)
    stats = load_file(str(ctx.stage_dir("calibrate") / "stats.safetensors"))

    def fresh_model():
        """The same architecture, every layer re-initialised by its own default (seeded)."""
        torch.manual_seed(cfg.seed + 1)
        fresh = copy.deepcopy(model)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return fresh.eval()

    score_ctx = ScoreContext(
        model=model, groups=groups, stats=stats, seed=cfg.seed, options={"snip_at_init": cfg.snip_at_init},
        batches=lambda: calibration_loader(data_spec(cfg), cfg.calib_samples, cfg.batch_size, cfg.seed, workers=cfg.workers),
        fresh_model=fresh_model,
    )
    scores = scorer_class(cfg)().score(score_ctx)
    for group in groups:
        if group.name in scores and scores[group.name].shape != (group.size,):
            raise RuntimeError(f"scorer {cfg.scorer} gave {tuple(scores[group.name].shape)} scores for {group.name}, expected ({group.size},)")
    unscored = [g.name for g in groups if g.name not in scores]
    if unscored:
        score_ctx.notes.append(f"{cfg.scorer}: {len(unscored)} group(s) outside the criterion's scope kept whole ({', '.join(unscored[:3])}{', ...' if len(unscored) > 3 else ''})")
    save_file({name: v.contiguous() for name, v in scores.items()}, str(ctx.out / "scores.safetensors"))
    with open(ctx.out / "scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["layer", "kind", "unit", "score"])
        for group in groups:
            for unit, value in enumerate(scores[group.name].tolist() if group.name in scores else []):
                writer.writerow([group.name, group.kind, unit, f"{value:.8g}"])
    notes = sorted(set(score_ctx.notes))
    write_json(ctx.out / "notes.json", notes)
    for note in notes[:5]:
        info(f"score: {note}")
