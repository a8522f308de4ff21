"""What every stage needs: its context, the input shape, data specs, and the models of a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.core.artifacts import read_json
from pipeline.core.config import RunConfig
from pipeline.core.errors import ArtifactError
from pipeline.data import DataSpec, num_classes
from pipeline.models import build_model, parse_spec
from pipeline.surgery import UnitGroup, apply_removal

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
    return tuple(cfg.input_shape) if cfg.input_shape else parse_spec(cfg.model).default_input_shape


def example_input(cfg: RunConfig, batch: int = 1) -> torch.Tensor:
    shape = input_shape(cfg)
    return torch.randn((batch, *shape[1:]), generator=torch.Generator().manual_seed(cfg.seed))


def data_spec(cfg: RunConfig) -> DataSpec:
    return DataSpec(Path(cfg.data) if cfg.data else None, cfg.model, input_shape(cfg))


def dense_model(cfg: RunConfig) -> torch.nn.Module:
    classes = None if cfg.weights else num_classes(data_spec(cfg))
    torch.manual_seed(cfg.seed)  # random-init models are the same in every stage
    return build_model(cfg.model, cfg.weights, num_classes=classes)


def scorer_class(cfg: RunConfig):
    from pipeline.scorers import SCORERS

    return SCORERS.load(cfg.scorer)


def compensation_of(cfg: RunConfig) -> str:
    """--compensate, or the scorer's own default (VBP: mean), else none."""
    if cfg.compensate != "auto":
        return cfg.compensate
    return getattr(scorer_class(cfg), "compensation", "none")


def ranking_of(cfg: RunConfig, groups: list[UnitGroup]) -> str:
    return cfg.ranking if cfg.ranking != "auto" else scorer_class(cfg)().ranking_for(groups)


def load_groups(run_dir: Path) -> list[UnitGroup]:
    return [UnitGroup.from_dict(g) for g in read_json(run_dir / "calibrate" / "groups.json")["groups"]]


def pruned_model(cfg: RunConfig, model_dir: Path, plan_dir: Path) -> torch.nn.Module:
    """Replay plan.json onto a fresh dense model, then load the pruned weights."""
    from safetensors.torch import load_file

    from pipeline.compensation import add_bias

    plan = read_json(plan_dir / PLAN)
    model = dense_model(cfg)
    for name in plan.get("added_biases", []):  # compensation gave these layers a bias
        add_bias(model.get_submodule(name))
    if "steps" in plan:  # iterative pruning: each step in the indexing of the model before it
        from pipeline.iterative import replay

        replay(model, example_input(cfg), plan["steps"])
    else:
        groups = [UnitGroup.from_dict(g) for g in plan["groups"]]
        removal = {g["name"]: g["removed"] for g in plan["groups"]}
        apply_removal(model, example_input(cfg), groups, removal)
    weights = model_dir / MODEL_WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{weights} is missing; re-run the stage that writes it")
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def final_model_dir(run_dir: Path) -> Path:
    """Where the model to deploy lives: distill/ when distillation ran, else prune/."""
    distilled = run_dir / "distill"
    return distilled if (distilled / "manifest.json").is_file() else run_dir / "prune"
