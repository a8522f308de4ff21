"""Name -> plugin table. Plugins are "module:Attr" strings imported on first use, so listing them
costs nothing and a plugin whose dependency is missing is still listed, with the reason."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from pipeline.core.errors import ConfigError, PluginUnavailableError


@dataclass(frozen=True)
class Entry:
    name: str
    path: str  # "package.module:Attr"
    summary: str
    requires: tuple[str, ...] = ()  # importable modules the plugin needs
    install_hint: str = ""
    availability: str = ""  # "module:function" giving the reason it cannot run here, or None (light module)


class Registry:
    def __init__(self, kind: str, entries: list[Entry]):
        self.kind = kind
        self._entries = {e.name: e for e in entries}

    def names(self) -> list[str]:
        return list(self._entries)

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}'; valid {self.kind}s: {', '.join(self.names())}")
        return self._entries[name]

    def unavailable_reason(self, name: str) -> str | None:
        """Why the plugin cannot load here, or None when its dependencies import."""
        entry = self.entry(name)
        hint = f"; {entry.install_hint}" if entry.install_hint else ""
        for module in entry.requires:
            if importlib.util.find_spec(module) is None:
                return f"Python module '{module}' is not installed{hint}"
        if entry.availability:
            module_name, attr = entry.availability.split(":")
            reason = getattr(importlib.import_module(module_name), attr)()
            return f"{reason}{hint}" if reason else None
        return None

    def load(self, name: str):
        reason = self.unavailable_reason(name)
        if reason:
            raise PluginUnavailableError(f"{self.kind} '{name}' cannot load: {reason}")
        return self.load_class(name)

    def load_class(self, name: str):
        """The plugin's class even where its runtime is missing (its module imports that lazily)."""
        entry = self.entry(name)
        for module in entry.requires:  # the module itself imports these at its top
            if importlib.util.find_spec(module) is None:
                raise PluginUnavailableError(f"{self.kind} '{name}' cannot load: Python module '{module}' is not installed")
        module_name, attr = entry.path.split(":")
        return getattr(importlib.import_module(module_name), attr)
