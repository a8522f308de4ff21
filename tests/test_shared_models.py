"""The pretrained CIFAR-10 ResNets of ../shared, end to end on the real data (skipped without it)."""

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.data.loaders import accuracy, eval_loader
from pipeline.data.sources import DataSpec
from pipeline.models.build import build_model, preprocessing_of
from tests.conftest import shared_model

pytestmark = pytest.mark.shared


def test_resnet20_checkpoint_evaluates_as_published(cifar10):
    model = build_model("cifar:resnet20", str(shared_model("resnet20-cifar10.th")))
    loader = eval_loader(DataSpec(str(cifar10), (1, 3, 32, 32), preprocessing_of("cifar:resnet20")), None, 500, 0)
    assert accuracy(model, loader) == pytest.approx(0.8103, abs=0.003)


def test_resnet56_l1_at_2x_macs_one_shot(cifar10, tmp_path):
    out = tmp_path / "run"
    args = [
        "run",
        "--model",
        "cifar:resnet56",
        "--weights",
        str(shared_model("resnet56-cifar10.th")),
        "--data",
        str(cifar10),
        "--scorer",
        "l1",
        "--macs-reduction",
        "2",
        "--target",
        "cpu",
        "--out",
        str(out),
        "--profile-seconds",
        "0.5",
        "--batch-size",
        "250",
    ]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["dense"]["accuracy"] == pytest.approx(0.832, abs=0.003)
    assert 1.9 <= report["macs_ratio"] <= 2.1
    assert report["pruned"]["accuracy"] >= 0.66
    assert any("hard-codes the channel count" in note for note in report["notes"])
