"""C-SWAP, causal explainability-aware structured pruning (Bauvin, Baret, Ahmad, arXiv 2510.18636):
remove a unit, see what happens to the prediction, and keep the units whose removal hurts.

For each unit, the intervention do(unit := 0) or do(unit := its calibration mean) is applied where
the unit's consumers read it: the mean with --compensate mean, and also when BatchNorm is
re-estimated after removal (the default), because re-estimation absorbs the mean shift a removal
causes, so the mean is the edit the pruned model ends up with [spec 1.1 step 2; measured on
ResNet-20 at 2x: +0.02 to +0.03 one-shot over zeroing]. The intervention is applied and the true-class softmax probability of each calibration sample is
compared with the model's own: d(x) = p_do(x) - p(x), effect xi = mean of d(x)/p(x). The samples
are calibration images the model classifies correctly [INTERP: optional in the spec, done by the
authors' earlier code; measured: on the images it gets wrong p(x) is near 0, d/p explodes and
dominates the mean, and ranking by that mean kept less accuracy than random]. Per class, a
paired one-sided t-test on d (alpha 0.05, z = 1.645) sorts the unit: critical if removing it lowers
some class's probability significantly, else detrimental if it raises some class's, else neutral.

Budget [INTERP of the paper's progressive pruning, algorithms.md 1.2]: layers top-down (output to
input); in each, the non-critical units are removed in chunks of 10% of them, detrimental first,
largest effect first; a chunk that costs more than --max-acc-drop accuracy against the dense model
on a held-out split of the calibration images is undone and ends the layer. Each layer is scored on
the model with the later layers already pruned. No fine-tuning. The per-layer counts are this
criterion's own budget; a budget flag scales them (pipeline.allocators.base.ScaledSpread).

Cost: per layer, one pass for the layers before it (cached, pipeline.statistics.interventions.Prefix) and per
unit one pass through the rest, many units per pass; at most 64 scoring images per class, the rest
of the calibration set held out. So it grows linearly with the number of units and of images."""

from __future__ import annotations

import math

import torch

from pipeline.core.device import forward_bytes, rows_that_fit, to_float64
from pipeline.core.errors import DataError
from pipeline.core.log import progress
from pipeline.data.loaders import SYNTHETIC_LABEL
from pipeline.pruning.surgery import UnitGroup, execution_order
from pipeline.scorers.base import ScoreContext, Scorer
from pipeline.statistics.interventions import Intervener

SAMPLES_PER_CLASS = 64  # at most half of each class's calibration images: the rest is held out
Z_ONE_SIDED = 1.645  # alpha 0.05
CHUNK = 0.1  # fraction of a layer's candidates removed per progressive step
PASS_VALUES = 1024 * 3 * 32 * 32  # input values per forward pass on the CPU (interventions x samples): 1,024 CIFAR images
LEVELS = {"detrimental": 0, "neutral": 1, "critical": 2}  # prune order: lower first


def split_calibration(
    labels: torch.Tensor, correct: torch.Tensor | None = None, per_class: int = SAMPLES_PER_CLASS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the scoring samples (per class up to `per_class` of those the model gets right, at
    most half of the class) and of the held-out rest (right or wrong)."""
    correct = torch.ones_like(labels, dtype=torch.bool) if correct is None else correct
    scoring, held_out = [], []
    for label in labels.unique().tolist():
        rows = (labels == label).nonzero().flatten()
        eligible = rows[correct[rows]]
        take = eligible[: min(per_class, max(1, len(rows) // 2), len(eligible))]
        scoring.append(take)
        held_out.append(rows[~torch.isin(rows, take)])
    return torch.cat(scoring).sort().values, torch.cat(held_out).sort().values


def class_tests(differences: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unit, the lowest and highest per-class paired t statistic of `differences` (units, samples);
    classes with fewer than two samples are left out."""
    lowest = torch.full((differences.shape[0],), math.inf, dtype=torch.float64, device=differences.device)
    highest = torch.full((differences.shape[0],), -math.inf, dtype=torch.float64, device=differences.device)
    labels = labels.to(differences.device)
    for label in labels.unique().tolist():
        d = differences[:, labels == label].double()
        if d.shape[1] < 2:
            continue
        t = d.mean(1) / (d.std(1) / math.sqrt(d.shape[1]) + 1e-12)
        lowest, highest = torch.minimum(lowest, t), torch.maximum(highest, t)
    return lowest.nan_to_num(0.0, 0.0, 0.0), highest.nan_to_num(0.0, 0.0, 0.0)


def categorise(t_lowest: torch.Tensor, t_highest: torch.Tensor) -> list[str]:
    return [
        "critical" if lo < -Z_ONE_SIDED else "detrimental" if hi > Z_ONE_SIDED else "neutral"
        for lo, hi in zip(t_lowest.tolist(), t_highest.tolist())
    ]


def order_scores(effects: torch.Tensor, categories: list[str]) -> torch.Tensor:
    """Scores whose ascending order is the prune order: category first, then the largest effect."""
    levels = torch.tensor([LEVELS[c] for c in categories], dtype=torch.float64, device=effects.device)
    return levels + 0.5 + torch.atan(-effects.double()) / math.pi


def true_class_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(blocks * samples, classes) logits -> (blocks, samples) probabilities of each sample's label."""
    probabilities = to_float64(logits).softmax(-1).reshape(-1, len(labels), logits.shape[-1])
    labels = labels.to(probabilities.device)
    return probabilities.gather(2, labels.expand(probabilities.shape[0], -1)[..., None]).squeeze(-1)


class CSwapScorer(Scorer):
    needs = ("input_moments",)  # the means that replace a unit under --compensate mean
    chooses_budget = True
    config_keys = ("compensate", "bn_recalibration", "max_acc_drop", "max_unit_ratio")

    def score(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        model = ctx.model.eval()
        inputs, labels = _calibration_set(model, ctx.batches())
        with torch.no_grad():
            step = _rows_per_pass(model, inputs)
            correct = torch.cat([model(inputs[i : i + step]).argmax(1) for i in range(0, len(inputs), step)]) == labels
        scoring, held_out = split_calibration(labels, correct)
        if len(scoring) == 0:
            raise DataError(
                "cswap measures effects on images the model classifies correctly, and it gets none of the "
                "calibration images right; check --weights and --data"
            )
        if len(held_out) == 0:
            held_out = scoring
            ctx.notes.append("cswap: too few calibration images to hold some out; accuracy checked on the scoring images")
        x_score, y_score, x_held, y_held = inputs[scoring], labels[scoring], inputs[held_out], labels[held_out]
        fill = None
        if ctx.options.compensate == "mean" or ctx.options.bn_recalibration:
            fill = {
                c.module: ctx.stats[f"input_moments/{c.module}/mean"].to(inputs.device, torch.float32)
                for g in ctx.groups
                for c in g.consumers
                if not c.depthwise
            }
        tolerance, max_unit_ratio = ctx.options.max_acc_drop, ctx.options.max_unit_ratio
        intervener = Intervener(model, ctx.groups, fill)
        dense_accuracy = _accuracy(intervener, intervener.prefix(x_held, [g.name for g in ctx.groups]), y_held)
        scores: dict[str, torch.Tensor] = {}
        try:
            with progress(sum(g.size for g in ctx.groups), "cswap interventions", "unit") as bar:
                for group in top_down(model, ctx.example, ctx.groups):
                    scores[group.name] = self._layer(
                        intervener,
                        group,
                        ctx,
                        x_score,
                        y_score,
                        x_held,
                        y_held,
                        dense_accuracy,
                        tolerance,
                        max_unit_ratio,
                        bar.update,
                    )
        finally:
            intervener.close()
        removed = sum(g.size - ctx.budget[g.name] for g in ctx.groups)
        ctx.notes.append(
            f"cswap: {len(scoring)} correctly classified scoring images (up to {SAMPLES_PER_CLASS} per class), {len(held_out)} held out "
            f"(dense accuracy {dense_accuracy:.4f} there); progressive removal within {tolerance:.3f} of it removed "
            f"{removed} units"
        )
        return scores

    def _layer(
        self,
        intervener: Intervener,
        group: UnitGroup,
        ctx: ScoreContext,
        x_score,
        y_score,
        x_held,
        y_held,
        dense_accuracy: float,
        tolerance: float,
        max_unit_ratio: float,
        advance,
    ) -> torch.Tensor:
        prefix = intervener.prefix(x_score, [group.name])
        reference = _probabilities(intervener, prefix, y_score)[0]
        # (units, samples): small, so the tests and scores run on the CPU, where scores are returned
        differences = torch.empty(group.size, len(y_score), dtype=torch.float64)
        per_pass = max(1, _rows_per_pass(intervener.model, x_score) // len(y_score))
        for start in range(0, group.size, per_pass):
            units = list(range(start, min(group.size, start + per_pass)))
            differences[start : start + len(units)] = (
                _probabilities(intervener, prefix, y_score, group.name, units) - reference
            ).cpu()
            advance(len(units))
        effects = (differences / reference.cpu().clamp_min(1e-12)).mean(1)
        t_lowest, t_highest = class_tests(differences, y_score.cpu())
        categories = categorise(t_lowest, t_highest)
        scores = order_scores(effects, categories)

        # progressive removal, undone at the first chunk that costs too much held-out accuracy
        held_prefix = intervener.prefix(x_held, [group.name])
        candidates = sorted((u for u in range(group.size) if categories[u] != "critical"), key=lambda u: (float(scores[u]), -u))
        candidates = candidates[: group.size - max(1, math.ceil(group.size * (1.0 - max_unit_ratio)))]
        step = max(1, math.ceil(CHUNK * len(candidates)))
        removed: list[int] = []
        accuracy = dense_accuracy
        for start in range(0, len(candidates), step):
            chunk = candidates[start : start + step]
            intervener.remove(group.name, chunk)
            trial = _accuracy(intervener, held_prefix, y_held)
            if dense_accuracy - trial > tolerance:
                intervener.restore(group.name, chunk)
                break
            removed += chunk
            accuracy = trial
        ctx.budget[group.name] = group.size - len(removed)
        ctx.budget_details[group.name] = {**{c: categories.count(c) for c in LEVELS}, "held_out_accuracy": round(accuracy, 4)}
        gone = set(removed)
        ctx.add_evidence(
            group.name,
            effect=effects.tolist(),
            t_lowest=t_lowest.tolist(),
            t_highest=t_highest.tolist(),
            category=categories,
            removed_in_progressive=[int(u in gone) for u in range(group.size)],
        )
        return scores


def _rows_per_pass(model, inputs: torch.Tensor) -> int:
    """Rows (interventions x samples) per forward pass: on the CPU 1,024 at CIFAR size, fewer for larger
    inputs; on CUDA as many as the free device memory holds (measured each time: caches come and go)."""
    return rows_that_fit(inputs.device, forward_bytes(model, inputs), max(1, PASS_VALUES // inputs[0].numel()))


def _probabilities(
    intervener: Intervener, prefix, labels: torch.Tensor, group: str | None = None, units: list[int] | None = None
) -> torch.Tensor:
    """(len(units) or 1, samples) true-class probabilities, the samples taken in slices that keep each
    forward pass within _rows_per_pass."""
    blocks = len(units) if units else 1
    step = max(1, _rows_per_pass(intervener.model, prefix.inputs) // blocks)
    parts = []
    for start in range(0, len(labels), step):
        rows = slice(start, min(len(labels), start + step))
        parts.append(true_class_probability(intervener.logits(prefix, group, units, rows=rows), labels[rows]))
    return torch.cat(parts, 1)


def _accuracy(intervener: Intervener, prefix, labels: torch.Tensor) -> float:
    step = _rows_per_pass(intervener.model, prefix.inputs)
    correct = sum(
        int((intervener.logits(prefix, rows=slice(i, i + step)).argmax(1) == labels[i : i + step]).sum())
        for i in range(0, len(labels), step)
    )
    return correct / max(len(labels), 1)


def top_down(model, example, groups: list[UnitGroup]) -> list[UnitGroup]:
    """Groups ordered from the output to the input, by where their consumers first run."""
    position = {name: i for i, name in enumerate(execution_order(model, example))}
    return sorted(groups, key=lambda g: min((position.get(c.module, 0) for c in g.consumers), default=0), reverse=True)


def _calibration_set(model, batches) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, labels = [], []
    for x, y in batches:
        y = y.to(x.device)
        if (y == SYNTHETIC_LABEL).any():  # no labels: the model's own predictions stand in
            with torch.no_grad():
                y = model(x).argmax(1)
        inputs.append(x)
        labels.append(y)
    return torch.cat(inputs), torch.cat(labels)
