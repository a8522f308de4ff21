"""Distillation under torchrun (gloo on the CPU): the same trained model as one process."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parents[3]


def _train(out: Path, processes: int, per_process_batch: int) -> dict:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = (launcher if processes > 1 else [sys.executable]) + [str(WORKER), str(out), str(per_process_batch)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_two_processes_train_the_same_model_as_one_process_with_the_same_global_batch(tmp_path):
    one = _train(tmp_path / "one.pt", processes=1, per_process_batch=8)
    two = _train(tmp_path / "two.pt", processes=2, per_process_batch=4)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert one["losses"][-1] < one["losses"][0]  # it trains
    for name, value in one["state"].items():
        torch.testing.assert_close(two["state"][name], value, rtol=1e-5, atol=1e-6)
