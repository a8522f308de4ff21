"""Scorer registry: one line per criterion. A scorer gives one score per unit of each group;
higher means more important (kept first)."""

from pipeline.core.registry import Entry, Registry

SCORERS = Registry(
    "scorer",
    [
        Entry(
            "l1",
            "pipeline.scorers.magnitude:L1Scorer",
            "L1 norm of each unit's weights, averaged over its coupled layers (Li et al. 2017)",
        ),
        Entry("l2", "pipeline.scorers.magnitude:L2Scorer", "L2 norm of each unit's weights, averaged over its coupled layers"),
        Entry("random", "pipeline.scorers.random:RandomScorer", "seeded random scores: the floor every criterion must beat"),
        Entry(
            "bn-scale",
            "pipeline.scorers.bn_scale:BNScaleScorer",
            "|gamma| of the BatchNorm after each channel (network slimming, Liu et al. 2017)",
        ),
        Entry(
            "taylor",
            "pipeline.scorers.taylor:TaylorScorer",
            "first-order Taylor |w * dL/dw| per unit from calibration gradients (Molchanov et al. 2019)",
        ),
        Entry(
            "vbp",
            "pipeline.scorers.vbp:VarianceScorer",
            "Variance-Based Pruning: post-activation variance, global ranking, mean-shift compensation (arXiv 2507.12988)",
        ),
        Entry(
            "snip",
            "pipeline.scorers.snip:SnipScorer",
            "structured SNIP: |sum a * dL/da| at a unit gate, normalised per layer, global ranking (ICLR 2019)",
        ),
        Entry(
            "class-aware",
            "pipeline.scorers.class_aware:ClassAwareScorer",
            "Class-Aware Pruning: how many classes find a filter important, per-class Taylor (arXiv 2312.05875)",
        ),
        Entry(
            "cosep",
            "pipeline.scorers.cosep:CoSePScorer",
            "CoSeP: class-separability (JM) clustering, one unit per cluster, automatic per-layer budget (arXiv 2505.13225)",
        ),
        Entry(
            "cswap",
            "pipeline.scorers.cswap:CSwapScorer",
            "C-SWAP: causal effect of removing each unit on the true-class probability, per-class tests, progressive removal (arXiv 2510.18636)",
        ),
    ],
)
