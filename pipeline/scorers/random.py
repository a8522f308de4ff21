"""Seeded random scores: what any criterion has to beat."""

from __future__ import annotations

import zlib

import torch

from pipeline.pruning.surgery import UnitGroup
from pipeline.scorers.base import ScoreContext, Scorer


class RandomScorer(Scorer):
    def score_group(self, group: UnitGroup, ctx: ScoreContext) -> torch.Tensor:
        # Seeded per group, so a group's scores do not depend on which other groups exist.
        generator = torch.Generator().manual_seed(ctx.seed * 1_000_003 + zlib.crc32(group.name.encode()))
        return torch.rand(group.size, generator=generator, dtype=torch.float64)
