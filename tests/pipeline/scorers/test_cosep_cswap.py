"""CoSeP and C-SWAP on constructed models whose answer is known."""

import torch
import torch.nn as nn

from pipeline.pruning.analysis import analyse
from pipeline.scorers import SCORERS
from pipeline.scorers.base import ScoreContext, ScorerOptions
from pipeline.scorers.cswap import categorise, class_tests, split_calibration
from pipeline.statistics import calibration


def _context(model, example, batches, scorer, **options):
    groups = analyse(model, example).groups
    consumers = sorted({c.module for g in groups for c in g.consumers})
    stats = calibration.collect(model, batches, consumers, SCORERS.load(scorer).needs)
    return ScoreContext(
        model=model, groups=groups, stats=stats, batches=lambda: batches, example=example, options=ScorerOptions(**options)
    )


def class_signal_batches(classes: int, per_class: int, noise: float, seed: int = 0):
    """Inputs = one-hot of the class (times 3) plus noise; labels = the class."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    inputs = 3.0 * nn.functional.one_hot(labels, classes).float() + noise * torch.randn(len(labels), classes, generator=generator)
    order = torch.randperm(len(labels), generator=generator)
    inputs, labels = inputs[order], labels[order]
    return [(inputs[i : i + 32], labels[i : i + 32]) for i in range(0, len(labels), 32)]


def cosep_model():
    """Hidden neurons 0-3 read class 0, 4-7 class 1, 8-11 class 2 (each at a different scale, so the
    profiles inside a trio are identical), neuron 12 reads class 3: four distinct profiles."""
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 13), nn.ReLU(), nn.Linear(13, 4)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4))
        model[0].bias.zero_()
        model[2].weight.zero_()
        model[2].bias.zero_()
        for neuron in range(13):
            model[2].weight[neuron, min(neuron // 4, 3)] = 1.0 + 0.1 * (neuron % 4)
        model[4].weight.fill_(0.1)
    return model


def test_cosep_clusters_identical_profiles_and_keeps_the_distinct_unit():
    model = cosep_model()
    ctx = _context(model, torch.randn(1, 4), class_signal_batches(4, 40, 0.3), "cosep")
    scores = SCORERS.load("cosep")().score(ctx)["2"]
    cluster = ctx.evidence["cluster"]["2"]
    representative = ctx.evidence["representative"]["2"]
    assert ctx.budget["2"] == 4 and ctx.budget_details["2"]["k"] == 4  # the knee: one cluster per profile
    for trio in (range(0, 4), range(4, 8), range(8, 12)):
        assert len({cluster[u] for u in trio}) == 1  # identical profiles share a cluster
        assert [u for u in trio if representative[u]] == [max(trio)]  # the largest weight represents it
    assert representative[12] == 1 and cluster[12] not in {cluster[u] for u in range(12)}  # the distinct unit is kept
    assert sorted(scores.topk(4).indices.tolist()) == [3, 7, 11, 12]  # representatives rank first


def cswap_model():
    """Hidden neuron 0 carries class 0 into logit 0, neuron 1 class 1 into logit 1 (both critical);
    neuron 2 fires for class 0 only but pushes logit 1 (removing it helps: detrimental); neuron 3 has
    zero outgoing weights (removing it changes nothing: neutral)."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]))
        model[2].bias.zero_()
        model[4].weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.5, 0.0]]))
        model[4].bias.zero_()
    return model


def test_cswap_sorts_critical_detrimental_and_neutral_units():
    model = cswap_model()
    ctx = _context(model, torch.randn(1, 2), class_signal_batches(2, 64, 0.2), "cswap", compensate="none", max_acc_drop=0.005)
    scores = SCORERS.load("cswap")().score(ctx)["2"]
    assert ctx.evidence["category"]["2"] == ["critical", "critical", "detrimental", "neutral"]
    effect = ctx.evidence["effect"]["2"]
    assert effect[2] > 0 and effect[0] < 0 and effect[1] < 0
    assert effect[3] == 0.0  # zero outgoing weights: the intervention changes nothing
    assert scores.argsort().tolist()[:2] == [2, 3]  # prune order: detrimental, then neutral
    # removing neurons 2 and 3 costs no held-out accuracy; the critical ones stay
    assert ctx.budget["2"] == 2
    assert ctx.evidence["removed_in_progressive"]["2"] == [0, 0, 1, 1]


def test_cswap_undoes_a_chunk_that_costs_more_than_the_tolerance():
    model = cswap_model()
    batches = class_signal_batches(2, 64, 0.2)
    # a negative tolerance: every chunk "costs too much" unless it raises held-out accuracy, which
    # cannot happen here (the dense model is already right on every held-out sample)
    ctx = _context(model, torch.randn(1, 2), batches, "cswap", compensate="none", max_acc_drop=-0.01)
    SCORERS.load("cswap")().score(ctx)
    assert ctx.budget["2"] == 4 and ctx.evidence["removed_in_progressive"]["2"] == [0, 0, 0, 0]
    assert ctx.budget_details["2"]["held_out_accuracy"] == 1.0


def test_per_class_tests_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    differences = torch.tensor(
        [
            [-1.0, -1.1, -0.9, 0.0, 0.1, -0.1],  # lowers class 0: critical
            [0.5, 0.6, 0.4, 0.0, 0.01, -0.01],  # raises class 0 only: detrimental
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ],
        dtype=torch.float64,
    )  # no effect: neutral
    lowest, highest = class_tests(differences, labels)
    # unit 0, class 0: mean -1, sample std 0.1, t = -1 / (0.1 / sqrt 3)
    assert abs(float(lowest[0]) + 1 / (0.1 / 3**0.5)) < 1e-6
    assert categorise(lowest, highest) == ["critical", "detrimental", "neutral"]


def test_calibration_split_holds_out_the_rest_of_each_class():
    labels = torch.tensor([0] * 100 + [1] * 10 + [2] * 1)
    scoring, held_out = split_calibration(labels, per_class=32)
    assert (labels[scoring] == 0).sum() == 32
    assert (labels[scoring] == 0).sum() == 32 and (labels[scoring] == 1).sum() == 5 and (labels[scoring] == 2).sum() == 1
    assert len(scoring) + len(held_out) == len(labels) and not set(scoring.tolist()) & set(held_out.tolist())


def test_only_correctly_classified_images_are_scored():
    labels = torch.tensor([0] * 10 + [1] * 10)
    correct = torch.tensor([True, False] * 10)
    scoring, held_out = split_calibration(labels, correct, per_class=32)
    assert bool(correct[scoring].all()) and len(scoring) == 10  # 5 right per class, all within half the class
    assert sorted(scoring.tolist() + held_out.tolist()) == list(range(20))


def test_cswap_in_small_passes_gives_the_same_answer(monkeypatch):
    """Large inputs are scored a few rows per forward pass; the result must not depend on it."""
    from pipeline.scorers import cswap

    batches = class_signal_batches(2, 64, 0.2)
    whole = _context(cswap_model(), torch.randn(1, 2), batches, "cswap", compensate="none")
    expected = SCORERS.load("cswap")().score(whole)["2"]
    monkeypatch.setattr(cswap, "PASS_VALUES", 6)  # 3 rows of 2 values per pass
    sliced = _context(cswap_model(), torch.randn(1, 2), batches, "cswap", compensate="none")
    torch.testing.assert_close(SCORERS.load("cswap")().score(sliced)["2"], expected)
    assert sliced.budget == whole.budget and sliced.evidence["category"] == whole.evidence["category"]
