"""Whole runs on tiny in-code models, with the real ONNX Runtime and OpenVINO."""

import csv
import json

import pytest
from click.testing import CliRunner

from exporters import TARGETS
from pipeline.cli import main
from pipeline.core.artifacts import read_manifest
from pipeline.scorers import SCORERS
from tests.tiny_models import TINY_SPECS

FAST = ["--profile-seconds", "0.1", "--calib-samples", "12", "--batch-size", "6", "--input-shape", "1,3,32,32"]
TARGET_KEYS = {
    "dense_ms",
    "pruned_ms",
    "speedup",
    "speedup_ci",
    "macs_ratio",
    "efficiency",
    "parity_max_abs",
    "verdict",
    "reasons",
}


def run_cli(*args):
    result = CliRunner().invoke(main, ["run", *args, *FAST], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def available_targets():
    return [t for t in TARGETS.names() if TARGETS.unavailable_reason(t) is None]


def check_contract(report: dict, targets):
    assert {"model", "scorer", "ratio", "input_shape", "dense", "pruned", "targets"} <= set(report)
    for part in ("dense", "pruned"):
        assert {"macs", "params", "accuracy"} <= set(report[part])
    assert report["pruned"]["macs"] < report["dense"]["macs"]
    assert set(report["targets"]) == set(targets)
    for result in report["targets"].values():
        assert TARGET_KEYS <= set(result)
        assert result["verdict"] in ("pass", "fail")
        assert result["efficiency"] == pytest.approx(result["speedup"] / result["macs_ratio"])
        assert result["speedup_ci"][0] <= result["speedup"] <= result["speedup_ci"][1]
        assert result["parity_ok"] is True
        if report.get("precision", "fp32") == "fp32":
            assert result["parity_max_abs"] < 1e-3


@pytest.mark.parametrize("scorer", SCORERS.names())
def test_every_scorer_runs_the_whole_pipeline_with_data(scorer, tmp_path, image_folder):
    out = tmp_path / "run"
    result = run_cli("--model", TINY_SPECS["resnet"], "--data", str(image_folder), "--scorer", scorer, "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    check_contract(report, ["cpu"])
    assert report["scorer"] == scorer and 0 <= report["dense"]["accuracy"] <= 1 and report["pruned"]["accuracy"] is not None
    for stage in ("calibrate", "score", "prune", "export", "compile/cpu", "profile/cpu", "report"):
        assert read_manifest(out / stage) is not None, stage
    rows = list(csv.DictReader((out / "score" / "scores.csv").open()))
    assert {r["layer"] for r in rows} == {l["name"] for l in report["layers"]}
    assert (out / "report.md").read_text().startswith("# Pruning report")
    assert (out / "plots" / "latency.png").stat().st_size > 1000 and (out / "plots" / "kept_units.png").is_file()
    assert "speedup" in result.output


@pytest.mark.parametrize("kind", sorted(set(TINY_SPECS) - {"resnet"}))
def test_every_target_with_every_tiny_architecture(kind, tmp_path):
    out = tmp_path / "run"
    targets = [arg for t in available_targets() for arg in ("--target", t)]  # one pruned model, every target
    run_cli("--model", TINY_SPECS[kind], *targets, "--out", str(out), "--round-to", "4")
    report = json.loads((out / "report.json").read_text())
    check_contract(report, available_targets())
    assert report["dense"]["accuracy"] is None  # synthetic inputs: no accuracy
    if kind == "vit":
        kinds = {l["kind"] for l in report["layers"] if l["kept"] < l["size"]}
        assert kinds == {"head", "neuron"}


def test_rerun_skips_finished_stages_and_reruns_what_changed(tmp_path):
    out = tmp_path / "run"
    args = ["--model", TINY_SPECS["concat"], "--out", str(out)]
    run_cli(*args)
    before = {s: read_manifest(out / s)["started"] for s in ("calibrate", "score", "prune", "export")}
    fingerprint = read_manifest(out / "prune")["fingerprint"]
    result = CliRunner().invoke(main, ["run", *args, *FAST], catch_exceptions=False)
    assert result.output.count("up to date, skipped") >= 7
    assert read_manifest(out / "prune")["fingerprint"] == fingerprint
    run_cli(*args, "--ratio", "0.3")
    assert read_manifest(out / "calibrate")["started"] == before["calibrate"]  # same inputs
    assert read_manifest(out / "score")["started"] == before["score"]
    assert read_manifest(out / "prune")["fingerprint"] != fingerprint  # new budget
    report = json.loads((out / "report.json").read_text())
    assert report["budget"]["mode"] == "ratio" and report["budget"]["ratio"] == pytest.approx(0.3)
    removed = sum(l["size"] - l["kept"] for l in report["layers"]) / sum(l["size"] for l in report["layers"])
    assert report["ratio"] == pytest.approx(removed)  # the fraction of prunable units actually removed


def test_several_batch_sizes_and_both_targets(tmp_path):
    out = tmp_path / "run"
    run_cli(
        "--model",
        TINY_SPECS["resnet"],
        "--out",
        str(out),
        "--batch-sizes",
        "1,4",
        *[a for t in available_targets() for a in ("--target", t)],
    )
    report = json.loads((out / "report.json").read_text())
    check_contract(report, available_targets())
    for result in report["targets"].values():
        assert set(result["by_batch"]) == {"1", "4"}
        assert all(TARGET_KEYS <= set(r) for r in result["by_batch"].values())


def test_distillation_records_history_and_final_accuracy(tmp_path, image_folder):
    out = tmp_path / "run"
    run_cli("--model", TINY_SPECS["resnet"], "--data", str(image_folder), "--distill-epochs", "2", "--out", str(out))
    history = list(csv.DictReader((out / "distill" / "history.csv").open()))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    report = json.loads((out / "report.json").read_text())
    assert report["pruned"]["accuracy"] == pytest.approx(float(history[-1]["accuracy"]))
    assert json.loads((out / "export" / "parity.json").read_text())["source"] == "distill"
    assert not (out / ".distill-checkpoint").exists()  # per-epoch checkpoints go once the stage is complete


def test_stage_commands_work_on_a_run_directory(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--model", TINY_SPECS["resnet"], "--out", str(out), "--until", "score", *FAST])
    assert result.exit_code == 0 and not (out / "prune").exists()
    early = CliRunner().invoke(main, ["export", str(out)])
    assert early.exit_code == 2 and "no complete 'prune' stage" in early.output
    for command in (["prune", str(out)], ["export", str(out)], ["compile", str(out)], ["profile", str(out), "--target", "cpu"]):
        assert CliRunner().invoke(main, command).exit_code == 0, command
    shown = CliRunner().invoke(main, ["report", str(out)])
    assert shown.exit_code == 0 and "| cpu | 1 |" in shown.output
    assert (out / "report.json").is_file()


def test_strict_exits_nonzero_on_a_fail_verdict(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["run", "--model", TINY_SPECS["resnet"], "--out", str(out), "--min-efficiency", "50", "--strict", *FAST]
    )
    assert result.exit_code == 3 and "verdict fail on cpu" in result.output
    assert json.loads((out / "report.json").read_text())["targets"]["cpu"]["verdict"] == "fail"


@pytest.mark.parametrize("method", ["mean", "lstsq"])
def test_compensation_is_applied_recorded_and_replayed(method, tmp_path, image_folder):
    out = tmp_path / "run"
    run_cli("--model", TINY_SPECS["concat"], "--data", str(image_folder), "--compensate", method, "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    assert report["scorer_options"]["compensation"] == method
    plan = json.loads((out / "prune" / "plan.json").read_text())
    if method == "mean":
        assert plan["added_biases"] == []  # the concat model's consumers all have biases
    assert json.loads((out / "export" / "parity.json").read_text())["pruned"]["max_abs"] < 1e-4


@pytest.mark.parametrize("model", ["resnet", "vit"])
def test_sensitivity_allocation_and_reconstruction_selection_reach_the_report(model, tmp_path, image_folder):
    out = tmp_path / "run"
    run_cli("--model", TINY_SPECS[model], "--data", str(image_folder), "--allocate", "sensitivity", "--select",
            "reconstruction", "--compensate", "lstsq", "--macs-reduction", "1.5", "--round-to", "4", "--out", str(out),
            "--profile-seconds", "0.2")  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert 1.5 * 0.95 <= report["macs_ratio"] <= 1.5 * 1.1  # steps of 4 channels on 24- and 32-channel groups
    kept = {l["name"]: l["kept"] for l in report["layers"]}
    assert {name: entry["kept"] for name, entry in report["sensitivity"].items()} == {n: kept[n] for n in report["sensitivity"]}
    assert all(entry["curve"][str(max(map(int, entry["curve"])))] == 0.0 for entry in report["sensitivity"].values())
    assert (out / "plots" / "sensitivity.png").is_file() and "Widths by measured sensitivity" in (out / "report.md").read_text()
    assert json.loads((out / "export" / "parity.json").read_text())["pruned"]["max_abs"] < 1e-4


def test_vbp_defaults_to_global_ranking_and_mean_shift(tmp_path):
    out = tmp_path / "run"
    run_cli("--model", TINY_SPECS["vit"], "--scorer", "vbp", "--out", str(out), "--round-to", "4")
    report = json.loads((out / "report.json").read_text())
    assert report["scorer_options"]["ranking"] == "global" and report["scorer_options"]["compensation"] == "mean"
    assert {l["kind"] for l in report["layers"] if l["kept"] < l["size"]} == {"neuron"}  # heads are not VBP's
    assert "Scorer `vbp` (ranking global, compensation mean" in (out / "report.md").read_text()


def test_iterative_schedule_with_class_aware_regularisation(tmp_path, image_folder):
    out = tmp_path / "run"
    run_cli(
        "--model",
        TINY_SPECS["resnet"],
        "--data",
        str(image_folder),
        "--scorer",
        "class-aware",
        "--iterative",
        "--regularize",
        "class-aware",
        "--distill-epochs",
        "1",
        "--max-acc-drop",
        "1",
        "--ratio",
        "0.3",
        "--round-to",
        "1",
        "--out",
        str(out),
    )
    plan = json.loads((out / "prune" / "plan.json").read_text())
    assert len(plan["steps"]) == 3  # 30% in steps of at most 10%
    assert len(json.loads((out / "prune" / "iterations.json").read_text())) == 3
    assert json.loads((out / "export" / "parity.json").read_text())["pruned"]["max_abs"] < 1e-4  # the replay is exact


def test_cosep_without_a_budget_flag_reports_the_counts_it_chose(tmp_path, image_folder):
    out = tmp_path / "run"
    run_cli("--model", TINY_SPECS["resnet"], "--data", str(image_folder), "--scorer", "cosep", "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    chosen = [l for l in report["layers"] if "chosen" in l]
    assert chosen and all(l["kept"] == l["chosen"] and "k" in l and "knee" in l for l in chosen)
    assert report["own_budget"]["macs_ratio"] == pytest.approx(report["macs_ratio"], rel=1e-6)
    assert report["own_budget"]["scaled"] is False
    assert "chosen by the criterion" in (out / "report.md").read_text()
    rows = list(csv.DictReader((out / "score" / "scores.csv").open()))
    assert {"cluster", "representative"} <= set(rows[0])


def test_cswap_scaled_to_a_macs_target_writes_its_evidence(tmp_path, image_folder):
    out = tmp_path / "run"
    run_cli(
        "--model",
        TINY_SPECS["resnet"],
        "--data",
        str(image_folder),
        "--scorer",
        "cswap",
        "--macs-reduction",
        "1.5",
        "--round-to",
        "1",
        "--out",
        str(out),
    )
    report = json.loads((out / "report.json").read_text())
    assert report["macs_ratio"] == pytest.approx(1.5, rel=0.05) and report["own_budget"]["scaled"] is True
    rows = list(csv.DictReader((out / "score" / "scores.csv").open()))
    assert {"effect", "t_lowest", "t_highest", "category", "removed_in_progressive"} <= set(rows[0])
    assert {r["category"] for r in rows} <= {"critical", "neutral", "detrimental"}
    assert any("cswap:" in note for note in report["notes"])


def test_a_run_is_named_by_its_budget(tmp_path):
    from pipeline.core.config import build_config
    from pipeline.preflight import resolve
    from pipeline.runner import default_run_name

    def name(**values):
        return default_run_name(resolve(build_config(model="cifar:resnet20", **values)))

    assert name(scorer="cosep") == "resnet20-cosep-auto"
    assert name(scorer="cswap", ratio=0.3) == "resnet20-cswap-r0.3"
    assert name(scorer="l1") == "resnet20-l1-r0.5"
    assert name(scorer="l1", macs_reduction=2) == "resnet20-l1-m2"
    assert name(scorer="l1", speedup=2) == "resnet20-l1-x2"  # a latency budget names its goal
    assert name(scorer="cosep", latency_ms=4.5) == "resnet20-cosep-4.5ms"
    # an explicit ranking spreads the default ratio by the criterion's scores instead of its own counts
    assert name(scorer="cosep", ranking="uniform") == "resnet20-cosep-r0.5"


def test_an_explicit_ranking_overrides_the_criterions_own_counts(tmp_path, image_folder):
    out = tmp_path / "run"
    run_cli(
        "--model",
        TINY_SPECS["resnet"],
        "--data",
        str(image_folder),
        "--scorer",
        "cosep",
        "--ranking",
        "uniform",
        "--ratio",
        "0.5",
        "--round-to",
        "1",
        "--out",
        str(out),
    )
    report = json.loads((out / "report.json").read_text())
    assert "own_budget" not in report and report["scorer_options"]["ranking"] == "uniform"
    assert all(l["kept"] == l["size"] - l["size"] // 2 for l in report["layers"] if l["kind"] == "channel" and l["size"] > 1)


def test_int8_runs_on_cpu_and_openvino_with_its_accuracy_checked(tmp_path, image_folder):
    targets = [t for t in ("cpu", "openvino") if TARGETS.unavailable_reason(t) is None]
    out = tmp_path / "run"
    run_cli(
        "--model",
        TINY_SPECS["resnet"],
        "--data",
        str(image_folder),
        "--precision",
        "int8",
        "--out",
        str(out),
        *[a for t in targets for a in ("--target", t)],
    )
    report = json.loads((out / "report.json").read_text())
    check_contract(report, targets)
    assert report["precision"] == "int8" and all(report["targets"][t]["precision"] == "int8" for t in targets)
    import onnx

    parity = json.loads((out / "export" / "parity.json").read_text())["int8"]
    flavours = {"cpu": "u8", "openvino": "s8"}
    assert set(parity) == {flavours[t] for t in targets}
    for flavour, facts in parity.items():
        for variant in ("dense", "pruned"):
            path = out / "export" / f"{variant}.int8-{flavour}.onnx"
            # the quantised graph computes what the fp32 model it came from does (the logits' SQNR: top-1
            # agreement of a random tiny model hinges on near-tied logits), and is scored on the eval split
            assert facts[variant]["sqnr_db"] >= 15 and 0.0 <= facts[variant]["accuracy"] <= 1.0
            assert abs(facts[variant]["accuracy"] - report[variant]["accuracy"]) <= 0.25
            graph = onnx.load(str(path)).graph
            assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= {n.op_type for n in graph.node}
            zero_points = [i for i in graph.initializer if "zero_point" in i.name]
            wanted = onnx.TensorProto.UINT8 if flavour == "u8" else onnx.TensorProto.INT8
            assert any(z.data_type == wanted for z in zero_points)  # the activations' flavour
    assert "INT8 (Q/DQ graphs" in (out / "report.md").read_text()


def test_fp16_on_openvino_compresses_the_ir(tmp_path):
    if TARGETS.unavailable_reason("openvino"):
        pytest.skip(TARGETS.unavailable_reason("openvino"))
    import openvino as ov

    out = tmp_path / "run"
    run_cli("--model", TINY_SPECS["resnet"], "--precision", "fp16", "--target", "openvino", "--out", str(out))
    model = ov.Core().read_model(str(out / "compile" / "openvino" / "pruned" / "model.xml"))
    constants = [op for op in model.get_ops() if op.get_type_name() == "Constant"]
    assert any(op.get_element_type() == ov.Type.f16 for op in constants)
    report = json.loads((out / "report.json").read_text())
    assert report["targets"]["openvino"]["precision"] == "fp16"


def test_own_model_file_with_arguments_and_own_data_factory(tmp_path):
    (tmp_path / "my_net.py").write_text(
        "import torch.nn as nn\n\n"
        "def make(num_classes=10, width=16):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),\n"
        "                         nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),\n"
        "                         nn.Conv2d(2 * width, 32, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))\n"
    )
    (tmp_path / "my_data.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n\n"
        "def make():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    labels = torch.arange(48) % 3\n"
        "    images = torch.randn(48, 3, 32, 32, generator=g) + labels.view(-1, 1, 1, 1)\n"
        "    return TensorDataset(images[:36], labels[:36]), TensorDataset(images[36:], labels[36:])\n"
    )
    out = tmp_path / "run"
    run_cli(
        "--model",
        f"{tmp_path / 'my_net.py'}:make",
        "--model-arg",
        "width=24",
        "--data",
        f"{tmp_path / 'my_data.py'}:make",
        "--out",
        str(out),
    )
    report = json.loads((out / "report.json").read_text())
    check_contract(report, ["cpu"])
    assert report["dense"]["accuracy"] is not None
    assert {l["name"]: l["size"] for l in report["layers"]}["3"] == 48  # width=24 reached the factory
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_args"] == {"width": 24} and saved["input_shape"] == [1, 3, 32, 32]


def test_timm_vit_prunes_heads_and_mlp_neurons(tmp_path):
    pytest.importorskip("timm", reason="timm is not installed (pip install -e '.[timm]')")
    out = tmp_path / "run"
    run_cli(
        "--model",
        "timm:vit_tiny_patch16_224",
        "--model-arg",
        "img_size=32",
        "--model-arg",
        "patch_size=8",
        "--model-arg",
        "depth=2",
        "--ratio",
        "0.5",
        "--out",
        str(out),
    )
    report = json.loads((out / "report.json").read_text())
    check_contract(report, ["cpu"])
    assert {l["kind"] for l in report["layers"] if l["kept"] < l["size"]} == {"head", "neuron"}
    saved = json.loads((out / "config.json").read_text())
    assert saved["interpolation"] == "bicubic" and saved["mean"] == [0.5, 0.5, 0.5]  # from timm's pretrained config


def test_training_only_head_model_distils(tmp_path, image_folder):
    out = tmp_path / "run"
    run_cli("--model", TINY_SPECS["aux"], "--data", str(image_folder), "--distill-epochs", "1", "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    check_contract(report, ["cpu"])
    assert any(note.startswith("aux: not reached by the inference forward") for note in report["notes"])


def test_a_target_added_to_an_existing_run_reaches_its_report(tmp_path):
    if TARGETS.unavailable_reason("openvino"):
        pytest.skip(TARGETS.unavailable_reason("openvino"))
    out = tmp_path / "run"
    run_cli("--model", TINY_SPECS["resnet"], "--out", str(out))
    outputs = []
    for command in (["compile", str(out), "--target", "openvino"], ["profile", str(out), "--target", "openvino"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert "rounded kept widths for cpu only" in outputs[0] and "rounded" not in outputs[1]
    assert json.loads((out / "config.json").read_text())["targets"] == ["cpu", "openvino"]
    assert CliRunner().invoke(main, ["report", str(out)]).exit_code == 0
    assert set(json.loads((out / "report.json").read_text())["targets"]) == {"cpu", "openvino"}


@pytest.mark.parametrize("scorer, extra", [("cswap", []), ("snip", ["--snip-at-init"])])
def test_iterative_rescoring_gets_the_whole_scoring_context(scorer, extra, tmp_path, image_folder, monkeypatch):
    from pipeline.scorers import SCORERS as registry

    seen = []
    scorer_class = registry.load(scorer)
    original = scorer_class.score
    monkeypatch.setattr(scorer_class, "score", lambda self, ctx: seen.append(ctx) or original(self, ctx))
    out = tmp_path / "run"
    run_cli(
        "--model",
        TINY_SPECS["resnet"],
        "--data",
        str(image_folder),
        "--scorer",
        scorer,
        *extra,
        "--ratio",
        "0.3",
        "--iterative",
        "--distill-epochs",
        "1",
        "--max-acc-drop",
        "1",
        "--out",
        str(out),
    )
    assert len(seen) >= 2  # the score stage, then re-scoring between iterative steps
    for ctx in seen:
        assert ctx.example is not None and ctx.fresh_model is not None and ctx.batches is not None
        assert ctx.options.snip_at_init == (scorer == "snip")
    assert len(json.loads((out / "prune" / "iterations.json").read_text())) >= 2


def test_a_run_moved_to_another_device_re_runs_nothing_and_manifests_name_the_device(tmp_path, image_folder):
    out = tmp_path / "run"
    args = ("--model", TINY_SPECS["resnet"], "--data", str(image_folder), "--distill-epochs", "1", "--out", str(out))
    run_cli(*args, "--device", "auto")
    again = run_cli(*args, "--device", "cpu")
    assert "running" not in again.stderr and again.stderr.count("up to date, skipped") >= 8
    for stage in ("calibrate", "score", "prune", "distill"):
        assert read_manifest(out / stage)["device"] == "cpu"
    assert "device" not in read_manifest(out / "export")  # the ONNX stages do not compute on it


@pytest.mark.slow
def test_torchrun_runs_the_pipeline_with_distillation_on_two_processes(tmp_path, image_folder):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pipeline", "run",
               "--model", TINY_SPECS["resnet"], "--data", str(image_folder), "--distill-epochs", "2", "--out", str(out), *FAST]  # fmt: skip
    result = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(out / "distill")
    assert manifest["world_size"] == 2 and manifest["global_batch"] == 12
    assert [row["epoch"] for row in csv.DictReader((out / "distill" / "history.csv").open())] == ["1", "2"]
    assert result.stdout.count("report: ") == 1  # rank 0 speaks for both
    assert result.stderr.count("[calibrate] running") == 1 and "on 2 processes, global batch 12" in result.stderr
    check_contract(json.loads((out / "report.json").read_text()), ["cpu"])


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="CUDA tests need a GPU")
@pytest.mark.parametrize("scorer", SCORERS.names())
def test_on_cuda_every_scorer_runs_the_pipeline_and_scores_as_on_the_cpu(scorer, tmp_path, image_folder):
    import torch
    from safetensors.torch import load_file

    runs = {}
    for device in ("cpu", "cuda"):
        runs[device] = tmp_path / device
        run_cli("--model", TINY_SPECS["resnet"], "--data", str(image_folder), "--scorer", scorer, "--distill-epochs", "1",
                "--device", device, "--out", str(runs[device]))  # fmt: skip
    cpu, gpu = (load_file(str(runs[d] / "score" / "scores.safetensors")) for d in ("cpu", "cuda"))
    assert cpu.keys() == gpu.keys()
    for name in cpu:
        torch.testing.assert_close(gpu[name], cpu[name], rtol=1e-3, atol=1e-5, msg=name)
    distill = read_manifest(runs["cuda"] / "distill")
    assert distill["device"].startswith("cuda:0") and distill["amp"] == ("bf16" if torch.cuda.is_bf16_supported() else "off")
    check_contract(json.loads((runs["cuda"] / "report.json").read_text()), ["cpu"])


def test_a_speedup_is_met_on_the_cpu_target_and_its_tables_are_reused(tmp_path):
    args = ["--model", TINY_SPECS["wide"], "--speedup", "1.5", "--target", "cpu", "--threads", "1", "--profile-seconds", "0.3",
            "--calib-samples", "12", "--batch-size", "6", "--input-shape", "1,3,32,32"]  # fmt: skip
    first = CliRunner().invoke(main, ["run", *args, "--out", str(tmp_path / "first")], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "latency table: measured" in first.output
    metrics = json.loads((tmp_path / "first" / "prune" / "metrics.json").read_text())
    rounds = metrics["latency"]["rounds"]
    chosen = next(r for r in rounds if r["chosen"])
    # measured on the target by the allocator, a few rounds at most, the closest kept; six groups of 64
    # channels move in steps of about 4% of the latency, so on a shared machine 10% is what this model allows
    assert len(rounds) <= 6 and chosen == min(rounds, key=lambda r: abs(r["measured_speedup"] / 1.5 - 1))
    assert chosen["measured_speedup"] == pytest.approx(1.5, rel=0.10), rounds
    report = json.loads((tmp_path / "first" / "report.json").read_text())
    assert report["latency_budget"]["rounds"] == rounds
    assert report["targets"]["cpu"]["speedup"] > 1.2  # profiled again, later: the same plan is faster
    markdown = (tmp_path / "first" / "report.md").read_text()
    assert "## Latency budget: 1.50x on cpu" in markdown and "| 1 |" in markdown
    assert (tmp_path / "first" / "plots" / "layers-cpu.png").is_file()
    # the same layers again: read from the cache, here by the command that writes a table for another machine
    table = tmp_path / "table.json"
    written = CliRunner().invoke(main, ["latency-table", "--model", TINY_SPECS["wide"], "--target", "cpu", "--threads", "1",
                                        "--input-shape", "1,3,32,32", "--out", str(table)], catch_exceptions=False)  # fmt: skip
    assert written.exit_code == 0, written.output
    # the stem's conv is one of them: a latency budget may cut the stem
    assert "latency table: all 3 layer shapes from the cache" in written.output and table.is_file()
    second = CliRunner().invoke(main, ["run", *args, "--latency-table", str(table), "--out", str(tmp_path / "second"),
                                       "--until", "prune"], catch_exceptions=False)  # fmt: skip
    assert second.exit_code == 0, second.output
    assert f"latency table from {table}" in second.output


def test_a_speedup_with_measured_sensitivity_searches_plans_measured_whole(tmp_path, image_folder):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--model", TINY_SPECS["wide"], "--data", str(image_folder), "--speedup", "1.3",
                                       "--allocate", "sensitivity", "--target", "cpu", "--threads", "1", "--profile-seconds",
                                       "0.3", "--calib-samples", "12", "--batch-size", "6", "--input-shape", "1,3,32,32",
                                       "--out", str(out)], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "prune" / "metrics.json").read_text())
    rounds = metrics["latency"]["rounds"]
    assert metrics["latency"]["plans_measured_whole"] >= len(rounds) + 1  # each round's start and steps, and the knapsack's plan
    assert "plans measured whole" in result.output and metrics["sensitivity"]
    assert "cross-entropy on the labelled calibration images" in result.output  # the run's own data has labels
    assert any(r.get("plan") == "uniform" for r in rounds) and all(r["loss"] > 0 for r in rounds)
    chosen = next(r for r in rounds if r["chosen"])
    assert chosen["predicted_speedup"] > 1.0 and metrics["macs_ratio"] > 1.0
    searched = metrics["latency"]["plans_measured_whole"]
    assert (
        f"searched from the uniform plan by measured sensitivity ({searched} plans measured whole"
        in (out / "report.md").read_text()
    )


def test_budgets_and_selections_refuse_what_they_cannot_do(tmp_path):
    for extra, message in ((["--speedup", "2", "--ratio", "0.5"], "give one budget, not --ratio and --speedup"),
                           (["--speedup", "0.9"], "--speedup must be > 1"),
                           (["--latency-ms", "2", "--precision", "int8"], "measure fp32 and fp16 models"),
                           (["--select", "reconstruction", "--compensate", "mean"], "add --compensate lstsq"),
                           (["--allocate", "sensitivity", "--ranking", "global"], "give one")):  # fmt: skip
        result = CliRunner().invoke(main, ["run", "--model", TINY_SPECS["wide"], *extra, "--out", str(tmp_path / "x")])
        assert result.exit_code != 0 and message in result.output, result.output
