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


def test_channel_shuffle_prunes_its_branches_and_keeps_the_shuffled_channels_whole():
    import torchvision

    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()  # 1.4M parameters, 32x32 inputs here
    analysis = analyse(model, EXAMPLE)  # Torch-Pruning 1.6 alone divides by zero on torch 2 here
    names = {g.name for g in analysis.groups}
    assert {f"stage{s}.{b}.branch2.3" for s, blocks in ((2, 4), (3, 8), (4, 4)) for b in range(blocks)} <= names
    assert any("hard-codes the channel count" in note and "branch2.5" in note for note in analysis.notes)  # shuffled
    pruned = _prune_half(clone_model(model), analysis)
    assert pruned(EXAMPLE).shape == (1, 10)


def test_running_out_of_memory_in_a_trial_is_not_a_reason_to_keep_a_group(monkeypatch):
    from pipeline.pruning import analysis
    from tests.tiny_models import tiny_resnet

    def exhausted(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1105920000 bytes")

    monkeypatch.setattr(analysis, "apply_removal", exhausted)
    with pytest.raises(RuntimeError, match="allocate memory"):  # the stage reports it; no group is noted away
        analyse(tiny_resnet().eval(), torch.randn(1, 3, 32, 32))
