"""Orders the stages, decides from manifests which to skip, and runs the rest. No ML code here:
what each stage reads and writes is declared once, in pipeline.stages.STAGES."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from pipeline.core.artifacts import StageWriter, changed_outputs, read_manifest, sha256_json, write_json
from pipeline.core.config import RunConfig, build_config
from pipeline.core.errors import ArtifactError, ResourceError, is_out_of_memory
from pipeline.core.log import info
from pipeline.stages import STAGES, StageSpec, stage

CONFIG_FILE = "config.json"


def default_run_name(cfg: RunConfig) -> str:
    """<model>-<scorer>-<budget>, from a resolved config (pipeline.preflight.resolve)."""
    model = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.model.split(":")[-1])
    if cfg.macs_reduction:
        budget = f"m{cfg.macs_reduction:g}"
    elif cfg.budget == "own":
        budget = "auto"  # CoSeP, C-SWAP: the criterion decides each layer's count
    else:
        budget = f"r{cfg.ratio:g}"
    return f"{model}-{cfg.scorer}-{budget}"


def run_dir_of(cfg: RunConfig) -> Path:
    return Path(cfg.out) if cfg.out else Path("runs") / (cfg.name or default_run_name(cfg))


def _upstream_dirs(cfg: RunConfig, run_dir: Path, spec: StageSpec, target: str | None) -> list[Path]:
    dirs = []
    for name in spec.reads + spec.optional_reads:
        up = stage(name)
        targets = [target] if up.per_target and target else (list(cfg.targets) if up.per_target else [None])
        dirs += [up.directory(run_dir, t) for t in targets]
    return dirs


def fingerprint(cfg: RunConfig, run_dir: Path, spec: StageSpec, target: str | None) -> str:
    parts = {"stage": spec.name, "target": target, "config": {k: getattr(cfg, k) for k in spec.keys_for(cfg)}}
    if spec.fingerprint_extras:
        module_name, function = spec.fingerprint_extras.split(":")
        parts.update(getattr(importlib.import_module(module_name), function)(cfg))
    upstream = {}
    for directory in _upstream_dirs(cfg, run_dir, spec, target):
        manifest = read_manifest(directory)
        upstream[str(directory.relative_to(run_dir))] = manifest["outputs_digest"] if manifest else None
    parts["upstream"] = upstream
    return sha256_json(parts)


def _check_upstream(cfg: RunConfig, run_dir: Path, spec: StageSpec, target: str | None) -> None:
    for name in spec.reads:
        up = stage(name)
        if not up.runs(cfg):
            continue
        directory = up.directory(run_dir, target if up.per_target else None)
        if read_manifest(directory) is None:
            hint = f" --target {target}" if up.per_target else ""
            raise ArtifactError(f"{directory} has no complete '{name}' stage; run `pipeline {name} {run_dir}{hint}` first")


def run_stage(cfg: RunConfig, run_dir: Path, name: str, target: str | None = None, force: bool = False) -> bool:
    """Run one stage unless its manifest shows the same inputs; returns whether it ran."""
    spec = stage(name)
    if spec.per_target and target is None:
        ran = [run_stage(cfg, run_dir, name, t, force) for t in cfg.targets]
        return any(ran)
    _check_upstream(cfg, run_dir, spec, target)
    directory = spec.directory(run_dir, target)
    print_name = f"{name} ({target})" if target else name
    key = fingerprint(cfg, run_dir, spec, target)
    manifest = read_manifest(directory)
    if not force and manifest is not None and manifest.get("fingerprint") == key:
        changed = changed_outputs(directory, manifest)
        if not changed:
            info(f"[{print_name}] up to date, skipped")
            return False
        info(f"[{print_name}] its outputs changed since it ran ({'; '.join(changed[:3])}): running it again")
    info(f"[{print_name}] running")
    started = time.time()
    _reset_peak_memory()
    module_name, function = spec.path.split(":")
    stage_function = getattr(importlib.import_module(module_name), function)
    from pipeline.stages.common import StageContext

    try:
        with StageWriter(directory, name, {k: getattr(cfg, k) for k in spec.keys_for(cfg)}, key) as writer:
            stage_function(StageContext(cfg=cfg, run_dir=run_dir, out=writer.path, target=target, name=name, key=key))
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise ResourceError(_out_of_memory_message(print_name, err)) from None
    _publish(run_dir, spec)
    _release_memory()
    peak = _peak_memory_gb()
    info(f"[{print_name}] done in {time.time() - started:.1f} s" + (f", peak memory {peak:.2f} GB" if peak else ""))
    return True


def _out_of_memory_message(print_name: str, err: BaseException) -> str:
    peak = _peak_memory_gb()
    detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    return (
        f"[{print_name}] ran out of memory" + (f" at {peak:.1f} GB resident" if peak else "") + f" ({detail}); "
        "finished stages are kept: free memory, lower --batch-size or --calib-samples, or run on a larger machine"
    )


def _reset_peak_memory() -> None:
    """Start the process's peak resident memory (VmHWM) afresh, so that each stage reports its own
    (Linux; elsewhere the stage line shows no peak)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_memory_gb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _release_memory() -> None:
    """Hand the freed heap of a finished stage back to the system, so that the peak of a whole run is
    its largest stage's, not the sum of them (glibc keeps freed memory in its arenas otherwise)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _publish(run_dir: Path, spec: StageSpec) -> None:
    """Copy the stage's published outputs (report.json, report.md, plots/) to the run directory's root."""
    for role in spec.published:
        source, name = spec.file(run_dir, role), spec.outputs[role]
        tmp = run_dir / f".{name}.tmp"
        if source.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source, tmp)
            shutil.rmtree(run_dir / name, ignore_errors=True)
        else:
            shutil.copyfile(source, tmp)
        os.replace(tmp, run_dir / name)


def save_config(cfg: RunConfig, run_dir: Path) -> None:
    write_json(run_dir / CONFIG_FILE, cfg.to_dict())


def load_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{run_dir} is not a run directory (no {CONFIG_FILE}); create one with `pipeline run --out {run_dir}`"
        )
    from pipeline.preflight import resolve

    values = json.loads(path.read_text())
    return resolve(build_config(None, **values))  # configs saved before a setting existed get its default


def run_pipeline(cfg: RunConfig, force: bool = False, until: str | None = None) -> Path:
    from pipeline.core.rundir import locked
    from pipeline.preflight import check_and_resolve, check_writable

    cfg = check_and_resolve(cfg)
    run_dir = run_dir_of(cfg)
    check_writable(run_dir)
    with locked(run_dir):
        save_config(cfg, run_dir)
        for spec in STAGES:
            if not spec.runs(cfg):
                shutil.rmtree(spec.directory(run_dir), ignore_errors=True)  # a stale student must not be exported
                continue
            run_stage(cfg, run_dir, spec.name, force=force)
            if until == spec.name:
                break
    return run_dir
