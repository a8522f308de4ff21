"""score: one score per unit of every group by the chosen criterion; scores.csv shows why a unit went."""

from __future__ import annotations

import csv

from safetensors.torch import load_file, save_file

from pipeline.core.artifacts import write_json
from pipeline.core.log import info
from pipeline.scorers import SCORERS
from pipeline.scorers.base import ScoreContext
from pipeline.stages.common import StageContext, dense_model, load_groups


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg
    model = dense_model(cfg)
    groups = load_groups(ctx.run_dir)
    stats = load_file(str(ctx.stage_dir("calibrate") / "stats.safetensors"))
    scorer = SCORERS.load(cfg.scorer)()
    score_ctx = ScoreContext(model=model, groups=groups, stats=stats, seed=cfg.seed)
    scores = scorer.score(score_ctx)
    for group in groups:
        values = scores[group.name]
        if values.shape != (group.size,):
            raise RuntimeError(f"scorer {cfg.scorer} gave {tuple(values.shape)} scores for {group.name}, expected ({group.size},)")
    save_file({name: v.contiguous() for name, v in scores.items()}, str(ctx.out / "scores.safetensors"))
    with open(ctx.out / "scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["layer", "kind", "unit", "score"])
        for group in groups:
            for unit, value in enumerate(scores[group.name].tolist()):
                writer.writerow([group.name, group.kind, unit, f"{value:.8g}"])
    write_json(ctx.out / "notes.json", sorted(set(score_ctx.notes)))
    for note in sorted(set(score_ctx.notes))[:5]:
        info(f"score: {note}")
