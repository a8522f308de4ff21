"""What every stage needs: its context, the input shape, data specs, and the models of a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.core.artifacts import read_json, read_manifest
from pipeline.core.config import RunConfig
from pipeline.core.distributed import Process
from pipeline.core.errors import ArtifactError
from pipeline.data.loaders import calibration_loader, eval_loader, train_loader
from pipeline.data.sources import DataSpec, num_classes
from pipeline.models.build import build_model, load_weights
from pipeline.models.clone import clone_model
from pipeline.models.specs import Preprocessing
from pipeline.pruning.surgery import UnitGroup, apply_removal, drop_modules
from pipeline.scorers.base import ScoreContext, ScorerOptions
from pipeline.stages import artifact, stage
from pipeline.training.distillation import TrainingOptions, resolve_amp


@dataclass
class StageContext:
    cfg: RunConfig
    run_dir: Path
    out: Path | None  # the stage's (temporary) output directory; None on the ranks that do not write
    target: str | None = None
    name: str = ""  # the stage running
    key: str = ""  # its input fingerprint (pipeline.runner.fingerprint)
    device: torch.device = torch.device("cpu")  # where its PyTorch work runs (--device)
    process: Process = Process()  # this process's rank under torchrun; only rank 0 writes
    manifest_extra: dict = field(default_factory=dict)  # what `record` adds to the manifest

    def record(self, **facts) -> None:
        """Facts for the stage's manifest beside its config (device, world size): not fingerprinted."""
        self.manifest_extra.update(facts)

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / name

    def output(self, role: str) -> Path:
        """Where this stage writes its output `role` (file names in pipeline.stages.STAGES)."""
        return self.out / stage(self.name).outputs[role]

    def input(self, name: str, role: str) -> Path:
        """An upstream stage's output `role` (this stage's target for per-target stages)."""
        return artifact(self.run_dir, name, role, self.target)


def input_shape(cfg: RunConfig) -> tuple[int, int, int, int]:
    """N,C,H,W, resolved at preflight (pipeline.preflight) from the flags or the model family."""
    if cfg.input_shape is None:
        raise ArtifactError("the run's config was not resolved; run it through pipeline.runner")
    return tuple(cfg.input_shape)


def example_input(cfg: RunConfig, batch: int = 1, device=None) -> torch.Tensor:
    """The seeded random input that traces and MACs counts use (drawn on the CPU, so every device gets the same)."""
    shape = input_shape(cfg)
    return torch.randn((batch, *shape[1:]), generator=torch.Generator().manual_seed(cfg.seed)).to(device or "cpu")


def calibration_batches(cfg: RunConfig, device=None):
    """The class-stratified calibration images in their fixed order, batches on `device`."""
    return calibration_loader(data_spec(cfg), cfg.calib_samples, cfg.batch_size, cfg.seed, workers=cfg.workers, device=device)


def evaluation_batches(cfg: RunConfig, device=None):
    """The evaluation split (None without data), batches on `device`."""
    return eval_loader(data_spec(cfg), cfg.eval_samples, cfg.batch_size, cfg.seed, cfg.workers, device=device)


def training_batches(cfg: RunConfig, device=None, process: Process | None = None):
    """Shuffled training images, --batch-size per process (this process's share under torchrun)."""
    process = process or Process()
    return train_loader(data_spec(cfg), cfg.train_samples, cfg.batch_size, cfg.seed, cfg.workers, device=device,
                        rank=process.rank, world_size=process.world_size)  # fmt: skip


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

    options = ScorerOptions(
        snip_at_init=cfg.snip_at_init,
        compensate=cfg.compensate,
        max_acc_drop=cfg.max_acc_drop,
        max_unit_ratio=cfg.max_unit_ratio,
        bn_recalibration=cfg.bn_recalibration,
    )
    return ScoreContext(
        model=model,
        groups=groups,
        stats=stats,
        seed=cfg.seed,
        options=options,
        batches=batches,
        fresh_model=fresh_model,
        example=example_input(cfg, device=next(model.parameters()).device),
    )


def training_options(cfg: RunConfig, device=None, channels_last: bool = False) -> TrainingOptions:
    return TrainingOptions(epochs=cfg.distill_epochs, optimizer=cfg.distill_optimizer, lr=cfg.distill_lr,
                           temperature=cfg.distill_temperature, alpha=cfg.distill_alpha, regularise=cfg.regularize,
                           amp=resolve_amp(cfg.amp, device or "cpu"), channels_last=channels_last)  # fmt: skip


def ranking_of(cfg: RunConfig, groups: list[UnitGroup]) -> str:
    return cfg.ranking if cfg.ranking != "auto" else scorer_class(cfg)().ranking_for(groups)


def load_groups(run_dir: Path) -> list[UnitGroup]:
    return [UnitGroup.from_dict(g) for g in read_json(artifact(run_dir, "calibrate", "groups"))["groups"]]


def pruned_model(
    cfg: RunConfig, run_dir: Path, dense: torch.nn.Module | None = None, source: str | None = None
) -> torch.nn.Module:
    """The model of stage `source` (default: the one to deploy, distilled when distillation ran, else
    pruned): plan.json replayed onto a fresh dense model (or the one given), then its weights loaded."""
    from safetensors.torch import load_file

    weights = artifact(run_dir, source or final_model_stage(run_dir), "weights")
    if not weights.is_file():
        raise ArtifactError(f"{weights} is missing; re-run the stage that writes it")
    model = dense if dense is not None else dense_model(cfg)
    replay_plan(model, read_json(artifact(run_dir, "prune", "plan")), example_input(cfg))
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


def final_model_stage(run_dir: Path) -> str:
    """Where the model to deploy lives: distill when distillation ran, else prune."""
    return "distill" if read_manifest(stage("distill").directory(run_dir)) is not None else "prune"
