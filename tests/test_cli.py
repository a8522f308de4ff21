"""The command line as a user meets it: help, list, and one clear line for every bad input."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.models.cifar import cifar_resnet

FAST = ["--profile-seconds", "0.1", "--calib-samples", "8", "--batch-size", "8"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def no_incomplete_stage(run_dir: Path) -> bool:
    """Every stage directory that exists has its manifest; no temporary directory is left."""
    if not run_dir.exists():
        return True
    for child in run_dir.rglob("*"):
        if child.name.startswith(".") and child.is_dir():
            return False
    for stage in ("calibrate", "score", "prune", "distill", "export"):
        if (run_dir / stage).exists() and not (run_dir / stage / "manifest.json").is_file():
            return False
    return True


def test_help_and_list_work_without_heavy_imports():
    code = "import sys; from pipeline.cli import main; sys.argv=['pipeline','list']; main()"
    result = subprocess.run([sys.executable, "-c", code + "\n"], capture_output=True, text=True)
    assert result.returncode == 0
    for name in ("l1", "l2", "random", "bn-scale", "taylor", "own-scaled", "macs", "cpu", "openvino", "cifar"):
        assert name in result.stdout
    probe = "import sys, pipeline.cli; from pipeline.cli import main; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
    assert "calibrate -> score" in invoke("--help").output


def test_list_says_why_a_target_cannot_load(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    result = invoke("list")
    assert (
        "openvino" in result.output
        and "unavailable: Python module 'openvino' is not installed; pip install openvino" in result.output
    )


def _bad_checkpoint(tmp_path):
    torch.save({"state_dict": {f"module.{k}": v for k, v in cifar_resnet(20).state_dict().items()}}, tmp_path / "r20.th")
    return str(tmp_path / "r20.th")


BAD_INPUTS = [
    (["--model", "nofamily_xyz:thing"], "cannot import model factory"),
    (["--model", "cifar:resnet50"], "unknown CIFAR model 'resnet50'; valid: cifar:resnet20|resnet32|resnet44|resnet56|resnet110"),
    (["--model", "torchvision:resnet999"], "unknown torchvision classification model"),
    (["--model", "cifar:resnet20", "--weights", "missing.th"], "weights file missing.th does not exist"),
    (["--model", "cifar:resnet56", "--weights", "BADCKPT"], "first mismatching key 'layer1.3.conv1.weight'"),
    (["--ratio", "1.5"], "--ratio must be in (0, 1)"),
    (["--ratio", "0"], "--ratio must be in (0, 1)"),
    (["--macs-reduction", "1"], "--macs-reduction must be > 1"),
    (["--scorer", "magic"], "unknown scorer 'magic'; valid scorers: l1, l2, random, bn-scale, taylor"),
    (["--target", "gpu9"], "unknown target 'gpu9'; valid targets: cpu, openvino"),
    (["--data", "NOCLASSES"], "has no class folders"),
    (["--input-shape", "3,32,32"], "--input-shape must be N,C,H,W"),
    (["--iterative"], "--iterative fine-tunes between steps: give --distill-epochs >= 1"),
    (["--model", "tests.tiny_models:tiny_padded"], "nothing in tests.tiny_models:tiny_padded can be pruned: widen"),
    (["--out", "AFILE/run"], "cannot write to"),
    (["--device", "tpu"], "unknown device 'tpu'; valid: auto, cpu, cuda, cuda:N, mps"),
    (["--workers", "-1"], "--workers must be >= 0"),
    (
        ["--device", "cuda:64"],
        "--device cuda:64: " + ("this machine has" if torch.cuda.is_available() else "CUDA is not available here"),
    ),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[m[:30] for _, m in BAD_INPUTS])
def test_bad_input_is_one_line_and_nonzero_and_leaves_nothing_half_written(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "noclasses" / "train").mkdir(parents=True)
    (tmp_path / "noclasses" / "test").mkdir()
    (tmp_path / "afile").write_text("")
    replacements = {
        "BADCKPT": _bad_checkpoint(tmp_path),
        "NOCLASSES": str(tmp_path / "noclasses"),
        "AFILE/run": str(tmp_path / "afile" / "run"),
    }
    args = [replacements.get(a, a) for a in args]
    if "--model" not in args:
        args += ["--model", "tests.tiny_models:tiny_resnet"]
    if "--input-shape" not in args:
        args += ["--input-shape", "1,3,32,32"]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "run")]
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    result = CliRunner().invoke(main, ["run", *args, *FAST])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert message in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and "Traceback" not in result.output
    assert no_incomplete_stage(tmp_path / "run")


def test_missing_runtime_says_what_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    result = CliRunner().invoke(main, ["run", "--target", "openvino", "--out", str(tmp_path / "run")])
    assert (
        result.exit_code == 2 and "target 'openvino' cannot run here" in result.output and "pip install openvino" in result.output
    )
    assert not (tmp_path / "run" / "calibrate").exists()


def test_real_console_script_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--model", "cifar:resnet50", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = [l for l in result.stderr.splitlines() if l.startswith("Error")]
    assert lines == ["Error: unknown CIFAR model 'resnet50'; valid: cifar:resnet20|resnet32|resnet44|resnet56|resnet110"]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r" / "calibrate").exists()


def test_fp16_on_the_cpu_target_is_refused_before_anything_runs(tmp_path):
    result = CliRunner().invoke(main, ["run", "--precision", "fp16", "--target", "cpu", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output.count("Error") == 1
    assert "--precision fp16 on target 'cpu'" in result.output and "no FP16 convolution" in result.output
    assert not (tmp_path / "run" / "calibrate").exists()


def test_check_passes_a_clean_graph_and_names_the_failing_rule(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from exporters import onnx as onnx_export
    from tests.tiny_models import tiny_resnet

    good = tmp_path / "pruned.onnx"
    onnx_export.export(tiny_resnet().eval(), torch.randn(1, 3, 32, 32), good)
    result = CliRunner().invoke(main, ["check", "--target", "tensorrt", str(good)])
    assert result.exit_code == 0 and "pruned.onnx: ready for tensorrt (fp32)" in result.output
    model = onnx.load(str(good))
    model.graph.node.append(helper.make_node("Unique", [model.graph.output[0].name], ["u"], name="dedupe"))
    model.graph.output.append(helper.make_tensor_value_info("u", TensorProto.FLOAT, None))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    result = CliRunner().invoke(main, ["check", "--target", "tensorrt", str(bad)])
    assert result.exit_code == 1
    assert "FAIL supported-ops: node 'dedupe' (Unique) is not supported by the TensorRT" in result.output
    missing = CliRunner().invoke(main, ["check", "--target", "tensorrt", str(tmp_path / "nope.onnx")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    garbage = tmp_path / "garbage.onnx"
    garbage.write_text("not a model")
    result = CliRunner().invoke(main, ["check", "--target", "tensorrt", str(garbage)])
    assert result.exit_code == 2 and "is not a readable ONNX model" in result.output
