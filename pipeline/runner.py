"""Orders the stages, decides from manifests which to skip, and runs the rest. No ML code here."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from pipeline.core.artifacts import StageWriter, read_manifest, sha256_file, sha256_json, write_json
from pipeline.core.config import RunConfig, build_config
from pipeline.core.errors import ArtifactError, ConfigError
from pipeline.core.log import info
from pipeline.stages import STAGES, StageSpec

CONFIG_FILE = "config.json"
UPSTREAM = {
    "calibrate": (), "score": ("calibrate",), "prune": ("calibrate", "score"), "distill": ("prune",),
    "export": ("prune", "distill"), "compile": ("export",), "profile": ("export", "compile"),
    "report": ("calibrate", "prune", "distill", "export", "profile"),
}


def default_run_name(cfg: RunConfig) -> str:
    model = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.model.split(":")[-1])
    from pipeline.stages.common import scorer_class

    if cfg.macs_reduction:
        budget = f"m{cfg.macs_reduction:g}"
    elif cfg.ratio is None and cfg.ranking == "auto" and getattr(scorer_class(cfg), "chooses_budget", False):
        budget = "auto"  # CoSeP, C-SWAP: the criterion decides each layer's count
    else:
        budget = f"r{cfg.effective_ratio:g}"
    return f"{model}-{cfg.scorer}-{budget}"


def run_dir_of(cfg: RunConfig) -> Path:
    return Path(cfg.out) if cfg.out else Path("runs") / (cfg.name or default_run_name(cfg))


def stage(name: str) -> StageSpec:
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise ConfigError(f"unknown stage '{name}'; stages: {', '.join(s.name for s in STAGES)}")


def _data_fingerprint(source: str | None) -> str | None:
    """Folders: every file's name, size and time; factories: their file's; in memory: the key (a hash)."""
    if source is None:
        return None
    from pipeline.data.sources import kind_of

    if kind_of(source) != "folder":
        path = Path(source.rpartition(":")[0])
        return sha256_json([source, sha256_file(path) if path.suffix == ".py" and path.is_file() else None])
    root, entries = source, []
    for folder, _, files in os.walk(root):
        for name in files:
            stat = os.stat(os.path.join(folder, name))
            entries.append((os.path.relpath(os.path.join(folder, name), root), stat.st_size, int(stat.st_mtime)))
    return sha256_json(sorted(entries))


def _stage_dir(run_dir: Path, spec: StageSpec, target: str | None) -> Path:
    return run_dir / spec.name / target if spec.per_target and target else run_dir / spec.name


def fingerprint(cfg: RunConfig, run_dir: Path, spec: StageSpec, target: str | None) -> str:
    parts = {"stage": spec.name, "target": target, "config": {k: getattr(cfg, k) for k in spec.keys_for(cfg)}}
    if spec.name == "calibrate":
        from pipeline.stages.calibrate import needs_of

        parts["weights_sha256"] = sha256_file(Path(cfg.weights)) if cfg.weights else None
        parts["data"] = _data_fingerprint(cfg.data)
        parts["needs"] = needs_of(cfg)
    upstream = {}
    for name in UPSTREAM[spec.name]:
        up = stage(name)
        dirs = [_stage_dir(run_dir, up, target)] if up.per_target and target else (
            [_stage_dir(run_dir, up, t) for t in cfg.targets] if up.per_target else [_stage_dir(run_dir, up, None)])
        for directory in dirs:
            manifest = read_manifest(directory)
            upstream[str(directory.relative_to(run_dir))] = manifest["outputs_digest"] if manifest else None
    parts["upstream"] = upstream
    return sha256_json(parts)


def run_stage(cfg: RunConfig, run_dir: Path, name: str, target: str | None = None, force: bool = False) -> bool:
    """Run one stage unless its manifest shows the same inputs; returns whether it ran."""
    spec = stage(name)
    if spec.per_target and target is None:
        ran = [run_stage(cfg, run_dir, name, t, force) for t in cfg.targets]
        return any(ran)
    for up_name in UPSTREAM[name]:
        up = stage(up_name)
        if up_name == "distill" and cfg.distill_epochs == 0:
            continue
        if up_name == "profile":
            continue  # the report covers whichever targets were profiled
        directory = _stage_dir(run_dir, up, target if up.per_target else None)
        if read_manifest(directory) is None:
            hint = f" --target {target}" if up.per_target else ""
            raise ArtifactError(f"{directory} has no complete '{up_name}' stage; run `pipeline {up_name} {run_dir}{hint}` first")
    directory = _stage_dir(run_dir, spec, target)
    print_name = f"{name} ({target})" if target else name
    key = fingerprint(cfg, run_dir, spec, target)
    manifest = read_manifest(directory)
    if not force and manifest is not None and manifest.get("fingerprint") == key:
        info(f"[{print_name}] up to date, skipped")
        return False
    info(f"[{print_name}] running")
    started = time.time()
    module_name, function = spec.path.split(":")
    stage_function = getattr(importlib.import_module(module_name), function)
    from pipeline.stages.common import StageContext

    with StageWriter(directory, name, {k: getattr(cfg, k) for k in spec.keys_for(cfg)}, key) as writer:
        stage_function(StageContext(cfg=cfg, run_dir=run_dir, out=writer.path, target=target))
    if name == "report":
        _publish_report(run_dir)
    info(f"[{print_name}] done in {time.time() - started:.1f} s")
    return True


def _publish_report(run_dir: Path) -> None:
    """report.json, report.md and plots/ at the top of the run directory, where users look."""
    source = run_dir / "report"
    for name in ("report.json", "report.md"):
        tmp = run_dir / f".{name}.tmp"
        shutil.copyfile(source / name, tmp)
        os.replace(tmp, run_dir / name)
    plots_tmp = run_dir / ".plots.tmp"
    shutil.rmtree(plots_tmp, ignore_errors=True)
    shutil.copytree(source / "plots", plots_tmp)
    shutil.rmtree(run_dir / "plots", ignore_errors=True)
    os.replace(plots_tmp, run_dir / "plots")


def save_config(cfg: RunConfig, run_dir: Path) -> None:
    write_json(run_dir / CONFIG_FILE, cfg.to_dict())


def load_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ArtifactError(f"{run_dir} is not a run directory (no {CONFIG_FILE}); create one with `pipeline run --out {run_dir}`")
    from pipeline.preflight import resolve

    values = json.loads(path.read_text())
    return resolve(build_config(None, **values))  # configs saved before a setting existed get its default


def run_pipeline(cfg: RunConfig, force: bool = False, until: str | None = None) -> Path:
    from pipeline.preflight import check_and_resolve

    run_dir = run_dir_of(cfg)
    cfg = check_and_resolve(cfg, run_dir)
    save_config(cfg, run_dir)
    for spec in STAGES:
        if spec.name == "distill" and cfg.distill_epochs == 0:
            shutil.rmtree(run_dir / "distill", ignore_errors=True)  # a stale student must not be exported
            continue
        run_stage(cfg, run_dir, spec.name, force=force)
        if until == spec.name:
            break
    return run_dir
