"""TensorRT on an NVIDIA GPU: the ONNX graph checked for readiness (exporters.readiness), built into
an engine through the Python API (ONNX parser errors reported per node, workspace limit, an
optimisation profile on the batch axis, FP16/INT8 flags, a timing cache kept between builds,
detailed layer information), or through `trtexec` where only the binary is installed (Jetson
images). Sessions time inferences with CUDA events on the device; the trtexec path times with
trtexec itself (CUDA graphs, no transfers, spin-wait). Nothing here imports tensorrt or CUDA until
a build or a session needs them, so `pipeline list` and `pipeline check` work anywhere."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from exporters import readiness, trt_layers, trtexec
from exporters.base import Target
from pipeline.core.errors import ConfigError, PipelineError, PluginUnavailableError

ENGINE, LAYERS, BUILD = "model.engine", "layers.json", "build.json"
WORKSPACE_BYTES = trtexec.WORKSPACE_MIB << 20


def unavailable_reason() -> str | None:
    """Why no engine can be built here (None when the Python package or trtexec is present)."""
    if importlib.util.find_spec("tensorrt") is not None or shutil.which("trtexec"):
        return None
    return "neither the 'tensorrt' Python package nor the trtexec binary is installed"


def _api_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def timing_cache_path(version: str, gpu: str) -> Path:
    """One timing cache per TensorRT version and GPU, kept across runs (tactic timing is the slow part)."""
    root = Path(os.environ.get("PIPELINE_CACHE_DIR", Path.home() / ".cache" / "structured-pruning-pipeline"))
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in f"{version}-{gpu}")
    return root / "tensorrt" / f"timing-{safe}.cache"


def onnx_input(onnx_path: Path) -> tuple[str, tuple[int, ...]]:
    """The graph input's name and its shape without the batch axis."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    value = next(v for v in graph.input if v.name not in initializers)
    return value.name, tuple(d.dim_value for d in value.type.tensor_type.shape.dim[1:])


class TensorRt(Target):
    name = "tensorrt"
    files = (ENGINE,)
    checks_before_runtime = True

    def block(self, precision: str) -> int:
        return readiness.CHANNEL_BLOCK[precision]

    def runtime_version(self) -> str:
        return f"tensorrt {installed_version()}"

    def hardware(self) -> str:
        return _gpu_name()

    def precision_problem(self, precision: str) -> str | None:
        # fp32, fp16 and int8 (explicit Q/DQ) all build
        return None if precision in readiness.CHANNEL_BLOCK else f"precision {precision} is not supported (fp32, fp16, int8)"

    def check(self, onnx_path: Path, precision: str) -> list[readiness.Finding]:
        return readiness.check(onnx_path, precision, installed_version() or readiness.DEFAULT_VERSION)

    def compile(self, onnx_path: Path, out_dir: Path, precision: str, batches: tuple[int, ...] = (1,)) -> dict:
        # the compile stage has run self.check() on this graph already
        problem = self.precision_problem(precision)
        if problem:
            raise ConfigError(f"target 'tensorrt': {problem}")
        reason = unavailable_reason()
        if reason:
            raise PluginUnavailableError(
                f"target 'tensorrt' cannot build an engine here: {reason}; on a GPU host: pip install "
                f"tensorrt, or use docker/Dockerfile.tensorrt"
            )
        name, chw = onnx_input(onnx_path)
        shapes = ((1, *chw), (batches[0], *chw), (max(batches), *chw))
        out_dir = Path(out_dir)
        facts = (
            _build_with_api(onnx_path, out_dir, name, shapes, precision)
            if _api_available()
            else _build_with_trtexec(onnx_path, out_dir, name, shapes, precision)
        )
        report = trt_layers.analyse(out_dir / LAYERS)
        facts["layers"] = report.to_dict()
        (out_dir / BUILD).write_text(json.dumps(facts, indent=1))
        return {k: v for k, v in facts.items() if k != "layers"} | {
            "reformat_layers": len(report.reformats),
            "padded_tensors": len(report.padded),
        }

    def layer_reasons(self, compiled_dir: Path) -> list[str]:
        """The pruned engine's reformats and padded formats, for the verdict."""
        path = Path(compiled_dir) / LAYERS
        return trt_layers.analyse(path).reasons() if path.is_file() else []

    def open(self, compiled_dir: Path, input_shape: tuple[int, ...], threads: int, precision: str = "fp32"):
        build = json.loads((Path(compiled_dir) / BUILD).read_text())
        if build["builder"] == "python":
            return _ApiSession(Path(compiled_dir) / ENGINE, tuple(input_shape))
        return _TrtexecSession(Path(compiled_dir), build["input"], tuple(input_shape), _trtexec_version())

    def layer_times(
        self, compiled_dir: Path, input_shape: tuple[int, ...], threads: int, precision: str = "fp32", runs: int = 20
    ):
        """TensorRT's layer profiler: each (fused) layer's median milliseconds over `runs` calls after a
        warm-up, through the Python API's IProfiler or trtexec --exportProfile."""
        compiled_dir = Path(compiled_dir)
        build = json.loads((compiled_dir / BUILD).read_text())
        info = compiled_dir / LAYERS if (compiled_dir / LAYERS).is_file() else None
        if build["builder"] == "python":
            return trt_layers.callback_times(_profiled_calls(compiled_dir / ENGINE, tuple(input_shape), runs), runs, info)
        with tempfile.TemporaryDirectory() as scratch:
            profile = Path(scratch) / "profile.json"
            _run(trtexec.layer_profile_command(compiled_dir / ENGINE, build["input"], tuple(input_shape), runs, profile))
            return trt_layers.profile_times(profile, info)

    def profile(self, compiled: dict[str, Path], input_shape: tuple[int, ...], seconds: float, trials: int):
        """trtexec path only: per-trial GPU compute seconds of each variant, the variants alternating."""
        builds = {v: json.loads((Path(d) / BUILD).read_text()) for v, d in compiled.items()}
        if any(b["builder"] == "python" for b in builds.values()):
            return None  # the sessions time themselves with CUDA events
        version = _trtexec_version()
        results: dict[str, list[list[float]]] = {v: [] for v in compiled}
        names = list(compiled)
        with tempfile.TemporaryDirectory() as scratch:  # the compile stage's files stay as they were written
            for trial in range(trials):
                for variant in names if trial % 2 == 0 else names[::-1]:
                    times = Path(scratch) / f"{variant}-{trial}.json"
                    _run(
                        trtexec.profile_command(
                            Path(compiled[variant]) / ENGINE,
                            builds[variant]["input"],
                            tuple(input_shape),
                            seconds / trials,
                            times,
                            version,
                        )
                    )
                    results[variant].append(trtexec.read_times(times))
        return results


def installed_version() -> str | None:
    if _api_available():
        import tensorrt as trt

        return trt.__version__
    if shutil.which("trtexec"):
        version = _trtexec_version()
        return ".".join(map(str, version))
    return None


def _run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stdout + result.stderr).strip().splitlines()[-3:]
        raise PipelineError(f"{' '.join(command[:2])} failed (exit {result.returncode}): {' | '.join(last)}")
    return result.stdout


def _trtexec_version() -> tuple[int, int, int]:
    result = subprocess.run(["trtexec", "--help"], capture_output=True, text=True, check=False)
    version = trtexec.parse_version(result.stdout + result.stderr)
    if version is None:
        raise PipelineError("cannot tell the TensorRT version from `trtexec --help`")
    return version


def _gpu_name() -> str:
    smi = shutil.which("nvidia-smi")
    if smi:
        result = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip().splitlines()[0]
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name()
    except ImportError:
        pass
    return "unknown GPU"


def _build_with_api(onnx_path: Path, out_dir: Path, input_name: str, shapes, precision: str) -> dict:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = (
        0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    )  # explicit batch is the only mode from 10
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        problems = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            node = error.node_name() if hasattr(error, "node_name") else str(error.node())
            operator = error.node_operator() if hasattr(error, "node_operator") else "?"
            problems.append(f"node {node} ({operator}): {error.desc()}")
        raise PipelineError(f"the TensorRT {trt.__version__} ONNX parser rejected {onnx_path.name}: " + "; ".join(problems[:3]))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *shapes)
    config.add_optimization_profile(profile)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default: fp32 means fp32 (strict parity)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":  # explicit quantisation: the Q/DQ nodes of the graph give the scales
        config.set_flag(trt.BuilderFlag.INT8)
    gpu = _gpu_name()
    cache_path = timing_cache_path(trt.__version__, gpu)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise PipelineError(f"TensorRT {trt.__version__} could not build an engine from {onnx_path.name} (see its log above)")
    (out_dir / ENGINE).write_bytes(bytes(serialized))
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    engine = trt.Runtime(logger).deserialize_cuda_engine(bytes(serialized))
    inspector = engine.create_engine_inspector()
    (out_dir / LAYERS).write_text(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return {
        "runtime": "tensorrt",
        "version": trt.__version__,
        "gpu": gpu,
        "builder": "python",
        "precision": precision,
        "input": input_name,
        "profile": [list(s) for s in shapes],
        "timing_cache": str(cache_path),
    }


def _build_with_trtexec(onnx_path: Path, out_dir: Path, input_name: str, shapes, precision: str) -> dict:
    version = _trtexec_version()
    gpu = _gpu_name()
    cache_path = timing_cache_path(".".join(map(str, version)), gpu)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    _run(trtexec.build_command(onnx_path, out_dir / ENGINE, input_name, shapes, precision, cache_path, out_dir / LAYERS, version))
    return {
        "runtime": "tensorrt",
        "version": ".".join(map(str, version)),
        "gpu": gpu,
        "builder": "trtexec",
        "precision": precision,
        "input": input_name,
        "profile": [list(s) for s in shapes],
        "timing_cache": str(cache_path),
    }


class _ApiSession:
    """An execution context with device buffers (torch CUDA tensors) for one input shape."""

    def __init__(self, engine_path: Path, input_shape: tuple[int, ...]):
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise PluginUnavailableError("target 'tensorrt' needs a CUDA GPU, and torch sees none here")
        self.torch = torch
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(engine_path.read_bytes())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name, self.output_name = inputs[0], next(n for n in names if n not in inputs)
        self.context.set_input_shape(self.input_name, input_shape)
        self.input = torch.empty(input_shape, dtype=torch.float32, device="cuda")
        self.output = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.input_name, self.input.data_ptr())
        self.context.set_tensor_address(self.output_name, self.output.data_ptr())
        self.stream = torch.cuda.Stream()
        self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.input.copy_(self.torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        self.torch.cuda.synchronize()
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise PipelineError("TensorRT execute_async_v3 failed")
        self.stream.synchronize()
        return self.output.cpu().numpy()

    def timed(self, batch: np.ndarray):
        """A call that runs one inference on data already on the device and returns its GPU seconds
        (CUDA events around the enqueue on the session's stream: no host<->device copies)."""
        self.input.copy_(self.torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        self.torch.cuda.synchronize()

        def call() -> float:
            self.start.record(self.stream)
            self.context.execute_async_v3(self.stream.cuda_stream)
            self.end.record(self.stream)
            self.end.synchronize()
            return self.start.elapsed_time(self.end) / 1e3

        return call


def _profiled_calls(engine_path: Path, input_shape: tuple[int, ...], runs: int) -> dict[str, list[float]]:
    """{layer: [ms of each call]} reported by an IProfiler over a warm-up and `runs` calls."""
    import tensorrt as trt

    class Recorder(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)
            self.calls: dict[str, list[float]] = {}

        def report_layer_time(self, layer_name, ms):
            self.calls.setdefault(layer_name, []).append(ms)

    session = _ApiSession(engine_path, input_shape)
    recorder = Recorder()
    session.context.profiler = recorder  # called once per layer for each enqueueV3, after it completes
    batch = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    for _ in range(runs + max(3, runs // 4)):
        session.run(batch)
    return recorder.calls


class _TrtexecSession:
    """Runs one inference through trtexec (parity only; timing is TensorRt.profile)."""

    def __init__(self, compiled_dir: Path, input_name: str, input_shape: tuple[int, ...], version):
        self.dir, self.input_name, self.shape, self.version = compiled_dir, input_name, input_shape, version

    def run(self, batch: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory() as scratch:
            inputs, outputs = Path(scratch) / "input.bin", Path(scratch) / "output.json"
            np.ascontiguousarray(batch, dtype=np.float32).tofile(inputs)
            _run(trtexec.output_command(self.dir / ENGINE, self.input_name, tuple(batch.shape), inputs, outputs))
            values = next(iter(trtexec.read_outputs(outputs).values()))
        return np.asarray(values, dtype=np.float32).reshape(batch.shape[0], -1)
