"""CoSeP's machinery on values known by construction."""

import math

import pytest
import torch

from pipeline.statistics import clustering


def test_jeffries_matusita_is_a_bounded_symmetric_distance():
    mean = torch.tensor([[0.0, 1.0, 5.0], [0.0, 1.0, -5.0], [3.0, 1.0, 0.0]], dtype=torch.float64)
    var = torch.tensor([[1.0, 1.0, 0.1], [1.0, 4.0, 0.1], [1.0, 1.0, 0.1]], dtype=torch.float64)
    pairs = torch.tensor([[0, 1], [1, 0], [0, 0], [0, 2]])
    jm = clustering.jeffries_matusita(mean, var, pairs)  # (channels, pairs)
    assert torch.allclose(jm[:, 0], jm[:, 1])  # symmetric
    assert torch.allclose(jm[:, 2], torch.zeros(3, dtype=torch.float64), atol=1e-7)  # a class against itself
    assert bool(((jm >= 0) & (jm <= 2)).all())
    # channel 0, classes 0 and 2: equal variances 1, means 3 apart: B = 9/8, JM = 2(1 - e^-B)
    assert float(jm[0, 3]) == pytest.approx(2 * (1 - math.exp(-9 / 8)), rel=1e-6)
    assert float(jm[2, 0]) == pytest.approx(2.0, abs=1e-6)  # means 10 apart, tiny variance: fully separated
    # channel 1, classes 0 and 1: same mean, variances 1 and 4: B = 0.5 ln(5/4)
    assert float(jm[1, 0]) == pytest.approx(2 * (1 - math.exp(-0.5 * math.log(5 / 4))), rel=1e-6)


def test_class_pairs_sample_above_the_limit():
    assert len(clustering.class_pairs(10)) == 45
    sampled = clustering.class_pairs(1000, max_pairs=2000, seed=3)
    assert len(sampled) == 2000 and bool((sampled[:, 0] < sampled[:, 1]).all())
    assert torch.equal(sampled, clustering.class_pairs(1000, max_pairs=2000, seed=3))


def blobs(centres, per: int, spread: float, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    points = torch.cat(
        [
            torch.tensor(c, dtype=torch.float64) + spread * torch.randn(per, len(c), generator=generator, dtype=torch.float64)
            for c in centres
        ]
    )
    return points, torch.cdist(points, points)


def test_kmedoids_puts_one_medoid_in_each_separated_blob():
    points, distances = blobs([(0, 0), (10, 0), (0, 10)], per=7, spread=0.3)
    medoids = clustering.kmedoids(distances, 3)
    assert sorted(int(m) // 7 for m in medoids) == [0, 1, 2]
    labels = clustering.assign(distances, medoids)
    assert all(len(set(labels[i * 7 : (i + 1) * 7].tolist())) == 1 for i in range(3))


def test_kmedoids_swaps_reach_the_optimum_of_a_small_problem():
    import itertools

    _, distances = blobs([(0, 0), (3, 1), (1, 4)], per=3, spread=1.0, seed=5)

    def cost(medoids):
        return float(distances[list(medoids)].min(0).values.sum())

    best = min(cost(c) for c in itertools.combinations(range(9), 3))
    assert cost(clustering.kmedoids(distances, 3).tolist()) == pytest.approx(best)


def test_mean_simplified_silhouette_by_hand():
    # points on a line at 0, 1, 10, 12; medoids 0 (index 0) and 10 (index 2)
    points = torch.tensor([[0.0], [1.0], [10.0], [12.0]], dtype=torch.float64)
    distances = torch.cdist(points, points)
    # point 1: a = 1, b = 9 -> 8/9; point 3: a = 2, b = 12 -> 10/12; the medoids (a = 0) are left out
    expected = (8 / 9 + 10 / 12) / 2
    assert clustering.mean_simplified_silhouette(distances, torch.tensor([0, 2])) == pytest.approx(expected)
    assert clustering.mean_simplified_silhouette(distances, torch.tensor([0, 1, 2, 3])) == 1.0  # every a = 0


def test_knee_of_a_broken_line_is_the_break():
    x = list(range(2, 41))
    y = [min(k, 10) + 0.01 * k for k in x]  # steep up to 10, then almost flat
    assert clustering.knee(x, y) == 10


def test_knee_of_a_saturating_exponential():
    # y = 1 - exp(-x/10), x = 2..100: scaled to the unit square the slope is 1 where
    # exp(-x/10) * 98 / (10 * (y(100) - y(2))) = 1, i.e. x = 10 ln(9.8 / 0.8187) = 24.8
    x = list(range(2, 101))
    y = [1 - math.exp(-k / 10) for k in x]
    assert clustering.knee(x, y) == pytest.approx(24.8, abs=1.0)


def test_polynomial_knee_of_a_parabola_is_its_analytic_knee():
    # y = -(x - 100)^2 on [0, 100]: y_n = 1 - (1 - x_n)^2, y_n - x_n is largest at x_n = 1/2
    x = list(range(0, 101))
    y = [-((k - 100) ** 2) for k in x]
    assert clustering.knee(x, y, method="polynomial") == 50


def test_no_knee_on_a_straight_or_convex_curve():
    x = list(range(10))
    assert clustering.knee(x, [2.0 * k for k in x]) is None
    assert clustering.knee(x, [k * k for k in x]) is None
