"""The TensorRT target. Where TensorRT is missing (these machines): `pipeline list` says why and how to
get it, and a run checks readiness and then stops with one line. Where TensorRT and a GPU are
present, engines are built and run for real; elsewhere those tests skip with the reason."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from exporters import TARGETS
from exporters import onnx as onnx_export
from pipeline.cli import main
from pipeline.models.build import build_model
from tests.tiny_models import TINY_SPECS

TENSORRT_MISSING = TARGETS.unavailable_reason("tensorrt")


def _gpu_reason():
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt Python package is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


needs_gpu = pytest.mark.skipif(
    _gpu_reason() is not None, reason=f"TensorRT engine tests need TensorRT and a GPU: {_gpu_reason()}"
)
needs_absent = pytest.mark.skipif(
    TENSORRT_MISSING is None, reason="TensorRT is installed here: the missing-runtime path does not apply"
)


@needs_absent
def test_list_says_why_tensorrt_cannot_load_and_how_to_get_it():
    result = CliRunner().invoke(main, ["list"])
    line = next(l for l in result.output.splitlines() if l.strip().startswith("tensorrt"))
    assert "unavailable: neither the 'tensorrt' Python package nor the trtexec binary is installed" in line
    assert "pip install tensorrt" in line and "docker/Dockerfile.tensorrt" in line


@needs_absent
def test_run_checks_readiness_then_stops_with_one_line(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--model",
            TINY_SPECS["resnet"],
            "--target",
            "tensorrt",
            "--precision",
            "fp16",
            "--calib-samples",
            "8",
            "--batch-size",
            "4",
            "--input-shape",
            "1,3,32,32",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2
    errors = [l for l in result.output.splitlines() if l.startswith("Error")]
    assert (
        len(errors) == 1 and "target 'tensorrt' cannot build an engine here" in errors[0] and "pip install tensorrt" in errors[0]
    )
    assert "tensorrt readiness of pruned: ready (fp16)" in result.output
    assert (out / "export" / "manifest.json").is_file()  # everything before the engine build is kept
    assert not (out / "compile" / "tensorrt").exists()  # and nothing half-written


def test_pruned_widths_are_rounded_for_tensorrt_int8(tmp_path):
    """The prune stage rounds to TensorRT's INT8 vector (32) even where TensorRT is missing."""
    from pipeline.stages.prune import channel_block

    assert channel_block(("tensorrt",), "int8") == 32 and channel_block(("tensorrt",), "fp16") == 8
    assert channel_block(("tensorrt", "cpu"), "fp16") % 8 == 0


@needs_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_builds_runs_and_matches_pytorch(precision, tmp_path):
    target = TARGETS.load("tensorrt")()
    torch.manual_seed(0)
    model = build_model(TINY_SPECS["resnet"]).eval()
    path = tmp_path / "m.onnx"
    onnx_export.export(model, torch.randn(1, 3, 32, 32), path)
    out = tmp_path / "engine"
    out.mkdir()
    facts = target.compile(path, out, precision, (4, 8))
    assert facts["runtime"] == "tensorrt" and facts["gpu"] and (out / "model.engine").is_file()
    layers = json.loads((out / "layers.json").read_text())
    assert layers["Layers"]
    batch = torch.randn(4, 3, 32, 32)
    session = target.open(out, (4, 3, 32, 32), threads=1, precision=precision)
    with torch.no_grad():
        expected = model(batch).numpy()
    tolerance = 1e-4 if precision == "fp32" else 5e-2
    np.testing.assert_allclose(session.run(batch.numpy()), expected, atol=tolerance, rtol=tolerance)
    seconds = session.timed(batch.numpy())()
    assert isinstance(seconds, float) and 0 < seconds < 1


@needs_gpu
def test_whole_run_on_tensorrt_reports_device_latency(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--model",
            TINY_SPECS["resnet"],
            "--target",
            "tensorrt",
            "--precision",
            "fp16",
            "--calib-samples",
            "8",
            "--batch-size",
            "4",
            "--input-shape",
            "8,3,32,32",
            "--profile-seconds",
            "0.5",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["targets"]["tensorrt"]["precision"] == "fp16" and report["targets"]["tensorrt"]["speedup"] > 0


@needs_gpu
def test_layer_profiler_times_every_conv_and_linear_of_a_real_engine(tmp_path):
    from profiles.layers import match, onnx_layers

    target = TARGETS.load("tensorrt")()
    model = build_model(TINY_SPECS["resnet"]).eval()
    path = tmp_path / "m.onnx"
    onnx_export.export(model, torch.randn(1, 3, 32, 32), path)
    out = tmp_path / "engine"
    out.mkdir()
    target.compile(path, out, "fp32", (2,))
    times = target.layer_times(out, (2, 3, 32, 32), threads=1, runs=10)
    assert times and all(t["ms"] >= 0 for t in times.values())
    by_module, _ = match(times, onnx_layers(path))
    convs = {n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert set(by_module) == convs
