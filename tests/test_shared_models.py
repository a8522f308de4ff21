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
    args = ["run", "--model", "cifar:resnet56", "--weights", str(shared_model("resnet56-cifar10.th")), "--data", str(cifar10),
            "--scorer", "l1", "--macs-reduction", "2", "--target", "cpu", "--out", str(out), "--batch-size", "250",
            "--eval-samples", "2000", "--until", "prune"]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    dense = json.loads((out / "calibrate" / "accuracy.json").read_text())["dense"]
    metrics = json.loads((out / "prune" / "metrics.json").read_text())
    plan = json.loads((out / "prune" / "plan.json").read_text())
    assert dense == pytest.approx(0.832, abs=0.02)  # 2,000 of the 10,000 test images (0.832 on all)
    assert 1.9 <= metrics["macs_ratio"] <= 2.1
    assert metrics["pruned"]["accuracy_one_shot"] >= 0.66
    assert any("hard-codes the channel count" in note for note in plan["notes"])
