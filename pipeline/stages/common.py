"""What every stage needs: its context, the input shape, data specs, and the models of a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.core.artifacts import read_json
from pipeline.core.config import RunConfig
from pipeline.core.errors import ArtifactError
from pipeline.data.sources import DataSpec, num_classes
from pipeline.models.build import build_model, load_weights
from pipeline.models.clone import clone_model
from pipeline.models.specs import Preprocessing
from pipeline.pruning.surgery import UnitGroup, apply_removal, drop_modules
from pipeline.scorers.base import ScoreContext, ScorerOptions

PLAN, MODEL_WEIGHTS = "plan.json", "model.safetensors"


@dataclass
class StageContext:
    cfg: RunConfig
    run_dir: Path
    out: Path  # the stage's (temporary) output directory
    target: str | None = None
    notes: list[str] | None = None

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / name


def input_shape(cfg: RunConfig) -> tuple[int, int, int, int]:
    """N,C,H,W, resolved at preflight (pipeline.preflight) from the flags or the model family."""
    if cfg.input_shape is None:
        raise ArtifactError("the run's config was not resolved; run it through pipeline.runner")
    return tuple(cfg.input_shape)


def example_input(cfg: RunConfig, batch: int = 1) -> torch.Tensor:
    shape = input_shape(cfg)
    return torch.randn((batch, *shape[1:]), generator=torch.Generator().manual_seed(cfg.seed))


def data_spec(cfg: RunConfig) -> DataSpec:
    shape = input_shape(cfg)
    return DataSpec(cfg.data, shape, Preprocessing(shape[1:], cfg.mean, cfg.std, cfg.interpolation, cfg.crop_pct))


def dense_model(cfg: RunConfig) -> torch.nn.Module:
    classes = None if cfg.weights else num_classes(data_spec(cfg))
    torch.manual_seed(cfg.seed)  # random-init models are the same in every stage
    return build_model(cfg.model, cfg.weights, num_classes=classes, model_args=cfg.model_args)


def scorer_class(cfg: RunConfig):
    from pipeline.scorers import SCORERS

    return SCORERS.load(cfg.scorer)


def scoring_context(cfg: RunConfig, model: torch.nn.Module, groups: list[UnitGroup], stats: dict, batches) -> ScoreContext:
    """What a criterion reads, built the same way for the score stage and for re-scoring between
    iterative steps: the model, its groups and statistics, calibration batches, one example input,
    a freshly initialised copy on demand, and the run's options."""
    def fresh_model():
        """The same architecture, every layer re-initialised by its own default (seeded)."""
        torch.manual_seed(cfg.seed + 1)
        fresh = clone_model(model)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return fresh.eval()

    options = ScorerOptions(snip_at_init=cfg.snip_at_init, compensate=cfg.compensate, max_acc_drop=cfg.max_acc_drop,
                            max_unit_ratio=cfg.max_unit_ratio, bn_recalibration=cfg.bn_recalibration)
    return ScoreContext(model=model, groups=groups, stats=stats, seed=cfg.seed, options=options, batches=batches,
                        fresh_model=fresh_model, example=example_input(cfg))


def ranking_of(cfg: RunConfig, groups: list[UnitGroup]) -> str:
    return cfg.ranking if cfg.ranking != "auto" else scorer_class(cfg)().ranking_for(groups)


def load_groups(run_dir: Path) -> list[UnitGroup]:
    return [UnitGroup.from_dict(g) for g in read_json(run_dir / "calibrate" / "groups.json")["groups"]]


def pruned_model(cfg: RunConfig, model_dir: Path, plan_dir: Path, dense: torch.nn.Module | None = None) -> torch.nn.Module:
    """Replay plan.json onto a fresh dense model (or the one given), then load the pruned weights."""
    from safetensors.torch import load_file

    weights = model_dir / MODEL_WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{weights} is missing; re-run the stage that writes it")
    model = dense if dense is not None else dense_model(cfg)
    replay_plan(model, read_json(plan_dir / PLAN), example_input(cfg))
    load_weights(model, load_file(str(weights)), strict=True)
    return model.eval()


def replay_plan(model: torch.nn.Module, plan: dict, example: torch.Tensor) -> None:
    """Make `model` (dense) the architecture plan.json describes, in place."""
    from pipeline.pruning.compensation import add_bias

    drop_modules(model, plan.get("dropped_modules", []))
    for name in plan.get("added_biases", []):  # compensation gave these layers a bias
        add_bias(model.get_submodule(name))
    if "steps" in plan:  # iterative pruning: each step in the indexing of the model before it
        from pipeline.training.iterative import replay

        replay(model, example, plan["steps"])
    else:
        groups = [UnitGroup.from_dict(g) for g in plan["groups"]]
        apply_removal(model, example, groups, {g["name"]: g["removed"] for g in plan["groups"]})


def final_model_dir(run_dir: Path) -> Path:
    """Where the model to deploy lives: distill/ when distillation ran, else prune/."""
    distilled = run_dir / "distill"
    return distilled if (distilled / "manifest.json").is_file() else run_dir / "prune"
