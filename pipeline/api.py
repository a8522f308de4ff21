"""The Python API: the CLI's stages on an nn.Module object and in-memory datasets.

    report = pipeline.run(model, calib_data=train_set, eval_data=test_set, scorer="l1",
                          macs_reduction=2, targets=["cpu"], out="runs/x")
    pruned = pipeline.load_pruned("runs/x", model=model)

Same stages, artifacts and resume as `pipeline run`; options are RunConfig's keys (see
`pipeline run --help`, dashes as underscores)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import ConfigError

if TYPE_CHECKING:  # torch loads on the first call, not on `import pipeline`
    import torch.nn as nn


def run(
    model: nn.Module | str,
    calib_data=None,
    eval_data=None,
    *,
    scorer: str = "l1",
    ratio: float | None = None,
    macs_reduction: float | None = None,
    targets=("cpu",),
    out: str | Path = "runs/api",
    force: bool = False,
    until: str | None = None,
    **options: Any,
) -> dict:
    """Prune, export, compile and profile `model` (an nn.Module, or a spec such as "timm:resnet50d");
    returns the report dict (report.json), or {} when `until` stops before the report.

    calib_data: Dataset or DataLoader of (image_tensor, label), the calibration (and distillation)
    images; eval_data: the same for accuracy. Without them, synthetic inputs and no accuracy. The
    input shape defaults to the first calibration image's, batch 1."""
    from pipeline.core.config import build_config
    from pipeline.runner import run_pipeline

    spec = model if isinstance(model, str) else _register_model(model)
    data = _register_data(calib_data, eval_data)
    if "input_shape" not in options and calib_data is not None:
        options["input_shape"] = (1, *tuple(_first_image(calib_data).shape))
    cfg = build_config(
        None,
        model=spec,
        data=data,
        scorer=scorer,
        ratio=ratio,
        macs_reduction=macs_reduction,
        targets=tuple(targets),
        out=str(out),
        **options,
    )
    run_dir = run_pipeline(cfg, force=force, until=until)
    report = run_dir / "report.json"
    return json.loads(report.read_text()) if until is None and report.is_file() else {}


def load_pruned(run_dir: str | Path, model: nn.Module | None = None) -> nn.Module:
    """The pruned (or distilled, when distillation ran) model of a run, in eval mode, ready for a
    training loop of your own. For a run made from an nn.Module, `model` is that dense architecture
    (its weights do not matter): the plan is replayed onto a copy of it."""
    from pipeline.models.attention import convert_attention
    from pipeline.models.clone import clone_model
    from pipeline.runner import load_run_config
    from pipeline.stages.common import pruned_model

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    dense = None
    if model is not None:
        dense = clone_model(model).eval()
        convert_attention(dense)
    elif cfg.model.startswith("memory:"):
        from pipeline.models.memory import MemoryFamily

        MemoryFamily().check(cfg.model.partition(":")[2])  # known in this process, else a clear error
    return pruned_model(cfg, run_dir, dense=dense)


def _register_model(model) -> str:
    import torch.nn as nn

    from pipeline.models.memory import register

    if not isinstance(model, nn.Module):
        raise ConfigError(f"pipeline.run takes an nn.Module or a model spec string, got {type(model).__name__}")
    return register(model)


def _dataset_of(data):
    from torch.utils.data import DataLoader

    if isinstance(data, DataLoader):
        return data.dataset
    if data is not None and not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise ConfigError(f"data must be a Dataset or DataLoader of (image_tensor, label), got {type(data).__name__}")
    return data


def _first_image(data):
    import torch

    item = _dataset_of(data)[0]
    image = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise ConfigError(
            "calibration items must be (image_tensor C,H,W, label); "
            f"got {type(image).__name__} of shape {tuple(getattr(image, 'shape', ()))}"
        )
    return image


def _register_data(calib_data, eval_data) -> str | None:
    from pipeline.data.sources import register_in_memory

    train, evaluation = _dataset_of(calib_data), _dataset_of(eval_data)
    if train is None and evaluation is None:
        return None
    if train is None:
        raise ConfigError("eval_data without calib_data: give calibration images too")
    return register_in_memory(_content_key(train, evaluation), train, evaluation)


def _content_key(*datasets) -> str:
    """A hash of each dataset's type, length and up to 16 items spread over it: changed data re-runs
    the stages that read it (without reading every image)."""
    import torch

    digest = hashlib.sha256()
    for dataset in datasets:
        if dataset is None:
            digest.update(b"none")
            continue
        digest.update(f"{type(dataset).__name__}:{len(dataset)}".encode())
        for index in sorted({i * (len(dataset) - 1) // 15 for i in range(16)} if len(dataset) else ()):
            for part in dataset[index]:
                value = part if isinstance(part, torch.Tensor) else torch.as_tensor(part)
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
