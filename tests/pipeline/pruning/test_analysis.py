"""What the analysis finds on the classes of models that used to fail: training-only heads, state
dicts with module metadata, tensors cached by a forward pass, forwards that hard-code widths."""

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.models.build import load_weights
from pipeline.models.clone import clone_model
from pipeline.pruning import surgery
from pipeline.pruning.analysis import analyse
from tests.tiny_models import tiny_aux, tiny_cached_bias, tiny_versioned

EXAMPLE = torch.randn(1, 3, 32, 32)


def _prune_half(model, analysis):
    surgery.drop_modules(model, analysis.dropped)
    removal = {g.name: list(range(g.size // 2)) for g in analysis.groups}
    surgery.apply_removal(model, EXAMPLE, analysis.groups, removal)
    return model


def test_training_only_head_is_left_out_and_removed():
    model = tiny_aux().eval()
    analysis = analyse(model, EXAMPLE)
    assert analysis.dropped == ["aux"]
    assert any(note.startswith("aux: not reached by the inference forward") for note in analysis.notes)
    assert all(not g.name.startswith("aux") and not any(c.module.startswith("aux") for c in g.consumers) for g in analysis.groups)
    assert model.aux is not None  # the analysis does not touch the model
    pruned = _prune_half(clone_model(model), analysis)
    assert pruned.aux is None
    assert pruned(EXAMPLE).shape == (1, 10)
    logits, aux = pruned.train()(torch.randn(2, 3, 32, 32))  # training mode still runs, without the aux output
    assert logits.shape == (2, 10) and aux is None


def test_state_dict_metadata_survives_a_safetensors_round_trip(tmp_path):
    model = tiny_versioned().eval()
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    tensors = load_file(str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="version None"):  # what loading without the metadata does
        tiny_versioned().load_state_dict(tensors)
    fresh = tiny_versioned().eval()
    load_weights(fresh, tensors, strict=True)
    torch.testing.assert_close(fresh(EXAMPLE), model(EXAMPLE))


def test_tensors_cached_by_a_forward_with_gradients_do_not_stop_copies():
    model = tiny_cached_bias().eval()
    model(EXAMPLE).sum().backward()  # the cache now holds a tensor of the autograd graph
    with pytest.raises(RuntimeError, match="deepcopy"):
        copy.deepcopy(model)
    copied = clone_model(model)
    torch.testing.assert_close(copied(EXAMPLE), model(EXAMPLE))


def test_heads_whose_removal_breaks_the_forward_are_kept_whole_with_the_reason():
    model = tiny_cached_bias().eval()
    analysis = analyse(model, EXAMPLE)
    assert "attn" not in {g.name for g in analysis.groups}  # its per-head bias table is not sliced
    assert any(note.startswith("attn: the model's forward hard-codes the head count of attn") for note in analysis.notes)
    assert {g.name for g in analysis.groups} == {"mlp.0"}
    pruned = _prune_half(clone_model(model), analysis)
    assert pruned(EXAMPLE).shape == (1, 10)


class TinyShuffle(torch.nn.Module):
    """A ShuffleNet V2 unit: split the channels, transform one half, concatenate, shuffle."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Conv2d(3, 16, 3, 1, 1)
        self.branch = nn.Sequential(nn.Conv2d(8, 12, 1), nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 12, 3, 1, 1, groups=12),
                                    nn.BatchNorm2d(12), nn.Conv2d(12, 8, 1), nn.ReLU())  # fmt: skip
        self.head = nn.Conv2d(16, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        left, right = x.chunk(2, dim=1)
        x = torch.cat([left, self.branch(right)], 1)
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.fc(torch.relu(self.head(x)).mean((2, 3)))


def test_channel_shuffle_prunes_its_branch_and_keeps_the_shuffled_channels_whole():
    model = TinyShuffle().eval()
    analysis = analyse(model, EXAMPLE)  # Torch-Pruning alone divides by zero on this model
    names = {g.name for g in analysis.groups}
    assert "branch.0" in names or "branch.3" in names  # the branch's inner channels
    assert all(not any(p.startswith("branch.5") for p in g.producers) for g in analysis.groups)  # shuffled: kept
    pruned = _prune_half(clone_model(model), analysis)
    assert pruned(EXAMPLE).shape == (1, 10)
