"""The Dockerfiles pass hadolint (real binary, from the dev extra), and every `make` target the README
documents exists in the Makefile. The Docker engine itself is not available on these machines."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ["Dockerfile.tensorrt", "Dockerfile.openvino", "Dockerfile.cpu"]


def _hadolint():
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).is_file():
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings it)")
    return found


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_is_hadolint_clean(name):
    result = subprocess.run([_hadolint(), str(ROOT / "docker" / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_installs_the_project_and_runs_the_pipeline(name):
    text = (ROOT / "docker" / name).read_text()
    assert re.search(r"pip install --no-cache-dir \.", text)
    assert 'ENTRYPOINT ["pipeline"]' in text and 'CMD ["run"' in text
    base = re.search(r"^(?:ARG BASE=|FROM )(\S+)", text, re.M).group(1)
    assert ":" in base and not base.endswith(":latest")  # a pinned tag


def test_every_make_target_in_the_readme_exists():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"(?:`|^|\| )make ([a-z][a-z0-9-]*)", readme, re.M))
    assert {"run", "test", "engine", "edge", "docker-tensorrt", "docker-openvino", "docker-cpu"} <= documented
    result = subprocess.run(
        ["make", "-n", "-f", str(ROOT / "Makefile"), *sorted(documented - {"engine"})],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "VENV": ".venv"},
    )
    assert "No rule to make target" not in result.stderr, result.stderr
    makefile = (ROOT / "Makefile").read_text()
    for target in documented:
        assert re.search(rf"^[^\n#]*\b{re.escape(target)}\b[^\n]*:", makefile, re.M), target
