"""Helpers shared by the benchmark scripts: the CIFAR-10 data of ../shared, and writing a result
table into the README between its markers."""

from __future__ import annotations

import json
import platform
import re
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


def cifar10_root() -> Path:
    """../shared's CIFAR-10 unpacked once into .data/ (git-ignored)."""
    target = ROOT / ".data" / "cifar10"
    if not (target / "test").is_dir():
        archive = SHARED / "data" / "cifar10-jpeg.tar.gz"
        if not archive.is_file():
            sys.exit(f"needs {archive}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(target.parent, filter="data")
    return target


def machine() -> str:
    from exporters.base import cpu_name, default_threads

    return f"{cpu_name()}, {default_threads()} threads, Python {platform.python_version()}"


def write_results(name: str, rows: list[dict] | None, table: str) -> None:
    """The table into the README between its markers; `rows` (when given) to bench/results/<name>.json."""
    if rows is not None:
        results = ROOT / "bench" / "results"
        results.mkdir(exist_ok=True)
        (results / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    if start not in text:
        sys.exit(f"README.md has no {start} marker")
    text = re.sub(re.escape(start) + ".*?" + re.escape(end), f"{start}\n{table.rstrip()}\n{end}", text, flags=re.S)
    readme.write_text(text)
    print(table)
