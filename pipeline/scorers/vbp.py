"""Variance-Based Pruning (Berisha, Mehnert, Condurache, ICCV 2025, arXiv 2507.12988).

A unit's importance is the variance of its post-activation output on calibration data (Welford,
float64, every spatial position or token an observation): replacing the unit by its mean costs, in
expectation, exactly that variance, and mean-shift compensation (pipeline.compensation, on by default
here) puts the mean back. One global ranking over all units, raw variances as the paper does.
Scope: conv channels and MLP hidden neurons; attention heads are not VBP's and are kept."""

from __future__ import annotations

import torch

from pipeline.scorers.base import Scorer, ScoreContext, per_unit_from_consumers
from pipeline.surgery import UnitGroup


class VarianceScorer(Scorer):
    needs = ("input_moments",)
    kinds = ("channel", "neuron")
    ranking = "global"
    compensation = "mean"

    def score_group(self, group: UnitGroup, ctx: ScoreContext) -> torch.Tensor:
        return per_unit_from_consumers(group, ctx.stats, "input_moments/{module}/var")
