"""Masking units at their consumers equals removing them, and the prefix cache changes nothing."""

import copy

import pytest
import torch

from pipeline.models.build import build_model
from pipeline.pruning import compensation, surgery
from pipeline.pruning.analysis import analyse
from pipeline.statistics import calibration
from pipeline.statistics.interventions import Intervener
from tests.tiny_models import TINY_SPECS


def _setup(kind: str):
    torch.manual_seed(0)
    model = build_model(TINY_SPECS[kind]).eval()
    example = torch.randn(1, 3, 32, 32)
    groups = analyse(model, example).groups
    return model, example, groups, torch.randn(6, 3, 32, 32)


def _removal(groups):
    """Every other group loses its first and third units (heads: the first)."""
    return {g.name: [0] if g.kind == "head" else [0, 2] for i, g in enumerate(groups) if i % 2 == 0}


def _masked_logits(model, groups, removal, inputs, fill=None):
    """Logits with the `removal` units masked (filled with `fill` where given) by an Intervener."""
    intervener = Intervener(model, groups, fill)
    for name, units in removal.items():
        intervener.remove(name, units)
    try:
        return intervener.logits(intervener.prefix(inputs, list(removal)))
    finally:
        intervener.close()


@pytest.mark.parametrize("kind", ["resnet", "mobile", "vit"])
def test_masking_equals_removal(kind):
    model, example, groups, inputs = _setup(kind)
    removal = _removal(groups)
    pruned = copy.deepcopy(model)
    surgery.apply_removal(pruned, example, groups, removal)
    with torch.no_grad():
        torch.testing.assert_close(_masked_logits(model, groups, removal, inputs), pruned(inputs), atol=1e-5, rtol=1e-5)


def test_mean_fill_equals_mean_shift_compensation():
    # linear consumers (MLP fc2, attention proj): exact; for a k x k conv the two differ only where
    # its zero padding meets the border, as folding into a bias cannot follow the padding
    model, example, groups, inputs = _setup("vit")
    removal = _removal(groups)
    consumers = sorted({c.module for g in groups for c in g.consumers if not c.depthwise})
    stats = calibration.collect(model, [(inputs, torch.zeros(6, dtype=torch.long))], consumers, ("input_moments",))
    pruned = copy.deepcopy(model)
    compensation.fold_means(pruned, groups, removal, stats)
    surgery.apply_removal(pruned, example, groups, removal)
    fill = {c: stats[f"input_moments/{c}/mean"].float() for c in consumers}
    with torch.no_grad():
        torch.testing.assert_close(_masked_logits(model, groups, removal, inputs, fill), pruned(inputs), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_one_intervention_per_block_of_rows(kind):
    model, example, groups, inputs = _setup(kind)
    group = groups[-1]  # the deepest: its prefix is most of the network
    units = list(range(min(3, group.size)))
    intervener = Intervener(model, groups)
    try:
        prefix = intervener.prefix(inputs, [group.name])
        assert prefix.modules  # something before the group is cached
        batched = intervener.logits(prefix, group.name, units).reshape(len(units), len(inputs), -1)
        for j, unit in enumerate(units):
            intervener.remove(group.name, [unit])
            with torch.no_grad():
                single = model(inputs)  # a plain forward pass, no cache
            intervener.restore(group.name, [unit])
            torch.testing.assert_close(batched[j], single, atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(intervener.logits(prefix), model(inputs), atol=1e-6, rtol=1e-6)
    finally:
        intervener.close()
    with torch.no_grad():  # hooks and patched forwards are gone
        assert not any(m._forward_pre_hooks for m in model.modules())
        assert all("forward" not in vars(m) for m in model.modules())


def test_prefix_without_room_recomputes(monkeypatch):
    from pipeline.statistics import interventions

    model, example, groups, inputs = _setup("resnet")
    monkeypatch.setattr(interventions, "CACHE_BYTES", 0)
    intervener = Intervener(model, groups)
    try:
        prefix = intervener.prefix(inputs, [groups[-1].name])
        assert prefix.outputs is None
        with torch.no_grad():
            torch.testing.assert_close(intervener.logits(prefix, rows=slice(1, 4)), model(inputs[1:4]), atol=1e-6, rtol=1e-6)
    finally:
        intervener.close()
