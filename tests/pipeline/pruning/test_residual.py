"""Residual joins: found on the traced graph, and a layer feeding one made to cancel the other branch's error."""

import copy

import torch
import torch.nn as nn

from pipeline.models.cifar import cifar_resnet
from pipeline.pruning.compensation import normal_equations
from pipeline.pruning.residual import Joins


class _Block(nn.Module):
    """y = bn(b(a(x))) + a(x): the branch b can rebuild any linear error of a."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.bn = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 1), nn.BatchNorm2d(6)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        stem = self.a(x)
        return self.head(torch.relu(self.bn(self.b(stem)) + stem))


def _block_and_copy_with_a_mixed_stem():
    torch.manual_seed(0)
    dense = _Block().eval()
    with torch.no_grad():
        dense.bn.running_mean.uniform_(-1, 1), dense.bn.running_var.uniform_(0.5, 2), dense.bn.weight.uniform_(0.5, 2)
    damaged = copy.deepcopy(dense)
    mixing = torch.eye(6) + 0.3 * torch.randn(6, 6)  # the stem's error: an invertible mix of its channels
    with torch.no_grad():
        damaged.a.weight.copy_((mixing @ dense.a.weight.flatten(1)).view_as(dense.a.weight))
        damaged.a.bias.copy_(mixing @ dense.a.bias)
    return dense, damaged


def _refit(dense, damaged, batches, joins):
    gram, cross = normal_equations(dense, damaged, "b", batches, joins=joins)
    solution = torch.linalg.solve(gram + 1e-10 * torch.eye(gram.shape[0], dtype=gram.dtype), cross).T
    with torch.no_grad():
        damaged.b.bias.copy_(solution[:, -1].float())
        damaged.b.weight.copy_(solution[:, :-1].reshape(damaged.b.weight.shape).float())


def _join_output(model, x):
    stem = model.a(x)
    return model.bn(model.b(stem)) + stem


def test_the_layer_before_a_join_cancels_the_other_branchs_error_and_a_plain_refit_does_not():
    dense, damaged = _block_and_copy_with_a_mixed_stem()
    batches = [torch.randn(16, 3, 5, 5) for _ in range(3)]
    joins = Joins(dense, damaged)
    assert set(joins.of) == {"b"} and joins.of["b"].scales == ("bn",)
    plain = copy.deepcopy(damaged)
    _refit(dense, plain, batches, None)
    _refit(dense, damaged, batches, joins)
    x = torch.randn(8, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(_join_output(damaged, x), _join_output(dense, x), atol=1e-4, rtol=1e-4)
        assert (_join_output(plain, x) - _join_output(dense, x)).abs().max() > 1e-2


def test_cifar_resnet_joins_are_the_second_conv_of_every_block():
    model = cifar_resnet(20).eval()
    joins = Joins(model, copy.deepcopy(model))
    blocks = [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    assert set(joins.of) == {f"{b}.conv2" for b in blocks}
    assert all(joins.of[f"{b}.conv2"].scales == (f"{b}.bn2",) for b in blocks)


def test_a_join_whose_other_branch_runs_later_is_left_to_that_branch():
    from tests.tiny_models import tiny_resnet

    model = tiny_resnet().eval()  # the projection shortcut b_short runs before the block's convs b1, b2
    joins = Joins(model, copy.deepcopy(model))
    assert set(joins.of) == {"a2", "b2"} and joins.of["b2"].scales == ("b2_bn",)
    assert "b_short.0" not in joins.gated and "b2" in joins.gated


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.b(self.a(x)) + x
        return x


def test_a_model_fx_cannot_trace_has_no_joins():
    model = _Untraceable()
    assert Joins(model, copy.deepcopy(model)).of == {}


def test_vit_joins_are_the_attention_output_projection_and_the_mlps_second_linear():
    from pipeline.models.attention import convert_attention
    from tests.tiny_models import tiny_vit

    model = tiny_vit().eval()
    convert_attention(model)
    joins = Joins(model, copy.deepcopy(model))
    layers = [f"encoder.layers.encoder_layer_{i}" for i in (0, 1)]
    assert set(joins.of) == {f"{layer}.{name}" for layer in layers for name in ("self_attention.proj", "mlp.3")}


class _BakedGain(_Block):
    """A Python number the trace bakes in: changed afterwards, the trace no longer computes the model."""

    gain = 1.0

    def forward(self, x):
        stem = self.a(x)
        return self.head(torch.relu(self.bn(self.b(stem)) * self.gain + stem))


def test_a_trace_that_no_longer_computes_the_model_is_not_used():
    model = _BakedGain().eval()
    joins = Joins(model, model)
    model.gain = 2.0
    assert not joins.covers("b", torch.randn(2, 3, 5, 5)) and joins.of == {}
    fresh = Joins(model, model)
    assert fresh.covers("head", torch.randn(2, 3, 5, 5)) is False and "b" not in fresh.of  # a multiply is no join


def test_cifar_resnet_convs_are_gated_by_their_relu_and_the_classifier_is_not():
    model = cifar_resnet(20).eval()
    joins = Joins(model, copy.deepcopy(model))
    assert joins.gates("layer1.0.conv1", torch.randn(2, 3, 32, 32))
    blocks = [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    assert joins.gated == {"conv1"} | {f"{b}.conv{i}" for b in blocks for i in (1, 2)}


def test_the_gate_threshold_splits_rows_where_the_relu_passes_from_where_it_does_not():
    dense, damaged = _block_and_copy_with_a_mixed_stem()
    with torch.no_grad():
        dense.bn.weight[0] = -1.0  # a negative scale flips the side the ReLU passes
    joins = Joins(dense, dense)
    x = torch.randn(4, 3, 5, 5)
    with torch.no_grad():
        stem = dense.a(x)
        z, passes = dense.b(stem), (dense.bn(dense.b(stem)) + stem) > 0
    rows = lambda t: t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])  # noqa: E731
    theta, sign = joins.threshold("b", rows(z).shape[0], None, rows(stem))
    assert torch.equal(sign * (rows(z) - theta) > 0, rows(passes))
    assert joins.threshold("head", 1, None, None) is None
