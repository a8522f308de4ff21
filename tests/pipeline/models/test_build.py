import copy

import pytest
import torch

from pipeline.core.errors import ModelError
from pipeline.models.attention import HeadAttention, convert_attention
from pipeline.models.build import build_model
from pipeline.models.cifar import cifar_resnet
from tests.conftest import shared_model
from tests.tiny_models import tiny_vit


def _save_like_the_public_checkpoints(model, path):
    """{'best_prec1', 'state_dict'} with DataParallel's `module.` prefix, as ../shared/models has."""
    torch.save({"best_prec1": 90.0, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)


@pytest.mark.parametrize("depth, blocks", [(20, 3), (32, 5), (44, 7), (56, 9), (110, 18)])
def test_cifar_family_depths(depth, blocks):
    model = build_model(f"cifar:resnet{depth}")
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == blocks
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_any_cifar_checkpoint_of_the_family_loads_exactly(tmp_path):
    torch.manual_seed(1)
    source = cifar_resnet(32)
    for module in source.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    _save_like_the_public_checkpoints(source, tmp_path / "resnet32.th")
    loaded = build_model("cifar:resnet32", str(tmp_path / "resnet32.th"))
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(loaded(x), source.eval()(x))


def test_mismatching_checkpoint_names_the_first_bad_key(tmp_path):
    _save_like_the_public_checkpoints(cifar_resnet(20), tmp_path / "resnet20.th")
    with pytest.raises(ModelError, match="first mismatching key 'layer1.3.conv1.weight' is missing"):
        build_model("cifar:resnet56", str(tmp_path / "resnet20.th"))


def test_checkpoint_with_code_is_refused(tmp_path):
    torch.save({"state_dict": cifar_resnet(20).state_dict(), "extra": ModelError("pickled object")}, tmp_path / "bad.th")
    with pytest.raises(ModelError, match="weights_only=True"):
        build_model("cifar:resnet20", str(tmp_path / "bad.th"))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("cifar:resnet50", "unknown CIFAR model"),
        ("torchvision:resnet1000", "unknown torchvision classification model"),
        ("nomodule_xyz:factory", "cannot import model factory"),
        ("resnet18", "must look like"),
    ],
)
def test_unknown_models_are_clear_errors(spec, message):
    with pytest.raises(ModelError, match=message):
        build_model(spec)


def test_classifier_width_follows_the_checkpoint(tmp_path):
    torch.save(build_model("torchvision:resnet18", num_classes=7).state_dict(), tmp_path / "r18.pt")
    assert build_model("torchvision:resnet18", str(tmp_path / "r18.pt")).fc.out_features == 7


def test_attention_conversion_is_exact():
    torch.manual_seed(0)
    reference = tiny_vit().eval()
    converted = copy.deepcopy(reference)
    assert convert_attention(converted) == 2
    assert isinstance(converted.encoder.layers[0].self_attention, HeadAttention)
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(converted(x), reference(x), atol=1e-5, rtol=1e-5)


@pytest.mark.shared
def test_shared_resnet20_checkpoint_loads():
    model = build_model("cifar:resnet20", str(shared_model("resnet20-cifar10.th")))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(0.27e6, rel=0.02)


def _tied():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
    model[2].weight = model[0].weight  # one tensor under two names, as tied embeddings or a shared conv
    return model


def test_weights_that_share_memory_are_saved_and_load_back_tied(tmp_path):
    from safetensors.torch import load_file

    from pipeline.models.build import load_weights, save_weights

    torch.manual_seed(0)
    model = _tied()
    save_weights(model, tmp_path / "w.safetensors")
    tensors = load_file(str(tmp_path / "w.safetensors"))
    assert torch.equal(tensors["0.weight"], tensors["2.weight"])
    fresh = _tied()
    load_weights(fresh, tensors, strict=True)
    assert fresh[2].weight is fresh[0].weight
    x = torch.randn(2, 4)
    torch.testing.assert_close(fresh(x), model(x))
