"""Orders the stages, decides from manifests which to skip, and runs the rest. No ML code here:
what each stage reads and writes is declared once, in pipeline.stages.STAGES."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from pipeline.core import distributed
from pipeline.core.artifacts import StageWriter, changed_outputs, read_manifest, sha256_json, write_json
from pipeline.core.config import RunConfig, build_config
from pipeline.core.errors import ArtifactError, ResourceError, is_out_of_memory
from pipeline.core.log import info
from pipeline.stages import STAGES, StageSpec, stage

CONFIG_FILE = "config.json"


def default_run_name(cfg: RunConfig) -> str:
    """<model>-<scorer>-<budget>, from a resolved config (pipeline.preflight.resolve)."""
    model = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.model.split(":")[-1])
    if cfg.speedup is not None:
        budget = f"x{cfg.speedup:g}"
    elif cfg.latency_ms is not None:
        budget = f"{cfg.latency_ms:g}ms"
    elif cfg.macs_reduction:
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


def run_stage(cfg: RunConfig, run_dir: Path, name: str, target: str | None = None, force: bool = False, device=None) -> bool:
    """Run one stage unless its manifest shows the same inputs; returns whether it ran. Under torchrun
    rank 0 decides; a stage that is not for every process runs on rank 0 while the others wait."""
    spec = stage(name)
    if spec.per_target and target is None:
        ran = [run_stage(cfg, run_dir, name, t, force, device) for t in cfg.targets]
        return any(ran)
    process = distributed.current()
    key = _decide(cfg, run_dir, spec, target, force) if process.is_main else None
    if spec.all_processes:
        key = distributed.broadcast(key)
    if key is not None and (process.is_main or spec.all_processes):
        _execute(cfg, run_dir, spec, target, key, device, process)
    if not spec.all_processes:
        distributed.barrier()  # the other processes wait for rank 0's stage
    return key is not None


def _decide(cfg: RunConfig, run_dir: Path, spec: StageSpec, target: str | None, force: bool) -> str | None:
    """The stage's fingerprint when it must run, None when its finished outputs are still valid."""
    _check_upstream(cfg, run_dir, spec, target)
    directory = spec.directory(run_dir, target)
    print_name = f"{spec.name} ({target})" if target else spec.name
    key = fingerprint(cfg, run_dir, spec, target)
    manifest = read_manifest(directory)
    if not force and manifest is not None and manifest.get("fingerprint") == key:
        changed = changed_outputs(directory, manifest)
        if not changed:
            info(f"[{print_name}] up to date, skipped")
            return None
        info(f"[{print_name}] its outputs changed since it ran ({'; '.join(changed[:3])}): running it again")
    return key


def _execute(cfg: RunConfig, run_dir: Path, spec: StageSpec, target: str | None, key: str, device, process) -> None:
    from pipeline.core.device import describe, full_precision, resolve_device
    from pipeline.stages.common import StageContext

    device = device if device is not None else resolve_device(cfg.device, process.local_rank)
    print_name = f"{spec.name} ({target})" if target else spec.name
    info(f"[{print_name}] running" + (f" on {describe(device)}" if spec.uses_device else ""))
    started = time.time()
    _reset_peak_memory()
    module_name, function = spec.path.split(":")
    stage_function = getattr(importlib.import_module(module_name), function)
    context = dict(cfg=cfg, run_dir=run_dir, target=target, name=spec.name, key=key, device=device, process=process)
    try:
        if not process.is_main:  # a share of the work; rank 0 writes the outputs
            stage_function(StageContext(out=None, **context))
            return
        config = {k: getattr(cfg, k) for k in spec.keys_for(cfg)}
        with (
            distributed.every_core() if process.distributed and not spec.all_processes else contextlib.nullcontext(),
            full_precision(device) if spec.uses_device and not spec.all_processes else contextlib.nullcontext(),
            StageWriter(spec.directory(run_dir, target), spec.name, config, key) as writer,
        ):
            ctx = StageContext(out=writer.path, **context)
            stage_function(ctx)
            writer.extra.update({"device": describe(device)} if spec.uses_device else {}, **ctx.manifest_extra)
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise ResourceError(_out_of_memory_message(print_name, err)) from None
    _publish(run_dir, spec)
    _release_memory()
    peak = _peak_memory_gb()
    info(f"[{print_name}] done in {time.time() - started:.1f} s" + (f", peak memory {peak:.2f} GB" if peak else ""))


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


@contextlib.contextmanager
def processes(cfg: RunConfig):
    """This process's device and place among torchrun's processes (one process: rank 0 of 1)."""
    from pipeline.core.device import resolve_device

    launched = distributed.launched()
    device = resolve_device(cfg.device, launched.local_rank if launched else None)
    with distributed.session(device) as process:
        yield device, process


def run_pipeline(cfg: RunConfig, force: bool = False, until: str | None = None) -> Path:
    from pipeline.core.rundir import locked
    from pipeline.preflight import check_and_resolve, check_writable

    cfg = check_and_resolve(cfg)
    run_dir = run_dir_of(cfg)
    with processes(cfg) as (device, process):
        if process.is_main:
            check_writable(run_dir)
        with locked(run_dir) if process.is_main else contextlib.nullcontext():
            if process.is_main:
                save_config(cfg, run_dir)
            for spec in STAGES:
                if not spec.runs(cfg):
                    if process.is_main:
                        shutil.rmtree(spec.directory(run_dir), ignore_errors=True)  # a stale student must not be exported
                    continue
                run_stage(cfg, run_dir, spec.name, force=force, device=device)
                if until == spec.name:
                    break
    return run_dir


def run_one_stage(run_dir: Path, name: str, target: str | None = None, force: bool = False) -> None:
    """`pipeline <stage> RUN`: one stage of an existing run directory; a target not yet in the run is
    added to it (so that the report shows it)."""
    from pipeline.core.rundir import locked

    cfg = load_run_config(run_dir)
    with processes(cfg) as (device, process), locked(run_dir) if process.is_main else contextlib.nullcontext():
        if target is not None and target not in cfg.targets:
            info(
                f"{target}: added to the run's targets; the prune stage rounded kept widths for "
                f"{', '.join(cfg.targets)} only (`pipeline run ... --target {target}` rounds for it too)"
            )
            cfg = cfg.replace(targets=(*cfg.targets, target))
            if process.is_main:
                save_config(cfg, run_dir)
        run_stage(cfg, run_dir, name, target, force, device)
