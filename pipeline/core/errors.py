"""The errors a user can cause. The CLI prints their message as one line and exits non-zero."""


class PipelineError(Exception):
    """A problem with the user's input or environment; the message says what to do."""


class ConfigError(PipelineError):
    """A bad flag, config key or value."""


class PluginUnavailableError(PipelineError):
    """A scorer or target whose dependency is not installed here."""


class ArtifactError(PipelineError):
    """A run directory or stage artifact that is missing, incomplete or unwritable."""


class ModelError(PipelineError):
    """A model spec, checkpoint or architecture the pipeline cannot use."""


class DataError(PipelineError):
    """A data folder or input shape the pipeline cannot use."""


class ResourceError(PipelineError):
    """The machine ran out of what a stage needs (memory)."""


def is_out_of_memory(err: BaseException) -> bool:
    """Host or device memory exhausted: MemoryError, or the RuntimeError torch raises (CPU allocator,
    CUDA's OutOfMemoryError)."""
    text = str(err)
    return isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)
    )
