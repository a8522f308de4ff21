"""Model families: timm (preprocessing from the pretrained config, the checkpoint formats timm users
keep, attention heads), the user's factory by module or file path with arguments."""

import pytest
import torch

from pipeline.core.errors import ModelError
from pipeline.models.build import build_model, preprocessing_of

timm = pytest.importorskip("timm", reason="timm is not installed (pip install -e '.[timm]')")

TINY_VIT = "timm:vit_tiny_patch16_224"
TINY_VIT_ARGS = {"img_size": 32, "patch_size": 8, "depth": 2}


def test_timm_preprocessing_comes_from_the_pretrained_config():
    resnet = preprocessing_of("timm:resnet50d")
    assert resnet.input_size == (3, 224, 224) and resnet.interpolation == "bicubic" and resnet.crop_pct == pytest.approx(0.875)
    inception = preprocessing_of("timm:inception_v3")
    assert inception.input_size == (3, 299, 299) and inception.mean == pytest.approx((0.5, 0.5, 0.5))
    assert preprocessing_of(TINY_VIT, TINY_VIT_ARGS).input_size == (3, 32, 32)  # a model argument changes it


def test_timm_models_build_with_arguments_and_unknown_names_are_clear():
    model = build_model(TINY_VIT, model_args=TINY_VIT_ARGS, num_classes=5)
    assert len(model.blocks) == 2 and model(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(ModelError, match="unknown timm model 'resnet50dd'; close names"):
        build_model("timm:resnet50dd")


@pytest.mark.parametrize("layout", ["model.safetensors", "pytorch_model.bin", "checkpoint.pth.tar"])
def test_timm_checkpoint_formats_load_exactly(layout, tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", num_classes=7, **TINY_VIT_ARGS).eval()
    path = tmp_path / layout
    if layout.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    elif layout.endswith(".bin"):
        torch.save(source.state_dict(), path)
    else:  # a timm training checkpoint: the EMA weights are what timm itself loads
        decoy = {k: torch.zeros_like(v) for k, v in source.state_dict().items()}
        torch.save(
            {
                "epoch": 3,
                "arch": "vit_tiny_patch16_224",
                "state_dict": decoy,
                "state_dict_ema": source.state_dict(),
                "optimizer": {},
            },
            path,
        )
    loaded = build_model(TINY_VIT, str(path), model_args=TINY_VIT_ARGS)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), source(x))


def test_factory_from_a_file_with_model_arguments(tmp_path):
    (tmp_path / "helpers.py").write_text("WIDTH = 12\n")
    (tmp_path / "my_net.py").write_text(
        "import torch.nn as nn\nfrom helpers import WIDTH\n\n"
        "def make(num_classes=10, width=WIDTH, act='relu'):\n"
        "    layer = nn.ReLU() if act == 'relu' else nn.GELU()\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3), layer, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))\n"
    )
    model = build_model(f"{tmp_path / 'my_net.py'}:make", model_args={"width": 20, "act": "gelu"}, num_classes=4)
    assert model[0].out_channels == 20 and isinstance(model[1], torch.nn.GELU) and model[4].out_features == 4
    with pytest.raises(ModelError, match="cannot be called with"):
        build_model(f"{tmp_path / 'my_net.py'}:make", model_args={"depth": 3})
    with pytest.raises(ModelError, match="has no attribute 'missing'"):
        build_model(f"{tmp_path / 'my_net.py'}:missing")
