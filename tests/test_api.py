"""The Python API: the README's example runs as written, and load_pruned gives the exported model."""

import re
from pathlib import Path

import numpy as np
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_api_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_and_load_pruned_equals_the_exported_onnx(tmp_path, monkeypatch, capsys):
    import onnxruntime as ort

    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_api_example(), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "fewer MACs, cpu speedup" in printed and "parameters left" in printed
    report, pruned = namespace["report"], namespace["pruned"]
    assert 1.9 <= report["macs_ratio"] <= 2.1 and report["dense"]["accuracy"] is not None
    run = tmp_path / "runs" / "api-example"
    assert (run / "report.json").is_file() and (run / "export" / "pruned.onnx").is_file()
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in namespace["model"].parameters())
    x = torch.randn(4, 3, 64, 64)
    session = ort.InferenceSession(str(run / "export" / "pruned.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(pruned(x).numpy(), onnx_out, atol=1e-4, rtol=1e-4)


def test_api_reruns_nothing_for_the_same_objects_and_takes_spec_strings(tmp_path, capsys):
    import pipeline
    from tests.tiny_models import tiny_resnet

    model = tiny_resnet()
    data = torch.utils.data.TensorDataset(torch.randn(24, 3, 32, 32), torch.arange(24) % 3)
    options = dict(targets=["cpu"], ratio=0.3, calib_samples=12, batch_size=6, profile_seconds=0.1)
    first = pipeline.run(model, calib_data=data, eval_data=data, out=str(tmp_path / "a"), **options)
    capsys.readouterr()
    again = pipeline.run(
        model, calib_data=torch.utils.data.DataLoader(data, batch_size=4), eval_data=data, out=str(tmp_path / "a"), **options
    )
    assert capsys.readouterr().err.count("up to date, skipped") >= 5 and again["pruned"] == first["pruned"]
    by_spec = pipeline.run("tests.tiny_models:tiny_resnet", input_shape=(1, 3, 32, 32), out=str(tmp_path / "b"), **options)
    assert by_spec["macs_ratio"] > 1 and by_spec["dense"]["accuracy"] is None
    assert isinstance(pipeline.load_pruned(tmp_path / "b"), torch.nn.Module)


def test_import_pipeline_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys, pipeline; assert callable(pipeline.run); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
