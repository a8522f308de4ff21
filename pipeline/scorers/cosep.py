"""CoSeP, Complementary Separability Pruning (Levin & Singer, arXiv 2505.13225): keep one unit per
group of units that separate the same classes.

Per unit, a separability profile: the Jeffries-Matusita distance between the activation
distributions of every pair of classes (univariate Gaussians of the unit's spatially pooled
post-activation output [INTERP: the paper works per pixel; pooling keeps the profile at C(C-1)/2
values]; above 2,000 class pairs a fixed sample of them). The units of a layer are clustered by
k-medoids on their profiles for every candidate k (every k for up to 128 units, 64 log-spaced values
above), the Mean Simplified Silhouette is taken for each k, and the knee of that curve is the number
of units the layer keeps: CoSeP decides each layer's budget itself. From each cluster it keeps the
unit with the largest L1 weight norm; a layer whose curve has no knee keeps every unit.

Knee [INTERP, measured]: Kneedle on the curve as it is, as the authors' code does, not on the
degree-2 polynomial fit the paper describes. The MSS leaves out points at distance 0 from their
medoid, so it climbs back to 1 as k nears the number of units (clusters become singletons); on the
CIFAR ResNets the quadratic fit follows that climb, turns convex and has no interior knee in most
layers, while the curve itself has its knee where the silhouette stops improving (k about 10-20%
of the units).

Scores: 1 + L1/max for the representatives, L1/max for the others, so that a budget flag that
scales the chosen counts keeps the representatives first. Scope: conv channels and MLP neurons."""

from __future__ import annotations

import math

import torch

from pipeline.core.errors import DataError
from pipeline.pruning.surgery import UnitGroup
from pipeline.scorers.base import ScoreContext, Scorer, per_unit_from_params
from pipeline.statistics import clustering

ALL_K_UP_TO = 128  # above this many units, k runs over a log-spaced grid
GRID_POINTS = 64


def candidate_ks(units: int) -> list[int]:
    if units <= ALL_K_UP_TO:
        return list(range(2, units))
    grid = torch.logspace(math.log10(2), math.log10(units - 1), GRID_POINTS).round().long().unique()
    return [int(k) for k in grid]


def separability_profiles(group: UnitGroup, stats: dict[str, torch.Tensor], seed: int = 0) -> torch.Tensor:
    """(units, features): each unit's JM distances over class pairs, averaged over its channels,
    concatenated over the consumers that read the group."""
    parts = []
    for consumer in group.consumers:
        if consumer.depthwise:
            continue
        key = f"class_moments/{consumer.module}"
        mean, var = stats[f"{key}/mean"], stats[f"{key}/var"]
        pairs = clustering.class_pairs(mean.shape[0], seed=seed)
        per_channel = clustering.jeffries_matusita(mean[:, consumer.channels], var[:, consumer.channels], pairs)
        device = per_channel.device
        units = torch.tensor(consumer.units, device=device)
        summed = torch.zeros(group.size, per_channel.shape[1], dtype=torch.float64, device=device).index_add_(
            0, units, per_channel
        )
        ones = torch.ones(len(units), dtype=torch.float64, device=device)
        counts = torch.zeros(group.size, dtype=torch.float64, device=device).index_add_(0, units, ones)
        parts.append(summed / counts.clamp_min(1)[:, None])
    if not parts:
        raise ValueError(f"{group.name} has no consumer to read class statistics at")
    if stats[f"class_moments/{group.consumers[0].module}/mean"].shape[0] < 2:
        raise DataError(
            "cosep compares classes, but the calibration images hold one class (without --data, the model's "
            "own predictions are the labels); give --data with images of several classes"
        )
    return torch.cat(parts, 1)


def choose_k(distances: torch.Tensor, seed: int = 0) -> tuple[int, dict]:
    """The knee of the MSS curve over candidate k, and the curve itself."""
    n = distances.shape[0]
    ks = candidate_ks(n)
    if not ks:
        return n, {"k": n, "knee": "too few units to cluster"}
    curve = [clustering.mean_simplified_silhouette(distances, clustering.kmedoids(distances, k, seed)) for k in ks]
    found = clustering.knee(ks, curve)
    k, how = (n, "no knee: all kept") if found is None else (int(found), "knee")
    return k, {"k": k, "knee": how, "mss": [round(v, 5) for v in curve], "ks": ks}


class CoSePScorer(Scorer):
    needs = ("class_moments",)
    kinds = ("channel", "neuron")
    chooses_budget = True

    def score_group(self, group: UnitGroup, ctx: ScoreContext) -> torch.Tensor:
        # the clustering runs where the statistics are (the CPU, as loaded), the weights' norms joining them there
        profiles = separability_profiles(group, ctx.stats, ctx.seed)
        weight_l1 = per_unit_from_params(ctx.model, group, torch.abs).to(profiles.device)
        weight_l1 = weight_l1 / weight_l1.max().clamp_min(1e-30)
        distances = torch.cdist(profiles, profiles)
        k, details = choose_k(distances, ctx.seed)
        if k >= group.size:
            cluster = torch.arange(group.size, device=distances.device)
        else:
            medoids = clustering.kmedoids(distances, k, ctx.seed)
            cluster = clustering.assign(distances, medoids)
        representative = torch.zeros(group.size, dtype=torch.bool, device=distances.device)
        for c in cluster.unique():
            members = (cluster == c).nonzero().flatten()
            representative[members[weight_l1[members].argmax()]] = True
        ctx.budget[group.name] = int(representative.sum())
        ctx.budget_details[group.name] = details
        ctx.add_evidence(group.name, cluster=cluster.tolist(), representative=[int(r) for r in representative])
        return weight_l1 + representative.double()
