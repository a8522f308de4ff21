import pytest

from pipeline.core.errors import ConfigError, PluginUnavailableError
from pipeline.core.registry import Entry, Registry

REGISTRY = Registry(
    "widget",
    [
        Entry("json", "json:dumps", "always importable"),
        Entry(
            "ghost",
            "ghost_module_xyz:Thing",
            "needs a missing module",
            requires=("ghost_module_xyz",),
            install_hint="pip install ghost",
        ),
    ],
)


def test_load_imports_on_first_use():
    import json

    assert REGISTRY.load("json") is json.dumps


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown widget 'nope'; valid widgets: json, ghost"):
        REGISTRY.entry("nope")


def test_missing_dependency_is_listed_with_its_reason():
    assert REGISTRY.unavailable_reason("json") is None
    assert "ghost_module_xyz" in REGISTRY.unavailable_reason("ghost") and "pip install ghost" in REGISTRY.unavailable_reason(
        "ghost"
    )
    with pytest.raises(PluginUnavailableError, match="cannot load"):
        REGISTRY.load("ghost")


def test_scorer_and_target_registries_name_real_plugins():
    from exporters import TARGETS
    from pipeline.scorers import SCORERS

    for registry in (SCORERS, TARGETS):
        for name in registry.names():
            if registry.unavailable_reason(name) is None:
                assert callable(registry.load(name))
