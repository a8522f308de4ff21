"""score: one score per unit of every group the criterion covers; scores.csv shows why a unit went."""

from __future__ import annotations

import csv

import torch
from safetensors.torch import load_file, save_file

from pipeline.core.artifacts import write_json
from pipeline.core.device import to_cpu
from pipeline.core.log import info
from pipeline.stages.common import StageContext, calibration_batches, dense_model, load_groups, scorer_class, scoring_context


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg
    model = dense_model(cfg).to(ctx.device)
    groups = load_groups(ctx.run_dir)
    stats = load_file(str(ctx.input("calibrate", "stats")))
    score_ctx = scoring_context(cfg, model, groups, stats, lambda: calibration_batches(cfg, ctx.device))
    scores = to_cpu(scorer_class(cfg)().score(score_ctx))
    for group in groups:
        if group.name in scores and scores[group.name].shape != (group.size,):
            raise RuntimeError(
                f"scorer {cfg.scorer} gave {tuple(scores[group.name].shape)} scores for {group.name}, expected ({group.size},)"
            )
    unscored = [g.name for g in groups if g.name not in scores]
    if unscored:
        score_ctx.notes.append(
            f"{cfg.scorer}: {len(unscored)} group(s) outside the criterion's scope kept whole ({', '.join(unscored[:3])}{', ...' if len(unscored) > 3 else ''})"
        )
    save_file(scores, str(ctx.output("scores")))
    write_scores_csv(ctx.output("table"), groups, scores, score_ctx.evidence)
    if score_ctx.budget:  # the criterion chose how many units each group keeps
        write_json(
            ctx.output("budget"),
            {
                "kept": score_ctx.budget,
                "sizes": {g.name: g.size for g in groups if g.name in score_ctx.budget},
                "details": score_ctx.budget_details,
            },
        )
    notes = sorted(set(score_ctx.notes))
    write_json(ctx.output("notes"), notes)
    for note in notes[:5]:
        info(f"score: {note}")


def write_scores_csv(path, groups, scores: dict[str, torch.Tensor], evidence: dict[str, dict[str, list]]) -> None:
    """layer, kind, unit, score, then the criterion's own per-unit evidence columns."""
    columns = sorted(evidence)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["layer", "kind", "unit", "score", *columns])
        for group in groups:
            for unit, value in enumerate(scores[group.name].tolist() if group.name in scores else []):
                extra = [_cell(evidence[c][group.name][unit]) if group.name in evidence[c] else "" for c in columns]
                writer.writerow([group.name, group.kind, unit, f"{value:.8g}", *extra])


def _cell(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
