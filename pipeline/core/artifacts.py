"""Stage directories: written under a temporary name, manifest last, then renamed into place, so a
directory that has a manifest is always complete and nothing half-written is ever left behind."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.core.errors import ArtifactError

MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def write_json(path: Path, value: Any) -> None:
    """Write JSON through a temporary file and a rename: readers never see a partial file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} does not exist; run the stage that writes it first") from None
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path} is not valid JSON ({err})") from None


def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide a stage's output, for its manifest."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in (
        "torch",
        "torchvision",
        "torch-pruning",
        "onnx",
        "onnxruntime",
        "openvino",
        "tensorrt",
        "tensorrt-cu12",
        "numpy",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def read_manifest(stage_dir: Path) -> dict | None:
    """The stage's manifest, or None when the stage never completed there."""
    path = Path(stage_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


HASHED_ON_RESUME_BYTES = 64 << 20  # larger outputs (ONNX graphs, engines) are checked by size alone


def changed_outputs(stage_dir: Path, manifest: dict) -> list[str]:
    """The outputs of a finished stage that are missing or no longer what its manifest recorded:
    every file's presence and size, and the hash of those small enough to read at each resume."""
    sizes, changed = manifest.get("sizes", {}), []
    for name, digest in manifest.get("outputs", {}).items():
        path = Path(stage_dir) / name
        if not path.is_file():
            changed.append(f"{name} is missing")
        elif name in sizes and path.stat().st_size != sizes[name]:
            changed.append(f"{name} changed size")
        elif path.stat().st_size <= HASHED_ON_RESUME_BYTES and sha256_file(path) != digest:
            changed.append(f"{name} changed")
    return changed


class StageWriter:
    """Context manager giving a temporary directory for a stage's files.

    On success the manifest is written last and the directory is renamed into place (an older
    complete directory is replaced only then). On any error the temporary directory is removed.
    """

    def __init__(self, stage_dir: Path, stage: str, config: dict, fingerprint: str):
        self.final = Path(stage_dir)
        self.stage, self.config, self.fingerprint = stage, config, fingerprint
        self.path = self.final.with_name(f".{self.final.name}.tmp-{os.getpid()}")
        self.extra: dict[str, Any] = {}
        self._started = 0.0

    def __enter__(self) -> StageWriter:
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                shutil.rmtree(self.path)
            self.path.mkdir()
        except OSError as err:
            raise ArtifactError(f"cannot write {self.final.parent}: {err.strerror}") from None
        self._started = time.time()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return False
        files = sorted(p for p in self.path.rglob("*") if p.is_file())
        outputs = {str(p.relative_to(self.path)): sha256_file(p) for p in files}
        manifest = {
            "stage": self.stage,
            "fingerprint": self.fingerprint,
            "config": self.config,
            "outputs": outputs,
            "sizes": {str(p.relative_to(self.path)): p.stat().st_size for p in files},
            "outputs_digest": sha256_json(outputs),
            "versions": library_versions(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self._started)),
            "seconds": round(time.time() - self._started, 3),
            **self.extra,
        }
        write_json(self.path / MANIFEST, manifest)
        old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.path, self.final)
        shutil.rmtree(old, ignore_errors=True)
        return False
