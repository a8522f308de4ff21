"""Where the (train, eval) datasets come from: an ImageFolder root with train/ and test/ (or val/),
a factory of the user's (`package.module:factory` or `file.py:factory`) returning two datasets of
(image_tensor, label), or datasets handed to the Python API in memory. None: synthetic inputs."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import DataError
from pipeline.models.specs import Preprocessing

MEMORY_PREFIX = "memory:"
_IN_MEMORY: dict[str, tuple] = {}  # key -> (train, eval) datasets handed to pipeline.run


@dataclass(frozen=True)
class DataSpec:
    source: str | None  # see the module docstring; None: seeded synthetic inputs
    input_shape: tuple[int, int, int, int]
    preprocessing: Preprocessing

    @property
    def synthetic(self) -> bool:
        return self.source is None


def kind_of(source: str) -> str:
    if source.startswith(MEMORY_PREFIX):
        return "memory"
    if Path(source).is_dir() or ":" not in source:
        return "folder"
    return "factory"


def register_in_memory(key: str, train, evaluation) -> str:
    """Datasets of the Python API, reachable by every stage of this process as `memory:KEY`."""
    _IN_MEMORY[key] = (train, evaluation)
    _datasets.cache_clear()
    return MEMORY_PREFIX + key


def check_source(source: str) -> None:
    """Reject a source that cannot give datasets, before any stage writes."""
    kind = kind_of(source)
    if kind == "folder":
        check_data_root(source)
    elif kind == "memory" and source[len(MEMORY_PREFIX) :] not in _IN_MEMORY:
        raise DataError(
            f"data '{source}' was given in memory to pipeline.run in another process; "
            "run it again from Python, or give --data a folder or factory"
        )
    else:
        train, evaluation = _datasets(source, None)
        for name, dataset in (("train", train), ("eval", evaluation)):
            if dataset is not None and len(dataset) == 0:
                raise DataError(f"data '{source}': the {name} dataset is empty")


def fingerprint(source: str | None) -> str | None:
    """What identifies the data: every file's name, size and time under a folder; a factory's spec and
    its file's hash; in memory, the key (a hash of the datasets' contents, pipeline.api)."""
    import os

    from pipeline.core.artifacts import sha256_file, sha256_json

    if source is None:
        return None
    if kind_of(source) != "folder":
        path = Path(source.rpartition(":")[0])
        return sha256_json([source, sha256_file(path) if path.suffix == ".py" and path.is_file() else None])
    entries = []
    for folder, _, files in os.walk(source):
        for name in files:
            stat = os.stat(os.path.join(folder, name))
            entries.append((os.path.relpath(os.path.join(folder, name), source), stat.st_size, int(stat.st_mtime)))
    return sha256_json(sorted(entries))


def check_data_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if not (root / "train").is_dir():
        raise DataError(f"data folder {root} has no train/ folder (expected an ImageFolder root with train/ and test/ or val/)")
    eval_dir = eval_split_dir(root)
    for split in (root / "train", eval_dir):
        classes = [d for d in split.iterdir() if d.is_dir()]
        if not classes:
            raise DataError(f"{split} has no class folders (expected {split}/<class>/<image>)")
    return root


def eval_split_dir(root: Path) -> Path:
    for name in ("test", "val"):
        if (root / name).is_dir():
            return root / name
    raise DataError(f"data folder {root} has no test/ or val/ folder")


def datasets(spec: DataSpec):
    """(train, eval) of a non-synthetic spec; the same objects for the whole process."""
    # a factory's datasets are already tensors: only image folders depend on the preprocessing
    return _datasets(spec.source, spec.preprocessing if kind_of(spec.source) == "folder" else None)


@functools.lru_cache(maxsize=4)
def _datasets(source: str, preprocessing: Preprocessing | None):
    kind = kind_of(source)
    if kind == "memory":
        return _IN_MEMORY[source[len(MEMORY_PREFIX) :]]
    if kind == "folder":
        return _image_folder(Path(source), "train", preprocessing), _image_folder(Path(source), "eval", preprocessing)
    from pipeline.core.imports import load_object

    factory = load_object(source, "data factory", DataError)
    try:
        made = factory()
    except Exception as err:  # the user's code: say where it failed, in one line
        raise DataError(
            f"data factory '{source}' failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    if not isinstance(made, (tuple, list)) or len(made) != 2:
        raise DataError(f"data factory '{source}' must return (train_dataset, eval_dataset), got {type(made).__name__}")
    for name, dataset in zip(("train", "eval"), made):
        if dataset is not None and not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise DataError(f"data factory '{source}': its {name} dataset has no __getitem__/__len__")
    return tuple(made)


def _image_folder(root: Path, split: str, preprocessing: Preprocessing | None):
    from torchvision.datasets import ImageFolder

    from pipeline.data.transforms import transform_for

    check_data_root(root)
    folder = root / "train" if split == "train" else eval_split_dir(root)
    transform = transform_for(preprocessing) if preprocessing is not None else None
    try:
        return ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as err:
        raise DataError(f"cannot read images under {folder}: {err}") from None


def labels_of(dataset) -> list[int] | None:
    """Every label, where that is cheap (ImageFolder.targets, tensors); None otherwise."""
    import torch
    from torch.utils.data import Subset, TensorDataset

    if isinstance(dataset, Subset):
        inner = labels_of(dataset.dataset)
        return None if inner is None else [inner[i] for i in dataset.indices]
    targets = getattr(dataset, "targets", None)
    if targets is None and isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        targets = dataset.tensors[1]
    if targets is None:
        return None
    return [int(t) for t in (targets.tolist() if isinstance(targets, torch.Tensor) else targets)]


def num_classes(spec: DataSpec) -> int | None:
    if spec.synthetic:
        return None
    if kind_of(spec.source) == "folder":
        return len([d for d in (Path(spec.source) / "train").iterdir() if d.is_dir()])
    train, evaluation = datasets(spec)
    classes = getattr(train, "classes", None)
    if classes is not None:
        return len(classes)
    labels = labels_of(train) or (labels_of(evaluation) if evaluation is not None else None)
    return max(labels) + 1 if labels else None
