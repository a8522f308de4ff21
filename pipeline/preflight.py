"""Before any stage writes: reject bad input with one line, and resolve every setting left to a
default ("auto", the model family's preprocessing) once, into the frozen config that config.json
keeps, so that each stage reads one value instead of deciding again."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.core.config import DEFAULT_RATIO, RunConfig
from pipeline.core.errors import ArtifactError, ConfigError, PluginUnavailableError, ResourceError

BASE_MEMORY_GB = 1.2  # the process with torch, ONNX Runtime and a data loader
WEIGHT_COPIES = 5.3  # copies of the weights the heaviest stage holds at once (see check_memory)
ACTIVATION_COPIES = 2.0  # of one image's activations


def check_and_resolve(cfg: RunConfig) -> RunConfig:
    _check_scorer_and_targets(cfg)
    cfg = resolve(cfg)
    if cfg.weights is not None and not Path(cfg.weights).is_file():
        raise ConfigError(f"weights file {cfg.weights} does not exist")
    if cfg.data is not None:
        from pipeline.data.sources import check_source

        check_source(cfg.data)
    check_memory(cfg)
    return cfg


def check_memory(cfg: RunConfig) -> None:
    """Refuse, before any stage, a model that needs more memory than the run may use. Its heaviest
    stages hold several copies of the weights (export: tracer, graph, file) and, while the dependency
    graph and the ONNX tracer follow a forward pass, every activation of one image, twice over.
    Fitted to the zoo's stage peaks: ViT-L/16 (1.13 GB of weights) 7.9 GB, EfficientNet-B7 at 600
    pixels (3.2 GB of activations) 9.1 GB, EfficientNet-B6 at 528 pixels 6.2 GB."""
    from pipeline.models.footprint import footprint

    budget = cfg.memory_budget if cfg.memory_budget is not None else available_memory_gb()
    needs = footprint(cfg.model, cfg.model_args, tuple(cfg.input_shape[1:])) if budget is not None else None
    if needs is None:
        return
    weights, activations = needs.weight_bytes / 2**30, (needs.activation_bytes or 0) / 2**30
    need = BASE_MEMORY_GB + WEIGHT_COPIES * weights + ACTIVATION_COPIES * activations
    if need > budget:
        shape = "x".join(map(str, cfg.input_shape[1:]))
        per_image = f" and {activations:.2f} GB of activations per image" if needs.activation_bytes is not None else ""
        raise ResourceError(
            f"{cfg.model} at {shape} has {weights:.2f} GB of weights{per_image}: "
            f"pruning and exporting it needs about {need:.1f} GB of memory, over the {budget:.1f} GB this run may use "
            "(--memory-budget; default: the memory available now)"
        )


def available_memory_gb() -> float | None:
    """MemAvailable, or the address-space limit where that is lower (Linux; elsewhere no check)."""
    import resource

    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available = int(meminfo["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        return None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return min(available, limit / 2**30) if limit != resource.RLIM_INFINITY else available


def resolve(cfg: RunConfig) -> RunConfig:
    """The config with the model family's preprocessing and the scorer's own compensation filled in."""
    from pipeline.models.build import preprocessing_of
    from pipeline.scorers import SCORERS

    changes: dict = {}
    if None in (cfg.input_shape, cfg.mean, cfg.std, cfg.interpolation, cfg.crop_pct):
        family = preprocessing_of(cfg.model, cfg.model_args)
        defaults = {
            "input_shape": (1, *family.input_size),
            "mean": family.mean,
            "std": family.std,
            "interpolation": family.interpolation,
            "crop_pct": family.crop_pct,
        }
        changes.update(
            {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in defaults.items() if getattr(cfg, k) is None}
        )
    scorer = SCORERS.load(cfg.scorer)
    if cfg.compensate == "auto":
        changes["compensate"] = getattr(scorer, "compensation", "none")
    if cfg.budget is None:
        changes.update(_budget(cfg, scorer))
    if cfg.select == "reconstruction" and changes.get("compensate", cfg.compensate) != "lstsq":
        raise ConfigError(
            "--select reconstruction chooses the units the least-squares re-fit rebuilds best: add --compensate lstsq"
        )
    resolved = cfg.replace(**changes) if changes else cfg
    channels = resolved.input_shape[1]
    for name in ("mean", "std"):
        if len(getattr(resolved, name)) not in {1, channels} | ({3} if channels == 1 else set()):
            raise ConfigError(f"--{name} has {len(getattr(resolved, name))} values for {channels} input channels")
    return resolved


def _budget(cfg: RunConfig, scorer) -> dict:
    """How the prune stage decides how many units each group keeps. CoSeP and C-SWAP choose their own
    per-layer counts (unless --ranking spreads the budget by their scores instead); a budget flag scales them."""
    if cfg.speedup is not None or cfg.latency_ms is not None:
        return {"budget": "latency"}  # a criterion's own counts, where it has them, bound the widths
    given = cfg.ratio is not None or cfg.macs_reduction is not None
    if cfg.allocate == "sensitivity":  # a criterion's own counts, where it has them, bound the widths
        return {"budget": "sensitivity"} | ({} if given else {"ratio": DEFAULT_RATIO})
    if scorer.chooses_budget and cfg.ranking == "auto":
        return {"budget": "own-scaled" if given else "own"}
    if cfg.macs_reduction is not None:
        return {"budget": "macs"}
    return {"budget": "ratio", "ratio": DEFAULT_RATIO if cfg.ratio is None else cfg.ratio}


def _check_scorer_and_targets(cfg: RunConfig) -> None:
    from exporters import TARGETS
    from pipeline.allocators import ALLOCATORS
    from pipeline.models import FAMILIES
    from pipeline.models.specs import parse_spec
    from pipeline.scorers import SCORERS

    SCORERS.entry(cfg.scorer)
    if cfg.budget is not None:
        ALLOCATORS.entry(cfg.budget)
    for target in cfg.targets:
        TARGETS.entry(target)
        reason = TARGETS.unavailable_reason(target)
        try:
            target_class = TARGETS.load_class(target)
        except PluginUnavailableError:
            target_class = None
        if reason and (target_class is None or not target_class.checks_before_runtime):
            raise PluginUnavailableError(f"target '{target}' cannot run here: {reason}")
        problem = target_class().precision_problem(cfg.precision)
        if problem:
            raise ConfigError(f"--precision {cfg.precision} on target '{target}': {problem}")
    spec = parse_spec(cfg.model)
    FAMILIES.load(spec.family)().check(spec.name)  # its library is installed and knows the name


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ArtifactError(f"cannot write to {run_dir}: {err.strerror or err}") from None
