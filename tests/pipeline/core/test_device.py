import pytest
import torch

from pipeline.core.device import float64_device, resolve_device, to_cpu, to_device
from pipeline.core.errors import ConfigError


def test_auto_is_cuda_where_present_and_the_cpu_here_otherwise():
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is absent")
def test_an_unavailable_device_is_one_clear_error():
    with pytest.raises(ConfigError, match="CUDA is not available here"):
        resolve_device("cuda:0")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        resolve_device("gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA tests need a GPU")
def test_under_torchrun_each_process_takes_its_local_gpu():
    assert resolve_device("auto", local_rank=torch.cuda.device_count() - 1).index == torch.cuda.device_count() - 1
    assert resolve_device("cuda:0", local_rank=5).index == 0  # an explicit index wins


def test_batches_move_whole_and_statistics_come_back_to_the_cpu():
    batch = (torch.ones(2, 3), torch.zeros(2, dtype=torch.long))
    moved = to_device(batch, "cpu")
    assert isinstance(moved, tuple) and moved[0].device.type == "cpu"
    saved = to_cpu({"x": torch.ones(4, 2).t()})
    assert saved["x"].is_contiguous() and saved["x"].device.type == "cpu"
    assert float64_device("mps").type == "cpu" and float64_device("cpu").type == "cpu"
