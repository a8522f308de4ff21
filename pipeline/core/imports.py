"""Import a user's object from `package.module:name` or `path/to/file.py:name`, with one-line errors."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from pipeline.core.errors import ConfigError


def load_object(text: str, what: str, error=ConfigError):
    """The attribute `name` of the module `package.module` or of the Python file `path/to/file.py`."""
    module_text, sep, attr = text.rpartition(":")
    if not sep or not module_text or not attr:
        raise error(f"{what} '{text}' must look like package.module:name or path/to/file.py:name")
    try:
        module = _import_file(module_text) if _is_path(module_text) else importlib.import_module(module_text)
    except Exception as err:  # ImportError, or the user's module failing while it imports
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        kind = "" if isinstance(err, ImportError) else f"{type(err).__name__}: "
        raise error(f"cannot import {what} '{text}': {kind}{first}") from None
    if not hasattr(module, attr):
        raise error(f"cannot import {what} '{text}': {module_text} has no attribute '{attr}'")
    return getattr(module, attr)


def _is_path(text: str) -> bool:
    return text.endswith(".py") or "/" in text or "\\" in text


def _import_file(text: str):
    path = Path(text).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{text} does not exist")
    name = f"pipeline_user_{path.stem}_{abs(hash(str(path))) % 10**8}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    # imports next to the file (its own helpers) resolve as they do when the user runs it
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(str(path.parent))
    return module
