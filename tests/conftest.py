"""Shared fixtures: tiny image folders, and the ../shared skip logic."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def make_image_folder(root: Path, classes: int = 3, per_class: int = 6, size: int = 32, seed: int = 0) -> Path:
    """ImageFolder root with train/ and test/, each class a distinct colour plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("test", max(2, per_class // 2))):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            base = np.zeros((size, size, 3))
            base[..., c % 3] = 200
            for i in range(count):
                pixels = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture(autouse=True, scope="session")
def _latency_cache(tmp_path_factory):
    """Latency tables measured by tests go to a scratch cache, never the user's."""
    import os

    previous = os.environ.get("PIPELINE_CACHE_DIR")
    os.environ["PIPELINE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("PIPELINE_CACHE_DIR", None)
    else:
        os.environ["PIPELINE_CACHE_DIR"] = previous


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def cifar10(tmp_path_factory) -> Path:
    archive = SHARED / "data" / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip("needs ../shared/data/cifar10-jpeg.tar.gz")
    root = tmp_path_factory.mktemp("cifar")
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root / "cifar10"


def shared_model(name: str) -> Path:
    path = SHARED / "models" / name
    if not path.is_file():
        pytest.skip(f"needs ../shared/models/{name}")
    return path
