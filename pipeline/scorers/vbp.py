"""Variance-Based Pruning (Berisha, Mehnert, Condurache, ICCV 2025, arXiv 2507.12988).

A unit's importance is the variance of its post-activation output on calibration data (Welford,
float64, every spatial position or token an observation): replacing the unit by its mean costs, in
expectation, exactly that variance, and mean-shift compensation (pipeline.pruning.compensation, on by default
here) puts the mean back. The paper ranks the MLP neurons of all blocks globally by raw variance,
and so does this scorer on transformers. On CNN channels [INTERP, measured: bench/criteria.py] raw
variances are not comparable across stages (later ResNet stages have smaller post-ReLU variances, so a
global threshold empties them and one-shot accuracy collapses), so channels are ranked per layer.
Scope: conv channels and MLP hidden neurons; attention heads are not VBP's and are kept."""

from __future__ import annotations

import torch

from pipeline.pruning.surgery import UnitGroup
from pipeline.scorers.base import ScoreContext, Scorer, per_unit_from_consumers


class VarianceScorer(Scorer):
    needs = ("input_moments",)
    kinds = ("channel", "neuron")
    ranking = "global"
    compensation = "mean"

    def ranking_for(self, groups: list[UnitGroup]) -> str:
        scored = [g for g in groups if g.kind in self.kinds]
        return "global" if scored and all(g.kind == "neuron" for g in scored) else "uniform"

    def score_group(self, group: UnitGroup, ctx: ScoreContext) -> torch.Tensor:
        return per_unit_from_consumers(group, ctx.stats, "input_moments/{module}/var")
