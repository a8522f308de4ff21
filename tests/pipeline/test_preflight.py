from pathlib import Path

from click.testing import CliRunner

from pipeline.cli import main
from pipeline.models.build import build_model, weight_bytes
from pipeline.preflight import available_memory_gb
from tests.tiny_models import TINY_SPECS


def test_weight_bytes_count_parameters_and_buffers_without_initialising_them():
    model = build_model(TINY_SPECS["resnet"])
    expected = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    assert weight_bytes(TINY_SPECS["resnet"]) == expected


def test_weight_bytes_of_a_constructor_that_reads_tensor_values(tmp_path):
    source = tmp_path / "reads_values.py"
    source.write_text(
        "import torch\n\ndef make():\n    width = int(torch.ones(3).sum().item())  # no value on the meta device\n"
        "    return torch.nn.Linear(width, 2)\n"
    )
    assert weight_bytes(f"{source}:make") == (3 * 2 + 2) * 4


def test_a_model_over_the_memory_budget_is_refused_before_any_stage(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--model", TINY_SPECS["resnet"], "--memory-budget", "0.5", "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert "needs at least 1.2 GB of memory, over the 0.5 GB this run may use (--memory-budget" in result.output


def test_available_memory_is_what_linux_reports():
    if not Path("/proc/meminfo").is_file():
        assert available_memory_gb() is None
        return
    meminfo = Path("/proc/meminfo").read_text()
    total = int(next(line for line in meminfo.splitlines() if line.startswith("MemTotal:")).split()[1]) / 2**20
    assert 0 < available_memory_gb() <= total
