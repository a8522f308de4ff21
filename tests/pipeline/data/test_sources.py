"""Data sources: ImageFolder roots, the user's dataset factories, in-memory datasets; loaders draw
class-stratified calibration samples wherever labels are cheap to read."""

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from pipeline.core.errors import DataError
from pipeline.data.loaders import calibration_loader, eval_loader
from pipeline.data.sources import DataSpec, check_source, num_classes, register_in_memory
from pipeline.models.specs import Preprocessing

SHAPE = (1, 3, 16, 16)
PRE = Preprocessing((3, 16, 16))


class Images(Dataset):
    """A dataset without a `targets` attribute: its labels are not cheap to read."""

    def __init__(self, count):
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        return torch.full((3, 16, 16), float(index)), index % 4


def write_factory(folder, body):
    path = folder / "my_data.py"
    path.write_text("import torch\nfrom torch.utils.data import TensorDataset\n\n" + body)
    return path


def test_factory_datasets_feed_the_loaders_stratified(tmp_path):
    path = write_factory(
        tmp_path,
        "def make():\n"
        "    labels = torch.arange(40) % 4\n"
        "    return TensorDataset(torch.randn(40, 3, 16, 16), labels), TensorDataset(torch.randn(8, 3, 16, 16), labels[:8])\n",
    )
    spec = DataSpec(f"{path}:make", SHAPE, PRE)
    check_source(spec.source)
    assert num_classes(spec) == 4
    labels = torch.cat([y for _, y in calibration_loader(spec, 8, 4, seed=0)])
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]  # two of each class
    assert sum(len(y) for _, y in eval_loader(spec, None, 4, seed=0)) == 8


def test_datasets_without_cheap_labels_are_sampled_at_random_reproducibly():
    source = register_in_memory("plain-images", Images(30), Images(10))
    spec = DataSpec(source, SHAPE, PRE)
    first = torch.cat([x[:, 0, 0, 0] for x, _ in calibration_loader(spec, 6, 3, seed=1)])
    again = torch.cat([x[:, 0, 0, 0] for x, _ in calibration_loader(spec, 6, 3, seed=1)])
    assert torch.equal(first, again) and len(set(first.tolist())) == 6


@pytest.mark.parametrize(
    "body, message",
    [
        ("def make():\n    return TensorDataset(torch.randn(4, 3, 16, 16))\n", "must return (train_dataset, eval_dataset)"),
        ("def make():\n    raise FileNotFoundError('no such file: /data/train')\n", "failed: FileNotFoundError: no such file"),
        (
            "def make():\n    return TensorDataset(torch.randn(0, 3, 16, 16), torch.zeros(0)), None\n",
            "the train dataset is empty",
        ),
    ],
)
def test_bad_factories_are_one_line_errors(body, message, tmp_path):
    path = write_factory(tmp_path, body)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_source(f"{path}:make")


def test_in_memory_data_of_another_process_is_a_clear_error():
    with pytest.raises(DataError, match="given in memory to pipeline.run in another process"):
        check_source("memory:0123456789abcdef")


def test_tensor_labels_count_classes():
    source = register_in_memory("tensor-labels", TensorDataset(torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 6])), None)
    assert num_classes(DataSpec(source, SHAPE, PRE)) == 7
