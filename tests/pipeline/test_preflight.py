from pathlib import Path

from click.testing import CliRunner

from pipeline.cli import main
from pipeline.preflight import available_memory_gb
from tests.tiny_models import TINY_SPECS


def test_a_model_over_the_memory_budget_is_refused_before_any_stage(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["run", "--model", TINY_SPECS["resnet"], "--input-shape", "1,3,32,32", "--memory-budget", "0.5", "--out", str(out)]
    )
    assert result.exit_code == 2 and not out.exists()
    assert "at 3x32x32 has 0.00 GB of weights and 0.00 GB of activations per image: pruning and exporting it " in result.output
    assert "needs about 1.2 GB of memory, over the 0.5 GB this run may use (--memory-budget" in result.output


def test_available_memory_is_what_linux_reports():
    if not Path("/proc/meminfo").is_file():
        assert available_memory_gb() is None
        return
    meminfo = Path("/proc/meminfo").read_text()
    total = int(next(line for line in meminfo.splitlines() if line.startswith("MemTotal:")).split()[1]) / 2**20
    assert 0 < available_memory_gb() <= total
