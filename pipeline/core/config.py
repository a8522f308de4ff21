"""The run configuration: one frozen dataclass, loaded from YAML and overridden by flags.

Unknown keys and out-of-range values are errors with a one-line message."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.device import check_device_name
from pipeline.core.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "int8")
RANKINGS = ("auto", "uniform", "global")
ALLOCATIONS = ("scores", "sensitivity")
SELECTIONS = ("scores", "reconstruction")
DEFAULT_RATIO = 0.5
COMPENSATIONS = ("auto", "none", "mean", "lstsq")
REGULARISERS = ("none", "class-aware")
OPTIMIZERS = ("sgd", "adamw")
AMPS = ("auto", "bf16", "fp16", "off")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class RunConfig:
    # what to prune
    model: str = "torchvision:resnet18"
    model_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the model's constructor
    weights: str | None = None
    data: str | None = None  # ImageFolder root, or package.module:factory / file.py:factory of datasets
    # preprocessing; None: the model family's (resolved at preflight and saved in config.json)
    input_shape: tuple[int, ...] | None = None  # N,C,H,W; N is the batch size profiled
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str | None = None  # bilinear | bicubic | nearest
    crop_pct: float | None = None  # resize to input size / crop_pct, then centre crop
    # how much and by which criterion
    scorer: str = "l1"
    ratio: float | None = None  # fraction of units removed per group; default 0.5 without a MACs target
    macs_reduction: float | None = None  # dense MACs / pruned MACs to reach, within 5%
    speedup: float | None = None  # dense / pruned latency to reach on the first target, measured, within 5%
    latency_ms: float | None = None  # the pruned latency to reach there instead, in milliseconds
    latency_table: str | None = (
        None  # per-layer latencies measured elsewhere (`pipeline latency-table`); None: measured here, cached
    )
    # resolved at preflight: the budget allocator (pipeline.allocators), named after what the budget is given in
    budget: str | None = None
    round_to: int | None = None  # None: the targets' channel block (design.md)
    keep_layers: tuple[str, ...] = ()  # module-name patterns never pruned, besides stem and classifier
    max_unit_ratio: float = 0.9  # no group loses more than this fraction of its units
    ranking: str = "auto"  # uniform | global | auto (the scorer's own)
    allocate: str = "scores"  # per-group widths from the scores (the ranking) | sensitivity (measured per group)
    select: str = "scores"  # which units go within a group: the lowest-scored | reconstruction (least re-fit error)
    compensate: str = "auto"  # none | mean | lstsq | auto (the scorer's own, else none)
    lstsq_ridge: float = 1e-3  # ridge of the least-squares re-fit, relative to the Gram diagonal's mean
    snip_at_init: bool = False
    bn_recalibration: bool = True
    # recovery
    distill_epochs: int = 0
    distill_temperature: float = 4.0
    distill_alpha: float = 0.9  # weight of the distillation loss; 1 - alpha on the labels
    distill_optimizer: str = "sgd"
    distill_lr: float = 0.01
    train_samples: int | None = None  # training images per epoch (distillation, iterative fine-tuning); None: all
    regularize: str = "none"  # none | class-aware (L1 + kernel orthogonality while fine-tuning)
    amp: str = "auto"  # mixed precision while fine-tuning: bf16 | fp16 | off | auto (bf16 on CUDA where supported, else off)
    iterative: bool = False  # prune at most 10% per step, fine-tune between, stop at the accuracy tolerance
    max_acc_drop: float = 0.005  # accuracy (fraction) a step may lose against the dense model
    # deployment
    targets: tuple[str, ...] = ("cpu",)
    precision: str = "fp32"
    batch_sizes: tuple[int, ...] = ()  # extra batch sizes to profile
    profile_seconds: float = 2.0  # timed seconds per model and batch size
    profile_trials: int = 10  # interleaved dense/pruned trials
    threads: int | None = None  # None: every core
    min_efficiency: float = 0.5
    strict: bool = False
    # data and bookkeeping
    calib_samples: int = 1024  # at 512, VBP and C-SWAP measurably ranked worse on CIFAR-10 (README)
    eval_samples: int | None = None
    batch_size: int = 64
    workers: int | None = None  # DataLoader workers per process; None: a share of the cores (pipeline.data.loaders)
    device: str = "auto"  # where the PyTorch stages compute: auto | cpu | cuda | cuda:N | mps (not fingerprinted)
    memory_budget: float | None = None  # GB the run may use (checked at preflight); None: what is available
    seed: int = 0
    out: str | None = None
    name: str | None = None

    def __post_init__(self):
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)


def validate(cfg: RunConfig) -> None:
    budgets = [
        f"--{n.replace('_', '-')}" for n in ("ratio", "macs_reduction", "speedup", "latency_ms") if getattr(cfg, n) is not None
    ]
    if len(budgets) > 1:
        raise ConfigError(f"give one budget, not {' and '.join(budgets)}")
    if cfg.speedup is not None and cfg.speedup <= 1.0:
        raise ConfigError(f"--speedup must be > 1 (dense latency / pruned latency), got {cfg.speedup}")
    if cfg.latency_ms is not None and cfg.latency_ms <= 0.0:
        raise ConfigError(f"--latency-ms must be > 0, got {cfg.latency_ms}")
    if (cfg.speedup or cfg.latency_ms) and cfg.precision == "int8":
        raise ConfigError("--speedup and --latency-ms measure fp32 and fp16 models; with --precision int8 give --macs-reduction")
    if cfg.ratio is not None and not 0.0 < cfg.ratio < 1.0:
        raise ConfigError(f"--ratio must be in (0, 1), got {cfg.ratio}")
    if cfg.macs_reduction is not None and cfg.macs_reduction <= 1.0:
        raise ConfigError(f"--macs-reduction must be > 1 (dense MACs / pruned MACs), got {cfg.macs_reduction}")
    if cfg.input_shape is not None and (len(cfg.input_shape) != 4 or min(cfg.input_shape) < 1):
        raise ConfigError(f"--input-shape must be N,C,H,W with positive sizes, got {','.join(map(str, cfg.input_shape))}")
    for name in ("mean", "std"):
        values = getattr(cfg, name)
        if values is not None and (not values or (name == "std" and min(values) <= 0)):
            raise ConfigError(f"--{name} must be one positive value per channel (comma-separated), got {values}")
    if cfg.crop_pct is not None and not 0.0 < cfg.crop_pct <= 1.0:
        raise ConfigError(f"crop_pct must be in (0, 1], got {cfg.crop_pct}")
    if cfg.interpolation is not None and cfg.interpolation not in INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation '{cfg.interpolation}'; valid: {', '.join(INTERPOLATIONS)}")
    if not isinstance(cfg.model_args, dict):
        raise ConfigError(f"model_args must be a mapping of argument names to values, got {cfg.model_args!r}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{cfg.precision}'; valid: {', '.join(PRECISIONS)}")
    if cfg.ranking not in RANKINGS:
        raise ConfigError(f"unknown ranking '{cfg.ranking}'; valid: {', '.join(RANKINGS)}")
    if cfg.allocate not in ALLOCATIONS:
        raise ConfigError(f"unknown allocation '{cfg.allocate}'; valid: {', '.join(ALLOCATIONS)}")
    if cfg.allocate == "sensitivity" and cfg.ranking != "auto":
        raise ConfigError("--ranking spreads the budget by the scores, --allocate sensitivity by measured sensitivity: give one")
    if cfg.select not in SELECTIONS:
        raise ConfigError(f"unknown selection '{cfg.select}'; valid: {', '.join(SELECTIONS)}")
    if cfg.compensate not in COMPENSATIONS:
        raise ConfigError(f"unknown compensation '{cfg.compensate}'; valid: {', '.join(COMPENSATIONS)}")
    if cfg.memory_budget is not None and cfg.memory_budget <= 0:
        raise ConfigError(f"--memory-budget must be > 0 (GB), got {cfg.memory_budget}")
    if cfg.lstsq_ridge <= 0:
        raise ConfigError(f"lstsq_ridge must be > 0, got {cfg.lstsq_ridge}")
    if cfg.regularize not in REGULARISERS:
        raise ConfigError(f"unknown regulariser '{cfg.regularize}'; valid: {', '.join(REGULARISERS)}")
    if cfg.iterative and cfg.distill_epochs < 1:
        raise ConfigError("--iterative fine-tunes between steps: give --distill-epochs >= 1")
    if cfg.max_acc_drop < 0:
        raise ConfigError(f"--max-acc-drop must be >= 0, got {cfg.max_acc_drop}")
    if cfg.amp not in AMPS:
        raise ConfigError(f"unknown --amp '{cfg.amp}'; valid: {', '.join(AMPS)}")
    if cfg.workers is not None and cfg.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {cfg.workers}")
    check_device_name(cfg.device)
    if cfg.distill_optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{cfg.distill_optimizer}'; valid: {', '.join(OPTIMIZERS)}")
    if cfg.round_to is not None and cfg.round_to < 1:
        raise ConfigError(f"--round-to must be >= 1, got {cfg.round_to}")
    if not 0.0 < cfg.max_unit_ratio < 1.0:
        raise ConfigError(f"max_unit_ratio must be in (0, 1), got {cfg.max_unit_ratio}")
    positive = ("calib_samples", "batch_size", "profile_trials")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.eval_samples is not None and cfg.eval_samples < 1:
        raise ConfigError(f"--eval-samples must be >= 1, got {cfg.eval_samples}")
    if cfg.distill_epochs < 0:
        raise ConfigError(f"--distill-epochs must be >= 0, got {cfg.distill_epochs}")
    if any(b < 1 for b in cfg.batch_sizes):
        raise ConfigError("--batch-sizes must be positive integers")
    if not cfg.targets:
        raise ConfigError("give at least one --target")


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated numbers, got '{text}'") from None


def parse_model_args(pairs) -> dict[str, Any]:
    """`key=value` strings -> {key: value}, values typed as YAML reads them (1, 0.5, true, [1, 2], text)."""
    import yaml

    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"--model-arg must look like name=value, got '{pair}'")
        try:
            args[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            args[key.strip()] = value
    return args


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(text).replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--input-shape must be N,C,H,W integers, got '{text}'") from None


_TUPLES = {"input_shape", "keep_layers", "targets", "batch_sizes", "mean", "std"}


def _coerce(name: str, value: Any) -> Any:
    if name in ("mean", "std") and isinstance(value, str):
        return parse_floats(value, f"--{name}")
    if name == "model_args" and isinstance(value, (list, tuple)):
        return parse_model_args(value)
    if name in _TUPLES and value is not None:
        if name == "input_shape" and isinstance(value, str):
            return parse_shape(value)
        if name == "batch_sizes" and isinstance(value, str):
            return parse_shape(value)
        if isinstance(value, str):
            value = [value]
        return tuple(value)
    return value


RENAMED = {"distill_samples": "train_samples"}


def build_config(file: str | Path | None = None, **overrides: Any) -> RunConfig:
    """YAML file values, then overrides that are not None; unknown keys are errors."""
    known = {f.name for f in dataclasses.fields(RunConfig)}
    values: dict[str, Any] = {}
    if file is not None:
        values.update(load_yaml(file))
    values.update({k: v for k, v in overrides.items() if v is not None})
    for old, new in RENAMED.items():  # recipes and run directories written before the rename
        if old in values:
            values.setdefault(new, values.pop(old))
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
    coerced = {k: _coerce(k, v) for k, v in values.items()}
    _check_types(coerced)
    try:
        return RunConfig(**coerced)
    except TypeError as err:
        raise ConfigError(f"bad config value: {err}") from None


def _check_types(values: dict[str, Any]) -> None:
    """Each value against its field's annotation, before any range check compares it to a number."""
    import typing

    hints = typing.get_type_hints(RunConfig)
    for name, value in values.items():
        if not _has_type(value, hints[name]):
            raise ConfigError(f"config key '{name}' must be {_describe(hints[name])}, got {value!r}")


def _has_type(value: Any, hint: Any) -> bool:
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (bool, str):
        return isinstance(value, hint)
    if origin is tuple:
        return isinstance(value, tuple) and all(_has_type(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict)
    return True  # Any


def _describe(hint: Any) -> str:
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is tuple:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    names = {float: "a number", int: "an integer", bool: "true or false", str: "a string", type(None): "null"}
    return names.get(hint, "a mapping" if origin is dict else str(hint))


def load_yaml(file: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(file)
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}
